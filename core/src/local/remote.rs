//! Applying transactions that arrive from peers: the same atomic commit
//! path as local writes (see `write`), under the last-writer-wins rule, with
//! every incoming record checked before anything of its transaction is
//! staged.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::local::catalog::TableDef;
use crate::local::codec::Stamp;
use crate::local::db::Database;
use crate::local::keys::{cursor_key, row_key, seq_key};
use crate::local::log::{LogEntry, LogWrite, WriteOp};
use crate::local::storage::Space;
use crate::local::write::{commit_batch, has_repeats, queue_events, Ctx};

/// A transaction from another node, as replication hands it over.
#[derive(Debug, Clone)]
pub struct RemoteTxn {
    pub stamp: Stamp,
    pub writes: Vec<LogWrite>,
}

/// What became of one remote transaction.
#[derive(Debug)]
pub enum RemoteOutcome {
    /// `applied` writes won under last-writer-wins and entered the log at
    /// `seq` (0 if none did); `superseded` lost to a newer-or-equal stamp;
    /// `missing_table` named a table this node does not have.
    Applied {
        seq: u64,
        applied: usize,
        superseded: usize,
        missing_table: usize,
    },
    /// Refused (e.g. a stamp beyond `max_clock_skew`); nothing applied.
    Refused(Error),
}

impl Database {
    /// Applies transactions received from a peer, atomically as one storage
    /// commit together with `cursor` (a resume point stored under a name),
    /// under the last-writer-wins rule: a write applies iff its stamp is
    /// greater than the stored record's (or tombstone's) stamp; an equal
    /// stamp is the same write and is dropped. Applied writes enter the log
    /// with their original stamp and origin.
    pub fn apply_remote(
        &self,
        txns: &[RemoteTxn],
        cursor: Option<(&str, &[u8])>,
    ) -> Result<Vec<RemoteOutcome>> {
        self.apply_remote_owned(txns.to_vec(), cursor)
    }

    /// [`Database::apply_remote`] for a caller that hands the transactions
    /// over: their writes move into the log instead of being copied.
    pub(crate) fn apply_remote_owned(
        &self,
        txns: Vec<RemoteTxn>,
        cursor: Option<(&str, &[u8])>,
    ) -> Result<Vec<RemoteOutcome>> {
        let mut found = crate::local::settle::Found::default();
        let outcomes = self.apply_remote_locked(txns, cursor, &mut found)?;
        // Committed; what follows runs with no lock held (a resolver may
        // read the database) and cannot undo the apply, so it reports
        // rather than fails.
        crate::local::resolve::after_apply(self, found);
        Ok(outcomes)
    }

    fn apply_remote_locked(
        &self,
        txns: Vec<RemoteTxn>,
        cursor: Option<(&str, &[u8])>,
        found: &mut crate::local::settle::Found,
    ) -> Result<Vec<RemoteOutcome>> {
        let shared = &self.shared;
        let store = shared.writable_store()?;
        let mut w = shared.write.lock();
        let mut outcomes = Vec::with_capacity(txns.len());
        let total: usize = txns.iter().map(|t| t.writes.len()).sum();
        let repeats = total > 1
            && has_repeats(
                txns.iter()
                    .flat_map(|t| t.writes.iter().map(|w| (w.table.as_str(), &w.key))),
            );
        let mut ctx = Ctx::new(&store, repeats, w.next_seq);
        ctx.route(shared.feed.routed());
        let mut entries = Vec::new();
        let mut next_seq = w.next_seq;
        for t in txns {
            if let Err(e) = shared.hlc.check(t.stamp.time, t.stamp.node) {
                outcomes.push(RemoteOutcome::Refused(e));
                continue;
            }
            // Checked before anything of the transaction is staged, so a bad
            // write refuses its whole transaction and nothing else.
            let checked = match self.check_remote_writes(&t.writes) {
                Ok(c) => c,
                Err(e) => {
                    outcomes.push(RemoteOutcome::Refused(e));
                    continue;
                }
            };
            shared.hlc.observe(t.stamp.time);
            ctx.seq = next_seq;
            let (mut superseded, mut missing_table) = (0, 0);
            let mut applied = Vec::with_capacity(t.writes.len());
            let last = last_write_per_record(&t.writes);
            for (i, wr) in t.writes.into_iter().enumerate() {
                if !last[i] {
                    continue;
                }
                let Some(Checked { def, obj }) = &checked[i] else {
                    missing_table += 1;
                    continue;
                };
                let rk = row_key(def.id, &wr.key);
                let changed = crate::local::settle::remote_write(
                    self,
                    &mut ctx,
                    def,
                    rk,
                    &wr.key,
                    &wr.op,
                    t.stamp,
                    obj.as_ref(),
                    found,
                )?;
                if !changed {
                    superseded += 1;
                    continue;
                }
                applied.push(wr);
            }
            let applied_count = applied.len();
            let seq = if applied.is_empty() {
                0
            } else {
                let seq = next_seq;
                next_seq += 1;
                entries.push(LogEntry {
                    seq,
                    stamp: t.stamp,
                    local_time: shared.hlc.now(),
                    writes: applied,
                    prior: ctx.take_prior(),
                });
                seq
            };
            outcomes.push(RemoteOutcome::Applied {
                seq,
                applied: applied_count,
                superseded,
                missing_table,
            });
        }
        let repeated = ctx.repeated;
        let stateful = std::mem::take(&mut ctx.stateful);
        let mut batch = ctx.batch;
        let staged =
            crate::local::table_budget::stage(self, &store, &mut batch, &ctx.stats, false)?;
        if let Some((name, value)) = cursor {
            batch.put(Space::Meta, cursor_key(name), value.to_vec());
        }
        let mut sizes = Vec::with_capacity(entries.len());
        for e in &entries {
            let encoded = e.encode();
            sizes.push((e.seq, crate::local::log::entry_size(encoded.len())));
            batch.put(Space::Log, seq_key(e.seq).to_vec(), encoded);
        }
        if batch.is_empty() {
            return Ok(outcomes);
        }
        let seqs = entries
            .first()
            .zip(entries.last())
            .map(|(a, b)| (a.seq, b.seq));
        commit_batch(self, &store, batch, repeated, seqs)?;
        staged.apply(self);
        shared.conflicts.mark_stateful(&stateful);
        w.next_seq = next_seq;
        for (seq, bytes) in sizes {
            w.log_bytes += bytes;
            w.log_sizes.appended(seq, bytes);
        }
        for e in &entries {
            shared.feed.publish_entry(e);
        }
        if let Some(last) = entries.last() {
            shared.committed.send_replace(last.seq);
        }
        for e in entries {
            queue_events(self, e, false);
        }
        Ok(outcomes)
    }
}

impl Database {
    /// A peer's record must be what a local write would have stored: a JSON
    /// object within `max_record_bytes` whose primary-key attribute is the
    /// key it is filed under. Anything else would be stored verbatim and
    /// break later reads, updates and index maintenance of that record.
    /// Returns, by write position, the table each write goes to (`None`
    /// where this node has no such table), looked up once so that the
    /// write is applied against the same definition it was checked with.
    fn check_remote_writes(&self, writes: &[LogWrite]) -> Result<Vec<Option<Checked>>> {
        let limit = self.shared.opts.max_record_bytes;
        let mut checked = Vec::with_capacity(writes.len());
        for w in writes {
            let Ok(def) = self.table(&w.table) else {
                checked.push(None);
                continue; // counted as a missing table by the caller
            };
            if matches!(w.op.inner(), WriteOp::Delta { .. }) {
                return Err(crate::local::delta::unresolved());
            }
            if let WriteOp::Meta { op, .. } = &w.op {
                // One level: the metadata wraps the write itself.
                if matches!(**op, WriteOp::Meta { .. }) {
                    return Err(Error::Peer(format!(
                        "table `{}` key {}: a write's conflict metadata wraps another's; the peer is not speaking this protocol",
                        w.table, w.key
                    )));
                }
            }
            let WriteOp::Put { json, .. } = w.op.inner() else {
                checked.push(Some(Checked { def, obj: None }));
                continue;
            };
            if json.len() > limit {
                return Err(Error::RecordTooLarge {
                    size: json.len(),
                    limit,
                });
            }
            let (key, obj) = if def.indexes.is_empty() {
                let key = crate::local::record::object_key(&w.table, &def.primary_key, json)?;
                (key, None)
            } else {
                let obj = crate::local::record::parse_object(json)?;
                let key = crate::local::record::extract_key(&w.table, &def.primary_key, &obj)?;
                (key, Some(obj))
            };
            if key != w.key {
                return Err(Error::InvalidPrimaryKey {
                    table: w.table.clone(),
                    attribute: def.primary_key.clone(),
                    found: format!("{key}, but the write is for key {}", w.key),
                });
            }
            checked.push(Some(Checked { def, obj }));
        }
        Ok(checked)
    }
}

/// A remote write that passed the checks, with what applying it needs.
struct Checked {
    def: Arc<TableDef>,
    /// The parsed record, where index upkeep needs it (a put to a table
    /// with indexes).
    obj: Option<Map<String, Value>>,
}

/// A transaction's effect on a record is its last write to it; applying
/// only that keeps "equal stamp means the same write" true inside one
/// transaction too. Marks, by position, the writes that are the last to
/// their record.
fn last_write_per_record(writes: &[LogWrite]) -> Vec<bool> {
    if writes.len() < 2 {
        return vec![true; writes.len()];
    }
    let mut seen = std::collections::HashSet::with_capacity(writes.len());
    let mut last = vec![false; writes.len()];
    for (i, w) in writes.iter().enumerate().rev() {
        last[i] = seen.insert((w.table.as_str(), &w.key));
    }
    last
}

/// A peer's (node 77) transaction of one write to integer key `key`: a
/// put of `json`, or a delete when `None`; stamped 5 ms ahead of this
/// node's clock when `future`, else a minute behind it. Applied, for tests
/// of what applies and what loses.
#[cfg(test)]
pub(crate) fn apply_test_peer_write(
    db: &Database,
    table: &str,
    key: i64,
    json: Option<String>,
    future: bool,
) -> Result<()> {
    let op = match json {
        Some(json) => WriteOp::Put { json, created: 0 },
        None => WriteOp::Delete,
    };
    let now = crate::local::hlc::wall_millis();
    let ms = if future { now + 5 } else { now - 60_000 };
    let txn = RemoteTxn {
        stamp: Stamp {
            time: ms << 16,
            node: 77,
        },
        writes: vec![LogWrite {
            table: table.into(),
            key: crate::local::codec::Key::Int(key),
            op,
        }],
    };
    db.apply_remote(&[txn], None).map(|_| ())
}
