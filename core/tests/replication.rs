//! Two instances replicating over real mutual TLS on 127.0.0.1: the SPEC §1
//! scenario, conflicts, resume after restart, and refusals.

mod repl_common;

use std::time::Duration;

use repl_common::*;
use serde_json::json;
use tidelog::*;

const T: Duration = Duration::from_secs(20);

struct Pair {
    _pki: Pki,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    cloud: Database,
    edge: Database,
}

/// A cloud that listens and an edge that dials it: thresholds flow down,
/// alerts up, sensor_data stays on the edge.
fn edge_and_cloud() -> Pair {
    edge_and_cloud_with(|o| o)
}

/// [`edge_and_cloud`] with the edge's replication options adjusted.
fn edge_and_cloud_with(
    edge_options: impl FnOnce(ReplicationOptions) -> ReplicationOptions,
) -> Pair {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cloud = open_node(dirs.0.path(), "cloud");
    cloud
        .create_table("thresholds", TableOptions::default().primary_key("sensor"))
        .unwrap();
    cloud
        .upsert("thresholds", json!({"sensor": "s1", "max": 50}))
        .unwrap();
    cloud.start_replication(pki.options("cloud")).unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap();
    cloud
        .add_peer(
            PeerConfig::new("edge-1")
                .table(TableFlow::publish("thresholds"))
                .table(TableFlow::subscribe("alerts")),
        )
        .unwrap();

    let edge = open_node(dirs.1.path(), "edge-1");
    edge.create_table(
        "sensor_data",
        TableOptions::default()
            .index("sensor")
            .expiration_secs(3600),
    )
    .unwrap();
    edge.create_table("alerts", TableOptions::default())
        .unwrap();
    edge.start_replication(edge_options(pki.options("edge-1")))
        .unwrap();
    edge.add_peer(
        PeerConfig::new("cloud")
            .address(addr.to_string())
            .table(TableFlow::subscribe("thresholds"))
            .table(TableFlow::publish("alerts")),
    )
    .unwrap();
    Pair {
        _pki: pki,
        _dirs: dirs,
        cloud,
        edge,
    }
}

#[test]
fn edge_cloud_scenario_thresholds_down_alerts_up_sensor_data_stays() {
    let p = edge_and_cloud();
    let (cloud, edge) = (&p.cloud, &p.edge);
    // Created before the edge connected: arrives by initial sync, with the
    // table created on the edge with the publisher's primary key.
    wait_until("initial threshold on edge", T, || {
        edge.get("thresholds", "s1").ok().flatten().is_some()
    });
    assert_eq!(
        edge.describe_table("thresholds").unwrap().primary_key,
        "sensor"
    );
    // Created after: arrives live.
    cloud
        .upsert("thresholds", json!({"sensor": "s2", "max": 70}))
        .unwrap();
    wait_until("live threshold on edge", T, || {
        edge.get("thresholds", "s2").ok().flatten().is_some()
    });
    cloud
        .update("thresholds", json!({"sensor": "s1", "max": 55}))
        .unwrap();
    wait_until("threshold change on edge", T, || {
        edge.get("thresholds", "s1").unwrap().unwrap().to_value()["max"] == json!(55)
    });
    // Readings stay local; alerts go up.
    let info = raise_alert_with_window(edge, 100, "a1");
    wait_until("alert on cloud", T, || {
        cloud.get("alerts", "a1").ok().flatten().is_some()
    });
    edge.wait_for_ack("cloud", info.seq, T).unwrap();
    let on_cloud = cloud.get("alerts", "a1").unwrap().unwrap();
    assert_eq!(on_cloud.stamp(), info.stamp, "original stamp travels");
    assert_eq!(on_cloud.to_value()["window"].as_array().unwrap().len(), 100);
    assert!(
        cloud.describe_table("sensor_data").is_err(),
        "cloud must not have sensor_data"
    );
    let cloud_log = cloud.read_log(1, 100_000).unwrap();
    assert!(cloud_log
        .iter()
        .all(|e| e.writes.iter().all(|w| w.table != "sensor_data")));
    // Remote writes enter the cloud's log with the edge as origin.
    assert!(cloud_log
        .iter()
        .any(|e| e.origin() == edge.node_id() && e.writes[0].table == "alerts"));
    // Status says what is going on, on both sides.
    let s = edge.peer_status("cloud").unwrap();
    assert!(s.connected, "{s:?}");
    assert!(s.acked_seq >= info.seq);
    assert_eq!(s.node_id, Some(cloud.node_id()));
    let cs = cloud.peer_status("edge-1").unwrap();
    assert!(cs.connected && cs.received_seq >= info.seq, "{cs:?}");
    assert_eq!(cs.refused_writes, 0);
    let alerts = cs.tables.iter().find(|t| t.table == "alerts").unwrap();
    assert_eq!(alerts.inbound, "streaming");
    p.edge.close().unwrap();
    p.cloud.close().unwrap();
}

#[test]
fn concurrent_conflicting_writes_converge_later_stamp_wins() {
    let pki = Pki::new(&["a", "b"]);
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open_node(da.path(), "a");
    let b = open_node(dbb.path(), "b");
    for db in [&a, &b] {
        db.create_table("shared", TableOptions::default().index("v"))
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
    // Each writer remembers the stamp of every write it made, per key.
    let writer = |db: Database, tag: &'static str| {
        std::thread::spawn(move || {
            let mut mine = Vec::new();
            for i in 0..2000 {
                let k = i % 20;
                let mut tx = db.transaction();
                if i % 9 == 0 {
                    tx.delete("shared", k).unwrap();
                } else {
                    tx.upsert("shared", json!({"id": k, "v": i, "by": tag}))
                        .unwrap();
                }
                mine.push((k, i % 9 != 0, tx.commit().unwrap().stamp));
            }
            mine
        })
    };
    let (ta, tb) = (writer(a.clone(), "a"), writer(b.clone(), "b"));
    let mut writes = ta.join().unwrap();
    writes.extend(tb.join().unwrap());
    wait_until("both sides hold the same records", T, || {
        table_state(&a, "shared") == table_state(&b, "shared")
    });
    // Every key holds its highest-stamped write: a record if that was an
    // upsert, nothing if it was a delete.
    for k in 0..20i64 {
        let (_, live, best) = writes
            .iter()
            .filter(|(key, _, _)| *key == k)
            .max_by_key(|(_, _, s)| *s)
            .copied()
            .unwrap();
        match a.get("shared", k).unwrap() {
            Some(r) => {
                assert!(live, "key {k}: the latest write was a delete");
                assert_eq!(r.stamp(), best);
            }
            None => assert!(!live, "key {k}: the latest write was an upsert"),
        }
    }
    for v in [json!(5), json!(1999)] {
        let ka: Vec<_> = a
            .find_eq("shared", "v", &v)
            .unwrap()
            .iter()
            .map(|r| r.key().clone())
            .collect();
        let kb: Vec<_> = b
            .find_eq("shared", "v", &v)
            .unwrap()
            .iter()
            .map(|r| r.key().clone())
            .collect();
        assert_eq!(ka, kb);
    }
}

#[test]
fn replication_resumes_after_either_side_restarts_without_loss_or_duplicates() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let (dc, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let watch = DupWatch::default();
    let start_cloud = |port: u16| {
        let cloud = open_node(dc.path(), "cloud");
        watch.watch(&cloud, &["alerts", "pairs"]);
        cloud
            .ensure_table("alerts", TableOptions::default())
            .unwrap();
        cloud.start_replication(pki.options("cloud")).unwrap();
        let addr = cloud.listen(&format!("127.0.0.1:{port}")).unwrap();
        cloud
            .add_peer(
                PeerConfig::new("edge-1")
                    .table(TableFlow::subscribe("alerts"))
                    .table(TableFlow::subscribe("pairs")),
            )
            .unwrap();
        (cloud, addr)
    };
    let (cloud, addr) = start_cloud(0);
    let start_edge = || {
        let edge = open_node(de.path(), "edge-1");
        edge.ensure_table("alerts", TableOptions::default())
            .unwrap();
        edge.ensure_table("pairs", TableOptions::default()).unwrap();
        edge.start_replication(pki.options("edge-1")).unwrap();
        edge.add_peer(
            PeerConfig::new("cloud")
                .address(addr.to_string())
                .table(TableFlow::publish("alerts"))
                .table(TableFlow::publish("pairs")),
        )
        .unwrap();
        edge
    };
    let mut edge = start_edge();
    // Initial sync moves rows, not transactions; wait for it to finish so
    // every transaction below travels whole through the log stream. The
    // cloud's side is the one that knows: the edge says "streaming" once
    // it has sent the last chunk, and a restart before the cloud applied
    // it would sync the table again.
    wait_until("both tables synced on the cloud", T, || {
        let Ok(s) = cloud.peer_status("edge-1") else {
            return false;
        };
        s.tables.len() == 2 && s.tables.iter().all(|t| t.inbound == "streaming")
    });
    let mut cloud = Some(cloud);
    let total = 3000;
    for i in 0..total {
        let mut tx = edge.transaction();
        tx.upsert("alerts", json!({"id": i, "n": i})).unwrap();
        tx.upsert("pairs", json!({"id": i % 10, "n": i})).unwrap();
        tx.commit().unwrap();
        if i == 1000 {
            edge.close().unwrap();
            edge = start_edge();
        }
        if i == 2000 {
            cloud.take().unwrap().close().unwrap();
        }
        if i == 2500 {
            cloud = Some(start_cloud(addr.port()).0);
        }
    }
    let cloud = cloud.unwrap();
    wait_until("all alerts on the cloud", T, || {
        cloud.count("alerts").unwrap_or(0) == total as u64
    });
    wait_until("pairs agree", T, || {
        table_state(&edge, "pairs") == table_state(&cloud, "pairs")
    });
    assert_eq!(table_state(&edge, "alerts"), table_state(&cloud, "alerts"));
    // Listeners run on their own thread: the last events may still be
    // queued when the data is already visible.
    wait_until(
        "the listener saw both tables of every transaction",
        T,
        || watch.txns().values().map(Vec::len).sum::<usize>() >= 2 * total,
    );
    // Each edge transaction was applied exactly once on the cloud, whole.
    assert!(watch.duplicates().is_empty(), "{:?}", watch.duplicates());
    let txns = watch.txns();
    assert_eq!(txns.len(), total);
    for (stamp, mut tables) in txns {
        tables.sort();
        assert_eq!(tables, ["alerts", "pairs"], "transaction {stamp:?} split");
    }
}

#[test]
fn unsubscribed_tables_are_refused_and_reported() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let (dc, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cloud = open_node(dc.path(), "cloud");
    cloud.start_replication(pki.options("cloud")).unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap();
    // The cloud subscribes to nothing from the edge but asks for `secrets`
    // that the edge does not publish to it.
    cloud
        .add_peer(PeerConfig::new("edge-1").table(TableFlow::subscribe("secrets")))
        .unwrap();
    let edge = open_node(de.path(), "edge-1");
    edge.create_table("secrets", TableOptions::default())
        .unwrap();
    edge.upsert("secrets", json!({"id": 1})).unwrap();
    edge.start_replication(pki.options("edge-1")).unwrap();
    edge.add_peer(PeerConfig::new("cloud").address(addr.to_string()))
        .unwrap();
    wait_until("cloud sees the refusal", T, || {
        let s = cloud.peer_status("edge-1").unwrap();
        s.tables.iter().any(|t| t.inbound.starts_with("refused"))
    });
    assert!(cloud.describe_table("secrets").is_err());
    let s = edge.peer_status("cloud").unwrap();
    assert!(s.tables.is_empty() || s.tables.iter().all(|t| !t.publish));
    // Configuration changes at run time: publish it now, and it flows.
    edge.update_peer(
        PeerConfig::new("cloud")
            .address(addr.to_string())
            .table(TableFlow::publish("secrets")),
    )
    .unwrap();
    wait_until("published after update", T, || {
        cloud.get("secrets", 1).ok().flatten().is_some()
    });
    // Removing the peer stops the flow.
    edge.remove_peer("cloud").unwrap();
    edge.upsert("secrets", json!({"id": 2})).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(cloud.get("secrets", 2).unwrap().is_none());
    assert!(matches!(
        edge.peer_status("cloud"),
        Err(Error::PeerNotFound(_))
    ));
}

#[test]
fn a_peer_that_takes_nothing_acknowledges_the_log_so_it_is_trimmed() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let (dc, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cloud = open_node(dc.path(), "cloud");
    cloud.create_table("t", TableOptions::default()).unwrap();
    cloud.start_replication(pki.options("cloud")).unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap();
    // The hub publishes `t` to the edge, which subscribes to nothing.
    cloud
        .add_peer(PeerConfig::new("edge-1").table(TableFlow::publish("t")))
        .unwrap();
    let edge = open_node(de.path(), "edge-1");
    edge.start_replication(pki.options("edge-1")).unwrap();
    edge.add_peer(PeerConfig::new("cloud").address(addr.to_string()))
        .unwrap();
    wait_until("the cloud sees `t` is not taken", T, || {
        let s = cloud.peer_status("edge-1").unwrap();
        s.connected
            && s.tables
                .iter()
                .any(|t| t.outbound == "not subscribed by the peer")
    });
    let mut last = 0;
    for i in 0..500 {
        last = cloud.upsert("t", json!({"id": i})).unwrap().seq;
    }
    wait_until("the edge acknowledged the log it passes over", T, || {
        let s = cloud.peer_status("edge-1").unwrap();
        s.acked_seq == last && s.backlog_txns == 0
    });
    // Retention follows: trimmed by acknowledgement, far below any cap.
    wait_until("the log trimmed to its newest entry", T, || {
        cloud.log_bounds().unwrap().first == last
    });
    let bounds = cloud.log_bounds().unwrap();
    assert!(bounds.bytes < Retention::default().log_max_bytes / 1000);
    // A receipt for a write the edge never gets still fails, not passes.
    let e = cloud
        .wait_for_ack("edge-1", last, Duration::from_secs(5))
        .unwrap_err();
    assert!(matches!(e, Error::NotSubscribed { .. }), "{e}");
    assert!(edge.describe_table("t").is_err());
}

#[test]
fn a_published_table_created_after_the_link_came_up_starts_flowing() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let (dc, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cloud = open_node(dc.path(), "cloud");
    cloud.start_replication(pki.options("cloud")).unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap();
    cloud
        .add_peer(PeerConfig::new("edge-1").table(TableFlow::subscribe("late")))
        .unwrap();
    let edge = open_node(de.path(), "edge-1");
    edge.start_replication(pki.options("edge-1")).unwrap();
    edge.add_peer(
        PeerConfig::new("cloud")
            .address(addr.to_string())
            .table(TableFlow::publish("late")),
    )
    .unwrap();
    wait_until("the cloud hears the table does not exist yet", T, || {
        cloud
            .peer_status("edge-1")
            .unwrap()
            .tables
            .iter()
            .any(|t| t.inbound.contains("no table"))
    });
    edge.create_table("late", TableOptions::default()).unwrap();
    edge.upsert("late", json!({"id": 1})).unwrap();
    wait_until("the late table flows", T, || {
        cloud.get("late", 1).ok().flatten().is_some()
    });
}

/// What `observer` reports about `peer` once `closing` closed and the
/// link went down.
fn why_the_link_ended(closing: &Database, observer: &Database, peer: &str) -> String {
    why_the_link_ended_after(observer, peer, || closing.close().unwrap())
}

#[test]
fn a_database_that_closes_says_goodbye_and_closes_tls_cleanly() {
    // Not "peer closed connection without sending TLS close_notify", nor
    // any other broken-link error: the side that closed said why.
    let p = edge_and_cloud();
    let why = why_the_link_ended(&p.edge, &p.cloud, "edge-1");
    assert!(
        why.ends_with("`edge-1` closed the link: its database is closing"),
        "{why}"
    );
    // The accepting side too. The edge would redial at once and report
    // the refused connection instead, so it waits a while first.
    let p = edge_and_cloud_with(|mut o| {
        o.backoff_initial = Duration::from_secs(60);
        o.backoff_max = Duration::from_secs(60);
        o
    });
    let why = why_the_link_ended(&p.cloud, &p.edge, "cloud");
    assert!(
        why.ends_with("`cloud` closed the link: its database is closing"),
        "{why}"
    );
}

#[test]
fn a_dial_still_in_progress_when_settings_change_ends_with_a_goodbye() {
    // The cloud's bytes reach the edge late, through a proxy, so the
    // cloud counts the link as up (it has sent its hello) while the edge
    // is still dialing. The edge's settings change right then: the dial
    // must finish and say goodbye, not vanish under the cloud.
    let pki = Pki::new(&["cloud", "edge-1"]);
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cloud = open_node(dirs.0.path(), "cloud");
    cloud.start_replication(pki.options("cloud")).unwrap();
    let cloud_addr = cloud.listen("127.0.0.1:0").unwrap();
    cloud
        .add_peer(PeerConfig::new("edge-1").table(TableFlow::subscribe("alerts")))
        .unwrap();
    let proxy = slow_proxy_for_one_link(cloud_addr, Duration::from_millis(60));
    let edge = open_node(dirs.1.path(), "edge-1");
    edge.create_table("alerts", TableOptions::default())
        .unwrap();
    edge.start_replication(pki.options("edge-1")).unwrap();
    let config = PeerConfig::new("cloud").address(proxy.to_string());
    edge.add_peer(config.clone().table(TableFlow::publish("alerts")))
        .unwrap();
    wait_until("the cloud counts the link as up", T, || {
        cloud.peer_status("edge-1").is_ok_and(|s| s.connected)
    });
    assert!(
        !edge.peer_status("cloud").unwrap().connected,
        "the edge is still dialing"
    );
    edge.update_peer(config.table(TableFlow::publish("alerts").priority(2)))
        .unwrap();
    wait_until("the link is down", T, || {
        cloud.peer_status("edge-1").is_ok_and(|s| !s.connected)
    });
    let why = cloud
        .peer_status("edge-1")
        .unwrap()
        .last_error
        .unwrap_or_default();
    assert!(
        why.ends_with("`edge-1` closed the link: its settings for this peer changed"),
        "{why}"
    );
}

/// A TCP proxy on 127.0.0.1 to `target` that passes one connection, the
/// target's bytes each `delay` late, and refuses any after it.
fn slow_proxy_for_one_link(target: std::net::SocketAddr, delay: Duration) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let pipe = |mut from: TcpStream, mut to: TcpStream, delay: Duration| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                std::thread::sleep(delay);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        drop(listener);
        let server = TcpStream::connect(target).unwrap();
        pipe(
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            Duration::ZERO,
        );
        pipe(server, client, delay);
    });
    addr
}

/// What `observer` last reported about `peer` once `end` made the link go
/// down.
fn why_the_link_ended_after(observer: &Database, peer: &str, end: impl FnOnce()) -> String {
    wait_until("linked", T, || {
        observer.peer_status(peer).is_ok_and(|s| s.connected)
    });
    end();
    wait_until("the link is down", T, || {
        observer.peer_status(peer).is_ok_and(|s| !s.connected)
    });
    observer
        .peer_status(peer)
        .unwrap()
        .last_error
        .unwrap_or_default()
}

#[test]
fn changing_or_removing_a_peer_ends_its_link_with_a_goodbye() {
    // The cloud changes its settings for the edge. The edge waits before
    // redialing, so what it reports stays visible.
    let p = edge_and_cloud_with(|mut o| {
        o.backoff_initial = Duration::from_secs(60);
        o.backoff_max = Duration::from_secs(60);
        o
    });
    let why = why_the_link_ended_after(&p.edge, "cloud", || {
        p.cloud
            .update_peer(
                PeerConfig::new("edge-1")
                    .table(TableFlow::publish("thresholds"))
                    .table(TableFlow::subscribe("alerts").priority(3)),
            )
            .unwrap()
    });
    assert!(
        why.ends_with("`cloud` closed the link: its settings for this peer changed"),
        "{why}"
    );
    // The edge removes the cloud: the cloud hears why, and nothing redials.
    let p = edge_and_cloud();
    let why = why_the_link_ended_after(&p.cloud, "edge-1", || p.edge.remove_peer("cloud").unwrap());
    assert!(
        why.ends_with("`edge-1` closed the link: it no longer has this node as a peer"),
        "{why}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let s = p.cloud.peer_status("edge-1").unwrap();
    assert!(!s.connected && s.connects == 1, "{s:?}");
}

/// Receivers bound what one frame may decode to (twice their frame limit);
/// the sender must cut its batches by that measure too, or a backlog of
/// tiny transactions is refused and the link never catches up.
#[test]
fn a_backlog_of_tiny_transactions_fits_the_receivers_decode_budget() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The smallest frames allowed: a budget that is easy to reach.
    let small = |node: &str| {
        let mut o = pki.options(node);
        o.max_frame_bytes = 64 * 1024;
        o
    };
    let cloud = open_node(dirs.0.path(), "cloud");
    cloud.start_replication(small("cloud")).unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap();
    cloud
        .add_peer(PeerConfig::new("edge-1").table(TableFlow::subscribe("a")))
        .unwrap();
    let edge = open_node(dirs.1.path(), "edge-1");
    edge.create_table("a", TableOptions::default()).unwrap();
    edge.start_replication(small("edge-1")).unwrap();
    let to_cloud = PeerConfig::new("cloud")
        .address(addr.to_string())
        .table(TableFlow::publish("a"));
    edge.add_peer(to_cloud.clone()).unwrap();
    edge.insert("a", json!({ "id": -1 })).unwrap();
    wait_until("the initial sync done", T, || {
        cloud.count("a").is_ok_and(|n| n == 1)
    });
    // A backlog in the log (not an initial sync): the link is down while
    // it is written, and resumes from the log afterwards.
    edge.remove_peer("cloud").unwrap();
    for i in 0..2000 {
        edge.insert("a", json!({ "id": i })).unwrap();
    }
    edge.add_peer(to_cloud).unwrap();
    wait_until("the backlog on the cloud", T, || {
        cloud.count("a").is_ok_and(|n| n == 2001)
    });
}
