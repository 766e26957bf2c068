//! Peer rules on 127.0.0.1 with real mutual TLS: a hub admits edges it
//! does not list by name on first contact, configured peers win, a node
//! no rule admits (or one from another CA) is refused with a reason, an
//! admitted peer and its acknowledged position survive a hub restart,
//! forgetting a peer releases its hold on the log, and a rule's
//! max_silence does so for a peer that stays away.

mod repl_common;

use std::path::Path;
use std::time::Duration;

use repl_common::*;
use serde_json::json;
use tidelog::*;

const T: Duration = Duration::from_secs(30);

fn edges_rule() -> PeerRule {
    PeerRule::new("edges", "edge-*")
        .table(TableFlow::publish("thresholds"))
        .table(TableFlow::subscribe("alerts"))
}

/// A hub listening on 127.0.0.1 with both tables; no peers, no rules.
fn hub(dir: &Path, pki: &Pki) -> (Database, String) {
    let db = open_node(dir, "hub");
    for t in ["thresholds", "alerts"] {
        db.ensure_table(t, TableOptions::default()).unwrap();
    }
    db.start_replication(pki.options("hub")).unwrap();
    let addr = db.listen("127.0.0.1:0").unwrap().to_string();
    (db, addr)
}

/// An edge dialing the hub: takes thresholds, sends alerts.
fn edge(dir: &Path, opts: ReplicationOptions, name: &str, addr: &str) -> Database {
    let db = open_node(dir, name);
    for t in ["thresholds", "alerts"] {
        db.ensure_table(t, TableOptions::default()).unwrap();
    }
    db.start_replication(opts).unwrap();
    db.add_peer(
        PeerConfig::new("hub")
            .address(addr)
            .table(TableFlow::subscribe("thresholds"))
            .table(TableFlow::publish("alerts")),
    )
    .unwrap();
    db
}

/// Waits until `name` was admitted (a first contact happens when it
/// dials, not when the test adds it) and is connected.
fn wait_connected(hub: &Database, name: &str) {
    wait_until(&format!("{name} connected"), T, || {
        hub.peer_status(name).is_ok_and(|s| s.connected)
    });
}

fn last_error(db: &Database, peer: &str) -> String {
    db.peer_status(peer).unwrap().last_error.unwrap_or_default()
}

#[test]
fn a_rule_admits_an_edge_on_first_contact_and_a_configured_peer_wins() {
    let pki = Pki::new(&["hub", "edge-1", "edge-2"]);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (hub, addr) = hub(dirs[0].path(), &pki);
    hub.add_peer_rule(edges_rule()).unwrap();
    // edge-2 matches the rule too, but is configured by name: it only
    // sends alerts, it gets no thresholds.
    hub.add_peer(PeerConfig::new("edge-2").table(TableFlow::subscribe("alerts")))
        .unwrap();
    let e1 = edge(dirs[1].path(), pki.options("edge-1"), "edge-1", &addr);
    let e2 = edge(dirs[2].path(), pki.options("edge-2"), "edge-2", &addr);

    wait_connected(&hub, "edge-1");
    let th = hub
        .insert("thresholds", json!({"id": "t1", "max": 80}))
        .unwrap();
    hub.wait_for_ack("edge-1", th.seq, T).unwrap();
    assert!(e1.get("thresholds", "t1").unwrap().is_some());
    for (e, id) in [(&e1, "a1"), (&e2, "a2")] {
        let a = e.insert("alerts", json!({"id": id})).unwrap();
        e.wait_for_ack("hub", a.seq, T).unwrap();
        assert!(hub.get("alerts", id).unwrap().is_some());
    }

    let s1 = hub.peer_status("edge-1").unwrap();
    assert_eq!(s1.rule.as_deref(), Some("edges"));
    assert!(s1.connected && s1.address.is_none());
    assert!(s1.last_contact_ms.is_some());
    let s2 = hub.peer_status("edge-2").unwrap();
    assert_eq!(s2.rule, None, "a configured peer wins over the rule");
    assert!(s2.tables.iter().all(|t| !t.publish));
    assert!(e2.get("thresholds", "t1").unwrap().is_none());

    // An explicit peer cannot be updated as if it were the rule's, nor
    // the other way round.
    let e = hub
        .update_peer(PeerConfig::new("edge-1").table(TableFlow::subscribe("alerts")))
        .unwrap_err();
    assert!(
        e.to_string().contains("admitted by peer rule `edges`"),
        "{e}"
    );
    assert!(
        hub.add_peer_rule(edges_rule()).is_err(),
        "a rule name is unique"
    );
    assert!(hub.remove_peer_rule("nope").is_err());
    for d in [e1, e2, hub] {
        d.close().unwrap();
    }
}

#[test]
fn a_node_no_rule_admits_is_refused_with_the_rules_named_and_another_ca_too() {
    let pki = Pki::new(&["hub", "stray", "op-1"]);
    let other = Pki::new(&["edge-9"]);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (hub, addr) = hub(dirs[0].path(), &pki);
    hub.add_peer_rule(edges_rule()).unwrap();
    // op-1's name matches, its certificate lacks the role name.
    hub.add_peer_rule(
        PeerRule::new("ops", "op-*")
            .cert_dns_name("ops.role.test")
            .table(TableFlow::subscribe("alerts")),
    )
    .unwrap();
    let stray = edge(dirs[1].path(), pki.options("stray"), "stray", &addr);
    let op = edge(dirs[2].path(), pki.options("op-1"), "op-1", &addr);
    // Signed by another CA, trusting this one (so only the hub refuses).
    let (ca, _) = tidelog::net::certs::ca_paths(pki.path());
    let f = tidelog::net::certs::node_paths(other.path(), "edge-9");
    let foreign = edge(
        dirs[3].path(),
        fast(ReplicationOptions::mutual_tls(f.cert_chain, f.key, ca)),
        "edge-9",
        &addr,
    );

    wait_until("stray's refusal", T, || {
        last_error(&stray, "hub").contains("matches none")
    });
    let why = last_error(&stray, "hub");
    assert!(why.contains("refused the link"), "{why}");
    assert!(
        why.contains("`edges` (node_name `edge-*`): name does not match"),
        "{why}"
    );
    assert!(why.contains("`ops` (node_name `op-*`"), "{why}");
    wait_until("op-1's refusal", T, || {
        last_error(&op, "hub").contains("certificate does not name the required DNS name")
    });
    wait_until("the foreign edge's refusal", T, || {
        !last_error(&foreign, "hub").is_empty()
    });
    let tls = last_error(&foreign, "hub");
    assert!(tls.contains("TLS") || tls.contains("certificate"), "{tls}");

    // None of them cost the hub a peer.
    for n in ["stray", "op-1", "edge-9"] {
        assert!(matches!(hub.peer_status(n), Err(Error::PeerNotFound(_))));
        assert!(matches!(hub.forget_peer(n), Err(Error::PeerNotFound(_))));
    }
    assert!(!stray.peer_status("hub").unwrap().connected);
    for d in [stray, op, foreign, hub] {
        d.close().unwrap();
    }
}

#[test]
fn a_certificate_naming_the_rules_role_is_admitted() {
    let pki = Pki::new(&["hub"]);
    sign_with_extra_name(pki.path(), "op-1", "ops.role.test");
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (hub, addr) = hub(dirs[0].path(), &pki);
    hub.add_peer_rule(
        PeerRule::new("ops", "op-*")
            .cert_dns_name("ops.role.test")
            .table(TableFlow::subscribe("alerts")),
    )
    .unwrap();
    let op = edge(dirs[1].path(), pki.options("op-1"), "op-1", &addr);
    wait_connected(&hub, "op-1");
    let a = op.insert("alerts", json!({"id": "a1"})).unwrap();
    op.wait_for_ack("hub", a.seq, T).unwrap();
    assert_eq!(
        hub.peer_status("op-1").unwrap().rule.as_deref(),
        Some("ops")
    );
    for d in [op, hub] {
        d.close().unwrap();
    }
}

/// Signs `<node>.pem` with the CA in `pki`, valid for `node` and `extra`.
fn sign_with_extra_name(pki: &Path, node: &str, extra: &str) {
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair};
    use rustls::pki_types::pem::PemObject;
    let (ca_pem, ca_key) = tidelog::net::certs::ca_paths(pki);
    let ca_der = rustls::pki_types::CertificateDer::from_pem_file(&ca_pem).unwrap();
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(ca_key).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![node.to_string(), extra.to_string()]).unwrap();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer).unwrap();
    let f = tidelog::net::certs::node_paths(pki, node);
    std::fs::write(f.cert_chain, cert.pem()).unwrap();
    std::fs::write(f.key, key.serialize_pem()).unwrap();
}

#[test]
fn a_hub_restart_keeps_the_admitted_peer_and_forget_releases_the_log() {
    let pki = Pki::new(&["hub", "edge-1"]);
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (hub1, addr) = hub(dirs[0].path(), &pki);
    hub1.add_peer_rule(edges_rule()).unwrap();
    let e1 = edge(dirs[1].path(), pki.options("edge-1"), "edge-1", &addr);
    wait_connected(&hub1, "edge-1");
    let th = hub1.insert("thresholds", json!({"id": "t1"})).unwrap();
    hub1.wait_for_ack("edge-1", th.seq, T).unwrap();
    e1.close().unwrap();
    wait_until("the edge gone", T, || {
        !hub1.peer_status("edge-1").unwrap().connected
    });
    let before = hub1.peer_status("edge-1").unwrap();
    hub1.close().unwrap();

    // Restarted: no peer until the rule is back; then edge-1 is there,
    // dormant, with its acknowledged position and last contact.
    let hub2 = open_node(dirs[0].path(), "hub");
    hub2.start_replication(pki.options("hub")).unwrap();
    assert!(matches!(
        hub2.peer_status("edge-1"),
        Err(Error::PeerNotFound(_))
    ));
    hub2.add_peer_rule(edges_rule()).unwrap();
    let after = hub2.peer_status("edge-1").unwrap();
    assert_eq!(after.rule.as_deref(), Some("edges"));
    assert!(!after.connected, "dormant");
    assert_eq!(after.acked_seq, before.acked_seq);
    assert_eq!(after.acked_seq, th.seq);
    assert!(after.last_contact_ms >= before.last_contact_ms);
    assert!(after.last_contact_ms.is_some());

    // It holds the log: what it has not acknowledged stays.
    for i in 0..20 {
        hub2.insert("thresholds", json!({"id": format!("n{i}")}))
            .unwrap();
    }
    let last = hub2.log_bounds().unwrap().last;
    std::thread::sleep(Duration::from_millis(1500)); // one trim pass
    assert!(hub2.log_bounds().unwrap().first <= th.seq + 1);

    // Forgotten: its state goes and the log trims to the newest entry.
    hub2.forget_peer("edge-1").unwrap();
    assert!(matches!(
        hub2.peer_status("edge-1"),
        Err(Error::PeerNotFound(_))
    ));
    wait_until("the log trimmed", T, || {
        hub2.log_bounds().unwrap().first == last
    });
    assert!(matches!(
        hub2.forget_peer("edge-1"),
        Err(Error::PeerNotFound(_))
    ));
    assert!(hub2.forget_peer("bad/name").is_err());
    hub2.close().unwrap();

    // And after a restart nothing brings it back: its records are gone.
    let hub3 = open_node(dirs[0].path(), "hub");
    hub3.start_replication(pki.options("hub")).unwrap();
    hub3.add_peer_rule(edges_rule()).unwrap();
    assert!(matches!(
        hub3.peer_status("edge-1"),
        Err(Error::PeerNotFound(_))
    ));
    // Dialing again is a first contact: admitted afresh, from zero.
    let addr3 = hub3.listen("127.0.0.1:0").unwrap().to_string();
    let e1 = edge(dirs[1].path(), pki.options("edge-1"), "edge-1", &addr3);
    wait_connected(&hub3, "edge-1");
    let th2 = hub3.insert("thresholds", json!({"id": "t2"})).unwrap();
    hub3.wait_for_ack("edge-1", th2.seq, T).unwrap();
    assert!(e1.get("thresholds", "t2").unwrap().is_some());
    for d in [e1, hub3] {
        d.close().unwrap();
    }
}

#[test]
fn max_silence_releases_a_dormant_peers_hold_and_it_is_resynced_on_return() {
    let pki = Pki::new(&["hub", "edge-1"]);
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (hub, addr) = hub(dirs[0].path(), &pki);
    hub.add_peer_rule(edges_rule().max_silence(Duration::from_millis(300)))
        .unwrap();
    let e1 = edge(dirs[1].path(), pki.options("edge-1"), "edge-1", &addr);
    wait_connected(&hub, "edge-1");
    let th = hub.insert("thresholds", json!({"id": "t1"})).unwrap();
    hub.wait_for_ack("edge-1", th.seq, T).unwrap();
    e1.close().unwrap();
    wait_until("the edge gone", T, || {
        !hub.peer_status("edge-1").unwrap().connected
    });
    for i in 0..20 {
        hub.insert("thresholds", json!({"id": format!("n{i}")}))
            .unwrap();
    }
    // Silent past max_silence: no longer holding the log, which trims.
    wait_until("the log trimmed past the silent edge", T, || {
        hub.log_bounds().unwrap().first > th.seq + 1
    });
    let s = hub.peer_status("edge-1").unwrap();
    assert!(s.resync_needed, "{s:?}");
    assert_eq!(s.acked_seq, th.seq);

    // Back: resynced through the usual path, and it has every threshold.
    let e1 = edge(dirs[1].path(), pki.options("edge-1"), "edge-1", &addr);
    let t2 = hub.insert("thresholds", json!({"id": "t2"})).unwrap();
    hub.wait_for_ack("edge-1", t2.seq, T).unwrap();
    assert!(hub.peer_status("edge-1").unwrap().resyncs_sent >= 1);
    assert_eq!(
        table_state(&e1, "thresholds"),
        table_state(&hub, "thresholds")
    );
    for d in [e1, hub] {
        d.close().unwrap();
    }
}

#[test]
fn updating_a_rule_restarts_only_its_peers_and_removing_it_refuses_them() {
    let pki = Pki::new(&["hub", "a-1", "b-1"]);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (hub, addr) = hub(dirs[0].path(), &pki);
    let rule =
        |name: &str, glob: &str| PeerRule::new(name, glob).table(TableFlow::subscribe("alerts"));
    hub.add_peer_rule(rule("ra", "a-*")).unwrap();
    hub.add_peer_rule(rule("rb", "b-*")).unwrap();
    let a = edge(dirs[1].path(), pki.options("a-1"), "a-1", &addr);
    let b = edge(dirs[2].path(), pki.options("b-1"), "b-1", &addr);
    wait_connected(&hub, "a-1");
    wait_connected(&hub, "b-1");
    let b_connects = hub.peer_status("b-1").unwrap().connects;

    // ra now also publishes thresholds: a-1's link restarts and gets them.
    hub.update_peer_rule(rule("ra", "a-*").table(TableFlow::publish("thresholds")))
        .unwrap();
    let th = hub.insert("thresholds", json!({"id": "t1"})).unwrap();
    hub.wait_for_ack("a-1", th.seq, T).unwrap();
    assert!(a.get("thresholds", "t1").unwrap().is_some());
    assert!(hub.peer_status("a-1").unwrap().connects >= 2);
    assert_eq!(hub.peer_status("b-1").unwrap().connects, b_connects);
    assert!(b.get("thresholds", "t1").unwrap().is_none());

    // rb removed: b-1's link ends and its redials are refused; its state
    // stays, so the rule coming back brings it back.
    hub.remove_peer_rule("rb").unwrap();
    assert!(matches!(
        hub.peer_status("b-1"),
        Err(Error::PeerNotFound(_))
    ));
    wait_until("b-1 refused", T, || {
        last_error(&b, "hub").contains("matches none")
    });
    hub.add_peer_rule(rule("rb", "b-*")).unwrap();
    wait_connected(&hub, "b-1");
    assert!(hub.peer_status("a-1").unwrap().connected);
    for d in [a, b, hub] {
        d.close().unwrap();
    }
}

// ---- hostile dialers ----------------------------------------------------

fn raw_hello(name: &str, node_id: u64) -> tidelog::net::wire::Message {
    use tidelog::net::wire::*;
    Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        node_name: name.into(),
        node_id,
        now_ms: tidelog::hlc::wall_millis(),
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u32,
        wants: vec![],
        relays_accepted: false,
        accepts_zstd: false,
        deltas: false,
    })
}

/// What the hub answers a hello with: its own hello, or a goodbye's reason.
async fn answer<S>(s: &mut S) -> Result<String, String>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tidelog::net::wire::*;
    match tokio::time::timeout(T, read_message(s, DEFAULT_MAX_FRAME_BYTES)).await {
        Ok(Ok(Some(Message::Hello(h)))) => Ok(h.node_name),
        Ok(Ok(Some(Message::Goodbye { reason }))) => Err(reason),
        other => Err(format!("{other:?}")),
    }
}

#[test]
fn names_that_are_no_node_names_are_refused_before_anything_is_stored() {
    // Plaintext, so a raw client can claim any name (with TLS the
    // certificate check refuses such names even earlier).
    let dir = tempfile::tempdir().unwrap();
    let hub = open_node(dir.path(), "hub");
    hub.start_replication(fast(ReplicationOptions::insecure()))
        .unwrap();
    let addr = hub.listen("127.0.0.1:0").unwrap().to_string();
    hub.add_peer_rule(PeerRule::new("all", "*")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let long = "a".repeat(300);
    for name in [
        "../etc/x",
        "a/b",
        "nul\0name",
        "",
        "UPPER_",
        long.as_str(),
        "hub",
    ] {
        let got = rt.block_on(async {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            tidelog::net::wire::write_message(&mut s, &raw_hello(name, 0xABCD))
                .await
                .unwrap();
            answer(&mut s).await
        });
        let why = got.expect_err("the hub must refuse");
        assert!(
            why.contains("is not a node name") || why.contains("own name"),
            "{name:?}: {why}"
        );
    }
    assert!(hub.replication_status().unwrap().is_empty());
    // A good name is admitted by the same rule (so the refusals above
    // were about the names).
    let got = rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tidelog::net::wire::write_message(&mut s, &raw_hello("good-1", 0xABCD))
            .await
            .unwrap();
        answer(&mut s).await
    });
    assert_eq!(got, Ok("hub".to_string()));
    assert_eq!(
        hub.peer_status("good-1").unwrap().rule.as_deref(),
        Some("all")
    );
    hub.close().unwrap();
}

#[test]
fn a_first_contact_claiming_a_taken_node_id_is_refused_and_not_admitted() {
    let pki = Pki::new(&["hub", "edge-1", "edge-2"]);
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (hub, addr) = hub(dirs[0].path(), &pki);
    hub.add_peer_rule(edges_rule()).unwrap();
    let e1 = edge(dirs[1].path(), pki.options("edge-1"), "edge-1", &addr);
    wait_connected(&hub, "edge-1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let f = tidelog::net::certs::node_paths(pki.path(), "edge-2");
    let (ca, _) = tidelog::net::certs::ca_paths(pki.path());
    let id = TlsIdentity::from_files(f.cert_chain, f.key, ca);
    for (claim, needle) in [
        (hub.node_id(), "`hub`'s own"),
        (e1.node_id(), "node id of peer `edge-1`"),
    ] {
        let got = rt.block_on(async {
            let cfg = id.client_config().unwrap();
            let mut s = tidelog::net::tls::connect(&addr, "hub", cfg, T)
                .await
                .unwrap();
            tidelog::net::wire::write_message(&mut s, &raw_hello("edge-2", claim))
                .await
                .unwrap();
            answer(&mut s).await
        });
        let why = got.expect_err("the hub must refuse");
        assert!(why.contains(needle), "{why}");
    }
    // No admission: nothing to show, nothing to forget.
    assert!(matches!(
        hub.peer_status("edge-2"),
        Err(Error::PeerNotFound(_))
    ));
    assert!(matches!(
        hub.forget_peer("edge-2"),
        Err(Error::PeerNotFound(_))
    ));
    assert_eq!(hub.peer_status("edge-1").unwrap().connects, 1);
    for d in [e1, hub] {
        d.close().unwrap();
    }
}

#[test]
fn a_configured_peer_added_later_takes_over_an_admitted_one() {
    let pki = Pki::new(&["hub", "edge-1"]);
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (hub, addr) = hub(dirs[0].path(), &pki);
    hub.add_peer_rule(edges_rule()).unwrap();
    let e1 = edge(dirs[1].path(), pki.options("edge-1"), "edge-1", &addr);
    wait_connected(&hub, "edge-1");
    let th = hub.insert("thresholds", json!({"id": "t1"})).unwrap();
    hub.wait_for_ack("edge-1", th.seq, T).unwrap();
    hub.add_peer(
        PeerConfig::new("edge-1")
            .table(TableFlow::publish("thresholds"))
            .table(TableFlow::subscribe("alerts")),
    )
    .unwrap();
    let s = hub.peer_status("edge-1").unwrap();
    assert_eq!(s.rule, None);
    assert_eq!(s.acked_seq, th.seq, "its stored state carries over");
    wait_connected(&hub, "edge-1");
    // Removing the rule no longer touches it.
    hub.remove_peer_rule("edges").unwrap();
    let a = e1.insert("alerts", json!({"id": "a1"})).unwrap();
    e1.wait_for_ack("hub", a.seq, T).unwrap();
    assert!(hub.peer_status("edge-1").unwrap().connected);
    for d in [e1, hub] {
        d.close().unwrap();
    }
}

#[test]
fn admissions_stop_at_the_cap_and_forgetting_makes_room() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let hub = open_node(dir.path(), "hub");
        hub.start_replication(fast(ReplicationOptions::insecure()))
            .unwrap();
        hub.set_max_admitted_peers(2).unwrap();
        hub.add_peer_rule(PeerRule::new("all", "n-*")).unwrap();
        let addr = hub.listen("127.0.0.1:0").unwrap().to_string();
        (hub, addr)
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dial = |addr: &str, name: &str| {
        rt.block_on(async {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let id = 0x1000 + name.len() as u64 + name.bytes().map(u64::from).sum::<u64>();
            tidelog::net::wire::write_message(&mut s, &raw_hello(name, id))
                .await
                .unwrap();
            answer(&mut s).await
        })
    };
    let (hub, addr) = open();
    assert!(dial(&addr, "n-1").is_ok());
    assert!(dial(&addr, "n-2").is_ok());
    let why = dial(&addr, "n-3").unwrap_err();
    assert!(
        why.contains("holds 2 admitted peers") && why.contains("forget"),
        "{why}"
    );
    // A known name still connects at the cap.
    assert!(dial(&addr, "n-2").is_ok());
    hub.close().unwrap();
    // The count survives a restart (it is the stored records').
    let (hub, addr) = open();
    assert!(dial(&addr, "n-3").is_err());
    hub.forget_peer("n-1").unwrap();
    assert!(dial(&addr, "n-3").is_ok());
    hub.close().unwrap();
}
