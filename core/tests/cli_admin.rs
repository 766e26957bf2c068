//! A running `tidelog serve` administered through its admin socket
//! (`tidelog status`, `peers`, `forget`, `reload`) and watched through
//! `/metrics`, with the real binary; and clients that misbehave on the
//! socket.

mod cli_common;
mod repl_common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use cli_common::*;
use repl_common::{fast, wait_until};
use serde_json::{json, Value};
use tidelog::*;

const T: Duration = Duration::from_secs(30);

/// The hub's config: `[[peers]]` and the status interval as given.
fn write_hub_config(dir: &Path, peers: &str, status_interval_secs: u64) -> PathBuf {
    let text = format!(
        r#"
node_name = "cloud"
data_dir = "cloud-data"
listen = "127.0.0.1:0"
status_interval_secs = {status_interval_secs}

[tls]
cert = "pki/cloud.pem"
key = "pki/cloud.key"
ca = "pki/ca.pem"

[metrics]
listen = "127.0.0.1:0"

{FAST_TIMERS}
[[tables]]
name = "alerts"
{peers}
"#
    );
    let path = dir.join("cloud.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn peer(name: &str) -> String {
    format!("[[peers]]\nname = \"{name}\"\ntables = [{{ table = \"alerts\", subscribe = true }}]\n")
}

/// An in-process node dialing the hub at `addr` with the certificate in
/// `pki`, publishing `alerts`.
fn edge(dir: &Path, pki: &Path, name: &str, addr: &str) -> Database {
    let db = Database::open(dir.join(name), OpenOptions::new(name)).unwrap();
    let opts = ReplicationOptions::mutual_tls(
        pki.join(format!("{name}.pem")),
        pki.join(format!("{name}.key")),
        pki.join("ca.pem"),
    );
    db.start_replication(fast(opts)).unwrap();
    db.create_table("alerts", TableOptions::default()).unwrap();
    db.add_peer(
        PeerConfig::new("cloud")
            .address(addr)
            .table(TableFlow::publish("alerts")),
    )
    .unwrap();
    db
}

fn admin(dir: &Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--config", "cloud.toml"]);
    tidelog(dir, &all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// One plain HTTP/1.1 request; returns (status line, headers, body).
fn http_get(addr: &str, path: &str) -> (String, String, String) {
    http_request(addr, "GET", path)
}

fn http_request(addr: &str, method: &str, path: &str) -> (String, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_lowercase(), body.to_string())
}

/// The value of the sample `series` (name and labels, exactly) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn status_peers_metrics_reload_and_forget_through_the_admin_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = make_certs(dir, &["cloud", "edge-1", "edge-2"]);
    // Another fleet's CA, with a node that says it is edge-2.
    let out = tidelog(
        dir,
        &["certs", "--out", "other", "--ca-name", "other CA", "edge-2"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let config = write_hub_config(dir, &format!("{}{}", peer("edge-1"), peer("edge-2")), 0);
    let mut serve = Serve::start(&config);
    let addr = serve.ready();
    let line = serve.wait_line("metrics", T, |l| {
        l.starts_with("tidelog: metrics on http://")
    });
    let metrics = line["tidelog: metrics on http://".len()..]
        .trim_end_matches("/metrics")
        .to_string();

    let socket = dir.join("cloud-data/admin.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the admin socket is owner-only");

    let e1 = edge(dir, &pki, "edge-1", &addr);
    let a1 = e1.insert("alerts", json!({"id": "a1"})).unwrap();
    e1.wait_for_ack("cloud", a1.seq, T).unwrap();

    // status --json: the library's PeerStatus of every peer.
    let all: Value = serde_json::from_str(&ok(admin(dir, &["status", "--json"]))).unwrap();
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["edge-1", "edge-2"]);
    let one: Value =
        serde_json::from_str(&ok(admin(dir, &["status", "edge-1", "--json"]))).unwrap();
    assert_eq!(one["name"], "edge-1");
    assert_eq!(one["connected"], true, "{one}");
    assert!(one["received_seq"].as_u64().unwrap() >= a1.seq, "{one}");
    let human = ok(admin(dir, &["status", "edge-1"]));
    assert!(human.starts_with("peer `edge-1` connected for "), "{human}");
    let unknown = admin(dir, &["status", "edge-9"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("no peer `edge-9`"),
        "{}",
        stderr(&unknown)
    );

    let peers = ok(admin(dir, &["peers"]));
    let lines: Vec<&str> = peers.lines().collect();
    assert_eq!(lines.len(), 2, "{peers}");
    assert!(lines[0].starts_with("edge-1  connected  for "), "{peers}");
    assert!(lines[0].ends_with("backlog 0 txns 0 bytes"), "{peers}");
    assert!(
        lines[1].starts_with("edge-2  dormant    never connected"),
        "{peers}"
    );

    // /metrics: OpenMetrics text naming the connected peer, also while a
    // client that sends nothing holds a connection.
    let _silent = std::net::TcpStream::connect(&metrics).unwrap();
    let (status, headers, body) = http_get(&metrics, "/metrics");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        headers.contains("content-type: application/openmetrics-text"),
        "{headers}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(
        sample(&body, "tidelog_peer_connected{peer=\"edge-1\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "tidelog_peer_connected{peer=\"edge-2\"}"),
        Some(0.0)
    );
    assert!(sample(&body, "tidelog_peer_bytes_in_total{peer=\"edge-1\"}").unwrap() > 0.0);
    assert!(sample(&body, "tidelog_peer_connects_total{peer=\"edge-1\"}").unwrap() >= 1.0);
    assert_eq!(
        sample(
            &body,
            "tidelog_table_coalesced_total{peer=\"edge-1\",table=\"alerts\"}"
        ),
        Some(0.0)
    );
    for name in [
        "tidelog_peer_lag_seconds{peer=\"edge-1\"}",
        "tidelog_peer_oldest_unacknowledged_age_seconds{peer=\"edge-1\"}",
        "tidelog_peer_backlog_transactions{peer=\"edge-1\"}",
        "tidelog_peer_backlog_bytes{peer=\"edge-1\"}",
        "tidelog_peer_bytes_out_total{peer=\"edge-1\"}",
        "tidelog_peer_refused_writes_total{peer=\"edge-1\"}",
        "tidelog_peer_resyncs_sent_total{peer=\"edge-1\"}",
        "tidelog_peer_syncs_received_total{peer=\"edge-1\"}",
        "tidelog_peer_tls_failures_total{peer=\"edge-1\"}",
        "tidelog_peer_stalls_total{peer=\"edge-1\"}",
    ] {
        assert!(sample(&body, name).is_some(), "{name} missing:\n{body}");
    }
    // A healthy link is not stalled.
    assert_eq!(
        sample(&body, "tidelog_peer_stalled{peer=\"edge-1\"}"),
        Some(0.0)
    );
    let days = sample(&body, "tidelog_certificate_expiry_days").unwrap();
    assert!(days > 30.0 && days < 10_000.0, "{days}");
    assert_eq!(
        sample(&body, "tidelog_accepted_tls_failures_total"),
        Some(0.0)
    );
    let (status, _, _) = http_get(&metrics, "/other");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let (status, _, _) = http_request(&metrics, "DELETE", "/metrics");
    assert!(status.starts_with("HTTP/1.1 405"), "{status}");
    let (status, _, _) = http_request(&metrics, "GET", "/metrics/../x");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");

    // A node with another CA's certificate dials in: refused, counted.
    let stranger = edge(&dir.join("stranger"), &dir.join("other"), "edge-2", &addr);
    wait_until("the refused handshake counted", T, || {
        let (_, _, body) = http_get(&metrics, "/metrics");
        sample(&body, "tidelog_accepted_tls_failures_total").unwrap_or(0.0) >= 1.0
    });
    stranger.close().unwrap();

    // Forgetting a configured peer is refused: a reload would re-add it.
    let refused = admin(dir, &["forget", "edge-2"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused)
            .contains("remove it from the config first (it would come back at the next reload)"),
        "{}",
        stderr(&refused)
    );

    // reload: edge-1 leaves the config, the interval changes.
    write_hub_config(dir, &peer("edge-2"), 3600);
    let report = ok(admin(dir, &["reload"]));
    assert!(report.contains("removed peer `edge-1`"), "{report}");
    assert!(
        report.contains("status_interval_secs 0 -> 3600"),
        "{report}"
    );
    assert!(
        report.contains("reload done, 2 change(s) applied"),
        "{report}"
    );
    serve.wait_line("the reload logged", T, |l| {
        l.contains("reload (admin socket): removed peer `edge-1`")
    });
    let peers = ok(admin(dir, &["peers"]));
    assert!(!peers.contains("edge-1"), "{peers}");

    // edge-1 is gone from the config: its stored state can go too.
    let forgot = ok(admin(dir, &["forget", "edge-1"]));
    assert!(forgot.contains("forgot peer `edge-1`"), "{forgot}");
    let again = admin(dir, &["forget", "edge-1"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("nothing to forget"),
        "{}",
        stderr(&again)
    );

    // A broken file: reported, exit 1, the serve runs as it was.
    std::fs::write(&config, "node_name = \"cloud\"\n[[peers\n").unwrap();
    let broken = tidelog(dir, &["reload", "--socket", socket.to_str().unwrap()]);
    assert_eq!(broken.status.code(), Some(1), "{}", stderr(&broken));
    assert!(
        stderr(&broken).contains("config refused"),
        "{}",
        stderr(&broken)
    );
    let still = tidelog(dir, &["peers", "--socket", socket.to_str().unwrap()]);
    assert!(
        stdout(&still).starts_with("edge-2  dormant"),
        "{}",
        stderr(&still)
    );

    let (status, log) = serve.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!socket.exists(), "a clean exit removes the socket");
    let gone = tidelog(dir, &["status", "--socket", socket.to_str().unwrap()]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr(&gone).contains("is `tidelog serve` running"),
        "{}",
        stderr(&gone)
    );
    e1.close().unwrap();
}

/// One request line, raw; returns the answer (empty if the serve closed
/// without one).
fn raw(socket: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    // The serve may close before taking all of an oversized request.
    let _ = s.write_all(request);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

#[test]
fn hostile_clients_and_a_second_serve_do_not_disturb_a_running_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = dir.join("cloud.toml");
    let write = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "node_name = \"cloud\"\ndata_dir = \"cloud-data\"\ninsecure = true\nlisten = \"127.0.0.1:0\"\nstatus_interval_secs = 0\n{extra}\n{}",
                peer("edge-1")
            ),
        )
        .unwrap()
    };
    write("");
    let mut serve = Serve::start(&config);
    serve.ready();
    assert!(
        !serve.stderr().contains("metrics on"),
        "/metrics is off unless configured:\n{}",
        serve.stderr()
    );
    let socket = dir.join("cloud-data/admin.sock");

    // A client that connects and sends nothing, held open throughout.
    let silent = UnixStream::connect(&socket).unwrap();
    let garbage = raw(&socket, b"{\"cmd\": \"status\", \"peer\": 7\n");
    let v: Value = serde_json::from_str(&garbage).unwrap();
    assert_eq!(v["ok"], false);
    assert!(
        v["error"].as_str().unwrap().contains("not a request"),
        "{v}"
    );
    let unknown = raw(&socket, b"{\"cmd\": \"shutdown\"}\n");
    assert!(unknown.contains("not a request"), "{unknown}");
    let big = raw(&socket, &vec![b'x'; 1 << 20]);
    assert!(big.contains("longer than 65536 bytes"), "{big}");
    // Still answering, with the silent client still connected.
    let status = ok(admin(dir, &["status"]));
    assert!(status.contains("peer `edge-1` never connected"), "{status}");
    drop(silent);

    // A second serve of the same config is refused while this one runs.
    let second = tidelog(dir, &["serve", "--config", "cloud.toml"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("another `tidelog serve` is running"),
        "{}",
        stderr(&second)
    );
    ok(admin(dir, &["peers"]));

    // Killed, it leaves its socket; the next serve takes it over.
    serve.kill();
    assert!(socket.exists());
    let dead = admin(dir, &["status"]);
    assert!(
        stderr(&dead).contains("nothing answers"),
        "{}",
        stderr(&dead)
    );
    let mut serve = Serve::start(&config);
    serve.ready();
    assert!(
        serve.stderr().contains("replaced stale admin socket"),
        "{}",
        serve.stderr()
    );
    ok(admin(dir, &["status", "--json"]));
    let (code, log) = serve.terminate();
    assert_eq!(code.code(), Some(0), "{log}");

    // A socket path longer than a Unix socket can hold: a config error.
    let long = format!("/tmp/{}/admin.sock", "d".repeat(120));
    write(&format!("[admin]\nsocket = \"{long}\""));
    let out = tidelog(dir, &["serve", "--config", "cloud.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds at most 107"),
        "{}",
        stderr(&out)
    );
}
