//! One replication link: dialing (with backoff) or accepting, the hello
//! exchange, then three concurrent halves until the link fails:
//!
//! - the sender streams this node's log to the peer, filtered to what the
//!   peer asked for and this node publishes to it (after an initial sync of
//!   each table that needs one);
//! - the receiver applies what the peer sends, each frame in one atomic
//!   commit together with the resume cursor, and acknowledges it;
//! - the writer owns the socket's write half and sends heartbeats when idle.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::cursor::{store_acked, PeerCursor, TableCursor};
use super::lanes::Lanes;
use super::{PeerState, Replicator};
use crate::catalog::TableOptions;
use crate::db::Database;
use crate::error::{Error, Result};
use crate::hlc::wall_millis;
use crate::log::{LogWrite, WriteOp};
use crate::net::tls;
use crate::net::wire::{
    expect_hello, read_message, FrameReader, FrameWriter, Hello, Message, SyncReason, SyncRow,
    TableWant, WireTxn, PROTOCOL_VERSION,
};
use crate::write::{RemoteOutcome, RemoteTxn};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxIo = Box<dyn Io>;
type Reader = FrameReader<ReadHalf<BoxIo>>;
type Writer = FrameWriter<WriteHalf<BoxIo>>;

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// A link that stayed up this long resets the redial backoff.
const STABLE_LINK: Duration = Duration::from_secs(10);

/// Keeps a link to a peer that has an address: dial, run, back off, redial.
pub(crate) async fn dial_loop(r: Arc<Replicator>, peer: Arc<PeerState>) {
    let mut backoff = r.opts.backoff_initial;
    let mut generation = peer.generation.subscribe();
    let mut jitter = Jitter::new(peer.name().len() as u64 ^ wall_millis());
    loop {
        generation.borrow_and_update();
        let Some(addr) = peer.config().address else {
            return;
        };
        let started = Instant::now();
        let outcome = tokio::select! {
            res = dial_once(&r, &peer, &addr) => Some(res),
            _ = generation.changed() => None,
        };
        match outcome {
            None => {
                peer.set_disconnected(Some("configuration changed; reconnecting".into()));
                backoff = r.opts.backoff_initial;
                continue;
            }
            Some(Ok(())) => peer.set_disconnected(None),
            Some(Err(e)) => peer.set_disconnected(Some(e.to_string())),
        }
        if started.elapsed() >= STABLE_LINK {
            backoff = r.opts.backoff_initial;
        }
        let delay = jitter.spread(backoff);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = generation.changed() => { backoff = r.opts.backoff_initial; continue; }
        }
        backoff = (backoff * 2).min(r.opts.backoff_max);
    }
}

async fn dial_once(r: &Arc<Replicator>, peer: &Arc<PeerState>, addr: &str) -> Result<()> {
    let name = peer.name();
    let io: BoxIo = match &r.client_tls {
        Some(cfg) => {
            Box::new(tls::connect(addr, &name, cfg.clone(), r.opts.connect_timeout).await?)
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
    let mut reader = FrameReader::new(rd, r.opts.max_frame_bytes);
    let mut writer = FrameWriter::new(wr, r.opts.max_frame_bytes);
    let cursor = load_cursor(&db, &name).await?;
    writer
        .write_message(&Message::Hello(our_hello(r, &db, peer, &cursor)))
        .await?;
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
    let hello = expect_hello(hello)?;
    if hello.node_name != name {
        return Err(Error::Peer(format!(
            "dialed `{name}` at {addr} but the node there says it is `{}`",
            hello.node_name
        )));
    }
    run(r, db, peer, reader, writer, hello, cursor).await
}

/// Accepts links until the listener is aborted.
pub(crate) async fn accept_loop(r: Arc<Replicator>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((tcp, from)) => {
                let r2 = r.clone();
                tokio::spawn(async move {
                    if let Err(e) = accept_one(r2, tcp).await {
                        eprintln!("tidelog: refused replication link from {from}: {e}");
                    }
                });
            }
            // Out of file descriptors and the like: wait instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
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
    let (io, hello): (BoxIo, Hello) = match &r.server_tls {
        Some(cfg) => {
            let mut s = tls::accept(tcp, cfg.clone(), deadline).await?;
            let msg = tokio::time::timeout(deadline, read_message(&mut s, max))
                .await
                .map_err(|_| Error::Peer("no hello after the TLS handshake".into()))?
                .map_err(Error::from)?;
            let hello = first_hello(msg)?;
            // The certificate must name the node the peer says it is.
            tls::verify_peer_node(s.get_ref().1, &hello.node_name)?;
            (Box::new(s), hello)
        }
        None => {
            let mut tcp = tcp;
            let msg = tokio::time::timeout(deadline, read_message(&mut tcp, max))
                .await
                .map_err(|_| Error::Peer("no hello".into()))??;
            (Box::new(tcp), first_hello(msg)?)
        }
    };
    let (rd, wr) = tokio::io::split(io);
    let mut writer = FrameWriter::new(wr, max);
    let Some(peer) = r.peer(&hello.node_name) else {
        let reason = format!(
            "`{}` is not a configured peer of `{}`",
            hello.node_name, r.node_name
        );
        let _ = writer
            .write_message(&Message::Goodbye {
                reason: reason.clone(),
            })
            .await;
        return Err(Error::Peer(reason));
    };
    let db = r.db()?;
    let cursor = load_cursor(&db, &hello.node_name).await?;
    writer
        .write_message(&Message::Hello(our_hello(&r, &db, &peer, &cursor)))
        .await?;
    let reader = FrameReader::new(rd, max);
    // A newer link from the same peer replaces an older (maybe half-open) one.
    let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
    let peer2 = peer.clone();
    let r2 = r.clone();
    let task = tokio::spawn(async move {
        let res = run(&r2, db, &peer2, reader, writer, hello, cursor).await;
        // A link that was replaced by a newer one must not mark the peer
        // disconnected while the newer one is up.
        if peer2.clear_session(id) {
            peer2.set_disconnected(res.err().map(|e| e.to_string()));
        }
    });
    peer.set_session(id, task.abort_handle());
    let _ = task.await;
    Ok(())
}

async fn load_cursor(db: &Database, peer: &str) -> Result<PeerCursor> {
    let (db, peer) = (db.clone(), peer.to_string());
    blocking(move || PeerCursor::load(&db, &peer)).await
}

fn our_hello(r: &Replicator, db: &Database, peer: &PeerState, cursor: &PeerCursor) -> Hello {
    let wants = peer
        .config()
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
    }
}

/// Runs a database call off the runtime's worker threads: commits may
/// fsync and scans may read from disk.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Peer(format!("replication worker failed: {e}")))?
}

#[allow(clippy::too_many_arguments)]
async fn run(
    r: &Arc<Replicator>,
    db: Database,
    peer: &Arc<PeerState>,
    reader: Reader,
    mut writer: Writer,
    hello: Hello,
    mut cursor: PeerCursor,
) -> Result<()> {
    let name = peer.name();
    writer.set_max_frame_bytes((hello.max_frame_bytes as usize).min(r.opts.max_frame_bytes));
    if cursor.peer_node_id != hello.node_id {
        if cursor.peer_node_id != 0 {
            eprintln!(
                "tidelog: peer `{name}` now has node id {:#x} (was {:#x}): its log restarted, so its tables are synced afresh",
                hello.node_id, cursor.peer_node_id
            );
        }
        cursor = PeerCursor {
            peer_node_id: hello.node_id,
            tables: Default::default(),
        };
    }
    peer.set_connected(hello.node_id);
    let (tx, rx) = mpsc::channel::<Message>(64);
    let frame_budget = (hello.max_frame_bytes as usize).min(r.opts.max_frame_bytes) / 2;
    let sender = Sender {
        r: r.clone(),
        db: db.clone(),
        peer: peer.clone(),
        peer_node_id: hello.node_id,
        tx: tx.clone(),
        frame_budget,
    };
    let receiver = Receiver {
        db,
        peer: peer.clone(),
        name,
        cursor,
        subscribed: peer
            .config()
            .tables
            .iter()
            .filter(|t| t.subscribe)
            .map(|t| t.table.clone())
            .collect(),
        active: HashSet::new(),
        tx,
    };
    let idle = r.opts.idle_timeout;
    tokio::select! {
        res = sender.run(hello.wants) => res,
        res = receiver.run(reader, idle) => res,
        res = write_loop(writer, rx, r.opts.heartbeat_interval) => res,
    }
}

async fn write_loop(
    mut writer: Writer,
    mut rx: mpsc::Receiver<Message>,
    heartbeat: Duration,
) -> Result<()> {
    loop {
        match tokio::time::timeout(heartbeat, rx.recv()).await {
            Ok(Some(msg)) => writer.write_message(&msg).await?,
            Ok(None) => return Ok(()),
            Err(_) => {
                writer
                    .write_message(&Message::Heartbeat {
                        now_ms: wall_millis(),
                    })
                    .await?
            }
        }
    }
}

fn link_closed() -> Error {
    Error::Peer("replication link closed".into())
}

struct Sender {
    r: Arc<Replicator>,
    db: Database,
    peer: Arc<PeerState>,
    peer_node_id: u64,
    tx: mpsc::Sender<Message>,
    frame_budget: usize,
}

impl Sender {
    async fn send(&self, m: Message) -> Result<()> {
        self.tx.send(m).await.map_err(|_| link_closed())
    }

    async fn run(self, mut wants: Vec<TableWant>) -> Result<()> {
        let config = self.peer.config();
        // Initial syncs go out highest priority first, like the log.
        let priority = |t: &str| {
            config
                .tables
                .iter()
                .find(|f| f.table == t)
                .map_or(0, |f| f.priority)
        };
        wants.sort_by_key(|w| std::cmp::Reverse(priority(&w.table)));
        let mut starts: HashMap<String, u64> = HashMap::new();
        let mut missing: Vec<String> = Vec::new();
        for want in wants {
            let published = config
                .tables
                .iter()
                .any(|t| t.table == want.table && t.publish);
            if !published {
                let reason = format!(
                    "`{}` does not publish table `{}` to `{}`",
                    self.db.node_name(),
                    want.table,
                    config.name
                );
                self.peer
                    .set_table_state(&want.table, None, Some(format!("refused: {reason}")));
                self.send(Message::Refused {
                    table: want.table,
                    reason,
                })
                .await?;
                continue;
            }
            let (db, t) = (self.db.clone(), want.table.clone());
            let info = match blocking(move || db.describe_table(&t)).await {
                Ok(info) => info,
                Err(Error::TableNotFound(_)) => {
                    missing.push(want.table.clone());
                    let reason = format!(
                        "`{}` has no table `{}` yet",
                        self.db.node_name(),
                        want.table
                    );
                    self.peer.set_table_state(
                        &want.table,
                        None,
                        Some(format!("refused: {reason}")),
                    );
                    self.send(Message::Refused {
                        table: want.table,
                        reason,
                    })
                    .await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.send(Message::TableInfo {
                table: want.table.clone(),
                primary_key: info.primary_key.clone(),
            })
            .await?;
            let bounds = self.db.log_bounds()?;
            let resumable = want.initial_sync_done
                && want.resume_after <= bounds.last
                && want.resume_after + 1 >= bounds.first;
            let start = if resumable {
                want.resume_after
            } else {
                let reason = if want.initial_sync_done {
                    let why = format!(
                        "resyncing table `{}` to `{}`: its resume point {} is not in this log ({}..={})",
                        want.table, config.name, want.resume_after, bounds.first, bounds.last
                    );
                    eprintln!("tidelog: {why}");
                    let mut c = self.peer.counters.lock();
                    c.resyncs_sent += 1;
                    c.overtaken = false;
                    c.last_resync_reason = Some(why);
                    SyncReason::ResumePointTrimmed
                } else {
                    SyncReason::Initial
                };
                self.peer
                    .set_table_state(&want.table, None, Some("syncing".into()));
                self.initial_sync(&want, &info.primary_key, reason).await?
            };
            self.peer
                .set_table_state(&want.table, None, Some("streaming".into()));
            starts.insert(want.table, start);
        }
        if missing.is_empty() {
            return self.stream(starts).await;
        }
        // A published table that does not exist yet starts flowing once it
        // is created: the link restarts so the peer's subscription is served.
        let db = self.db.clone();
        let peer = self.peer.name();
        let mut tables = db.shared.tables_changed.subscribe();
        let created = async move {
            loop {
                if tables.changed().await.is_err() {
                    return std::future::pending::<String>().await;
                }
                if let Some(t) = missing.iter().find(|t| db.describe_table(t).is_ok()) {
                    return t.clone();
                }
            }
        };
        tokio::select! {
            res = self.stream(starts) => res,
            table = created => Err(Error::Peer(format!(
                "table `{table}` was created; restarting the link so it flows to `{peer}`"
            ))),
        }
    }

    /// Sends the table's state as of now; returns the log sequence the
    /// state covers (live streaming continues after it, so nothing falls
    /// in between: a write racing the scan may arrive twice, and the stamp
    /// rule drops the second copy).
    async fn initial_sync(
        &self,
        want: &TableWant,
        primary_key: &str,
        reason: SyncReason,
    ) -> Result<u64> {
        let upto = *self.db.shared.committed.borrow();
        self.send(Message::SyncBegin {
            table: want.table.clone(),
            reason,
        })
        .await?;
        let mut after = None;
        loop {
            let (db, table, since) = (self.db.clone(), want.table.clone(), want.since_ms);
            let rows_per_chunk = self.r.opts.sync_chunk_rows;
            let budget = self.frame_budget;
            let from = after.clone();
            let (rows, next) = blocking(move || {
                db.state_chunk(&table, from.as_ref(), rows_per_chunk, budget, since)
            })
            .await?;
            let done = next.is_none();
            let rows = rows
                .into_iter()
                .map(|s| SyncRow {
                    key: s.key,
                    stamp: s.stamp,
                    created: s.created,
                    json: s.json,
                })
                .collect();
            self.send(Message::SyncChunk {
                table: want.table.clone(),
                primary_key: primary_key.to_string(),
                rows,
                done,
                upto_seq: upto,
            })
            .await?;
            if done {
                return Ok(upto);
            }
            after = next;
        }
    }

    async fn stream(self, starts: HashMap<String, u64>) -> Result<()> {
        let priority: HashMap<String, u8> = self
            .peer
            .config()
            .tables
            .iter()
            .map(|t| (t.table.clone(), t.priority))
            .collect();
        let mut lanes = Lanes::new(starts, &priority, self.peer_node_id);
        if lanes.is_empty() {
            // Nothing flows this way; the other halves keep the link.
            return std::future::pending().await;
        }
        let mut committed = self.db.shared.committed.subscribe();
        let mut acked = self.peer.acked.subscribe();
        let window = self.r.opts.window_txns;
        // Lets the peer acknowledge a position right away, so delivery
        // waits on tables it resumed do not hang until the next write.
        let mut floor = lanes.floor();
        self.peer.counters.lock().sent_seq = floor;
        self.send(Message::Progress { upto_seq: floor }).await?;
        loop {
            while lanes.front().saturating_sub(*acked.borrow_and_update()) >= window {
                acked.changed().await.map_err(|_| link_closed())?;
            }
            let last = *committed.borrow_and_update();
            let Some(lane) = lanes.next_lane(last) else {
                committed.changed().await.map_err(|_| Error::Closed)?;
                continue;
            };
            let pos = lanes.pos(lane);
            let room = window.saturating_sub(lanes.front().saturating_sub(*acked.borrow()));
            let limit = (last - pos)
                .min(self.r.opts.batch_max_txns as u64)
                .min(room)
                .max(1) as usize;
            let (db, from) = (self.db.clone(), pos + 1);
            let entries = blocking(move || db.read_log(from, limit)).await?;
            match entries.first() {
                Some(e) if e.seq == pos + 1 => {}
                _ => {
                    // The entries the peer needs next were trimmed away:
                    // reconnecting makes the peer's hello ask from its
                    // cursor, which then triggers a resync.
                    return Err(Error::Peer(format!(
                        "log entries after {pos} were trimmed before `{}` received them; reconnecting to resync",
                        self.peer.name()
                    )));
                }
            }
            let txns = lanes.plan(lane, entries);
            let new_floor = lanes.floor();
            // Frames carry the floor they complete; one cut short by the
            // frame budget only completes the floor from before this round.
            let mut frame = Vec::new();
            let mut bytes = 0;
            for t in txns {
                bytes += t.writes.iter().map(write_size).sum::<usize>() + 32;
                frame.push(t);
                if bytes >= self.frame_budget {
                    let txns = std::mem::take(&mut frame);
                    self.send(Message::TxnsUpTo {
                        txns,
                        upto_seq: floor,
                    })
                    .await?;
                    bytes = 0;
                }
            }
            if !frame.is_empty() || new_floor > floor {
                // Recorded before sending: the peer may acknowledge it
                // before this task runs again.
                self.peer.counters.lock().sent_seq = new_floor;
                self.send(Message::TxnsUpTo {
                    txns: frame,
                    upto_seq: new_floor,
                })
                .await?;
            }
            floor = new_floor;
        }
    }
}

fn write_size(w: &LogWrite) -> usize {
    w.table.len()
        + 16
        + match &w.op {
            WriteOp::Put { json, .. } => json.len(),
            WriteOp::Delete => 0,
        }
}

struct Receiver {
    db: Database,
    peer: Arc<PeerState>,
    name: String,
    cursor: PeerCursor,
    subscribed: HashSet<String>,
    /// Tables the peer accepted on this link (it sent their `TableInfo`).
    active: HashSet<String>,
    tx: mpsc::Sender<Message>,
}

impl Receiver {
    async fn run(mut self, mut reader: Reader, idle: Duration) -> Result<()> {
        loop {
            let msg = match tokio::time::timeout(idle, reader.read_message()).await {
                Err(_) => {
                    return Err(Error::Peer(format!(
                        "nothing received from `{}` for {idle:?} (not even a heartbeat): dropping the link",
                        self.name
                    )))
                }
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => return Err(Error::Peer(format!("`{}` closed the connection", self.name))),
                Ok(Err(e)) => return Err(e.into()),
            };
            match msg {
                Message::Txns(batch) => {
                    let upto = batch.last().map_or(0, |t| t.seq);
                    self.on_txns(batch, upto).await?
                }
                Message::TxnsUpTo { txns, upto_seq } => self.on_txns(txns, upto_seq).await?,
                Message::Progress { upto_seq } => self.on_txns_upto(Vec::new(), upto_seq).await?,
                Message::TableInfo { table, primary_key } => {
                    self.on_table_info(table, primary_key).await?
                }
                Message::SyncBegin { table, reason } => self.on_sync_begin(table, reason),
                Message::SyncChunk {
                    table,
                    primary_key,
                    rows,
                    done,
                    upto_seq,
                } => {
                    self.on_sync_chunk(table, primary_key, rows, done, upto_seq)
                        .await?
                }
                Message::Refused { table, reason } => {
                    self.peer
                        .set_table_state(&table, Some(format!("refused: {reason}")), None);
                    self.peer
                        .note_error(format!("`{}` refused table `{table}`: {reason}", self.name));
                }
                Message::Ack { upto_seq } => {
                    // A peer cannot acknowledge what was never sent to it:
                    // that would fake delivery receipts and let retention
                    // drop entries it still needs.
                    let sent = self.peer.counters.lock().sent_seq;
                    if upto_seq > sent {
                        return Err(Error::Peer(format!(
                            "`{}` acknowledged sequence {upto_seq}, but only {sent} was sent to it",
                            self.name
                        )));
                    }
                    // Persisted before anyone waiting is woken, so a receipt
                    // the app has seen is still known after it restarts.
                    if upto_seq > *self.peer.acked.borrow() {
                        let (db, name) = (self.db.clone(), self.name.clone());
                        blocking(move || store_acked(&db, &name, upto_seq)).await?;
                        self.peer.set_acked(upto_seq);
                    }
                }
                Message::Heartbeat { .. } => {}
                Message::Goodbye { reason } => {
                    return Err(Error::Peer(format!(
                        "`{}` closed the link: {reason}",
                        self.name
                    )))
                }
                Message::Hello(_) => {
                    return Err(Error::Peer(format!("`{}` sent a second hello", self.name)))
                }
            }
        }
    }

    fn live(&self, table: &str) -> bool {
        self.subscribed.contains(table)
            && self.active.contains(table)
            && self.cursor.tables.get(table).is_some_and(|c| c.synced)
    }

    async fn on_txns(&mut self, batch: Vec<WireTxn>, upto: u64) -> Result<()> {
        let mut refused: HashMap<String, u64> = HashMap::new();
        let mut txns = Vec::with_capacity(batch.len());
        for t in batch {
            let mut writes = Vec::with_capacity(t.writes.len());
            for w in t.writes {
                if self.live(&w.table) {
                    // Each table arrives in log order, so this table has
                    // everything up to this transaction.
                    if let Some(c) = self.cursor.tables.get_mut(&w.table) {
                        c.seq = c.seq.max(t.seq);
                    }
                    writes.push(w);
                } else {
                    *refused.entry(w.table).or_default() += 1;
                }
            }
            if !writes.is_empty() {
                txns.push(RemoteTxn {
                    stamp: t.stamp,
                    writes,
                });
            }
        }
        for (table, n) in refused {
            let reason = format!(
                "`{}` does not subscribe to table `{table}` from `{}`",
                self.db.node_name(),
                self.name
            );
            {
                let mut c = self.peer.counters.lock();
                c.refused_writes += n;
                c.last_error = Some(format!("refused {n} write(s): {reason}"));
            }
            let _ = self.tx.try_send(Message::Refused { table, reason });
        }
        self.on_txns_upto(txns, upto).await
    }

    /// Applies `txns` and moves every live table's cursor to `upto`, in one
    /// commit, then acknowledges.
    async fn on_txns_upto(&mut self, txns: Vec<RemoteTxn>, upto: u64) -> Result<()> {
        let live: Vec<String> = self
            .cursor
            .tables
            .keys()
            .filter(|t| self.live(t))
            .cloned()
            .collect();
        for t in live {
            if let Some(c) = self.cursor.tables.get_mut(&t) {
                c.seq = c.seq.max(upto);
            }
        }
        self.apply(txns).await?;
        self.peer.counters.lock().received_seq = upto;
        self.tx
            .send(Message::Ack { upto_seq: upto })
            .await
            .map_err(|_| link_closed())
    }

    async fn apply(&self, txns: Vec<RemoteTxn>) -> Result<()> {
        let (db, name, cursor) = (self.db.clone(), self.name.clone(), self.cursor.encode());
        let outcomes =
            blocking(move || db.apply_remote_owned(txns, Some((&name, &cursor)))).await?;
        let mut c = self.peer.counters.lock();
        for o in outcomes {
            match o {
                RemoteOutcome::Refused(e) => {
                    c.refused_writes += 1;
                    c.last_error = Some(format!("refused a transaction from `{}`: {e}", self.name));
                }
                RemoteOutcome::Applied { superseded, .. } => {
                    c.duplicates_received += superseded as u64
                }
            }
        }
        Ok(())
    }

    async fn on_table_info(&mut self, table: String, primary_key: String) -> Result<()> {
        if !self.subscribed.contains(&table) {
            return Ok(());
        }
        let (db, t) = (self.db.clone(), table.clone());
        let created =
            blocking(move || db.ensure_table(&t, TableOptions::default().primary_key(primary_key)))
                .await?;
        if created {
            eprintln!(
                "tidelog: created table `{table}` for the subscription from `{}`",
                self.name
            );
        }
        self.active.insert(table.clone());
        self.cursor.tables.entry(table.clone()).or_default();
        let state = if self.live(&table) {
            "streaming"
        } else {
            "waiting for sync"
        };
        self.peer.set_table_state(&table, Some(state.into()), None);
        Ok(())
    }

    fn on_sync_begin(&mut self, table: String, reason: SyncReason) {
        if !self.active.contains(&table) {
            return;
        }
        if let Some(c) = self.cursor.tables.get_mut(&table) {
            c.synced = false;
        }
        self.peer.counters.lock().syncs_received += 1;
        if reason == SyncReason::ResumePointTrimmed {
            let msg = format!(
                "resync of table `{table}` from `{}`: this node's resume point is no longer in its log; merging its current state",
                self.name
            );
            eprintln!("tidelog: {msg}");
            self.peer.note_error(msg.clone());
            self.peer.counters.lock().last_resync_reason = Some(msg);
        }
        self.peer
            .set_table_state(&table, Some("syncing".into()), None);
    }

    async fn on_sync_chunk(
        &mut self,
        table: String,
        _primary_key: String,
        rows: Vec<SyncRow>,
        done: bool,
        upto: u64,
    ) -> Result<()> {
        if !self.active.contains(&table) || !self.subscribed.contains(&table) {
            let n = rows.len() as u64;
            let mut c = self.peer.counters.lock();
            c.refused_writes += n;
            c.last_error = Some(format!(
                "refused sync rows for table `{table}` not subscribed from `{}`",
                self.name
            ));
            return Ok(());
        }
        let txns = rows
            .into_iter()
            .map(|row| RemoteTxn {
                stamp: row.stamp,
                writes: vec![LogWrite {
                    table: table.clone(),
                    key: row.key,
                    op: match row.json {
                        Some(json) => WriteOp::Put {
                            json,
                            created: row.created,
                        },
                        None => WriteOp::Delete,
                    },
                }],
            })
            .collect();
        if done {
            self.cursor.tables.insert(
                table.clone(),
                TableCursor {
                    seq: upto,
                    synced: true,
                },
            );
        }
        // Merged by the stamp rule: rows only this node has stay.
        self.apply(txns).await?;
        if done {
            self.peer
                .set_table_state(&table, Some("streaming".into()), None);
        }
        Ok(())
    }
}

/// Spreads redial delays so a fleet does not redial in lockstep.
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Jitter {
        Jitter(seed | 1)
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
}
