//! Coalescing on a link (`TableFlow::coalesce_ms`): the log of a table
//! that coalesces waits up to its window before it goes out, and of the
//! versions of a key written within the window only the newest is sent.
//!
//! Transactions stay whole: one is passed over only when every write in it
//! is to a coalescing table and is followed, within that table's window,
//! by a later write of the same key that goes out in the same round (so
//! the peer's acknowledgement that covers the passed-over sequence also
//! covers the newer version: a delivery receipt for the older write passes
//! once the newer one is applied, which is the state the older one led
//! to, overwritten).

use std::collections::HashMap;

use crate::local::codec::{Key, Stamp};
use crate::local::hlc::wall_millis;
use crate::local::log::LogEntry;
use crate::net::wire::WireTxn;

/// Per table, its window in ms (only tables that coalesce).
pub(crate) type Windows = HashMap<String, u64>;

fn millis(local_time: u64) -> u64 {
    Stamp {
        time: local_time,
        node: 0,
    }
    .millis()
}

/// How long to hold `entries` before planning them: until the oldest one
/// that writes a coalescing table is as old as that table's window.
/// `None`: nothing to wait for.
pub(crate) fn hold(windows: &Windows, entries: &[LogEntry]) -> Option<std::time::Duration> {
    if windows.is_empty() {
        return None;
    }
    let now = wall_millis();
    let until = entries
        .iter()
        .flat_map(|e| {
            e.writes
                .iter()
                .filter_map(|w| windows.get(&w.table))
                .map(move |c| (millis(e.local_time).saturating_add(*c), *c))
        })
        .min()?;
    // A local time ahead of the wall clock (a peer's clock observed) holds
    // no longer than the window itself.
    let wait = until.0.saturating_sub(now).min(until.1);
    (wait > 0).then(|| std::time::Duration::from_millis(wait))
}

/// Drops from `txns` the transactions every write of which a later one
/// in `txns` overwrites within its table's window; `local_times`: each
/// entry's local commit time by sequence. Returns the writes passed over,
/// by table.
pub(crate) fn coalesce(
    windows: &Windows,
    local_times: &HashMap<u64, u64>,
    txns: &mut Vec<WireTxn>,
) -> HashMap<String, u64> {
    let mut passed: HashMap<String, u64> = HashMap::new();
    if windows.is_empty() || txns.len() < 2 {
        return passed;
    }
    // The time of the nearest later write of each key, going backwards.
    let mut later: HashMap<(&str, &Key), u64> = HashMap::new();
    let mut drop = vec![false; txns.len()];
    for (i, t) in txns.iter().enumerate().rev() {
        let at = local_times.get(&t.seq).map_or(0, |lt| millis(*lt));
        drop[i] = !t.writes.is_empty()
            && t.writes.iter().all(|w| {
                // A patch or count carries what a later write of the key
                // may not (other attributes, a counter's total).
                if !w.op.supersedable() {
                    return false;
                }
                let (Some(window), Some(next)) = (
                    windows.get(&w.table),
                    later.get(&(w.table.as_str(), &w.key)),
                ) else {
                    return false;
                };
                next.saturating_sub(at) <= *window
            });
        for w in &t.writes {
            later.insert((w.table.as_str(), &w.key), at);
        }
    }
    for (t, _) in txns.iter().zip(&drop).filter(|(_, d)| **d) {
        for w in &t.writes {
            *passed.entry(w.table.clone()).or_default() += 1;
        }
    }
    let mut drop = drop.into_iter();
    txns.retain(|_| !drop.next().unwrap_or(false));
    passed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::log::{LogWrite, WriteOp};

    fn txn(seq: u64, writes: &[(&str, i64)]) -> WireTxn {
        WireTxn {
            seq,
            stamp: Stamp { time: seq, node: 1 },
            writes: writes
                .iter()
                .map(|(t, k)| LogWrite {
                    table: t.to_string(),
                    key: Key::Int(*k),
                    op: WriteOp::Put {
                        json: format!("{{\"id\":{k}}}"),
                        created: 0,
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn only_transactions_wholly_overwritten_within_the_window_are_passed_over() {
        let windows: Windows = [("r".to_string(), 100)].into();
        // Local times (ms, as HLC) by seq: 6 is 500 ms after 5.
        let ms = |m: u64| m << crate::local::hlc::LOGICAL_BITS;
        let times: HashMap<u64, u64> = [
            (1, ms(1000)),
            (2, ms(1010)),
            (3, ms(1020)),
            (4, ms(1030)),
            (5, ms(1040)),
            (6, ms(1540)),
        ]
        .into();
        let mut txns = vec![
            txn(1, &[("r", 1)]),           // overwritten by 2: passed over
            txn(2, &[("r", 1), ("r", 2)]), // key 2 never again: sent
            txn(3, &[("r", 1), ("a", 1)]), // writes a table that does not coalesce: sent
            txn(4, &[("r", 3)]),           // overwritten by 5: passed over
            txn(5, &[("r", 3)]),           // overwritten by 6, but 500 ms later: sent
            txn(6, &[("r", 3)]),
        ];
        let passed = coalesce(&windows, &times, &mut txns);
        let seqs: Vec<u64> = txns.iter().map(|t| t.seq).collect();
        assert_eq!(seqs, vec![2, 3, 5, 6]);
        assert_eq!(passed.get("r"), Some(&2));
        // Without windows nothing changes.
        let mut all = vec![txn(1, &[("r", 1)]), txn(2, &[("r", 1)])];
        assert!(coalesce(&Windows::new(), &times, &mut all).is_empty());
        assert_eq!(all.len(), 2);
    }
}
