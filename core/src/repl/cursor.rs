//! What replication remembers across restarts.
//!
//! Receiving side: per peer, per subscribed table, the peer's log sequence
//! up to which this node has applied it, and whether the table's initial
//! sync completed. It is written in the same atomic commit as the data it
//! describes (through `apply_remote`), so after any crash it says exactly
//! what was applied: nothing lost, nothing applied twice.
//!
//! Sending side: per peer, the highest sequence it acknowledged, for
//! delivery receipts and log retention.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::db::Database;
use crate::error::{Error, Result};

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
}

fn acked_key(peer: &str) -> Vec<u8> {
    let mut k = b"acked/".to_vec();
    k.extend_from_slice(peer.as_bytes());
    k
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
