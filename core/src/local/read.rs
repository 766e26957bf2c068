//! Reads: point gets, key-range scans, index finds and counts; the
//! transaction log; table state for initial sync.

use std::collections::HashSet;
use std::ops::Bound;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::local::catalog::TableDef;
use crate::local::codec::{
    index_value_is_inexact, index_value_len, put_index_value, take_key, Key,
};
use crate::local::db::Database;
use crate::local::keys::{row_key, seq_from_key, seq_key};
use crate::local::log::LogEntry;
use crate::local::record::{cmp_scalar, Record};
use crate::local::storage::{prefix_successor, Space, Store};

/// A key range for [`Database::scan`].
#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub start: Bound<Key>,
    pub end: Bound<Key>,
    pub reverse: bool,
    pub limit: Option<usize>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            reverse: false,
            limit: None,
        }
    }
}

/// Where the log's entries start and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// Oldest sequence still in the log (`last + 1` when empty).
    pub first: u64,
    /// Newest committed sequence (0 before the first commit).
    pub last: u64,
    /// Bytes the log's entries take (keys and values, before compression).
    pub bytes: u64,
}

/// What the log still holds after a position (see
/// [`Database::log_backlog`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogBacklog {
    pub(crate) txns: u64,
    pub(crate) bytes: u64,
    /// Local commit time (HLC) of the first of them.
    pub(crate) oldest_local_time: Option<u64>,
}

impl Database {
    pub fn get(&self, table: &str, key: impl Into<Key>) -> Result<Option<Record>> {
        let store = self.store()?;
        let def = self.table(table)?;
        let key = key.into();
        read_record(&store, &def, key)
    }

    pub fn get_many(&self, table: &str, keys: &[Key]) -> Result<Vec<Option<Record>>> {
        let store = self.store()?;
        let def = self.table(table)?;
        keys.iter()
            .map(|k| read_record(&store, &def, k.clone()))
            .collect()
    }

    /// Records in primary-key order within a key range.
    pub fn scan(&self, table: &str, opts: &ScanOptions) -> Result<Vec<Record>> {
        let store = self.store()?;
        let def = self.table(table)?;
        let prefix = def.row_prefix();
        let bound = |b: &Bound<Key>, upper: bool| -> Bound<Vec<u8>> {
            match b {
                Bound::Included(k) => Bound::Included(row_key(def.id, k)),
                Bound::Excluded(k) => Bound::Excluded(row_key(def.id, k)),
                Bound::Unbounded if upper => match prefix_successor(&prefix) {
                    Some(p) => Bound::Excluded(p),
                    None => Bound::Unbounded,
                },
                Bound::Unbounded => Bound::Included(prefix.to_vec()),
            }
        };
        let limit = opts.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let iter = store.range(
            Space::Rows,
            bound(&opts.start, false),
            bound(&opts.end, true),
            opts.reverse,
        );
        for item in iter {
            let (k, v) = item?;
            let (key, _) = take_key(&k[prefix.len()..])?;
            if let Some(r) = Record::from_row(key, v)? {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Records whose indexed `attribute` lies within `[lower, upper]` (by the
    /// given bounds), in index order. A record whose attribute is an array
    /// matches if any element does. Finding by the primary key uses it.
    pub fn find(
        &self,
        table: &str,
        attribute: &str,
        lower: Bound<&Value>,
        upper: Bound<&Value>,
        limit: Option<usize>,
    ) -> Result<Vec<Record>> {
        let store = self.store()?;
        let def = self.table(table)?;
        if attribute == def.primary_key {
            let to_key = |b: Bound<&Value>| -> Result<Bound<Key>> {
                Ok(match b {
                    Bound::Included(v) => Bound::Included(scalar_key(&def, v)?),
                    Bound::Excluded(v) => Bound::Excluded(scalar_key(&def, v)?),
                    Bound::Unbounded => Bound::Unbounded,
                })
            };
            drop(store);
            return self.scan(
                table,
                &ScanOptions {
                    start: to_key(lower)?,
                    end: to_key(upper)?,
                    reverse: false,
                    limit,
                },
            );
        }
        let slot = def.index_slot(attribute).ok_or_else(|| {
            Error::invalid(
                "attribute",
                format!(
                    "`{attribute}` is not indexed in table `{}`; indexed: {:?} (and the primary key `{}`)",
                    def.name, def.indexes, def.primary_key
                ),
            )
        })?;
        let prefix = def.index_prefix(slot);
        let encode = |v: &Value| -> Result<Vec<u8>> {
            let mut k = prefix.to_vec();
            if !put_index_value(&mut k, v) {
                return Err(Error::invalid(
                    "find bound",
                    "must be a JSON scalar (null, boolean, number or string)",
                ));
            }
            Ok(k)
        };
        let successor = |k: Vec<u8>| match prefix_successor(&k) {
            Some(p) => Bound::Excluded(p),
            None => Bound::Unbounded,
        };
        // An excluded bound at or beyond 2^53 shares its slot with other
        // integers, so it is scanned inclusively and the records decide.
        let inexact = |k: &[u8]| index_value_is_inexact(&k[prefix.len()..]);
        let lo = match lower {
            Bound::Included(v) => Bound::Included(encode(v)?),
            Bound::Excluded(v) => {
                let k = encode(v)?;
                if inexact(&k) {
                    Bound::Included(k)
                } else {
                    successor(k)
                }
            }
            Bound::Unbounded => Bound::Included(prefix.to_vec()),
        };
        let hi = match upper {
            Bound::Included(v) => successor(encode(v)?),
            Bound::Excluded(v) => {
                let k = encode(v)?;
                if inexact(&k) {
                    successor(k)
                } else {
                    Bound::Excluded(k)
                }
            }
            Bound::Unbounded => successor(prefix.to_vec()),
        };
        let limit = limit.unwrap_or(usize::MAX);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for item in store.range(Space::Index, lo, hi, false) {
            if out.len() >= limit {
                break;
            }
            let (k, carried) = item?;
            let rest = &k[prefix.len()..];
            let vlen = index_value_len(rest)?;
            let (key, _) = take_key(&rest[vlen..])?;
            if seen.contains(&key) {
                continue;
            }
            let inexact = index_value_is_inexact(&rest[..vlen]);
            // An entry that carries its record's row (see `CarriesRow`) was
            // written in the same batch as the row, so it is the row.
            let rec = if carried.is_empty() {
                read_record(&store, &def, key.clone())?
            } else {
                Record::from_row(key.clone(), carried)?
            };
            let Some(rec) = rec else {
                continue;
            };
            // Numbers beyond 2^53 may share an index slot with neighbours,
            // so for those the record itself decides.
            if !inexact || matches_bounds(rec.to_value().get(attribute), lower, upper) {
                seen.insert(key);
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Records whose indexed `attribute` equals `value`.
    pub fn find_eq(&self, table: &str, attribute: &str, value: &Value) -> Result<Vec<Record>> {
        self.find(
            table,
            attribute,
            Bound::Included(value),
            Bound::Included(value),
            None,
        )
    }

    // ---- log ----------------------------------------------------------

    pub fn log_bounds(&self) -> Result<LogBounds> {
        let _store = self.store()?;
        let w = self.shared.write.lock();
        Ok(LogBounds {
            first: w.first_seq,
            last: w.next_seq - 1,
            bytes: w.log_bytes,
        })
    }

    /// Log entries with sequence numbers from `from_seq` on, oldest first.
    pub fn read_log(&self, from_seq: u64, limit: usize) -> Result<Vec<LogEntry>> {
        self.read_log_bounded(from_seq, limit, usize::MAX)
    }

    /// [`Database::read_log`] that also stops once the entries read reach
    /// `max_bytes` (encoded), always returning at least one entry if there
    /// is one: a count alone would let a backlog of large transactions fill
    /// memory.
    pub(crate) fn read_log_bounded(
        &self,
        from_seq: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>> {
        let store = self.store()?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let iter = store.range(
            Space::Log,
            Bound::Included(seq_key(from_seq).to_vec()),
            Bound::Unbounded,
            false,
        );
        for item in iter.take(limit) {
            if bytes >= max_bytes && !out.is_empty() {
                break;
            }
            let (k, v) = item?;
            bytes += v.len();
            let mut e = LogEntry::decode(&v)?;
            e.seq = seq_from_key(&k)?;
            out.push(e);
        }
        Ok(out)
    }

    /// What the log still holds from `from_seq` on: entries, bytes (as the
    /// byte cap counts them) and the local commit time of the first. Exact,
    /// reading at most [`crate::local::log::MARK_EVERY`] entries whatever the
    /// log's length (see [`crate::local::log::LogSizes`]).
    pub(crate) fn log_backlog(&self, from_seq: u64) -> Result<LogBacklog> {
        let store = self.store()?;
        let mut backlog = LogBacklog::default();
        // Trimming removes entries from the front without the commit lock
        // held throughout: a count it overtook is taken again.
        for _ in 0..3 {
            let (from, last, mark) = {
                let w = self.shared.write.lock();
                let from = from_seq.max(w.first_seq);
                (from, w.next_seq - 1, w.log_sizes.after_mark(from - 1))
            };
            if from > last {
                return Ok(LogBacklog::default());
            }
            // Entries past the mark are in the running total; only those
            // between `from` and the mark are read.
            let (scan_to, after) = match mark {
                Some((s, after)) if s <= last => (s, after),
                _ => (last, 0),
            };
            backlog = LogBacklog {
                txns: last - from + 1,
                bytes: after,
                oldest_local_time: None,
            };
            let mut read = 0;
            let iter = (scan_to >= from).then(|| {
                store.range(
                    Space::Log,
                    Bound::Included(seq_key(from).to_vec()),
                    Bound::Included(seq_key(scan_to).to_vec()),
                    false,
                )
            });
            for item in iter.into_iter().flatten() {
                let (k, v) = item?;
                if read == 0 {
                    backlog.oldest_local_time = Some(LogEntry::decode_local_time(&v)?);
                }
                backlog.bytes += (k.len() + v.len()) as u64;
                read += 1;
            }
            if backlog.oldest_local_time.is_none() {
                backlog.oldest_local_time = match store.get(Space::Log, &seq_key(from))? {
                    Some(v) => Some(LogEntry::decode_local_time(&v)?),
                    None => continue,
                };
            }
            if read == (scan_to + 1).saturating_sub(from) {
                return Ok(backlog);
            }
        }
        Ok(backlog)
    }

    /// The first sequence number committed at or after `millis` (local time).
    pub fn log_seq_at_time(&self, millis: u64) -> Result<u64> {
        let store = self.store()?;
        let (mut lo, mut hi) = {
            let w = self.shared.write.lock();
            (w.first_seq, w.next_seq)
        };
        let target = crate::local::hlc::millis_to_hlc(millis);
        // Sequences are dense and local_time grows with them: binary search
        // with point reads instead of scanning.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let t = match store.get(Space::Log, &seq_key(mid))? {
                Some(v) => LogEntry::decode(&v)?.local_time,
                None => 0, // truncated meanwhile: treat as older than anything
            };
            if t < target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Log entries committed at or after `millis` (ms since the epoch).
    pub fn read_log_since(&self, millis: u64, limit: usize) -> Result<Vec<LogEntry>> {
        let seq = self.log_seq_at_time(millis)?;
        self.read_log(seq, limit)
    }

    // ---- table state, for initial sync ---------------------------------

    /// A slice of a table's state, tombstones included, in key order after
    /// `after` (exclusive), for initial sync and resync. Rows last written
    /// before `since_ms` are skipped. Returns the rows and the last key
    /// looked at (to continue from), `None` at the end of the table. Stops
    /// early once the rows reach `max_bytes`.
    pub(crate) fn state_chunk(
        &self,
        table: &str,
        after: Option<&Key>,
        limit: usize,
        max_bytes: usize,
        since_ms: Option<u64>,
    ) -> Result<(Vec<StateRow>, Option<Key>)> {
        let store = self.store()?;
        let def = self.table(table)?;
        let prefix = def.row_prefix();
        let lo = match after {
            Some(k) => Bound::Excluded(row_key(def.id, k)),
            None => Bound::Included(prefix.to_vec()),
        };
        let hi = match prefix_successor(&prefix) {
            Some(p) => Bound::Excluded(p),
            None => Bound::Unbounded,
        };
        let mut rows = Vec::new();
        let mut last = None;
        let mut looked_at = 0;
        let mut bytes = 0;
        let mut full = false;
        for item in store.range(Space::Rows, lo, hi, false).take(limit) {
            if bytes >= max_bytes {
                full = true;
                break;
            }
            looked_at += 1;
            let (k, v) = item?;
            bytes += v.len() + k.len();
            let (key, _) = take_key(&k[prefix.len()..])?;
            last = Some(key.clone());
            let (h, body_at) = crate::local::row::decode_row(&v)?;
            if since_ms.is_some_and(|s| h.stamp.millis() < s) {
                continue;
            }
            let json = if h.tombstone {
                None
            } else {
                Some(crate::local::row::row_json(&v, body_at)?.to_string())
            };
            // Read for every row, not only in tables marked stateful: the
            // mark follows a commit, and a row merged just before it must
            // not go out as a plain row (its text is merged, not a base).
            let side = store.get(Space::Meta, &crate::local::side::side_key(&k))?;
            let merge = match side
                .map(|v| crate::local::side::Side::decode(&v))
                .transpose()?
            {
                Some(crate::local::side::Side {
                    state: Some(state), ..
                }) => Some(serde_json::to_string(&state).unwrap_or_default()),
                _ => None,
            };
            rows.push(StateRow {
                key,
                stamp: h.stamp,
                created: h.created,
                json,
                merge,
            });
        }
        let more = full || looked_at == limit;
        Ok((rows, if more { last } else { None }))
    }
}

/// One row of a table's state, as initial sync sends it.
#[derive(Debug, Clone)]
pub(crate) struct StateRow {
    pub(crate) key: Key,
    pub(crate) stamp: crate::local::codec::Stamp,
    pub(crate) created: u64,
    pub(crate) json: Option<String>,
    /// The record's merge state (JSON), where it has one.
    pub(crate) merge: Option<String>,
}

fn read_record(store: &Store, def: &TableDef, key: Key) -> Result<Option<Record>> {
    match store.get(Space::Rows, &row_key(def.id, &key))? {
        Some(row) => Record::from_row(key, row),
        None => Ok(None),
    }
}

fn scalar_key(def: &TableDef, v: &Value) -> Result<Key> {
    Key::from_json(v).ok_or_else(|| {
        Error::invalid(
            "find bound",
            format!(
                "primary key `{}` values are strings or integers",
                def.primary_key
            ),
        )
    })
}

fn matches_bounds(v: Option<&Value>, lower: Bound<&Value>, upper: Bound<&Value>) -> bool {
    let Some(v) = v else { return false };
    let one = |x: &Value| {
        let lo_ok = match lower {
            Bound::Included(b) => matches!(cmp_scalar(x, b), Some(o) if o.is_ge()),
            Bound::Excluded(b) => matches!(cmp_scalar(x, b), Some(o) if o.is_gt()),
            Bound::Unbounded => cmp_scalar(x, x).is_some(),
        };
        let hi_ok = match upper {
            Bound::Included(b) => matches!(cmp_scalar(x, b), Some(o) if o.is_le()),
            Bound::Excluded(b) => matches!(cmp_scalar(x, b), Some(o) if o.is_lt()),
            Bound::Unbounded => true,
        };
        lo_ok && hi_ok
    };
    match v {
        Value::Array(items) => items.iter().any(one),
        other => one(other),
    }
}

#[cfg(test)]
mod tests {
    use crate::{Database, OpenOptions, TableOptions};
    use serde_json::json;

    #[test]
    fn bounded_log_reads_stop_at_the_byte_budget_but_return_at_least_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
        db.create_table("t", TableOptions::default()).unwrap();
        for i in 0..10 {
            db.upsert("t", json!({"id": i, "pad": "x".repeat(200)}))
                .unwrap();
        }
        let first = db.log_bounds().unwrap().first;
        let all = db.read_log(first, usize::MAX).unwrap();
        assert!(all.len() >= 10);
        let one = db.read_log_bounded(first, usize::MAX, 0).unwrap();
        assert_eq!(one, all[..1]);
        // Each entry is over 200 bytes: a 450-byte budget is reached after
        // the third entry at the latest, and never before the second.
        let some = db.read_log_bounded(first, usize::MAX, 450).unwrap();
        assert!((2..=3).contains(&some.len()), "{}", some.len());
        assert_eq!(some, all[..some.len()]);
        assert_eq!(db.read_log_bounded(first, 4, usize::MAX).unwrap(), all[..4]);
    }
}
