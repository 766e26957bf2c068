//! The receiving half of a link: applies what the peer sends, each frame
//! in one atomic commit together with the resume cursor, and acknowledges.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::cursor::{PeerCursor, TableCursor};
use super::deltas::{resolve, Resolved, PAUSE_AFTER_MISS};
use super::link::{blocking, link_closed, Reader};
use super::peer::PeerState;
use super::stall::Activity;
use super::sunk::LinkGate;
use crate::error::{Error, Result};
use crate::local::catalog::TableOptions;
use crate::local::codec::Stamp;
use crate::local::db::Database;
use crate::local::log::{LogWrite, WriteOp};
use crate::local::merge::MergeState;
use crate::local::remote::{RemoteOutcome, RemoteTxn};
use crate::net::wire::{Message, RefusalKind, SyncReason, SyncRow, TxnRefusal, WireTxn};

pub(super) struct Receiver {
    db: Database,
    peer: Arc<PeerState>,
    name: String,
    cursor: PeerCursor,
    subscribed: HashSet<String>,
    /// Tables the peer accepted on this link (it sent their `TableInfo`).
    active: HashSet<String>,
    tx: mpsc::Sender<Message>,
    /// Whether this node's hello accepted other origins from the peer.
    relays_accepted: bool,
    /// Where an origin violation's reason goes, and the signal that makes
    /// the link say goodbye with it.
    violation: Option<Violation>,
    /// What this node refused and has not yet told the peer; goes out
    /// before the next acknowledgement.
    refusals: Vec<TxnRefusal>,
    /// Whether this node takes attribute deltas from the peer (its hello
    /// said so).
    deltas: bool,
    /// A delta's base was missing: nothing more is applied or
    /// acknowledged on this link (see `repl::deltas`).
    missed: bool,
    /// Tells the link's stall watchdog when a frame is being handled.
    activity: Arc<Activity>,
    /// Set when a sink sends some of the tables this link receives: then
    /// acknowledgements wait for it (see `repl::sunk`).
    gate: Option<LinkGate>,
}

/// The reason slot and the signal of [`Receiver::new`].
pub(super) type Violation = (Arc<Mutex<Option<String>>>, oneshot::Sender<()>);

/// Refusals per frame: well under any frame limit, whatever the reasons say.
const REFUSALS_PER_FRAME: usize = 1000;

impl Receiver {
    pub(super) fn new(
        db: Database,
        peer: Arc<PeerState>,
        cursor: PeerCursor,
        tx: mpsc::Sender<Message>,
        relays_accepted: bool,
        violation: Violation,
        activity: Arc<Activity>,
    ) -> Receiver {
        let subscribed = peer
            .config()
            .tables
            .iter()
            .filter(|t| t.subscribe)
            .map(|t| t.table.clone())
            .collect();
        let deltas = peer.config().deltas_on();
        Receiver {
            db,
            name: peer.name(),
            cursor,
            subscribed,
            active: HashSet::new(),
            tx,
            refusals: Vec::new(),
            relays_accepted,
            violation: Some(violation),
            deltas,
            missed: false,
            activity,
            peer,
            gate: None,
        }
    }

    /// Acknowledgements go through `gate` (see `repl::sunk`).
    pub(super) fn gated(mut self, gate: Option<LinkGate>) -> Receiver {
        self.gate = gate;
        self
    }

    /// The origin rules: the peer may send writes of its own origin (the
    /// node id of its hello), writes of other origins only if this node
    /// accepts relays from it, and never writes of this node's own origin.
    /// Returns what is wrong with the first stamp that breaks them.
    fn origin_violation(
        &self,
        what: &str,
        mut stamps: impl Iterator<Item = Stamp>,
    ) -> Option<String> {
        let (own, theirs) = (self.db.node_id(), self.cursor.peer_node_id);
        let bad = stamps.find(|s| s.node == own || (s.node != theirs && !self.relays_accepted))?;
        let node = self.db.node_name();
        Some(if bad.node == own {
            format!(
                "`{}` sent {what} whose origin is `{node}`'s own node id {own:#x}: a peer never sends a node its own writes; link closed, nothing of that frame applied",
                self.name
            )
        } else {
            format!(
                "`{}` sent {what} whose origin is node {:#x}, not its own ({theirs:#x}), but `{node}` does not accept relayed writes from it (set `relays = true` for this peer to allow it); link closed, nothing of that frame applied",
                self.name, bad.node
            )
        })
    }

    /// Reports an origin violation and has the link say goodbye with it;
    /// reads nothing more.
    async fn violated(&mut self, reason: String) -> Result<()> {
        {
            let mut c = self.peer.counters.lock();
            c.origin_violations += 1;
            c.last_error = Some(reason.clone());
        }
        match self.violation.take() {
            Some((slot, signal)) => {
                *slot.lock() = Some(reason);
                let _ = signal.send(());
                std::future::pending().await
            }
            None => Err(Error::Peer(reason)),
        }
    }

    pub(super) async fn run(mut self, reader: &mut Reader, idle: Duration) -> Result<()> {
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
            let violation = match &msg {
                Message::Txns(txns) | Message::TxnsUpTo { txns, .. } => {
                    self.origin_violation("a transaction", txns.iter().map(|t| t.stamp))
                }
                Message::SyncChunk { rows, .. } => {
                    // A merge state holds many origins' writes: each is
                    // held to the rules, not only the row's stamp. One
                    // that does not decode is refused when applied.
                    let inner: Vec<Stamp> = rows
                        .iter()
                        .filter_map(|r| r.merge.as_deref())
                        .filter_map(|m| serde_json::from_str::<MergeState>(m).ok())
                        .flat_map(|s| s.origins().collect::<Vec<_>>())
                        .map(|node| Stamp { time: 0, node })
                        .collect();
                    self.origin_violation(
                        "a sync row (or a merge state in one)",
                        rows.iter().map(|r| r.stamp).chain(inner),
                    )
                }
                _ => None,
            };
            if let Some(reason) = violation {
                return self.violated(reason).await;
            }
            if self.missed
                && matches!(
                    msg,
                    Message::Txns(_)
                        | Message::TxnsUpTo { .. }
                        | Message::Progress { .. }
                        | Message::SyncBegin { .. }
                        | Message::SyncChunk { .. }
                )
            {
                // Waiting for the sender to end the link after a delta
                // miss: nothing past the miss applies or is acknowledged,
                // so frames that keep coming count towards a stall.
                self.activity.begin_apply();
                continue;
            }
            // The stall clock starts in the storage call itself (see
            // `on_txns`), not here: a frame waiting for a blocking thread
            // on a hub busy with a reconnecting fleet is queued, not stuck,
            // and tearing its link down only adds to the storm.
            self.handle(msg).await?;
            if !self.missed {
                self.activity.end_apply();
            }
        }
    }

    /// Handles one frame: applies it, or records what it says.
    async fn handle(&mut self, msg: Message) -> Result<()> {
        {
            match msg {
                Message::DeltaMiss { seq, reason } => {
                    let mut c = self.peer.counters.lock();
                    c.deltas_paused_until = Some(std::time::Instant::now() + PAUSE_AFTER_MISS);
                    c.delta_misses += 1;
                    drop(c);
                    return Err(Error::Peer(format!(
                        "`{}` lacked the base of an attribute delta in transaction {seq} ({reason}); reconnecting to send it whole, and updates to it go whole for {PAUSE_AFTER_MISS:?}",
                        self.name
                    )));
                }
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
                Message::Refusals(refusals) => self.on_refusals(refusals).await?,
                Message::Ack { upto_seq } => {
                    self.activity.acked();
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
                    // Receipts pass at once; the position is stored in
                    // batches (see `session::persist_acks`), and retention
                    // only trims what is stored.
                    self.peer.set_acked(upto_seq);
                }
                Message::Heartbeat { .. } => {}
                Message::AckHeld {
                    applied_seq,
                    reason,
                } => {
                    // Not a stall: the peer applies, and its sink is behind.
                    self.activity.ack_held();
                    let sent = self.peer.counters.lock().sent_seq;
                    self.peer.note_error(format!(
                        "`{}` applied through {} but holds its acknowledgement: {reason}",
                        self.name,
                        applied_seq.min(sent)
                    ));
                }
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
        Ok(())
    }

    fn live(&self, table: &str) -> bool {
        self.subscribed.contains(table)
            && self.active.contains(table)
            && self.cursor.tables.get(table).is_some_and(|c| c.synced)
    }

    /// Why a write to `table` is not taken on this link.
    fn not_live_reason(&self, table: &str) -> String {
        if !self.subscribed.contains(table) {
            format!(
                "`{}` does not subscribe to table `{table}` from `{}`",
                self.db.node_name(),
                self.name
            )
        } else {
            format!(
                "`{}` has not accepted table `{table}` from `{}` on this link yet (no table info, or its sync is not done)",
                self.db.node_name(),
                self.name
            )
        }
    }

    async fn on_txns(&mut self, mut batch: Vec<WireTxn>, upto: u64) -> Result<()> {
        let has_delta = batch.iter().any(|t| {
            t.writes
                .iter()
                .any(|w| matches!(w.op.inner(), WriteOp::Delta { .. }))
        });
        if has_delta {
            if !self.deltas {
                return Err(Error::Peer(format!(
                    "`{}` sent an attribute delta, but `{}` said in its hello that it takes none; link closed, nothing of that frame applied",
                    self.name,
                    self.db.node_name()
                )));
            }
            let live: std::collections::HashSet<String> = batch
                .iter()
                .flat_map(|t| t.writes.iter().map(|w| w.table.clone()))
                .filter(|t| self.live(t))
                .collect();
            let db = self.db.clone();
            let activity = self.activity.clone();
            let (resolved, back) = blocking(move || {
                activity.begin_apply();
                let r = resolve(&db, &mut batch, &|t| live.contains(t));
                r.map(|r| (r, batch))
            })
            .await?;
            batch = back;
            match resolved {
                Resolved::Rebuilt { superseded } => {
                    self.peer.counters.lock().duplicates_received += superseded;
                }
                Resolved::Miss { seq, reason } => {
                    self.missed = true;
                    self.peer.counters.lock().delta_misses += 1;
                    log::info!(target: "tidelog::repl", "delta miss from `{}` in transaction {seq}: {reason}", self.name);
                    return self
                        .tx
                        .send(Message::DeltaMiss { seq, reason })
                        .await
                        .map_err(|_| link_closed());
                }
            }
        }
        let mut refusals = Vec::new();
        let mut refused_writes = 0;
        let mut txns = Vec::with_capacity(batch.len());
        for t in batch {
            let mut writes = Vec::with_capacity(t.writes.len());
            let mut cut: Vec<String> = Vec::new();
            for w in t.writes {
                if self.live(&w.table) {
                    // Each table arrives in log order, so this table has
                    // everything up to this transaction.
                    if let Some(c) = self.cursor.tables.get_mut(&w.table) {
                        c.seq = c.seq.max(t.seq);
                    }
                    writes.push(w);
                } else {
                    refused_writes += 1;
                    if !cut.contains(&w.table) {
                        cut.push(w.table);
                    }
                }
            }
            for table in cut {
                refusals.push(TxnRefusal {
                    seq: t.seq,
                    reason: self.not_live_reason(&table),
                    table,
                    stamp: t.stamp,
                    kind: RefusalKind::NotSubscribed,
                });
            }
            if !writes.is_empty() {
                txns.push((
                    t.seq,
                    RemoteTxn {
                        stamp: t.stamp,
                        writes,
                    },
                ));
            }
        }
        if !refusals.is_empty() {
            self.peer.note_inbound_refusals(&refusals, refused_writes);
            self.refusals.extend(refusals);
        }
        self.on_txns_upto(txns, upto).await
    }

    /// Applies `txns` (each with the peer's sequence) and moves every live
    /// table's cursor to `upto`, in one commit, then tells the peer what
    /// was refused and acknowledges. The acknowledgement still moves past
    /// refused writes, so later ones flow and get their receipts; the
    /// refusals go first, so the peer never takes the acknowledgement as
    /// delivery of a refused write.
    async fn on_txns_upto(&mut self, txns: Vec<(u64, RemoteTxn)>, upto: u64) -> Result<()> {
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
        {
            let mut c = self.peer.counters.lock();
            c.received_seq = upto;
            c.log_frames_in += 1;
        }
        self.send_refusals().await?;
        if let Some(gate) = &mut self.gate {
            gate.applied_upto(upto, &self.cursor);
            return Ok(());
        }
        self.tx
            .send(Message::Ack { upto_seq: upto })
            .await
            .map_err(|_| link_closed())
    }

    async fn send_refusals(&mut self) -> Result<()> {
        while !self.refusals.is_empty() {
            let n = self.refusals.len().min(REFUSALS_PER_FRAME);
            let chunk: Vec<TxnRefusal> = self.refusals.drain(..n).collect();
            self.tx
                .send(Message::Refusals(chunk))
                .await
                .map_err(|_| link_closed())?;
        }
        Ok(())
    }

    /// The peer refused writes of this node's log: recorded durably before
    /// the acknowledgement that follows (this loop handles frames in
    /// order), so that acknowledgement never makes their receipts pass.
    async fn on_refusals(&self, refusals: Vec<TxnRefusal>) -> Result<()> {
        // A peer cannot refuse what this node never wrote; such a claim
        // would only fail receipts of writes to come.
        let last = *self.db.shared.committed.borrow();
        if let Some(r) = refusals.iter().find(|r| r.seq > last) {
            return Err(Error::Peer(format!(
                "`{}` refused transaction {}, but this node's log ends at {last}",
                self.name, r.seq
            )));
        }
        let (db, peer) = (self.db.clone(), self.peer.clone());
        blocking(move || peer.add_outbound_refusals(&db, refusals)).await
    }

    /// Applies `txns`, each with the peer's sequence (0 for sync rows), and
    /// queues a refusal for what of them was not applied.
    async fn apply(&mut self, txns: Vec<(u64, RemoteTxn)>) -> Result<()> {
        let mut about = Vec::with_capacity(txns.len());
        let txns: Vec<RemoteTxn> = txns
            .into_iter()
            .map(|(seq, t)| {
                let mut tables: Vec<String> = Vec::new();
                for w in &t.writes {
                    if !tables.contains(&w.table) {
                        tables.push(w.table.clone());
                    }
                }
                about.push((seq, t.stamp, tables));
                t
            })
            .collect();
        let (db, name, cursor) = (self.db.clone(), self.name.clone(), self.cursor.encode());
        let activity = self.activity.clone();
        let outcomes = blocking(move || {
            activity.begin_apply();
            db.apply_remote_owned(txns, Some((&name, &cursor)))
        })
        .await?;
        if let Some(gate) = &mut self.gate {
            // Read after the apply: the head covers its entries.
            let head = *self.db.shared.committed.borrow();
            gate.applied(
                about
                    .iter()
                    .flat_map(|(_, _, tables)| tables.iter().map(String::as_str)),
                head,
            );
        }
        let mut refusals = Vec::new();
        let (mut refused_writes, mut duplicates) = (0, 0);
        // One outcome per transaction, in order.
        for (o, (seq, stamp, tables)) in outcomes.into_iter().zip(about) {
            match o {
                RemoteOutcome::Refused(e) => {
                    refused_writes += 1;
                    let kind = match e {
                        Error::ClockSkew { .. } => RefusalKind::ClockSkew,
                        _ => RefusalKind::InvalidRecord,
                    };
                    let reason = e.to_string();
                    for table in tables {
                        refusals.push(TxnRefusal {
                            seq,
                            table,
                            stamp,
                            kind,
                            reason: reason.clone(),
                        });
                    }
                }
                RemoteOutcome::Applied {
                    superseded,
                    missing_table,
                    ..
                } => {
                    duplicates += superseded as u64;
                    if missing_table == 0 {
                        continue;
                    }
                    refused_writes += missing_table as u64;
                    for table in tables {
                        if self.db.table(&table).is_ok() {
                            continue;
                        }
                        refusals.push(TxnRefusal {
                            seq,
                            reason: format!(
                                "`{}` has no table `{table}` (dropped since it subscribed?)",
                                self.db.node_name()
                            ),
                            table,
                            stamp,
                            kind: RefusalKind::MissingTable,
                        });
                    }
                }
            }
        }
        self.peer.counters.lock().duplicates_received += duplicates;
        if !refusals.is_empty() || refused_writes > 0 {
            self.peer.note_inbound_refusals(&refusals, refused_writes);
            self.refusals.extend(refusals);
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
            log::info!(
                target: "tidelog::repl",
                "created table `{table}` for the subscription from `{}`",
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
            log::warn!(target: "tidelog::repl", "{msg}");
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
            let reason = self.not_live_reason(&table);
            let refusals: Vec<TxnRefusal> = rows
                .iter()
                .map(|row| TxnRefusal {
                    seq: 0,
                    table: table.clone(),
                    stamp: row.stamp,
                    kind: RefusalKind::NotSubscribed,
                    reason: reason.clone(),
                })
                .collect();
            self.peer.note_inbound_refusals(&refusals, n);
            self.refusals.extend(refusals);
            return self.send_refusals().await;
        }
        let txns = rows
            .into_iter()
            .map(|row| {
                (
                    // A sync row has no sequence; the peer matches a
                    // refusal of it by its stamp.
                    0,
                    RemoteTxn {
                        stamp: row.stamp,
                        writes: vec![LogWrite {
                            table: table.clone(),
                            key: row.key,
                            op: crate::local::settle::synced_op(
                                match row.json {
                                    Some(json) => WriteOp::Put {
                                        json,
                                        created: row.created,
                                    },
                                    None => WriteOp::Delete,
                                },
                                row.merge,
                            ),
                        }],
                    },
                )
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
        self.send_refusals().await?;
        if done {
            self.peer
                .set_table_state(&table, Some("streaming".into()), None);
        }
        Ok(())
    }
}
