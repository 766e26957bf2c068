//! Catch-up after an outage, over mutual TLS on 127.0.0.1: an edge that
//! subscribes to a cloud table goes offline while the cloud commits N
//! single-record transactions (default 1,000,000; `TIDELOG_CATCHUP_N`),
//! then comes back. Reports the time to drain and records/s, and the log's
//! size per 1,000,000 single-record transactions.
//!
//! Run: `cargo bench -p tidelog --bench catchup`. It measures; it asserts
//! nothing about speed.

use std::time::{Duration, Instant};

use serde_json::json;
use tidelog::net::certs;
use tidelog::*;

fn options(pki: &std::path::Path, node: &str) -> ReplicationOptions {
    let f = certs::node_paths(pki, node);
    ReplicationOptions::mutual_tls(f.cert_chain, f.key, certs::ca_paths(pki).0)
}

fn open(dir: &std::path::Path, node: &str) -> Database {
    let retention = Retention {
        log_max_bytes: 4 << 30,
        ..Retention::default()
    };
    Database::open(dir, OpenOptions::new(node).retention(retention)).expect("open")
}

fn start_edge(dir: &std::path::Path, pki: &std::path::Path, addr: &str) -> Database {
    let edge = open(dir, "edge-1");
    edge.start_replication(options(pki, "edge-1")).unwrap();
    edge.add_peer(
        PeerConfig::new("cloud")
            .address(addr)
            .table(TableFlow::subscribe("readings")),
    )
    .unwrap();
    edge
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo's bench discovery
    }
    let n: u64 = std::env::var("TIDELOG_CATCHUP_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let pki = tempfile::tempdir().unwrap();
    certs::generate_dev_pki(
        pki.path(),
        "bench CA",
        &["cloud".to_string(), "edge-1".to_string()],
    )
    .unwrap();
    let (dc, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cloud = open(dc.path(), "cloud");
    cloud
        .create_table("readings", TableOptions::default().index("sensor"))
        .unwrap();
    cloud
        .start_replication(options(pki.path(), "cloud"))
        .unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap().to_string();
    cloud
        .add_peer(PeerConfig::new("edge-1").table(TableFlow::publish("readings")))
        .unwrap();

    // Connect once so the subscription exists, then go offline.
    let edge = start_edge(de.path(), pki.path(), &addr);
    let t0 = Instant::now();
    while edge
        .peer_status("cloud")
        .map(|s| s.tables.iter().all(|t| t.inbound != "streaming"))
        .unwrap_or(true)
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "never connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    edge.close().unwrap();

    let log_before = cloud.log_bounds().unwrap();
    let t = Instant::now();
    for i in 0..n {
        cloud
            .upsert(
                "readings",
                json!({"id": i, "sensor": format!("s-{:03}", i % 500), "kind": "temp", "value": 21.5, "ts": 1_790_000_000_000u64 + i}),
            )
            .unwrap();
    }
    let write_s = t.elapsed().as_secs_f64();
    cloud.flush().unwrap();
    let log_after = cloud.log_bounds().unwrap();
    let log_bytes = log_after.bytes - log_before.bytes.min(log_after.bytes);
    let target = log_after.last;

    let t = Instant::now();
    let edge = start_edge(de.path(), pki.path(), &addr);
    loop {
        let s = edge.peer_status("cloud").unwrap();
        if s.received_seq >= target {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "drain stalled: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let drain_s = t.elapsed().as_secs_f64();
    assert_eq!(
        edge.count("readings").unwrap(),
        n,
        "edge must hold every record"
    );
    let per_million = log_bytes as f64 * 1_000_000.0 / n as f64;

    println!(
        "tidelog catch-up benchmark ({} cores, N = {n})",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    println!(
        "  cloud commits while the edge is offline: {:>10.0} txns/s ({write_s:.1} s)",
        n as f64 / write_s
    );
    println!(
        "  edge drain after reconnect (TLS):        {:>10.0} records/s ({drain_s:.2} s)",
        n as f64 / drain_s
    );
    println!(
        "  log size per 1,000,000 single-record transactions: {:.1} MB (entries before engine compression)",
        per_million / 1e6
    );
    println!(
        "  cloud disk after the run: {:.1} MB (records + index + log, compressed)",
        cloud.disk_bytes().unwrap() as f64 / 1e6
    );
    let verdict = if n as f64 / drain_s >= 100_000.0 {
        "PASS"
    } else {
        "MISS"
    };
    println!("  target: drain >= 100,000 records/s: {verdict}");
    edge.close().unwrap();
    cloud.close().unwrap();
}
