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

mod catalog;
pub mod codec;
mod db;
mod dir;
pub mod error;
pub mod hlc;
mod listener;
pub mod log;
mod maintenance;
pub mod net;
mod read;
pub mod record;
mod record_text;
mod remote;
mod repl;
mod retention;
pub(crate) mod storage;
mod write;

pub use catalog::{TableInfo, TableOptions};
pub use codec::{Key, Stamp};
pub use db::{Database, Durability, OpenOptions, Retention};
pub use error::{Error, ErrorKind, Result};
pub use listener::{Change, ChangeEvent, ListenerId};
pub use log::{LogEntry, LogWrite, WriteOp};
pub use net::tls::{PemSource, TlsIdentity};
pub use read::{LogBounds, ScanOptions};
pub use record::Record;
pub use remote::{RemoteOutcome, RemoteTxn};
pub use repl::{
    PeerConfig, PeerStatus, RefusalStatus, ReplicationOptions, Security, TableFlow, TableStatus,
};
pub use storage::EngineKind;
pub use write::{CommitInfo, Transaction};

// The README's Rust snippets compile and run as doctests
// (`cargo test --doc -p tidelog`, run by tests/readme/run_readme.py).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
