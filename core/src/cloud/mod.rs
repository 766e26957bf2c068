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

#[cfg(feature = "jetstream")]
pub mod jetstream;
pub mod sink;
