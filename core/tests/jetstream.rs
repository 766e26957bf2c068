//! The JetStream sink against a real nats-server (tests/nats_common): what
//! lands in the stream, when the resume point moves, duplicates within the
//! window, a server restart mid-stream, hostile keys, refused setups, and a
//! property test of reordered, repeated and split batches read back through
//! the consumer's StampGuard.
#![cfg(feature = "jetstream")]

mod nats_common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use nats_common::sink::*;
use nats_common::NatsServer;
use proptest::prelude::*;
use tidelog::cloud::jetstream::subject::{decode_key_token, DecodedToken};
use tidelog::cloud::jetstream::{JetStreamSink, WriteMeta, RESUME_BUCKET};
use tidelog::cloud::sink::{Sink, SinkBatch, SinkError, SinkRow};
use tidelog::{Key, Stamp};

#[test]
fn a_batch_lands_with_subjects_headers_and_ids() {
    let server = NatsServer::start();
    runtime().block_on(async {
        let cfg = config(&server.url(), "s1", &["alerts", "dev.ices"]);
        let mut sink = connect_retrying(&cfg).await;
        assert_eq!(sink.name(), "jetstream:s1");
        assert_eq!(sink.resume_point().await.expect("resume point"), 0);
        let batch = SinkBatch {
            after_seq: 0,
            through_seq: 4,
            rows: vec![
                row("alerts", Key::Int(7), 100, 3, Some(r#"{"level":2}"#)),
                row("dev.ices", Key::Str("gw-1".into()), 101, 3, Some("{}")),
                row("not_mine", Key::Int(1), 102, 3, Some("{}")),
                row("alerts", Key::Int(7), 103, 4, None),
            ],
        };
        sink.apply(&batch).await.expect("apply");
        assert_eq!(sink.resume_point().await.expect("resume point"), 4);
        let stats = sink.stats();
        assert_eq!(
            (stats.published, stats.duplicates, stats.skipped_rows),
            (3, 0, 1)
        );

        let got = read_all(&server.url(), "s1").await;
        let seen: Vec<_> = got
            .iter()
            .map(|g| (g.subject.as_str(), g.msg_id.as_str(), g.payload.as_slice()))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("s1_p.alerts.7", "tl:3:100:alerts:7", &br#"{"level":2}"#[..]),
                (
                    "s1_p.%dev%2Eices.gw-1",
                    "tl:3:101:%dev%2Eices:gw-1",
                    &b"{}"[..]
                ),
                ("s1_p.alerts.7", "tl:4:103:alerts:7", &b""[..]),
            ]
        );
        assert_eq!(
            got[2].meta,
            WriteMeta {
                table: "alerts".into(),
                key: Key::Int(7),
                stamp: Stamp { time: 103, node: 4 },
                deleted: true,
            }
        );
        assert!(!got[0].meta.deleted);
        assert_eq!(got[1].meta.key, Key::Str("gw-1".into()));

        // A second sink on the same hub and stream resumes where this one
        // stopped: the point is in JetStream, not in the process.
        drop(sink);
        let mut again = connect_retrying(&cfg).await;
        assert_eq!(again.resume_point().await.expect("resume point"), 4);
        // Another hub has its own point.
        let mut other = cfg.clone();
        other.hub = "hub 2/ü".into();
        let mut other = connect_retrying(&other).await;
        assert_eq!(other.resume_point().await.expect("resume point"), 0);
        assert_ne!(other.resume_key(), again.resume_key());
        // Another sink of the same hub on the same stream, by its name.
        let mut named = cfg.clone();
        named.name = Some("js-second".into());
        let mut named = connect_retrying(&named).await;
        assert_eq!(named.name(), "js-second");
        assert_eq!(named.resume_point().await.expect("resume point"), 0);
    });
}

#[test]
fn the_resume_point_moves_only_after_every_ack() {
    let mut server = NatsServer::start();
    let rt = runtime();
    let cfg = config(&server.url(), "s2", &["t"]);
    let log: Vec<SinkRow> = (0..40)
        .map(|i| {
            row(
                "t",
                Key::Int(i % 10),
                1000 + i as u64,
                1,
                Some(&format!("{{\"v\":{i}}}")),
            )
        })
        .collect();
    let b = batches(&log, 20);
    let mut sink = rt.block_on(connect_retrying(&cfg));
    rt.block_on(sink.apply(&b[0])).expect("first batch");
    assert_eq!(rt.block_on(sink.resume_point()).expect("point"), 20);

    server.kill();
    let err: SinkError = rt.block_on(sink.apply(&b[1])).expect_err("server down");
    assert!(err.transient, "{err}");
    assert_eq!(err.sink, "jetstream:s2");

    server.start_again();
    let point = rt.block_on(resume_point_retrying(&mut sink));
    assert_eq!(point, 20, "the failed batch must not move the resume point");
    rt.block_on(drive(&mut sink, &b, &AtomicU64::new(0)));
    assert_eq!(rt.block_on(sink.resume_point()).expect("point"), 40);
    let got = rt.block_on(read_all(&server.url(), "s2"));
    // Whatever of the failed batch reached the stream before the kill was
    // not published again (same ids within the window).
    assert_eq!(duplicates(&got), 0);
    assert_eq!(guarded_state(&got), reference(&log));
}

#[test]
fn a_kill_mid_batch_fails_it_and_keeps_the_resume_point() {
    let mut server = NatsServer::start();
    let url = server.url();
    let rt = runtime();
    let cfg = config(&url, "s6", &["t"]);
    let log: Vec<SinkRow> = (0..20_100u64)
        .map(|i| {
            row(
                "t",
                Key::Int((i % 500) as i64),
                10 + i,
                2,
                Some("{\"x\":1}"),
            )
        })
        .collect();
    let b = vec![
        SinkBatch {
            after_seq: 0,
            through_seq: 100,
            rows: log[..100].to_vec(),
        },
        SinkBatch {
            after_seq: 100,
            through_seq: log.len() as u64,
            rows: log[100..].to_vec(),
        },
    ];
    let mut sink = rt.block_on(connect_retrying(&cfg));
    rt.block_on(sink.apply(&b[0])).expect("first batch");
    // SIGKILL once the second batch has started landing.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let killer = std::thread::spawn(move || {
        let _ = started_rx.blocking_recv();
        server.kill();
        server
    });
    let watcher = rt.spawn({
        let url = url.clone();
        async move {
            let client = async_nats::connect(url).await.expect("watcher connect");
            let js = async_nats::jetstream::new(client);
            let mut stream = js.get_stream("s6").await.expect("stream");
            while stream.info().await.map(|i| i.state.messages).unwrap_or(0) < 600 {}
            let _ = started_tx.send(());
        }
    });
    let err = rt
        .block_on(sink.apply(&b[1]))
        .expect_err("the server died mid-batch");
    assert!(err.transient, "{err}");
    rt.block_on(watcher).expect("watcher");
    let mut server = killer.join().expect("killer");
    server.start_again();
    let point = rt.block_on(resume_point_retrying(&mut sink));
    assert_eq!(
        point, 100,
        "a batch cut by the kill must not move the resume point"
    );
    rt.block_on(drive(&mut sink, &b, &AtomicU64::new(0)));
    let got = rt.block_on(read_all(&url, "s6"));
    assert_eq!(duplicates(&got), 0);
    assert_eq!(got.len(), log.len());
    assert_eq!(guarded_state(&got), reference(&log));
}

#[test]
fn replays_within_the_window_add_no_message() {
    let server = NatsServer::start();
    runtime().block_on(async {
        let cfg = config(&server.url(), "s3", &["t", "u"]);
        let mut sink = connect_retrying(&cfg).await;
        let log: Vec<SinkRow> = (0..60u64)
            .map(|i| {
                let table = if i % 3 == 0 { "u" } else { "t" };
                let record = (i % 7 != 0).then(|| format!("{{\"i\":{i}}}"));
                row(
                    table,
                    Key::Int((i % 13) as i64),
                    10 + i,
                    i % 4,
                    record.as_deref(),
                )
            })
            .collect();
        let b = batches(&log, 10);
        for batch in &b {
            sink.apply(batch).await.expect("apply");
        }
        let first = read_all(&server.url(), "s3").await;
        assert_eq!(first.len(), 60);
        // The same batches again, an older range split differently, and
        // one batch from a fresh sink (a restarted hub).
        for batch in &b {
            sink.apply(batch).await.expect("replay");
        }
        for chunk in batches(&log[15..45], 7) {
            sink.apply(&chunk).await.expect("older range");
        }
        let mut fresh = connect_retrying(&cfg).await;
        fresh.apply(&b[2]).await.expect("fresh sink");
        assert_eq!(sink.stats().duplicates, 60 + 30);
        assert_eq!(fresh.stats().duplicates, 10);
        let got = read_all(&server.url(), "s3").await;
        assert_eq!(got.len(), 60, "no message added by replays");
        assert_eq!(duplicates(&got), 0);
        let per_subject = got.iter().fold(HashMap::<&str, usize>::new(), |mut m, g| {
            *m.entry(g.subject.as_str()).or_default() += 1;
            m
        });
        let expected = log
            .iter()
            .fold(HashMap::<String, usize>::new(), |mut m, r| {
                *m.entry(format!("s3_p.{}.{}", r.table, r.key.to_json()))
                    .or_default() += 1;
                m
            });
        assert_eq!(
            per_subject
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<HashMap<_, _>>(),
            expected
        );
        // Replaying older batches never moves the point back.
        assert_eq!(sink.resume_point().await.expect("point"), 60);
    });
}

#[test]
fn a_server_restart_mid_stream_loses_and_duplicates_nothing() {
    let server = NatsServer::start();
    let url = server.url();
    let rt = runtime();
    let cfg = config(&url, "s4", &["alerts"]);
    // 1,200 writes over 50 keys, stamps rising along the log as in a hub's
    // log; one in 9 a delete.
    let log: Vec<SinkRow> = (0..1200u64)
        .map(|i| {
            let record =
                (i % 9 != 4).then(|| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(60)));
            row(
                "alerts",
                Key::Int(((i * 7919) % 50) as i64),
                (1 << 20) + i,
                1 + i % 3,
                record.as_deref(),
            )
        })
        .collect();
    let b = batches(&log, 40);
    // The driver stops after 12 batches until the server is down, then
    // goes on while it is down and while it starts again: the batch after
    // that fails (transient) and is retried from the resume point. (A
    // shorter outage goes unnoticed: the client queues the publishes and
    // sends them once it has reconnected.)
    let applied = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let restarter = {
        let (applied, down) = (applied.clone(), down.clone());
        let mut server = server;
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while applied.load(Ordering::SeqCst) < 12 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            server.stop();
            down.store(true, Ordering::SeqCst);
            // Longer than the sink's 1 s timeout: acks of what is published
            // meanwhile cannot come in time.
            std::thread::sleep(Duration::from_millis(1500));
            server.start_again();
            server
        })
    };
    let transient = rt.block_on(async {
        let mut sink = connect_retrying(&cfg).await;
        drive_pausing(&mut sink, &b, &applied, Some((12, &down))).await
    });
    assert!(transient > 0, "the restart was not noticed mid-stream");
    let server = restarter.join().expect("restarter");
    let got = rt.block_on(read_all(&url, "s4"));
    assert_eq!(duplicates(&got), 0, "duplicate messages");
    let ids: std::collections::HashSet<_> = got.iter().map(|g| g.msg_id.clone()).collect();
    assert_eq!(ids.len(), log.len(), "every write is in the stream once");
    assert_eq!(guarded_state(&got), reference(&log));
    eprintln!("restart mid-stream: {transient} transient errors retried");
    drop(server);
}

#[test]
fn hostile_keys_round_trip() {
    let server = NatsServer::start();
    runtime().block_on(async {
        let cfg = config(&server.url(), "s5", &["k"]);
        let mut sink = connect_retrying(&cfg).await;
        let keys = vec![
            Key::Str("a.b".into()),
            Key::Str("*".into()),
            Key::Str(">".into()),
            Key::Str("a.*.>".into()),
            Key::Str("with space".into()),
            Key::Str("tab\tand\nnewline\r".into()),
            Key::Str(String::new()),
            Key::Str("x".repeat(4096)),
            Key::Str("é.".repeat(2048)),
            Key::Str("ünïcødé ✓ 日本".into()),
            Key::Str("42".into()),
            Key::Int(42),
            Key::Int(-1),
            Key::Int(i64::MIN),
            Key::Str("%41".into()),
            Key::Str("#".into()),
            Key::Str("tl:1:2:k:3".into()),
        ];
        let rows: Vec<SinkRow> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| row("k", k.clone(), 500 + i as u64, 9, Some("{\"ok\":true}")))
            .collect();
        let n = rows.len() as u64;
        sink.apply(&SinkBatch {
            after_seq: 0,
            through_seq: n,
            rows,
        })
        .await
        .expect("apply");
        let got = read_all(&server.url(), "s5").await;
        assert_eq!(got.len(), keys.len());
        let subjects: std::collections::HashSet<_> =
            got.iter().map(|g| g.subject.clone()).collect();
        assert_eq!(subjects.len(), keys.len(), "one subject per key");
        for (g, key) in got.iter().zip(&keys) {
            assert_eq!(&g.meta.key, key);
            let token = g.subject.strip_prefix("s5_p.k.").expect("subject prefix");
            match decode_key_token(token).expect("a key token") {
                DecodedToken::Key(k) => assert_eq!(&k, key),
                DecodedToken::Digest => assert!(
                    matches!(key, Key::Str(s) if s.len() > 80),
                    "only long keys are digests: {token}"
                ),
            }
        }
    });
}

#[test]
fn refused_setups_say_what_to_do() {
    runtime().block_on(async {
        // Nothing listening: transient (the server may come up).
        let nobody = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
            l.local_addr().expect("addr").port()
        };
        let err =
            JetStreamSink::connect(config(&format!("nats://127.0.0.1:{nobody}"), "x", &["t"]))
                .await
                .err()
                .expect("no server");
        assert!(err.transient, "{err}");

        // A server without JetStream: not transient, says how to enable it.
        let plain = NatsServer::start_without_jetstream();
        let err = JetStreamSink::connect(config(&plain.url(), "x", &["t"]))
            .await
            .err()
            .expect("no JetStream");
        assert!(!err.transient, "{err}");
        assert!(err.message.contains("-js"), "{err}");
        drop(plain);

        // A bad config never reaches the network.
        let mut bad = config("nats://127.0.0.1:1", "x", &["t"]);
        bad.subject_prefix = "a.*".into();
        let err = JetStreamSink::connect(bad).await.err().expect("bad prefix");
        assert!(
            !err.transient && err.message.contains("subject_prefix"),
            "{err}"
        );

        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        // The stream exists in memory storage.
        js.create_stream(StreamConfig {
            name: "mem".into(),
            subjects: vec!["mem_p.>".into()],
            storage: StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("memory stream");
        let err = JetStreamSink::connect(config(&server.url(), "mem", &["t"]))
            .await
            .err()
            .expect("memory stream refused");
        assert!(!err.transient && err.message.contains("storage"), "{err}");

        // The stream exists with another duplicate window.
        js.create_stream(StreamConfig {
            name: "win".into(),
            subjects: vec!["win_p.t.>".into()],
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .expect("stream with a 30 s window");
        let err = JetStreamSink::connect(config(&server.url(), "win", &["t"]))
            .await
            .err()
            .expect("window refused");
        assert!(
            !err.transient && err.message.contains("duplicate window"),
            "{err}"
        );

        // Another stream already takes the subjects.
        js.create_stream(StreamConfig {
            name: "squatter".into(),
            subjects: vec!["taken_p.>".into()],
            ..Default::default()
        })
        .await
        .expect("squatter");
        let err = JetStreamSink::connect(config(&server.url(), "taken", &["t"]))
            .await
            .err()
            .expect("overlap refused");
        assert!(!err.transient, "{err}");

        // A table added later: its subject is added to the stream.
        let sink = connect_retrying(&config(&server.url(), "grow", &["t"])).await;
        drop(sink);
        let mut grown = connect_retrying(&config(&server.url(), "grow", &["t", "u"])).await;
        grown
            .apply(&SinkBatch {
                after_seq: 0,
                through_seq: 1,
                rows: vec![row("u", Key::Int(1), 1, 1, Some("{}"))],
            })
            .await
            .expect("the new table publishes");

        // A resume point someone else overwrote: not transient, says how
        // to recover.
        js.publish(
            format!("$KV.{RESUME_BUCKET}.{}", grown.resume_key()),
            "not a number".into(),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
        let mut reread = connect_retrying(&config(&server.url(), "grow", &["t", "u"])).await;
        let err = reread.resume_point().await.expect_err("garbled point");
        assert!(
            !err.transient && err.message.contains("nats kv del"),
            "{err}"
        );
    });
}

/// One run of the property: the hub's log, cut into batches that are
/// delivered reordered, repeated and re-split.
#[derive(Debug, Clone)]
struct Delivery {
    log: Vec<SinkRow>,
    /// Each entry: (first row, row count) of a batch to apply, in order.
    applies: Vec<(usize, usize)>,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (
        prop::collection::vec((0i64..6, 0u64..3, prop::bool::weighted(0.2)), 5..40),
        prop::collection::vec((any::<prop::sample::Index>(), 1usize..8), 1..25),
    )
        .prop_map(|(writes, extra)| {
            let log: Vec<SinkRow> = writes
                .iter()
                .enumerate()
                .map(|(i, (k, node, deleted))| {
                    let record = (!deleted).then(|| format!("{{\"i\":{i}}}"));
                    row("p", Key::Int(*k), 100 + i as u64, *node, record.as_deref())
                })
                .collect();
            // Every row once, in order, in batches of 3, then extra
            // batches of any range (repeats, older ranges, other splits),
            // some of which come before the in-order ones.
            let mut applies: Vec<(usize, usize)> = (0..log.len())
                .step_by(3)
                .map(|s| (s, 3.min(log.len() - s)))
                .collect();
            for (j, (at, len)) in extra.into_iter().enumerate() {
                let start = at.index(log.len());
                let len = len.min(log.len() - start);
                let pos = if j % 2 == 0 { 0 } else { applies.len() };
                applies.insert(pos, (start, len));
            }
            Delivery { log, applies }
        })
}

#[test]
fn reordered_repeated_and_split_batches_end_as_the_log() {
    let server = NatsServer::start();
    let rt = runtime();
    let case = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 8,
        // Each case talks to the server; a failure shrinks a little only.
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&delivery(), |d| {
            case.set(case.get() + 1);
            let stream = format!("prop{}", case.get());
            rt.block_on(async {
                let mut sink = connect_retrying(&config(&server.url(), &stream, &["p"])).await;
                for (start, len) in &d.applies {
                    let batch = SinkBatch {
                        after_seq: *start as u64,
                        through_seq: (start + len) as u64,
                        rows: d.log[*start..start + len].to_vec(),
                    };
                    sink.apply(&batch).await.expect("apply");
                }
                let got = read_all(&server.url(), &stream).await;
                prop_assert_eq!(duplicates(&got), 0);
                prop_assert_eq!(got.len(), d.log.len());
                prop_assert_eq!(guarded_state(&got), reference(&d.log));
                prop_assert_eq!(
                    sink.resume_point().await.expect("point"),
                    d.log.len() as u64
                );
                Ok(())
            })
        })
        .expect("property");
}
