//! The local database on both engines: tables, writes, reads, indexes,
//! transactions, the log, errors, persistence.

mod common;

use std::ops::Bound;

use common::{open, snapshot, ENGINES};
use serde_json::json;
use tidelog::*;

#[test]
fn tables_are_created_described_listed_dropped_and_persist() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open(dir.path(), engine);
            let info = db
                .create_table(
                    "readings",
                    TableOptions::default()
                        .primary_key("rid")
                        .index("sensor")
                        .expiration_secs(60),
                )
                .unwrap();
            assert_eq!(info.primary_key, "rid");
            db.create_table("alerts", TableOptions::default()).unwrap();
            let names: Vec<String> = db
                .list_tables()
                .unwrap()
                .into_iter()
                .map(|t| t.name)
                .collect();
            assert_eq!(names, ["alerts", "readings"]);
            db.upsert("alerts", json!({"id": 1})).unwrap();
            db.drop_table("alerts").unwrap();
            assert!(matches!(db.get("alerts", 1), Err(Error::TableNotFound(_))));
            db.create_table("alerts", TableOptions::default()).unwrap();
            assert!(
                db.get("alerts", 1).unwrap().is_none(),
                "{engine:?}: dropped rows must not reappear"
            );
            db.close().unwrap();
        }
        let db = open(dir.path(), engine);
        let info = db.describe_table("readings").unwrap();
        assert_eq!(info.indexes, ["sensor"]);
        assert_eq!(info.expiration, Some(60));
        assert_eq!(db.list_tables().unwrap().len(), 2);
    }
}

#[test]
fn insert_upsert_update_delete_and_times() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path(), engine);
        db.create_table("t", TableOptions::default()).unwrap();
        let c1 = db.insert("t", json!({"id": "a", "x": 1, "y": 1})).unwrap();
        let r = db.get("t", "a").unwrap().unwrap();
        assert_eq!(r.stamp(), c1.stamp);
        assert_eq!(r.created_ms(), r.updated_ms());
        std::thread::sleep(std::time::Duration::from_millis(3));
        db.update("t", json!({"id": "a", "x": 2})).unwrap();
        let v = db.get("t", "a").unwrap().unwrap().to_value();
        assert_eq!(
            (v["x"].clone(), v["y"].clone()),
            (json!(2), json!(1)),
            "update merges"
        );
        assert!(v["__updatedtime__"].as_u64() > v["__createdtime__"].as_u64());
        // Writing back what was read (with the computed times) works.
        db.upsert("t", v.clone()).unwrap();
        db.upsert("t", json!({"id": "a", "z": 3})).unwrap();
        let v2 = db.get("t", "a").unwrap().unwrap().to_value();
        assert_eq!(v2.get("x"), None, "upsert replaces");
        assert_eq!(
            v2["__createdtime__"], v["__createdtime__"],
            "created time survives"
        );
        assert!(db.delete("t", "a").unwrap());
        assert!(db.get("t", "a").unwrap().is_none());
        assert!(!db.delete("t", "a").unwrap());
        db.insert("t", json!({"id": "a", "again": true}))
            .expect("insert after delete");
        assert_eq!(db.count("t").unwrap(), 1);
    }
}

#[test]
fn every_local_error_is_typed_and_changes_nothing() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(
            dir.path(),
            OpenOptions::new("n1").engine(engine).max_record_bytes(200),
        )
        .unwrap();
        db.create_table("t", TableOptions::default().index("k"))
            .unwrap();
        db.insert("t", json!({"id": 1, "k": "x"})).unwrap();
        let before = snapshot(&db);
        let cases: Vec<(&str, Result<CommitInfo>, ErrorKind)> = vec![
            (
                "unknown table",
                db.upsert("nope", json!({"id": 1})),
                ErrorKind::NotFound,
            ),
            (
                "duplicate key",
                db.insert("t", json!({"id": 1})),
                ErrorKind::AlreadyExists,
            ),
            (
                "missing key",
                db.upsert("t", json!({"k": 1})),
                ErrorKind::InvalidInput,
            ),
            (
                "float key",
                db.upsert("t", json!({"id": 1.5})),
                ErrorKind::InvalidInput,
            ),
            (
                "object key",
                db.upsert("t", json!({"id": {"a": 1}})),
                ErrorKind::InvalidInput,
            ),
            (
                "not an object",
                db.upsert("t", json!([1, 2])),
                ErrorKind::InvalidInput,
            ),
            (
                "too large",
                db.upsert("t", json!({"id": 2, "pad": "x".repeat(300)})),
                ErrorKind::InvalidInput,
            ),
            (
                "update missing",
                db.update("t", json!({"id": 9, "k": 1})),
                ErrorKind::NotFound,
            ),
        ];
        for (what, res, kind) in cases {
            let err = res.expect_err(what);
            assert_eq!(err.kind(), kind, "{what}: {err}");
            assert!(!err.to_string().is_empty());
            assert_eq!(snapshot(&db), before, "{what} changed the database");
        }
        assert!(matches!(
            record::parse_object_bytes(b"{\"id\":\"\xc3\x28\"}"),
            Err(Error::InvalidUtf8(_))
        ));
        assert!(matches!(
            record::parse_object("{\"id\":"),
            Err(Error::InvalidJson(_))
        ));
        // A transaction whose second write fails leaves no trace of the first.
        let mut tx = db.transaction();
        tx.upsert("t", json!({"id": 5, "k": "y"})).unwrap();
        tx.insert("t", json!({"id": 1, "k": "z"})).unwrap();
        assert_eq!(tx.commit().unwrap_err().kind(), ErrorKind::AlreadyExists);
        assert_eq!(snapshot(&db), before);
        assert!(matches!(
            db.create_table("t", TableOptions::default()),
            Err(Error::TableExists(_))
        ));
        assert!(db
            .create_table("bad name", TableOptions::default())
            .is_err());
        assert!(db
            .create_table("x", TableOptions::default().index("id"))
            .is_err());
        assert!(db.find_eq("t", "unindexed", &json!(1)).is_err());
        assert_eq!(snapshot(&db), before);
        // A closed database refuses everything, from every clone.
        let clone = db.clone();
        db.close().unwrap();
        db.close().unwrap();
        assert!(matches!(clone.get("t", 1), Err(Error::Closed)));
        assert!(matches!(
            clone.upsert("t", json!({"id": 3})),
            Err(Error::Closed)
        ));
        assert!(matches!(clone.list_tables(), Err(Error::Closed)));
        assert!(matches!(clone.read_log(1, 10), Err(Error::Closed)));
    }
}

#[test]
fn second_open_is_refused_and_engine_and_name_are_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), EngineKind::Fjall);
    let err = Database::open(dir.path(), OpenOptions::new("n1")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Locked, "{err}");
    let id = db.node_id();
    db.close().unwrap();
    let err =
        Database::open(dir.path(), OpenOptions::new("n1").engine(EngineKind::Sled)).unwrap_err();
    assert!(err.to_string().contains("fjall"), "{err}");
    let err = Database::open(dir.path(), OpenOptions::new("other")).unwrap_err();
    assert!(matches!(err, Error::NodeNameMismatch { .. }));
    let db = open(dir.path(), EngineKind::Fjall);
    assert_eq!(db.node_id(), id, "node id is stable");
    assert!(Database::open(dir.path().join("x"), OpenOptions::new("bad_name")).is_err());
}

#[test]
fn second_open_from_another_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _db = open(dir.path(), EngineKind::Fjall);
    let out = common::run_child("try-open", &[dir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Locked"),
        "child said: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn scans_finds_and_counts() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path(), engine);
        db.create_table("t", TableOptions::default().index("temp").index("tags"))
            .unwrap();
        for i in -5i64..15 {
            db.upsert(
                "t",
                json!({"id": i, "temp": i * 10, "tags": [format!("g{}", i.rem_euclid(3)), "all"]}),
            )
            .unwrap();
        }
        db.create_table("s", TableOptions::default()).unwrap();
        for k in ["b", "a", "c", ""] {
            db.upsert("s", json!({"id": k})).unwrap();
        }
        let keys = |rs: Vec<Record>| rs.iter().map(|r| r.key().clone()).collect::<Vec<_>>();
        let all = db.scan("t", &ScanOptions::default()).unwrap();
        assert_eq!(keys(all), (-5..15).map(Key::Int).collect::<Vec<_>>());
        let some = db
            .scan(
                "t",
                &ScanOptions {
                    start: Bound::Excluded(Key::Int(0)),
                    end: Bound::Included(Key::Int(4)),
                    reverse: true,
                    limit: Some(3),
                },
            )
            .unwrap();
        assert_eq!(keys(some), [4, 3, 2].map(Key::Int));
        let strs = db.scan("s", &ScanOptions::default()).unwrap();
        assert_eq!(keys(strs), ["", "a", "b", "c"].map(Key::from));
        let hot = db
            .find(
                "t",
                "temp",
                Bound::Included(&json!(100)),
                Bound::Unbounded,
                None,
            )
            .unwrap();
        assert_eq!(keys(hot), (10..15).map(Key::Int).collect::<Vec<_>>());
        let neg = db
            .find(
                "t",
                "temp",
                Bound::Unbounded,
                Bound::Excluded(&json!(-20)),
                None,
            )
            .unwrap();
        assert_eq!(keys(neg), [-5, -4, -3].map(Key::Int));
        assert_eq!(db.find_eq("t", "temp", &json!(30.0)).unwrap().len(), 1);
        assert_eq!(db.find_eq("t", "tags", &json!("g0")).unwrap().len(), 6);
        assert_eq!(
            db.find_eq("t", "tags", &json!("all")).unwrap().len(),
            20,
            "array elements deduplicated per record"
        );
        assert_eq!(
            db.find(
                "t",
                "id",
                Bound::Included(&json!(13)),
                Bound::Unbounded,
                None
            )
            .unwrap()
            .len(),
            2
        );
        assert_eq!(db.count("t").unwrap(), 20);
        // Indexes follow updates and deletes exactly.
        db.update("t", json!({"id": 0, "temp": 999})).unwrap();
        db.delete("t", 1).unwrap();
        assert!(db.find_eq("t", "temp", &json!(0)).unwrap().is_empty());
        assert_eq!(
            keys(db.find_eq("t", "temp", &json!(999)).unwrap()),
            [Key::Int(0)]
        );
        assert!(db.find_eq("t", "temp", &json!(10)).unwrap().is_empty());
        assert_eq!(db.find_eq("t", "tags", &json!("all")).unwrap().len(), 19);
        assert_eq!(db.count("t").unwrap(), 19);
        let many = db
            .get_many("t", &[Key::Int(0), Key::Int(1), Key::Int(2)])
            .unwrap();
        assert_eq!(
            many.iter().map(Option::is_some).collect::<Vec<_>>(),
            [true, false, true]
        );
    }
}

#[test]
fn a_transaction_spans_tables_with_one_stamp_and_one_log_entry() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path(), engine);
        db.create_table("a", TableOptions::default()).unwrap();
        db.create_table("b", TableOptions::default().primary_key("name"))
            .unwrap();
        let mut tx = db.transaction();
        tx.upsert("a", json!({"id": 1, "v": 1})).unwrap();
        tx.upsert("b", json!({"name": "x"})).unwrap();
        tx.update("a", json!({"id": 1, "w": 2})).unwrap();
        tx.delete("b", "x").unwrap();
        tx.insert("b", json!({"name": "y"})).unwrap();
        let info = tx.commit().unwrap();
        let a = db.get("a", 1).unwrap().unwrap();
        assert_eq!(
            a.to_value()["w"],
            json!(2),
            "later writes see earlier ones in the same transaction"
        );
        assert_eq!(a.stamp(), info.stamp);
        assert_eq!(db.get("b", "y").unwrap().unwrap().stamp(), info.stamp);
        assert!(db.get("b", "x").unwrap().is_none());
        let log = db.read_log(info.seq, 10).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].stamp, info.stamp);
        assert_eq!(log[0].origin(), db.node_id());
        assert_eq!(log[0].writes.len(), 5);
        // An uncommitted (dropped) transaction leaves nothing.
        let mut tx = db.transaction();
        tx.upsert("a", json!({"id": 2})).unwrap();
        drop(tx);
        assert!(db.get("a", 2).unwrap().is_none());
        assert_eq!(db.log_bounds().unwrap().last, info.seq);
    }
}

#[test]
fn the_log_reads_from_a_sequence_or_a_time_and_survives_reopen() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let (mid_time, last_stamp) = {
            let db = open(dir.path(), engine);
            db.create_table("t", TableOptions::default()).unwrap();
            for i in 0..5 {
                db.upsert("t", json!({"id": i})).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
            let mid = hlc::wall_millis();
            std::thread::sleep(std::time::Duration::from_millis(2));
            let mut last = Stamp::default();
            for i in 5..8 {
                last = db.upsert("t", json!({"id": i})).unwrap().stamp;
            }
            db.close().unwrap();
            (mid, last)
        };
        let db = open(dir.path(), engine);
        let b = db.log_bounds().unwrap();
        assert_eq!((b.first, b.last), (1, 8));
        assert!(b.bytes > 8 * 20);
        let log = db.read_log(1, 100).unwrap();
        assert_eq!(
            log.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=8).collect::<Vec<_>>()
        );
        assert!(log.windows(2).all(|w| w[0].local_time < w[1].local_time));
        assert_eq!(db.read_log(7, 100).unwrap().len(), 2);
        assert_eq!(db.read_log(3, 2).unwrap().len(), 2);
        let since = db.read_log_since(mid_time, 100).unwrap();
        assert_eq!(since.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7, 8]);
        // Stamps keep growing after a restart.
        let next = db.upsert("t", json!({"id": 9})).unwrap();
        assert!(next.stamp > last_stamp);
        assert_eq!(next.seq, 9);
    }
}

#[test]
fn remote_writes_follow_last_writer_wins_with_tombstones() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path(), engine);
        db.create_table("t", TableOptions::default().index("v"))
            .unwrap();
        let now = hlc::wall_millis() << 16;
        let put = |v: i64| WriteOp::Put {
            json: json!({"id": 1, "v": v}).to_string(),
            created: now,
        };
        let txn = |time: u64, node: u64, op: WriteOp| RemoteTxn {
            stamp: Stamp { time, node },
            writes: vec![LogWrite {
                table: "t".into(),
                key: Key::Int(1),
                op,
            }],
        };
        let out = db
            .apply_remote(&[txn(now + 10, 7, put(1))], Some(("peer-a", b"c1")))
            .unwrap();
        assert!(matches!(out[0], RemoteOutcome::Applied { applied: 1, .. }));
        // Older, equal, and older-delete all lose.
        let out = db
            .apply_remote(
                &[
                    txn(now + 5, 7, put(2)),
                    txn(now + 10, 7, put(3)),
                    txn(now + 9, 9, WriteOp::Delete),
                ],
                None,
            )
            .unwrap();
        assert!(
            out.iter().all(|o| matches!(
                o,
                RemoteOutcome::Applied {
                    applied: 0,
                    superseded: 1,
                    ..
                }
            )),
            "{out:?}"
        );
        assert_eq!(db.get("t", 1).unwrap().unwrap().to_value()["v"], json!(1));
        // Same time, higher node id wins.
        db.apply_remote(&[txn(now + 10, 8, put(4))], None).unwrap();
        assert_eq!(db.get("t", 1).unwrap().unwrap().to_value()["v"], json!(4));
        // A newer delete wins, and its tombstone beats an older put later.
        db.apply_remote(&[txn(now + 20, 1, WriteOp::Delete)], None)
            .unwrap();
        db.apply_remote(&[txn(now + 15, 9, put(5))], None).unwrap();
        assert!(db.get("t", 1).unwrap().is_none());
        assert!(
            db.find_eq("t", "v", &json!(4)).unwrap().is_empty(),
            "index follows remote deletes"
        );
        // A local write after seeing a remote one always wins over it.
        let far = now + (30_000 << 16);
        db.apply_remote(&[txn(far, u64::MAX, put(6))], None)
            .unwrap();
        let local = db.upsert("t", json!({"id": 1, "v": 7})).unwrap();
        assert!(
            local.stamp
                > Stamp {
                    time: far,
                    node: u64::MAX
                }
        );
        // A stamp an hour ahead is refused and applies nothing.
        let out = db
            .apply_remote(&[txn(now + (3_600_000 << 16), 7, put(8))], None)
            .unwrap();
        assert!(matches!(
            &out[0],
            RemoteOutcome::Refused(Error::ClockSkew { .. })
        ));
        assert_eq!(db.get("t", 1).unwrap().unwrap().to_value()["v"], json!(7));
        assert_eq!(db.cursor("peer-a").unwrap().as_deref(), Some(&b"c1"[..]));
        // Applied remote writes are logged with origin and original stamp.
        let log = db.read_log(1, 100).unwrap();
        let remote: Vec<_> = log.iter().filter(|e| e.origin() != db.node_id()).collect();
        assert_eq!(
            remote[0].stamp,
            Stamp {
                time: now + 10,
                node: 7
            }
        );
        assert!(remote.iter().all(|e| e.writes.len() == 1));
        // Writes to tables this node lacks are counted, not applied.
        let missing = RemoteTxn {
            stamp: Stamp {
                time: now + 40,
                node: 7,
            },
            writes: vec![LogWrite {
                table: "other".into(),
                key: Key::Int(1),
                op: put(1),
            }],
        };
        let out = db.apply_remote(&[missing], None).unwrap();
        assert!(matches!(
            out[0],
            RemoteOutcome::Applied {
                applied: 0,
                missing_table: 1,
                ..
            }
        ));
    }
}

#[test]
fn expired_records_are_evicted_without_logging() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(
            dir.path(),
            OpenOptions::new("n1")
                .engine(engine)
                .expiry_interval(std::time::Duration::from_millis(50)),
        )
        .unwrap();
        db.create_table(
            "sensor_data",
            TableOptions::default().index("sensor").expiration_secs(1),
        )
        .unwrap();
        db.create_table("keep", TableOptions::default()).unwrap();
        for i in 0..50 {
            db.upsert("sensor_data", json!({"id": i, "sensor": "s1"}))
                .unwrap();
        }
        db.upsert("keep", json!({"id": 1})).unwrap();
        let log_before = db.log_bounds().unwrap();
        assert_eq!(db.count("sensor_data").unwrap(), 50);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while db.count("sensor_data").unwrap() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{engine:?}: records never expired"
            );
            // Keep one record fresh: it must survive while others go.
            db.upsert("sensor_data", json!({"id": 1000, "sensor": "s2"}))
                .unwrap();
            if db.count("sensor_data").unwrap() == 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(db.get("sensor_data", 1000).unwrap().is_some());
        assert!(
            db.find_eq("sensor_data", "sensor", &json!("s1"))
                .unwrap()
                .is_empty(),
            "index entries evicted too"
        );
        assert_eq!(db.count("keep").unwrap(), 1);
        let log_after = db.log_bounds().unwrap();
        let evictions_logged = db
            .read_log(log_before.last + 1, 10_000)
            .unwrap()
            .iter()
            .flat_map(|e| e.writes.iter())
            .filter(|w| matches!(w.op.inner(), WriteOp::Delete))
            .count();
        assert_eq!(evictions_logged, 0);
        assert!(log_after.last >= log_before.last);
    }
}

#[test]
fn sync_durability_and_flush() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(
            dir.path(),
            OpenOptions::new("n1")
                .engine(engine)
                .durability(Durability::Sync),
        )
        .unwrap();
        db.create_table("t", TableOptions::default()).unwrap();
        db.upsert("t", json!({"id": 1})).unwrap();
        db.flush().unwrap();
        assert!(db.disk_bytes().unwrap() > 0);
        db.close().unwrap();
        let db = open(dir.path(), engine);
        assert!(db.get("t", 1).unwrap().is_some());
    }
}

/// Entry point for child processes started by the tests above; skipped in a
/// normal run (it is not a test of its own).
#[test]
#[ignore = "child process entry point, started by other tests"]
fn child_process() {
    let Some((role, args)) = common::child_role() else {
        return;
    };
    match role.as_str() {
        "try-open" => match Database::open(&args[0], OpenOptions::new("n1")) {
            Ok(_) => println!("opened"),
            Err(e) => println!("{:?}: {e}", e.kind()),
        },
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn finds_stay_exact_for_integers_beyond_f64_precision() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), EngineKind::Fjall);
    db.create_table("t", TableOptions::default().index("n"))
        .unwrap();
    // 2^53 + 1 and 2^53 share one f64; the index must still tell them apart.
    db.upsert("t", json!({"id": 1, "n": 9_007_199_254_740_993i64}))
        .unwrap();
    db.upsert("t", json!({"id": 2, "n": 9_007_199_254_740_992i64}))
        .unwrap();
    let hits = db
        .find_eq("t", "n", &json!(9_007_199_254_740_993i64))
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].key(), &Key::Int(1));
    let above = db
        .find(
            "t",
            "n",
            Bound::Excluded(&json!(9_007_199_254_740_992i64)),
            Bound::Unbounded,
            None,
        )
        .unwrap();
    assert_eq!(above.len(), 1);
}

/// A peer's record is stored as it arrived; JSON whitespace around the
/// object must not cost it its contents on the way out.
#[test]
fn a_remote_record_with_surrounding_whitespace_reads_back_whole() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path(), engine);
        for opts in [TableOptions::default(), TableOptions::default().index("v")] {
            let table = if opts.indexes.is_empty() {
                "plain"
            } else {
                "indexed"
            };
            db.create_table(table, opts).unwrap();
            let now = hlc::wall_millis() << 16;
            let txn = RemoteTxn {
                stamp: Stamp { time: now, node: 7 },
                writes: vec![LogWrite {
                    table: table.into(),
                    key: Key::Int(9),
                    op: WriteOp::Put {
                        json: " \n {\"id\": 9, \"v\": \"x\"} \t".into(),
                        created: now,
                    },
                }],
            };
            let out = db.apply_remote(&[txn], None).unwrap();
            assert!(
                matches!(out[0], RemoteOutcome::Applied { applied: 1, .. }),
                "{out:?}"
            );
            let r = db.get(table, 9).unwrap().unwrap();
            let text: serde_json::Value = serde_json::from_str(&r.to_json_string()).unwrap();
            assert_eq!(text["v"], "x", "{engine:?} {table}: {text}");
            assert_eq!(text, r.to_value());
        }
    }
}

/// A double sent as JSON text is stored as the same double: the text
/// JavaScript's JSON.stringify prints for it must parse back to it
/// exactly (serde_json's `float_roundtrip`). The stored text is checked
/// with Rust's own correctly rounded conversion: reading it back through
/// serde_json could round wrong a second time and hide the first error
/// (without the feature, 123456789012345680000 was stored one bit low).
#[test]
fn doubles_in_json_text_are_stored_bit_for_bit() {
    let texts = [
        "123456789012345680000",
        "0.30000000000000004",
        "5e-324",
        "2.2250738585072014e-308",
        "1.7976931348623157e+308",
        "9007199254740993",
        "-0.00012345678901234567",
        "1e+21",
        "7.291122019556398e-304",
    ];
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path(), engine);
        db.create_table("d", TableOptions::default()).unwrap();
        for (i, text) in texts.iter().enumerate() {
            let want: f64 = text.parse().unwrap();
            let json = format!("{{\"id\":{i},\"x\":{text}}}");
            let record = tidelog::record::parse_object(&json).unwrap();
            db.upsert("d", serde_json::Value::Object(record)).unwrap();
            let got = db.get("d", i as i64).unwrap().unwrap();
            let body = got.body_json();
            let stored = body
                .split("\"x\":")
                .nth(1)
                .and_then(|rest| rest.split(['}', ',']).next())
                .unwrap_or_else(|| panic!("no x in {body}"));
            let back: f64 = stored.parse().unwrap();
            assert_eq!(
                back.to_bits(),
                want.to_bits(),
                "{engine:?}: {text} was stored as {stored}"
            );
        }
    }
}
