//! Property: replicas that receive the same set of transactions hold the
//! same records and the same index contents, whatever the order, duplication
//! or batching of arrival (SPEC §3).

mod common;

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::json;
use tidelog::*;

const TABLES: [&str; 2] = ["a", "b"];
const VALUES: [i64; 3] = [1, 2, 3];

fn write_strategy() -> impl Strategy<Value = LogWrite> {
    (
        0usize..2,
        0i64..6,
        prop::option::weighted(0.75, (0usize..3, any::<bool>(), 0u32..1000)),
    )
        .prop_map(|(t, k, put)| LogWrite {
            table: TABLES[t].into(),
            key: Key::Int(k),
            op: match put {
                Some((v, as_array, payload)) => {
                    let v = if as_array {
                        json!([VALUES[v], 9])
                    } else {
                        json!(VALUES[v])
                    };
                    WriteOp::Put {
                        json: json!({"id": k, "v": v, "p": payload}).to_string(),
                        created: 1 << 16,
                    }
                }
                None => WriteOp::Delete,
            },
        })
}

/// Transactions with distinct stamps from three origins, close in time so
/// that orderings collide on time and fall back to the node id.
fn txns_strategy() -> impl Strategy<Value = Vec<RemoteTxn>> {
    prop::collection::vec(
        (
            0u64..40,
            1u64..4,
            prop::collection::vec(write_strategy(), 1..4),
        ),
        1..40,
    )
    .prop_map(|raw| {
        let base = hlc::wall_millis() << 16;
        let mut seen = BTreeSet::new();
        raw.into_iter()
            .filter(|(t, n, _)| seen.insert((*t, *n)))
            .map(|(t, node, writes)| RemoteTxn {
                stamp: Stamp {
                    time: base + t,
                    node,
                },
                writes,
            })
            .collect()
    })
}

fn fresh(dir: &std::path::Path, engine: EngineKind) -> Database {
    let db = Database::open(dir, OpenOptions::new("replica").engine(engine)).unwrap();
    for t in TABLES {
        db.create_table(t, TableOptions::default().index("v"))
            .unwrap();
    }
    db
}

/// Records with stamps plus what every index lookup returns.
fn state(db: &Database) -> Vec<String> {
    let mut out = vec![];
    for t in TABLES {
        for r in db.scan(t, &ScanOptions::default()).unwrap() {
            out.push(format!(
                "{t} {:?} {:?} {}",
                r.key(),
                r.stamp(),
                r.to_json_string()
            ));
        }
        for v in VALUES.iter().map(|v| json!(v)).chain([json!(9)]) {
            let keys: Vec<Key> = db
                .find_eq(t, "v", &v)
                .unwrap()
                .iter()
                .map(|r| r.key().clone())
                .collect();
            out.push(format!("{t} v={v} -> {keys:?}"));
        }
        out.push(format!("{t} count {}", db.count(t).unwrap()));
    }
    out
}

fn check(
    engine: EngineKind,
    txns: Vec<RemoteTxn>,
    order: Vec<usize>,
    dups: Vec<usize>,
    batch: usize,
) -> Result<(), TestCaseError> {
    let dirs: Vec<_> = (0..3).map(|_| common::scratch_dir()).collect();
    let (a, b, c) = (
        fresh(dirs[0].path(), engine),
        fresh(dirs[1].path(), engine),
        fresh(dirs[2].path(), engine),
    );
    // a: in order, one at a time.
    for t in &txns {
        a.apply_remote(std::slice::from_ref(t), None).unwrap();
    }
    // b: shuffled, with duplicates, in batches.
    let mut seq: Vec<RemoteTxn> = order
        .iter()
        .map(|&i| txns[i % txns.len()].clone())
        .collect();
    seq.extend(dups.iter().map(|&i| txns[i % txns.len()].clone()));
    for chunk in seq.chunks(batch.max(1)) {
        b.apply_remote(chunk, Some(("peer", b"x"))).unwrap();
    }
    for t in &txns {
        // Every transaction must have arrived at b at least once.
        b.apply_remote(std::slice::from_ref(t), None).unwrap();
    }
    // c: reverse order, then everything again.
    for t in txns.iter().rev().chain(txns.iter()) {
        c.apply_remote(std::slice::from_ref(t), None).unwrap();
    }
    let (sa, sb, sc) = (state(&a), state(&b), state(&c));
    prop_assert_eq!(&sa, &sb);
    prop_assert_eq!(&sa, &sc);
    // And the winner of every key is its highest-stamped write.
    for t in TABLES {
        for k in 0..6 {
            let winner = txns
                .iter()
                .flat_map(|x| x.writes.iter().map(move |w| (x.stamp, w)))
                .filter(|(_, w)| w.table == t && w.key == Key::Int(k))
                .max_by_key(|(s, _)| *s);
            let got = a.get(t, k).unwrap();
            match winner {
                Some((
                    s,
                    LogWrite {
                        op: WriteOp::Put { json, .. },
                        ..
                    },
                )) => {
                    let r = got.expect("winner is a put");
                    prop_assert_eq!(r.stamp(), s);
                    prop_assert_eq!(r.body_json(), json.as_str());
                }
                _ => prop_assert!(got.is_none()),
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_regardless_of_order_duplicates_and_batching_fjall(
        txns in txns_strategy(),
        order in prop::collection::vec(0usize..1000, 0..60),
        dups in prop::collection::vec(0usize..1000, 0..20),
        batch in 1usize..8,
    ) {
        check(EngineKind::Fjall, txns, order, dups, batch)?;
    }

    #[test]
    fn replicas_converge_regardless_of_order_duplicates_and_batching_sled(
        txns in txns_strategy(),
        order in prop::collection::vec(0usize..1000, 0..60),
        dups in prop::collection::vec(0usize..1000, 0..20),
        batch in 1usize..8,
    ) {
        check(EngineKind::Sled, txns, order, dups, batch)?;
    }
}
