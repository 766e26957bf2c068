//! Background work of a local database: the grouped-durability flusher and
//! the expiry sweeper. One thread; it holds only a weak reference, so an
//! unused database still drops, and it never holds the commit lock for long.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::Result;
use crate::local::catalog::TableDef;
use crate::local::codec::take_key;
use crate::local::db::{Database, Durability, Shared};
use crate::local::keys::{row_key, tombstone_key, EXPIRY_INDEX};
use crate::local::row::decode_row;
use crate::local::storage::{Batch, Space};
use crate::local::write::index_entries;

/// How often the log is trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// How often the durable mark (see `db::MARK_FILE`) catches up with what
/// the background flushes made durable.
const MARK_EVERY: Duration = Duration::from_secs(1);

fn trim(db: &Database) -> Result<()> {
    let replicator = db.shared.replication.lock().clone();
    let floor = replicator
        .as_ref()
        .map_or(0, |r| r.acked_floor())
        .min(db.shared.log_holds.floor());
    let now = crate::local::hlc::wall_millis();
    let report = crate::local::retention::trim_log(db, floor, now)?;
    crate::local::retention::collect_tombstones(db, floor, now)?;
    if report.forced > 0 {
        if let Some(r) = replicator {
            r.note_trimmed(report.first);
        }
    }
    Ok(())
}

/// Most records one sweep step evicts while holding the commit lock.
const EVICT_CHUNK: usize = 1000;

pub(crate) struct Maintenance {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Maintenance {
    pub(crate) fn start(shared: &Arc<Shared>) -> Maintenance {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let weak = Arc::downgrade(shared);
        let flush_every = match shared.opts.durability {
            Durability::Grouped { interval } => Some(interval.max(Duration::from_millis(1))),
            Durability::Sync => None,
        };
        let sweep_every = shared.opts.expiry_interval.max(Duration::from_millis(10));
        let tick = flush_every.unwrap_or(sweep_every).min(sweep_every);
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tidelog-maint".into())
            .spawn(move || run(weak, stop2, tick, flush_every.is_some(), sweep_every))
            .ok();
        Maintenance { stop, thread }
    }

    pub(crate) fn stop(mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

fn run(
    weak: Weak<Shared>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    tick: Duration,
    grouped: bool,
    sweep_every: Duration,
) {
    let mut next_sweep = Instant::now() + sweep_every;
    let mut next_trim = Instant::now() + TRIM_EVERY;
    let mut next_mark = Instant::now() + MARK_EVERY;
    // The highest log sequence a background flush made durable.
    let mut flushed = 0u64;
    // A full disk is reported once, not on every tick until space is freed.
    let mut muted = false;
    loop {
        {
            let mut stopped = stop.0.lock();
            if !*stopped {
                stop.1.wait_for(&mut stopped, tick);
            }
            if *stopped {
                return;
            }
        }
        let Some(shared) = weak.upgrade() else { return };
        let db = Database { shared };
        if !db.shared.has_fault() {
            muted = false;
        }
        if grouped && db.shared.dirty.load(Ordering::Acquire) {
            // Through the same path as a write: after a failed write it
            // reopens the engine once there is room, so the flusher never
            // keeps calling an engine that refuses everything.
            match db.shared.flush() {
                Ok(durable) => flushed = flushed.max(durable),
                Err(e) => report(&db, "background flush", &e, &mut muted),
            }
        }
        // The mark costs a file sync of its own, so it follows the flushes
        // at a slower pace. With sync durability every commit is on disk
        // already.
        if Instant::now() >= next_mark {
            next_mark = Instant::now() + MARK_EVERY;
            let durable = if grouped {
                flushed
            } else {
                *db.shared.committed.borrow()
            };
            if durable > db.shared.durable_mark() {
                db.shared.note_durable(durable);
            }
        }
        if Instant::now() >= next_sweep {
            next_sweep = Instant::now() + sweep_every;
            if let Err(e) = sweep_expired(&db, crate::local::hlc::wall_millis()) {
                report(&db, "expiry sweep", &e, &mut muted);
            }
        }
        if Instant::now() >= next_trim {
            next_trim = Instant::now() + TRIM_EVERY;
            if let Err(e) = trim(&db) {
                report(&db, "log trimming", &e, &mut muted);
            }
        }
        // Dropping the last handle here runs close() on this thread, which
        // then skips joining itself.
        drop(db);
    }
}

fn report(db: &Database, what: &str, e: &crate::Error, muted: &mut bool) {
    if db.is_closed() {
        return;
    }
    if matches!(e, crate::Error::DiskFull { .. }) {
        if *muted {
            return;
        }
        *muted = true;
    }
    log::error!(target: "tidelog::maintenance", "{what} failed: {e}");
}

/// Evicts, without logging, every record and tombstone of an expiring table
/// last written before `now_ms - expiration`. Returns how many it evicted.
pub(crate) fn sweep_expired(db: &Database, now_ms: u64) -> Result<u64> {
    let tables: Vec<Arc<TableDef>> = db
        .shared
        .catalog
        .read()
        .tables
        .values()
        .filter(|d| d.expiration.is_some())
        .cloned()
        .collect();
    let mut evicted = 0;
    for def in tables {
        let Some(secs) = def.expiration else { continue };
        let cutoff = now_ms.saturating_sub(secs.saturating_mul(1000));
        loop {
            let n = evict_chunk(db, &def, cutoff)?;
            evicted += n as u64;
            if n < EVICT_CHUNK {
                break;
            }
        }
    }
    Ok(evicted)
}

fn evict_chunk(db: &Database, def: &TableDef, cutoff_ms: u64) -> Result<usize> {
    let store = db.shared.writable_store()?;
    let _w = db.shared.write.lock();
    if !db.shared.catalog.read().tables.contains_key(&def.name) {
        return Ok(0);
    }
    let prefix = def.index_prefix(EXPIRY_INDEX);
    let mut hi = prefix.to_vec();
    hi.extend_from_slice(&cutoff_ms.to_be_bytes());
    let lo = std::ops::Bound::Included(prefix.to_vec());
    let mut batch = Batch::default();
    let mut n = 0;
    let mut gone = Vec::new();
    let iter = store.range(Space::Index, lo, std::ops::Bound::Excluded(hi), false);
    for item in iter.take(EVICT_CHUNK) {
        let (ek, _) = item?;
        n += 1;
        let (key, _) = take_key(&ek[prefix.len() + 8..])?;
        batch.delete(Space::Index, ek.to_vec());
        let rk = row_key(def.id, &key);
        if let Some(row) = store.get(Space::Rows, &rk)? {
            let (h, body_at) = decode_row(&row)?;
            let body = &row[body_at..];
            if h.tombstone {
                batch.delete(Space::Index, tombstone_key(def.id, h.stamp.millis(), &key));
            } else {
                gone.push(crate::local::table_stats::record_bytes(&rk, body.len()));
            }
            if !h.tombstone && !def.indexes.is_empty() {
                if let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(body) {
                    for k in index_entries(def, &key, &obj).into_keys() {
                        batch.delete(Space::Index, k);
                    }
                }
            }
            batch.delete(Space::Rows, rk);
        }
    }
    if !batch.is_empty() {
        let staged = crate::local::table_budget::stage_removed(db, &store, &mut batch, def, &gone)?;
        db.shared.commit(&store, batch, false, None)?;
        staged.apply(db);
        db.shared.dirty.store(true, Ordering::Release);
    }
    Ok(n)
}
