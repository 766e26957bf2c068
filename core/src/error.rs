//! One error type for the whole library. Every variant says what went wrong
//! and, where the caller can do something about it, what to do.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Result alias used throughout tidelog.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stable, binding-friendly classification of an [`Error`]. The C ABI, the
/// Python exception hierarchy and the Node error codes are all derived from
/// this, so variants are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorKind {
    /// The caller passed something malformed (bad JSON, bad key, bad name).
    InvalidInput = 1,
    /// The named table, record or peer does not exist.
    NotFound = 2,
    /// An insert hit an existing key, or a table/peer already exists.
    AlreadyExists = 3,
    /// The database handle was closed.
    Closed = 4,
    /// The data directory is in use by another handle or process.
    Locked = 5,
    /// The storage engine or file system failed.
    Storage = 6,
    /// Stored data could not be decoded.
    Corrupt = 7,
    /// A clock stamp is too far ahead of the local wall clock.
    ClockSkew = 8,
    /// A wait ran out of time.
    Timeout = 9,
    /// TLS configuration or handshake problem.
    Tls = 10,
    /// A peer misbehaved, the replication link failed, or a peer does not
    /// take what a delivery receipt waits for.
    Peer = 11,
    /// The operation is not allowed in the current configuration.
    Unsupported = 12,
}

/// Everything that can go wrong in tidelog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("table `{0}` does not exist: create it first with create_table")]
    TableNotFound(String),
    #[error("table `{0}` already exists: drop it first or use a different name")]
    TableExists(String),
    #[error("record with key {key} already exists in table `{table}`: use upsert to overwrite it")]
    DuplicateKey { table: String, key: String },
    #[error("no record with key {key} in table `{table}`: use upsert to create it")]
    RecordNotFound { table: String, key: String },
    #[error("the record is missing its primary key attribute `{attribute}` (table `{table}`)")]
    MissingPrimaryKey { table: String, attribute: String },
    #[error("primary key attribute `{attribute}` of table `{table}` must be a string or an integer, got {found}")]
    InvalidPrimaryKey {
        table: String,
        attribute: String,
        found: String,
    },
    #[error("a record must be a JSON object, got {0}")]
    NotAnObject(String),
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("invalid UTF-8 in {0}: text must be valid UTF-8")]
    InvalidUtf8(String),
    #[error("record is {size} bytes, over the limit of {limit} bytes: split it or raise max_record_bytes")]
    RecordTooLarge { size: usize, limit: usize },
    #[error("invalid {what}: {why}")]
    InvalidArgument { what: String, why: String },
    #[error("the database is closed: open it again to continue")]
    Closed,
    #[error("data directory {path} is in use by another tidelog handle or process: close that one first")]
    Locked { path: PathBuf },
    #[error("data directory {path} was created with the `{found}` engine, not `{requested}`: open it with engine `{found}`")]
    EngineMismatch {
        path: PathBuf,
        found: String,
        requested: String,
    },
    #[error("data directory {path} belongs to node `{found}`, not `{requested}`: open it with node name `{found}`")]
    NodeNameMismatch {
        path: PathBuf,
        found: String,
        requested: String,
    },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no space left on the disk holding {path}: {what}; writes resume by themselves (no reopen needed) once at least {need} bytes are free there: free space or grow the disk")]
    DiskFull {
        path: PathBuf,
        /// What happened to the write that met the full disk.
        what: String,
        /// Free bytes the database waits for before it writes again.
        need: u64,
    },
    #[error("transaction {seq}{more} may or may not be committed: {why}; once writes work again, read its records (or the transaction log at seq {seq}) to find out: it is kept or lost as a whole")]
    OutcomeUnknown {
        /// Local log sequence of the (first) transaction concerned.
        seq: u64,
        /// `" to {last}"` when several transactions went in one commit.
        more: String,
        why: String,
    },
    #[error("stored data is corrupt ({0}): restore the data directory from a backup or resync it from a peer")]
    Corrupt(String),
    #[error("stamp from node {origin:#x} is {ahead_ms} ms ahead of this node's clock, more than max_clock_skew ({limit_ms} ms): fix that node's clock")]
    ClockSkew {
        origin: u64,
        ahead_ms: u64,
        limit_ms: u64,
    },
    #[error("`{peer}` has not acknowledged transaction {seq} within {after:?} (it has acknowledged up to {acked}): {why}")]
    NotAcknowledged {
        peer: String,
        seq: u64,
        acked: u64,
        after: std::time::Duration,
        /// What the link says, and what to check.
        why: String,
    },
    #[error("transaction {seq} writes table `{table}`, which this node publishes to `{peer}` but `{peer}` does not subscribe to, so it will never be acknowledged: subscribe to `{table}` in {peer}'s peer entry for this node, or stop publishing it there")]
    NotSubscribed {
        peer: String,
        table: String,
        seq: u64,
    },
    #[error("this node's log no longer holds transaction {seq}, so which tables it wrote is unknown, and `{peer}` did not take {} that this node publishes to it on its last link: the receipt cannot prove delivery. Ask for receipts before retention trims the entry (raise retention.log_min_age to keep acknowledged entries longer), or subscribe `{peer}` to those tables", .tables.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", "))]
    DeliveryUnproven {
        peer: String,
        seq: u64,
        /// The published tables `peer` did not take on its last link.
        tables: Vec<String>,
    },
    #[error("`{peer}` refused transaction {seq} (table `{table}`, {kind}), so it was not applied there and never will be: {reason}: {}", .kind.advice())]
    Refused {
        peer: String,
        table: String,
        seq: u64,
        kind: RefusalKind,
        /// What `peer` said was wrong.
        reason: String,
    },
    #[error("TLS error: {0}")]
    Tls(String),
    #[error("peer error: {0}")]
    Peer(String),
    #[error("peer `{0}` is not configured: add it with add_peer")]
    PeerNotFound(String),
    #[error("peer `{0}` is already configured: use update_peer to change it")]
    PeerExists(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("attribute `{attribute}` of record {key} in table `{table}` is {found}, not an integer, so it cannot be incremented: set it to an integer first, or count in another attribute")]
    NotACounter {
        table: String,
        key: String,
        attribute: String,
        /// What the attribute holds instead.
        found: NotInteger,
    },
    #[error("incrementing attribute `{attribute}` of record {key} in table `{table}` by {by} would overflow a 64-bit integer: nothing was written")]
    CounterOverflow {
        table: String,
        key: String,
        attribute: String,
        by: i64,
    },
    #[error("table `{table}` would hold {would} bytes, past its disk_budget_bytes of {budget} (on_full = \"refuse\"): nothing was written; delete records from it, raise its budget with set_table_budget, or choose on_full = \"drop_oldest\"")]
    TableFull {
        table: String,
        /// The table's logical bytes had the write committed.
        would: u64,
        budget: u64,
    },
}

/// What a counter attribute held instead of an integer (kept to one
/// byte: errors travel in every `Result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotInteger {
    Boolean,
    /// A fraction, or beyond 64-bit integers.
    Number,
    String,
    Array,
    Object,
}

impl std::fmt::Display for NotInteger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotInteger::Boolean => "a boolean",
            NotInteger::Number => "a number with a fraction or beyond 64-bit integers",
            NotInteger::String => "a string",
            NotInteger::Array => "an array",
            NotInteger::Object => "an object",
        })
    }
}

impl Error {
    /// The stable classification bindings map to their own error types.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::TableNotFound(_) | Error::RecordNotFound { .. } | Error::PeerNotFound(_) => {
                ErrorKind::NotFound
            }
            Error::TableExists(_) | Error::DuplicateKey { .. } | Error::PeerExists(_) => {
                ErrorKind::AlreadyExists
            }
            Error::MissingPrimaryKey { .. }
            | Error::InvalidPrimaryKey { .. }
            | Error::NotAnObject(_)
            | Error::InvalidJson(_)
            | Error::InvalidUtf8(_)
            | Error::RecordTooLarge { .. }
            | Error::InvalidArgument { .. }
            | Error::EngineMismatch { .. }
            | Error::NodeNameMismatch { .. }
            | Error::NotACounter { .. }
            | Error::CounterOverflow { .. } => ErrorKind::InvalidInput,
            Error::Closed => ErrorKind::Closed,
            Error::Locked { .. } => ErrorKind::Locked,
            Error::Storage(_)
            | Error::Io { .. }
            | Error::DiskFull { .. }
            | Error::OutcomeUnknown { .. }
            | Error::TableFull { .. } => ErrorKind::Storage,
            Error::Corrupt(_) => ErrorKind::Corrupt,
            Error::ClockSkew { .. } => ErrorKind::ClockSkew,
            Error::Refused { kind, .. } => match kind {
                RefusalKind::ClockSkew => ErrorKind::ClockSkew,
                _ => ErrorKind::Peer,
            },
            Error::NotAcknowledged { .. } => ErrorKind::Timeout,
            Error::Tls(_) => ErrorKind::Tls,
            Error::Peer(_) | Error::NotSubscribed { .. } | Error::DeliveryUnproven { .. } => {
                ErrorKind::Peer
            }
            Error::Unsupported(_) => ErrorKind::Unsupported,
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what: what.into(),
            why: why.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        Error::Storage(format!("fjall: {e}"))
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Storage(format!("sled: {e}"))
    }
}

/// Why a receiver refused (part of) a transaction; machine-readable, so the
/// sender can tell its app and operator what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefusalKind {
    /// The stamp is further ahead of the receiver's clock than its
    /// `max_clock_skew`: the origin's clock (or the sender's) is wrong.
    ClockSkew,
    /// The receiver does not take this table from the sender (not
    /// subscribed, or not accepted on this link).
    NotSubscribed,
    /// The record breaks the receiver's rules: too large, not a JSON
    /// object, or filed under a key other than its primary key.
    InvalidRecord,
    /// The receiver has no such table and does not create it.
    MissingTable,
}

impl RefusalKind {
    /// Stable lower-case name, as status and errors show it.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::ClockSkew => "clock_skew",
            RefusalKind::NotSubscribed => "not_subscribed",
            RefusalKind::InvalidRecord => "invalid_record",
            RefusalKind::MissingTable => "missing_table",
        }
    }

    /// What the sender's side can do about it.
    pub fn advice(self) -> &'static str {
        match self {
            RefusalKind::ClockSkew => {
                "write the record again once the clock of the node that stamped it is right"
            }
            RefusalKind::NotSubscribed => "subscribe to the table in the peer's entry for this node, then write the record again",
            RefusalKind::InvalidRecord => "write a record the peer accepts (within its max_record_bytes, a JSON object filed under its primary key)",
            RefusalKind::MissingTable => "create the table on the peer, then write the record again",
        }
    }
}

impl std::fmt::Display for RefusalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
