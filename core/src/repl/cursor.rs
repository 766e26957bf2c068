//! What replication remembers across restarts.
//!
//! Receiving side: per peer, per subscribed table, the peer's log sequence
//! up to which this node has applied it, and whether the table's initial
//! sync completed. It is written in the same atomic commit as the data it
//! describes (through `apply_remote`), so after any crash it says exactly
//! what was applied: nothing lost, nothing applied twice.
//!
//! Sending side: per peer, the highest sequence it acknowledged, for
//! delivery receipts and log retention, and what it refused of this node's
//! log (so a receipt for a refused write still fails after a restart), and
//! which published tables it did not ask for on the last link (so a
//! receipt for a write to one fails with the link down or after a restart).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::local::codec::Stamp;
use crate::local::db::Database;
use crate::local::keys::{
    acked_key, cursor_key, not_wanted_key, quota_key, refusal_key, refusals_prefix,
};
use crate::net::wire::RefusalKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct TableCursor {
    /// The peer's log sequence applied up to, for this table.
    pub(crate) seq: u64,
    /// The initial sync of this table completed.
    pub(crate) synced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct PeerCursor {
    /// Node id of the peer these positions belong to; a peer that comes back
    /// with another id restarted its log, so the positions are void.
    pub(crate) peer_node_id: u64,
    pub(crate) tables: BTreeMap<String, TableCursor>,
}

impl PeerCursor {
    pub(crate) fn load(db: &Database, peer: &str) -> Result<PeerCursor> {
        match db.cursor(peer)? {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map_err(|e| Error::Corrupt(format!("replication cursor for `{peer}`: {e}"))),
            None => Ok(PeerCursor::default()),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Stores the cursor alone (the receiver stores it with what it
    /// applies; this is for a cursor voided before anything was).
    pub(crate) fn store(&self, db: &Database, peer: &str) -> Result<()> {
        db.meta_put(&cursor_key(peer), &self.encode())
    }
}

pub(crate) fn load_acked(db: &Database, peer: &str) -> Result<u64> {
    match db.meta_get(&acked_key(peer))? {
        Some(v) => {
            let b: [u8; 8] = v
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt(format!("acknowledged sequence of `{peer}`")))?;
            Ok(u64::from_be_bytes(b))
        }
        None => Ok(0),
    }
}

pub(crate) fn store_acked(db: &Database, peer: &str, seq: u64) -> Result<()> {
    db.meta_put(&acked_key(peer), &seq.to_be_bytes())
}

/// Most refusal records kept per peer; past it the lowest sequences go
/// first (their receipts then only see the acknowledgement). About 300
/// bytes each, so at most a few MB per peer.
pub(crate) const MAX_REFUSALS_PER_PEER: usize = 10_000;

/// Identifies what was refused: the transaction (its sequence in this
/// node's log, 0 for a row of a sync), its stamp, and the table.
pub(crate) type RefusalKey = (u64, Stamp, String);

/// Why a peer refused (part of) a transaction of this node's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RefusalRecord {
    pub(crate) kind: RefusalKind,
    pub(crate) reason: String,
    /// When this node learned of it, ms since the epoch.
    pub(crate) at_ms: u64,
}

pub(crate) fn load_refusals(
    db: &Database,
    peer: &str,
) -> Result<BTreeMap<RefusalKey, RefusalRecord>> {
    let prefix = refusals_prefix(peer);
    let corrupt = || Error::Corrupt(format!("refusal record of `{peer}`"));
    let mut out = BTreeMap::new();
    for (k, v) in db.meta_prefix(&prefix)? {
        let rest = k.get(prefix.len()..).ok_or_else(corrupt)?;
        if rest.len() < 24 {
            return Err(corrupt());
        }
        let num = |i: usize| {
            let b: [u8; 8] = rest[i..i + 8].try_into().map_err(|_| corrupt())?;
            Ok::<u64, Error>(u64::from_be_bytes(b))
        };
        let table = String::from_utf8(rest[24..].to_vec()).map_err(|_| corrupt())?;
        let stamp = Stamp {
            time: num(8)?,
            node: num(16)?,
        };
        let rec: RefusalRecord = postcard::from_bytes(&v).map_err(|_| corrupt())?;
        out.insert((num(0)?, stamp, table), rec);
    }
    Ok(out)
}

/// Adds `add` and removes `drop` in one commit.
pub(crate) fn store_refusals(
    db: &Database,
    peer: &str,
    add: &[(RefusalKey, RefusalRecord)],
    drop: &[RefusalKey],
) -> Result<()> {
    let puts = add
        .iter()
        .map(|(k, r)| {
            postcard::to_stdvec(r)
                .map(|v| (refusal_key(peer, k), v))
                .map_err(|e| Error::Storage(format!("encoding a refusal record: {e}")))
        })
        .collect::<Result<_>>()?;
    let deletes = drop.iter().map(|k| refusal_key(peer, k)).collect();
    db.meta_commit(puts, deletes)
}

/// Which tables published to a peer its last link passed over.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct Skipped {
    /// Published tables the peer's hello on the last link did not ask for.
    pub(crate) not_wanted: BTreeSet<String>,
    /// Tables an earlier link passed over that the peer asks for since the
    /// last link: until it acknowledges a position past `mark`, their
    /// earlier writes may still be on their way (a sync, or a stream from
    /// the peer's old resume point).
    pub(crate) catching_up: BTreeSet<String>,
    /// The last sequence committed when that link came up. Nothing past it
    /// goes out before every sync of the link is written and every table
    /// it streams got past it, so an acknowledgement beyond it covers them.
    pub(crate) mark: u64,
}

pub(crate) fn load_skipped(db: &Database, peer: &str) -> Result<Skipped> {
    match db.meta_get(&not_wanted_key(peer))? {
        Some(v) => postcard::from_bytes(&v)
            .map_err(|_| Error::Corrupt(format!("tables not taken by `{peer}`"))),
        None => Ok(Skipped::default()),
    }
}

pub(crate) fn store_skipped(db: &Database, peer: &str, skipped: &Skipped) -> Result<()> {
    let v = postcard::to_stdvec(skipped)
        .map_err(|e| Error::Storage(format!("encoding the tables `{peer}` does not take: {e}")))?;
    db.meta_put(&not_wanted_key(peer), &v)
}

/// The byte quota's use on the link to `peer` (see `meter`).
pub(crate) fn load_quota(db: &Database, peer: &str) -> Result<super::meter::QuotaUse> {
    match db.meta_get(&quota_key(peer))? {
        Some(v) => postcard::from_bytes(&v)
            .map_err(|_| Error::Corrupt(format!("quota use of the link to `{peer}`"))),
        None => Ok(Default::default()),
    }
}

pub(crate) fn store_quota(db: &Database, peer: &str, q: &super::meter::QuotaUse) -> Result<()> {
    let v = postcard::to_stdvec(q)
        .map_err(|e| Error::Storage(format!("encoding the quota use of `{peer}`: {e}")))?;
    db.meta_put(&quota_key(peer), &v)
}
