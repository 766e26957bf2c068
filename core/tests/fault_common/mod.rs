//! The fault run of issue 19 without its destination: three in-process
//! edges writing alerts (new keys, overwrites and deletes of their own
//! keys, in transactions of seeded random size), two `tidelog serve` hubs
//! named `cloud`, and a schedule of faults during the writes: SIGKILL of
//! each hub once (restarted on its own data and port), one restart of the
//! destination server, and every edge on both hubs. cli_fault.rs adds the
//! destination (PostgreSQL or JetStream) and checks what landed there
//! against [`Fleet::expected`].
//!
//! The writers are gated by progress rather than paced by time, so the
//! faults fall inside the writes however fast or slow the machine is:
//! fault N fires when every edge has written its share up to a mark, and
//! the writers may run on only to the next mark until it has been dealt
//! with.
#![allow(dead_code)]

mod check;
pub use check::*;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cli_common::*;
use crate::repl_common::fast;
use serde_json::{json, Value};
use tidelog::*;

pub const EDGES: [&str; 3] = ["edge-1", "edge-2", "edge-3"];
/// Patience for anything the run waits for (links, restarts).
pub const T: Duration = Duration::from_secs(120);

/// Rows (distinct keys) in all; `TIDELOG_FAULT_ROWS` overrides `default`.
pub fn rows_from_env(default: u64) -> u64 {
    match std::env::var("TIDELOG_FAULT_ROWS") {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("TIDELOG_FAULT_ROWS={v:?} is not a row count")),
        Err(_) => default,
    }
}

/// `TIDELOG_FAULT_SEED`, or one from the clock (printed either way, so a
/// failing run can be repeated).
pub fn seed_from_env() -> u64 {
    match std::env::var("TIDELOG_FAULT_SEED") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("TIDELOG_FAULT_SEED={v:?} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// splitmix64: small, seeded, good enough to pick operations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a writer did to its own keys: the last stamp per key and which
/// keys it deleted (a deleted key is never written again).
#[derive(Default)]
pub struct Book {
    pub last: HashMap<String, (Stamp, bool)>,
    pub upserts: u64,
    pub overwrites: u64,
    pub deletes: u64,
    pub txns: u64,
}

pub struct Edge {
    pub name: &'static str,
    pub db: Database,
    /// Distinct keys this edge writes.
    pub share: u64,
    /// Distinct keys written so far.
    pub progress: AtomicU64,
    pub book: Mutex<Book>,
    /// Hub addresses this edge was seen linked to.
    pub seen_on: Mutex<BTreeSet<String>>,
}

pub struct Hub {
    pub tag: &'static str,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub addr: String,
    pub serve: Option<Serve>,
}

impl Hub {
    /// Starts the hub and, the first time, pins its port in its config so
    /// a restart binds the address the edges dial.
    pub fn start(&mut self) {
        let mut s = Serve::start(&self.config);
        let addr = s.ready();
        if self.addr.is_empty() {
            set_listen(&self.config, &addr);
            self.addr = addr;
        } else {
            assert_eq!(
                addr, self.addr,
                "hub {} restarted on another port",
                self.tag
            );
        }
        self.serve = Some(s);
    }

    pub fn kill(&mut self) {
        self.serve.take().expect("hub running").kill();
    }

    pub fn status(&self) -> Value {
        status_json(&self.dir, &format!("cloud-{}.toml", self.tag))
    }

    /// Waits until this hub's sink found its destination gone.
    pub fn wait_sink_down(&self) {
        poll(
            &format!("hub {}'s sink noticing the outage", self.tag),
            T,
            || self.status()["sinks"][0]["connected"] == false,
        );
    }
}

/// `pki/cloud-a.*` and `pki/cloud-b.*`: two certificates for `cloud`, each
/// with its own key, from the one CA the edges trust; and the edges'.
pub fn certs(dir: &Path) {
    let mut nodes = vec!["cloud"];
    nodes.extend(EDGES);
    make_certs(dir, &nodes);
    let pki = dir.join("pki");
    for tag in ["a", "b"] {
        if tag == "b" {
            let out = tidelog(dir, &["certs", "--out", "pki", "--add", "cloud"]);
            assert!(out.status.success(), "{out:?}");
        }
        for ext in ["pem", "key"] {
            std::fs::rename(
                pki.join(format!("cloud.{ext}")),
                pki.join(format!("cloud-{tag}.{ext}")),
            )
            .unwrap();
        }
    }
}

/// A hub's config with `sinks` (the `[[sinks]]` text) appended.
pub fn hub_config(dir: &Path, tag: &'static str, sinks: &str) -> Hub {
    let peers: String = EDGES
        .iter()
        .map(|e| {
            format!("[[peers]]\nname = \"{e}\"\ntables = [{{ table = \"alerts\", subscribe = true }}]\n")
        })
        .collect();
    let text = format!(
        r#"
node_name = "cloud"
data_dir = "cloud-{tag}-data"
listen = "127.0.0.1:0"
status_interval_secs = 0
[tls]
cert = "pki/cloud-{tag}.pem"
key = "pki/cloud-{tag}.key"
ca = "pki/ca.pem"
{FAST_TIMERS}
[[tables]]
name = "alerts"
{peers}
{sinks}
"#
    );
    let config = dir.join(format!("cloud-{tag}.toml"));
    std::fs::write(&config, text).unwrap();
    Hub {
        tag,
        dir: dir.to_path_buf(),
        config,
        addr: String::new(),
        serve: None,
    }
}

/// The three edges: edge-1 and edge-2 try hub A first, edge-3 hub B, so
/// both hubs sink in the steady state.
pub fn edges(dir: &Path, a: &str, b: &str, rows: u64) -> Vec<Edge> {
    let pki = dir.join("pki");
    EDGES
        .iter()
        .enumerate()
        .map(|(i, &name)| {
            let db = Database::open(dir.join(name), OpenOptions::new(name)).unwrap();
            db.start_replication(fast(ReplicationOptions::mutual_tls(
                pki.join(format!("{name}.pem")),
                pki.join(format!("{name}.key")),
                pki.join("ca.pem"),
            )))
            .unwrap();
            db.create_table("alerts", TableOptions::default()).unwrap();
            let (first, then) = if i == 2 { (b, a) } else { (a, b) };
            db.add_peer(
                PeerConfig::new("cloud")
                    .address(first)
                    .also_at(then)
                    .table(TableFlow::publish("alerts")),
            )
            .unwrap();
            let n = EDGES.len() as u64;
            let share = rows / n + u64::from((i as u64) < rows % n);
            Edge {
                name,
                db,
                share,
                progress: AtomicU64::new(0),
                book: Mutex::new(Book::default()),
                seen_on: Mutex::new(BTreeSet::new()),
            }
        })
        .collect()
}

/// Waits until each edge is linked to the hub `want` names for it, and
/// notes where each one is.
pub fn wait_linked(edges: &[Edge], want: impl Fn(&Edge) -> String) {
    let deadline = Instant::now() + T;
    loop {
        let mut all = true;
        for e in edges {
            let s = e.db.peer_status("cloud").unwrap();
            if s.connected {
                if let Some(a) = &s.address {
                    e.seen_on.lock().unwrap().insert(a.clone());
                }
            }
            all &= s.connected && s.address == Some(want(e));
        }
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "edges not linked as expected within {T:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Progress marks, per mille of each edge's share: fault i fires when
/// every edge reached `FIRE[i]`; until it has been dealt with the writers
/// stop at `GATE[i]`.
pub const FIRE: [u64; 3] = [150, 350, 550];
pub const GATE: [u64; 3] = [300, 500, 700];

/// The writer of one edge: until its share of new keys is written,
/// transactions of 1-16 operations: a new key (70 %), an overwrite of one
/// of its live keys (22 %), a delete of one (8 %).
pub fn write(edge: &Edge, seed: u64, gate: &AtomicU64) {
    let mut rng = Rng::new(seed);
    let mut live: Vec<String> = Vec::new();
    let mut version: HashMap<String, u64> = HashMap::new();
    let mut next = 0u64;
    while next < edge.share {
        while next * 1000 >= gate.load(Ordering::Acquire) * edge.share {
            std::thread::sleep(Duration::from_millis(2));
        }
        let ops = 1 + rng.below(16);
        let before = live.len();
        let mut touched: Vec<usize> = Vec::new();
        let mut written: Vec<(String, bool)> = Vec::new();
        let mut tx = edge.db.transaction();
        for _ in 0..ops {
            let roll = rng.below(100);
            if roll < 70 || before == 0 {
                if next == edge.share {
                    break;
                }
                let key = format!("{}-{next:07}", edge.name);
                next += 1;
                tx.upsert("alerts", record(&key, 0, &mut rng)).unwrap();
                written.push((key, false));
                continue;
            }
            let at = rng.below(before as u64) as usize;
            if touched.contains(&at) {
                continue;
            }
            touched.push(at);
            let key = live[at].clone();
            if roll < 92 {
                let v = version.entry(key.clone()).or_default();
                *v += 1;
                tx.upsert("alerts", record(&key, *v, &mut rng)).unwrap();
                written.push((key, false));
            } else {
                tx.delete("alerts", key.as_str()).unwrap();
                written.push((key, true));
            }
        }
        if written.is_empty() {
            continue;
        }
        let info = tx.commit().unwrap();
        let mut book = edge.book.lock().unwrap();
        book.txns += 1;
        for (key, deleted) in written {
            match (deleted, book.last.contains_key(&key)) {
                (true, _) => book.deletes += 1,
                (false, true) => book.overwrites += 1,
                (false, false) => {
                    book.upserts += 1;
                    live.push(key.clone());
                }
            }
            book.last.insert(key, (info.stamp, deleted));
        }
        drop(book);
        // Deleted keys leave the live list after the commit (highest index
        // first, so swap_remove moves no index still to be removed).
        let mut gone: Vec<usize> = touched
            .into_iter()
            .filter(|&i| edge.book.lock().unwrap().last[&live[i]].1)
            .collect();
        gone.sort_unstable_by(|a, b| b.cmp(a));
        for i in gone {
            live.swap_remove(i);
        }
        edge.progress.store(next, Ordering::Release);
    }
}

/// About 100 bytes of alert.
fn record(key: &str, version: u64, rng: &mut Rng) -> Value {
    json!({
        "id": key,
        "v": version,
        "level": rng.below(5),
        "sensor": format!("s{:03}", rng.below(500)),
        "msg": "temperature above threshold",
    })
}

/// Every edge reached `per_mille` of its share.
pub fn all_reached(edges: &[Edge], per_mille: u64) -> bool {
    edges
        .iter()
        .all(|e| e.progress.load(Ordering::Acquire) * 1000 >= per_mille * e.share)
}

pub fn wait_reached(edges: &[Edge], per_mille: u64) {
    while !all_reached(edges, per_mille) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What the moves and kills cost, as the edges and the hubs report it.
pub fn print_costs(edges: &[Edge], hubs: &[Hub]) {
    for e in edges {
        let s = e.db.peer_status("cloud").unwrap();
        let b = e.book.lock().unwrap();
        eprintln!(
            "fault: {}: {} txns, {} new keys, {} overwrites, {} deletes; on {:?} now, seen on {:?}; \
             connects {}, resyncs sent {}, stalls {}",
            e.name,
            b.txns,
            b.upserts,
            b.overwrites,
            b.deletes,
            s.address,
            e.seen_on.lock().unwrap(),
            s.connects,
            s.resyncs_sent,
            s.stalls
        );
    }
    for h in hubs {
        let st = h.status();
        for p in st["peers"].as_array().into_iter().flatten() {
            eprintln!(
                "fault: hub {} (since its restart) from {}: duplicates received (resent rows it had) {}, syncs received {}, connects {}",
                h.tag, p["name"], p["duplicates_received"], p["syncs_received"], p["connects"]
            );
        }
        for s in st["sinks"].as_array().into_iter().flatten() {
            eprintln!(
                "fault: hub {} sink {} (since its restart): batches {}, rows {}, retries {}, overruns {}, last error {}",
                h.tag, s["name"], s["batches"], s["rows"], s["retries"], s["overruns"], s["last_error"]
            );
        }
    }
}

/// Polls `f` every 200 ms (each poll may start a `tidelog status`).
pub fn poll(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// When the run's phases ended.
pub struct Timings {
    pub start: Instant,
    pub writes_done: Instant,
    pub last_fault: Instant,
}

/// Runs the writers with the faults in between: hub A killed (edge-1 and
/// edge-2 move to B) and restarted, `restart_destination` called with hub
/// B (every edge is on it then, and the writers go on), hub B
/// killed (every edge on A, so edge-3 moves too) and restarted. Both hubs
/// run when it is called and when it returns.
pub fn run_with_faults(
    edges: &[Edge],
    hubs: &mut [Hub; 2],
    seed: u64,
    mut restart_destination: impl FnMut(&Hub),
) -> Timings {
    let (a, b) = (hubs[0].addr.clone(), hubs[1].addr.clone());
    let home = |e: &Edge| {
        if e.name == "edge-3" {
            b.clone()
        } else {
            a.clone()
        }
    };
    wait_linked(edges, home);
    let gate = AtomicU64::new(GATE[0]);
    let dead = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let mut last_fault = start;
    let wait_for = |per_mille: u64| {
        let deadline = Instant::now() + Duration::from_secs(900);
        while !all_reached(edges, per_mille) {
            assert!(
                !dead.load(Ordering::Acquire),
                "a writer failed (its panic follows)"
            );
            assert!(
                Instant::now() < deadline,
                "writers not at {per_mille} per mille in 900 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    std::thread::scope(|s| {
        for (i, e) in edges.iter().enumerate() {
            let (gate, dead) = (&gate, &dead);
            s.spawn(move || {
                struct OnPanic<'a>(&'a std::sync::atomic::AtomicBool);
                impl Drop for OnPanic<'_> {
                    fn drop(&mut self) {
                        if std::thread::panicking() {
                            self.0.store(true, Ordering::Release);
                        }
                    }
                }
                let _guard = OnPanic(dead);
                write(
                    e,
                    seed ^ (i as u64 + 1).wrapping_mul(0x1000_0000_01b3),
                    gate,
                );
            });
        }
        wait_for(FIRE[0]);
        let t = Instant::now();
        hubs[0].kill();
        wait_linked(edges, |_| b.clone());
        hubs[0].start();
        eprintln!(
            "fault: hub A SIGKILLed and restarted, edge-1 and edge-2 on B, in {:?}",
            t.elapsed()
        );
        gate.store(GATE[1], Ordering::Release);

        wait_for(FIRE[1]);
        let t = Instant::now();
        restart_destination(&hubs[1]);
        eprintln!("fault: destination restarted in {:?}", t.elapsed());
        gate.store(GATE[2], Ordering::Release);

        wait_for(FIRE[2]);
        let t = Instant::now();
        hubs[1].kill();
        wait_linked(edges, |_| a.clone());
        hubs[1].start();
        last_fault = Instant::now();
        eprintln!(
            "fault: hub B SIGKILLed and restarted, every edge on A, in {:?}",
            t.elapsed()
        );
        gate.store(1000, Ordering::Release);
    });
    let writes_done = Instant::now();
    let both: BTreeSet<String> = [a, b].into();
    for e in edges {
        assert_eq!(
            *e.seen_on.lock().unwrap(),
            both,
            "{} was not on both hubs",
            e.name
        );
    }
    Timings {
        start,
        writes_done,
        last_fault,
    }
}

/// Waits until every edge's writes are acknowledged by the hub it is on
/// and both hubs' sinks have applied their whole log.
pub fn wait_converged(edges: &[Edge], hubs: &[Hub; 2], timeout: Duration) {
    for e in edges {
        let last = e.db.log_bounds().unwrap().last;
        poll(
            &format!("{}'s writes acknowledged", e.name),
            timeout,
            || e.db.peer_status("cloud").unwrap().acked_seq >= last,
        );
    }
    for h in hubs {
        poll(
            &format!("hub {}'s sink at its log head", h.tag),
            timeout,
            || {
                let st = h.status();
                let s = &st["sinks"][0];
                s["backlog"] == 0 && s["resume_point"] == s["log_head"]
            },
        );
    }
}
