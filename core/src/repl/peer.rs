//! One configured peer: its configuration, its live counters, and the tasks
//! that keep its link up (the dialer, or the session of an accepted link).

use crate::net::compress::ByteCounts;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::config::PeerConfig;
use super::contact::Contact;
use super::cursor::{RefusalKey, RefusalRecord, Skipped, MAX_REFUSALS_PER_PEER};
use super::meter::{Meter, QuotaUse};
use super::status::{PeerStatus, RefusalStatus, TableStatus, TrafficStatus};
use crate::error::{Error, Result};
use crate::local::codec::Stamp;
use crate::local::db::Database;
use crate::local::hlc::wall_millis;
use crate::net::wire::TxnRefusal;

/// `RefusalStatus::direction` of writes from the peer this node refused.
pub(crate) const INBOUND: &str = "inbound";
/// `RefusalStatus::direction` of this node's writes the peer refused.
pub(crate) const OUTBOUND: &str = "outbound";

/// Outbound state of a table this node publishes to a peer that, on the
/// current link, did not subscribe to it: none of its writes go there.
pub(crate) const NOT_SUBSCRIBED_BY_PEER: &str = "not subscribed by the peer";

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connected: bool,
    pub(crate) since_ms: Option<u64>,
    pub(crate) last_error: Option<String>,
    pub(crate) node_id: Option<u64>,
    pub(crate) sent_seq: u64,
    pub(crate) received_seq: u64,
    pub(crate) refused_writes: u64,
    pub(crate) origin_violations: u64,
    /// The peer's node id as last known (its hello, or the resume cursor
    /// stored in an earlier run), so no other peer can claim it.
    pub(crate) known_node_id: Option<u64>,
    pub(crate) duplicates_received: u64,
    pub(crate) syncs_received: u64,
    pub(crate) connects: u64,
    /// Dials of this peer whose TLS handshake failed (see
    /// `PeerStatus::tls_failures`).
    pub(crate) tls_failures: u64,
    /// The log cap trimmed entries this peer had not acknowledged.
    pub(crate) overtaken: bool,
    /// Resyncs this node sent to the peer, and why the last one happened.
    pub(crate) resyncs_sent: u64,
    pub(crate) last_resync_reason: Option<String>,
    /// Per table: (inbound state, outbound state).
    pub(crate) tables: BTreeMap<String, (String, String)>,
    /// The compression of the link that is up ("zstd" or "none").
    pub(crate) compression: Option<&'static str>,
    /// Refusals either way, by (direction, table): kept apart from
    /// `last_error`, which the next link event overwrites.
    pub(crate) refusals: BTreeMap<(&'static str, String), RefusalStatus>,
    /// Writes sent as attribute deltas; deltas the peer lacked a base for
    /// (either way), and until when, after one, updates go whole.
    pub(crate) deltas_sent: u64,
    pub(crate) delta_misses: u64,
    pub(crate) deltas_paused_until: Option<std::time::Instant>,
    /// Writes passed over by coalescing, in all and by table.
    pub(crate) coalesced: u64,
    pub(crate) coalesced_tables: BTreeMap<String, u64>,
    /// Why the link stalled (see `repl::stall`), until a later link moves;
    /// by table, the tables it held up; stalls found since start.
    pub(crate) stalled: Option<String>,
    pub(crate) stalled_tables: BTreeMap<String, String>,
    pub(crate) stalls: u64,
    /// Times the link's sender read the log, and frames of the log
    /// (transactions or progress) it sent: for tests of the fan-out.
    pub(crate) log_reads: u64,
    pub(crate) log_frames: u64,
    /// Frames of the peer's log received (each is acknowledged).
    pub(crate) log_frames_in: u64,
}

impl Counters {
    /// Counts one refusal of `table` in `direction` as the latest.
    fn note_refusal(&mut self, direction: &'static str, r: &TxnRefusal, at_ms: u64, count: u64) {
        let s = self
            .refusals
            .entry((direction, r.table.clone()))
            .or_insert_with(|| RefusalStatus {
                table: r.table.clone(),
                direction: direction.to_string(),
                count: 0,
                kind: String::new(),
                reason: String::new(),
                at_ms: 0,
                stamp: Stamp::default(),
                seq: 0,
            });
        s.count += count;
        if at_ms >= s.at_ms {
            s.kind = r.kind.as_str().to_string();
            s.reason = r.reason.clone();
            s.at_ms = at_ms;
            s.stamp = r.stamp;
            s.seq = r.seq;
        }
    }
}

pub(crate) struct PeerState {
    config: Mutex<PeerConfig>,
    /// Which of the peer's dial addresses (`address`, then `addresses`)
    /// the dialer is on: kept across redials so that one hub of a logical
    /// peer gets each transaction once (see `session::dial_loop`).
    pub(crate) dial_at: std::sync::atomic::AtomicUsize,
    /// Last contact, and the rule that admitted it (if one did).
    pub(crate) contact: Contact,
    pub(crate) counters: Mutex<Counters>,
    /// Highest local sequence the peer acknowledged; the condvar wakes
    /// threads blocked in `wait_acked`.
    pub(crate) acked: watch::Sender<u64>,
    acked_cv: (Mutex<()>, Condvar),
    /// The acknowledgement last stored (see `persist_acked`): what log
    /// retention may trim up to, so a crash never leaves a stored position
    /// the log no longer holds (which would cost the peer a full resync).
    stored_acked: std::sync::atomic::AtomicU64,
    /// The highest sequence a receipt waits on: a link with nothing to
    /// send for it tells the peer its position at once rather than at the
    /// next rate-limited progress (see `Sender::stream`).
    pub(crate) progress_wanted: watch::Sender<u64>,
    /// What the peer refused of this node's log (persisted, bounded by
    /// `MAX_REFUSALS_PER_PEER`): receipts for these fail.
    refused: Mutex<BTreeMap<RefusalKey, RefusalRecord>>,
    /// Tables published to the peer that its hello on the last link did
    /// not ask for, and those it asks for again but may not have caught up
    /// on (persisted): the link passes over their writes, so receipts for
    /// those fail or wait, with the link up or down.
    skipped: Mutex<Skipped>,
    /// The link's byte budget: lives as long as the peer, so a reconnect
    /// neither refills its bucket nor its quota.
    pub(crate) meter: Meter,
    /// Bumped to make the current link end (configuration changed).
    pub(crate) generation: watch::Sender<u64>,
    /// Removed from the database's peers: links end, nothing redials.
    removed: std::sync::atomic::AtomicBool,
    dialer: Mutex<Option<AbortHandle>>,
    /// The running session and its id, so a newer accepted link replaces an
    /// older (maybe half-open) one.
    session: Mutex<Option<(u64, AbortHandle)>>,
    /// Frames sent to and read from the peer, over every link.
    pub(crate) bytes_out: Arc<ByteCounts>,
    pub(crate) bytes_in: Arc<ByteCounts>,
}

impl PeerState {
    pub(crate) fn new(
        config: PeerConfig,
        acked: u64,
        refused: BTreeMap<RefusalKey, RefusalRecord>,
        skipped: Skipped,
        quota: QuotaUse,
    ) -> Arc<PeerState> {
        let meter = Meter::new(config.budget.as_ref(), quota);
        let mut counters = Counters::default();
        for ((seq, stamp, table), rec) in &refused {
            let r = TxnRefusal {
                seq: *seq,
                table: table.clone(),
                stamp: *stamp,
                kind: rec.kind,
                reason: rec.reason.clone(),
            };
            counters.note_refusal(OUTBOUND, &r, rec.at_ms, 1);
        }
        Arc::new(PeerState {
            config: Mutex::new(config),
            dial_at: std::sync::atomic::AtomicUsize::new(0),
            contact: Contact::default(),
            counters: Mutex::new(counters),
            acked: watch::Sender::new(acked),
            acked_cv: (Mutex::new(()), Condvar::new()),
            stored_acked: std::sync::atomic::AtomicU64::new(acked),
            progress_wanted: watch::Sender::new(0),
            refused: Mutex::new(refused),
            skipped: Mutex::new(skipped),
            meter,
            generation: watch::Sender::new(0),
            removed: std::sync::atomic::AtomicBool::new(false),
            dialer: Mutex::new(None),
            session: Mutex::new(None),
            bytes_out: Arc::default(),
            bytes_in: Arc::default(),
        })
    }

    pub(crate) fn name(&self) -> String {
        self.config.lock().name.clone()
    }

    pub(crate) fn config(&self) -> PeerConfig {
        self.config.lock().clone()
    }

    pub(crate) fn set_config(&self, c: PeerConfig) {
        self.meter.configure(c.budget.as_ref());
        *self.config.lock() = c;
    }

    /// Ends the current link, with a goodbye, so the next one uses the
    /// new configuration (or, once removed, there is none).
    pub(crate) fn restart(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Takes the peer out of service: its link says goodbye and ends, and
    /// its dialer stops.
    pub(crate) fn remove(&self) {
        self.removed
            .store(true, std::sync::atomic::Ordering::Release);
        self.restart();
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Keeps `task` as this peer's dialer, aborting the one it replaces.
    pub(crate) fn set_dialer(&self, task: tokio::task::AbortHandle) {
        if let Some(old) = self.dialer.lock().replace(task) {
            old.abort();
        }
    }

    pub(crate) fn stop_dialer(&self) {
        if let Some(d) = self.dialer.lock().take() {
            d.abort();
        }
    }

    pub(crate) fn stop(&self) {
        self.stop_dialer();
        if let Some((_, s)) = self.session.lock().take() {
            s.abort();
        }
        self.counters.lock().connected = false;
    }

    /// Whether its dialer or an accepted session is still running (they
    /// may be saying goodbye).
    pub(crate) fn has_live_tasks(&self) -> bool {
        let dialing = self
            .dialer
            .lock()
            .as_ref()
            .is_some_and(|d| !d.is_finished());
        dialing
            || self
                .session
                .lock()
                .as_ref()
                .is_some_and(|(_, s)| !s.is_finished())
    }

    /// Registers a new session, aborting the one it replaces.
    pub(crate) fn set_session(&self, id: u64, handle: AbortHandle) {
        if let Some((_, old)) = self.session.lock().replace((id, handle)) {
            old.abort();
        }
    }

    /// Forgets session `id` if it is the current one; returns whether it was.
    pub(crate) fn clear_session(&self, id: u64) -> bool {
        let mut s = self.session.lock();
        if s.as_ref().is_some_and(|(i, _)| *i == id) {
            *s = None;
            return true;
        }
        false
    }

    pub(crate) fn set_connected(&self, node_id: u64) {
        let mut c = self.counters.lock();
        c.connected = true;
        c.since_ms = Some(wall_millis());
        c.node_id = Some(node_id);
        c.known_node_id = Some(node_id);
        c.connects += 1;
        c.last_error = None;
        self.contact.touch();
    }

    pub(crate) fn set_disconnected(&self, error: Option<String>) {
        let mut c = self.counters.lock();
        if c.connected {
            c.since_ms = Some(wall_millis());
            self.contact.touch();
        }
        c.connected = false;
        c.compression = None;
        for (inb, outb) in c.tables.values_mut() {
            *inb = "idle".into();
            *outb = "idle".into();
        }
        if error.is_some() {
            c.last_error = error;
        }
    }

    pub(crate) fn set_table_state(
        &self,
        table: &str,
        inbound: Option<String>,
        outbound: Option<String>,
    ) {
        let mut c = self.counters.lock();
        let e = c
            .tables
            .entry(table.to_string())
            .or_insert_with(|| ("idle".into(), "idle".into()));
        if let Some(i) = inbound {
            e.0 = i;
        }
        if let Some(o) = outbound {
            e.1 = o;
        }
    }

    /// Shows in status what this node refused from the peer; `writes`
    /// of them, by table, are added to `refused_writes`.
    pub(crate) fn note_inbound_refusals(&self, refusals: &[TxnRefusal], writes: u64) {
        let (now, name) = (wall_millis(), self.name());
        let mut c = self.counters.lock();
        c.refused_writes += writes;
        for r in refusals {
            c.note_refusal(INBOUND, r, now, 1);
        }
        if let Some(r) = refusals.last() {
            c.last_error = Some(format!(
                "refused transaction {} of `{}` (table `{}`, {}): {}",
                r.seq, name, r.table, r.kind, r.reason
            ));
        }
    }

    /// Records what the peer refused of this node's log, durably, before
    /// the acknowledgement that follows it on the link is stored (the
    /// caller handles frames in order), so no receipt passes for it, even
    /// after a restart. Wakes receipts waiting on them.
    pub(crate) fn add_outbound_refusals(
        &self,
        db: &Database,
        refusals: Vec<TxnRefusal>,
    ) -> Result<()> {
        let now = wall_millis();
        let name = self.name();
        // A transaction sent again after a reconnect and refused again is
        // still one refused transaction.
        let fresh: Vec<bool>;
        {
            let mut map = self.refused.lock();
            fresh = refusals
                .iter()
                .map(|r| !map.contains_key(&(r.seq, r.stamp, r.table.clone())))
                .collect();
            let add: Vec<(RefusalKey, RefusalRecord)> = refusals
                .iter()
                .map(|r| {
                    (
                        (r.seq, r.stamp, r.table.clone()),
                        RefusalRecord {
                            kind: r.kind,
                            reason: r.reason.clone(),
                            at_ms: now,
                        },
                    )
                })
                .collect();
            let over = (map.len() + add.len()).saturating_sub(MAX_REFUSALS_PER_PEER);
            let drop: Vec<RefusalKey> = map.keys().take(over).cloned().collect();
            super::cursor::store_refusals(db, &name, &add, &drop)?;
            for k in &drop {
                map.remove(k);
            }
            map.extend(add);
        }
        {
            let mut c = self.counters.lock();
            for (r, fresh) in refusals.iter().zip(fresh) {
                c.note_refusal(OUTBOUND, r, now, u64::from(fresh));
            }
        }
        let _g = self.acked_cv.0.lock();
        self.acked_cv.1.notify_all();
        Ok(())
    }

    /// The receipt error for transaction `seq` (stamped `stamp`, if the
    /// log still holds it) if the peer refused any of it.
    fn refusal_of(&self, seq: u64, stamp: Option<Stamp>) -> Option<Error> {
        let map = self.refused.lock();
        let lo = (seq, Stamp::default(), String::new());
        let by_seq = map
            .range(lo..)
            .take_while(|((s, _, _), _)| seq > 0 && *s == seq)
            .next();
        // A row of a sync has no sequence: it is matched by its stamp.
        let by_stamp = || {
            let stamp = stamp?;
            map.range((0, stamp, String::new())..)
                .take_while(|((s, st, _), _)| *s == 0 && *st == stamp)
                .next()
        };
        let ((_, _, table), rec) = by_seq.or_else(by_stamp)?;
        Some(Error::Refused {
            peer: self.name(),
            table: table.clone(),
            seq,
            kind: rec.kind,
            reason: rec.reason.clone(),
        })
    }

    /// Counts a stall of the current link and shows it, on the peer and on
    /// the tables it holds up: those this node sends on the link (not those
    /// the budget holds: they wait by design) or, when applying is stuck,
    /// those it receives (`applying`: the stall is in applying what the
    /// peer sends).
    pub(crate) fn note_stall(&self, applying: bool, reason: &str) {
        let config = self.config();
        let mut c = self.counters.lock();
        let active = |s: Option<&String>| s.is_some_and(|s| s == "streaming" || s == "syncing");
        let tables: Vec<String> = config
            .tables
            .iter()
            .filter(|t| {
                let state = c.tables.get(&t.table);
                if applying {
                    t.subscribe && active(state.map(|s| &s.0))
                } else {
                    t.publish
                        && active(state.map(|s| &s.1))
                        && self.meter.hold(t.bulk, t.exempt_from_quota).is_none()
                }
            })
            .map(|t| t.table.clone())
            .collect();
        c.stalls += 1;
        c.stalled = Some(reason.to_string());
        c.stalled_tables = tables
            .into_iter()
            .map(|t| (t, reason.to_string()))
            .collect();
    }

    /// The link moves again.
    pub(crate) fn clear_stall(&self) {
        let mut c = self.counters.lock();
        if c.stalled.is_some() {
            c.stalled = None;
            c.stalled_tables.clear();
        }
    }

    pub(crate) fn note_error(&self, e: impl Into<String>) {
        self.counters.lock().last_error = Some(e.into());
    }

    pub(crate) fn status(&self, db: &Database) -> Result<PeerStatus> {
        let config = self.config();
        let acked = *self.acked.borrow();
        // A peer this node publishes nothing to has no backlog here.
        let publishes = config.tables.iter().any(|t| t.publish);
        let (backlog, resync_needed) = if publishes {
            let backlog = db.log_backlog(acked + 1)?;
            // Checked after the count: the log only loses entries, so a
            // trim racing it can only make this say yes sooner.
            (backlog, acked + 1 < db.log_bounds()?.first)
        } else {
            Default::default()
        };
        let lag_ms = backlog.oldest_local_time.map_or(0, |t| {
            wall_millis().saturating_sub(t >> crate::local::hlc::LOGICAL_BITS)
        });
        let quota = self.meter.quota_left();
        let held = self.meter.held_now(&config);
        let c = self.counters.lock();
        let tables = config
            .tables
            .iter()
            .map(|t| {
                let (inbound, outbound) = c
                    .tables
                    .get(&t.table)
                    .cloned()
                    .unwrap_or_else(|| ("idle".into(), "idle".into()));
                TableStatus {
                    table: t.table.clone(),
                    publish: t.publish,
                    subscribe: t.subscribe,
                    inbound: if t.subscribe {
                        inbound
                    } else {
                        "not subscribed".into()
                    },
                    outbound: if t.publish {
                        outbound
                    } else {
                        "not published".into()
                    },
                    coalesced: c.coalesced_tables.get(&t.table).copied().unwrap_or(0),
                    stalled: c.stalled_tables.get(&t.table).cloned(),
                }
            })
            .collect();
        // With several hubs: the one the dialer is on.
        let dialing = config
            .dial_addresses()
            .get(self.dial_at.load(std::sync::atomic::Ordering::Relaxed))
            .cloned();
        Ok(PeerStatus {
            name: config.name,
            address: dialing,
            rule: self.contact.rule(),
            last_contact_ms: self.contact.last_contact_ms(),
            connected: c.connected,
            since_ms: c.since_ms,
            last_error: c.last_error.clone(),
            node_id: c.node_id,
            tables,
            sent_seq: c.sent_seq,
            acked_seq: acked,
            received_seq: c.received_seq,
            backlog_txns: backlog.txns,
            backlog_bytes: backlog.bytes,
            lag_ms,
            resync_needed,
            refused_writes: c.refused_writes,
            origin_violations: c.origin_violations,
            duplicates_received: c.duplicates_received,
            syncs_received: c.syncs_received,
            resyncs_sent: c.resyncs_sent,
            last_resync_reason: c.last_resync_reason.clone(),
            connects: c.connects,
            tls_failures: c.tls_failures,
            stalled: c.stalled.clone(),
            stalls: c.stalls,
            traffic: {
                let (bytes_out_raw, bytes_out_wire) = self.bytes_out.get();
                let (bytes_in_raw, bytes_in_wire) = self.bytes_in.get();
                TrafficStatus {
                    bytes_out_raw,
                    bytes_out_wire,
                    bytes_in_raw,
                    bytes_in_wire,
                    compression: c.compression.map(str::to_string),
                    max_bytes_per_sec: self.meter.rate(),
                    quota_left_bytes: quota.map(|q| q.0),
                    quota_period_end_ms: quota.map(|q| q.1),
                    held: held.map(str::to_string),
                    deltas_sent: c.deltas_sent,
                    delta_misses: c.delta_misses,
                    coalesced: c.coalesced,
                }
            },
            refusals: c.refusals.values().cloned().collect(),
        })
    }

    /// Records which tables published to the peer its hello on a new link
    /// did not ask for, durably and before anything goes out on that link,
    /// so the acknowledgements that pass over their writes never make a
    /// receipt pass, even once the link is down or after a restart. A
    /// table passed over before that the peer asks for now is catching up
    /// until the peer acknowledges past `mark` (see [`Skipped`]). Written
    /// only when this changes, once per link: not per transaction. Returns
    /// whether some table is catching up.
    pub(crate) fn link_wants(
        &self,
        db: &Database,
        not_wanted: BTreeSet<String>,
        wanted: &BTreeSet<String>,
        mark: u64,
    ) -> Result<bool> {
        let mut cur = self.skipped.lock();
        let catching_up: BTreeSet<String> = cur
            .not_wanted
            .union(&cur.catching_up)
            .filter(|t| wanted.contains(*t))
            .cloned()
            .collect();
        let next = Skipped {
            mark: if catching_up.is_empty() { 0 } else { mark },
            not_wanted,
            catching_up,
        };
        let catching = !next.catching_up.is_empty();
        if *cur != next {
            super::cursor::store_skipped(db, &self.name(), &next)?;
            *cur = next;
        }
        Ok(catching)
    }

    /// The peer acknowledged past `mark`: the tables catching up since the
    /// link that set it have caught up.
    pub(crate) fn caught_up(&self, db: &Database, mark: u64) -> Result<()> {
        let mut cur = self.skipped.lock();
        if cur.catching_up.is_empty() || cur.mark != mark {
            return Ok(());
        }
        let next = Skipped {
            not_wanted: cur.not_wanted.clone(),
            ..Skipped::default()
        };
        super::cursor::store_skipped(db, &self.name(), &next)?;
        *cur = next;
        drop(cur);
        let _g = self.acked_cv.0.lock();
        self.acked_cv.1.notify_all();
        Ok(())
    }

    /// What the peer's last link says of a receipt for transaction `seq`
    /// writing `tables` (`None`: the log no longer holds it): `Err` if one
    /// of them is published to this peer and the peer did not ask for it,
    /// `Ok(true)` if one may still be on its way (catching up), whatever
    /// the acknowledgement says. Without the entry, nothing proves the
    /// transaction did not write such a table, so the receipt fails unless
    /// the peer takes every published table.
    fn skipped_check(&self, seq: u64, tables: Option<&[String]>) -> Result<bool> {
        let config = self.config();
        let skipped = self.skipped.lock();
        // A table this node no longer publishes to the peer is not part of
        // its receipts, whatever the last link said.
        let published = |t: &str| config.tables.iter().any(|f| f.table == t && f.publish);
        let acked = *self.acked.borrow();
        let catching =
            |t: &str| skipped.catching_up.contains(t) && published(t) && acked <= skipped.mark;
        match tables {
            Some(tables) => {
                if let Some(table) = tables
                    .iter()
                    .find(|t| skipped.not_wanted.contains(*t) && published(t))
                {
                    return Err(Error::NotSubscribed {
                        peer: config.name.clone(),
                        table: table.clone(),
                        seq,
                    });
                }
                Ok(tables.iter().any(|t| catching(t)))
            }
            None => {
                let tables: Vec<String> = skipped
                    .not_wanted
                    .iter()
                    .filter(|t| published(t))
                    .cloned()
                    .collect();
                if !tables.is_empty() {
                    return Err(Error::DeliveryUnproven {
                        peer: config.name.clone(),
                        seq,
                        tables,
                    });
                }
                Ok(skipped.catching_up.iter().any(|t| catching(t)))
            }
        }
    }

    /// What the link says about a missing acknowledgement, and what to
    /// check, for an app whose receipt timed out.
    fn why_not_acknowledged(&self, tables: Option<&[String]>) -> String {
        let config = self.config();
        let c = self.counters.lock();
        let last_error = c
            .last_error
            .as_deref()
            .map_or(String::new(), |e| format!(" (last error: {e})"));
        if !c.connected {
            return match &config.address {
                Some(addr) => format!(
                    "the link is down{last_error}: check that `{}` is running and reachable at {addr}",
                    config.name
                ),
                None => format!(
                    "the link is down{last_error}: `{}` dials this node, so check that it is running and that its peer entry points at this node's listen address",
                    config.name
                ),
            };
        }
        let budget = self.meter.reason(&config, tables);
        let published = config.tables.iter().filter(|t| t.publish);
        for t in published {
            let outbound = c.tables.get(&t.table).map_or("idle", |(_, o)| o.as_str());
            if let Some(reason) = outbound.strip_prefix("refused: ") {
                return format!(
                    "the link is up, but table `{}` was refused: {reason}",
                    t.table
                );
            }
            if outbound == "syncing" {
                if let Some(why) = budget {
                    return format!("the link is up, but {why}");
                }
                return format!(
                    "the link is up and table `{}` is still in its initial sync: wait longer",
                    t.table
                );
            }
        }
        drop(c);
        if let Some(why) = budget {
            return format!("the link is up, but {why}");
        }
        let skipped = self.skipped.lock();
        if !skipped.catching_up.is_empty() && *self.acked.borrow() <= skipped.mark {
            let tables: Vec<String> = skipped
                .catching_up
                .iter()
                .map(|t| format!("`{t}`"))
                .collect();
            return format!(
                "the link is up and `{}` is catching up on {}, which an earlier link passed over (it did not subscribe then): the receipt passes once it acknowledges a write committed after this link came up",
                config.name,
                tables.join(", ")
            );
        }
        format!(
            "the link is up and `{}` is still catching up: wait longer, or look at its backlog and lag in the peer status",
            config.name
        )
    }

    /// The acknowledgement as stored, for log retention.
    pub(crate) fn stored_acked(&self) -> u64 {
        self.stored_acked.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The acknowledgement to store, if it moved since the last store.
    pub(crate) fn unsaved_acked(&self) -> Option<u64> {
        let acked = *self.acked.borrow();
        (acked > self.stored_acked()).then_some(acked)
    }

    /// Notes that `seq` is stored as the acknowledgement.
    pub(crate) fn note_stored_acked(&self, seq: u64) {
        self.stored_acked
            .fetch_max(seq, std::sync::atomic::Ordering::AcqRel);
    }

    /// Stores the acknowledgement if it moved since the last store (when
    /// the link ends). Otherwise they are stored in batches (see
    /// `session::persist_acks`): receipts use the one in memory at once,
    /// retention the stored one.
    pub(crate) fn persist_acked(&self, db: &Database) -> Result<()> {
        if let Some(seq) = self.unsaved_acked() {
            super::cursor::store_acked(db, &self.name(), seq)?;
            self.note_stored_acked(seq);
        }
        Ok(())
    }

    /// A receipt waits on `seq`: the link tells the peer its position now.
    pub(crate) fn want_progress(&self, seq: u64) {
        if *self.acked.borrow() < seq {
            self.progress_wanted.send_if_modified(|w| {
                let more = seq > *w;
                *w = (*w).max(seq);
                more
            });
        }
    }

    /// Records an acknowledgement; returns whether it moved forward.
    pub(crate) fn set_acked(&self, seq: u64) -> bool {
        let moved = self.acked.send_if_modified(|a| {
            if seq > *a {
                *a = seq;
                true
            } else {
                false
            }
        });
        if moved {
            let _g = self.acked_cv.0.lock();
            self.acked_cv.1.notify_all();
        }
        moved
    }

    /// Blocks the calling thread (never a runtime) until the peer
    /// acknowledged `seq`, the database closes, or `timeout` passes.
    /// `tables`: the tables transaction `seq` writes (`None`: the log no
    /// longer holds it); a receipt for it fails if the peer, on its last
    /// link, did not take one of them that this node publishes to it (or,
    /// without the entry, any such table), and waits while one of them is
    /// catching up (see `skipped_check`). It also fails as soon as
    /// the peer refused (part of) it; `stamp`, the transaction's stamp if
    /// the log still holds it, matches refused rows of a sync.
    pub(crate) fn wait_acked(
        &self,
        seq: u64,
        stamp: Option<Stamp>,
        tables: Option<&[String]>,
        timeout: Duration,
        closed: impl Fn() -> bool,
    ) -> Result<()> {
        // A huge timeout means "wait as long as it takes", not an overflow.
        let deadline = Instant::now().checked_add(timeout);
        self.want_progress(seq);
        let mut guard = self.acked_cv.0.lock();
        loop {
            // Checked before the acknowledgement: the peer acknowledges
            // positions in this node's log, which pass over writes to
            // tables it did not ask for.
            // Refusals arrive before the acknowledgement that covers them.
            let check = || match self.refusal_of(seq, stamp) {
                Some(e) => Err(e),
                None => self.skipped_check(seq, tables),
            };
            let catching_up = MutexGuard::unlocked(&mut guard, check)?;
            if !catching_up && *self.acked.borrow() >= seq {
                return Ok(());
            }
            if closed() {
                return Err(Error::Closed);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                drop(guard);
                return Err(Error::NotAcknowledged {
                    peer: self.name(),
                    seq,
                    acked: *self.acked.borrow(),
                    after: timeout,
                    why: self.why_not_acknowledged(tables),
                });
            }
            // Bounded waits so a close() is noticed even without an ack.
            let left = deadline.map_or(Duration::MAX, |d| d - now);
            let step = left.min(Duration::from_millis(100));
            self.acked_cv.1.wait_for(&mut guard, step);
        }
    }
}
