//! The PostgreSQL source: rows that the cloud's applications change by
//! plain SQL in a PostgreSQL table flow into a tidelog table (and from
//! there to the edges that subscribe to it), in commit order, with no loss
//! across restarts of the hub or of PostgreSQL, and without echo.
//!
//! ## Capture: triggers and a change table
//! The table has pg_layout's shape (`key`, `record`, `deleted`,
//! `stamp_time`, `stamp_node`). Three triggers go on it (see
//! `pg_source_sql`, versioned functions installed idempotently):
//! - BEFORE each statement: a transaction-scoped advisory lock, held until
//!   the transaction ends. Change ids come from a sequence, and a sequence
//!   hands out ids before commit, so without it a reader could see id 11
//!   before id 10 commits and move past 10 for good. Under the lock ids are
//!   handed out in commit order, so what a reader sees after its resume id
//!   is always a gapless prefix and a plain id is a complete resume point
//!   (and the currency of retention). Taken per statement rather than per
//!   row so that it is acquired before any row lock of the statement: a
//!   row-level lock would add deadlocks between writers of different rows.
//!   The cost is that writers of sourced tables commit one after another;
//!   these are the cloud's edited tables (thresholds, configuration), not
//!   the fleet's firehose. The alternative, reading only below
//!   `pg_snapshot_xmin(pg_current_snapshot())` with xid8 columns, lets
//!   writers run in parallel, but any long transaction anywhere in the
//!   cluster then delays every change, and the resume point becomes a pair.
//! - BEFORE each row: stamps the write (`stamp_time` = the HLC form of
//!   `clock_timestamp()`, above the old stamp; `stamp_node` = the
//!   database's own source node id, the same for every hub, so two hubs
//!   hand the edges the same write), fills `key` from the record's
//!   primary-key attribute, and turns a `DELETE` into a tombstone.
//! - AFTER each row: a row in `tidelog_changes` and a `pg_notify`.
//!
//! Writes made with `SET LOCAL tidelog.writer = 'sink'` (the sink's) are
//! neither stamped nor captured.
//!
//! ## Why triggers rather than logical replication (pgoutput)
//! - tokio-postgres 0.7 has no replication protocol (`START_REPLICATION`,
//!   copy-both); a second client library or a hand-written protocol would
//!   be needed.
//! - A replication slot kept by an absent hub retains WAL for the whole
//!   cluster until the disk fills; a change table is a table of ours that
//!   we trim with a cap (`max_age`, `max_rows`), and a hub that fell behind
//!   the trim reloads the table.
//! - pgoutput needs `wal_level = logical` (a server restart) and a
//!   replication-privileged role; triggers need neither.
//! - The stamp and the echo guard need per-write logic in the writer's own
//!   transaction anyway (pgoutput cannot see `SET LOCAL tidelog.writer`).
//! - Cost, measured by `pg_source_capture_overhead` in
//!   core/tests/pg_source.rs (2 cores, shared, PostgreSQL 15, two runs,
//!   2026-12-04): single-row INSERTs take 206-260 us more with the
//!   triggers (2.7-2.9x a plain table's, synchronous_commit off so fsync
//!   does not hide it); a 20,000-row INSERT goes through them at
//!   17,000-18,400 rows/s (4.5-5.9x slower than plain). The reader moves
//!   34,000-40,000 changes/s into tidelog. In the same runs an unread
//!   logical slot held 15.7 MiB of WAL for those 42,000 writes, and grows
//!   with every write to any table of the cluster until read or dropped;
//!   the server decodes a slot at 230,000 changes/s, so the triggers are
//!   the slower capture, and that is the price of the points above. The
//!   sourced tables are edited at configuration rates (the 100
//!   changes/s), far below what the triggers take; a SQL change reaches 3
//!   edges through a hub at p99 7-40 ms (core/tests/cli_source.rs).
//!
//! ## The reader
//! One task per source on a tokio runtime: LISTENs on `tidelog_changes`
//! and polls (a NOTIFY sent while disconnected is lost), reads changes
//! after its resume id in id order in batches, applies each batch with
//! `Database::apply_remote` as remote transactions (the change's stamp and
//! origin) together with the resume id in the same commit, so a restart
//! loses nothing and applies nothing twice. A hub without a resume id, or
//! whose resume id was trimmed away, loads the whole table (tombstones
//! too) as of one snapshot and goes on from the newest change id that
//! snapshot saw. After each batch it records its progress in
//! `tidelog_source_progress`; it trims, every `trim_interval`, the changes
//! every hub has applied, and beyond `max_age` / `max_rows` even those an
//! absent hub has not. PostgreSQL going away: reconnect with capped
//! backoff.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

pub use crate::cloud::pg_source_config::{PgSourceConfig, PgSourceError, PgSourceStatus};
use crate::cloud::pg_source_reader::Reader;
use crate::local::db::Database;

/// A running source; [`PgSource::stop`] ends it (dropping it does too,
/// without waiting).
pub struct PgSource {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    status: Arc<Mutex<PgSourceStatus>>,
}

impl PgSource {
    /// Checks `cfg` against the database and starts the reader on `rt`.
    pub fn spawn(
        rt: &tokio::runtime::Handle,
        db: Database,
        mut cfg: PgSourceConfig,
    ) -> Result<PgSource, PgSourceError> {
        cfg.validate()?;
        let info = db.describe_table(&cfg.table).map_err(|e| {
            cfg.error(
                format!(
                    "tidelog table `{}`: {e} (create it, e.g. under [[tables]])",
                    cfg.table
                ),
                false,
            )
        })?;
        match &cfg.primary_key {
            Some(pk) if *pk != info.primary_key => {
                return Err(cfg.error(
                    format!(
                        "primary_key = {pk:?}, but tidelog table `{}` keys on {:?}: leave primary_key out or make them equal",
                        cfg.table, info.primary_key
                    ),
                    false,
                ))
            }
            _ => cfg.primary_key = Some(info.primary_key),
        }
        let status = Arc::new(Mutex::new(PgSourceStatus {
            name: cfg.name(),
            table: cfg.table.clone(),
            ..Default::default()
        }));
        let (stop, stopped) = watch::channel(false);
        let task = rt.spawn(run(db, cfg, status.clone(), stopped));
        Ok(PgSource {
            stop,
            task: Some(task),
            status,
        })
    }

    pub fn status(&self) -> PgSourceStatus {
        self.status.lock().clone()
    }

    /// Stops the reader and waits for it; what it committed stays.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for PgSource {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn run(
    db: Database,
    cfg: PgSourceConfig,
    status: Arc<Mutex<PgSourceStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = cfg.backoff_initial;
    let mut reader = Reader {
        db,
        cfg,
        status,
        pg_table: String::new(),
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let ended = tokio::select! {
            r = reader.session(&mut backoff) => r,
            _ = stop.changed() => return,
        };
        if let Err(e) = ended {
            log::warn!("{e}");
            {
                let mut s = reader.status.lock();
                s.connected = false;
                s.reconnects += 1;
                s.last_error = Some(e.message.clone());
            }
            // Something only a person can fix is retried at the slowest
            // pace: it may have been fixed meanwhile.
            let wait = if e.transient {
                backoff
            } else {
                reader.cfg.backoff_max
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(reader.cfg.backoff_max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_that_would_be_sql_are_refused() {
        let ok = PgSourceConfig::new("postgres://x@h/db", "thresholds", "hub");
        assert!(ok.validate().is_ok());
        let mut schema = ok.clone();
        schema.pg_table = "cloud.thresholds_2".into();
        assert!(schema.validate().is_ok());
        for bad in [
            "x; DROP TABLE y",
            "Thresholds",
            "a.b.c",
            "",
            "1x",
            "\"q\"",
            "a.",
        ] {
            let mut c = ok.clone();
            c.pg_table = bad.into();
            let e = c.validate().unwrap_err();
            assert!(!e.transient && e.message.contains("pg_table"), "{bad}: {e}");
        }
        let mut c = ok.clone();
        c.url = " ".into();
        assert!(c.validate().is_err());
    }
}
