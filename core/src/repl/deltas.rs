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

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::local::codec::{Key, Stamp};
use crate::local::db::Database;
use crate::local::delta::{encode, rebuild, Version};
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
        match self.versions.entry((table.to_string(), key.clone())) {
            Entry::Occupied(mut o) => {
                // Versions come in stamp order per record, except a peer's
                // own write seen after a later one of this node's.
                let v = o.get_mut();
                if v.stamp < new.stamp {
                    self.bytes = self.bytes + new.json.len() - v.json.len();
                    *v = new;
                }
            }
            Entry::Vacant(slot) => {
                self.bytes += cost;
                slot.insert(new);
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
                match w.op.inner() {
                    WriteOp::Put { json, created } if w.op.supersedable() => self.remember(
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
                // A patch or count is merged by what it carries, not by its
                // after-image, so it goes whole.
                let whole = w.op.supersedable();
                let (json, created) = match w.op.inner_mut() {
                    WriteOp::Put { json, created } if whole => (std::mem::take(json), *created),
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
                *w.op.inner_mut() = match delta {
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
    let mut at: HashMap<(String, Key), Option<Version>> = HashMap::new();
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
                    Ok(v) => v,
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
            } = w.op.inner()
            {
                let base = t.stamp.time.checked_sub(*base_back).map(|time| Stamp {
                    time,
                    node: base_node.unwrap_or(t.stamp.node),
                });
                match current {
                    Some(v) if v.stamp >= t.stamp => {
                        superseded += 1;
                        keep[i] = false;
                        continue;
                    }
                    Some(Version {
                        stamp,
                        created: base_created,
                        json: Some(text),
                    }) if Some(*stamp) == base => match rebuild(text, script, lits, max_bytes) {
                        Ok(json) => {
                            *w.op.inner_mut() = WriteOp::Put {
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
                    },
                    other => {
                        let has = match other {
                            None => "no version".to_string(),
                            Some(Version {
                                stamp, json: None, ..
                            }) => format!("a tombstone stamped {stamp:?}"),
                            Some(Version { stamp, .. }) => format!("the version stamped {stamp:?}"),
                        };
                        let edits = match base {
                            Some(b) => format!("the version stamped {b:?}"),
                            None => "a version from before time 0 (a broken delta)".into(),
                        };
                        return Ok(Resolved::Miss {
                            seq: t.seq,
                            reason: format!(
                                "table `{}` key {}: the delta edits {edits}, this node has {has}",
                                id.0, id.1
                            ),
                        });
                    }
                }
            }
            let newer = match at.get(&id).and_then(|v| v.as_ref()) {
                Some(v) => v.stamp < t.stamp,
                None => true,
            };
            if newer {
                let json = match w.op.inner() {
                    WriteOp::Put { json, .. } => Some(json.clone()),
                    _ => None,
                };
                let created = match w.op.inner() {
                    WriteOp::Put { created, .. } => *created,
                    _ => 0,
                };
                at.insert(
                    id,
                    Some(Version {
                        stamp: t.stamp,
                        created,
                        json,
                    }),
                );
            }
        }
        if keep.contains(&false) {
            let mut keep = keep.into_iter();
            t.writes.retain(|_| keep.next().unwrap_or(true));
        }
    }
    Ok(Resolved::Rebuilt { superseded })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::log::LogWrite;
    use crate::{OpenOptions, TableOptions};
    use serde_json::json;

    fn db(max_record_bytes: usize) -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(
            dir.path(),
            OpenOptions::new("n1").max_record_bytes(max_record_bytes),
        )
        .unwrap();
        db.create_table("t", TableOptions::default()).unwrap();
        (dir, db)
    }

    fn big(k: i64, v: i64) -> serde_json::Value {
        json!({"id": k, "a": "a long enough attribute", "b": "another long attribute", "v": v})
    }

    /// A frame of one delta of `t`/`key`, stamped one tick after `base`
    /// (or `back` ticks before it, for a hostile one).
    fn delta_txn(key: i64, stamp: Stamp, back: u64, script: Vec<u8>, lits: &str) -> WireTxn {
        WireTxn {
            seq: 7,
            stamp,
            writes: vec![LogWrite {
                table: "t".into(),
                key: Key::Int(key),
                op: WriteOp::Delta {
                    base_back: back,
                    base_node: Some(1),
                    created: None,
                    script,
                    lits: lits.into(),
                },
            }],
        }
    }

    fn stored(db: &Database, k: i64) -> (Stamp, u64, String) {
        let v = db.version("t", &Key::Int(k)).unwrap().unwrap();
        (v.stamp, v.created, v.json.unwrap())
    }

    #[test]
    fn a_delta_on_the_base_rebuilds_and_anything_else_misses_or_loses() {
        let (_d, db) = db(1024);
        db.insert("t", big(1, 0)).unwrap();
        // The base as another node's write: the same text, by node 1.
        let (s, created, text) = stored(&db, 1);
        let base = Stamp {
            time: s.time + 1,
            node: 1,
        };
        db.apply_remote(
            &[crate::local::remote::RemoteTxn {
                stamp: base,
                writes: vec![LogWrite {
                    table: "t".into(),
                    key: Key::Int(1),
                    op: WriteOp::Put {
                        json: text.clone(),
                        created,
                    },
                }],
            }],
            None,
        )
        .unwrap();
        assert_eq!(stored(&db, 1).0, base);
        let new = big(1, 5).to_string();
        let (script, lits) = encode(&text, &new).unwrap();
        let next = Stamp {
            time: base.time + 10,
            node: 1,
        };
        let all = |_: &str| true;

        // Rebuilt, byte for byte, with the base's creation time.
        let mut batch = vec![delta_txn(1, next, 10, script.clone(), &lits)];
        assert!(matches!(
            resolve(&db, &mut batch, &all).unwrap(),
            Resolved::Rebuilt { superseded: 0 }
        ));
        assert_eq!(
            batch[0].writes[0].op,
            WriteOp::Put {
                json: new.clone(),
                created
            }
        );

        // Misses: no such record; another version; a base before time 0;
        // a script that copies what the base lacks; one past the limit.
        let misses = [
            delta_txn(2, next, 10, script.clone(), &lits),
            delta_txn(1, next, 9, script.clone(), &lits),
            delta_txn(1, next, u64::MAX, script.clone(), &lits),
            delta_txn(1, next, 10, vec![40 << 1, 3], ""),
            // (a literal of 3000 bytes: varint 6001)
            delta_txn(1, next, 10, vec![0xF1, 0x2E], &"x".repeat(3000)),
        ];
        for m in misses {
            let mut batch = vec![m];
            match resolve(&db, &mut batch, &all).unwrap() {
                Resolved::Miss { seq, reason } => {
                    assert_eq!(seq, 7);
                    assert!(reason.contains("table `t`"), "{reason}");
                }
                Resolved::Rebuilt { .. } => panic!("rebuilt {:?}", batch[0].writes),
            }
        }

        // Older than what this node holds: loses, dropped, counted.
        let old = Stamp {
            time: base.time - 1,
            node: 1,
        };
        let mut batch = vec![delta_txn(1, old, 5, script.clone(), &lits)];
        assert!(matches!(
            resolve(&db, &mut batch, &all).unwrap(),
            Resolved::Rebuilt { superseded: 1 }
        ));
        assert!(batch[0].writes.is_empty());

        // Tables the link does not take are left to the refusal path.
        let mut batch = vec![delta_txn(2, next, 10, script, &lits)];
        assert!(matches!(
            resolve(&db, &mut batch, &|_| false).unwrap(),
            Resolved::Rebuilt { superseded: 0 }
        ));
        assert!(matches!(batch[0].writes[0].op, WriteOp::Delta { .. }));
    }

    #[test]
    fn a_delta_on_an_earlier_write_of_the_same_frame_rebuilds() {
        let (_d, db) = db(4096);
        let (t1, t2) = (
            Stamp {
                time: 100 << 16,
                node: 1,
            },
            Stamp {
                time: 101 << 16,
                node: 1,
            },
        );
        let first = big(3, 1).to_string();
        let second = big(3, 2).to_string();
        let (script, lits) = encode(&first, &second).unwrap();
        let mut batch = vec![
            WireTxn {
                seq: 1,
                stamp: t1,
                writes: vec![LogWrite {
                    table: "t".into(),
                    key: Key::Int(3),
                    op: WriteOp::Put {
                        json: first,
                        created: 9,
                    },
                }],
            },
            delta_txn(3, t2, 1 << 16, script, &lits),
        ];
        assert!(matches!(
            resolve(&db, &mut batch, &|_| true).unwrap(),
            Resolved::Rebuilt { superseded: 0 }
        ));
        assert_eq!(
            batch[1].writes[0].op,
            WriteOp::Put {
                json: second,
                created: 9
            }
        );
    }

    #[test]
    fn bases_turn_updates_into_deltas_only_against_what_went_before() {
        let put = |k: i64, v: i64| LogWrite {
            table: "t".into(),
            key: Key::Int(k),
            op: WriteOp::Put {
                json: big(k, v).to_string(),
                created: 1,
            },
        };
        let txn = |seq: u64, writes: Vec<LogWrite>| WireTxn {
            seq,
            stamp: Stamp { time: seq, node: 5 },
            writes,
        };
        let mut bases = Bases::default();
        let mut txns = vec![
            txn(1, vec![put(1, 0)]),
            // The same record twice in one transaction: whole.
            txn(2, vec![put(1, 1), put(1, 2)]),
            txn(3, vec![put(1, 3)]),
            txn(
                4,
                vec![LogWrite {
                    table: "t".into(),
                    key: Key::Int(1),
                    op: WriteOp::Delete,
                }],
            ),
            txn(5, vec![put(1, 4)]),
        ];
        assert_eq!(bases.encode(&mut txns, true), 2);
        let kinds: Vec<bool> = txns
            .iter()
            .flat_map(|t| t.writes.iter())
            .map(|w| matches!(w.op, WriteOp::Delta { .. }))
            .collect();
        // 2's first write edits 1; 2's second write has 2's own stamp as
        // its base: whole; 3 edits 2; after the delete, whole.
        assert_eq!(kinds, vec![false, true, false, true, false, false]);
        // Paused: whole, but the bases still follow.
        let mut txns = vec![txn(6, vec![put(1, 5)])];
        assert_eq!(bases.encode(&mut txns, false), 0);
        let mut txns = vec![txn(7, vec![put(1, 6)])];
        assert_eq!(bases.encode(&mut txns, true), 1);
    }
}
