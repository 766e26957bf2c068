//! `tidelog serve` reloads its config on SIGHUP: peers added, changed and
//! removed at run time, restart-only settings named in a warning and left
//! as they run, and a broken file refused while the hub keeps running.

mod cli_common;
mod repl_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cli_common::*;
use repl_common::{fast, wait_until};
use serde_json::json;
use tidelog::*;

const T: Duration = Duration::from_secs(30);

/// The hub's config: `listen` and `[[peers]]` as given, the rest fixed.
fn write_hub_config(dir: &Path, listen: &str, peers: &str) -> PathBuf {
    let text = format!(
        r#"
node_name = "cloud"
data_dir = "cloud-data"
listen = "{listen}"
status_interval_secs = 1

[tls]
cert = "pki/cloud.pem"
key = "pki/cloud.key"
ca = "pki/ca.pem"

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

const EDGE_PEER: &str = r#"
[[peers]]
name = "edge-1"
tables = [{ table = "alerts", subscribe = true }]
"#;

fn sighup(serve: &Serve) {
    let pid = libc::pid_t::try_from(serve.pid()).unwrap();
    // SAFETY: kill(2) with the pid of a child we spawned and still own
    // (it is not reaped while `serve` lives).
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill(SIGHUP)");
}

/// An in-process edge dialing the hub at `addr`, publishing `alerts`.
fn edge(dir: &Path, pki: &Path, addr: &str) -> Database {
    let db = Database::open(dir.join("edge-1"), OpenOptions::new("edge-1")).unwrap();
    let opts = ReplicationOptions::mutual_tls(
        pki.join("edge-1.pem"),
        pki.join("edge-1.key"),
        pki.join("ca.pem"),
    );
    db.start_replication(fast(opts)).unwrap();
    db.add_peer(
        PeerConfig::new("cloud")
            .address(addr)
            .table(TableFlow::publish("alerts")),
    )
    .unwrap();
    db.create_table("alerts", TableOptions::default()).unwrap();
    db
}

#[test]
fn sighup_adds_changes_and_removes_peers_and_names_restart_only_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = make_certs(dir, &["cloud", "edge-1"]);
    // No peers at first: the edge's links are refused.
    let config = write_hub_config(dir, "127.0.0.1:0", "");
    let mut serve = Serve::start(&config);
    let addr = serve.ready();
    let edge = edge(dir, &pki, &addr);
    let a1 = edge.insert("alerts", json!({"id": "a1"})).unwrap();

    // The file now names the edge (and another listen address, which only
    // a restart applies); SIGHUP adds the peer, and the alert arrives.
    write_hub_config(dir, "127.0.0.1:1", EDGE_PEER);
    sighup(&serve);
    serve.wait_line("the peer added", T, |l| {
        l.contains("SIGHUP: added peer `edge-1` (waiting for it to dial in)")
    });
    let warn = serve.wait_line("the listen warning", T, |l| {
        l.contains("SIGHUP: `listen` changed")
    });
    assert!(warn.contains("only a restart applies it"), "{warn}");
    serve.wait_line("reload done", T, |l| {
        l.contains("SIGHUP: reload done, 1 change(s) applied")
    });
    edge.wait_for_ack("cloud", a1.seq, T).unwrap();
    serve.wait_line("the edge's status line", T, |l| {
        l.contains("peer `edge-1` connected") && l.contains(&format!("received {}", a1.seq))
    });

    // A changed peer (it now relays): update_peer, its link restarts.
    write_hub_config(
        dir,
        "127.0.0.1:1",
        "[[peers]]\nname = \"edge-1\"\nrelays = true\ntables = [{ table = \"alerts\", subscribe = true }]\n",
    );
    sighup(&serve);
    serve.wait_line("the peer updated", T, |l| {
        l.contains("SIGHUP: updated peer `edge-1`")
    });

    // Removed: the hub drops it, and its status lines stop naming it.
    write_hub_config(dir, "127.0.0.1:1", "");
    sighup(&serve);
    serve.wait_line("the peer removed", T, |l| {
        l.contains("SIGHUP: removed peer `edge-1`")
    });
    serve.wait_line("no peers", T, |l| l.contains("status: no peers configured"));

    let (status, log) = serve.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("SIGTERM: database closed, stopped cleanly"),
        "{log}"
    );
    let cloud = Database::open(dir.join("cloud-data"), OpenOptions::new("cloud")).unwrap();
    assert!(cloud.get("alerts", "a1").unwrap().is_some());
    cloud.close().unwrap();
    edge.close().unwrap();
}

#[test]
fn sighup_with_a_broken_config_keeps_the_hub_running_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = make_certs(dir, &["cloud", "edge-1"]);
    let config = write_hub_config(dir, "127.0.0.1:0", EDGE_PEER);
    let mut serve = Serve::start(&config);
    let addr = serve.ready();
    let edge = edge(dir, &pki, &addr);

    // Not TOML at all, then valid TOML with an unknown key: both refused.
    std::fs::write(&config, "node_name = \"cloud\"\n[[peers\n").unwrap();
    sighup(&serve);
    let refused = serve.wait_line("the refusal", T, |l| l.contains("SIGHUP: config refused"));
    assert!(refused.contains("error"), "{refused}");
    write_hub_config(dir, "127.0.0.1:0", &format!("{EDGE_PEER}\nbogus_key = 1\n"));
    sighup(&serve);
    wait_until("two refusals", T, || {
        serve.stderr().matches("SIGHUP: config refused").count() == 2
    });
    assert!(
        serve.stderr().contains("bogus_key"),
        "the refusal names the key:\n{}",
        serve.stderr()
    );

    // Still running with the old peers: the edge's alert arrives.
    let a1 = edge.insert("alerts", json!({"id": "a1"})).unwrap();
    edge.wait_for_ack("cloud", a1.seq, T).unwrap();
    assert!(
        !serve.stderr().contains("removed peer"),
        "{}",
        serve.stderr()
    );

    let (status, log) = serve.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    edge.close().unwrap();
}
