//! Index finds against a scan, over random workloads through every path
//! that changes rows: a find answers from the rows its index entries carry
//! (see [`CarriesRow`]), so an entry any path left behind, or did not
//! rewrite, would show here as a stale or missing record.

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::local::catalog::OnFull;
use crate::local::codec::{Key, Stamp};
use crate::local::conflict::ConflictPolicy;
use crate::local::storage::{Batch, Space};
use crate::{Database, OpenOptions, TableOptions};

/// The indexed attribute's shape in a write.
#[derive(Debug, Clone)]
enum Tag {
    Scalar(Value),
    Array(Vec<Value>),
    Missing,
}

impl Tag {
    fn put_into(&self, obj: &mut serde_json::Map<String, Value>) {
        match self {
            Tag::Scalar(v) => {
                obj.insert("tag".into(), v.clone());
            }
            Tag::Array(items) => {
                obj.insert("tag".into(), Value::Array(items.clone()));
            }
            Tag::Missing => {}
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Upsert(i64, Tag, u8),
    /// Changes `v` only: the index entry's key stays, its row must not.
    UpdateOther(i64, u8),
    UpdateTag(i64, Tag),
    Delete(i64),
    /// Two writes to one record in one transaction, then maybe a delete.
    Repeat(i64, Tag, Tag, bool),
    Increment(i64),
    /// A peer's put (`Some`) or delete, stamped in the past or future.
    Remote(i64, Option<(Tag, u8)>, bool),
    Expire,
}

/// A few values, so that records share them and finds return several.
fn tag_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("a")),
        Just(json!("b")),
        Just(json!(1)),
        Just(json!(true)),
    ]
}

fn universe() -> [Value; 4] {
    [json!("a"), json!("b"), json!(1), json!(true)]
}

fn tag() -> impl Strategy<Value = Tag> {
    prop_oneof![
        3 => tag_value().prop_map(Tag::Scalar),
        2 => proptest::collection::vec(tag_value(), 0..3).prop_map(Tag::Array),
        1 => Just(Tag::Missing),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0i64..6;
    // Expiry empties the expiring table, so it comes rarely.
    prop_oneof![
        4 => (k.clone(), tag(), any::<u8>()).prop_map(|(k, t, n)| Op::Upsert(k, t, n)),
        4 => (k.clone(), any::<u8>()).prop_map(|(k, n)| Op::UpdateOther(k, n)),
        3 => (k.clone(), tag()).prop_map(|(k, t)| Op::UpdateTag(k, t)),
        1 => k.clone().prop_map(Op::Delete),
        2 => (k.clone(), tag(), tag(), any::<bool>()).prop_map(|(k, a, b, d)| Op::Repeat(k, a, b, d)),
        2 => k.clone().prop_map(Op::Increment),
        3 => (
            k,
            proptest::option::of((tag(), any::<u8>())),
            any::<bool>()
        )
            .prop_map(|(k, w, f)| Op::Remote(k, w, f)),
        1 => Just(Op::Expire),
    ]
}

fn record(k: i64, tag: &Tag, n: u8) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert("id".into(), json!(k));
    obj.insert("v".into(), json!(n));
    tag.put_into(&mut obj);
    Value::Object(obj)
}

fn run(db: &Database, table: &str, op: &Op) {
    // Refusals (an insert over a key, an update of nothing) are outcomes
    // too; the check afterwards covers whatever happened.
    let _ = match op {
        Op::Upsert(k, t, n) => db.upsert(table, record(*k, t, *n)).map(|_| ()),
        Op::UpdateOther(k, n) => db.update(table, json!({"id": k, "v": n})).map(|_| ()),
        Op::UpdateTag(k, t) => {
            let mut obj = serde_json::Map::new();
            obj.insert("id".into(), json!(k));
            t.put_into(&mut obj);
            db.update(table, Value::Object(obj)).map(|_| ())
        }
        Op::Delete(k) => db.delete(table, *k).map(|_| ()),
        Op::Repeat(k, a, b, del) => {
            let mut tx = db.transaction();
            tx.upsert(table, record(*k, a, 1)).unwrap();
            tx.upsert(table, record(*k, b, 2)).unwrap();
            if *del {
                tx.delete(table, *k).unwrap();
            }
            tx.commit().map(|_| ())
        }
        Op::Increment(k) => db.increment(table, *k, "c", 1).map(|_| ()),
        Op::Remote(k, w, future) => {
            let json = w.as_ref().map(|(t, n)| record(*k, t, *n).to_string());
            crate::local::remote::apply_test_peer_write(db, table, *k, json, *future)
        }
        Op::Expire => {
            let now = crate::local::hlc::wall_millis();
            crate::local::maintenance::sweep_expired(db, now + 1000).map(|_| ())
        }
    };
}

/// What a check compares of a record.
fn seen_as(r: &crate::Record) -> (Key, String, Stamp, u64) {
    (
        r.key().clone(),
        r.to_json_string(),
        r.stamp(),
        r.created_ms(),
    )
}

/// Every find, record for record (body, stamp, creation time), against
/// the records a scan holds with that value or an array containing it.
fn check(db: &Database, table: &str) {
    let all = db.scan(table, &Default::default()).unwrap();
    for value in universe() {
        let want: Vec<(Key, String, Stamp, u64)> = all
            .iter()
            .filter(|r| match r.to_value().get("tag") {
                Some(Value::Array(items)) => items.contains(&value),
                Some(v) => *v == value,
                None => false,
            })
            .map(seen_as)
            .collect();
        let mut got: Vec<(Key, String, Stamp, u64)> = db
            .find_eq(table, "tag", &value)
            .unwrap()
            .iter()
            .map(seen_as)
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want, "{table}: find tag = {value}");
    }
}

/// Empties every index entry's value, as a directory written before
/// entries carried rows holds them.
fn forget_carried_rows(db: &Database, table: &str) {
    let def = db.table(table).unwrap();
    let store = db.shared.writable_store().unwrap();
    let mut b = Batch::default();
    for item in store.prefix(Space::Index, &def.index_prefix(1), false) {
        b.put(Space::Index, item.unwrap().0.to_vec(), Vec::new());
    }
    db.shared.commit(&store, b, true, None).unwrap();
}

const TABLES: [&str; 3] = ["lww", "merge", "budget"];

fn create_tables(db: &Database) {
    db.create_table(
        "lww",
        TableOptions::default().index("tag").expiration_secs(1),
    )
    .unwrap();
    db.create_table(
        "merge",
        TableOptions::default()
            .index("tag")
            .conflict(ConflictPolicy::MergeAttributes),
    )
    .unwrap();
    // Small enough that the oldest records are dropped along the way.
    db.create_table(
        "budget",
        TableOptions::default()
            .index("tag")
            .disk_budget(120, OnFull::DropOldest),
    )
    .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn finds_match_a_scan(
        ops in proptest::collection::vec(op(), 1..50),
        legacy_at in proptest::option::of(0usize..50),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
        create_tables(&db);
        for (i, op) in ops.iter().enumerate() {
            if legacy_at == Some(i) {
                // From here on some entries carry no row: finds read those
                // records, and later writes give them rows again.
                for t in TABLES {
                    forget_carried_rows(&db, t);
                }
            }
            for t in TABLES {
                run(&db, t, op);
            }
        }
        for t in TABLES {
            check(&db, t);
        }
        db.close().unwrap();
        let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
        for t in TABLES {
            check(&db, t);
        }
        db.close().unwrap();
    }
}

/// The cases the random workload reaches only by chance, each on its own.
#[test]
fn a_find_returns_the_latest_version_whatever_changed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
    create_tables(&db);
    let v = |db: &Database, value: Value| -> Vec<Value> {
        db.find_eq("lww", "tag", &value)
            .unwrap()
            .iter()
            .map(|r| r.to_value()["v"].clone())
            .collect()
    };
    db.upsert("lww", json!({"id": 1, "tag": "a", "v": 1}))
        .unwrap();
    // Another attribute changes, the indexed one does not.
    db.update("lww", json!({"id": 1, "v": 2})).unwrap();
    assert_eq!(v(&db, json!("a")), [json!(2)]);
    // A scalar becomes an array holding it: the entry stays, its row goes.
    db.upsert("lww", json!({"id": 1, "tag": ["a", "b"], "v": 3}))
        .unwrap();
    assert_eq!(v(&db, json!("a")), [json!(3)]);
    db.update("lww", json!({"id": 1, "v": 4})).unwrap();
    assert_eq!(v(&db, json!("a")), [json!(4)]);
    assert_eq!(v(&db, json!("b")), [json!(4)]);
    // And back.
    db.upsert("lww", json!({"id": 1, "tag": "a", "v": 5}))
        .unwrap();
    db.update("lww", json!({"id": 1, "v": 6})).unwrap();
    assert_eq!(v(&db, json!("a")), [json!(6)]);
    assert!(v(&db, json!("b")).is_empty());
    db.delete("lww", 1i64).unwrap();
    assert!(v(&db, json!("a")).is_empty());
}

/// Scalar entries carry their record's row, array elements do not, and
/// entries that carry none (written before) are still answered.
#[test]
fn scalar_entries_carry_the_row_and_array_elements_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
    create_tables(&db);
    db.upsert("lww", json!({"id": 1, "tag": "a"})).unwrap();
    db.upsert("lww", json!({"id": 2, "tag": ["a", "b"]}))
        .unwrap();
    let def = db.table("lww").unwrap();
    let values = |db: &Database| -> Vec<usize> {
        let store = db.store().unwrap();
        store
            .prefix(Space::Index, &def.index_prefix(1), false)
            .map(|item| item.unwrap().1.len())
            .collect()
    };
    let carried = values(&db);
    assert_eq!(carried.len(), 3, "{carried:?}");
    assert_eq!(carried.iter().filter(|n| **n > 0).count(), 1, "{carried:?}");
    forget_carried_rows(&db, "lww");
    assert!(values(&db).iter().all(|n| *n == 0));
    assert_eq!(db.find_eq("lww", "tag", &json!("a")).unwrap().len(), 2);
    db.update("lww", json!({"id": 1, "v": 1})).unwrap();
    assert_eq!(values(&db).iter().filter(|n| **n > 0).count(), 1);
    check(&db, "lww");
}

/// A table over its disk budget drops its oldest records, and their
/// entries with them (an entry left behind would answer with its row).
#[test]
fn records_dropped_for_a_budget_take_their_entries_along() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
    create_tables(&db);
    for k in 0..20 {
        db.upsert("budget", record(k, &Tag::Scalar(json!("a")), 0))
            .unwrap();
    }
    let stats = db.table_stats("budget").unwrap();
    assert!(stats.dropped > 0 && stats.records < 20, "{stats:?}");
    assert_eq!(
        db.find_eq("budget", "tag", &json!("a")).unwrap().len() as u64,
        stats.records
    );
    check(&db, "budget");
}
