//! Acknowledgements are stored in batches: a hub killed with SIGKILL while
//! they flow may restart with an older stored acknowledgement than its
//! peer gave. Nothing is lost or applied twice for that, the peer is not
//! resynced (retention trims only what was stored), and a receipt for
//! what was acknowledged before the kill passes again once the peer is
//! back.

mod common;
mod repl_common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::time::Duration;

use repl_common::*;
use serde_json::json;
use tidelog::*;

const T: Duration = Duration::from_secs(30);

fn hub_peer() -> PeerConfig {
    PeerConfig::new("edge")
        .table(TableFlow::publish("t"))
        .table(TableFlow::subscribe("a"))
}

/// The hub: opens `dir`, serves the edge on 127.0.0.1:`port`, and either
/// commits to `t` until it is killed ("writer") or, given the number of
/// rows of `a` the edge wrote ("verify"), waits for them and for the
/// edge to acknowledge its whole log, then reports.
fn hub(role: &str, dir: &str, pki: &str, port: &str, expect_a: u64) {
    let db = open_node(std::path::Path::new(dir), "hub");
    for t in ["t", "a"] {
        db.ensure_table(t, TableOptions::default()).unwrap();
    }
    let f = tidelog::net::certs::node_paths(std::path::Path::new(pki), "hub");
    let (ca, _) = tidelog::net::certs::ca_paths(std::path::Path::new(pki));
    db.start_replication(fast(ReplicationOptions::mutual_tls(
        f.cert_chain,
        f.key,
        ca,
    )))
    .unwrap();
    db.listen(&format!("127.0.0.1:{port}")).unwrap();
    db.add_peer(hub_peer()).unwrap();
    println!("\nready");
    if role == "writer" {
        let mut i = db.count("t").unwrap();
        loop {
            let seq = db.upsert("t", json!({"id": i})).unwrap().seq;
            println!("ack {seq}");
            i += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    wait_until("the edge's rows of `a` arrived", T, || {
        db.count("a").unwrap() == expect_a
    });
    let last = db.log_bounds().unwrap().last;
    db.wait_for_ack("edge", last, T).unwrap();
    println!("t {}", db.count("t").unwrap());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    db.close().unwrap();
}

fn spawn_hub(
    role: &str,
    dir: &str,
    pki: &str,
    port: u16,
    expect_a: u64,
) -> (Child, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut child =
        common::child_command(role, &[dir, pki, &port.to_string(), &expect_a.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap() == "ready" {
            return (child, lines);
        }
    }
    let status = child.wait();
    panic!("the hub child ended before it was ready: {status:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_hub_killed_with_acknowledgements_not_yet_stored_loses_nothing_and_applies_nothing_twice() {
    let pki = Pki::new(&["hub", "edge"]);
    let hub_dir = tempfile::tempdir().unwrap();
    let edge_dir = tempfile::tempdir().unwrap();
    let (hd, pk) = (
        hub_dir.path().to_str().unwrap().to_string(),
        pki.path().to_str().unwrap().to_string(),
    );
    let port = free_port();
    let edge = open_node(edge_dir.path(), "edge");
    for t in ["a", "t"] {
        edge.create_table(t, TableOptions::default()).unwrap();
    }
    let dups = DupWatch::default();
    dups.watch(&edge, &["t"]);
    edge.start_replication(pki.options("edge")).unwrap();
    edge.add_peer(
        PeerConfig::new("hub")
            .address(format!("127.0.0.1:{port}"))
            .table(TableFlow::subscribe("t"))
            .table(TableFlow::publish("a")),
    )
    .unwrap();
    let mut a = 0u64;
    for _ in 0..3 {
        let (mut child, lines) = spawn_hub("writer", &hd, &pk, port, 0);
        let reader = std::thread::spawn(move || lines.map_while(Result::ok).count());
        // Acknowledgements flow both ways while the hub commits.
        for _ in 0..20 {
            edge.insert("a", json!({"id": a})).unwrap();
            a += 1;
            std::thread::sleep(Duration::from_millis(15));
        }
        wait_until("the edge received from the hub", T, || {
            edge.count("t").unwrap_or(0) > 0 && edge.peer_status("hub").unwrap().connected
        });
        child.kill().unwrap(); // SIGKILL: no close, no last store
        child.wait().unwrap();
        reader.join().unwrap();
    }
    let (mut child, mut lines) = spawn_hub("verify", &hd, &pk, port, a);
    let report = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("t ").map(|n| n.parse::<u64>().unwrap()))
        .expect("the hub reported its rows");
    wait_until("the edge has every row the hub kept", T, || {
        edge.count("t").unwrap() == report
    });
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert!(dups.duplicates().is_empty(), "{:?}", dups.duplicates());
    assert_eq!(dups.applied() as u64, report, "every row applied once");
    let s = edge.peer_status("hub").unwrap();
    assert_eq!(
        s.syncs_received, 1,
        "only the first link synced: later ones resumed (nothing trimmed past a stored acknowledgement): {s:?}"
    );
    edge.close().unwrap();
}

#[test]
#[ignore = "child process entry point, started by other tests"]
fn child_process() {
    let Some((role, args)) = common::child_role() else {
        return;
    };
    hub(
        &role,
        &args[0],
        &args[1],
        &args[2],
        args[3].parse().unwrap(),
    );
}
