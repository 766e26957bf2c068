//! The cloud side's connectors: where a hub's tables go beyond tidelog
//! (sinks: PostgreSQL, NATS JetStream) and where cloud-edited tables come
//! from (sources). Only `tidelog serve` and tests use them; an edge links
//! none of this.
//!
//! Every sink is driven the same way (see [`sink`]): batches of the hub's
//! own log, in log order, each carrying the records' states after the
//! writes and the log position the batch reaches. A new kind of sink
//! (Kafka, say) implements [`sink::Sink`] and nothing on the edge-facing
//! side changes.

pub mod driver;
#[cfg(feature = "jetstream")]
pub mod jetstream;
#[cfg(feature = "postgres")]
pub mod pg_progress;
#[cfg(feature = "postgres")]
pub mod pg_source;
#[cfg(feature = "postgres")]
mod pg_source_config;
#[cfg(feature = "postgres")]
mod pg_source_reader;
#[cfg(feature = "postgres")]
mod pg_source_sql;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sink;
