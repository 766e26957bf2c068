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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidelog::hlc::wall_millis;
use tidelog::net::tls;
use tidelog::net::wire::{
    expect_hello, FrameReader, FrameWriter, Hello, Message, SyncReason, SyncRow, TableWant,
    WireTxn, DEFAULT_MAX_FRAME_BYTES, HELLO_MAX_BYTES, PROTOCOL_VERSION,
};
use tidelog::{Key, Stamp, WriteOp};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::state::{commit_loop, EdgeLog, Jitter, Up};
pub use super::state::{Control, EdgeId, EdgeReport, Fleet, Timers};

pub const HUB: &str = "cloud";
pub const ALERTS: &str = "alerts";
pub const THRESHOLDS: &str = "thresholds";

/// Transactions per frame when a reconnected edge sends its backlog.
const BACKLOG_BATCH: usize = 500;

/// How long a link may take to say goodbye once the fleet stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A link up this long resets the redial backoff (as the library does).
const STABLE_LINK: Duration = Duration::from_secs(10);

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
                            merge: None,
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
            // The hub's sink holds the acknowledgement: it comes later.
            Message::AckHeld { .. } => None,
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
