//! Hostile and unauthenticated clients against a cloud that listens on
//! 127.0.0.1 with real mutual TLS, while a well-behaved edge stays connected
//! and keeps replicating: every refusal must hit only the offending link.
//!
//! Misbehaving peers are raw clients built from `net::tls` + `net::wire`,
//! speaking the protocol by hand so they can send what no tidelog node would.

mod cli_common;
mod repl_common;

use std::sync::Arc;
use std::time::Duration;

use repl_common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tidelog::net::certs;
use tidelog::net::tls;
use tidelog::net::wire::*;
use tidelog::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(20);
/// Node id the raw clients claim; any value works, the stamp carries it.
const RAW_NODE_ID: u64 = 0xE2E2;

/// A cloud, a well-behaved edge (`edge-1`) connected to it, and the names
/// raw clients use: `edge-2` (the cloud subscribes to its `alerts`),
/// `edge-3` (the cloud accepts nothing from it) and `stranger` (a valid
/// certificate, but not a configured peer).
struct Fixture {
    pki: Pki,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    cloud: Database,
    edge: Database,
    addr: String,
    rt: tokio::runtime::Runtime,
}

fn fixture() -> Fixture {
    let pki = Pki::new(&["cloud", "edge-1", "edge-2", "edge-3", "stranger"]);
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cloud = open_node(dirs.0.path(), "cloud");
    cloud
        .create_table("alerts", TableOptions::default())
        .unwrap();
    cloud
        .create_table("thresholds", TableOptions::default())
        .unwrap();
    cloud
        .upsert("thresholds", json!({"id": "s1", "max": 50}))
        .unwrap();
    // A long idle timeout: on a loaded 2-core machine the good edge must not
    // flap for reasons unrelated to the hostile clients.
    let mut o = pki.options("cloud");
    o.idle_timeout = Duration::from_secs(10);
    cloud.start_replication(o).unwrap();
    let addr = cloud.listen("127.0.0.1:0").unwrap().to_string();
    cloud
        .add_peer(
            PeerConfig::new("edge-1")
                .table(TableFlow::subscribe("alerts"))
                .table(TableFlow::publish("thresholds")),
        )
        .unwrap();
    cloud
        .add_peer(PeerConfig::new("edge-2").table(TableFlow::subscribe("alerts")))
        .unwrap();
    cloud.add_peer(PeerConfig::new("edge-3")).unwrap();

    let edge = open_node(dirs.1.path(), "edge-1");
    edge.create_table("alerts", TableOptions::default())
        .unwrap();
    let mut o = pki.options("edge-1");
    o.idle_timeout = Duration::from_secs(10);
    edge.start_replication(o).unwrap();
    edge.add_peer(
        PeerConfig::new("cloud")
            .address(addr.clone())
            .table(TableFlow::publish("alerts"))
            .table(TableFlow::subscribe("thresholds")),
    )
    .unwrap();
    wait_until("good edge streaming", T, || {
        let s = cloud.peer_status("edge-1").unwrap();
        s.connected
            && s.tables
                .iter()
                .all(|t| t.inbound == "streaming" || !t.subscribe)
    });
    wait_until("thresholds on the edge", T, || {
        edge.get("thresholds", "s1").ok().flatten().is_some()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Fixture {
        pki,
        _dirs: dirs,
        cloud,
        edge,
        addr,
        rt,
    }
}

impl Fixture {
    /// The good edge's one link is still the one it opened first, and data
    /// still flows on it: whatever happened only hit other connections.
    fn good_edge_unharmed(&self, tag: &str) {
        let s = self.cloud.peer_status("edge-1").unwrap();
        assert!(s.connected, "good edge lost its link: {s:?}");
        assert_eq!(s.connects, 1, "good edge had to reconnect: {s:?}");
        assert_eq!(s.refused_writes, 0, "{s:?}");
        self.edge
            .insert("alerts", json!({"id": tag, "from": "good edge"}))
            .unwrap();
        wait_until("good edge's alert on the cloud", T, || {
            self.cloud.get("alerts", tag).ok().flatten().is_some()
        });
    }

    fn identity(&self, node: &str) -> tls::TlsIdentity {
        let f = certs::node_paths(self.pki.path(), node);
        tls::TlsIdentity::from_files(f.cert_chain, f.key, certs::ca_paths(self.pki.path()).0)
    }

    /// TLS with `cert`'s certificate, then a hello claiming `claim`.
    async fn connect_as(
        &self,
        cert: &str,
        claim: &str,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let cfg = self.identity(cert).client_config().unwrap();
        let mut s = tls::connect(&self.addr, "cloud", cfg, T).await.unwrap();
        write_message(&mut s, &hello(claim)).await.unwrap();
        s
    }

    /// A configured peer's link, past both hellos; returns the cloud's.
    async fn open_link(&self, node: &str) -> (tokio_rustls::client::TlsStream<TcpStream>, Hello) {
        let mut s = self.connect_as(node, node).await;
        let m = tokio::time::timeout(T, read_message(&mut s, DEFAULT_MAX_FRAME_BYTES))
            .await
            .unwrap()
            .unwrap()
            .expect("cloud closed instead of saying hello");
        (s, expect_hello(m).unwrap())
    }

    /// Waits until the cloud's link to `peer` is down with an error
    /// containing `needle`; returns the error.
    fn wait_link_error(&self, peer: &str, needle: &str) -> String {
        let mut last = None;
        wait_until(&format!("`{peer}` link dropped with `{needle}`"), T, || {
            let s = self.cloud.peer_status(peer).unwrap();
            last = s.last_error.clone();
            !s.connected && last.as_deref().is_some_and(|e| e.contains(needle))
        });
        last.unwrap()
    }
}

fn hello(name: &str) -> Message {
    Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        node_name: name.into(),
        node_id: RAW_NODE_ID,
        now_ms: tidelog::hlc::wall_millis(),
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u32,
        wants: vec![],
        relays_accepted: false,
        accepts_zstd: false,
        deltas: false,
    })
}

/// After sending a hello, the server must never answer with one: it closes
/// (EOF, TLS alert, reset) or says goodbye. Returns what happened.
async fn expect_refused<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> String {
    match tokio::time::timeout(T, read_message(s, DEFAULT_MAX_FRAME_BYTES)).await {
        Err(_) => panic!("server neither answered nor closed"),
        Ok(Ok(Some(Message::Hello(h)))) => panic!("server accepted the link: {h:?}"),
        Ok(Ok(Some(Message::Goodbye { reason }))) => format!("goodbye: {reason}"),
        Ok(Ok(Some(m))) => panic!("unexpected {m:?} before any hello"),
        Ok(Ok(None)) => "closed".into(),
        Ok(Err(e)) => format!("error: {e}"),
    }
}

/// Reads until the server closes the connection, ignoring its messages.
async fn expect_closed<S: AsyncRead + Unpin>(s: &mut S) {
    let mut buf = vec![0u8; 64 * 1024];
    let closed = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(T, closed)
        .await
        .expect("the cloud kept a hostile connection open");
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

fn now_stamp() -> Stamp {
    stamp_ahead(0)
}

/// A stamp of edge-2's raw node id, `ms` ahead of this machine's clock.
fn stamp_ahead(ms: u64) -> Stamp {
    Stamp {
        time: (tidelog::hlc::wall_millis() + ms) << 16,
        node: RAW_NODE_ID,
    }
}

fn wire_txn(seq: u64, stamp: Stamp, writes: Vec<LogWrite>) -> WireTxn {
    WireTxn { seq, stamp, writes }
}

fn put(table: &str, key: &str, json: &str) -> LogWrite {
    LogWrite {
        table: table.into(),
        key: Key::Str(key.into()),
        op: WriteOp::Put {
            json: json.into(),
            created: now_stamp().time,
        },
    }
}

/// Sends `txns` on an `edge-2` link whose `alerts` subscription is live
/// (table accepted, empty initial sync done) and waits for their ack;
/// returns what the cloud sent before that ack.
async fn send_as_edge2(f: &Fixture, txns: Vec<WireTxn>) -> Vec<Message> {
    let (mut s, cloud_hello) = f.open_link("edge-2").await;
    assert_eq!(cloud_hello.wants.len(), 1, "{cloud_hello:?}");
    assert_eq!(cloud_hello.wants[0].table, "alerts");
    let upto = txns.last().unwrap().seq;
    for m in [
        Message::TableInfo {
            table: "alerts".into(),
            primary_key: "id".into(),
        },
        Message::SyncChunk {
            table: "alerts".into(),
            primary_key: "id".into(),
            rows: vec![],
            done: true,
            upto_seq: 0,
        },
        Message::Txns(txns),
    ] {
        write_message(&mut s, &m).await.unwrap();
    }
    let mut before_ack = Vec::new();
    loop {
        let m = tokio::time::timeout(T, read_message(&mut s, DEFAULT_MAX_FRAME_BYTES))
            .await
            .expect("no ack from the cloud")
            .unwrap()
            .expect("cloud closed the link instead of acknowledging");
        if matches!(m, Message::Ack { upto_seq } if upto_seq >= upto) {
            break;
        }
        before_ack.push(m);
    }
    let _ = s.shutdown().await;
    before_ack
}

#[test]
fn unauthenticated_or_misnamed_clients_are_refused() {
    let f = fixture();
    let (ca, _) = certs::ca_paths(f.pki.path());
    let other_ca = Pki::new(&["edge-1"]);
    f.rt.block_on(async {
        // 1. No client certificate at all (but trusting the right CA, so
        //    only the server's check can stop it).
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![tls::ALPN.to_vec()];
        let outcome = match tls::connect(&f.addr, "cloud", Arc::new(cfg), T).await {
            Err(e) => format!("handshake: {e}"),
            Ok(mut s) => {
                let _ = write_message(&mut s, &hello("edge-1")).await;
                expect_refused(&mut s).await
            }
        };
        eprintln!("no certificate: {outcome}");

        // 2. A certificate naming `edge-1`, signed by another CA.
        let o = certs::node_paths(other_ca.path(), "edge-1");
        let cfg = tls::TlsIdentity::from_files(o.cert_chain, o.key, &ca)
            .client_config()
            .unwrap();
        let outcome = match tls::connect(&f.addr, "cloud", cfg, T).await {
            Err(e) => format!("handshake: {e}"),
            Ok(mut s) => {
                let _ = write_message(&mut s, &hello("edge-1")).await;
                expect_refused(&mut s).await
            }
        };
        eprintln!("foreign CA: {outcome}");

        // 3. A valid certificate for `edge-2` claiming to be `edge-1`: if
        //    accepted it would replace the good edge's session.
        let mut s = f.connect_as("edge-2", "edge-1").await;
        eprintln!("edge-2 claiming edge-1: {}", expect_refused(&mut s).await);

        // 4. A valid certificate of a node that is not a configured peer.
        let mut s = f.connect_as("stranger", "stranger").await;
        let outcome = expect_refused(&mut s).await;
        assert!(outcome.contains("not a configured peer"), "{outcome}");

        // 5. Plaintext against the TLS listener.
        let mut s = TcpStream::connect(&f.addr).await.unwrap();
        let _ = write_message(&mut s, &hello("edge-1")).await;
        eprintln!("plaintext: {}", expect_refused(&mut s).await);
    });
    // None of them got a session: the configured names the impostors used
    // never connected, and the good edge kept its only link.
    for p in ["edge-2", "edge-3"] {
        assert_eq!(f.cloud.peer_status(p).unwrap().connects, 0, "{p}");
    }
    // The foreign CA, the misnamed certificate and the plaintext client
    // failed in TLS before any peer was proven: counted for the node.
    wait_until("the failed handshakes counted", T, || {
        f.cloud.accepted_tls_failures().unwrap() >= 3
    });
    f.good_edge_unharmed("after-impostors");

    // 6. The dialing side checks too: an edge that dials `cloud` at an
    //    address where `stranger` answers (which would accept it) refuses.
    let (ds, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let stranger = open_node(ds.path(), "stranger");
    stranger
        .start_replication(f.pki.options("stranger"))
        .unwrap();
    let s_addr = stranger.listen("127.0.0.1:0").unwrap();
    stranger.add_peer(PeerConfig::new("edge-2")).unwrap();
    let fooled = open_node(de.path(), "edge-2");
    fooled.start_replication(f.pki.options("edge-2")).unwrap();
    fooled
        .add_peer(PeerConfig::new("cloud").address(s_addr.to_string()))
        .unwrap();
    wait_until("dialer reports the wrong server certificate", T, || {
        let s = fooled.peer_status("cloud").unwrap();
        s.last_error.is_some_and(|e| e.contains("cloud"))
    });
    let s = fooled.peer_status("cloud").unwrap();
    eprintln!("dialing an impostor: {:?}", s.last_error);
    assert!(!s.connected && s.connects == 0, "{s:?}");
    assert!(
        matches!(s.last_error, Some(ref e) if e.starts_with("TLS")),
        "{s:?}"
    );
    assert!(s.tls_failures >= 1, "a failed dial is counted: {s:?}");
    assert_eq!(stranger.peer_status("edge-2").unwrap().connects, 0);
}

#[test]
fn hostile_writes_from_an_authenticated_edge_are_refused_and_reported() {
    let f = fixture();
    let thresholds_before = table_state(&f.cloud, "thresholds");
    let tables_before = f.cloud.list_tables().unwrap();
    let hour_ahead = stamp_ahead(3_600_000);
    let txns = vec![
        // Overwrite the cloud's own thresholds: not subscribed from edge-2.
        wire_txn(
            1,
            now_stamp(),
            vec![put("thresholds", "s1", r#"{"id":"s1","max":0}"#)],
        ),
        // A table the cloud does not even have.
        wire_txn(2, now_stamp(), vec![put("secrets", "k", r#"{"id":"k"}"#)]),
        // Stamped an hour in the future, on a subscribed table.
        wire_txn(
            3,
            hour_ahead,
            vec![put("alerts", "future", r#"{"id":"future"}"#)],
        ),
        // Mixed: the subscribed part applies, the rest is cut out.
        WireTxn {
            seq: 4,
            stamp: now_stamp(),
            writes: vec![
                put("alerts", "ok-1", r#"{"id":"ok-1"}"#),
                put("thresholds", "s2", r#"{"id":"s2","max":1}"#),
            ],
        },
    ];
    f.rt.block_on(send_as_edge2(&f, txns));
    let c = &f.cloud;
    assert_eq!(table_state(c, "thresholds"), thresholds_before);
    assert_eq!(c.list_tables().unwrap(), tables_before, "no table created");
    assert!(c.get("alerts", "future").unwrap().is_none());
    assert!(c.get("alerts", "ok-1").unwrap().is_some());
    // The future stamp must not have dragged the cloud's clock along.
    let info = c.upsert("alerts", json!({"id": "local"})).unwrap();
    assert!(
        info.stamp.time < hour_ahead.time,
        "clock moved by a refused stamp"
    );
    let s = c.peer_status("edge-2").unwrap();
    eprintln!("cloud's view of edge-2: {s:?}");
    assert_eq!(s.refused_writes, 4, "thresholds x2, secrets, future: {s:?}");
    assert!(s.last_error.is_some(), "{s:?}");
    f.good_edge_unharmed("after-hostile-writes");
}

#[test]
fn malformed_records_from_a_peer_change_nothing() {
    let f = fixture();
    let alerts_before = table_state(&f.cloud, "alerts");
    // Each is a well-formed frame carrying a record no local write could
    // produce: not JSON, not an object, a key that disagrees with the
    // record's own `id`, and one over the cloud's `max_record_bytes` (1 MiB).
    let huge = format!(r#"{{"id":"huge","pad":"{}"}}"#, "x".repeat(1_100_000));
    let bad = [
        ("not-json", "this is not json"),
        ("array", "[1,2,3]"),
        ("mismatch", r#"{"id":"someone-else"}"#),
        ("huge", huge.as_str()),
    ];
    let mut txns: Vec<WireTxn> = bad
        .iter()
        .enumerate()
        .map(|(i, (k, j))| wire_txn(i as u64 + 1, now_stamp(), vec![put("alerts", k, j)]))
        .collect();
    // A good one last: each bad transaction is refused on its own, and the
    // link carries on (a bad record must not wedge the stream, or the
    // sender would resend it forever after every reconnect).
    txns.push(wire_txn(
        5,
        now_stamp(),
        vec![put("alerts", "fine", r#"{"id":"fine"}"#)],
    ));
    f.rt.block_on(send_as_edge2(&f, txns));
    for (k, _) in bad {
        let got = f.cloud.get("alerts", k);
        assert!(matches!(got, Ok(None)), "`{k}` was stored: {got:?}");
    }
    assert!(f.cloud.get("alerts", "fine").unwrap().is_some());
    assert_eq!(
        table_state(&f.cloud, "alerts").len(),
        alerts_before.len() + 1
    );
    let s = f.cloud.peer_status("edge-2").unwrap();
    assert_eq!(s.refused_writes, 4, "{s:?}");
    f.good_edge_unharmed("after-malformed-records");
}

/// Deterministic byte mutator for the fuzz part; seed from
/// `TIDELOG_FUZZ_SEED` to replay.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn fuzzed_truncated_and_oversized_frames_close_only_that_connection() {
    let f = fixture();
    let snapshot = || {
        (
            f.cloud.list_tables().unwrap(),
            table_state(&f.cloud, "alerts"),
            table_state(&f.cloud, "thresholds"),
        )
    };
    let before = snapshot();
    f.rt.block_on(async {
        // Oversized: announces 2 GiB, far over the 16 MiB limit.
        let (mut s, _) = f.open_link("edge-3").await;
        s.write_all(&[0x7F, 0xFF, 0xFF, 0xFF, 1, 2, 3])
            .await
            .unwrap();
        expect_closed(&mut s).await;
        eprintln!(
            "oversized: {}",
            f.wait_link_error("edge-3", "exceeds the limit")
        );

        // Truncated: 10 of 1000 announced bytes, then a clean TLS close.
        let (mut s, _) = f.open_link("edge-3").await;
        let mut partial = 1000u32.to_be_bytes().to_vec();
        partial.extend_from_slice(&[9; 10]);
        s.write_all(&partial).await.unwrap();
        s.shutdown().await.unwrap();
        expect_closed(&mut s).await;
        eprintln!(
            "truncated: {}",
            f.wait_link_error("edge-3", "in the middle of a frame")
        );

        // Garbage payload: an enum variant that does not exist.
        let (mut s, _) = f.open_link("edge-3").await;
        s.write_all(&frame(&[0xEE, 1, 2, 3])).await.unwrap();
        expect_closed(&mut s).await;
        eprintln!("garbage: {}", f.wait_link_error("edge-3", "undecodable"));

        // Empty frame, then a second hello: protocol violations, too.
        let (mut s, _) = f.open_link("edge-3").await;
        s.write_all(&[0, 0, 0, 0]).await.unwrap();
        expect_closed(&mut s).await;
        f.wait_link_error("edge-3", "empty frame");
        let (mut s, _) = f.open_link("edge-3").await;
        write_message(&mut s, &hello("edge-3")).await.unwrap();
        expect_closed(&mut s).await;
        f.wait_link_error("edge-3", "second hello");

        // Fuzz: mutated valid messages (writes to every table among them),
        // several frames per connection. The cloud accepts nothing from
        // edge-3, so whatever decodes must still change nothing.
        let seed = std::env::var("TIDELOG_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(tidelog::hlc::wall_millis);
        eprintln!("fuzz seed {seed} (replay with TIDELOG_FUZZ_SEED={seed})");
        let mut rng = Rng(seed | 1);
        let pool: Vec<Vec<u8>> = [
            Message::Txns(vec![WireTxn {
                seq: 1,
                stamp: now_stamp(),
                writes: vec![
                    put("alerts", "fz", r#"{"id":"fz"}"#),
                    put("thresholds", "s1", r#"{"id":"s1","max":-1}"#),
                ],
            }]),
            Message::SyncChunk {
                table: "alerts".into(),
                primary_key: "id".into(),
                rows: vec![SyncRow {
                    key: Key::Int(7),
                    stamp: now_stamp(),
                    created: 1,
                    json: Some(r#"{"id":7}"#.into()),
                    merge: None,
                }],
                done: true,
                upto_seq: 3,
            },
            Message::TableInfo {
                table: "thresholds".into(),
                primary_key: "id".into(),
            },
            Message::Progress { upto_seq: 9 },
            Message::Heartbeat { now_ms: 1 },
            Message::Refused {
                table: "alerts".into(),
                reason: "x".into(),
            },
        ]
        .iter()
        .map(|m| encode_frame(m).unwrap().split_off(4))
        .collect();
        let (mut conns, mut frames) = (0, 0);
        while frames < 200 {
            let (mut s, _) = f.open_link("edge-3").await;
            conns += 1;
            for _ in 0..1 + rng.below(10) {
                let mut p = pool[rng.below(pool.len())].clone();
                for _ in 0..1 + rng.below(3) {
                    match rng.below(4) {
                        0 if !p.is_empty() => {
                            let i = rng.below(p.len());
                            p[i] ^= 1 << rng.below(8);
                        }
                        1 if !p.is_empty() => {
                            let i = rng.below(p.len());
                            p[i] = rng.next() as u8;
                        }
                        2 => p.truncate(rng.below(p.len() + 1)),
                        _ => p.push(rng.next() as u8),
                    }
                }
                frames += 1;
                if s.write_all(&frame(&p)).await.is_err() {
                    break; // already closed by the cloud
                }
            }
            let _ = s.shutdown().await;
            expect_closed(&mut s).await;
        }
        eprintln!("fuzz: {frames} frames over {conns} connections");
    });
    assert_eq!(
        snapshot(),
        before,
        "hostile frames changed the cloud's data"
    );
    f.good_edge_unharmed("after-fuzz");
}

#[test]
fn a_peer_cannot_acknowledge_what_was_never_sent_to_it() {
    let f = fixture();
    f.cloud
        .upsert("thresholds", json!({"id": "s2", "max": 60}))
        .unwrap();
    f.rt.block_on(async {
        let (mut s, _) = f.open_link("edge-3").await;
        write_message(&mut s, &Message::Ack { upto_seq: u64::MAX })
            .await
            .unwrap();
        expect_closed(&mut s).await;
    });
    wait_until("the false ack is reported", T, || {
        f.cloud
            .peer_status("edge-3")
            .unwrap()
            .last_error
            .is_some_and(|e| e.contains("acknowledged"))
    });
    let s = f.cloud.peer_status("edge-3").unwrap();
    assert_eq!(s.acked_seq, 0, "{s:?}");
    assert!(matches!(
        f.cloud
            .wait_for_ack("edge-3", 1, Duration::from_millis(200)),
        Err(Error::NotAcknowledged { acked: 0, .. })
    ));
}

/// Makes `edge-2`'s `alerts` subscription live on a raw link (table
/// accepted, empty initial sync done).
async fn make_alerts_live<S: AsyncWrite + Unpin>(s: &mut S) {
    for m in [
        Message::TableInfo {
            table: "alerts".into(),
            primary_key: "id".into(),
        },
        Message::SyncChunk {
            table: "alerts".into(),
            primary_key: "id".into(),
            rows: vec![],
            done: true,
            upto_seq: 0,
        },
    ] {
        write_message(s, &m).await.unwrap();
    }
}

/// Reads until the cloud says goodbye or closes; returns the reason.
async fn until_goodbye<S: AsyncRead + Unpin>(s: &mut S) -> String {
    loop {
        match tokio::time::timeout(T, read_message(s, DEFAULT_MAX_FRAME_BYTES))
            .await
            .expect("the cloud kept a link that forged origins")
        {
            Ok(Some(Message::Goodbye { reason })) => return reason,
            Ok(Some(_)) => {}
            Ok(None) => return "closed without a goodbye".into(),
            Err(e) => return format!("error: {e}"),
        }
    }
}

/// Reads until the cloud acknowledges `upto`.
async fn until_acked<S: AsyncRead + Unpin>(s: &mut S, upto: u64) {
    loop {
        let m = tokio::time::timeout(T, read_message(s, DEFAULT_MAX_FRAME_BYTES))
            .await
            .expect("no ack from the cloud")
            .unwrap()
            .expect("cloud closed the link instead of acknowledging");
        match m {
            Message::Ack { upto_seq } if upto_seq >= upto => return,
            Message::Goodbye { reason } => panic!("cloud closed the link: {reason}"),
            _ => {}
        }
    }
}

fn stamp_of(node: u64) -> Stamp {
    Stamp {
        time: tidelog::hlc::wall_millis() << 16,
        node,
    }
}

fn txn(seq: u64, stamp: Stamp, key: &str) -> WireTxn {
    let json = format!(r#"{{"id":"{key}"}}"#);
    wire_txn(seq, stamp, vec![put("alerts", key, &json)])
}

/// A merge state (as sync rows carry it) with a base at `base` and a
/// count of origin `counted.node`.
fn forged_state(base: Stamp, counted: Stamp) -> String {
    serde_json::json!({
        "base_stamp": base,
        "base": r#"{"id":"forged-4"}"#,
        "created": 1,
        "overrides": {},
        "counters": {"n": {counted.node.to_string(): {"added": 1, "taken": 0, "stamp": counted}}},
    })
    .to_string()
}

#[test]
fn forged_origins_close_the_link_and_apply_nothing_of_the_frame() {
    let f = fixture();
    let alerts_before = table_state(&f.cloud, "alerts");
    let log_before = f.cloud.log_bounds().unwrap().last;
    let (edge1_id, cloud_id) = (f.edge.node_id(), f.cloud.node_id());
    // Each frame starts with a good transaction of the peer's own origin:
    // the whole frame must be refused, not just the forged part.
    let cases: Vec<(&str, Message, &str)> = vec![
        (
            "as edge-1",
            Message::Txns(vec![
                txn(1, now_stamp(), "own-1"),
                txn(2, stamp_of(edge1_id), "forged-1"),
            ]),
            "does not accept relayed writes",
        ),
        (
            "as the cloud itself",
            Message::TxnsUpTo {
                txns: vec![
                    txn(1, now_stamp(), "own-2"),
                    txn(2, stamp_of(cloud_id), "forged-2"),
                ],
                upto_seq: 2,
            },
            "own node id",
        ),
        (
            "sync row as edge-1",
            Message::SyncChunk {
                table: "alerts".into(),
                primary_key: "id".into(),
                rows: vec![
                    SyncRow {
                        key: Key::Str("own-3".into()),
                        stamp: now_stamp(),
                        created: 1,
                        json: Some(r#"{"id":"own-3"}"#.into()),
                        merge: None,
                    },
                    SyncRow {
                        key: Key::Str("forged-3".into()),
                        stamp: stamp_of(edge1_id),
                        created: 1,
                        json: Some(r#"{"id":"forged-3"}"#.into()),
                        merge: None,
                    },
                ],
                done: true,
                upto_seq: 5,
            },
            "does not accept relayed writes",
        ),
        (
            "merge state of a sync row as edge-1",
            Message::SyncChunk {
                table: "alerts".into(),
                primary_key: "id".into(),
                // The row's stamp is edge-2's own; a count inside its
                // merge state claims edge-1's origin.
                rows: vec![SyncRow {
                    key: Key::Str("forged-4".into()),
                    stamp: now_stamp(),
                    created: 1,
                    json: Some(r#"{"id":"forged-4","n":1}"#.into()),
                    merge: Some(forged_state(now_stamp(), stamp_of(edge1_id))),
                }],
                done: true,
                upto_seq: 5,
            },
            "does not accept relayed writes",
        ),
    ];
    for (i, (what, frame, needle)) in cases.into_iter().enumerate() {
        let reason = f.rt.block_on(async {
            let (mut s, cloud_hello) = f.open_link("edge-2").await;
            assert!(
                !cloud_hello.relays_accepted,
                "an edge relays nothing by default"
            );
            make_alerts_live(&mut s).await;
            write_message(&mut s, &frame).await.unwrap();
            until_goodbye(&mut s).await
        });
        eprintln!("forged {what}: {reason}");
        assert!(reason.contains(needle), "{what}: {reason}");
        let err = f.wait_link_error("edge-2", needle);
        assert!(err.contains("nothing of that frame applied"), "{err}");
        let s = f.cloud.peer_status("edge-2").unwrap();
        assert_eq!(s.origin_violations, i as u64 + 1, "{what}: {s:?}");
    }
    assert_eq!(
        table_state(&f.cloud, "alerts"),
        alerts_before,
        "a frame with a forged origin was applied (in part)"
    );
    assert_eq!(
        f.cloud.log_bounds().unwrap().last,
        log_before,
        "forged entries in the cloud's log"
    );
    f.good_edge_unharmed("after-forged-origins");
}

#[test]
fn a_peer_cannot_claim_this_nodes_or_another_peers_node_id() {
    let f = fixture();
    let (edge1_id, cloud_id) = (f.edge.node_id(), f.cloud.node_id());
    for (claim, needle) in [
        (cloud_id, "`cloud`'s own"),
        (edge1_id, "node id of peer `edge-1`"),
    ] {
        let outcome = f.rt.block_on(async {
            let cfg = f.identity("edge-2").client_config().unwrap();
            let mut s = tls::connect(&f.addr, "cloud", cfg, T).await.unwrap();
            let Message::Hello(mut h) = hello("edge-2") else {
                unreachable!()
            };
            h.node_id = claim;
            write_message(&mut s, &Message::Hello(h)).await.unwrap();
            expect_refused(&mut s).await
        });
        eprintln!("edge-2 claiming {claim:#x}: {outcome}");
        assert!(outcome.contains(needle), "{outcome}");
    }
    let s = f.cloud.peer_status("edge-2").unwrap();
    assert_eq!((s.connects, s.origin_violations), (0, 2), "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("node id of peer `edge-1`")),
        "{s:?}"
    );
    f.good_edge_unharmed("after-impersonation");
}

#[test]
fn a_peer_set_to_relay_may_send_other_origins_but_never_this_nodes_own() {
    let f = fixture();
    f.cloud
        .update_peer(
            PeerConfig::new("edge-2")
                .table(TableFlow::subscribe("alerts"))
                .relays(true),
        )
        .unwrap();
    let relayed = stamp_of(0xABCD);
    let reason = f.rt.block_on(async {
        let (mut s, cloud_hello) = f.open_link("edge-2").await;
        assert!(cloud_hello.relays_accepted, "{cloud_hello:?}");
        make_alerts_live(&mut s).await;
        let txns = vec![txn(1, relayed, "relayed"), txn(2, now_stamp(), "own")];
        write_message(&mut s, &Message::Txns(txns)).await.unwrap();
        until_acked(&mut s, 2).await;
        let own = vec![txn(3, stamp_of(f.cloud.node_id()), "forged")];
        write_message(&mut s, &Message::Txns(own)).await.unwrap();
        until_goodbye(&mut s).await
    });
    assert!(reason.contains("own node id"), "{reason}");
    assert!(f.cloud.get("alerts", "relayed").unwrap().is_some());
    assert!(f.cloud.get("alerts", "own").unwrap().is_some());
    assert!(f.cloud.get("alerts", "forged").unwrap().is_none());
    let last = f.cloud.log_bounds().unwrap().last;
    let origins: Vec<u64> = f
        .cloud
        .read_log(1, last as usize)
        .unwrap()
        .iter()
        .map(|e| e.origin())
        .collect();
    assert!(origins.contains(&0xABCD), "the relay kept its origin");
    assert_eq!(f.cloud.peer_status("edge-2").unwrap().origin_violations, 1);
    f.good_edge_unharmed("after-relay");
}

#[test]
fn a_node_sends_no_relays_to_a_peer_that_does_not_take_them() {
    let f = fixture();
    // The cloud holds an alert of edge-1's origin and one of its own.
    f.edge
        .insert("alerts", json!({"id": "from-edge-1"}))
        .unwrap();
    wait_until("edge-1's alert on the cloud", T, || {
        f.cloud
            .get("alerts", "from-edge-1")
            .ok()
            .flatten()
            .is_some()
    });
    f.cloud
        .insert("alerts", json!({"id": "from-cloud"}))
        .unwrap();
    f.cloud
        .update_peer(PeerConfig::new("edge-2").table(TableFlow::both("alerts")))
        .unwrap();
    let (cloud_id, edge1_id) = (f.cloud.node_id(), f.edge.node_id());
    f.rt.block_on(async {
        let cfg = f.identity("edge-2").client_config().unwrap();
        let mut s = tls::connect(&f.addr, "cloud", cfg, T).await.unwrap();
        let Message::Hello(mut h) = hello("edge-2") else {
            unreachable!()
        };
        h.wants = vec![TableWant {
            table: "alerts".into(),
            resume_after: 0,
            since_ms: None,
            initial_sync_done: false,
        }];
        h.relays_accepted = false;
        write_message(&mut s, &Message::Hello(h)).await.unwrap();
        let mut got: Vec<(String, u64)> = Vec::new();
        let mut synced = false;
        let mut live_sent = false;
        loop {
            let m = tokio::time::timeout(T, read_message(&mut s, DEFAULT_MAX_FRAME_BYTES))
                .await
                .expect("nothing more from the cloud")
                .unwrap()
                .expect("cloud closed the link");
            match m {
                Message::SyncChunk { rows, done, .. } => {
                    for r in rows {
                        got.push((format!("{}", r.key), r.stamp.node));
                    }
                    synced |= done;
                }
                Message::Txns(txns) | Message::TxnsUpTo { txns, .. } => {
                    for t in txns {
                        for w in t.writes {
                            got.push((format!("{}", w.key), t.stamp.node));
                        }
                    }
                }
                _ => {}
            }
            if synced && !live_sent {
                // Live: one write of each origin after the sync.
                live_sent = true;
                f.edge
                    .insert("alerts", json!({"id": "live-edge-1"}))
                    .unwrap();
                wait_until("edge-1's live alert on the cloud", T, || {
                    f.cloud
                        .get("alerts", "live-edge-1")
                        .ok()
                        .flatten()
                        .is_some()
                });
                f.cloud
                    .insert("alerts", json!({"id": "live-cloud"}))
                    .unwrap();
            }
            if got.iter().any(|(k, _)| k.contains("live-cloud")) {
                break;
            }
        }
        eprintln!("edge-2 received: {got:?}");
        assert!(
            got.iter().all(|(_, origin)| *origin == cloud_id),
            "a relay went to a peer that does not take them: {got:?}"
        );
        assert!(got.iter().any(|(k, _)| k.contains("from-cloud")), "{got:?}");
        assert!(!got.iter().any(|(_, o)| *o == edge1_id));
    });
}

/// Peak resident memory (VmHWM) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A frame of about `bytes` bytes of `Message::Txns` holding one tiny
/// delete per transaction: the cheapest entries on the wire, and before
/// decoding was bounded, about 15 times larger once decoded.
fn tiny_deletes_frame(bytes: usize, origin: u64) -> Vec<u8> {
    let one = WireTxn {
        seq: 1,
        stamp: Stamp {
            time: 1,
            node: origin,
        },
        writes: vec![LogWrite {
            table: "a".into(),
            key: Key::Int(0),
            op: WriteOp::Delete,
        }],
    };
    // The encoding of `Txns(vec![one])` is: variant 5, length 1, `one`.
    let single = encode_frame(&Message::Txns(vec![one])).unwrap();
    let txn = &single[4 + 2..];
    let n = (bytes - 16) / txn.len();
    let mut payload = vec![5u8];
    varint(n as u64, &mut payload);
    for _ in 0..n {
        payload.extend_from_slice(txn);
    }
    frame(&payload)
}

/// A hello of about `bytes` bytes: millions of empty table wants, each 4
/// bytes on the wire and some 50 in memory.
fn huge_hello_frame(name: &str, bytes: usize) -> Vec<u8> {
    let Message::Hello(mut h) = hello(name) else {
        unreachable!()
    };
    let want = TableWant {
        table: String::new(),
        resume_after: 0,
        since_ms: None,
        initial_sync_done: false,
    };
    h.wants = vec![want; bytes / 4];
    encode_frame(&Message::Hello(h)).unwrap()
}

/// The memory ceiling of a `tidelog serve` under the hostile frames of an
/// adversarial run: 16 MiB hellos from a node whose certificate the CA
/// signed but that is not a configured peer (one connection, then twelve
/// at once), and a 16 MiB frame of tiny deletes from a configured peer.
/// Before hellos were bounded and decoding was budgeted, these took the
/// process to about 216, 511 and 311 MiB.
#[test]
fn hostile_frames_stay_within_the_servers_memory_ceiling() {
    use cli_common::{make_certs, Serve};
    const MIB: u64 = 1024;
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_certs(tmp.path(), &["cloud", "edge-2", "stranger"]);
    let config = tmp.path().join("cloud.toml");
    std::fs::write(
        &config,
        r#"
node_name = "cloud"
data_dir = "cloud-data"
listen = "127.0.0.1:0"
status_interval_secs = 1

[tls]
cert = "pki/cloud.pem"
key = "pki/cloud.key"
ca = "pki/ca.pem"

[[tables]]
name = "alerts"

[[peers]]
name = "edge-2"
tables = [{ table = "alerts", subscribe = true }]
"#,
    )
    .unwrap();
    let mut serve = Serve::start(&config);
    let addr = serve.ready();
    let pid = serve.pid();
    let identity = |node: &str| {
        tls::TlsIdentity::from_files(
            pki.join(format!("{node}.pem")),
            pki.join(format!("{node}.key")),
            pki.join("ca.pem"),
        )
        .client_config()
        .unwrap()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hello_frame = Arc::new(huge_hello_frame("stranger", 16 * 1024 * 1024 - 64));
    assert!(hello_frame.len() <= DEFAULT_MAX_FRAME_BYTES + 4);
    // Sends the huge hello as `stranger`; returns how the server answered.
    let flood = |conns: usize| {
        let tasks: Vec<_> = (0..conns)
            .map(|_| {
                let (cfg, addr, frame) = (identity("stranger"), addr.clone(), hello_frame.clone());
                rt.spawn(async move {
                    let mut s = tls::connect(&addr, "cloud", cfg, T).await.unwrap();
                    // The server may close mid-write: that is the point.
                    let _ = s.write_all(&frame).await;
                    let _ = s.flush().await;
                    // Patient: a server that does decode such hellos takes
                    // long on a loaded machine, and its peak must be seen.
                    let answer = read_message(&mut s, DEFAULT_MAX_FRAME_BYTES);
                    match tokio::time::timeout(3 * T, answer).await {
                        Err(_) => panic!("server neither answered nor closed"),
                        Ok(Ok(Some(Message::Hello(h)))) => panic!("server accepted: {h:?}"),
                        Ok(Ok(Some(m))) => format!("{m:?}"),
                        Ok(Ok(None)) => "closed".into(),
                        Ok(Err(e)) => format!("error: {e}"),
                    }
                })
            })
            .collect();
        for t in tasks {
            let outcome = rt.block_on(t).unwrap();
            eprintln!("16 MiB hello from a stranger: {outcome}");
        }
    };
    let baseline = peak_rss_kib(pid);
    // A configured peer's 16 MiB frame of tiny deletes.
    let deletes = tiny_deletes_frame(16 * 1024 * 1024 - 64, RAW_NODE_ID);
    assert!(deletes.len() <= DEFAULT_MAX_FRAME_BYTES + 4);
    let reason = rt.block_on(async {
        let mut s = tls::connect(&addr, "cloud", identity("edge-2"), T)
            .await
            .unwrap();
        write_message(&mut s, &hello("edge-2")).await.unwrap();
        let m = tokio::time::timeout(T, read_message(&mut s, DEFAULT_MAX_FRAME_BYTES))
            .await
            .unwrap()
            .unwrap()
            .expect("the cloud accepts edge-2");
        expect_hello(m).unwrap();
        make_alerts_live(&mut s).await;
        let _ = s.write_all(&deletes).await;
        let _ = s.flush().await;
        // Until the server has dealt with the frame one way or another
        // (a server that decodes it acknowledges it), so its peak is seen.
        loop {
            let answer = read_message(&mut s, DEFAULT_MAX_FRAME_BYTES);
            match tokio::time::timeout(3 * T, answer).await {
                Err(_) => panic!("server neither answered nor closed"),
                Ok(Ok(Some(Message::Ack { upto_seq }))) if upto_seq > 0 => {
                    return format!("acknowledged up to {upto_seq}")
                }
                Ok(Ok(Some(Message::Goodbye { reason }))) => return reason,
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => return "closed".into(),
                Ok(Err(e)) => return format!("error: {e}"),
            }
        }
    });
    drop(deletes);
    eprintln!("16 MiB of tiny deletes: {reason}");
    let after_deletes = peak_rss_kib(pid);
    flood(1);
    let after_one = peak_rss_kib(pid);
    flood(12);
    let after_twelve = peak_rss_kib(pid);
    eprintln!(
        "tidelog serve peak RSS: baseline {} MiB, after a 16 MiB frame of tiny deletes {} MiB, after one 16 MiB stranger hello {} MiB, after twelve at once {} MiB",
        baseline / MIB,
        after_deletes / MIB,
        after_one / MIB,
        after_twelve / MIB,
    );
    // Refused for what they were, not for some side effect.
    serve.wait_line("the stranger's hello refused", T, |l| {
        l.contains("refused replication link") && l.contains("exceeds the limit of 65536 bytes")
    });
    serve.wait_line("the deletes refused", T, |l| {
        l.contains("edge-2") && l.contains("decodes to more than")
    });
    // Unauthorised connections: each reads at most the 64 KiB hello limit.
    assert!(
        after_twelve <= after_deletes + 16 * MIB,
        "stranger hellos took the peak from {after_deletes} KiB to {after_twelve} KiB"
    );
    // An authorised link: the 16 MiB frame buffer plus the decode budget
    // (2 x 16 MiB), and slack for TLS buffers and the allocator.
    assert!(
        after_deletes <= baseline + (16 + 32 + 16) * MIB,
        "tiny deletes took the peak from {baseline} KiB to {after_deletes} KiB"
    );
    serve.kill();
}

#[test]
fn every_refused_write_is_named_to_the_sender_before_the_ack_that_covers_it() {
    let f = fixture();
    let ahead = stamp_ahead(600_000);
    let txns = vec![
        wire_txn(
            1,
            now_stamp(),
            vec![put("thresholds", "s1", r#"{"id":"s1","max":0}"#)],
        ),
        wire_txn(
            2,
            now_stamp(),
            vec![put("alerts", "fine", r#"{"id":"fine"}"#)],
        ),
        wire_txn(3, ahead, vec![put("alerts", "ahead", r#"{"id":"ahead"}"#)]),
        wire_txn(
            4,
            now_stamp(),
            vec![put("alerts", "bad-key", r#"{"id":"other"}"#)],
        ),
    ];
    let before_ack = f.rt.block_on(send_as_edge2(&f, txns));
    let refused: Vec<(u64, String, RefusalKind)> = before_ack
        .into_iter()
        .filter_map(|m| match m {
            Message::Refusals(rs) => Some(rs),
            _ => None,
        })
        .flatten()
        .map(|r| (r.seq, r.table, r.kind))
        .collect();
    assert_eq!(
        refused,
        [
            (1, "thresholds".to_string(), RefusalKind::NotSubscribed),
            (3, "alerts".to_string(), RefusalKind::ClockSkew),
            (4, "alerts".to_string(), RefusalKind::InvalidRecord),
        ]
    );
    assert!(f.cloud.get("alerts", "fine").unwrap().is_some());
    // The cloud's status keeps them per table, apart from `last_error`.
    let s = f.cloud.peer_status("edge-2").unwrap();
    let shown: Vec<(&str, &str, &str, u64)> = s
        .refusals
        .iter()
        .map(|r| {
            (
                r.direction.as_str(),
                r.table.as_str(),
                r.kind.as_str(),
                r.count,
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("inbound", "alerts", "invalid_record", 2),
            ("inbound", "thresholds", "not_subscribed", 1),
        ],
        "{s:?}"
    );
    f.good_edge_unharmed("after-refusals");
}

/// The sending half: a receiver (here a raw one, saying what a tidelog
/// receiver says when it does not take a table) refuses one transaction
/// and acknowledges past it; the cloud's receipt for it fails with the
/// reason, a later transaction's receipt passes.
#[test]
fn a_receipt_fails_for_a_transaction_the_receiver_refused_though_it_acknowledged_past_it() {
    let f = fixture();
    f.cloud
        .update_peer(PeerConfig::new("edge-3").table(TableFlow::publish("thresholds")))
        .unwrap();
    let wants = |m: &Message| match m {
        Message::Txns(t) => t.iter().map(|t| t.seq).max().map(|s| (s, s)),
        Message::TxnsUpTo { txns, upto_seq } => {
            txns.iter().map(|t| t.seq).max().map(|s| (s, *upto_seq))
        }
        _ => None,
    };
    // Reads until a frame carries transaction `seq`; returns the position
    // that frame lets the receiver acknowledge.
    async fn read_until<S: AsyncRead + Unpin>(
        s: &mut S,
        seq: u64,
        wants: impl Fn(&Message) -> Option<(u64, u64)>,
    ) -> u64 {
        loop {
            let m = tokio::time::timeout(T, read_message(s, DEFAULT_MAX_FRAME_BYTES))
                .await
                .expect("the cloud sent nothing")
                .unwrap()
                .expect("the cloud closed the link");
            if let Some((last, upto)) = wants(&m) {
                if last >= seq {
                    return upto.max(seq);
                }
            }
        }
    }
    let (mut s, refused) = f.rt.block_on(async {
        let cfg = f.identity("edge-3").client_config().unwrap();
        let mut s = tls::connect(&f.addr, "cloud", cfg, T).await.unwrap();
        let mut h = match hello("edge-3") {
            Message::Hello(h) => h,
            _ => unreachable!(),
        };
        h.wants = vec![TableWant {
            table: "thresholds".into(),
            resume_after: 0,
            since_ms: None,
            initial_sync_done: false,
        }];
        write_message(&mut s, &Message::Hello(h)).await.unwrap();
        loop {
            let m = tokio::time::timeout(T, read_message(&mut s, DEFAULT_MAX_FRAME_BYTES))
                .await
                .unwrap()
                .unwrap()
                .expect("the cloud closed the link");
            if matches!(m, Message::SyncChunk { done: true, .. }) {
                break;
            }
        }
        let refused = f
            .cloud
            .upsert("thresholds", json!({"id": "s9", "max": 9}))
            .unwrap();
        let upto = read_until(&mut s, refused.seq, wants).await;
        let r = TxnRefusal {
            seq: refused.seq,
            table: "thresholds".into(),
            stamp: refused.stamp,
            kind: RefusalKind::NotSubscribed,
            reason: "`edge-3` does not subscribe to table `thresholds` from `cloud`".into(),
        };
        write_message(&mut s, &Message::Refusals(vec![r]))
            .await
            .unwrap();
        write_message(&mut s, &Message::Ack { upto_seq: upto })
            .await
            .unwrap();
        (s, refused)
    });
    match f.cloud.wait_for_ack("edge-3", refused.seq, T) {
        Err(Error::Refused {
            peer,
            table,
            seq,
            kind: RefusalKind::NotSubscribed,
            reason,
        }) => {
            assert_eq!(
                (peer.as_str(), table.as_str(), seq),
                ("edge-3", "thresholds", refused.seq)
            );
            assert!(reason.contains("does not subscribe"), "{reason}");
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    wait_until("the ack past the refused transaction", T, || {
        f.cloud.peer_status("edge-3").unwrap().acked_seq >= refused.seq
    });
    let st = f.cloud.peer_status("edge-3").unwrap();
    let out: Vec<_> = st
        .refusals
        .iter()
        .filter(|r| r.direction == "outbound")
        .collect();
    assert_eq!(out.len(), 1, "{st:?}");
    assert_eq!(
        (
            out[0].table.as_str(),
            out[0].kind.as_str(),
            out[0].seq,
            out[0].stamp
        ),
        ("thresholds", "not_subscribed", refused.seq, refused.stamp)
    );
    // A later transaction the receiver takes gets its receipt.
    let later = f
        .cloud
        .upsert("thresholds", json!({"id": "s10", "max": 10}))
        .unwrap();
    f.rt.block_on(async {
        let upto = read_until(&mut s, later.seq, wants).await;
        write_message(&mut s, &Message::Ack { upto_seq: upto })
            .await
            .unwrap();
    });
    f.cloud.wait_for_ack("edge-3", later.seq, T).unwrap();
    assert!(matches!(
        f.cloud.wait_for_ack("edge-3", refused.seq, T),
        Err(Error::Refused { .. })
    ));
    f.good_edge_unharmed("after-refused-receipt");
}

/// Reads until the cloud reports a delta miss for `seq`; an
/// acknowledgement of it first would mean a frame with a missing base was
/// applied.
async fn until_delta_miss<S: AsyncRead + Unpin>(s: &mut S, seq: u64) -> String {
    loop {
        let m = tokio::time::timeout(T, read_message(s, DEFAULT_MAX_FRAME_BYTES))
            .await
            .expect("no delta miss from the cloud")
            .unwrap()
            .expect("cloud closed the link instead of reporting the miss");
        match m {
            Message::DeltaMiss { seq: got, reason } if got == seq => return reason,
            Message::Ack { upto_seq } if upto_seq >= seq => {
                panic!("the cloud acknowledged a delta it had no base for")
            }
            Message::Goodbye { reason } => panic!("cloud closed the link: {reason}"),
            _ => {}
        }
    }
}

#[test]
fn hostile_deltas_are_misses_that_apply_and_acknowledge_nothing() {
    let f = fixture();
    let delta = |seq: u64, stamp: Stamp, key: &str, back: u64, script: Vec<u8>, lits: &str| {
        wire_txn(
            seq,
            stamp,
            vec![LogWrite {
                table: "alerts".into(),
                key: Key::Str(key.into()),
                op: WriteOp::Delta {
                    base_back: back,
                    base_node: None,
                    created: None,
                    script,
                    lits: lits.into(),
                },
            }],
        )
    };
    // A record edge-2 wrote, so a base exists for the cases that need one.
    let base = now_stamp();
    let base_json = r#"{"id":"d-1","level":"high","v":1}"#;
    f.rt.block_on(async {
        let (mut s, _) = f.open_link("edge-2").await;
        make_alerts_live(&mut s).await;
        let first = wire_txn(1, base, vec![put("alerts", "d-1", base_json)]);
        write_message(&mut s, &Message::Txns(vec![first]))
            .await
            .unwrap();
        until_acked(&mut s, 1).await;
        let _ = s.shutdown().await;
    });
    let before = table_state(&f.cloud, "alerts");
    let later = Stamp {
        time: base.time + (5 << 16),
        node: RAW_NODE_ID,
    };
    let back = later.time - base.time;
    let cases = vec![
        (
            "no such record",
            delta(2, later, "d-none", back, vec![], ""),
        ),
        (
            "another version",
            delta(2, later, "d-1", back - 1, vec![2, 0], ""),
        ),
        (
            "a base before time 0",
            delta(2, later, "d-1", u64::MAX, vec![2, 0], ""),
        ),
        (
            "a copy past the base",
            delta(2, later, "d-1", back, vec![40 << 1, 1], ""),
        ),
        (
            "a literal past the literals",
            delta(2, later, "d-1", back, vec![(9 << 1) | 1], "ab"),
        ),
        (
            "a truncated script",
            delta(2, later, "d-1", back, vec![0x80], ""),
        ),
        (
            "a record past max_record_bytes",
            // A run of the base's 3 members, 40,000 times: 1.3 MB.
            delta(2, later, "d-1", back, [6u8, 0].repeat(40_000), ""),
        ),
    ];
    for (i, (what, bad)) in cases.into_iter().enumerate() {
        // The frame's first transaction is fine: nothing of the frame
        // may apply all the same.
        let good = wire_txn(
            1,
            later,
            vec![put(
                "alerts",
                &format!("ok-{i}"),
                &format!(r#"{{"id":"ok-{i}"}}"#),
            )],
        );
        let reason = f.rt.block_on(async {
            let (mut s, _) = f.open_link("edge-2").await;
            make_alerts_live(&mut s).await;
            write_message(&mut s, &Message::Txns(vec![good, bad]))
                .await
                .unwrap();
            let reason = until_delta_miss(&mut s, 2).await;
            let _ = s.shutdown().await;
            reason
        });
        eprintln!("{what}: {reason}");
        assert!(reason.contains("table `alerts`"), "{what}: {reason}");
        let s = f.cloud.peer_status("edge-2").unwrap();
        assert_eq!(s.traffic.delta_misses, i as u64 + 1, "{what}");
        assert_eq!(table_state(&f.cloud, "alerts"), before, "{what}: applied");
    }
    f.good_edge_unharmed("after-hostile-deltas");
}

#[test]
fn a_delta_to_a_node_that_refused_deltas_closes_the_link_and_applies_nothing() {
    let f = fixture();
    f.cloud
        .update_peer(
            PeerConfig::new("edge-2")
                .deltas(false)
                .table(TableFlow::subscribe("alerts")),
        )
        .unwrap();
    let before = table_state(&f.cloud, "alerts");
    let stamp = now_stamp();
    let frame = Message::Txns(vec![
        txn(1, stamp, "fine-before-the-delta"),
        wire_txn(
            2,
            stamp,
            vec![LogWrite {
                table: "alerts".into(),
                key: Key::Str("d".into()),
                op: WriteOp::Delta {
                    base_back: 1,
                    base_node: None,
                    created: None,
                    script: vec![],
                    lits: String::new(),
                },
            }],
        ),
    ]);
    let hello_deltas = f.rt.block_on(async {
        let (mut s, cloud_hello) = f.open_link("edge-2").await;
        make_alerts_live(&mut s).await;
        write_message(&mut s, &frame).await.unwrap();
        // No acknowledgement may come; the link ends.
        loop {
            match tokio::time::timeout(T, read_message(&mut s, DEFAULT_MAX_FRAME_BYTES))
                .await
                .expect("the cloud kept a link that sent unwanted deltas")
            {
                Ok(Some(Message::Ack { upto_seq })) if upto_seq >= 1 => {
                    panic!("acknowledged a frame with an unwanted delta")
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        cloud_hello.deltas
    });
    assert!(!hello_deltas, "the cloud's hello must refuse deltas");
    let err = f.wait_link_error("edge-2", "takes none");
    assert!(err.contains("nothing of that frame applied"), "{err}");
    assert_eq!(table_state(&f.cloud, "alerts"), before);
    f.good_edge_unharmed("after-unwanted-deltas");
}

/// A compressed frame of `msg` (marker, codec, declared size, zstd data),
/// as a peer that negotiated compression sends it.
fn compressed_payload(msg: &Message) -> Vec<u8> {
    let plain = encode_frame(msg).unwrap();
    let mut c = tidelog::net::compress::FrameCompressor::new(3).unwrap();
    c.compress(&plain[4..])
        .unwrap()
        .expect("the test frame must be large enough to compress")
        .to_vec()
}

fn many_alerts(first_seq: u64) -> Message {
    let stamp = now_stamp();
    Message::Txns(
        (0..40)
            .map(|i| txn(first_seq + i, stamp, &format!("zstd-{first_seq}-{i}")))
            .collect(),
    )
}

/// Over real TLS to a running node: each hostile compressed frame is a
/// typed error that closes only that link and applies nothing; a good one
/// on a link that negotiated zstd is applied and acknowledged. A node
/// takes compressed frames when its own hello offered them (what the
/// peer's hello says governs only what the node sends), so "not
/// negotiated" is a cloud set to `compression: none`.
#[test]
fn hostile_compressed_frames_close_only_that_link() {
    let f = fixture();
    let good = compressed_payload(&many_alerts(1));
    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut p = good.clone();
        edit(&mut p);
        p
    };
    // (the cloud takes zstd, payload, what the cloud's link error says)
    let cases: Vec<(bool, Vec<u8>, &str)> = vec![
        (false, good.clone(), "did not negotiate compression"),
        (true, with(&|p| p[1] = 7), "unknown codec 7"),
        (
            true,
            with(&|p| p[2..6].copy_from_slice(&u32::MAX.to_be_bytes())),
            "over the link's limit",
        ),
        (
            true,
            with(&|p| {
                let declared = u32::from_be_bytes(p[2..6].try_into().unwrap()) - 64;
                p[2..6].copy_from_slice(&declared.to_be_bytes());
            }),
            "does not decompress to its declared",
        ),
        (
            true,
            with(&|p| p[6..].iter_mut().for_each(|b| *b ^= 0x5A)),
            "does not decompress to its declared",
        ),
    ];
    let before = table_state(&f.cloud, "alerts");
    for (cloud_zstd, payload, needle) in cases {
        let c = if cloud_zstd {
            Compression::Zstd
        } else {
            Compression::None
        };
        f.cloud
            .update_peer(
                PeerConfig::new("edge-2")
                    .compression(c)
                    .table(TableFlow::subscribe("alerts")),
            )
            .unwrap();
        f.rt.block_on(async {
            let cfg = f.identity("edge-2").client_config().unwrap();
            let mut s = tls::connect(&f.addr, "cloud", cfg, T).await.unwrap();
            let Message::Hello(mut h) = hello("edge-2") else {
                unreachable!()
            };
            h.accepts_zstd = true;
            write_message(&mut s, &Message::Hello(h)).await.unwrap();
            let m = tokio::time::timeout(T, read_message(&mut s, DEFAULT_MAX_FRAME_BYTES))
                .await
                .unwrap()
                .unwrap()
                .expect("cloud closed instead of saying hello");
            assert_eq!(expect_hello(m).unwrap().accepts_zstd, cloud_zstd);
            make_alerts_live(&mut s).await;
            s.write_all(&frame(&payload)).await.unwrap();
            s.flush().await.unwrap();
            loop {
                match tokio::time::timeout(T, read_message(&mut s, DEFAULT_MAX_FRAME_BYTES))
                    .await
                    .expect("the cloud kept a link that sent a hostile compressed frame")
                {
                    Ok(Some(Message::Ack { upto_seq })) if upto_seq >= 1 => {
                        panic!("acknowledged a hostile compressed frame ({needle})")
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        });
        f.wait_link_error("edge-2", needle);
        assert_eq!(table_state(&f.cloud, "alerts"), before, "{needle}");
    }
    // The happy case beside them: negotiated, well formed, applied.
    let t0 = f.cloud.peer_status("edge-2").unwrap().traffic;
    f.rt.block_on(async {
        let cfg = f.identity("edge-2").client_config().unwrap();
        let mut s = tls::connect(&f.addr, "cloud", cfg, T).await.unwrap();
        let Message::Hello(mut h) = hello("edge-2") else {
            unreachable!()
        };
        h.accepts_zstd = true;
        write_message(&mut s, &Message::Hello(h)).await.unwrap();
        let m = tokio::time::timeout(T, read_message(&mut s, DEFAULT_MAX_FRAME_BYTES))
            .await
            .unwrap()
            .unwrap()
            .expect("cloud closed instead of saying hello");
        expect_hello(m).unwrap();
        make_alerts_live(&mut s).await;
        s.write_all(&frame(&good)).await.unwrap();
        s.flush().await.unwrap();
        until_acked(&mut s, 40).await;
    });
    let after = table_state(&f.cloud, "alerts");
    assert_eq!(after.len(), before.len() + 40);
    // Counted after decompression as raw, as read as wire.
    let t = f.cloud.peer_status("edge-2").unwrap().traffic;
    assert!(
        t.bytes_in_raw - t0.bytes_in_raw > t.bytes_in_wire - t0.bytes_in_wire,
        "{t0:?} {t:?}"
    );
    f.good_edge_unharmed("after-hostile-compressed-frames");
}
