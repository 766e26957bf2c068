//! Growth benchmark: `cargo bench -p tidelog --bench growth`.
//!
//! Grows tidelog (single-record upserts, default settings) and SQLite (WAL,
//! synchronous=NORMAL, 1000-row transactions, a page cache of the same
//! budget) side by side in one process, in interleaved chunks, to
//! `TIDELOG_GROWTH_MAX` records of the local benchmark's ~100-byte readings
//! with one index. At each doubling (500k, 1M, 2M, 4M, 8M and the maximum)
//! it reports each store's write rate over the last chunk (and over every
//! chunk since the size before, steadier on a shared machine), random point gets
//! per second over the records written so far, and disk bytes per record,
//! with the ratios the growth target is about. Beside them it grows
//! `fjall-alone` (the local benchmark's contender: the same rows in one
//! fjall keyspace with tidelog's record settings and the whole budget as
//! its cache, one insert per record) and reports its gets, so the gets
//! ratio can be read against what the engine itself does at each size.
//! It reports; it never asserts a timing.
//!
//! Interleaving matters: both stores see the same machine load at the same
//! size, so a ratio measured here is fair even on a busy machine.
//!
//! Environment:
//! - `TIDELOG_GROWTH_MAX` records to grow to (default 10000000)
//! - `TIDELOG_GROWTH_CHUNK` records per interleaved chunk (default 100000)
//! - `TIDELOG_GROWTH_GETS` random gets per measurement (default 50000)

// The local benchmark's contenders and workload, shared rather than copied;
// this benchmark uses only part of them.
#[allow(dead_code)]
#[path = "local/alone.rs"]
mod alone;
#[allow(dead_code)]
#[path = "local/contenders.rs"]
mod contenders;
#[allow(dead_code)]
#[path = "local/raw.rs"]
mod raw;
#[allow(dead_code)]
#[path = "local/sqlite.rs"]
mod sqlite;
#[allow(dead_code)]
#[path = "local/tide.rs"]
mod tide;
#[allow(dead_code)]
#[path = "local/workload.rs"]
mod workload;

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use contenders::{Contender, Kind, Res};
use workload::{dir_bytes, thread_read_calls, utc_now, SplitMix, Workload};

/// The local benchmark's 1000-row transactions for SQLite.
const TX: u64 = 1000;
/// tidelog, SQLite, and the engine alone (whose gets are shown beside).
const KINDS: [Kind; 3] = [Kind::TidelogFjall, Kind::Sqlite, Kind::FjallAlone];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The sizes measured: the doublings from 500,000 below `max`, and `max`.
fn checkpoints(max: u64) -> Vec<u64> {
    let mut out: Vec<u64> = std::iter::successors(Some(500_000u64), |c| Some(c * 2))
        .take_while(|&c| c < max)
        .collect();
    out.push(max);
    out
}

struct Store {
    kind: Kind,
    c: Box<dyn Contender>,
    dir: tempfile::TempDir,
    /// The last chunk's seconds and records.
    chunk_secs: f64,
    chunk_records: u64,
    /// Seconds and records since the last size measured: on a shared
    /// machine one chunk's rate can catch a burst of someone else's work.
    segment_secs: f64,
    segment_records: u64,
}

impl Store {
    /// Writes records `from..to` as this store's workload writes them.
    fn grow(&mut self, from: u64, to: u64) -> Res<()> {
        let t = Instant::now();
        if self.kind == Kind::Sqlite {
            let mut start = from;
            while start < to {
                let end = (start + TX).min(to);
                self.c.write_many(start..end)?;
                start = end;
            }
        } else {
            for i in from..to {
                self.c.write_one(i)?;
            }
        }
        self.chunk_secs = t.elapsed().as_secs_f64();
        self.chunk_records = to - from;
        self.segment_secs += self.chunk_secs;
        self.segment_records += self.chunk_records;
        Ok(())
    }

    /// Random gets over `0..n`; returns (gets/s, bytes read as a check,
    /// read system calls per get).
    fn gets(&mut self, n: u64, gets: u64) -> Res<(f64, u64, f64)> {
        let mut rng = SplitMix(7 ^ n);
        for _ in 0..gets / 10 {
            black_box(self.c.get(rng.below(n))?);
        }
        let mut rng = SplitMix(42 ^ n);
        let mut bytes = 0u64;
        let reads = thread_read_calls();
        let t = Instant::now();
        for _ in 0..gets {
            let len = self.c.get(black_box(rng.below(n)))?;
            if len == 0 {
                return Err(format!("{} lost a record below {n}", self.kind.name()).into());
            }
            bytes += len as u64;
        }
        let per_sec = gets as f64 / t.elapsed().as_secs_f64();
        let reads = (thread_read_calls() - reads) as f64 / gets as f64;
        Ok((per_sec, bytes, reads))
    }

    fn disk(&self) -> u64 {
        dir_bytes(self.dir.path())
    }
}

struct Row {
    records: u64,
    /// Writes/s of the last chunk, and over the whole segment.
    writes: [f64; 2],
    segment: [f64; 2],
    gets: [f64; 2],
    /// Read system calls per get: blocks (tidelog) or pages (SQLite) that
    /// missed the store's own cache.
    reads_per_get: [f64; 2],
    bytes_per_record: [f64; 2],
    /// fjall alone's gets/s.
    engine_gets: f64,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo's bench discovery
    }
    if let Err(e) = run() {
        eprintln!("growth benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let max = env_u64("TIDELOG_GROWTH_MAX", 10_000_000).max(1);
    let chunk = env_u64("TIDELOG_GROWTH_CHUNK", 100_000).max(1);
    let gets = env_u64("TIDELOG_GROWTH_GETS", 50_000).max(1);
    // One workload for the whole run, so a record's index value does not
    // change as the stores grow.
    let wl = Workload::new(max);
    println!("tidelog growth benchmark, {}", utc_now());
    println!(
        "machine: {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    println!(
        "grow to {max} records in interleaved chunks of {chunk}: tidelog 1 record/commit \
         (default settings), SQLite {TX}-row transactions (WAL, synchronous=NORMAL, {} MiB cache: \
         tidelog's budget); at each size {gets} random gets of existing keys; disk = data \
         directory while open",
        contenders::budget() >> 20
    );
    let t_run = Instant::now();
    let base = tempfile::tempdir()?;
    let mut stores = KINDS
        .into_iter()
        .map(|kind| open(kind, base.path(), wl))
        .collect::<Res<Vec<Store>>>()?;
    let mut rows = Vec::new();
    let mut written = 0;
    print_header();
    for cp in checkpoints(max) {
        while written < cp {
            let to = (written + chunk).min(cp);
            for s in &mut stores {
                s.grow(written, to)?;
            }
            written = to;
        }
        let mut row = Row {
            records: cp,
            writes: [0.0; 2],
            segment: [0.0; 2],
            gets: [0.0; 2],
            reads_per_get: [0.0; 2],
            bytes_per_record: [0.0; 2],
            engine_gets: 0.0,
        };
        let mut checks = [0u64; KINDS.len()];
        for (i, s) in stores.iter_mut().enumerate() {
            let (per_sec, check, reads) = s.gets(cp, gets)?;
            checks[i] = check;
            if s.kind == Kind::FjallAlone {
                row.engine_gets = per_sec;
                continue;
            }
            row.writes[i] = s.chunk_records as f64 / s.chunk_secs;
            row.segment[i] = s.segment_records as f64 / s.segment_secs;
            (s.segment_secs, s.segment_records) = (0.0, 0);
            (row.gets[i], row.reads_per_get[i]) = (per_sec, reads);
            row.bytes_per_record[i] = s.disk() as f64 / cp as f64;
        }
        if checks.iter().any(|c| *c != checks[0]) {
            return Err(format!("the stores returned different bytes at {cp}: {checks:?}").into());
        }
        print_row(&row);
        rows.push(row);
    }
    let elapsed = t_run.elapsed().as_secs_f64();
    for s in stores {
        s.c.close()?;
    }
    summary(&rows, max);
    println!(
        "\nrun took {:.0} s; load average at the end {}",
        elapsed,
        loadavg()
    );
    Ok(())
}

fn open(kind: Kind, base: &Path, wl: Workload) -> Res<Store> {
    let dir = tempfile::tempdir_in(base)?;
    let c = kind.open(dir.path(), wl)?;
    Ok(Store {
        kind,
        c,
        dir,
        chunk_secs: 0.0,
        chunk_records: 0,
        segment_secs: 0.0,
        segment_records: 0,
    })
}

fn print_header() {
    println!(
        "\n{:>10} | {:>13} {:>13} {:>11} {:>11} | {:>13} {:>13} {:>7} {:>7} {:>7} {:>12} {:>7} | {:>8} {:>8}",
        "records",
        "tidelog wr/s",
        "SQLite wr/s",
        "tl seg wr/s",
        "SQ seg wr/s",
        "tidelog get/s",
        "SQLite get/s",
        "gets x",
        "tl rd/g",
        "SQ rd/g",
        "fjall get/s",
        "eng x",
        "tl B/rec",
        "SQ B/rec"
    );
}

fn print_row(r: &Row) {
    println!(
        "{:>10} | {:>13.0} {:>13.0} {:>11.0} {:>11.0} | {:>13.0} {:>13.0} {:>6.2}x {:>7.2} {:>7.2} {:>12.0} {:>6.2}x | {:>8.0} {:>8.0}",
        r.records,
        r.writes[0],
        r.writes[1],
        r.segment[0],
        r.segment[1],
        r.gets[0],
        r.gets[1],
        r.gets[0] / r.gets[1],
        r.reads_per_get[0],
        r.reads_per_get[1],
        r.engine_gets,
        r.engine_gets / r.gets[1],
        r.bytes_per_record[0],
        r.bytes_per_record[1],
    );
}

fn summary(rows: &[Row], max: u64) {
    println!(
        "\n(wr/s: the last chunk before each size; seg wr/s: every chunk since the size before; \
         gets x = tidelog / SQLite; rd/g: read system calls per get on the reading thread, \
         blocks or pages that missed the store's own cache; fjall get/s: fjall alone on the \
         same rows with tidelog's record settings and the whole budget as its cache, eng x = \
         fjall alone / SQLite)"
    );
    let worst = rows
        .iter()
        .map(|r| (r.gets[0] / r.gets[1], r.records))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((x, at)) = worst {
        println!(
            "TARGET tidelog gets >= 1.0x SQLite at every size: lowest {x:.2}x (at {at}) -> {}",
            verdict(x >= 1.0)
        );
    }
    let engine = rows
        .iter()
        .map(|r| (r.engine_gets / r.gets[1], r.records))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((x, at)) = engine {
        println!("ENGINE fjall alone's gets: lowest {x:.2}x SQLite (at {at})");
    }
    let at = |n: u64| rows.iter().find(|r| r.records == n);
    match (at(1_000_000), at(max)) {
        (Some(one), Some(last)) if max > 1_000_000 => {
            let x = last.writes[0] / one.writes[0];
            let seg = last.segment[0] / one.segment[0];
            println!(
                "TARGET tidelog write rate at {max} >= 0.7x its rate at 1000000: {x:.2}x \
                 (segments: {seg:.2}x) -> {}",
                verdict(x >= 0.7)
            );
        }
        _ => println!("TARGET write rate at the max vs at 1000000: not measured (max <= 1000000)"),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
