//! What a database keeps in memory for conflict handling (resolvers, the
//! conflict log's counters, peers' names, tables with merge states). Apart
//! from `conflict_log` so that the database holds it without importing the
//! log's code, which builds on the database.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use parking_lot::{Mutex, RwLock};

use crate::local::conflict::ConflictResolver;

/// What the database keeps in memory for the conflict log and policies.
#[derive(Default)]
pub(crate) struct ConflictState {
    pub(crate) resolvers: RwLock<HashMap<String, ConflictResolver>>,
    /// Entries evicted by the bounds since open.
    pub(crate) dropped: AtomicU64,
    /// Number of the next entry this node logs.
    pub(crate) next: AtomicU64,
    /// Wall millis of the last full pass over the log for its bounds.
    pub(crate) bounds_checked_ms: AtomicU64,
    /// Serializes appends with their eviction, so the byte count holds.
    pub(crate) append: Mutex<()>,
    /// Node names by node id, as peers introduced themselves.
    pub(crate) names: RwLock<HashMap<u64, String>>,
    /// Tables with records that have a merge state (see `side`).
    stateful: RwLock<std::collections::HashSet<u32>>,
}

impl ConflictState {
    pub(crate) fn is_stateful(&self, table: u32) -> bool {
        let s = self.stateful.read();
        !s.is_empty() && s.contains(&table)
    }

    pub(crate) fn mark_stateful(&self, tables: &[u32]) {
        if tables.iter().any(|t| !self.is_stateful(*t)) {
            self.stateful.write().extend(tables.iter().copied());
        }
    }
}
