//! What conflict handling costs a write that meets no conflict:
//! `cargo bench -p tidelog --bench conflicts`.
//!
//! The same workload (~100-byte records, one indexed attribute, keys
//! spread so updates replace earlier versions) on two databases in one run:
//! the conflict log off (`conflict_log_max_bytes = 0`) and on (the
//! default). Rounds alternate off/on so drift of the machine falls on both;
//! the median round of each is reported, and their ratio. It reports; it
//! never asserts a timing.
//!
//! Environment: `TIDELOG_BENCH_N` records per round (default 50000),
//! `TIDELOG_BENCH_ROUNDS` rounds per side (default 5).

use std::time::Instant;

use serde_json::json;
use tidelog::{Database, OpenOptions, TableOptions};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn open(dir: &std::path::Path, log_on: bool) -> Database {
    let mut o = OpenOptions::new("bench");
    if !log_on {
        o = o.conflict_log_max_bytes(0);
    }
    let db = Database::open(dir, o).expect("open");
    db.create_table("t", TableOptions::default().index("sensor"))
        .expect("table");
    db
}

/// Records per second of one round: `n` single-record upserts, or `n`
/// records in transactions of `tx`.
fn round(db: &Database, n: u64, tx: u64, salt: u64) -> f64 {
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let mut t = db.transaction();
        for j in 0..tx {
            let k = (i + j) * 7919 % (n / 2).max(1);
            t.upsert(
                "t",
                json!({"id": k as i64, "sensor": format!("s{}", k % 64), "value": (k ^ salt) as f64 / 3.0, "unit": "C", "note": "a fixed-size note"}),
            )
            .expect("stage");
        }
        t.commit().expect("commit");
        i += tx;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let n = env("TIDELOG_BENCH_N", 50_000);
    let rounds = env("TIDELOG_BENCH_ROUNDS", 5);
    println!("conflict handling on the write path, no conflicts: {n} records per round, {rounds} rounds per side");
    for (label, tx) in [
        ("upsert, 1 record/commit", 1),
        ("1000-record transactions", 1000),
    ] {
        let (d_off, d_on) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let (off, on) = (open(d_off.path(), false), open(d_on.path(), true));
        // Warm-up: both hold the keys before measuring, so rounds replace.
        round(&off, n, tx, 0);
        round(&on, n, tx, 0);
        let (mut r_off, mut r_on) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            r_off.push(round(&off, n, tx, r + 1));
            r_on.push(round(&on, n, tx, r + 1));
        }
        let (m_off, m_on) = (median(r_off), median(r_on));
        println!(
            "{label:>26}: log off {m_off:>10.0} rec/s, log on {m_on:>10.0} rec/s, on/off = {:.3}",
            m_on / m_off
        );
    }
}
