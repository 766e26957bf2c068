//! What a sink is: a destination that takes the hub's log of some tables,
//! in order, and keeps its own resume point next to the data, so that a
//! crash, a replay or another hub taking over changes nothing twice.

use std::future::Future;

use crate::local::codec::{Key, Stamp};
pub use crate::repl::EdgePosition;

/// One record's state after a write of the hub's log, as a sink stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRow {
    /// The tidelog table the write belongs to.
    pub table: String,
    pub key: Key,
    /// The record's JSON object text after the write; `None`: a tombstone
    /// (a delete), kept with its stamp so an older write cannot bring the
    /// record back.
    pub record: Option<String>,
    /// The write's stamp: a destination replaces a row only with a greater
    /// stamp; an equal stamp is the same write.
    pub stamp: Stamp,
}

/// A run of the hub's log for one sink, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkBatch {
    /// The hub log position this batch starts after (exclusive).
    pub after_seq: u64,
    /// The hub log position the batch reaches (inclusive): the sink's
    /// resume point once the batch is applied.
    pub through_seq: u64,
    pub rows: Vec<SinkRow>,
}

/// A sink failed; the driver retries with backoff and reports `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{sink}: {message}")]
pub struct SinkError {
    /// Which sink, as configured (e.g. `postgres:alerts`).
    pub sink: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// Retrying the same batch may succeed (a connection dropped, the
    /// server restarting); `false`: it will not until someone acts (a
    /// refused login, a missing permission, a type mismatch).
    pub transient: bool,
}

/// A destination for the hub's log of some tables.
///
/// Contract: `apply` is idempotent and atomic with its resume point. Rows
/// are applied by last-writer-wins on the stamp, and the resume point
/// moves to `through_seq` only together with the rows (same destination
/// transaction, or after the destination acknowledged every row), so a
/// batch applied twice, split, or replayed from an older resume point
/// after a crash leaves the destination exactly as once.
pub trait Sink: Send + 'static {
    /// A name for status and logs (e.g. `postgres:alerts`).
    fn name(&self) -> String;

    /// Where this hub's log was applied up to, read from the destination
    /// itself (0: nothing yet), so a restarted hub resumes there.
    fn resume_point(&mut self) -> impl Future<Output = Result<u64, SinkError>> + Send;

    /// Applies `batch` and moves the resume point to `batch.through_seq`.
    fn apply(&mut self, batch: &SinkBatch) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Applies `batch` as [`Sink::apply`] and, in the same destination
    /// transaction, stores `edges`: the edges' log positions this batch
    /// makes durable (each only ever moves forward), from which another hub
    /// taking an edge over resumes. A destination with no place for them
    /// (the default) applies the batch alone: edges moved to another hub
    /// then resend from that hub's own cursor, which costs time, not rows.
    fn apply_with_positions(
        &mut self,
        batch: &SinkBatch,
        edges: &[EdgePosition],
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        let _ = edges;
        self.apply(batch)
    }
}
