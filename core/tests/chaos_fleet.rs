//! A hub and ten edges, each edge through a fault proxy of its own
//! (repl_common/proxy.rs), real mutual TLS on 127.0.0.1, all in this
//! process. Edges write alerts, the hub writes thresholds, while each proxy
//! runs a random schedule of faults: cuts, loss (short holds, occasional
//! cuts), 100-800 ms delays, 30 s blackholes and half-open connections.
//!
//! While it runs, every link's status is sampled each second: a link with
//! something to send must not go more than 60 s without its
//! acknowledgement moving. Afterwards the faults stop and every table must
//! converge to equal digests on every node, with every transaction applied
//! exactly once (listeners see each remote transaction's stamp, compared
//! with the stamps each writer committed).
//!
//! `TIDELOG_CHAOS_SEED=<n>` replays a schedule; `TIDELOG_CHAOS_SECS=<n>`
//! sets how long the faults last (default 120; 600 for the hand run).

mod repl_common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use repl_common::proxy::{FaultProxy, Mode};
use repl_common::*;
use serde_json::json;
use tidelog::*;

const EDGES: usize = 10;
/// No link with something to send may wait longer for an acknowledgement.
const LONGEST_STALL: Duration = Duration::from_secs(60);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Production-like timers (heartbeat 1 s: a stall after 3 s, above the
/// 1.6 s round trip of the longest delay), a short redial cap so a healed
/// link comes back within seconds.
fn options(pki: &Pki, node: &str) -> ReplicationOptions {
    let mut o = pki.options(node);
    o.heartbeat_interval = Duration::from_secs(1);
    o.idle_timeout = Duration::from_secs(5);
    o.connect_timeout = Duration::from_secs(5);
    o.backoff_initial = Duration::from_millis(200);
    o.backoff_max = Duration::from_secs(2);
    o.worker_threads = 1;
    o
}

fn ms(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo + rng.below(hi - lo))
}

/// Faults by kind, injected over the run.
#[derive(Default, Debug)]
struct Faults(Mutex<BTreeMap<&'static str, u64>>);

impl Faults {
    fn add(&self, kind: &'static str) {
        *self.0.lock().entry(kind).or_default() += 1;
    }
}

/// One proxy's schedule until `end`: quiet spells between faults; the
/// first fault of edge `i` is kind `i % 5`, so every kind happens.
async fn schedule(proxy: Arc<FaultProxy>, i: usize, seed: u64, end: Instant, faults: Arc<Faults>) {
    let mut rng = Rng((seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9)) | 1);
    let mut kind = i as u64 % 5;
    tokio::time::sleep(ms(&mut rng, 1000, 6000)).await;
    while Instant::now() < end {
        let quiet = match kind {
            0 => {
                faults.add("cut");
                proxy.cut();
                ms(&mut rng, 2000, 10_000)
            }
            1 => {
                faults.add("loss");
                proxy.set(Mode::Loss {
                    hold_pct: 20,
                    cut_per_mille: 5,
                });
                tokio::time::sleep(ms(&mut rng, 5000, 15_000)).await;
                ms(&mut rng, 2000, 10_000)
            }
            2 => {
                faults.add("delay");
                proxy.set(Mode::Delay(ms(&mut rng, 100, 800)));
                tokio::time::sleep(ms(&mut rng, 5000, 20_000)).await;
                ms(&mut rng, 2000, 10_000)
            }
            3 => {
                faults.add("blackhole");
                proxy.set(Mode::Blackhole);
                tokio::time::sleep(Duration::from_secs(30)).await;
                // Room to redial and drain before the next blow.
                ms(&mut rng, 15_000, 25_000)
            }
            _ => {
                faults.add("half_open");
                proxy.half_open(rng.below(2) == 0);
                tokio::time::sleep(ms(&mut rng, 5000, 20_000)).await;
                ms(&mut rng, 2000, 10_000)
            }
        };
        proxy.set(Mode::Pass);
        tokio::time::sleep(quiet).await;
        kind = rng.below(5);
    }
}

/// How long each link went with something to send and no acknowledgement
/// moving, sampled every second.
#[derive(Default)]
struct LinkWatch {
    /// Per (node, peer): acknowledged position, when it last moved.
    links: HashMap<(String, String), (u64, Instant)>,
    longest: Duration,
    longest_link: String,
    stall_codes: BTreeMap<String, u64>,
}

impl LinkWatch {
    fn sample(&mut self, nodes: &[Database]) {
        let now = Instant::now();
        for db in nodes {
            for s in db.replication_status().unwrap() {
                let key = (db.node_name().to_string(), s.name.clone());
                let e = self.links.entry(key).or_insert((s.acked_seq, now));
                let pending = s.backlog_txns > 0 || s.sent_seq > s.acked_seq;
                if !pending || s.acked_seq != e.0 {
                    *e = (s.acked_seq, now);
                }
                let waited = now - e.1;
                if waited > self.longest {
                    self.longest = waited;
                    self.longest_link = format!("{} -> {}", db.node_name(), s.name);
                }
                if let Some(code) = s.stalled.as_deref().and_then(|r| r.split(':').next()) {
                    *self.stall_codes.entry(code.to_string()).or_default() += 1;
                }
            }
        }
    }
}

/// A table's rows (of origin `origin`, if given) as one digest.
fn digest(db: &Database, table: &str, origin: Option<u64>) -> (usize, u64) {
    let rows = db.scan(table, &ScanOptions::default()).unwrap();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut n = 0;
    for r in rows
        .iter()
        .filter(|r| origin.is_none_or(|o| r.stamp().node == o))
    {
        format!("{:?} {:?} {}", r.key(), r.stamp(), r.body_json()).hash(&mut h);
        n += 1;
    }
    (n, h.finish())
}

#[test]
fn hub_and_ten_edges_through_faults_never_stall_long_and_converge() {
    let seed = env_u64("TIDELOG_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let chaos_for = Duration::from_secs(env_u64("TIDELOG_CHAOS_SECS").unwrap_or(120));
    eprintln!(
        "fleet chaos seed {seed} (replay with TIDELOG_CHAOS_SEED={seed}), faults for {chaos_for:?}"
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let names: Vec<String> = (0..EDGES).map(|i| format!("edge-{i}")).collect();
    let mut all: Vec<&str> = vec!["hub"];
    all.extend(names.iter().map(String::as_str));
    let pki = Pki::new(&all);
    let dirs: Vec<tempfile::TempDir> = all.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let open = |i: usize| {
        let db = open_node(dirs[i].path(), all[i]);
        for t in ["alerts", "thresholds"] {
            db.create_table(t, TableOptions::default()).unwrap();
        }
        db.start_replication(options(&pki, all[i])).unwrap();
        db
    };
    let hub = open(0);
    let edges: Vec<Database> = (1..=EDGES).map(open).collect();
    let hub_addr = hub.listen("127.0.0.1:0").unwrap();
    let proxies: Vec<Arc<FaultProxy>> = (0..EDGES)
        .map(|i| Arc::new(rt.block_on(FaultProxy::start(hub_addr, seed ^ i as u64))))
        .collect();
    for (i, edge) in edges.iter().enumerate() {
        hub.add_peer(
            PeerConfig::new(&names[i])
                .table(TableFlow::subscribe("alerts"))
                .table(TableFlow::publish("thresholds")),
        )
        .unwrap();
        edge.add_peer(
            PeerConfig::new("hub")
                .address(proxies[i].addr.to_string())
                .table(TableFlow::publish("alerts"))
                .table(TableFlow::subscribe("thresholds")),
        )
        .unwrap();
    }
    let mut nodes = vec![hub.clone()];
    nodes.extend(edges.iter().cloned());
    wait_until("every link is up", Duration::from_secs(60), || {
        edges
            .iter()
            .all(|e| e.peer_status("hub").unwrap().connected)
    });
    // Every remote transaction each node applies, by stamp.
    let hub_seen = DupWatch::default();
    hub_seen.watch(&hub, &["alerts"]);
    let edge_seen: Vec<DupWatch> = edges
        .iter()
        .map(|e| {
            let w = DupWatch::default();
            w.watch(e, &["thresholds"]);
            w
        })
        .collect();

    // Writers: each edge an alert every 50-350 ms (a key of its own per
    // transaction, so none may be lost), the hub a threshold every 200 ms
    // plus the current limit (one key, overwritten: last writer wins).
    let writing = Arc::new(AtomicBool::new(true));
    let writer = |db: Database, seed: u64, hub: bool| {
        let writing = writing.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(seed | 1);
            let mut stamps = HashSet::new();
            let mut n = 0u64;
            while writing.load(Ordering::Relaxed) {
                let info = if hub {
                    let mut tx = db.transaction();
                    tx.insert("thresholds", json!({"id": format!("t{n}"), "limit": n}))
                        .unwrap();
                    tx.upsert("thresholds", json!({"id": "current", "limit": n}))
                        .unwrap();
                    tx.commit().unwrap()
                } else {
                    let id = format!("{}/{n}", db.node_name());
                    db.insert("alerts", json!({"id": id, "level": rng.below(5)}))
                        .unwrap()
                };
                stamps.insert(info.stamp);
                n += 1;
                let pause = if hub { 200 } else { 50 + rng.below(300) };
                std::thread::sleep(Duration::from_millis(pause));
            }
            stamps
        })
    };
    let hub_writer = writer(hub.clone(), seed, true);
    let edge_writers: Vec<_> = edges
        .iter()
        .enumerate()
        .map(|(i, e)| writer(e.clone(), seed.rotate_left(i as u32 + 1), false))
        .collect();

    // Faults, and the status sampled every second meanwhile.
    let faults = Arc::new(Faults::default());
    let end = Instant::now() + chaos_for;
    let schedules: Vec<_> = proxies
        .iter()
        .enumerate()
        .map(|(i, p)| rt.spawn(schedule(p.clone(), i, seed, end, faults.clone())))
        .collect();
    let mut watch = LinkWatch::default();
    while Instant::now() < end {
        watch.sample(&nodes);
        assert!(
            watch.longest <= LONGEST_STALL,
            "{} had something to send and no acknowledgement for {:?} (seed {seed})",
            watch.longest_link,
            watch.longest
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // A fault in progress ends with the run (healing comes next).
    for s in schedules {
        s.abort();
    }
    let lossy_cuts: u64 = proxies
        .iter()
        .map(|p| p.lossy_cuts.load(Ordering::Relaxed))
        .sum();
    eprintln!(
        "faults injected: {:?}, cuts by loss: {lossy_cuts}",
        faults.0.lock()
    );

    // Heal, stop writing, converge.
    for p in &proxies {
        p.set(Mode::Pass);
    }
    writing.store(false, Ordering::Relaxed);
    let hub_stamps = hub_writer.join().unwrap();
    let edge_stamps: Vec<HashSet<Stamp>> = edge_writers
        .into_iter()
        .map(|w| w.join().unwrap())
        .collect();
    let healed = Instant::now();
    let converged = || {
        let th = digest(&hub, "thresholds", None);
        edges.iter().all(|e| {
            digest(e, "thresholds", None) == th
                && digest(e, "alerts", None) == digest(&hub, "alerts", Some(e.node_id()))
        })
    };
    wait_until(
        "every table converges on every node",
        Duration::from_secs(120),
        || {
            watch.sample(&nodes);
            converged()
        },
    );
    let convergence = healed.elapsed();
    wait_until("every backlog drains", Duration::from_secs(60), || {
        nodes.iter().all(|db| {
            db.replication_status()
                .unwrap()
                .iter()
                .all(|s| s.connected && s.backlog_txns == 0)
        })
    });

    // Exactly once: each node applied every remote transaction it must
    // have, each once, and nothing else.
    let origin_stamps = |w: &DupWatch, origin: u64| -> HashSet<Stamp> {
        w.txns()
            .keys()
            .filter(|s| s.node == origin)
            .copied()
            .collect()
    };
    assert!(
        hub_seen.duplicates().is_empty(),
        "{:?}",
        hub_seen.duplicates()
    );
    for (i, e) in edges.iter().enumerate() {
        assert_eq!(
            origin_stamps(&hub_seen, e.node_id()),
            edge_stamps[i],
            "the hub applied exactly {}'s alerts",
            names[i]
        );
        assert!(
            edge_seen[i].duplicates().is_empty(),
            "{}: {:?}",
            names[i],
            edge_seen[i].duplicates()
        );
        assert_eq!(
            origin_stamps(&edge_seen[i], hub.node_id()),
            hub_stamps,
            "{} applied exactly the hub's thresholds",
            names[i]
        );
    }
    let alert_events_once = hub_seen.txns().values().all(|tables| tables.len() == 1);
    assert!(alert_events_once, "an alert transaction fired twice");

    let statuses: Vec<PeerStatus> = nodes
        .iter()
        .flat_map(|db| db.replication_status().unwrap())
        .collect();
    let stalls: u64 = statuses.iter().map(|s| s.stalls).sum();
    let reconnects: u64 = statuses.iter().map(|s| s.connects).sum();
    let txns = hub_stamps.len() + edge_stamps.iter().map(HashSet::len).sum::<usize>();
    eprintln!(
        "fleet chaos: {txns} transactions (hub {}, edges {}), longest wait for an acknowledgement {:?} ({}), stalls found {stalls} (samples showing a stall reason, by code: {:?}), connects {reconnects}, converged {convergence:?} after healing",
        hub_stamps.len(),
        txns - hub_stamps.len(),
        watch.longest,
        watch.longest_link,
        watch.stall_codes,
    );
    assert!(watch.longest <= LONGEST_STALL);
    assert!(
        statuses.iter().map(|s| s.connects).max().unwrap_or(0) > 1,
        "faults must have forced redials"
    );
    for db in nodes {
        db.close().unwrap();
    }
    drop(rt);
}
