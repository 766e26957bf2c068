//! The PostgreSQL source against a real private server: SQL writes reach a
//! tidelog table with their stamps, in commit order, without the sink's
//! own writes, across restarts of PostgreSQL and of the reader, with a
//! full load for a new hub and a reload for one whose resume point was
//! trimmed away.

mod common;
mod pg_common;

use std::time::{Duration, Instant};

use pg_common::Postgres;
use tidelog::cloud::pg_source::{PgSource, PgSourceConfig, PgSourceStatus};
use tidelog::{Database, Key, OpenOptions, TableOptions, WriteOp};

struct Hub {
    _dir: tempfile::TempDir,
    db: Database,
}

fn hub(name: &str) -> Hub {
    let dir = common::scratch_dir();
    let db = Database::open(dir.path(), OpenOptions::new(name)).expect("open");
    db.ensure_table("thresholds", TableOptions::default().primary_key("sensor"))
        .expect("table");
    Hub { _dir: dir, db }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn config(pg: &Postgres, hub: &str) -> PgSourceConfig {
    let mut c = PgSourceConfig::new(pg.conn_string(), "thresholds", hub);
    c.poll_interval = Duration::from_millis(200);
    c.backoff_initial = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(500);
    c
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_status(src: &PgSource, what: &str, ok: impl Fn(&PgSourceStatus) -> bool) {
    wait_for(what, || ok(&src.status()));
}

/// The record's `max` attribute, `None` if absent or deleted.
fn max_of(db: &Database, sensor: &str) -> Option<i64> {
    let r = db.get("thresholds", sensor).expect("get")?;
    r.to_value().get("max").and_then(|v| v.as_i64())
}

fn source_node(pg: &Postgres) -> u64 {
    pg.query("SELECT node FROM tidelog_source_node")
        .parse()
        .unwrap()
}

async fn client(pg: &Postgres) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&pg.conn_string(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    c
}

#[test]
fn sql_writes_reach_tidelog_as_records_and_tombstones_with_increasing_stamps() {
    let pg = Postgres::start();
    let rt = runtime();
    let h = hub("hub-1");
    let src = PgSource::spawn(rt.handle(), h.db.clone(), config(&pg, "hub-1")).unwrap();
    wait_status(&src, "first load", |s| s.reloads == 1 && s.connected);
    pg.query(r#"INSERT INTO thresholds (record) VALUES ('{"sensor": "s1", "max": 5}')"#);
    pg.query(r#"UPDATE thresholds SET record = record || '{"max": 6}' WHERE key = '"s1"'"#);
    // The key given, the record without its key attribute: filled in.
    pg.query(r#"INSERT INTO thresholds (key, record) VALUES ('"s2"', '{"max": 1}')"#);
    pg.query(r#"INSERT INTO thresholds (record) VALUES ('{"sensor": 7, "max": 70}')"#);
    pg.query(r#"DELETE FROM thresholds WHERE key = '"s2"'"#);
    wait_for("four changes applied", || src.status().applied == 5);
    assert_eq!(max_of(&h.db, "s1"), Some(6));
    assert!(h.db.get("thresholds", "s2").unwrap().is_none());
    let seven = h.db.get("thresholds", 7i64).unwrap().expect("integer key");
    assert_eq!(seven.to_value()["sensor"], 7);
    // PostgreSQL keeps the delete as a tombstone with its stamp.
    assert_eq!(
        pg.query(r#"SELECT deleted, record IS NULL FROM thresholds WHERE key = '"s2"'"#),
        "t|t"
    );
    // Every write entered the log with PostgreSQL's stamp, the database's
    // source node as origin, stamps increasing per record.
    let node = source_node(&pg);
    let log = h.db.read_log(1, 100).unwrap();
    assert_eq!(log.len(), 5);
    assert!(log.iter().all(|e| e.stamp.node == node));
    let s1: Vec<u64> = log
        .iter()
        .filter(|e| e.writes[0].key == Key::from("s1"))
        .map(|e| e.stamp.time)
        .collect();
    assert_eq!(s1.len(), 2);
    assert!(s1[0] < s1[1]);
    let s2: Vec<(u64, bool)> = log
        .iter()
        .filter(|e| e.writes[0].key == Key::from("s2"))
        .map(|e| (e.stamp.time, matches!(e.writes[0].op, WriteOp::Delete)))
        .collect();
    assert_eq!(s2.len(), 2);
    assert!(s2[0].0 < s2[1].0 && !s2[0].1 && s2[1].1);
    let pg_stamp: u64 = pg
        .query(r#"SELECT stamp_time FROM thresholds WHERE key = '"s1"'"#)
        .parse()
        .unwrap();
    assert_eq!(
        h.db.get("thresholds", "s1").unwrap().unwrap().stamp().time,
        pg_stamp
    );
    rt.block_on(src.stop());
}

#[test]
fn hostile_rows_are_refused_in_sql_or_skipped_by_the_reader() {
    let pg = Postgres::start();
    let rt = runtime();
    let h = hub("hub-1");
    let src = PgSource::spawn(rt.handle(), h.db.clone(), config(&pg, "hub-1")).unwrap();
    wait_status(&src, "first load", |s| s.reloads == 1);
    rt.block_on(async {
        let c = client(&pg).await;
        for (sql, says) in [
            (
                r#"INSERT INTO thresholds (record) VALUES ('[1, 2]')"#,
                "JSON object",
            ),
            (
                r#"INSERT INTO thresholds (key, record) VALUES ('"a"', '{"sensor": "b"}')"#,
                "but key is",
            ),
            (
                r#"INSERT INTO thresholds (record) VALUES ('{"max": 1}')"#,
                "key must be",
            ),
            (
                r#"INSERT INTO thresholds (key, record) VALUES ('{"o": 1}', '{"max": 1}')"#,
                "key must be",
            ),
        ] {
            let e = c.batch_execute(sql).await.expect_err(sql);
            let why = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            assert!(why.contains(says), "{sql}: {why}");
        }
    });
    // A change row nobody's trigger could have written (a float key, a
    // record that is not an object): skipped and reported; the next one
    // still arrives.
    let node = source_node(&pg);
    pg.query(&format!(
        "INSERT INTO tidelog_changes (pg_table, key, record, deleted, stamp_time, stamp_node) VALUES \
         ('public.thresholds', '1.5', '{{}}', false, 1, {node}), \
         ('public.thresholds', '\"x\"', '[1]', false, 1, {node})"
    ));
    pg.query(r#"INSERT INTO thresholds (record) VALUES ('{"sensor": "ok", "max": 1}')"#);
    wait_for("the good change", || max_of(&h.db, "ok") == Some(1));
    // Counted once the batch's commit returned.
    wait_status(&src, "the count", |s| s.applied == 1);
    let s = src.status();
    assert_eq!(s.refused, 2, "{s:?}");
    assert!(s.last_error.is_some_and(|e| e.contains("refused")));
    assert!(h.db.get("thresholds", "x").unwrap().is_none());
    rt.block_on(src.stop());
}

#[test]
fn a_table_of_another_shape_is_a_typed_error_naming_the_column() {
    let pg = Postgres::start();
    pg.query(
        "CREATE TABLE thresholds (key jsonb PRIMARY KEY, record jsonb, deleted boolean NOT NULL, \
         stamp_time bigint NOT NULL, stamp_node bigint NOT NULL)",
    );
    let rt = runtime();
    let h = hub("hub-1");
    let src = PgSource::spawn(rt.handle(), h.db.clone(), config(&pg, "hub-1")).unwrap();
    wait_status(&src, "the layout error", |s| s.last_error.is_some());
    let e = src.status().last_error.unwrap();
    assert!(
        e.contains("`stamp_node` is bigint") && e.contains("numeric(20,0)"),
        "{e}"
    );
    let mut bad = config(&pg, "hub-1");
    bad.primary_key = Some("id".into());
    let e = PgSource::spawn(rt.handle(), h.db.clone(), bad)
        .err()
        .unwrap();
    assert!(
        !e.transient && e.message.contains("keys on \"sensor\""),
        "{e}"
    );
    let mut missing = config(&pg, "hub-1");
    missing.table = "nope".into();
    assert!(PgSource::spawn(rt.handle(), h.db.clone(), missing).is_err());
    rt.block_on(src.stop());
}

#[test]
fn a_change_that_commits_late_with_a_lower_id_is_not_skipped() {
    let pg = Postgres::start();
    let rt = runtime();
    let h = hub("hub-1");
    let src = PgSource::spawn(rt.handle(), h.db.clone(), config(&pg, "hub-1")).unwrap();
    wait_status(&src, "first load", |s| s.reloads == 1);
    rt.block_on(async {
        let mut a = client(&pg).await;
        let b = client(&pg).await;
        let watcher = client(&pg).await;
        let tx = a.transaction().await.unwrap();
        tx.batch_execute(r#"INSERT INTO thresholds (record) VALUES ('{"sensor": "first", "max": 1}')"#)
            .await
            .unwrap();
        let b_pid: i32 = b.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        let second = tokio::spawn(async move {
            b.batch_execute(r#"INSERT INTO thresholds (record) VALUES ('{"sensor": "second", "max": 2}')"#)
                .await
                .unwrap();
        });
        // Either the second writer waits for the first (the capture lock),
        // or, were ids not in commit order, it commits first with the
        // higher id: then wait until the reader has moved past it, so the
        // first one's lower id would be behind the resume point.
        loop {
            if second.is_finished() {
                let db = h.db.clone();
                tokio::task::spawn_blocking(move || {
                    wait_for("the second change", || max_of(&db, "second") == Some(2))
                })
                .await
                .unwrap();
                break;
            }
            let waiting: bool = watcher
                .query_one(
                    "SELECT wait_event_type IS NOT DISTINCT FROM 'Lock' FROM pg_stat_activity WHERE pid = $1",
                    &[&b_pid],
                )
                .await
                .unwrap()
                .get(0);
            if waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(max_of(&h.db, "first"), None, "uncommitted");
        tx.commit().await.unwrap();
        second.await.unwrap();
    });
    wait_for("both changes", || {
        max_of(&h.db, "first") == Some(1) && max_of(&h.db, "second") == Some(2)
    });
    let ids = pg.query("SELECT string_agg(key #>> '{}', ',' ORDER BY id) FROM tidelog_changes");
    assert!(
        ids.is_empty() || ids == "first,second",
        "ids in commit order: {ids}"
    );
    rt.block_on(src.stop());
}

#[test]
fn writes_by_the_sink_are_not_captured() {
    let pg = Postgres::start();
    let rt = runtime();
    let h = hub("hub-1");
    let src = PgSource::spawn(rt.handle(), h.db.clone(), config(&pg, "hub-1")).unwrap();
    wait_status(&src, "first load", |s| s.reloads == 1);
    pg.query(
        r#"BEGIN; SET LOCAL tidelog.writer = 'sink';
           INSERT INTO thresholds (key, record, deleted, stamp_time, stamp_node)
             VALUES ('"from-edge"', '{"sensor": "from-edge", "max": 9}', false, 123456, 42);
           COMMIT"#,
    );
    // A later plain write in the same session: captured as ever.
    pg.query(r#"INSERT INTO thresholds (record) VALUES ('{"sensor": "after", "max": 1}')"#);
    wait_for("the plain write", || max_of(&h.db, "after") == Some(1));
    assert!(h.db.get("thresholds", "from-edge").unwrap().is_none());
    assert_eq!(
        pg.query(r#"SELECT count(*) FROM tidelog_changes WHERE key = '"from-edge"'"#),
        "0"
    );
    // Not restamped either: the sink's stamp stays the edge's.
    assert_eq!(
        pg.query(r#"SELECT stamp_time, stamp_node FROM thresholds WHERE key = '"from-edge"'"#),
        "123456|42"
    );
    wait_status(&src, "the count", |s| s.applied >= 1);
    assert_eq!(src.status().applied, 1);
    rt.block_on(src.stop());
}

fn write_range(pg: &Postgres, from: u32, to: u32) {
    for i in from..to {
        pg.query(&format!(
            r#"INSERT INTO thresholds (record) VALUES ('{{"sensor": "k{}", "max": {i}}}')
               ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record"#,
            i % 20
        ));
    }
}

/// Every row of PostgreSQL's table is in tidelog at the same stamp.
fn assert_same(pg: &Postgres, db: &Database) {
    let rows = pg.query("SELECT key #>> '{}', deleted, stamp_time FROM thresholds ORDER BY 1");
    for line in rows.lines() {
        let f: Vec<&str> = line.split('|').collect();
        let stamp: u64 = f[2].parse().unwrap();
        let got = db.get("thresholds", f[0]).unwrap();
        match f[1] {
            "t" => assert!(got.is_none(), "{line}"),
            _ => assert_eq!(got.map(|r| r.stamp().time), Some(stamp), "{line}"),
        }
    }
}

#[test]
fn restarts_of_postgres_and_of_the_reader_lose_nothing_and_apply_nothing_twice() {
    let mut pg = Postgres::start();
    let rt = runtime();
    let h = hub("hub-1");
    let src = PgSource::spawn(rt.handle(), h.db.clone(), config(&pg, "hub-1")).unwrap();
    wait_status(&src, "first load", |s| s.reloads == 1);
    write_range(&pg, 0, 40);
    pg.kill();
    wait_status(&src, "disconnected", |s| !s.connected);
    pg.restart();
    write_range(&pg, 40, 80);
    wait_for("caught up after the kill", || {
        max_of(&h.db, "k19") == Some(79)
    });
    assert!(src.status().reconnects >= 1);
    rt.block_on(src.stop());
    // Written while no reader runs: the next one resumes from tidelog's
    // resume point, with no reload and nothing it had applied again.
    write_range(&pg, 80, 120);
    pg.query(r#"DELETE FROM thresholds WHERE key = '"k3"'"#);
    let src = PgSource::spawn(rt.handle(), h.db.clone(), config(&pg, "hub-1")).unwrap();
    wait_for("caught up after the reader's restart", || {
        max_of(&h.db, "k19") == Some(119) && h.db.get("thresholds", "k3").unwrap().is_none()
    });
    wait_status(&src, "the count", |s| s.applied >= 41);
    let s = src.status();
    assert_eq!((s.reloads, s.superseded, s.refused), (0, 0, 0), "{s:?}");
    assert_eq!(s.applied, 41);
    assert_same(&pg, &h.db);
    rt.block_on(src.stop());
}

#[test]
fn a_recreated_change_table_makes_the_reader_reload_rather_than_wait_forever() {
    let pg = Postgres::start();
    let rt = runtime();
    let h = hub("hub-1");
    let src = PgSource::spawn(rt.handle(), h.db.clone(), config(&pg, "hub-1")).unwrap();
    wait_status(&src, "first load", |s| s.reloads == 1);
    write_range(&pg, 0, 10);
    wait_for("applied", || max_of(&h.db, "k9") == Some(9));
    rt.block_on(src.stop());
    pg.query("DROP TABLE tidelog_changes; DELETE FROM tidelog_source_trim");
    let src = PgSource::spawn(rt.handle(), h.db.clone(), config(&pg, "hub-1")).unwrap();
    wait_status(&src, "the reload", |s| s.reloads == 1);
    assert!(src
        .status()
        .last_reload
        .is_some_and(|r| r.contains("recreated")));
    pg.query(r#"UPDATE thresholds SET record = record || '{"max": 99}' WHERE key = '"k2"'"#);
    wait_for("a change after the recreation", || {
        max_of(&h.db, "k2") == Some(99)
    });
    rt.block_on(src.stop());
}

#[test]
fn a_new_hub_loads_the_existing_table_tombstones_included_then_follows() {
    let pg = Postgres::start();
    let rt = runtime();
    let first = hub("hub-1");
    let src1 = PgSource::spawn(rt.handle(), first.db.clone(), config(&pg, "hub-1")).unwrap();
    wait_status(&src1, "first load", |s| s.reloads == 1);
    write_range(&pg, 0, 30);
    pg.query(r#"DELETE FROM thresholds WHERE key = '"k5"'"#);
    wait_for("hub-1 caught up", || {
        first.db.get("thresholds", "k5").unwrap().is_none()
    });
    let second = hub("hub-2");
    // A tombstone the new hub must learn: its older record is there first.
    second
        .db
        .apply_remote(
            &[tidelog::RemoteTxn {
                stamp: tidelog::Stamp {
                    time: 1 << 16,
                    node: 9,
                },
                writes: vec![tidelog::LogWrite {
                    table: "thresholds".into(),
                    key: "k5".into(),
                    op: WriteOp::Put {
                        json: r#"{"sensor": "k5", "max": -1}"#.into(),
                        created: 1 << 16,
                    },
                }],
            }],
            None,
        )
        .unwrap();
    let src2 = PgSource::spawn(rt.handle(), second.db.clone(), config(&pg, "hub-2")).unwrap();
    wait_status(&src2, "hub-2 loaded", |s| s.reloads == 1 && s.resume_id > 0);
    assert!(second.db.get("thresholds", "k5").unwrap().is_none());
    assert_same(&pg, &second.db);
    assert_eq!(src2.status().applied, 20, "19 records and 1 tombstone");
    pg.query(r#"UPDATE thresholds SET record = record || '{"max": 1000}' WHERE key = '"k1"'"#);
    wait_for("the change after the load", || {
        max_of(&second.db, "k1") == Some(1000)
    });
    assert_eq!(src2.status().reloads, 1);
    rt.block_on(src1.stop());
    rt.block_on(src2.stop());
}

#[test]
fn retention_trims_what_every_hub_applied_and_a_hub_past_the_cap_reloads() {
    let pg = Postgres::start();
    let rt = runtime();
    let (h1, h2) = (hub("hub-1"), hub("hub-2"));
    let quick = |name: &str| {
        let mut c = config(&pg, name);
        c.trim_interval = Duration::from_millis(50);
        c.max_rows = 10;
        c
    };
    let s1 = PgSource::spawn(rt.handle(), h1.db.clone(), quick("hub-1")).unwrap();
    let s2 = PgSource::spawn(rt.handle(), h2.db.clone(), quick("hub-2")).unwrap();
    wait_status(&s1, "hub-1 loaded", |s| s.reloads == 1);
    wait_status(&s2, "hub-2 loaded", |s| s.reloads == 1);
    write_range(&pg, 0, 5);
    wait_for("both applied", || {
        max_of(&h1.db, "k4") == Some(4) && max_of(&h2.db, "k4") == Some(4)
    });
    // Applied by every hub: trimmed, although far below the cap.
    wait_for("trimmed", || {
        pg.query("SELECT count(*) FROM tidelog_changes") == "0"
    });
    rt.block_on(s2.stop());
    // hub-2 is away: its progress holds changes back up to the cap only.
    write_range(&pg, 5, 40);
    wait_for("hub-1 applied", || max_of(&h1.db, "k19") == Some(39));
    wait_for("trimmed to the cap", || {
        pg.query("SELECT count(*) <= 10 FROM tidelog_changes") == "t"
    });
    let s2 = PgSource::spawn(rt.handle(), h2.db.clone(), quick("hub-2")).unwrap();
    wait_for("hub-2 reloaded", || max_of(&h2.db, "k19") == Some(39));
    wait_status(&s2, "the reload counted", |s| s.reloads == 1);
    let st = s2.status();
    assert_eq!(st.reloads, 1, "{st:?}");
    assert!(st.last_reload.is_some_and(|r| r.contains("trimmed")));
    assert_same(&pg, &h2.db);
    wait_status(&s1, "hub-1's trims counted", |s| s.trimmed > 0);
    rt.block_on(s1.stop());
    rt.block_on(s2.stop());
}

/// What the triggers cost a SQL writer, next to the same table without
/// them in the same run, and how fast the reader moves changes into
/// tidelog. Reported, never asserted.
#[test]
fn pg_source_capture_overhead() {
    // Logical decoding on, for the slot compared against below.
    let pg = Postgres::start_with(&["wal_level = logical"]);
    let rt = runtime();
    let h = hub("hub-1");
    let src = PgSource::spawn(rt.handle(), h.db.clone(), config(&pg, "hub-1")).unwrap();
    wait_status(&src, "first load", |s| s.reloads == 1);
    rt.block_on(src.stop());
    pg.query("CREATE TABLE plain (LIKE thresholds INCLUDING ALL)");
    const N: i64 = 2000;
    // Alternating rounds, so the machine's load drifts over both alike;
    // without waiting for the WAL flush, which is the same on both sides
    // and would drown the triggers' cost in fsync noise.
    let (plain, sourced) = rt.block_on(async {
        let c = client(&pg).await;
        c.batch_execute("SET synchronous_commit = off").await.unwrap();
        let plain = c
            .prepare("INSERT INTO plain (key, record, stamp_time, stamp_node) VALUES ($1::text::jsonb, $2::text::jsonb, 1, 1)")
            .await
            .unwrap();
        let sourced = c
            .prepare("INSERT INTO thresholds (key, record) VALUES ($1::text::jsonb, $2::text::jsonb)")
            .await
            .unwrap();
        let mut times = [Duration::ZERO; 2];
        for round in 0..10 {
            for (side, ins) in [&plain, &sourced].into_iter().enumerate() {
                let start = Instant::now();
                for i in round * N / 10..(round + 1) * N / 10 {
                    let key = format!("\"k{i}\"");
                    let rec = format!(r#"{{"sensor": "k{i}", "max": {i}, "pad": "{}"}}"#, "x".repeat(60));
                    c.execute(ins, &[&key, &rec]).await.unwrap();
                }
                times[side] += start.elapsed();
            }
        }
        (times[0], times[1])
    });
    let rate = |d: Duration| N as f64 / d.as_secs_f64();
    println!(
        "single-row INSERT statements (synchronous_commit off): plain {:.0}/s, with capture triggers {:.0}/s (ratio {:.2}, {:.0} us extra per write)",
        rate(plain),
        rate(sourced),
        sourced.as_secs_f64() / plain.as_secs_f64(),
        (sourced.as_secs_f64() - plain.as_secs_f64()) * 1e6 / N as f64
    );
    // The alternative: a logical replication slot, here one whose hub is
    // away: it holds WAL back for the whole cluster until it is read.
    pg.query("SELECT pg_create_logical_replication_slot('absent_hub', 'test_decoding')");
    let bulk = |table: &str, extra: &str| {
        let start = Instant::now();
        pg.query(&format!(
            "INSERT INTO {table} (key, record{extra}) SELECT to_jsonb('b' || g), \
             jsonb_build_object('sensor', 'b' || g, 'max', g){} FROM generate_series(1, {}) g",
            if extra.is_empty() { "" } else { ", 1, 1" },
            10 * N
        ));
        rate(start.elapsed()) * 10.0
    };
    let plain_bulk = bulk("plain", ", stamp_time, stamp_node");
    let sourced_bulk = bulk("thresholds", "");
    println!(
        "one {}-row INSERT: plain {plain_bulk:.0} rows/s, through the triggers {sourced_bulk:.0} rows/s (ratio {:.2})",
        10 * N,
        plain_bulk / sourced_bulk
    );
    let held: f64 = pg
        .query(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots",
        )
        .parse()
        .unwrap();
    let start = Instant::now();
    let decoded: f64 = pg
        .query("SELECT count(*) FROM pg_logical_slot_get_changes('absent_hub', NULL, NULL)")
        .parse()
        .unwrap();
    println!(
        "an unread logical slot held {:.1} MiB of WAL after these writes (it grows until read or dropped); \
         decoding them (test_decoding, in the server) ran at {:.0} changes/s",
        held / 1048576.0,
        decoded / start.elapsed().as_secs_f64()
    );
    pg.query("SELECT pg_drop_replication_slot('absent_hub')");
    let start = Instant::now();
    let src = PgSource::spawn(rt.handle(), h.db.clone(), config(&pg, "hub-1")).unwrap();
    wait_for("all changes in tidelog", || {
        src.status().applied >= (11 * N) as u64
    });
    println!(
        "reader: {} changes into tidelog at {:.0} changes/s",
        11 * N,
        (11 * N) as f64 / start.elapsed().as_secs_f64()
    );
    rt.block_on(src.stop());
}
