//! tidelog's local benchmark: `cargo bench -p tidelog --bench local`.
//!
//! In one run, on the same ~100-byte JSON records with one indexed attribute,
//! it measures (a) the raw engine floors (fjall, sled) doing the same atomic
//! unit tidelog commits, (b) SQLite through rusqlite, and (c) tidelog on each
//! engine: single-record upserts, 1000-record transactions, point gets and
//! index finds. Then, each in a child process of its own, it loads 1,000,000
//! records per contender and reports disk bytes per record (records and
//! index alone, and everything), bytes written towards the device, peak
//! memory, and point gets and index finds on the grown store, with the
//! issue-21 targets against SQLite.
//! It reports; it never asserts a timing.
//!
//! Environment:
//! - `TIDELOG_BENCH_N` records per write phase, gets (default 200000)
//! - `TIDELOG_BENCH_BIG_N` records of the footprint phase (default 1000000)
//! - `TIDELOG_BENCH_SKIP_1M=1` skips the footprint phase
//! - `TIDELOG_BENCH_ONLY=tidelog-fjall,raw-fjall` runs only these contenders
//!   (`fjall-alone`, the engine alone answering the same gets, runs in the
//!   footprint phase only)
//! - `TIDELOG_BENCH_BUDGET_MIB` memory budget of every contender (default:
//!   tidelog's default budget)

#[path = "local/alone.rs"]
mod alone;
#[path = "local/contenders.rs"]
mod contenders;
#[path = "local/raw.rs"]
mod raw;
#[path = "local/sqlite.rs"]
mod sqlite;
#[path = "local/tide.rs"]
mod tide;
#[path = "local/workload.rs"]
mod workload;

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use contenders::{Kind, Res};
use workload::{
    dir_bytes, proc_io, proc_status_kib, thread_read_calls, utc_now, SplitMix, Workload,
};

/// Records per transaction in the transaction phase.
const TX: u64 = 1000;
/// Contenders of the footprint phase.
const BIG: [Kind; 5] = [
    Kind::TidelogFjall,
    Kind::TidelogSled,
    Kind::RawFjall,
    Kind::Sqlite,
    Kind::FjallAlone,
];
const CHILD_FLAG: &str = "--tidelog-child";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Single,
    Tx,
    Get,
    Find,
}

impl Op {
    fn label(self, kind: Kind) -> &'static str {
        let tidelog = kind.floor().is_some();
        match self {
            Op::Single if tidelog => "upsert, 1 record/commit",
            Op::Single => "write, 1 record/commit",
            Op::Tx => "1000-record transactions",
            Op::Get => "point get (random)",
            Op::Find => "index find_eq",
        }
    }
}

struct Measured {
    kind: Kind,
    op: Op,
    ops: u64,
    records: u64,
    secs: f64,
    /// Sum of what the reads returned: equal for every contender, or the
    /// contenders did not do the same work.
    check: u64,
}

impl Measured {
    fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

struct Config {
    n: u64,
    big_n: u64,
    skip_big: bool,
    only: Vec<Kind>,
    gets: u64,
    finds: u64,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

impl Config {
    fn from_env() -> Config {
        let n = env_u64("TIDELOG_BENCH_N", 200_000).max(1);
        let only = match std::env::var("TIDELOG_BENCH_ONLY") {
            Ok(list) if !list.trim().is_empty() => list
                .split(',')
                .map(|s| Kind::parse(s.trim()).unwrap_or_else(|| panic!("unknown contender `{s}`")))
                .collect(),
            _ => Kind::every().collect(),
        };
        Config {
            n,
            big_n: env_u64("TIDELOG_BENCH_BIG_N", 1_000_000).max(1),
            skip_big: std::env::var("TIDELOG_BENCH_SKIP_1M").is_ok_and(|v| v != "0"),
            only,
            gets: n,
            finds: (n / 20).clamp(1_000, 20_000),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == CHILD_FLAG) {
        let kind = args.get(pos + 1).and_then(|k| Kind::parse(k));
        let n = args.get(pos + 2).and_then(|n| n.parse().ok());
        let (Some(kind), Some(n)) = (kind, n) else {
            panic!("usage: {CHILD_FLAG} <contender> <records>");
        };
        if let Err(e) = footprint_child(kind, n) {
            eprintln!("{}: {e}", kind.name());
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = run_all(&Config::from_env()) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn run_all(cfg: &Config) -> Res<()> {
    let wl = Workload::new(2 * cfg.n);
    check_same_records(wl);
    let mut sample = String::new();
    wl.text(123_456, &mut sample);
    println!("tidelog local benchmark, {}", utc_now());
    println!(
        "machine: {} CPUs (available_parallelism), load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    println!(
        "N = {}: N single-record writes, then N more in {TX}-record transactions, \
         N random point gets over the 2N records, {} index finds",
        cfg.n, cfg.finds
    );
    println!(
        "record ({} bytes): {sample}; indexed attribute: `{}` (~10 records per value)",
        sample.len(),
        workload::INDEXED
    );
    println!(
        "durability: tidelog Grouped{{{:?}}} (default engine settings, {} MiB budget); raw floors: \
         each commit written to the OS, fsync every {:?} when dirty; SQLite: WAL, synchronous=NORMAL",
        contenders::GROUP_INTERVAL,
        contenders::budget() >> 20,
        contenders::GROUP_INTERVAL
    );
    println!();
    let mut all = Vec::new();
    for kind in Kind::ALL.into_iter().filter(|k| cfg.only.contains(k)) {
        eprintln!("running {} ...", kind.name());
        all.extend(run_contender(kind, cfg, wl)?);
    }
    report(&all);
    verify_same_work(&all)?;
    if !cfg.skip_big {
        footprint(cfg)?;
    }
    println!("\nload average at the end: {}", loadavg());
    Ok(())
}

/// Every contender stores the same bytes: the text the raw floors and SQLite
/// write is what tidelog stores for the `Value` it is given.
fn check_same_records(wl: Workload) {
    let mut text = String::new();
    for i in (0..2_000).chain([123_456, 999_999, 1_999_999]) {
        wl.text(i, &mut text);
        let stored = serde_json::to_string(&wl.value(i)).expect("serialize");
        assert_eq!(text, stored, "record {i} differs between contenders");
    }
}

fn run_contender(kind: Kind, cfg: &Config, wl: Workload) -> Res<Vec<Measured>> {
    let dir = tempfile::tempdir()?;
    let mut c = kind.open(dir.path(), wl)?;
    let n = cfg.n;
    let mut out = Vec::new();
    let mut measure = |op, ops, records, check, t: Instant| {
        out.push(Measured {
            kind,
            op,
            ops,
            records,
            secs: t.elapsed().as_secs_f64(),
            check,
        })
    };

    let t = Instant::now();
    for i in 0..n {
        c.write_one(i)?;
    }
    measure(Op::Single, n, n, 0, t);

    let t = Instant::now();
    let (mut start, mut txs) = (n, 0);
    while start < 2 * n {
        let end = (start + TX).min(2 * n);
        c.write_many(start..end)?;
        (start, txs) = (end, txs + 1);
    }
    measure(Op::Tx, txs, n, 0, t);

    // Warm-up, the same for everyone, not measured.
    let mut rng = SplitMix(7);
    for _ in 0..cfg.gets / 10 {
        black_box(c.get(rng.below(2 * n))?);
    }
    let mut rng = SplitMix(42);
    let mut bytes = 0;
    let t = Instant::now();
    for _ in 0..cfg.gets {
        bytes += c.get(black_box(rng.below(2 * n)))? as u64;
    }
    measure(Op::Get, cfg.gets, cfg.gets, bytes, t);

    let mut rng = SplitMix(99);
    let mut found = 0;
    let t = Instant::now();
    for _ in 0..cfg.finds {
        found += c.find(black_box(rng.below(wl.groups)))? as u64;
    }
    measure(Op::Find, cfg.finds, found, found, t);
    c.close()?;
    drop(dir);
    Ok(out)
}

fn find(all: &[Measured], kind: Kind, op: Op) -> Option<&Measured> {
    all.iter().find(|m| m.kind == kind && m.op == op)
}

fn ratio(m: &Measured, other: Option<&Measured>) -> Option<f64> {
    other.map(|o| m.records_per_sec() / o.records_per_sec())
}

fn report(all: &[Measured]) {
    println!(
        "{:<18} {:<26} {:>9} {:>8} {:>12} {:>12} {:>9} {:>9}",
        "contender", "operation", "ops", "seconds", "ops/s", "records/s", "vs floor", "vs SQLite"
    );
    let fmt_ratio = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}x"));
    for op in [Op::Single, Op::Tx, Op::Get, Op::Find] {
        for m in all.iter().filter(|m| m.op == op) {
            let (vs_floor, vs_sqlite) = match m.kind.floor() {
                Some(floor) => (
                    ratio(m, find(all, floor, op)),
                    ratio(m, find(all, Kind::Sqlite, op)),
                ),
                None => (None, None),
            };
            println!(
                "{:<18} {:<26} {:>9} {:>8.2} {:>12} {:>12} {:>9} {:>9}",
                m.kind.name(),
                op.label(m.kind),
                m.ops,
                m.secs,
                thousands(m.ops as f64 / m.secs),
                thousands(m.records_per_sec()),
                fmt_ratio(vs_floor),
                fmt_ratio(vs_sqlite),
            );
        }
        println!();
    }
    let target = |what: &str, value: Option<f64>, goal: f64| match value {
        Some(v) => println!(
            "TARGET {what}: {v:.2}x (target >= {goal:.2}x) -> {}",
            if v >= goal { "PASS" } else { "MISS" }
        ),
        None => println!("TARGET {what}: not measured in this run"),
    };
    let up = find(all, Kind::TidelogFjall, Op::Single);
    let get = find(all, Kind::TidelogFjall, Op::Get);
    let vs = |m: Option<&Measured>, k: Kind, op: Op| m.and_then(|m| ratio(m, find(all, k, op)));
    target(
        "tidelog-fjall single-record upserts vs raw-fjall floor",
        vs(up, Kind::RawFjall, Op::Single),
        0.75,
    );
    target(
        "tidelog-fjall single-record upserts vs SQLite",
        vs(up, Kind::Sqlite, Op::Single),
        2.0,
    );
    target(
        "tidelog-fjall point gets vs raw-fjall gets",
        vs(get, Kind::RawFjall, Op::Get),
        0.80,
    );
}

fn verify_same_work(all: &[Measured]) -> Res<()> {
    for op in [Op::Get, Op::Find] {
        let checks: Vec<(Kind, u64)> = all
            .iter()
            .filter(|m| m.op == op)
            .map(|m| (m.kind, m.check))
            .collect();
        if checks.windows(2).any(|w| w[0].1 != w[1].1) {
            return Err(
                format!("contenders returned different results for {op:?}: {checks:?}").into(),
            );
        }
    }
    Ok(())
}

fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// What one footprint child measured.
struct Footprint {
    kind: Kind,
    n: f64,
    write_secs: f64,
    disk: f64,
    table: f64,
    hwm_kib: f64,
    device: f64,
    wchar: f64,
    gets_per_sec: f64,
    /// Read system calls per get on the reading thread.
    reads_per_get: f64,
    finds_per_sec: f64,
}

impl Footprint {
    fn per_record(&self, bytes: f64) -> f64 {
        bytes / self.n
    }
    fn writes_per_sec(&self) -> f64 {
        self.n / self.write_secs
    }
}

/// Disk, device writes, memory and reads after `big_n` single-record
/// writes, one child process per contender so each peak RSS and each I/O
/// counter is its own.
fn footprint(cfg: &Config) -> Res<()> {
    println!(
        "\nfootprint after {} single-record writes with one index, memory budget {} MiB for \
         every contender (SQLite: cache_size), each contender in its own process.\n\
         rows+idx = records and index alone (tidelog: their table files after a checkpoint); \
         all = data directory after close (tidelog: with log and journal); device = write_bytes \
         of /proc/self/io at close (pages sent towards the device); to OS = wchar; \
         gets and finds on the grown store, random keys; rd/get = read system calls per get \
         on the reading thread (blocks or pages that missed the contender's own cache)",
        cfg.big_n,
        contenders::budget() >> 20
    );
    println!(
        "{:<14} {:>10} {:>10} {:>9} {:>10} {:>10} {:>9} {:>10} {:>7} {:>12}",
        "contender",
        "writes/s",
        "B/rec r+i",
        "B/rec all",
        "dev B/rec",
        "OS B/rec",
        "peak MiB",
        "gets/s",
        "rd/get",
        "find rec/s"
    );
    let exe = std::env::current_exe()?;
    let mut all = Vec::new();
    for kind in BIG.into_iter().filter(|k| cfg.only.contains(k)) {
        eprintln!("footprint: {} x {} ...", kind.name(), cfg.big_n);
        let out = Command::new(&exe)
            .args([CHILD_FLAG, kind.name(), &cfg.big_n.to_string()])
            .output()?;
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(line) = stdout
            .lines()
            .find_map(|l| l.strip_prefix("TIDELOG-CHILD "))
        else {
            println!("{:<14} failed ({})", kind.name(), out.status);
            continue;
        };
        let f: Vec<f64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let [write_secs, disk, table, hwm_kib, device, wchar, gets_per_sec, reads_per_get, finds_per_sec] =
            f[..]
        else {
            return Err(format!("bad child output: {line}").into());
        };
        let m = Footprint {
            kind,
            n: cfg.big_n as f64,
            write_secs,
            disk,
            table,
            hwm_kib,
            device,
            wchar,
            gets_per_sec,
            reads_per_get,
            finds_per_sec,
        };
        println!(
            "{:<14} {:>10} {:>10.0} {:>9.0} {:>10.0} {:>10.0} {:>9.1} {:>10} {:>7.2} {:>12}",
            kind.name(),
            thousands(m.writes_per_sec()),
            m.per_record(m.table),
            m.per_record(m.disk),
            m.per_record(m.device),
            m.per_record(m.wchar),
            m.hwm_kib / 1024.0,
            thousands(m.gets_per_sec),
            m.reads_per_get,
            // fjall alone holds no index.
            if kind == Kind::FjallAlone {
                "-".to_string()
            } else {
                thousands(m.finds_per_sec)
            },
        );
        all.push(m);
    }
    footprint_targets(&all);
    Ok(())
}

/// The targets for tidelog-fjall against SQLite in this run.
fn footprint_targets(all: &[Footprint]) {
    let by = |k: Kind| all.iter().find(|m| m.kind == k);
    let (Some(t), Some(s)) = (by(Kind::TidelogFjall), by(Kind::Sqlite)) else {
        println!("TARGET footprint: needs tidelog-fjall and sqlite in the same run");
        return;
    };
    let at_least = |what: &str, r: f64, goal: f64| {
        let verdict = if r >= goal { "PASS" } else { "MISS" };
        println!("TARGET {what}: {r:.2}x SQLite (target >= {goal:.2}x) -> {verdict}");
    };
    let at_most = |what: &str, r: f64, goal: f64| {
        let verdict = if r <= goal { "PASS" } else { "MISS" };
        println!("TARGET {what}: {r:.2}x SQLite (target <= {goal:.2}x) -> {verdict}");
    };
    at_least("point gets/s", t.gets_per_sec / s.gets_per_sec, 1.5);
    if let Some(f) = by(Kind::FjallAlone) {
        println!(
            "ENGINE point gets (fjall alone on the same rows, tidelog's record settings, the \
             whole budget as its cache): {}/s = {:.2}x SQLite; tidelog-fjall reads at {:.2}x of it",
            thousands(f.gets_per_sec),
            f.gets_per_sec / s.gets_per_sec,
            t.gets_per_sec / f.gets_per_sec
        );
    }
    at_least(
        "index find records/s",
        t.finds_per_sec / s.finds_per_sec,
        1.0,
    );
    at_most("disk bytes/record, rows+index", t.table / s.disk, 1.2);
    at_most("disk bytes/record, all (with log)", t.disk / s.disk, 2.0);
    at_most("device bytes written/record", t.device / s.device, 1.0);
    at_least(
        "single-record writes/s",
        t.writes_per_sec() / s.writes_per_sec(),
        2.0,
    );
    let rss = t.hwm_kib / 1024.0;
    let verdict = if rss < 30.0 { "PASS" } else { "MISS" };
    println!(
        "TARGET peak RSS: {rss:.1} MiB (SQLite {:.1} MiB; target < 30 MiB at the default) -> {verdict}",
        s.hwm_kib / 1024.0
    );
}

fn footprint_child(kind: Kind, n: u64) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let wl = Workload::new(n);
    let mut c = kind.open(dir.path(), wl)?;
    let t = Instant::now();
    for i in 0..n {
        c.write_one(i)?;
    }
    let write_secs = t.elapsed().as_secs_f64();
    c.before_reads()?;
    let gets = n.min(200_000);
    let mut rng = SplitMix(7);
    for _ in 0..gets / 10 {
        black_box(c.get(rng.below(n))?);
    }
    let mut rng = SplitMix(42);
    let reads = thread_read_calls();
    let t = Instant::now();
    for _ in 0..gets {
        black_box(c.get(black_box(rng.below(n)))?);
    }
    let gets_per_sec = gets as f64 / t.elapsed().as_secs_f64();
    let reads_per_get = (thread_read_calls() - reads) as f64 / gets as f64;
    let finds = (n / 50).clamp(1_000, 20_000);
    let mut rng = SplitMix(99);
    let mut found = 0;
    let t = Instant::now();
    for _ in 0..finds {
        found += c.find(black_box(rng.below(wl.groups)))?;
    }
    let finds_per_sec = found as f64 / t.elapsed().as_secs_f64();
    let table = c.table_bytes()?;
    c.close()?;
    let disk = dir_bytes(dir.path());
    println!(
        "TIDELOG-CHILD {write_secs} {disk} {} {} {} {} {gets_per_sec} {reads_per_get} {finds_per_sec}",
        table.unwrap_or(disk),
        proc_status_kib("VmHWM"),
        proc_io("write_bytes"),
        proc_io("wchar"),
    );
    Ok(())
}
