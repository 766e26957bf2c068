//! A delivery receipt means the peer applied the write: whatever a receiver
//! refuses (a stamp from a clock too far ahead, a table it no longer has,
//! a relay's refusal in the middle) fails the sender's receipt with the
//! reason, shows in status on both sides, and does not jam later writes.
//! Real mutual TLS on 127.0.0.1; clocks are skewed through a test hook.

mod repl_common;

use std::time::{Duration, Instant};

use repl_common::*;
use serde_json::json;
use tidelog::net::wire::RefusalKind;
use tidelog::*;

const T: Duration = Duration::from_secs(30);
/// Ten minutes: far beyond the default `max_clock_skew` of one minute.
const TEN_MIN_MS: i64 = 600_000;

struct Pair {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    cloud: Database,
    edge: Database,
}

/// A cloud that subscribes to the edge's `alerts` and publishes
/// `thresholds` to it, both links streaming.
fn pair(pki: &Pki) -> Pair {
    pair_after(pki, |_| {})
}

/// [`pair`], with `before_link` run on the edge before it has the cloud as
/// a peer.
fn pair_after(pki: &Pki, before_link: impl FnOnce(&Database)) -> Pair {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cloud = open_node(dirs.0.path(), "cloud");
    cloud
        .create_table("thresholds", TableOptions::default())
        .unwrap();
    cloud.start_replication(pki.options("cloud")).unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap();
    cloud
        .add_peer(
            PeerConfig::new("edge-1")
                .table(TableFlow::subscribe("alerts"))
                .table(TableFlow::publish("thresholds")),
        )
        .unwrap();
    let edge = open_node(dirs.1.path(), "edge-1");
    edge.create_table("alerts", TableOptions::default())
        .unwrap();
    before_link(&edge);
    edge.start_replication(pki.options("edge-1")).unwrap();
    edge.add_peer(edge_peer(&addr.to_string())).unwrap();
    wait_streaming(&cloud, "edge-1");
    wait_streaming(&edge, "cloud");
    Pair {
        _dirs: dirs,
        cloud,
        edge,
    }
}

fn edge_peer(addr: &str) -> PeerConfig {
    PeerConfig::new("cloud")
        .address(addr)
        .table(TableFlow::publish("alerts"))
        .table(TableFlow::subscribe("thresholds"))
}

/// Both directions of `peer`'s link are streaming every table they carry.
fn wait_streaming(db: &Database, peer: &str) {
    wait_until(
        &format!("{} streaming with {peer}", db.node_name()),
        T,
        || {
            let s = db.peer_status(peer).unwrap();
            s.connected
                && s.tables.iter().all(|t| {
                    (!t.subscribe || t.inbound == "streaming")
                        && (!t.publish || t.outbound == "streaming")
                })
        },
    );
}

/// The receipt fails with a refusal of `table` by `peer` of `kind` well
/// before the receipt's own timeout; returns the error's text.
fn assert_refused(
    what: &str,
    wait: impl FnOnce(Duration) -> Result<()>,
    peer: &str,
    table: &str,
    seq: u64,
    kind: RefusalKind,
) -> String {
    let started = Instant::now();
    let r = wait(T);
    let took = started.elapsed();
    match &r {
        Err(
            e @ Error::Refused {
                peer: p,
                table: t,
                seq: s,
                kind: k,
                reason,
            },
        ) => {
            assert_eq!(
                (p.as_str(), t.as_str(), *s, *k),
                (peer, table, seq, kind),
                "{what}: {e}"
            );
            assert!(!reason.is_empty(), "{what}: {e}");
            let expected_kind = if kind == RefusalKind::ClockSkew {
                ErrorKind::ClockSkew
            } else {
                ErrorKind::Peer
            };
            assert_eq!(e.kind(), expected_kind, "{what}: {e}");
            // Generous: it must come from the refusal, not the timeout.
            eprintln!("{what}: failed after {took:?}");
            assert!(took < T / 2, "{what}: failed only after {took:?}: {e}");
            e.to_string()
        }
        other => panic!(
            "{what}: expected a refusal by `{peer}` of {table} {seq} ({kind}), got {other:?}"
        ),
    }
}

/// `db`'s status for `peer` shows a refusal of `table` in `direction`.
fn refusal(db: &Database, peer: &str, direction: &str, table: &str) -> Option<RefusalStatus> {
    db.peer_status(peer)
        .unwrap()
        .refusals
        .into_iter()
        .find(|r| r.direction == direction && r.table == table)
}

fn wait_refusal(db: &Database, peer: &str, direction: &str, table: &str) -> RefusalStatus {
    wait_until(
        &format!(
            "{} shows a {direction} refusal of `{table}` with {peer}",
            db.node_name()
        ),
        T,
        || refusal(db, peer, direction, table).is_some(),
    );
    refusal(db, peer, direction, table).unwrap()
}

#[test]
fn writes_from_a_clock_too_far_ahead_fail_their_receipts_both_ways() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let p = pair(&pki);
    let (cloud, edge) = (&p.cloud, &p.edge);

    // The edge's clock runs ten minutes ahead.
    edge.skew_clock_for_tests(TEN_MIN_MS);
    let first = edge.insert("alerts", json!({"id": "future-1"})).unwrap();
    let second = edge.insert("alerts", json!({"id": "future-2"})).unwrap();
    let text = assert_refused(
        "edge's receipt from the cloud",
        |t| edge.wait_for_ack("cloud", second.seq, t),
        "cloud",
        "alerts",
        second.seq,
        RefusalKind::ClockSkew,
    );
    eprintln!("the receipt error: {text}");
    assert!(text.contains("max_clock_skew"), "{text}");
    assert_refused(
        "edge's delivery receipt",
        |t| edge.wait_for_delivery(Some(first.seq), t),
        "cloud",
        "alerts",
        first.seq,
        RefusalKind::ClockSkew,
    );
    assert!(cloud.get("alerts", "future-1").unwrap().is_none());
    assert!(cloud.get("alerts", "future-2").unwrap().is_none());

    // Both sides show it, with the refused stamp.
    let out = wait_refusal(edge, "cloud", "outbound", "alerts");
    assert_eq!(
        (out.kind.as_str(), out.count, out.seq),
        ("clock_skew", 2, second.seq),
        "{out:?}"
    );
    assert_eq!(out.stamp, second.stamp, "{out:?}");
    let inb = wait_refusal(cloud, "edge-1", "inbound", "alerts");
    assert_eq!((inb.kind.as_str(), inb.count), ("clock_skew", 2), "{inb:?}");
    assert_eq!(inb.stamp, second.stamp, "{inb:?}");
    assert!(inb.at_ms > 0 && inb.reason.contains("ahead"), "{inb:?}");

    // The clock is fixed: a write after them flows and gets its receipt,
    // while theirs keep failing.
    edge.skew_clock_for_tests(0);
    let normal = edge.insert("alerts", json!({"id": "normal"})).unwrap();
    edge.wait_for_ack("cloud", normal.seq, T).unwrap();
    edge.wait_for_delivery(None, T).unwrap();
    assert!(cloud.get("alerts", "normal").unwrap().is_some());
    assert!(matches!(
        edge.wait_for_ack("cloud", first.seq, T),
        Err(Error::Refused { .. })
    ));

    // A link event (the cloud's settings change, the link restarts) does
    // not wipe the refusals the way it replaces `last_error`.
    cloud
        .update_peer(
            PeerConfig::new("edge-1")
                .table(TableFlow::subscribe("alerts"))
                .table(TableFlow::publish("thresholds")),
        )
        .unwrap();
    wait_until("the cloud's link restarted", T, || {
        cloud.peer_status("edge-1").unwrap().connects >= 2
    });
    wait_streaming(cloud, "edge-1");
    assert_eq!(refusal(cloud, "edge-1", "inbound", "alerts"), Some(inb));

    // The other way on the same link: the cloud's clock runs ahead, and
    // the edge refuses the cloud's writes.
    cloud.skew_clock_for_tests(TEN_MIN_MS);
    let ahead = cloud
        .upsert("thresholds", json!({"id": "s-future", "max": 1}))
        .unwrap();
    assert_refused(
        "cloud's receipt from the edge",
        |t| cloud.wait_for_ack("edge-1", ahead.seq, t),
        "edge-1",
        "thresholds",
        ahead.seq,
        RefusalKind::ClockSkew,
    );
    assert!(edge.get("thresholds", "s-future").unwrap().is_none());
    let out = wait_refusal(cloud, "edge-1", "outbound", "thresholds");
    assert_eq!(
        (out.kind.as_str(), out.seq),
        ("clock_skew", ahead.seq),
        "{out:?}"
    );
    let inb = wait_refusal(edge, "cloud", "inbound", "thresholds");
    assert_eq!(inb.kind, "clock_skew", "{inb:?}");
    cloud.skew_clock_for_tests(0);
    let fine = cloud
        .upsert("thresholds", json!({"id": "s-now", "max": 2}))
        .unwrap();
    cloud.wait_for_ack("edge-1", fine.seq, T).unwrap();
    assert!(edge.get("thresholds", "s-now").unwrap().is_some());
}

#[test]
fn a_row_of_an_initial_sync_that_is_refused_fails_the_receipt_of_its_write() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let mut written = Vec::new();
    // Written before the edge ever linked: they reach the cloud as rows of
    // the initial sync, which carry stamps but no log sequence.
    let p = pair_after(&pki, |edge| {
        edge.skew_clock_for_tests(TEN_MIN_MS);
        written.push(
            edge.insert("alerts", json!({"id": "early-future"}))
                .unwrap(),
        );
        edge.skew_clock_for_tests(0);
        written.push(edge.insert("alerts", json!({"id": "early-fine"})).unwrap());
    });
    let (future, fine) = (&written[0], &written[1]);
    assert_refused(
        "receipt of a write refused in the initial sync",
        |t| p.edge.wait_for_ack("cloud", future.seq, t),
        "cloud",
        "alerts",
        future.seq,
        RefusalKind::ClockSkew,
    );
    p.edge.wait_for_ack("cloud", fine.seq, T).unwrap();
    assert!(p.cloud.get("alerts", "early-fine").unwrap().is_some());
    assert!(p.cloud.get("alerts", "early-future").unwrap().is_none());
    let out = wait_refusal(&p.edge, "cloud", "outbound", "alerts");
    assert_eq!((out.seq, out.stamp), (0, future.stamp), "{out:?}");
}

#[test]
fn a_refused_receipt_still_fails_after_the_sender_restarts() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let p = pair(&pki);
    p.edge.skew_clock_for_tests(TEN_MIN_MS);
    let refused = p.edge.insert("alerts", json!({"id": "future"})).unwrap();
    p.edge.skew_clock_for_tests(0);
    let normal = p.edge.insert("alerts", json!({"id": "normal"})).unwrap();
    p.edge.wait_for_ack("cloud", normal.seq, T).unwrap();
    let edge_dir = p._dirs.1.path().to_path_buf();
    p.edge.close().unwrap();

    // Reopened, not yet linked (no address): the acknowledgement covers
    // the refused write, the stored refusal still fails its receipt.
    let edge = open_node(&edge_dir, "edge-1");
    edge.start_replication(pki.options("edge-1")).unwrap();
    edge.add_peer(PeerConfig::new("cloud").table(TableFlow::publish("alerts")))
        .unwrap();
    assert!(edge.peer_status("cloud").unwrap().acked_seq >= refused.seq);
    assert_refused(
        "receipt after a restart",
        |t| edge.wait_for_ack("cloud", refused.seq, t),
        "cloud",
        "alerts",
        refused.seq,
        RefusalKind::ClockSkew,
    );
    edge.wait_for_ack("cloud", normal.seq, T).unwrap();
    let out = refusal(&edge, "cloud", "outbound", "alerts").expect("kept across the restart");
    assert_eq!(
        (out.kind.as_str(), out.seq),
        ("clock_skew", refused.seq),
        "{out:?}"
    );
}

#[test]
fn writes_to_a_table_the_receiver_no_longer_has_fail_their_receipts() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let p = pair(&pki);
    let (cloud, edge) = (&p.cloud, &p.edge);
    let before = edge.insert("alerts", json!({"id": "before"})).unwrap();
    edge.wait_for_ack("cloud", before.seq, T).unwrap();

    // Still subscribed, but the table is gone on the cloud.
    cloud.drop_table("alerts").unwrap();
    let lost = edge.insert("alerts", json!({"id": "lost"})).unwrap();
    assert_refused(
        "receipt for a write to a dropped table",
        |t| edge.wait_for_ack("cloud", lost.seq, t),
        "cloud",
        "alerts",
        lost.seq,
        RefusalKind::MissingTable,
    );
    assert!(cloud.describe_table("alerts").is_err());
    let out = wait_refusal(edge, "cloud", "outbound", "alerts");
    assert_eq!(out.kind, "missing_table", "{out:?}");
    let inb = wait_refusal(cloud, "edge-1", "inbound", "alerts");
    assert_eq!(inb.kind, "missing_table", "{inb:?}");

    // Recreated: later writes flow again and get their receipts.
    cloud
        .create_table("alerts", TableOptions::default())
        .unwrap();
    let after = edge.insert("alerts", json!({"id": "after"})).unwrap();
    edge.wait_for_ack("cloud", after.seq, T).unwrap();
    assert!(cloud.get("alerts", "after").unwrap().is_some());
    assert!(cloud.get("alerts", "lost").unwrap().is_none());
}

/// The hub's log sequence of the record `key` of `alerts`, once it has one.
fn hub_seq_of(hub: &Database, key: &str) -> Option<u64> {
    let b = hub.log_bounds().unwrap();
    hub.read_log(b.first, 100_000)
        .unwrap()
        .into_iter()
        .find(|e| e.writes.iter().any(|w| w.key == Key::Str(key.into())))
        .map(|e| e.seq)
}

#[test]
fn a_relay_never_forwards_what_it_refused_and_reports_what_it_forwarded_in_vain() {
    let pki = Pki::new(&["edge-1", "hub", "operator"]);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // The hub tolerates 20 minutes of skew, the operator the default minute.
    let hub = Database::open(
        dirs[1].path(),
        OpenOptions::new("hub").max_clock_skew(Duration::from_secs(1200)),
    )
    .unwrap();
    hub.create_table("alerts", TableOptions::default()).unwrap();
    hub.start_replication(pki.options("hub")).unwrap();
    let addr = hub.listen("127.0.0.1:0").unwrap().to_string();
    hub.add_peer(PeerConfig::new("edge-1").table(TableFlow::subscribe("alerts")))
        .unwrap();
    hub.add_peer(PeerConfig::new("operator").table(TableFlow::publish("alerts")))
        .unwrap();
    let edge = open_node(dirs[0].path(), "edge-1");
    edge.create_table("alerts", TableOptions::default())
        .unwrap();
    edge.start_replication(pki.options("edge-1")).unwrap();
    edge.add_peer(
        PeerConfig::new("hub")
            .address(addr.clone())
            .table(TableFlow::publish("alerts")),
    )
    .unwrap();
    let operator = open_node(dirs[2].path(), "operator");
    operator.start_replication(pki.options("operator")).unwrap();
    operator
        .add_peer(
            PeerConfig::new("hub")
                .address(addr)
                .table(TableFlow::subscribe("alerts")),
        )
        .unwrap();
    wait_streaming(&hub, "edge-1");
    wait_streaming(&hub, "operator");
    wait_streaming(&operator, "hub");

    // Thirty minutes ahead: the hub in the middle refuses it.
    edge.skew_clock_for_tests(3 * TEN_MIN_MS);
    let far = edge.insert("alerts", json!({"id": "too-far"})).unwrap();
    assert_refused(
        "edge's receipt from the hub",
        |t| edge.wait_for_ack("hub", far.seq, t),
        "hub",
        "alerts",
        far.seq,
        RefusalKind::ClockSkew,
    );
    assert_eq!(
        hub_seq_of(&hub, "too-far"),
        None,
        "a refused write entered the hub's log"
    );
    edge.skew_clock_for_tests(0);
    let marker = edge.insert("alerts", json!({"id": "marker-1"})).unwrap();
    edge.wait_for_ack("hub", marker.seq, T).unwrap();
    wait_until("marker-1 relayed to the operator", T, || {
        operator.get("alerts", "marker-1").ok().flatten().is_some()
    });
    assert!(operator.get("alerts", "too-far").unwrap().is_none());

    // Ten minutes ahead: the hub takes it, the operator refuses it, and
    // the hub's receipt for the operator fails.
    edge.skew_clock_for_tests(TEN_MIN_MS);
    let ahead = edge.insert("alerts", json!({"id": "ahead"})).unwrap();
    edge.wait_for_ack("hub", ahead.seq, T).unwrap();
    assert!(hub.get("alerts", "ahead").unwrap().is_some());
    let hub_seq = hub_seq_of(&hub, "ahead").expect("applied on the hub, so in its log");
    assert_refused(
        "hub's receipt from the operator",
        |t| hub.wait_for_ack("operator", hub_seq, t),
        "operator",
        "alerts",
        hub_seq,
        RefusalKind::ClockSkew,
    );
    assert!(operator.get("alerts", "ahead").unwrap().is_none());
    let out = wait_refusal(&hub, "operator", "outbound", "alerts");
    assert_eq!(
        (out.kind.as_str(), out.stamp),
        ("clock_skew", ahead.stamp),
        "{out:?}"
    );
    let inb = wait_refusal(&operator, "hub", "inbound", "alerts");
    assert_eq!(inb.kind, "clock_skew", "{inb:?}");
    let inb = wait_refusal(&hub, "edge-1", "inbound", "alerts");
    assert_eq!(inb.seq, far.seq, "{inb:?}");

    // Behind the refused one, a write the operator accepts still flows.
    edge.skew_clock_for_tests(0);
    let last = edge.insert("alerts", json!({"id": "marker-2"})).unwrap();
    edge.wait_for_ack("hub", last.seq, T).unwrap();
    wait_until("marker-2 relayed to the operator", T, || {
        operator.get("alerts", "marker-2").ok().flatten().is_some()
    });
    let hub_last = hub_seq_of(&hub, "marker-2").unwrap();
    hub.wait_for_ack("operator", hub_last, T).unwrap();
}

/// Opens the cloud of a not-taken pair; with `keep_log`, acknowledged
/// entries stay in its log for an hour (so receipts can read them).
fn open_publishing_cloud(dir: &std::path::Path, keep_log: bool) -> Database {
    let mut o = OpenOptions::new("cloud");
    if keep_log {
        o.retention.log_min_age = Duration::from_secs(3600);
    }
    Database::open(dir, o).unwrap()
}

/// The cloud publishes `thresholds` and `bulk` to the edge; the edge
/// subscribes only to `thresholds`.
fn cloud_peer() -> PeerConfig {
    PeerConfig::new("edge-1")
        .table(TableFlow::publish("thresholds"))
        .table(TableFlow::publish("bulk"))
}

struct NotTaken {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    cloud: Database,
    edge: Database,
    addr: String,
}

fn not_taken_pair(pki: &Pki, keep_log: bool) -> NotTaken {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cloud = open_publishing_cloud(dirs.0.path(), keep_log);
    for t in ["thresholds", "bulk"] {
        cloud.create_table(t, TableOptions::default()).unwrap();
    }
    cloud.start_replication(pki.options("cloud")).unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap();
    cloud.add_peer(cloud_peer()).unwrap();
    let edge = open_node(dirs.1.path(), "edge-1");
    edge.start_replication(pki.options("edge-1")).unwrap();
    edge.add_peer(
        PeerConfig::new("cloud")
            .address(addr.to_string())
            .table(TableFlow::subscribe("thresholds")),
    )
    .unwrap();
    wait_until("the cloud streams `thresholds`, not `bulk`", T, || {
        let s = cloud.peer_status("edge-1").unwrap();
        let out = |t: &str| {
            s.tables
                .iter()
                .find(|x| x.table == t)
                .map(|x| x.outbound.clone())
        };
        s.connected
            && out("thresholds").as_deref() == Some("streaming")
            && out("bulk").as_deref() == Some("not subscribed by the peer")
    });
    NotTaken {
        _dirs: dirs,
        cloud,
        edge,
        addr: addr.to_string(),
    }
}

/// Writes `bulk` (not taken) then `thresholds` (taken), and waits until
/// the edge acknowledged both positions; returns their commits.
fn write_both_and_wait(cloud: &Database) -> (CommitInfo, CommitInfo) {
    let bulk = cloud.insert("bulk", json!({"id": "b1"})).unwrap();
    let thr = cloud.insert("thresholds", json!({"id": "t1"})).unwrap();
    cloud.wait_for_ack("edge-1", thr.seq, T).unwrap();
    assert!(cloud.peer_status("edge-1").unwrap().acked_seq >= bulk.seq);
    (bulk, thr)
}

/// The receipt of `seq` fails with `NotSubscribed` for `bulk`, through
/// `wait_for_ack` and `wait_for_delivery` alike (not with a timeout).
fn assert_not_subscribed(what: &str, cloud: &Database, seq: u64) {
    for r in [
        cloud.wait_for_ack("edge-1", seq, T),
        cloud.wait_for_delivery(Some(seq), T),
    ] {
        match r {
            Err(e @ Error::NotSubscribed { .. }) => {
                assert!(
                    matches!(&e, Error::NotSubscribed { peer, table, seq: s }
                        if peer == "edge-1" && table == "bulk" && *s == seq),
                    "{what}: {e}"
                );
                assert_eq!(e.kind(), ErrorKind::Peer, "{what}: {e}");
            }
            other => panic!("{what}: expected NotSubscribed for `bulk` {seq}, got {other:?}"),
        }
    }
}

#[test]
fn a_receipt_for_a_table_the_peer_does_not_take_fails_with_the_link_down() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let p = not_taken_pair(&pki, true);
    let (bulk, thr) = write_both_and_wait(&p.cloud);
    assert_not_subscribed("link up", &p.cloud, bulk.seq);

    p.edge.close().unwrap();
    wait_until("the cloud sees the link down", T, || {
        !p.cloud.peer_status("edge-1").unwrap().connected
    });
    assert_not_subscribed("link down", &p.cloud, bulk.seq);
    // A write to the table the edge does take keeps its receipt.
    p.cloud.wait_for_ack("edge-1", thr.seq, T).unwrap();
    p.cloud.wait_for_delivery(Some(thr.seq), T).unwrap();
}

#[test]
fn a_receipt_for_a_table_the_peer_does_not_take_fails_after_the_sender_restarts() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let p = not_taken_pair(&pki, true);
    let (bulk, thr) = write_both_and_wait(&p.cloud);
    let cloud_dir = p._dirs.0.path().to_path_buf();
    p.cloud.close().unwrap();

    // Reopened and not listening: nothing but what it stored says the
    // edge does not take `bulk`.
    let cloud = open_publishing_cloud(&cloud_dir, true);
    cloud.start_replication(pki.options("cloud")).unwrap();
    cloud.add_peer(cloud_peer()).unwrap();
    let s = cloud.peer_status("edge-1").unwrap();
    assert!(!s.connected && s.acked_seq >= thr.seq, "{s:?}");
    assert_not_subscribed("after a restart", &cloud, bulk.seq);
    cloud.wait_for_ack("edge-1", thr.seq, T).unwrap();
    cloud.wait_for_delivery(Some(thr.seq), T).unwrap();
    cloud.close().unwrap();
    p.edge.close().unwrap();
}

#[test]
fn a_receipt_whose_log_entry_was_trimmed_cannot_pass_if_the_peer_skips_a_published_table() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    // Default retention: acknowledged entries leave the log within about a
    // second, the newest one excepted.
    let p = not_taken_pair(&pki, false);
    let (bulk, thr) = write_both_and_wait(&p.cloud);
    wait_until("the log trimmed the `bulk` write", T, || {
        p.cloud.log_bounds().unwrap().first > bulk.seq
    });
    p.edge.close().unwrap();
    wait_until("the cloud sees the link down", T, || {
        !p.cloud.peer_status("edge-1").unwrap().connected
    });
    for r in [
        p.cloud.wait_for_ack("edge-1", bulk.seq, T),
        p.cloud.wait_for_delivery(Some(bulk.seq), T),
    ] {
        match r {
            Err(e @ Error::DeliveryUnproven { .. }) => {
                assert!(
                    matches!(&e, Error::DeliveryUnproven { peer, seq, tables }
                        if peer == "edge-1" && *seq == bulk.seq && tables == &["bulk".to_string()]),
                    "{e}"
                );
                assert_eq!(e.kind(), ErrorKind::Peer, "{e}");
                let text = e.to_string();
                assert!(text.contains("log_min_age"), "{text}");
            }
            other => panic!("expected DeliveryUnproven for {}, got {other:?}", bulk.seq),
        }
    }
    // The newest entry stays in the log: its receipt is still decided.
    p.cloud.wait_for_ack("edge-1", thr.seq, T).unwrap();
}

#[test]
fn a_peer_that_now_subscribes_replaces_what_the_last_link_said() {
    let pki = Pki::new(&["cloud", "edge-1"]);
    let p = not_taken_pair(&pki, true);
    let (bulk, _) = write_both_and_wait(&p.cloud);
    assert_not_subscribed("before the edge subscribes", &p.cloud, bulk.seq);
    // The edge now asks for `bulk` too: its next link syncs it, and the
    // receipt passes once that sync is acknowledged.
    p.edge
        .update_peer(
            PeerConfig::new("cloud")
                .address(p.addr.clone())
                .table(TableFlow::subscribe("thresholds"))
                .table(TableFlow::subscribe("bulk")),
        )
        .unwrap();
    wait_until("the edge has the `bulk` row", T, || {
        p.edge.get("bulk", "b1").ok().flatten().is_some()
    });
    // The acknowledgement passed over `bulk` before; only one past what
    // was committed when the new link came up shows the edge caught up.
    match p
        .cloud
        .wait_for_ack("edge-1", bulk.seq, Duration::from_millis(300))
    {
        Err(Error::NotAcknowledged { why, .. }) => {
            assert!(why.contains("catching up on `bulk`"), "{why}")
        }
        other => panic!("expected the receipt to wait for the catch-up, got {other:?}"),
    }
    let later = p.cloud.insert("thresholds", json!({"id": "t2"})).unwrap();
    p.cloud.wait_for_ack("edge-1", later.seq, T).unwrap();
    p.cloud.wait_for_ack("edge-1", bulk.seq, T).unwrap();
    p.cloud.wait_for_delivery(Some(bulk.seq), T).unwrap();
    // What the new link said is what is stored: it holds after a restart.
    let cloud_dir = p._dirs.0.path().to_path_buf();
    p.cloud.close().unwrap();
    let cloud = open_publishing_cloud(&cloud_dir, true);
    cloud.start_replication(pki.options("cloud")).unwrap();
    cloud.add_peer(cloud_peer()).unwrap();
    cloud.wait_for_ack("edge-1", bulk.seq, T).unwrap();
    cloud.close().unwrap();
    p.edge.close().unwrap();
}
