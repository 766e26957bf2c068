//! The local engine: storage, the catalog, transactions, reads, the
//! transaction log, listeners and background maintenance.

pub(crate) mod catalog;
pub mod codec;
pub(crate) mod conflict;
pub(crate) mod conflict_log;
pub(crate) mod conflict_state;
pub(crate) mod counter;
pub(crate) mod db;
pub mod delta;
pub(crate) mod dir;
pub(crate) mod fanout;
pub(crate) mod filter;
pub mod hlc;
pub(crate) mod keys;
pub(crate) mod listener;
pub mod log;
pub(crate) mod log_form;
pub(crate) mod log_hold;
pub(crate) mod maintenance;
pub(crate) mod merge;
pub(crate) mod open;
pub mod profile;
pub(crate) mod read;
pub mod record;
pub(crate) mod record_text;
pub(crate) mod remote;
pub(crate) mod resolve;
pub(crate) mod retention;
pub(crate) mod settle;
pub(crate) mod settle_local;
pub(crate) mod side;
pub(crate) mod storage;
pub(crate) mod usage;
pub(crate) mod write;
