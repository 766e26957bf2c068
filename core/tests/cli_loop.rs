//! The loop through PostgreSQL, without echo: a real `tidelog serve` hub
//! with, for `thresholds`, both a PostgreSQL sink and a PostgreSQL source
//! on the same PostgreSQL table (and a sink for `alerts`), and three
//! mutual-TLS edges that write thresholds and alerts and subscribe to
//! thresholds. Edge writes land in PostgreSQL (sink); SQL edits of edge
//! rows and of new rows come back to every edge (source). Then, quiet:
//! - the change table holds exactly the rows the SQL statements touched
//!   (nothing the sink wrote was captured);
//! - every stamp anywhere was made by an edge write or by a SQL edit;
//! - the hub's log and the change table stop growing (nothing bounces);
//! - edges, hub and PostgreSQL hold the same state, stamps included.
#![cfg(all(feature = "cli", feature = "postgres"))]

mod cli_common;
mod pg_common;
mod repl_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cli_common::*;
use pg_common::Postgres;
use repl_common::{fast, wait_until};
use serde_json::{json, Value};
use tidelog::*;

const T: Duration = Duration::from_secs(40);
const EDGES: [&str; 3] = ["edge-1", "edge-2", "edge-3"];
const PER_EDGE: usize = 20;

fn hub_config(dir: &Path, pg: &Postgres) -> PathBuf {
    let peers: String = EDGES
        .iter()
        .map(|e| {
            format!(
                "[[peers]]\nname = \"{e}\"\ntables = [{{ table = \"thresholds\", publish = true, subscribe = true }}, {{ table = \"alerts\", subscribe = true }}]\n"
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
[[tables]]
name = "alerts"
{peers}
[[sources]]
kind = "postgres"
url = "{url}"
table = "thresholds"
trim_interval = "1h"
[[sinks]]
kind = "postgres"
name = "cloud"
url = "{url}"
tables = [{{ name = "thresholds" }}, {{ name = "alerts" }}]
"#,
        url = pg.url()
    );
    let path = dir.join("cloud.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn edge(dir: &Path, pki: &Path, name: &str, addr: &str) -> Database {
    let db = Database::open(dir.join(name), OpenOptions::new(name)).unwrap();
    db.create_table("thresholds", TableOptions::default().primary_key("sensor"))
        .unwrap();
    db.create_table("alerts", TableOptions::default()).unwrap();
    db.start_replication(fast(ReplicationOptions::mutual_tls(
        pki.join(format!("{name}.pem")),
        pki.join(format!("{name}.key")),
        pki.join("ca.pem"),
    )))
    .unwrap();
    db.add_peer(
        PeerConfig::new("cloud")
            .address(addr)
            .table(TableFlow::both("thresholds"))
            .table(TableFlow::publish("alerts")),
    )
    .unwrap();
    db
}

/// A node's live thresholds: sensor -> (record, stamp).
fn thresholds(db: &Database) -> BTreeMap<String, (Value, Stamp)> {
    db.scan("thresholds", &ScanOptions::default())
        .unwrap()
        .into_iter()
        .map(|r| {
            let key = match r.key() {
                Key::Str(s) => s.clone(),
                Key::Int(i) => i.to_string(),
            };
            (
                key,
                (serde_json::from_str(r.body_json()).unwrap(), r.stamp()),
            )
        })
        .collect()
}

/// PostgreSQL's live thresholds in the same shape.
fn pg_thresholds(pg: &Postgres) -> BTreeMap<String, (Value, Stamp)> {
    pg.query(
        "SELECT key #>> '{}', stamp_time, stamp_node, record::text FROM thresholds WHERE NOT deleted",
    )
    .lines()
    .map(|line| {
        let mut f = line.splitn(4, '|');
        let mut next = || f.next().expect("four columns");
        let key = next().to_string();
        let time = next().parse().unwrap();
        let node = next().parse().unwrap();
        let rec = serde_json::from_str(next()).unwrap();
        (key, (rec, Stamp { time, node }))
    })
    .collect()
}

fn count(pg: &Postgres, sql: &str) -> u64 {
    pg.query(sql).parse().unwrap()
}

#[test]
fn edge_writes_reach_postgres_and_sql_edits_reach_the_edges_with_no_echo() {
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

    // 1. The edges write thresholds (their own sensors) and alerts.
    for (i, e) in edges.iter().enumerate() {
        for j in 0..PER_EDGE {
            e.upsert(
                "thresholds",
                json!({"sensor": format!("e{i}-s{j}"), "max": 50 + j, "by": EDGES[i]}),
            )
            .unwrap();
            e.upsert(
                "alerts",
                json!({"id": format!("e{i}-a{j}"), "level": j % 3}),
            )
            .unwrap();
        }
    }
    let edge_rows = (EDGES.len() * PER_EDGE) as u64;
    wait_until("the edges' thresholds and alerts in PostgreSQL", T, || {
        count(&pg, "SELECT count(*) FROM thresholds") == edge_rows
            && count(&pg, "SELECT count(*) FROM alerts") == edge_rows
    });
    // Nothing the sink wrote was captured as a change.
    assert_eq!(count(&pg, "SELECT count(*) FROM tidelog_changes"), 0);

    // 2. SQL edits: an edge-written row of each edge, a new row, a delete.
    pg.query(
        "UPDATE thresholds SET record = jsonb_set(record, '{max}', '99') \
         WHERE key IN ('\"e0-s1\"', '\"e1-s1\"', '\"e2-s1\"')",
    );
    pg.query(
        "INSERT INTO thresholds (record) VALUES \
         ('{\"sensor\": \"cloud-1\", \"max\": 70}'), ('{\"sensor\": \"cloud-2\", \"max\": 71}')",
    );
    pg.query("DELETE FROM thresholds WHERE key = '\"e0-s2\"'");
    let sql_rows = 6;
    for (i, e) in edges.iter().enumerate() {
        wait_until(&format!("the SQL edits on {}", EDGES[i]), T, || {
            let t = thresholds(e);
            t.get("e1-s1").map(|(r, _)| r["max"] == 99) == Some(true)
                && t.get("e0-s1").map(|(r, _)| r["max"] == 99) == Some(true)
                && t.contains_key("cloud-2")
                && !t.contains_key("e0-s2")
        });
    }

    // 3. Quiet: wait until the hub's log and the change table stop moving.
    let hub_log_head = |dir: &Path| -> u64 {
        status_json(dir, "cloud.toml")["sinks"][0]["log_head"]
            .as_u64()
            .expect("log_head")
    };
    let mut last = (
        hub_log_head(dir),
        count(&pg, "SELECT count(*) FROM tidelog_changes"),
    );
    let mut quiet_rounds = 0;
    wait_until("nothing bouncing for 3 s", T, || {
        std::thread::sleep(Duration::from_millis(500));
        let now = (
            hub_log_head(dir),
            count(&pg, "SELECT count(*) FROM tidelog_changes"),
        );
        quiet_rounds = if now == last { quiet_rounds + 1 } else { 0 };
        last = now;
        quiet_rounds >= 6
    });
    // (a) The change table holds exactly the SQL statements' rows.
    assert_eq!(last.1, sql_rows, "captured changes beyond the SQL edits");
    assert_eq!(
        count(
            &pg,
            "SELECT count(DISTINCT key) FROM tidelog_changes WHERE key IN \
             ('\"e0-s1\"', '\"e1-s1\"', '\"e2-s1\"', '\"cloud-1\"', '\"cloud-2\"', '\"e0-s2\"')"
        ),
        sql_rows
    );

    // (b) Every stamp was made by an edge write or a SQL edit.
    let pg_node: u64 = pg
        .query("SELECT node FROM tidelog_source_node")
        .parse()
        .unwrap();
    let sql_stamps: BTreeSet<Stamp> = pg
        .query("SELECT stamp_time, stamp_node FROM tidelog_changes")
        .lines()
        .map(|l| {
            let (t, n) = l.split_once('|').unwrap();
            Stamp {
                time: t.parse().unwrap(),
                node: n.parse().unwrap(),
            }
        })
        .collect();
    assert!(sql_stamps.iter().all(|s| s.node == pg_node));
    let edge_ids: BTreeSet<u64> = edges.iter().map(Database::node_id).collect();
    let states: Vec<_> = edges.iter().map(thresholds).collect();
    for (i, t) in states.iter().enumerate() {
        for (k, (_, stamp)) in t {
            assert!(
                edge_ids.contains(&stamp.node) || sql_stamps.contains(stamp),
                "{}: `{k}` carries stamp {stamp:?}, made by neither an edge nor SQL",
                EDGES[i]
            );
        }
    }

    // (d) The same state everywhere, stamps included.
    let pg_state = pg_thresholds(&pg);
    assert_eq!(pg_state.len(), EDGES.len() * PER_EDGE - 1 + 2);
    for (i, t) in states.iter().enumerate() {
        assert_eq!(t, &pg_state, "{} differs from PostgreSQL", EDGES[i]);
    }
    let (status, err) = serve.terminate();
    assert!(status.success(), "{err}");
    let hub = Database::open(dir.join("cloud-data"), OpenOptions::new("cloud")).unwrap();
    assert_eq!(
        thresholds(&hub),
        pg_state,
        "the hub differs from PostgreSQL"
    );
    hub.close().unwrap();
    for e in edges {
        e.close().unwrap();
    }
}
