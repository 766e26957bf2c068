//! Who hears of a commit: per table, the outbound links that stream it.
//!
//! A hub with many links must not wake every link on every commit: a link
//! whose tables a commit did not write would read the log only to find
//! nothing for it. Each link registers an [`Interest`] in the tables it
//! streams; a commit queues its sequence at, and wakes, only the interests
//! of the tables it wrote (and not the link of the peer it came from, nor
//! one that takes no relays of its origin). A link then knows that every
//! entry between its position and the next queued sequence is nothing it
//! sends, and passes over it without reading the log.
//!
//! Row filters: a link whose flow of a table has a filter hears only of
//! commits whose writes its filter selects, before or after the write (a
//! write leaving the filter is a move-out it must send). Links filtering
//! on equality are filed by (table, attribute, value), so a commit finds
//! them by lookup whatever their number; others are tested one by one.
//! A write whose previous values were not recorded (logged before the
//! filter existed) wakes every filtered link of its table.
//!
//! Ordering: a commit is published here before `Shared::committed` moves
//! (both under the write lock), so a link that reads `committed` and then
//! finds no queued sequence below it may pass over everything up to it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};

use crate::local::filter::{Bound, Canon};
use crate::local::log::LogEntry;

/// Per table routed by row filters, the attributes the filters test.
pub(crate) type Routed = HashMap<String, Vec<String>>;

/// Sequences queued per interest before it only records "read the log up
/// to here": a link that fell that far behind reads like it always did.
const MAX_QUEUED: usize = 256;

/// Queued sequences closer than this are read as one run: reading a few
/// entries in between is cheaper than a round per entry.
const RUN_GAP: u64 = 64;

#[derive(Default)]
pub(crate) struct CommitFeed {
    by_table: RwLock<HashMap<String, Vec<Weak<Interest>>>>,
    /// Every interest, for commits whose tables are not known (a recovery).
    all: Mutex<Vec<Weak<Interest>>>,
    /// Links whose flow of a table has a row filter, per table.
    filtered: RwLock<HashMap<String, FilteredTable>>,
    /// What the write path records previous values of (`None`: nothing).
    routed: RwLock<Option<Arc<Routed>>>,
}

#[derive(Default)]
struct FilteredTable {
    /// attribute -> value -> links whose filter requires the attribute to
    /// equal that value (one of its values, for `IN`).
    by_value: HashMap<String, HashMap<Canon, Vec<Weak<Interest>>>>,
    /// Links whose filters have no equality term.
    scan: Vec<(Weak<Interest>, Arc<Bound>)>,
    all: Vec<Weak<Interest>>,
}

impl FilteredTable {
    fn prune(&mut self) {
        self.all.retain(|w| w.strong_count() > 0);
        self.scan.retain(|(w, _)| w.strong_count() > 0);
        for values in self.by_value.values_mut() {
            values.retain(|_, l| {
                l.retain(|w| w.strong_count() > 0);
                !l.is_empty()
            });
        }
    }

    /// Queues `seq` at the links that may have to send this write: whose
    /// filter selects the record after it (`new`) or before it (`old`).
    fn route(
        &self,
        seq: u64,
        origin: u64,
        new: Option<&Map<String, Value>>,
        old: Option<&Map<String, Value>>,
    ) {
        let queue = |i: &Interest| {
            if i.takes(origin) {
                i.queue(seq);
            }
        };
        for obj in [new, old].into_iter().flatten() {
            for (attr, values) in &self.by_value {
                let Some(c) = obj.get(attr).and_then(Canon::of) else {
                    continue;
                };
                for i in values
                    .get(&c)
                    .into_iter()
                    .flatten()
                    .filter_map(Weak::upgrade)
                {
                    queue(&i);
                }
            }
        }
        for (w, bound) in &self.scan {
            let hit =
                new.is_some_and(|n| bound.matches(n)) || old.is_some_and(|o| bound.matches(o));
            if let (true, Some(i)) = (hit, w.upgrade()) {
                queue(&i);
            }
        }
    }
}

/// One link's interest in the commits that write its tables.
pub(crate) struct Interest {
    /// The peer's own writes never go back to it.
    skip_origin: u64,
    /// The peer takes only writes of this origin (no relays).
    only_origin: Option<u64>,
    pending: Mutex<Pending>,
    notify: tokio::sync::Notify,
}

#[derive(Default)]
struct Pending {
    /// Sequences of commits that wrote one of the link's tables, ascending.
    seqs: VecDeque<u64>,
    /// Every sequence up to here may hold something for the link (the
    /// queue overflowed, or a recovery committed entries unseen).
    unknown_upto: u64,
}

/// What a link has to do from its position on (see [`Interest::plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Nothing after the position up to here is for the link.
    pub(crate) pass_to: u64,
    /// The end of the next run of entries to read (`None`: none to read).
    pub(crate) read_to: Option<u64>,
}

impl CommitFeed {
    /// Registers a link that streams `tables` to a peer with node id
    /// `peer_node_id`, taking only `only_origin`'s writes when `Some`.
    pub(crate) fn subscribe<'a>(
        &self,
        tables: impl IntoIterator<Item = &'a str>,
        peer_node_id: u64,
        only_origin: Option<u64>,
    ) -> Arc<Interest> {
        let interest = Arc::new(Interest {
            skip_origin: peer_node_id,
            only_origin,
            pending: Mutex::new(Pending::default()),
            notify: tokio::sync::Notify::new(),
        });
        let mut by_table = self.by_table.write();
        for t in tables {
            let list = by_table.entry(t.to_string()).or_default();
            // Links come and go: the dead go when another registers.
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(&interest));
        }
        let mut all = self.all.lock();
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&interest));
        interest
    }

    /// Like `subscribe`, with the tables in `filters` filed by their row
    /// filter, bound for this link's peer.
    pub(crate) fn subscribe_filtered<'a>(
        &self,
        tables: impl IntoIterator<Item = &'a str>,
        filters: &HashMap<String, Arc<Bound>>,
        peer_node_id: u64,
        only_origin: Option<u64>,
    ) -> Arc<Interest> {
        let unfiltered: Vec<&str> = tables
            .into_iter()
            .filter(|t| !filters.contains_key(*t))
            .collect();
        let interest = self.subscribe(unfiltered, peer_node_id, only_origin);
        if filters.is_empty() {
            return interest;
        }
        let mut filtered = self.filtered.write();
        for (table, bound) in filters {
            let ft = filtered.entry(table.clone()).or_default();
            ft.prune();
            let weak = Arc::downgrade(&interest);
            ft.all.push(weak.clone());
            match bound.equality_key() {
                Some((attr, values)) => {
                    let by = ft.by_value.entry(attr.to_string()).or_default();
                    for v in values {
                        by.entry(v.clone()).or_default().push(weak.clone());
                    }
                }
                None => ft.scan.push((weak, bound.clone())),
            }
        }
        interest
    }

    /// Makes the write path record the previous values of `attrs` for
    /// writes to `table` (the set only grows while the database is open).
    pub(crate) fn route_attributes(&self, table: &str, attrs: impl IntoIterator<Item = String>) {
        let mut routed = self.routed.write();
        let mut next: Routed = routed.as_deref().cloned().unwrap_or_default();
        let list = next.entry(table.to_string()).or_default();
        let before = list.len();
        let mut set: BTreeSet<String> = list.drain(..).collect();
        set.extend(attrs);
        *list = set.into_iter().collect();
        if list.len() != before || routed.is_none() {
            *routed = Some(Arc::new(next));
        }
    }

    /// What the write path records previous values of.
    pub(crate) fn routed(&self) -> Option<Arc<Routed>> {
        self.routed.read().clone()
    }

    /// A committed entry: queues its sequence at the links it may concern.
    /// Call before `committed` moves past it, in sequence order.
    pub(crate) fn publish_entry(&self, e: &LogEntry) {
        self.publish(e.seq, e.origin(), e.writes.iter().map(|w| w.table.as_str()));
        let filtered = self.filtered.read();
        if filtered.is_empty() {
            return;
        }
        for (i, w) in e.writes.iter().enumerate() {
            let Some(ft) = filtered.get(&w.table) else {
                continue;
            };
            let new = match w.op.inner() {
                crate::local::log::WriteOp::Put { json, .. } => object(json),
                _ => None,
            };
            let prior = e
                .prior
                .binary_search_by_key(&(i as u32), |p| p.write)
                .ok()
                .map(|at| &e.prior[at]);
            match prior {
                // Not recorded: any filtered link may hold the record.
                None => {
                    for l in ft.all.iter().filter_map(Weak::upgrade) {
                        if l.takes(e.origin()) {
                            l.queue(e.seq);
                        }
                    }
                }
                Some(p) => {
                    let old = p.old.as_deref().and_then(object);
                    ft.route(e.seq, e.origin(), new.as_ref(), old.as_ref());
                }
            }
        }
    }

    /// A commit at `seq` of `origin` wrote `tables` (may repeat). Call
    /// before `committed` moves past `seq`, in sequence order.
    pub(crate) fn publish<'a>(
        &self,
        seq: u64,
        origin: u64,
        tables: impl IntoIterator<Item = &'a str>,
    ) {
        let by_table = self.by_table.read();
        if by_table.is_empty() {
            return;
        }
        let mut seen: Vec<&str> = Vec::new();
        for t in tables {
            if seen.contains(&t) {
                continue;
            }
            seen.push(t);
            let Some(list) = by_table.get(t) else {
                continue;
            };
            for i in list.iter().filter_map(Weak::upgrade) {
                if i.takes(origin) {
                    i.queue(seq);
                }
            }
        }
    }

    /// Entries up to `seq` were committed without being published (a
    /// recovery found them): every link reads the log up to there.
    pub(crate) fn unknown_upto(&self, seq: u64) {
        for i in self.all.lock().iter().filter_map(Weak::upgrade) {
            i.pending.lock().unknown_upto = seq;
            i.notify.notify_one();
        }
    }
}

/// A JSON object's attributes; `None` for anything else.
fn object(json: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(json) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

impl Interest {
    fn takes(&self, origin: u64) -> bool {
        origin != self.skip_origin && self.only_origin.is_none_or(|o| o == origin)
    }

    fn queue(&self, seq: u64) {
        let mut p = self.pending.lock();
        if p.seqs.back().is_none_or(|b| *b < seq) {
            if p.seqs.len() >= MAX_QUEUED {
                p.seqs.clear();
                p.unknown_upto = seq;
            } else {
                p.seqs.push_back(seq);
            }
        }
        drop(p);
        self.notify.notify_one();
    }

    /// Whatever was queued, the link reads every entry up to `seq`: its
    /// positions moved back (a table joined at its sync point).
    pub(crate) fn read_all_to(&self, seq: u64) {
        let mut p = self.pending.lock();
        p.unknown_upto = p.unknown_upto.max(seq);
    }

    /// Waits until a commit for this link is queued (returns at once if
    /// one was queued since the last wait).
    pub(crate) async fn notified(&self) {
        self.notify.notified().await
    }

    /// For a link whose every table has sent everything up to `floor`,
    /// with `committed` the last committed sequence read before this call:
    /// how far it may pass over the log without reading it, and the end of
    /// the next run of entries to read.
    pub(crate) fn plan(&self, floor: u64, committed: u64) -> Plan {
        let mut p = self.pending.lock();
        while p.seqs.front().is_some_and(|s| *s <= floor) {
            p.seqs.pop_front();
        }
        if p.unknown_upto > floor {
            // Unknown entries: read them all, like a link without a feed.
            let end = p.seqs.back().copied().unwrap_or(0).max(p.unknown_upto);
            return Plan {
                pass_to: floor,
                read_to: Some(end.min(committed.max(floor))),
            };
        }
        let Some(&first) = p.seqs.front() else {
            return Plan {
                pass_to: committed.max(floor),
                read_to: None,
            };
        };
        let mut end = first;
        for s in p.seqs.iter().skip(1) {
            if *s > end + RUN_GAP {
                break;
            }
            end = *s;
        }
        Plan {
            pass_to: (first - 1).min(committed).max(floor),
            read_to: Some(end),
        }
    }
}

/// For the `filters` benchmark: the time the commit feed takes to route
/// `changes` single-write commits (each moving a row from one site to
/// another, with its prior values) among `links` links filtered by
/// `site = $peer.name`, one site each.
#[doc(hidden)]
pub fn route_filtered_changes(links: usize, changes: usize) -> std::time::Duration {
    use crate::local::codec::{Key, Stamp};
    use crate::local::filter::{Filter, PeerIdentity};
    use crate::local::log::{LogWrite, Prior, WriteOp};
    let feed = CommitFeed::default();
    let filter = Filter::parse("site = $peer.name").unwrap_or_else(|_| unreachable!());
    feed.route_attributes("t", filter.attributes());
    let site = |i: usize| format!("edge-{i}");
    let interests: Vec<Arc<Interest>> = (0..links)
        .map(|i| {
            let bound = filter.bind(&PeerIdentity {
                name: site(i),
                dns: Vec::new(),
            });
            let filters = HashMap::from([("t".to_string(), Arc::new(bound))]);
            feed.subscribe_filtered(["t"], &filters, 1_000_000 + i as u64, None)
        })
        .collect();
    let entries: Vec<LogEntry> = (0..changes)
        .map(|n| {
            // Spread over the sites, whatever their number.
            let (from, to) = ((n * 7919) % links, (n * 104_729 + 1) % links);
            LogEntry {
                seq: n as u64 + 1,
                stamp: Stamp {
                    time: n as u64 + 1,
                    node: 1,
                },
                local_time: n as u64 + 1,
                writes: vec![LogWrite {
                    table: "t".into(),
                    key: Key::Int(n as i64),
                    op: WriteOp::Put {
                        json: format!(r#"{{"id":{n},"site":"{}","max":{n}}}"#, site(to)),
                        created: 1,
                    },
                }],
                prior: vec![Prior {
                    write: 0,
                    old: Some(format!(r#"{{"site":"{}"}}"#, site(from))),
                }],
            }
        })
        .collect();
    let start = std::time::Instant::now();
    for e in &entries {
        feed.publish_entry(e);
    }
    let took = start.elapsed();
    drop(interests);
    took
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_links_of_the_tables_written_are_queued() {
        let feed = CommitFeed::default();
        let a = feed.subscribe(["t"], 7, None);
        let b = feed.subscribe(["u"], 8, None);
        let relay_free = feed.subscribe(["t"], 9, Some(1));
        feed.publish(1, 1, ["t", "t"]);
        feed.publish(2, 2, ["u"]);
        feed.publish(3, 7, ["t"]); // a's own write: never back to it
        feed.publish(4, 2, ["t"]); // origin 2: relay_free takes only 1
        assert_eq!(
            a.plan(0, 4),
            Plan {
                pass_to: 0,
                read_to: Some(4)
            }
        );
        assert_eq!(
            b.plan(0, 4),
            Plan {
                pass_to: 1,
                read_to: Some(2)
            }
        );
        assert_eq!(
            relay_free.plan(0, 4),
            Plan {
                pass_to: 0,
                read_to: Some(1)
            }
        );
        // Past what it read, nothing is left: it passes over the rest.
        assert_eq!(
            relay_free.plan(1, 4),
            Plan {
                pass_to: 4,
                read_to: None
            }
        );
    }

    #[test]
    fn far_apart_sequences_are_read_as_separate_runs() {
        let feed = CommitFeed::default();
        let a = feed.subscribe(["t"], 7, None);
        for s in [10, 20, 500] {
            feed.publish(s, 1, ["t"]);
        }
        assert_eq!(
            a.plan(0, 600),
            Plan {
                pass_to: 9,
                read_to: Some(20)
            }
        );
        assert_eq!(
            a.plan(20, 600),
            Plan {
                pass_to: 499,
                read_to: Some(500)
            }
        );
        assert_eq!(
            a.plan(500, 600),
            Plan {
                pass_to: 600,
                read_to: None
            }
        );
    }

    #[test]
    fn an_overflow_or_a_recovery_makes_the_link_read_everything() {
        let feed = CommitFeed::default();
        let a = feed.subscribe(["t"], 7, None);
        for s in 1..=(MAX_QUEUED as u64 + 5) {
            feed.publish(s * 2, 1, ["t"]);
        }
        let p = a.plan(0, 10_000);
        assert_eq!(p.pass_to, 0, "nothing may be passed over unread");
        assert!(p.read_to.is_some_and(|r| r >= MAX_QUEUED as u64 * 2));
        let b = feed.subscribe(["u"], 8, None);
        feed.unknown_upto(50);
        assert_eq!(
            b.plan(0, 50),
            Plan {
                pass_to: 0,
                read_to: Some(50)
            }
        );
        assert_eq!(
            b.plan(50, 60),
            Plan {
                pass_to: 60,
                read_to: None
            }
        );
    }
}
