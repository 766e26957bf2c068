//! The reader of a PostgreSQL source (see `pg_source`): one connection's
//! session (install, LISTEN, read, apply, trim), the full reload, and the
//! conversion of rows into remote transactions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Row};

use crate::cloud::pg_source_config::{PgSourceConfig, PgSourceError, PgSourceStatus};
use crate::cloud::pg_source_sql as sql;
use crate::local::codec::{Key, Stamp};
use crate::local::db::Database;
use crate::local::log::{LogWrite, WriteOp};
use crate::local::remote::{RemoteOutcome, RemoteTxn};

/// Aborts the connection's driver task when a session ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) struct Reader {
    pub(crate) db: Database,
    pub(crate) cfg: PgSourceConfig,
    pub(crate) status: Arc<Mutex<PgSourceStatus>>,
    /// Canonical (`schema.table`, quoted where needed) once installed.
    pub(crate) pg_table: String,
}

impl Reader {
    fn pg_error(&self, what: &str, e: tokio_postgres::Error) -> PgSourceError {
        self.cfg.error(format!("{what}: {e}"), is_transient(&e))
    }

    /// One connection's life: ends with an error when it breaks.
    pub(crate) async fn session(&mut self, backoff: &mut Duration) -> Result<(), PgSourceError> {
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
        // First hold back other hubs' trims at what is trimmed now, so the
        // changes after the snapshot are still there when the load ends.
        client
            .execute(sql::HOLD_TRIMS, &[&self.cfg.hub, &self.pg_table])
            .await
            .map_err(e("holding back trims for the reload"))?;
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
    fn literals_double_their_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
    }
}
