//! How a log entry is stored: postcard of [`LogEntry`] as derived, except
//! for the commonest write with conflict metadata, a whole write (an
//! upsert or a delete) of `MetaKind::Whole`, which every write carries
//! while the conflict log is on. Its base is written relative to the
//! entry's stamp, as the wire's `WriteOp::Delta` writes its own: the time
//! as a distance back (a few bytes where the absolute HLC time takes nine),
//! the node only where it is not the entry's (one byte where a node id
//! takes up to ten), and the kind implied. That form is a fifth variant of
//! the stored `WriteOp` (index [`BASED`], after the four `WriteOp` has),
//! which exists only in the log's bytes: decoding turns it back into the
//! `WriteOp::Meta` it stands for, so nothing in memory or on the wire ever
//! sees it, and a log written before it decodes as ever.

use serde::ser::{SerializeSeq, SerializeStruct, SerializeStructVariant};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::local::codec::{Key, Stamp};
use crate::local::log::{LogEntry, LogWrite, MetaKind, WriteOp};

/// The stored variant index of the compact form: the next after
/// `WriteOp`'s own. A variant added to `WriteOp` takes this index in the
/// wire format, so the compact form must move (see the exhaustive match in
/// the tests, which stops compiling first).
const BASED: u32 = 4;

/// A whole write's metadata in the compact form, if it has one: the write
/// itself, how far back its base's time is, and the base's node where it
/// is not the entry's. `back` is `None` for no base (a new record).
fn compact(op: &WriteOp, stamp: Stamp) -> Option<(&WriteOp, Option<u64>, Option<u64>)> {
    let WriteOp::Meta {
        op: inner,
        base,
        kind: MetaKind::Whole,
    } = op
    else {
        return None;
    };
    if !matches!(**inner, WriteOp::Put { .. } | WriteOp::Delete) {
        return None;
    }
    if *base == Stamp::default() {
        return Some((inner, None, None));
    }
    // A base from the future (a clock that jumped) keeps the full form.
    let back = stamp.time.checked_sub(base.time)?;
    Some((
        inner,
        Some(back),
        (base.node != stamp.node).then_some(base.node),
    ))
}

/// One write's op as stored (serializing only).
struct StoredOp<'a> {
    op: &'a WriteOp,
    stamp: Stamp,
}

impl Serialize for StoredOp<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let Some((inner, back, node)) = compact(self.op, self.stamp) else {
            return self.op.serialize(s);
        };
        let mut v = s.serialize_struct_variant("WriteOp", BASED, "Based", 3)?;
        v.serialize_field("op", inner)?;
        v.serialize_field("back", &back)?;
        v.serialize_field("node", &node)?;
        v.end()
    }
}

/// The writes of an entry as stored, in the order of [`LogWrite`]'s fields.
struct StoredWrites<'a> {
    writes: &'a [LogWrite],
    stamp: Stamp,
}

impl Serialize for StoredWrites<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        struct One<'a>(&'a LogWrite, Stamp);
        impl Serialize for One<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                let mut w = s.serialize_struct("LogWrite", 3)?;
                w.serialize_field("table", &self.0.table)?;
                w.serialize_field("key", &self.0.key)?;
                w.serialize_field(
                    "op",
                    &StoredOp {
                        op: &self.0.op,
                        stamp: self.1,
                    },
                )?;
                w.end()
            }
        }
        let mut seq = s.serialize_seq(Some(self.writes.len()))?;
        for w in self.writes {
            seq.serialize_element(&One(w, self.stamp))?;
        }
        seq.end()
    }
}

/// An entry as stored, in the order of [`LogEntry`]'s fields (`prior`
/// follows separately, see `LogEntry::encode`).
struct StoredEntry<'a>(&'a LogEntry);

impl Serialize for StoredEntry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let e = self.0;
        let mut st = s.serialize_struct("LogEntry", 4)?;
        st.serialize_field("seq", &e.seq)?;
        st.serialize_field("stamp", &e.stamp)?;
        st.serialize_field("local_time", &e.local_time)?;
        st.serialize_field(
            "writes",
            &StoredWrites {
                writes: &e.writes,
                stamp: e.stamp,
            },
        )?;
        st.end()
    }
}

/// An op as read back: `WriteOp`'s variants in its order, then the
/// compact form.
#[derive(Deserialize)]
enum OpIn {
    Put {
        json: String,
        created: u64,
    },
    Delete,
    Delta {
        base_back: u64,
        base_node: Option<u64>,
        created: Option<u64>,
        script: Vec<u8>,
        lits: String,
    },
    Meta {
        op: Box<WriteOp>,
        base: Stamp,
        kind: MetaKind,
    },
    Based {
        op: Box<WriteOp>,
        back: Option<u64>,
        node: Option<u64>,
    },
}

#[derive(Deserialize)]
struct WriteIn {
    table: String,
    key: Key,
    op: OpIn,
}

/// The leading part of an entry as read back.
#[derive(Deserialize)]
struct EntryIn {
    seq: u64,
    stamp: Stamp,
    local_time: u64,
    writes: Vec<WriteIn>,
}

impl EntryIn {
    /// The entry it stands for, the compact forms back as `Meta`; one
    /// that cannot stand for a write is `Corrupt`.
    fn into_entry(self) -> Result<LogEntry> {
        let stamp = self.stamp;
        let writes = self
            .writes
            .into_iter()
            .map(|w| {
                Ok(LogWrite {
                    table: w.table,
                    key: w.key,
                    op: op_from(w.op, stamp)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LogEntry {
            seq: self.seq,
            stamp,
            local_time: self.local_time,
            writes,
            prior: Vec::new(),
        })
    }
}

fn op_from(op: OpIn, stamp: Stamp) -> Result<WriteOp> {
    Ok(match op {
        OpIn::Put { json, created } => WriteOp::Put { json, created },
        OpIn::Delete => WriteOp::Delete,
        OpIn::Delta {
            base_back,
            base_node,
            created,
            script,
            lits,
        } => WriteOp::Delta {
            base_back,
            base_node,
            created,
            script,
            lits,
        },
        OpIn::Meta { op, base, kind } => WriteOp::Meta { op, base, kind },
        OpIn::Based { op, back, node } => {
            let bad = |what: &str| {
                Error::Corrupt(format!(
                    "log entry {stamp:?}: compact conflict metadata {what}; the log is damaged"
                ))
            };
            if !matches!(*op, WriteOp::Put { .. } | WriteOp::Delete) {
                return Err(bad("wraps something other than an upsert or a delete"));
            }
            let base = match (back, node) {
                (None, None) => Stamp::default(),
                (None, Some(_)) => return Err(bad("names a node without a base")),
                (Some(back), node) => Stamp {
                    time: stamp
                        .time
                        .checked_sub(back)
                        .ok_or_else(|| bad("reaches back before time 0"))?,
                    node: node.unwrap_or(stamp.node),
                },
            };
            WriteOp::Meta {
                op,
                base,
                kind: MetaKind::Whole,
            }
        }
    })
}

// Here rather than in `log`, beside the form they write and read (and so
// that `log` needs nothing of this module).
impl LogEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Sized up front: growing the Vec from empty was a measurable share
        // of a single-record commit. Serializing plain owned data cannot fail.
        let estimate = 32
            + self
                .writes
                .iter()
                .map(|w| {
                    // A Meta wrapper adds its tag, base stamp (two varints
                    // of up to 10 bytes) and kind: without room for it the
                    // buffer of a large transaction is copied to grow.
                    let meta = if matches!(w.op, WriteOp::Meta { .. }) {
                        24
                    } else {
                        0
                    };
                    w.table.len()
                        + 24
                        + meta
                        + match w.op.inner() {
                            WriteOp::Put { json, .. } => json.len(),
                            WriteOp::Delta { script, lits, .. } => script.len() + lits.len(),
                            _ => 32,
                        }
                })
                .sum::<usize>();
        let bytes = postcard::to_extend(&StoredEntry(self), Vec::with_capacity(estimate))
            .unwrap_or_default();
        if self.prior.is_empty() {
            return bytes;
        }
        postcard::to_extend(&self.prior, bytes).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<LogEntry> {
        let bad = |e: postcard::Error| Error::Corrupt(format!("log entry: {e}"));
        let (stored, rest): (EntryIn, _) = postcard::take_from_bytes(bytes).map_err(bad)?;
        let mut entry = stored.into_entry()?;
        if !rest.is_empty() {
            entry.prior = postcard::from_bytes(rest).map_err(bad)?;
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `WriteOp` variant, once. Exhaustive on purpose: a variant
    /// added to `WriteOp` takes stored index [`BASED`] on the wire, so
    /// this stops compiling until the compact form moves past it.
    fn every_variant() -> Vec<WriteOp> {
        let put = WriteOp::Put {
            json: "{\"id\":1}".into(),
            created: 7,
        };
        let all = vec![
            put.clone(),
            WriteOp::Delete,
            WriteOp::Delta {
                base_back: 3,
                base_node: Some(9),
                created: None,
                script: vec![1, 2],
                lits: "x".into(),
            },
            WriteOp::Meta {
                op: Box::new(put),
                base: Stamp { time: 5, node: 2 },
                kind: MetaKind::Patch {
                    attrs: "{\"a\":1}".into(),
                },
            },
        ];
        for op in &all {
            match op {
                WriteOp::Put { .. }
                | WriteOp::Delete
                | WriteOp::Delta { .. }
                | WriteOp::Meta { .. } => {}
            }
        }
        all
    }

    fn entry(stamp: Stamp, ops: Vec<WriteOp>) -> LogEntry {
        LogEntry {
            seq: 1,
            stamp,
            local_time: stamp.time,
            writes: ops
                .into_iter()
                .enumerate()
                .map(|(i, op)| LogWrite {
                    table: "t".into(),
                    key: Key::Int(i as i64),
                    op,
                })
                .collect(),
            prior: Vec::new(),
        }
    }

    fn whole(op: WriteOp, base: Stamp) -> WriteOp {
        WriteOp::Meta {
            op: Box::new(op),
            base,
            kind: MetaKind::Whole,
        }
    }

    #[test]
    fn every_form_round_trips_and_whole_writes_get_shorter() {
        let stamp = Stamp {
            time: 0x0123_4567_89ab_0000,
            node: u64::MAX - 3,
        };
        let put = WriteOp::Put {
            json: "{\"id\":1,\"v\":2}".into(),
            created: stamp.time - 1000,
        };
        let mut ops = every_variant();
        ops.extend([
            // Same node, earlier time: the short form.
            whole(
                put.clone(),
                Stamp {
                    time: stamp.time - 70_000,
                    node: stamp.node,
                },
            ),
            // Another node's base.
            whole(
                WriteOp::Delete,
                Stamp {
                    time: stamp.time - 5,
                    node: 42,
                },
            ),
            // No base (a new record).
            whole(put.clone(), Stamp::default()),
            // A base from the future keeps the full form.
            whole(
                put.clone(),
                Stamp {
                    time: stamp.time + 5,
                    node: 1,
                },
            ),
            // A base equal in time, on another node.
            whole(
                put.clone(),
                Stamp {
                    time: stamp.time,
                    node: 0,
                },
            ),
            // Resolutions keep the full form.
            WriteOp::Meta {
                op: Box::new(put.clone()),
                base: Stamp { time: 3, node: 4 },
                kind: MetaKind::Resolution,
            },
        ]);
        for op in ops {
            let e = entry(stamp, vec![op.clone()]);
            let bytes = e.encode();
            assert_eq!(LogEntry::decode(&bytes).unwrap(), e, "{op:?}");
            let derived = postcard::to_allocvec(&e).unwrap();
            if compact(&op, stamp).is_some() {
                assert!(bytes.len() < derived.len(), "{op:?}: not shorter");
            } else {
                assert_eq!(bytes, derived, "{op:?}: other forms as derived");
            }
        }
        // The saving on the commonest write: a base a second back on the
        // same node.
        let op = whole(
            put,
            Stamp {
                time: stamp.time - (1000 << 16),
                node: stamp.node,
            },
        );
        let e = entry(stamp, vec![op]);
        let saved = postcard::to_allocvec(&e).unwrap().len() - e.encode().len();
        assert!(saved >= 14, "saved {saved} bytes");
    }

    #[test]
    fn hostile_compact_forms_are_corrupt_not_panics() {
        let stamp = Stamp { time: 100, node: 7 };
        let encode = |op: &WriteOp, back: Option<u64>, node: Option<u64>| {
            // Written the way `StoredOp` writes it, with any inner op.
            let mut bytes = postcard::to_allocvec(&(1u64, stamp, 100u64, 1u8)).unwrap();
            bytes.extend(postcard::to_allocvec(&("t", Key::Int(1))).unwrap());
            bytes.push(BASED as u8);
            bytes.extend(postcard::to_allocvec(&(op, back, node)).unwrap());
            bytes
        };
        let put = WriteOp::Put {
            json: "{\"id\":1}".into(),
            created: 1,
        };
        // The hand-made layout is the real one.
        let good = encode(&put, Some(40), None);
        let back = LogEntry::decode(&good).unwrap();
        assert_eq!(
            back.writes[0].op,
            whole(put.clone(), Stamp { time: 60, node: 7 })
        );
        for (op, back, node, what) in [
            (put.clone(), Some(101), None, "before time 0"),
            (put.clone(), None, Some(3), "without a base"),
            (
                whole(put.clone(), Stamp { time: 1, node: 1 }),
                Some(1),
                None,
                "other than",
            ),
        ] {
            match LogEntry::decode(&encode(&op, back, node)) {
                Err(Error::Corrupt(m)) => assert!(m.contains(what), "{m}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        for cut in 0..good.len() {
            assert!(LogEntry::decode(&good[..cut]).is_err());
        }
    }
}
