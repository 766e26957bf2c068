//! An unreliable network between an edge and a cloud: a TCP proxy on
//! 127.0.0.1 (repl_common/proxy.rs) that, at random but reproducibly from a
//! seed, cuts every connection, blackholes the link (holds bytes without
//! closing, so only the idle timeout or the stall watchdog can notice) and
//! delays it, while both sides keep writing. Afterwards the proxy heals and
//! both sides must hold the same records.
//!
//! `TIDELOG_CHAOS_SEED=<n>` replays a run; `TIDELOG_CHAOS_SECS=<n>` sets how
//! long the chaos lasts (default 12 s).

mod repl_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use repl_common::proxy::{FaultProxy, Mode};
use repl_common::*;
use serde_json::json;
use tidelog::*;

fn range_ms(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo + rng.below(hi - lo))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn open_with_tables(dir: &std::path::Path, name: &str) -> Database {
    let db = open_node(dir, name);
    for t in ["up", "down", "both"] {
        db.create_table(t, TableOptions::default()).unwrap();
    }
    db
}

/// Remembers every distinct `last_error` a peer showed while polled, since
/// a successful reconnect clears it.
fn watch_errors(
    db: Database,
    peer: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut seen: Vec<String> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(s) = db.peer_status(peer) {
                if let Some(e) = s.last_error {
                    if seen.last() != Some(&e) {
                        seen.push(e);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    })
}

#[test]
fn cut_stalled_and_delayed_link_is_redialed_and_both_sides_converge() {
    let seed = env_u64("TIDELOG_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let chaos_for = Duration::from_secs(env_u64("TIDELOG_CHAOS_SECS").unwrap_or(12));
    eprintln!("chaos seed {seed} (replay with TIDELOG_CHAOS_SEED={seed}), chaos for {chaos_for:?}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pki = Pki::new(&["cloud", "edge-1"]);
    let (dc, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cloud = open_with_tables(dc.path(), "cloud");
    let edge = open_with_tables(de.path(), "edge-1");
    // fast(): heartbeat 100 ms, idle timeout 1.5 s, backoff 50..500 ms.
    cloud.start_replication(pki.options("cloud")).unwrap();
    edge.start_replication(pki.options("edge-1")).unwrap();
    let cloud_addr = cloud.listen("127.0.0.1:0").unwrap();
    let proxy = rt.block_on(FaultProxy::start(cloud_addr, seed));
    cloud
        .add_peer(
            PeerConfig::new("edge-1")
                .table(TableFlow::subscribe("up"))
                .table(TableFlow::publish("down"))
                .table(TableFlow::both("both")),
        )
        .unwrap();
    edge.add_peer(
        PeerConfig::new("cloud")
            .address(proxy.addr.to_string())
            .table(TableFlow::publish("up"))
            .table(TableFlow::subscribe("down"))
            .table(TableFlow::both("both")),
    )
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let edge_errors = watch_errors(edge.clone(), "cloud", stop.clone());
    let cloud_errors = watch_errors(cloud.clone(), "edge-1", stop.clone());

    // Writers on both sides for the whole chaos period: own table with
    // distinct keys (so every write must arrive), shared table with
    // conflicting keys, upserts and deletes (so LWW must agree).
    let writing = Arc::new(AtomicBool::new(true));
    let writer = |db: Database, own: &'static str, tag: &'static str, seed: u64| {
        let writing = writing.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(seed | 1);
            let mut n = 0u64;
            while writing.load(Ordering::Relaxed) {
                let mut tx = db.transaction();
                tx.insert(own, json!({"id": n, "by": tag})).unwrap();
                let k = rng.below(40) as i64;
                if rng.below(7) == 0 {
                    tx.delete("both", k).unwrap();
                } else {
                    tx.upsert("both", json!({"id": k, "n": n, "by": tag}))
                        .unwrap();
                }
                tx.commit().unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        })
    };
    let w_edge = writer(edge.clone(), "up", "edge", seed);
    let w_cloud = writer(cloud.clone(), "down", "cloud", seed.rotate_left(17));

    // The chaos schedule. The first event is always a blackhole longer than
    // the idle timeout, so every seed exercises stall detection; then random.
    let log = Mutex::new(Vec::new());
    rt.block_on(async {
        let mut rng = Rng(seed | 1);
        let end = Instant::now() + chaos_for;
        let mut first = true;
        // Let the link come up and stream before the first blow.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        while Instant::now() < end {
            let pick = if first { 1 } else { rng.next() % 4 };
            first = false;
            let (event, hold) = match pick {
                0 => {
                    proxy.cut();
                    ("cut".to_string(), range_ms(&mut rng, 100, 1200))
                }
                1 => {
                    // Longer than the 1.5 s idle timeout, shorter than the
                    // 5 s connect timeout.
                    proxy.set(Mode::Blackhole);
                    ("blackhole".to_string(), range_ms(&mut rng, 2000, 3500))
                }
                2 => {
                    let d = range_ms(&mut rng, 5, 250);
                    proxy.set(Mode::Delay(d));
                    (format!("delay {d:?}"), range_ms(&mut rng, 500, 2500))
                }
                _ => ("pass".to_string(), range_ms(&mut rng, 200, 1500)),
            };
            log.lock().push(format!("{event} for {hold:?}"));
            tokio::time::sleep(hold).await;
            proxy.set(Mode::Pass);
        }
    });
    eprintln!("chaos events: {:?}", log.lock());

    // Heal: pass everything, stop writing, and let the sides catch up.
    proxy.set(Mode::Pass);
    writing.store(false, Ordering::Relaxed);
    let (n_edge, n_cloud) = (w_edge.join().unwrap(), w_cloud.join().unwrap());
    eprintln!("writes: edge {n_edge}, cloud {n_cloud}");
    let converged = || {
        ["up", "down", "both"]
            .iter()
            .all(|t| table_state(&edge, t) == table_state(&cloud, t))
    };
    wait_until(
        "both sides converge after healing",
        Duration::from_secs(30),
        converged,
    );
    stop.store(true, Ordering::Relaxed);
    let (edge_errors, cloud_errors) = (edge_errors.join().unwrap(), cloud_errors.join().unwrap());

    assert_eq!(
        cloud.count("up").unwrap(),
        n_edge,
        "every edge write arrived once"
    );
    assert_eq!(
        edge.count("down").unwrap(),
        n_cloud,
        "every cloud write arrived once"
    );
    let es = edge.peer_status("cloud").unwrap();
    let cs = cloud.peer_status("edge-1").unwrap();
    eprintln!("edge status: {es:?}");
    eprintln!("cloud status: {cs:?}");
    eprintln!("edge errors seen: {edge_errors:#?}");
    eprintln!("cloud errors seen: {cloud_errors:#?}");
    assert!(es.connects > 1, "the edge must have redialed: {es:?}");
    assert!(
        cs.connects > 1,
        "the cloud must have accepted again: {cs:?}"
    );
    assert!(proxy.accepted.load(Ordering::Relaxed) > 1);
    // A blackhole closes nothing; only the idle timeout or the stall
    // watchdog (both sides keep writing, so entries wait for an
    // acknowledgement) can have ended it.
    let noticed = |errs: &[String]| {
        errs.iter()
            .any(|e| e.contains("not even a heartbeat") || e.contains("link stalled"))
    };
    assert!(
        noticed(&edge_errors) || noticed(&cloud_errors),
        "no side noticed a blackhole"
    );

    // Both ends settle: connected, nothing left to send either way.
    wait_until("link up and drained", Duration::from_secs(10), || {
        let (e, c) = (
            edge.peer_status("cloud").unwrap(),
            cloud.peer_status("edge-1").unwrap(),
        );
        e.connected && c.connected && e.backlog_txns == 0 && c.backlog_txns == 0
    });
    assert!(converged());
    edge.close().unwrap();
    cloud.close().unwrap();
    drop(rt);
}
