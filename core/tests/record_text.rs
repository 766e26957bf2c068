//! Records written as JSON text (`upsert_json`, `insert_json`, what the C
//! ABI and the Node binding call) on both engines: stored as given, indexed,
//! and refused exactly as the `Value` calls refuse them.

mod common;

use std::ops::Bound;

use common::{scratch_dir, ENGINES};
use serde_json::json;
use tidelog::*;

fn open(dir: &std::path::Path, engine: EngineKind) -> Database {
    let opts = OpenOptions::new("n1").engine(engine).max_record_bytes(200);
    Database::open(dir, opts).expect("open")
}

fn keys_with(db: &Database, sensor: &str) -> Vec<Key> {
    let v = json!(sensor);
    db.find(
        "r",
        "sensor",
        Bound::Included(&v),
        Bound::Included(&v),
        None,
    )
    .unwrap()
    .iter()
    .map(|r| r.key().clone())
    .collect()
}

#[test]
fn text_is_stored_as_given_and_indexed() {
    for engine in ENGINES {
        let dir = scratch_dir();
        let db = open(dir.path(), engine);
        db.create_table("r", TableOptions::default().index("sensor"))
            .unwrap();
        let text = r#"{"id":1,"sensor":"a","v":1e2,"n":{"z":1,"a":[true]}}"#;
        db.upsert_json("r", text).unwrap();
        assert_eq!(db.get("r", 1).unwrap().unwrap().body_json(), text);
        assert_eq!(keys_with(&db, "a"), [Key::Int(1)]);

        // Replacing it moves its index entry; the computed times a record
        // read back carries are dropped, as `upsert` drops them.
        let read_back = db.get("r", 1).unwrap().unwrap().to_json_string();
        let moved = read_back.replace(r#""sensor":"a""#, r#""sensor":"b""#);
        db.upsert_json("r", &moved).unwrap();
        assert_eq!(
            db.get("r", 1).unwrap().unwrap().body_json(),
            text.replace(r#""a","v""#, r#""b","v""#)
        );
        assert_eq!(keys_with(&db, "a"), []);
        assert_eq!(keys_with(&db, "b"), [Key::Int(1)]);

        // A name given twice: the last one counts, as in a parsed object.
        db.upsert_json("r", r#"{"id":"k","sensor":"a","sensor":"c"}"#)
            .unwrap();
        assert_eq!(keys_with(&db, "c"), [Key::Str("k".into())]);
        assert_eq!(
            db.get("r", "k").unwrap().unwrap().body_json(),
            r#"{"id":"k","sensor":"c"}"#
        );

        // `update` merges into a record written as text.
        db.update("r", json!({"id": 1, "v": 2})).unwrap();
        let v = db.get("r", 1).unwrap().unwrap().to_value();
        assert_eq!(
            (v["v"].clone(), v["sensor"].clone()),
            (json!(2), json!("b"))
        );
    }
}

#[test]
fn insert_json_and_transactions() {
    for engine in ENGINES {
        let dir = scratch_dir();
        let db = open(dir.path(), engine);
        db.create_table("r", TableOptions::default().index("sensor"))
            .unwrap();
        db.insert_json("r", r#"{"id":1,"sensor":"a"}"#).unwrap();
        let again = db.insert_json("r", r#"{"id":1,"sensor":"b"}"#);
        assert!(
            matches!(again, Err(Error::DuplicateKey { .. })),
            "{again:?}"
        );
        assert_eq!(keys_with(&db, "a"), [Key::Int(1)]);

        // Text and values in one transaction: one stamp, one log entry.
        let mut tx = db.transaction();
        tx.upsert_json("r", r#"{"id":2,"sensor":"a"}"#).unwrap();
        tx.upsert("r", json!({"id": 3, "sensor": "a"})).unwrap();
        tx.insert_json("r", r#"{"id":4,"sensor":"a"}"#).unwrap();
        let info = tx.commit().unwrap();
        let entries = db.read_log(info.seq, 10).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].writes.len(), 3);
        let got = keys_with(&db, "a");
        assert_eq!(got, [Key::Int(1), Key::Int(2), Key::Int(3), Key::Int(4)]);
        for k in 2..=4 {
            assert_eq!(db.get("r", k).unwrap().unwrap().stamp(), info.stamp);
        }
    }
}

#[test]
fn bad_text_is_refused_as_a_bad_value_is() {
    let dir = scratch_dir();
    let db = open(dir.path(), EngineKind::Fjall);
    db.create_table("r", TableOptions::default()).unwrap();
    let long = format!(r#"{{"id":1,"s":"{}"}}"#, "x".repeat(300));
    type Expected = fn(&Error) -> bool;
    let cases: [(&str, Expected); 8] = [
        ("[1]", |e| matches!(e, Error::NotAnObject(_))),
        ("{", |e| matches!(e, Error::InvalidJson(_))),
        (r#"{"id":1} x"#, |e| matches!(e, Error::InvalidJson(_))),
        (r#"{"id":1,"n":1e400}"#, |e| {
            matches!(e, Error::InvalidJson(_))
        }),
        (r#"{"n":1}"#, |e| {
            matches!(e, Error::MissingPrimaryKey { .. })
        }),
        (r#"{"id":1.5}"#, |e| {
            matches!(e, Error::InvalidPrimaryKey { .. })
        }),
        (&long, |e| matches!(e, Error::RecordTooLarge { .. })),
        ("{}", |e| matches!(e, Error::MissingPrimaryKey { .. })),
    ];
    for (text, expected) in cases {
        let e = db.upsert_json("r", text).unwrap_err();
        assert!(expected(&e), "{text}: {e:?}");
        // Word for word what the `Value` way says, where there is a value.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            assert_eq!(db.upsert("r", v).unwrap_err().to_string(), e.to_string());
        }
        let e = db.insert_json("r", text).unwrap_err();
        assert!(expected(&e), "insert {text}: {e:?}");
    }
    let e = db.upsert_json("nope", r#"{"id":1}"#).unwrap_err();
    assert!(matches!(e, Error::TableNotFound(_)), "{e:?}");
    assert_eq!(db.count("r").unwrap(), 0);
    assert_eq!(db.log_bounds().unwrap().last, 0);
}
