//! The fleet simulator's short form: 200 lean edges against one real
//! `tidelog serve` over mutual TLS, about 30 s. Asserts correctness only
//! (every edge connected, every threshold reached every edge, every alert
//! applied at the hub exactly once through two reconnect storms), never
//! timings; prints the measurements. The long forms: `benches/fleet.rs`.

mod fleet_common;

use std::time::Duration;

use fleet_common::{run, table, FleetOptions};

#[test]
fn two_hundred_edges_through_two_reconnect_storms_lose_nothing() {
    let mut o = FleetOptions::new(200);
    o.steady = Duration::from_secs(6);
    o.settle = Duration::from_secs(1);
    o.idle_window = Duration::from_secs(2);
    o.connect_limit = Duration::from_secs(120);
    o.storm_limit = Duration::from_secs(120);
    o.drain_limit = Duration::from_secs(120);
    let r = run(&o);
    eprintln!("{}", table(std::slice::from_ref(&r)));
    for e in &r.errors {
        eprintln!("link error seen: {e}");
    }
    let problems = r.problems();
    assert!(
        problems.is_empty(),
        "{problems:#?}\nhub stderr (last lines):\n{}",
        r.hub_tail
    );
    // Both storms happened and every edge came back from each.
    assert!(r.storm_drop.is_some() && r.storm_kill.is_some(), "{r:?}");
    assert!(r.links_made >= 3 * 200, "links made: {}", r.links_made);
}

/// The simulator's edges are subject to the hub's real identity checks: a
/// certificate from another CA, a name the hub does not know, and a name
/// the certificate does not carry are all refused; the genuine edge,
/// dialing the same hub at the same time, gets in.
#[test]
fn the_hub_refuses_lean_edges_it_does_not_trust() {
    use fleet_common::edge::{run_edge, Control, EdgeId, Fleet, Timers, HUB};
    use fleet_common::hub::{hub_config, Hub, HubSetup};
    use fleet_common::pki::FleetPki;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = FleetPki::new("fleet CA");
    let ca = pki.write_ca(d);
    let hub_files = pki.write_node(d, HUB);
    let config = d.join("hub.toml");
    let edges = ["edge-00000".to_string()];
    let data = d.join("hub-data");
    std::fs::write(
        &config,
        hub_config(&HubSetup {
            listen: "127.0.0.1:0",
            data_dir: &data,
            cert: &hub_files.cert,
            key: &hub_files.key,
            ca: &ca,
            edges: &edges,
        }),
    )
    .unwrap();
    let mut hub = Hub::start(&config);
    let addr = hub.ready(Duration::from_secs(60));

    let other_ca = FleetPki::new("another CA");
    // (name claimed in the hello, certificate)
    let edges = [
        ("edge-00000", other_ca.edge_client("edge-00000")),
        ("edge-stranger", pki.edge_client("edge-stranger")),
        ("edge-00000", pki.edge_client("edge-00001")),
        ("edge-00000", pki.edge_client("edge-00000")),
    ];
    let timers = Timers {
        heartbeat: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(5),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
    };
    let fleet = Arc::new(Fleet::new(edges.len()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ctl, ctl_rx) = tokio::sync::watch::channel(Control::default());
    let handles: Vec<_> = edges
        .into_iter()
        .enumerate()
        .map(|(index, (name, tls))| {
            let id = EdgeId {
                index,
                name: name.into(),
                node_id: 0x5EED_0000 + index as u64,
                tls,
            };
            rt.spawn(run_edge(
                id,
                addr.clone(),
                timers,
                fleet.clone(),
                ctl_rx.clone(),
            ))
        })
        .collect();
    let mut ever_up = [false; 4];
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        for (i, up) in ever_up.iter_mut().enumerate() {
            *up |= fleet.up_epoch[i].load(Ordering::Acquire) > 0;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    ctl.send_modify(|c| c.stop = true);
    rt.block_on(async {
        for h in handles {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    });
    let log = hub.tail(300);
    assert_eq!(ever_up, [false, false, false, true], "hub stderr:\n{log}");
    // One refusal each: the foreign CA fails the handshake (each side
    // distrusts the other's CA), the stranger is no peer, the impostor's
    // certificate names another node.
    for why in [
        "(UnknownCA)",
        "`edge-stranger` is not a configured peer of `cloud` and matches none of its 1 peer rule(s)",
        "certificate does not name `edge-00000`",
    ] {
        assert!(log.contains(why), "no refusal saying {why:?}:\n{log}");
    }
}
