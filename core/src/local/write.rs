//! The write path. Every write is a transaction: it takes one HLC stamp,
//! and its records, index entries and log entry go to storage in one atomic
//! batch, under the commit lock. Remote transactions (`remote`) build their
//! batch with the same `Ctx` and commit it the same way.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::local::catalog::TableDef;
use crate::local::codec::{Key, Stamp};
use crate::local::conflict::ConflictPolicy;
use crate::local::db::{Database, Durability, WriteState};
use crate::local::keys::{expiry_key, row_key, seq_key, tombstone_key};
use crate::local::listener::{Change, ChangeEvent};
use crate::local::log::{LogEntry, LogWrite, MetaKind, WriteOp};
use crate::local::merge::MergeState;
use crate::local::record::{extract_key, strip_computed, Record};
use crate::local::row::{decode_row, encode_row, row_json, RowHeader};
use crate::local::side::{side_key, Side};
use crate::local::storage::{Batch, Space, Store};

/// What a committed transaction was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// Local log sequence number (0 if the transaction wrote nothing).
    pub seq: u64,
    pub stamp: Stamp,
}

/// `obj` holds at least the record's indexed attributes, the part index
/// entries are made from; `json` is what is stored, serialized (or read
/// from the caller's text) at staging, so size errors surface before
/// commit.
#[derive(Debug, Clone)]
enum Op {
    Insert {
        obj: Map<String, Value>,
        json: String,
    },
    Upsert {
        obj: Map<String, Value>,
        json: String,
    },
    Update(Map<String, Value>),
    Delete,
    /// Adds `by` to integer attribute `attr` (see `Database::increment`).
    Increment {
        attr: String,
        by: i64,
    },
}

#[derive(Debug, Clone)]
struct Pending {
    table: String,
    key: Key,
    op: Op,
}

/// A group of writes to one or more tables that commit atomically with one
/// stamp, or not at all. Nothing is visible until [`Transaction::commit`];
/// dropping it without committing discards it. Reads inside a transaction
/// see the committed state, not the transaction's own pending writes.
#[derive(Debug)]
pub struct Transaction {
    db: Database,
    writes: Vec<Pending>,
    /// What its whole writes are marked as: `Resolution` for what
    /// `keep_local` and resolvers commit.
    pub(crate) kind: MetaKind,
}

impl Database {
    pub fn transaction(&self) -> Transaction {
        Transaction {
            db: self.clone(),
            writes: Vec::new(),
            kind: MetaKind::Whole,
        }
    }

    /// Inserts a new record; fails with `DuplicateKey` if the key exists.
    pub fn insert(&self, table: &str, record: Value) -> Result<CommitInfo> {
        let mut tx = self.transaction();
        tx.insert(table, record)?;
        tx.commit()
    }

    /// Inserts or replaces a record.
    pub fn upsert(&self, table: &str, record: Value) -> Result<CommitInfo> {
        let mut tx = self.transaction();
        tx.upsert(table, record)?;
        tx.commit()
    }

    /// [`Database::insert`] of a record given as JSON text (one object).
    /// See [`Transaction::upsert_json`] for how it is stored.
    pub fn insert_json(&self, table: &str, json: &str) -> Result<CommitInfo> {
        let mut tx = self.transaction();
        tx.insert_json(table, json)?;
        tx.commit()
    }

    /// [`Database::upsert`] of a record given as JSON text (one object).
    /// See [`Transaction::upsert_json`] for how it is stored.
    pub fn upsert_json(&self, table: &str, json: &str) -> Result<CommitInfo> {
        let mut tx = self.transaction();
        tx.upsert_json(table, json)?;
        tx.commit()
    }

    /// Merges the given attributes into an existing record; fails with
    /// `RecordNotFound` if there is none.
    pub fn update(&self, table: &str, patch: Value) -> Result<CommitInfo> {
        let mut tx = self.transaction();
        tx.update(table, patch)?;
        tx.commit()
    }

    /// Adds `by` to integer attribute `attr` of record `key` (creating the
    /// record `{key, attr: by}` if absent). A missing attribute counts as
    /// 0; a non-integer one is [`Error::NotACounter`], and a sum beyond
    /// i64 is [`Error::CounterOverflow`]; either way nothing is written.
    pub fn increment(
        &self,
        table: &str,
        key: impl Into<Key>,
        attr: &str,
        by: i64,
    ) -> Result<CommitInfo> {
        let mut tx = self.transaction();
        tx.increment(table, key, attr, by)?;
        tx.commit()
    }

    /// Deletes a record (leaving a tombstone that replicates); returns
    /// whether a live record was there.
    pub fn delete(&self, table: &str, key: impl Into<Key>) -> Result<bool> {
        let mut tx = self.transaction();
        tx.delete(table, key)?;
        let existed = tx.commit_inner()?.1;
        Ok(existed > 0)
    }
}

impl Transaction {
    fn stage(&mut self, table: &str, record: Value, kind: u8) -> Result<()> {
        let def = self.db.table(table)?;
        let mut obj = match record {
            Value::Object(m) => m,
            other => {
                return Err(Error::NotAnObject(
                    crate::local::record::json_type(&other).into(),
                ))
            }
        };
        strip_computed(&mut obj);
        let key = extract_key(table, &def.primary_key, &obj)?;
        let op = match kind {
            STAGE_UPDATE => Op::Update(obj),
            _ => {
                let json = to_json(&obj, self.db.shared.opts.max_record_bytes)?;
                if kind == STAGE_INSERT {
                    Op::Insert { obj, json }
                } else {
                    Op::Upsert { obj, json }
                }
            }
        };
        self.writes.push(Pending {
            table: table.to_string(),
            key,
            op,
        });
        Ok(())
    }

    /// Stages a record given as JSON text; see [`Transaction::upsert_json`].
    fn stage_json(&mut self, table: &str, json: &str, kind: u8) -> Result<()> {
        let def = self.db.table(table)?;
        let Some(record) = crate::local::record_text::read(&def, json) else {
            // What one pass cannot decide, or a parse refuses: staged (or
            // refused) exactly as the parsed object would be.
            let obj = crate::local::record::parse_object(json)?;
            return self.stage(table, Value::Object(obj), kind);
        };
        check_size(&record.json, self.db.shared.opts.max_record_bytes)?;
        let (obj, json) = (record.indexed, record.json);
        let op = if kind == STAGE_INSERT {
            Op::Insert { obj, json }
        } else {
            Op::Upsert { obj, json }
        };
        self.writes.push(Pending {
            table: table.to_string(),
            key: record.key,
            op,
        });
        Ok(())
    }

    pub fn insert(&mut self, table: &str, record: Value) -> Result<&mut Self> {
        self.stage(table, record, STAGE_INSERT)?;
        Ok(self)
    }

    /// [`Transaction::insert`] of a record given as JSON text; see
    /// [`Transaction::upsert_json`].
    pub fn insert_json(&mut self, table: &str, json: &str) -> Result<&mut Self> {
        self.stage_json(table, json, STAGE_INSERT)?;
        Ok(self)
    }

    /// [`Transaction::upsert`] of a record given as JSON text (one
    /// object), the way for a caller that already has the text: it is
    /// read once, without building the object and serializing it again.
    /// The same errors, and the same record to every JSON reader, but the
    /// stored text keeps the caller's attribute order and the spelling of
    /// each value (`1e2` stays `1e2`; whitespace between attributes goes,
    /// inside a nested value it stays), where [`Transaction::upsert`]
    /// stores attributes sorted, as `serde_json` writes them.
    pub fn upsert_json(&mut self, table: &str, json: &str) -> Result<&mut Self> {
        self.stage_json(table, json, STAGE_UPSERT)?;
        Ok(self)
    }

    pub fn upsert(&mut self, table: &str, record: Value) -> Result<&mut Self> {
        self.stage(table, record, STAGE_UPSERT)?;
        Ok(self)
    }

    pub fn update(&mut self, table: &str, patch: Value) -> Result<&mut Self> {
        self.stage(table, patch, STAGE_UPDATE)?;
        Ok(self)
    }

    /// Adds `by` to integer attribute `attr` of record `key`, creating the
    /// record `{<primary key>: key, attr: by}` if there is none (see
    /// [`Database::increment`]).
    pub fn increment(
        &mut self,
        table: &str,
        key: impl Into<Key>,
        attr: &str,
        by: i64,
    ) -> Result<&mut Self> {
        let def = self.db.table(table)?;
        if attr.is_empty() || attr.starts_with("__") || attr == def.primary_key {
            return Err(Error::invalid(
                "counter attribute",
                format!("`{attr}` must be a non-empty attribute other than the primary key `{}` and not start with \"__\"", def.primary_key),
            ));
        }
        self.writes.push(Pending {
            table: table.to_string(),
            key: key.into(),
            op: Op::Increment {
                attr: attr.to_string(),
                by,
            },
        });
        Ok(self)
    }

    pub fn delete(&mut self, table: &str, key: impl Into<Key>) -> Result<&mut Self> {
        self.db.table(table)?;
        self.writes.push(Pending {
            table: table.to_string(),
            key: key.into(),
            op: Op::Delete,
        });
        Ok(self)
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Commits every staged write atomically with one stamp.
    pub fn commit(self) -> Result<CommitInfo> {
        Ok(self.commit_inner()?.0)
    }

    /// Commits; also returns how many deletes found a live record.
    fn commit_inner(self) -> Result<(CommitInfo, usize)> {
        let db = self.db;
        let shared = &db.shared;
        let store = shared.writable_store()?;
        if self.writes.is_empty() {
            return Ok((
                CommitInfo {
                    seq: 0,
                    stamp: Stamp::default(),
                },
                0,
            ));
        }
        let mut w = shared.write.lock();
        let mut stamp = Stamp {
            time: shared.hlc.now(),
            node: shared.node_id,
        };
        let max_bytes = shared.opts.max_record_bytes;
        loop {
            let repeats = self.writes.len() > 1
                && has_repeats(self.writes.iter().map(|p| (p.table.as_str(), &p.key)));
            let mut ctx = Ctx::new(&store, repeats, w.next_seq);
            ctx.route(shared.feed.routed());
            let mut log_writes = Vec::with_capacity(self.writes.len());
            let mut existed = 0;
            let mut restamp = None;
            for p in &self.writes {
                let def = db.table(&p.table)?;
                let rk = row_key(def.id, &p.key);
                let old = ctx.current(&rk)?;
                if let Some(o) = &old {
                    // Equal is this commit's own earlier write to the record.
                    if o.header.stamp > stamp {
                        // A stored stamp from the future (restored backup,
                        // clock jump): move past it and stamp again.
                        restamp = Some(o.header.stamp.time);
                        break;
                    }
                }
                let policy = def.conflict;
                let track = shared.opts.conflict_log_max_bytes > 0;
                let stateful = shared.conflicts.is_stateful(def.id);
                let wants_merge = matches!(p.op, Op::Increment { .. })
                    || (matches!(p.op, Op::Update(_)) && policy == ConflictPolicy::MergeAttributes);
                // Only a table with merge states can have one for this record
                // (the mark is set under this same lock); the base is in the
                // row already read, so otherwise the write reads nothing more.
                let side = ctx.side(&rk, old.as_ref(), stateful || wants_merge)?;
                // The version this write replaces at this node: what a
                // receiver compares its own current version with. An
                // earlier write of this same commit passes its own on.
                let base = match (&old, &side) {
                    (Some(o), Some(sd)) if o.header.stamp == stamp => sd.base,
                    (Some(o), _) => o.header.stamp,
                    (None, _) => Stamp::default(),
                };
                if wants_merge || side.as_ref().is_some_and(|sd| sd.state.is_some()) {
                    let (vb, state) =
                        side.map_or((Stamp::default(), None), |sd| (sd.base, sd.state));
                    let (op, gone) = merge_local(
                        &mut ctx,
                        &def,
                        rk,
                        p,
                        old,
                        state,
                        stamp,
                        (base, vb),
                        max_bytes,
                        &log_writes,
                    )?;
                    existed += gone;
                    log_writes.push(LogWrite {
                        table: p.table.clone(),
                        key: p.key.clone(),
                        op,
                    });
                    continue;
                }
                let live_old = old.as_ref().filter(|o| !o.header.tombstone);
                let created = live_old.map(|o| o.header.created).unwrap_or(stamp.time);
                let merged;
                let (op, new_obj) = match &p.op {
                    Op::Insert { obj, json } => {
                        if live_old.is_some() {
                            return Err(Error::DuplicateKey {
                                table: p.table.clone(),
                                key: p.key.to_string(),
                            });
                        }
                        (
                            WriteOp::Put {
                                json: json.clone(),
                                created,
                            },
                            Some(obj),
                        )
                    }
                    Op::Upsert { obj, json } => (
                        WriteOp::Put {
                            json: json.clone(),
                            created,
                        },
                        Some(obj),
                    ),
                    Op::Update(patch) => {
                        let Some(o) = live_old else {
                            return Err(Error::RecordNotFound {
                                table: p.table.clone(),
                                key: p.key.to_string(),
                            });
                        };
                        let mut m = o.object()?;
                        for (k, v) in patch {
                            m.insert(k.clone(), v.clone());
                        }
                        merged = m;
                        let json = to_json(&merged, max_bytes)?;
                        (WriteOp::Put { json, created }, Some(&merged))
                    }
                    Op::Delete => {
                        existed += usize::from(live_old.is_some());
                        (WriteOp::Delete, None)
                    }
                    // Counted through the merge state above.
                    Op::Increment { .. } => return Err(crate::local::delta::unresolved()),
                };
                // Receivers settle with the base even where this node keeps
                // no conflict log; a resolution must say it is one.
                let meta = track
                    || matches!(policy, ConflictPolicy::KeepLocal | ConflictPolicy::Resolver)
                    || self.kind != MetaKind::Whole;
                let (op, row_base) = if meta {
                    ctx.put_side(&rk, Some(Side { base, state: None }));
                    let op = WriteOp::Meta {
                        op: Box::new(op),
                        base,
                        kind: self.kind.clone(),
                    };
                    (op, Some(base))
                } else {
                    (op, None)
                };
                ctx.write(&def, rk, &p.key, old, stamp, &op, new_obj, row_base)?;
                log_writes.push(LogWrite {
                    table: p.table.clone(),
                    key: p.key.clone(),
                    op,
                });
            }
            if let Some(t) = restamp {
                shared.hlc.observe(t);
                stamp.time = shared.hlc.now();
                continue;
            }
            let entry = LogEntry {
                seq: w.next_seq,
                stamp,
                local_time: stamp.time,
                writes: log_writes,
                prior: ctx.take_prior(),
            };
            let repeated = ctx.repeated;
            let stateful = std::mem::take(&mut ctx.stateful);
            let seq = finish(
                &db, &store, &mut w, ctx.batch, &ctx.stats, repeated, entry, true,
            )?;
            shared.conflicts.mark_stateful(&stateful);
            return Ok((CommitInfo { seq, stamp }, existed));
        }
    }
}

/// A local write to a record that has, or gains, a merge state (a merge
/// patch, an increment, or any write to a record with overrides or
/// counters): merged into the state, the row set to the visible record,
/// the state kept beside it. Returns the log write and whether a delete
/// found a live record.
#[allow(clippy::too_many_arguments)]
fn merge_local(
    ctx: &mut Ctx<'_>,
    def: &TableDef,
    rk: Vec<u8>,
    p: &Pending,
    old: Option<OldRow>,
    state: Option<MergeState>,
    stamp: Stamp,
    (base, vb): (Stamp, Stamp),
    max_bytes: usize,
    earlier: &[LogWrite],
) -> Result<(WriteOp, usize)> {
    use crate::local::merge::MergeOp;
    use crate::local::settle_local::{local_increment, state_from_row, LocalMerge};
    let mut state = match state {
        Some(s) => s,
        None => state_from_row(old.as_ref())?,
    };
    // Receivers compare the base with the record's version, which counts
    // do not move (an increment is never a conflict); an earlier write of
    // this commit passes its own base on.
    let v = state.version();
    let base = if old.as_ref().is_some_and(|o| o.header.stamp == stamp) {
        base
    } else {
        v
    };
    let live = state.visible();
    let mut gone = 0;
    let not_found = || Error::RecordNotFound {
        table: p.table.clone(),
        key: p.key.to_string(),
    };
    let created = live
        .as_ref()
        .map(|_| state.created)
        .filter(|c| *c != 0)
        .unwrap_or(stamp.time);
    let lm = match &p.op {
        Op::Insert { json, .. } | Op::Upsert { json, .. } => {
            if matches!(p.op, Op::Insert { .. }) && live.is_some() {
                return Err(Error::DuplicateKey {
                    table: p.table.clone(),
                    key: p.key.to_string(),
                });
            }
            LocalMerge {
                ops: vec![MergeOp::Upsert {
                    stamp,
                    record: json.clone(),
                    created,
                }],
                kind: MetaKind::Whole,
                logged: Some(json.clone()),
            }
        }
        Op::Update(patch) if def.conflict == ConflictPolicy::MergeAttributes => {
            live.as_ref().ok_or_else(not_found)?;
            // The key names the record; it is no attribute to merge.
            let mut patch = patch.clone();
            patch.remove(&def.primary_key);
            let mut attrs = patch.clone();
            // An earlier patch of the record in this same commit: the
            // receiver applies only a commit's last write to a record, so
            // this one carries both.
            if let Some(i) = earlier
                .iter()
                .rposition(|w| w.table == p.table && w.key == p.key)
            {
                if let WriteOp::Meta {
                    kind: MetaKind::Patch { attrs: prev },
                    ..
                } = &earlier[i].op
                {
                    let mut both = crate::local::record::parse_object(prev)?;
                    both.extend(attrs);
                    attrs = both;
                }
            }
            LocalMerge {
                ops: vec![MergeOp::Patch {
                    stamp,
                    attrs: patch.clone(),
                }],
                kind: MetaKind::Patch {
                    attrs: to_json(&attrs, max_bytes)?,
                },
                logged: None,
            }
        }
        Op::Update(patch) => {
            // Last writer wins the whole record: the patch makes a whole
            // write of what it changes (counters keep their contributions).
            let mut m = state.plain().ok_or_else(not_found)?;
            m.extend(patch.clone());
            let json = to_json(&m, max_bytes)?;
            LocalMerge {
                ops: vec![MergeOp::Upsert {
                    stamp,
                    record: json.clone(),
                    created,
                }],
                kind: MetaKind::Whole,
                logged: Some(json),
            }
        }
        Op::Delete => {
            gone = usize::from(live.is_some());
            LocalMerge {
                ops: vec![MergeOp::Delete { stamp }],
                kind: MetaKind::Whole,
                logged: None,
            }
        }
        Op::Increment { attr, by } => local_increment(&state, def, &p.key, attr, *by, stamp)?,
    };
    for op in &lm.ops {
        state.apply(op);
    }
    let visible = state.visible();
    let row_op = match &visible {
        Some(m) => WriteOp::Put {
            json: to_json(m, max_bytes)?,
            created: if state.created == 0 {
                stamp.time
            } else {
                state.created
            },
        },
        None => WriteOp::Delete,
    };
    // Whole writes log what was written; patches and counts the record
    // they leave, as a log reader would expect to see it.
    let logged = match (&lm.kind, lm.logged, &row_op) {
        (MetaKind::Whole, Some(json), WriteOp::Put { created, .. }) => WriteOp::Put {
            json,
            created: *created,
        },
        (MetaKind::Whole, None, _) => WriteOp::Delete,
        _ => row_op.clone(),
    };
    // A count that left the version as it was keeps that version's base.
    let side_base = if state.version() > v { base } else { vb };
    ctx.put_side(
        &rk,
        Some(crate::local::settle_local::side_after(side_base, state)),
    );
    ctx.write(
        def,
        rk,
        &p.key,
        old,
        stamp,
        &row_op,
        visible.as_ref(),
        Some(side_base),
    )?;
    Ok((
        WriteOp::Meta {
            op: Box::new(logged),
            base,
            kind: lm.kind,
        },
        gone,
    ))
}

const STAGE_INSERT: u8 = 0;
const STAGE_UPSERT: u8 = 1;
const STAGE_UPDATE: u8 = 2;

fn to_json(obj: &Map<String, Value>, max_bytes: usize) -> Result<String> {
    let json = serde_json::to_string(obj).map_err(|e| Error::InvalidJson(e.to_string()))?;
    check_size(&json, max_bytes)?;
    Ok(json)
}

fn check_size(json: &str, max_bytes: usize) -> Result<()> {
    if json.len() > max_bytes {
        return Err(Error::RecordTooLarge {
            size: json.len(),
            limit: max_bytes,
        });
    }
    Ok(())
}

/// Whether any (table, key) occurs twice.
pub(crate) fn has_repeats<'k>(keys: impl Iterator<Item = (&'k str, &'k Key)>) -> bool {
    let mut seen = std::collections::HashSet::new();
    for k in keys {
        if !seen.insert(k) {
            return true;
        }
    }
    false
}

pub(crate) use crate::local::index_entries::{index_entries, CarriesRow};
pub(crate) use crate::local::row::OldRow;

/// Builds one atomic batch; with several writes it remembers what each one
/// left behind, so later writes to the same record see it.
pub(crate) struct Ctx<'a> {
    store: &'a Store,
    pub(crate) batch: Batch,
    overlay: Option<HashMap<Vec<u8>, OldRow>>,
    /// A record was written twice in this batch, so keys may repeat.
    pub(crate) repeated: bool,
    /// Log sequence the current transaction's writes will carry; tombstones
    /// remember it so collection knows when every peer has them.
    pub(crate) seq: u64,
    /// Tables row filters route, with the attributes they test: their
    /// writes record those attributes' previous values (see `LogEntry::prior`).
    routed: Option<Arc<crate::local::fanout::Routed>>,
    prior: Vec<crate::local::log::Prior>,
    /// Writes of the current log entry so far.
    writes_in_entry: u32,
    /// Side entries this batch wrote (`None`: removed), so later writes
    /// of the same record see them.
    sides: HashMap<Vec<u8>, Option<Side>>,
    /// Tables that gained a merge state in this batch.
    pub(crate) stateful: Vec<u32>,
    /// A row whose side entry was read (a base written before bases moved
    /// into the row, or a merge state): staging a base without a state for
    /// it removes the entry.
    legacy_side: Option<Vec<u8>>,
    /// What the batch changes in each table's statistics.
    pub(crate) stats: crate::local::table_stats::Deltas,
}

impl<'a> Ctx<'a> {
    /// `repeats`: whether any record is written more than once in this
    /// batch; only then do later writes need to see earlier ones.
    pub(crate) fn new(store: &'a Store, repeats: bool, seq: u64) -> Ctx<'a> {
        Ctx {
            store,
            batch: Batch::default(),
            overlay: repeats.then(HashMap::new),
            repeated: false,
            seq,
            routed: None,
            prior: Vec::new(),
            writes_in_entry: 0,
            sides: HashMap::new(),
            stateful: Vec::new(),
            legacy_side: None,
            stats: Default::default(),
        }
    }

    /// Records routed attributes for the tables in `routed`.
    pub(crate) fn route(&mut self, routed: Option<Arc<crate::local::fanout::Routed>>) {
        self.routed = routed;
    }

    /// The prior values recorded for the entry whose writes went through
    /// `write` since the last call.
    pub(crate) fn take_prior(&mut self) -> Vec<crate::local::log::Prior> {
        self.writes_in_entry = 0;
        std::mem::take(&mut self.prior)
    }

    /// What row `rk` (now `old`) keeps for conflict handling (see `side`):
    /// its base from the row header, and its merge state, looked up in the
    /// meta space only where `look` says the record may have one (a table
    /// marked stateful, or a write that merges).
    pub(crate) fn side(
        &mut self,
        rk: &[u8],
        old: Option<&OldRow>,
        look: bool,
    ) -> Result<Option<Side>> {
        if !self.sides.is_empty() {
            if let Some(s) = self.sides.get(rk) {
                return Ok(s.clone());
            }
        }
        let row_base = old.and_then(|o| o.header.base);
        let entry = if look {
            match self.store.get(Space::Meta, &side_key(rk))? {
                Some(v) => Some(Side::decode(&v)?),
                None => None,
            }
        } else {
            None
        };
        Ok(match entry {
            // A merge state is always written with its base: that one holds.
            // Remembered like a legacy entry: a write that leaves the record
            // without a state must remove it, or the stale state would be
            // read back at the record's next write.
            Some(sd) if sd.state.is_some() => {
                self.legacy_side = Some(rk.to_vec());
                Some(sd)
            }
            Some(mut sd) => {
                self.legacy_side = Some(rk.to_vec());
                if let Some(b) = row_base {
                    sd.base = b;
                }
                Some(sd)
            }
            None => row_base.map(|base| Side { base, state: None }),
        })
    }

    /// Stages row `rk`'s side entry (`None`: remove it). A base alone
    /// stages nothing here: the caller passes it to the row's `write`,
    /// which keeps it in the row header (so a base costs no key of its own).
    pub(crate) fn put_side(&mut self, rk: &[u8], side: Option<Side>) {
        if let Some(sd) = &side {
            if sd.state.is_none() && !self.sides.contains_key(rk) {
                if self.legacy_side.as_deref() == Some(rk) {
                    self.legacy_side = None;
                    self.batch.delete(Space::Meta, side_key(rk));
                }
                return;
            }
        }
        let k = side_key(rk);
        match &side {
            Some(sd) => {
                if sd.state.is_some() {
                    if let Some(id) = crate::local::keys::table_id_of_row(rk) {
                        self.batch.put(
                            Space::Meta,
                            crate::local::side::stateful_key(id),
                            Vec::new(),
                        );
                        self.stateful.push(id);
                    }
                }
                self.batch.put(Space::Meta, k, sd.encode());
            }
            None => self.batch.delete(Space::Meta, k),
        }
        self.repeated |= self.sides.insert(rk.to_vec(), side).is_some();
    }

    pub(crate) fn current(&self, rk: &[u8]) -> Result<Option<OldRow>> {
        if let Some(row) = self.overlay.as_ref().and_then(|o| o.get(rk)) {
            return Ok(Some(row.clone()));
        }
        let Some(v) = self.store.get(Space::Rows, rk)? else {
            return Ok(None);
        };
        let (header, body_at) = decode_row(&v)?;
        let json = if header.tombstone {
            ""
        } else {
            row_json(&v, body_at)?
        };
        Ok(Some(OldRow {
            header,
            json: Arc::from(json),
        }))
    }

    /// Adds the row, index and expiry changes of one write to the batch.
    /// `new_obj`: a put's indexed attributes (or its whole object), where
    /// the caller has them; otherwise its JSON is parsed for them. `base`:
    /// what the row header keeps as the version this one replaced (the
    /// base of the side staged for it with `put_side`), passed here rather
    /// than remembered with the row's key, which cost a copy of the key
    /// per commit.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write(
        &mut self,
        def: &TableDef,
        rk: Vec<u8>,
        key: &Key,
        old: Option<OldRow>,
        stamp: Stamp,
        op: &WriteOp,
        new_obj: Option<&Map<String, Value>>,
        base: Option<Stamp>,
    ) -> Result<()> {
        let index = self.writes_in_entry;
        self.writes_in_entry += 1;
        if let Some(attrs) = self.routed.as_ref().and_then(|r| r.get(&def.name)) {
            let old = match &old {
                Some(o) if !o.header.tombstone => {
                    Some(crate::local::filter::routed_values(&o.object()?, attrs))
                }
                _ => None,
            };
            self.prior
                .push(crate::local::log::Prior { write: index, old });
        }
        let op = op.inner();
        let seq_bytes = self.seq.to_be_bytes();
        let (header, body): (RowHeader, &[u8]) = match op {
            WriteOp::Put { json, created } => (
                RowHeader {
                    tombstone: false,
                    stamp,
                    created: *created,
                    base,
                },
                json.as_bytes(),
            ),
            WriteOp::Delete => (
                RowHeader {
                    tombstone: true,
                    stamp,
                    created: 0,
                    base,
                },
                &seq_bytes,
            ),
            WriteOp::Delta { .. } | WriteOp::Meta { .. } => {
                return Err(crate::local::delta::unresolved())
            }
        };
        if let Some(o) = old.as_ref().filter(|o| o.header.tombstone) {
            self.batch.delete(
                Space::Index,
                tombstone_key(def.id, o.header.stamp.millis(), key),
            );
        }
        if header.tombstone {
            self.batch.put(
                Space::Index,
                tombstone_key(def.id, stamp.millis(), key),
                Vec::new(),
            );
        }
        let row = encode_row(&header, body);
        if !def.indexes.is_empty() {
            let old_entries = match &old {
                Some(o) if !o.header.tombstone => index_entries(def, key, &o.object()?),
                _ => BTreeMap::new(),
            };
            let new_entries = match (op, new_obj) {
                (WriteOp::Put { .. }, Some(m)) => index_entries(def, key, m),
                (WriteOp::Put { json, .. }, None) => match serde_json::from_str::<Value>(json) {
                    Ok(Value::Object(m)) => index_entries(def, key, &m),
                    _ => return Err(Error::NotAnObject("a non-object".into())),
                },
                _ => BTreeMap::new(),
            };
            for gone in old_entries.keys().filter(|k| !new_entries.contains_key(*k)) {
                self.batch.delete(Space::Index, gone.clone());
            }
            for (entry, carries) in new_entries {
                // An entry that carries a row is rewritten with every
                // version of it; one that carries none only when it is new
                // or carried the row before (a scalar that became an array).
                let unchanged = old_entries.get(&entry) == Some(&CarriesRow(false));
                if carries.0 {
                    self.batch.put(Space::Index, entry, row.clone());
                } else if !unchanged {
                    self.batch.put(Space::Index, entry, Vec::new());
                }
            }
        }
        let live_bytes = |json: &str| crate::local::table_stats::record_bytes(&rk, json.len());
        let old_live = old
            .as_ref()
            .filter(|o| !o.header.tombstone)
            .map(|o| live_bytes(&o.json));
        let new_live = match op {
            WriteOp::Put { json, .. } => Some(live_bytes(json)),
            _ => None,
        };
        self.stats.row(def, &rk, old_live, new_live);
        if def.keeps_age_index() {
            let new_exp = expiry_key(def.id, stamp.millis(), key);
            if let Some(o) = &old {
                let old_exp = expiry_key(def.id, o.header.stamp.millis(), key);
                if old_exp != new_exp {
                    self.batch.delete(Space::Index, old_exp);
                }
            }
            self.batch.put(Space::Index, new_exp, Vec::new());
        }
        self.batch.put(Space::Rows, rk.clone(), row);
        if let Some(overlay) = &mut self.overlay {
            let json = match op {
                WriteOp::Put { json, .. } => Arc::from(json.as_str()),
                _ => Arc::from(""),
            };
            self.repeated |= overlay.insert(rk, OldRow { header, json }).is_some();
        }
        Ok(())
    }
}

/// Appends the log entry and the tables' statistics, commits, advances the
/// sequence and queues events.
#[allow(clippy::too_many_arguments)]
fn finish(
    db: &Database,
    store: &Store,
    w: &mut WriteState,
    mut batch: Batch,
    stats: &crate::local::table_stats::Deltas,
    repeated: bool,
    entry: LogEntry,
    local: bool,
) -> Result<u64> {
    let staged = crate::local::table_budget::stage(db, store, &mut batch, stats, local)?;
    let encoded = entry.encode();
    let bytes = crate::local::log::entry_size(encoded.len());
    batch.put(Space::Log, seq_key(entry.seq).to_vec(), encoded);
    commit_batch(db, store, batch, repeated, Some((entry.seq, entry.seq)))?;
    staged.apply(db);
    w.next_seq = entry.seq + 1;
    w.log_bytes += bytes;
    w.log_sizes.appended(entry.seq, bytes);
    let seq = entry.seq;
    db.shared.feed.publish_entry(&entry);
    db.shared.committed.send_replace(seq);
    queue_events(db, entry, local);
    Ok(seq)
}

pub(crate) fn commit_batch(
    db: &Database,
    store: &Store,
    mut batch: Batch,
    may_repeat_keys: bool,
    seqs: Option<(u64, u64)>,
) -> Result<()> {
    if may_repeat_keys {
        dedupe_last_wins(&mut batch);
    }
    let sync = db.shared.opts.durability == Durability::Sync;
    db.shared.commit(store, batch, sync, seqs)?;
    if !sync {
        db.shared.dirty.store(true, Ordering::Release);
    }
    Ok(())
}

/// Engines may not order two writes to one key inside a batch, so keep only
/// the last one, which is what sequential application would leave.
fn dedupe_last_wins(batch: &mut Batch) {
    let mut seen = std::collections::HashSet::with_capacity(batch.ops.len());
    let mut kept = Vec::with_capacity(batch.ops.len());
    for op in batch.ops.drain(..).rev() {
        if seen.insert((op.0 as u8, op.1.clone())) {
            kept.push(op);
        }
    }
    kept.reverse();
    batch.ops = kept;
}

pub(crate) fn queue_events(db: &Database, entry: LogEntry, local: bool) {
    let listeners = &db.shared.listeners;
    if !listeners.any() {
        return;
    }
    let mut by_table: Vec<ChangeEvent> = Vec::new();
    for wr in entry.writes {
        if !listeners.wants(&wr.table) {
            continue;
        }
        let record = match wr.op.inner() {
            WriteOp::Put { json, created } => Some(Record::from_parts(
                wr.key.clone(),
                entry.stamp,
                *created,
                Arc::from(json.as_str()),
            )),
            _ => None,
        };
        let change = Change {
            key: wr.key,
            record,
        };
        match by_table.iter_mut().find(|e| e.table == wr.table) {
            Some(e) => e.changes.push(change),
            None => by_table.push(ChangeEvent {
                table: wr.table,
                seq: entry.seq,
                stamp: entry.stamp,
                local,
                changes: vec![change],
                missed: 0,
            }),
        }
    }
    for e in by_table {
        listeners.queue(e);
    }
}
