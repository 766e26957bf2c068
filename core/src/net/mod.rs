//! Networking groundwork for replication: the framed wire protocol, mutual
//! TLS setup and peer identity, and (with the `cli` feature) development
//! certificates. The replication engine builds on these.

#[cfg(feature = "cli")]
pub mod certs;
pub mod tls;
pub mod wire;
