//! The lean edge: the edge side of one replication link, built from the
//! library's protocol modules (`tidelog::net::tls` to dial with the edge's
//! own certificate, `tidelog::net::wire` frames and messages, the record
//! types `Stamp`, `LogWrite`, `WriteOp`), with its log and its copy of the
//! thresholds in memory instead of a storage engine.
//!
//! It plays the protocol as a `Database` edge configured with
//! `PeerConfig::new("cloud").address(..).relays(true)` and the flows
//! `subscribe thresholds`, `publish alerts` would: the same hello (wants,
//! resume points, its own node id), `TableInfo` and an initial sync of
//! `alerts` when the hub asks for one or its resume point is unknown,
//! `TxnsUpTo` frames of its transactions stamped by a hybrid logical clock
//! with its own node id as origin, `Ack` of every frame the hub sends once
//! applied, a heartbeat when it has sent nothing for a heartbeat interval,
//! a link dropped when nothing arrived for the idle timeout, and redials
//! with jittered exponential backoff that resets after a stable link.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tidelog::hlc::wall_millis;
use tidelog::net::tls;
use tidelog::net::wire::{
    expect_hello, FrameReader, FrameWriter, Hello, Message, SyncReason, SyncRow, TableWant,
    WireTxn, DEFAULT_MAX_FRAME_BYTES, HELLO_MAX_BYTES, PROTOCOL_VERSION,
};
use tidelog::{Key, LogWrite, Stamp, WriteOp};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

pub const HUB: &str = "cloud";
pub const ALERTS: &str = "alerts";
pub const THRESHOLDS: &str = "thresholds";

/// Transactions per frame when a reconnected edge sends its backlog.
const BACKLOG_BATCH: usize = 500;

/// How long a link may take to say goodbye once the fleet stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A link up this long resets the redial backoff (as the library does).
const STABLE_LINK: Duration = Duration::from_secs(10);

/// What the whole fleet is told to do: one watch channel for all edges.
#[derive(Clone, Debug, Default)]
pub struct Control {
    /// Each edge commits one alert per this period; `None`: idle.
    pub alert_every: Option<Duration>,
    /// Bumped to make every edge drop its connection at once, without a
    /// goodbye, and redial.
    pub drop_epoch: u64,
    /// Every edge says goodbye and ends.
    pub stop: bool,
}

/// Timers, from the library's `ReplicationOptions` defaults.
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    pub heartbeat: Duration,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// Fleet-wide counters and samples that every edge writes to.
pub struct Fleet {
    /// Links up now.
    pub up: AtomicUsize,
    /// Per edge: the epoch its current link came up in; 0 while down.
    pub up_epoch: Vec<AtomicU64>,
    /// Set before each storm, so "up again" means up since then.
    pub epoch: AtomicU64,
    pub links_made: AtomicU64,
    pub committed: AtomicU64,
    /// Alerts the hub acknowledged (each counted once, however often
    /// acknowledged).
    pub acked: AtomicU64,
    /// Whether alerts committed now are sampled for lag.
    pub recording: AtomicBool,
    /// Commit to hub acknowledgement, microseconds.
    pub lags_us: Mutex<Vec<u64>>,
    /// Threshold key -> when each edge first had it.
    pub arrivals: Mutex<HashMap<String, Vec<Instant>>>,
    /// Alerts (or parts) the hub refused: must stay 0.
    pub refused: AtomicU64,
    pub link_errors: AtomicU64,
    /// The last distinct link errors, for the report.
    pub errors: Mutex<Vec<String>>,
}

impl Fleet {
    pub fn new(n: usize) -> Fleet {
        Fleet {
            up: AtomicUsize::new(0),
            up_epoch: (0..n).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(1),
            links_made: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            recording: AtomicBool::new(false),
            lags_us: Mutex::new(Vec::new()),
            arrivals: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            link_errors: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// Edges whose link came up at or after `epoch` and is still up.
    pub fn up_since(&self, epoch: u64) -> usize {
        self.up_epoch
            .iter()
            .filter(|e| e.load(Ordering::Relaxed) >= epoch)
            .count()
    }

    fn note_error(&self, e: String) {
        self.link_errors.fetch_add(1, Ordering::Relaxed);
        // One entry per kind: numbers (ports, edge names, sequences) vary.
        let gist: String = e
            .chars()
            .take(100)
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        let mut errs = self.errors.lock();
        if errs.len() < 12 && !errs.iter().any(|x| x == &gist) {
            errs.push(gist);
        }
    }
}

/// Who an edge is.
pub struct EdgeId {
    pub index: usize,
    pub name: String,
    pub node_id: u64,
    pub tls: Arc<rustls::ClientConfig>,
}

/// One committed alert, with when it was committed.
struct Entry {
    txn: WireTxn,
    at: Instant,
    sampled: bool,
}

/// The edge's log of its own alerts. Never trimmed: the hub's resume
/// point can go back after it is killed (what it acknowledged in its last
/// flush interval may be gone), and the edge must then send it again.
pub struct EdgeLog {
    name: String,
    node_id: u64,
    entries: Mutex<Vec<Entry>>,
    hlc: AtomicU64,
    committed: watch::Sender<u64>,
}

impl EdgeLog {
    fn new(name: &str, node_id: u64) -> EdgeLog {
        EdgeLog {
            name: name.to_string(),
            node_id,
            entries: Mutex::new(Vec::new()),
            hlc: AtomicU64::new(0),
            committed: watch::Sender::new(0),
        }
    }

    /// A hybrid-logical-clock stamp: wall milliseconds in the high 48
    /// bits, never going back.
    fn stamp(&self) -> Stamp {
        // Called under the entries lock: one writer at a time.
        let wall = wall_millis() << 16;
        let time = wall.max(self.hlc.load(Ordering::Acquire) + 1);
        self.hlc.store(time, Ordering::Release);
        Stamp {
            time,
            node: self.node_id,
        }
    }

    /// Commits one alert: `{"id": "<edge>/<seq>", ...}` in `alerts`.
    fn commit(&self, fleet: &Fleet) -> u64 {
        let mut entries = self.entries.lock();
        let seq = entries.len() as u64 + 1;
        let stamp = self.stamp();
        let id = format!("{}/{seq}", self.name);
        let json = format!(
            r#"{{"id":"{id}","edge":"{}","n":{seq},"level":{}}}"#,
            self.name,
            seq % 5
        );
        entries.push(Entry {
            txn: WireTxn {
                seq,
                stamp,
                writes: vec![LogWrite {
                    table: ALERTS.into(),
                    key: Key::Str(id),
                    op: WriteOp::Put {
                        json,
                        created: stamp.time,
                    },
                }],
            },
            at: Instant::now(),
            sampled: fleet.recording.load(Ordering::Relaxed),
        });
        drop(entries);
        self.committed.send_replace(seq);
        fleet.committed.fetch_add(1, Ordering::Relaxed);
        seq
    }

    fn last(&self) -> u64 {
        self.entries.lock().len() as u64
    }

    fn txns(&self, after: u64, upto: u64) -> Vec<WireTxn> {
        let e = self.entries.lock();
        e[after as usize..upto as usize]
            .iter()
            .map(|e| e.txn.clone())
            .collect()
    }
}

/// What an edge ends with, for the checks after a run.
pub struct EdgeReport {
    pub name: String,
    pub committed: u64,
    pub acked: u64,
    /// Threshold keys it holds.
    pub thresholds: Vec<String>,
    /// Threshold writes received again with a stamp it already had.
    pub threshold_repeats: u64,
}

/// An edge's state that outlives its links.
struct Edge {
    id: EdgeId,
    addr: String,
    timers: Timers,
    fleet: Arc<Fleet>,
    log: Arc<EdgeLog>,
    /// Highest position the hub acknowledged.
    acked: u64,
    /// Our subscription to the hub's thresholds: resume point, whether an
    /// initial sync completed, and what we hold.
    thr_cursor: u64,
    thr_synced: bool,
    thresholds: HashMap<Key, Stamp>,
    threshold_repeats: u64,
}

/// How a link ended without an error.
enum End {
    Stop,
    Dropped,
}

/// Runs one edge until the control says stop: dials, runs the link,
/// redials. Alerts are committed on their own schedule, link or not.
pub async fn run_edge(
    id: EdgeId,
    addr: String,
    timers: Timers,
    fleet: Arc<Fleet>,
    ctl: watch::Receiver<Control>,
) -> EdgeReport {
    let log = Arc::new(EdgeLog::new(&id.name, id.node_id));
    let committer = tokio::spawn(commit_loop(log.clone(), fleet.clone(), ctl.clone()));
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        ^ id.node_id;
    let mut edge = Edge {
        id,
        addr,
        timers,
        fleet,
        log,
        acked: 0,
        thr_cursor: 0,
        thr_synced: false,
        thresholds: HashMap::new(),
        threshold_repeats: 0,
    };
    edge.redial_loop(ctl, Jitter(seed | 1)).await;
    committer.abort();
    let mut thresholds: Vec<String> = edge
        .thresholds
        .keys()
        .map(|k| match k {
            Key::Str(s) => s.clone(),
            Key::Int(i) => i.to_string(),
        })
        .collect();
    thresholds.sort();
    EdgeReport {
        name: edge.id.name.clone(),
        committed: edge.log.last(),
        acked: edge.acked,
        thresholds,
        threshold_repeats: edge.threshold_repeats,
    }
}

/// One alert per period at a random phase, so a fleet's commits spread
/// over the second instead of arriving together.
async fn commit_loop(log: Arc<EdgeLog>, fleet: Arc<Fleet>, mut ctl: watch::Receiver<Control>) {
    let mut rng = Jitter(
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            | 1,
    );
    loop {
        let every = ctl.borrow_and_update().alert_every;
        let Some(every) = every else {
            if ctl.changed().await.is_err() {
                return;
            }
            continue;
        };
        let phase = Duration::from_micros(rng.next() % every.as_micros().max(1) as u64);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, every);
        // A loaded machine delays ticks; it must not then burst.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => { log.commit(&fleet); }
                changed = ctl.changed() => {
                    if changed.is_err() { return; }
                    if ctl.borrow().alert_every != Some(every) { break; }
                }
            }
        }
    }
}

impl Edge {
    async fn redial_loop(&mut self, mut ctl: watch::Receiver<Control>, mut jitter: Jitter) {
        let mut backoff = self.timers.backoff_initial;
        loop {
            if ctl.borrow_and_update().stop {
                return;
            }
            let started = Instant::now();
            // A link blocked writing to a hub that reads nothing never
            // sees the stop: it gets a moment for its goodbye, then goes.
            let mut stop = ctl.clone();
            let outcome = tokio::select! {
                biased;
                r = self.link(&mut ctl) => r,
                _ = async {
                    let _ = stop.wait_for(|c| c.stop).await;
                    tokio::time::sleep(STOP_GRACE).await;
                } => Ok(End::Stop),
            };
            match outcome {
                Ok(End::Stop) => return,
                Ok(End::Dropped) => backoff = self.timers.backoff_initial,
                Err(e) => self.fleet.note_error(e),
            }
            if started.elapsed() >= STABLE_LINK {
                backoff = self.timers.backoff_initial;
            }
            let delay = jitter.spread(backoff);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = ctl.wait_for(|c| c.stop) => return,
            }
            backoff = (backoff * 2).min(self.timers.backoff_max);
        }
    }

    fn hello(&self) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            node_name: self.id.name.clone(),
            node_id: self.id.node_id,
            now_ms: wall_millis(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u32,
            wants: vec![TableWant {
                table: THRESHOLDS.into(),
                resume_after: self.thr_cursor,
                since_ms: None,
                initial_sync_done: self.thr_synced,
            }],
            // Thresholds are written by the operator and relayed by the hub.
            relays_accepted: true,
            accepts_zstd: false,
            deltas: false,
        }
    }

    /// One link: dial, hello, serve the hub's wants, then run until the
    /// link fails, the fleet drops or stops.
    async fn link(&mut self, ctl: &mut watch::Receiver<Control>) -> Result<End, String> {
        let t = self.timers;
        let stream = tls::connect(&self.addr, HUB, self.id.tls.clone(), t.connect_timeout)
            .await
            .map_err(|e| e.to_string())?;
        let (rd, wr) = tokio::io::split(stream);
        // The hello is small; the full limit once it checked out.
        let mut reader = FrameReader::new(rd, HELLO_MAX_BYTES);
        let mut writer = FrameWriter::new(wr, DEFAULT_MAX_FRAME_BYTES);
        let wire = |e: tidelog::net::wire::WireError| e.to_string();
        writer
            .write_message(&Message::Hello(self.hello()))
            .await
            .map_err(wire)?;
        let first = tokio::time::timeout(t.connect_timeout, reader.read_message())
            .await
            .map_err(|_| format!("no hello from the hub within {:?}", t.connect_timeout))?
            .map_err(|e| format!("hello: {e}"))?;
        let hello = match first {
            Some(Message::Goodbye { reason }) => return Err(format!("hub refused: {reason}")),
            Some(m) => expect_hello(m).map_err(wire)?,
            None => return Err("hub closed before its hello".into()),
        };
        if hello.node_name != HUB {
            return Err(format!("dialed `{HUB}`, got `{}`", hello.node_name));
        }
        reader.set_max_frame_bytes(DEFAULT_MAX_FRAME_BYTES);
        writer.set_max_frame_bytes(hello.max_frame_bytes as usize);
        let _up = Up::new(self.fleet.clone(), self.id.index);

        // The publishing half: what the hub wants of us.
        let mut committed = self.log.committed.subscribe();
        let mut sent = None;
        for want in &hello.wants {
            if want.table != ALERTS {
                let reason = format!("`{}` does not publish `{}`", self.id.name, want.table);
                writer
                    .write_message(&Message::Refused {
                        table: want.table.clone(),
                        reason,
                    })
                    .await
                    .map_err(wire)?;
                continue;
            }
            writer
                .write_message(&Message::TableInfo {
                    table: ALERTS.into(),
                    primary_key: "id".into(),
                })
                .await
                .map_err(wire)?;
            let last = *committed.borrow_and_update();
            if want.initial_sync_done && want.resume_after <= last {
                sent = Some(want.resume_after);
            } else {
                // The table's state: each alert is its own row.
                let reason = if want.initial_sync_done {
                    SyncReason::ResumePointTrimmed
                } else {
                    SyncReason::Initial
                };
                writer
                    .write_message(&Message::SyncBegin {
                        table: ALERTS.into(),
                        reason,
                    })
                    .await
                    .map_err(wire)?;
                let rows = self
                    .log
                    .txns(0, last)
                    .into_iter()
                    .flat_map(|t| {
                        t.writes.into_iter().map(move |w| SyncRow {
                            key: w.key,
                            stamp: t.stamp,
                            created: t.stamp.time,
                            json: match w.op {
                                WriteOp::Put { json, .. } => Some(json),
                                _ => None,
                            },
                        })
                    })
                    .collect();
                writer
                    .write_message(&Message::SyncChunk {
                        table: ALERTS.into(),
                        primary_key: "id".into(),
                        rows,
                        done: true,
                        upto_seq: last,
                    })
                    .await
                    .map_err(wire)?;
                sent = Some(last);
            }
        }
        let mut last_write = Instant::now();
        let mut last_read = Instant::now();
        let mut heartbeat = tokio::time::interval(t.heartbeat);
        let epoch = ctl.borrow_and_update().drop_epoch;
        loop {
            // New alerts (or the backlog after a reconnect) go out first.
            if let Some(pos) = sent {
                let last = *committed.borrow_and_update();
                let mut at = pos;
                while at < last {
                    let upto = last.min(at + BACKLOG_BATCH as u64);
                    let txns = self.log.txns(at, upto);
                    writer
                        .write_message(&Message::TxnsUpTo {
                            txns,
                            upto_seq: upto,
                        })
                        .await
                        .map_err(wire)?;
                    at = upto;
                    last_write = Instant::now();
                }
                sent = Some(at);
            }
            tokio::select! {
                msg = reader.read_message() => {
                    let msg = msg.map_err(wire)?.ok_or("the hub closed the connection")?;
                    last_read = Instant::now();
                    if let Some(reply) = self.on_message(msg)? {
                        writer.write_message(&reply).await.map_err(wire)?;
                        last_write = Instant::now();
                    }
                }
                changed = committed.changed(), if sent.is_some() => {
                    changed.map_err(|_| "edge log gone")?;
                }
                _ = heartbeat.tick() => {
                    if last_read.elapsed() > t.idle_timeout {
                        return Err(format!("nothing from the hub for {:?}", t.idle_timeout));
                    }
                    if last_write.elapsed() >= t.heartbeat {
                        writer
                            .write_message(&Message::Heartbeat { now_ms: wall_millis() })
                            .await
                            .map_err(wire)?;
                        last_write = Instant::now();
                    }
                }
                changed = ctl.changed() => {
                    let c = match changed {
                        Ok(()) => ctl.borrow_and_update().clone(),
                        Err(_) => Control { stop: true, ..Control::default() },
                    };
                    if c.stop {
                        let _ = writer
                            .write_message(&Message::Goodbye { reason: "simulation over".into() })
                            .await;
                        let _ = writer.get_mut().shutdown().await;
                        return Ok(End::Stop);
                    }
                    if c.drop_epoch != epoch {
                        // Gone without a word, as a network drop.
                        return Ok(End::Dropped);
                    }
                }
            }
        }
    }

    /// Handles one frame from the hub; returns the reply, if any.
    fn on_message(&mut self, msg: Message) -> Result<Option<Message>, String> {
        Ok(match msg {
            Message::TableInfo { .. } | Message::Heartbeat { .. } => None,
            Message::Refused { table, reason } => {
                return Err(format!("hub refused `{table}`: {reason}"))
            }
            Message::SyncBegin { table, .. } => {
                if table == THRESHOLDS {
                    self.thr_synced = false;
                }
                None
            }
            Message::SyncChunk {
                table,
                rows,
                done,
                upto_seq,
                ..
            } => {
                if table != THRESHOLDS {
                    return Err(format!("sync of `{table}`, which we do not take"));
                }
                for r in rows {
                    self.apply_threshold(r.key, r.stamp);
                }
                if done {
                    self.thr_cursor = upto_seq;
                    self.thr_synced = true;
                }
                None
            }
            Message::Txns(txns) => {
                let upto = txns.last().map_or(self.thr_cursor, |t| t.seq);
                self.on_txns(txns, upto)?
            }
            Message::TxnsUpTo { txns, upto_seq } => self.on_txns(txns, upto_seq)?,
            Message::Progress { upto_seq } => self.on_txns(Vec::new(), upto_seq)?,
            Message::Ack { upto_seq } => {
                self.on_ack(upto_seq);
                None
            }
            Message::Refusals(r) => {
                self.fleet
                    .refused
                    .fetch_add(r.len() as u64, Ordering::Relaxed);
                let first = r.first().map(|r| r.reason.clone()).unwrap_or_default();
                self.fleet
                    .note_error(format!("hub refused alerts: {first}"));
                None
            }
            Message::Goodbye { reason } => return Err(format!("hub said goodbye: {reason}")),
            Message::Hello(_) => return Err("a second hello".into()),
            Message::DeltaMiss { .. } => return Err("a delta miss, but we send no deltas".into()),
        })
    }

    /// Applies the hub's transactions (thresholds only), moves the resume
    /// point and acknowledges: "applied" is in memory here, where a
    /// `Database` edge would commit first.
    fn on_txns(&mut self, txns: Vec<WireTxn>, upto: u64) -> Result<Option<Message>, String> {
        for t in txns {
            if t.stamp.node == self.id.node_id {
                return Err("the hub sent us our own write".into());
            }
            for w in t.writes {
                if w.table != THRESHOLDS {
                    return Err(format!("a write to `{}`, which we do not take", w.table));
                }
                self.apply_threshold(w.key, t.stamp);
            }
        }
        if self.thr_synced {
            self.thr_cursor = self.thr_cursor.max(upto);
        }
        Ok(Some(Message::Ack { upto_seq: upto }))
    }

    fn apply_threshold(&mut self, key: Key, stamp: Stamp) {
        match self.thresholds.get(&key) {
            Some(s) if *s >= stamp => self.threshold_repeats += 1,
            had => {
                if had.is_none() {
                    if let Key::Str(k) = &key {
                        self.fleet
                            .arrivals
                            .lock()
                            .entry(k.clone())
                            .or_default()
                            .push(Instant::now());
                    }
                }
                self.thresholds.insert(key, stamp);
            }
        }
    }

    /// The hub acknowledged our log up to `upto`: it applied those alerts.
    fn on_ack(&mut self, upto: u64) {
        if upto <= self.acked {
            return;
        }
        let now = Instant::now();
        {
            let entries = self.log.entries.lock();
            let end = (upto as usize).min(entries.len());
            let mut lags = Vec::new();
            for e in &entries[self.acked as usize..end] {
                if e.sampled {
                    lags.push(now.duration_since(e.at).as_micros() as u64);
                }
            }
            if !lags.is_empty() {
                self.fleet.lags_us.lock().extend(lags);
            }
        }
        self.fleet
            .acked
            .fetch_add(upto - self.acked, Ordering::Relaxed);
        self.acked = upto;
    }
}

/// Counts a link as up while it lives.
struct Up {
    fleet: Arc<Fleet>,
    index: usize,
}

impl Up {
    fn new(fleet: Arc<Fleet>, index: usize) -> Up {
        fleet.up.fetch_add(1, Ordering::AcqRel);
        fleet.links_made.fetch_add(1, Ordering::Relaxed);
        let epoch = fleet.epoch.load(Ordering::Acquire);
        fleet.up_epoch[index].store(epoch, Ordering::Release);
        Up { fleet, index }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.fleet.up_epoch[self.index].store(0, Ordering::Release);
        self.fleet.up.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Redial jitter, seeded per edge from the OS's random hash keys, so a
/// fleet started in one millisecond does not redial in lockstep.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [d/2, 3d/2), as the library spreads its redials.
    fn spread(&mut self, d: Duration) -> Duration {
        let ms = d.as_millis().max(1) as u64;
        Duration::from_millis(ms / 2 + self.next() % ms)
    }
}
