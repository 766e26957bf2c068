//! Replication: start, listen, peers, status, delivery receipts.

use std::ffi::c_char;
use std::time::Duration;

use serde_json::Value;
use tidelog_core::PeerConfig;

use crate::guard::{guard, json_arg, str_arg, FfiResult, OptOut, Out};
use crate::handles::{self, tidelog_db};
use crate::json;
use crate::strings::{new_string, tidelog_string};
use crate::tidelog_status;

/// 100 years: "forever" for a wait, and far from overflowing an Instant.
const MAX_WAIT_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Starts the replication engine (its threads and TLS configuration). Call
/// once per open database, before tidelog_listen() and tidelog_add_peer().
/// It stops with tidelog_close().
///
/// @param db           a database handle.
/// @param options_json either `{"tls": {"cert": "node.pem", "key":
///                     "node.key", "ca": "ca.pem"}}` (PEM files; or PEM text
///                     as `"cert_pem"`, `"key_pem"`, `"ca_pem"`) for mutual
///                     TLS, or `{"insecure": true}` for plaintext on a
///                     trusted loopback only. Optional tuning, in the
///                     options schema's units (durations: integer ms or
///                     `"250ms"`; sizes: integer bytes or `"16MiB"`):
///                     `"heartbeat_interval", "idle_timeout",
///                     "connect_timeout", "backoff_initial", "backoff_max",
///                     "max_frame_bytes", "batch_max_txns", "window_txns",
///                     "sync_chunk_rows", "worker_threads"` (the older
///                     `"heartbeat_ms"` and `"*_ms"` names still decode).
///                     Unknown or out-of-range options fail with
///                     TIDELOG_INVALID_INPUT naming the option and its range.
/// @return TIDELOG_OK, TIDELOG_TLS (unreadable or mismatched certificate,
///         key or CA), TIDELOG_INVALID_INPUT, TIDELOG_UNSUPPORTED (already
///         started), TIDELOG_CLOSED, ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_start_replication(
    db: *mut tidelog_db,
    options_json: *const c_char,
) -> tidelog_status {
    guard(|| {
        let db = handles::db(db)?;
        // SAFETY: string argument follows the header contract.
        let opts = json::replication_options(unsafe { json_arg(options_json, "options_json") }?)?;
        Ok(db.start_replication(opts)?)
    })
}

/// Accepts peers dialing in on `address`.
///
/// @param db       a database handle with replication started.
/// @param address  `host:port`, e.g. `"0.0.0.0:7000"`; port 0 picks a free one.
/// @param out_address optional (may be NULL): receives the bound address as
///                 text, e.g. `"127.0.0.1:40123"`; free it with
///                 tidelog_string_free().
/// @return TIDELOG_OK, TIDELOG_PEER (cannot bind), TIDELOG_UNSUPPORTED
///         (replication not started), ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_listen(
    db: *mut tidelog_db,
    address: *const c_char,
    out_address: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { OptOut::new(out_address, std::ptr::null_mut()) };
        let db = handles::db(db)?;
        // SAFETY: as above.
        let address = unsafe { str_arg(address, "address") }?;
        let bound = db.listen(address)?;
        if !out.is_null() {
            out.set(new_string(bound.to_string())?);
        }
        Ok(())
    })
}

fn peer_config(v: Value) -> FfiResult<PeerConfig> {
    Ok(tidelog_core::options::peer_from_json(v)?)
}

/// Adds a peer; takes effect at once, also while it is unreachable.
///
/// @param db        a database handle with replication started.
/// @param peer_json `{"name": "cloud", "address": "host:port", "tables":
///                  [{"table": "alerts", "publish": true}, {"table":
///                  "thresholds", "subscribe": true, "since_ms": ms}]}`.
///                  `name` is the peer's node name (the DNS name in its
///                  certificate). With an `address` this instance dials
///                  the peer; without one it waits for the peer to dial in.
///                  Optional `"addresses": ["host:port", ...]`: more hubs
///                  of the same logical peer (one node name), tried after
///                  `address` in order, wrapping (at most 16 in all).
///                  Data for a table flows from A to B iff A publishes it
///                  to B and B subscribes to it from A. Optional
///                  `"relays": true|false`: whether the peer may forward
///                  other nodes' writes to this instance (default: true
///                  with an `address`, false without; see the README's
///                  origin rules).
/// @return TIDELOG_OK, TIDELOG_ALREADY_EXISTS, TIDELOG_INVALID_INPUT,
///         TIDELOG_UNSUPPORTED (replication not started), ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_add_peer(
    db: *mut tidelog_db,
    peer_json: *const c_char,
) -> tidelog_status {
    guard(|| {
        let db = handles::db(db)?;
        // SAFETY: string argument follows the header contract.
        let cfg = peer_config(unsafe { json_arg(peer_json, "peer_json") }?)?;
        Ok(db.add_peer(cfg)?)
    })
}

/// Replaces a peer's configuration (same JSON as tidelog_add_peer()); its
/// link restarts with it.
///
/// @param db        a database handle with replication started.
/// @param peer_json the peer's new configuration; `name` selects the peer.
/// @return TIDELOG_OK, TIDELOG_NOT_FOUND, TIDELOG_INVALID_INPUT, ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_update_peer(
    db: *mut tidelog_db,
    peer_json: *const c_char,
) -> tidelog_status {
    guard(|| {
        let db = handles::db(db)?;
        // SAFETY: string argument follows the header contract.
        let cfg = peer_config(unsafe { json_arg(peer_json, "peer_json") }?)?;
        Ok(db.update_peer(cfg)?)
    })
}

/// Removes a peer and closes its link. Its resume point is kept: adding it
/// again resumes where it left off.
///
/// @param db   a database handle with replication started.
/// @param name the peer's node name.
/// @return TIDELOG_OK, TIDELOG_NOT_FOUND, ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_remove_peer(
    db: *mut tidelog_db,
    name: *const c_char,
) -> tidelog_status {
    guard(|| {
        let db = handles::db(db)?;
        // SAFETY: string argument follows the header contract.
        let name = unsafe { str_arg(name, "name") }?;
        Ok(db.remove_peer(name)?)
    })
}

/// Status of one peer: `{"name", "address", "rule", "last_contact_ms",
/// "connected", "since_ms",
/// "last_error", "node_id", "tables": [{"table", "publish", "subscribe",
/// "inbound", "outbound", "coalesced", "stalled"}], "sent_seq", "acked_seq", "received_seq",
/// "backlog_txns", "backlog_bytes", "lag_ms", "resync_needed", "refused_writes",
/// "origin_violations", "duplicates_received", "syncs_received", "resyncs_sent",
/// "last_resync_reason", "connects", "tls_failures", "stalled", "stalls", "traffic": {"bytes_out_raw",
/// "bytes_out_wire", "bytes_in_raw", "bytes_in_wire", "compression",
/// "max_bytes_per_sec", "quota_left_bytes", "quota_period_end_ms", "held",
/// "deltas_sent", "delta_misses", "coalesced"}, "refusals": [{"table", "direction",
/// "count", "kind", "reason", "at_ms", "stamp": {"time", "node"}, "seq"}]}`: the fields and meanings of the
/// README's status list. Counters, sequences, times (ms since the epoch)
/// and `node_id` are unsigned 64-bit integers; a field with nothing to say
/// yet (`address`, `rule`, `last_contact_ms`, `since_ms`, `last_error`,
/// `node_id`, `last_resync_reason`) is `null`. `rule` names the peer rule
/// that admitted the peer on first contact (`null`: configured by name);
/// `last_contact_ms` is when a link to it last went up or down. The backlog counts the transactions
/// (and their bytes) still in this node's log after "acked_seq";
/// "resync_needed" is true once the log no longer holds what follows
/// "acked_seq" (the peer's tables are then synced from their rows).
///
/// @param db       a database handle with replication started.
/// @param name     the peer's node name.
/// @param out_json receives the JSON text; free it with tidelog_string_free().
/// @return TIDELOG_OK, TIDELOG_NOT_FOUND, TIDELOG_UNSUPPORTED, ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_peer_status(
    db: *mut tidelog_db,
    name: *const c_char,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let db = handles::db(db)?;
        // SAFETY: as above.
        let name = unsafe { str_arg(name, "name") }?;
        out.set(new_string(json::to_text(&db.peer_status(name)?)?)?);
        Ok(())
    })
}

/// Status of every peer: a JSON array of the objects tidelog_peer_status()
/// returns, by name.
///
/// @param db       a database handle with replication started.
/// @param out_json receives the JSON text; free it with tidelog_string_free().
#[no_mangle]
pub unsafe extern "C" fn tidelog_replication_status(
    db: *mut tidelog_db,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: out pointer follows the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let status = handles::db(db)?.replication_status()?;
        out.set(new_string(json::to_text(&status)?)?);
        Ok(())
    })
}

/// Waits until `peer` has acknowledged this instance's log up to `seq`
/// (the sequence a write or commit returned), i.e. has applied it; works
/// across restarts. Blocks the calling thread (not the database).
///
/// @param db         a database handle with replication started.
/// @param peer       the peer's node name.
/// @param seq        a log sequence number of this instance.
/// @param timeout_ms how long to wait at most; UINT64_MAX (anything beyond
///                   100 years) waits without a practical limit.
/// @return TIDELOG_OK, TIDELOG_TIMEOUT (the last-error message says what
///         the link looks like), TIDELOG_PEER (the transaction writes a
///         table this instance publishes to `peer` but `peer` does not
///         subscribe to: it will never be acknowledged, also with the link
///         down or after a restart; or `peer` refused it, the message names
///         the table and why; or its log entry was trimmed while `peer`
///         skips a table this instance publishes to it, so delivery cannot
///         be proven), TIDELOG_CLOCK_SKEW
///         (`peer` refused it: its stamp is beyond `peer`'s max clock
///         skew), TIDELOG_NOT_FOUND (no such peer), TIDELOG_CLOSED (closed
///         while waiting), ... A refusal fails the wait at once, also when
///         `peer` acknowledged later transactions.
#[no_mangle]
pub unsafe extern "C" fn tidelog_wait_for_ack(
    db: *mut tidelog_db,
    peer: *const c_char,
    seq: u64,
    timeout_ms: u64,
) -> tidelog_status {
    guard(|| {
        let db = handles::db(db)?;
        // SAFETY: string argument follows the header contract.
        let peer = unsafe { str_arg(peer, "peer") }?;
        // The core adds the timeout to Instant::now(), which must not overflow.
        let timeout_ms = timeout_ms.min(MAX_WAIT_MS);
        Ok(db.wait_for_ack(peer, seq, Duration::from_millis(timeout_ms))?)
    })
}

/// Waits until every peer this instance publishes to has acknowledged its
/// log up to `seq`, i.e. has applied it: the delivery receipt of a write
/// that must reach all its destinations; works across restarts. Blocks the
/// calling thread (not the database); other threads may use `db` meanwhile.
///
/// @param db         a database handle with replication started.
/// @param seq        a log sequence number of this instance (the sequence a
///                   write or commit returned), or UINT64_MAX for everything
///                   committed when the call starts.
/// @param timeout_ms how long to wait at most; UINT64_MAX (anything beyond
///                   100 years) waits without a practical limit.
/// @return TIDELOG_OK, TIDELOG_TIMEOUT (the last-error message says what
///         the link to the first peer still missing it looks like),
///         TIDELOG_PEER and TIDELOG_CLOCK_SKEW as tidelog_wait_for_ack
///         (not subscribed, refused, or delivery that cannot be proven),
///         TIDELOG_CLOSED (closed while waiting), ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_wait_for_delivery(
    db: *mut tidelog_db,
    seq: u64,
    timeout_ms: u64,
) -> tidelog_status {
    guard(|| {
        let db = handles::db(db)?;
        let seq = (seq != u64::MAX).then_some(seq);
        // The core adds the timeout to Instant::now(), which must not overflow.
        let timeout_ms = timeout_ms.min(MAX_WAIT_MS);
        Ok(db.wait_for_delivery(seq, Duration::from_millis(timeout_ms))?)
    })
}
