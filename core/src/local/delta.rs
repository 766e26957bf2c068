//! Attribute deltas: a record's new text as an edit of a version the
//! receiver already holds. The text is cut into its top-level members (the
//! spans between the object's braces, split at the commas outside strings
//! and nested values); the edit names, in the new order, runs of members
//! copied from the base and the literal text of every other member.
//! Rebuilding joins them with commas inside braces again, so the result is
//! the sender's text byte for byte whatever it holds (escapes, `1e400`,
//! `-0.0`, nested objects, whitespace): the split never interprets a value,
//! and any split rebuilds exactly.
//!
//! The script is a byte string of varints, bounded by what arrived: a run
//! `(n << 1) | 0, from` copies base members `from..from + n`; `(len << 1)
//! | 1` takes the next `len` bytes of the literals as one member.

use crate::error::{Error, Result};
use crate::local::codec::{Key, Stamp};
use crate::local::db::Database;
use crate::local::keys::row_key;
use crate::local::row::{decode_row, row_json};
use crate::local::storage::Space;

/// A delta is only worth sending when it is at most this share (in
/// percent) of the whole record's text: a record rewritten throughout
/// goes whole, which the receiver can apply without any base.
const WORTHWHILE_PERCENT: usize = 70;

/// The top-level members of an object's text, as spans, or `None` if the
/// text is not `{...}`.
fn members(text: &str) -> Option<Vec<&str>> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Some(out);
    }
    let bytes = inner.as_bytes();
    let (mut depth, mut in_str, mut escaped, mut start) = (0usize, false, false, 0);
    for (i, &b) in bytes.iter().enumerate() {
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            // Commas are ASCII, so these cuts are char boundaries.
            b',' if depth == 0 => {
                out.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&inner[start..]);
    Some(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(script: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *script.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The edit from `base` to `new` as `(script, literals)`, or `None` when
/// either is not an object's text or the edit would not be much smaller
/// than `new` itself.
pub fn encode(base: &str, new: &str) -> Option<(Vec<u8>, String)> {
    let old = members(base)?;
    let now = members(new)?;
    let index: std::collections::HashMap<&str, usize> =
        old.iter().enumerate().rev().map(|(i, m)| (*m, i)).collect();
    let (mut script, mut lits) = (Vec::new(), String::new());
    let mut run: Option<(usize, usize)> = None;
    let flush = |script: &mut Vec<u8>, run: &mut Option<(usize, usize)>| {
        if let Some((from, n)) = run.take() {
            put_varint(script, (n as u64) << 1);
            put_varint(script, from as u64);
        }
    };
    for m in now {
        match index.get(m) {
            Some(&i) => match &mut run {
                Some((from, n)) if *from + *n == i => *n += 1,
                _ => {
                    flush(&mut script, &mut run);
                    run = Some((i, 1));
                }
            },
            None => {
                flush(&mut script, &mut run);
                put_varint(&mut script, ((m.len() as u64) << 1) | 1);
                lits.push_str(m);
            }
        }
        if (script.len() + lits.len()) * 100 > new.len() * WORTHWHILE_PERCENT {
            return None;
        }
    }
    flush(&mut script, &mut run);
    ((script.len() + lits.len()) * 100 <= new.len() * WORTHWHILE_PERCENT).then_some((script, lits))
}

/// The new text from `base` and an edit of it. A script that does not fit
/// the base or its literals (a peer's fault, or a hostile one), or a
/// result over `max_bytes`, is an error and yields nothing.
pub fn rebuild(base: &str, script: &[u8], lits: &str, max_bytes: usize) -> Result<String> {
    let bad = |why: &str| {
        Error::Peer(format!(
            "attribute delta does not fit its base record: {why}; the peer's delta encoder is broken (set `deltas = false` for this peer to work around it)"
        ))
    };
    let old = members(base).ok_or_else(|| bad("the base is not an object's text"))?;
    let mut out = String::with_capacity(base.len() + lits.len() + 2);
    out.push('{');
    let (mut at, mut lit_at, mut first) = (0usize, 0usize, true);
    let mut sep = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
    };
    while at < script.len() {
        let op = take_varint(script, &mut at).ok_or_else(|| bad("truncated script"))?;
        let n = usize::try_from(op >> 1).map_err(|_| bad("count out of range"))?;
        if op & 1 == 1 {
            let end = lit_at
                .checked_add(n)
                .filter(|e| *e <= lits.len() && lits.is_char_boundary(*e))
                .ok_or_else(|| bad("a literal runs past the literals"))?;
            sep(&mut out);
            out.push_str(&lits[lit_at..end]);
            lit_at = end;
        } else {
            let from = take_varint(script, &mut at).ok_or_else(|| bad("truncated script"))?;
            let from = usize::try_from(from).map_err(|_| bad("index out of range"))?;
            let run = from
                .checked_add(n)
                .and_then(|end| old.get(from..end))
                .ok_or_else(|| bad("a copied member is not in the base"))?;
            for m in run {
                sep(&mut out);
                out.push_str(m);
            }
        }
        if out.len() > max_bytes {
            return Err(Error::RecordTooLarge {
                size: out.len(),
                limit: max_bytes,
            });
        }
    }
    if lit_at != lits.len() {
        return Err(bad("literals left over"));
    }
    out.push('}');
    if out.len() > max_bytes {
        return Err(Error::RecordTooLarge {
            size: out.len(),
            limit: max_bytes,
        });
    }
    Ok(out)
}

/// A delta reached the apply path without being rebuilt into a record.
pub(crate) fn unresolved() -> Error {
    Error::Peer(
        "an attribute delta reached the apply path unrebuilt; nothing of its transaction was applied (a bug: report it)".into(),
    )
}

/// A record's stored version: its stamp, and its text (`None` for a
/// tombstone).
pub(crate) struct Version {
    pub(crate) stamp: Stamp,
    pub(crate) created: u64,
    pub(crate) json: Option<String>,
}

impl Database {
    /// The version of `table`/`key` stored now, tombstones included.
    pub(crate) fn version(&self, table: &str, key: &Key) -> Result<Option<Version>> {
        let store = self.store()?;
        let def = self.table(table)?;
        let Some(v) = store.get(Space::Rows, &row_key(def.id, key))? else {
            return Ok(None);
        };
        let (header, body_at) = decode_row(&v)?;
        // A record with a merge state shows a merged row; what a sender's
        // delta edits is the last whole write it sent, which is the base.
        let rk = row_key(def.id, key);
        if let Some(side) = store.get(Space::Meta, &crate::local::side::side_key(&rk))? {
            if let Some(state) = crate::local::side::Side::decode(&side)?.state {
                return Ok(Some(Version {
                    stamp: state.base_stamp,
                    created: state.created,
                    json: state.base,
                }));
            }
        }
        let json = if header.tombstone {
            None
        } else {
            Some(row_json(&v, body_at)?.to_string())
        };
        Ok(Some(Version {
            stamp: header.stamp,
            created: header.created,
            json,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    fn round_trip(base: &str, new: &str) {
        if let Some((script, lits)) = encode(base, new) {
            assert_eq!(rebuild(base, &script, &lits, MAX).unwrap(), new);
        }
    }

    #[test]
    fn odd_values_rebuild_byte_for_byte() {
        let base = r#"{"id":1,"a":{"x":[1,{"y":"}]\","}]},"u":"\u00e9\ud83d\ude00","big":1e400,"z":-0.0,"s":"a,b","t":true,"n":null,"q":"long enough to be worth a delta"}"#;
        let cases = [
            // one value changed
            r#"{"id":1,"a":{"x":[1,{"y":"}]\","}]},"u":"\u00e9\ud83d\ude00","big":1e400,"z":-0.0,"s":"a,b","t":false,"n":null,"q":"long enough to be worth a delta"}"#,
            // reordered, one removed, one new
            r#"{"a":{"x":[1,{"y":"}]\","}]},"id":1,"big":1e400,"u":"\u00e9\ud83d\ude00","z":-0.0,"s":"a,b","q":"long enough to be worth a delta","new":{"k":[]}}"#,
            // a nested value changed
            r#"{"id":1,"a":{"x":[2]},"u":"\u00e9\ud83d\ude00","big":1e400,"z":-0.0,"s":"a,b","t":true,"n":null,"q":"long enough to be worth a delta"}"#,
        ];
        for new in cases {
            let (script, lits) = encode(base, new).expect("worth a delta");
            assert!(script.len() + lits.len() < new.len());
            assert_eq!(rebuild(base, &script, &lits, MAX).unwrap(), new);
        }
        // Not objects, or nothing in common: whole records.
        assert!(encode("[1]", base).is_none());
        assert!(encode(base, r#"{"id":2}"#).is_none());
        round_trip("{}", r#"{"a":1}"#);
        round_trip(r#"{"a":1}"#, "{}");
    }

    #[test]
    fn hostile_scripts_are_errors_never_a_panic_or_a_wrong_record() {
        let base = r#"{"id":1,"a":2}"#;
        let bad: &[(&[u8], &str)] = &[
            (&[2 << 1, 1], ""),                       // copies members 1..3 of 2
            (&[1 << 1, 0x80], ""),                    // truncated varint
            (&[0xff; 12], ""),                        // varint past 64 bits
            (&[(3 << 1) | 1], "ab"),                  // literal past the literals
            (&[(1 << 1) | 1], "ab"),                  // literals left over
            (&[(1 << 1) | 1], "\u{e9}"),              // literal cut inside a char
            (&[0xfe, 0xff, 0xff, 0xff, 0x0f, 0], ""), // a huge run
        ];
        for (script, lits) in bad {
            assert!(rebuild(base, script, lits, MAX).is_err(), "{script:?}");
        }
        // Oversized: a run repeated past the limit is refused as it grows.
        let mut script = Vec::new();
        for _ in 0..1000 {
            script.extend_from_slice(&[2 << 1, 0]);
        }
        assert!(matches!(
            rebuild(base, &script, "", 1000),
            Err(Error::RecordTooLarge { .. })
        ));
        assert!(rebuild("not an object", &[], "", MAX).is_err());
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            Just("1e400".to_string()),
            Just("-0.0".to_string()),
            "[a-z,{}\\[\\]\"é]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            "\\\\u00[0-9a-f]{2}".prop_map(|s| format!("\"{s}\"")),
            (any::<bool>(), "[a-z]{0,5}")
                .prop_map(|(b, s)| format!("{{\"n\":[{b},{{\"s\":\"{s},}}\"}}]}}")),
        ]
    }

    fn record() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec(("[a-e]{1,3}", value()), 0..12)
    }

    fn text(members: &[(String, String)]) -> String {
        let inner: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", inner.join(","))
    }

    proptest! {
        #[test]
        fn rebuild_of_delta_is_the_new_text(
            base in record(),
            edits in prop::collection::vec((0usize..16, value(), 0u8..4), 0..6),
        ) {
            let mut new = base.clone();
            for (i, v, kind) in edits {
                match kind {
                    0 if !new.is_empty() => { let n = new.len(); new[i % n].1 = v; }
                    1 if !new.is_empty() => { let n = new.len(); new.remove(i % n); }
                    2 if new.len() > 1 => { let n = new.len(); new.swap(i % n, (i + 1) % n); }
                    _ => new.push((format!("n{i}"), v)),
                }
            }
            let (b, n) = (text(&base), text(&new));
            if let Some((script, lits)) = encode(&b, &n) {
                prop_assert_eq!(rebuild(&b, &script, &lits, MAX).unwrap(), n);
            }
        }
    }
}
