//! A real `tidelog serve` hub with a PostgreSQL `[[sources]]` for
//! `thresholds` and three edges subscribed to it over mutual TLS: a
//! threshold changed by SQL reaches every edge, and at 100 changes/s the
//! latency from SQL commit to visible on each edge is reported (p50/p99;
//! the issue's target is p99 under 2 s, never asserted here).

mod cli_common;
mod pg_common;
mod repl_common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cli_common::*;
use pg_common::Postgres;
use repl_common::{fast, wait_until};
use tidelog::*;

const T: Duration = Duration::from_secs(30);
const EDGES: [&str; 3] = ["edge-1", "edge-2", "edge-3"];

fn hub_config(dir: &Path, pg: &Postgres) -> std::path::PathBuf {
    let peers: String = EDGES
        .iter()
        .map(|e| {
            format!(
                "[[peers]]\nname = \"{e}\"\ntables = [{{ table = \"thresholds\", publish = true }}]\n"
            )
        })
        .collect();
    let text = format!(
        r#"
node_name = "cloud"
data_dir = "cloud-data"
listen = "127.0.0.1:0"
status_interval_secs = 0

[tls]
cert = "pki/cloud.pem"
key = "pki/cloud.key"
ca = "pki/ca.pem"

{FAST_TIMERS}
[[tables]]
name = "thresholds"
primary_key = "sensor"

{peers}
[[sources]]
kind = "postgres"
url = "{}"
table = "thresholds"
"#,
        pg.url()
    );
    let path = dir.join("cloud.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn edge(dir: &Path, pki: &Path, name: &str, addr: &str) -> Database {
    let db = Database::open(dir.join(name), OpenOptions::new(name)).unwrap();
    db.create_table("thresholds", TableOptions::default().primary_key("sensor"))
        .unwrap();
    let opts = ReplicationOptions::mutual_tls(
        pki.join(format!("{name}.pem")),
        pki.join(format!("{name}.key")),
        pki.join("ca.pem"),
    );
    db.start_replication(fast(opts)).unwrap();
    db.add_peer(
        PeerConfig::new("cloud")
            .address(addr)
            .table(TableFlow::subscribe("thresholds")),
    )
    .unwrap();
    db
}

fn now_ms_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[test]
fn sql_changes_reach_three_edges_through_a_serve_hub_with_latency_reported() {
    let pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut nodes = vec!["cloud"];
    nodes.extend(EDGES);
    let pki = make_certs(dir, &nodes);
    let config = hub_config(dir, &pg);
    let mut serve = Serve::start(&config);
    let addr = serve.ready();
    serve.wait_line("the source", T, |l| {
        l.contains("source `postgres:thresholds`: reading PostgreSQL table thresholds")
    });
    let edges: Vec<Database> = EDGES.iter().map(|e| edge(dir, &pki, e, &addr)).collect();
    // When each edge first sees each `seq`.
    let seen: Arc<Mutex<HashMap<(usize, i64), f64>>> = Arc::default();
    for (i, e) in edges.iter().enumerate() {
        let seen = seen.clone();
        e.on_change("thresholds", move |ev: &ChangeEvent| {
            let at = now_ms_f64();
            for c in &ev.changes {
                let seq = c
                    .record
                    .as_ref()
                    .and_then(|r| r.to_value().get("seq").and_then(|v| v.as_i64()));
                if let Some(seq) = seq {
                    seen.lock().unwrap().entry((i, seq)).or_insert(at);
                }
            }
        })
        .unwrap();
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&pg.conn_string(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    });
    // The triggers are in place once the source has connected.
    wait_until("the source's triggers", T, || {
        pg.query("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tidelog_source_%'") == "3"
    });
    let write = |seq: i64, sensor: &str| -> f64 {
        rt.block_on(client.execute(
            "INSERT INTO thresholds (record) VALUES (jsonb_build_object('sensor', $1::text, 'max', 50, 'seq', $2::bigint))
             ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record",
            &[&sensor, &seq],
        ))
        .unwrap();
        now_ms_f64()
    };
    write(-1, "s1");
    wait_until("the threshold on all 3 edges", T, || {
        edges
            .iter()
            .all(|e| e.get("thresholds", "s1").ok().flatten().is_some())
    });
    // An update of the same threshold by SQL follows it everywhere.
    rt.block_on(client.execute(
        r#"UPDATE thresholds SET record = record || '{"max": 70}' WHERE key = '"s1"'"#,
        &[],
    ))
    .unwrap();
    wait_until("the update on all 3 edges", T, || {
        edges.iter().all(|e| {
            e.get("thresholds", "s1")
                .ok()
                .flatten()
                .is_some_and(|r| r.to_value()["max"] == 70)
        })
    });

    // 100 changes/s for 3 s, paced by the clock, each to its own key.
    const N: i64 = 300;
    let start = Instant::now();
    let mut committed = Vec::with_capacity(N as usize);
    for seq in 0..N {
        let due = start + Duration::from_millis(seq as u64 * 10);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        committed.push(write(seq, &format!("lat-{seq}")));
    }
    let rate = N as f64 / start.elapsed().as_secs_f64();
    wait_until("every change on every edge", T, || {
        let seen = seen.lock().unwrap();
        seen.keys().filter(|(_, s)| *s >= 0).count() >= 3 * N as usize
    });
    let seen = seen.lock().unwrap();
    let mut lat: Vec<f64> = (0..3)
        .flat_map(|e| (0..N).map(move |s| (e, s)))
        .map(|(e, s)| seen[&(e, s)] - committed[s as usize])
        .collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "SQL commit -> visible on each of 3 edges, {N} changes at {rate:.0}/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < 2000 ms)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );

    // Status names the source with what it applied.
    let out = tidelog(dir, &["status", "--json", "--config", "cloud.toml"]);
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let src = &status["sources"][0];
    assert_eq!(src["name"], "postgres:thresholds", "{status}");
    assert_eq!(src["pg_table"], "public.thresholds");
    assert!(src["applied"].as_u64().unwrap() >= N as u64 + 2, "{status}");
    assert_eq!(src["refused"], 0);
    assert_eq!(status["peers"].as_array().unwrap().len(), 3);
    let text = tidelog(dir, &["status", "--config", "cloud.toml"]);
    assert!(String::from_utf8_lossy(&text.stdout)
        .contains("source `postgres:thresholds` from public.thresholds connected"));

    for e in edges {
        e.close().unwrap();
    }
    let (exit, stderr) = serve.terminate();
    assert!(exit.success(), "{stderr}");
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
}
