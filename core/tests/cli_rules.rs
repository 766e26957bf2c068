//! The issue's first "Done when", with the real `tidelog serve`: a hub
//! whose config names no edge admits 50 of them by one rule (certificates
//! from the fleet CA), refuses a node no rule matches and one from another
//! CA; thresholds reach all 50 and their alerts reach the hub; a SIGHUP
//! that changes the other rule changes flows for its nodes only and drops
//! no other link.
//!
//! The hub's data directory is locked by the serve process, so an operator
//! node (a configured peer of the hub, dialing in) writes the thresholds
//! and watches the alerts: what it sees went through the hub.

mod cli_common;
mod repl_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cli_common::*;
use repl_common::{fast, wait_until};
use serde_json::json;
use tidelog::*;

const T: Duration = Duration::from_secs(60);
const EDGES: usize = 50;

fn edge_name(i: usize) -> String {
    format!("edge-{i}")
}

/// The hub's config: one rule for the edges, one for lab nodes (`lab`, as
/// given), and the operator as the only configured peer.
fn write_hub_config(dir: &Path, lab_tables: &str) -> PathBuf {
    let text = format!(
        r#"
node_name = "cloud"
data_dir = "cloud-data"
listen = "127.0.0.1:0"
status_interval_secs = 0
memory_budget = "16MiB"

[tls]
cert = "pki/cloud.pem"
key = "pki/cloud.key"
ca = "pki/ca.pem"

{FAST_TIMERS}
[metrics]
listen = "127.0.0.1:0"

[[tables]]
name = "thresholds"

[[tables]]
name = "alerts"

[[peers]]
name = "ops"
tables = [
  {{ table = "thresholds", subscribe = true }},
  {{ table = "alerts", publish = true }},
]

[[rules]]
name = "edges"
node_name = "edge-*"
max_silence = "7d"
tables = [
  {{ table = "thresholds", publish = true }},
  {{ table = "alerts", subscribe = true }},
]

[[rules]]
name = "lab"
node_name = "lab-?"
tables = [{lab_tables}]
"#
    );
    let path = dir.join("cloud.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const LAB_BEFORE: &str = r#"{ table = "alerts", subscribe = true }"#;
const LAB_AFTER: &str =
    r#"{ table = "alerts", subscribe = true }, { table = "thresholds", publish = true }"#;

fn sighup(serve: &Serve) {
    let pid = libc::pid_t::try_from(serve.pid()).unwrap();
    // SAFETY: kill(2) with the pid of a child we spawned and still own
    // (it is not reaped while `serve` lives).
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill(SIGHUP)");
}

/// An in-process node dialing the hub, with the tables both ways as
/// `flows` says. Small caches and one worker thread: 50 of these share
/// the test machine's two cores.
fn node(root: &Path, pki: &Path, name: &str, addr: &str, flows: &[TableFlow]) -> Database {
    let mut opts = OpenOptions::new(name);
    opts.memory_budget = 4 << 20;
    let db = Database::open(root.join(name), opts).unwrap();
    for t in ["thresholds", "alerts"] {
        db.ensure_table(t, TableOptions::default()).unwrap();
    }
    let mut r = fast(ReplicationOptions::mutual_tls(
        pki.join(format!("{name}.pem")),
        pki.join(format!("{name}.key")),
        pki.join("ca.pem"),
    ));
    r.worker_threads = 1;
    db.start_replication(r).unwrap();
    let mut hub = PeerConfig::new("cloud").address(addr);
    for f in flows {
        hub = hub.table(f.clone());
    }
    db.add_peer(hub).unwrap();
    db
}

fn edge_flows() -> Vec<TableFlow> {
    vec![
        TableFlow::subscribe("thresholds"),
        TableFlow::publish("alerts"),
    ]
}

fn hub_error(db: &Database) -> String {
    db.peer_status("cloud")
        .unwrap()
        .last_error
        .unwrap_or_default()
}

fn connects(db: &Database) -> u64 {
    db.peer_status("cloud").unwrap().connects
}

#[test]
fn one_rule_admits_fifty_edges_and_sighup_changes_only_the_changed_rules_links() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut names = vec!["cloud".to_string(), "ops".into(), "stray".into()];
    names.extend(["lab-1", "lab-2"].map(String::from));
    names.extend((1..=EDGES).map(edge_name));
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let pki = make_certs(dir, &name_refs);
    // Another CA's node, named like an edge.
    let other = tempfile::tempdir().unwrap();
    let other_pki = make_certs(other.path(), &["edge-51"]);
    std::fs::copy(pki.join("ca.pem"), other_pki.join("ca.pem")).unwrap();

    let config = write_hub_config(dir, LAB_BEFORE);
    let mut serve = Serve::start(&config);
    let addr = serve.ready();
    serve.wait_line("the edges rule", T, |l| {
        l.contains("rule `edges`: admitting nodes named `edge-*`")
    });
    let line = serve.wait_line("metrics", T, |l| {
        l.starts_with("tidelog: metrics on http://")
    });
    let metrics = line["tidelog: metrics on http://".len()..]
        .trim_end_matches("/metrics")
        .trim()
        .to_string();

    let nodes = dir.join("nodes");
    let started = std::time::Instant::now();
    let ops = node(
        &nodes,
        &pki,
        "ops",
        &addr,
        &[
            TableFlow::publish("thresholds"),
            TableFlow::subscribe("alerts"),
        ],
    );
    // Opened on a few threads: each open waits on disk syncs.
    let edges: Vec<Database> = std::thread::scope(|s| {
        let chunks: Vec<_> = (1..=EDGES)
            .collect::<Vec<_>>()
            .chunks(EDGES.div_ceil(4))
            .map(|c| {
                let c = c.to_vec();
                let (nodes, pki, addr) = (&nodes, &pki, &addr);
                s.spawn(move || {
                    c.into_iter()
                        .map(|i| node(nodes, pki, &edge_name(i), addr, &edge_flows()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let labs: Vec<Database> = ["lab-1", "lab-2"]
        .iter()
        .map(|n| node(&nodes, &pki, n, &addr, &edge_flows()))
        .collect();
    let stray = node(&nodes, &pki, "stray", &addr, &edge_flows());
    let foreign = node(&nodes, &other_pki, "edge-51", &addr, &edge_flows());
    let opened = started.elapsed();

    // All 50 admitted by the rule (and the operator and lab nodes).
    wait_until("every edge connected", T, || {
        edges
            .iter()
            .chain(&labs)
            .chain([&ops])
            .all(|e| e.peer_status("cloud").is_ok_and(|s| s.connected))
    });
    // Reported, not asserted: what first contact costs here.
    eprintln!(
        "measured: {} nodes opened in {opened:?}, all admitted on first contact {:?} later",
        EDGES + 3,
        started.elapsed() - opened
    );
    // Refused: a name no rule matches, and a certificate of another CA.
    wait_until("the stray node refused", T, || {
        hub_error(&stray).contains("matches none of its 2 peer rule(s)")
    });
    let why = hub_error(&stray);
    assert!(
        why.contains("`edges` (node_name `edge-*`): name does not match"),
        "{why}"
    );
    wait_until("the other CA's node refused", T, || {
        !hub_error(&foreign).is_empty()
    });
    assert!(!stray.peer_status("cloud").unwrap().connected);
    assert!(!foreign.peer_status("cloud").unwrap().connected);

    // A threshold written by the operator reaches all 50 through the hub;
    // the lab rule does not publish thresholds (yet).
    let t1_at = std::time::Instant::now();
    let t1 = ops
        .insert("thresholds", json!({"id": "t1", "max": 80}))
        .unwrap();
    ops.wait_for_ack("cloud", t1.seq, T).unwrap();
    wait_until("t1 on every edge", T, || {
        edges
            .iter()
            .all(|e| e.get("thresholds", "t1").unwrap().is_some())
    });
    eprintln!(
        "measured: a threshold on all {EDGES} edges (operator -> hub -> edges) in {:?}",
        t1_at.elapsed()
    );
    // Every edge's alert reaches the hub (the operator sees it there).
    for (i, e) in edges.iter().enumerate() {
        e.insert("alerts", json!({"id": format!("a{}", i + 1)}))
            .unwrap();
    }
    wait_until("all 50 alerts at the operator", T, || {
        (1..=EDGES).all(|i| ops.get("alerts", format!("a{i}")).unwrap().is_some())
    });
    for l in &labs {
        assert!(l.get("thresholds", "t1").unwrap().is_none());
    }

    // SIGHUP: the lab rule now also publishes thresholds. Only its nodes'
    // links restart; no edge's or the operator's link drops.
    let before: Vec<u64> = edges.iter().chain([&ops]).map(connects).collect();
    let lab_before: Vec<u64> = labs.iter().map(connects).collect();
    write_hub_config(dir, LAB_AFTER);
    sighup(&serve);
    serve.wait_line("the lab rule updated", T, |l| {
        l.contains("SIGHUP: updated rule `lab`")
    });
    serve.wait_line("reload done", T, |l| {
        l.contains("SIGHUP: reload done, 1 change(s) applied")
    });
    wait_until("t1 on the lab nodes", T, || {
        labs.iter()
            .all(|l| l.get("thresholds", "t1").unwrap().is_some())
    });
    for (l, b) in labs.iter().zip(&lab_before) {
        assert!(connects(l) > *b, "the lab links restarted");
    }
    // A later threshold still reaches every edge over the same links.
    let t2 = ops
        .insert("thresholds", json!({"id": "t2", "max": 90}))
        .unwrap();
    ops.wait_for_ack("cloud", t2.seq, T).unwrap();
    wait_until("t2 on every edge", T, || {
        edges
            .iter()
            .all(|e| e.get("thresholds", "t2").unwrap().is_some())
    });
    let after: Vec<u64> = edges.iter().chain([&ops]).map(connects).collect();
    assert_eq!(before, after, "no edge's (or the operator's) link dropped");

    // What the operator sees: `tidelog status --json` through the admin
    // socket names every admitted edge with its rule, and `/metrics` has
    // their series.
    let out = tidelog(
        dir,
        &["status", "--json", "--config", config.to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    let peers: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("status --json is a JSON list of peers");
    let rule_of = |name: &str| {
        peers
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("`{name}` missing from status --json"))["rule"]
            .clone()
    };
    for i in 1..=EDGES {
        assert_eq!(rule_of(&edge_name(i)), json!("edges"));
    }
    assert_eq!(rule_of("ops"), serde_json::Value::Null);
    assert_eq!(rule_of("lab-1"), json!("lab"));
    for refused in ["stray", "edge-51"] {
        assert!(
            peers.iter().all(|p| p["name"] != refused),
            "a refused node has no peer entry: {refused}"
        );
    }
    let body = scrape(&metrics);
    for i in 1..=EDGES {
        let series = format!("tidelog_peer_connected{{peer=\"{}\"}} 1", edge_name(i));
        assert!(body.contains(&series), "/metrics lacks {series}:\n{body}");
    }
    assert!(
        body.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );

    let (status, log) = serve.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    for db in edges.into_iter().chain(labs).chain([ops, stray, foreign]) {
        db.close().unwrap();
    }
}

/// The body of a plain HTTP/1.1 GET of `/metrics` at `addr`.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}
