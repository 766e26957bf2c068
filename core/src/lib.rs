//! tidelog: an embedded database for edge gateways that replicates chosen
//! tables between instances over mutual TLS, both ways, last writer wins.
//!
//! The local API is synchronous: [`Database::open`], tables, transactions,
//! reads, the transaction log and change listeners need no runtime and no
//! network. Replication runs on a tokio runtime the library owns.
//!
//! What the library cannot return to a caller (a refused replication link, a
//! resync, a failed background flush, a panicking change listener) goes
//! through the [`log`](https://docs.rs/log) facade, never to stderr: the host
//! installs a logger to see it. Targets: `tidelog::repl` (links, syncs),
//! `tidelog::storage` (journal recovery, failed writes undone),
//! `tidelog::maintenance` (background flush, retention, sweeps) and
//! `tidelog::listener` (change listeners).

pub mod cloud;
pub mod error;
mod local;
pub mod net;
pub mod options;
mod repl;
pub mod view;

pub use local::{codec, hlc, log, record};

pub use error::{Error, ErrorKind, NotInteger, Result};
pub use local::catalog::{OnFull, TableInfo, TableOptions};
pub use local::codec::{Key, Stamp};
pub use local::conflict::{
    ConflictCase, ConflictEntry, ConflictPolicy, ConflictResolver, ConflictSide, Resolution,
};
pub use local::db::{Database, Durability, OpenOptions, Retention};
/// Benchmark only: the commit feed's routing among filtered links.
#[doc(hidden)]
pub use local::fanout::route_filtered_changes;
pub use local::listener::{Change, ChangeEvent, ListenerId};
pub use local::log::{LogEntry, LogWrite, WriteOp};
pub use local::profile::Profile;
pub use local::read::{LogBounds, ScanOptions};
pub use local::record::Record;
pub use local::remote::{RemoteOutcome, RemoteTxn};
pub use local::storage::EngineKind;
pub use local::table_stats::TableStats;
pub use local::usage::DiskUsage;
pub use local::write::{CommitInfo, Transaction};
pub use net::tls::{PemSource, TlsIdentity};
/// Test only: moves the clock a link's quota periods and windows see.
#[doc(hidden)]
pub use repl::set_budget_clock_offset_ms;
pub use repl::{
    Compression, EdgePosition, HintsFuture, LinkBudget, PeerConfig, PeerRule, PeerStatus,
    QuotaPeriod, RefusalStatus, ReplicationOptions, ResumeHints, Security, SinkGate, TableFlow,
    TableStatus, TrafficStatus,
};
pub use view::{
    ChangeEventView, ChangeView, CommitInfoView, LogEntryView, LogWriteView, OpKind, RecordView,
};

// The README's Rust snippets compile and run as doctests
// (`cargo test --doc -p tidelog`, run by tests/readme/run_readme.py).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
