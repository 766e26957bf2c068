//! Conflict policies over real replication (mutual TLS on 127.0.0.1):
//! three nodes in a full mesh write concurrently (upserts, patches,
//! deletes, counters), one restarts, a fourth joins late by initial sync,
//! and every copy converges; counters lose no count. The late node joins
//! either while nothing is written or while every node (itself too) keeps
//! writing, so its initial syncs overlap patches and counts.

mod repl_common;

use std::time::Duration;

use repl_common::*;
use serde_json::json;
use tidelog::*;

const T: Duration = Duration::from_secs(60);

struct Mesh {
    pki: Pki,
    dirs: Vec<tempfile::TempDir>,
    dbs: Vec<Database>,
    addrs: Vec<String>,
    policy: ConflictPolicy,
}

impl Mesh {
    fn new(policy: ConflictPolicy, names: &[&str]) -> Mesh {
        let pki = Pki::new(names);
        let mut m = Mesh {
            pki,
            dirs: Vec::new(),
            dbs: Vec::new(),
            addrs: Vec::new(),
            policy,
        };
        for _ in 0..3 {
            m.dirs.push(tempfile::tempdir().unwrap());
        }
        for i in 0..3 {
            let db = m.start(i);
            m.addrs.push(db.listen("127.0.0.1:0").unwrap().to_string());
            m.dbs.push(db);
        }
        for i in 0..3 {
            m.link(i, 3);
        }
        m
    }

    fn start(&self, i: usize) -> Database {
        let db = open_node(self.dirs[i].path(), NAMES_ALL[i]);
        db.ensure_table("t", TableOptions::default().conflict(self.policy))
            .unwrap();
        db.start_replication(self.pki.options(NAMES_ALL[i]))
            .unwrap();
        db
    }

    /// Peers `i` with the first `upto` nodes other than itself; the lower
    /// index dials.
    fn link(&self, i: usize, upto: usize) {
        for (j, name) in NAMES_ALL.iter().enumerate().take(upto) {
            if j == i {
                continue;
            }
            let mut p = PeerConfig::new(*name).table(TableFlow::both("t"));
            if j < i {
                p = p.address(self.addrs[j].clone());
            }
            self.dbs[i].add_peer(p).unwrap();
        }
    }

    fn restart(&mut self, i: usize) {
        self.dbs[i].close().unwrap();
        let db = self.start(i);
        let addr = db.listen(self.addrs[i].as_str()).unwrap().to_string();
        assert_eq!(addr, self.addrs[i]);
        self.dbs[i] = db;
        self.link(i, self.dbs.len());
    }

    fn wait_converged(&self, what: &str) {
        let deadline = std::time::Instant::now() + T;
        loop {
            let states: Vec<Vec<String>> = self.dbs.iter().map(|d| table_state(d, "t")).collect();
            if states[1..].iter().all(|s| *s == states[0]) {
                return;
            }
            if std::time::Instant::now() > deadline {
                for (i, s) in states.iter().enumerate() {
                    let differs: Vec<&String> = s
                        .iter()
                        .filter(|r| !states.iter().all(|o| o.contains(r)))
                        .collect();
                    eprintln!("{} ({}): {differs:#?}", NAMES_ALL[i], self.dbs[i].node_id());
                }
                panic!("timed out waiting for: {what}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

const NAMES_ALL: [&str; 4] = ["a", "b", "c", "d"];

/// Random writes on one node; returns what it added to the counter `ctr`.
fn writer(db: Database, seed: u64, n: u64) -> std::thread::JoinHandle<i64> {
    std::thread::spawn(move || {
        let mut rng = Rng(seed);
        let mut counted = 0;
        for _ in 0..n {
            let key = format!("k{}", rng.below(5));
            let v = rng.below(1000) as i64;
            match rng.below(10) {
                0..=1 => {
                    db.upsert("t", json!({"id": key, "x": v, "y": v})).unwrap();
                }
                2..=4 => {
                    let attr = if rng.below(2) == 0 { "x" } else { "y" };
                    let _ = db.update("t", json!({"id": key, attr: v}));
                }
                5 => {
                    db.delete("t", key.as_str()).unwrap();
                }
                6..=7 => {
                    let by = rng.below(9) as i64 - 3;
                    db.increment("t", "ctr", "hits", by).unwrap();
                    counted += by;
                }
                _ => {
                    let _ = db.increment("t", key.as_str(), "n", 1);
                }
            }
        }
        counted
    })
}

/// `during`: the late node's initial sync overlaps writes on every node
/// (the late one too) instead of running while nothing is written.
fn run(policy: ConflictPolicy, during: bool) {
    let mut m = Mesh::new(policy, &NAMES_ALL);
    let mut total = 0;
    for round in 0..2u64 {
        let handles: Vec<_> = m
            .dbs
            .iter()
            .enumerate()
            .map(|(i, db)| writer(db.clone(), 1 + i as u64 * 31 + round * 7, 150))
            .collect();
        total += handles.into_iter().map(|h| h.join().unwrap()).sum::<i64>();
        if round == 0 {
            m.restart(1);
        }
    }
    m.wait_converged(&format!("{policy:?}: a, b and c converge"));
    // A late node: initial sync brings the records with their merge
    // states, so what it then receives merges as everywhere else.
    let d = tempfile::tempdir().unwrap();
    m.dirs.push(d);
    let late = m.start(3);
    m.dbs.push(late);
    m.link(3, 3);
    for i in 0..3 {
        m.dbs[i]
            .add_peer(PeerConfig::new("d").table(TableFlow::both("t")))
            .unwrap();
    }
    if !during {
        m.wait_converged(&format!("{policy:?}: the late node catches up"));
    }
    let handles: Vec<_> = m
        .dbs
        .iter()
        .enumerate()
        // More writes while syncing: the longer they run, the more of
        // the syncs they overlap.
        .map(|(i, db)| writer(db.clone(), 1000 + i as u64, if during { 200 } else { 60 }))
        .collect();
    total += handles.into_iter().map(|h| h.join().unwrap()).sum::<i64>();
    m.wait_converged(&format!("{policy:?}: all four converge"));
    for db in &m.dbs {
        let r = db.get("t", "ctr").unwrap().unwrap().to_value();
        assert_eq!(r["hits"], json!(total), "{policy:?} {}", db.node_name());
    }
}

#[test]
fn merge_converges_over_tls_with_a_restart_and_a_late_node() {
    run(ConflictPolicy::MergeAttributes, false);
}

#[test]
fn lww_converges_over_tls_with_counters_a_restart_and_a_late_node() {
    run(ConflictPolicy::LastWriterWins, false);
}

#[test]
fn merge_converges_when_the_late_nodes_sync_overlaps_patches_and_counts() {
    run(ConflictPolicy::MergeAttributes, true);
}

#[test]
fn lww_converges_when_the_late_nodes_sync_overlaps_writes_and_counts() {
    run(ConflictPolicy::LastWriterWins, true);
}
