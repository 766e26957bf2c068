//! An edge that knows several hubs of one logical peer (`address` plus
//! `addresses`, every hub with a certificate for the same node name `cloud`
//! and its own key): the dial order, staying on the hub that works, moving
//! on when it goes, and what a move costs today (the hubs have different
//! node ids, so the edge's resume point restarts at the new hub).

mod repl_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use repl_common::*;
use serde_json::json;
use tidelog::net::certs;
use tidelog::*;

const T: Duration = Duration::from_secs(20);

/// A CA, the edge's certificate and two certificates for `cloud`, each
/// with its own key (`cloud-0.*`, `cloud-1.*`).
fn fleet_pki() -> (tempfile::TempDir, [PathBuf; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    certs::generate_dev_pki(p, "tidelog test CA", &["edge-1".to_string()]).unwrap();
    let mut hubs = [PathBuf::new(), PathBuf::new()];
    for (i, hub) in hubs.iter_mut().enumerate() {
        let f = certs::add_node(p, "cloud").unwrap();
        let cert = p.join(format!("cloud-{i}.pem"));
        let key = p.join(format!("cloud-{i}.key"));
        std::fs::rename(&f.cert_chain, &cert).unwrap();
        std::fs::rename(&f.key, &key).unwrap();
        *hub = p.join(format!("cloud-{i}"));
    }
    (dir, hubs)
}

fn tls(pki: &Path, cert: PathBuf, key: PathBuf) -> ReplicationOptions {
    let (ca, _) = certs::ca_paths(pki);
    fast(ReplicationOptions::mutual_tls(cert, key, ca))
}

/// A hub named `cloud` that takes alerts from `edge-1`.
fn hub(dir: &Path, pki: &Path, stem: &Path) -> (Database, SocketAddr) {
    let db = open_node(dir, "cloud");
    let o = tls(pki, stem.with_extension("pem"), stem.with_extension("key"));
    db.start_replication(o).unwrap();
    let addr = db.listen("127.0.0.1:0").unwrap();
    db.add_peer(PeerConfig::new("edge-1").table(TableFlow::subscribe("alerts")))
        .unwrap();
    (db, addr)
}

fn edge(dir: &Path, pki: &Path, first: String, then: String) -> Database {
    let db = open_node(dir, "edge-1");
    db.create_table("alerts", TableOptions::default().primary_key("id"))
        .unwrap();
    let f = certs::node_paths(pki, "edge-1");
    db.start_replication(tls(pki, f.cert_chain, f.key)).unwrap();
    db.add_peer(
        PeerConfig::new("cloud")
            .address(first)
            .also_at(then)
            .table(TableFlow::publish("alerts")),
    )
    .unwrap();
    db
}

fn alerts(db: &Database) -> usize {
    table_state(db, "alerts").len()
}

fn write_alerts(db: &Database, from: usize, n: usize) {
    for i in from..from + n {
        db.upsert("alerts", json!({"id": format!("a{i}"), "level": i}))
            .unwrap();
    }
}

/// An address nothing listens on: a port bound once, then let go.
fn dead_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn a_down_first_address_falls_through_to_the_second() {
    let (pki, stems) = fleet_pki();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (b, b_addr) = hub(dirs.0.path(), pki.path(), &stems[1]);
    let e = edge(
        dirs.1.path(),
        pki.path(),
        dead_address(),
        b_addr.to_string(),
    );
    write_alerts(&e, 0, 5);
    wait_until("the second hub has the edge's alerts", T, || {
        alerts(&b) == 5
    });
    let s = e.peer_status("cloud").unwrap();
    assert!(s.connected, "{s:?}");
    assert_eq!(s.address.as_deref(), Some(b_addr.to_string().as_str()));
}

#[test]
fn both_up_the_edge_stays_on_the_first_until_it_goes_then_moves() {
    let (pki, stems) = fleet_pki();
    let dirs = [(); 3].map(|_| tempfile::tempdir().unwrap());
    let (a, a_addr) = hub(dirs[0].path(), pki.path(), &stems[0]);
    let (b, b_addr) = hub(dirs[1].path(), pki.path(), &stems[1]);
    let e = edge(
        dirs[2].path(),
        pki.path(),
        a_addr.to_string(),
        b_addr.to_string(),
    );

    // Steady state: one hub gets each transaction; the other never sees
    // the edge at all.
    write_alerts(&e, 0, 50);
    wait_until("hub A has the edge's alerts", T, || alerts(&a) == 50);
    let seq = e.peer_status("cloud").unwrap();
    assert_eq!(seq.address.as_deref(), Some(a_addr.to_string().as_str()));
    let on_b = b.peer_status("edge-1").unwrap();
    assert_eq!(on_b.connects, 0, "the edge dialed hub B while A was up");
    assert_eq!(on_b.received_seq, 0);
    assert_eq!(alerts(&b), 0);
    let a_id = seq.node_id;

    // Hub A goes: the edge moves to B and nothing it wrote is lost.
    a.close().unwrap();
    drop(a);
    write_alerts(&e, 50, 10);
    wait_until("hub B has every alert", T, || alerts(&b) == 60);
    let s = e.peer_status("cloud").unwrap();
    assert_eq!(s.address.as_deref(), Some(b_addr.to_string().as_str()));
    assert_ne!(s.node_id, a_id, "hub B has its own node id");
    assert_eq!(table_state(&b, "alerts"), table_state(&e, "alerts"));

    // What the move cost: B had no resume point for the edge, so the edge
    // sent it everything again (its log, or a snapshot where the log was
    // trimmed), the 50 alerts A already had included.
    let moved = b.peer_status("edge-1").unwrap();
    let sent = e.peer_status("cloud").unwrap();
    eprintln!(
        "failover cost: 50 alerts on hub A before the move, 10 after; hub B \
         holds {}; B's receive position {}, syncs received {}, duplicates {}; \
         edge resyncs sent {}",
        alerts(&b),
        moved.received_seq,
        moved.syncs_received,
        moved.duplicates_received,
        sent.resyncs_sent
    );
}
