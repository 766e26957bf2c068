//! A real `tidelog serve` hub with a `[[sinks]]` JetStream sink for
//! `alerts`: the NATS server is down when the hub starts (the hub starts
//! anyway and the sink retries), an edge writes alerts over mutual TLS,
//! the server comes up, and the stream ends with every alert's final state
//! (through the consumer's stamp guard), no message twice; `tidelog status
//! --json` shows the sink.
#![cfg(all(feature = "jetstream", feature = "cli"))]

mod cli_common;
mod nats_common;
mod repl_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cli_common::*;
use nats_common::sink::{duplicates, guarded_state, read_all, runtime};
use nats_common::NatsServer;
use repl_common::{fast, wait_until};
use serde_json::{json, Value};
use tidelog::*;

const T: Duration = Duration::from_secs(40);
const ALERTS: u64 = 600;

fn write_config(dir: &Path, nats_url: &str) -> PathBuf {
    let text = format!(
        r#"
node_name = "cloud"
data_dir = "cloud-data"
listen = "127.0.0.1:0"
status_interval_secs = 0
[tls]
cert = "pki/cloud.pem"
key = "pki/cloud.key"
ca = "pki/ca.pem"
{FAST_TIMERS}
[[tables]]
name = "alerts"
[[peers]]
name = "edge-1"
tables = [{{ table = "alerts", subscribe = true }}]
[[sinks]]
kind = "jetstream"
url = "{nats_url}"
stream = "fleet"
tables = ["alerts"]
timeout = "1s"
"#
    );
    let path = dir.join("cloud.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_hub_publishes_alerts_to_jetstream_once_the_server_is_up() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    nats.stop();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_certs(dir, &["cloud", "edge-1"]);
    let config = write_config(dir, &url);
    let mut serve = Serve::start(&config);
    let addr = serve.ready();
    set_listen(&config, &addr);

    let edge = Database::open(dir.join("edge-1"), OpenOptions::new("edge-1")).unwrap();
    let pki = dir.join("pki");
    edge.start_replication(fast(ReplicationOptions::mutual_tls(
        pki.join("edge-1.pem"),
        pki.join("edge-1.key"),
        pki.join("ca.pem"),
    )))
    .unwrap();
    edge.create_table("alerts", TableOptions::default())
        .unwrap();
    edge.add_peer(
        PeerConfig::new("cloud")
            .address(addr.as_str())
            .table(TableFlow::publish("alerts")),
    )
    .unwrap();
    for i in 0..ALERTS {
        // Every alert is written twice and every tenth deleted: the stream
        // must end at each key's last state.
        let id = format!("a-{}", i % (ALERTS / 2));
        edge.upsert("alerts", json!({"id": id, "level": i % 4, "n": i}))
            .unwrap();
        if i % 10 == 9 {
            edge.delete("alerts", id.as_str()).unwrap();
        }
    }
    let last = edge.log_bounds().unwrap().last;
    // Applied by the hub, but not acknowledged while the sink cannot
    // publish: an acknowledgement of a sunk table means "in the stream".
    wait_until(
        "the hub holding its acknowledgement for the sink",
        T,
        || {
            edge.peer_status("cloud")
                .unwrap()
                .last_error
                .is_some_and(|m| m.contains("holds its acknowledgement"))
        },
    );
    assert!(edge.peer_status("cloud").unwrap().acked_seq < last);
    // The server is still down: the sink reports it and its backlog (the
    // status is refreshed at each retry).
    let mut sink = Value::Null;
    wait_until(
        "the sink reporting the server down and its backlog",
        T,
        || {
            sink = status_json(dir, "cloud.toml")["sinks"][0].clone();
            sink["connected"] == false
                && sink["last_error"].is_string()
                && sink["backlog"].as_u64().unwrap_or(0) > 0
        },
    );

    nats.start_again();
    wait_until("the sink catching up", T, || {
        sink = status_json(dir, "cloud.toml")["sinks"][0].clone();
        sink["backlog"] == 0 && sink["resume_point"] == sink["log_head"]
    });
    assert_eq!(sink["name"], "jetstream:fleet");
    wait_until("the hub acknowledging every edge write", T, || {
        edge.peer_status("cloud").unwrap().acked_seq >= last
    });

    let got = runtime().block_on(read_all(&url, "fleet"));
    assert_eq!(duplicates(&got), 0, "a message twice");
    let state = guarded_state(&got);
    let mut want = BTreeMap::new();
    for r in edge.scan("alerts", &ScanOptions::default()).unwrap() {
        let rec: Value = serde_json::from_str(r.body_json()).unwrap();
        want.insert(r.key().clone(), (rec, r.stamp()));
    }
    let got_state: BTreeMap<Key, (Option<Value>, Stamp)> = state
        .into_iter()
        .map(|((table, key), (payload, stamp))| {
            assert_eq!(table, "alerts");
            let rec = payload.map(|p| serde_json::from_slice(&p).unwrap());
            (key, (rec, stamp))
        })
        .collect();
    // Every live alert at the edge's stamp; deleted ones as tombstones.
    let live: BTreeMap<_, _> = got_state
        .iter()
        .filter(|(_, (r, _))| r.is_some())
        .map(|(k, (r, s))| (k.clone(), (r.clone().unwrap(), *s)))
        .collect();
    assert_eq!(live, want);
    assert_eq!(got_state.len(), (ALERTS / 2) as usize);

    let (status, err) = serve.terminate();
    assert!(status.success(), "{err}");
    edge.close().unwrap();
}
