//! Acknowledgements that mean "in the destination", and where an edge
//! stands there.
//!
//! A hub with sinks (`cloud::driver`) registers one [`SinkGate`] per sink
//! with the tables it sends. A link whose peer sends any of those tables
//! then acknowledges only what every sink of them has committed: after
//! each frame the receiver notes the peer position it applied (`upto`)
//! and, per gate, the hub log head after its last write of that gate's
//! tables (`h`; a frame without such writes keeps the previous `h`). An
//! entry is released when each gate committed its `h`. Entries release in
//! order, one acknowledgement per frame, because the peer's stall
//! watchdog counts them frame by frame. A link with no gated table never
//! gets here: its receiver acknowledges at once, as before.
//!
//! `h` is the head after the apply, not the apply's own position: other
//! commits may sit in between, so it only ever waits a little longer,
//! never less. A link starts with `h` at the head: what earlier links (or
//! an earlier run of this hub) applied may not be in the destination yet,
//! and the first acknowledgement covers it too.
//!
//! The same entries tell each gate which peer positions a commit through
//! a hub position makes durable ([`SinkGate::positions_through`]), so a
//! sink can store them in the same destination transaction as the rows.
//! Another hub, taking the peer over, resumes from them
//! ([`ResumeHints`]).
//!
//! While a gate holds an entry, its link tells the peer every heartbeat
//! with `AckHeld` (what was applied and why it is not acknowledged): the
//! peer's watchdog counts that as progress, not as `no_ack_progress`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Notify};

use super::cursor::PeerCursor;
use super::link::link_closed;
use crate::error::Result;
use crate::local::db::Database;
use crate::net::wire::Message;

/// A peer's log position for one table that a sink made durable: all of
/// the peer's writes to `table` up to its log sequence `seq` are in the
/// destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EdgePosition {
    /// The peer's node name.
    pub edge: String,
    /// The peer's node id: positions count in the log of one node id; a
    /// reset peer (new id, same name) starts from none.
    pub node_id: u64,
    pub table: String,
    pub seq: u64,
}

/// Where a hub taking over a peer can learn how far the peer's writes
/// already reached the destination (a PostgreSQL sink's
/// `tidelog_edge_progress`). Registered with
/// [`Database::add_resume_hints`]; asked once per accepted link, with a
/// time limit.
pub trait ResumeHints: Send + Sync + 'static {
    /// The positions (table, peer log sequence) stored for the peer named
    /// `edge` with node id `node_id`; none known: an empty list. An error
    /// says what failed; the link then resumes from this hub's own cursor.
    fn edge_positions(&self, edge: &str, node_id: u64) -> HintsFuture<'_>;
}

/// What [`ResumeHints::edge_positions`] returns: (table, peer log
/// sequence) pairs, or what failed.
pub type HintsFuture<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<Vec<(String, u64)>, String>> + Send + 'a>>;

/// The gates and hints of one replication engine.
pub(crate) struct Sunk {
    gates: Mutex<Vec<Arc<GateState>>>,
    hints: Mutex<Vec<Arc<dyn ResumeHints>>>,
    /// Bumped whenever a gate's committed position moves.
    moved: watch::Sender<u64>,
}

impl Default for Sunk {
    fn default() -> Sunk {
        Sunk {
            gates: Mutex::new(Vec::new()),
            hints: Mutex::new(Vec::new()),
            moved: watch::Sender::new(0),
        }
    }
}

struct GateState {
    name: String,
    tables: HashSet<String>,
    /// The hub log position the sink committed through.
    committed: AtomicU64,
    edges: Mutex<HashMap<(String, u64), EdgeProgress>>,
    /// Wakes an idle driver when a link noted positions it may store.
    noted: Notify,
}

/// One peer's positions as far as one gate knows them.
#[derive(Default)]
struct EdgeProgress {
    /// (h, the peer's positions of the gate's tables), in the order noted.
    pending: VecDeque<(u64, Vec<(String, u64)>)>,
    /// Durable once the sink committed through their `h`.
    ready: BTreeMap<String, u64>,
    /// What the sink stored already.
    written: BTreeMap<String, u64>,
}

/// One sink's gate: the driver publishes what it committed and asks which
/// peer positions that makes durable.
#[derive(Clone)]
pub struct SinkGate {
    sunk: Arc<Sunk>,
    state: Arc<GateState>,
}

impl std::fmt::Debug for SinkGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkGate")
            .field("name", &self.state.name)
            .field("committed", &self.state.committed.load(Ordering::Acquire))
            .finish()
    }
}

impl SinkGate {
    /// The sink committed the hub's log through `seq`: acknowledgements
    /// waiting for it go out. Never moves back.
    pub fn committed(&self, seq: u64) {
        let before = self.state.committed.fetch_max(seq, Ordering::AcqRel);
        if seq > before {
            self.sunk.moved.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The peer positions a commit through hub position `seq` makes
    /// durable and that were not stored yet: a sink stores them with that
    /// commit, then calls [`SinkGate::positions_written`].
    pub fn positions_through(&self, seq: u64) -> Vec<EdgePosition> {
        let mut out = Vec::new();
        let mut edges = self.state.edges.lock();
        for ((edge, node_id), p) in edges.iter_mut() {
            while p.pending.front().is_some_and(|(h, _)| *h <= seq) {
                if let Some((_, seqs)) = p.pending.pop_front() {
                    for (table, s) in seqs {
                        let r = p.ready.entry(table).or_default();
                        *r = (*r).max(s);
                    }
                }
            }
            for (table, s) in &p.ready {
                if p.written.get(table).is_none_or(|w| w < s) {
                    out.push(EdgePosition {
                        edge: edge.clone(),
                        node_id: *node_id,
                        table: table.clone(),
                        seq: *s,
                    });
                }
            }
        }
        out
    }

    /// `positions` are stored in the destination: acknowledgements that
    /// waited for them go out.
    pub fn positions_written(&self, positions: &[EdgePosition]) {
        {
            let mut edges = self.state.edges.lock();
            for p in positions {
                if let Some(e) = edges.get_mut(&(p.edge.clone(), p.node_id)) {
                    let w = e.written.entry(p.table.clone()).or_default();
                    *w = (*w).max(p.seq);
                }
            }
        }
        if !positions.is_empty() {
            self.sunk.moved.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Returns once a link noted positions this gate may store (at once
    /// if one did since the last call).
    pub async fn noted(&self) {
        self.state.noted.notified().await
    }
}

impl Sunk {
    fn gate(self: &Arc<Self>, name: &str, tables: Vec<String>) -> SinkGate {
        let mut gates = self.gates.lock();
        if let Some(g) = gates.iter().find(|g| g.name == name) {
            return SinkGate {
                sunk: self.clone(),
                state: g.clone(),
            };
        }
        let state = Arc::new(GateState {
            name: name.to_string(),
            tables: tables.into_iter().collect(),
            committed: AtomicU64::new(0),
            edges: Mutex::new(HashMap::new()),
            noted: Notify::new(),
        });
        gates.push(state.clone());
        SinkGate {
            sunk: self.clone(),
            state,
        }
    }

    /// The gated tables among `tables`.
    pub(crate) fn gated(&self, tables: &[String]) -> Vec<String> {
        let gates = self.gates.lock();
        tables
            .iter()
            .filter(|t| gates.iter().any(|g| g.tables.contains(*t)))
            .cloned()
            .collect()
    }

    pub(crate) fn hints(&self) -> Vec<Arc<dyn ResumeHints>> {
        self.hints.lock().clone()
    }

    /// The gate of a link from `edge` (node id `node_id`) that receives
    /// `tables`, or `None` when no sink sends any of them (acknowledge at
    /// once). `head`: the hub log's last position now.
    pub(crate) fn link(
        self: &Arc<Self>,
        edge: &str,
        node_id: u64,
        tables: &[String],
        head: u64,
    ) -> Option<LinkGate> {
        let gates: Vec<Arc<GateState>> = self
            .gates
            .lock()
            .iter()
            .filter(|g| tables.iter().any(|t| g.tables.contains(t)))
            .cloned()
            .collect();
        if gates.is_empty() {
            return None;
        }
        let last_h = vec![head; gates.len()];
        Some(LinkGate {
            queue: Arc::new(AckQueue {
                sunk: self.clone(),
                gates: gates.clone(),
                edge: (edge.to_string(), node_id),
                entries: Mutex::new(VecDeque::new()),
                pushed: Notify::new(),
            }),
            gates,
            edge: edge.to_string(),
            node_id,
            last_h,
        })
    }
}

/// The receiving half's side of a gated link.
pub(crate) struct LinkGate {
    gates: Vec<Arc<GateState>>,
    edge: String,
    node_id: u64,
    /// Per gate, the hub head after this link's last write of its tables.
    last_h: Vec<u64>,
    queue: Arc<AckQueue>,
}

impl LinkGate {
    /// A frame applied writes of `tables`; `head` is the hub log's last
    /// position after that apply.
    pub(crate) fn applied<'a>(&mut self, mut tables: impl Iterator<Item = &'a str>, head: u64) {
        let touched: Vec<&str> = tables.by_ref().collect();
        for (g, h) in self.gates.iter().zip(self.last_h.iter_mut()) {
            if touched.iter().any(|t| g.tables.contains(*t)) {
                *h = (*h).max(head);
            }
        }
    }

    /// The peer's log up to `upto` is applied and `cursor` committed with
    /// it: queue its acknowledgement and note the gated tables' positions.
    pub(crate) fn applied_upto(&mut self, upto: u64, cursor: &PeerCursor) {
        let mut needs = Vec::with_capacity(self.gates.len());
        for (g, h) in self.gates.iter().zip(&self.last_h) {
            let seqs: Vec<(String, u64)> = cursor
                .tables
                .iter()
                .filter(|(t, c)| c.synced && g.tables.contains(*t))
                .map(|(t, c)| (t.clone(), c.seq))
                .collect();
            needs.push(seqs.clone());
            if seqs.is_empty() {
                continue;
            }
            let mut edges = g.edges.lock();
            let p = edges.entry((self.edge.clone(), self.node_id)).or_default();
            // A frame with no new write of the gate's tables only moves
            // the positions: one entry, not one per frame.
            match p.pending.back_mut() {
                Some((last, prev)) if *last == *h => *prev = seqs,
                _ => p.pending.push_back((*h, seqs)),
            }
            drop(edges);
            g.noted.notify_one();
        }
        self.queue.entries.lock().push_back(Waiting {
            upto,
            h: self.last_h.clone(),
            positions: needs,
        });
        self.queue.pushed.notify_one();
    }

    pub(crate) fn acks(&self) -> Arc<AckQueue> {
        self.queue.clone()
    }
}

/// A gated link's acknowledgements not sent yet.
pub(crate) struct AckQueue {
    sunk: Arc<Sunk>,
    gates: Vec<Arc<GateState>>,
    /// The peer's name and node id, as the gates key its positions.
    edge: (String, u64),
    entries: Mutex<VecDeque<Waiting>>,
    pushed: Notify,
}

/// One frame's acknowledgement, until the gates release it.
struct Waiting {
    /// The peer position to acknowledge.
    upto: u64,
    /// Per gate, the hub position its sink must have committed.
    h: Vec<u64>,
    /// Per gate, the peer positions its sink must have stored: an
    /// acknowledgement lets the peer trim its log, so a hub it moves to
    /// must find a position at least that far, or it resends the table.
    positions: Vec<Vec<(String, u64)>>,
}

impl AckQueue {
    /// The acknowledgements now due, in order, and, if one still waits,
    /// what `AckHeld` says: the peer position applied, and which gate
    /// holds the first waiting one.
    fn due(&self) -> (Vec<u64>, Option<(u64, String)>) {
        let committed: Vec<u64> = self
            .gates
            .iter()
            .map(|g| g.committed.load(Ordering::Acquire))
            .collect();
        let mut entries = self.entries.lock();
        let mut out = Vec::new();
        while let Some(w) = entries.front() {
            let waiting = w.h.iter().zip(&committed).position(|(h, c)| h > c);
            match waiting {
                None if !self.unstored(w) => {
                    out.push(w.upto);
                    entries.pop_front();
                }
                // Committed, its positions not stored yet: a moment (the
                // driver stores them next, and wakes this queue).
                None => return (out, None),
                Some(g) => {
                    let why = format!(
                        "its sink `{}` has put its log into the destination only through position {} of the {} these writes need (the destination is slow or down); the acknowledgement follows once it has",
                        self.gates[g].name, committed[g], w.h[g],
                    );
                    let applied = entries.back().map_or(w.upto, |b| b.upto);
                    return (out, Some((applied, why)));
                }
            }
        }
        (out, None)
    }

    /// Whether a gate has not stored a position `w` needs.
    fn unstored(&self, w: &Waiting) -> bool {
        self.gates.iter().zip(&w.positions).any(|(g, need)| {
            if need.is_empty() {
                return false;
            }
            let edges = g.edges.lock();
            let written = edges.get(&self.edge).map(|e| &e.written);
            need.iter()
                .any(|(t, s)| written.and_then(|w| w.get(t)).is_none_or(|have| have < s))
        })
    }

    /// Sends the link's acknowledgements as the gates release them, and
    /// an `AckHeld` every `heartbeat` while one waits. Runs until the link
    /// ends.
    pub(crate) async fn run(
        self: Arc<Self>,
        tx: mpsc::Sender<Message>,
        heartbeat: Duration,
    ) -> Result<()> {
        let mut moved = self.sunk.moved.subscribe();
        let mut held_told: Option<Instant> = None;
        loop {
            moved.borrow_and_update();
            let (due, held) = self.due();
            for upto in due {
                tx.send(Message::Ack { upto_seq: upto })
                    .await
                    .map_err(|_| link_closed())?;
            }
            let next_tell = match held {
                Some((applied, reason)) => {
                    let now = Instant::now();
                    if held_told.is_none_or(|t| now - t >= heartbeat) {
                        held_told = Some(now);
                        tx.send(Message::AckHeld {
                            applied_seq: applied,
                            reason,
                        })
                        .await
                        .map_err(|_| link_closed())?;
                    }
                    held_told.map(|t| t + heartbeat)
                }
                None => {
                    held_told = None;
                    None
                }
            };
            let wait = async {
                match next_tell {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = moved.changed() => r.map_err(|_| link_closed())?,
                () = self.pushed.notified() => {}
                () = wait => {}
            }
        }
    }
}

/// How long a link's start waits for the resume hints (a PostgreSQL that
/// does not answer): past it, the hub's own cursor is used.
pub(crate) const HINTS_TIMEOUT: Duration = Duration::from_secs(3);

/// Moves `cursor` (this hub's, for the peer `edge` of node id `node_id`)
/// to where the registered hints say the peer's writes of the gated
/// tables among `subscribed` already are, where that is ahead: the peer
/// then sends only what follows. A cursor of another node id is void
/// first (the peer restarted its log). Hints that fail or time out leave
/// the cursor as it is, with a log line.
pub(crate) async fn seed_cursor(
    sunk: &Sunk,
    edge: &str,
    node_id: u64,
    subscribed: &[String],
    mut cursor: PeerCursor,
) -> PeerCursor {
    let hints = sunk.hints();
    let gated = sunk.gated(subscribed);
    if hints.is_empty() || gated.is_empty() {
        return cursor;
    }
    let mut found: BTreeMap<String, u64> = BTreeMap::new();
    for h in hints {
        match tokio::time::timeout(HINTS_TIMEOUT, h.edge_positions(edge, node_id)).await {
            Ok(Ok(positions)) => {
                for (table, seq) in positions.into_iter().filter(|(t, _)| gated.contains(t)) {
                    let f = found.entry(table).or_default();
                    *f = (*f).max(seq);
                }
            }
            Ok(Err(e)) => log::warn!(
                target: "tidelog::repl",
                "`{edge}`: cannot read its positions in the sink's destination ({e}); resuming from this hub's own cursor"
            ),
            Err(_) => log::warn!(
                target: "tidelog::repl",
                "`{edge}`: the sink's destination gave no positions within {HINTS_TIMEOUT:?}; resuming from this hub's own cursor"
            ),
        }
    }
    if found.is_empty() {
        return cursor;
    }
    if cursor.peer_node_id != node_id {
        cursor = PeerCursor {
            peer_node_id: node_id,
            tables: Default::default(),
        };
    }
    let mut seeded = Vec::new();
    for (table, seq) in found {
        let c = cursor.tables.entry(table.clone()).or_default();
        if !c.synced || c.seq < seq {
            c.seq = c.seq.max(seq);
            c.synced = true;
            seeded.push(format!("`{table}` after {}", c.seq));
        }
    }
    if !seeded.is_empty() {
        log::info!(
            target: "tidelog::repl",
            "`{edge}` (node id {node_id:#x}): resuming {} from the positions in the sink's destination (ahead of this hub's own)",
            seeded.join(", ")
        );
    }
    cursor
}

impl Database {
    /// The acknowledgement gate of the sink named `name` sending `tables`
    /// (the same gate again for a name already registered). Register it
    /// before peers can link (before `listen`), so no acknowledgement of
    /// those tables goes out before the sink committed it; hand it to the
    /// sink's driver (`DriverConfig::gate`). Needs replication started.
    pub fn sink_gate(&self, name: &str, tables: Vec<String>) -> Result<SinkGate> {
        Ok(self.replicator()?.sunk.gate(name, tables))
    }

    /// Adds a source of resume positions for links of sunk tables (see
    /// [`ResumeHints`]). Needs replication started.
    pub fn add_resume_hints(&self, hints: Arc<dyn ResumeHints>) -> Result<()> {
        self.replicator()?.sunk.hints.lock().push(hints);
        Ok(())
    }
}

#[cfg(test)]
#[path = "sunk_tests.rs"]
mod tests;
