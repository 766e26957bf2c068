//! A PostgreSQL source's settings, errors and status: what the serve
//! config, the running source (`pg_source`) and its reader share.

use std::time::Duration;

use serde::Serialize;

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
