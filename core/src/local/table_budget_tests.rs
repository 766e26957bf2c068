//! The statistics against a scan, over random workloads through every path
//! that changes rows: local writes and transactions (with repeats), merges
//! and increments, replication applies (winning and losing), expiry, and a
//! data directory from before the statistics existed.

use proptest::prelude::*;
use serde_json::json;

use super::*;

use crate::local::conflict::ConflictPolicy;
use crate::{OpenOptions, TableOptions};

#[derive(Debug, Clone)]
enum Op {
    Insert(i64, usize),
    Upsert(i64, usize),
    Update(i64, usize),
    Delete(i64),
    /// Two writes to one record in one transaction, then maybe a delete.
    Repeat(i64, usize, bool),
    Increment(i64, i64),
    /// A peer's put (`Some(len)`) or delete, stamped in the past or future.
    Remote(i64, Option<usize>, bool),
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0i64..12;
    prop_oneof![
        (k.clone(), 0usize..60).prop_map(|(k, n)| Op::Insert(k, n)),
        (k.clone(), 0usize..60).prop_map(|(k, n)| Op::Upsert(k, n)),
        (k.clone(), 0usize..60).prop_map(|(k, n)| Op::Update(k, n)),
        k.clone().prop_map(Op::Delete),
        (k.clone(), 0usize..60, any::<bool>()).prop_map(|(k, n, d)| Op::Repeat(k, n, d)),
        (k.clone(), -3i64..4).prop_map(|(k, by)| Op::Increment(k, by)),
        (k, proptest::option::of(0usize..60), any::<bool>())
            .prop_map(|(k, n, f)| Op::Remote(k, n, f)),
        Just(Op::Expire),
    ]
}

/// What the entry says, checked against a scan of the rows.
fn check(db: &Database, table: &str) {
    let def = db.table(table).unwrap();
    let store = db.store().unwrap();
    let counted = scan(&store, def.id).unwrap();
    drop(store);
    let s = db.table_stats(table).unwrap();
    assert_eq!(
        (s.records, s.bytes),
        (counted.records, counted.bytes),
        "{table}"
    );
    let all = db.scan(table, &Default::default()).unwrap();
    assert_eq!(db.count(table).unwrap(), all.len() as u64, "{table}");
}

fn run(db: &Database, table: &str, op: &Op) {
    let pad = |n: usize| "p".repeat(n);
    let _ = match op {
        Op::Insert(k, n) => db.insert(table, json!({"id": k, "v": pad(*n)})).map(|_| ()),
        Op::Upsert(k, n) => db.upsert(table, json!({"id": k, "v": pad(*n)})).map(|_| ()),
        Op::Update(k, n) => db.update(table, json!({"id": k, "w": pad(*n)})).map(|_| ()),
        Op::Delete(k) => db.delete(table, *k).map(|_| ()),
        Op::Repeat(k, n, del) => {
            let mut tx = db.transaction();
            tx.upsert(table, json!({"id": k, "v": pad(*n)})).unwrap();
            tx.upsert(table, json!({"id": k, "v": pad(n + 3)})).unwrap();
            if *del {
                tx.delete(table, *k).unwrap();
            }
            tx.commit().map(|_| ())
        }
        Op::Increment(k, by) => db.increment(table, *k, "c", *by).map(|_| ()),
        Op::Remote(k, n, future) => {
            let json = n.map(|n| json!({"id": k, "v": pad(n)}).to_string());
            crate::local::remote::apply_test_peer_write(db, table, *k, json, *future)
        }
        Op::Expire => {
            // Half the records, by age: everything written over a second
            // ago in the table's clock goes.
            let now = crate::local::hlc::wall_millis();
            crate::local::maintenance::sweep_expired(db, now + 1000).map(|_| ())
        }
    };
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn stats_match_a_scan(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
        db.create_table("lww", TableOptions::default().index("v").expiration_secs(1)).unwrap();
        db.create_table("merge", TableOptions::default().conflict(ConflictPolicy::MergeAttributes)).unwrap();
        for op in &ops {
            run(&db, "lww", op);
            run(&db, "merge", op);
        }
        check(&db, "lww");
        check(&db, "merge");
        let before = (db.table_stats("lww").unwrap(), db.table_stats("merge").unwrap());
        db.close().unwrap();
        let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
        prop_assert_eq!(before, (db.table_stats("lww").unwrap(), db.table_stats("merge").unwrap()));
        check(&db, "lww");
        check(&db, "merge");
        db.close().unwrap();
    }
}

/// A directory written before the statistics existed has no entry: it is
/// counted once by a scan and the entry is written with the next commit.
#[test]
fn a_table_without_an_entry_is_counted_once_and_then_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
    db.create_table("t", TableOptions::default()).unwrap();
    for i in 0..50 {
        db.upsert("t", json!({"id": i})).unwrap();
    }
    db.delete("t", 3i64).unwrap();
    let id = db.table("t").unwrap().id;
    let store = db.shared.writable_store().unwrap();
    let mut b = Batch::default();
    b.delete(Space::Meta, stats_key(id));
    db.shared.commit(&store, b, true, None).unwrap();
    drop(store);
    db.close().unwrap();

    let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
    let has_entry = |db: &Database| {
        db.store()
            .unwrap()
            .get(Space::Meta, &stats_key(id))
            .unwrap()
            .is_some()
    };
    assert!(!has_entry(&db));
    assert_eq!(db.count("t").unwrap(), 49);
    db.upsert("t", json!({"id": 100})).unwrap();
    assert!(has_entry(&db));
    db.close().unwrap();
    let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
    assert_eq!(db.count("t").unwrap(), 50);
    check(&db, "t");
}
