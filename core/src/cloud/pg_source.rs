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
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls, Row};

use crate::cloud::pg_source_sql as sql;
use crate::local::codec::{Key, Stamp};
use crate::local::db::Database;
use crate::local::log::{LogWrite, WriteOp};
use crate::local::remote::{RemoteOutcome, RemoteTxn};

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

    fn cursor_name(&self) -> String {
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

    fn error(&self, message: String, transient: bool) -> PgSourceError {
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

/// Aborts the connection's driver task when a session ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Reader {
    db: Database,
    cfg: PgSourceConfig,
    status: Arc<Mutex<PgSourceStatus>>,
    /// Canonical (`schema.table`, quoted where needed) once installed.
    pg_table: String,
}

impl Reader {
    fn pg_error(&self, what: &str, e: tokio_postgres::Error) -> PgSourceError {
        self.cfg.error(format!("{what}: {e}"), is_transient(&e))
    }

    /// One connection's life: ends with an error when it breaks.
    async fn session(&mut self, backoff: &mut Duration) -> Result<(), PgSourceError> {
        let (mut client, mut conn) = tokio_postgres::connect(&self.cfg.url, NoTls)
            .await
            .map_err(|e| self.pg_error("cannot connect to PostgreSQL", e))?;
        let (notes, mut noted) = mpsc::channel::<String>(64);
        let driver = tokio::spawn(async move {
            while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                match msg {
                    // Full: a wake-up is already queued; the poll covers it.
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = notes.try_send(n.payload().to_string());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        log::debug!("PostgreSQL connection ended: {e}");
                        return;
                    }
                }
            }
        });
        let _driver = AbortOnDrop(driver.abort_handle());
        self.pg_table = self.install(&mut client).await?;
        client
            .batch_execute("LISTEN tidelog_changes")
            .await
            .map_err(|e| self.pg_error("LISTEN tidelog_changes", e))?;
        {
            let mut s = self.status.lock();
            s.connected = true;
            s.pg_table = self.pg_table.clone();
        }
        *backoff = self.cfg.backoff_initial;
        let read = client
            .prepare(sql::READ_CHANGES)
            .await
            .map_err(|e| self.pg_error("preparing the change query", e))?;
        let mut last_trim: Option<Instant> = None;
        loop {
            let heads = client
                .query_one(sql::HEADS, &[&self.pg_table])
                .await
                .map_err(|e| self.pg_error("reading the change table's head", e))?;
            let (head, trimmed) = (heads.get::<_, i64>(0), heads.get::<_, i64>(1));
            let mut resume = match self.resume_point()? {
                None => {
                    self.reload(&mut client, "first start: no resume point")
                        .await?
                }
                Some(r) if r < trimmed as u64 => {
                    let why = format!(
                        "changes after {r} were trimmed (through {trimmed}): this hub was away longer than the change table keeps (max_age, max_rows)"
                    );
                    log::warn!("{}: reloading the whole table: {why}", self.cfg.name());
                    self.reload(&mut client, &why).await?
                }
                // Beyond every id the change table ever handed out: it
                // was dropped and made again, its ids restarted.
                Some(r) if r > head.max(trimmed) as u64 => {
                    let why = format!(
                        "resume id {r} is beyond the change table's newest id {}: tidelog_changes was recreated",
                        head.max(trimmed)
                    );
                    log::warn!("{}: reloading the whole table: {why}", self.cfg.name());
                    self.reload(&mut client, &why).await?
                }
                Some(r) => r,
            };
            loop {
                let rows = client
                    .query(
                        &read,
                        &[
                            &self.pg_table,
                            &(resume as i64),
                            &i64::from(self.cfg.batch_rows),
                        ],
                    )
                    .await
                    .map_err(|e| self.pg_error("reading changes", e))?;
                let Some(last) = rows.last() else { break };
                let through = last.get::<_, i64>(0) as u64;
                let full = rows.len() >= self.cfg.batch_rows as usize;
                self.apply_changes(&rows, through).await?;
                resume = through;
                client
                    .execute(
                        sql::SAVE_PROGRESS,
                        &[&self.cfg.hub, &self.pg_table, &(resume as i64)],
                    )
                    .await
                    .map_err(|e| self.pg_error("saving progress", e))?;
                if !full {
                    break;
                }
            }
            {
                let mut s = self.status.lock();
                s.resume_id = resume;
                s.backlog = (head.max(0) as u64).saturating_sub(resume);
            }
            if last_trim.is_none_or(|t| t.elapsed() >= self.cfg.trim_interval) {
                self.trim(&client).await?;
                last_trim = Some(Instant::now());
            }
            // Wait for a NOTIFY of this table or the poll; coalesce the
            // rest of the queued wake-ups.
            let deadline = tokio::time::sleep(self.cfg.poll_interval);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    note = noted.recv() => match note {
                        Some(t) if t == self.pg_table => break,
                        Some(_) => continue,
                        None => return Err(self.cfg.error("connection to PostgreSQL lost".into(), true)),
                    },
                    _ = &mut deadline => break,
                }
            }
            while noted.try_recv().is_ok() {}
        }
    }

    /// Creates what is missing and (re)installs the triggers, in one
    /// transaction under an advisory lock; returns the canonical name.
    async fn install(&self, client: &mut Client) -> Result<String, PgSourceError> {
        let e = |what: &str| {
            let what = what.to_string();
            move |e| self.pg_error(&what, e)
        };
        let tx = client.transaction().await.map_err(e("BEGIN"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&sql::INSTALL_LOCK])
            .await
            .map_err(e("waiting for the install lock"))?;
        let shared: bool = tx
            .query_one(sql::SHARED_TABLES_EXIST, &[])
            .await
            .map_err(e("looking for the source's tables"))?
            .get(0);
        tx.batch_execute(&sql::create_table(&self.cfg.pg_table))
            .await
            .map_err(e("creating the table"))?;
        let columns = tx
            .query(sql::COLUMNS, &[&self.cfg.pg_table])
            .await
            .map_err(e("reading the table's columns"))?;
        self.check_columns(&columns)?;
        let name: String = tx
            .query_one(sql::CANONICAL_NAME, &[&self.cfg.pg_table])
            .await
            .map_err(e("naming the table"))?
            .get(0);
        let pk = self.cfg.primary_key.as_deref().unwrap_or("id");
        let stamp_call = format!(
            "tidelog_source_stamp_v1({}, {})",
            literal(pk),
            literal(&name)
        );
        // Installed already (every reconnect comes here): no DDL, whose
        // locks would wait for, and deadlock with, the table's writers.
        if shared {
            let current: bool = tx
                .query_one(sql::INSTALLED, &[&name, &sql::VERSION, &stamp_call])
                .await
                .map_err(e("checking the installed triggers"))?
                .get(0);
            if current {
                tx.commit()
                    .await
                    .map_err(e("COMMIT of the install check"))?;
                return Ok(name);
            }
        }
        // The sourced table before the change table, in the order its
        // writers lock them.
        tx.batch_execute(&format!("LOCK TABLE {name} IN SHARE ROW EXCLUSIVE MODE"))
            .await
            .map_err(e("locking the table for the install"))?;
        tx.batch_execute(sql::INSTALL_TABLES)
            .await
            .map_err(e("creating the source's tables"))?;
        tx.batch_execute(sql::INSTALL_FUNCTIONS)
            .await
            .map_err(e("installing the trigger functions"))?;
        tx.batch_execute(&sql::create_triggers(&name, &literal(pk), &literal(&name)))
            .await
            .map_err(e("installing the triggers"))?;
        tx.execute(sql::SET_VERSION, &[&sql::VERSION])
            .await
            .map_err(e("recording the trigger version"))?;
        tx.commit().await.map_err(e("COMMIT of the install"))?;
        Ok(name)
    }

    fn check_columns(&self, columns: &[Row]) -> Result<(), PgSourceError> {
        for (col, want) in LAYOUT {
            let found = columns
                .iter()
                .find(|r| r.get::<_, String>(0) == *col)
                .map(|r| r.get::<_, String>(1));
            match found {
                Some(t) if t == *want => {}
                Some(t) => {
                    return Err(self.cfg.error(
                        format!(
                            "table {} column `{col}` is {t}, the layout needs {want}: alter the column or point pg_table at another table",
                            self.cfg.pg_table
                        ),
                        false,
                    ))
                }
                None => {
                    return Err(self.cfg.error(
                        format!(
                            "table {} has no column `{col}` ({want}): add it or point pg_table at another table",
                            self.cfg.pg_table
                        ),
                        false,
                    ))
                }
            }
        }
        Ok(())
    }

    fn resume_point(&self) -> Result<Option<u64>, PgSourceError> {
        let stored = self.db.cursor(&self.cfg.cursor_name()).map_err(|e| {
            self.cfg
                .error(format!("reading the resume point: {e}"), false)
        })?;
        Ok(stored.and_then(|b| {
            <[u8; 8]>::try_from(b.as_slice())
                .ok()
                .map(u64::from_le_bytes)
        }))
    }

    /// Loads every row of the table as of one snapshot, then stores the
    /// newest change id that snapshot saw as the resume point.
    async fn reload(&self, client: &mut Client, why: &str) -> Result<u64, PgSourceError> {
        let this = self;
        let e = |what: &'static str| move |e| this.pg_error(what, e);
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(e("BEGIN of the reload"))?;
        // Ids are handed out in commit order, so the snapshot holds exactly
        // the changes through this id.
        let head: i64 = tx
            .query_one(sql::HEADS, &[&self.pg_table])
            .await
            .map_err(e("reading the change table's head"))?
            .get(0);
        let stmt = tx
            .prepare(&sql::load_rows(&self.pg_table))
            .await
            .map_err(e("preparing the reload"))?;
        let portal = tx.bind(&stmt, &[]).await.map_err(e("reading the table"))?;
        loop {
            let rows = tx
                .query_portal(&portal, self.cfg.batch_rows as i32)
                .await
                .map_err(e("reading the table"))?;
            if rows.is_empty() {
                break;
            }
            let txns = self.to_txns(&rows, 0);
            self.apply(txns, None).await?;
            if rows.len() < self.cfg.batch_rows as usize {
                break;
            }
        }
        let head = head.max(0) as u64;
        self.apply(Vec::new(), Some(head)).await?;
        tx.commit().await.map_err(e("COMMIT of the reload"))?;
        // Other hubs' trims hold back for this one from here on.
        client
            .execute(
                sql::SAVE_PROGRESS,
                &[&self.cfg.hub, &self.pg_table, &(head as i64)],
            )
            .await
            .map_err(|e| self.pg_error("saving progress", e))?;
        let mut s = self.status.lock();
        s.reloads += 1;
        s.last_reload = Some(why.to_string());
        s.resume_id = head;
        Ok(head)
    }

    async fn apply_changes(&self, rows: &[Row], through: u64) -> Result<(), PgSourceError> {
        let txns = self.to_txns(rows, 1);
        let newest = txns.iter().map(|t| t.stamp.millis()).max();
        self.apply(txns, Some(through)).await?;
        if let Some(ms) = newest {
            self.status.lock().lag_ms = now_ms().saturating_sub(ms);
        }
        Ok(())
    }

    /// Rows (`key, record, deleted, stamp_time, stamp_node` from column
    /// `first`) as one transaction each; refused ones are counted and
    /// skipped, so one bad row cannot stall the table.
    fn to_txns(&self, rows: &[Row], first: usize) -> Vec<RemoteTxn> {
        let mut txns = Vec::with_capacity(rows.len());
        for r in rows {
            match to_txn(&self.cfg.table, r, first) {
                Ok(t) => txns.push(t),
                Err(why) => {
                    let mut s = self.status.lock();
                    s.refused += 1;
                    s.last_error = Some(format!("{} refused: {why}", self.pg_table));
                }
            }
        }
        txns
    }

    async fn apply(&self, txns: Vec<RemoteTxn>, through: Option<u64>) -> Result<(), PgSourceError> {
        let db = self.db.clone();
        let cursor = through.map(|t| (self.cfg.cursor_name(), t.to_le_bytes()));
        let outcomes = tokio::task::spawn_blocking(move || {
            db.apply_remote_owned(txns, cursor.as_ref().map(|(n, v)| (n.as_str(), &v[..])))
        })
        .await
        .map_err(|e| self.cfg.error(format!("the apply task failed: {e}"), true))?
        .map_err(|e| {
            self.cfg.error(
                format!("applying into tidelog table `{}`: {e}", self.cfg.table),
                true,
            )
        })?;
        let mut s = self.status.lock();
        for o in outcomes {
            match o {
                RemoteOutcome::Applied {
                    applied,
                    superseded,
                    missing_table,
                    ..
                } => {
                    s.applied += applied as u64;
                    s.superseded += superseded as u64;
                    if missing_table > 0 {
                        s.refused += missing_table as u64;
                        s.last_error =
                            Some(format!("tidelog table `{}` does not exist", self.cfg.table));
                    }
                }
                RemoteOutcome::Refused(e) => {
                    s.refused += 1;
                    s.last_error = Some(format!("a change was refused: {e}"));
                }
            }
        }
        Ok(())
    }

    async fn trim(&self, client: &Client) -> Result<(), PgSourceError> {
        let n: i64 = client
            .query_one(
                sql::TRIM,
                &[
                    &self.pg_table,
                    &self.cfg.max_age.as_secs_f64(),
                    &i64::try_from(self.cfg.max_rows).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(|e| self.pg_error("trimming the change table", e))?
            .get(0);
        self.status.lock().trimmed += n.max(0) as u64;
        Ok(())
    }
}

/// The columns pg_layout.md fixes, with `format_type`'s spelling.
const LAYOUT: &[(&str, &str)] = &[
    ("key", "jsonb"),
    ("record", "jsonb"),
    ("deleted", "boolean"),
    ("stamp_time", "bigint"),
    ("stamp_node", "numeric(20,0)"),
];

/// One row as a remote transaction of `table`.
fn to_txn(table: &str, r: &Row, first: usize) -> Result<RemoteTxn, String> {
    let key_text: String = r.try_get(first).map_err(|e| e.to_string())?;
    let record: Option<String> = r.try_get(first + 1).map_err(|e| e.to_string())?;
    let deleted: bool = r.try_get(first + 2).map_err(|e| e.to_string())?;
    let time: i64 = r.try_get(first + 3).map_err(|e| e.to_string())?;
    let node: String = r.try_get(first + 4).map_err(|e| e.to_string())?;
    let key = serde_json::from_str::<serde_json::Value>(&key_text)
        .ok()
        .and_then(|v| Key::from_json(&v))
        .ok_or_else(|| format!("key {key_text} is neither a string nor a 64-bit integer"))?;
    let stamp = Stamp {
        time: u64::try_from(time)
            .map_err(|_| format!("key {key_text}: negative stamp_time {time}"))?,
        node: node
            .parse()
            .map_err(|_| format!("key {key_text}: stamp_node {node} is not a u64"))?,
    };
    let op = match (deleted, record) {
        (false, Some(json)) => WriteOp::Put {
            json,
            created: stamp.time,
        },
        (true, _) => WriteOp::Delete,
        (false, None) => return Err(format!("key {key_text}: no record and not deleted")),
    };
    Ok(RemoteTxn {
        stamp,
        writes: vec![LogWrite {
            table: table.to_string(),
            key,
            op,
        }],
    })
}

/// `s` as an SQL string literal (standard_conforming_strings, the default).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Connection trouble and a server starting or stopping pass; anything
/// PostgreSQL refused for a reason of its own does not.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            ["08", "40", "53", "57"].iter().any(|c| code.starts_with(c))
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capture_lock_in_the_sql_is_the_one_the_code_names() {
        assert!(sql::INSTALL_FUNCTIONS
            .contains(&format!("pg_advisory_xact_lock({})", sql::CAPTURE_LOCK)));
    }

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

    #[test]
    fn literals_double_their_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
    }
}
