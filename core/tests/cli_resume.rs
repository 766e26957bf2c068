//! Acknowledgements of sunk tables mean "in PostgreSQL", and an edge that
//! moves to another hub resumes where PostgreSQL has it: `tidelog serve`
//! hubs named `cloud` (own keys, own data directories) with a PostgreSQL
//! `[[sinks]]` for `alerts`, one private PostgreSQL, in-process edges.
//!
//! - a stopped PostgreSQL holds the edge's acknowledgement (the hub applied
//!   the writes, the edge's receipt says not delivered, the link is not
//!   torn down as stalled) until it is back;
//! - a hub killed and its data directory deleted while PostgreSQL was down
//!   loses nothing: what the edge counts as delivered is in PostgreSQL, and
//!   the other hub completes the rest;
//! - an edge moved to the other hub sends only what PostgreSQL lacks (no
//!   initial sync), with no row twice and none at an older stamp;
//! - a reset edge (same name, new node id) is not resumed from the old
//!   one's position.
#![cfg(feature = "postgres")]

mod cli_common;
mod pg_common;
mod repl_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cli_common::*;
use pg_common::Postgres;
use repl_common::{fast, wait_until};
use serde_json::json;
use tidelog::*;

const T: Duration = Duration::from_secs(30);

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
}

fn hub_config(dir: &Path, pg: &Postgres, tag: &str) -> PathBuf {
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
[[peers]]
name = "edge-1"
tables = [{{ table = "alerts", subscribe = true }}]
[[sinks]]
kind = "postgres"
name = "cloud"
url = "{url}"
tables = [{{ name = "alerts", pg_table = "fleet_alerts" }}]
"#,
        url = pg.conn_string()
    );
    let path = dir.join(format!("cloud-{tag}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts a hub and rewrites its config to the port it bound, so a
/// restart binds it again.
fn start_hub(config: &Path) -> (Serve, String) {
    let mut s = Serve::start(config);
    let addr = s.ready();
    set_listen(config, &addr);
    (s, addr)
}

/// An edge named `edge-1` in `dir/name` (a fresh one: a new node id),
/// publishing `alerts` to `cloud` at `addrs` (tried in order).
fn edge(dir: &Path, folder: &str, addrs: &[&str]) -> Database {
    let db = Database::open(dir.join(folder), OpenOptions::new("edge-1")).unwrap();
    let pki = dir.join("pki");
    db.start_replication(fast(ReplicationOptions::mutual_tls(
        pki.join("edge-1.pem"),
        pki.join("edge-1.key"),
        pki.join("ca.pem"),
    )))
    .unwrap();
    db.ensure_table("alerts", TableOptions::default()).unwrap();
    let mut peer = PeerConfig::new("cloud").address(addrs[0]);
    for a in &addrs[1..] {
        peer = peer.also_at(*a);
    }
    db.add_peer(peer.table(TableFlow::publish("alerts")))
        .unwrap();
    db
}

/// Writes alerts `prefix-from..prefix-to`; returns the last write's seq.
fn write(db: &Database, prefix: &str, from: u64, to: u64) -> u64 {
    let mut seq = 0;
    for i in from..to {
        seq = db
            .upsert("alerts", json!({"id": format!("{prefix}-{i}"), "level": i}))
            .unwrap()
            .seq;
    }
    seq
}

fn acked(db: &Database) -> u64 {
    db.peer_status("cloud").unwrap().acked_seq
}

fn wait_acked(db: &Database, seq: u64, what: &str) {
    wait_until(what, T, || acked(db) >= seq);
}

/// PostgreSQL's rows of `fleet_alerts` (tombstones too): key -> stamp, and
/// the row count (a key twice would make it differ from the map's).
fn pg_rows(pg: &Postgres) -> (BTreeMap<String, Stamp>, usize) {
    let text = pg.query("SELECT key #>> '{}', stamp_time, stamp_node FROM fleet_alerts");
    let mut rows = BTreeMap::new();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        n += 1;
        let mut f = line.split('|');
        let mut next = || f.next().expect("three columns");
        let key = next().to_string();
        let time = next().parse().unwrap();
        let node = next().parse().unwrap();
        rows.insert(key, Stamp { time, node });
    }
    (rows, n)
}

fn edge_rows(db: &Database) -> BTreeMap<String, Stamp> {
    db.scan("alerts", &ScanOptions::default())
        .unwrap()
        .into_iter()
        .map(|r| {
            let key = match r.key() {
                Key::Str(s) => s.clone(),
                Key::Int(i) => i.to_string(),
            };
            (key, r.stamp())
        })
        .collect()
}

/// PostgreSQL holds exactly `want` (keys and stamps), no key twice.
fn pg_equals(pg: &Postgres, want: &BTreeMap<String, Stamp>, what: &str) {
    wait_until(what, T, || pg_rows(pg).0 == *want);
    let (rows, n) = pg_rows(pg);
    assert_eq!(n, rows.len(), "a key twice in PostgreSQL");
    let older: Vec<&String> = rows
        .iter()
        .filter(|(k, s)| want.get(*k).is_some_and(|w| *s < w))
        .map(|(k, _)| k)
        .collect();
    assert!(older.is_empty(), "rows at an older stamp: {older:?}");
}

/// The edge's position for `alerts` in `tidelog_edge_progress` (0: none).
fn pg_position(pg: &Postgres, edge: &Database) -> u64 {
    pg.query(&format!(
        "SELECT coalesce(max(seq), 0) FROM tidelog_edge_progress \
         WHERE edge = 'edge-1' AND edge_node = '{:016x}' AND tbl = 'alerts'",
        edge.node_id()
    ))
    .parse()
    .unwrap()
}

/// The hub (by its config) has applied the edge's log through `seq`.
fn hub_received(dir: &Path, config: &str) -> u64 {
    let s = status_json(dir, config);
    s["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "edge-1"))
        .and_then(|p| p["received_seq"].as_u64())
        .unwrap_or(0)
}

fn hub_peer(dir: &Path, config: &str) -> serde_json::Value {
    let s = status_json(dir, config);
    s["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "edge-1"))
        .cloned()
        .unwrap_or_default()
}

/// A free port on 127.0.0.1 for a hub started later.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn setup() -> (Postgres, tempfile::TempDir) {
    let pg = Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    make_certs(tmp.path(), &["cloud", "edge-1"]);
    hub_certs(tmp.path());
    (pg, tmp)
}

#[test]
fn a_stopped_postgres_holds_the_acknowledgement_until_it_is_back() {
    let (mut pg, tmp) = setup();
    let dir = tmp.path();
    let (a, a_addr) = start_hub(&hub_config(dir, &pg, "a"));
    let e = edge(dir, "edge", &[&a_addr]);
    let first = write(&e, "before", 0, 20);
    wait_acked(&e, first, "acknowledged with PostgreSQL up");

    pg.stop();
    let last = write(&e, "during", 0, 30);
    wait_until("hub applied the writes", T, || {
        hub_received(dir, "cloud-a.toml") >= last
    });
    wait_until("the edge told why its acknowledgement waits", T, || {
        e.peer_status("cloud")
            .unwrap()
            .last_error
            .is_some_and(|m| m.contains("holds its acknowledgement"))
    });
    // Past the stall time (2 s) with the link up: the held acknowledgement
    // is reported, not taken for a stalled link.
    std::thread::sleep(Duration::from_secs(3));
    let s = e.peer_status("cloud").unwrap();
    assert!(
        s.acked_seq < last,
        "acknowledged {} with PostgreSQL down",
        s.acked_seq
    );
    assert!(s.acked_seq >= first);
    assert_eq!(
        s.stalls, 0,
        "held acknowledgements counted as a stall: {:?}",
        s.stalled
    );
    assert_eq!(s.connects, 1, "the link was torn down: {:?}", s.last_error);
    eprintln!("while PostgreSQL was down: {:?}", s.last_error);

    pg.restart();
    wait_acked(&e, last, "acknowledged once PostgreSQL is back");
    pg_equals(&pg, &edge_rows(&e), "PostgreSQL equal to the edge");
    e.close().unwrap();
    let (exit, err) = a.terminate();
    assert!(exit.success(), "{err}");
}

#[test]
fn a_hub_lost_for_good_loses_nothing_the_edge_counts_as_delivered() {
    let (mut pg, tmp) = setup();
    let dir = tmp.path();
    let (ca, cb) = (hub_config(dir, &pg, "a"), hub_config(dir, &pg, "b"));
    let b_addr = free_addr();
    set_listen(&cb, &b_addr);
    let (a, a_addr) = start_hub(&ca);
    let e = edge(dir, "edge", &[&a_addr, &b_addr]);
    let first = write(&e, "before", 0, 20);
    wait_acked(&e, first, "acknowledged with PostgreSQL up");

    pg.stop();
    let last = write(&e, "during", 0, 30);
    wait_until("hub A applied the writes", T, || {
        hub_received(dir, "cloud-a.toml") >= last
    });
    // Hub A's disk is gone for good: only PostgreSQL and the edge remain.
    a.kill();
    std::fs::remove_dir_all(dir.join("cloud-a-data")).unwrap();
    pg.restart();
    let delivered = acked(&e);
    let in_pg = pg_rows(&pg).0;
    let missing: Vec<String> = (0..20)
        .map(|i| format!("before-{i}"))
        .chain((0..30).map(|i| format!("during-{i}")))
        .zip(first - 19..=last)
        .filter(|(k, seq)| *seq <= delivered && !in_pg.contains_key(k))
        .map(|(k, _)| k)
        .collect();
    assert!(
        missing.is_empty(),
        "the edge counts {delivered} as delivered, but PostgreSQL lacks {} of those rows: {missing:?}",
        missing.len()
    );

    // The other hub takes the edge over and completes PostgreSQL.
    let mut b = Serve::start(&cb);
    b.ready();
    wait_acked(&e, last, "hub B acknowledging every write");
    pg_equals(&pg, &edge_rows(&e), "PostgreSQL equal to the edge");
    e.close().unwrap();
    let (exit, err) = b.terminate();
    assert!(exit.success(), "{err}");
}

#[test]
fn a_moved_edge_resumes_where_postgres_has_it() {
    let (pg, tmp) = setup();
    let dir = tmp.path();
    let (ca, cb) = (hub_config(dir, &pg, "a"), hub_config(dir, &pg, "b"));
    let (a, a_addr) = start_hub(&ca);
    let (b, b_addr) = start_hub(&cb);
    let e = edge(dir, "edge", &[&a_addr, &b_addr]);
    let before = write(&e, "a", 0, 300);
    wait_acked(&e, before, "hub A acknowledging");
    wait_until("the edge's position in PostgreSQL", T, || {
        pg_position(&pg, &e) >= before
    });

    a.kill();
    wait_until("the edge on hub B", T, || {
        let s = e.peer_status("cloud").unwrap();
        s.connected && s.address.as_deref() == Some(b_addr.as_str())
    });
    let after = write(&e, "b", 0, 50);
    wait_acked(&e, after, "hub B acknowledging");
    pg_equals(&pg, &edge_rows(&e), "PostgreSQL equal to the edge");

    // Hub B received only what followed PostgreSQL's position: no initial
    // sync of `alerts` (300 rows), and its sink applied the 50 new rows.
    let peer = hub_peer(dir, "cloud-b.toml");
    let sink_rows = status_json(dir, "cloud-b.toml")["sinks"][0]["rows"]
        .as_u64()
        .unwrap();
    eprintln!(
        "resume: hub B received syncs {}, its sink applied {sink_rows} rows (50 written since the move, 300 before)",
        peer["syncs_received"]
    );
    assert_eq!(peer["syncs_received"], 0, "hub B synced alerts afresh");
    assert_eq!(sink_rows, 50, "hub B was sent rows PostgreSQL had");
    e.close().unwrap();
    let (exit, err) = b.terminate();
    assert!(exit.success(), "{err}");
}

#[test]
fn a_reset_edge_is_not_resumed_from_the_old_ones_position() {
    let (pg, tmp) = setup();
    let dir = tmp.path();
    let (ca, cb) = (hub_config(dir, &pg, "a"), hub_config(dir, &pg, "b"));
    let (a, a_addr) = start_hub(&ca);
    let (b, b_addr) = start_hub(&cb);
    let old = edge(dir, "old", &[&a_addr]);
    let old_last = write(&old, "old", 0, 300);
    wait_acked(&old, old_last, "hub A acknowledging the old edge");
    wait_until("the old edge's position in PostgreSQL", T, || {
        pg_position(&pg, &old) >= old_last
    });
    let want_old = edge_rows(&old);
    old.close().unwrap();

    // Same name and certificate, new data directory: a new node id and a
    // new log, longer than the old position, written before it links.
    let fresh = Database::open(dir.join("fresh"), OpenOptions::new("edge-1")).unwrap();
    fresh
        .create_table("alerts", TableOptions::default())
        .unwrap();
    let fresh_last = write(&fresh, "fresh", 0, 350);
    assert!(fresh_last > old_last);
    fresh.close().unwrap();
    let fresh = edge(dir, "fresh", &[&b_addr]);
    wait_acked(&fresh, fresh_last, "hub B acknowledging the reset edge");
    let mut want = want_old;
    want.extend(edge_rows(&fresh));
    pg_equals(&pg, &want, "PostgreSQL holding both edges' rows");
    assert_eq!(pg_position(&pg, &fresh), fresh_last);
    fresh.close().unwrap();
    for s in [a, b] {
        let (exit, err) = s.terminate();
        assert!(exit.success(), "{err}");
    }
}
