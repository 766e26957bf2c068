//! The PostgreSQL sink: each batch of the hub's log lands in ONE
//! PostgreSQL transaction: the rows are `COPY`ed into a temporary staging
//! table, upserted into each tidelog table's PostgreSQL table by
//! last-writer-wins on the stamp, and the sink's resume point moves in the
//! same transaction, so a crash or a replay changes nothing twice.
//!
//! The layout (shared with the PostgreSQL source, which must agree): one
//! table per tidelog table with the columns `key jsonb PRIMARY KEY`,
//! `record jsonb` (NULL for a tombstone), `deleted boolean`, `stamp_time
//! bigint`, `stamp_node numeric(20,0)` (a u64: bigint would misorder node
//! ids >= 2^63), `tidelog_sink_progress (sink, hub, seq)`, and the edges'
//! positions, `tidelog_edge_progress` (see `pg_progress`). Every
//! transaction of the sink runs with `SET LOCAL tidelog.writer = 'sink'`
//! so the source's triggers know not to echo it.

use std::fmt::Write as _;
use std::time::Duration;

use futures_util::SinkExt;
use serde::Deserialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::cloud::pg_progress;
use crate::cloud::sink::{EdgePosition, Sink, SinkBatch, SinkError};

/// One `[[sinks]]` entry of kind `postgres`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// The sink's name in status, metrics and the progress table; default
    /// `postgres`. Two sinks of one hub need different names.
    #[serde(default = "default_name")]
    pub name: String,
    /// A libpq connection string (`host=... port=... user=... dbname=...`)
    /// or URL (`postgres://user@host:port/db`). No TLS yet: reach
    /// PostgreSQL over a trusted network or a local socket.
    pub url: String,
    /// The tidelog tables to sink, each with an optional PostgreSQL table.
    pub tables: Vec<PostgresTableConfig>,
    /// This hub's name in the progress table; default (in `tidelog serve`)
    /// the node name and the data directory's node id, `cloud#00c0ffee...`:
    /// log positions count in one data directory. Each hub in front of one
    /// database keeps its own resume point.
    #[serde(default)]
    pub hub: Option<String>,
    /// Most log entries per batch (one PostgreSQL transaction).
    #[serde(default = "default_batch_rows")]
    pub max_batch_rows: usize,
    /// Most bytes of log entries per batch.
    #[serde(default = "default_batch_bytes")]
    pub max_batch_bytes: usize,
}

/// One synced table of a PostgreSQL sink.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTableConfig {
    /// The tidelog table.
    pub name: String,
    /// Its PostgreSQL table, optionally schema-qualified (`fleet.alerts`);
    /// default the tidelog table's name. Created if missing.
    #[serde(default)]
    pub pg_table: Option<String>,
}

fn default_name() -> String {
    "postgres".into()
}
fn default_batch_rows() -> usize {
    10_000
}
fn default_batch_bytes() -> usize {
    8 << 20
}

impl PostgresSinkConfig {
    /// A config with the defaults, for code and tests.
    pub fn new(url: impl Into<String>, tables: &[&str]) -> PostgresSinkConfig {
        PostgresSinkConfig {
            name: default_name(),
            url: url.into(),
            tables: tables
                .iter()
                .map(|t| PostgresTableConfig {
                    name: (*t).into(),
                    pg_table: None,
                })
                .collect(),
            hub: None,
            max_batch_rows: default_batch_rows(),
            max_batch_bytes: default_batch_bytes(),
        }
    }

    /// Checks what can be checked without a server: names and caps.
    pub fn validate(&self) -> Result<(), String> {
        if self.tables.is_empty() {
            return Err(format!(
                "sink `{}`: `tables` is empty; name at least one tidelog table",
                self.name
            ));
        }
        for t in &self.tables {
            quoted_table(t.pg_table.as_deref().unwrap_or(&t.name))
                .map_err(|why| format!("sink `{}`, table `{}`: {why}", self.name, t.name))?;
        }
        if self.max_batch_rows == 0 || self.max_batch_bytes == 0 {
            return Err(format!(
                "sink `{}`: max_batch_rows and max_batch_bytes must be at least 1",
                self.name
            ));
        }
        self.url.parse::<tokio_postgres::Config>().map_err(|e| {
            format!(
                "sink `{}`: `url` is not a PostgreSQL connection string: {e}",
                self.name
            )
        })?;
        Ok(())
    }
}

/// A PostgreSQL table name, each part double-quoted so any name is taken
/// literally (and none can inject SQL).
fn quoted_table(name: &str) -> Result<String, String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "`{name}` is not a PostgreSQL table name: write `table` or `schema.table`"
        ));
    }
    if name.contains('\0') {
        return Err(format!("`{name}` holds a NUL character"));
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join("."))
}

/// The columns every synced table has, with their types as PostgreSQL's
/// `format_type` spells them.
const COLUMNS: [(&str, &str); 5] = [
    ("key", "jsonb"),
    ("record", "jsonb"),
    ("deleted", "boolean"),
    ("stamp_time", "bigint"),
    ("stamp_node", "numeric(20,0)"),
];

struct Table {
    /// The tidelog table.
    name: String,
    /// Its PostgreSQL name, quoted.
    quoted: String,
    /// The upsert from the staging table.
    upsert: String,
}

/// A sink into PostgreSQL (see the module doc).
pub struct PostgresSink {
    config: PostgresSinkConfig,
    hub: String,
    tables: Vec<Table>,
    client: Option<Client>,
    /// Set while a call talks to the server: still set at the next call,
    /// the previous one was abandoned midway (a timeout, a stop) and its
    /// connection may be inside a transaction, so it is not reused.
    busy: bool,
}

impl PostgresSink {
    /// A sink for the hub named `node` (the progress table's `hub` unless
    /// the config names one). Connects lazily, on the first use.
    pub fn new(config: PostgresSinkConfig, node: &str) -> Result<PostgresSink, SinkError> {
        let name = format!("postgres:{}", config.name);
        config.validate().map_err(|message| SinkError {
            sink: name.clone(),
            message,
            transient: false,
        })?;
        let mut tables = Vec::new();
        for (i, t) in config.tables.iter().enumerate() {
            let quoted =
                quoted_table(t.pg_table.as_deref().unwrap_or(&t.name)).map_err(|message| {
                    SinkError {
                        sink: name.clone(),
                        message,
                        transient: false,
                    }
                })?;
            let upsert = format!(
                "INSERT INTO {quoted} AS t (key, record, deleted, stamp_time, stamp_node) \
                 SELECT DISTINCT ON (key) key, record, deleted, stamp_time, stamp_node \
                 FROM tidelog_stage WHERE tbl = {i} \
                 ORDER BY key, stamp_time DESC, stamp_node DESC \
                 ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record, \
                 deleted = EXCLUDED.deleted, stamp_time = EXCLUDED.stamp_time, \
                 stamp_node = EXCLUDED.stamp_node \
                 WHERE (t.stamp_time, t.stamp_node) < (EXCLUDED.stamp_time, EXCLUDED.stamp_node)"
            );
            tables.push(Table {
                name: t.name.clone(),
                quoted,
                upsert,
            });
        }
        Ok(PostgresSink {
            hub: config.hub.clone().unwrap_or_else(|| node.to_string()),
            config,
            tables,
            client: None,
            busy: false,
        })
    }

    fn error(&self, doing: &str, e: &tokio_postgres::Error) -> SinkError {
        classify(&self.name(), doing, e)
    }

    /// Connects (if not connected, or if the last call was abandoned) and
    /// makes sure the layout is there; marks the connection busy.
    async fn client(&mut self) -> Result<&Client, SinkError> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) || self.busy {
            self.client = None;
        }
        if self.client.is_none() {
            let client = self.connect().await?;
            self.client = Some(client);
        }
        // Cleared by the caller once its exchange is over.
        self.busy = true;
        self.client.as_ref().ok_or_else(|| SinkError {
            sink: self.name(),
            message: "no connection".into(),
            transient: true,
        })
    }

    async fn connect(&self) -> Result<Client, SinkError> {
        let mut pg: tokio_postgres::Config = self.config.url.parse().map_err(|e| SinkError {
            sink: self.name(),
            message: format!("`url` is not a PostgreSQL connection string: {e}"),
            transient: false,
        })?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(5));
        }
        pg.application_name("tidelog-sink");
        let (client, connection) = pg
            .connect(NoTls)
            .await
            .map_err(|e| self.error("connecting", &e))?;
        // Ends by itself once the client is dropped or the server goes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.ensure_layout(&client).await?;
        Ok(client)
    }

    async fn ensure_layout(&self, client: &Client) -> Result<(), SinkError> {
        let setup = "CREATE TABLE IF NOT EXISTS tidelog_sink_progress (\
                     sink text NOT NULL, hub text NOT NULL, seq bigint NOT NULL, \
                     PRIMARY KEY (sink, hub)); \
                     CREATE TEMPORARY TABLE IF NOT EXISTS tidelog_stage (\
                     tbl int NOT NULL, key jsonb NOT NULL, record jsonb, deleted boolean NOT NULL, \
                     stamp_time bigint NOT NULL, stamp_node numeric(20,0) NOT NULL) \
                     ON COMMIT DELETE ROWS";
        client
            .batch_execute(setup)
            .await
            .map_err(|e| self.error("creating tidelog_sink_progress", &e))?;
        client
            .batch_execute(pg_progress::CREATE)
            .await
            .map_err(|e| self.error("creating tidelog_edge_progress", &e))?;
        for t in &self.tables {
            let create = format!(
                "CREATE TABLE IF NOT EXISTS {} (\
                 key jsonb NOT NULL PRIMARY KEY, record jsonb, \
                 deleted boolean NOT NULL DEFAULT false, stamp_time bigint NOT NULL, \
                 stamp_node numeric(20,0) NOT NULL)",
                t.quoted
            );
            client
                .batch_execute(&create)
                .await
                .map_err(|e| self.error(&format!("creating {}", t.quoted), &e))?;
            self.check_columns(client, t).await?;
        }
        Ok(())
    }

    /// A table made by someone else must still have the five columns with
    /// their types, or the upserts would fail (or worse, misorder stamps).
    async fn check_columns(&self, client: &Client, t: &Table) -> Result<(), SinkError> {
        let rows = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
                 FROM pg_attribute a WHERE a.attrelid = $1::text::regclass \
                 AND a.attnum > 0 AND NOT a.attisdropped",
                &[&t.quoted],
            )
            .await
            .map_err(|e| self.error(&format!("reading the columns of {}", t.quoted), &e))?;
        let found: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        for (col, ty) in COLUMNS {
            match found.iter().find(|(c, _)| c == col) {
                Some((_, have)) if have == ty => {}
                Some((_, have)) => {
                    return Err(SinkError {
                        sink: self.name(),
                        message: format!(
                            "PostgreSQL table {} has column `{col}` of type {have}; the sink needs {ty}: alter the column (or drop the table and let the sink create it)",
                            t.quoted
                        ),
                        transient: false,
                    })
                }
                None => {
                    return Err(SinkError {
                        sink: self.name(),
                        message: format!(
                            "PostgreSQL table {} has no column `{col}` ({ty}): add it (or drop the table and let the sink create it)",
                            t.quoted
                        ),
                        transient: false,
                    })
                }
            }
        }
        Ok(())
    }

    async fn apply_once(
        &mut self,
        batch: &SinkBatch,
        edges: &[EdgePosition],
    ) -> Result<(), SinkError> {
        let staged = stage(&self.tables, batch).map_err(|message| SinkError {
            sink: self.name(),
            message,
            transient: false,
        })?;
        let progress_seq = i64::try_from(batch.through_seq).map_err(|_| SinkError {
            sink: self.name(),
            message: format!("log position {} does not fit a bigint", batch.through_seq),
            transient: false,
        })?;
        let name = self.config.name.clone();
        let hub = self.hub.clone();
        let sink_name = self.name();
        let upserts: Vec<String> = staged
            .per_table
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .filter_map(|(i, _)| self.tables.get(i).map(|t| t.upsert.clone()))
            .collect();
        let client = self.client().await?;
        let err = |doing: &str, e: &tokio_postgres::Error| classify(&sink_name, doing, e);
        client
            .batch_execute("BEGIN; SET LOCAL tidelog.writer = 'sink'")
            .await
            .map_err(|e| err("starting a transaction", &e))?;
        if !staged.text.is_empty() {
            let copy = client
                .copy_in::<_, bytes::Bytes>(
                    "COPY tidelog_stage (tbl, key, record, deleted, stamp_time, stamp_node) FROM STDIN",
                )
                .await
                .map_err(|e| err("starting COPY", &e))?;
            futures_util::pin_mut!(copy);
            copy.send(bytes::Bytes::from(staged.text))
                .await
                .map_err(|e| err("copying rows", &e))?;
            copy.as_mut()
                .finish()
                .await
                .map_err(|e| err("copying rows", &e))?;
        }
        for upsert in &upserts {
            client
                .execute(upsert.as_str(), &[])
                .await
                .map_err(|e| err("upserting rows", &e))?;
        }
        client
            .execute(
                "INSERT INTO tidelog_sink_progress AS p (sink, hub, seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (sink, hub) DO UPDATE SET seq = GREATEST(p.seq, EXCLUDED.seq)",
                &[&name, &hub, &progress_seq],
            )
            .await
            .map_err(|e| err("moving the resume point", &e))?;
        pg_progress::store(client, edges)
            .await
            .map_err(|e| err("storing the edges' positions", &e))?;
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| err("committing", &e))?;
        Ok(())
    }
}

impl Sink for PostgresSink {
    fn name(&self) -> String {
        format!("postgres:{}", self.config.name)
    }

    async fn resume_point(&mut self) -> Result<u64, SinkError> {
        let (name, hub) = (self.config.name.clone(), self.hub.clone());
        let sink_name = self.name();
        let outcome = async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT seq FROM tidelog_sink_progress WHERE sink = $1 AND hub = $2",
                    &[&name, &hub],
                )
                .await
                .map_err(|e| classify(&sink_name, "reading the resume point", &e))?;
            Ok(row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
        }
        .await;
        self.busy = false;
        if outcome.is_err() {
            self.client = None;
        }
        outcome
    }

    async fn apply(&mut self, batch: &SinkBatch) -> Result<(), SinkError> {
        self.apply_with_positions(batch, &[]).await
    }

    async fn apply_with_positions(
        &mut self,
        batch: &SinkBatch,
        edges: &[EdgePosition],
    ) -> Result<(), SinkError> {
        let outcome = self.apply_once(batch, edges).await;
        self.busy = false;
        if outcome.is_err() {
            // The connection may be mid-transaction or gone: start afresh.
            self.client = None;
        }
        outcome
    }
}

struct Staged {
    /// COPY text format rows.
    text: String,
    /// Rows per table (by position in the config).
    per_table: Vec<usize>,
}

/// The batch in COPY's text format: tab-separated, `\N` for NULL, with
/// backslash, tab, newline and carriage return escaped.
fn stage(tables: &[Table], batch: &SinkBatch) -> Result<Staged, String> {
    let mut text = String::with_capacity(batch.rows.len() * 128);
    let mut per_table = vec![0; tables.len()];
    for row in &batch.rows {
        let Some(i) = tables.iter().position(|t| t.name == row.table) else {
            continue;
        };
        per_table[i] += 1;
        let time = i64::try_from(row.stamp.time).map_err(|_| {
            format!(
                "stamp time {} of {}/{} does not fit a bigint",
                row.stamp.time, row.table, row.key
            )
        })?;
        let key = serde_json::to_string(&row.key.to_json()).unwrap_or_default();
        let _ = write!(text, "{i}\t");
        escape_into(&mut text, &key);
        text.push('\t');
        match &row.record {
            Some(json) => escape_into(&mut text, json),
            None => text.push_str("\\N"),
        }
        let _ = writeln!(
            text,
            "\t{}\t{time}\t{}",
            if row.record.is_none() { "t" } else { "f" },
            row.stamp.node
        );
    }
    Ok(Staged { text, per_table })
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Whether retrying may help, and what to do otherwise.
fn classify(sink: &str, doing: &str, e: &tokio_postgres::Error) -> SinkError {
    let Some(db) = e.as_db_error() else {
        // No server error: the connection failed, dropped or timed out.
        return SinkError {
            sink: sink.into(),
            message: format!(
                "{doing}: {e} (PostgreSQL unreachable or the connection dropped; retrying)"
            ),
            transient: true,
        };
    };
    let code = db.code();
    let class = &code.code()[..2.min(code.code().len())];
    let (transient, hint) = if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::QUERY_CANCELED
        // Two hubs creating the same table at once: the loser's retry finds it.
        || *code == SqlState::UNIQUE_VIOLATION
        || *code == SqlState::DUPLICATE_TABLE
        || class == "08"
        || class == "53"
    {
        (true, "retrying")
    } else if class == "28" {
        (
            false,
            "PostgreSQL refused the login: check the user, password and database in the sink's `url` and pg_hba.conf",
        )
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        (
            false,
            "grant the sink's role CREATE on the schema and SELECT, INSERT, UPDATE on its tables and tidelog_sink_progress",
        )
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        (false, "create the database named in the sink's `url`")
    } else if *code == SqlState::UNDEFINED_COLUMN
        || *code == SqlState::DATATYPE_MISMATCH
        || *code == SqlState::INVALID_COLUMN_REFERENCE
        || *code == SqlState::UNDEFINED_TABLE
        || *code == SqlState::INVALID_SCHEMA_NAME
    {
        (
            false,
            "the PostgreSQL table does not have the sink's layout (key jsonb PRIMARY KEY, record jsonb, deleted boolean, stamp_time bigint, stamp_node numeric(20,0)), or its schema is missing: fix or drop it",
        )
    } else {
        (false, "see PostgreSQL's message; the sink retries slowly")
    };
    SinkError {
        sink: sink.into(),
        message: format!(
            "{doing}: PostgreSQL error {}: {} ({hint})",
            code.code(),
            db.message()
        ),
        transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_quoted_and_odd_ones_refused() {
        assert_eq!(quoted_table("alerts").unwrap(), "\"alerts\"");
        assert_eq!(
            quoted_table("fleet.Alerts").unwrap(),
            "\"fleet\".\"Alerts\""
        );
        assert_eq!(
            quoted_table("a\"; DROP TABLE x; --").unwrap(),
            "\"a\"\"; DROP TABLE x; --\""
        );
        assert!(quoted_table("a.b.c").is_err());
        assert!(quoted_table("").is_err());
        assert!(quoted_table("a.").is_err());
        assert!(quoted_table("a\0b").is_err());
    }

    #[test]
    fn copy_text_escapes_what_would_break_a_row() {
        let mut s = String::new();
        escape_into(&mut s, "a\tb\nc\\d\re");
        assert_eq!(s, "a\\tb\\nc\\\\d\\re");
    }

    #[test]
    fn config_refuses_unknown_fields_and_empty_tables() {
        let bad: Result<PostgresSinkConfig, _> =
            serde_json::from_str(r#"{"url": "host=x", "tables": [], "colour": 1}"#);
        assert!(bad.unwrap_err().to_string().contains("colour"));
        let empty: PostgresSinkConfig =
            serde_json::from_str(r#"{"url": "host=x", "tables": []}"#).unwrap();
        assert!(empty.validate().unwrap_err().contains("tables"));
        let ok = PostgresSinkConfig::new("host=127.0.0.1 user=x", &["alerts"]);
        assert!(ok.validate().is_ok());
        let mut bad_url = ok.clone();
        bad_url.url = "host=x port=notaport".into();
        assert!(bad_url.validate().unwrap_err().contains("url"));
    }
}
