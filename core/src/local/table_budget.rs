//! Table statistics staged in each commit, and the tables' disk budgets
//! acting on them (the statistics themselves: `table_stats`).
//!
//! Every batch that changes a table's rows stages the new statistics entry
//! in that same batch (`stage`), under the commit lock, so the entry is
//! always the count of the rows beside it, across crashes. A table without
//! the entry (a data directory from before it existed) is counted once by a
//! scan, under the commit lock, the first time it is needed, and the result
//! persists with the table's next write.
//!
//! A budget is checked only when a commit makes its table grow, so a table
//! over its budget (the budget was lowered, or a peer's writes went in)
//! can always shrink. Refusal applies to local writes only: a replication
//! apply is never refused for a budget, since refusing it would stall the
//! whole link (every table the peer sends, not only this one) until the
//! space came back; a `refuse` table may so end up over its budget, and its
//! local writes are refused until it is back under. A `drop_oldest` table
//! drops the oldest records for local and replicated writes alike.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::local::catalog::{OnFull, TableDef};
use crate::local::codec::take_key;
use crate::local::db::Database;
use crate::local::index_entries::index_entries;
use crate::local::keys::{row_key, EXPIRY_INDEX};
use crate::local::row::{decode_row, decode_row_header, is_live_row};
use crate::local::storage::{Batch, Space, Store};
use crate::local::table_stats::{record_bytes, stats_key, Delta, Deltas, Stored, TableStats};

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
            let (_, body_at) = decode_row(&v)?;
            s.records += 1;
            s.bytes += record_bytes(&k, v.len() - body_at);
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
        let (h, body_at) = decode_row(&row)?;
        if h.tombstone {
            // Tombstones hold no counted bytes; retention collects them.
            continue;
        }
        let body = &row[body_at..];
        if !def.indexes.is_empty() {
            if let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(body) {
                for k in index_entries(def, &key, &obj).into_keys() {
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
#[path = "table_budget_tests.rs"]
mod props;
