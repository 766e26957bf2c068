//! The PostgreSQL sink's numbers, reported next to a baseline measured in
//! the same run, never asserted (the rows are): rows/s from a hub's log
//! into PostgreSQL next to PostgreSQL's own COPY + upsert, and hub commit
//! to visible in PostgreSQL at 5,000 rows/s.
#![cfg(feature = "postgres")]

mod common;
mod pg_common;
mod pg_sink_common;

use std::time::{Duration, Instant};

use pg_common::Postgres;
use pg_sink_common::*;
use tidelog::cloud::driver;
use tidelog::cloud::postgres::PostgresSink;

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
