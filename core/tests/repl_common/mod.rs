//! Helpers for replication tests: certificates made at run time, instances
//! on 127.0.0.1 only, and waiting for convergence.
#![allow(dead_code)]

pub mod proxy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidelog::net::certs;
use tidelog::*;

/// A development PKI in a temporary directory, made for this test run.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new(nodes: &[&str]) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = nodes.iter().map(|s| s.to_string()).collect();
        certs::generate_dev_pki(dir.path(), "tidelog test CA", &names).unwrap();
        Pki { dir }
    }

    pub fn options(&self, node: &str) -> ReplicationOptions {
        let f = certs::node_paths(self.dir.path(), node);
        let (ca, _) = certs::ca_paths(self.dir.path());
        fast(ReplicationOptions::mutual_tls(f.cert_chain, f.key, ca))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Short timers so failures and redials happen within a test's patience.
pub fn fast(mut o: ReplicationOptions) -> ReplicationOptions {
    o.heartbeat_interval = Duration::from_millis(100);
    o.idle_timeout = Duration::from_millis(1500);
    o.backoff_initial = Duration::from_millis(50);
    o.backoff_max = Duration::from_millis(500);
    o.connect_timeout = Duration::from_secs(5);
    o
}

pub fn open_node(dir: &Path, name: &str) -> Database {
    Database::open(dir, OpenOptions::new(name)).unwrap()
}

/// Polls `f` until it holds or `timeout` passes; panics with `what`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Records of a table as comparable text (key, stamp, JSON).
pub fn table_state(db: &Database, table: &str) -> Vec<String> {
    match db.scan(table, &ScanOptions::default()) {
        Ok(rs) => rs
            .iter()
            .map(|r| format!("{:?} {:?} {}", r.key(), r.stamp(), r.body_json()))
            .collect(),
        Err(Error::TableNotFound(_)) => vec![],
        Err(e) => panic!("{e}"),
    }
}

pub fn scratch(name: &str) -> PathBuf {
    let _ = name;
    tempfile::tempdir().unwrap().keep()
}

/// Watches remote changes applied on a node and remembers each (table,
/// key, stamp): a write applied twice shows up as a duplicate. Unlike the
/// log (which is trimmed once peers acknowledge), listeners see every
/// applied write. Re-`watch` after reopening a node; the memory stays.
#[derive(Default, Clone)]
pub struct DupWatch {
    seen: std::sync::Arc<std::sync::Mutex<(std::collections::HashSet<String>, Vec<String>)>>,
    /// For each applied remote transaction (by stamp), the tables it wrote.
    txns: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Stamp, Vec<String>>>>,
}

impl DupWatch {
    pub fn watch(&self, db: &Database, tables: &[&str]) {
        for t in tables {
            let seen = self.seen.clone();
            let txns = self.txns.clone();
            db.on_change(t, move |e: &ChangeEvent| {
                if e.local {
                    return;
                }
                txns.lock()
                    .unwrap()
                    .entry(e.stamp)
                    .or_default()
                    .push(e.table.clone());
                let mut g = seen.lock().unwrap();
                for c in &e.changes {
                    let id = format!("{} {:?} {:?}", e.table, c.key, e.stamp);
                    if !g.0.insert(id.clone()) {
                        g.1.push(id);
                    }
                }
            })
            .unwrap();
        }
    }

    /// Applied remote transactions and the tables each one wrote.
    pub fn txns(&self) -> std::collections::HashMap<Stamp, Vec<String>> {
        self.txns.lock().unwrap().clone()
    }

    pub fn applied(&self) -> usize {
        self.seen.lock().unwrap().0.len()
    }

    pub fn duplicates(&self) -> Vec<String> {
        self.seen.lock().unwrap().1.clone()
    }
}

/// The edge app's job in SPEC §1: `readings` readings of sensor `s1` go
/// into the local `sensor_data` table, then alert `id` is raised carrying
/// the last reading and that window of readings.
pub fn raise_alert_with_window(edge: &Database, readings: i64, id: &str) -> CommitInfo {
    for i in 0..readings {
        edge.upsert(
            "sensor_data",
            serde_json::json!({"id": i, "sensor": "s1", "value": i}),
        )
        .unwrap();
    }
    let window: Vec<serde_json::Value> = edge
        .find_eq("sensor_data", "sensor", &serde_json::json!("s1"))
        .unwrap()
        .iter()
        .map(|r| r.to_value())
        .collect();
    edge.insert(
        "alerts",
        serde_json::json!({"id": id, "reading": readings - 1, "window": window}),
    )
    .unwrap()
}

/// Forwards every connection to `upstream`, counting the bytes that go
/// upstream (dialer -> listener).
pub struct CountingProxy {
    pub addr: SocketAddr,
    pub up: Arc<AtomicU64>,
}

impl CountingProxy {
    pub fn start(upstream: SocketAddr) -> CountingProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let up = Arc::new(AtomicU64::new(0));
        let count = up.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(down) = conn else { return };
                let Ok(upc) = TcpStream::connect(upstream) else {
                    continue;
                };
                let pipe = |mut from: TcpStream, mut to: TcpStream, n: Option<Arc<AtomicU64>>| {
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            let got = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(got) => got,
                            };
                            if let Some(n) = &n {
                                n.fetch_add(got as u64, Ordering::Relaxed);
                            }
                            if to.write_all(&buf[..got]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                pipe(
                    down.try_clone().unwrap(),
                    upc.try_clone().unwrap(),
                    Some(count.clone()),
                );
                pipe(upc, down, None);
            }
        });
        CountingProxy { addr, up }
    }

    pub fn up_bytes(&self) -> u64 {
        self.up.load(Ordering::Relaxed)
    }
}

/// A small deterministic generator (xorshift64), so a seed replays a run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
