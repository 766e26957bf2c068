//! Row filters and column lists on 127.0.0.1 with real mutual TLS: one
//! hub rule `site = $peer.name` serves 20 edges their own thresholds
//! (initial sync and live), an edge whose own flow asks for more gets
//! nothing more, a row re-assigned from one site to another leaves the
//! first edge and reaches the second, a column list keeps an attribute
//! home, and malformed filters are refused when the rule is added.

mod repl_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use repl_common::*;
use serde_json::{json, Value};
use tidelog::*;

const T: Duration = Duration::from_secs(60);
const EDGES: usize = 20;

fn name(i: usize) -> String {
    format!("edge-{i:02}")
}

/// Every row of `thresholds` on `db`, by id.
fn rows(db: &Database) -> BTreeMap<String, Value> {
    db.scan("thresholds", &ScanOptions::default())
        .unwrap()
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r.body_json()).unwrap();
            (v["id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn threshold(id: &str, site: &str, max: i64) -> Value {
    json!({"id": id, "site": site, "max": max, "secret": "hub only"})
}

fn edge(dir: &Path, pki: &Pki, i: usize, addr: &str) -> Database {
    let db = open_node(dir, &name(i));
    db.ensure_table("thresholds", TableOptions::default())
        .unwrap();
    let mut o = pki.options(&name(i));
    o.worker_threads = 1;
    db.start_replication(o).unwrap();
    let mut flow = TableFlow::subscribe("thresholds");
    if i == 0 {
        // Asks for everyone's thresholds: the hub decides, not the edge.
        flow = flow.filter(r#"site != "nobody""#);
    }
    db.add_peer(PeerConfig::new("hub").address(addr).table(flow))
        .unwrap();
    db
}

#[test]
fn one_rule_serves_each_edge_its_own_rows_and_moves_a_reassigned_row() {
    let names: Vec<String> = (0..EDGES).map(name).chain(["hub".into()]).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let pki = Pki::new(&refs);
    let dirs: Vec<_> = (0..=EDGES).map(|_| tempfile::tempdir().unwrap()).collect();
    let hub = open_node(dirs[EDGES].path(), "hub");
    hub.ensure_table("thresholds", TableOptions::default())
        .unwrap();
    hub.start_replication(pki.options("hub")).unwrap();
    let addr = hub.listen("127.0.0.1:0").unwrap().to_string();

    // Hostile rules first: refused with the position and what was expected.
    let bad = |filter: &str| {
        hub.add_peer_rule(
            PeerRule::new("bad", "edge-*").table(TableFlow::publish("thresholds").filter(filter)),
        )
        .unwrap_err()
        .to_string()
    };
    let e = bad("site == $peer.name");
    assert!(e.contains("at byte 6") && e.contains("JSON literal"), "{e}");
    let e = bad("site = $peer.site");
    assert!(e.contains("known parameter"), "{e}");
    let e = bad(&format!(
        "site IN ({})",
        (0..5000)
            .map(|i| format!("\"s{i}\""))
            .collect::<Vec<_>>()
            .join(",")
    ));
    assert!(e.contains("more than 1024 values"), "{e}");
    let e = hub
        .add_peer_rule(
            PeerRule::new("bad", "edge-*")
                .table(TableFlow::publish("thresholds").columns(["max", "not a name"])),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a name") && e.contains("thresholds"), "{e}");

    hub.add_peer_rule(
        PeerRule::new("edges", "edge-*").table(
            TableFlow::publish("thresholds")
                .filter("site = $peer.name")
                .columns(["site", "max"]),
        ),
    )
    .unwrap();
    // Before any edge: what the initial sync carries.
    for i in 0..EDGES {
        hub.insert("thresholds", threshold(&format!("a-{i}"), &name(i), 1))
            .unwrap();
    }
    hub.insert("thresholds", threshold("orphan", "nobody", 1))
        .unwrap();
    // A row without the routed attribute goes nowhere.
    hub.insert("thresholds", json!({"id": "no-site", "max": 3}))
        .unwrap();

    let edges: Vec<Database> = (0..EDGES)
        .map(|i| edge(dirs[i].path(), &pki, i, &addr))
        .collect();
    // Live: a second row per site, an update, a delete.
    for i in 0..EDGES {
        hub.insert("thresholds", threshold(&format!("b-{i}"), &name(i), 2))
            .unwrap();
    }
    hub.update("thresholds", json!({"id": "b-3", "max": 33}))
        .unwrap();
    hub.delete("thresholds", "a-4").unwrap();
    let wait_all = |seq: u64| {
        for i in 0..EDGES {
            wait_until(&format!("{} admitted", name(i)), T, || {
                hub.peer_status(&name(i)).is_ok_and(|s| s.connected)
            });
            hub.wait_for_ack(&name(i), seq, T).unwrap();
        }
    };
    let last = hub
        .update("thresholds", json!({"id": "b-5", "max": 55}))
        .unwrap();
    wait_all(last.seq);

    let expect = |i: usize, ids: &[&str]| {
        let got = rows(&edges[i]);
        let want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            got.keys().cloned().collect::<Vec<_>>(),
            want,
            "{} holds {got:?}",
            name(i)
        );
        for v in got.values() {
            assert_eq!(v["site"], json!(name(i)));
            assert!(
                v.get("secret").is_none(),
                "a column not listed went out: {v}"
            );
        }
    };
    for i in 0..EDGES {
        match i {
            4 => expect(i, &["b-4"]),
            _ => expect(i, &[&format!("a-{i}"), &format!("b-{i}")]),
        }
    }
    assert_eq!(rows(&edges[3])["b-3"]["max"], json!(33));
    assert_eq!(rows(&edges[5])["b-5"]["max"], json!(55));

    // Re-assigned: a-1 moves from edge-01 to edge-02.
    let moved = hub
        .update(
            "thresholds",
            json!({"id": "a-1", "site": name(2), "max": 7}),
        )
        .unwrap();
    wait_all(moved.seq);
    expect(1, &["b-1"]);
    expect(2, &["a-1", "a-2", "b-2"]);
    assert_eq!(rows(&edges[2])["a-1"]["max"], json!(7));
    // Back again, and edge-02 lets go of it.
    let back = hub
        .update("thresholds", json!({"id": "a-1", "site": name(1)}))
        .unwrap();
    wait_all(back.seq);
    expect(1, &["a-1", "b-1"]);
    expect(2, &["a-2", "b-2"]);
    // The move-out did not come back to the hub as a delete.
    assert!(hub.get("thresholds", "a-1").unwrap().is_some());
    assert!(hub.get("thresholds", "orphan").unwrap().is_some());

    for d in edges {
        d.close().unwrap();
    }
    hub.close().unwrap();
}
