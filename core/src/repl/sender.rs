//! The sending half of a link: this node's log, in priority lanes, within
//! the peer's acknowledgement window, and an initial sync of each table
//! the peer needs one for.
//!
//! Syncs run alongside the log, one table at a time (highest priority
//! first), as bulk data that goes out only when nothing else waits to (see
//! `write_loop`): a table that resumes streams at once, however big the
//! snapshot of another. A table joins the lanes when its sync is written.
//! Until every sync is done, the position the peer may acknowledge stays
//! where it was when the link came up: an acknowledgement must not pass a
//! write whose table is still being synced, or its delivery receipt would
//! pass early. The window bounds how far the log runs ahead meanwhile.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::coalesce;
use super::deltas::{paused, Bases};
use super::lanes::Lanes;
use super::link::{blocking, link_closed, BulkMessage};
use super::peer::PeerState;
use super::peer::NOT_SUBSCRIBED_BY_PEER;
use super::route::Routes;
use super::runtime::Replicator;
use super::stall::Activity;
use crate::error::{Error, Result};
use crate::local::db::Database;
use crate::local::fanout::Interest;
use crate::local::filter::PeerIdentity;
use crate::local::log::{LogWrite, WriteOp};
use crate::net::wire::{element_cost, Hello, Message, SyncReason, SyncRow, TableWant, WireTxn};

pub(super) struct Sender {
    r: Arc<Replicator>,
    db: Database,
    peer: Arc<PeerState>,
    peer_node_id: u64,
    /// `Some(this node's id)` when the peer's hello does not accept relays:
    /// only this node's own writes go to it then.
    only_origin: Option<u64>,
    tx: mpsc::Sender<Message>,
    bulk: mpsc::Sender<BulkMessage>,
    frame_budget: usize,
    /// The bases of attribute deltas, when both sides want them.
    deltas: Option<parking_lot::Mutex<Bases>>,
    /// What the link's stall watchdog sees of the frames sent.
    activity: Arc<Activity>,
    /// The peer's certificate DNS names, for filters' `$peer.dns`.
    peer_dns: Vec<String>,
    /// The row filters and column lists of the published tables.
    routes: Routes,
}

/// A table to sync, in the order syncs go out.
struct Sync {
    want: TableWant,
    primary_key: String,
    reason: SyncReason,
}

impl Sender {
    pub(super) fn new(
        r: Arc<Replicator>,
        db: Database,
        peer: Arc<PeerState>,
        hello: &Hello,
        tx: mpsc::Sender<Message>,
        bulk: mpsc::Sender<BulkMessage>,
        activity: Arc<Activity>,
    ) -> Sender {
        let frame_budget = (hello.max_frame_bytes as usize).min(r.opts.max_frame_bytes) / 2;
        let deltas = (hello.deltas && peer.config().deltas_on()).then(Default::default);
        Sender {
            deltas,
            r,
            db: db.clone(),
            peer,
            peer_node_id: hello.node_id,
            only_origin: (!hello.relays_accepted).then(|| db.node_id()),
            tx,
            bulk,
            frame_budget,
            activity,
            peer_dns: Vec::new(),
            routes: Routes::default(),
        }
    }

    /// The DNS names of the peer's verified certificate, which filters'
    /// `$peer.dns` stands for.
    pub(super) fn peer_dns(mut self, names: Vec<String>) -> Sender {
        self.peer_dns = names;
        self
    }

    async fn send(&self, m: Message) -> Result<()> {
        // Each of these is acknowledged once, in order: the stall
        // watchdog waits for the acknowledgement of the last data frame.
        match &m {
            Message::TxnsUpTo { txns, .. } => self.activity.frame_queued(!txns.is_empty()),
            Message::Progress { .. } => self.activity.frame_queued(false),
            _ => {}
        }
        self.tx.send(m).await.map_err(|_| link_closed())
    }

    /// Queues bulk data; with `written`, returns once it is on the wire.
    async fn send_bulk(&self, m: Message, written: bool) -> Result<()> {
        let (done, wait) = if written {
            let (done, wait) = oneshot::channel();
            (Some(done), Some(wait))
        } else {
            (None, None)
        };
        self.bulk.send((m, done)).await.map_err(|_| link_closed())?;
        match wait {
            Some(wait) => wait.await.map_err(|_| link_closed()),
            None => Ok(()),
        }
    }

    pub(super) async fn run(mut self, mut wants: Vec<TableWant>) -> Result<()> {
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
        // Stored before anything goes out, so a delivery receipt waiting on
        // a write to such a table fails before the first acknowledgement
        // passes over it, and still does once this link is down or after a
        // restart (see PeerState::wait_acked). It replaces what the last
        // link said: a peer that now subscribes gets those receipts again
        // once it caught up (see `catch_up`).
        let not_wanted: BTreeSet<String> = config
            .tables
            .iter()
            .filter(|t| t.publish && !wants.iter().any(|w| w.table == t.table))
            .map(|t| t.table.clone())
            .collect();
        for table in &not_wanted {
            self.peer
                .set_table_state(table, None, Some(NOT_SUBSCRIBED_BY_PEER.into()));
        }
        let wanted: BTreeSet<String> = wants.iter().map(|w| w.table.clone()).collect();
        // Read before any sync starts: see `Skipped::mark`.
        let mark = *self.db.shared.committed.borrow();
        let (db, peer) = (self.db.clone(), self.peer.clone());
        let catching_up = blocking(move || peer.link_wants(&db, not_wanted, &wanted, mark)).await?;
        let mut starts: HashMap<String, u64> = HashMap::new();
        let mut syncs: Vec<Sync> = Vec::new();
        let mut missing: Vec<String> = Vec::new();
        let mut keys: HashMap<String, String> = HashMap::new();
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
            keys.insert(want.table.clone(), info.primary_key.clone());
            let bounds = self.db.log_bounds()?;
            let resumable = want.initial_sync_done
                && want.resume_after <= bounds.last
                && want.resume_after + 1 >= bounds.first;
            if resumable {
                self.peer
                    .set_table_state(&want.table, None, Some("streaming".into()));
                starts.insert(want.table, want.resume_after);
            } else {
                let reason = if want.initial_sync_done {
                    let why = format!(
                        "resyncing table `{}` to `{}`: its resume point {} is not in this log ({}..={})",
                        want.table, config.name, want.resume_after, bounds.first, bounds.last
                    );
                    log::warn!(target: "tidelog::repl", "{why}");
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
                syncs.push(Sync {
                    want,
                    primary_key: info.primary_key,
                    reason,
                });
            }
        }
        self.routes = self.routes_for(&config, &keys)?;
        let (synced_tx, synced) = mpsc::unbounded_channel();
        let pending = syncs.iter().map(|s| s.want.table.clone()).collect();
        let log_and_syncs = async {
            let syncing = async {
                for sync in syncs {
                    let upto = self.initial_sync(&sync).await?;
                    // The stream gone means the link is ending anyway.
                    let _ = synced_tx.send((sync.want.table, upto));
                }
                Ok(())
            };
            tokio::try_join!(
                self.stream(starts, pending, synced),
                syncing,
                self.catch_up(catching_up, mark)
            )
            .map(|_| ())
        };
        if missing.is_empty() {
            return log_and_syncs.await;
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
            res = log_and_syncs => res,
            table = created => Err(Error::Peer(format!(
                "table `{table}` was created; restarting the link so it flows to `{peer}`"
            ))),
        }
    }

    /// The link's routes, bound for this peer; the tables they filter
    /// start recording the attributes they test with each write.
    fn routes_for(
        &self,
        config: &super::config::PeerConfig,
        keys: &HashMap<String, String>,
    ) -> Result<Routes> {
        let who = PeerIdentity {
            name: config.name.clone(),
            dns: self.peer_dns.clone(),
        };
        for f in config.tables.iter().filter(|f| f.publish) {
            if let Some(p) = f.parsed_filter()? {
                self.db
                    .shared
                    .feed
                    .route_attributes(&f.table, p.attributes());
            }
        }
        Routes::new(config, &who, |t| keys.get(t).cloned())
    }

    /// Sends the table's state as of now; returns the log sequence the
    /// state covers (live streaming continues after it, so nothing falls
    /// in between: a write racing the scan may arrive twice, and the stamp
    /// rule drops the second copy). Returns once the last chunk is
    /// written, so that the table's log, which goes out ahead of bulk
    /// data, cannot overtake it.
    async fn initial_sync(&self, sync: &Sync) -> Result<u64> {
        let (want, primary_key) = (&sync.want, &sync.primary_key);
        let upto = *self.db.shared.committed.borrow();
        self.send_bulk(
            Message::SyncBegin {
                table: want.table.clone(),
                reason: sync.reason,
            },
            false,
        )
        .await?;
        let mut after = None;
        loop {
            let (db, table, since) = (self.db.clone(), want.table.clone(), want.since_ms);
            self.budget_allows(&want.table).await?;
            let budget = self.peer.meter.frame_bytes(self.frame_budget);
            // Within what the peer may decode, however small the rows.
            let rows_per_chunk = self
                .r
                .opts
                .sync_chunk_rows
                .min(budget / element_cost::<SyncRow>())
                .max(1);
            let from = after.clone();
            let (rows, next) = blocking(move || {
                db.state_chunk(&table, from.as_ref(), rows_per_chunk, budget, since)
            })
            .await?;
            let done = next.is_none();
            // The origin rules hold for syncs too: never the peer's own
            // writes back (it has them, or newer), and no other origins to a
            // peer that does not take relays from this node.
            // Row filters too: a resync also deletes at the peer what its
            // filter no longer selects.
            let resync = sync.reason != SyncReason::Initial;
            let mut out = Vec::with_capacity(rows.len());
            for s in rows {
                let routed = self.routes.sync_row(&want.table, s.into(), resync);
                if let Some(row) = routed
                    .map(|r| super::sync_part::allowed(r, |o| self.may_send_origin(o)))
                    .transpose()?
                    .flatten()
                {
                    out.push(row);
                }
            }
            let rows = out;
            // Metered: each chunk is written (and counted) before the
            // next is planned.
            self.send_bulk(
                Message::SyncChunk {
                    table: want.table.clone(),
                    primary_key: primary_key.to_string(),
                    rows,
                    done,
                    upto_seq: upto,
                },
                done || self.peer.meter.is_metered(),
            )
            .await?;
            if done {
                return Ok(upto);
            }
            after = next;
        }
    }

    /// Once the peer acknowledges past `mark`, the tables it caught up on
    /// on this link no longer hold receipts back.
    async fn catch_up(&self, catching_up: bool, mark: u64) -> Result<()> {
        if !catching_up {
            return Ok(());
        }
        let mut acked = self.peer.acked.subscribe();
        while *acked.borrow_and_update() <= mark {
            acked.changed().await.map_err(|_| link_closed())?;
        }
        let (db, peer) = (self.db.clone(), self.peer.clone());
        blocking(move || peer.caught_up(&db, mark)).await
    }

    fn may_send_origin(&self, origin: u64) -> bool {
        origin != self.peer_node_id && self.only_origin.is_none_or(|o| o == origin)
    }

    fn lanes(
        &self,
        starts: HashMap<String, u64>,
        priority: &HashMap<String, (u8, u8)>,
        pending: HashSet<String>,
    ) -> Lanes {
        Lanes::grouped(starts, priority, pending, self.peer_node_id).only_origin(self.only_origin)
    }

    /// Stores the quota's use when due (about once a second, not per frame).
    async fn store_quota(&self) -> Result<()> {
        let Some(q) = self.peer.meter.to_store() else {
            return Ok(());
        };
        let (db, peer) = (self.db.clone(), self.peer.name());
        blocking(move || super::cursor::store_quota(&db, &peer, &q)).await
    }

    /// Queues a data frame; the write loop counts it written (see
    /// `Meter::wait_written`).
    async fn send_frame(&self, txns: Vec<WireTxn>, upto_seq: u64) -> Result<()> {
        self.peer.meter.queued_frame();
        self.peer.counters.lock().log_frames += 1;
        self.send(Message::TxnsUpTo { txns, upto_seq }).await
    }

    /// On a metered link: returns once the last data frame is written and
    /// the bucket is not in debt, so at most one data frame waits for the
    /// write loop and the next is chosen when it can go.
    async fn frame_may_go(&self) {
        let meter = &self.peer.meter;
        if meter.is_metered() {
            meter.wait_written().await;
            meter.wait_for_tokens().await;
        }
    }

    /// Waits until the budget lets the next frame of `table` go: not held
    /// by the quota or a window, and the bucket not in debt.
    async fn budget_allows(&self, table: &str) -> Result<()> {
        let flow = self
            .peer
            .config()
            .tables
            .into_iter()
            .find(|t| t.table == table);
        let (bulk, exempt) = flow.map_or((false, false), |f| (f.bulk, f.exempt_from_quota));
        while self.peer.meter.hold(bulk, exempt).is_some() {
            self.store_quota().await?;
            tokio::time::sleep(HELD_RECHECK).await;
        }
        self.store_quota().await?;
        self.peer.meter.wait_for_tokens().await;
        Ok(())
    }

    /// The lanes once `table`, synced up to `upto`, streams too. Its
    /// position may be behind the other lanes': the feed's record of what
    /// they passed is gone, so the new lanes read the log up to now.
    fn join(
        &self,
        lanes: &Lanes,
        interest: &Interest,
        pending: &mut HashSet<String>,
        priority: &HashMap<String, (u8, u8)>,
        table: String,
        upto: u64,
    ) -> Lanes {
        pending.remove(&table);
        interest.read_all_to(*self.db.shared.committed.borrow());
        let mut at = lanes.positions();
        at.insert(table.clone(), upto);
        self.peer
            .set_table_state(&table, None, Some("streaming".into()));
        self.lanes(at, priority, pending.clone())
    }

    /// Tells the peer it may acknowledge `to` if that is past `floor`
    /// (a sync ending lifts the floor with nothing new to send); returns
    /// the floor now.
    async fn progress(&self, floor: u64, to: u64) -> Result<u64> {
        if to <= floor {
            return Ok(floor);
        }
        // Recorded before sending: the peer may acknowledge it at once.
        {
            let mut c = self.peer.counters.lock();
            c.sent_seq = to;
            c.log_frames += 1;
        }
        self.send(Message::Progress { upto_seq: to }).await?;
        Ok(to)
    }

    /// For a link on which the peer takes nothing from this node: every
    /// entry is passed over, so the peer may acknowledge the log as it
    /// grows. Its acknowledgement would otherwise stay where the link came
    /// up, holding back log retention and tombstone collection for a peer
    /// that needs none of it. Paced (see [`Pace`]): a busy log costs a
    /// progress frame per heartbeat interval, not one per commit.
    async fn pass_over(&self) -> Result<()> {
        let mut committed = self.db.shared.committed.subscribe();
        let mut wanted = self.peer.progress_wanted.subscribe();
        let mut floor = *self.peer.acked.borrow();
        let mut pace = Pace::new(&self.r.opts);
        loop {
            let to = *committed.borrow_and_update();
            if pace.due(floor, to, *wanted.borrow_and_update()) {
                floor = self.progress(floor, to).await?;
                pace.sent();
                continue;
            }
            let ahead = to > floor;
            tokio::select! {
                changed = committed.changed(), if !ahead => changed.map_err(|_| Error::Closed)?,
                () = tokio::time::sleep_until(pace.next()), if ahead => {}
                changed = wanted.changed() => changed.map_err(|_| link_closed())?,
            }
        }
    }

    /// Streams the log for the tables in `starts`, and for each table in
    /// `pending` once `synced` says its sync is written (with the sequence
    /// the sync covers).
    async fn stream(
        &self,
        starts: HashMap<String, u64>,
        mut pending: HashSet<String>,
        mut synced: mpsc::UnboundedReceiver<(String, u64)>,
    ) -> Result<()> {
        // Lanes per priority and budget class (bit 0: bulk, bit 1: exempt
        // from the quota), so the budget holds a class without the others.
        let priority: HashMap<String, (u8, u8)> = self
            .peer
            .config()
            .tables
            .iter()
            .map(|t| {
                let class = u8::from(t.bulk) | (u8::from(t.exempt_from_quota) << 1);
                (t.table.clone(), (t.priority, class))
            })
            .collect();
        let windows: coalesce::Windows = self
            .peer
            .config()
            .tables
            .iter()
            .filter(|t| t.publish)
            .filter_map(|t| Some((t.table.clone(), t.coalesce_ms.filter(|c| *c > 0)?)))
            .collect();
        let mut held_at = u64::MAX;
        let meter = &self.peer.meter;
        let hold = |lanes: &mut Lanes| {
            lanes.hold(|class| meter.hold(class & 1 != 0, class & 2 != 0).is_some())
        };
        // Only commits to these tables wake the link (see `local::fanout`).
        let interest = self.db.shared.feed.subscribe_filtered(
            starts.keys().chain(pending.iter()).map(String::as_str),
            &self.routes.bounds(),
            self.peer_node_id,
            self.only_origin,
        );
        // Read after registering: what was committed before it is unknown
        // to the feed and is read from the log, like before.
        interest.read_all_to(*self.db.shared.committed.borrow());
        let mut lanes = self.lanes(starts, &priority, pending.clone());
        if lanes.is_empty() && pending.is_empty() {
            return self.pass_over().await;
        }
        let mut committed = self.db.shared.committed.subscribe();
        let mut wanted = self.peer.progress_wanted.subscribe();
        let mut pace = Pace::new(&self.r.opts);
        let mut acked = self.peer.acked.subscribe();
        let window = self.r.opts.window_txns;
        // Where acknowledgements stay while a sync is going on.
        let held = *acked.borrow();
        let floor_of = |lanes: &Lanes, pending: &HashSet<String>| {
            let floor = if lanes.is_empty() {
                held
            } else {
                lanes.floor()
            };
            if pending.is_empty() {
                floor
            } else {
                floor.min(held)
            }
        };
        // Lets the peer acknowledge a position right away, so delivery
        // waits on tables it resumed do not hang until the next write.
        let mut floor = floor_of(&lanes, &pending);
        self.peer.counters.lock().sent_seq = floor;
        self.send(Message::Progress { upto_seq: floor }).await?;
        pace.sent();
        let mut held = hold(&mut lanes);
        loop {
            let joined = loop {
                // A synced table joins; otherwise wait for room in the
                // window, then for work.
                if let Ok(joined) = synced.try_recv() {
                    break Some(joined);
                }
                if outstanding(&lanes, *acked.borrow_and_update(), floor) >= window {
                    tokio::select! {
                        changed = acked.changed() => changed.map_err(|_| link_closed())?,
                        Some(joined) = synced.recv() => break Some(joined),
                        () = tokio::time::sleep(HELD_RECHECK), if held => held = hold(&mut lanes),
                    }
                    continue;
                }
                break None;
            };
            if let Some((table, upto)) = joined {
                lanes = self.join(&lanes, &interest, &mut pending, &priority, table, upto);
                floor = self.progress(floor, floor_of(&lanes, &pending)).await?;
                continue;
            }
            // The cap: nothing is planned while the bucket is in debt, so
            // the next frame is chosen (highest priority first) when it
            // can go, and at most one frame waits towards the write loop.
            self.store_quota().await?;
            self.frame_may_go().await;
            held = hold(&mut lanes);
            // What was committed since needs reading only where it wrote
            // this link's tables: the rest is passed over unread.
            let plan = interest.plan(lanes.floor(), *committed.borrow_and_update());
            lanes.pass_to(plan.pass_to);
            let read = plan
                .read_to
                .and_then(|last| Some((lanes.next_lane(last)?, last)));
            let Some((lane, last)) = read else {
                // Nothing to send: the position passed over goes to the
                // peer when due, not per commit.
                let to = floor_of(&lanes, &pending).max(floor);
                if pace.due(floor, to, *wanted.borrow_and_update()) {
                    floor = self.progress(floor, to).await?;
                    pace.sent();
                    continue;
                }
                // Told nothing yet: the next commit of any table wakes the
                // link once, then the pace does.
                let ahead = to > floor;
                tokio::select! {
                    () = interest.notified() => {}
                    changed = committed.changed(), if !ahead => changed.map_err(|_| Error::Closed)?,
                    () = tokio::time::sleep_until(pace.next()), if ahead => {}
                    changed = wanted.changed() => changed.map_err(|_| link_closed())?,
                    // A hold ends with time (a window opens, a period ends).
                    () = tokio::time::sleep(HELD_RECHECK), if held => {}
                    Some((table, upto)) = synced.recv() => {
                        lanes = self.join(&lanes, &interest, &mut pending, &priority, table, upto);
                        floor = self.progress(floor, floor_of(&lanes, &pending)).await?;
                    }
                }
                continue;
            };
            let pos = lanes.pos(lane);
            let room = window.saturating_sub(outstanding(&lanes, *acked.borrow(), floor));
            let limit = (last - pos)
                .min(self.r.opts.batch_max_txns as u64)
                .min(room)
                .max(1) as usize;
            let (db, from) = (self.db.clone(), pos + 1);
            let budget = meter.frame_bytes(self.frame_budget);
            self.peer.counters.lock().log_reads += 1;
            let entries = blocking(move || db.read_log_bounded(from, limit, budget)).await?;
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
            // Held once per position: a local time ahead of the wall
            // clock (a peer's clock observed) must not hold it again.
            if held_at != pos {
                if let Some(wait) = coalesce::hold(&windows, &entries) {
                    held_at = pos;
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            if let Some(bases) = &self.deltas {
                bases
                    .lock()
                    .observe_peer_writes(&entries, self.peer_node_id);
            }
            let local_times: HashMap<u64, u64> = if windows.is_empty() {
                HashMap::new()
            } else {
                entries.iter().map(|e| (e.seq, e.local_time)).collect()
            };
            let prior = self.routes.prior_index(&entries);
            let mut txns = lanes.plan(lane, entries);
            self.routes.apply(&prior, &mut txns);
            let passed = coalesce::coalesce(&windows, &local_times, &mut txns);
            if !passed.is_empty() {
                let mut c = self.peer.counters.lock();
                for (table, n) in passed {
                    c.coalesced += n;
                    *c.coalesced_tables.entry(table).or_default() += n;
                }
            }
            if let Some(bases) = &self.deltas {
                let send = !paused(self.peer.counters.lock().deltas_paused_until);
                let sent = bases.lock().encode(&mut txns, send);
                self.peer.counters.lock().deltas_sent += sent;
            }
            // Never lower: the peer may be acknowledging the last one.
            let new_floor = floor_of(&lanes, &pending).max(floor);
            // Frames carry the floor they complete; one cut short by the
            // frame budget only completes the floor from before this round.
            let mut frame = Vec::new();
            let mut bytes = 0;
            for t in txns {
                bytes += t.writes.iter().map(write_size).sum::<usize>() + element_cost::<WireTxn>();
                frame.push(t);
                if bytes >= budget {
                    let txns = std::mem::take(&mut frame);
                    self.frame_may_go().await;
                    self.send_frame(txns, floor).await?;
                    bytes = 0;
                }
            }
            if !frame.is_empty() || new_floor > floor {
                // Recorded before sending: the peer may acknowledge it
                // before this task runs again.
                self.peer.counters.lock().sent_seq = new_floor;
                self.send_frame(frame, new_floor).await?;
                pace.sent();
            }
            floor = new_floor;
        }
    }
}

/// What counts against the window of transactions not yet acknowledged.
/// Once the peer acknowledged the floor last sent, nothing it could still
/// acknowledge is outstanding: waiting for an acknowledgement then would
/// wait forever, when a higher lane passed over a window's worth of a lower
/// lane's entries without sending them, or while the budget holds a lane
/// (alerts flowing past held bulk writes the peer cannot acknowledge).
fn outstanding(lanes: &Lanes, acked: u64, floor: u64) -> u64 {
    if acked >= floor {
        0
    } else {
        lanes.ahead(acked)
    }
}

/// When a link tells its peer a position it passed over without sending
/// anything: once per heartbeat interval, at once when a receipt waits on
/// it (see `PeerState::want_progress`), or when it passed over a good part
/// of the window. The peer's acknowledgement then trails the log by about
/// a heartbeat, which retention and receipts both tolerate.
struct Pace {
    every: std::time::Duration,
    gap: u64,
    last: Option<tokio::time::Instant>,
}

/// Most entries passed over before the peer is told, whatever the pace.
const PROGRESS_GAP: u64 = 10_000;

impl Pace {
    fn new(opts: &super::config::ReplicationOptions) -> Pace {
        Pace {
            every: opts.heartbeat_interval,
            gap: (opts.window_txns / 2).clamp(1, PROGRESS_GAP),
            last: None,
        }
    }

    /// Whether to tell the peer `to` now, having told it `floor`, with a
    /// receipt waiting on `wanted`.
    fn due(&self, floor: u64, to: u64, wanted: u64) -> bool {
        to > floor
            && (wanted > floor
                || to - floor >= self.gap
                || self.last.is_none_or(|l| l.elapsed() >= self.every))
    }

    fn sent(&mut self) {
        self.last = Some(tokio::time::Instant::now());
    }

    fn next(&self) -> tokio::time::Instant {
        self.last
            .map_or_else(tokio::time::Instant::now, |l| l + self.every)
    }
}

/// How often a held table looks again whether its hold ended.
const HELD_RECHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// What a write costs the peer: its bytes, and what decoding it is charged
/// (see `wire::bounded_seq`), so a frame of many tiny writes is cut before
/// the peer's decode budget refuses it.
fn write_size(w: &LogWrite) -> usize {
    w.table.len()
        + element_cost::<LogWrite>()
        + match w.op.inner() {
            WriteOp::Put { json, .. } => json.len(),
            WriteOp::Delta { script, lits, .. } => script.len() + lits.len(),
            // A delete, and a patch's or count's own fields, are small next
            // to the budget's per-element charge.
            _ => 0,
        }
        + match &w.op {
            WriteOp::Meta {
                kind: crate::local::log::MetaKind::Patch { attrs },
                ..
            } => attrs.len(),
            _ => 0,
        }
}
