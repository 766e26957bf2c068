//! Priority lanes for one outbound link. Tables are grouped by priority;
//! the highest-priority lane with work is served first, so alerts overtake
//! a backlog of readings. Each table's transactions still go out in log
//! order, and a transaction stays whole:
//!
//! - a transaction touching tables of one lane goes out with that lane;
//! - a transaction touching several lanes is a barrier: a lane that reaches
//!   it waits until every other lane involved has sent everything before
//!   it, and then the transaction goes out whole, once.
//!
//! Across tables of different lanes the order of arrival is therefore the
//! log order only up to priority: a newer alert can arrive before an older
//! reading. Within a lane (and within any one table) it is the log order.
//!
//! Positions: each lane has sent everything up to its `pos`; the link's
//! floor, the lowest lane position, is what the receiver may acknowledge.
//!
//! Tables still in their initial sync are `pending`: they have no lane
//! yet, and a transaction that also writes one is a barrier its lane waits
//! at until the sync is done and the lanes are made again with that table
//! (see [`Lanes::positions`]), so that it still goes out whole.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::local::log::{LogEntry, LogWrite};
use crate::net::wire::WireTxn;

struct Lane {
    /// Priority, then the budget class its tables share (see
    /// [`Lanes::grouped`]).
    priority: (u8, u8),
    /// The link's budget holds this lane now: it does not move, so the
    /// floor stays before its writes.
    held: bool,
    pos: u64,
    /// Blocked before this multi-lane transaction until the other lanes
    /// involved have caught up to just before it.
    blocked: Option<(u64, Vec<usize>)>,
    /// Blocked before a transaction that writes a pending table, until the
    /// lanes are made again.
    awaits_sync: bool,
}

pub(crate) struct Lanes {
    lanes: Vec<Lane>,
    lane_of: HashMap<String, usize>,
    starts: HashMap<String, u64>,
    pending: HashSet<String>,
    peer_node_id: u64,
    /// Only transactions of this origin go out (the peer takes no relays).
    only_origin: Option<u64>,
    /// Multi-lane transactions already sent, and how many other lanes
    /// still have to step over them.
    sent_whole: BTreeMap<u64, usize>,
}

impl Lanes {
    /// `starts`: per table, the sequence after which it streams (its resume
    /// point or initial-sync point). `priority`: per table, higher first.
    /// `pending`: tables whose initial sync is still going on.
    #[cfg(test)]
    pub(crate) fn new(
        starts: HashMap<String, u64>,
        priority: &HashMap<String, u8>,
        pending: HashSet<String>,
        peer_node_id: u64,
    ) -> Lanes {
        let keys = priority.iter().map(|(t, p)| (t.clone(), (*p, 0))).collect();
        Lanes::grouped(starts, &keys, pending, peer_node_id)
    }

    /// Like `new`, with lanes per (priority, class): tables the link's
    /// budget holds at different times (bulk, exempt from the quota) get
    /// lanes of their own, so holding one never holds another table of the
    /// same priority.
    pub(crate) fn grouped(
        starts: HashMap<String, u64>,
        priority: &HashMap<String, (u8, u8)>,
        pending: HashSet<String>,
        peer_node_id: u64,
    ) -> Lanes {
        let mut prios: Vec<(u8, u8)> = starts
            .keys()
            .map(|t| priority.get(t).copied().unwrap_or((0, 0)))
            .collect();
        prios.sort_unstable_by(|a, b| b.cmp(a));
        prios.dedup();
        let mut lanes: Vec<Lane> = prios
            .iter()
            .map(|&p| Lane {
                priority: p,
                held: false,
                pos: u64::MAX,
                blocked: None,
                awaits_sync: false,
            })
            .collect();
        let mut lane_of = HashMap::new();
        for (t, s) in &starts {
            let p = priority.get(t).copied().unwrap_or((0, 0));
            let i = lanes.iter().position(|l| l.priority == p).unwrap_or(0);
            lanes[i].pos = lanes[i].pos.min(*s);
            lane_of.insert(t.clone(), i);
        }
        Lanes {
            lanes,
            lane_of,
            starts,
            pending,
            peer_node_id,
            only_origin: None,
            sent_whole: BTreeMap::new(),
        }
    }

    /// Sends only transactions of `origin` (when `Some`): passed over like
    /// filtered tables, so the peer may still acknowledge past them.
    pub(crate) fn only_origin(mut self, origin: Option<u64>) -> Lanes {
        self.only_origin = origin;
        self
    }

    /// Per table, the sequence after which it still has to stream: what
    /// [`Lanes::grouped`] takes to carry on from here. A multi-lane transaction
    /// sent whole that a lane has not stepped over yet goes out once more
    /// from that lane, for its tables only: the stamp rule drops it there.
    pub(crate) fn positions(&self) -> HashMap<String, u64> {
        self.starts
            .iter()
            .map(|(t, s)| (t.clone(), (*s).max(self.lanes[self.lane_of[t]].pos)))
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Everything up to here was sent for every table.
    pub(crate) fn floor(&self) -> u64 {
        self.lanes.iter().map(|l| l.pos).min().unwrap_or(0)
    }

    /// The furthest any lane has sent.
    pub(crate) fn front(&self) -> u64 {
        self.lanes.iter().map(|l| l.pos).max().unwrap_or(0)
    }

    /// How far the lanes are ahead of `acked`, for the window of
    /// transactions not yet acknowledged. While the budget holds a lane,
    /// the peer cannot acknowledge past it, so only the lanes still moving
    /// count (from the lowest of them): otherwise alerts flowing past a
    /// held bulk table would fill the window and stop.
    pub(crate) fn ahead(&self, acked: u64) -> u64 {
        if !self.lanes.iter().any(|l| l.held) {
            return self.front().saturating_sub(acked);
        }
        let moving = self.lanes.iter().filter(|l| !l.held).map(|l| l.pos);
        let (Some(lo), Some(hi)) = (moving.clone().min(), moving.max()) else {
            return 0;
        };
        hi.saturating_sub(acked.max(lo))
    }

    /// Marks the lanes whose class `held` says the budget holds now;
    /// returns whether any is.
    pub(crate) fn hold(&mut self, held: impl Fn(u8) -> bool) -> bool {
        let mut any = false;
        for l in &mut self.lanes {
            l.held = held(l.priority.1);
            any |= l.held;
        }
        any
    }

    /// The highest-priority lane that has work below `last` and may move.
    pub(crate) fn next_lane(&mut self, last: u64) -> Option<usize> {
        for i in 0..self.lanes.len() {
            if self.lanes[i].awaits_sync || self.lanes[i].held {
                continue;
            }
            if let Some((seq, others)) = &self.lanes[i].blocked {
                if others.iter().all(|&o| self.lanes[o].pos + 1 >= *seq) {
                    self.lanes[i].blocked = None;
                } else {
                    continue;
                }
            }
            if self.lanes[i].pos < last {
                return Some(i);
            }
        }
        None
    }

    /// Moves every lane behind `seq` to it: the caller knows no entry
    /// after the floor up to `seq` is for this link (see `local::fanout`),
    /// so no lane is blocked at, or owes a step over, any of them.
    pub(crate) fn pass_to(&mut self, seq: u64) {
        for l in &mut self.lanes {
            l.pos = l.pos.max(seq);
        }
    }

    pub(crate) fn pos(&self, lane: usize) -> u64 {
        self.lanes[lane].pos
    }

    fn sendable(&self, e: &LogEntry, w: &LogWrite) -> bool {
        self.starts.get(&w.table).is_some_and(|s| e.seq > *s)
    }

    /// Turns the next entries of `lane` (consecutive, from `pos(lane) + 1`)
    /// into what to send, advancing the lane as far as it may go.
    pub(crate) fn plan(&mut self, lane: usize, entries: Vec<LogEntry>) -> Vec<WireTxn> {
        let mut out = Vec::new();
        for e in entries {
            if let Some(left) = self.sent_whole.get_mut(&e.seq) {
                // Sent whole by another lane already.
                *left -= 1;
                if *left == 0 {
                    self.sent_whole.remove(&e.seq);
                }
                self.lanes[lane].pos = e.seq;
                continue;
            }
            if e.origin() == self.peer_node_id {
                self.lanes[lane].pos = e.seq;
                continue; // never back to where it came from
            }
            if self.only_origin.is_some_and(|o| o != e.origin()) {
                self.lanes[lane].pos = e.seq;
                continue; // a relay the peer does not take from this node
            }
            let mut mine = false;
            let mut others: Vec<usize> = Vec::new();
            let mut syncing = false;
            for w in &e.writes {
                syncing |= self.pending.contains(&w.table);
            }
            for w in e.writes.iter().filter(|w| self.sendable(&e, w)) {
                match self.lane_of.get(&w.table) {
                    Some(&l) if l == lane => mine = true,
                    Some(&l) if !others.contains(&l) => others.push(l),
                    _ => {}
                }
            }
            if !mine {
                self.lanes[lane].pos = e.seq;
                continue;
            }
            if syncing {
                self.lanes[lane].awaits_sync = true;
                break;
            }
            if !others.iter().all(|&o| self.lanes[o].pos + 1 >= e.seq) {
                self.lanes[lane].blocked = Some((e.seq, others));
                break;
            }
            if !others.is_empty() {
                self.sent_whole.insert(e.seq, others.len());
            }
            let (seq, stamp) = (e.seq, e.stamp);
            let starts = &self.starts;
            let writes: Vec<LogWrite> = e
                .writes
                .into_iter()
                .filter(|w| starts.get(&w.table).is_some_and(|s| seq > *s))
                .collect();
            out.push(WireTxn { seq, stamp, writes });
            self.lanes[lane].pos = seq;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::codec::{Key, Stamp};
    use crate::local::log::WriteOp;

    fn entry(seq: u64, tables: &[&str]) -> LogEntry {
        LogEntry {
            seq,
            stamp: Stamp { time: seq, node: 1 },
            local_time: seq,
            writes: tables
                .iter()
                .map(|t| LogWrite {
                    table: t.to_string(),
                    key: Key::Int(seq as i64),
                    op: WriteOp::Delete,
                })
                .collect(),
            prior: Vec::new(),
        }
    }

    fn lanes(starts: &[(&str, u64)], prio: &[(&str, u8)]) -> Lanes {
        Lanes::new(
            starts.iter().map(|(t, s)| (t.to_string(), *s)).collect(),
            &prio.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
            HashSet::new(),
            99,
        )
    }

    /// Drives the planner like the sender does over an in-memory log.
    fn drain(l: &mut Lanes, log: &[LogEntry]) -> Vec<WireTxn> {
        let last = log.last().map_or(0, |e| e.seq);
        let mut sent = Vec::new();
        while let Some(i) = l.next_lane(last) {
            let from = l.pos(i) as usize; // seqs start at 1
            let chunk: Vec<LogEntry> = log[from..].iter().take(3).cloned().collect();
            sent.extend(l.plan(i, chunk));
        }
        sent
    }

    #[test]
    fn high_priority_goes_first_and_each_table_keeps_its_order() {
        let mut log = vec![];
        for s in 1..=10 {
            log.push(entry(s, &["readings"]));
        }
        for s in 11..=13 {
            log.push(entry(s, &["alerts"]));
        }
        let mut l = lanes(&[("readings", 0), ("alerts", 0)], &[("alerts", 9)]);
        let sent = drain(&mut l, &log);
        let seqs: Vec<u64> = sent.iter().map(|t| t.seq).collect();
        assert_eq!(&seqs[..3], &[11, 12, 13], "alerts overtake the backlog");
        let readings: Vec<u64> = seqs.iter().copied().filter(|s| *s <= 10).collect();
        assert_eq!(readings, (1..=10).collect::<Vec<_>>());
        assert_eq!(l.floor(), 13);
    }

    #[test]
    fn a_transaction_across_lanes_is_a_barrier_and_goes_out_once_whole() {
        let log = vec![
            entry(1, &["readings"]),
            entry(2, &["alerts"]),
            entry(3, &["readings", "alerts"]),
            entry(4, &["alerts"]),
            entry(5, &["readings"]),
        ];
        let mut l = lanes(&[("readings", 0), ("alerts", 0)], &[("alerts", 9)]);
        let sent = drain(&mut l, &log);
        let seqs: Vec<u64> = sent.iter().map(|t| t.seq).collect();
        assert_eq!(seqs, vec![2, 1, 3, 4, 5]);
        assert_eq!(sent[2].writes.len(), 2, "sent whole");
        // Per table, log order holds.
        for table in ["readings", "alerts"] {
            let order: Vec<u64> = sent
                .iter()
                .filter(|t| t.writes.iter().any(|w| w.table == table))
                .map(|t| t.seq)
                .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{table}: {order:?}");
        }
    }

    #[test]
    fn a_transaction_that_writes_a_table_still_syncing_waits_for_the_sync() {
        let log = vec![
            entry(1, &["alerts"]),
            entry(2, &["alerts", "bulk"]),
            entry(3, &["alerts"]),
            entry(4, &["bulk"]),
        ];
        let pending = |t: &[&str]| t.iter().map(|t| t.to_string()).collect::<HashSet<_>>();
        let prio: HashMap<String, u8> = [("alerts".to_string(), 9)].into();
        let starts = |p: &[(&str, u64)]| p.iter().map(|(t, s)| (t.to_string(), *s)).collect();
        let mut l = Lanes::new(starts(&[("alerts", 0)]), &prio, pending(&["bulk"]), 99);
        let sent = drain(&mut l, &log);
        assert_eq!(sent.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            l.floor(),
            1,
            "waits before the transaction that writes bulk"
        );

        // The sync covered bulk up to 1: transaction 2 goes out whole.
        let mut at = l.positions();
        assert_eq!(at, starts(&[("alerts", 1)]));
        at.insert("bulk".into(), 1);
        let mut l = Lanes::new(at.clone(), &prio, HashSet::new(), 99);
        let sent = drain(&mut l, &log);
        assert_eq!(
            sent.iter().map(|t| t.seq).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(sent[0].writes.len(), 2, "sent whole");
        assert_eq!(l.floor(), 4);

        // The sync covered bulk up to 2: only alerts' part of 2 is left.
        at.insert("bulk".into(), 2);
        let mut l = Lanes::new(at, &prio, HashSet::new(), 99);
        let sent = drain(&mut l, &log);
        assert_eq!(
            sent.iter().map(|t| t.seq).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(sent[0].writes.len(), 1);
        assert_eq!(sent[0].writes[0].table, "alerts");
    }

    #[test]
    fn one_lane_is_plain_log_order_with_start_points_and_origin_filter() {
        let mut log = vec![
            entry(1, &["a"]),
            entry(2, &["b"]),
            entry(3, &["a", "b", "c"]),
        ];
        log[1].stamp.node = 99; // from the peer itself
        let mut l = lanes(&[("a", 0), ("b", 2)], &[]);
        let sent = drain(&mut l, &log);
        assert_eq!(sent.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(
            sent[1].writes.len(),
            2,
            "c is not published; b starts after 2"
        );
        assert_eq!(l.floor(), 3);
    }

    #[test]
    fn a_held_lane_stays_put_and_holds_the_floor_while_others_flow() {
        let log = vec![
            entry(1, &["bulk"]),
            entry(2, &["alerts"]),
            entry(3, &["bulk"]),
            entry(4, &["alerts"]),
        ];
        let starts = [("bulk".to_string(), 0), ("alerts".to_string(), 0)].into();
        // Same priority, another class: bulk has a lane of its own.
        let keys = [("bulk".to_string(), (0, 1)), ("alerts".to_string(), (0, 0))].into();
        let mut l = Lanes::grouped(starts, &keys, HashSet::new(), 99);
        assert!(l.hold(|class| class == 1));
        let sent = drain(&mut l, &log);
        assert_eq!(sent.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(l.floor(), 0, "nothing of bulk was sent: not acknowledged");
        assert_eq!(l.ahead(0), 0, "only alerts move: nothing ahead of them");
        assert!(!l.hold(|_| false));
        let sent = drain(&mut l, &log);
        assert_eq!(sent.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(l.floor(), 4);
    }
}
