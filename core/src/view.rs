//! What the database hands out, in one shape per thing: records, change
//! events, log entries and commit info. (Peer status has its own
//! serialisable shape, [`crate::PeerStatus`].)
//!
//! The bindings do not lay these out themselves: the C ABI serialises these
//! structs with serde_json, Python and Node build their objects field by
//! field from them. A field added here reaches every binding, and its doc
//! comment below is the one description the bindings' docs repeat.
//!
//! Representation rules (the only differences between the bindings):
//! - names are snake_case in C's JSON and Python's dicts, camelCase in Node
//!   (`stamp_ms` is `stampMs`), as everywhere in each API;
//! - 64-bit identifiers and stamps (`origin`, `stamp.time`, `stamp.node`)
//!   are JSON integers in C, ints in Python and bigints in Node (a JS number
//!   would round them); counters, sequence numbers and millisecond times
//!   are plain numbers everywhere;
//! - a record is an object (dict) of its attributes with `__createdtime__`
//!   and `__updatedtime__` added; `null` (`None`) where there is none.

use serde::ser::Serializer;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::local::codec::{Key, Stamp};
use crate::local::listener::{Change, ChangeEvent};
use crate::local::log::{LogEntry, LogWrite, WriteOp};
use crate::local::record::{write_with_times, Record, CREATED_ATTR, UPDATED_ATTR};
use crate::local::write::CommitInfo;

/// Wall-clock milliseconds of a hybrid-logical-clock time.
fn hlc_ms(time: u64) -> u64 {
    Stamp { time, node: 0 }.millis()
}

/// A primary key as a JSON scalar (an integer or a string), not serde's
/// default enum layout of [`Key`].
fn key_scalar<S: Serializer>(k: &Key, s: S) -> Result<S::Ok, S::Error> {
    match k {
        Key::Int(i) => s.serialize_i64(*i),
        Key::Str(t) => s.serialize_str(t),
    }
}

/// One record as every read hands it out: its attributes as stored, with
/// two attributes tidelog computes put first.
///
/// Serialises as that one object: `{"__createdtime__": ms,
/// "__updatedtime__": ms, <attributes>...}`.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// The record's attributes as stored: JSON object text (without the two
    /// time attributes).
    pub body: &'a str,
    /// `__createdtime__`: milliseconds since the epoch of the record's first
    /// write (kept across updates and replicas).
    pub created_ms: u64,
    /// `__updatedtime__`: milliseconds since the epoch of the write that made
    /// this version (the wall-clock part of its stamp).
    pub updated_ms: u64,
}

impl<'a> RecordView<'a> {
    /// The names of the attributes tidelog adds to every record, in the
    /// order [`RecordView::times`] gives their values and the serialised
    /// record puts them.
    pub const TIME_ATTRS: [&'static str; 2] = [CREATED_ATTR, UPDATED_ATTR];

    pub fn of(r: &'a Record) -> Self {
        RecordView {
            body: r.body_json(),
            created_ms: r.created_ms(),
            updated_ms: r.updated_ms(),
        }
    }

    /// The record a logged put wrote (its times from the entry's stamp).
    fn logged(json: &'a str, created: u64, stamp: &Stamp) -> Self {
        RecordView {
            body: json,
            created_ms: hlc_ms(created),
            updated_ms: stamp.millis(),
        }
    }

    /// The values of [`RecordView::TIME_ATTRS`], in that order.
    pub fn times(&self) -> [u64; 2] {
        [self.created_ms, self.updated_ms]
    }

    /// Appends the serialised record to `out`: the same text as
    /// serde_json makes of it, written without a parser (the read path of
    /// every binding).
    pub fn write_json(&self, out: &mut String) {
        write_with_times(out, self.body, self.created_ms, self.updated_ms);
    }
}

impl Serialize for RecordView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(self.body.len() + 80);
        self.write_json(&mut text);
        // Stored bodies are JSON objects, checked when written or received.
        let raw = RawValue::from_string(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

/// A record list as serialised text (`[record, ...]`), written with
/// [`RecordView::write_json`].
pub fn records_json<'r>(records: impl IntoIterator<Item = Option<&'r Record>>) -> String {
    let mut out = String::from("[");
    for (i, r) in records.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match r {
            Some(r) => RecordView::of(r).write_json(&mut out),
            None => out.push_str("null"),
        }
    }
    out.push(']');
    out
}

/// What a write did to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// The record was inserted, upserted or updated: `record` is its new
    /// version.
    Put,
    /// The record was deleted: `record` is null.
    Delete,
}

impl OpKind {
    /// The name every binding hands out: `"put"` or `"delete"`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Delete => "delete",
        }
    }
}

/// One write of a logged transaction.
#[derive(Debug, Clone, Serialize)]
pub struct LogWriteView<'a> {
    /// The table written.
    pub table: &'a str,
    /// The record's primary key: an integer or a string.
    #[serde(serialize_with = "key_scalar")]
    pub key: &'a Key,
    /// `"put"` or `"delete"`.
    pub op: OpKind,
    /// The record after the write (with its two times); null for a delete.
    pub record: Option<RecordView<'a>>,
}

impl<'a> LogWriteView<'a> {
    fn of(w: &'a LogWrite, stamp: &Stamp) -> Self {
        let (op, record) = match w.op.inner() {
            WriteOp::Put { json, created } => {
                (OpKind::Put, Some(RecordView::logged(json, *created, stamp)))
            }
            // Wire-only: a log never holds one (see `WriteOp::Delta`).
            WriteOp::Delta { .. } => (OpKind::Put, None),
            _ => (OpKind::Delete, None),
        };
        LogWriteView {
            table: &w.table,
            key: &w.key,
            op,
            record,
        }
    }
}

/// One committed transaction as the log readers hand it out, local or
/// applied from a peer.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntryView<'a> {
    /// This instance's log sequence number of the transaction (dense,
    /// from 1; another instance numbers the same transaction differently).
    pub seq: u64,
    /// Node id of the instance where the transaction was first committed
    /// (the same as `stamp.node`). 64-bit.
    pub origin: u64,
    /// The version stamp of every write in the transaction, the same on
    /// every replica: `time` (hybrid logical clock: milliseconds since the
    /// epoch in the high 48 bits, a counter in the low 16) and `node` (the
    /// origin). Both 64-bit.
    pub stamp: Stamp,
    /// Wall-clock milliseconds since the epoch of `stamp.time` (the
    /// records' `__updatedtime__`).
    pub stamp_ms: u64,
    /// True when this instance wrote the transaction, false when it was
    /// applied from a peer.
    pub local: bool,
    /// Milliseconds since the epoch at which this instance wrote the entry
    /// to its log (committed it, or applied it from a peer); increases with
    /// `seq`, and is what reading the log "since" a time compares.
    pub logged_ms: u64,
    /// The transaction's writes, in the order they were made.
    pub writes: Vec<LogWriteView<'a>>,
}

impl<'a> LogEntryView<'a> {
    /// The view of `e` as read on the instance whose node id is `own_node`.
    pub fn of(e: &'a LogEntry, own_node: u64) -> Self {
        LogEntryView {
            seq: e.seq,
            origin: e.origin(),
            stamp: e.stamp,
            stamp_ms: e.stamp.millis(),
            local: e.origin() == own_node,
            logged_ms: hlc_ms(e.local_time),
            writes: e
                .writes
                .iter()
                .map(|w| LogWriteView::of(w, &e.stamp))
                .collect(),
        }
    }
}

/// One changed record of a change event.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeView<'a> {
    /// The record's primary key: an integer or a string.
    #[serde(serialize_with = "key_scalar")]
    pub key: &'a Key,
    /// The record after the change (with its two times); null if it was
    /// deleted.
    pub record: Option<RecordView<'a>>,
}

/// What one transaction changed in one table, as change listeners receive
/// it.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeEventView<'a> {
    /// The table changed.
    pub table: &'a str,
    /// This instance's log sequence number of the transaction.
    pub seq: u64,
    /// Node id of the instance where the change was first committed (the
    /// same as `stamp.node`). 64-bit.
    pub origin: u64,
    /// The version stamp of the changes (see [`LogEntryView::stamp`]).
    pub stamp: Stamp,
    /// Wall-clock milliseconds since the epoch of `stamp.time`.
    pub stamp_ms: u64,
    /// True when the transaction was committed on this instance, false
    /// when it was applied from a peer.
    pub local: bool,
    /// The records changed in this table, in the order they were written.
    pub changes: Vec<ChangeView<'a>>,
    /// Events of this table dropped just before this one because the
    /// listener queue (`listener_queue_max`) was full; 0 normally. A
    /// listener that mirrors the table reads it again when this is not 0.
    pub missed: u64,
}

impl<'a> ChangeEventView<'a> {
    pub fn of(e: &'a ChangeEvent) -> Self {
        ChangeEventView {
            table: &e.table,
            seq: e.seq,
            origin: e.origin(),
            stamp: e.stamp,
            stamp_ms: e.stamp.millis(),
            local: e.local,
            changes: e.changes.iter().map(ChangeView::of).collect(),
            missed: e.missed,
        }
    }
}

impl<'a> ChangeView<'a> {
    fn of(c: &'a Change) -> Self {
        ChangeView {
            key: &c.key,
            record: c.record.as_ref().map(RecordView::of),
        }
    }
}

/// What a committed transaction was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CommitInfoView {
    /// Local log sequence number of the transaction (0 if it wrote
    /// nothing).
    pub seq: u64,
    /// Node id of this instance, where the transaction was committed (the
    /// same as `stamp.node`). 64-bit.
    pub origin: u64,
    /// The transaction's version stamp (see [`LogEntryView::stamp`]).
    pub stamp: Stamp,
    /// Wall-clock milliseconds since the epoch of `stamp.time` (the
    /// written records' `__updatedtime__`).
    pub stamp_ms: u64,
}

impl CommitInfoView {
    pub fn of(c: CommitInfo) -> Self {
        CommitInfoView {
            seq: c.seq,
            origin: c.stamp.node,
            stamp: c.stamp,
            stamp_ms: c.stamp.millis(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn entry() -> LogEntry {
        LogEntry {
            seq: 7,
            stamp: Stamp {
                time: (5 << 16) | 3,
                node: u64::MAX - 1,
            },
            local_time: 9 << 16,
            writes: vec![
                LogWrite {
                    table: "t".into(),
                    key: Key::Int(1),
                    op: WriteOp::Put {
                        json: "{\"id\":1,\"v\":\"x\"}".into(),
                        created: 2 << 16,
                    },
                },
                LogWrite {
                    table: "t".into(),
                    key: Key::Str("k".into()),
                    op: WriteOp::Delete,
                },
            ],
            prior: Vec::new(),
        }
    }

    #[test]
    fn log_entry_serialises_every_field() {
        let e = entry();
        let v = serde_json::to_value(LogEntryView::of(&e, u64::MAX - 1)).unwrap();
        assert_eq!(
            v,
            json!({
                "seq": 7, "origin": u64::MAX - 1,
                "stamp": {"time": (5u64 << 16) | 3, "node": u64::MAX - 1},
                "stamp_ms": 5, "local": true, "logged_ms": 9,
                "writes": [
                    {"table": "t", "key": 1, "op": "put",
                     "record": {"__createdtime__": 2, "__updatedtime__": 5, "id": 1, "v": "x"}},
                    {"table": "t", "key": "k", "op": "delete", "record": null},
                ]
            })
        );
        let other = serde_json::to_value(LogEntryView::of(&e, 1)).unwrap();
        assert_eq!(other["local"], Value::Bool(false));
    }

    #[test]
    fn record_text_and_serialisation_agree() {
        let r = RecordView {
            body: " {\"a\":[1,{\"b\":null}]} ",
            created_ms: 1,
            updated_ms: 2,
        };
        let mut text = String::new();
        r.write_json(&mut text);
        // A peer's body may end in whitespace, which serde_json drops.
        assert_eq!(serde_json::to_string(&r).unwrap(), text.trim_end());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({RecordView::TIME_ATTRS[0]: 1, RecordView::TIME_ATTRS[1]: 2, "a": [1, {"b": null}]})
        );
    }

    #[test]
    fn commit_info_serialises_every_field() {
        let c = CommitInfoView::of(CommitInfo {
            seq: 3,
            stamp: Stamp {
                time: 4 << 16,
                node: 9,
            },
        });
        assert_eq!(
            serde_json::to_value(c).unwrap(),
            json!({"seq": 3, "origin": 9, "stamp": {"time": 4u64 << 16, "node": 9}, "stamp_ms": 4})
        );
    }

    #[test]
    fn change_event_has_its_keys_and_records_or_null() {
        let stamp = Stamp {
            time: 7 << 16,
            node: 1,
        };
        let e = ChangeEvent {
            table: "t".into(),
            seq: 4,
            stamp,
            local: false,
            missed: 0,
            changes: vec![
                Change {
                    key: Key::Str("a\"b".into()),
                    record: Some(Record::from_parts(
                        Key::Str("a\"b".into()),
                        stamp,
                        5 << 16,
                        "{\"id\":\"a\\\"b\",\"v\":1}".into(),
                    )),
                },
                Change {
                    key: Key::Int(-3),
                    record: None,
                },
            ],
        };
        assert_eq!(
            serde_json::to_value(ChangeEventView::of(&e)).unwrap(),
            json!({"table": "t", "seq": 4, "origin": 1, "stamp": {"time": 7u64 << 16, "node": 1},
                   "stamp_ms": 7, "local": false, "changes": [
                       {"key": "a\"b", "record": {"id": "a\"b", "v": 1,
                           "__createdtime__": 5, "__updatedtime__": 7}},
                       {"key": -3, "record": null}], "missed": 0})
        );
    }
}
