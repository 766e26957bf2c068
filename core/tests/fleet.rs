//! Replication over time and through hubs, on 127.0.0.1 with real mutual
//! TLS: relay through a hub, a triangle mesh, resync after the log was
//! trimmed, the byte cap with a peer gone for good, delivery receipts
//! across restarts.

mod repl_common;

use std::path::Path;
use std::time::Duration;

use repl_common::*;
use serde_json::json;
use tidelog::*;

const T: Duration = Duration::from_secs(30);

fn no_stamp_applied_twice(db: &Database, watch: &DupWatch) {
    assert!(
        watch.applied() > 0,
        "{}: the watch saw nothing",
        db.node_name()
    );
    assert!(
        watch.duplicates().is_empty(),
        "{}: applied twice: {:?}",
        db.node_name(),
        watch.duplicates()
    );
}

#[test]
fn a_hub_relays_between_edges_and_never_back_to_the_origin() {
    let pki = Pki::new(&["cloud", "edge-1", "edge-2", "edge-3"]);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let cloud = open_node(dirs[0].path(), "cloud");
    cloud
        .create_table("thresholds", TableOptions::default())
        .unwrap();
    cloud
        .create_table("alerts", TableOptions::default())
        .unwrap();
    let mut watches: Vec<DupWatch> = vec![];
    let cloud_watch = DupWatch::default();
    cloud_watch.watch(&cloud, &["thresholds", "alerts"]);
    cloud.start_replication(pki.options("cloud")).unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap().to_string();
    let mut edges = vec![];
    for (i, dir) in dirs[1..].iter().enumerate() {
        let name = format!("edge-{}", i + 1);
        // Edges 1 and 2 publish alerts and also subscribe to everyone's
        // alerts through the hub; edge 3 only publishes.
        let both = i < 2;
        let hub_side = PeerConfig::new(&name)
            .table(TableFlow::publish("thresholds"))
            .table(TableFlow {
                table: "alerts".into(),
                publish: both,
                subscribe: true,
                since_ms: None,
                priority: 0,
                ..TableFlow::publish("")
            });
        cloud.add_peer(hub_side).unwrap();
        let edge = open_node(dir.path(), &name);
        edge.create_table("alerts", TableOptions::default())
            .unwrap();
        edge.start_replication(pki.options(&name)).unwrap();
        edge.add_peer(
            PeerConfig::new("cloud")
                .address(&addr)
                .table(TableFlow::subscribe("thresholds"))
                .table(TableFlow {
                    table: "alerts".into(),
                    publish: true,
                    subscribe: both,
                    since_ms: None,
                    priority: 0,
                    ..TableFlow::publish("")
                }),
        )
        .unwrap();
        let w = DupWatch::default();
        w.watch(&edge, &["thresholds", "alerts"]);
        watches.push(w);
        edges.push(edge);
    }
    cloud
        .upsert("thresholds", json!({"id": "s1", "max": 10}))
        .unwrap();
    for (i, e) in edges.iter().enumerate() {
        for k in 0..50 {
            e.upsert("alerts", json!({"id": format!("e{i}-{k}"), "from": i}))
                .unwrap();
        }
    }
    for e in &edges {
        wait_until("thresholds on every edge", T, || {
            e.get("thresholds", "s1").ok().flatten().is_some()
        });
    }
    wait_until("all alerts on the hub", T, || {
        cloud.count("alerts").unwrap() == 150
    });
    // Edges 1 and 2 receive every alert, relayed with its original origin.
    for e in &edges[..2] {
        wait_until("relayed alerts", T, || e.count("alerts").unwrap() == 150);
        assert_eq!(table_state(e, "alerts"), table_state(&cloud, "alerts"));
        let from_3 = e.get("alerts", "e2-0").unwrap().unwrap();
        assert_eq!(
            from_3.stamp().node,
            edges[2].node_id(),
            "origin survives the relay"
        );
    }
    assert_eq!(
        edges[2].count("alerts").unwrap(),
        50,
        "edge 3 does not subscribe"
    );
    // Nothing came back to its origin: an edge never received a copy of its
    // own alerts (it would have shown as a dropped duplicate).
    std::thread::sleep(Duration::from_millis(300));
    for e in &edges {
        let s = e.peer_status("cloud").unwrap();
        assert_eq!(s.duplicates_received, 0, "{}: {s:?}", e.node_name());
        // Edges publish and subscribe alerts, but relay nothing to the hub
        // (it takes only their own writes): the origin rules never tripped.
        let hub_view = cloud.peer_status(e.node_name()).unwrap();
        assert_eq!(hub_view.origin_violations, 0, "{hub_view:?}");
    }
    watches.push(cloud_watch);
    for (db, w) in edges.iter().chain([&cloud]).zip(&watches) {
        no_stamp_applied_twice(db, w);
    }
}

#[test]
fn a_triangle_mesh_converges_with_no_transaction_applied_twice() {
    let names = ["a", "b", "c"];
    let pki = Pki::new(&names);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Database> = names
        .iter()
        .zip(&dirs)
        .map(|(n, d)| {
            let db = open_node(d.path(), n);
            db.create_table("t", TableOptions::default()).unwrap();
            db.start_replication(pki.options(n)).unwrap();
            db
        })
        .collect();
    let watches: Vec<DupWatch> = nodes
        .iter()
        .map(|n| {
            let w = DupWatch::default();
            w.watch(n, &["t"]);
            w
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| n.listen("127.0.0.1:0").unwrap().to_string())
        .collect();
    // a dials b, b dials c, c dials a: each pair has exactly one link.
    for (i, node) in nodes.iter().enumerate() {
        let (next, prev) = ((i + 1) % 3, (i + 2) % 3);
        node.add_peer(
            PeerConfig::new(names[next])
                .address(&addrs[next])
                .table(TableFlow::both("t")),
        )
        .unwrap();
        node.add_peer(PeerConfig::new(names[prev]).table(TableFlow::both("t")))
            .unwrap();
    }
    let writers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, db)| {
            let db = db.clone();
            std::thread::spawn(move || {
                for k in 0..300 {
                    // Shared keys conflict across nodes; own keys do not.
                    db.upsert("t", json!({"id": k % 25, "by": i, "k": k}))
                        .unwrap();
                    db.upsert("t", json!({"id": format!("own-{i}-{k}")}))
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    wait_until("mesh converged", T, || {
        let s0 = table_state(&nodes[0], "t");
        s0.len() == 25 + 900 && nodes[1..].iter().all(|n| table_state(n, "t") == s0)
    });
    for (n, w) in nodes.iter().zip(&watches) {
        no_stamp_applied_twice(n, w);
    }
}

fn start_cloud(dir: &Path, pki: &Pki, port: u16, cap: u64) -> (Database, String) {
    let opts = OpenOptions::new("cloud").retention(Retention {
        log_max_bytes: cap,
        ..Retention::default()
    });
    let cloud = Database::open(dir, opts).unwrap();
    cloud
        .ensure_table("thresholds", TableOptions::default())
        .unwrap();
    cloud
        .ensure_table("alerts", TableOptions::default())
        .unwrap();
    cloud.start_replication(pki.options("cloud")).unwrap();
    let addr = cloud
        .listen(&format!("127.0.0.1:{port}"))
        .unwrap()
        .to_string();
    cloud
        .add_peer(
            PeerConfig::new("edge-1")
                .table(TableFlow::both("thresholds"))
                .table(TableFlow::subscribe("alerts")),
        )
        .unwrap();
    (cloud, addr)
}

fn start_edge(dir: &Path, pki: &Pki, addr: &str) -> Database {
    let edge = open_node(dir, "edge-1");
    edge.ensure_table("thresholds", TableOptions::default())
        .unwrap();
    edge.ensure_table("alerts", TableOptions::default())
        .unwrap();
    edge.start_replication(pki.options("edge-1")).unwrap();
    edge.add_peer(
        PeerConfig::new("cloud")
            .address(addr)
            .table(TableFlow::both("thresholds"))
            .table(TableFlow::publish("alerts")),
    )
    .unwrap();
    edge
}

#[test]
fn an_edge_overtaken_by_the_log_cap_is_resynced_and_its_own_rows_survive() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let (dc, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cap = 64 * 1024;
    let (cloud, addr) = start_cloud(dc.path(), &pki, 0, cap);
    let edge = start_edge(de.path(), &pki, &addr);
    cloud
        .upsert("thresholds", json!({"id": "before", "v": 1}))
        .unwrap();
    wait_until("first sync", T, || {
        edge.get("thresholds", "before").ok().flatten().is_some()
    });
    edge.close().unwrap();
    // While the edge is away the cloud writes far more than its cap.
    for i in 0..3000 {
        cloud
            .upsert("thresholds", json!({"id": i, "pad": "x".repeat(80)}))
            .unwrap();
    }
    wait_until("cloud log trimmed under its cap", T, || {
        cloud.log_bounds().unwrap().bytes <= cap
    });
    let s = cloud.peer_status("edge-1").unwrap();
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("resynced"),
        "overtaking is reported: {s:?}"
    );
    // The edge writes rows of its own meanwhile (offline), then comes back.
    let offline = open_node(de.path(), "edge-1");
    for i in 0..20 {
        offline
            .upsert("thresholds", json!({"id": format!("edge-only-{i}")}))
            .unwrap();
    }
    offline.close().unwrap();
    let edge = start_edge(de.path(), &pki, &addr);
    wait_until("edge resynced", T, || {
        edge.count("thresholds").unwrap() == 3000 + 1 + 20
    });
    wait_until("edge rows reach the cloud", T, || {
        cloud.count("thresholds").unwrap() == 3021
    });
    assert_eq!(
        table_state(&edge, "thresholds"),
        table_state(&cloud, "thresholds")
    );
    let s = cloud.peer_status("edge-1").unwrap();
    assert!(s.resyncs_sent >= 1, "{s:?}");
    assert!(
        s.last_resync_reason
            .as_deref()
            .unwrap_or("")
            .contains("resume point"),
        "{s:?}"
    );
    // Counters are per process; this edge process saw the resync.
    let es = edge.peer_status("cloud").unwrap();
    assert!(es.syncs_received >= 1, "{es:?}");
    assert!(
        es.last_resync_reason
            .as_deref()
            .unwrap_or("")
            .contains("no longer in its log"),
        "{es:?}"
    );
}

#[test]
fn status_counts_the_backlog_the_log_still_holds_once_a_cap_trimmed_it() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let (dc, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cap = 64 * 1024;
    let (cloud, addr) = start_cloud(dc.path(), &pki, 0, cap);
    let edge = start_edge(de.path(), &pki, &addr);
    let before = cloud.upsert("thresholds", json!({"id": "before"})).unwrap();
    wait_until("the edge acknowledged the first write", T, || {
        cloud.peer_status("edge-1").unwrap().acked_seq >= before.seq
    });
    let s = cloud.peer_status("edge-1").unwrap();
    assert_eq!(
        (s.backlog_txns, s.backlog_bytes, s.resync_needed),
        (0, 0, false),
        "{s:?}"
    );
    edge.close().unwrap();
    // The edge is away while the cloud writes far more than its cap holds.
    let written = 20_000;
    for i in 0..written {
        cloud.upsert("thresholds", json!({"id": i})).unwrap();
    }
    wait_until("cloud log trimmed under its cap", T, || {
        cloud.log_bounds().unwrap().bytes <= cap
    });
    // Writes stopped; a status taken while the log did not move is
    // compared with the log read back entry by entry.
    let (s, bounds) = loop {
        let b = cloud.log_bounds().unwrap();
        let s = cloud.peer_status("edge-1").unwrap();
        if cloud.log_bounds().unwrap() == b {
            break (s, b);
        }
    };
    let pending = cloud.read_log(s.acked_seq + 1, usize::MAX).unwrap();
    assert!(pending.len() < written / 2, "the cap trimmed most of it");
    assert_eq!(pending.first().map(|e| e.seq), Some(bounds.first));
    assert_eq!(s.backlog_txns, pending.len() as u64, "{s:?} {bounds:?}");
    assert_eq!(s.backlog_txns, bounds.last - bounds.first + 1);
    // All that is left of its backlog is the whole log, as the cap counts it.
    assert_eq!(s.backlog_bytes, bounds.bytes, "{s:?} {bounds:?}");
    assert!(s.backlog_bytes <= cap);
    assert!(s.acked_seq + 1 < bounds.first);
    assert!(s.resync_needed, "{s:?}");
    // Back, the edge is resynced, and the flag goes with the backlog.
    let edge = start_edge(de.path(), &pki, &addr);
    wait_until("edge resynced and caught up", T, || {
        let s = cloud.peer_status("edge-1").unwrap();
        !s.resync_needed && s.backlog_txns == 0 && s.backlog_bytes == 0
    });
    assert_eq!(edge.count("thresholds").unwrap(), written as u64 + 1);
}

#[test]
fn the_log_stays_under_its_byte_cap_when_a_peer_is_gone_for_good() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let dc = tempfile::tempdir().unwrap();
    let cap = 100 * 1024;
    // The edge never connects.
    let (cloud, _addr) = start_cloud(dc.path(), &pki, 0, cap);
    let mut max_seen = 0;
    for round in 0..20 {
        for i in 0..500 {
            cloud
                .upsert(
                    "thresholds",
                    json!({"id": round * 500 + i, "pad": "y".repeat(60)}),
                )
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        max_seen = max_seen.max(cloud.log_bounds().unwrap().bytes);
    }
    wait_until("trimmed under the cap", T, || {
        cloud.log_bounds().unwrap().bytes <= cap
    });
    // Between trim passes (every second) the log may exceed the cap by what
    // was written since; it never grows without bound.
    assert!(max_seen < 20 * cap, "log grew to {max_seen} bytes");
    assert_eq!(
        cloud.count("thresholds").unwrap(),
        10_000,
        "trimming the log never touches data"
    );
}

#[test]
fn a_delivery_receipt_resolves_only_once_the_cloud_has_the_alert_across_restarts() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let (dc, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (cloud, addr) = start_cloud(dc.path(), &pki, 0, 1 << 30);
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let edge = start_edge(de.path(), &pki, &addr);
    wait_until("link up", T, || {
        edge.peer_status("cloud").unwrap().connected
    });
    cloud.close().unwrap();
    let info = edge
        .insert("alerts", json!({"id": "fire", "temp": 99}))
        .unwrap();
    let e = edge
        .wait_for_ack("cloud", info.seq, Duration::from_millis(300))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("the link is down") && text.contains(&addr),
        "a timed-out receipt says what the link looks like: {text}"
    );
    // The edge restarts while the cloud is down.
    edge.close().unwrap();
    let edge = start_edge(de.path(), &pki, &addr);
    let e = edge
        .wait_for_delivery(None, Duration::from_millis(300))
        .unwrap_err();
    assert!(
        matches!(e, Error::NotAcknowledged { after, .. } if after == Duration::from_millis(300)),
        "{e:?}"
    );
    let (cloud, _) = start_cloud(dc.path(), &pki, port, 1 << 30);
    edge.wait_for_delivery(Some(info.seq), T).unwrap();
    assert!(
        cloud.get("alerts", "fire").unwrap().is_some(),
        "receipt resolved before the cloud had the alert"
    );
    edge.wait_for_ack("cloud", info.seq, Duration::from_secs(1))
        .unwrap();
    // And after another restart the receipt is still known.
    edge.close().unwrap();
    let edge = open_node(de.path(), "edge-1");
    edge.start_replication(pki.options("edge-1")).unwrap();
    edge.add_peer(PeerConfig::new("cloud").table(TableFlow::publish("alerts")))
        .unwrap();
    edge.wait_for_ack("cloud", info.seq, Duration::from_millis(10))
        .expect("acknowledgement persisted");
}

#[test]
fn a_receipt_for_a_table_the_peer_does_not_subscribe_to_fails_instead_of_passing() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let (dc, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cloud = open_node(dc.path(), "cloud");
    cloud.start_replication(pki.options("cloud")).unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap().to_string();
    // The two sides disagree: the edge publishes `bulk`, the cloud only
    // takes `alerts`.
    cloud
        .add_peer(PeerConfig::new("edge-1").table(TableFlow::subscribe("alerts")))
        .unwrap();
    let edge = open_node(de.path(), "edge-1");
    edge.create_table("alerts", TableOptions::default())
        .unwrap();
    edge.create_table("bulk", TableOptions::default()).unwrap();
    edge.create_table("local", TableOptions::default()).unwrap();
    // Written before the link exists, so the receipt has to notice the
    // disagreement when the link comes up, not from an earlier link.
    let bulk = edge.upsert("bulk", json!({"id": 1})).unwrap();
    edge.start_replication(pki.options("edge-1")).unwrap();
    edge.add_peer(
        PeerConfig::new("cloud")
            .address(&addr)
            .table(TableFlow::publish("alerts"))
            .table(TableFlow::publish("bulk")),
    )
    .unwrap();
    let e = edge.wait_for_ack("cloud", bulk.seq, T).unwrap_err();
    assert!(
        matches!(&e, Error::NotSubscribed { peer, table, seq } if peer == "cloud" && table == "bulk" && *seq == bulk.seq),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Peer);
    assert!(
        cloud.get("bulk", 1i64).is_err(),
        "bulk never reached the cloud"
    );
    let status = edge.peer_status("cloud").unwrap();
    let outbound = |t: &str| {
        status
            .tables
            .iter()
            .find(|s| s.table == t)
            .map(|s| s.outbound.clone())
    };
    assert_eq!(
        outbound("bulk").as_deref(),
        Some("not subscribed by the peer")
    );
    assert_eq!(outbound("alerts").as_deref(), Some("streaming"));
    // A transaction that also writes `alerts` still does not reach the
    // cloud whole, so its receipt fails too; so does the fleet-wide one.
    let mut tx = edge.transaction();
    tx.upsert("alerts", json!({"id": 1})).unwrap();
    tx.upsert("bulk", json!({"id": 2})).unwrap();
    let both = tx.commit().unwrap();
    assert!(matches!(
        edge.wait_for_ack("cloud", both.seq, T),
        Err(Error::NotSubscribed { .. })
    ));
    assert!(matches!(
        edge.wait_for_delivery(None, T),
        Err(Error::NotSubscribed { .. })
    ));
    // What the cloud takes gets its receipt; a table not published to it
    // at all is not part of the receipt.
    let alert = edge.upsert("alerts", json!({"id": 2})).unwrap();
    edge.wait_for_ack("cloud", alert.seq, T).unwrap();
    assert!(cloud.get("alerts", 2i64).unwrap().is_some());
    let local = edge.upsert("local", json!({"id": 1})).unwrap();
    edge.wait_for_ack("cloud", local.seq, T).unwrap();
}

/// Changes as they arrived on a cloud: (table, key), in arrival order.
type Arrivals = std::sync::Arc<std::sync::Mutex<Vec<(String, Key)>>>;

/// A cloud on 127.0.0.1 that subscribes to `bulk` and `alerts` from
/// `edge-1` and records the order in which their changes arrive.
fn cloud_recording_arrivals(dir: &std::path::Path, pki: &Pki) -> (Database, String, Arrivals) {
    let cloud = open_node(dir, "cloud");
    cloud.start_replication(pki.options("cloud")).unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap().to_string();
    cloud
        .add_peer(
            PeerConfig::new("edge-1")
                .table(TableFlow::subscribe("bulk"))
                .table(TableFlow::subscribe("alerts")),
        )
        .unwrap();
    let arrivals = Arrivals::default();
    for t in ["bulk", "alerts"] {
        let a = arrivals.clone();
        cloud
            .on_change(t, move |e: &ChangeEvent| {
                let mut g = a.lock().unwrap();
                for c in &e.changes {
                    g.push((e.table.clone(), c.key.clone()));
                }
            })
            .unwrap();
    }
    (cloud, addr, arrivals)
}

/// Starts `edge-1`'s replication with a link to the cloud at `addr` that
/// publishes `bulk` and, at a higher priority, `alerts`.
fn publish_bulk_and_alerts(edge: &Database, pki: &Pki, addr: &str) {
    edge.start_replication(pki.options("edge-1")).unwrap();
    edge.add_peer(
        PeerConfig::new("cloud")
            .address(addr)
            .table(TableFlow::publish("bulk"))
            .table(TableFlow::publish("alerts").priority(9)),
    )
    .unwrap();
}

#[test]
fn a_higher_priority_table_overtakes_a_backlog_and_each_table_keeps_its_order() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let (dc, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_cloud, addr, arrivals) = cloud_recording_arrivals(dc.path(), &pki);
    // The edge builds a backlog offline: bulk first, alerts last.
    let edge = open_node(de.path(), "edge-1");
    edge.create_table("bulk", TableOptions::default()).unwrap();
    edge.create_table("alerts", TableOptions::default())
        .unwrap();
    for i in 0..3000i64 {
        edge.upsert("bulk", json!({"id": i})).unwrap();
    }
    for i in 0..5i64 {
        edge.upsert("alerts", json!({"id": i})).unwrap();
    }
    publish_bulk_and_alerts(&edge, &pki, &addr);
    wait_until("everything arrived", T, || {
        arrivals.lock().unwrap().len() == 3005
    });
    let got = arrivals.lock().unwrap().clone();
    let first_bulk = got.iter().position(|(t, _)| t == "bulk").unwrap();
    let last_alert = got.iter().rposition(|(t, _)| t == "alerts").unwrap();
    assert!(
        last_alert < first_bulk,
        "alerts must overtake the backlog: last alert at {last_alert}, first bulk at {first_bulk}"
    );
    for table in ["bulk", "alerts"] {
        let keys: Vec<&Key> = got
            .iter()
            .filter(|(t, _)| t == table)
            .map(|(_, k)| k)
            .collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "{table} arrived out of order"
        );
    }
}

#[test]
fn a_higher_priority_backlog_in_the_log_goes_out_first() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let (dc, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (cloud, addr, arrivals) = cloud_recording_arrivals(dc.path(), &pki);
    let start_edge = || {
        let edge = open_node(de.path(), "edge-1");
        edge.ensure_table("bulk", TableOptions::default()).unwrap();
        edge.ensure_table("alerts", TableOptions::default())
            .unwrap();
        publish_bulk_and_alerts(&edge, &pki, &addr);
        edge
    };
    // Link up once so both tables are past their initial sync; then the
    // backlog builds in the edge's log while it is offline. The edge says
    // "streaming" once it has sent a table's last sync chunk; only the
    // cloud knows when it has applied it and recorded the sync as done.
    // Closing the edge before that makes the next link sync `bulk` again
    // (a snapshot, not the log backlog this test is about).
    let edge = start_edge();
    wait_until("both tables synced on the cloud", T, || {
        let Ok(s) = cloud.peer_status("edge-1") else {
            return false;
        };
        s.tables.len() == 2 && s.tables.iter().all(|t| t.inbound == "streaming")
    });
    edge.close().unwrap();
    let offline = open_node(de.path(), "edge-1");
    for i in 0..3000i64 {
        offline.upsert("bulk", json!({"id": i})).unwrap();
    }
    for i in 0..5i64 {
        offline.upsert("alerts", json!({"id": i})).unwrap();
    }
    offline.close().unwrap();
    let _edge = start_edge();
    wait_until("everything arrived", T, || {
        arrivals.lock().unwrap().len() == 3005
    });
    let got = arrivals.lock().unwrap().clone();
    let first_bulk = got.iter().position(|(t, _)| t == "bulk").unwrap();
    let last_alert = got.iter().rposition(|(t, _)| t == "alerts").unwrap();
    assert!(
        last_alert < first_bulk,
        "alerts must overtake the backlog: last alert at {last_alert}, first bulk at {first_bulk}"
    );
    let bulk: Vec<&Key> = got
        .iter()
        .filter(|(t, _)| t == "bulk")
        .map(|(_, k)| k)
        .collect();
    assert!(
        bulk.windows(2).all(|w| w[0] < w[1]),
        "bulk arrived out of log order"
    );
}

#[test]
fn a_table_that_resumes_streams_while_another_is_synced() {
    // The cloud takes only alerts at first; the edge has a big bulk table.
    // Then the cloud subscribes to bulk too: the new link syncs bulk, and
    // an alert raised meanwhile must not wait for that snapshot.
    let pki = Pki::new(&["cloud", "edge-1"]);
    let (dc, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (cloud, addr, arrivals) = cloud_recording_arrivals(dc.path(), &pki);
    cloud
        .update_peer(PeerConfig::new("edge-1").table(TableFlow::subscribe("alerts")))
        .unwrap();
    let edge = open_node(de.path(), "edge-1");
    edge.create_table("bulk", TableOptions::default()).unwrap();
    edge.create_table("alerts", TableOptions::default())
        .unwrap();
    let mut tx = edge.transaction();
    for i in 0..30_000i64 {
        tx.upsert("bulk", json!({"id": i, "pad": "x".repeat(40)}))
            .unwrap();
    }
    tx.commit().unwrap();
    publish_bulk_and_alerts(&edge, &pki, &addr);
    edge.upsert("alerts", json!({"id": 0})).unwrap();
    wait_until("alerts resumable", T, || {
        cloud.get("alerts", 0i64).ok().flatten().is_some()
    });

    cloud
        .update_peer(
            PeerConfig::new("edge-1")
                .table(TableFlow::subscribe("bulk"))
                .table(TableFlow::subscribe("alerts")),
        )
        .unwrap();
    wait_until("bulk is being synced", T, || {
        cloud.peer_status("edge-1").is_ok_and(|s| {
            s.tables
                .iter()
                .any(|t| t.table == "bulk" && t.inbound == "syncing")
        })
    });
    let alert = edge.upsert("alerts", json!({"id": 1})).unwrap();
    let late_bulk = edge.upsert("bulk", json!({"id": -1})).unwrap();
    // Receipts still wait for the sync: the position the cloud may
    // acknowledge does not pass a write of a table still being synced.
    edge.wait_for_ack("cloud", late_bulk.seq, T).unwrap();
    assert!(
        cloud.get("bulk", -1i64).unwrap().is_some(),
        "receipt passed before the cloud had the write"
    );
    edge.wait_for_ack("cloud", alert.seq, T).unwrap();
    wait_until("everything arrived", T, || {
        arrivals.lock().unwrap().len() == 30_003
    });
    let got = arrivals.lock().unwrap().clone();
    let alert_at = got
        .iter()
        .position(|(t, k)| t == "alerts" && *k == Key::Int(1))
        .unwrap();
    let last_synced = got
        .iter()
        .rposition(|(t, k)| t == "bulk" && *k != Key::Int(-1))
        .unwrap();
    assert!(
        alert_at < last_synced,
        "the alert waited for the snapshot: it arrived at {alert_at}, the snapshot's last row at {last_synced}"
    );
}
