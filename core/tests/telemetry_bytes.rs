//! Metered links, measured: the bytes a telemetry workload puts on the
//! wire from an edge to a `tidelog serve` hub, with frame compression off
//! (the whole-record encoding, the baseline) and on, in the same run, and
//! the CPU each side spent per update.
//!
//! The edge runs in this process and the hub is a real `tidelog serve`
//! child, so each side's CPU time is its own (the edge's includes writing
//! the updates locally, the same in both runs).
//!
//! Short form (CI): 100,000 updates to 10,000 keys. Long form (the issue's
//! figure, by hand): `TIDELOG_TELEMETRY_LONG=1 cargo test --release -p
//! tidelog --test telemetry_bytes -- --nocapture`: 1,000,000 updates to
//! 100,000 keys.
//!
//! It reports, it does not time: the only assertions are on bytes and on
//! every update arriving.

mod cli_common;
mod repl_common;

use std::path::Path;
use std::time::{Duration, Instant};

use cli_common::*;
use repl_common::fast;
use serde_json::json;
use tidelog::*;

fn hub_config(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"
node_name = "cloud"
data_dir = "cloud-data"
listen = "127.0.0.1:0"

[tls]
cert = "pki/cloud.pem"
key = "pki/cloud.key"
ca = "pki/ca.pem"

{FAST_TIMERS}
[[tables]]
name = "telemetry"

[[peers]]
name = "edge-1"
tables = [{{ table = "telemetry", subscribe = true }}]
"#
    );
    let path = dir.join("cloud.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// User plus system CPU time of a process, from /proc (clock ticks).
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf with a valid name has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Run {
    wire: u64,
    raw: u64,
    edge_cpu_us: f64,
    hub_cpu_us: f64,
    secs: f64,
}

fn run(compression: Compression, keys: u64, updates: u64) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = make_certs(dir, &["cloud", "edge-1"]);
    let mut serve = Serve::start(&hub_config(dir));
    let addr = serve.ready();
    let hub_pid = serve.pid().to_string();

    let edge = Database::open(dir.join("edge-1"), OpenOptions::new("edge-1")).unwrap();
    edge.create_table("telemetry", TableOptions::default())
        .unwrap();
    edge.start_replication(fast(ReplicationOptions::mutual_tls(
        pki.join("edge-1.pem"),
        pki.join("edge-1.key"),
        pki.join("ca.pem"),
    )))
    .unwrap();
    let mut peer = PeerConfig::new("cloud")
        .address(addr)
        .table(TableFlow::publish("telemetry"));
    peer.compression = Some(compression);
    edge.add_peer(peer).unwrap();

    let hub0 = cpu_ticks(&hub_pid);
    let edge0 = cpu_ticks("self");
    let started = Instant::now();
    let mut rng = Rng(0x7E1E_3E7E_0023_0001);
    let mut rows: Vec<serde_json::Value> = (0..keys)
        .map(|k| {
            json!({
                "id": k,
                "site": format!("plant-{}", k % 12),
                "sensor": format!("temp-{}", k % 97),
                "temperature": 20.0 + (k % 50) as f64 / 10.0,
                "humidity": 40 + k % 30,
                "pressure": 1000 + k % 40,
                "battery": 100 - k % 20,
                "rssi": -60 - (k % 30) as i64,
                "status": "ok",
                "firmware": "1.4.2",
            })
        })
        .collect();
    let fields = ["temperature", "humidity", "pressure", "battery", "rssi"];
    let mut last = 0;
    // The first version of every key, then updates of one or two
    // attributes each.
    for row in &rows {
        last = edge.upsert("telemetry", row.clone()).unwrap().seq;
    }
    for _ in keys..updates {
        let k = rng.below(keys) as usize;
        for _ in 0..1 + rng.below(2) {
            let f = fields[rng.below(fields.len() as u64) as usize];
            rows[k][f] = json!(rng.below(1000) as f64 / 10.0);
        }
        last = edge.upsert("telemetry", rows[k].clone()).unwrap().seq;
    }
    edge.wait_for_ack("cloud", last, Duration::from_secs(600))
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let tps = ticks_per_sec();
    let edge_cpu_us = (cpu_ticks("self") - edge0) as f64 / tps * 1e6 / updates as f64;
    let hub_cpu_us = (cpu_ticks(&hub_pid) - hub0) as f64 / tps * 1e6 / updates as f64;
    let t = edge.peer_status("cloud").unwrap().traffic;
    assert_eq!(
        t.compression.as_deref(),
        Some(match compression {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        })
    );
    edge.close().unwrap();
    serve.terminate();
    Run {
        wire: t.bytes_out_wire,
        raw: t.bytes_out_raw,
        edge_cpu_us,
        hub_cpu_us,
        secs,
    }
}

#[test]
fn telemetry_wire_bytes_with_and_without_compression() {
    let long = std::env::var_os("TIDELOG_TELEMETRY_LONG").is_some();
    let (keys, updates) = if long {
        (100_000, 1_000_000)
    } else {
        (10_000, 100_000)
    };
    let plain = run(Compression::None, keys, updates);
    let zstd = run(Compression::Zstd, keys, updates);
    assert_eq!(plain.wire, plain.raw, "a plain link sends what it encodes");
    let ratio = zstd.wire as f64 / plain.wire as f64;
    eprintln!(
        "telemetry {updates} updates to {keys} keys (10 attributes, 1-2 changed):\n\
         \x20 whole records, plain: {} bytes on the wire ({:.1} per update), {:.1} s; CPU per update: edge {:.1} us, hub {:.1} us\n\
         \x20 zstd frames:          {} bytes on the wire ({:.1} per update, {:.1} % of plain), {:.1} s; CPU per update: edge {:.1} us, hub {:.1} us",
        plain.wire,
        plain.wire as f64 / updates as f64,
        plain.secs,
        plain.edge_cpu_us,
        plain.hub_cpu_us,
        zstd.wire,
        zstd.wire as f64 / updates as f64,
        100.0 * ratio,
        zstd.secs,
        zstd.edge_cpu_us,
        zstd.hub_cpu_us,
    );
    // Batches are as large as the backlog allows, so the ratio depends on
    // how far the writer runs ahead; half is a floor any run clears.
    assert!(
        ratio < 0.5,
        "compression should at least halve the bytes: {ratio}"
    );
}
