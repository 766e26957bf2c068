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
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use crate::cloud::pg_source_reader::Reader;
use crate::local::db::Database;

/// One source: a PostgreSQL table feeding a tidelog table.
#[derive(Debug, Clone, PartialEq)]
pub struct PgSourceConfig {
    /// libpq connection string or `postgres://` URL.
    pub url: String,
    /// The tidelog table the changes go into (it must exist).
    pub table: String,
    /// The PostgreSQL table, optionally `schema.table`; lowercase letters,
    /// digits and `_` only (created if missing).
    pub pg_table: String,
    /// The record attribute holding the key; `None`: the tidelog table's.
    pub primary_key: Option<String>,
    /// This hub's name in `tidelog_source_progress` (its node name).
    pub hub: String,
    /// Changes read and applied per batch.
    pub batch_rows: u32,
    /// How often to look for changes when no NOTIFY arrives.
    pub poll_interval: Duration,
    /// How often to trim the change table.
    pub trim_interval: Duration,
    /// Changes older than this are trimmed even if a hub has not applied
    /// them (that hub reloads).
    pub max_age: Duration,
    /// The change table keeps at most this many changes of the table.
    pub max_rows: u64,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl PgSourceConfig {
    /// The defaults for `table` fed from the PostgreSQL table of the same
    /// name at `url`, read by the hub named `hub`.
    pub fn new(url: impl Into<String>, table: impl Into<String>, hub: impl Into<String>) -> Self {
        let table = table.into();
        PgSourceConfig {
            url: url.into(),
            pg_table: table.clone(),
            table,
            primary_key: None,
            hub: hub.into(),
            batch_rows: 1000,
            poll_interval: Duration::from_secs(1),
            trim_interval: Duration::from_secs(10),
            max_age: Duration::from_secs(7 * 86_400),
            max_rows: 1_000_000,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
        }
    }

    /// `postgres:<table>`, for status and logs.
    pub fn name(&self) -> String {
        format!("postgres:{}", self.table)
    }

    pub(crate) fn cursor_name(&self) -> String {
        format!("pg_source:{}:{}", self.table, self.pg_table)
    }

    /// Checks what the schema cannot (the table name goes into SQL text).
    pub fn validate(&self) -> Result<(), PgSourceError> {
        let bad = |m: String| Err(self.error(m, false));
        let parts: Vec<&str> = self.pg_table.split('.').collect();
        let ident = |p: &&str| {
            p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && p.len() <= 63
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if parts.len() > 2 || !parts.iter().all(ident) {
            return bad(format!(
                "pg_table = {:?} is not a PostgreSQL table name: use `table` or `schema.table` of lowercase letters, digits and `_` (at most 63 each)",
                self.pg_table
            ));
        }
        if self.url.trim().is_empty() {
            return bad(
                "url is empty: give a connection string such as \"postgres://user@host/db\"".into(),
            );
        }
        if self.hub.is_empty() {
            return bad("hub name is empty: give the hub's node name".into());
        }
        if self.batch_rows == 0 || self.max_rows == 0 {
            return bad("batch_rows and max_rows must be at least 1".into());
        }
        Ok(())
    }

    pub(crate) fn error(&self, message: String, transient: bool) -> PgSourceError {
        PgSourceError {
            name: self.name(),
            message,
            transient,
        }
    }
}

/// A source failed; the reader retries with backoff and reports `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct PgSourceError {
    /// Which source (`postgres:<table>`).
    pub name: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// Retrying may succeed (connection lost, server restarting);
    /// `false`: not until someone acts (layout mismatch, refused login).
    pub transient: bool,
}

/// What a source reports (`tidelog status --json`, `sources`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PgSourceStatus {
    pub name: String,
    pub table: String,
    /// The PostgreSQL table as the change table files it (`schema.table`);
    /// empty until the first connection.
    pub pg_table: String,
    pub connected: bool,
    /// The last change id applied into tidelog.
    pub resume_id: u64,
    /// Changes of the table not yet applied (newest id minus resume id,
    /// an upper bound: ids can have gaps).
    pub backlog: u64,
    /// From the SQL write of the last applied change to its commit here.
    pub lag_ms: u64,
    /// Changes that won last-writer-wins here.
    pub applied: u64,
    /// Changes that lost to a newer-or-equal stamp already here.
    pub superseded: u64,
    /// Changes refused (a key that is not a string or integer, a record
    /// this table refuses); skipped, with the reason in `last_error`.
    pub refused: u64,
    /// Full loads of the table: at the first start, and when the resume id
    /// was trimmed away (then `last_reload` says so).
    pub reloads: u64,
    pub last_reload: Option<String>,
    /// Changes this hub deleted from the change table.
    pub trimmed: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

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
