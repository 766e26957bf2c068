//! Attribute deltas on a link: an update goes to the peer as an edit
//! (`local::delta`) of the version of its record that went to the same peer
//! before on this link, or that the peer itself wrote, instead of whole.
//!
//! The base is what this link remembers having sent, not what the write
//! replaced: so the write path does nothing for deltas, and a receiver that
//! holds exactly the base version rebuilds the sender's text byte for byte
//! (both replicas hold the same text for the same stamp). What the link
//! remembers is bounded ([`CACHE_MAX_BYTES`]) and starts empty on every
//! link, so the first update of a record on a link goes whole.
//!
//! The receiver turns each delta back into a whole record before anything
//! applies: its version of the record is the base (rebuilt), or newer than
//! the delta (the delta loses by last-writer-wins, counted as a duplicate),
//! or anything else: a miss. On a miss it applies nothing of the frame,
//! tells the sender (`DeltaMiss`) and acknowledges nothing more; the sender
//! ends the link and, reconnected, sends from the receiver's resume point,
//! whole for [`PAUSE_AFTER_MISS`], so two sides writing the same records
//! cost one reconnect per pause, not one per write.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::local::codec::{Key, Stamp};
use crate::local::db::Database;
use crate::local::delta::{encode, rebuild};
use crate::local::log::{LogEntry, WriteOp};
use crate::net::wire::WireTxn;

/// Most bytes of record text a link remembers as delta bases; past it the
/// memory starts over (the next update of each record goes whole).
pub(crate) const CACHE_MAX_BYTES: usize = 64 << 20;

/// How long updates to a peer go whole after it lacked a delta's base.
pub(crate) const PAUSE_AFTER_MISS: Duration = Duration::from_secs(60);

/// Per-entry bookkeeping counted against [`CACHE_MAX_BYTES`].
const ENTRY_OVERHEAD: usize = 64;

/// A version of a record the peer holds: its stamp, creation time and
/// text.
struct Base {
    stamp: Stamp,
    created: u64,
    json: String,
}

/// The versions a link last sent of each record: the bases of deltas.
#[derive(Default)]
pub(crate) struct Bases {
    versions: HashMap<(String, Key), Base>,
    bytes: usize,
}

impl Bases {
    fn remember(&mut self, table: &str, key: &Key, new: Base) {
        let cost = table.len() + new.json.len() + ENTRY_OVERHEAD;
        if self.bytes + cost > CACHE_MAX_BYTES {
            self.versions.clear();
            self.bytes = 0;
        }
        match self.versions.get_mut(&(table.to_string(), key.clone())) {
            Some(v) => {
                // Versions come in stamp order per record, except a peer's
                // own write seen after a later one of this node's.
                if v.stamp < new.stamp {
                    self.bytes = self.bytes + new.json.len() - v.json.len();
                    *v = new;
                }
            }
            None => {
                self.bytes += cost;
                self.versions.insert((table.to_string(), key.clone()), new);
            }
        }
    }

    fn forget(&mut self, table: &str, key: &Key) {
        if let Some(v) = self.versions.remove(&(table.to_string(), key.clone())) {
            self.bytes -= table.len() + v.json.len() + ENTRY_OVERHEAD;
        }
    }

    /// The peer's own writes in `entries` are versions it holds (or
    /// newer), though they never go back to it: bases too.
    pub(crate) fn observe_peer_writes(&mut self, entries: &[LogEntry], peer_node_id: u64) {
        for e in entries.iter().filter(|e| e.stamp.node == peer_node_id) {
            for w in &e.writes {
                match &w.op {
                    WriteOp::Put { json, created } => self.remember(
                        &w.table,
                        &w.key,
                        Base {
                            stamp: e.stamp,
                            created: *created,
                            json: json.clone(),
                        },
                    ),
                    _ => self.forget(&w.table, &w.key),
                }
            }
        }
    }

    /// Turns the updates in `txns` that have a base into deltas, where
    /// that is worth it (`send`: false while deltas pause after a miss,
    /// when only the bases are kept up); returns how many it turned.
    pub(crate) fn encode(&mut self, txns: &mut [WireTxn], send: bool) -> u64 {
        let mut sent = 0;
        for t in txns {
            for w in &mut t.writes {
                let (json, created) = match &mut w.op {
                    WriteOp::Put { json, created } => (std::mem::take(json), *created),
                    _ => {
                        self.forget(&w.table, &w.key);
                        continue;
                    }
                };
                let delta = match self.versions.get(&(w.table.clone(), w.key.clone())) {
                    // An equal stamp is an earlier write of this same
                    // transaction, which the receiver does not keep apart.
                    Some(b) if send && b.stamp < t.stamp => {
                        encode(&b.json, &json).map(|(script, lits)| WriteOp::Delta {
                            base_back: t.stamp.time - b.stamp.time,
                            base_node: (b.stamp.node != t.stamp.node).then_some(b.stamp.node),
                            created: (b.created != created).then_some(created),
                            script,
                            lits,
                        })
                    }
                    _ => None,
                };
                w.op = match delta {
                    Some(d) => {
                        sent += 1;
                        d
                    }
                    None => WriteOp::Put {
                        json: json.clone(),
                        created,
                    },
                };
                let new = Base {
                    stamp: t.stamp,
                    created,
                    json,
                };
                self.remember(&w.table, &w.key, new);
            }
        }
        sent
    }
}

/// Whether deltas to a peer are paused after a miss.
pub(crate) fn paused(until: Option<Instant>) -> bool {
    until.is_some_and(|u| Instant::now() < u)
}

/// What became of a frame's deltas.
pub(crate) enum Resolved {
    /// Every delta is a whole record now, or was dropped as older than
    /// the receiver's version (that many).
    Rebuilt { superseded: u64 },
    /// The receiver lacks the base of a delta in transaction `seq`.
    Miss { seq: u64, reason: String },
}

/// Rebuilds the deltas in `batch` (the writes of tables `live` says this
/// link takes) against this node's versions and the frame's own earlier
/// writes, before anything of the frame applies. On a miss the batch is
/// left half rebuilt: the caller applies none of it.
pub(crate) fn resolve(
    db: &Database,
    batch: &mut [WireTxn],
    live: &dyn Fn(&str) -> bool,
) -> Result<Resolved> {
    let max_bytes = db.shared.opts.max_record_bytes;
    // The newest version of each record the frame has come to so far:
    // what this node will hold once the frame's earlier writes apply.
    let mut at: HashMap<(String, Key), Option<(Stamp, u64, Option<String>)>> = HashMap::new();
    let mut superseded = 0;
    for t in batch.iter_mut() {
        let mut keep = vec![true; t.writes.len()];
        for (i, w) in t.writes.iter_mut().enumerate() {
            if !live(&w.table) {
                continue;
            }
            let id = (w.table.clone(), w.key.clone());
            if !at.contains_key(&id) {
                let v = match db.version(&w.table, &w.key) {
                    Ok(v) => v.map(|v| (v.stamp, v.created, v.json)),
                    // Left as it is: the apply counts the missing table.
                    Err(Error::TableNotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                at.insert(id.clone(), v);
            }
            let current = at.get(&id).and_then(|v| v.as_ref());
            if let WriteOp::Delta {
                base_back,
                base_node,
                created,
                script,
                lits,
            } = &w.op
            {
                let base = t.stamp.time.checked_sub(*base_back).map(|time| Stamp {
                    time,
                    node: base_node.unwrap_or(t.stamp.node),
                });
                match current {
                    Some((stamp, _, _)) if *stamp >= t.stamp => {
                        superseded += 1;
                        keep[i] = false;
                        continue;
                    }
                    Some((stamp, base_created, Some(text))) if Some(*stamp) == base => {
                        match rebuild(text, script, lits, max_bytes) {
                            Ok(json) => {
                                w.op = WriteOp::Put {
                                    json,
                                    created: created.unwrap_or(*base_created),
                                }
                            }
                            Err(e) => {
                                return Ok(Resolved::Miss {
                                    seq: t.seq,
                                    reason: format!("table `{}` key {}: {e}", id.0, id.1),
                                })
                            }
                        }
                    }
                    other => {
                        let has = match other {
                            None => "no version".to_string(),
                            Some((s, _, None)) => format!("a tombstone stamped {s:?}"),
                            Some((s, _, Some(_))) => format!("the version stamped {s:?}"),
                        };
                        return Ok(Resolved::Miss {
                            seq: t.seq,
                            reason: format!(
                                "table `{}` key {}: the delta edits the version stamped {base:?}, this node has {has}",
                                id.0, id.1
                            ),
                        });
                    }
                }
            }
            let newer = match at.get(&id).and_then(|v| v.as_ref()) {
                Some((stamp, _, _)) => *stamp < t.stamp,
                None => true,
            };
            if newer {
                let json = match &w.op {
                    WriteOp::Put { json, .. } => Some(json.clone()),
                    _ => None,
                };
                let created = match &w.op {
                    WriteOp::Put { created, .. } => *created,
                    _ => 0,
                };
                at.insert(id, Some((t.stamp, created, json)));
            }
        }
        if keep.contains(&false) {
            let mut keep = keep.into_iter();
            t.writes.retain(|_| keep.next().unwrap_or(true));
        }
    }
    Ok(Resolved::Rebuilt { superseded })
}
