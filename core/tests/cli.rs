//! The `tidelog` binary end to end on 127.0.0.1 with real mutual TLS:
//! `tidelog certs` makes the PKI, `tidelog serve` runs the cloud as a child
//! process, and in-process instances dial it as the edge (and as an
//! operator's node that writes thresholds into the running cloud).

mod cli_common;
mod repl_common;

use std::path::Path;
use std::time::Duration;

use cli_common::*;
use repl_common::{fast, raise_alert_with_window, wait_until};
use serde_json::json;
use tidelog::*;

const T: Duration = Duration::from_secs(30);

fn cloud_config(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"
node_name = "cloud"
data_dir = "cloud-data"          # relative: resolved against this file's dir
listen = "127.0.0.1:0"
status_interval_secs = 1

[tls]
cert = "pki/cloud.pem"
key = "pki/cloud.key"
ca = "pki/ca.pem"

{FAST_TIMERS}
[[tables]]
name = "thresholds"
primary_key = "sensor"
indexes = ["kind"]

[[tables]]
name = "alerts"

[[peers]]
name = "edge-1"
tables = [{{ table = "thresholds", publish = true }}, {{ table = "alerts", subscribe = true }}]

# An operator's node dials in and writes thresholds; the cloud relays them.
[[peers]]
name = "ops"
tables = [{{ table = "thresholds", subscribe = true }}]
"#
    );
    let path = dir.join("cloud.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// An in-process node with certificates from `tidelog certs`, dialing the
/// cloud at `addr`.
fn dialer(dir: &Path, pki: &Path, name: &str, addr: &str, flows: Vec<TableFlow>) -> Database {
    let db = Database::open(dir.join(name), OpenOptions::new(name)).unwrap();
    let opts = ReplicationOptions::mutual_tls(
        pki.join(format!("{name}.pem")),
        pki.join(format!("{name}.key")),
        pki.join("ca.pem"),
    );
    db.start_replication(fast(opts)).unwrap();
    let mut peer = PeerConfig::new("cloud").address(addr);
    for f in flows {
        peer = peer.table(f);
    }
    db.add_peer(peer).unwrap();
    db
}

fn open_cloud(dir: &Path) -> Database {
    Database::open(dir.join("cloud-data"), OpenOptions::new("cloud")).unwrap()
}

#[test]
fn certs_then_serve_edge_dials_thresholds_down_alerts_up_clean_stop_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = make_certs(dir, &["cloud", "edge-1"]);
    let ca_before = std::fs::read(pki.join("ca.pem")).unwrap();
    // Never overwrites; --add signs one more node with the same CA.
    let again = tidelog(dir, &["certs", "--out", "pki", "cloud"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a CA"));
    let add = tidelog(dir, &["certs", "--out", "pki", "--add", "ops"]);
    assert!(add.status.success(), "{add:?}");
    assert_eq!(std::fs::read(pki.join("ca.pem")).unwrap(), ca_before);

    let config = cloud_config(dir);
    let mut serve = Serve::start(&config);
    let addr = serve.ready();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let edge = dialer(
        dir,
        &pki,
        "edge-1",
        &addr,
        vec![
            TableFlow::subscribe("thresholds"),
            TableFlow::publish("alerts"),
        ],
    );
    edge.create_table(
        "sensor_data",
        TableOptions::default()
            .index("sensor")
            .expiration_secs(3600),
    )
    .unwrap();
    edge.create_table("alerts", TableOptions::default())
        .unwrap();
    let ops = dialer(
        dir,
        &pki,
        "ops",
        &addr,
        vec![TableFlow::publish("thresholds")],
    );
    ops.create_table("thresholds", TableOptions::default().primary_key("sensor"))
        .unwrap();

    // A threshold written while the edge is connected reaches it through
    // the running cloud, with the cloud's primary key for the table.
    ops.upsert(
        "thresholds",
        json!({"sensor": "s1", "max": 50, "kind": "temp"}),
    )
    .unwrap();
    wait_until("threshold s1 on the edge", T, || {
        edge.get("thresholds", "s1").ok().flatten().is_some()
    });
    assert_eq!(
        edge.describe_table("thresholds").unwrap().primary_key,
        "sensor"
    );

    // Readings stay local; an alert carrying a window of them goes up.
    let a1 = raise_alert_with_window(&edge, 50, "a1");
    edge.wait_for_ack("cloud", a1.seq, T).unwrap();

    // The status lines say what is going on.
    let line = serve.wait_line("edge status line", T, |l| {
        l.contains("peer `edge-1` connected") && l.contains(&format!("received {}", a1.seq))
    });
    assert!(line.contains("alerts[in=streaming]"), "{line}");
    assert!(line.contains("refused 0"), "{line}");

    // SIGTERM: a clean stop, exit status 0, and everything on disk.
    let (status, log) = serve.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("SIGTERM: database closed, stopped cleanly"),
        "{log}"
    );
    let cloud = open_cloud(dir);
    let info = cloud.describe_table("thresholds").unwrap();
    assert_eq!(
        (info.primary_key.as_str(), info.indexes.clone()),
        ("sensor", vec!["kind".to_string()])
    );
    let got = cloud
        .get("alerts", "a1")
        .unwrap()
        .expect("alert a1 on the cloud");
    assert_eq!(got.stamp(), a1.stamp, "the original stamp travels");
    assert_eq!(got.to_value()["window"].as_array().unwrap().len(), 50);
    assert!(cloud.get("thresholds", "s1").unwrap().is_some());
    assert!(
        cloud.describe_table("sensor_data").is_err(),
        "sensor_data must never reach the cloud"
    );
    // A threshold written on the cloud itself while it is down...
    cloud
        .upsert(
            "thresholds",
            json!({"sensor": "s9", "max": 99, "kind": "hum"}),
        )
        .unwrap();
    cloud.close().unwrap();

    // ...reaches the edge once serve restarts on the same address.
    set_listen(&config, &addr);
    let mut serve = Serve::start(&config);
    assert_eq!(serve.ready(), addr);
    wait_until("threshold s9 on the edge after the restart", T, || {
        edge.get("thresholds", "s9").ok().flatten().is_some()
    });
    let a2 = edge
        .insert("alerts", json!({"id": "a2", "reading": 1}))
        .unwrap();
    edge.wait_for_ack("cloud", a2.seq, T).unwrap();
    let (status, log) = serve.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        !log.contains("created table"),
        "the restart must find the tables it made: {log}"
    );

    let cloud = open_cloud(dir);
    assert_eq!(cloud.count("alerts").unwrap(), 2);
    assert_eq!(cloud.count("thresholds").unwrap(), 2);
    cloud.close().unwrap();
    edge.close().unwrap();
    ops.close().unwrap();
}

#[test]
fn help_and_bad_configs_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let help = tidelog(dir, &["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("tidelog serve --config FILE"));
    let help = tidelog(dir, &["serve", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("[[peers]]"));
    let bad = tidelog(dir, &["serve"]);
    assert_eq!(bad.status.code(), Some(2));

    make_certs(dir, &["cloud"]);
    let good = "node_name = \"cloud\"\ndata_dir = \"d\"\nlisten = \"127.0.0.1:0\"\n\
                [tls]\ncert = \"pki/cloud.pem\"\nkey = \"pki/cloud.key\"\nca = \"pki/ca.pem\"\n";
    let cases = [
        // (config text, exit code, what stderr must say)
        ("", 2, "invalid node_name: is required"),
        (&*format!("{good}colour = 1\n"), 2, "unknown field `colour`"),
        (
            &*good.replace("pki/cloud.key", "pki/nope.key"),
            2,
            "pki/nope.key does not exist",
        ),
        (&*format!("insecure = true\n{good}"), 2, "remove one"),
        (
            &*good.replace("cloud.pem", "ca.key"),
            2,
            "holds no certificate",
        ),
        (&*good.replace("\"cloud\"", "\"bad name\""), 2, "node name"),
        (
            &*format!("{good}[[peers]]\nname = \"cloud\"\n"),
            2,
            "its own peer",
        ),
    ];
    for (i, (text, code, says)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = tidelog(dir, &["serve", "--config", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "case {i}: {err}");
        assert!(err.contains(says), "case {i}: expected {says:?} in: {err}");
    }
    let out = tidelog(dir, &["serve", "--config", "missing.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml does not exist"));

    // A data directory in use by another process is refused, not shared.
    let path = dir.join("ok.toml");
    std::fs::write(&path, good).unwrap();
    let mut first = Serve::start(&path);
    first.ready();
    // The same config: its admin socket answers, so another serve runs.
    let second = tidelog(dir, &["serve", "--config", "ok.toml"]);
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another `tidelog serve` is running"), "{err}");
    // Its own socket, the same data directory: the lock refuses it.
    let other = dir.join("other.toml");
    std::fs::write(&other, format!("{good}[admin]\nsocket = \"other.sock\"\n")).unwrap();
    let third = tidelog(dir, &["serve", "--config", "other.toml"]);
    assert_eq!(third.status.code(), Some(1));
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(err.contains("in use"), "{err}");
    assert!(
        !dir.join("other.sock").exists(),
        "a refused serve leaves no socket"
    );
    let (status, log) = first.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
}

/// `TIDELOG_LOG` sets serve's log filter; a value that is not one stops the
/// program before it opens anything, naming the variable and the levels.
#[test]
fn serve_refuses_a_bad_log_filter() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = cloud_config(dir);
    for bad in ["loud", "tidelog::repl=chatty", "=info"] {
        let out = std::process::Command::new(BIN)
            .args(["serve", "--config", config.to_str().unwrap()])
            .current_dir(dir)
            .env("TIDELOG_LOG", bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "TIDELOG_LOG={bad}: {err}");
        assert!(err.contains("TIDELOG_LOG"), "TIDELOG_LOG={bad}: {err}");
    }
    assert!(
        !dir.join("cloud-data").exists(),
        "nothing is opened before the filter is read"
    );
}
