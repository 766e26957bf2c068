//! An edge that subscribes to a table from a logical peer served by two
//! hubs (`address` plus `addresses`), moving from one hub to the other:
//! it must end with the new hub's rows of that table and its later
//! changes.
//!
//! Found by examples/fleet_postgres.sh: the edge dialed and sent its hello
//! (with its resume point per subscribed table, a position in hub A's log)
//! before it learned that the hub it reached has another node id. Hub B
//! took the old position as one in its own log and streamed from there,
//! skipping its earlier entries, while the edge, whose cursor then said
//! "not synced", refused every streamed write of the table. The edge now
//! stores the voided cursor and redials (session.rs, `run`), so its next
//! hello asks for a sync; this test fails without that.

mod repl_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use repl_common::*;
use serde_json::json;
use tidelog::net::certs;
use tidelog::*;

const T: Duration = Duration::from_secs(20);

/// A CA, the edge's certificate and two for `cloud`, each with its own key.
fn fleet_pki(p: &Path) -> [PathBuf; 2] {
    certs::generate_dev_pki(p, "tidelog test CA", &["edge-1".to_string()]).unwrap();
    let mut stems = [PathBuf::new(), PathBuf::new()];
    for (i, stem) in stems.iter_mut().enumerate() {
        let f = certs::add_node(p, "cloud").unwrap();
        *stem = p.join(format!("cloud-{i}"));
        std::fs::rename(&f.cert_chain, stem.with_extension("pem")).unwrap();
        std::fs::rename(&f.key, stem.with_extension("key")).unwrap();
    }
    stems
}

fn tls(pki: &Path, cert: PathBuf, key: PathBuf) -> ReplicationOptions {
    let (ca, _) = certs::ca_paths(pki);
    fast(ReplicationOptions::mutual_tls(cert, key, ca))
}

/// A hub named `cloud` publishing `thresholds` to `edge-1`.
fn hub(dir: &Path, pki: &Path, stem: &Path) -> (Database, SocketAddr) {
    let db = open_node(dir, "cloud");
    db.create_table("thresholds", TableOptions::default().primary_key("sensor"))
        .unwrap();
    let o = tls(pki, stem.with_extension("pem"), stem.with_extension("key"));
    db.start_replication(o).unwrap();
    let addr = db.listen("127.0.0.1:0").unwrap();
    db.add_peer(PeerConfig::new("edge-1").table(TableFlow::publish("thresholds")))
        .unwrap();
    (db, addr)
}

fn max_of(db: &Database, sensor: &str) -> Option<i64> {
    db.get("thresholds", sensor)
        .ok()
        .flatten()
        .and_then(|r| r.to_value()["max"].as_i64())
}

#[test]
fn a_moved_edge_gets_the_new_hubs_rows_of_a_subscribed_table() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pki = root.join("pki");
    std::fs::create_dir(&pki).unwrap();
    let stems = fleet_pki(&pki);
    let (a, a_addr) = hub(&root.join("a"), &pki, &stems[0]);
    let (b, b_addr) = hub(&root.join("b"), &pki, &stems[1]);
    // Hub A's log: 1 entry; hub B's: 5, so A's position (1) lies in B's.
    a.upsert("thresholds", json!({"sensor": "s-1", "max": 80}))
        .unwrap();
    for i in 2..=6 {
        b.upsert("thresholds", json!({"sensor": format!("s-{i}"), "max": 80}))
            .unwrap();
    }

    let edge = open_node(&root.join("edge"), "edge-1");
    let f = certs::node_paths(&pki, "edge-1");
    edge.start_replication(tls(&pki, f.cert_chain, f.key))
        .unwrap();
    edge.add_peer(
        PeerConfig::new("cloud")
            .address(a_addr.to_string())
            .also_at(b_addr.to_string())
            .table(TableFlow::subscribe("thresholds")),
    )
    .unwrap();
    wait_until("s-1 from hub A", T, || max_of(&edge, "s-1") == Some(80));

    a.close().unwrap();
    wait_until("the edge on hub B", T, || {
        let s = edge.peer_status("cloud").unwrap();
        s.connected && s.address.as_deref() == Some(b_addr.to_string().as_str())
    });
    b.upsert("thresholds", json!({"sensor": "s-1", "max": 95}))
        .unwrap();
    let deadline = Instant::now() + T;
    let want = |e: &Database| {
        max_of(e, "s-1") == Some(95) && (2..=6).all(|i| max_of(e, &format!("s-{i}")) == Some(80))
    };
    while !want(&edge) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = edge.peer_status("cloud").unwrap();
    assert!(
        want(&edge),
        "after the move the edge has s-1 {:?}, s-2..s-6 {:?}; refused writes {}, refusals {:?}",
        max_of(&edge, "s-1"),
        (2..=6)
            .map(|i| max_of(&edge, &format!("s-{i}")))
            .collect::<Vec<_>>(),
        s.refused_writes,
        s.refusals
    );
    edge.close().unwrap();
    b.close().unwrap();
}
