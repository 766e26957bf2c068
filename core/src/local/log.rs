//! The transaction log: one entry per committed transaction, local or
//! applied from a peer, keyed by a dense local sequence number. Entries hold
//! full after-images (or tombstones), so replaying any suffix of the log onto
//! a replica converges it without reading anything else.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::local::codec::{Key, Stamp};

/// What a write did to one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// The record's full new contents (JSON object text) and its creation
    /// time (HLC), kept so every replica reports the same `__createdtime__`.
    Put { json: String, created: u64 },
    /// The record was deleted; a tombstone carries the stamp.
    Delete,
    /// Only on the wire, never in a log: the new contents as an edit of
    /// an earlier version of the record (see `local::delta`), which the
    /// receiver turns back into a `Put` before anything applies it. The
    /// base's stamp is written relative to the transaction's, to stay
    /// small: its time is `base_back` earlier, and its node is
    /// `base_node`, `None` for the transaction's own. `created`: `None`
    /// when it is the base's.
    Delta {
        base_back: u64,
        base_node: Option<u64>,
        created: Option<u64>,
        script: Vec<u8>,
        lits: String,
    },
    /// A write with what conflict handling needs (see `conflict_log` and
    /// `merge`): `op` is the write itself as ever (a `Put` after-image, a
    /// `Delete`, or on the wire a `Delta`), which every reader that does
    /// not settle conflicts takes as it is; `base` is the stamp of the
    /// version it replaced at its origin (the default stamp: none), so a
    /// receiver tells a sequential update from a concurrent one.
    Meta {
        op: Box<WriteOp>,
        base: Stamp,
        kind: MetaKind,
    },
}

/// What kind of write a [`WriteOp::Meta`] is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaKind {
    /// A whole-record write (an upsert, or a delete).
    Whole,
    /// A conflict's resolution, written by `keep_local` or a resolver:
    /// other nodes apply it by plain last-writer-wins, never resolving it
    /// again, so two nodes cannot answer each other forever.
    Resolution,
    /// An `update` of a `merge` table: the patched attributes (JSON object
    /// text), merged per attribute by receivers of that policy.
    Patch { attrs: String },
    /// An `increment`: its origin's running totals for counter `attr`
    /// (what it added and what it took away, both only growing). `init`:
    /// the origin had no live record and created `{<key>}` with this
    /// write.
    Count {
        attr: String,
        added: u64,
        taken: u64,
        init: bool,
    },
    /// A row of an initial sync or resync whose record has a merge state
    /// (JSON): the receiver joins it into its own, so overrides and
    /// counter contributions other nodes hold are not lost to the merged
    /// row. Never in a log.
    Synced { state: String },
}

impl WriteOp {
    /// The write itself, without its conflict metadata.
    pub fn inner(&self) -> &WriteOp {
        match self {
            WriteOp::Meta { op, .. } => op.inner(),
            other => other,
        }
    }

    /// [`WriteOp::inner`], to change in place (delta encoding).
    pub fn inner_mut(&mut self) -> &mut WriteOp {
        match self {
            WriteOp::Meta { op, .. } => op.inner_mut(),
            other => other,
        }
    }

    /// Whether a later write of the record makes this one redundant to
    /// send (patches and counts carry what a later write may not).
    pub fn supersedable(&self) -> bool {
        !matches!(
            self,
            WriteOp::Meta {
                kind: MetaKind::Patch { .. } | MetaKind::Count { .. } | MetaKind::Synced { .. },
                ..
            }
        )
    }
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogWrite {
    pub table: String,
    pub key: Key,
    pub op: WriteOp,
}

/// A committed transaction as the log stores it (in the form `log_form`
/// describes: postcard, whole writes' conflict metadata compact).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Local sequence number (dense, starting at 1).
    pub seq: u64,
    /// Version stamp of every write in the entry; `stamp.node` is the origin.
    pub stamp: Stamp,
    /// Local HLC time at which this instance committed the entry; increases
    /// with `seq`, so the log can be searched by time.
    pub local_time: u64,
    pub writes: Vec<LogWrite>,
    /// For writes to tables that row filters route (see `local::filter`):
    /// the routed attributes of each record before the write. Stored after
    /// the entry's other fields, and only when not empty, so entries of
    /// unfiltered tables cost nothing and logs written before it decode.
    #[serde(skip)]
    pub prior: Vec<Prior>,
}

/// What one write's record held before it, of the attributes filters test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prior {
    /// Position of the write in [`LogEntry::writes`].
    pub write: u32,
    /// A JSON object of the routed attributes the previous live version
    /// had; `None` when there was none (a new record, or a tombstone).
    pub old: Option<String>,
}

impl LogEntry {
    /// Node id of the instance where the transaction was first committed.
    pub fn origin(&self) -> u64 {
        self.stamp.node
    }

    /// The local commit time alone, read from the front of an encoded entry
    /// without decoding its writes (log trimming looks at every entry).
    pub(crate) fn decode_local_time(bytes: &[u8]) -> Result<u64> {
        /// The leading fields of [`LogEntry`], in its order.
        #[derive(Deserialize)]
        struct Head {
            _seq: u64,
            _stamp: Stamp,
            local_time: u64,
        }
        postcard::take_from_bytes::<Head>(bytes)
            .map(|(head, _rest)| head.local_time)
            .map_err(|e| Error::Corrupt(format!("log entry: {e}")))
    }
}

/// What one log entry counts for in the log's size: its value and its
/// 8-byte key, as the byte cap measures it.
pub(crate) fn entry_size(encoded_len: usize) -> u64 {
    encoded_len as u64 + 8
}

/// Sequences between two size marks: the most entries a backlog count
/// reads.
pub(crate) const MARK_EVERY: u64 = 1024;

/// The log's running byte total with a mark every [`MARK_EVERY`]
/// sequences, so that the bytes after any position still in the log are
/// known by reading at most `MARK_EVERY` entries: a peer's backlog is
/// counted exactly without scanning the log behind it, however long.
#[derive(Debug, Default)]
pub(crate) struct LogSizes {
    /// Bytes of every entry appended since open (or found at open),
    /// trimmed or not.
    total: u64,
    /// `(seq, total once seq was appended)` for each `seq` that is a
    /// multiple of `MARK_EVERY`, from just before the log's first entry on.
    marks: std::collections::VecDeque<(u64, u64)>,
}

impl LogSizes {
    /// Counts entry `seq` of `bytes`; entries come in sequence order.
    pub(crate) fn appended(&mut self, seq: u64, bytes: u64) {
        self.total += bytes;
        if seq.is_multiple_of(MARK_EVERY) {
            self.marks.push_back((seq, self.total));
        }
    }

    /// Forgets marks no position in the log can use once `first` is the
    /// first entry.
    pub(crate) fn trimmed(&mut self, first: u64) {
        while self.marks.front().is_some_and(|(s, _)| s + 1 < first) {
            self.marks.pop_front();
        }
    }

    /// The first mark at or after `seq`, and the bytes of every entry
    /// after it: `None` if no entry from `seq` on has a mark yet.
    pub(crate) fn after_mark(&self, seq: u64) -> Option<(u64, u64)> {
        let i = self.marks.partition_point(|(s, _)| *s < seq);
        self.marks
            .get(i)
            .map(|(s, at)| (*s, self.total.saturating_sub(*at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trip_and_garbage_is_corrupt_not_panic() {
        let e = LogEntry {
            seq: 3,
            stamp: Stamp { time: 99, node: 5 },
            local_time: 100,
            writes: vec![
                LogWrite {
                    table: "t".into(),
                    key: Key::Int(-4),
                    op: WriteOp::Put {
                        json: "{\"id\":-4}".into(),
                        created: 98,
                    },
                },
                LogWrite {
                    table: "u".into(),
                    key: Key::Str("k".into()),
                    op: WriteOp::Delete,
                },
            ],
            prior: Vec::new(),
        };
        let bytes = e.encode();
        assert_eq!(LogEntry::decode(&bytes).unwrap(), e);
        assert_eq!(LogEntry::decode_local_time(&bytes).unwrap(), 100);
        for cut in 0..bytes.len() {
            assert!(LogEntry::decode(&bytes[..cut]).is_err());
        }
        // With the prior values of filtered tables: both ways, and an
        // entry without them reads as before.
        let mut with = e.clone();
        with.prior = vec![
            Prior {
                write: 0,
                old: Some("{\"site\":\"a\"}".into()),
            },
            Prior {
                write: 1,
                old: None,
            },
        ];
        let wbytes = with.encode();
        assert!(wbytes.starts_with(&bytes), "the old layout stays a prefix");
        assert_eq!(LogEntry::decode(&wbytes).unwrap(), with);
        assert!(LogEntry::decode(&wbytes[..wbytes.len() - 1]).is_err());
        assert!(matches!(
            crate::local::keys::seq_from_key(b"abc"),
            Err(Error::Corrupt(_))
        ));
    }
}
