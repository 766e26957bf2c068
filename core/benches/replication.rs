//! Replication benchmark, A -> B over TLS on 127.0.0.1 (and the same over
//! `insecure` plaintext to show what TLS costs), ~100-byte records:
//!
//! - throughput: records/s from the first commit on A until B has all N
//!   records, as single-record transactions and as 1000-record transactions;
//! - lag: commit on A to visible on B (B's change listener fires) at a
//!   steady 1,000 transactions/s, p50 and p99.
//!
//! Run: `cargo bench -p tidelog --bench replication`. Environment:
//! `TIDELOG_BENCH_N` (records, default 200000), `TIDELOG_BENCH_LAG_SECS`
//! (default 5). Reports PASS/MISS against the targets; asserts
//! nothing about timing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;
use tidelog::net::certs;
use tidelog::*;

const TABLE: &str = "bench";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `{"id":123456,"payload":"xx..."}`: about 100 bytes of JSON.
fn record(i: u64) -> serde_json::Value {
    json!({"id": i, "payload": "p".repeat(78)})
}

struct Pair {
    a: Database,
    b: Database,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = self.b.close();
        let _ = self.a.close();
    }
}

/// A publishes `bench` to B; B dials A and subscribes. Returns once the
/// (empty) initial sync is done and B is streaming.
fn pair(pki: Option<&std::path::Path>) -> Pair {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Database::open(dirs.0.path(), OpenOptions::new("a")).unwrap();
    let b = Database::open(dirs.1.path(), OpenOptions::new("b")).unwrap();
    let opts = |node: &str| match pki {
        Some(dir) => {
            let f = certs::node_paths(dir, node);
            ReplicationOptions::mutual_tls(f.cert_chain, f.key, certs::ca_paths(dir).0)
        }
        None => ReplicationOptions::insecure(),
    };
    for db in [&a, &b] {
        db.create_table(TABLE, TableOptions::default()).unwrap();
    }
    a.start_replication(opts("a")).unwrap();
    b.start_replication(opts("b")).unwrap();
    let addr = a.listen("127.0.0.1:0").unwrap();
    a.add_peer(PeerConfig::new("b").table(TableFlow::publish(TABLE)))
        .unwrap();
    b.add_peer(
        PeerConfig::new("a")
            .address(addr.to_string())
            .table(TableFlow::subscribe(TABLE)),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = b.peer_status("a").unwrap();
        if s.connected && s.tables.iter().all(|t| t.inbound == "streaming") {
            break;
        }
        assert!(Instant::now() < deadline, "link never came up: {s:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    Pair { a, b, _dirs: dirs }
}

struct Throughput {
    /// Records/s from the first commit on A until B had them all.
    replicated: f64,
    /// Records/s A alone managed to commit (an upper bound for the above).
    committed: f64,
}

fn throughput(pki: Option<&std::path::Path>, n: u64, per_txn: u64) -> Throughput {
    let p = pair(pki);
    let arrived = Arc::new(AtomicU64::new(0));
    let seen = arrived.clone();
    p.b.on_change(TABLE, move |ev| {
        seen.fetch_add(ev.changes.len() as u64, Ordering::Relaxed);
    })
    .unwrap();
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let mut tx = p.a.transaction();
        for _ in 0..per_txn.min(n - i) {
            tx.upsert(TABLE, record(i)).unwrap();
            i += 1;
        }
        tx.commit().unwrap();
    }
    let committed = start.elapsed();
    let deadline = start + Duration::from_secs(600);
    while arrived.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "B never received everything");
        std::thread::sleep(Duration::from_micros(200));
    }
    let total = start.elapsed();
    assert_eq!(p.b.count(TABLE).unwrap(), n);
    Throughput {
        replicated: n as f64 / total.as_secs_f64(),
        committed: n as f64 / committed.as_secs_f64(),
    }
}

struct Lag {
    p50: Duration,
    p99: Duration,
    max: Duration,
    samples: usize,
}

/// One single-record transaction per millisecond on A; B's listener notes
/// when each becomes visible. The clock starts just before A's commit, so
/// A's own commit time counts against the lag.
fn lag(pki: Option<&std::path::Path>, secs: u64) -> Lag {
    let p = pair(pki);
    let count = secs * 1000;
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..count).map(|_| AtomicU64::new(0)).collect());
    let lags = Arc::new(Mutex::new(Vec::with_capacity(count as usize)));
    let (s2, l2) = (sent.clone(), lags.clone());
    p.b.on_change(TABLE, move |ev| {
        let now = base.elapsed().as_nanos() as u64;
        for c in &ev.changes {
            if let Key::Int(i) = c.key {
                let t0 = s2[i as usize].load(Ordering::Relaxed);
                l2.lock().push((i, now.saturating_sub(t0)));
            }
        }
    })
    .unwrap();
    for i in 0..count {
        let due = base + Duration::from_millis(i);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        sent[i as usize].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
        p.a.upsert(TABLE, record(i)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while lags.lock().len() < count as usize {
        assert!(Instant::now() < deadline, "B never received everything");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The first half second warms caches and the link; not steady state.
    let mut v: Vec<u64> = lags
        .lock()
        .iter()
        .filter(|(i, _)| *i >= 500)
        .map(|(_, l)| *l)
        .collect();
    v.sort_unstable();
    let at = |q: f64| Duration::from_nanos(v[((v.len() - 1) as f64 * q) as usize]);
    Lag {
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
        samples: v.len(),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this harness has no options of its own.
    let n = env_u64("TIDELOG_BENCH_N", 200_000);
    let lag_secs = env_u64("TIDELOG_BENCH_LAG_SECS", 5).max(1);
    let pki = tempfile::tempdir().unwrap();
    certs::generate_dev_pki(pki.path(), "bench CA", &["a".into(), "b".into()]).unwrap();
    println!(
        "tidelog replication benchmark: {n} records of ~{} bytes, A -> B on 127.0.0.1, lag over {lag_secs} s at 1,000 txn/s",
        record(0).to_string().len()
    );
    let mut rows = Vec::new();
    for (mode, dir) in [("TLS", Some(pki.path())), ("insecure", None)] {
        let single = throughput(dir, n, 1);
        println!(
            "  [{mode}] single-record txns: {:>9.0} records/s replicated (A commits alone: {:.0}/s)",
            single.replicated, single.committed
        );
        let batched = throughput(dir, n, 1000);
        println!(
            "  [{mode}] 1000-record txns:   {:>9.0} records/s replicated (A commits alone: {:.0}/s)",
            batched.replicated, batched.committed
        );
        let l = lag(dir, lag_secs);
        println!(
            "  [{mode}] lag at 1,000 txn/s:  p50 {:?}  p99 {:?}  max {:?}  ({} samples)",
            l.p50, l.p99, l.max, l.samples
        );
        rows.push((mode, single, batched, l));
    }
    println!();
    println!(
        "{:<34} {:>14} {:>14} {:>14}  target (TLS)",
        "metric", "TLS", "insecure", "TLS cost"
    );
    let (t, p) = (&rows[0], &rows[1]);
    let pct = |tls: f64, plain: f64| format!("{:+.0}%", (tls / plain - 1.0) * 100.0);
    println!(
        "{:<34} {:>14.0} {:>14.0} {:>14}  >= 30,000/s   {}",
        "single-record txns, records/s",
        t.1.replicated,
        p.1.replicated,
        pct(t.1.replicated, p.1.replicated),
        verdict(t.1.replicated >= 30_000.0)
    );
    println!(
        "{:<34} {:>14.0} {:>14.0} {:>14}  >= 100,000/s  {}",
        "1000-record txns, records/s",
        t.2.replicated,
        p.2.replicated,
        pct(t.2.replicated, p.2.replicated),
        verdict(t.2.replicated >= 100_000.0)
    );
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
    println!(
        "{:<34} {:>14} {:>14} {:>14}  < 1 ms        {}",
        "lag p50 at 1,000 txn/s",
        ms(t.3.p50),
        ms(p.3.p50),
        "",
        verdict(t.3.p50 < Duration::from_millis(1))
    );
    println!(
        "{:<34} {:>14} {:>14} {:>14}  < 5 ms        {}",
        "lag p99 at 1,000 txn/s",
        ms(t.3.p99),
        ms(p.3.p99),
        "",
        verdict(t.3.p99 < Duration::from_millis(5))
    );
}
