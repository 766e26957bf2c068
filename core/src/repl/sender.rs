//! The sending half of a link: an initial sync of each table the peer
//! needs one for, then this node's log, in priority lanes, within the
//! peer's acknowledgement window.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::lanes::Lanes;
use super::peer::NOT_SUBSCRIBED_BY_PEER;
use super::session::{blocking, link_closed};
use super::{PeerState, Replicator};
use crate::db::Database;
use crate::error::{Error, Result};
use crate::log::{LogWrite, WriteOp};
use crate::net::wire::{Hello, Message, SyncReason, SyncRow, TableWant};

pub(super) struct Sender {
    r: Arc<Replicator>,
    db: Database,
    peer: Arc<PeerState>,
    peer_node_id: u64,
    tx: mpsc::Sender<Message>,
    frame_budget: usize,
}

impl Sender {
    pub(super) fn new(
        r: Arc<Replicator>,
        db: Database,
        peer: Arc<PeerState>,
        hello: &Hello,
        tx: mpsc::Sender<Message>,
    ) -> Sender {
        let frame_budget = (hello.max_frame_bytes as usize).min(r.opts.max_frame_bytes) / 2;
        Sender {
            r,
            db,
            peer,
            peer_node_id: hello.node_id,
            tx,
            frame_budget,
        }
    }

    async fn send(&self, m: Message) -> Result<()> {
        self.tx.send(m).await.map_err(|_| link_closed())
    }

    pub(super) async fn run(self, mut wants: Vec<TableWant>) -> Result<()> {
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
        // Said before anything goes out, so a delivery receipt waiting on
        // a write to such a table fails before the first acknowledgement
        // passes over it (see PeerState::wait_acked).
        for flow in config.tables.iter().filter(|t| t.publish) {
            if !wants.iter().any(|w| w.table == flow.table) {
                self.peer
                    .set_table_state(&flow.table, None, Some(NOT_SUBSCRIBED_BY_PEER.into()));
            }
        }
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
            let budget = self.frame_budget;
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
