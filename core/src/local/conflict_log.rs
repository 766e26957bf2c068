//! The conflict log: the system table `_conflicts`, one record per write
//! that lost a conflict on this node, keyed `"<node name>:<n>"` so that
//! entries from many nodes can meet in one hub's table.
//!
//! Entries are ordinary records written by ordinary local transactions, so
//! a flow that names `_conflicts` publishes them like any table. The bounds
//! (`OpenOptions::conflict_log_max_bytes`, `conflict_log_max_age`) are
//! enforced when entries are appended and at open, by evicting the oldest
//! entries locally without logging them (like expiry): a hub that collects
//! the log keeps its own copy under its own bounds.
//!
//! Nothing here runs on a write that meets no conflict.

use std::sync::atomic::Ordering;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::local::catalog::{TableOptions, CONFLICTS_TABLE};
use crate::local::codec::Key;
use crate::local::conflict::{ConflictEntry, ConflictPolicy, ConflictResolver, ID_ATTR};
use crate::local::db::Database;
use crate::local::keys::row_key;
use crate::local::row::decode_row;
use crate::local::storage::{Batch, Space};

/// Digits of the entry number in an id: ids of one node sort in the order
/// they were logged.
const ID_DIGITS: usize = 12;

impl Database {
    /// Remembers that `node_id` is `name` (a peer's hello), for naming
    /// origins in conflict-log entries.
    pub(crate) fn learn_node_name(&self, node_id: u64, name: &str) {
        let names = &self.shared.conflicts.names;
        if names.read().get(&node_id).map(String::as_str) != Some(name) {
            names.write().insert(node_id, name.to_string());
        }
    }

    /// The name of node `id`: this node's, a peer's that introduced
    /// itself, or the id as text.
    pub(crate) fn node_name_of(&self, id: u64) -> String {
        if id == self.shared.node_id {
            return self.shared.node_name.clone();
        }
        match self.shared.conflicts.names.read().get(&id) {
            Some(n) => n.clone(),
            None => format!("{id:#x}"),
        }
    }
}

/// Creates `_conflicts` if this directory lacks it, finds the next entry
/// number, and applies the bounds.
pub(crate) fn open(db: &Database) -> Result<()> {
    if db.table(CONFLICTS_TABLE).is_err() && db.shared.store.read().is_some() {
        let opts = TableOptions::default().primary_key(ID_ATTR);
        match db.create_table_as(CONFLICTS_TABLE, opts, true) {
            Ok(_) | Err(Error::TableExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let prefix = format!("{}:", db.shared.node_name);
    let mut next = 0;
    for (key, _, _) in entries_raw(db)? {
        if let Key::Str(id) = &key {
            if let Some(n) = id.strip_prefix(&prefix).and_then(|n| n.parse::<u64>().ok()) {
                next = next.max(n + 1);
            }
        }
    }
    db.shared.conflicts.next.store(next, Ordering::Relaxed);
    let store = db.store()?;
    let mut stateful = crate::local::side::stateful_tables(&store)?;
    stateful.extend(crate::local::side::tables_with_sides(&store)?);
    db.shared.conflicts.mark_stateful(&stateful);
    enforce_bounds(db)
}

/// Every `_conflicts` row: key, body length, and its entry (`None` where
/// the record is not one).
fn entries_raw(db: &Database) -> Result<Vec<(Key, usize, Option<ConflictEntry>)>> {
    let store = db.store()?;
    let def = db.table(CONFLICTS_TABLE)?;
    let mut out = Vec::new();
    for item in store.prefix(Space::Rows, &def.row_prefix(), false) {
        let (k, v) = item?;
        let (header, body_at) = decode_row(&v)?;
        if header.tombstone {
            continue;
        }
        let (key, _) = crate::local::codec::take_key(&k[def.row_prefix().len()..])?;
        let body = &v[body_at..];
        let entry = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|j| ConflictEntry::from_json(&j));
        out.push((key, body.len(), entry));
    }
    Ok(out)
}

/// Logs conflicts found by one commit: gives each its id and time and
/// writes them all in one local transaction, then applies the bounds.
pub(crate) fn append(db: &Database, mut entries: Vec<ConflictEntry>) -> Result<()> {
    if entries.is_empty() || db.shared.opts.conflict_log_max_bytes == 0 {
        return Ok(());
    }
    let state = &db.shared.conflicts;
    let _one = state.append.lock();
    let now = crate::local::hlc::wall_millis();
    let mut tx = db.transaction();
    for e in &mut entries {
        let n = state.next.fetch_add(1, Ordering::Relaxed);
        e.id = format!("{}:{n:0width$}", db.shared.node_name, width = ID_DIGITS);
        e.at_ms = now;
        tx.upsert(CONFLICTS_TABLE, e.to_json())?;
    }
    tx.commit()?;
    if bounds_due(db, now) {
        enforce_bounds(db)?;
    }
    Ok(())
}

/// Whether an append must pass over the whole log for its bounds. A pass
/// reads and parses every entry, so doing one per append made applies
/// quadratic in the log's size (the chaos test's links stopped moving with
/// a few thousand conflicts). The log's bytes are kept with every commit
/// (`table_stats`), so the byte bound needs a pass only once it is
/// exceeded, and a pass then evicts down to a low-water mark; the age
/// bound is looked at once per half its age, at most once a second.
fn bounds_due(db: &Database, now: u64) -> bool {
    let opts = &db.shared.opts;
    let over = db
        .table_stats(CONFLICTS_TABLE)
        .map(|s| s.bytes > opts.conflict_log_max_bytes)
        .unwrap_or(true);
    let max_age = u64::try_from(opts.conflict_log_max_age.as_millis()).unwrap_or(u64::MAX);
    let every = (max_age / 2).clamp(1, 1000);
    let checked = &db.shared.conflicts.bounds_checked_ms;
    over || now.saturating_sub(checked.load(Ordering::Relaxed)) >= every
}

/// Evicts the oldest entries until the log is within its byte bound and
/// none is older than its age bound; counts them in `conflicts_dropped`.
fn enforce_bounds(db: &Database) -> Result<()> {
    let opts = &db.shared.opts;
    db.shared
        .conflicts
        .bounds_checked_ms
        .store(crate::local::hlc::wall_millis(), Ordering::Relaxed);
    let def = db.table(CONFLICTS_TABLE)?;
    // Counted as the table's statistics count it (row key and JSON), so
    // that `bounds_due` and this pass agree on when the log is over.
    let mut rows: Vec<_> = entries_raw(db)?
        .into_iter()
        .map(|(key, len, entry)| {
            let rk = row_key(def.id, &key);
            let bytes = crate::local::table_stats::record_bytes(&rk, len);
            (key, bytes, entry)
        })
        .collect();
    #[cfg(test)]
    tests::VISITED.with(|v| v.set(v.get() + rows.len() as u64));
    // Oldest first; records that are not entries go first of all.
    rows.sort_by(|a, b| {
        let at = |r: &(Key, u64, Option<ConflictEntry>)| r.2.as_ref().map(|e| e.at_ms);
        at(a).cmp(&at(b)).then_with(|| a.0.cmp(&b.0))
    });
    let mut bytes: u64 = rows.iter().map(|r| r.1).sum();
    // Over the bound, evict to nine tenths of it, so that the next passes
    // are a tenth of the bound's appends away rather than the next one.
    let target = if bytes > opts.conflict_log_max_bytes {
        opts.conflict_log_max_bytes / 10 * 9
    } else {
        opts.conflict_log_max_bytes
    };
    let cutoff = crate::local::hlc::wall_millis()
        .saturating_sub(u64::try_from(opts.conflict_log_max_age.as_millis()).unwrap_or(u64::MAX));
    let mut evict = Vec::new();
    let mut gone = Vec::new();
    for (key, len, entry) in rows {
        let too_old = entry.as_ref().is_none_or(|e| e.at_ms < cutoff);
        if bytes <= target && !too_old {
            break;
        }
        bytes -= len;
        gone.push(len);
        evict.push(key);
    }
    if evict.is_empty() {
        return Ok(());
    }
    let store = db.shared.writable_store()?;
    let _w = db.shared.write.lock();
    let mut batch = Batch::default();
    let mut live = Vec::with_capacity(evict.len());
    for (key, bytes) in evict.iter().zip(gone) {
        live.push(bytes);
        batch.delete(Space::Rows, row_key(def.id, key));
    }
    let staged = crate::local::table_budget::stage_removed(db, &store, &mut batch, &def, &live)?;
    db.shared.commit(&store, batch, false, None)?;
    staged.apply(db);
    db.shared
        .dirty
        .store(true, std::sync::atomic::Ordering::Release);
    db.shared
        .conflicts
        .dropped
        .fetch_add(evict.len() as u64, Ordering::Relaxed);
    Ok(())
}

impl Database {
    /// The conflict log, oldest first. The same entries are the records of
    /// the system table `_conflicts` (readable with get/scan like any
    /// table; a flow can publish it).
    pub fn conflicts(&self) -> Result<Vec<ConflictEntry>> {
        let mut v: Vec<ConflictEntry> =
            entries_raw(self)?.into_iter().filter_map(|r| r.2).collect();
        v.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.id.cmp(&b.id)));
        Ok(v)
    }

    /// Entries dropped from the conflict log by its byte and age bounds
    /// since this handle opened.
    pub fn conflicts_dropped(&self) -> u64 {
        self.shared.conflicts.dropped.load(Ordering::Relaxed)
    }

    /// Installs the resolver for a table whose policy is `Resolver`
    /// (replaces any earlier one).
    pub fn set_conflict_resolver(&self, table: &str, resolver: ConflictResolver) -> Result<()> {
        let def = self.table(table)?;
        if def.conflict != ConflictPolicy::Resolver {
            return Err(Error::invalid(
                "conflict resolver",
                format!(
                    "table `{table}` has conflict policy \"{}\", so a resolver would never be called: create it with conflict \"resolver\"",
                    def.conflict.name()
                ),
            ));
        }
        self.shared
            .conflicts
            .resolvers
            .write()
            .insert(table.to_string(), resolver);
        Ok(())
    }

    /// Removes a table's resolver; returns whether one was set.
    pub fn clear_conflict_resolver(&self, table: &str) -> bool {
        self.shared
            .conflicts
            .resolvers
            .write()
            .remove(table)
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Instant;

    use super::*;
    use crate::local::codec::Stamp;
    use crate::local::conflict::ConflictSide;
    use crate::OpenOptions;

    thread_local! {
        /// Entries read by `enforce_bounds` on this thread (appends enforce
        /// on the caller's thread, and each test has its own).
        pub(super) static VISITED: Cell<u64> = const { Cell::new(0) };
    }

    fn entry(i: i64) -> ConflictEntry {
        ConflictEntry {
            id: String::new(),
            table: "t".into(),
            key: Key::Int(i),
            rule: ConflictPolicy::default(),
            lost: ConflictSide::Local,
            winner: Stamp::default(),
            winner_origin: "a".into(),
            loser: Stamp::default(),
            loser_origin: "b".into(),
            loser_values: Some(serde_json::json!({"v": "x".repeat(40)})),
            at_ms: 0,
        }
    }

    /// A return to one whole-log pass per append would read N²/2 entries
    /// over N appends; under the bounds only the age check's passes (at
    /// most one per second, each over at most N entries) may read any.
    #[test]
    fn appends_under_the_bounds_do_not_pass_over_the_whole_log_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
        VISITED.with(|v| v.set(0));
        let n: u64 = 600;
        let start = Instant::now();
        for i in 0..n {
            append(&db, vec![entry(i as i64)]).unwrap();
        }
        let passes_allowed = start.elapsed().as_secs() + 2;
        let visited = VISITED.with(Cell::get);
        assert_eq!(db.conflicts().unwrap().len() as u64, n);
        assert!(
            visited <= passes_allowed * n,
            "enforcement read {visited} entries over {n} appends (at most {passes_allowed} passes of {n} expected)"
        );
    }

    /// Over the byte bound, one pass evicts to nine tenths of it, so the
    /// appends that follow find the log under its bound again.
    #[test]
    fn a_pass_over_the_byte_bound_evicts_to_nine_tenths() {
        let dir = tempfile::tempdir().unwrap();
        let max = 8_000;
        let db = Database::open(
            dir.path(),
            OpenOptions::new("n1").conflict_log_max_bytes(max),
        )
        .unwrap();
        let mut i = 0;
        while db.conflicts_dropped() == 0 {
            append(&db, vec![entry(i)]).unwrap();
            i += 1;
            assert!(i < 10_000, "the log never went over its byte bound");
        }
        let bytes = db.table_stats(CONFLICTS_TABLE).unwrap().bytes;
        assert!(
            bytes <= max / 10 * 9,
            "{bytes} bytes left after eviction, bound {max}"
        );
        assert!(
            bytes > max / 2,
            "eviction took the log down to {bytes} of {max}"
        );
        let kept = db.conflicts().unwrap();
        assert_eq!(kept.len() as u64 + db.conflicts_dropped(), i as u64);
        // The oldest went: the newest entry is still there.
        assert_eq!(kept.last().map(|e| e.key.clone()), Some(Key::Int(i - 1)));
    }
}
