//! The consumer's side of the stream: what a message says (its headers)
//! and whether it is newer than what the consumer already applied.
//!
//! The server drops a republished write only within the stream's duplicate
//! window. A sink replaying from an older resume point after that window
//! (a hub down for longer than it), or two hubs publishing the same write
//! far apart, leaves a second copy in the stream; messages of one key can
//! also arrive out of stamp order across reconnects. A consumer that keeps
//! the greatest stamp per (table, key) and skips any message with an older
//! or equal stamp ends with exactly the last writer's state.

use std::collections::HashMap;

use async_nats::HeaderMap;

use crate::local::codec::{Key, Stamp};

/// Header: the write's table.
pub const HEADER_TABLE: &str = "Tidelog-Table";
/// Header: the key as JSON (a number or a string).
pub const HEADER_KEY: &str = "Tidelog-Key";
/// Header: the write's stamp, `<time>:<node>` in decimal.
pub const HEADER_STAMP: &str = "Tidelog-Stamp";
/// Header: `true` for a tombstone (the payload is then empty), else `false`.
pub const HEADER_DELETED: &str = "Tidelog-Deleted";

/// What a message's headers say about the write it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteMeta {
    pub table: String,
    pub key: Key,
    pub stamp: Stamp,
    /// A delete: the payload is empty and the record is gone as of `stamp`.
    pub deleted: bool,
}

/// A message whose tidelog headers are missing or malformed: it was not
/// published by a tidelog sink, or was altered on the way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message header {header}: {problem}; tidelog sinks always set it, so this message did not come from one (check the stream's subjects)")]
pub struct HeaderError {
    pub header: &'static str,
    pub problem: String,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, HeaderError> {
    headers
        .get(name)
        .map(|v| v.as_str())
        .ok_or_else(|| HeaderError {
            header: name,
            problem: "missing".into(),
        })
}

/// Formats a stamp as the `Tidelog-Stamp` header does.
pub fn stamp_header(stamp: &Stamp) -> String {
    format!("{}:{}", stamp.time, stamp.node)
}

fn parse_stamp(text: &str) -> Option<Stamp> {
    let (time, node) = text.split_once(':')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(time) || !digits(node) {
        return None;
    }
    Some(Stamp {
        time: time.parse().ok()?,
        node: node.parse().ok()?,
    })
}

impl WriteMeta {
    /// Reads the tidelog headers of a message.
    pub fn from_headers(headers: &HeaderMap) -> Result<WriteMeta, HeaderError> {
        let table = header(headers, HEADER_TABLE)?.to_string();
        if table.is_empty() {
            return Err(HeaderError {
                header: HEADER_TABLE,
                problem: "empty".into(),
            });
        }
        let key_text = header(headers, HEADER_KEY)?;
        let key = match serde_json::from_str::<serde_json::Value>(key_text) {
            Ok(serde_json::Value::String(s)) => Key::Str(s),
            Ok(serde_json::Value::Number(n)) if n.as_i64().is_some() => {
                Key::Int(n.as_i64().unwrap_or_default())
            }
            _ => {
                return Err(HeaderError {
                    header: HEADER_KEY,
                    problem: format!("`{key_text}` is not a JSON string or 64-bit integer"),
                })
            }
        };
        let stamp_text = header(headers, HEADER_STAMP)?;
        let stamp = parse_stamp(stamp_text).ok_or_else(|| HeaderError {
            header: HEADER_STAMP,
            problem: format!("`{stamp_text}` is not `<time>:<node>` in decimal"),
        })?;
        let deleted = match header(headers, HEADER_DELETED)? {
            "true" => true,
            "false" => false,
            other => {
                return Err(HeaderError {
                    header: HEADER_DELETED,
                    problem: format!("`{other}` is neither `true` nor `false`"),
                })
            }
        };
        Ok(WriteMeta {
            table,
            key,
            stamp,
            deleted,
        })
    }
}

/// Whether a consumer applies a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Newer than anything seen for its key: apply it (a tombstone: delete).
    Apply,
    /// An older or equal stamp (a copy past the duplicate window, or a
    /// late older write): leave the key as it is.
    Skip,
}

/// The last-writer-wins guard for consumers of a tidelog stream.
///
/// Feed it every message in the order the consumer receives them; apply
/// exactly those it answers [`Verdict::Apply`] for. It keeps one stamp per
/// (table, key) in memory, tombstones included (so a late older write
/// cannot bring a deleted record back). A consumer that stores its state
/// elsewhere (a database) should store the stamp next to each row and
/// compare the same way; this type is that rule in memory:
///
/// ```
/// # use tidelog::cloud::jetstream::{StampGuard, Verdict, WriteMeta};
/// # use tidelog::{Key, Stamp};
/// let mut guard = StampGuard::new();
/// let w = |t| WriteMeta { table: "alerts".into(), key: Key::Int(1), stamp: Stamp { time: t, node: 7 }, deleted: false };
/// assert_eq!(guard.check(&w(2)), Verdict::Apply);
/// assert_eq!(guard.check(&w(2)), Verdict::Skip); // the same write again
/// assert_eq!(guard.check(&w(1)), Verdict::Skip); // an older write, late
/// ```
#[derive(Debug, Default)]
pub struct StampGuard {
    latest: HashMap<(String, Key), Stamp>,
}

impl StampGuard {
    pub fn new() -> StampGuard {
        StampGuard::default()
    }

    /// Reads a message's headers and judges it.
    pub fn check_headers(
        &mut self,
        headers: &HeaderMap,
    ) -> Result<(Verdict, WriteMeta), HeaderError> {
        let meta = WriteMeta::from_headers(headers)?;
        Ok((self.check(&meta), meta))
    }

    /// Judges a write and, when it is newer, remembers its stamp.
    pub fn check(&mut self, meta: &WriteMeta) -> Verdict {
        match self.latest.get_mut(&(meta.table.clone(), meta.key.clone())) {
            Some(seen) if *seen >= meta.stamp => Verdict::Skip,
            Some(seen) => {
                *seen = meta.stamp;
                Verdict::Apply
            }
            None => {
                self.latest
                    .insert((meta.table.clone(), meta.key.clone()), meta.stamp);
                Verdict::Apply
            }
        }
    }

    /// Keys seen so far.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    }

    const GOOD: [(&str, &str); 4] = [
        (HEADER_TABLE, "alerts"),
        (HEADER_KEY, "\"a.b\""),
        (HEADER_STAMP, "1234:7"),
        (HEADER_DELETED, "false"),
    ];

    #[test]
    fn reads_good_headers() {
        let meta = WriteMeta::from_headers(&headers(&GOOD)).expect("good headers");
        assert_eq!(
            meta,
            WriteMeta {
                table: "alerts".into(),
                key: Key::Str("a.b".into()),
                stamp: Stamp {
                    time: 1234,
                    node: 7
                },
                deleted: false,
            }
        );
    }

    #[test]
    fn refuses_hostile_headers() {
        let cases: &[(&str, &str)] = &[
            (HEADER_TABLE, ""),
            (HEADER_KEY, "not json"),
            (HEADER_KEY, "1.5"),
            (HEADER_KEY, "{}"),
            (HEADER_KEY, "18446744073709551615"),
            (HEADER_STAMP, "12"),
            (HEADER_STAMP, "1:"),
            (HEADER_STAMP, "-1:2"),
            (HEADER_STAMP, "+1:2"),
            (HEADER_STAMP, "99999999999999999999:1"),
            (HEADER_DELETED, "yes"),
        ];
        for (name, value) in cases {
            let mut pairs = GOOD.to_vec();
            for p in pairs.iter_mut() {
                if p.0 == *name {
                    p.1 = value;
                }
            }
            let err = WriteMeta::from_headers(&headers(&pairs)).expect_err(value);
            assert_eq!(err.header, *name, "{value}");
        }
        for missing in GOOD.iter().map(|p| p.0) {
            let pairs: Vec<_> = GOOD.iter().copied().filter(|p| p.0 != missing).collect();
            let err = WriteMeta::from_headers(&headers(&pairs)).expect_err(missing);
            assert_eq!((err.header, err.problem.as_str()), (missing, "missing"));
        }
    }

    #[test]
    fn guard_keeps_the_greatest_stamp_per_key() {
        let mut g = StampGuard::new();
        let w = |table: &str, key: i64, time: u64, node: u64| WriteMeta {
            table: table.into(),
            key: Key::Int(key),
            stamp: Stamp { time, node },
            deleted: false,
        };
        assert_eq!(g.check(&w("t", 1, 5, 1)), Verdict::Apply);
        assert_eq!(g.check(&w("t", 1, 5, 1)), Verdict::Skip);
        assert_eq!(g.check(&w("t", 1, 4, 9)), Verdict::Skip);
        // Same time, greater node: the later writer in stamp order.
        assert_eq!(g.check(&w("t", 1, 5, 2)), Verdict::Apply);
        // Another table, same key: its own history.
        assert_eq!(g.check(&w("u", 1, 1, 1)), Verdict::Apply);
        assert_eq!(g.len(), 2);
    }
}
