//! A stream of 50,000 single-record transactions from an in-process edge to
//! a `tidelog serve` cloud over mutual TLS on 127.0.0.1, while the cloud is
//! SIGKILLed and restarted, stopped cleanly and restarted, and the edge is
//! closed and reopened. Afterwards the cloud holds exactly the edge's
//! records, every edge transaction was applied once, and the two-table
//! marker transactions were never split, not even at a crash point.

mod cli_common;
mod repl_common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use cli_common::*;
use repl_common::{fast, table_state, wait_until};
use serde_json::json;
use tidelog::*;

const TOTAL: u64 = 50_000;
/// Every this many transactions, one more writes `pair_a` and `pair_b`.
const MARKER_EVERY: u64 = 250;
const T: Duration = Duration::from_secs(60);

/// Acknowledged entries stay in the log, so it can be compared whole.
fn keep_log(o: OpenOptions) -> OpenOptions {
    o.retention(Retention {
        log_min_age: Duration::from_secs(3600),
        log_max_bytes: 4 << 30,
        ..Retention::default()
    })
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"
node_name = "cloud"
data_dir = "cloud-data"
listen = "127.0.0.1:0"
status_interval_secs = 2
[tls]
cert = "pki/cloud.pem"
key = "pki/cloud.key"
ca = "pki/ca.pem"
{FAST_TIMERS}
# Keep the whole log, so the test can check every transaction arrived once.
[retention]
log_min_age_secs = 3600
log_max_mib = 4096
[[tables]]
name = "events"
# pair_a and pair_b are not listed: the cloud creates them when the edge's
# first marker arrives.
[[peers]]
name = "edge-1"
tables = [
  {{ table = "events", subscribe = true }},
  {{ table = "pair_a", subscribe = true }},
  {{ table = "pair_b", subscribe = true }},
]
"#
    );
    let path = dir.join("cloud.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn open_edge(dir: &Path, addr: &str) -> Database {
    let db = Database::open(dir.join("edge-1"), keep_log(OpenOptions::new("edge-1"))).unwrap();
    for t in ["events", "pair_a", "pair_b"] {
        db.ensure_table(t, TableOptions::default()).unwrap();
    }
    let pki = dir.join("pki");
    db.start_replication(fast(ReplicationOptions::mutual_tls(
        pki.join("edge-1.pem"),
        pki.join("edge-1.key"),
        pki.join("ca.pem"),
    )))
    .unwrap();
    db.add_peer(
        PeerConfig::new("cloud")
            .address(addr)
            .table(TableFlow::publish("events"))
            .table(TableFlow::publish("pair_a"))
            .table(TableFlow::publish("pair_b")),
    )
    .unwrap();
    db
}

/// Edge-origin transactions in the cloud's log: stamp -> tables written.
/// Panics if one was applied twice.
fn applied_from(cloud: &Database, edge_id: u64) -> HashMap<Stamp, Vec<String>> {
    let mut out = HashMap::new();
    for e in cloud.read_log(1, usize::MAX).unwrap() {
        if e.origin() == edge_id {
            let tables = e.writes.iter().map(|w| w.table.clone()).collect();
            assert!(
                out.insert(e.stamp, tables).is_none(),
                "edge transaction {:?} applied twice (cloud seq {})",
                e.stamp,
                e.seq
            );
        }
    }
    out
}

/// The two marker tables agree: same keys with the same stamps (one
/// transaction, one stamp).
fn pairs_agree(db: &Database) -> usize {
    let keys = |t: &str| -> Vec<(Key, Stamp)> {
        match db.scan(t, &ScanOptions::default()) {
            Ok(rs) => rs.iter().map(|r| (r.key().clone(), r.stamp())).collect(),
            Err(Error::TableNotFound(_)) => vec![],
            Err(e) => panic!("{e}"),
        }
    };
    let (a, b) = (keys("pair_a"), keys("pair_b"));
    assert_eq!(a, b, "a marker transaction was split");
    a.len()
}

/// With serve stopped (killed or not), opens its data directory and checks
/// what a stop at any instant must leave: no marker split. Returns the
/// cloud's log length as a progress measure. (Duplicates are looked for once
/// at the end: the log keeps every applied transaction, so one applied twice
/// around any crash is still there to find.)
fn check_cloud_at_rest(dir: &Path, when: &str) -> u64 {
    let t = Instant::now();
    let cloud =
        Database::open(dir.join("cloud-data"), keep_log(OpenOptions::new("cloud"))).unwrap();
    let markers = pairs_agree(&cloud);
    let last = cloud.log_bounds().unwrap().last;
    cloud.close().unwrap();
    eprintln!(
        "{when}: cloud log at {last}, {markers} markers, all whole (checked in {:?})",
        t.elapsed()
    );
    last
}

#[test]
fn stream_survives_sigkill_and_restarts_of_either_side_exactly_once() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_certs(dir, &["cloud", "edge-1"]);
    let config = write_config(dir);
    let mut serve = Serve::start(&config);
    let addr = serve.ready();
    set_listen(&config, &addr); // restarts must come back where the edge dials

    let mut edge = open_edge(dir, &addr);
    let edge_id = edge.node_id();
    // The initial sync moves rows, not transactions: start the stream only
    // once every table streams, so each transaction travels whole.
    wait_until("edge streaming to the cloud", T, || {
        let s = edge.peer_status("cloud").unwrap();
        s.connected && s.tables.iter().all(|t| t.outbound == "streaming")
    });

    // Waits until the (re)started cloud applies edge transactions again, so
    // the next kill lands in the middle of the stream, not in a quiet link.
    // Waits until the cloud acknowledged everything the edge has written
    // so far. (An ack merely moving forward is not enough: a restarted
    // cloud first acknowledges where it already was, which the edge may
    // not have heard before the previous cloud died.)
    let streaming_again = |edge: &Database| {
        let t = Instant::now();
        let target = edge.log_bounds().unwrap().last;
        wait_until("the cloud acknowledging new writes", T, || {
            edge.peer_status("cloud").unwrap().acked_seq >= target
        });
        eprintln!("cloud caught up after {:?}", t.elapsed());
    };
    let mut serve = Some(serve);
    let mut cloud_log_seen = 0;
    let mut txns = 0u64;
    for i in 0..TOTAL {
        if i % 10 == 9 {
            // Deletes too, so tombstones have to travel.
            edge.delete("events", (i - 5) as i64).unwrap();
        } else {
            edge.upsert("events", json!({"id": i, "v": i})).unwrap();
        }
        txns += 1;
        if i % MARKER_EVERY == 0 {
            let mut tx = edge.transaction();
            tx.upsert("pair_a", json!({"id": i})).unwrap();
            tx.upsert("pair_b", json!({"id": i, "of": "pair"})).unwrap();
            tx.commit().unwrap();
            txns += 1;
        }
        if i % 5000 == 0 {
            eprintln!("{i} at {:?}", started.elapsed());
        }
        // The interruptions come early: in a debug build, opening a data
        // directory costs time in proportion to its journal, and every
        // restart and every check opens one.
        match i {
            // SIGKILL mid-stream, check what it left, and restart after the
            // edge queued some more (or at once).
            3_000 | 12_000 | 24_000 => {
                streaming_again(&edge);
                serve.take().unwrap().kill();
                let n = check_cloud_at_rest(dir, &format!("after SIGKILL at {i}"));
                assert!(n > cloud_log_seen, "the cloud made no progress before {i}");
                cloud_log_seen = n;
            }
            // A clean stop.
            18_000 => {
                streaming_again(&edge);
                let (status, log) = serve.take().unwrap().terminate();
                assert_eq!(status.code(), Some(0), "{log}");
                cloud_log_seen = check_cloud_at_rest(dir, "after SIGTERM at 18000");
            }
            4_000 | 12_001 | 19_000 | 25_000 => {
                let t = Instant::now();
                let mut s = Serve::start(&config);
                assert_eq!(s.ready(), addr);
                eprintln!("serve restarted in {:?}", t.elapsed());
                serve = Some(s);
            }
            // The edge restarts while the cloud is up and receiving.
            8_000 => {
                streaming_again(&edge);
                let t = Instant::now();
                edge.close().unwrap();
                edge = open_edge(dir, &addr);
                eprintln!("edge reopened in {:?}", t.elapsed());
            }
            _ => {}
        }
    }
    let written = started.elapsed();
    let last = edge.log_bounds().unwrap().last;
    edge.wait_for_ack("cloud", last, T).unwrap();
    let caught_up = started.elapsed();
    let (status, log) = serve.take().unwrap().terminate();
    assert_eq!(status.code(), Some(0), "{log}");

    let verify = Instant::now();
    // The cloud holds exactly the edge's records...
    let cloud =
        Database::open(dir.join("cloud-data"), keep_log(OpenOptions::new("cloud"))).unwrap();
    eprintln!("cloud opened in {:?}", verify.elapsed());
    for t in ["events", "pair_a", "pair_b"] {
        assert_eq!(table_state(&cloud, t), table_state(&edge, t), "table {t}");
    }
    eprintln!("tables compared at {:?}", verify.elapsed());
    // Every tenth id is never written and every tenth deletes an earlier one.
    assert_eq!(cloud.count("events").unwrap(), TOTAL - 2 * TOTAL / 10);
    assert_eq!(pairs_agree(&cloud) as u64, TOTAL / MARKER_EVERY);
    // ...through each edge transaction applied exactly once and whole.
    let applied = applied_from(&cloud, edge_id);
    let local: HashMap<Stamp, Vec<String>> = edge
        .read_log(1, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.origin() == edge_id)
        .map(|e| (e.stamp, e.writes.iter().map(|w| w.table.clone()).collect()))
        .collect();
    assert_eq!(local.len() as u64, txns);
    assert_eq!(applied.len(), local.len(), "transactions missing or extra");
    assert!(applied == local, "a transaction arrived altered");
    let distinct: HashSet<_> = applied.keys().collect();
    assert_eq!(distinct.len(), applied.len());
    cloud.close().unwrap();
    edge.close().unwrap();
    eprintln!(
        "{txns} transactions written in {written:?}, cloud caught up at {caught_up:?}, verified in {:?}, test took {:?}",
        verify.elapsed(),
        started.elapsed()
    );
}
