//! The PostgreSQL sink against a real private server: batches land with
//! their tombstones and stamps, a table of another shape or an unreachable
//! server is a typed error, and any delivery order of any split of a
//! history ends at the last-writer-wins state. (The driver's tests are in
//! pg_sink_driver.rs, the numbers in pg_sink_bench.rs.)
#![cfg(feature = "postgres")]

mod common;
mod pg_common;
mod pg_sink_common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use pg_common::Postgres;
use pg_sink_common::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use tidelog::cloud::postgres::PostgresSink;
use tidelog::cloud::sink::{Sink, SinkBatch, SinkRow};
use tidelog::{Key, Stamp};

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
