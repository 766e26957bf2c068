//! Per-table statistics kept with the data, and the tables' disk budgets.
//!
//! Each table has one metadata entry, `tstats/<table id>`, holding its live
//! record count, their logical bytes and how many records its budget has
//! dropped. Every batch that changes a table's rows stages the new entry in
//! that same batch (`stage`), under the commit lock, so the entry is always
//! the count of the rows beside it, across crashes; `count` reads it in
//! O(1). A table without the entry (a data directory from before it
//! existed) is counted once by a scan, under the commit lock, the first
//! time it is needed, and the result persists with the table's next write.
//!
//! A table's logical bytes are, over its live records, the stored row key
//! (4-byte table id and the encoded primary key) plus the record's JSON
//! text. Tombstones, row headers, secondary and expiry index entries, the
//! transaction log and the engine's own overhead are not counted: the
//! figure does not move with engine settings or compaction, and a budget
//! means the same on both engines.
//!
//! A budget is checked only when a commit makes its table grow, so a table
//! over its budget (the budget was lowered, or a peer's writes went in)
//! can always shrink. Refusal applies to local writes only: a replication
//! apply is never refused for a budget, since refusing it would stall the
//! whole link (every table the peer sends, not only this one) until the
//! space came back; a `refuse` table may so end up over its budget, and its
//! local writes are refused until it is back under. A `drop_oldest` table
//! drops the oldest records for local and replicated writes alike.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::local::catalog::{OnFull, TableDef};
use crate::local::codec::{decode_row_header, is_live_row, take_key};
use crate::local::db::Database;
use crate::local::keys::{row_key, EXPIRY_INDEX};
use crate::local::storage::{Batch, Space, Store};

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
    records: i64,
    bytes: i64,
    /// The table has a budget (so only then is its definition looked up).
    budgeted: bool,
}

/// What a batch changes, per table id; a batch touches few tables, so a
/// list is cheaper than a map on the write path.
#[derive(Debug, Default)]
pub(crate) struct Deltas {
    tables: Vec<(u32, Delta)>,
    /// Rows this batch writes in tables that may drop their oldest
    /// records: those are never dropped by the same batch.
    written: Vec<Vec<u8>>,
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

    fn add(&mut self, id: u32, d: Delta) {
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
pub(crate) struct StatsCache(Mutex<HashMap<u32, Stored>>);

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
struct Stored {
    records: u64,
    bytes: u64,
    dropped: u64,
}

const STATS_VERSION: u8 = 1;
const STATS_LEN: usize = 25;

pub(crate) fn stats_key(id: u32) -> Vec<u8> {
    let mut k = b"tstats/".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

impl Stored {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(STATS_LEN);
        v.push(STATS_VERSION);
        v.extend_from_slice(&self.records.to_be_bytes());
        v.extend_from_slice(&self.bytes.to_be_bytes());
        v.extend_from_slice(&self.dropped.to_be_bytes());
        v
    }

    fn decode(v: &[u8]) -> Result<Stored> {
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

fn def_by_id(db: &Database, id: u32) -> Option<Arc<TableDef>> {
    db.shared
        .catalog
        .read()
        .tables
        .values()
        .find(|d| d.id == id)
        .cloned()
}

/// Table `id`'s statistics as of the last commit: from the cache, else
/// its entry, else a scan. The caller holds the commit lock.
fn load(db: &Database, store: &Store, id: u32) -> Result<Stored> {
    if let Some(s) = db.shared.table_stats.0.lock().get(&id) {
        return Ok(*s);
    }
    let s = match store.get(Space::Meta, &stats_key(id))? {
        Some(v) => Stored::decode(&v)?,
        None => scan(store, id)?,
    };
    db.shared.table_stats.0.lock().insert(id, s);
    Ok(s)
}

/// Counts a table that has no entry yet.
fn scan(store: &Store, id: u32) -> Result<Stored> {
    let prefix = crate::local::keys::row_prefix(id);
    let mut s = Stored::default();
    for item in store.prefix(Space::Rows, &prefix, false) {
        let (k, v) = item?;
        if is_live_row(&v) {
            let h = decode_row_header(&v)?;
            s.records += 1;
            s.bytes += record_bytes(&k, v.len() - h.len());
        }
    }
    Ok(s)
}

/// New statistics staged in a batch; [`Staged::apply`] makes them the
/// cached ones once the batch is committed.
#[must_use]
pub(crate) struct Staged(Vec<(u32, Stored)>);

impl Staged {
    pub(crate) fn apply(self, db: &Database) {
        let mut cache = db.shared.table_stats.0.lock();
        for (id, s) in self.0 {
            cache.insert(id, s);
        }
    }
}

/// Stages in `batch` the statistics `deltas` leave, applying the tables'
/// budgets: a `refuse` table that would grow past its budget fails a local
/// batch with `TableFull`; a `drop_oldest` one gets its oldest records
/// removed in `batch`. The caller holds the commit lock and commits
/// `batch`, then applies what this returns.
pub(crate) fn stage(
    db: &Database,
    store: &Store,
    batch: &mut Batch,
    deltas: &Deltas,
    local: bool,
) -> Result<Staged> {
    let mut out = Vec::with_capacity(deltas.tables.len());
    for (id, d) in &deltas.tables {
        let old = load(db, store, *id)?;
        let mut new = Stored {
            records: old.records.saturating_add_signed(d.records),
            bytes: old.bytes.saturating_add_signed(d.bytes),
            dropped: old.dropped,
        };
        if d.bytes > 0 && d.budgeted {
            if let Some(def) = def_by_id(db, *id) {
                if let Some(budget) = def.disk_budget_bytes.filter(|b| new.bytes > *b) {
                    enforce(db, store, batch, &def, budget, &mut new, deltas, local)?;
                }
            }
        }
        batch.put(Space::Meta, stats_key(*id), new.encode());
        out.push((*id, new));
    }
    Ok(Staged(out))
}

#[allow(clippy::too_many_arguments)]
fn enforce(
    _db: &Database,
    store: &Store,
    batch: &mut Batch,
    def: &TableDef,
    budget: u64,
    new: &mut Stored,
    deltas: &Deltas,
    local: bool,
) -> Result<()> {
    let full = |would| Error::TableFull {
        table: def.name.clone(),
        would,
        budget,
    };
    match def.on_full {
        OnFull::Refuse if local => Err(full(new.bytes)),
        OnFull::Refuse => Ok(()),
        OnFull::DropOldest => {
            let (n, freed) = drop_oldest(store, batch, def, new.bytes - budget, &deltas.written)?;
            new.records -= n.min(new.records);
            new.bytes -= freed.min(new.bytes);
            new.dropped += n;
            if new.bytes > budget && local {
                // What this commit writes alone is past the budget.
                return Err(full(new.bytes));
            }
            Ok(())
        }
    }
}

/// Removes from `batch`'s table, oldest first (by the millisecond of the
/// last write, then by key: the age index's order, which expiry shares, so
/// a budget costs no index of its own), live records other than `written`
/// until `need` bytes are freed (or none is left). Returns
/// how many records and bytes went. Like expiry, the removal is local and
/// never replicated.
fn drop_oldest(
    store: &Store,
    batch: &mut Batch,
    def: &TableDef,
    need: u64,
    written: &[Vec<u8>],
) -> Result<(u64, u64)> {
    let prefix = def.index_prefix(EXPIRY_INDEX);
    let (mut n, mut freed) = (0u64, 0u64);
    for item in store.prefix(Space::Index, &prefix, false) {
        if freed >= need {
            break;
        }
        let (ek, _) = item?;
        let rest = ek
            .get(prefix.len() + 8..)
            .ok_or_else(|| Error::Corrupt("age index entry too short".into()))?;
        let (key, _) = take_key(rest)?;
        let rk = row_key(def.id, &key);
        if written.contains(&rk) {
            continue;
        }
        let Some(row) = store.get(Space::Rows, &rk)? else {
            batch.delete(Space::Index, ek.to_vec());
            continue;
        };
        let h = decode_row_header(&row)?;
        if h.tombstone {
            // Tombstones hold no counted bytes; retention collects them.
            continue;
        }
        let body = &row[h.len()..];
        if !def.indexes.is_empty() {
            if let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(body) {
                for k in crate::local::write::index_entries(def, &key, &obj) {
                    batch.delete(Space::Index, k);
                }
            }
        }
        batch.delete(Space::Index, ek.to_vec());
        freed += record_bytes(&rk, body.len());
        n += 1;
        batch.delete(Space::Rows, rk);
    }
    Ok((n, freed))
}

/// Stages the statistics of rows removed outside the write path (expiry,
/// the conflict log's bounds): `gone` holds each removed live record's
/// logical bytes.
pub(crate) fn stage_removed(
    db: &Database,
    store: &Store,
    batch: &mut Batch,
    def: &TableDef,
    gone: &[u64],
) -> Result<Staged> {
    let mut deltas = Deltas::default();
    for b in gone {
        deltas.add(
            def.id,
            Delta {
                records: -1,
                bytes: -(*b as i64),
                budgeted: false,
            },
        );
    }
    stage(db, store, batch, &deltas, false)
}

impl Database {
    /// Table `table`'s live records, their logical bytes, and what its
    /// budget dropped (see [`TableStats`]); read without a scan.
    pub fn table_stats(&self, table: &str) -> Result<TableStats> {
        let store = self.store()?;
        let def = self.table(table)?;
        let cached = self.shared.table_stats.0.lock().get(&def.id).copied();
        let s = match cached {
            Some(s) => s,
            None => {
                let _w = self.shared.write.lock();
                load(self, &store, def.id)?
            }
        };
        Ok(TableStats {
            records: s.records,
            bytes: s.bytes,
            dropped: s.dropped,
            disk_budget_bytes: def.disk_budget_bytes,
        })
    }

    /// Number of live records in the table, without a scan.
    pub fn count(&self, table: &str) -> Result<u64> {
        Ok(self.table_stats(table)?.records)
    }

    /// Sets (or with `None` removes) table `table`'s disk budget while the
    /// database runs. A `drop_oldest` budget below the table's bytes drops
    /// the oldest records at once, in the same commit as the change; a
    /// `refuse` one refuses local writes that grow the table until it is
    /// back under.
    pub fn set_table_budget(&self, table: &str, budget: Option<(u64, OnFull)>) -> Result<()> {
        crate::local::catalog::validate_budget(budget.map(|b| b.0))?;
        let store = self.shared.writable_store()?;
        let _w = self.shared.write.lock();
        let old = self.table(table)?;
        let mut def = (*old).clone();
        def.disk_budget_bytes = budget.map(|b| b.0);
        def.on_full = budget.map(|b| b.1).unwrap_or_default();
        let mut batch = Batch::default();
        // The age index: built where it starts being needed, removed where
        // nothing reads it any more (a stale one would mislead expiry or a
        // later budget).
        match (old.keeps_age_index(), def.keeps_age_index()) {
            (false, true) => build_age_index(&store, &mut batch, &def)?,
            (true, false) => {
                let prefix = def.index_prefix(EXPIRY_INDEX);
                for item in store.prefix(Space::Index, &prefix, false) {
                    batch.delete(Space::Index, item?.0.to_vec());
                }
            }
            _ => {}
        }
        batch.put(
            Space::Meta,
            crate::local::keys::table_key(table),
            serde_json::to_vec(&def).map_err(|e| Error::Storage(e.to_string()))?,
        );
        self.shared
            .commit(&store, batch, self.sync_commits(), None)?;
        self.shared.catalog.write().insert(def.clone());
        // Then the drops, in a second commit: they read the age index the
        // first one may have just built.
        if let Some(budget) = def.disk_budget_bytes {
            let mut s = load(self, &store, def.id)?;
            if def.on_full == OnFull::DropOldest && s.bytes > budget {
                let mut batch = Batch::default();
                let none = Deltas::default();
                enforce(self, &store, &mut batch, &def, budget, &mut s, &none, false)?;
                batch.put(Space::Meta, stats_key(def.id), s.encode());
                self.shared
                    .commit(&store, batch, self.sync_commits(), None)?;
                Staged(vec![(def.id, s)]).apply(self);
            }
        }
        Ok(())
    }
}

/// Age index entries for every live record and tombstone of `def`, by the
/// stamp in its row header (what the write path would have written).
fn build_age_index(store: &Store, batch: &mut Batch, def: &TableDef) -> Result<()> {
    let prefix = def.row_prefix();
    for item in store.prefix(Space::Rows, &prefix, false) {
        let (k, v) = item?;
        let h = decode_row_header(&v)?;
        let (key, _) = take_key(&k[prefix.len()..])?;
        batch.put(
            Space::Index,
            crate::local::keys::expiry_key(def.id, h.stamp.millis(), &key),
            Vec::new(),
        );
    }
    Ok(())
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

#[cfg(test)]
#[path = "table_stats_tests.rs"]
mod props;
