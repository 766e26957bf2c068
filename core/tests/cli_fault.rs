//! The fault run of issue 19's "Done when", seeded: 3 edges writing alerts
//! (new keys, overwrites and deletes of their own keys), 2 `tidelog serve`
//! hubs named `cloud`, one destination; during the writes each hub is
//! SIGKILLed once and restarted on its own data, the destination server
//! is restarted once, and every edge is on both hubs (fault_common has the
//! schedule). Afterwards the destination holds exactly the union of the
//! edges' tables: per key the edge's record and stamp (digest of key,
//! record and stamp), tombstones for the deletes, no key twice, no row at
//! an older stamp.
//!
//! - PostgreSQL sink: `TIDELOG_FAULT_ROWS` distinct keys (default
//!   100,000), PostgreSQL SIGKILLed and restarted (it stays down until a
//!   hub's sink has found it gone); the million by hand:
//!   `cargo test --release -p tidelog --test cli_fault -- --ignored --nocapture`.
//! - JetStream sink: the same run, nats-server restarted; the stream read back
//!   through a `StampGuard` consumer: 0 missing keys, 0 wrong final
//!   states, 0 message ids stored twice. nats-server is stopped (SIGTERM)
//!   and started again, a restart as the issue asks; whether a SIGKILLed
//!   nats-server keeps every publish it acknowledged is nats-server's
//!   store's business and not tested here.
//!
//! `TIDELOG_FAULT_SEED` repeats a run (the seed is printed). Timings
//! (rows/s end to end, time to converge after the last fault) and what the
//! faults cost (resyncs, rows the hubs got again) are printed.
#![cfg(all(feature = "cli", feature = "postgres", feature = "jetstream"))]

mod cli_common;
mod fault_common;
mod nats_common;
mod pg_common;
mod repl_common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fault_common::*;
use nats_common::sink::{duplicates, read_all, runtime};
use nats_common::NatsServer;
use pg_common::Postgres;
use serde_json::Value;
use tidelog::cloud::jetstream::{StampGuard, Verdict};
use tidelog::{Key, Stamp};

/// How long the hubs may take to drain after the writes.
const CONVERGE: Duration = Duration::from_secs(600);

fn report(what: &str, rows: u64, t: &Timings, converged: Instant) {
    let secs = |d: Duration| d.as_secs_f64();
    eprintln!(
        "fault[{what}]: {rows} rows: writes took {:.1} s; converged {:.1} s after the start \
         ({:.0} rows/s end to end), {:.1} s after the last fault, {:.1} s after the last write",
        secs(t.writes_done - t.start),
        secs(converged - t.start),
        rows as f64 / secs(converged - t.start),
        secs(converged - t.last_fault),
        secs(converged - t.writes_done),
    );
}

// ---- PostgreSQL ----

fn pg_sink(pg: &Postgres) -> String {
    format!(
        r#"[[sinks]]
kind = "postgres"
name = "cloud"
url = "{}"
tables = [{{ name = "alerts", pg_table = "fleet_alerts" }}]
"#,
        pg.conn_string()
    )
}

/// PostgreSQL's rows as digests; panics on a key twice.
fn pg_state(pg: &Postgres) -> HashMap<String, Want> {
    let text = pg.query(
        "SELECT key #>> '{}', deleted, stamp_time, stamp_node, coalesce(record::text, '') FROM fleet_alerts",
    );
    let mut got = HashMap::new();
    for line in text.lines() {
        let mut f = line.splitn(5, '|');
        let mut next = || f.next().expect("five columns");
        let key = next().to_string();
        let deleted = next() == "t";
        let stamp = Stamp {
            time: next().parse().unwrap(),
            node: next().parse().unwrap(),
        };
        let rec = next();
        let rec: Option<Value> = (!deleted).then(|| serde_json::from_str(rec).unwrap());
        let w = Want {
            digest: row_digest(&key, rec.as_ref(), stamp),
            stamp,
            deleted,
        };
        assert!(
            got.insert(key.clone(), w).is_none(),
            "key {key} twice in PostgreSQL"
        );
    }
    got
}

fn postgres_fault_run(rows: u64) {
    let seed = seed_from_env();
    eprintln!("fault[postgres]: TIDELOG_FAULT_SEED={seed} TIDELOG_FAULT_ROWS={rows}");
    let mut pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certs(dir);
    let sinks = pg_sink(&pg);
    let mut hubs = [hub_config(dir, "a", &sinks), hub_config(dir, "b", &sinks)];
    // One hub first, so the sink's table is made once, not raced.
    hubs[0].start();
    poll("the sink's table", T, || {
        pg.query("SELECT to_regclass('fleet_alerts') IS NOT NULL") == "t"
    });
    hubs[1].start();
    let edges = edges(dir, &hubs[0].addr, &hubs[1].addr, rows);

    let t = run_with_faults(&edges, &mut hubs, seed, |busy| {
        pg.kill();
        // Down until a sink with writes to apply has found it gone.
        busy.wait_sink_down();
        pg.restart();
    });
    wait_converged(&edges, &hubs, CONVERGE);
    let converged = Instant::now();
    report("postgres", rows, &t, converged);
    print_costs(&edges, &hubs);

    let want = expected(&edges);
    assert_eq!(want.len() as u64, rows);
    let got = pg_state(&pg);
    let distinct = pg.query("SELECT count(*), count(DISTINCT key) FROM fleet_alerts");
    assert_eq!(
        distinct,
        format!("{rows}|{rows}"),
        "rows|distinct keys in PostgreSQL"
    );
    let tombstones = got.values().filter(|w| w.deleted).count();
    let deletes: u64 = edges.iter().map(|e| e.book.lock().unwrap().deletes).sum();
    assert_eq!(
        tombstones as u64, deletes,
        "tombstones against the edges' deletes"
    );
    let diff = compare(&want, &got);
    assert!(
        diff.is_empty(),
        "PostgreSQL is not the union of the edges' tables: {diff:#?}"
    );

    for e in edges {
        e.db.close().unwrap();
    }
    for h in hubs {
        let (exit, err) = h.serve.expect("hub running").terminate();
        assert!(exit.success(), "{err}");
    }
}

#[test]
fn postgres_sink_fault_run() {
    postgres_fault_run(rows_from_env(100_000));
}

/// The issue's million, by hand (in release: the CI form is above).
#[test]
#[ignore = "1,000,000 rows: run by hand in release"]
fn postgres_sink_fault_run_million() {
    postgres_fault_run(rows_from_env(1_000_000));
}

// ---- JetStream ----

fn js_sink(url: &str) -> String {
    // The duplicate window covers the whole run, so every republish a move
    // or restart causes is dropped by the server; beyond it the consumer's
    // StampGuard would be what keeps the final states right.
    format!(
        r#"[[sinks]]
kind = "jetstream"
url = "{url}"
stream = "fleet"
tables = ["alerts"]
duplicate_window = "30m"
timeout = "2s"
"#
    )
}

fn jetstream_fault_run(rows: u64) {
    let seed = seed_from_env();
    eprintln!("fault[jetstream]: TIDELOG_FAULT_SEED={seed} TIDELOG_FAULT_ROWS={rows}");
    let mut nats = NatsServer::start();
    let url = nats.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certs(dir);
    let sinks = js_sink(&url);
    let mut hubs = [hub_config(dir, "a", &sinks), hub_config(dir, "b", &sinks)];
    // One hub first, so the stream is created once, not raced.
    hubs[0].start();
    poll("hub A's sink connected", T, || {
        hubs[0].status()["sinks"][0]["connected"] == true
    });
    hubs[1].start();
    let edges = edges(dir, &hubs[0].addr, &hubs[1].addr, rows);

    let t = run_with_faults(&edges, &mut hubs, seed, |busy| {
        nats.stop();
        busy.wait_sink_down();
        nats.start_again();
    });
    wait_converged(&edges, &hubs, CONVERGE);
    let converged = Instant::now();
    report("jetstream", rows, &t, converged);
    print_costs(&edges, &hubs);

    let want = expected(&edges);
    assert_eq!(want.len() as u64, rows);
    let got_msgs = runtime().block_on(read_all(&url, "fleet"));
    let writes: u64 = edges
        .iter()
        .map(|e| {
            let b = e.book.lock().unwrap();
            b.upserts + b.overwrites + b.deletes
        })
        .sum();
    eprintln!(
        "fault[jetstream]: {} messages in the stream for {writes} writes",
        got_msgs.len()
    );
    assert_eq!(duplicates(&got_msgs), 0, "message ids stored twice");
    // What a consumer applying the StampGuard rule ends with.
    let mut guard = StampGuard::new();
    let mut got = HashMap::new();
    for m in &got_msgs {
        assert_eq!(m.meta.table, "alerts");
        if guard.check(&m.meta) != Verdict::Apply {
            continue;
        }
        let Key::Str(key) = &m.meta.key else {
            panic!("a key that is not a string: {:?}", m.meta.key)
        };
        let rec: Option<Value> =
            (!m.meta.deleted).then(|| serde_json::from_slice(&m.payload).unwrap());
        let w = Want {
            digest: row_digest(key, rec.as_ref(), m.meta.stamp),
            stamp: m.meta.stamp,
            deleted: m.meta.deleted,
        };
        got.insert(key.clone(), w);
    }
    let diff = compare(&want, &got);
    assert!(
        diff.is_empty(),
        "the stream's final states are not the edges': {diff:#?}"
    );

    for e in edges {
        e.db.close().unwrap();
    }
    for h in hubs {
        let (exit, err) = h.serve.expect("hub running").terminate();
        assert!(exit.success(), "{err}");
    }
}

#[test]
fn jetstream_sink_fault_run() {
    jetstream_fault_run(rows_from_env(100_000));
}
