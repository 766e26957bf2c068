//! Replication: per-table publish/subscribe between instances over mutual
//! TLS (or plaintext behind an explicit `insecure` switch), both directions
//! on one connection, last writer wins.
//!
//! The library owns one tokio runtime for it, created by
//! [`Database::start_replication`] and shut down by [`Database::close`];
//! purely local use never starts it. Public calls never `block_on` the
//! runtime, so they are safe from any thread, including a tokio worker of
//! the application's own runtime.

mod admit;
mod api;
mod coalesce;
mod config;
mod contact;
mod cursor;
mod deltas;
mod lanes;
mod link;
mod meter;
mod peer;
mod receiver;
mod route;
mod rule;
mod runtime;
mod sender;
mod session;
mod stall;
mod status;
mod sunk;
mod sync_part;

pub use config::{
    Compression, LinkBudget, PeerConfig, QuotaPeriod, ReplicationOptions, Security, TableFlow,
};
#[doc(hidden)]
pub use meter::set_budget_clock_offset_ms;
pub use rule::PeerRule;
pub use status::{PeerStatus, RefusalStatus, TableStatus, TrafficStatus};
pub use sunk::{EdgePosition, HintsFuture, ResumeHints, SinkGate};
