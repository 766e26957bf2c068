//! Per-table statistics kept with the data: what they hold and how they
//! are stored. Staging them in each commit, and the disk budgets that act
//! on them, are in `table_budget` (above the database and the write path,
//! which use these types).
//!
//! Each table has one metadata entry, `tstats/<table id>`, holding its live
//! record count, their logical bytes and how many records its budget has
//! dropped; `count` reads it in O(1).
//!
//! A table's logical bytes are, over its live records, the stored row key
//! (4-byte table id and the encoded primary key) plus the record's JSON
//! text. Tombstones, row headers, secondary and expiry index entries, the
//! transaction log and the engine's own overhead are not counted: the
//! figure does not move with engine settings or compaction, and a budget
//! means the same on both engines.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::local::catalog::{OnFull, TableDef};

/// A table's statistics, as `table_stats` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStats {
    /// Live records (what `count` returns).
    pub records: u64,
    /// Logical bytes of the live records (see the module docs): what
    /// `disk_budget_bytes` limits.
    pub bytes: u64,
    /// Records removed by `on_full = "drop_oldest"` since the table was
    /// created.
    pub dropped: u64,
    /// The table's budget, if it has one.
    pub disk_budget_bytes: Option<u64>,
}

/// What one batch changes in one table.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Delta {
    pub(crate) records: i64,
    pub(crate) bytes: i64,
    /// The table has a budget (so only then is its definition looked up).
    pub(crate) budgeted: bool,
}

/// What a batch changes, per table id; a batch touches few tables, so a
/// list is cheaper than a map on the write path.
#[derive(Debug, Default)]
pub(crate) struct Deltas {
    pub(crate) tables: Vec<(u32, Delta)>,
    /// Rows this batch writes in tables that may drop their oldest
    /// records: those are never dropped by the same batch.
    pub(crate) written: Vec<Vec<u8>>,
}

/// Logical bytes of a live record (see the module docs).
pub(crate) fn record_bytes(rk: &[u8], json_len: usize) -> u64 {
    (rk.len() + json_len) as u64
}

impl Deltas {
    /// A row of `def` goes from `old` to `new` (each `Some(logical bytes)`
    /// where live).
    pub(crate) fn row(&mut self, def: &TableDef, rk: &[u8], old: Option<u64>, new: Option<u64>) {
        let d = Delta {
            records: i64::from(new.is_some()) - i64::from(old.is_some()),
            bytes: new.unwrap_or(0) as i64 - old.unwrap_or(0) as i64,
            budgeted: def.disk_budget_bytes.is_some(),
        };
        if def.disk_budget_bytes.is_some() && def.on_full == OnFull::DropOldest {
            self.written.push(rk.to_vec());
        }
        self.add(def.id, d);
    }

    pub(crate) fn add(&mut self, id: u32, d: Delta) {
        match self.tables.iter_mut().find(|(t, _)| *t == id) {
            Some((_, e)) => {
                e.records += d.records;
                e.bytes += d.bytes;
                e.budgeted |= d.budgeted;
            }
            None => self.tables.push((id, d)),
        }
    }
}

/// The statistics of the tables used since open (or since the last failed
/// commit, after which they are read again from storage).
#[derive(Default)]
pub(crate) struct StatsCache(pub(crate) Mutex<HashMap<u32, Stored>>);

impl StatsCache {
    /// Forgets everything: after a failed commit, what storage holds is
    /// the truth.
    pub(crate) fn clear(&self) {
        self.0.lock().clear();
    }

    pub(crate) fn forget(&self, id: u32) {
        self.0.lock().remove(&id);
    }
}

/// What the `tstats/` entry holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) dropped: u64,
}

const STATS_VERSION: u8 = 1;
const STATS_LEN: usize = 25;

pub(crate) fn stats_key(id: u32) -> Vec<u8> {
    let mut k = b"tstats/".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

impl Stored {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(STATS_LEN);
        v.push(STATS_VERSION);
        v.extend_from_slice(&self.records.to_be_bytes());
        v.extend_from_slice(&self.bytes.to_be_bytes());
        v.extend_from_slice(&self.dropped.to_be_bytes());
        v
    }

    pub(crate) fn decode(v: &[u8]) -> Result<Stored> {
        if v.len() != STATS_LEN || v[0] != STATS_VERSION {
            return Err(Error::Corrupt(format!(
                "table statistics entry of {} bytes (version {:?}), expected {STATS_LEN} bytes of version {STATS_VERSION}",
                v.len(),
                v.first()
            )));
        }
        let at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[1 + 8 * i..9 + 8 * i]);
            u64::from_be_bytes(b)
        };
        Ok(Stored {
            records: at(0),
            bytes: at(1),
            dropped: at(2),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips_and_refuses_garbage() {
        let s = Stored {
            records: 3,
            bytes: u64::MAX,
            dropped: 7,
        };
        assert_eq!(Stored::decode(&s.encode()).unwrap(), s);
        assert!(matches!(Stored::decode(&[]), Err(Error::Corrupt(_))));
        let mut bad = s.encode();
        bad[0] = 9;
        assert!(matches!(Stored::decode(&bad), Err(Error::Corrupt(_))));
        assert!(matches!(
            Stored::decode(&s.encode()[..24]),
            Err(Error::Corrupt(_))
        ));
    }
}
