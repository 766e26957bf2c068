//! The PostgreSQL sink against a real private server: batches land with
//! their tombstones and stamps, any delivery order of any split of a
//! history ends at the last-writer-wins state, a replay changes nothing,
//! and the driver gets through a killed server, a down server and a log
//! trimmed past its resume point.
#![cfg(feature = "postgres")]

mod common;
mod pg_common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pg_common::Postgres;
use proptest::prelude::*;
use serde_json::{json, Value};
use tidelog::cloud::driver::{self, DriverConfig, SinkHandle};
use tidelog::cloud::postgres::{PostgresSink, PostgresSinkConfig, PostgresTableConfig};
use tidelog::cloud::sink::{Sink, SinkBatch, SinkRow};
use tidelog::{Database, Key, OpenOptions, Retention, Stamp, TableOptions};

const HIGH: u64 = 1 << 63;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn config(pg: &Postgres, name: &str, tables: &[(&str, Option<&str>)]) -> PostgresSinkConfig {
    let mut c = PostgresSinkConfig::new(pg.conn_string(), &[]);
    c.name = name.into();
    c.tables = tables
        .iter()
        .map(|(t, p)| PostgresTableConfig {
            name: (*t).into(),
            pg_table: p.map(str::to_string),
        })
        .collect();
    c
}

async fn client(pg: &Postgres) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&pg.conn_string(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    c
}

/// One PostgreSQL row as the sink wrote it.
#[derive(Debug, Clone, PartialEq)]
struct PgRow {
    record: Option<Value>,
    deleted: bool,
    stamp: Stamp,
}

/// The PostgreSQL table by key, and how many rows it has in all (a
/// duplicate key would make the two differ).
async fn pg_rows(c: &tokio_postgres::Client, table: &str) -> (BTreeMap<Key, PgRow>, usize) {
    let rows = c
        .query(
            &format!("SELECT key, record, deleted, stamp_time, stamp_node::text FROM {table}"),
            &[],
        )
        .await
        .expect("read table");
    let n = rows.len();
    let mut out = BTreeMap::new();
    for r in rows {
        let key: Value = r.get(0);
        let node: String = r.get(4);
        out.insert(
            Key::from_json(&key).expect("key is a string or integer"),
            PgRow {
                record: r.get(1),
                deleted: r.get(2),
                stamp: Stamp {
                    time: r.get::<_, i64>(3) as u64,
                    node: node.parse().expect("node id"),
                },
            },
        );
    }
    (out, n)
}

async fn digest(c: &tokio_postgres::Client) -> String {
    c.query_one(
        "SELECT md5(string_agg(key::text || coalesce(record::text, '-') || deleted || stamp_time || stamp_node, ',' ORDER BY key)) FROM alerts",
        &[],
    )
    .await
    .unwrap()
    .get::<_, String>(0)
}

async fn progress(c: &tokio_postgres::Client, sink: &str) -> Option<i64> {
    c.query_opt(
        "SELECT seq FROM tidelog_sink_progress WHERE sink = $1",
        &[&sink],
    )
    .await
    .expect("read progress")
    .map(|r| r.get(0))
}

fn row(table: &str, key: Key, record: Option<Value>, time: u64, node: u64) -> SinkRow {
    SinkRow {
        table: table.into(),
        key,
        record: record.map(|r| r.to_string()),
        stamp: Stamp { time, node },
    }
}

#[test]
fn batches_land_with_tombstones_and_stamps_and_only_newer_stamps_replace() {
    let pg = Postgres::start();
    pg.query("CREATE SCHEMA fleet");
    rt().block_on(async {
        let c = client(&pg).await;
        let mut sink = PostgresSink::new(
            config(
                &pg,
                "a",
                &[("alerts", None), ("odd", Some("fleet.we\"ird"))],
            ),
            "hub-1",
        )
        .unwrap();
        assert_eq!(sink.resume_point().await.unwrap(), 0);
        // A record text with every character COPY's text format escapes.
        let hostile = json!({"id": "a", "v": "tab\there\nnl \\ back\r é ☃ \"q\" |"});
        sink.apply(&SinkBatch {
            after_seq: 0,
            through_seq: 3,
            rows: vec![
                row(
                    "alerts",
                    Key::from("a"),
                    Some(hostile.clone()),
                    100,
                    HIGH + 7,
                ),
                row("alerts", Key::Int(7), Some(json!({"id": 7})), 100, 3),
                row("alerts", Key::from("b"), None, 50, 1),
                row("odd", Key::Int(-1), Some(json!({"id": -1})), 1, u64::MAX),
                // A table the sink does not carry is left out.
                row("other", Key::Int(1), Some(json!({"id": 1})), 1, 1),
            ],
        })
        .await
        .unwrap();
        let (rows, n) = pg_rows(&c, "alerts").await;
        assert_eq!(n, 3);
        assert_eq!(
            rows[&Key::from("a")],
            PgRow {
                record: Some(hostile.clone()),
                deleted: false,
                stamp: Stamp {
                    time: 100,
                    node: HIGH + 7
                }
            }
        );
        assert_eq!(
            rows[&Key::from("b")],
            PgRow {
                record: None,
                deleted: true,
                stamp: Stamp { time: 50, node: 1 }
            }
        );
        assert!(rows.contains_key(&Key::Int(7)));
        let (odd, _) = pg_rows(&c, "fleet.\"we\"\"ird\"").await;
        assert_eq!(odd[&Key::Int(-1)].stamp.node, u64::MAX);

        sink.apply(&SinkBatch {
            after_seq: 3,
            through_seq: 6,
            rows: vec![
                // Node ids around 2^63 order as unsigned: HIGH + 6 < HIGH + 7.
                row(
                    "alerts",
                    Key::from("a"),
                    Some(json!({"id": "a", "v": 0})),
                    100,
                    HIGH + 6,
                ),
                // An older time loses whatever its node.
                row(
                    "alerts",
                    Key::Int(7),
                    Some(json!({"id": 7, "v": 0})),
                    99,
                    u64::MAX,
                ),
                // An equal stamp is the same write: nothing changes.
                row(
                    "alerts",
                    Key::Int(7),
                    Some(json!({"id": 7, "v": 1})),
                    100,
                    3,
                ),
                // A newer delete wins, and an older write cannot resurrect.
                row("alerts", Key::from("a"), None, 100, u64::MAX),
                row(
                    "alerts",
                    Key::from("b"),
                    Some(json!({"id": "b"})),
                    49,
                    u64::MAX,
                ),
            ],
        })
        .await
        .unwrap();
        let (rows, n) = pg_rows(&c, "alerts").await;
        assert_eq!(n, 3);
        assert_eq!(
            rows[&Key::from("a")],
            PgRow {
                record: None,
                deleted: true,
                stamp: Stamp {
                    time: 100,
                    node: u64::MAX
                }
            }
        );
        assert_eq!(rows[&Key::Int(7)].record, Some(json!({"id": 7})));
        assert!(rows[&Key::from("b")].deleted);
        assert_eq!(progress(&c, "a").await, Some(6));

        // The progress row never moves back, and a new sink resumes there.
        sink.apply(&SinkBatch {
            after_seq: 0,
            through_seq: 2,
            rows: vec![],
        })
        .await
        .unwrap();
        assert_eq!(progress(&c, "a").await, Some(6));
        let mut again = PostgresSink::new(config(&pg, "a", &[("alerts", None)]), "hub-1").unwrap();
        assert_eq!(again.resume_point().await.unwrap(), 6);
        // Another hub keeps its own resume point.
        let mut other = PostgresSink::new(config(&pg, "a", &[("alerts", None)]), "hub-2").unwrap();
        assert_eq!(other.resume_point().await.unwrap(), 0);

        // A stamp time past bigint is refused, not wrapped.
        let e = sink
            .apply(&SinkBatch {
                after_seq: 6,
                through_seq: 7,
                rows: vec![row("alerts", Key::Int(1), None, u64::MAX, 1)],
            })
            .await
            .unwrap_err();
        assert!(!e.transient && e.message.contains("bigint"), "{e}");
        assert_eq!(progress(&c, "a").await, Some(6));
    });
}

#[test]
fn a_table_of_another_shape_or_an_unreachable_server_is_a_typed_error() {
    let pg = Postgres::start();
    pg.query(
        "CREATE TABLE wrong_type (key jsonb PRIMARY KEY, record jsonb, deleted boolean, \
         stamp_time bigint, stamp_node bigint)",
    );
    pg.query("CREATE TABLE missing (key jsonb PRIMARY KEY, record jsonb)");
    rt().block_on(async {
        let mut s = PostgresSink::new(config(&pg, "w", &[("t", Some("wrong_type"))]), "h").unwrap();
        let e = s.resume_point().await.unwrap_err();
        assert!(!e.transient, "{e}");
        assert!(
            e.message.contains("stamp_node") && e.message.contains("numeric(20,0)"),
            "{e}"
        );

        let mut s = PostgresSink::new(config(&pg, "m", &[("t", Some("missing"))]), "h").unwrap();
        let e = s.resume_point().await.unwrap_err();
        assert!(
            !e.transient && e.message.contains("no column `deleted`"),
            "{e}"
        );

        let mut c = config(&pg, "x", &[("t", None)]);
        c.url = format!("host=127.0.0.1 port={} user=tidelog dbname=nope", pg.port);
        let e = PostgresSink::new(c, "h")
            .unwrap()
            .resume_point()
            .await
            .unwrap_err();
        assert!(
            !e.transient && e.message.contains("create the database"),
            "{e}"
        );

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let mut c = config(&pg, "x", &[("t", None)]);
        c.url = format!("host=127.0.0.1 port={port} user=tidelog dbname=tidelog");
        let e = PostgresSink::new(c, "h")
            .unwrap()
            .resume_point()
            .await
            .unwrap_err();
        assert!(e.transient, "{e}");

        let bad = config(&pg, "x", &[("t", Some("a.b.c"))]);
        assert!(PostgresSink::new(bad, "h").is_err());
    });
}

/// A write of the random histories: the content follows from the key and
/// the stamp, because an equal stamp is the same write.
#[derive(Debug, Clone)]
struct Write {
    key: Key,
    time: u64,
    node: u64,
}

impl Write {
    fn deleted(&self) -> bool {
        (self.time * 7 + self.node % 5).is_multiple_of(4)
    }
    fn record(&self) -> Option<Value> {
        (!self.deleted())
            .then(|| json!({"id": self.key.to_json(), "v": format!("{}@{}", self.time, self.node)}))
    }
    fn row(&self, table: &str) -> SinkRow {
        row(table, self.key.clone(), self.record(), self.time, self.node)
    }
}

fn write_strategy() -> impl Strategy<Value = Write> {
    (
        0i64..4,
        1u64..12,
        prop::sample::select(vec![5, HIGH - 1, HIGH, HIGH + 1]),
    )
        .prop_map(|(k, time, node)| Write {
            key: if k % 2 == 0 {
                Key::Int(k)
            } else {
                Key::Str(format!("k{k}"))
            },
            time,
            node,
        })
}

/// A history, then how it is delivered: the writes and some repeated,
/// in a shuffled order, cut into batches, each claiming a random log
/// position (so progress is offered out of order too).
fn delivery_strategy() -> impl Strategy<Value = (Vec<Write>, Vec<(Vec<Write>, u64)>)> {
    prop::collection::vec(write_strategy(), 1..24).prop_flat_map(|history| {
        let n = history.len();
        let repeats = prop::collection::vec(0..n, 0..n);
        (Just(history), repeats, any::<u64>()).prop_flat_map(|(history, repeats, _)| {
            let mut sent: Vec<Write> = history.clone();
            sent.extend(repeats.iter().map(|&i| history[i].clone()));
            let len = sent.len();
            (
                Just(history),
                Just(sent).prop_shuffle(),
                prop::collection::vec((1usize..6, 1u64..50), len),
            )
                .prop_map(|(history, sent, cuts)| {
                    let mut batches = Vec::new();
                    let mut rest = &sent[..];
                    for (size, seq) in cuts {
                        if rest.is_empty() {
                            break;
                        }
                        let take = size.min(rest.len());
                        batches.push((rest[..take].to_vec(), seq));
                        rest = &rest[take..];
                    }
                    (history, batches)
                })
        })
    })
}

#[test]
fn reordered_repeated_and_split_batches_end_at_the_last_writer_wins_state() {
    let pg = Postgres::start();
    let runtime = rt();
    let c = runtime.block_on(client(&pg));
    let case = AtomicUsize::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&delivery_strategy(), |(history, batches)| {
            let n = case.fetch_add(1, Ordering::Relaxed);
            let (table, sink_name) = (format!("prop_{n}"), format!("prop{n}"));
            runtime.block_on(async {
                let mut sink =
                    PostgresSink::new(config(&pg, &sink_name, &[("t", Some(&table))]), "hub")
                        .unwrap();
                let mut high = 0u64;
                for (writes, seq) in &batches {
                    let batch = SinkBatch {
                        after_seq: seq.saturating_sub(1),
                        through_seq: *seq,
                        rows: writes.iter().map(|w| w.row("t")).collect(),
                    };
                    sink.apply(&batch).await.unwrap();
                    high = high.max(*seq);
                    prop_assert_eq!(progress(&c, &sink_name).await, Some(high as i64));
                }
                let mut reference: BTreeMap<Key, &Write> = BTreeMap::new();
                for w in &history {
                    let newer = reference
                        .get(&w.key)
                        .is_none_or(|old| (w.time, w.node) > (old.time, old.node));
                    if newer {
                        reference.insert(w.key.clone(), w);
                    }
                }
                let (rows, total) = pg_rows(&c, &table).await;
                prop_assert_eq!(total, rows.len(), "duplicate keys");
                prop_assert_eq!(rows.len(), reference.len());
                for (key, w) in reference {
                    prop_assert_eq!(
                        rows.get(&key),
                        Some(&PgRow {
                            record: w.record(),
                            deleted: w.deleted(),
                            stamp: Stamp {
                                time: w.time,
                                node: w.node
                            },
                        })
                    );
                }
                Ok(())
            })
        })
        .unwrap();
}

// ---- the driver, from a hub database ----------------------------------

fn hub(dir: &std::path::Path, retention: Option<Retention>) -> Database {
    let mut opts = OpenOptions::new("hub");
    if let Some(r) = retention {
        opts = opts.retention(r);
    }
    let db = Database::open(dir, opts).expect("open hub");
    db.create_table("alerts", TableOptions::default())
        .expect("table");
    db.create_table("other", TableOptions::default())
        .expect("table");
    db
}

fn fast(tables: &[&str], batch: usize) -> DriverConfig {
    let mut c = DriverConfig::new(tables.iter().map(|t| t.to_string()).collect());
    c.max_batch_rows = batch;
    c.min_backoff = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(300);
    c.poll = Duration::from_millis(50);
    c
}

async fn caught_up(db: &Database, h: &SinkHandle) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let head = db.log_bounds().unwrap().last;
        let s = h.status();
        if s.resume_point >= head && s.connected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sink not caught up: {s:?}, head {head}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The writes a test made, per key: the last stamp and state.
type Model = BTreeMap<Key, (Option<Value>, Stamp)>;

/// Writes `n` transactions of `per` alerts over keys `0..keys` (every
/// fifth transaction deletes one instead), plus a write to a table the
/// sink does not carry.
fn write_alerts(db: &Database, model: &mut Model, from: u64, n: u64, per: u64, keys: u64) {
    for t in from..from + n {
        let mut tx = db.transaction();
        let mut touched = Vec::new();
        if t % 5 == 4 {
            let k = (t * 31) % keys;
            tx.delete("alerts", k as i64).unwrap();
            touched.push((Key::Int(k as i64), None));
        } else {
            for i in 0..per {
                let k = (t * per + i) % keys;
                let rec = json!({"id": k, "t": t, "msg": "x".repeat(60)});
                tx.upsert("alerts", rec.clone()).unwrap();
                touched.push((Key::Int(k as i64), Some(rec)));
            }
        }
        tx.upsert("other", json!({"id": t})).unwrap();
        let info = tx.commit().unwrap();
        for (k, rec) in touched {
            model.insert(k, (rec, info.stamp));
        }
    }
}

async fn assert_matches(c: &tokio_postgres::Client, model: &Model) {
    let (rows, total) = pg_rows(c, "alerts").await;
    assert_eq!(total, rows.len(), "duplicate keys in PostgreSQL");
    assert_eq!(rows.len(), model.len());
    for (k, (rec, stamp)) in model {
        let got = &rows[k];
        assert_eq!(got.stamp, *stamp, "key {k}");
        assert_eq!(got.deleted, rec.is_none(), "key {k}");
        assert_eq!(&got.record, rec, "key {k}");
    }
    let other = c
        .query_opt("SELECT to_regclass('other')::text", &[])
        .await
        .unwrap()
        .and_then(|r| r.get::<_, Option<String>>(0));
    assert_eq!(
        other, None,
        "a table the sink does not carry reached PostgreSQL"
    );
}

#[test]
fn a_replay_from_an_older_resume_point_changes_nothing() {
    let pg = Postgres::start();
    let dir = common::scratch_dir();
    let db = hub(dir.path(), None);
    let mut model = Model::new();
    write_alerts(&db, &mut model, 0, 300, 3, 200);
    // Patches and counters carry no after-image: the record's state goes.
    db.increment("alerts", 7, "hits", 5).unwrap();
    db.update("alerts", json!({"id": 8, "extra": true}))
        .unwrap();
    for k in [7, 8] {
        let r = db.get("alerts", k).unwrap().unwrap();
        model.insert(
            Key::Int(k),
            (
                Some(serde_json::from_str(r.body_json()).unwrap()),
                r.stamp(),
            ),
        );
    }
    rt().block_on(async {
        let c = client(&pg).await;
        let cfg = config(&pg, "replay", &[("alerts", None)]);
        let h = driver::spawn(
            db.clone(),
            PostgresSink::new(cfg.clone(), "hub").unwrap(),
            fast(&["alerts"], 64),
        );
        caught_up(&db, &h).await;
        assert_matches(&c, &model).await;
        let before = c
            .query(
                "SELECT key, record, deleted, stamp_time, stamp_node FROM alerts ORDER BY key",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| format!("{:?}", r))
            .collect::<Vec<_>>();
        let s = h.status();
        assert!(s.batches >= 5 && s.rows > 0 && s.backlog == 0, "{s:?}");
        h.stop().await;
        let was = digest(&c).await;
        // Rewind the resume point by hand and replay everything.
        c.execute("UPDATE tidelog_sink_progress SET seq = 0", &[])
            .await
            .unwrap();
        let h = driver::spawn(
            db.clone(),
            PostgresSink::new(cfg, "hub").unwrap(),
            fast(&["alerts"], 64),
        );
        caught_up(&db, &h).await;
        assert!(h.status().rows > 0);
        h.stop().await;
        assert_eq!(digest(&c).await, was);
        assert_eq!(before.len(), model.len());
        assert_matches(&c, &model).await;
    });
}

#[test]
fn a_killed_server_is_retried_through_and_nothing_lands_twice() {
    let mut pg = Postgres::start();
    let dir = common::scratch_dir();
    let db = hub(dir.path(), None);
    let runtime = rt();
    let c0 = runtime.block_on(client(&pg));
    drop(c0);
    let cfg = config(&pg, "kill", &[("alerts", None)]);
    let h = runtime.block_on(async {
        driver::spawn(
            db.clone(),
            PostgresSink::new(cfg, "hub").unwrap(),
            fast(&["alerts"], 50),
        )
    });
    let mut model = Model::new();
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            let mut model = Model::new();
            write_alerts(&db, &mut model, 0, 1500, 4, 2000);
            model
        })
    };
    // Kill it once some batches landed, mid-stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.status().batches < 5 {
        assert!(Instant::now() < deadline, "{:?}", h.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    pg.kill();
    std::thread::sleep(Duration::from_millis(300));
    pg.restart();
    model.extend(writer.join().unwrap());
    runtime.block_on(async {
        caught_up(&db, &h).await;
        let s = h.status();
        assert!(s.retries >= 1, "{s:?}");
        assert!(s.last_error.is_some(), "{s:?}");
        let c = client(&pg).await;
        assert_matches(&c, &model).await;
        assert_eq!(
            progress(&c, "kill").await,
            Some(db.log_bounds().unwrap().last as i64)
        );
        h.stop().await;
    });
}

#[test]
fn writes_proceed_while_the_server_is_down_and_land_after() {
    let mut pg = Postgres::start();
    let dir = common::scratch_dir();
    let db = hub(dir.path(), None);
    let runtime = rt();
    let mut model = Model::new();
    write_alerts(&db, &mut model, 0, 50, 2, 100);
    let cfg = config(&pg, "down", &[("alerts", None)]);
    let h = runtime.block_on(async {
        let h = driver::spawn(
            db.clone(),
            PostgresSink::new(cfg, "hub").unwrap(),
            fast(&["alerts"], 100),
        );
        caught_up(&db, &h).await;
        h
    });
    pg.kill();
    // Every commit returns while PostgreSQL is down: the log buffers.
    write_alerts(&db, &mut model, 50, 800, 3, 1000);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = h.status();
        if !s.connected && s.backlog > 0 && s.retries > 0 {
            assert!(s.last_error_transient == Some(true), "{s:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    pg.restart();
    runtime.block_on(async {
        caught_up(&db, &h).await;
        let c = client(&pg).await;
        assert_matches(&c, &model).await;
        let s = h.status();
        assert_eq!((s.backlog, s.overruns), (0, 0), "{s:?}");
        h.stop().await;
    });
}

#[test]
fn a_log_trimmed_past_the_resume_point_is_reported_and_the_state_resent() {
    let mut pg = Postgres::start();
    let dir = common::scratch_dir();
    let retention = Retention {
        log_max_bytes: 32 << 10,
        ..Retention::default()
    };
    let db = hub(dir.path(), Some(retention));
    let runtime = rt();
    let mut model = Model::new();
    write_alerts(&db, &mut model, 0, 20, 2, 500);
    let cfg = config(&pg, "overrun", &[("alerts", None)]);
    let h = runtime.block_on(async {
        let h = driver::spawn(
            db.clone(),
            PostgresSink::new(cfg, "hub").unwrap(),
            fast(&["alerts"], 100),
        );
        caught_up(&db, &h).await;
        h
    });
    let resume = h.status().resume_point;
    pg.kill();
    // Deletes among them: their tombstones must reach PostgreSQL by the
    // state scan, the log that held them being gone.
    write_alerts(&db, &mut model, 20, 1500, 2, 500);
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.log_bounds().unwrap().first <= resume + 1 {
        assert!(
            Instant::now() < deadline,
            "the log was not trimmed: {:?}",
            db.log_bounds()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pg.restart();
    runtime.block_on(async {
        caught_up(&db, &h).await;
        let s = h.status();
        assert!(s.overruns >= 1, "{s:?}");
        let c = client(&pg).await;
        assert_matches(&c, &model).await;
        h.stop().await;
    });
}

/// PostgreSQL's own COPY + upsert of `text` (COPY text rows of the
/// sink's staging columns) into a fresh table `name`, in one transaction;
/// returns the seconds it took.
async fn plain_copy_upsert(c: &tokio_postgres::Client, name: &str, text: &str) -> f64 {
    use futures_util::SinkExt;
    c.batch_execute(&format!(
        "CREATE TABLE {name} (key jsonb NOT NULL PRIMARY KEY, record jsonb, \
         deleted boolean NOT NULL DEFAULT false, stamp_time bigint NOT NULL, \
         stamp_node numeric(20,0) NOT NULL); \
         CREATE TEMP TABLE IF NOT EXISTS base_stage (key jsonb, record jsonb, deleted boolean, \
         stamp_time bigint, stamp_node numeric(20,0)) ON COMMIT DELETE ROWS"
    ))
    .await
    .unwrap();
    let started = Instant::now();
    c.batch_execute("BEGIN").await.unwrap();
    let copy = c
        .copy_in::<_, bytes::Bytes>("COPY base_stage FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(copy);
    copy.send(bytes::Bytes::from(text.to_string()))
        .await
        .unwrap();
    copy.as_mut().finish().await.unwrap();
    c.execute(
        &format!(
            "INSERT INTO {name} AS t SELECT DISTINCT ON (key) * FROM base_stage \
             ORDER BY key, stamp_time DESC, stamp_node DESC ON CONFLICT (key) DO UPDATE \
             SET record = EXCLUDED.record, deleted = EXCLUDED.deleted, \
             stamp_time = EXCLUDED.stamp_time, stamp_node = EXCLUDED.stamp_node \
             WHERE (t.stamp_time, t.stamp_node) < (EXCLUDED.stamp_time, EXCLUDED.stamp_node)"
        ),
        &[],
    )
    .await
    .unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    started.elapsed().as_secs_f64()
}

/// Rows/s from the hub's log into PostgreSQL next to PostgreSQL's own
/// COPY + upsert of the same rows in one transaction, measured in the same
/// run, before and after the sink (the server warms up). Reported, not
/// asserted (timing varies with the machine); the rows are checked.
#[test]
fn throughput_from_the_log_next_to_a_plain_copy_and_upsert() {
    const ROWS: u64 = 100_000;
    let pg = Postgres::start();
    let dir = common::scratch_dir();
    let db = hub(dir.path(), None);
    // 100-byte records, 1,000 per transaction.
    for t in 0..ROWS / 1000 {
        let mut tx = db.transaction();
        for i in 0..1000 {
            let k = t * 1000 + i;
            tx.upsert_json("alerts", &format!("{{\"id\":{k},\"msg\":\"{:0>80}\"}}", k))
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let mut text = String::new();
    for r in db.scan("alerts", &tidelog::ScanOptions::default()).unwrap() {
        let s = r.stamp();
        text.push_str(&format!(
            "{}\t{}\tf\t{}\t{}\n",
            r.key().to_json(),
            r.body_json(),
            s.time,
            s.node
        ));
    }
    let runtime = rt();
    runtime.block_on(async {
        let c = client(&pg).await;
        let before = plain_copy_upsert(&c, "base_before", &text).await;
        let started = Instant::now();
        let cfg = config(&pg, "bench", &[("alerts", None)]);
        let mut dc = fast(&["alerts"], 20);
        dc.max_batch_bytes = 16 << 20;
        let h = driver::spawn(db.clone(), PostgresSink::new(cfg, "hub").unwrap(), dc);
        caught_up(&db, &h).await;
        let sink_secs = started.elapsed().as_secs_f64();
        h.stop().await;
        let after = plain_copy_upsert(&c, "base_after", &text).await;
        for t in ["alerts", "base_before", "base_after"] {
            let n: i64 = c
                .query_one(&format!("SELECT count(*) FROM {t}"), &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n as u64, ROWS, "{t}");
        }
        assert_eq!(
            digest(&c).await,
            c.query_one(
                "SELECT md5(string_agg(key::text || coalesce(record::text, '-') || deleted || stamp_time || stamp_node, ',' ORDER BY key)) FROM base_after",
                &[],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
        );
        let rate = |secs: f64| ROWS as f64 / secs;
        let base = rate((before + after) / 2.0);
        println!(
            "sink: {ROWS} rows in {sink_secs:.2} s = {:.0} rows/s; plain COPY + upsert in one transaction: {:.0} rows/s before, {:.0} after; sink/mean baseline {:.2}",
            rate(sink_secs),
            rate(before),
            rate(after),
            rate(sink_secs) / base
        );
    });
}

/// With replication running and no peer needing the log, retention trims
/// every acknowledged entry; a sink whose destination is down holds the
/// log at its resume point like a peer would. A second hub without a sink,
/// written the same, is the control: its log does get trimmed.
#[test]
fn a_sink_holds_the_log_at_its_resume_point_while_its_destination_is_down() {
    let mut pg = Postgres::start();
    let (d1, d2) = (common::scratch_dir(), common::scratch_dir());
    let (held, control) = (hub(d1.path(), None), hub(d2.path(), None));
    for db in [&held, &control] {
        db.start_replication(tidelog::ReplicationOptions::insecure())
            .unwrap();
    }
    let runtime = rt();
    let mut model = Model::new();
    write_alerts(&held, &mut model, 0, 20, 2, 100);
    let cfg = config(&pg, "hold", &[("alerts", None)]);
    let h = runtime.block_on(async {
        let h = driver::spawn(
            held.clone(),
            PostgresSink::new(cfg, "hub").unwrap(),
            fast(&["alerts"], 100),
        );
        caught_up(&held, &h).await;
        h
    });
    let resume = h.status().resume_point;
    pg.kill();
    write_alerts(&held, &mut model, 20, 200, 2, 100);
    write_alerts(&control, &mut Model::new(), 0, 220, 2, 100);
    let deadline = Instant::now() + Duration::from_secs(30);
    while control.log_bounds().unwrap().first <= 1 {
        assert!(
            Instant::now() < deadline,
            "the control's log was never trimmed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // One more trim pass of the held hub after the control's (both run
    // every second): then the hold has been looked at.
    std::thread::sleep(Duration::from_millis(1500));
    let first = held.log_bounds().unwrap().first;
    assert!(
        first <= resume + 1,
        "trimmed to {first} past the sink's resume point {resume}"
    );
    pg.restart();
    runtime.block_on(async {
        caught_up(&held, &h).await;
        assert_eq!(h.status().overruns, 0);
        let c = client(&pg).await;
        assert_matches(&c, &model).await;
        h.stop().await;
    });
}

/// A resume point past this hub's log was written by another data
/// directory under the same hub name: the driver resends the state rather
/// than skip this log up to that point.
#[test]
fn a_resume_point_past_the_hubs_log_resends_the_state() {
    let pg = Postgres::start();
    let dir = common::scratch_dir();
    let db = hub(dir.path(), None);
    let mut model = Model::new();
    write_alerts(&db, &mut model, 0, 40, 2, 60);
    let runtime = rt();
    runtime.block_on(async {
        let c = client(&pg).await;
        c.batch_execute(
            "CREATE TABLE tidelog_sink_progress (sink text NOT NULL, hub text NOT NULL, \
             seq bigint NOT NULL, PRIMARY KEY (sink, hub)); \
             INSERT INTO tidelog_sink_progress VALUES ('reset', 'hub', 1000000)",
        )
        .await
        .unwrap();
        let cfg = config(&pg, "reset", &[("alerts", None)]);
        let h = driver::spawn(
            db.clone(),
            PostgresSink::new(cfg, "hub").unwrap(),
            fast(&["alerts"], 100),
        );
        caught_up(&db, &h).await;
        assert_matches(&c, &model).await;
        // And the log after it is followed as ever.
        let mut more = Model::new();
        write_alerts(&db, &mut more, 40, 20, 2, 60);
        model.extend(more);
        caught_up(&db, &h).await;
        assert_matches(&c, &model).await;
        h.stop().await;
    });
}

/// A destination that accepts the connection and then says nothing (a
/// network dropping packets) is a transient failure after the timeout,
/// retried, never a hang.
#[test]
fn a_destination_that_never_answers_times_out_and_is_retried() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // Accepted connections are kept open and never read.
    let keeper = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().take(3) {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    let dir = common::scratch_dir();
    let db = hub(dir.path(), None);
    db.upsert("alerts", json!({"id": 1})).unwrap();
    let mut cfg = PostgresSinkConfig::new(
        format!("host=127.0.0.1 port={port} user=tidelog dbname=tidelog"),
        &["alerts"],
    );
    cfg.name = "silent".into();
    let mut dc = fast(&["alerts"], 10);
    dc.apply_timeout = Duration::from_millis(300);
    rt().block_on(async {
        let h = driver::spawn(db.clone(), PostgresSink::new(cfg, "hub").unwrap(), dc);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = h.status();
            if s.retries >= 2 {
                assert!(!s.connected, "{s:?}");
                assert_eq!(s.last_error_transient, Some(true), "{s:?}");
                assert!(
                    s.last_error.as_deref().unwrap_or("").contains("no answer"),
                    "{s:?}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "{s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Stop is prompt even mid-try.
        h.stop().await;
    });
    drop(keeper);
}

/// Hub commit to visible in PostgreSQL (the progress row, committed with
/// the rows, covering the commit) at 5,000 rows/s: 50-row transactions
/// every 10 ms for 3 s. Reported, not asserted; every row is checked.
#[test]
fn commit_to_visible_latency_at_5000_rows_per_second() {
    let pg = Postgres::start();
    let dir = common::scratch_dir();
    let db = hub(dir.path(), None);
    let runtime = rt();
    let cfg = config(&pg, "latency", &[("alerts", None)]);
    let h = runtime.block_on(async {
        let h = driver::spawn(
            db.clone(),
            PostgresSink::new(cfg, "hub").unwrap(),
            fast(&["alerts"], 1000),
        );
        caught_up(&db, &h).await;
        h
    });
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut commits = Vec::new();
            for t in 0..300u64 {
                let due = start + Duration::from_millis(10 * t);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let mut tx = db.transaction();
                for i in 0..50 {
                    let k = t * 50 + i;
                    tx.upsert_json("alerts", &format!("{{\"id\":{k},\"msg\":\"{k:0>80}\"}}"))
                        .unwrap();
                }
                commits.push((tx.commit().unwrap().seq, Instant::now()));
            }
            commits
        })
    };
    let seen = runtime.block_on(async {
        let c = client(&pg).await;
        let mut seen: Vec<(i64, Instant)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let p = progress(&c, "latency").await.unwrap_or(0);
            if seen.last().is_none_or(|(s, _)| *s < p) {
                seen.push((p, Instant::now()));
            }
            if writer.is_finished() && p as u64 >= db.log_bounds().unwrap().last {
                break;
            }
            assert!(Instant::now() < deadline, "{:?}", h.status());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let n: i64 = c
            .query_one("SELECT count(*) FROM alerts", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 15_000);
        seen
    });
    let commits = writer.join().unwrap();
    let mut lat: Vec<Duration> = commits
        .iter()
        .map(|(seq, at)| {
            let (_, visible) = seen
                .iter()
                .find(|(s, _)| *s as u64 >= *seq)
                .expect("every commit became visible");
            visible.saturating_duration_since(*at)
        })
        .collect();
    lat.sort();
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
    println!(
        "commit to visible in PostgreSQL at 5,000 rows/s: p50 {:?}, p99 {:?}, max {:?} ({} txns, {} batches)",
        pct(50),
        pct(99),
        lat[lat.len() - 1],
        lat.len(),
        h.status().batches
    );
    runtime.block_on(h.stop());
}
