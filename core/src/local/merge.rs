//! Per-attribute merge and counters as a state-based CRDT: the state of
//! one record under the `merge` policy, and the one rule every write is
//! merged into it by. Merging is commutative, associative and idempotent,
//! so replicas that received the same writes in any order, with repeats,
//! hold the same state and show the same record.
//!
//! The state: a **base** (the last whole upsert or delete, with its stamp
//! `b`), per-attribute **overrides** from patches stamped after `b`, and
//! per-origin **counter** totals.
//! - Upsert at `s`: applies iff `s > b`; the base becomes the record and
//!   overrides stamped at or before `s` go (newer ones still win their
//!   attributes).
//! - Delete at `s`: the same, with a tombstone as the base. Overrides newer
//!   than the tombstone stay, hidden: a patch never brings a deleted record
//!   back by itself, but it still wins its attribute over an older upsert
//!   that recreates the record.
//! - Patch at `s`: each attribute becomes an override iff `s > b` and `s`
//!   is newer than that attribute's override.
//! - Increment: each origin's running totals of what it added and what it
//!   took away (both only grow); the larger total wins per origin, so
//!   repeats and reorders are harmless. The counter's value is the
//!   attribute's value in base ⊕ overrides (0 if absent or not an integer)
//!   plus every origin's added minus taken. An upsert or patch that sets
//!   the attribute sets that first part; the contributions stay.
//!
//! The visible record is base ⊕ overrides ⊕ counters when the base is a
//! record, nothing when it is a tombstone or absent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::local::codec::Stamp;

/// One origin's contribution to one counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Contribution {
    /// Sum of its positive increments.
    pub(crate) added: u64,
    /// Sum of the magnitudes of its negative increments.
    pub(crate) taken: u64,
    /// Stamp of the origin's latest increment: the totals and the stamp
    /// grow together, so the larger of each is one consistent version.
    pub(crate) stamp: Stamp,
}

impl Contribution {
    fn join(&mut self, other: Contribution) {
        self.added = self.added.max(other.added);
        self.taken = self.taken.max(other.taken);
        self.stamp = self.stamp.max(other.stamp);
    }

    fn net(self) -> i128 {
        i128::from(self.added) - i128::from(self.taken)
    }
}

/// The merge state of one record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct MergeState {
    /// Stamp of the base; the default (zero) stamp: no whole write yet.
    pub(crate) base_stamp: Stamp,
    /// The base record as the write carried it (JSON object text, kept
    /// verbatim: a sender's attribute delta is an edit of exactly this
    /// text); `None`: a tombstone, or no whole write yet.
    pub(crate) base: Option<String>,
    /// The base write's creation time (HLC), kept for `__createdtime__`.
    pub(crate) created: u64,
    /// Attribute -> (value, stamp of the patch that set it).
    pub(crate) overrides: BTreeMap<String, (Value, Stamp)>,
    /// Attribute -> origin node id -> contribution.
    pub(crate) counters: BTreeMap<String, BTreeMap<u64, Contribution>>,
}

/// A write as the merge sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MergeOp {
    Upsert {
        stamp: Stamp,
        /// JSON object text.
        record: String,
        created: u64,
    },
    Delete {
        stamp: Stamp,
    },
    Patch {
        stamp: Stamp,
        attrs: Map<String, Value>,
    },
    /// `origin`'s running totals for counter `attr`.
    Count {
        attr: String,
        origin: u64,
        totals: Contribution,
    },
}

impl MergeState {
    /// Merges one write in; returns whether the state changed.
    pub(crate) fn apply(&mut self, op: &MergeOp) -> bool {
        match op {
            MergeOp::Upsert {
                stamp,
                record,
                created,
            } => self.rebase(*stamp, Some(record.clone()), *created),
            MergeOp::Delete { stamp } => self.rebase(*stamp, None, 0),
            MergeOp::Patch { stamp, attrs } => {
                if *stamp <= self.base_stamp {
                    return false;
                }
                let mut changed = false;
                for (k, v) in attrs {
                    let newer = self.overrides.get(k).is_none_or(|(_, s)| stamp > s);
                    if newer {
                        self.overrides.insert(k.clone(), (v.clone(), *stamp));
                        changed = true;
                    }
                }
                changed
            }
            MergeOp::Count {
                attr,
                origin,
                totals,
            } => {
                let c = self
                    .counters
                    .entry(attr.clone())
                    .or_default()
                    .entry(*origin)
                    .or_default();
                let before = *c;
                c.join(*totals);
                *c != before
            }
        }
    }

    fn rebase(&mut self, stamp: Stamp, base: Option<String>, created: u64) -> bool {
        if stamp <= self.base_stamp {
            return false;
        }
        self.base_stamp = stamp;
        self.base = base;
        self.created = created;
        self.overrides.retain(|_, (_, s)| *s > stamp);
        true
    }

    /// Joins another replica's state of the same record into this one (what
    /// an initial sync or resync carries).
    pub(crate) fn join(&mut self, other: &MergeState) {
        let whole = match &other.base {
            Some(r) => MergeOp::Upsert {
                stamp: other.base_stamp,
                record: r.clone(),
                created: other.created,
            },
            None => MergeOp::Delete {
                stamp: other.base_stamp,
            },
        };
        if other.base_stamp > Stamp::default() {
            self.apply(&whole);
        }
        for (k, (v, s)) in &other.overrides {
            let mut attrs = Map::new();
            attrs.insert(k.clone(), v.clone());
            self.apply(&MergeOp::Patch { stamp: *s, attrs });
        }
        for (attr, per_origin) in &other.counters {
            for (origin, totals) in per_origin {
                self.apply(&MergeOp::Count {
                    attr: attr.clone(),
                    origin: *origin,
                    totals: *totals,
                });
            }
        }
    }

    /// The part of this state written by origins `keep` accepts: the base,
    /// each override and each contribution go by the node of their stamp
    /// (a contribution by its origin too). `None` when nothing is left.
    ///
    /// A sync may only carry some origins' writes (never the peer's own,
    /// and only this node's to a peer that takes no relays), while a
    /// merged record holds writes of many origins: filtering the record by
    /// its newest stamp alone would drop the allowed origins' parts with
    /// it, and the peer would never get the ones older than the log
    /// position it streams from. Joining a part is sound because the join
    /// is per part.
    pub(crate) fn only_origins(&self, keep: impl Fn(u64) -> bool) -> Option<MergeState> {
        let base_kept = self.base_stamp > Stamp::default() && keep(self.base_stamp.node);
        let mut out = MergeState::default();
        if base_kept {
            out.base_stamp = self.base_stamp;
            out.base = self.base.clone();
            out.created = self.created;
        }
        out.overrides = self
            .overrides
            .iter()
            .filter(|(_, (_, s))| keep(s.node))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (attr, per_origin) in &self.counters {
            let kept: BTreeMap<u64, Contribution> = per_origin
                .iter()
                .filter(|(o, c)| keep(**o) && keep(c.stamp.node))
                .map(|(o, c)| (*o, *c))
                .collect();
            if !kept.is_empty() {
                out.counters.insert(attr.clone(), kept);
            }
        }
        (base_kept || out.has_extras()).then_some(out)
    }

    /// Every stamp the state holds (the base's, the overrides', the
    /// contributions'), with each contribution's origin as a stamp of it:
    /// what a receiver checks against the origins it accepts.
    pub(crate) fn origins(&self) -> impl Iterator<Item = u64> + '_ {
        let base = (self.base_stamp > Stamp::default()).then_some(self.base_stamp.node);
        let counted = self
            .counters
            .values()
            .flat_map(|o| o.iter().flat_map(|(origin, c)| [*origin, c.stamp.node]));
        base.into_iter()
            .chain(self.overrides.values().map(|(_, s)| s.node))
            .chain(counted)
    }

    /// The base with the overrides, without the counters' contributions:
    /// what a whole write of the record replaces.
    pub(crate) fn plain(&self) -> Option<Map<String, Value>> {
        // Only checked objects become a base; anything else reads as empty.
        let mut m = match serde_json::from_str::<Value>(self.base.as_deref()?) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for (k, (v, _)) in &self.overrides {
            m.insert(k.clone(), v.clone());
        }
        Some(m)
    }

    /// The record readers see; `None` while the base is a tombstone or
    /// absent.
    pub(crate) fn visible(&self) -> Option<Map<String, Value>> {
        let mut m = self.plain()?;
        for (attr, per_origin) in &self.counters {
            let start = m.get(attr).and_then(Value::as_i64).unwrap_or(0);
            let sum: i128 = per_origin.values().map(|c| c.net()).sum::<i128>() + i128::from(start);
            // Clamped, not wrapped: every replica clamps the same sum the
            // same way. A local increment past the range is refused first.
            let clamped = sum.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
            m.insert(attr.clone(), Value::from(clamped));
        }
        Some(m)
    }

    /// Stamp of the newest write that shaped the visible record.
    pub(crate) fn newest(&self) -> Stamp {
        let counted = self
            .counters
            .values()
            .flat_map(|o| o.values().map(|c| c.stamp));
        self.overrides
            .values()
            .map(|(_, s)| *s)
            .chain(counted)
            .fold(self.base_stamp, Stamp::max)
    }

    /// Stamp of the record's version as conflicts see it: the newest base
    /// or override. Counter contributions are left out: an increment is
    /// never a conflict, so it must not make a later write look concurrent.
    pub(crate) fn version(&self) -> Stamp {
        self.overrides
            .values()
            .map(|(_, s)| *s)
            .fold(self.base_stamp, Stamp::max)
    }

    /// Whether the state holds anything beyond its base (then it must be
    /// kept beside the row).
    pub(crate) fn has_extras(&self) -> bool {
        !self.overrides.is_empty() || !self.counters.is_empty()
    }
}

/// `origin`'s contribution after it adds `by` to what it had, at `stamp`.
pub(crate) fn contribute(had: Contribution, by: i64, stamp: Stamp) -> Option<Contribution> {
    let mut c = had;
    c.stamp = stamp;
    if by >= 0 {
        c.added = c.added.checked_add(by.unsigned_abs())?;
    } else {
        c.taken = c.taken.checked_add(by.unsigned_abs())?;
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test objects are objects"),
        }
    }

    fn st(time: u64, node: u64) -> Stamp {
        Stamp { time, node }
    }

    #[test]
    fn concurrent_patches_to_different_attributes_both_survive() {
        let ops = [
            MergeOp::Upsert {
                stamp: st(1, 1),
                record: json!({"id": "t", "limit": 5, "last": 0}).to_string(),
                created: 1,
            },
            MergeOp::Patch {
                stamp: st(2, 2),
                attrs: obj(json!({"limit": 9})),
            },
            MergeOp::Patch {
                stamp: st(3, 1),
                attrs: obj(json!({"last": 77})),
            },
        ];
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
            let mut s = MergeState::default();
            for i in order {
                s.apply(&ops[i]);
            }
            assert_eq!(
                s.visible(),
                Some(obj(json!({"id": "t", "limit": 9, "last": 77})))
            );
        }
    }

    #[test]
    fn a_patch_never_resurrects_a_deleted_record_but_wins_over_an_older_recreate() {
        let mut s = MergeState::default();
        s.apply(&MergeOp::Upsert {
            stamp: st(1, 1),
            record: json!({"id": 1, "a": 1}).to_string(),
            created: 1,
        });
        s.apply(&MergeOp::Delete { stamp: st(3, 1) });
        s.apply(&MergeOp::Patch {
            stamp: st(6, 2),
            attrs: obj(json!({"a": 2})),
        });
        assert_eq!(s.visible(), None);
        // An upsert older than the patch but newer than the delete
        // recreates the record: the patch still wins `a`.
        s.apply(&MergeOp::Upsert {
            stamp: st(5, 3),
            record: json!({"id": 1, "a": 0, "b": 1}).to_string(),
            created: 5,
        });
        assert_eq!(s.visible(), Some(obj(json!({"id": 1, "a": 2, "b": 1}))));
        // A patch older than the base changes nothing.
        assert!(!s.apply(&MergeOp::Patch {
            stamp: st(4, 9),
            attrs: obj(json!({"b": 5}))
        }));
    }

    #[test]
    fn counters_add_per_origin_and_repeats_are_harmless() {
        let mut s = MergeState::default();
        s.apply(&MergeOp::Upsert {
            stamp: st(1, 1),
            record: json!({"id": 1, "n": 10}).to_string(),
            created: 1,
        });
        let c1 = contribute(Contribution::default(), 3, st(3, 1)).unwrap();
        let c2 = contribute(c1, -1, st(4, 1)).unwrap();
        let d1 = contribute(Contribution::default(), 5, st(3, 2)).unwrap();
        for (origin, totals) in [(1, c1), (2, d1), (1, c2), (1, c1), (2, d1)] {
            s.apply(&MergeOp::Count {
                attr: "n".into(),
                origin,
                totals,
            });
        }
        assert_eq!(s.visible().unwrap()["n"], json!(10 + 2 + 5));
        // An upsert sets the base part; contributions stay.
        s.apply(&MergeOp::Upsert {
            stamp: st(2, 1),
            record: json!({"id": 1, "n": 0}).to_string(),
            created: 2,
        });
        assert_eq!(s.visible().unwrap()["n"], json!(7));
        let full = Contribution {
            added: u64::MAX,
            ..Default::default()
        };
        assert!(contribute(full, 1, st(9, 1)).is_none());
    }

    fn op_strategy() -> impl Strategy<Value = Vec<MergeOp>> {
        let one = (0u8..4, 0u8..3, 0u8..3, -5i64..6, 0u64..3);
        proptest::collection::vec(one, 1..14).prop_map(|raw| {
            let mut totals: BTreeMap<(u64, String), Contribution> = BTreeMap::new();
            raw.into_iter()
                .enumerate()
                .map(|(i, (kind, a, b, v, node))| {
                    // Distinct stamps: an equal stamp is the same write.
                    let stamp = st(1 + (i as u64 * 7919) % 97, node);
                    let attr = format!("a{a}");
                    match kind {
                        0 => MergeOp::Upsert {
                            stamp,
                            record: json!({"id": 1, attr: v, format!("a{b}"): v * 2}).to_string(),
                            created: stamp.time,
                        },
                        1 => MergeOp::Delete { stamp },
                        2 => MergeOp::Patch {
                            stamp,
                            attrs: obj(json!({attr: v})),
                        },
                        _ => {
                            let t = totals.entry((node, attr.clone())).or_default();
                            *t = contribute(*t, v, stamp).unwrap_or(*t);
                            MergeOp::Count {
                                attr,
                                origin: node,
                                totals: *t,
                            }
                        }
                    }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn any_order_with_repeats_and_splits_gives_the_same_state(
            ops in op_strategy(),
            seed in any::<u64>(),
            split in 0usize..14,
        ) {
            let mut reference = MergeState::default();
            for op in &ops {
                reference.apply(op);
            }
            // A shuffled copy with every write once more.
            let mut shuffled: Vec<&MergeOp> = ops.iter().chain(ops.iter()).collect();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            // Split between two replicas that then join, both ways.
            let cut = split.min(shuffled.len());
            let (mut left, mut right) = (MergeState::default(), MergeState::default());
            for op in &shuffled[..cut] { left.apply(op); }
            for op in &shuffled[cut..] { right.apply(op); }
            let mut lr = left.clone();
            lr.join(&right);
            let mut rl = right.clone();
            rl.join(&left);
            prop_assert_eq!(&lr, &reference);
            prop_assert_eq!(&rl, &reference);
            prop_assert_eq!(lr.visible(), reference.visible());
        }
    }

    proptest! {
        /// A late node (origin 0) joins by sync from nodes 1 and 2, each of
        /// which may send only its own origin's writes: each sends the
        /// part of its state of its origin, taken at some point of its log
        /// (it has its own writes up to there and any subset of the
        /// others'), then streams its own writes after that point. Sync
        /// parts, streamed writes, racing copies of writes the parts
        /// already hold, and the late node's own writes arrive in any
        /// order with repeats: the late node ends with the state of every
        /// write.
        #[test]
        fn sync_parts_and_streamed_writes_in_any_order_give_the_same_state(
            ops in op_strategy(),
            seed in any::<u64>(),
            cuts in (0usize..14, 0usize..14),
            seen in any::<u64>(),
        ) {
            let mut reference = MergeState::default();
            for op in &ops {
                reference.apply(op);
            }
            let origin = |op: &MergeOp| match op {
                MergeOp::Upsert { stamp, .. } | MergeOp::Delete { stamp }
                | MergeOp::Patch { stamp, .. } => stamp.node,
                MergeOp::Count { origin, .. } => *origin,
            };
            // What arrives at node 0, as separate deliveries.
            let mut arrivals: Vec<MergeState> = Vec::new();
            let as_state = |op: &MergeOp| {
                let mut s = MergeState::default();
                s.apply(op);
                s
            };
            for op in ops.iter().filter(|o| origin(o) == 0) {
                arrivals.push(as_state(op));
            }
            for (sender, cut) in [(1u64, cuts.0), (2u64, cuts.1)] {
                let own: Vec<&MergeOp> = ops.iter().filter(|o| origin(o) == sender).collect();
                let cut = cut.min(own.len());
                let mut state = MergeState::default();
                for op in &own[..cut] {
                    state.apply(op);
                }
                // Some of the other origins' writes reached the sender
                // before its sync (bit i of `seen`).
                for (i, op) in ops.iter().enumerate() {
                    if origin(op) != sender && seen >> (i % 64) & 1 == 1 {
                        state.apply(op);
                    }
                }
                if let Some(part) = state.only_origins(|o| o == sender) {
                    prop_assert!(part.origins().all(|o| o == sender));
                    arrivals.push(part);
                }
                // Streamed after the sync's log position, and a racing
                // copy of the last write before it.
                for op in &own[cut..] {
                    arrivals.push(as_state(op));
                }
                if let Some(op) = cut.checked_sub(1).and_then(|i| own.get(i)) {
                    arrivals.push(as_state(op));
                }
            }
            let mut shuffled: Vec<&MergeState> = arrivals.iter().chain(arrivals.iter()).collect();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut late = MergeState::default();
            for a in shuffled {
                late.join(a);
            }
            prop_assert_eq!(&late, &reference);
        }
    }
}
