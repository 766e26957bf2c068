//! An unreliable network between an edge and a cloud: a TCP proxy on
//! 127.0.0.1 that, at random but reproducibly from a seed, cuts every
//! connection, stalls the link (holds bytes without closing, so only the
//! idle timeout can notice) and delays it, while both sides keep writing.
//! Afterwards the proxy heals and both sides must hold the same records.
//!
//! `TIDELOG_CHAOS_SEED=<n>` replays a run; `TIDELOG_CHAOS_SECS=<n>` sets how
//! long the chaos lasts (default 18 s).

mod repl_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use repl_common::*;
use serde_json::json;
use tidelog::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    /// Holds every byte, closes nothing: a dead NAT entry or a cable pulled
    /// somewhere far away.
    Stall,
    /// Forwards each chunk only after this long.
    Delay(Duration),
}

/// Small deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range_ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

struct Proxy {
    addr: std::net::SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped to cut every open connection.
    cuts: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Pass);
        let (cuts, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let (m, c, a) = (mode.clone(), cuts.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::Relaxed);
                let (m, c) = (m.subscribe(), c.subscribe());
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = (down.set_nodelay(true), up.set_nodelay(true));
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    // Either direction ending (or a cut) drops all four halves.
                    tokio::select! {
                        _ = pump(dr, uw, m.clone(), c.clone()) => {}
                        _ = pump(ur, dw, m, c) => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            mode,
            cuts,
            accepted,
        }
    }
}

/// Copies one direction, obeying the mode; returns on EOF, error or a cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    mut cuts: watch::Receiver<u64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    cuts.borrow_and_update();
    let cut = async move {
        let _ = cuts.changed().await;
    };
    let copy = async move {
        loop {
            // While stalled nothing is read, so the sender's socket buffers
            // fill and it blocks too, exactly like a black hole.
            while {
                let m = *mode.borrow_and_update();
                m == Mode::Stall
            } {
                if mode.changed().await.is_err() {
                    return;
                }
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            loop {
                let now = *mode.borrow_and_update();
                match now {
                    Mode::Pass => break,
                    Mode::Delay(d) => {
                        tokio::time::sleep(d).await;
                        break;
                    }
                    Mode::Stall => {
                        if mode.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = cut => {}
        _ = copy => {}
    }
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
    let chaos_for = Duration::from_secs(env_u64("TIDELOG_CHAOS_SECS").unwrap_or(18));
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
    let proxy = rt.block_on(Proxy::start(cloud_addr));
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
                let k = (rng.next() % 40) as i64;
                if rng.next().is_multiple_of(7) {
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

    // The chaos schedule. The first event is always a stall longer than the
    // idle timeout, so every seed exercises stall detection; then random.
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
                    proxy.cuts.send_modify(|c| *c += 1);
                    ("cut".to_string(), rng.range_ms(100, 1200))
                }
                1 => {
                    // Longer than the 1.5 s idle timeout, shorter than the
                    // 5 s connect timeout.
                    proxy.mode.send_replace(Mode::Stall);
                    ("stall".to_string(), rng.range_ms(2000, 3500))
                }
                2 => {
                    let d = rng.range_ms(5, 250);
                    proxy.mode.send_replace(Mode::Delay(d));
                    (format!("delay {d:?}"), rng.range_ms(500, 2500))
                }
                _ => ("pass".to_string(), rng.range_ms(200, 1500)),
            };
            log.lock().push(format!("{event} for {hold:?}"));
            tokio::time::sleep(hold).await;
            proxy.mode.send_replace(Mode::Pass);
        }
    });
    eprintln!("chaos events: {:?}", log.lock());

    // Heal: pass everything, stop writing, and let the sides catch up.
    proxy.mode.send_replace(Mode::Pass);
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
    // A stall closes nothing; only the idle timeout can have ended it.
    let idle_drop = |errs: &[String]| errs.iter().any(|e| e.contains("not even a heartbeat"));
    assert!(
        idle_drop(&edge_errors) || idle_drop(&cloud_errors),
        "no side reported an idle drop during a stall"
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
