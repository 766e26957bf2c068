//! One replication link: dialing (with backoff) or accepting, the hello
//! exchange, then three concurrent halves until the link fails:
//!
//! - the sender (`sender.rs`) streams this node's log to the peer, filtered
//!   to what the peer asked for and this node publishes to it (after an
//!   initial sync of each table that needs one);
//! - the receiver (`receiver.rs`) applies what the peer sends, each frame in
//!   one atomic commit together with the resume cursor, and acknowledges it;
//! - the writer owns the socket's write half and sends heartbeats when idle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::admit;
use super::config::{Compression, PeerConfig};
use super::cursor::PeerCursor;
use super::link::{blocking, BoxIo, BulkMessage, Reader, Writer};
use super::peer::PeerState;
use super::receiver::Receiver;
use super::runtime::Replicator;
use super::sender::Sender;
use super::stall::{self, Activity};
use crate::error::{Error, Result};
use crate::local::db::Database;
use crate::local::hlc::wall_millis;
use crate::net::compress::level_for_rate;
use crate::net::tls;
use crate::net::wire::{
    expect_hello, read_message, FrameReader, FrameWriter, Hello, Message, TableWant,
    HELLO_MAX_BYTES, PROTOCOL_VERSION,
};
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// How long a dial in progress may finish when the database closes or the
/// peer's settings change, so that a link the peer already counts as up
/// ends with a goodbye.
const DIAL_GRACE: Duration = Duration::from_millis(200);

/// A link that stayed up this long resets the redial backoff.
const STABLE_LINK: Duration = Duration::from_secs(10);

/// Starts (or restarts) `peer`'s dialer on the engine's runtime.
pub(crate) fn start_dialer(r: &Arc<Replicator>, peer: &Arc<PeerState>) {
    let task = r.handle.spawn(dial_loop(r.clone(), peer.clone()));
    peer.set_dialer(task.abort_handle());
}

/// Keeps a link to a peer that has an address: dial, run, back off, redial.
async fn dial_loop(r: Arc<Replicator>, peer: Arc<PeerState>) {
    let mut backoff = r.opts.backoff_initial;
    let mut generation = peer.generation.subscribe();
    let mut closing = r.closing.subscribe();
    let mut jitter = Jitter::for_peer(&peer.name());
    // Attempts since the last stable link or backoff sleep: with several
    // hubs the backoff waits once per round of all of them, so a dead hub
    // costs one connect, not a backoff, before the next is tried.
    let mut tried_in_round = 0usize;
    loop {
        generation.borrow_and_update();
        let addrs = peer.config().dial_addresses();
        if addrs.is_empty() {
            return;
        }
        let at = peer.dial_at.load(Ordering::Relaxed) % addrs.len();
        peer.dial_at.store(at, Ordering::Relaxed);
        let addr = addrs[at].clone();
        let started = Instant::now();
        // Still unaware of a settings change that lands during the dial, so
        // a link the dial finishes afterwards ends at once, with a goodbye.
        let settings_seen = generation.clone();
        let mut settings_changed = false;
        let dial = dial_once(&r, &peer, &addr);
        tokio::pin!(dial);
        // Closing stops a dial (an unreachable peer must not hold up
        // `close`), not a link: that says goodbye itself (`write_loop`).
        let outcome = tokio::select! {
            biased;
            () = until_closing(&mut closing) => {
                // A dial about to finish may be a link the peer already
                // counts as up (it sent its hello): finish it, so that it
                // says goodbye instead of vanishing.
                match tokio::time::timeout(DIAL_GRACE, &mut dial).await {
                    Ok(Ok(link)) => Some(run(&r, &peer, link, generation.clone()).await),
                    _ => return,
                }
            }
            // A link ends itself when the peer's settings change or it is
            // removed, with a goodbye that says so (see `run`).
            res = &mut dial => Some(match res {
                Ok(link) => run(&r, &peer, link, generation.clone()).await,
                Err(e) => {
                    // Only the dial's own failures: a link that was up and
                    // then failed had a working handshake.
                    if matches!(e, Error::Tls(_)) {
                        peer.counters.lock().tls_failures += 1;
                    }
                    Err(e)
                }
            }),
            // As when closing: the peer may already count this dial as up.
            _ = generation.changed() => {
                settings_changed = true;
                match tokio::time::timeout(DIAL_GRACE, &mut dial).await {
                    Ok(Ok(link)) => Some(run(&r, &peer, link, settings_seen).await),
                    _ => None,
                }
            }
        };
        if peer.is_removed() {
            peer.set_disconnected(None);
            return;
        }
        if settings_changed || outcome.is_none() || generation.has_changed().unwrap_or(false) {
            peer.set_disconnected(Some("peer settings changed; reconnecting".into()));
            backoff = r.opts.backoff_initial;
            continue;
        }
        match outcome {
            Some(Err(e)) => peer.set_disconnected(Some(e.to_string())),
            _ => peer.set_disconnected(None),
        }
        if started.elapsed() >= STABLE_LINK {
            backoff = r.opts.backoff_initial;
            tried_in_round = 0;
        }
        // A failed dial or a dropped link moves to the next hub; the one
        // that works is kept (the link ended, so this one did not).
        peer.dial_at
            .store((at + 1) % addrs.len(), Ordering::Relaxed);
        tried_in_round += 1;
        if tried_in_round < addrs.len() {
            continue;
        }
        tried_in_round = 0;
        let delay = jitter.spread(backoff);
        tokio::select! {
            () = until_closing(&mut closing) => return,
            _ = tokio::time::sleep(delay) => {}
            _ = generation.changed() => { backoff = r.opts.backoff_initial; continue; }
        }
        backoff = (backoff * 2).min(r.opts.backoff_max);
    }
}

/// A link both sides said hello on, dialed or accepted, ready to run.
struct Link {
    db: Database,
    reader: Reader,
    writer: Writer,
    hello: Hello,
    cursor: PeerCursor,
    /// What this node's hello said: whether it accepts other origins'
    /// writes from the peer on this link.
    relays_accepted: bool,
    /// DNS names of the peer's verified certificate (row filters'
    /// `$peer.dns`); none on a plaintext link.
    peer_dns: Vec<String>,
}

async fn dial_once(r: &Arc<Replicator>, peer: &Arc<PeerState>, addr: &str) -> Result<Link> {
    let name = peer.name();
    let mut peer_dns = Vec::new();
    let io: BoxIo = match &r.client_tls {
        Some(cfg) => {
            let s = tls::connect(addr, &name, cfg.clone(), r.opts.connect_timeout).await?;
            peer_dns = super::route::cert_dns_names(tls::peer_certificate(s.get_ref().1));
            Box::new(s)
        }
        None => {
            let tcp = tokio::time::timeout(r.opts.connect_timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| Error::Peer(format!("connecting to `{name}` at {addr} timed out")))?
                .map_err(|e| Error::Peer(format!("cannot connect to `{name}` at {addr}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            Box::new(tcp)
        }
    };
    let db = r.db()?;
    let (rd, wr) = tokio::io::split(io);
    // The hello is small; the full limit only once it checked out.
    let mut reader = FrameReader::new(rd, HELLO_MAX_BYTES);
    let mut writer = FrameWriter::new(wr, r.opts.max_frame_bytes);
    let cursor = load_cursor(&db, &name).await?;
    let ours = our_hello(r, &db, peer, &cursor);
    let relays_accepted = ours.relays_accepted;
    writer.write_message(&Message::Hello(ours)).await?;
    let hello = tokio::time::timeout(r.opts.connect_timeout, reader.read_message())
        .await
        .map_err(|_| {
            Error::Peer(format!(
                "`{name}` sent no hello within {:?}",
                r.opts.connect_timeout
            ))
        })??
        .ok_or_else(|| {
            Error::Peer(format!(
                "`{name}` closed the connection before saying hello"
            ))
        })?;
    // A node that refuses the link says why in a goodbye instead of a
    // hello (not a peer of it, no rule matches): that is what status shows.
    if let Message::Goodbye { reason } = &hello {
        return Err(Error::Peer(format!("`{name}` refused the link: {reason}")));
    }
    let hello = expect_hello(hello)?;
    if hello.node_name != name {
        return Err(Error::Peer(format!(
            "dialed `{name}` at {addr} but the node there says it is `{}`",
            hello.node_name
        )));
    }
    if let Err(e) = check_node_id(r, &db, peer, hello.node_id) {
        let _ = writer
            .write_message(&Message::Goodbye {
                reason: e.to_string(),
            })
            .await;
        return Err(e);
    }
    reader.set_max_frame_bytes(r.opts.max_frame_bytes);
    Ok(Link {
        db,
        reader,
        writer,
        hello,
        cursor,
        relays_accepted,
        peer_dns,
    })
}

/// A peer may not claim this node's own node id, nor one another configured
/// peer is known by: its writes would pass for that node's (see the origin
/// rules in `receiver.rs`), and copies would diverge for good. Counted as an
/// origin violation on `peer` and noted as its last error.
fn check_node_id(r: &Replicator, db: &Database, peer: &PeerState, node_id: u64) -> Result<()> {
    match admit::node_id_taken(r, db, &peer.name(), node_id) {
        None => {
            // So conflict-log entries name the peer's writes by its name.
            db.learn_node_name(node_id, &peer.name());
            Ok(())
        }
        Some(reason) => {
            let mut c = peer.counters.lock();
            c.origin_violations += 1;
            c.last_error = Some(reason.clone());
            Err(Error::Peer(reason))
        }
    }
}

/// Accepts links until the listener is aborted.
pub(crate) async fn accept_loop(r: Arc<Replicator>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((tcp, from)) => {
                let r2 = r.clone();
                let accepting = Accepting::new(&r);
                tokio::spawn(async move {
                    if let Err(e) = accept_one(r2, tcp).await {
                        log::warn!(target: "tidelog::repl", "refused replication link from {from}: {e}");
                    }
                    drop(accepting);
                });
            }
            // Out of file descriptors and the like: wait instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Counts a failed handshake of a connection dialed in. Any failure of
/// `tls::accept` counts (a client not speaking TLS, a certificate from
/// another CA, a handshake that timed out): each is a connection that
/// could not become a link for a TLS reason.
fn note_accepted_tls_failure(r: &Replicator) {
    r.accepted_tls_failures.fetch_add(1, Ordering::Relaxed);
}

/// Counts an accepted connection in `Replicator::accepting` until dropped.
struct Accepting(Arc<Replicator>);

impl Accepting {
    fn new(r: &Arc<Replicator>) -> Accepting {
        r.accepting.fetch_add(1, Ordering::AcqRel);
        Accepting(r.clone())
    }
}

impl Drop for Accepting {
    fn drop(&mut self) {
        self.0.accepting.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn accept_one(r: Arc<Replicator>, tcp: TcpStream) -> Result<()> {
    let _ = tcp.set_nodelay(true);
    let max = r.opts.max_frame_bytes;
    let deadline = r.opts.connect_timeout;
    let first_hello = |m: Option<Message>| -> Result<Hello> {
        Ok(expect_hello(m.ok_or_else(|| {
            Error::Peer("closed before saying hello".into())
        })?)?)
    };
    let (io, hello, cert): (BoxIo, Hello, Option<CertificateDer<'static>>) = match &r.server_tls {
        Some(cfg) => {
            let mut s = tls::accept(tcp, cfg.clone(), deadline)
                .await
                .inspect_err(|_| note_accepted_tls_failure(&r))?;
            // Small until the peer list says who this is: a node with a
            // CA-signed certificate that is not a peer costs no more.
            let msg = tokio::time::timeout(deadline, read_message(&mut s, HELLO_MAX_BYTES))
                .await
                .map_err(|_| Error::Peer("no hello after the TLS handshake".into()))?
                .map_err(Error::from)?;
            let hello = first_hello(msg)?;
            // The certificate must name the node the peer says it is.
            tls::verify_peer_node(s.get_ref().1, &hello.node_name)
                .inspect_err(|_| note_accepted_tls_failure(&r))?;
            // Kept for the peer rules' certificate condition.
            let cert = tls::peer_certificate(s.get_ref().1).cloned();
            (Box::new(s), hello, cert)
        }
        None => {
            let mut tcp = tcp;
            let msg = tokio::time::timeout(deadline, read_message(&mut tcp, HELLO_MAX_BYTES))
                .await
                .map_err(|_| Error::Peer("no hello".into()))??;
            (Box::new(tcp), first_hello(msg)?, None)
        }
    };
    let (rd, wr) = tokio::io::split(io);
    let mut writer = FrameWriter::new(wr, max);
    let db = r.db()?;
    let peer = match admit::find_or_admit(&r, &db, &hello, cert.as_ref()).await {
        Ok(p) => p,
        Err(reason) => return Err(refuse(&mut writer, reason).await),
    };
    // Subscribed before the removal check: `remove` marks the peer removed
    // and then bumps its generation, so a removal from here on ends this
    // link with a goodbye, and one before it refuses the link.
    let generation = peer.generation.subscribe();
    if peer.is_removed() {
        let reason = format!(
            "`{}` is not a configured peer of `{}`",
            hello.node_name, r.node_name
        );
        return Err(refuse(&mut writer, reason).await);
    }
    if let Err(e) = check_node_id(&r, &db, &peer, hello.node_id) {
        let _ = writer
            .write_message(&Message::Goodbye {
                reason: e.to_string(),
            })
            .await;
        return Err(e);
    }
    let mut cursor = load_cursor(&db, &hello.node_name).await?;
    // Void before the hello, not only in `run`: this hello's resume points
    // would otherwise ask a reset peer for its new log from the old one's
    // positions.
    if cursor.peer_node_id != hello.node_id {
        cursor = void_cursor(&hello.node_name, hello.node_id, cursor);
    }
    // Where another hub already put the peer's writes into a shared sink
    // destination, this hub's hello asks only for what follows.
    let cursor = super::sunk::seed_cursor(
        &r.sunk,
        &hello.node_name,
        hello.node_id,
        &subscribed_tables(&peer),
        cursor,
    )
    .await;
    let ours = our_hello(&r, &db, &peer, &cursor);
    let relays_accepted = ours.relays_accepted;
    writer.write_message(&Message::Hello(ours)).await?;
    peer.contact.touch();
    admit::note_contact(db.clone(), peer.clone()).await;
    let reader = FrameReader::new(rd, max);
    // A newer link from the same peer replaces an older (maybe half-open) one.
    let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
    let peer2 = peer.clone();
    let r2 = r.clone();
    let link = Link {
        db,
        reader,
        writer,
        hello,
        cursor,
        relays_accepted,
        peer_dns: super::route::cert_dns_names(cert.as_ref()),
    };
    let task = tokio::spawn(async move {
        let db = link.db.clone();
        let res = run(&r2, &peer2, link, generation).await;
        // A link that was replaced by a newer one must not mark the peer
        // disconnected while the newer one is up.
        if peer2.clear_session(id) {
            peer2.set_disconnected(res.err().map(|e| e.to_string()));
            admit::note_contact(db, peer2.clone()).await;
        }
    });
    peer.set_session(id, task.abort_handle());
    let _ = task.await;
    Ok(())
}

/// Says why the link is refused, and returns it as the error.
async fn refuse(writer: &mut Writer, reason: String) -> Error {
    let _ = writer
        .write_message(&Message::Goodbye {
            reason: reason.clone(),
        })
        .await;
    Error::Peer(reason)
}

/// The cursor for a peer that now has node id `node_id`: a new log, so
/// the old positions say nothing about it.
fn void_cursor(name: &str, node_id: u64, old: PeerCursor) -> PeerCursor {
    if old.peer_node_id != 0 {
        log::info!(
            target: "tidelog::repl",
            "peer `{name}` now has node id {node_id:#x} (was {:#x}): its log restarted, so its tables are synced afresh",
            old.peer_node_id
        );
    }
    PeerCursor {
        peer_node_id: node_id,
        tables: Default::default(),
    }
}

fn subscribed_tables(peer: &PeerState) -> Vec<String> {
    peer.config()
        .tables
        .iter()
        .filter(|t| t.subscribe)
        .map(|t| t.table.clone())
        .collect()
}

async fn load_cursor(db: &Database, peer: &str) -> Result<PeerCursor> {
    let (db, peer) = (db.clone(), peer.to_string());
    blocking(move || PeerCursor::load(&db, &peer)).await
}

fn our_hello(r: &Replicator, db: &Database, peer: &PeerState, cursor: &PeerCursor) -> Hello {
    let config = peer.config();
    let wants = config
        .tables
        .iter()
        .filter(|t| t.subscribe)
        .map(|t| {
            let c = cursor.tables.get(&t.table).copied().unwrap_or_default();
            TableWant {
                table: t.table.clone(),
                resume_after: c.seq,
                since_ms: t.since_ms,
                initial_sync_done: c.synced,
            }
        })
        .collect();
    Hello {
        version: PROTOCOL_VERSION,
        node_name: db.node_name().to_string(),
        node_id: db.node_id(),
        now_ms: wall_millis(),
        max_frame_bytes: r.opts.max_frame_bytes as u32,
        wants,
        relays_accepted: config.accepts_relays(),
        accepts_zstd: offers_compression(&config),
        deltas: config.deltas_on(),
    }
}

/// Whether this node offers compressed frames to the peer: unless its
/// settings say `none`.
fn offers_compression(config: &PeerConfig) -> bool {
    config.compression != Some(Compression::None)
}

/// Sets up compression and byte counting on a link's reader and writer:
/// compressed frames are accepted when this node offered them, and sent
/// when both sides did.
fn negotiate(
    peer: &PeerState,
    hello: &Hello,
    reader: &mut Reader,
    writer: &mut Writer,
) -> Result<()> {
    let config = peer.config();
    reader.count_into(peer.bytes_in.clone());
    writer.count_into(peer.bytes_out.clone());
    let offered = offers_compression(&config);
    if offered {
        reader.accept_compressed()?;
    }
    let on = offered && hello.accepts_zstd;
    if on {
        let rate = config.budget.as_ref().and_then(|b| b.max_bytes_per_sec);
        writer.compress(level_for_rate(rate))?;
    }
    peer.counters.lock().compression = Some(if on { "zstd" } else { "none" });
    Ok(())
}

/// Runs a link until it fails, or says goodbye because the database is
/// closing or the peer's settings changed after `generation` was seen.
async fn run(
    r: &Arc<Replicator>,
    peer: &Arc<PeerState>,
    link: Link,
    mut generation: watch::Receiver<u64>,
) -> Result<()> {
    let Link {
        db,
        mut reader,
        mut writer,
        hello,
        mut cursor,
        relays_accepted,
        peer_dns,
    } = link;
    let name = peer.name();
    writer.set_max_frame_bytes((hello.max_frame_bytes as usize).min(r.opts.max_frame_bytes));
    negotiate(peer, &hello, &mut reader, &mut writer)?;
    if cursor.peer_node_id != hello.node_id {
        // Only a dialed link gets here with positions (an accepted one
        // voided them before its hello). Our hello asked the peer to go on
        // from positions in another node's log (another hub of one logical
        // peer, or a reset peer): it may now stream from a place in its own
        // log that means something else, which this side would refuse as
        // not synced. Store the void cursor and redial: the next hello
        // asks for a sync instead.
        let stale = cursor.peer_node_id != 0 && cursor.tables.values().any(|c| c.synced);
        cursor = void_cursor(&name, hello.node_id, cursor);
        if stale {
            let (db2, name2, c) = (db.clone(), name.clone(), cursor.clone());
            blocking(move || c.store(&db2, &name2)).await?;
            return Err(Error::Peer(format!(
                "`{name}` answered with node id {:#x}, not the one this node's resume points for it count in; redialing to sync its tables afresh",
                hello.node_id
            )));
        }
    }
    peer.set_connected(hello.node_id);
    peer.meter.new_link();
    let (tx, rx) = mpsc::channel::<Message>(64);
    // Two deep: an initial sync reads ahead no further than that.
    let (bulk_tx, bulk_rx) = mpsc::channel::<BulkMessage>(2);
    let activity = Arc::new(Activity::default());
    let sender = Sender::new(
        r.clone(),
        db.clone(),
        peer.clone(),
        &hello,
        tx.clone(),
        bulk_tx,
        activity.clone(),
    )
    .peer_dns(peer_dns);
    // An origin violation ends the link with a goodbye that says why.
    let violation = Arc::new(Mutex::new(None::<String>));
    let (violated_tx, violated) = oneshot::channel::<()>();
    let quota_db = db.clone();
    let subscribed = subscribed_tables(peer);
    let head = *db.shared.committed.borrow();
    let gate = r.sunk.link(&name, hello.node_id, &subscribed, head);
    // Only a gated link sends held acknowledgements, so only it holds a
    // second sender (an idle clone would keep the channel open for nothing).
    let acks = gate.as_ref().map(|g| (g.acks(), tx.clone()));
    let receiver = Receiver::new(
        db,
        peer.clone(),
        cursor,
        tx,
        relays_accepted,
        (violation.clone(), violated_tx),
        activity.clone(),
    )
    .gated(gate);
    // A gated link's acknowledgements go out as its sinks commit them.
    let held_acks = async {
        match acks {
            Some((q, ack_tx)) => q.run(ack_tx, r.opts.heartbeat_interval).await,
            None => std::future::pending().await,
        }
    };
    let idle = r.opts.idle_timeout;
    let heartbeat = r.opts.heartbeat_interval;
    let mut closing = r.closing.subscribe();
    // A stall ends the link with a goodbye when the writer can still write
    // one; otherwise (or if the goodbye does not go out) it is dropped.
    let stalled = Mutex::new(None::<String>);
    let (stall_tx, stall_rx) = oneshot::channel::<String>();
    let watchdog = async {
        let s = stall::watch(peer.clone(), activity.clone(), heartbeat).await;
        *stalled.lock() = Some(s.reason.clone());
        if s.writer_free {
            let _ = stall_tx.send(s.reason.clone());
            tokio::time::sleep((heartbeat * 2).max(Duration::from_millis(200))).await;
        }
        s.reason
    };
    let goodbye = async {
        tokio::select! {
            Ok(reason) = stall_rx => format!("the link stalled ({reason}); redialing"),
            Ok(()) = violated => violation.lock().clone().unwrap_or_default(),
            () = until_closing(&mut closing) => "its database is closing".to_string(),
            _ = generation.changed() => if peer.is_removed() {
                "it no longer has this node as a peer".to_string()
            } else {
                "its settings for this peer changed".to_string()
            },
        }
    };
    let ended = tokio::select! {
        res = goodbye_first(sender.run(hello.wants)) => res.map(|()| Ended::Done),
        res = goodbye_first(receiver.run(&mut reader, idle)) => res.map(|()| Ended::Done),
        res = goodbye_first(held_acks) => res.map(|()| Ended::Done),
        res = write_loop(writer, rx, bulk_rx, heartbeat, goodbye, peer, &activity) => res,
        reason = watchdog => Err(stalled_error(&reason)),
    };
    if ended.as_ref().is_ok_and(|e| *e == Ended::SaidGoodbye) {
        linger(&mut reader).await;
    }
    // What the link spent since the last batched store, so a restart does
    // not refill it (best effort: a closing database may refuse it).
    if let Some(q) = peer.meter.to_store_now() {
        let (db, name) = (quota_db.clone(), peer.name());
        let _ = blocking(move || super::cursor::store_quota(&db, &name, &q)).await;
    }
    // The acknowledgements since the last batched store (best effort too:
    // an older stored position only means the peer is sent a little again).
    let p = peer.clone();
    let _ = blocking(move || p.persist_acked(&quota_db)).await;
    ended?;
    if let Some(reason) = stalled.lock().take() {
        return Err(stalled_error(&reason));
    }
    let violated = violation.lock().take();
    match violated {
        Some(reason) => Err(Error::Peer(reason)),
        None => Ok(()),
    }
}

/// What a stalled link ends with; `last_error` shows it.
fn stalled_error(reason: &str) -> Error {
    Error::Peer(format!(
        "the link stalled and was torn down to redial: {reason}"
    ))
}

/// How often moved acknowledgements are stored: all peers' in one
/// storage commit per period, not one per acknowledgement (at hundreds of
/// links, one per commit per link was most of a hub's work).
const ACK_STORE_EVERY: Duration = Duration::from_millis(150);

/// Stores the peers' acknowledgements that moved, every `ACK_STORE_EVERY`,
/// for as long as the engine runs; `run` also stores a peer's when its
/// link ends, and the database when it closes. Receipts do not wait for
/// it: they read the acknowledgement in memory. After a crash the stored
/// one may be up to a period older: the peer's next link resumes from its
/// own cursor (stored with what it applied) and acknowledges again, and
/// retention trimmed nothing past the stored one.
pub(crate) async fn persist_acks(r: std::sync::Weak<Replicator>) {
    loop {
        tokio::time::sleep(ACK_STORE_EVERY).await;
        let Some(r) = r.upgrade() else { return };
        let Ok(db) = r.db() else { return };
        if let Err(e) = blocking(move || r.persist_acks(&db)).await {
            log::warn!(target: "tidelog::repl", "storing peers' acknowledgements: {e}");
        }
    }
}

/// A closing database fails the sender's and receiver's database calls
/// with `Closed` a moment before the replicator tells the write loop
/// (the handle closes first). That is not a broken link: the half waits,
/// and the write loop says goodbye.
async fn goodbye_first(half: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    match half.await {
        Err(Error::Closed) => std::future::pending().await,
        other => other,
    }
}

/// How a link's write loop ended without an error.
#[derive(PartialEq)]
enum Ended {
    /// The database is closing: the peer was told, and TLS closed.
    SaidGoodbye,
    /// A loop finished with nothing left to do.
    Done,
}

/// After our goodbye, reads and drops what the peer still sends until it
/// hangs up (briefly): closing the socket while data arrives would reset
/// the connection, and a reset can discard the goodbye before the peer
/// reads it.
async fn linger(reader: &mut Reader) {
    const LINGER: Duration = Duration::from_millis(400);
    let drain = async { while let Ok(Some(_)) = reader.read_message().await {} };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Sends what the sender and receiver queue, a heartbeat when idle, and a
/// goodbye with its reason when `goodbye` yields one. A message being
/// written is always finished first: frames are never cut. `rx` goes
/// first, `bulk` (initial syncs) only when nothing waits there, so
/// streaming, acknowledgements and heartbeats never queue behind a
/// table's snapshot.
async fn write_loop(
    mut writer: Writer,
    mut rx: mpsc::Receiver<Message>,
    mut bulk: mpsc::Receiver<BulkMessage>,
    heartbeat: Duration,
    goodbye: impl std::future::Future<Output = String>,
    peer: &PeerState,
    activity: &Activity,
) -> Result<Ended> {
    // Every frame counts against the link's budget, acknowledgements and
    // heartbeats too: the cap is about the link, not the data.
    let meter = &peer.meter;
    tokio::pin!(goodbye);
    let mut bulk_open = true;
    loop {
        tokio::select! {
            biased;
            reason = &mut goodbye => {
                activity.begin_write("goodbye");
                say_goodbye(writer, reason).await?;
                return Ok(Ended::SaidGoodbye);
            }
            next = rx.recv() => match next {
                Some(msg) => {
                    activity.begin_write(kind_of(&msg));
                    meter.debit(writer.write_message(&msg).await?);
                    activity.end_write();
                    if matches!(msg, Message::TxnsUpTo { .. }) {
                        meter.wrote_frame();
                    }
                }
                None => return Ok(Ended::Done),
            },
            next = bulk.recv(), if bulk_open => match next {
                Some((msg, written)) => {
                    activity.begin_write("sync");
                    meter.debit(writer.write_message(&msg).await?);
                    activity.end_write();
                    activity.wrote_bulk();
                    if let Some(written) = written {
                        let _ = written.send(());
                    }
                }
                None => bulk_open = false,
            },
            () = tokio::time::sleep(heartbeat) => {
                activity.begin_write("heartbeat");
                let n = writer
                    .write_message(&Message::Heartbeat {
                        now_ms: wall_millis(),
                    })
                    .await?;
                activity.end_write();
                meter.debit(n);
            }
        }
    }
}

/// What a frame is, as a `write_blocked` stall names it.
fn kind_of(msg: &Message) -> &'static str {
    match msg {
        Message::Txns(_) | Message::TxnsUpTo { .. } => "data",
        Message::Progress { .. } => "progress",
        Message::Ack { .. } => "acknowledgement",
        Message::Refusals(_) => "refusals",
        Message::SyncBegin { .. } | Message::SyncChunk { .. } => "sync",
        _ => "control",
    }
}

/// Returns once the database is closing, or the replicator is gone
/// (nothing is left to send for then either).
async fn until_closing(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

/// Tells the peer why the link ends, then ends the TLS stream with
/// close_notify: without it the peer can only report a connection that
/// broke ("peer closed connection without sending TLS close_notify").
async fn say_goodbye(mut writer: Writer, reason: String) -> Result<()> {
    writer.write_message(&Message::Goodbye { reason }).await?;
    writer
        .get_mut()
        .shutdown()
        .await
        .map_err(|e| Error::Peer(format!("closing the replication link: {e}")))
}

/// Spreads redial delays so a fleet does not redial in lockstep.
struct Jitter(u64);

/// Jitters made in this process so far: two for the same peer name (a
/// peer removed and added again) still differ.
static JITTERS: AtomicU64 = AtomicU64::new(0);

/// One draw from the operating system's random source per process:
/// processes started in the same millisecond (a fleet booting after a
/// power cut) then redial apart. Without one (never seen on Linux), the
/// clock in nanoseconds and the process id stand in, with a warning.
fn process_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| match getrandom::u64() {
        Ok(s) => s,
        Err(e) => {
            log::warn!(target: "tidelog::repl", "no random source for the redial jitter ({e}); using the clock and process id");
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        }
    })
}

/// splitmix64's finaliser: spreads a few changed bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Jitter {
    fn new(seed: u64) -> Jitter {
        Jitter(seed | 1)
    }

    /// The process seed mixed with the peer's name and a per-process count.
    fn for_peer(name: &str) -> Jitter {
        let mut h = process_seed();
        for b in name.bytes() {
            h = mix(h ^ u64::from(b));
        }
        let n = JITTERS.fetch_add(1, Ordering::Relaxed);
        Jitter::new(mix(h ^ mix(n.wrapping_add(0x9E37_79B9_7F4A_7C15))))
    }

    fn next(&mut self) -> u64 {
        // xorshift64*: plenty for jitter, no dependency.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A delay uniformly within [d/2, 3d/2).
    fn spread(&mut self, d: Duration) -> Duration {
        let ms = d.as_millis().max(1) as u64;
        Duration::from_millis(ms / 2 + self.next() % ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_one_and_a_half() {
        let mut j = Jitter::new(42);
        let d = Duration::from_millis(1000);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..10_000 {
            let s = j.spread(d);
            assert!(s >= Duration::from_millis(500) && s < Duration::from_millis(1500));
            seen_low |= s < Duration::from_millis(700);
            seen_high |= s > Duration::from_millis(1300);
        }
        assert!(seen_low && seen_high, "jitter must actually spread");
    }

    /// Two jitters made at the same instant, for the same name and for
    /// names of the same length (the old seed was name length ^ wall ms),
    /// give different delays.
    #[test]
    fn jitters_made_at_the_same_instant_differ() {
        let d = Duration::from_secs(10);
        let delays = |mut j: Jitter| (0..4).map(|_| j.spread(d)).collect::<Vec<_>>();
        let (a, b, c) = (
            Jitter::for_peer("edge-1"),
            Jitter::for_peer("edge-1"),
            Jitter::for_peer("edge-2"),
        );
        let (a, b, c) = (delays(a), delays(b), delays(c));
        assert_ne!(a, b, "same name, same instant");
        assert_ne!(a, c, "same name length, same instant");
        assert_ne!(b, c);
        // The process seed is drawn once: a second call returns it again.
        assert_eq!(process_seed(), process_seed());
    }
}
