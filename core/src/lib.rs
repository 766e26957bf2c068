//! tidelog: an embedded database for edge gateways that replicates chosen
//! tables between instances over mutual TLS, both ways, last writer wins.

pub mod codec;
pub mod error;
pub mod hlc;
pub mod log;
pub mod net;
pub(crate) mod storage;

pub use codec::{Key, Stamp};
pub use error::{Error, ErrorKind, Result};
pub use log::{LogEntry, LogWrite, WriteOp};
pub use storage::EngineKind;
