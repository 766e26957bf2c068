//! Frame compression over real mutual TLS on 127.0.0.1: negotiated per
//! link, counted in status, and the same records arrive with it on or off.

mod repl_common;

use std::time::Duration;

use repl_common::*;
use serde_json::json;
use tidelog::*;

const T: Duration = Duration::from_secs(60);

struct Pair {
    _pki: Pki,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    cloud: Database,
    edge: Database,
}

/// An edge that publishes `telemetry` to a cloud, with each side's
/// compression setting.
fn pair(edge_compression: Option<Compression>, cloud_compression: Option<Compression>) -> Pair {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cloud = open_node(dirs.0.path(), "cloud");
    cloud.start_replication(pki.options("cloud")).unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap();
    let mut to_edge = PeerConfig::new("edge-1").table(TableFlow::subscribe("telemetry"));
    to_edge.compression = cloud_compression;
    cloud.add_peer(to_edge).unwrap();

    let edge = open_node(dirs.1.path(), "edge-1");
    edge.create_table("telemetry", TableOptions::default())
        .unwrap();
    edge.start_replication(pki.options("edge-1")).unwrap();
    let mut to_cloud = PeerConfig::new("cloud")
        .address(addr.to_string())
        .table(TableFlow::publish("telemetry"));
    to_cloud.compression = edge_compression;
    edge.add_peer(to_cloud).unwrap();
    Pair {
        _pki: pki,
        _dirs: dirs,
        cloud,
        edge,
    }
}

/// Telemetry: `keys` gateways' readings of 10 attributes, then `updates`
/// updates that change one or two of them.
fn write_telemetry(db: &Database, keys: u64, updates: u64, seed: u64) {
    let mut rng = Rng(seed | 1);
    let mut rows: Vec<serde_json::Value> = (0..keys)
        .map(|k| {
            json!({
                "id": k,
                "site": format!("plant-{}", k % 12),
                "sensor": format!("temp-{}", k % 97),
                "temperature": 20.0 + (k % 50) as f64 / 10.0,
                "humidity": 40 + k % 30,
                "pressure": 1000 + k % 40,
                "battery": 100 - k % 20,
                "rssi": -60 - (k % 30) as i64,
                "status": "ok",
                "firmware": "1.4.2",
            })
        })
        .collect();
    // Fifty records per transaction: every frame is large enough to be
    // compressed however the sender's batches fall on a busy machine.
    for chunk in rows.chunks(50) {
        let mut tx = db.transaction();
        for row in chunk {
            tx.upsert("telemetry", row.clone()).unwrap();
        }
        tx.commit().unwrap();
    }
    let fields = ["temperature", "humidity", "pressure", "battery", "rssi"];
    for _ in 0..updates / 50 {
        let mut tx = db.transaction();
        for _ in 0..50 {
            let k = rng.below(keys) as usize;
            for _ in 0..1 + rng.below(2) {
                let f = fields[rng.below(fields.len() as u64) as usize];
                rows[k][f] = json!(rng.below(1000));
            }
            tx.upsert("telemetry", rows[k].clone()).unwrap();
        }
        tx.commit().unwrap();
    }
}

fn converge(p: &Pair) {
    wait_until("the cloud holds the edge's telemetry", T, || {
        table_state(&p.cloud, "telemetry") == table_state(&p.edge, "telemetry")
    });
}

#[test]
fn compressed_links_send_fewer_bytes_and_deliver_the_same_records() {
    let p = pair(None, None);
    write_telemetry(&p.edge, 2_000, 8_000, 23);
    converge(&p);
    let out = p.edge.peer_status("cloud").unwrap().traffic;
    let inbound = p.cloud.peer_status("edge-1").unwrap().traffic;
    eprintln!(
        "zstd on: edge sent {} bytes encoded, {} on the wire ({:.1} %); cloud read {} / {}",
        out.bytes_out_raw,
        out.bytes_out_wire,
        100.0 * out.bytes_out_wire as f64 / out.bytes_out_raw as f64,
        inbound.bytes_in_raw,
        inbound.bytes_in_wire
    );
    assert_eq!(out.compression.as_deref(), Some("zstd"));
    assert_eq!(inbound.compression.as_deref(), Some("zstd"));
    // 10,000 JSON records of ten attributes compress to well under half.
    assert!(
        out.bytes_out_wire * 2 < out.bytes_out_raw,
        "expected compression: {out:?}"
    );
    assert!(
        inbound.bytes_in_wire * 2 < inbound.bytes_in_raw,
        "{inbound:?}"
    );
    // What one side wrote is what the other read (heartbeats may be in
    // flight, so the cloud has read at most what the edge wrote).
    assert!(inbound.bytes_in_wire <= out.bytes_out_wire);
    assert!(inbound.bytes_in_raw * 10 > out.bytes_out_raw * 9);
    // Acknowledgements back are small frames and go plain.
    let back = p.cloud.peer_status("edge-1").unwrap().traffic;
    assert!(back.bytes_out_raw > 0);
}

#[test]
fn either_side_saying_none_keeps_the_link_plain() {
    for (edge, cloud) in [
        (Some(Compression::None), None),
        (None, Some(Compression::None)),
    ] {
        let p = pair(edge, cloud);
        write_telemetry(&p.edge, 500, 500, 5);
        converge(&p);
        let out = p.edge.peer_status("cloud").unwrap().traffic;
        let inbound = p.cloud.peer_status("edge-1").unwrap().traffic;
        assert_eq!(
            out.compression.as_deref(),
            Some("none"),
            "{edge:?} {cloud:?}"
        );
        assert_eq!(inbound.compression.as_deref(), Some("none"));
        assert_eq!(out.bytes_out_wire, out.bytes_out_raw, "{out:?}");
        assert_eq!(inbound.bytes_in_wire, inbound.bytes_in_raw);
        assert!(out.bytes_out_raw > 500 * 100);
    }
}

#[test]
fn compression_setting_is_spelled_in_json_and_refused_when_unknown() {
    let ok: PeerConfig = serde_json::from_value(json!({
        "name": "cloud", "compression": "zstd"
    }))
    .unwrap();
    assert_eq!(ok.compression, Some(Compression::Zstd));
    let bad = serde_json::from_value::<PeerConfig>(json!({
        "name": "cloud", "compression": "gzip"
    }))
    .unwrap_err()
    .to_string();
    assert!(bad.contains("gzip") && bad.contains("zstd"), "{bad}");
}
