//! Two `tidelog serve` hubs in front of one PostgreSQL, both named `cloud`
//! (own certificates and keys from the fleet CA, own data directories),
//! each with a `[[sinks]]` for `alerts` and a `[[sources]]` for
//! `thresholds`; two in-process edges that know both (`address` plus
//! `addresses`) write alerts the whole time. The hub the edges are on is
//! SIGKILLed, they move to the other; it comes back; the other is killed
//! once. PostgreSQL ends with exactly the union of the edges' tables (no
//! key twice, no row at an older stamp than the edge's), and a SQL change
//! to thresholds reaches both edges whichever hub they are on. What the
//! moves cost (rows the sinks were handed again) is printed.
#![cfg(feature = "postgres")]

mod cli_common;
mod pg_common;
mod repl_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cli_common::*;
use pg_common::Postgres;
use repl_common::{fast, wait_until};
use serde_json::{json, Value};
use tidelog::*;

const T: Duration = Duration::from_secs(30);
const EDGES: [&str; 2] = ["edge-1", "edge-2"];

/// `pki/cloud-a.*` and `pki/cloud-b.*`: two certificates for `cloud`, each
/// with its own key, signed by the one CA the edges trust.
fn hub_certs(dir: &Path) {
    let pki = dir.join("pki");
    for tag in ["a", "b"] {
        if tag == "b" {
            let out = tidelog(dir, &["certs", "--out", "pki", "--add", "cloud"]);
            assert!(out.status.success(), "{out:?}");
        }
        for ext in ["pem", "key"] {
            std::fs::rename(
                pki.join(format!("cloud.{ext}")),
                pki.join(format!("cloud-{tag}.{ext}")),
            )
            .unwrap();
        }
    }
    let a = std::fs::read(pki.join("cloud-a.key")).unwrap();
    assert_ne!(a, std::fs::read(pki.join("cloud-b.key")).unwrap());
}

fn hub_config(dir: &Path, pg: &Postgres, tag: &str) -> PathBuf {
    let peers: String = EDGES
        .iter()
        .map(|e| {
            format!(
                "[[peers]]\nname = \"{e}\"\ntables = [{{ table = \"alerts\", subscribe = true }}, {{ table = \"thresholds\", publish = true }}]\n"
            )
        })
        .collect();
    let text = format!(
        r#"
node_name = "cloud"
data_dir = "cloud-{tag}-data"
listen = "127.0.0.1:0"
status_interval_secs = 0
[tls]
cert = "pki/cloud-{tag}.pem"
key = "pki/cloud-{tag}.key"
ca = "pki/ca.pem"
{FAST_TIMERS}
[[tables]]
name = "alerts"
[[tables]]
name = "thresholds"
primary_key = "sensor"
{peers}
[[sinks]]
kind = "postgres"
name = "cloud"
url = "{url}"
max_batch_rows = 200
tables = [{{ name = "alerts", pg_table = "fleet_alerts" }}]
[[sources]]
kind = "postgres"
url = "{url}"
table = "thresholds"
"#,
        url = pg.conn_string()
    );
    let path = dir.join(format!("cloud-{tag}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn edge(dir: &Path, name: &str, a: &str, b: &str) -> Database {
    let db = Database::open(dir.join(name), OpenOptions::new(name)).unwrap();
    let pki = dir.join("pki");
    db.start_replication(fast(ReplicationOptions::mutual_tls(
        pki.join(format!("{name}.pem")),
        pki.join(format!("{name}.key")),
        pki.join("ca.pem"),
    )))
    .unwrap();
    db.create_table("alerts", TableOptions::default()).unwrap();
    db.create_table("thresholds", TableOptions::default().primary_key("sensor"))
        .unwrap();
    db.add_peer(
        PeerConfig::new("cloud")
            .address(a)
            .also_at(b)
            .table(TableFlow::publish("alerts"))
            .table(TableFlow::subscribe("thresholds")),
    )
    .unwrap();
    db
}

/// Waits until every edge has a link up to the hub at `addr`.
fn all_on(edges: &[Database], addr: &str) {
    wait_until(&format!("every edge linked to {addr}"), T, || {
        edges.iter().all(|e| {
            let s = e.peer_status("cloud").unwrap();
            s.connected && s.address.as_deref() == Some(addr)
        })
    });
}

fn set_threshold(pg: &Postgres, max: i64) {
    pg.query(&format!(
        "INSERT INTO thresholds (record) VALUES ('{{\"sensor\": \"s1\", \"max\": {max}}}'::jsonb)
         ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record"
    ));
}

fn threshold_everywhere(edges: &[Database], max: i64) {
    wait_until(&format!("threshold max {max} on every edge"), T, || {
        edges.iter().all(|e| {
            e.get("thresholds", "s1")
                .ok()
                .flatten()
                .is_some_and(|r| r.to_value()["max"] == max)
        })
    });
}

/// PostgreSQL's rows: key -> (record, stamp), and the row count.
fn pg_rows(pg: &Postgres) -> (BTreeMap<String, (Value, Stamp)>, usize) {
    let text = pg.query(
        "SELECT key #>> '{}', stamp_time, stamp_node, record::text FROM fleet_alerts WHERE NOT deleted",
    );
    let mut rows = BTreeMap::new();
    let mut n = 0;
    for line in text.lines() {
        n += 1;
        let mut f = line.splitn(4, '|');
        let mut next = || f.next().expect("four columns");
        let key = next().to_string();
        let time = next().parse().unwrap();
        let node = next().parse().unwrap();
        let record = serde_json::from_str(next()).unwrap();
        rows.insert(key, (record, Stamp { time, node }));
    }
    (rows, n)
}

fn sink_rows(dir: &Path, tag: &str) -> u64 {
    status_json(dir, &format!("cloud-{tag}.toml"))["sinks"][0]["rows"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn edges_fail_over_between_two_hubs_with_nothing_lost_or_doubled_in_postgres() {
    let pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_certs(dir, &["cloud", "edge-1", "edge-2"]);
    hub_certs(dir);
    let (ca, cb) = (hub_config(dir, &pg, "a"), hub_config(dir, &pg, "b"));
    // One hub first, so the sink's and source's tables and triggers are
    // made once, not raced by two creators.
    let mut a = Serve::start(&ca);
    let a_addr = a.ready();
    set_listen(&ca, &a_addr);
    wait_until("the source's triggers", T, || {
        pg.query("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tidelog_source_%'") == "3"
    });
    wait_until("the sink's table", T, || {
        pg.query("SELECT to_regclass('fleet_alerts') IS NOT NULL") == "t"
    });
    let mut b = Serve::start(&cb);
    let b_addr = b.ready();
    set_listen(&cb, &b_addr);

    let edges: Vec<Database> = EDGES
        .iter()
        .map(|n| edge(dir, n, &a_addr, &b_addr))
        .collect();
    all_on(&edges, &a_addr);
    set_threshold(&pg, 50);
    threshold_everywhere(&edges, 50);

    // Writers: new alerts, and every fifth an update of an earlier one, so
    // a row at an older stamp would show.
    let stop = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    let a = std::thread::scope(|s| {
        for (db, name) in edges.iter().zip(EDGES) {
            let (stop, written) = (&stop, &written);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (id, level) = if i % 5 == 4 { (i - 3, i) } else { (i, 0) };
                    db.upsert(
                        "alerts",
                        json!({"id": format!("{name}-{id}"), "level": level}),
                    )
                    .unwrap();
                    written.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
        }
        let rows_now = || {
            pg.query("SELECT count(*) FROM fleet_alerts")
                .parse::<u64>()
                .unwrap()
        };
        wait_until("alerts in PostgreSQL", T, || rows_now() > 200);

        // Kill A, which every edge is on (it is first): they move to B.
        a.kill();
        all_on(&edges, &b_addr);
        set_threshold(&pg, 60);
        threshold_everywhere(&edges, 60);
        let seen = rows_now();
        wait_until("more alerts through hub B", T, || rows_now() > seen + 200);

        // A comes back on its port; then B is killed once: back to A.
        let mut a2 = Serve::start(&ca);
        a2.ready();
        b.kill();
        all_on(&edges, &a_addr);
        set_threshold(&pg, 70);
        threshold_everywhere(&edges, 70);
        let seen = rows_now();
        wait_until("more alerts through hub A again", T, || {
            rows_now() > seen + 200
        });
        stop.store(true, Ordering::Relaxed);
        a2
    });
    let mut b2 = Serve::start(&cb);
    b2.ready();

    for e in &edges {
        let last = e.log_bounds().unwrap().last;
        wait_until("hub A acknowledging every edge write", T, || {
            e.peer_status("cloud").unwrap().acked_seq >= last
        });
    }
    wait_until("hub A's sink catching up", T, || {
        let sink = status_json(dir, "cloud-a.toml")["sinks"][0].clone();
        sink["backlog"] == 0 && sink["resume_point"] == sink["log_head"]
    });

    let mut union = BTreeMap::new();
    for e in &edges {
        for r in e.scan("alerts", &ScanOptions::default()).unwrap() {
            let key = match r.key() {
                Key::Str(s) => s.clone(),
                Key::Int(i) => i.to_string(),
            };
            let rec: Value = serde_json::from_str(r.body_json()).unwrap();
            assert!(union.insert(key, (rec, r.stamp())).is_none());
        }
    }
    let (rows, total) = pg_rows(&pg);
    assert_eq!(total, rows.len(), "a key twice in PostgreSQL");
    let all = pg.query("SELECT count(*) FROM fleet_alerts");
    assert_eq!(all, total.to_string(), "rows in PostgreSQL no edge has");
    // Count, then per row: record and stamp (an older stamp differs).
    assert_eq!(rows.len(), union.len());
    let older: Vec<_> = rows
        .iter()
        .filter(|(k, (_, s))| union.get(*k).is_some_and(|(_, es)| s < es))
        .map(|(k, _)| k.clone())
        .collect();
    assert!(older.is_empty(), "rows at an older stamp: {older:?}");
    assert_eq!(rows, union);

    // What the two moves cost: every row each sink applied, against the
    // writes made and the distinct rows PostgreSQL holds.
    let handed = sink_rows(dir, "a") + sink_rows(dir, "b");
    eprintln!(
        "failover: {} upserts by 2 edges, {} distinct rows in PostgreSQL; \
         the sinks of A (across its restart: only since it) and B applied {handed} rows",
        written.load(Ordering::Relaxed),
        rows.len()
    );
    for e in &edges {
        let s = e.peer_status("cloud").unwrap();
        eprintln!(
            "failover: edge on {:?}: connects {}, resyncs sent {}, thresholds received again (duplicates) {}, syncs received {}",
            s.address, s.connects, s.resyncs_sent, s.duplicates_received, s.syncs_received
        );
    }

    for e in edges {
        e.close().unwrap();
    }
    for s in [a, b2] {
        let (exit, err) = s.terminate();
        assert!(exit.success(), "{err}");
    }
}
