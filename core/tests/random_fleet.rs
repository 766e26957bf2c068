//! A seeded, reproducible fleet under fire: a hub and three edges over
//! mutual TLS on 127.0.0.1, random writes on every node, random link cuts
//! and heals (through a proxy per edge) and restarts of every node, for
//! `TIDELOG_FLEET_SECS` seconds (default 60). After the last heal every
//! node must hold the same contents for every table it subscribes to,
//! within CONVERGE_BOUND.
//!
//! Restarts here close and reopen the instance in this process; crash
//! restarts (SIGKILL) are covered by `crash.rs` and the CLI tests.

mod repl_common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use repl_common::*;
use serde_json::json;
use tidelog::*;

/// The promise this test checks: once links heal, replicas agree within this.
const CONVERGE_BOUND: Duration = Duration::from_secs(30);

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A TCP proxy on 127.0.0.1 that can cut every connection through it and
/// refuse new ones until healed.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (cut2, live2) = (cut.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for s in [&client, &server] {
                    live2.lock().unwrap().push(s.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, cut, live }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for s in self.live.lock().unwrap().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

struct Node {
    name: String,
    dir: PathBuf,
    db: Option<Database>,
    dups: DupWatch,
}

const EDGES: usize = 3;

fn cloud_peers() -> Vec<PeerConfig> {
    (1..=EDGES)
        .map(|i| {
            PeerConfig::new(format!("edge-{i}"))
                .table(TableFlow::publish("thresholds"))
                .table(TableFlow::both("shared"))
                // Edges 2 and 3 also receive every alert through the hub.
                .table(TableFlow {
                    table: "alerts".into(),
                    publish: i >= 2,
                    subscribe: true,
                    since_ms: None,
                    priority: 0,
                    ..TableFlow::publish("")
                })
        })
        .collect()
}

fn edge_peer(i: usize, proxy_port: u16) -> PeerConfig {
    PeerConfig::new("cloud")
        .address(format!("127.0.0.1:{proxy_port}"))
        .table(TableFlow::subscribe("thresholds"))
        .table(TableFlow::both("shared"))
        .table(TableFlow {
            table: "alerts".into(),
            publish: true,
            subscribe: i >= 2,
            since_ms: None,
            priority: 0,
            ..TableFlow::publish("")
        })
}

fn start(node: &mut Node, pki: &Pki, cloud_port: u16, proxy_ports: &[u16]) {
    let db = open_node(&node.dir, &node.name);
    for t in ["thresholds", "shared", "alerts"] {
        db.ensure_table(t, TableOptions::default()).unwrap();
    }
    node.dups.watch(&db, &["thresholds", "shared", "alerts"]);
    db.start_replication(pki.options(&node.name)).unwrap();
    if node.name == "cloud" {
        db.listen(&format!("127.0.0.1:{cloud_port}")).unwrap();
        for p in cloud_peers() {
            db.add_peer(p).unwrap();
        }
    } else {
        let i: usize = node.name["edge-".len()..].parse().unwrap();
        db.add_peer(edge_peer(i, proxy_ports[i - 1])).unwrap();
    }
    node.db = Some(db);
}

fn digest(rows: &[String]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    rows.hash(&mut h);
    h.finish()
}

#[test]
fn a_hub_and_three_edges_converge_after_random_writes_cuts_and_restarts() {
    let seed = std::env::var("TIDELOG_FLEET_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(hlc::wall_millis);
    let secs: u64 = std::env::var("TIDELOG_FLEET_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    eprintln!(
        "random fleet: seed {seed}, {secs} s (TIDELOG_FLEET_SEED / TIDELOG_FLEET_SECS to change)"
    );
    let mut rng = Rng(seed);
    let names: Vec<String> = std::iter::once("cloud".to_string())
        .chain((1..=EDGES).map(|i| format!("edge-{i}")))
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let pki = Pki::new(&name_refs);
    let dirs: Vec<tempfile::TempDir> = names.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let cloud_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let proxies: Vec<Proxy> = (0..EDGES).map(|_| Proxy::start(cloud_port)).collect();
    let proxy_ports: Vec<u16> = proxies.iter().map(|p| p.port).collect();
    let mut nodes: Vec<Node> = names
        .iter()
        .zip(&dirs)
        .map(|(n, d)| Node {
            name: n.clone(),
            dir: d.path().to_path_buf(),
            db: None,
            dups: DupWatch::default(),
        })
        .collect();
    for n in nodes.iter_mut() {
        start(n, &pki, cloud_port, &proxy_ports);
    }

    let end = Instant::now() + Duration::from_secs(secs);
    let (mut writes, mut cuts, mut restarts, mut failed_writes) = (0u64, 0u64, 0u64, 0u64);
    let mut next_event = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        // A write on a random live node, to a table it may write.
        let n = rng.below(nodes.len() as u64) as usize;
        if let Some(db) = nodes[n].db.clone() {
            let k = rng.below(40);
            let v = rng.next() % 1000;
            let res = match (n, rng.below(3)) {
                (0, 0) => db
                    .upsert("thresholds", json!({"id": k, "max": v}))
                    .map(|_| ()),
                (_, 1) if rng.below(5) == 0 => db.delete("shared", k as i64).map(|_| ()),
                (_, 1) => db
                    .upsert("shared", json!({"id": k, "by": n, "v": v}))
                    .map(|_| ()),
                (0, _) => db
                    .upsert("shared", json!({"id": k + 100, "by": n}))
                    .map(|_| ()),
                (_, _) => {
                    // Alerts are unique per edge, plus a multi-table transaction.
                    let mut tx = db.transaction();
                    tx.insert(
                        "alerts",
                        json!({"id": format!("{}-{writes}", nodes[n].name), "v": v}),
                    )
                    .unwrap();
                    tx.upsert("shared", json!({"id": k, "by": n, "alert": writes}))
                        .unwrap();
                    tx.commit().map(|_| ())
                }
            };
            match res {
                Ok(()) => writes += 1,
                Err(e) => panic!("write on {} failed: {e}", nodes[n].name),
            }
        } else {
            failed_writes += 1;
        }
        if Instant::now() >= next_event {
            next_event = Instant::now() + Duration::from_millis(200 + rng.below(1500));
            match rng.below(4) {
                0 | 1 => {
                    let p = rng.below(EDGES as u64) as usize;
                    let cut = rng.below(2) == 0;
                    proxies[p].set_cut(cut);
                    cuts += u64::from(cut);
                }
                _ => {
                    let n = rng.below(nodes.len() as u64) as usize;
                    if let Some(db) = nodes[n].db.take() {
                        db.close().unwrap();
                        restarts += 1;
                        start(&mut nodes[n], &pki, cloud_port, &proxy_ports);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for p in &proxies {
        p.set_cut(false);
    }
    eprintln!("random fleet: {writes} transactions, {cuts} cuts, {restarts} restarts ({failed_writes} skipped)");
    assert!(
        cuts > 0 && restarts > 0 && writes > 1000,
        "the run must actually stress the fleet"
    );

    let healed = Instant::now();
    let dbs: Vec<Database> = nodes.iter().map(|n| n.db.clone().unwrap()).collect();
    let expect = |dbs: &[Database]| -> BTreeMap<String, bool> {
        let (cloud, edges) = (&dbs[0], &dbs[1..]);
        let mut ok = BTreeMap::new();
        let cloud_shared = table_state(cloud, "shared");
        let cloud_thresholds = table_state(cloud, "thresholds");
        let cloud_alerts = table_state(cloud, "alerts");
        for (i, e) in edges.iter().enumerate() {
            let name = format!("edge-{}", i + 1);
            ok.insert(
                format!("{name} shared"),
                table_state(e, "shared") == cloud_shared,
            );
            ok.insert(
                format!("{name} thresholds"),
                table_state(e, "thresholds") == cloud_thresholds,
            );
            let own: HashSet<String> = table_state(e, "alerts").into_iter().collect();
            if i >= 1 {
                ok.insert(
                    format!("{name} alerts (all, relayed)"),
                    table_state(e, "alerts") == cloud_alerts,
                );
            } else {
                ok.insert(
                    format!("{name} alerts reached the cloud"),
                    own.iter().all(|a| cloud_alerts.contains(a)),
                );
            }
        }
        let all_edge_alerts: usize = edges
            .iter()
            .map(|e| {
                let me = e.node_id();
                e.scan("alerts", &ScanOptions::default())
                    .unwrap()
                    .iter()
                    .filter(|r| r.stamp().node == me)
                    .count()
            })
            .sum();
        ok.insert(
            "cloud has every alert".into(),
            cloud_alerts.len() == all_edge_alerts,
        );
        ok
    };
    let deadline = healed + CONVERGE_BOUND;
    loop {
        let status = expect(&dbs);
        if status.values().all(|v| *v) {
            break;
        }
        if Instant::now() > deadline {
            for db in &dbs {
                eprintln!("{}: {:?}", db.node_name(), db.replication_status().unwrap());
            }
            panic!(
                "not converged {CONVERGE_BOUND:?} after the last heal (seed {seed}): {status:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "random fleet: converged {:?} after the last heal",
        healed.elapsed()
    );
    // The fleet ran with the metered-link defaults: zstd frames and
    // attribute deltas (misses included, when two nodes wrote one record).
    let (mut deltas, mut misses, mut raw, mut wire) = (0, 0, 0, 0);
    for db in &dbs {
        for p in db.replication_status().unwrap() {
            deltas += p.traffic.deltas_sent;
            misses += p.traffic.delta_misses;
            raw += p.traffic.bytes_out_raw;
            wire += p.traffic.bytes_out_wire;
        }
    }
    eprintln!(
        "random fleet: {deltas} writes sent as deltas, {misses} delta misses, {wire} bytes on the wire for {raw} encoded"
    );
    assert!(deltas > 0, "updates should have gone as deltas");
    assert!(wire < raw, "frames should have been compressed");
    for db in &dbs {
        for t in ["shared", "thresholds", "alerts"] {
            eprintln!(
                "  {} {t}: {} rows, digest {:016x}",
                db.node_name(),
                db.count(t).unwrap(),
                digest(&table_state(db, t))
            );
        }
    }
    for n in &nodes {
        // Every remote write was applied at most once, across restarts.
        assert!(
            n.dups.duplicates().is_empty(),
            "{} applied writes twice: {:?}",
            n.name,
            n.dups.duplicates()
        );
        eprintln!(
            "  {}: {} remote writes applied, none twice",
            n.name,
            n.dups.applied()
        );
    }
    for db in dbs {
        db.close().unwrap();
    }
}
