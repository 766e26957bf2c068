//! Attribute deltas over real mutual TLS on 127.0.0.1: updates of a few
//! attributes go as edits, converge byte for byte, cost far fewer bytes
//! than whole records, and a delta whose base the receiver lacks (both
//! sides writing the same records) is recovered with nothing lost.
//! Bytes are counted by a TCP proxy between the nodes (TLS records
//! included), so the comparison does not depend on any status counter.

mod repl_common;

use std::time::Duration;

use repl_common::*;
use serde_json::json;
use tidelog::*;

/// Patience for convergence: only catches hangs, never a timing claim.
const T: Duration = Duration::from_secs(60);

/// A record of ten attributes; `v` varies two of them.
fn record(k: i64, v: i64) -> serde_json::Value {
    json!({
        "id": k, "site": format!("plant-{}", k % 7), "kind": "temperature-sensor",
        "unit": "celsius", "lo": -40, "hi": 125, "fw": "4.2.17-stable",
        "note": "calibrated 2026-01-10 by the field team", "value": v, "seen": v * 1000,
    })
}

/// An edge publishing `readings` to a cloud through a counting proxy.
struct Pair {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    _pki: Pki,
    edge: Database,
    cloud: Database,
    proxy: CountingProxy,
}

/// Frames go plain on these links, so the bytes compared are what deltas
/// save (core/tests/telemetry.rs measures them with zstd too).
fn pair(deltas: bool) -> Pair {
    let pki = Pki::new(&["edge-1", "cloud"]);
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let edge = open_node(dirs.0.path(), "edge-1");
    let cloud = open_node(dirs.1.path(), "cloud");
    for db in [&edge, &cloud] {
        db.create_table("readings", TableOptions::default())
            .unwrap();
    }
    cloud.start_replication(pki.options("cloud")).unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap();
    cloud
        .add_peer(
            PeerConfig::new("edge-1")
                .deltas(deltas)
                .table(TableFlow::subscribe("readings")),
        )
        .unwrap();
    let proxy = CountingProxy::start(addr);
    edge.start_replication(pki.options("edge-1")).unwrap();
    edge.add_peer(
        PeerConfig::new("cloud")
            .address(proxy.addr.to_string())
            .deltas(deltas)
            .compression(Compression::None)
            .table(TableFlow::publish("readings")),
    )
    .unwrap();
    Pair {
        _dirs: dirs,
        _pki: pki,
        edge,
        cloud,
        proxy,
    }
}

/// Inserts 200 records, then updates one or two attributes 2,000 times;
/// returns the bytes the updates cost upstream and the edge's status.
fn updates(p: &Pair) -> (u64, PeerStatus) {
    for k in 0..200 {
        p.edge.insert("readings", record(k, 0)).unwrap();
    }
    wait_until("the inserts arrived", T, || {
        table_state(&p.edge, "readings") == table_state(&p.cloud, "readings")
    });
    let before = p.proxy.up_bytes();
    for i in 0..2000i64 {
        let k = i % 200;
        let patch = if i % 3 == 0 {
            json!({"id": k, "value": i, "seen": i * 1000})
        } else {
            json!({"id": k, "value": i})
        };
        p.edge.update("readings", patch).unwrap();
    }
    wait_until("the updates arrived", T, || {
        table_state(&p.edge, "readings") == table_state(&p.cloud, "readings")
    });
    // Heartbeats flow too (both runs alike); what is counted is the
    // updates' share.
    (
        p.proxy.up_bytes() - before,
        p.edge.peer_status("cloud").unwrap(),
    )
}

#[test]
fn updates_go_as_deltas_converge_byte_for_byte_and_cost_far_fewer_bytes() {
    let on = pair(true);
    let (bytes_on, status_on) = updates(&on);
    let off = pair(false);
    let (bytes_off, status_off) = updates(&off);
    eprintln!(
        "2,000 updates of 1-2 of 10 attributes: {bytes_on} bytes with deltas, {bytes_off} whole ({:.1} %)",
        bytes_on as f64 * 100.0 / bytes_off as f64
    );
    assert!(
        status_on.traffic.deltas_sent > 1000,
        "{:?}",
        status_on.traffic
    );
    assert_eq!(status_off.traffic.deltas_sent, 0);
    assert_eq!(status_on.traffic.delta_misses, 0);
    assert!(
        bytes_on * 2 < bytes_off,
        "deltas {bytes_on} bytes, whole records {bytes_off}"
    );
    // The rebuilt text is the edge's text exactly (table_state compares
    // the record text): checked by the waits above, and once more here.
    assert_eq!(
        table_state(&on.edge, "readings"),
        table_state(&on.cloud, "readings")
    );
}

#[test]
fn both_sides_writing_the_same_records_miss_deltas_and_still_lose_nothing() {
    let pki = Pki::new(&["a", "b"]);
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open_node(da.path(), "a");
    let b = open_node(dbb.path(), "b");
    for db in [&a, &b] {
        db.create_table("shared", TableOptions::default().index("value"))
            .unwrap();
    }
    a.start_replication(pki.options("a")).unwrap();
    b.start_replication(pki.options("b")).unwrap();
    let addr = a.listen("127.0.0.1:0").unwrap();
    a.add_peer(PeerConfig::new("b").table(TableFlow::both("shared")))
        .unwrap();
    b.add_peer(
        PeerConfig::new("a")
            .address(addr.to_string())
            .table(TableFlow::both("shared")),
    )
    .unwrap();
    for k in 0..5 {
        a.insert("shared", record(k, 0)).unwrap();
    }
    wait_until("the records arrived", T, || {
        table_state(&a, "shared") == table_state(&b, "shared")
    });
    // Each writer remembers the stamp and value of every write it made.
    let writer = |db: Database, base: i64| {
        std::thread::spawn(move || {
            let mut mine = Vec::new();
            for i in 0..3000i64 {
                let (k, v) = (i % 5, base + i);
                let mut tx = db.transaction();
                if i % 97 == 0 {
                    tx.delete("shared", k).unwrap();
                } else {
                    tx.upsert("shared", record(k, v)).unwrap();
                }
                mine.push((k, (i % 97 != 0).then_some(v), tx.commit().unwrap().stamp));
            }
            mine
        })
    };
    let (ta, tb) = (writer(a.clone(), 0), writer(b.clone(), 1_000_000));
    let mut writes = ta.join().unwrap();
    writes.extend(tb.join().unwrap());
    wait_until("both sides hold the same records", T, || {
        table_state(&a, "shared") == table_state(&b, "shared")
    });
    for k in 0..5i64 {
        let (_, value, best) = writes
            .iter()
            .filter(|(key, _, _)| *key == k)
            .max_by_key(|(_, _, s)| *s)
            .copied()
            .unwrap();
        for db in [&a, &b] {
            match db.get("shared", k).unwrap() {
                Some(r) => {
                    assert_eq!(r.stamp(), best, "key {k}");
                    assert_eq!(r.body_json(), record(k, value.unwrap()).to_string());
                }
                None => assert!(value.is_none(), "key {k}: the latest write was an upsert"),
            }
        }
    }
    let (sa, sb) = (a.peer_status("b").unwrap(), b.peer_status("a").unwrap());
    eprintln!("a: {:?}\nb: {:?}", sa.traffic, sb.traffic);
    assert!(sa.traffic.deltas_sent + sb.traffic.deltas_sent > 0);
    assert!(
        sa.traffic.delta_misses + sb.traffic.delta_misses > 0,
        "no miss: the writers never raced ({:?} / {:?})",
        sa.traffic,
        sb.traffic
    );
}

#[test]
fn coalescing_sends_the_newest_version_of_each_key_and_loses_nothing_else() {
    let pki = Pki::new(&["edge-1", "cloud"]);
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let edge = open_node(dirs.0.path(), "edge-1");
    let cloud = open_node(dirs.1.path(), "cloud");
    for db in [&edge, &cloud] {
        db.create_table("readings", TableOptions::default())
            .unwrap();
        db.create_table("alerts", TableOptions::default()).unwrap();
    }
    cloud.start_replication(pki.options("cloud")).unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap();
    cloud
        .add_peer(
            PeerConfig::new("edge-1")
                .table(TableFlow::subscribe("readings"))
                .table(TableFlow::subscribe("alerts")),
        )
        .unwrap();
    edge.start_replication(pki.options("edge-1")).unwrap();
    let mut readings = TableFlow::publish("readings");
    readings.coalesce_ms = Some(1500);
    edge.add_peer(
        PeerConfig::new("cloud")
            .address(addr.to_string())
            .table(readings)
            .table(TableFlow::publish("alerts")),
    )
    .unwrap();
    // Streaming first (the initial sync sends only the newest anyway).
    edge.insert("readings", record(1000, 0)).unwrap();
    wait_until("the link streams", T, || {
        cloud.get("readings", 1000).unwrap().is_some()
    });
    let first = edge.upsert("readings", record(0, 0)).unwrap();
    for v in 1..100 {
        for k in 0..4 {
            edge.upsert("readings", record(k, v)).unwrap();
            // A table that does not coalesce, interleaved: every version.
            if v % 10 == 0 {
                edge.upsert("alerts", record(k * 100 + v, v)).unwrap();
            }
        }
    }
    // Keys written once: nothing overwrites them, so they go out.
    for k in 10..30 {
        edge.insert("readings", record(k, 7)).unwrap();
    }
    let last = edge.upsert("readings", record(3, 100)).unwrap();
    edge.wait_for_ack("cloud", last.seq, T).unwrap();
    assert_eq!(
        table_state(&edge, "readings"),
        table_state(&cloud, "readings")
    );
    assert_eq!(table_state(&edge, "alerts"), table_state(&cloud, "alerts"));
    assert_eq!(table_state(&cloud, "alerts").len(), 36);
    assert_eq!(
        cloud.get("readings", 3).unwrap().unwrap().body_json(),
        record(3, 100).to_string()
    );
    // The receipt of a passed-over version: the newer one was applied.
    edge.wait_for_ack("cloud", first.seq, T).unwrap();
    let s = edge.peer_status("cloud").unwrap();
    let table = s.tables.iter().find(|t| t.table == "readings").unwrap();
    eprintln!(
        "coalesced: link {}, readings {}",
        s.traffic.coalesced, table.coalesced
    );
    assert!(table.coalesced > 0);
    assert_eq!(s.traffic.coalesced, table.coalesced);
    let alerts = s.tables.iter().find(|t| t.table == "alerts").unwrap();
    assert_eq!(alerts.coalesced, 0);
    // The cloud applied fewer versions than the edge wrote (each applied
    // one enters its log), and every one of them was the newest of its
    // key within a window or a write nothing overwrote.
    let applied = cloud.log_bounds().unwrap().last;
    assert!(
        applied + table.coalesced <= edge.log_bounds().unwrap().last,
        "cloud applied {applied}, edge passed over {}",
        table.coalesced
    );
}
