//! What conflict handling costs a write that meets no conflict:
//! `cargo bench -p tidelog --bench conflicts`.
//!
//! The same workload (~100-byte records, keys spread so updates replace
//! earlier versions) with the conflict log off (`conflict_log_max_bytes =
//! 0`) and on (the default), for single-record commits and 1000-record
//! transactions, on a table with one index and on one without (without an
//! index a write reads nothing for its index entries).
//!
//! The noise of this machine (2 shared cores, fjall's flushes and
//! compactions on background threads) is as large as the cost measured, so
//! the comparison is made of many small, fair pairs rather than a few long
//! rounds: each pair opens both databases fresh (the same compaction state)
//! and fills them alike, then times four rounds in ABBA order (off on on
//! off, the next pair on off off on), so drift within a pair falls on both
//! sides equally. A pair gives one ratio; the report is the median and the
//! quartiles of the pairs' ratios. Three clocks: wall time, the CPU time of
//! the writing thread, and the CPU time of the whole process (which also
//! counts the background work the writes cause). Ratios are throughput,
//! on/off: 0.97 means on is 3 % slower. It reports; it never asserts.
//!
//! For a deterministic count, `TIDELOG_BENCH_ONLY=off` (or `on`) runs one
//! side of one case alone: a fill, then one round in `measured_round`,
//! which `valgrind --tool=callgrind --toggle-collect='*measured_round*'`
//! counts instruction by instruction (see `benches/conflicts_count.sh`).
//!
//! Environment: `TIDELOG_BENCH_N` records per round (default 4000 for
//! single-record commits, 20000 for transactions), `TIDELOG_BENCH_PAIRS`
//! (default 40), `TIDELOG_BENCH_TX` (`1` or `1000`: that case only),
//! `TIDELOG_BENCH_INDEX` (`1` or `0`: that table only).

use std::time::{Duration, Instant};

use rustix::time::{clock_gettime, ClockId};
use serde_json::json;
use tidelog::{Database, OpenOptions, TableOptions};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn open(dir: &std::path::Path, log_on: bool, indexed: bool) -> Database {
    let mut o = OpenOptions::new("bench");
    if !log_on {
        o = o.conflict_log_max_bytes(0);
    }
    let db = Database::open(dir, o).expect("open");
    let t = if indexed {
        TableOptions::default().index("sensor")
    } else {
        TableOptions::default()
    };
    db.create_table("t", t).expect("table");
    db
}

fn cpu(clock: ClockId) -> Duration {
    let t = clock_gettime(clock);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Time spent on one round, by each clock.
#[derive(Clone, Copy, Default)]
struct Spent {
    wall: Duration,
    thread: Duration,
    process: Duration,
}

impl std::ops::AddAssign for Spent {
    fn add_assign(&mut self, o: Spent) {
        self.wall += o.wall;
        self.thread += o.thread;
        self.process += o.process;
    }
}

/// `n` records in commits of `tx`; keys cycle through `n / 2`, so after a
/// fill every write replaces a version.
fn writes(db: &Database, n: u64, tx: u64, salt: u64) {
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
}

/// The part an instruction count looks at (named for callgrind's
/// `--toggle-collect`).
#[inline(never)]
fn measured_round(db: &Database, n: u64, tx: u64, salt: u64) {
    writes(db, n, tx, salt)
}

fn round(db: &Database, n: u64, tx: u64, salt: u64) -> Spent {
    let (w, t, p) = (
        Instant::now(),
        cpu(ClockId::ThreadCPUTime),
        cpu(ClockId::ProcessCPUTime),
    );
    measured_round(db, n, tx, salt);
    Spent {
        wall: w.elapsed(),
        thread: cpu(ClockId::ThreadCPUTime) - t,
        process: cpu(ClockId::ProcessCPUTime) - p,
    }
}

/// One pair: fresh databases, filled alike, four rounds in ABBA order
/// (`on_first`: BAAB). Returns (off, on) totals.
fn pair(n: u64, tx: u64, indexed: bool, on_first: bool, salt: u64) -> (Spent, Spent) {
    let (d_off, d_on) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (off, on) = (
        open(d_off.path(), false, indexed),
        open(d_on.path(), true, indexed),
    );
    writes(&off, n, tx, salt);
    writes(&on, n, tx, salt);
    let (mut s_off, mut s_on) = (Spent::default(), Spent::default());
    for (r, log_on) in [false, true, true, false].into_iter().enumerate() {
        let db_on = log_on != on_first;
        let s = round(if db_on { &on } else { &off }, n, tx, salt + 1 + r as u64);
        if db_on {
            s_on += s;
        } else {
            s_off += s;
        }
    }
    (s_off, s_on)
}

/// Median and quartiles of `v`.
fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

fn main() {
    let pairs = env("TIDELOG_BENCH_PAIRS").unwrap_or(40).max(1);
    let only = std::env::var("TIDELOG_BENCH_ONLY").ok();
    let cases = [1u64, 1000]
        .into_iter()
        .filter(|tx| env("TIDELOG_BENCH_TX").is_none_or(|t| t == *tx))
        .flat_map(|tx| {
            [true, false]
                .into_iter()
                .filter(|i| env("TIDELOG_BENCH_INDEX").is_none_or(|x| (x == 1) == *i))
                .map(move |i| (tx, i))
        });
    if let Some(side) = only {
        // One side alone, for an instruction count: a fill, one round.
        let log_on = side == "on";
        for (tx, indexed) in cases {
            let n = env("TIDELOG_BENCH_N").unwrap_or(if tx == 1 { 4000 } else { 20000 });
            let d = tempfile::tempdir().expect("dir");
            let db = open(d.path(), log_on, indexed);
            writes(&db, n, tx, 0);
            measured_round(&db, n, tx, 1);
            println!("{side}: tx {tx}, index {indexed}, {n} records");
        }
        return;
    }
    println!(
        "conflict log on vs off, no conflicts: {pairs} ABBA pairs per case; throughput on/off, median [quartiles] of the pairs"
    );
    for (tx, indexed) in cases {
        let n = env("TIDELOG_BENCH_N").unwrap_or(if tx == 1 { 4000 } else { 20000 });
        let (mut wall, mut thread, mut process) = (Vec::new(), Vec::new(), Vec::new());
        let mut off_wall = Duration::ZERO;
        for p in 0..pairs {
            let (off, on) = pair(n, tx, indexed, p % 2 == 1, p * 4);
            let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
            wall.push(r(off.wall, on.wall));
            thread.push(r(off.thread, on.thread));
            process.push(r(off.process, on.process));
            off_wall += off.wall;
        }
        let rate = (2 * n * pairs) as f64 / off_wall.as_secs_f64();
        let show = |v: Vec<f64>| {
            let (lo, mid, hi) = quartiles(v);
            format!("{mid:.3} [{lo:.3}-{hi:.3}]")
        };
        println!(
            "{:>5} rec/commit, {:>8}: wall {}, thread cpu {}, process cpu {}  (off: {rate:.0} rec/s)",
            tx,
            if indexed { "index" } else { "no index" },
            show(wall),
            show(thread),
            show(process),
        );
    }
}
