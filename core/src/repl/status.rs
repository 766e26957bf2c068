//! What an operator reads about each peer: its link, its tables, its
//! backlog and the writes refused either way.

use serde::Serialize;

use crate::local::codec::Stamp;

/// Replication state of one table with one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableStatus {
    pub table: String,
    pub publish: bool,
    pub subscribe: bool,
    /// What this instance receives: "idle", "syncing", "streaming" or
    /// `"refused: <reason>"`.
    pub inbound: String,
    /// What this instance sends: "idle", "syncing", "streaming",
    /// `"refused: <reason>"`, or "not subscribed by the peer" (the peer's
    /// hello on the current link did not ask for this table).
    pub outbound: String,
    /// Versions of this table's keys not sent to the peer because a newer
    /// one of the same key followed within the flow's `coalesce_ms`.
    pub coalesced: u64,
    /// Why this table's flow on the link stalled, as the peer's `stalled`
    /// says; `None` when it did not (a table the budget holds, or one
    /// the link does not carry, never stalls).
    pub stalled: Option<String>,
}

/// The bytes on one link, and what holds back what this node sends.
/// Counters run from when this instance opened.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct TrafficStatus {
    /// Encoded frames sent to the peer, before compression.
    pub bytes_out_raw: u64,
    /// The same frames as written to the link (after compression, with
    /// their length prefix; TLS records add about 22 bytes per 16 KiB).
    pub bytes_out_wire: u64,
    /// Frames received from the peer, after decompression.
    pub bytes_in_raw: u64,
    /// The same frames as read from the link.
    pub bytes_in_wire: u64,
    /// The compression of the current link ("zstd" or "none"); `None`
    /// while not connected.
    pub compression: Option<String>,
    /// The configured cap, bytes per second; `None`: uncapped.
    pub max_bytes_per_sec: Option<u64>,
    /// Quota left in the current period; `None`: no quota.
    pub quota_left_bytes: Option<u64>,
    /// When the current quota period ends (ms since the epoch).
    pub quota_period_end_ms: Option<u64>,
    /// Why data waits to go out, if it does: "rate" (the cap), "quota"
    /// (spent: only exempt tables flow), "window" (bulk tables wait for a
    /// window).
    pub held: Option<String>,
    /// Writes sent as attribute deltas rather than whole records.
    pub deltas_sent: u64,
    /// Deltas the peer could not apply (it did not hold the version they
    /// were made against), sent again whole.
    pub delta_misses: u64,
    /// Versions not sent because a newer one of the same key followed
    /// within a table's `coalesce_ms` (all tables).
    pub coalesced: u64,
}

/// Everything an operator wants to know about one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    pub name: String,
    pub address: Option<String>,
    /// The peer rule that admitted this peer on its first contact; `None`
    /// for a peer configured by name. An admitted peer that is not
    /// connected is dormant: its state (resume points, acknowledged
    /// position, quota) stays, and holds the log, until it returns, its
    /// rule's `max_silence` passes, or it is forgotten.
    pub rule: Option<String>,
    /// When a link to the peer last went up or down, ms since the epoch;
    /// kept across restarts for an admitted peer, for this run only for a
    /// configured one. `None`: no contact known.
    pub last_contact_ms: Option<u64>,
    pub connected: bool,
    /// When the link last went up (if connected) or down (if not), ms since
    /// the epoch; `None` if it never connected.
    pub since_ms: Option<u64>,
    pub last_error: Option<String>,
    /// The peer's node id, once it said hello.
    pub node_id: Option<u64>,
    pub tables: Vec<TableStatus>,
    /// Highest local log sequence sent to the peer.
    pub sent_seq: u64,
    /// Highest local log sequence the peer acknowledged as applied.
    pub acked_seq: u64,
    /// Highest peer log sequence this instance applied.
    pub received_seq: u64,
    /// Transactions still in this node's log after `acked_seq`: entries
    /// trimmed away are not counted. Every entry counts, including those
    /// the peer will not receive (writes to tables it does not take, its
    /// own writes coming back): the link passes over them as it catches up.
    /// Always 0 for a peer this node publishes nothing to.
    pub backlog_txns: u64,
    /// The bytes of those entries, as `log_max_bytes` counts them (keys and
    /// values, before compression). Exact, however long the log.
    pub backlog_bytes: u64,
    /// Age of the oldest of those entries, in ms; 0 without a backlog.
    pub lag_ms: u64,
    /// The log no longer holds the entries right after `acked_seq` (a cap
    /// trimmed them, or the peer was added after they were trimmed): the
    /// peer's tables are synced from their current rows when it next
    /// connects (or are being synced now) instead of being streamed from
    /// the log, and the backlog then counts only what the log still holds.
    pub resync_needed: bool,
    /// Writes from the peer that were refused: tables not subscribed from
    /// it, stamps beyond `max_clock_skew`, records breaking the rules,
    /// tables this node does not have (see `refusals` for which and why).
    pub refused_writes: u64,
    /// Frames from the peer refused because a transaction or sync row in
    /// them had an origin the peer may not send (this node's own node id,
    /// or another node's when the peer does not relay to this node); each
    /// closed the link and applied nothing of its frame.
    pub origin_violations: u64,
    /// Writes from the peer that this node already had (equal or newer
    /// stamp), dropped by the stamp rule: relays in a mesh, resyncs.
    pub duplicates_received: u64,
    /// Initial syncs and resyncs this instance received from the peer.
    pub syncs_received: u64,
    /// Resyncs this instance sent the peer because the log no longer held
    /// its resume point.
    pub resyncs_sent: u64,
    /// Why the last resync (either way) happened.
    pub last_resync_reason: Option<String>,
    /// Successful connections so far.
    pub connects: u64,
    /// Dials of this peer that failed in TLS: the handshake, or the
    /// peer's refusal of this node's certificate on the first read (with
    /// TLS 1.3 the server checks it after the dialer's handshake ends).
    /// Connections the peer dialed in that failed before naming themselves
    /// are counted for the whole node, in
    /// `Database::accepted_tls_failures` (no peer is known for them).
    pub tls_failures: u64,
    /// Why the link stalled, if it did and no later link moved since: a
    /// code, a colon, then what happened. Codes: `no_ack_progress`
    /// (transactions sent, no acknowledgement came), `write_blocked` (a frame could not
    /// be written: the peer stopped reading, half-open), `apply_stuck`
    /// (frames from the peer are not applied). A link stalls after three
    /// heartbeat intervals (at least 2 s) without progress while it has
    /// something to move; it is then torn down and redialed. A link held
    /// by its budget, or idle, never stalls.
    pub stalled: Option<String>,
    /// Stalls found since this instance opened (each tore its link down).
    pub stalls: u64,
    /// Bytes in and out, compression, budget and quota, deltas.
    pub traffic: TrafficStatus,
    /// Writes refused either way on this link, one entry per direction and
    /// table that had any, kept until the database closes (this node's
    /// writes the peer refused are also kept across restarts). Unlike
    /// `last_error`, later link events do not overwrite them.
    pub refusals: Vec<RefusalStatus>,
}

/// Refused writes of one table in one direction, with the latest refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusalStatus {
    pub table: String,
    /// "inbound": this node refused writes from the peer; "outbound": the
    /// peer refused writes of this node (their receipts fail).
    pub direction: String,
    /// Transactions refused (per table); outbound, of those still kept.
    pub count: u64,
    /// Why the latest was refused: "clock_skew", "not_subscribed",
    /// "invalid_record" or "missing_table".
    pub kind: String,
    /// The latest refusal, as the refusing node put it.
    pub reason: String,
    /// When the latest refusal happened (was learned of, outbound), ms
    /// since the epoch.
    pub at_ms: u64,
    /// The refused transaction's stamp: its HLC time (ms << 16 | counter)
    /// and origin node id.
    pub stamp: Stamp,
    /// Its sequence in the sender's log (0: a row of a sync).
    pub seq: u64,
}
