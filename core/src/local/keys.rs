//! The storage key layout, in one place: every key tidelog writes is built
//! (and, where it is read back, taken apart) here, so that a module that
//! only needs to name keys (retention, replication cursors) imports this
//! module and not the write path or the database handle.
//!
//! Spaces (see `storage::Space`) keep these apart; within a space:
//! - rows: `table id (u32 BE) | encoded primary key`
//! - indexes: `table id | slot (u16 BE) | ...`; user indexes from slot 1,
//!   tombstones at `TOMBSTONE_INDEX`, expiry at `EXPIRY_INDEX`, both
//!   followed by `millis (u64 BE) | encoded primary key`
//! - log: `sequence (u64 BE)`
//! - metadata: `table/<name>`, `next_table_id`, `cursor/<name>`,
//!   `acked/<peer>`, `refused/<peer>\0 | seq | stamp time | stamp node | table`,
//!   `notwanted/<peer>`, `quota/<peer>`, `admitted/<peer>` (a peer a rule
//!   admitted: its rule and first and last contact)

use crate::error::{Error, Result};
use crate::local::codec::{put_key, Key, Stamp};

/// Index slot reserved for the expiry index (by update time).
pub(crate) const EXPIRY_INDEX: u16 = u16::MAX;
/// Index slot reserved for the tombstone index (by stamp time).
pub(crate) const TOMBSTONE_INDEX: u16 = u16::MAX - 1;

/// Prefix of every row key of table `table`.
pub(crate) fn row_prefix(table: u32) -> [u8; 4] {
    table.to_be_bytes()
}

/// Prefix of every entry of index `slot` of table `table`.
pub(crate) fn index_prefix(table: u32, slot: u16) -> [u8; 6] {
    let mut p = [0u8; 6];
    p[..4].copy_from_slice(&table.to_be_bytes());
    p[4..].copy_from_slice(&slot.to_be_bytes());
    p
}

/// The table id a row key starts with.
pub(crate) fn table_id_of_row(rk: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(rk.get(..4)?.try_into().ok()?))
}

pub(crate) fn row_key(table: u32, key: &Key) -> Vec<u8> {
    let mut k = Vec::with_capacity(24);
    k.extend_from_slice(&row_prefix(table));
    put_key(&mut k, key);
    k
}

/// Entry of the tombstone index: tombstones by stamp time, for collection.
pub(crate) fn tombstone_key(table: u32, millis: u64, key: &Key) -> Vec<u8> {
    let mut k = index_prefix(table, TOMBSTONE_INDEX).to_vec();
    k.extend_from_slice(&millis.to_be_bytes());
    put_key(&mut k, key);
    k
}

/// Entry of the expiry index: records by update time, for expiry.
pub(crate) fn expiry_key(table: u32, millis: u64, key: &Key) -> Vec<u8> {
    let mut k = index_prefix(table, EXPIRY_INDEX).to_vec();
    k.extend_from_slice(&millis.to_be_bytes());
    put_key(&mut k, key);
    k
}

pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(crate) fn seq_from_key(k: &[u8]) -> Result<u64> {
    let b: [u8; 8] = k
        .try_into()
        .map_err(|_| Error::Corrupt("log key length".into()))?;
    Ok(u64::from_be_bytes(b))
}

pub(crate) const TABLE_PREFIX: &[u8] = b"table/";
pub(crate) const NEXT_TABLE_ID: &[u8] = b"next_table_id";

pub(crate) fn table_key(name: &str) -> Vec<u8> {
    let mut k = TABLE_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

pub(crate) fn cursor_key(name: &str) -> Vec<u8> {
    let mut k = b"cursor/".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// Highest log sequence `peer` acknowledged.
pub(crate) fn acked_key(peer: &str) -> Vec<u8> {
    let mut k = b"acked/".to_vec();
    k.extend_from_slice(peer.as_bytes());
    k
}

/// The published tables `peer`'s last link passed over (delivery receipts).
pub(crate) fn not_wanted_key(peer: &str) -> Vec<u8> {
    let mut k = b"notwanted/".to_vec();
    k.extend_from_slice(peer.as_bytes());
    k
}

/// How much of its byte quota the link to `peer` used, and in which period.
pub(crate) fn quota_key(peer: &str) -> Vec<u8> {
    let mut k = b"quota/".to_vec();
    k.extend_from_slice(peer.as_bytes());
    k
}

/// Prefix of every admission record (peers admitted by a rule).
pub(crate) const ADMITTED_PREFIX: &[u8] = b"admitted/";

/// The admission record of `peer`. Node names are DNS names (checked
/// before a record is written), so no name is a prefix trick on another's
/// key: names hold no `/` or NUL.
pub(crate) fn admitted_key(peer: &str) -> Vec<u8> {
    let mut k = ADMITTED_PREFIX.to_vec();
    k.extend_from_slice(peer.as_bytes());
    k
}

/// Prefix of every refusal record of `peer`.
pub(crate) fn refusals_prefix(peer: &str) -> Vec<u8> {
    let mut k = b"refused/".to_vec();
    k.extend_from_slice(peer.as_bytes());
    // Node names never hold a NUL, so `a` never scans over `a-2`'s records.
    k.push(0);
    k
}

/// One refusal record of `peer`: sequence, stamp and table of what it refused.
pub(crate) fn refusal_key(peer: &str, key: &(u64, Stamp, String)) -> Vec<u8> {
    let mut k = refusals_prefix(peer);
    k.extend_from_slice(&key.0.to_be_bytes());
    k.extend_from_slice(&key.1.time.to_be_bytes());
    k.extend_from_slice(&key.1.node.to_be_bytes());
    k.extend_from_slice(key.2.as_bytes());
    k
}
