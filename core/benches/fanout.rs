//! Fan-out benchmark: one hub, N edges, mutual TLS on 127.0.0.1. The hub
//! publishes `thresholds` to every edge and subscribes to their `alerts`;
//! each edge raises one alert per second. Reports the hub's CPU time per
//! alert, and the log frames the hub sent per alert (each one an
//! acknowledgement the edge sends back), for each N.
//!
//! The hub runs in a process of its own (this binary, started again with
//! `TIDELOG_FANOUT_HUB` set), so its CPU time is read from
//! `/proc/PID/stat` (user + system, every thread: runtime, storage
//! engine, TLS) without the edges' work in it. The edges are full
//! databases in this process, one single-thread runtime each.
//!
//! Run: `cargo bench -p tidelog --bench fanout`. Environment:
//! `TIDELOG_BENCH_EDGES` (comma-separated, default `10,50,100`),
//! `TIDELOG_BENCH_SECS` (alert seconds per N, default 10). Asserts nothing
//! about timing; prints a PASS/MISS line for the target (hub CPU per alert
//! flat within 2x from the smallest N to the largest).

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tidelog::net::certs;
use tidelog::*;

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn options(pki: &Path, node: &str) -> ReplicationOptions {
    let f = certs::node_paths(pki, node);
    let mut o = ReplicationOptions::mutual_tls(f.cert_chain, f.key, certs::ca_paths(pki).0);
    o.worker_threads = if node == "hub" { 2 } else { 1 };
    o
}

/// The hub process: serves `n` edges until its stdin closes.
fn hub(pki: &Path, dir: &Path, n: usize) {
    // Hubs run `tidelog serve`, whose default profile is hub.
    let db = Database::open(dir, OpenOptions::new("hub").profile(Profile::Hub)).unwrap();
    for t in ["thresholds", "alerts"] {
        db.create_table(t, TableOptions::default()).unwrap();
    }
    db.start_replication(options(pki, "hub")).unwrap();
    let addr = db.listen("127.0.0.1:0").unwrap();
    for i in 0..n {
        db.add_peer(
            PeerConfig::new(format!("edge-{i}"))
                .table(TableFlow::publish("thresholds"))
                .table(TableFlow::subscribe("alerts")),
        )
        .unwrap();
    }
    println!("{addr}");
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    db.close().unwrap();
}

/// User + system CPU time of process `pid`, all threads.
fn cpu(pid: u32, tick: f64) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / tick)
}

fn clock_tick() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

struct Run {
    n: usize,
    alerts: u64,
    hub_cpu_per_alert: Duration,
    idle_cpu_per_sec: Duration,
    frames_per_alert: f64,
    edge_frames_per_alert: f64,
}

fn run(n: usize, secs: u64, tick: f64) -> Run {
    let pki = tempfile::tempdir().unwrap();
    let mut names = vec!["hub".to_string()];
    names.extend((0..n).map(|i| format!("edge-{i}")));
    certs::generate_dev_pki(pki.path(), "tidelog bench CA", &names).unwrap();
    let hub_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("TIDELOG_FANOUT_HUB", pki.path())
        .env("TIDELOG_FANOUT_HUB_DIR", hub_dir.path())
        .env("TIDELOG_FANOUT_HUB_N", n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().to_string();
    let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let edges: Vec<Database> = (0..n)
        .map(|i| {
            let name = format!("edge-{i}");
            let db = Database::open(dirs[i].path(), OpenOptions::new(&name)).unwrap();
            db.create_table("alerts", TableOptions::default()).unwrap();
            db.start_replication(options(pki.path(), &name)).unwrap();
            db.add_peer(
                PeerConfig::new("hub")
                    .address(addr.clone())
                    .table(TableFlow::subscribe("thresholds"))
                    .table(TableFlow::publish("alerts")),
            )
            .unwrap();
            db
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for e in &edges {
        loop {
            let s = e.peer_status("hub").unwrap();
            if s.connected
                && s.tables
                    .iter()
                    .all(|t| !t.subscribe || t.inbound == "streaming")
            {
                break;
            }
            assert!(Instant::now() < deadline, "an edge never connected: {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    // Idle: what N connected links cost with nothing moving.
    let c_idle = cpu(child.id(), tick);
    std::thread::sleep(Duration::from_secs(3));
    let idle_cpu_per_sec = (cpu(child.id(), tick) - c_idle) / 3;
    let activity = |e: &Database| e.link_activity_for_tests("hub").unwrap();
    let before: Vec<(u64, u64, u64)> = edges.iter().map(activity).collect();
    let c0 = cpu(child.id(), tick);
    let start = Instant::now();
    let mut last = vec![0u64; n];
    let step = Duration::from_secs(1) / n as u32;
    for k in 0..secs {
        for (i, e) in edges.iter().enumerate() {
            let at = start + Duration::from_secs(k) + step * i as u32;
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            last[i] = e
                .upsert(
                    "alerts",
                    json!({"id": format!("{i}-{k}"), "level": "high", "value": k}),
                )
                .unwrap()
                .seq;
        }
    }
    for (i, e) in edges.iter().enumerate() {
        e.wait_for_ack("hub", last[i], Duration::from_secs(60))
            .unwrap();
    }
    // Let the last acknowledgements and paced progress settle into the
    // measured window the same way for every N.
    std::thread::sleep(Duration::from_secs(1));
    let hub_cpu = cpu(child.id(), tick) - c0;
    let after: Vec<(u64, u64, u64)> = edges.iter().map(activity).collect();
    let alerts = n as u64 * secs;
    let frames_in: u64 = before.iter().zip(&after).map(|(b, a)| a.2 - b.2).sum();
    let frames_out: u64 = before.iter().zip(&after).map(|(b, a)| a.1 - b.1).sum();
    for e in &edges {
        e.close().unwrap();
    }
    drop(child.stdin.take());
    let _ = child.wait();
    Run {
        n,
        alerts,
        hub_cpu_per_alert: hub_cpu / alerts as u32,
        idle_cpu_per_sec,
        frames_per_alert: frames_in as f64 / alerts as f64,
        edge_frames_per_alert: frames_out as f64 / alerts as f64,
    }
}

fn main() {
    if let Ok(pki) = std::env::var("TIDELOG_FANOUT_HUB") {
        let dir = std::env::var("TIDELOG_FANOUT_HUB_DIR").unwrap();
        let n = std::env::var("TIDELOG_FANOUT_HUB_N")
            .unwrap()
            .parse()
            .unwrap();
        hub(Path::new(&pki), Path::new(&dir), n);
        return;
    }
    let ns = env_list("TIDELOG_BENCH_EDGES", "10,50,100");
    let secs = env_list("TIDELOG_BENCH_SECS", "10")
        .first()
        .copied()
        .unwrap_or(10) as u64;
    let tick = clock_tick();
    println!("fan-out: hub in its own process, N edges in this one, 1 alert/edge/s for {secs} s, mutual TLS on 127.0.0.1");
    println!(
        "{:>5} {:>7} {:>16} {:>16} {:>18} {:>18}",
        "N", "alerts", "hub CPU/alert", "hub idle CPU/s", "hub frames/alert", "edge frames/alert"
    );
    let mut runs = Vec::new();
    for n in ns {
        let r = run(n, secs, tick);
        println!(
            "{:>5} {:>7} {:>13.3} ms {:>13.3} ms {:>18.2} {:>18.2}",
            r.n,
            r.alerts,
            r.hub_cpu_per_alert.as_secs_f64() * 1e3,
            r.idle_cpu_per_sec.as_secs_f64() * 1e3,
            r.frames_per_alert,
            r.edge_frames_per_alert
        );
        runs.push(r);
    }
    if let (Some(a), Some(b)) = (runs.first(), runs.last()) {
        let ratio = b.hub_cpu_per_alert.as_secs_f64() / a.hub_cpu_per_alert.as_secs_f64().max(1e-9);
        println!(
            "hub CPU per alert, N={} vs N={}: {ratio:.2}x ({}; target: within 2x)",
            b.n,
            a.n,
            if ratio <= 2.0 { "PASS" } else { "MISS" }
        );
    }
}
