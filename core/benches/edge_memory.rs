//! Edge memory while it drains a hub, over mutual TLS on 127.0.0.1:
//! `cargo bench -p tidelog --bench edge_memory`.
//!
//! Two scenarios against one hub holding `TIDELOG_EDGE_N` records (default
//! 1,000,000) of the local benchmark's readings with one index:
//! - catch-up: edge-1 subscribed, went away, and the hub committed the N
//!   records as single-record transactions meanwhile; edge-1 comes back
//!   and drains them from the hub's log;
//! - initial sync: edge-2 subscribes to the N-row table for the first time
//!   and receives its state.
//!
//! Each edge runs in a child process of its own with the default settings
//! (`TIDELOG_EDGE_BUDGET_MIB` sets its memory budget instead), so its peak
//! RSS (VmHWM) is its own. Reported per scenario: the edge's peak RSS when
//! open and replicating but idle, its peak RSS by the end of the drain, and
//! the drain rate (records/s, from adding the hub as a peer to having
//! applied everything). It reports; it never asserts a timing.
//!
//! Environment: `TIDELOG_EDGE_N` records (default 1000000),
//! `TIDELOG_EDGE_BUDGET_MIB` the edge's memory budget (default: the
//! default), `TIDELOG_EDGE_HUB_BATCH` the hub's `batch_max_txns`,
//! `TIDELOG_EDGE_WRAP` a command to run each edge under (a
//! profiler such as `heaptrack -o /tmp/edge`).

#[allow(dead_code)]
#[path = "local/workload.rs"]
mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tidelog::net::certs;
use tidelog::*;
use workload::{proc_status_kib, utc_now, Workload};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const CHILD_FLAG: &str = "--tidelog-edge";
const TABLE: &str = "readings";
/// How long a drain may take before the run is called stalled.
const STALL: Duration = Duration::from_secs(900);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn repl_options(pki: &Path, node: &str) -> ReplicationOptions {
    let f = certs::node_paths(pki, node);
    ReplicationOptions::mutual_tls(f.cert_chain, f.key, certs::ca_paths(pki).0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo's bench discovery
    }
    let args: Vec<String> = std::env::args().collect();
    let res = match args.iter().position(|a| a == CHILD_FLAG) {
        Some(pos) => Child::parse(&args[pos + 1..]).and_then(|c| c.run()),
        None => hub(),
    };
    if let Err(e) = res {
        eprintln!("edge memory benchmark failed: {e}");
        std::process::exit(1);
    }
}

/// What an edge child does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Connect until the subscription is set up, then close.
    Connect,
    /// Drain until the hub's log sequence `target` is applied.
    CatchUp,
    /// Drain until the table's initial sync is done.
    Sync,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Connect => "connect",
            Mode::CatchUp => "catch-up",
            Mode::Sync => "sync",
        }
    }
}

struct Child {
    mode: Mode,
    node: String,
    dir: PathBuf,
    pki: PathBuf,
    addr: String,
    /// Hub log sequence to reach (catch-up), records to hold (both).
    target: u64,
    records: u64,
}

impl Child {
    fn args(&self) -> Vec<String> {
        vec![
            CHILD_FLAG.into(),
            self.mode.name().into(),
            self.node.clone(),
            self.dir.display().to_string(),
            self.pki.display().to_string(),
            self.addr.clone(),
            self.target.to_string(),
            self.records.to_string(),
        ]
    }

    fn parse(a: &[String]) -> Res<Child> {
        let usage = || {
            format!("usage: {CHILD_FLAG} connect|catch-up|sync NODE DIR PKI ADDR TARGET RECORDS")
        };
        let [mode, node, dir, pki, addr, target, records] = a else {
            return Err(usage().into());
        };
        let mode = [Mode::Connect, Mode::CatchUp, Mode::Sync]
            .into_iter()
            .find(|m| m.name() == mode)
            .ok_or_else(usage)?;
        Ok(Child {
            mode,
            node: node.clone(),
            dir: dir.into(),
            pki: pki.into(),
            addr: addr.clone(),
            target: target.parse()?,
            records: records.parse()?,
        })
    }

    fn run(&self) -> Res<()> {
        let mut opts = OpenOptions::new(&self.node);
        if let Some(mib) = std::env::var("TIDELOG_EDGE_BUDGET_MIB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            opts = opts.memory_budget(mib << 20);
        }
        let edge = Database::open(&self.dir, opts)?;
        edge.start_replication(repl_options(&self.pki, &self.node))?;
        let idle_hwm = proc_status_kib("VmHWM");
        let t = Instant::now();
        edge.add_peer(
            PeerConfig::new("hub")
                .address(&self.addr)
                .table(TableFlow::subscribe(TABLE)),
        )?;
        loop {
            let s = edge.peer_status("hub")?;
            let streaming = s
                .tables
                .iter()
                .any(|t| t.table == TABLE && t.inbound == "streaming");
            let done = match self.mode {
                Mode::Connect | Mode::Sync => streaming,
                Mode::CatchUp => streaming && s.received_seq >= self.target,
            };
            if done {
                break;
            }
            if t.elapsed() > STALL {
                return Err(format!("{} stalled: {s:?}", self.mode.name()).into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let secs = t.elapsed().as_secs_f64();
        // Before counting: a count reads the whole table, which is not
        // part of the drain.
        let hwm = proc_status_kib("VmHWM");
        let rss = proc_status_kib("VmRSS");
        let threads = proc_status_kib("Threads");
        let held = edge.count(TABLE)?;
        if held != self.records {
            return Err(format!(
                "{}: the edge holds {held} records, expected {}",
                self.mode.name(),
                self.records
            )
            .into());
        }
        edge.close()?;
        println!("TIDELOG-EDGE {secs} {idle_hwm} {hwm} {rss} {threads}");
        Ok(())
    }
}

/// Runs a child and returns its numbers: seconds, idle peak, end peak, end
/// RSS (KiB), threads.
fn spawn(child: &Child) -> Res<[f64; 5]> {
    let exe = std::env::current_exe()?;
    // A profiler to run the edge under, e.g. `heaptrack -o /tmp/edge`.
    let wrap = std::env::var("TIDELOG_EDGE_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut cmd = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let out = cmd.args(child.args()).output()?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TIDELOG-EDGE "))
        .ok_or_else(|| format!("{} child failed ({})", child.mode.name(), out.status))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match f[..] {
        [a, b, c, d, e] => Ok([a, b, c, d, e]),
        _ => Err(format!("bad child output: {line}").into()),
    }
}

fn hub() -> Res<()> {
    let n = env_u64("TIDELOG_EDGE_N", 1_000_000).max(1);
    let pki = tempfile::tempdir()?;
    let nodes = ["hub", "edge-1", "edge-2"].map(String::from);
    certs::generate_dev_pki(pki.path(), "bench CA", &nodes)?;
    let (dh, d1, d2) = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let retention = Retention {
        log_max_bytes: 4 << 30,
        ..Retention::default()
    };
    // Hubs run `tidelog serve`, whose default profile is hub.
    let hub_open = OpenOptions::new("hub").profile(Profile::Hub);
    let hub = Database::open(dh.path(), hub_open.retention(retention))?;
    hub.create_table(TABLE, TableOptions::default().index(workload::INDEXED))?;
    let mut hub_opts = repl_options(pki.path(), "hub");
    if let Some(b) = std::env::var("TIDELOG_EDGE_HUB_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        hub_opts.batch_max_txns = b;
    }
    hub.start_replication(hub_opts)?;
    let addr = hub.listen("127.0.0.1:0")?.to_string();
    for edge in ["edge-1", "edge-2"] {
        hub.add_peer(PeerConfig::new(edge).table(TableFlow::publish(TABLE)))?;
    }
    let child = |mode, node: &str, dir: &Path, target, records| Child {
        mode,
        node: node.into(),
        dir: dir.into(),
        pki: pki.path().into(),
        addr: addr.clone(),
        target,
        records,
    };
    println!("tidelog edge memory benchmark, {}", utc_now());
    println!(
        "machine: {} CPUs; N = {n}; edge budget: {}",
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        std::env::var("TIDELOG_EDGE_BUDGET_MIB").map_or("default".into(), |m| format!("{m} MiB"))
    );
    // edge-1 subscribes while the table is empty, then goes away.
    spawn(&child(Mode::Connect, "edge-1", d1.path(), 0, 0))?;

    let wl = Workload::new(n);
    let t = Instant::now();
    for i in 0..n {
        hub.upsert(TABLE, wl.value(i))?;
    }
    let write_s = t.elapsed().as_secs_f64();
    hub.flush()?;
    let target = hub.log_bounds()?.last;
    println!(
        "hub: {n} single-record commits at {:.0}/s while the edges were away",
        n as f64 / write_s
    );
    println!(
        "\n{:<14} {:>10} {:>12} {:>16} {:>16} {:>14} {:>8}",
        "scenario",
        "seconds",
        "records/s",
        "idle peak MiB",
        "peak RSS MiB",
        "end RSS MiB",
        "threads"
    );
    let runs = [
        (
            "catch-up",
            child(Mode::CatchUp, "edge-1", d1.path(), target, n),
        ),
        ("initial sync", child(Mode::Sync, "edge-2", d2.path(), 0, n)),
    ];
    for (name, c) in runs {
        eprintln!("running {name} ...");
        let [secs, idle, hwm, rss, threads] = spawn(&c)?;
        let mib = |kib: f64| kib / 1024.0;
        println!(
            "{name:<14} {secs:>10.2} {:>12.0} {:>16.1} {:>16.1} {:>14.1} {threads:>8}",
            n as f64 / secs,
            mib(idle),
            mib(hwm),
            mib(rss)
        );
        println!(
            "TARGET {name}: peak RSS < 30 MiB: {} ; drain >= 100,000 records/s: {}",
            if mib(hwm) < 30.0 { "PASS" } else { "MISS" },
            if n as f64 / secs >= 100_000.0 {
                "PASS"
            } else {
                "MISS"
            }
        );
    }
    hub.close()?;
    Ok(())
}
