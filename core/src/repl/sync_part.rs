//! What of a table's state row an initial sync or resync may send a peer
//! under the origin rules (never the peer's own writes; only this node's
//! to a peer that takes no relays).

use crate::error::{Error, Result};
use crate::local::merge::MergeState;
use crate::net::wire::SyncRow;

/// A row of this node's table state, as a sync sends it (before the row
/// filter and the origin rules cut it).
impl From<crate::local::read::StateRow> for SyncRow {
    fn from(s: crate::local::read::StateRow) -> SyncRow {
        SyncRow {
            key: s.key,
            stamp: s.stamp,
            created: s.created,
            json: s.json,
            merge: s.merge,
        }
    }
}

/// The part of `row` the origin rules let go (`may_send`: whether writes
/// of an origin may go to the peer). A plain row is one write: it goes or
/// not by its stamp. A row with a merge state holds writes of many
/// origins, so its state goes with the allowed origins' parts, stamped
/// with the newest of them, and the row not at all only when none is
/// left. (Going or not by the newest stamp, as a plain row does, lost the
/// allowed origins' older counts and patches for good: the peer streams
/// this node's log only from the sync's position on.)
pub(super) fn allowed(mut row: SyncRow, may_send: impl Fn(u64) -> bool) -> Result<Option<SyncRow>> {
    let Some(text) = &row.merge else {
        return Ok(may_send(row.stamp.node).then_some(row));
    };
    let state: MergeState = serde_json::from_str(text).map_err(|e| {
        Error::Corrupt(format!(
            "the merge state of key {} does not decode ({e}); the store is damaged",
            row.key
        ))
    })?;
    let Some(part) = state.only_origins(may_send) else {
        return Ok(None);
    };
    if part != state {
        row.stamp = part.newest();
        row.merge =
            Some(serde_json::to_string(&part).map_err(|e| Error::InvalidJson(e.to_string()))?);
    }
    Ok(Some(row))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::local::catalog::TableOptions;
    use crate::local::conflict::ConflictPolicy;
    use crate::local::db::{Database, OpenOptions};
    use crate::local::log::{LogWrite, WriteOp};
    use crate::local::remote::{RemoteOutcome, RemoteTxn};

    fn node(name: &str, policy: ConflictPolicy) -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), OpenOptions::new(name)).unwrap();
        db.ensure_table("t", TableOptions::default().conflict(policy))
            .unwrap();
        (dir, db)
    }

    /// Ships `from`'s own writes after sequence `after` to `to`, in log
    /// order; returns the last sequence looked at.
    fn ship(from: &Database, to: &Database, after: u64) -> u64 {
        let mut last = after;
        for e in from.read_log(after + 1, 1000).unwrap() {
            last = e.seq;
            let writes: Vec<LogWrite> = e.writes.into_iter().filter(|w| w.table == "t").collect();
            if e.stamp.node != from.node_id() || writes.is_empty() {
                continue;
            }
            let out = to
                .apply_remote(
                    &[RemoteTxn {
                        stamp: e.stamp,
                        writes,
                    }],
                    None,
                )
                .unwrap();
            assert!(!matches!(out[0], RemoteOutcome::Refused(_)), "{out:?}");
        }
        last
    }

    /// `from`'s initial sync of table `t` to `to`, which takes no relays
    /// from it, applied as the receiver applies sync rows.
    fn sync(from: &Database, to: &Database) {
        let own = from.node_id();
        let (rows, next) = from.state_chunk("t", None, 1000, usize::MAX, None).unwrap();
        assert!(next.is_none());
        for s in rows {
            let Some(row) = allowed(s.into(), |o| o == own).unwrap() else {
                continue;
            };
            let op = match row.json {
                Some(json) => WriteOp::Put {
                    json,
                    created: row.created,
                },
                None => WriteOp::Delete,
            };
            let txn = RemoteTxn {
                stamp: row.stamp,
                writes: vec![LogWrite {
                    table: "t".into(),
                    key: row.key,
                    op: crate::local::settle::synced_op(op, row.merge),
                }],
            };
            let out = to.apply_remote(&[txn], None).unwrap();
            assert!(!matches!(out[0], RemoteOutcome::Refused(_)), "{out:?}");
        }
    }

    fn record(db: &Database, key: &str) -> serde_json::Value {
        let mut v = db.get("t", key).unwrap().unwrap().to_value();
        if let serde_json::Value::Object(m) = &mut v {
            m.remove("__updatedtime__");
            m.remove("__createdtime__");
        }
        v
    }

    /// The issue 22 divergence, deterministically: a late node `d` counts
    /// and patches records that `a`, which takes no relays from it, writes
    /// too; by the time `d` syncs to `a`, the newest write of each record
    /// on `d` is `a`'s (or `a` holds the row without a merge state), and
    /// `d`'s writes are all before the position its log streams from. The
    /// sync must still bring them.
    #[test]
    fn a_late_nodes_writes_under_a_peers_newer_ones_reach_the_peer_by_sync() {
        for policy in [
            ConflictPolicy::MergeAttributes,
            ConflictPolicy::LastWriterWins,
        ] {
            let (_da, a) = node("a", policy);
            let (_dd, d) = node("d", policy);
            a.increment("t", "k", "n", 1).unwrap();
            a.upsert("t", json!({"id": "j", "x": 1})).unwrap();
            let shipped = ship(&a, &d, 0);
            d.increment("t", "k", "n", 5).unwrap();
            d.update("t", json!({"id": "k", "y": 7})).unwrap();
            // A record that has a plain row on `a` and a merge state on `d`.
            d.increment("t", "j", "n", 2).unwrap();
            // `a`'s clock has not seen `d`'s stamps: a later millisecond
            // makes its next write the newer (checked below).
            std::thread::sleep(std::time::Duration::from_millis(3));
            a.increment("t", "k", "n", 1).unwrap();
            ship(&a, &d, shipped);
            assert_eq!(d.get("t", "k").unwrap().unwrap().stamp().node, a.node_id());
            sync(&d, &a);
            for key in ["k", "j"] {
                assert_eq!(record(&a, key), record(&d, key), "{policy:?} {key}");
            }
            assert_eq!(
                record(&a, "k"),
                json!({"id": "k", "n": 7, "y": 7}),
                "{policy:?}"
            );
            assert_eq!(
                record(&a, "j"),
                json!({"id": "j", "n": 2, "x": 1}),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn a_plain_row_goes_by_its_stamp_and_a_state_with_nothing_allowed_not_at_all() {
        let (_dd, d) = node("d", ConflictPolicy::MergeAttributes);
        let (_da, a) = node("a", ConflictPolicy::MergeAttributes);
        a.increment("t", "k", "n", 1).unwrap();
        a.upsert("t", json!({"id": "p", "x": 1})).unwrap();
        ship(&a, &d, 0);
        let (rows, _) = d.state_chunk("t", None, 1000, usize::MAX, None).unwrap();
        assert_eq!(rows.len(), 2);
        for s in rows {
            let row = SyncRow {
                key: s.key,
                stamp: s.stamp,
                created: s.created,
                json: s.json,
                merge: s.merge,
            };
            let a_id = a.node_id();
            assert!(allowed(row.clone(), |o| o == d.node_id())
                .unwrap()
                .is_none());
            assert_eq!(allowed(row.clone(), |o| o == a_id).unwrap(), Some(row));
        }
        // A damaged state is a typed error, not a panic.
        let bad = SyncRow {
            key: crate::local::codec::Key::Str("z".into()),
            stamp: Default::default(),
            created: 0,
            json: None,
            merge: Some("{not json".into()),
        };
        assert!(matches!(allowed(bad, |_| true), Err(Error::Corrupt(_))));
    }
}
