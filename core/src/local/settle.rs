//! Settling a write against the record it meets, for the paths that need
//! more than last-writer-wins on the row: records with a merge state
//! (`merge` patches, counters), conflict detection, and what `keep_local`
//! and resolvers do after a remote write.
//!
//! **What is logged as a conflict** (on the node where it happens, each
//! loser once): a remote whole write `W` meeting current version `c`
//! (`W.base` = the version `W` replaced at its origin; `c.base` likewise):
//! - `W > c` and `W.base != c`: `c` lost (a concurrent overwrite);
//! - `W < c` and `c.base != W`: `W` lost (it arrived late and concurrent);
//! - equal stamps are the same write; `W.base == c` (or `c.base == W`) is
//!   a sequential update, never a conflict.
//!
//! The loser's side is `local` when it was written on this node, `remote`
//! otherwise. Under `merge`, `c` is the record's version (newest base or
//! override; counts never move it) and the losers are per attribute (see
//! `merge_losses`); counts never conflict.
//! Writes without a known base (from a node with the conflict log off, or
//! from before it) are never reported.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::local::catalog::TableDef;
use crate::local::codec::{Key, Stamp};
use crate::local::conflict::{ConflictEntry, ConflictPolicy, ConflictSide};
use crate::local::log::{MetaKind, WriteOp};
use crate::local::merge::{MergeOp, MergeState};
use crate::local::settle_local::{init_op, side_after, state_from_row};
use crate::local::side::Side;

/// The merge operations a remote write stands for on a record with a merge
/// state. `policy`: this node's policy for the table.
pub(crate) fn remote_ops(
    def: &TableDef,
    key: &Key,
    stamp: Stamp,
    op: &WriteOp,
) -> Result<Vec<MergeOp>> {
    let (inner, kind) = match op {
        WriteOp::Meta { op, kind, .. } => (&**op, Some(kind)),
        other => (other, None),
    };
    Ok(match (kind, inner) {
        (
            Some(MetaKind::Count {
                attr,
                added,
                taken,
                init,
            }),
            _,
        ) => {
            let mut ops = Vec::with_capacity(2);
            if *init {
                ops.push(init_op(def, key, stamp));
            }
            ops.push(MergeOp::Count {
                attr: attr.clone(),
                origin: stamp.node,
                totals: crate::local::merge::Contribution {
                    added: *added,
                    taken: *taken,
                    stamp,
                },
            });
            ops
        }
        (Some(MetaKind::Synced { .. }), _) => Vec::new(),
        (Some(MetaKind::Patch { attrs }), _) if def.conflict == ConflictPolicy::MergeAttributes => {
            vec![MergeOp::Patch {
                stamp,
                attrs: crate::local::record::parse_object(attrs)?,
            }]
        }
        (_, WriteOp::Put { json, created }) => vec![MergeOp::Upsert {
            stamp,
            // Checked as an object with its key by `check_remote_writes`.
            record: json.clone(),
            created: *created,
        }],
        (_, WriteOp::Delete) => vec![MergeOp::Delete { stamp }],
        _ => return Err(crate::local::delta::unresolved()),
    })
}

/// Whether a remote write goes through the merge state rather than the
/// row's last-writer-wins: a count always, a patch under `merge`.
pub(crate) fn needs_merge(def: &TableDef, op: &WriteOp) -> bool {
    match op {
        WriteOp::Meta {
            kind: MetaKind::Count { .. } | MetaKind::Synced { .. },
            ..
        } => true,
        WriteOp::Meta {
            kind: MetaKind::Patch { .. },
            ..
        } => def.conflict == ConflictPolicy::MergeAttributes,
        _ => false,
    }
}

/// The base and whether `op` is a resolution, for a remote write (`None`
/// base: unknown, the write came without metadata).
pub(crate) fn meta_of(op: &WriteOp) -> (Option<Stamp>, bool) {
    match op {
        // A sync row's state has no single base: never reported.
        WriteOp::Meta {
            kind: MetaKind::Synced { .. },
            ..
        } => (None, false),
        WriteOp::Meta { base, kind, .. } => (Some(*base), matches!(kind, MetaKind::Resolution)),
        _ => (None, false),
    }
}

/// One loser a remote write makes on a record with a merge state.
pub(crate) struct Loss {
    pub(crate) winner: Stamp,
    pub(crate) loser: Stamp,
    /// The losing record, the attributes that lost, or null (a delete).
    pub(crate) values: Option<Value>,
}

/// What a remote write at `stamp` with base `wb` makes lose on a `merge`
/// record holding `state` (`vb`: the base of its version), before it is
/// merged in. The write and the record's version (`MergeState::version`)
/// are concurrent by the `lww` rule; only then, per attribute: a patch's
/// attribute loses to a newer override, to a newer base, or to a tombstone
/// base; an override a newer patch or whole write replaces loses; a whole
/// write loses to a newer base, or makes the base it replaces lose. Counts
/// and sync rows never lose.
pub(crate) fn merge_losses(
    state: &MergeState,
    vb: Stamp,
    stamp: Stamp,
    wb: Stamp,
    op: &WriteOp,
) -> Vec<Loss> {
    let v = state.version();
    let concurrent = if stamp > v {
        wb != v
    } else {
        stamp < v && vb != stamp
    };
    if !concurrent {
        return Vec::new();
    }
    let (kind, inner) = match op {
        WriteOp::Meta { op, kind, .. } => (kind, op.inner()),
        _ => return Vec::new(),
    };
    // Overrides `stamp` replaces, grouped by the patch that set them.
    let mut replaced: std::collections::BTreeMap<Stamp, Map<String, Value>> = Default::default();
    let mut out = Vec::new();
    match kind {
        MetaKind::Patch { attrs } => {
            let Ok(attrs) = crate::local::record::parse_object(attrs) else {
                return Vec::new();
            };
            let tombstone = state.base.is_none() && state.base_stamp > Stamp::default();
            let mut lost = Map::new();
            let mut winner = Stamp::default();
            for (k, val) in attrs {
                let held = state.overrides.get(&k);
                let beat = match held {
                    Some((_, q)) if *q == stamp => return Vec::new(), // already here
                    Some((_, q)) if *q > stamp => Some(*q),
                    _ if state.base_stamp > stamp || tombstone => Some(state.base_stamp),
                    _ => None,
                };
                match (beat, held) {
                    (Some(b), _) => {
                        winner = winner.max(b);
                        lost.insert(k, val);
                    }
                    (None, Some((old, q))) => {
                        replaced.entry(*q).or_default().insert(k, old.clone());
                    }
                    (None, None) => {}
                }
            }
            if !lost.is_empty() {
                out.push(Loss {
                    winner,
                    loser: stamp,
                    values: Some(Value::Object(lost)),
                });
            }
        }
        MetaKind::Whole | MetaKind::Resolution => {
            let written = match inner {
                WriteOp::Put { json, .. } => json_value(Some(json)),
                _ => None,
            };
            if stamp < state.base_stamp {
                out.push(Loss {
                    winner: state.base_stamp,
                    loser: stamp,
                    values: written,
                });
            } else if stamp > state.base_stamp {
                if state.base_stamp > Stamp::default() {
                    out.push(Loss {
                        winner: stamp,
                        loser: state.base_stamp,
                        values: json_value(state.base.as_deref()),
                    });
                }
                for (k, (old, q)) in &state.overrides {
                    if *q < stamp {
                        replaced
                            .entry(*q)
                            .or_default()
                            .insert(k.clone(), old.clone());
                    }
                }
            }
        }
        MetaKind::Count { .. } | MetaKind::Synced { .. } => {}
    }
    out.extend(replaced.into_iter().map(|(q, m)| Loss {
        winner: stamp,
        loser: q,
        values: Some(Value::Object(m)),
    }));
    out
}

/// A conflict found while applying, before it has its id and time.
#[allow(clippy::too_many_arguments)]
pub(crate) fn entry(
    def: &TableDef,
    key: &Key,
    rule: ConflictPolicy,
    node_id: u64,
    names: &dyn Fn(u64) -> String,
    winner: Stamp,
    loser: Stamp,
    loser_values: Option<Value>,
) -> ConflictEntry {
    ConflictEntry {
        id: String::new(),
        table: def.name.clone(),
        key: key.clone(),
        rule,
        lost: if loser.node == node_id {
            ConflictSide::Local
        } else {
            ConflictSide::Remote
        },
        winner,
        winner_origin: names(winner.node),
        loser,
        loser_origin: names(loser.node),
        loser_values,
        at_ms: 0,
    }
}

/// What applying remote writes found to do once their commit is done:
/// the conflicts to log, and the resolutions to run (outside every lock).
#[derive(Default)]
pub(crate) struct Found {
    pub(crate) entries: Vec<ConflictEntry>,
    pub(crate) follow: Vec<FollowUp>,
}

/// A resolution to run after the commit.
pub(crate) enum FollowUp {
    /// `keep_local`: re-assert this node's version (`None`: its tombstone),
    /// which a remote write would have replaced.
    KeepLocal {
        table: String,
        key: Key,
        local: Option<String>,
        local_stamp: Stamp,
    },
    /// `resolver`: ask the table's resolver; `remote_won`: what
    /// last-writer-wins left.
    Ask {
        case: crate::local::conflict::ConflictCase,
        remote_won: bool,
    },
}

fn json_value(text: Option<&str>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

/// Applies one remote write (the last of its transaction to its record)
/// at `stamp`; returns whether it changed the record. Conflicts and
/// follow-ups go to `found`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn remote_write(
    db: &crate::local::db::Database,
    ctx: &mut crate::local::write::Ctx<'_>,
    def: &TableDef,
    rk: Vec<u8>,
    key: &Key,
    op: &WriteOp,
    stamp: Stamp,
    obj: Option<&Map<String, Value>>,
    found: &mut Found,
) -> Result<bool> {
    let shared = &db.shared;
    let track = shared.opts.conflict_log_max_bytes > 0;
    let policy = def.conflict;
    let detect = track || matches!(policy, ConflictPolicy::KeepLocal | ConflictPolicy::Resolver);
    let (wbase, resolution) = meta_of(op);
    let merge = needs_merge(def, op);
    let old = ctx.current(&rk)?;
    let look = merge || shared.conflicts.is_stateful(def.id);
    let side = if detect || look {
        ctx.side(&rk, old.as_ref(), look)?
    } else {
        None
    };
    let cur = old.as_ref().map(|o| o.header.stamp);
    let old_json = old
        .as_ref()
        .filter(|o| !o.header.tombstone)
        .map(|o| o.json.to_string());
    let names = |id: u64| db.node_name_of(id);
    let w_json = match op.inner() {
        WriteOp::Put { json, .. } => Some(json.as_str()),
        _ => None,
    };
    let state = side.as_ref().and_then(|s| s.state.clone());
    if merge || state.is_some() {
        let mut state = match state {
            Some(s) => s,
            None => state_from_row(old.as_ref())?,
        };
        // The base of the record's version: what a write must have
        // replaced to be sequential (as `side.base` under lww).
        let vb = side.as_ref().map(|s| s.base).unwrap_or_default();
        let v = state.version();
        if track && policy == ConflictPolicy::MergeAttributes {
            for l in merge_losses(&state, vb, stamp, wbase.unwrap_or_default(), op) {
                found.entries.push(entry(
                    def,
                    key,
                    ConflictPolicy::MergeAttributes,
                    shared.node_id,
                    &names,
                    l.winner,
                    l.loser,
                    l.values,
                ));
            }
        } else if track && op.supersedable() {
            // Whole writes to a record with counters: last writer wins on
            // its version, which the counters do not move.
            if let Some(wb) = wbase {
                if stamp > v && wb != v && v > Stamp::default() {
                    found.entries.push(entry(
                        def,
                        key,
                        policy,
                        shared.node_id,
                        &names,
                        stamp,
                        v,
                        json_value(old_json.as_deref()),
                    ));
                } else if stamp < v && vb != stamp {
                    found.entries.push(entry(
                        def,
                        key,
                        policy,
                        shared.node_id,
                        &names,
                        v,
                        stamp,
                        json_value(w_json),
                    ));
                }
            }
        }
        let mut changed = false;
        if let WriteOp::Meta {
            kind: MetaKind::Synced { state: theirs },
            ..
        } = op
        {
            let theirs: MergeState = serde_json::from_str(theirs).map_err(|e| {
                Error::Peer(format!(
                    "table `{}` key {key}: a sync row's merge state does not decode: {e}",
                    def.name
                ))
            })?;
            let before = state.clone();
            state.join(&theirs);
            changed = state != before;
        }
        for m in remote_ops(def, key, stamp, op)? {
            changed |= state.apply(&m);
        }
        if !changed {
            return Ok(false);
        }
        let newest = state.newest();
        let visible = state.visible();
        let row_op = match &visible {
            Some(m) => WriteOp::Put {
                json: serde_json::to_string(m).map_err(|e| Error::InvalidJson(e.to_string()))?,
                created: if state.created == 0 {
                    newest.time
                } else {
                    state.created
                },
            },
            None => WriteOp::Delete,
        };
        // A write that became the version passes its base on; one that did
        // not (a count, a late patch) leaves the version's base.
        let base = if state.version() > v {
            wbase.unwrap_or_default()
        } else {
            vb
        };
        ctx.put_side(&rk, Some(side_after(base, state)));
        if visible.is_some() || old.as_ref().is_some_and(|o| !o.header.tombstone) {
            let v = visible.as_ref();
            ctx.write(def, rk, key, old, newest, &row_op, v, Some(base))?;
        }
        return Ok(true);
    }
    let resolver_rule = || {
        if shared.conflicts.resolvers.read().contains_key(&def.name) {
            ConflictPolicy::Resolver
        } else {
            // No resolver installed: last writer wins, and the entry says so.
            ConflictPolicy::LastWriterWins
        }
    };
    let rule = match policy {
        ConflictPolicy::Resolver => resolver_rule(),
        p => p,
    };
    let case = |remote_won: bool| FollowUp::Ask {
        case: crate::local::conflict::ConflictCase {
            table: def.name.clone(),
            key: key.clone(),
            local: json_value(old_json.as_deref()),
            local_stamp: cur.unwrap_or_default(),
            remote: json_value(w_json),
            remote_stamp: stamp,
        },
        remote_won,
    };
    if let Some(c) = cur.filter(|c| *c >= stamp) {
        let c_base = side.as_ref().map(|s| s.base);
        if c > stamp && wbase.is_some() && c_base.is_some_and(|b| b != stamp) {
            if track {
                found.entries.push(entry(
                    def,
                    key,
                    rule,
                    shared.node_id,
                    &names,
                    c,
                    stamp,
                    json_value(w_json),
                ));
            }
            if rule == ConflictPolicy::Resolver && !resolution {
                found.follow.push(case(false));
            }
        }
        return Ok(false);
    }
    let concurrent = matches!((cur, wbase), (Some(c), Some(wb)) if wb != c);
    if concurrent {
        let c = cur.unwrap_or_default();
        if policy == ConflictPolicy::KeepLocal && c.node == shared.node_id && !resolution {
            if track {
                found.entries.push(entry(
                    def,
                    key,
                    rule,
                    shared.node_id,
                    &names,
                    c,
                    stamp,
                    json_value(w_json),
                ));
            }
            found.follow.push(FollowUp::KeepLocal {
                table: def.name.clone(),
                key: key.clone(),
                local: old_json,
                local_stamp: c,
            });
            return Ok(false);
        }
        if track {
            found.entries.push(entry(
                def,
                key,
                rule,
                shared.node_id,
                &names,
                stamp,
                c,
                json_value(old_json.as_deref()),
            ));
        }
        if rule == ConflictPolicy::Resolver && !resolution {
            found.follow.push(case(true));
        }
    }
    let row_base = detect.then(|| wbase.unwrap_or_default());
    if let Some(base) = row_base {
        ctx.put_side(&rk, Some(Side { base, state: None }));
    }
    ctx.write(def, rk, key, old, stamp, op, obj, row_base)?;
    Ok(true)
}

/// A sync row as the receiver applies it: with its merge state, a
/// `Synced` write the merge joins; without, the plain write as ever.
pub(crate) fn synced_op(op: WriteOp, merge: Option<String>) -> WriteOp {
    match merge {
        Some(state) => WriteOp::Meta {
            op: Box::new(op),
            base: Stamp::default(),
            kind: MetaKind::Synced { state },
        },
        None => op,
    }
}

// Here rather than in `side`: it needs the write path and a database,
// which build on `side`.
#[cfg(test)]
mod tests {
    use crate::local::codec::Stamp;

    /// A database written before bases moved into the row: its rows have
    /// 25-byte headers and their bases in side entries. Those bases still
    /// read, and a row's next write moves its base into the row.
    #[test]
    fn a_base_in_an_old_side_entry_reads_and_moves_into_the_row() {
        use crate::local::row::{decode_row, decode_row_header, encode_row, RowHeader};
        use crate::local::side::{side_key, Side};
        use crate::local::storage::{Batch, Space};
        use crate::{Database, OpenOptions, TableOptions};
        let dir = tempfile::tempdir().unwrap();
        let legacy_base = Stamp {
            time: 3 << 16,
            node: 77,
        };
        let (id, rk) = {
            let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
            db.create_table("t", TableOptions::default()).unwrap();
            db.upsert("t", serde_json::json!({"id": 1, "v": 1}))
                .unwrap();
            let def = db.table("t").unwrap();
            let rk = crate::local::keys::row_key(def.id, &1.into());
            let store = db.store().unwrap();
            let row = store.get(Space::Rows, &rk).unwrap().unwrap();
            let (h, body_at) = decode_row(&row).unwrap();
            assert!(h.base.is_some(), "a new write keeps its base in the row");
            let mut b = Batch::default();
            let old = RowHeader {
                base: None,
                ..h.clone()
            };
            b.put(Space::Rows, rk.clone(), encode_row(&old, &row[body_at..]));
            let side = Side {
                base: legacy_base,
                state: None,
            };
            b.put(Space::Meta, side_key(&rk), side.encode());
            db.shared.commit(&store, b, true, None).unwrap();
            (def.id, rk)
        };
        let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
        assert!(
            db.shared.conflicts.is_stateful(id),
            "the old entry is looked up"
        );
        {
            let store = db.store().unwrap();
            let mut ctx = crate::local::write::Ctx::new(&store, false, 0);
            let old = ctx.current(&rk).unwrap();
            let side = ctx.side(&rk, old.as_ref(), true).unwrap().unwrap();
            assert_eq!((side.base, side.state), (legacy_base, None));
        }
        let before = db.get("t", 1).unwrap().unwrap().stamp();
        db.upsert("t", serde_json::json!({"id": 1, "v": 2}))
            .unwrap();
        let store = db.store().unwrap();
        assert!(store.get(Space::Meta, &side_key(&rk)).unwrap().is_none());
        let row = store.get(Space::Rows, &rk).unwrap().unwrap();
        assert_eq!(decode_row_header(&row).unwrap().base, Some(before));
    }
}
