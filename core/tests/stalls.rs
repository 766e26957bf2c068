//! Links that are up but move nothing: a half-open connection (the far
//! side stops reading, the socket stays open) is reported stalled with its
//! reason, torn down and redialed, and data then flows; a link its budget
//! holds, or a rate-capped one whose acknowledgements move, is not stalled.
//! Real mutual TLS on 127.0.0.1 through the fault proxy (repl_common/proxy.rs).

mod repl_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use repl_common::proxy::{FaultProxy, Mode};
use repl_common::*;
use serde_json::json;
use tidelog::*;

struct Pair {
    rt: tokio::runtime::Runtime,
    _pki: Pki,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    edge: Database,
    hub: Database,
    proxy: FaultProxy,
}

/// An edge dialing a hub through the fault proxy; `edge_flows` are the
/// edge's flows to the hub (the hub's mirror them).
fn pair(
    edge_opts: impl Fn(ReplicationOptions) -> ReplicationOptions,
    hub_opts: impl Fn(ReplicationOptions) -> ReplicationOptions,
    edge_flows: &[TableFlow],
    budget: Option<LinkBudget>,
) -> Pair {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pki = Pki::new(&["hub", "edge-1"]);
    let (dh, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hub = open_node(dh.path(), "hub");
    let edge = open_node(de.path(), "edge-1");
    for f in edge_flows {
        for db in [&hub, &edge] {
            db.create_table(&f.table, TableOptions::default()).unwrap();
        }
    }
    hub.start_replication(hub_opts(pki.options("hub"))).unwrap();
    edge.start_replication(edge_opts(pki.options("edge-1")))
        .unwrap();
    let hub_addr = hub.listen("127.0.0.1:0").unwrap();
    let proxy = rt.block_on(FaultProxy::start(hub_addr, 1));
    let mut hp = PeerConfig::new("edge-1");
    for f in edge_flows {
        hp = hp.table(TableFlow {
            publish: f.subscribe,
            subscribe: f.publish,
            ..f.clone()
        });
    }
    hub.add_peer(hp).unwrap();
    let mut ep = PeerConfig::new("hub").address(proxy.addr.to_string());
    ep.budget = budget;
    for f in edge_flows {
        ep = ep.table(f.clone());
    }
    edge.add_peer(ep).unwrap();
    Pair {
        rt,
        _pki: pki,
        _dirs: (dh, de),
        edge,
        hub,
        proxy,
    }
}

/// Heartbeats every 200 ms (a stall after the 2 s floor) and an idle timeout of
/// a minute: within a test's patience, only the stall watchdog can end a
/// link that still receives heartbeats.
fn slow_idle(mut o: ReplicationOptions) -> ReplicationOptions {
    o.heartbeat_interval = Duration::from_millis(200);
    o.idle_timeout = Duration::from_secs(60);
    o
}

/// Every distinct stall reason (peer and table `table`) and `last_error`
/// a node showed for `peer` while polled: a redial clears them.
#[derive(Default, Debug)]
struct Seen {
    stalled: Vec<String>,
    table_stalled: Vec<String>,
    errors: Vec<String>,
}

fn watch(
    db: Database,
    peer: &'static str,
    table: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        let note = |v: &mut Vec<String>, s: Option<String>| {
            if let Some(s) = s {
                if !v.contains(&s) {
                    v.push(s);
                }
            }
        };
        while !stop.load(Ordering::Relaxed) {
            if let Ok(s) = db.peer_status(peer) {
                note(&mut seen.stalled, s.stalled.clone());
                note(&mut seen.errors, s.last_error.clone());
                let t = s.tables.iter().find(|t| t.table == table);
                note(&mut seen.table_stalled, t.and_then(|t| t.stalled.clone()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    })
}

fn alert(db: &Database, table: &str, id: u64) {
    // About 1 KiB each, so unacknowledged entries pile up in bytes too.
    db.insert(table, json!({"id": id, "text": "x".repeat(1000)}))
        .unwrap();
}

fn is_outbound_stall(reason: &str) -> bool {
    reason.starts_with("no_ack_progress: ") || reason.starts_with("write_blocked: ")
}

/// The hub stops reading what the edge sends (the proxy stops reading the
/// edge's socket) but still sends heartbeats: the edge's idle timeout never
/// fires. The edge has alerts to send: its link is reported stalled with
/// an outbound reason, torn down and redialed, and the alerts then arrive.
/// The hub, with nothing to send, never reports a stall.
#[test]
fn half_open_far_side_stops_reading_dialer_reports_stall_and_redials() {
    let p = pair(slow_idle, slow_idle, &[TableFlow::publish("alerts")], None);
    for i in 0..5 {
        alert(&p.edge, "alerts", i);
    }
    wait_until("first alerts arrive", Duration::from_secs(20), || {
        p.hub.count("alerts").unwrap() == 5
    });
    let stop = Arc::new(AtomicBool::new(false));
    let seen = watch(p.edge.clone(), "hub", "alerts", stop.clone());
    let started = Instant::now();
    p.proxy.half_open(true);
    for i in 5..40 {
        alert(&p.edge, "alerts", i);
    }
    // Well under the minute of the idle timeout: only the watchdog can.
    wait_until("the edge reports a stall", Duration::from_secs(20), || {
        p.edge.peer_status("hub").unwrap().stalls >= 1
    });
    let detected = started.elapsed();
    wait_until(
        "alerts arrive over the redialed link",
        Duration::from_secs(30),
        || p.hub.count("alerts").unwrap() == 40,
    );
    wait_until("the stall clears", Duration::from_secs(10), || {
        p.edge.peer_status("hub").unwrap().stalled.is_none()
    });
    stop.store(true, Ordering::Relaxed);
    let seen = seen.join().unwrap();
    let es = p.edge.peer_status("hub").unwrap();
    let hs = p.hub.peer_status("edge-1").unwrap();
    eprintln!("stall detected after {detected:?}; seen: {seen:#?}");
    assert!(
        seen.stalled.iter().any(|r| is_outbound_stall(r)),
        "{seen:?}"
    );
    assert!(
        seen.table_stalled.iter().any(|r| is_outbound_stall(r)),
        "the table that waited shows the stall too: {seen:?}"
    );
    assert!(
        seen.errors.iter().any(|e| e.contains("link stalled")),
        "last_error says why the link ended: {seen:?}"
    );
    assert_eq!(es.stalls, 1, "counted once: {es:?}");
    assert!(es.connects >= 2 && es.connected, "{es:?}");
    // The hub passes over the alerts it applied (it sends the edge nothing)
    // and waits for the edge to acknowledge that position: if that was in
    // flight when the proxy stopped, the hub found the stall too.
    assert!(hs.stalls <= 1, "{hs:?}");
    assert!(p.proxy.accepted.load(Ordering::Relaxed) >= 2);
    p.proxy.set(Mode::Pass);
    p.edge.close().unwrap();
    p.hub.close().unwrap();
    drop(p.rt);
}

/// The other way: the edge stops reading what the hub sends, and keeps
/// sending heartbeats, so the hub's idle timeout never fires. The hub waits
/// for acknowledgements of its thresholds, and the edge for
/// acknowledgements of the position it passed over them (it publishes
/// nothing): whichever notices first reports the stall and ends the link;
/// the edge redials (after a goodbye, or its idle timeout when the goodbye
/// cannot reach it), and the thresholds then arrive.
#[test]
fn half_open_dialer_stops_reading_link_is_torn_down_and_redialed() {
    let edge_opts = |mut o: ReplicationOptions| {
        o.heartbeat_interval = Duration::from_millis(200);
        o.idle_timeout = Duration::from_secs(3);
        o
    };
    let p = pair(
        edge_opts,
        slow_idle,
        &[TableFlow::subscribe("thresholds")],
        None,
    );
    alert(&p.hub, "thresholds", 0);
    wait_until("first threshold arrives", Duration::from_secs(20), || {
        p.edge.count("thresholds").unwrap() == 1
    });
    let stop = Arc::new(AtomicBool::new(false));
    let on_hub = watch(p.hub.clone(), "edge-1", "thresholds", stop.clone());
    let on_edge = watch(p.edge.clone(), "hub", "thresholds", stop.clone());
    p.proxy.half_open(false);
    for i in 1..30 {
        alert(&p.hub, "thresholds", i);
    }
    wait_until("a side reports a stall", Duration::from_secs(20), || {
        p.hub.peer_status("edge-1").unwrap().stalls + p.edge.peer_status("hub").unwrap().stalls >= 1
    });
    wait_until(
        "thresholds arrive over the redialed link",
        Duration::from_secs(30),
        || p.edge.count("thresholds").unwrap() == 30,
    );
    stop.store(true, Ordering::Relaxed);
    let (on_hub, on_edge) = (on_hub.join().unwrap(), on_edge.join().unwrap());
    eprintln!("seen on the hub: {on_hub:#?}\nseen on the edge: {on_edge:#?}");
    assert!(
        on_hub
            .stalled
            .iter()
            .chain(&on_edge.stalled)
            .any(|r| is_outbound_stall(r)),
        "{on_hub:?} {on_edge:?}"
    );
    let es = p.edge.peer_status("hub").unwrap();
    assert!(es.connects >= 2, "the dialer redialed: {es:?}");
    p.proxy.set(Mode::Pass);
    p.edge.close().unwrap();
    p.hub.close().unwrap();
    drop(p.rt);
}

/// Samples the edge's and hub's status every 10 ms for `d`; returns the
/// stall reasons seen and the budget holds seen.
fn sample(p: &Pair, d: Duration) -> (Vec<String>, Vec<String>) {
    let (mut stalls, mut holds) = (Vec::new(), Vec::new());
    let end = Instant::now() + d;
    while Instant::now() < end {
        let (e, h) = (
            p.edge.peer_status("hub").unwrap(),
            p.hub.peer_status("edge-1").unwrap(),
        );
        for s in [&e, &h] {
            stalls.extend(s.stalled.clone());
            stalls.extend(s.tables.iter().filter_map(|t| t.stalled.clone()));
            if s.stalls > 0 {
                stalls.push(format!("{} counted {} stalls", s.name, s.stalls));
            }
        }
        holds.extend(e.traffic.held.clone());
        std::thread::sleep(Duration::from_millis(10));
    }
    (stalls, holds)
}

/// A spent quota holds a table for the rest of the period while an exempt
/// one flows: data waits, no acknowledgement comes for it, and that is the
/// budget working, not a stall (a 2 s stall time, sampled for 4 s, would call it one).
#[test]
fn a_table_held_by_the_quota_is_not_stalled() {
    let budget = LinkBudget {
        quota_bytes: Some(16 * 1024),
        ..LinkBudget::default()
    };
    let flows = [
        TableFlow::publish("readings"),
        TableFlow {
            exempt_from_quota: true,
            ..TableFlow::publish("alerts")
        },
    ];
    let p = pair(|o| o, |o| o, &flows, Some(budget));
    let mut n = 0;
    wait_until("the quota holds readings", Duration::from_secs(30), || {
        alert(&p.edge, "readings", n);
        n += 1;
        p.edge.peer_status("hub").unwrap().traffic.held.as_deref() == Some("quota")
    });
    for i in 0..20 {
        alert(&p.edge, "readings", n + i);
        alert(&p.edge, "alerts", i);
    }
    let (stalls, holds) = sample(&p, Duration::from_secs(4));
    let es = p.edge.peer_status("hub").unwrap();
    assert!(holds.iter().all(|h| h == "quota"), "{holds:?}");
    assert!(es.backlog_txns > 0, "readings wait: {es:?}");
    assert!(stalls.is_empty(), "{stalls:?} {es:?}");
    assert_eq!(p.hub.count("alerts").unwrap(), 20, "exempt alerts flow");
    assert!(p.hub.count("readings").unwrap() < n + 20);
    assert_eq!(es.connects, 1, "{es:?}");
    p.edge.close().unwrap();
    p.hub.close().unwrap();
    drop(p.rt);
}

/// A rate cap far below what waits to go: the backlog drains slowly, but
/// every frame is acknowledged, so the link is not stalled.
#[test]
fn a_rate_capped_link_whose_acks_move_is_not_stalled() {
    let budget = LinkBudget {
        max_bytes_per_sec: Some(16 * 1024),
        ..LinkBudget::default()
    };
    let p = pair(
        |o| o,
        |o| o,
        &[TableFlow::publish("readings")],
        Some(budget),
    );
    for i in 0..60 {
        alert(&p.edge, "readings", i);
    }
    let (stalls, holds) = sample(&p, Duration::from_secs(4));
    let es = p.edge.peer_status("hub").unwrap();
    assert!(holds.iter().any(|h| h == "rate"), "{holds:?}");
    assert!(stalls.is_empty(), "{stalls:?} {es:?}");
    wait_until("the backlog drains", Duration::from_secs(30), || {
        p.hub.count("readings").unwrap() == 60
    });
    assert_eq!(p.edge.peer_status("hub").unwrap().connects, 1);
    p.edge.close().unwrap();
    p.hub.close().unwrap();
    drop(p.rt);
}
