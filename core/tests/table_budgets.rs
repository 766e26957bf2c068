//! Table disk budgets (`disk_budget_bytes`, `on_full`) and the statistics
//! they are measured with: refusal that leaves other tables writing,
//! dropping the oldest records with an exact count, budgets changed while
//! running, replicated writes into a table over its budget, and hostile
//! values.
//!
//! A record's logical bytes are its stored key (4-byte table id, then for
//! an integer key a tag and 8 bytes) plus its JSON text.

use serde_json::json;
use tidelog::*;

/// `{"id":<4 digits>,"v":"xxxx..."}`: 28 bytes of JSON, 41 counted.
fn rec(i: i64) -> serde_json::Value {
    assert!((1000..10_000).contains(&i));
    json!({"id": i, "v": "x".repeat(10)})
}
const REC_BYTES: u64 = 4 + 9 + 28;

fn open(dir: &std::path::Path) -> Database {
    Database::open(dir, OpenOptions::new("n1")).expect("open")
}

#[test]
fn record_bytes_are_key_and_json() {
    assert_eq!(rec(1000).to_string().len(), 28);
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.create_table("t", TableOptions::default()).unwrap();
    for i in 1000..1010 {
        db.insert("t", rec(i)).unwrap();
    }
    let s = db.table_stats("t").unwrap();
    assert_eq!((s.records, s.bytes, s.dropped), (10, 10 * REC_BYTES, 0));
    assert_eq!(s.disk_budget_bytes, None);
}

#[test]
fn refuse_fails_the_write_and_other_tables_keep_writing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.create_table(
        "sensor_data",
        TableOptions::default().disk_budget(5 * REC_BYTES, OnFull::Refuse),
    )
    .unwrap();
    db.create_table("alerts", TableOptions::default()).unwrap();
    for i in 1000..1005 {
        db.insert("sensor_data", rec(i)).expect("within the budget");
    }
    let e = db
        .insert("sensor_data", rec(1005))
        .expect_err("past the budget");
    assert!(
        matches!(e, Error::TableFull { would, budget, .. } if would == 6 * REC_BYTES && budget == 5 * REC_BYTES),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Storage);
    let text = e.to_string();
    assert!(
        text.contains("sensor_data")
            && text.contains("disk_budget_bytes")
            && text.contains("delete"),
        "the message says which table, which limit and what to do: {text}"
    );
    assert!(db.get("sensor_data", 1005i64).unwrap().is_none());
    // The alerts queue never starves.
    for i in 1000..1100 {
        db.insert("alerts", rec(i)).expect("another table writes");
    }
    // A transaction touching the full table fails whole.
    let mut tx = db.transaction();
    tx.insert("alerts", rec(2000)).unwrap();
    tx.insert("sensor_data", rec(2000)).unwrap();
    assert!(matches!(tx.commit(), Err(Error::TableFull { .. })));
    assert!(db.get("alerts", 2000i64).unwrap().is_none());
    // Overwriting with a record of the same size does not grow the table.
    db.upsert("sensor_data", rec(1000)).expect("same size");
    // Deleting makes room.
    assert!(db.delete("sensor_data", 1000i64).unwrap());
    db.insert("sensor_data", rec(1005)).expect("room again");
    let s = db.table_stats("sensor_data").unwrap();
    assert_eq!((s.records, s.bytes, s.dropped), (5, 5 * REC_BYTES, 0));
}

#[test]
fn drop_oldest_removes_the_oldest_in_the_same_commit_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.create_table(
        "t",
        TableOptions::default()
            .index("v")
            .disk_budget(10 * REC_BYTES, OnFull::DropOldest),
    )
    .unwrap();
    for i in 1000..1025 {
        db.insert("t", rec(i))
            .expect("drop_oldest never refuses a record that fits");
        let s = db.table_stats("t").unwrap();
        assert!(s.bytes <= 10 * REC_BYTES, "{s:?}");
    }
    let s = db.table_stats("t").unwrap();
    assert_eq!((s.records, s.bytes, s.dropped), (10, 10 * REC_BYTES, 15));
    let keys: Vec<Key> = db
        .scan("t", &ScanOptions::default())
        .unwrap()
        .iter()
        .map(|r| r.key().clone())
        .collect();
    assert_eq!(keys, (1015..1025).map(Key::Int).collect::<Vec<_>>());
    // Their index entries went with them.
    let found = db
        .find(
            "t",
            "v",
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            None,
        )
        .unwrap();
    assert_eq!(found.len(), 10);
    // Rewriting an old record makes it the newest: the next drop skips it.
    // (The order is by the millisecond of the last write, then by key: the
    // pause puts the rewrite in a later millisecond than every other.)
    std::thread::sleep(std::time::Duration::from_millis(3));
    db.upsert("t", rec(1015)).unwrap();
    db.insert("t", rec(1025)).unwrap();
    assert!(db.get("t", 1015i64).unwrap().is_some());
    assert!(db.get("t", 1016i64).unwrap().is_none());
    assert_eq!(db.table_stats("t").unwrap().dropped, 16);
    // A record larger than the whole budget is refused, and nothing is
    // dropped for it.
    let huge = json!({"id": 9999, "v": "x".repeat(20 * REC_BYTES as usize)});
    assert!(matches!(db.insert("t", huge), Err(Error::TableFull { .. })));
    assert_eq!(db.count("t").unwrap(), 10);
    // The count of dropped records is kept across a reopen.
    db.close().unwrap();
    let db = open(dir.path());
    let s = db.table_stats("t").unwrap();
    assert_eq!((s.records, s.dropped), (10, 16));
    let info = db.describe_table("t").unwrap();
    assert_eq!(
        (info.disk_budget_bytes, info.on_full),
        (Some(10 * REC_BYTES), OnFull::DropOldest)
    );
}

#[test]
fn budgets_change_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.create_table("t", TableOptions::default()).unwrap();
    for i in 1000..1020 {
        db.insert("t", rec(i)).unwrap();
    }
    // A drop_oldest budget below the table's bytes drops at once (the age
    // index it needs is built first).
    db.set_table_budget("t", Some((5 * REC_BYTES, OnFull::DropOldest)))
        .unwrap();
    let s = db.table_stats("t").unwrap();
    assert_eq!((s.records, s.dropped), (5, 15));
    assert_eq!(
        db.scan("t", &ScanOptions::default()).unwrap()[0].key(),
        &Key::Int(1015)
    );
    // Refuse, below the table's bytes: nothing dropped, growth refused,
    // shrinking allowed.
    db.set_table_budget("t", Some((3 * REC_BYTES, OnFull::Refuse)))
        .unwrap();
    assert_eq!(db.count("t").unwrap(), 5);
    assert!(matches!(
        db.insert("t", rec(1100)),
        Err(Error::TableFull { .. })
    ));
    db.delete("t", 1015i64).unwrap();
    // No budget: anything goes.
    db.set_table_budget("t", None).unwrap();
    for i in 1100..1150 {
        db.insert("t", rec(i)).unwrap();
    }
    assert_eq!(db.count("t").unwrap(), 54);
    assert_eq!(db.describe_table("t").unwrap().disk_budget_bytes, None);
    // And back to drop_oldest, dropping the oldest again.
    db.set_table_budget("t", Some((4 * REC_BYTES, OnFull::DropOldest)))
        .unwrap();
    let s = db.table_stats("t").unwrap();
    assert_eq!((s.records, s.dropped), (4, 65));
    let keys: Vec<Key> = db
        .scan("t", &ScanOptions::default())
        .unwrap()
        .iter()
        .map(|r| r.key().clone())
        .collect();
    assert_eq!(keys, (1146..1150).map(Key::Int).collect::<Vec<_>>());
}

fn remote_put(key: i64, ms_ago: u64) -> RemoteTxn {
    RemoteTxn {
        stamp: Stamp {
            time: (hlc::wall_millis() - ms_ago) << 16,
            node: 99,
        },
        writes: vec![LogWrite {
            table: "t".into(),
            key: Key::Int(key),
            op: WriteOp::Put {
                json: rec(key).to_string(),
                created: 0,
            },
        }],
    }
}

/// A replication apply is never refused for a budget (refusing would stall
/// the peer's whole link): a `refuse` table goes over and refuses local
/// growth until it is back under; a `drop_oldest` table drops for it.
#[test]
fn replicated_writes_into_a_table_over_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.create_table(
        "t",
        TableOptions::default().disk_budget(2 * REC_BYTES, OnFull::Refuse),
    )
    .unwrap();
    db.insert("t", rec(1000)).unwrap();
    db.insert("t", rec(1001)).unwrap();
    for k in 1002..1005 {
        let out = db
            .apply_remote(&[remote_put(k, 0)], Some(("peer", b"c")))
            .unwrap();
        assert!(
            matches!(out[0], RemoteOutcome::Applied { applied: 1, .. }),
            "{out:?}"
        );
    }
    let s = db.table_stats("t").unwrap();
    assert_eq!((s.records, s.bytes), (5, 5 * REC_BYTES));
    assert!(matches!(
        db.insert("t", rec(1005)),
        Err(Error::TableFull { .. })
    ));
    db.close().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.create_table(
        "t",
        TableOptions::default().disk_budget(2 * REC_BYTES, OnFull::DropOldest),
    )
    .unwrap();
    db.insert("t", rec(1000)).unwrap();
    db.insert("t", rec(1001)).unwrap();
    // Stamped a minute ago, so older than the local records; a commit
    // never drops what it writes itself, so the oldest local one goes.
    db.apply_remote(&[remote_put(1002, 60_000)], None).unwrap();
    let s = db.table_stats("t").unwrap();
    assert_eq!((s.records, s.dropped), (2, 1));
    assert!(db.get("t", 1000i64).unwrap().is_none());
    // The next write drops the oldest by stamp: the peer's.
    db.apply_remote(&[remote_put(1003, 0)], None).unwrap();
    let s = db.table_stats("t").unwrap();
    assert_eq!((s.records, s.dropped), (2, 2));
    let keys: Vec<Key> = db
        .scan("t", &ScanOptions::default())
        .unwrap()
        .iter()
        .map(|r| r.key().clone())
        .collect();
    assert_eq!(keys, vec![Key::Int(1001), Key::Int(1003)]);
}

#[test]
fn hostile_budget_values() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let e = db
        .create_table("z", TableOptions::default().disk_budget(0, OnFull::Refuse))
        .expect_err("0 bytes");
    assert!(e.to_string().contains("disk_budget_bytes"), "{e}");
    assert!(db.describe_table("z").is_err(), "nothing created");
    db.create_table("t", TableOptions::default()).unwrap();
    let e = db
        .set_table_budget("t", Some((0, OnFull::DropOldest)))
        .expect_err("0 bytes");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(matches!(
        db.set_table_budget("nope", Some((10, OnFull::Refuse))),
        Err(Error::TableNotFound(_))
    ));
    // The largest budget is no budget in practice.
    db.set_table_budget("t", Some((u64::MAX, OnFull::Refuse)))
        .unwrap();
    for i in 1000..1100 {
        db.insert("t", rec(i)).unwrap();
    }
    // Through the one options schema every binding uses.
    let t = options::table_options(json!({"disk_budget_bytes": 4096, "on_full": "drop_oldest"}))
        .unwrap();
    assert_eq!(
        (t.disk_budget_bytes, t.on_full),
        (Some(4096), OnFull::DropOldest)
    );
    for bad in [
        json!({"disk_budget_bytes": -1}),
        json!({"disk_budget_bytes": "lots"}),
        json!({"disk_budget_bytes": 1e30}),
        json!({"on_full": "explode"}),
    ] {
        let e = options::table_options(bad.clone()).expect_err("hostile");
        let m = e.to_string();
        assert!(
            m.contains("disk_budget_bytes") || m.contains("on_full") || m.contains("refuse"),
            "{bad}: {m}"
        );
    }
}
