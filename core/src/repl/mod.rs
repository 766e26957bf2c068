//! Replication: per-table publish/subscribe between instances over mutual
//! TLS (or plaintext behind an explicit `insecure` switch), both directions
//! on one connection, last writer wins.
//!
//! The library owns one tokio runtime for it, created by
//! [`Database::start_replication`] and shut down by [`Database::close`];
//! purely local use never starts it. Public calls never `block_on` the
//! runtime, so they are safe from any thread, including a tokio worker of
//! the application's own runtime.

mod cursor;
mod lanes;
mod link;
mod peer;
mod receiver;
mod sender;
mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::local::codec::Stamp;
use crate::local::db::{Database, ReplicationHook, Shared};
use crate::net::tls::TlsIdentity;
use crate::net::wire::DEFAULT_MAX_FRAME_BYTES;

pub(crate) use peer::PeerState;

/// How replication links are secured.
#[derive(Debug, Clone)]
pub enum Security {
    /// TLS 1.3 with mutual authentication: both sides present a certificate
    /// signed by the CA in the identity, naming their node name.
    MutualTls(TlsIdentity),
    /// Plaintext TCP with no authentication at all. For tests and
    /// measurements on a trusted loopback only.
    Insecure,
}

/// Settings of the replication engine.
#[derive(Debug, Clone)]
pub struct ReplicationOptions {
    pub security: Security,
    /// An idle connection sends a heartbeat this often.
    pub heartbeat_interval: Duration,
    /// A connection that receives nothing (not even a heartbeat) for this
    /// long is dropped and, on the dialing side, redialed.
    pub idle_timeout: Duration,
    /// TCP connect plus TLS handshake plus hello must finish within this.
    pub connect_timeout: Duration,
    /// First redial delay; it doubles per failure up to `backoff_max`, with
    /// jitter of up to half the delay either way.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Largest frame accepted from a peer (and sent to it).
    pub max_frame_bytes: usize,
    /// Most transactions read from the log, sent and applied as one batch
    /// (a batch also stops at half of `max_frame_bytes`). Larger batches
    /// mean fewer commits on the receiver: catching up on 400,000
    /// single-record transactions drained at about 72,000/s with 1,000 per
    /// batch and about 100,000/s with 4,000 (2 cores). At low rates a
    /// batch holds what was committed since the last one, so this does not
    /// add latency.
    pub batch_max_txns: usize,
    /// Most transactions sent and not yet acknowledged.
    pub window_txns: u64,
    /// Rows per frame during an initial sync.
    pub sync_chunk_rows: usize,
    /// Threads of the replication runtime.
    pub worker_threads: usize,
}

impl ReplicationOptions {
    pub fn new(security: Security) -> Self {
        ReplicationOptions {
            security,
            heartbeat_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            batch_max_txns: 4000,
            window_txns: 50_000,
            sync_chunk_rows: 1000,
            worker_threads: 2,
        }
    }

    /// Mutual TLS from PEM files: this node's certificate chain, its private
    /// key, and the CA bundle that signs every peer.
    pub fn mutual_tls(
        cert_chain: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
        ca: impl Into<std::path::PathBuf>,
    ) -> Self {
        ReplicationOptions::new(Security::MutualTls(TlsIdentity::from_files(
            cert_chain, key, ca,
        )))
    }

    /// Plaintext, unauthenticated links: tests and comparisons only.
    pub fn insecure() -> Self {
        ReplicationOptions::new(Security::Insecure)
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("heartbeat_interval", self.heartbeat_interval),
            ("idle_timeout", self.idle_timeout),
            ("connect_timeout", self.connect_timeout),
            ("backoff_initial", self.backoff_initial),
        ];
        for (what, d) in positive {
            if d.is_zero() {
                return Err(Error::invalid(what, "must be greater than zero"));
            }
        }
        if self.idle_timeout <= self.heartbeat_interval {
            return Err(Error::invalid(
                "idle_timeout",
                "must be longer than heartbeat_interval, or idle links would be dropped",
            ));
        }
        if self.max_frame_bytes < 64 * 1024 || self.max_frame_bytes > u32::MAX as usize {
            return Err(Error::invalid(
                "max_frame_bytes",
                "must be between 64 KiB and 4 GiB",
            ));
        }
        if self.batch_max_txns == 0 || self.window_txns == 0 || self.sync_chunk_rows == 0 {
            return Err(Error::invalid(
                "batch_max_txns/window_txns/sync_chunk_rows",
                "must be at least 1",
            ));
        }
        if self.worker_threads == 0 {
            return Err(Error::invalid("worker_threads", "must be at least 1"));
        }
        Ok(())
    }
}

/// Which way one table flows between this instance and one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableFlow {
    pub table: String,
    /// Send this instance's changes of the table to the peer.
    #[serde(default)]
    pub publish: bool,
    /// Accept the peer's changes of the table.
    #[serde(default)]
    pub subscribe: bool,
    /// With `subscribe`: the initial sync only takes rows changed at or
    /// after this time (ms since the epoch).
    #[serde(default)]
    pub since_ms: Option<u64>,
    /// With `publish`: a backlog of a higher-priority table is sent before
    /// that of a lower one (each table keeps its own order; see the README).
    #[serde(default)]
    pub priority: u8,
}

impl TableFlow {
    pub fn publish(table: impl Into<String>) -> Self {
        TableFlow {
            table: table.into(),
            publish: true,
            subscribe: false,
            since_ms: None,
            priority: 0,
        }
    }
    pub fn subscribe(table: impl Into<String>) -> Self {
        TableFlow {
            table: table.into(),
            publish: false,
            subscribe: true,
            since_ms: None,
            priority: 0,
        }
    }
    /// Sets the priority (higher is sent first).
    pub fn priority(mut self, p: u8) -> Self {
        self.priority = p;
        self
    }
    /// Sets the initial-sync start time (ms since the epoch).
    pub fn since_ms(mut self, ms: u64) -> Self {
        self.since_ms = Some(ms);
        self
    }
    pub fn both(table: impl Into<String>) -> Self {
        TableFlow {
            table: table.into(),
            publish: true,
            subscribe: true,
            since_ms: None,
            priority: 0,
        }
    }
}

/// A peer: who it is, whether this instance dials it, and what flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's node name (the DNS name in its certificate).
    pub name: String,
    /// `host:port` to dial. Without one, this instance waits for the peer
    /// to dial in (an edge behind a firewall has none configured for it).
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub tables: Vec<TableFlow>,
    /// Whether this peer forwards (relays) transactions of other origins
    /// to this instance, i.e. whether this instance accepts from it writes
    /// that another node made. `None` (the default): true for a peer with
    /// an `address` (this instance dials it: a hub), false for one without
    /// (it dials in: an edge). A peer may always send its own writes; no
    /// peer may send writes stamped with this instance's own node id.
    #[serde(default)]
    pub relays: Option<bool>,
}

impl PeerConfig {
    pub fn new(name: impl Into<String>) -> Self {
        PeerConfig {
            name: name.into(),
            address: None,
            tables: Vec::new(),
            relays: None,
        }
    }
    /// Sets whether the peer may relay other origins' writes to this
    /// instance (see [`PeerConfig::relays`]).
    pub fn relays(mut self, relays: bool) -> Self {
        self.relays = Some(relays);
        self
    }
    /// Whether this instance accepts other origins' writes from the peer,
    /// with the default applied.
    pub fn accepts_relays(&self) -> bool {
        self.relays.unwrap_or(self.address.is_some())
    }
    pub fn address(mut self, addr: impl Into<String>) -> Self {
        self.address = Some(addr.into());
        self
    }
    pub fn table(mut self, flow: TableFlow) -> Self {
        self.tables.push(flow);
        self
    }

    fn validate(&self, own_name: &str) -> Result<()> {
        crate::local::dir::validate_node_name(&self.name)?;
        if self.name == own_name {
            return Err(Error::invalid("peer name", "a node cannot be its own peer"));
        }
        if let Some(a) = &self.address {
            if a.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(Error::invalid(
                    "peer address",
                    format!("`{a}` must be host:port"),
                ));
            }
        }
        let wants = self.tables.iter().filter(|t| t.subscribe).count();
        if wants > crate::net::wire::MAX_HELLO_WANTS {
            return Err(Error::invalid(
                "peer tables",
                format!(
                    "{wants} tables subscribed from peer `{}`: at most {} fit in a hello",
                    self.name,
                    crate::net::wire::MAX_HELLO_WANTS
                ),
            ));
        }
        for (i, t) in self.tables.iter().enumerate() {
            crate::local::catalog::validate_table_name(&t.table)?;
            if self.tables[..i].iter().any(|o| o.table == t.table) {
                return Err(Error::invalid(
                    "peer tables",
                    format!(
                        "table `{}` is listed twice for peer `{}`",
                        t.table, self.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Replication state of one table with one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableStatus {
    pub table: String,
    pub publish: bool,
    pub subscribe: bool,
    /// What this instance receives: "idle", "syncing", "streaming" or
    /// `"refused: <reason>"`.
    pub inbound: String,
    /// What this instance sends: "idle", "syncing", "streaming",
    /// `"refused: <reason>"`, or "not subscribed by the peer" (the peer's
    /// hello on the current link did not ask for this table).
    pub outbound: String,
}

/// Everything an operator wants to know about one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    pub name: String,
    pub address: Option<String>,
    pub connected: bool,
    /// When the link last went up (if connected) or down (if not), ms since
    /// the epoch; `None` if it never connected.
    pub since_ms: Option<u64>,
    pub last_error: Option<String>,
    /// The peer's node id, once it said hello.
    pub node_id: Option<u64>,
    pub tables: Vec<TableStatus>,
    /// Highest local log sequence sent to the peer.
    pub sent_seq: u64,
    /// Highest local log sequence the peer acknowledged as applied.
    pub acked_seq: u64,
    /// Highest peer log sequence this instance applied.
    pub received_seq: u64,
    /// Transactions still in this node's log after `acked_seq`: entries
    /// trimmed away are not counted. Every entry counts, including those
    /// the peer will not receive (writes to tables it does not take, its
    /// own writes coming back): the link passes over them as it catches up.
    /// Always 0 for a peer this node publishes nothing to.
    pub backlog_txns: u64,
    /// The bytes of those entries, as `log_max_bytes` counts them (keys and
    /// values, before compression). Exact, however long the log.
    pub backlog_bytes: u64,
    /// Age of the oldest of those entries, in ms; 0 without a backlog.
    pub lag_ms: u64,
    /// The log no longer holds the entries right after `acked_seq` (a cap
    /// trimmed them, or the peer was added after they were trimmed): the
    /// peer's tables are synced from their current rows when it next
    /// connects (or are being synced now) instead of being streamed from
    /// the log, and the backlog then counts only what the log still holds.
    pub resync_needed: bool,
    /// Writes from the peer that were refused: tables not subscribed from
    /// it, stamps beyond `max_clock_skew`, records breaking the rules,
    /// tables this node does not have (see `refusals` for which and why).
    pub refused_writes: u64,
    /// Frames from the peer refused because a transaction or sync row in
    /// them had an origin the peer may not send (this node's own node id,
    /// or another node's when the peer does not relay to this node); each
    /// closed the link and applied nothing of its frame.
    pub origin_violations: u64,
    /// Writes from the peer that this node already had (equal or newer
    /// stamp), dropped by the stamp rule: relays in a mesh, resyncs.
    pub duplicates_received: u64,
    /// Initial syncs and resyncs this instance received from the peer.
    pub syncs_received: u64,
    /// Resyncs this instance sent the peer because the log no longer held
    /// its resume point.
    pub resyncs_sent: u64,
    /// Why the last resync (either way) happened.
    pub last_resync_reason: Option<String>,
    /// Successful connections so far.
    pub connects: u64,
    /// Writes refused either way on this link, one entry per direction and
    /// table that had any, kept until the database closes (this node's
    /// writes the peer refused are also kept across restarts). Unlike
    /// `last_error`, later link events do not overwrite them.
    pub refusals: Vec<RefusalStatus>,
}

/// Refused writes of one table in one direction, with the latest refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusalStatus {
    pub table: String,
    /// "inbound": this node refused writes from the peer; "outbound": the
    /// peer refused writes of this node (their receipts fail).
    pub direction: String,
    /// Transactions refused (per table); outbound, of those still kept.
    pub count: u64,
    /// Why the latest was refused: "clock_skew", "not_subscribed",
    /// "invalid_record" or "missing_table".
    pub kind: String,
    /// The latest refusal, as the refusing node put it.
    pub reason: String,
    /// When the latest refusal happened (was learned of, outbound), ms
    /// since the epoch.
    pub at_ms: u64,
    /// The refused transaction's stamp: its HLC time (ms << 16 | counter)
    /// and origin node id.
    pub stamp: Stamp,
    /// Its sequence in the sender's log (0: a row of a sync).
    pub seq: u64,
}

/// The running replication engine of one database.
pub(crate) struct Replicator {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) opts: ReplicationOptions,
    pub(crate) client_tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) server_tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) peers: Mutex<HashMap<String, Arc<PeerState>>>,
    pub(crate) db: Weak<Shared>,
    pub(crate) node_name: String,
    acceptors: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Set when the database closes: each session then says goodbye and
    /// ends its TLS stream with close_notify (see `session::write_loop`).
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
    /// Accepted connections not yet done (handshake, hello, and the link
    /// they become): `shutdown` waits for them as for registered links,
    /// since the peer may already count such a link as up.
    pub(crate) accepting: std::sync::atomic::AtomicUsize,
}

impl Replicator {
    pub(crate) fn db(&self) -> Result<Database> {
        match self.db.upgrade() {
            Some(shared) => Ok(Database { shared }),
            None => Err(Error::Closed),
        }
    }

    pub(crate) fn peer(&self, name: &str) -> Option<Arc<PeerState>> {
        self.peers.lock().get(name).cloned()
    }

    /// The lowest local sequence every publishing peer acknowledged;
    /// `u64::MAX` when no peer receives anything from this node.
    pub(crate) fn acked_floor(&self) -> u64 {
        self.peers
            .lock()
            .values()
            .filter(|p| p.config().tables.iter().any(|t| t.publish))
            .map(|p| *p.acked.borrow())
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Tells peers whose acknowledged position the log no longer holds that
    /// they will be resynced.
    pub(crate) fn note_trimmed(&self, first: u64) {
        for p in self.peers.lock().values() {
            let acked = *p.acked.borrow();
            if acked + 1 < first && p.config().tables.iter().any(|t| t.publish) {
                let msg = format!(
                    "the log cap trimmed entries {}..{} before `{}` acknowledged them; its tables will be resynced",
                    acked + 1,
                    first - 1,
                    p.name()
                );
                let first = {
                    let mut c = p.counters.lock();
                    let first = !c.overtaken;
                    c.overtaken = true;
                    c.last_error = Some(msg.clone());
                    first
                };
                // Logged outside the lock: a host's logger may be slow or
                // call back into status, which takes it.
                if first {
                    log::warn!(target: "tidelog::repl", "{msg}");
                }
            }
        }
    }

    /// Stops every task. Live sessions first get up to `GOODBYE_WAIT` to
    /// tell their peers why and close TLS cleanly, so a peer sees "closed
    /// the link: its database is closing" rather than a broken connection.
    /// From a thread of our own runtime (a last handle dropped inside a
    /// task) it cannot wait, so it lets the runtime go.
    pub(crate) fn shutdown(&self) {
        const GOODBYE_WAIT: Duration = Duration::from_millis(500);
        for a in self.acceptors.lock().drain(..) {
            a.abort();
        }
        // Dialers stop dialing, links say goodbye (see `session::dial_loop`).
        self.closing.send_replace(true);
        let peers: Vec<Arc<PeerState>> = self.peers.lock().values().cloned().collect();
        if tokio::runtime::Handle::try_current().is_err() {
            let deadline = std::time::Instant::now() + GOODBYE_WAIT;
            let busy = || {
                self.accepting.load(std::sync::atomic::Ordering::Acquire) > 0
                    || peers.iter().any(|p| p.has_live_tasks())
            };
            while busy() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        for p in &peers {
            p.stop();
        }
        if let Some(rt) = self.runtime.lock().take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(3));
            }
        }
    }
}

impl ReplicationHook for Replicator {
    fn acked_floor(&self) -> u64 {
        Replicator::acked_floor(self)
    }

    fn note_trimmed(&self, first: u64) {
        Replicator::note_trimmed(self, first)
    }

    fn shutdown(&self) {
        Replicator::shutdown(self)
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

impl Database {
    fn replicator(&self) -> Result<Arc<Replicator>> {
        let _store = self.store()?;
        let hook = self.shared.replication.lock().clone();
        hook.and_then(|h| h.as_any().downcast::<Replicator>().ok())
            .ok_or_else(|| {
                Error::Unsupported(
                    "replication is not started: call start_replication first".into(),
                )
            })
    }

    /// Starts the replication engine (its runtime and TLS configuration).
    /// Call once, before `listen` and `add_peer`.
    pub fn start_replication(&self, opts: ReplicationOptions) -> Result<()> {
        let _store = self.store()?;
        opts.validate()?;
        let mut slot = self.shared.replication.lock();
        if slot.is_some() {
            return Err(Error::Unsupported("replication is already started".into()));
        }
        let (client_tls, server_tls) = match &opts.security {
            Security::MutualTls(id) => (Some(id.client_config()?), Some(id.server_config()?)),
            Security::Insecure => (None, None),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.worker_threads)
            .thread_name("tidelog-net")
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let r = Arc::new(Replicator {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            opts,
            client_tls,
            server_tls,
            peers: Mutex::new(HashMap::new()),
            db: Arc::downgrade(&self.shared),
            node_name: self.shared.node_name.clone(),
            acceptors: Mutex::new(Vec::new()),
            closing: tokio::sync::watch::Sender::new(false),
            accepting: std::sync::atomic::AtomicUsize::new(0),
        });
        *slot = Some(r);
        Ok(())
    }

    /// Accepts peers dialing in on `addr` (e.g. `127.0.0.1:7000`; port 0
    /// picks a free one). Returns the bound address.
    pub fn listen(&self, addr: &str) -> Result<SocketAddr> {
        let r = self.replicator()?;
        let std_listener = std::net::TcpListener::bind(addr)
            .map_err(|e| Error::Peer(format!("cannot listen on {addr}: {e}")))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| Error::Peer(format!("cannot listen on {addr}: {e}")))?;
        let local = std_listener
            .local_addr()
            .map_err(|e| Error::Peer(format!("cannot listen on {addr}: {e}")))?;
        let listener = {
            let _enter = r.handle.enter();
            tokio::net::TcpListener::from_std(std_listener)
                .map_err(|e| Error::Peer(format!("cannot listen on {addr}: {e}")))?
        };
        let task = r.handle.spawn(session::accept_loop(r.clone(), listener));
        r.acceptors.lock().push(task.abort_handle());
        Ok(local)
    }

    /// Adds a peer; takes effect at once, also while it is unreachable.
    pub fn add_peer(&self, config: PeerConfig) -> Result<()> {
        let r = self.replicator()?;
        config.validate(&self.shared.node_name)?;
        let mut peers = r.peers.lock();
        if peers.contains_key(&config.name) {
            return Err(Error::PeerExists(config.name));
        }
        let acked = cursor::load_acked(self, &config.name)?;
        let refused = cursor::load_refusals(self, &config.name)?;
        let skipped = cursor::load_skipped(self, &config.name)?;
        let state = PeerState::new(config.clone(), acked, refused, skipped);
        // A damaged cursor is reported when the link loads it; here it only
        // means no node id is known for the peer yet.
        let known = cursor::PeerCursor::load(self, &config.name).map_or(0, |c| c.peer_node_id);
        if known != 0 {
            state.counters.lock().known_node_id = Some(known);
        }
        peers.insert(config.name.clone(), state.clone());
        drop(peers);
        if config.address.is_some() {
            state.start_dialer(&r);
        }
        Ok(())
    }

    /// Replaces a peer's configuration; its link says goodbye ("its
    /// settings for this peer changed") and restarts with it.
    pub fn update_peer(&self, config: PeerConfig) -> Result<()> {
        let r = self.replicator()?;
        config.validate(&self.shared.node_name)?;
        let state = r
            .peer(&config.name)
            .ok_or_else(|| Error::PeerNotFound(config.name.clone()))?;
        let had_address = state.config().address.is_some();
        state.set_config(config.clone());
        // The link says goodbye and ends; a dialer whose peer lost its
        // address then stops by itself.
        state.restart();
        if config.address.is_some() && !had_address {
            state.start_dialer(&r);
        }
        Ok(())
    }

    /// Removes a peer; its link says goodbye ("it no longer has this node
    /// as a peer") and nothing redials it. Its resume cursor stays, so
    /// adding it again resumes where it left off.
    pub fn remove_peer(&self, name: &str) -> Result<()> {
        let r = self.replicator()?;
        let state = r
            .peers
            .lock()
            .remove(name)
            .ok_or_else(|| Error::PeerNotFound(name.to_string()))?;
        state.remove();
        Ok(())
    }

    pub fn peer_status(&self, name: &str) -> Result<PeerStatus> {
        let r = self.replicator()?;
        let state = r
            .peer(name)
            .ok_or_else(|| Error::PeerNotFound(name.to_string()))?;
        state.status(self)
    }

    /// Status of every peer, by name.
    pub fn replication_status(&self) -> Result<Vec<PeerStatus>> {
        let r = self.replicator()?;
        let mut peers: Vec<Arc<PeerState>> = r.peers.lock().values().cloned().collect();
        peers.sort_by_key(|p| p.name());
        peers.iter().map(|p| p.status(self)).collect()
    }

    /// Waits until every peer this instance publishes to has acknowledged
    /// the log up to `seq` (`None`: everything committed so far). Use it as
    /// a delivery receipt that survives restarts: acknowledgements are
    /// persisted, and a restarted app can wait for "everything up to now".
    ///
    /// Fails with [`Error::NotSubscribed`] if transaction `seq` (for `None`,
    /// the newest one) writes a table this node publishes to a peer that
    /// did not subscribe to it on its last link, with
    /// [`Error::DeliveryUnproven`] if the log no longer holds `seq` and such
    /// a peer skips a published table, with [`Error::Refused`] as soon as a
    /// peer refused it (see [`Database::wait_for_ack`]), and with
    /// [`Error::NotAcknowledged`] (kind `Timeout`, saying what the link
    /// looks like) when time runs out.
    pub fn wait_for_delivery(&self, seq: Option<u64>, timeout: Duration) -> Result<()> {
        let r = self.replicator()?;
        let seq = match seq {
            Some(s) => s,
            None => self.log_bounds()?.last,
        };
        let (tables, stamp) = self.tables_written_by(seq)?;
        let deadline = std::time::Instant::now().checked_add(timeout);
        let peers: Vec<Arc<PeerState>> = r
            .peers
            .lock()
            .values()
            .filter(|p| p.config().tables.iter().any(|t| t.publish))
            .cloned()
            .collect();
        for p in peers {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(std::time::Instant::now())
            });
            p.wait_acked(seq, stamp, tables.as_deref(), left, || self.is_closed())
                .map_err(|mut e| {
                    // The caller's whole timeout, not this peer's share.
                    if let Error::NotAcknowledged { after, .. } = &mut e {
                        *after = timeout;
                    }
                    e
                })?;
        }
        Ok(())
    }

    /// Waits until `peer` has acknowledged this instance's log up to `seq`
    /// (e.g. the `seq` of a [`crate::CommitInfo`]), or `timeout` passes.
    ///
    /// The peer acknowledges positions in this node's log; writes to tables
    /// it does not take from this node are passed over, not delivered. So
    /// if transaction `seq` writes a table this node publishes to `peer`
    /// and `peer`'s hello on the last link did not ask for it, this fails
    /// with [`Error::NotSubscribed`] instead of passing, with the link up or
    /// down and after a restart: this node stores, per peer, which published
    /// tables the last link did not ask for (replaced when a link comes up;
    /// for a peer that now subscribes, such receipts wait until it
    /// acknowledges a write committed after that link came up, which covers
    /// the table's sync or renewed stream). Which tables `seq`
    /// wrote is read from the log; once retention trimmed the entry, it is
    /// unknown, so if `peer` skips any published table the receipt fails
    /// with [`Error::DeliveryUnproven`] rather than pass for a write that
    /// may never have reached it (keep entries longer with
    /// [`crate::Retention::log_min_age`] to check receipts later). Writes to
    /// tables not published to `peer` at all are not part of its receipt.
    ///
    /// A receipt means `peer` applied the transaction. If it refused it, or
    /// part of it (a stamp beyond its `max_clock_skew`, a table it does not
    /// take, a record breaking its rules, a table it no longer has), this
    /// fails at once with [`Error::Refused`] (kind `ClockSkew` for a stamp
    /// too far ahead, `Peer` otherwise), also after a restart, though
    /// `peer` acknowledges positions past it so that later writes flow. A
    /// receipt is for transaction `seq` alone: it passes if `seq` was
    /// applied even when an earlier one of the same table was refused
    /// (those show in [`PeerStatus::refusals`]). When time runs out the
    /// error is [`Error::NotAcknowledged`] (kind `Timeout`), saying what
    /// the link looks like and what to check.
    pub fn wait_for_ack(&self, peer: &str, seq: u64, timeout: Duration) -> Result<()> {
        let r = self.replicator()?;
        let state = r
            .peer(peer)
            .ok_or_else(|| Error::PeerNotFound(peer.to_string()))?;
        let (tables, stamp) = self.tables_written_by(seq)?;
        state.wait_acked(seq, stamp, tables.as_deref(), timeout, || self.is_closed())
    }

    /// The tables transaction `seq` writes and its stamp; no tables (and
    /// no stamp) if the log does not hold it yet, `None` for the tables if
    /// it no longer does (trimmed: which tables it wrote is unknown).
    fn tables_written_by(
        &self,
        seq: u64,
    ) -> Result<(Option<Vec<String>>, Option<crate::local::codec::Stamp>)> {
        let bounds = self.log_bounds()?;
        if seq == 0 || seq > bounds.last {
            return Ok((Some(Vec::new()), None));
        }
        if seq < bounds.first {
            return Ok((None, None));
        }
        // Gone between the bounds and the read: trimmed meanwhile.
        let Some(entry) = self.read_log(seq, 1)?.into_iter().find(|e| e.seq == seq) else {
            return Ok((None, None));
        };
        let mut tables: Vec<String> = entry.writes.into_iter().map(|w| w.table).collect();
        tables.sort_unstable();
        tables.dedup();
        Ok((Some(tables), Some(entry.stamp)))
    }
}
