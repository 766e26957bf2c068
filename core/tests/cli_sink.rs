//! A real `tidelog serve` hub with a `[[sinks]]` PostgreSQL sink for
//! `alerts`, two in-process edges writing alerts to it over mutual TLS, the
//! hub SIGKILLed once mid-stream and restarted: PostgreSQL ends with exactly
//! the union of the edges' tables, each row at the edge's stamp, no key
//! twice; `tidelog status --json` and `/metrics` show the sink.
#![cfg(feature = "postgres")]

mod cli_common;
mod pg_common;
mod repl_common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cli_common::*;
use pg_common::Postgres;
use repl_common::{fast, wait_until};
use serde_json::{json, Value};
use tidelog::*;

const T: Duration = Duration::from_secs(40);
const PER_EDGE: u64 = 4000;

fn write_config(dir: &Path, pg: &Postgres, metrics: &str) -> PathBuf {
    let text = format!(
        r#"
node_name = "cloud"
data_dir = "cloud-data"
listen = "127.0.0.1:0"
status_interval_secs = 0
metrics = {{ listen = "{metrics}" }}
[tls]
cert = "pki/cloud.pem"
key = "pki/cloud.key"
ca = "pki/ca.pem"
{FAST_TIMERS}
[[tables]]
name = "alerts"
[[peers]]
name = "edge-1"
tables = [{{ table = "alerts", subscribe = true }}]
[[peers]]
name = "edge-2"
tables = [{{ table = "alerts", subscribe = true }}]
[[sinks]]
kind = "postgres"
name = "cloud"
url = "{url}"
max_batch_rows = 200
tables = [{{ name = "alerts", pg_table = "fleet_alerts" }}]
"#,
        url = pg.conn_string()
    );
    let path = dir.join("cloud.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn edge(dir: &Path, name: &str, addr: &str) -> Database {
    let db = Database::open(dir.join(name), OpenOptions::new(name)).unwrap();
    let pki = dir.join("pki");
    db.start_replication(fast(ReplicationOptions::mutual_tls(
        pki.join(format!("{name}.pem")),
        pki.join(format!("{name}.key")),
        pki.join("ca.pem"),
    )))
    .unwrap();
    db.create_table("alerts", TableOptions::default()).unwrap();
    db.add_peer(
        PeerConfig::new("cloud")
            .address(addr)
            .table(TableFlow::publish("alerts")),
    )
    .unwrap();
    db
}

/// Writes alerts `name-0..` from `from` to `to`; every tenth deletes the
/// one five before it. Returns the keys deleted.
fn write(db: &Database, name: &str, from: u64, to: u64) -> BTreeSet<String> {
    let mut deleted = BTreeSet::new();
    for i in from..to {
        if i % 10 == 9 {
            let k = format!("{name}-{}", i - 5);
            db.delete("alerts", k.as_str()).unwrap();
            deleted.insert(k);
        } else {
            db.upsert(
                "alerts",
                json!({"id": format!("{name}-{i}"), "level": i % 4, "msg": "pump pressure"}),
            )
            .unwrap();
        }
    }
    deleted
}

fn metrics(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// PostgreSQL's rows: key -> (record, deleted, stamp).
type PgRows = BTreeMap<String, (Option<Value>, bool, Stamp)>;

fn pg_rows(pg: &Postgres) -> (PgRows, usize) {
    let text = pg.query(
        "SELECT key #>> '{}', deleted, stamp_time, stamp_node, coalesce(record::text, '') FROM fleet_alerts",
    );
    let mut rows = BTreeMap::new();
    let mut n = 0;
    for line in text.lines() {
        n += 1;
        let mut f = line.splitn(5, '|');
        let mut next = || f.next().expect("five columns");
        let key = next().to_string();
        let deleted = next() == "t";
        let time = next().parse().unwrap();
        let node = next().parse().unwrap();
        let rec = next();
        let record = (!rec.is_empty()).then(|| serde_json::from_str(rec).unwrap());
        rows.insert(key, (record, deleted, Stamp { time, node }));
    }
    (rows, n)
}

#[test]
fn a_hub_sinks_the_edges_alerts_into_postgres_exactly_once_across_a_sigkill() {
    let pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_certs(dir, &["cloud", "edge-1", "edge-2"]);
    // A fixed port, so the restarted hub serves /metrics where it was.
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let config = write_config(dir, &pg, &metrics_addr);
    let mut serve = Serve::start(&config);
    let addr = serve.ready();
    set_listen(&config, &addr);
    let edges = [edge(dir, "edge-1", &addr), edge(dir, "edge-2", &addr)];

    let write_all = |from: u64, to: u64| {
        std::thread::scope(|s| {
            let hs: Vec<_> = edges
                .iter()
                .zip(["edge-1", "edge-2"])
                .map(|(db, name)| s.spawn(move || write(db, name, from, to)))
                .collect();
            hs.into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect::<BTreeSet<_>>()
        })
    };
    let mut deleted = write_all(0, PER_EDGE / 2);
    // SIGKILL the hub once rows are landing, mid-stream.
    wait_until("rows in PostgreSQL", T, || {
        pg.query("SELECT to_regclass('fleet_alerts') IS NOT NULL") == "t"
            && pg.query("SELECT count(*) FROM fleet_alerts") != "0"
    });
    serve.kill();
    deleted.extend(write_all(PER_EDGE / 2, PER_EDGE * 3 / 4));
    let mut serve = Serve::start(&config);
    serve.ready();
    deleted.extend(write_all(PER_EDGE * 3 / 4, PER_EDGE));

    for e in &edges {
        let last = e.log_bounds().unwrap().last;
        wait_until("the hub acknowledging every edge write", T, || {
            e.peer_status("cloud").unwrap().acked_seq >= last
        });
    }
    let mut sink = Value::Null;
    wait_until("the sink catching up", T, || {
        sink = status_json(dir, "cloud.toml")["sinks"][0].clone();
        sink["backlog"] == 0
            && sink["resume_point"] == sink["log_head"]
            && sink["connected"] == true
    });
    assert_eq!(sink["name"], "postgres:cloud");
    assert!(sink["rows"].as_u64().unwrap() > 0, "{sink}");

    let out = tidelog(dir, &["status", "--config", "cloud.toml"]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("sink postgres:cloud: connected, applied through"),
        "{human}"
    );
    let text = metrics(&metrics_addr);
    assert!(
        text.contains("tidelog_sink_backlog{sink=\"postgres:cloud\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("tidelog_sink_rows_total{sink=\"postgres:cloud\"}"),
        "{text}"
    );
    assert!(
        text.contains("tidelog_sink_retries_total{sink=\"postgres:cloud\"}"),
        "{text}"
    );
    assert!(
        text.contains("tidelog_sink_lag_seconds{sink=\"postgres:cloud\"}"),
        "{text}"
    );

    // The union of the edges' tables (their key ranges are disjoint).
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
    let live: BTreeMap<_, _> = rows
        .iter()
        .filter(|(_, (_, d, _))| !d)
        .map(|(k, (r, _, s))| (k.clone(), (r.clone().unwrap(), *s)))
        .collect();
    // Count and per-row digest (record and stamp; an older stamp differs).
    assert_eq!(live.len(), union.len());
    assert_eq!(live, union);
    let tombstones: BTreeSet<String> = rows
        .iter()
        .filter(|(_, (r, d, _))| *d && r.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(tombstones, deleted);
    assert_eq!(live.len() + tombstones.len(), rows.len());

    let (status, err) = serve.terminate();
    assert!(status.success(), "{err}");
    for e in edges {
        e.close().unwrap();
    }
}
