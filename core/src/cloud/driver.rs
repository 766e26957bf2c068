//! Drives one [`Sink`]: reads the hub's log after the sink's resume point,
//! turns the writes of the sink's tables into rows holding each record's
//! state after the write, and applies them batch by batch, retrying with
//! capped backoff. The hub's log is the buffer while the destination is
//! slow or down: the driver holds it at its resume point like a peer's
//! acknowledgement, within the log's caps. A log trimmed past the resume
//! point anyway (an overrun) is answered by resending the tables' whole
//! state, tombstones included, and continuing from the log.
//!
//! It runs as its own task and reads the database on blocking threads, so
//! a destination that hangs never holds up a commit or an edge.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::cloud::sink::{EdgePosition, Sink, SinkBatch, SinkError, SinkRow};
use crate::error::{Error, Result};
use crate::local::codec::Key;
use crate::local::db::Database;
use crate::local::keys::row_key;
use crate::local::log::{LogEntry, MetaKind, WriteOp};
use crate::local::row::{decode_row, row_json};
use crate::local::storage::Space;
use crate::repl::SinkGate;

/// How a driver batches and retries.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The tidelog tables whose writes go to the sink.
    pub tables: Vec<String>,
    /// Most log entries one batch reads (a transaction is never split, so
    /// a batch may hold more rows when transactions write several).
    pub max_batch_rows: usize,
    /// Most bytes of log entries one batch reads (at least one entry).
    pub max_batch_bytes: usize,
    /// First wait after a failed batch; doubled per failure up to
    /// `max_backoff`.
    pub min_backoff: Duration,
    /// Longest wait between tries of a transient failure.
    pub max_backoff: Duration,
    /// Wait between tries of a failure that will not go away by itself
    /// (a refused login, a missing permission): slow, but still retried so
    /// the sink resumes once someone fixes it.
    pub fatal_backoff: Duration,
    /// Longest wait for a commit before the log is looked at anyway.
    pub poll: Duration,
    /// A destination that answers nothing this long (a network that drops
    /// packets rather than connections) counts as a transient failure.
    pub apply_timeout: Duration,
    /// The replication gate of this sink ([`crate::Database::sink_gate`]):
    /// edges' transactions of its tables are acknowledged once the driver
    /// committed them, and their positions go with the batches. `None`:
    /// acknowledgements do not wait for this sink.
    pub gate: Option<SinkGate>,
}

impl DriverConfig {
    pub fn new(tables: Vec<String>) -> DriverConfig {
        DriverConfig {
            tables,
            max_batch_rows: 10_000,
            max_batch_bytes: 8 << 20,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            fatal_backoff: Duration::from_secs(15),
            poll: Duration::from_millis(500),
            apply_timeout: Duration::from_secs(120),
            gate: None,
        }
    }
}

/// Where a sink stands, for `tidelog status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SinkStatus {
    pub name: String,
    /// The hub log position applied through, as the destination keeps it.
    pub resume_point: u64,
    /// The hub log's newest position.
    pub log_head: u64,
    /// Log entries after the resume point (of any table: the log is one).
    pub backlog: u64,
    /// Age of the oldest unsent entry; 0 when nothing waits.
    pub lag_seconds: f64,
    pub batches: u64,
    pub rows: u64,
    /// Failed tries (of a batch or of reaching the destination).
    pub retries: u64,
    pub last_error: Option<String>,
    /// Wall-clock ms since the epoch of `last_error`.
    pub last_error_at_ms: Option<u64>,
    /// Whether `last_error` may go away by itself (a dropped connection)
    /// or needs someone to act (a refused login, a wrong column type).
    pub last_error_transient: Option<bool>,
    /// Times the log was trimmed past the resume point and the tables'
    /// whole state was resent.
    pub overruns: u64,
    /// Whether the last exchange with the destination succeeded.
    pub connected: bool,
}

/// A running driver; dropping it without [`SinkHandle::stop`] aborts it.
pub struct SinkHandle {
    status: Arc<Mutex<SinkStatus>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SinkHandle {
    pub fn status(&self) -> SinkStatus {
        self.status.lock().clone()
    }

    /// Stops the driver and waits for it. A batch in flight is abandoned;
    /// the destination rolls it back, and its rows go again next time.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts driving `sink` from the hub `db` on the current tokio runtime.
pub fn spawn<S: Sink>(db: Database, sink: S, config: DriverConfig) -> SinkHandle {
    let status = Arc::new(Mutex::new(SinkStatus {
        name: sink.name(),
        ..Default::default()
    }));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let driver = Driver {
        // Held at 0 until the destination says where it stands: nothing the
        // sink may still need is trimmed meanwhile (the caps still apply).
        hold: db.shared.log_holds.hold(0),
        tables: Arc::new(config.tables.iter().cloned().collect()),
        db,
        sink,
        config,
        status: status.clone(),
        stopped,
        failures: 0,
    };
    let task = tokio::spawn(driver.run());
    SinkHandle {
        status,
        stop,
        task: Some(task),
    }
}

struct Driver<S: Sink> {
    db: Database,
    sink: S,
    config: DriverConfig,
    tables: Arc<HashSet<String>>,
    status: Arc<Mutex<SinkStatus>>,
    stopped: tokio::sync::watch::Receiver<bool>,
    hold: Arc<AtomicU64>,
    /// Failures in a row, for the backoff.
    failures: u32,
}

/// Stop was asked for.
struct Stopped;

impl<S: Sink> Driver<S> {
    async fn run(mut self) {
        let _ = self.run_inner().await;
    }

    async fn run_inner(&mut self) -> std::result::Result<(), Stopped> {
        let mut resume = loop {
            let outcome =
                tokio::time::timeout(self.config.apply_timeout, self.sink.resume_point()).await;
            match outcome {
                Ok(Ok(seq)) => break seq,
                Ok(Err(e)) => self.failed(e).await?,
                Err(_) => {
                    self.failed(self.timed_out("reading the resume point"))
                        .await?
                }
            }
        };
        self.succeeded();
        let head = self.blocking(|db| db.log_bounds()).await?.last;
        if resume > head {
            // Positions count in one data directory's log: a resume point
            // past it was made by another (a replaced or restored one under
            // the same `hub` name). Nothing of this log can be skipped by
            // it. (Neither the hold nor the status take that point.)
            log::warn!(
                target: "tidelog::sink",
                "{}: the destination's resume point {resume} is past this hub's log (head {head}): it was written by another data directory under the same hub name (give each its own `hub`); resending the tables' whole state",
                self.sink.name(),
            );
            resume = self.resend_state(resume, false).await?;
        }
        let mut commits = self.db.shared.committed.subscribe();
        // The next batch, read while the one before it is applied: the
        // position it starts after, and the read.
        let mut prefetched: Option<(u64, tokio::task::JoinHandle<Result<Option<SinkBatch>>>)> =
            None;
        loop {
            self.hold.store(resume, Ordering::Release);
            self.status.lock().resume_point = resume;
            if let Some(gate) = &self.config.gate {
                gate.committed(resume);
            }
            if *self.stopped.borrow() {
                return Err(Stopped);
            }
            // Seen before the bounds are read: a commit after this wakes
            // the wait below.
            commits.borrow_and_update();
            let bounds = self.blocking(|db| db.log_bounds()).await?;
            self.note_backlog(resume, bounds.last).await?;
            if resume >= bounds.last {
                // Positions noted after the last batch was read: stored
                // alone, so a hub taking an idle edge over finds them.
                let positions = self.positions(resume);
                if !positions.is_empty() {
                    let marker = SinkBatch {
                        after_seq: resume,
                        through_seq: resume,
                        rows: Vec::new(),
                    };
                    self.apply(&marker, &positions).await?;
                }
                let mut stopped = self.stopped.clone();
                let gate = self.config.gate.clone();
                let noted = async {
                    match &gate {
                        Some(g) => g.noted().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = commits.changed() => {}
                    _ = stopped.changed() => return Err(Stopped),
                    _ = tokio::time::sleep(self.config.poll) => {}
                    () = noted => {}
                }
                continue;
            }
            if bounds.first > resume + 1 {
                resume = self.resend_state(resume, resume > 0).await?;
                continue;
            }
            let (limit, max_bytes) = (self.config.max_batch_rows, self.config.max_batch_bytes);
            let ready = match prefetched.take() {
                Some((after, read)) if after == resume => read.await.ok().and_then(|r| r.ok()),
                _ => None,
            };
            // A failed or trimmed read ahead is read again here, with retries.
            let batch = match ready.flatten() {
                Some(b) => Some(b),
                None => {
                    let tables = self.tables.clone();
                    self.blocking(move |db| read_batch(db, &tables, resume, limit, max_bytes))
                        .await?
                }
            };
            // Trimmed between the bounds and the read: resend next round.
            let Some(batch) = batch else { continue };
            if batch.through_seq < bounds.last {
                let (db, tables, from) = (self.db.clone(), self.tables.clone(), batch.through_seq);
                prefetched = Some((
                    from,
                    tokio::task::spawn_blocking(move || {
                        read_batch(&db, &tables, from, limit, max_bytes)
                    }),
                ));
            }
            let positions = self.positions(batch.through_seq);
            self.apply(&batch, &positions).await?;
            resume = batch.through_seq;
        }
    }

    /// The edge positions a commit through `seq` makes durable.
    fn positions(&self, seq: u64) -> Vec<EdgePosition> {
        self.config
            .gate
            .as_ref()
            .map_or_else(Vec::new, |g| g.positions_through(seq))
    }

    /// Applies one batch with `positions`, retrying until it lands or stop
    /// is asked for.
    async fn apply(
        &mut self,
        batch: &SinkBatch,
        positions: &[EdgePosition],
    ) -> std::result::Result<(), Stopped> {
        loop {
            let mut stopped = self.stopped.clone();
            let timeout = self.config.apply_timeout;
            let outcome = tokio::select! {
                r = tokio::time::timeout(timeout, self.sink.apply_with_positions(batch, positions)) => {
                    r.unwrap_or_else(|_| Err(self.timed_out("applying a batch")))
                }
                _ = stopped.changed() => return Err(Stopped),
            };
            match outcome {
                Ok(()) => {
                    self.succeeded();
                    if let Some(gate) = &self.config.gate {
                        gate.positions_written(positions);
                    }
                    let mut s = self.status.lock();
                    s.batches += 1;
                    s.rows += batch.rows.len() as u64;
                    return Ok(());
                }
                Err(e) => self.failed(e).await?,
            }
        }
    }

    /// Sends every row of the sink's tables (tombstones included) and
    /// moves the resume point to the log head noted before the scan: any
    /// write after it is still in the log, and a state newer than an entry
    /// is harmless under last-writer-wins. Returns that head, where the
    /// driver goes on reading the log.
    async fn resend_state(
        &mut self,
        resume: u64,
        overrun: bool,
    ) -> std::result::Result<u64, Stopped> {
        let head = self.blocking(|db| db.log_bounds()).await?.last;
        if overrun {
            self.status.lock().overruns += 1;
            log::warn!(
                target: "tidelog::sink",
                "{}: the hub's log was trimmed past this sink's resume point {resume} (its caps forced it while the destination lagged); resending the tables' whole state",
                self.sink.name()
            );
        }
        let tables: Vec<String> = self.config.tables.clone();
        for table in tables {
            let mut after: Option<Key> = None;
            loop {
                let (limit, max_bytes) = (self.config.max_batch_rows, self.config.max_batch_bytes);
                let (t, from) = (table.clone(), after.clone());
                let chunk = self
                    .blocking(move |db| {
                        match db.state_chunk(&t, from.as_ref(), limit, max_bytes, None) {
                            // A table not created yet has no state to send.
                            Err(Error::TableNotFound(_)) => Ok((Vec::new(), None)),
                            other => other,
                        }
                    })
                    .await?;
                let (rows, next) = chunk;
                let batch = SinkBatch {
                    after_seq: resume,
                    through_seq: resume,
                    rows: rows
                        .into_iter()
                        .map(|r| SinkRow {
                            table: table.clone(),
                            key: r.key,
                            record: r.json,
                            stamp: r.stamp,
                        })
                        .collect(),
                };
                if !batch.rows.is_empty() {
                    self.apply(&batch, &[]).await?;
                }
                match next {
                    Some(k) => after = Some(k),
                    None => break,
                }
            }
        }
        let done = SinkBatch {
            after_seq: resume,
            through_seq: head.max(resume),
            rows: Vec::new(),
        };
        let positions = self.positions(done.through_seq);
        self.apply(&done, &positions).await?;
        Ok(head)
    }

    async fn note_backlog(&mut self, resume: u64, head: u64) -> std::result::Result<(), Stopped> {
        let backlog = if resume < head {
            self.blocking(move |db| db.log_backlog(resume + 1)).await?
        } else {
            Default::default()
        };
        let now = crate::local::hlc::wall_millis();
        let lag = backlog
            .oldest_local_time
            .map(|t| now.saturating_sub(t >> crate::local::hlc::LOGICAL_BITS) as f64 / 1000.0)
            .unwrap_or(0.0);
        let mut s = self.status.lock();
        s.log_head = head;
        s.backlog = backlog.txns;
        s.lag_seconds = lag;
        Ok(())
    }

    fn timed_out(&self, doing: &str) -> SinkError {
        SinkError {
            sink: self.sink.name(),
            message: format!(
                "{doing}: no answer within {:?} (the destination or the network hangs); retrying",
                self.config.apply_timeout
            ),
            transient: true,
        }
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.status.lock().connected = true;
    }

    /// Counts and reports a failure, then waits before the next try.
    async fn failed(&mut self, e: SinkError) -> std::result::Result<(), Stopped> {
        // While the destination is down the backlog still grows: keep the
        // status honest between tries.
        let resume = self.status.lock().resume_point;
        let head = self.blocking(|db| db.log_bounds()).await?.last;
        self.note_backlog(resume, head).await?;
        {
            let mut s = self.status.lock();
            s.retries += 1;
            s.connected = false;
            s.last_error = Some(e.message.clone());
            s.last_error_at_ms = Some(crate::local::hlc::wall_millis());
            s.last_error_transient = Some(e.transient);
        }
        let wait = if e.transient {
            let exp = self.failures.min(16);
            self.config
                .min_backoff
                .saturating_mul(1u32 << exp)
                .min(self.config.max_backoff)
        } else {
            self.config.fatal_backoff
        };
        // The first failure of a run is worth a line; the rest are in status.
        if self.failures == 0 {
            let kind = if e.transient {
                "retrying"
            } else {
                "this will not pass by itself; retrying slowly"
            };
            log::warn!(target: "tidelog::sink", "{e} ({kind})");
        }
        self.failures = self.failures.saturating_add(1);
        self.pause(wait).await
    }

    async fn pause(&mut self, wait: Duration) -> std::result::Result<(), Stopped> {
        let mut stopped = self.stopped.clone();
        if *stopped.borrow() {
            return Err(Stopped);
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(()),
            _ = stopped.changed() => Err(Stopped),
        }
    }

    /// Runs a database read on a blocking thread; a failed read (the
    /// database closing, a damaged entry) is reported and tried again.
    async fn blocking<T: Send + 'static>(
        &mut self,
        f: impl Fn(&Database) -> Result<T> + Send + Sync + 'static,
    ) -> std::result::Result<T, Stopped> {
        let f = Arc::new(f);
        loop {
            let (db, f2) = (self.db.clone(), f.clone());
            let outcome = tokio::task::spawn_blocking(move || f2(&db)).await;
            let e = match outcome {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(Error::Closed)) => return Err(Stopped),
                Ok(Err(e)) => e,
                Err(join) => Error::invalid("sink driver", format!("a log read panicked: {join}")),
            };
            {
                let mut s = self.status.lock();
                s.retries += 1;
                s.last_error = Some(format!("reading the hub's log: {e}"));
                s.last_error_at_ms = Some(crate::local::hlc::wall_millis());
                s.last_error_transient = Some(true);
            }
            self.pause(self.config.max_backoff).await?;
        }
    }
}

/// The next batch after `resume`, or `None` if the log no longer starts
/// right after it (trimmed meanwhile).
fn read_batch(
    db: &Database,
    tables: &HashSet<String>,
    resume: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<Option<SinkBatch>> {
    let entries = db.read_log_bounded(resume + 1, limit.max(1), max_bytes)?;
    if entries.first().is_none_or(|e| e.seq != resume + 1) {
        return Ok(None);
    }
    let through_seq = entries.last().map_or(resume, |e| e.seq);
    let mut rows = Vec::new();
    for entry in &entries {
        entry_rows(db, tables, entry, &mut rows)?;
    }
    Ok(Some(SinkBatch {
        after_seq: resume,
        through_seq,
        rows,
    }))
}

/// The rows one log entry gives: a whole-record write as it is; a patch,
/// a count or anything else whose after-image the entry does not hold, as
/// the record's current state (newer than the entry, which last-writer-
/// wins at the destination makes right).
fn entry_rows(
    db: &Database,
    tables: &HashSet<String>,
    entry: &LogEntry,
    out: &mut Vec<SinkRow>,
) -> Result<()> {
    for w in entry.writes.iter().filter(|w| tables.contains(&w.table)) {
        let whole = match &w.op {
            WriteOp::Meta {
                op,
                kind: MetaKind::Whole | MetaKind::Resolution,
                ..
            } => Some(op.inner()),
            WriteOp::Put { .. } | WriteOp::Delete => Some(&w.op),
            _ => None,
        };
        let row = match whole {
            Some(WriteOp::Put { json, .. }) => Some((Some(json.clone()), entry.stamp)),
            Some(WriteOp::Delete) => Some((None, entry.stamp)),
            _ => current_state(db, &w.table, &w.key)?,
        };
        if let Some((record, stamp)) = row {
            out.push(SinkRow {
                table: w.table.clone(),
                key: w.key.clone(),
                record,
                stamp,
            });
        }
    }
    Ok(())
}

type State = (Option<String>, crate::local::codec::Stamp);

/// A record's current state, a tombstone as `None` with its stamp; `None`
/// when the row is gone altogether (its tombstone purged, or the table
/// dropped).
fn current_state(db: &Database, table: &str, key: &Key) -> Result<Option<State>> {
    let store = db.store()?;
    let def = match db.table(table) {
        Ok(def) => def,
        Err(Error::TableNotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(v) = store.get(Space::Rows, &row_key(def.id, key))? else {
        return Ok(None);
    };
    let (h, body_at) = decode_row(&v)?;
    if h.tombstone {
        return Ok(Some((None, h.stamp)));
    }
    let json = row_json(&v, body_at)?;
    Ok(Some((Some(json.to_string()), h.stamp)))
}
