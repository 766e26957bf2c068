//! Fan-out that costs what it moves: a hub commit wakes only the links that
//! stream a table it wrote; links with nothing new tell their peer their
//! position at a pace (or at once for a waiting receipt), and the log is
//! still trimmed once every peer acknowledged it.

mod repl_common;

use std::time::Duration;

use repl_common::*;
use serde_json::json;
use tidelog::*;

const T: Duration = Duration::from_secs(30);

/// A hub and `n` edges in this process: `edge-0` takes table `t` from the
/// hub, the others take `u`. `heartbeat`: the hub's (and so its pace of
/// progress for links with nothing new).
struct Fleet {
    hub: Database,
    edges: Vec<Database>,
    _dirs: Vec<tempfile::TempDir>,
    _pki: Pki,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for e in &self.edges {
            let _ = e.close();
        }
        let _ = self.hub.close();
    }
}

fn fleet(n: usize, heartbeat: Duration) -> Fleet {
    let mut names = vec!["hub".to_string()];
    names.extend((0..n).map(|i| format!("edge-{i}")));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let pki = Pki::new(&refs);
    let paced = |mut o: ReplicationOptions| {
        o.heartbeat_interval = heartbeat;
        o.idle_timeout = heartbeat * 3;
        o.worker_threads = 1;
        o
    };
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    let hub = open_node(dirs[0].path(), "hub");
    for t in ["t", "u"] {
        hub.create_table(t, TableOptions::default()).unwrap();
    }
    hub.start_replication(paced(pki.options("hub"))).unwrap();
    let addr = hub.listen("127.0.0.1:0").unwrap().to_string();
    let mut edges = Vec::new();
    for i in 0..n {
        let (name, table) = (format!("edge-{i}"), if i == 0 { "t" } else { "u" });
        hub.add_peer(PeerConfig::new(&name).table(TableFlow::publish(table)))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let edge = open_node(dir.path(), &name);
        edge.start_replication(paced(pki.options(&name))).unwrap();
        edge.add_peer(
            PeerConfig::new("hub")
                .address(addr.clone())
                .table(TableFlow::subscribe(table)),
        )
        .unwrap();
        dirs.push(dir);
        edges.push(edge);
    }
    for (i, e) in edges.iter().enumerate() {
        wait_until(&format!("edge-{i} streams from the hub"), T, || {
            let s = e.peer_status("hub").unwrap();
            s.connected && s.tables.iter().all(|t| t.inbound == "streaming")
        });
    }
    Fleet {
        hub,
        edges,
        _dirs: dirs,
        _pki: pki,
    }
}

/// Per edge: the hub's log reads and log frames sent on its link.
fn activity(hub: &Database, n: usize) -> Vec<(u64, u64)> {
    (0..n)
        .map(|i| {
            let (reads, frames, _) = hub.link_activity_for_tests(&format!("edge-{i}")).unwrap();
            (reads, frames)
        })
        .collect()
}

#[test]
fn a_commit_wakes_only_the_link_that_streams_its_table_and_receipts_still_pass_at_once() {
    const N: usize = 20;
    // A pace far longer than the test: any progress frame a link sends
    // here is sent per commit (the old behaviour) or for a receipt.
    let f = fleet(N, Duration::from_secs(120));
    let before = activity(&f.hub, N);
    let mut last = 0;
    for i in 0..30 {
        last = f.hub.upsert("t", json!({"id": i})).unwrap().seq;
    }
    f.hub.wait_for_ack("edge-0", last, T).unwrap();
    assert_eq!(f.edges[0].count("t").unwrap(), 30);
    let after = activity(&f.hub, N);
    assert!(
        after[0].0 > before[0].0 && after[0].1 > before[0].1,
        "the link of `t` read and sent: {:?} -> {:?}",
        before[0],
        after[0]
    );
    for i in 1..N {
        assert_eq!(
            after[i], before[i],
            "edge-{i} takes only `u`: its link must neither read the log nor send a frame for commits to `t`"
        );
    }
    // A receipt for everything committed passes at once on every link,
    // also those that pass over `t` (their position goes out for it).
    f.hub.wait_for_delivery(Some(last), T).unwrap();
    for i in 1..N {
        assert!(f.hub.peer_status(&format!("edge-{i}")).unwrap().acked_seq >= last);
        assert_eq!(f.edges[i].count("u").unwrap(), 0);
    }
    let told = activity(&f.hub, N);
    for i in 1..N {
        assert_eq!(told[i].0, before[i].0, "edge-{i}: told without reading");
    }
    // A write to `u` goes to those links (and not to edge-0's).
    let seq = f.hub.upsert("u", json!({"id": 1})).unwrap().seq;
    f.hub.wait_for_delivery(Some(seq), T).unwrap();
    for e in &f.edges[1..] {
        assert_eq!(e.count("u").unwrap(), 1);
    }
    assert_eq!(activity(&f.hub, N)[0].0, told[0].0);
}

#[test]
fn links_with_nothing_new_still_acknowledge_so_the_log_is_trimmed() {
    // A short pace: the links that pass over `t` acknowledge it within a
    // few heartbeats, without any receipt asking, and retention follows.
    let f = fleet(3, Duration::from_millis(200));
    let mut last = 0;
    for i in 0..300 {
        last = f.hub.upsert("t", json!({"id": i})).unwrap().seq;
    }
    wait_until("every peer acknowledged the log", T, || {
        (0..3).all(|i| {
            let s = f.hub.peer_status(&format!("edge-{i}")).unwrap();
            s.acked_seq == last && s.backlog_txns == 0
        })
    });
    wait_until("the log trimmed to its newest entry", T, || {
        f.hub.log_bounds().unwrap().first == last
    });
}
