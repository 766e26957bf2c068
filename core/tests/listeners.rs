//! Change listeners: local and remote changes with their origin, commit
//! order, writes from inside a listener, contained panics, clean close.

mod common;

use std::sync::mpsc::channel;
use std::time::Duration;

use common::{open, ENGINES};
use serde_json::json;
use tidelog::*;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn listeners_see_local_and_remote_changes_in_commit_order_with_origin() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path(), engine);
        db.create_table("t", TableOptions::default()).unwrap();
        db.create_table("other", TableOptions::default()).unwrap();
        let (tx, rx) = channel();
        let id = db
            .on_change("t", move |e: &ChangeEvent| {
                let _ = tx.send(e.clone());
            })
            .unwrap();
        for i in 0..100 {
            db.upsert("t", json!({"id": i})).unwrap();
        }
        db.upsert("other", json!({"id": 1})).unwrap();
        let mut tx2 = db.transaction();
        tx2.upsert("t", json!({"id": 500})).unwrap();
        tx2.upsert("other", json!({"id": 2})).unwrap();
        tx2.delete("t", 0).unwrap();
        tx2.commit().unwrap();
        let remote = RemoteTxn {
            stamp: Stamp {
                time: hlc::wall_millis() << 16,
                node: 42,
            },
            writes: vec![LogWrite {
                table: "t".into(),
                key: Key::Int(7),
                op: WriteOp::Delete,
            }],
        };
        db.apply_remote(&[remote], None).unwrap();
        let mut seqs = vec![];
        for i in 0..100 {
            let e = rx.recv_timeout(WAIT).expect("event");
            assert!(e.local && e.origin() == db.node_id() && e.table == "t");
            assert_eq!(e.changes[0].key, Key::Int(i));
            assert!(e.changes[0].record.as_ref().unwrap().to_value()["__updatedtime__"].is_u64());
            seqs.push(e.seq);
        }
        let e = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(
            e.changes.len(),
            2,
            "only this table's changes of the transaction"
        );
        assert!(e.changes[1].record.is_none(), "a delete has no record");
        let e = rx.recv_timeout(WAIT).unwrap();
        assert!(!e.local);
        assert_eq!(e.origin(), 42);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        assert!(db.remove_listener(id));
        assert!(!db.remove_listener(id));
        db.upsert("t", json!({"id": 1000})).unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "removed listener is not called"
        );
    }
}

#[test]
fn a_listener_may_write_to_the_database_without_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), EngineKind::Fjall);
    db.create_table("readings", TableOptions::default())
        .unwrap();
    db.create_table("alerts", TableOptions::default()).unwrap();
    let inner = db.clone();
    db.on_change("readings", move |e: &ChangeEvent| {
        for c in &e.changes {
            let Some(r) = &c.record else { continue };
            let v = r.to_value();
            if v["value"].as_f64().unwrap_or(0.0) > 50.0 {
                // Writes to another table, and back into the same table.
                inner
                    .upsert(
                        "alerts",
                        json!({"id": v["id"].clone(), "value": v["value"].clone()}),
                    )
                    .unwrap();
                inner
                    .update(
                        "readings",
                        json!({"id": v["id"].clone(), "value": 0, "alerted": true}),
                    )
                    .unwrap();
                // Reading inside the callback works too.
                assert!(inner.get("alerts", c.key.clone()).unwrap().is_some());
            }
        }
    })
    .unwrap();
    let (done_tx, done_rx) = channel();
    db.on_change("alerts", move |_| {
        let _ = done_tx.send(());
    })
    .unwrap();
    for i in 0..20 {
        db.upsert("readings", json!({"id": i, "value": i * 5}))
            .unwrap();
    }
    for _ in 0..9 {
        done_rx
            .recv_timeout(WAIT)
            .expect("alert written from inside a listener");
    }
    assert_eq!(db.count("alerts").unwrap(), 9);
    let r = db.get("readings", 19).unwrap().unwrap().to_value();
    assert_eq!(r["alerted"], json!(true));
    db.close().unwrap();
}

#[test]
fn a_panicking_listener_is_contained_and_others_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), EngineKind::Fjall);
    db.create_table("t", TableOptions::default()).unwrap();
    db.on_change("t", |_| panic!("listener bug")).unwrap();
    let (tx, rx) = channel();
    db.on_change("t", move |e| {
        let _ = tx.send(e.seq);
    })
    .unwrap();
    db.upsert("t", json!({"id": 1})).unwrap();
    db.upsert("t", json!({"id": 2})).unwrap();
    assert!(rx.recv_timeout(WAIT).is_ok());
    assert!(rx.recv_timeout(WAIT).is_ok());
    assert_eq!(db.listener_panics(), 2);
    assert!(db.get("t", 2).unwrap().is_some());
}

#[test]
fn closing_from_inside_a_listener_does_not_hang_and_close_stops_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), EngineKind::Fjall);
    db.create_table("t", TableOptions::default()).unwrap();
    let inner = db.clone();
    let (tx, rx) = channel();
    db.on_change("t", move |_| {
        let _ = tx.send(inner.close().is_ok());
    })
    .unwrap();
    db.upsert("t", json!({"id": 1})).unwrap();
    assert_eq!(rx.recv_timeout(WAIT), Ok(true));
    assert!(matches!(
        db.upsert("t", json!({"id": 2})),
        Err(Error::Closed)
    ));
    // The directory is free again: a new handle opens it.
    let reopened = open(dir.path(), EngineKind::Fjall);
    assert!(reopened.get("t", 1).unwrap().is_some());
}
