//! Random update streams against a reference: after any stream of inserts,
//! patches, moves across filter boundaries and deletes, what each
//! subscriber would hold from the routed log equals what its filter
//! selects of the publisher's table, with its columns only; and the commit
//! feed woke each subscriber for every write it had to send.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;
use crate::local::db::{Database, OpenOptions};
use crate::local::filter::Filter;
use crate::repl::config::TableFlow;

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, u8, u8),
    /// Patches `max` only: stays where it is.
    Patch(u8, u8),
    /// Moves the row to another site (and level).
    Move(u8, u8, u8),
    Delete(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..8, 0u8..4, 0u8..4).prop_map(|(k, s, l)| Op::Insert(k, s, l)),
        (0u8..8, 0u8..100).prop_map(|(k, m)| Op::Patch(k, m)),
        (0u8..8, 0u8..4, 0u8..4).prop_map(|(k, s, l)| Op::Move(k, s, l)),
        (0u8..8).prop_map(Op::Delete),
    ]
}

/// Subscribers: three by site (equality, one with a column list), one by a
/// range, one by site and range.
fn flows() -> Vec<(String, TableFlow)> {
    let f = |filter: &str| TableFlow::publish("t").filter(filter);
    vec![
        ("s0".into(), f("site = $peer.name")),
        ("s1".into(), f("site = $peer.name").columns(["site"])),
        ("s2".into(), f(r#"site IN ("s2", "s3")"#)),
        ("r".into(), f("level >= 2")),
        ("s3".into(), f("site = $peer.name AND level < 3")),
    ]
}

fn apply_op(db: &Database, op: &Op) {
    let id = |k: u8| format!("k{k}");
    let site = |s: u8| format!("s{s}");
    // Failures (a duplicate insert, a patch of a missing row) are part of
    // a random stream: they write nothing.
    let _ = match op {
        Op::Insert(k, s, l) => db
            .insert(
                "t",
                json!({"id": id(*k), "site": site(*s), "level": l, "max": 1}),
            )
            .map(|_| ()),
        Op::Patch(k, m) => db.update("t", json!({"id": id(*k), "max": m})).map(|_| ()),
        Op::Move(k, s, l) => db
            .update("t", json!({"id": id(*k), "site": site(*s), "level": l}))
            .map(|_| ()),
        Op::Delete(k) => db.delete("t", id(*k)).map(|_| ()),
    };
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn subscribers_hold_exactly_what_their_filters_select(
        synced in prop::collection::vec(op(), 0..12),
        before in prop::collection::vec(op(), 0..12),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), OpenOptions::new("hub")).unwrap();
        db.ensure_table("t", Default::default()).unwrap();
        // The subscribers' initial sync covers these.
        for o in &synced {
            apply_op(&db, o);
        }
        let start = *db.shared.committed.borrow();
        let mut subs = Vec::new();
        for (name, flow) in flows() {
            let config = super::super::config::PeerConfig::new(name.clone()).table(flow.clone());
            let who = PeerIdentity { name: name.clone(), dns: vec![] };
            let routes = Routes::new(&config, &who, |_| Some("id".into())).unwrap();
            let interest = db.shared.feed.subscribe_filtered(["t"], &routes.bounds(), 99, None);
            let bound = Filter::parse(flow.filter.as_deref().unwrap()).unwrap().bind(&who);
            // The subscriber starts from an initial sync of the state now.
            let mut held: BTreeMap<String, Value> = BTreeMap::new();
            for r in db.scan("t", &Default::default()).unwrap() {
                let row = SyncRow { key: r.key().clone(), stamp: r.stamp(), created: 0, json: Some(r.body_json().to_string()), merge: None };
                if let Some(row) = routes.sync_row("t", row, false) {
                    if let Some(j) = row.json {
                        held.insert(r.key().to_string(), serde_json::from_str(&j).unwrap());
                    }
                }
            }
            subs.push((routes, interest, bound, flow.columns.clone(), held));
        }
        // Logged before the filters were known (an older version wrote
        // them): no prior values, so the routes must assume the worst.
        for o in &before {
            apply_op(&db, o);
        }
        for (_, flow) in flows() {
            record_routed(&db, &[flow]);
        }
        for o in &ops {
            apply_op(&db, o);
        }
        let entries = db.read_log(start + 1, usize::MAX).unwrap();
        for (routes, interest, bound, columns, held) in &mut subs {
            let prior = routes.prior_index(&entries);
            let mut txns: Vec<WireTxn> = entries
                .iter()
                .map(|e| WireTxn { seq: e.seq, stamp: e.stamp, writes: e.writes.clone() })
                .collect();
            routes.apply(&prior, &mut txns);
            // Every entry a subscriber gets something from was queued at it.
            let mut queued = Vec::new();
            let mut floor = start;
            loop {
                let plan = interest.plan(floor, *db.shared.committed.borrow());
                let Some(to) = plan.read_to else { break };
                queued.extend((plan.pass_to + 1)..=to);
                floor = to;
            }
            for t in &txns {
                prop_assert!(queued.contains(&t.seq), "seq {} not routed", t.seq);
            }
            for t in txns {
                for w in t.writes {
                    match w.op.inner() {
                        WriteOp::Put { json, .. } => {
                            held.insert(w.key.to_string(), serde_json::from_str(json).unwrap());
                        }
                        _ => {
                            held.remove(&w.key.to_string());
                        }
                    }
                }
            }
            let want: BTreeMap<String, Value> = db
                .scan("t", &Default::default())
                .unwrap()
                .iter()
                .filter_map(|r| {
                    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(r.body_json()) else {
                        return None;
                    };
                    if !bound.matches(&m) {
                        return None;
                    }
                    let m: Map<String, Value> = match columns {
                        Some(c) => m.into_iter().filter(|(k, _)| k == "id" || c.contains(k)).collect(),
                        None => m,
                    };
                    Some((r.key().to_string(), Value::Object(m)))
                })
                .collect();
            prop_assert_eq!(&*held, &want);
        }
    }
}
