//! Byte layouts of stored keys and values. Keys are order-preserving, so the
//! engine's byte order is the order users see: integers before strings,
//! integers numerically, strings bytewise; index values null < false < true <
//! numbers < strings.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A primary-key value: a string or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Key {
    Int(i64),
    Str(String),
}

impl Key {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Key::Int(i) => serde_json::Value::from(*i),
            Key::Str(s) => serde_json::Value::from(s.as_str()),
        }
    }

    /// Appends the key as JSON text (a number or a quoted string); the
    /// bindings build event and log JSON with it.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Key::Int(i) => out.push_str(&i.to_string()),
            // Serializing a str cannot fail.
            Key::Str(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
        }
    }

    /// Reads a key from a JSON value; `None` if it is neither a string nor an
    /// integer that fits in i64.
    pub fn from_json(v: &serde_json::Value) -> Option<Key> {
        match v {
            serde_json::Value::String(s) => Some(Key::Str(s.clone())),
            serde_json::Value::Number(n) => n.as_i64().map(Key::Int),
            _ => None,
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<i64> for Key {
    fn from(i: i64) -> Self {
        Key::Int(i)
    }
}
impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key::Str(s.to_string())
    }
}
impl From<String> for Key {
    fn from(s: String) -> Self {
        Key::Str(s)
    }
}

const TAG_NULL: u8 = 0x01;
const TAG_FALSE: u8 = 0x02;
const TAG_TRUE: u8 = 0x03;
const TAG_NUM: u8 = 0x04;
const TAG_INT: u8 = 0x10;
const TAG_STR: u8 = 0x20;

/// Strings are escaped so that a terminator can follow them and still keep
/// byte order: 0x00 becomes 0x00 0xFF, and 0x00 0x00 ends the string.
fn put_escaped(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

fn take_escaped(buf: &[u8]) -> Result<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < buf.len() {
        let b = buf[i];
        if b == 0 {
            match buf.get(i + 1) {
                Some(0) => return Ok((out, i + 2)),
                Some(0xFF) => {
                    out.push(0);
                    i += 2;
                    continue;
                }
                _ => return Err(Error::Corrupt("bad string escape in key".into())),
            }
        }
        out.push(b);
        i += 1;
    }
    Err(Error::Corrupt("unterminated string in key".into()))
}

pub(crate) fn put_key(out: &mut Vec<u8>, key: &Key) {
    match key {
        Key::Int(i) => {
            out.push(TAG_INT);
            out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
        }
        Key::Str(s) => {
            out.push(TAG_STR);
            put_escaped(out, s.as_bytes());
        }
    }
}

/// Decodes a key at the start of `buf`, returning it and its encoded length.
pub(crate) fn take_key(buf: &[u8]) -> Result<(Key, usize)> {
    match buf.first() {
        Some(&TAG_INT) => {
            let bytes: [u8; 8] = buf
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| Error::Corrupt("short integer key".into()))?;
            Ok((Key::Int((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64), 9))
        }
        Some(&TAG_STR) => {
            let (raw, used) = take_escaped(&buf[1..])?;
            let s =
                String::from_utf8(raw).map_err(|_| Error::Corrupt("key is not UTF-8".into()))?;
            Ok((Key::Str(s), used + 1))
        }
        _ => Err(Error::Corrupt("unknown key tag".into())),
    }
}

/// Encodes a JSON scalar for an index; `None` for arrays and objects.
pub(crate) fn put_index_value(out: &mut Vec<u8>, v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => out.push(TAG_NULL),
        Value::Bool(false) => out.push(TAG_FALSE),
        Value::Bool(true) => out.push(TAG_TRUE),
        Value::Number(n) => {
            // All numbers share one f64 order; integers beyond 2^53 may share
            // an index slot with neighbours, so finds re-check the record.
            let f = n.as_f64().unwrap_or(0.0);
            let f = if f == 0.0 { 0.0 } else { f };
            let bits = f.to_bits();
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits | (1 << 63)
            };
            out.push(TAG_NUM);
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        Value::String(s) => {
            out.push(TAG_STR);
            put_escaped(out, s.as_bytes());
        }
        Value::Array(_) | Value::Object(_) => return false,
    }
    true
}

/// Whether an encoded index value may stand for more than one JSON value:
/// only numbers at or beyond 2^53, where distinct integers share an f64.
pub(crate) fn index_value_is_inexact(buf: &[u8]) -> bool {
    if buf.first() != Some(&TAG_NUM) || buf.len() < 9 {
        return false;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[1..9]);
    let ordered = u64::from_be_bytes(b);
    let bits = if ordered >> 63 == 1 {
        ordered & !(1 << 63)
    } else {
        !ordered
    };
    f64::from_bits(bits).abs() >= 9_007_199_254_740_992.0
}

/// Length of the encoded index value at the start of `buf`.
pub(crate) fn index_value_len(buf: &[u8]) -> Result<usize> {
    match buf.first() {
        Some(&TAG_NULL) | Some(&TAG_FALSE) | Some(&TAG_TRUE) => Ok(1),
        Some(&TAG_NUM) if buf.len() >= 9 => Ok(9),
        Some(&TAG_STR) => Ok(take_escaped(&buf[1..])?.1 + 1),
        _ => Err(Error::Corrupt("bad index value".into())),
    }
}

/// A version stamp: hybrid-logical-clock time, then origin node id.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Stamp {
    /// Hybrid logical clock value: milliseconds since the epoch in the high
    /// 48 bits, a logical counter in the low 16.
    pub time: u64,
    /// Node id of the instance that made the write.
    pub node: u64,
}

impl Stamp {
    /// Wall-clock milliseconds part of the stamp.
    pub fn millis(&self) -> u64 {
        self.time >> crate::local::hlc::LOGICAL_BITS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc_key(k: &Key) -> Vec<u8> {
        let mut v = vec![];
        put_key(&mut v, k);
        v
    }

    fn enc_val(v: &serde_json::Value) -> Vec<u8> {
        let mut out = vec![];
        assert!(put_index_value(&mut out, v));
        out
    }

    fn key_strategy() -> impl Strategy<Value = Key> {
        prop_oneof![
            any::<i64>().prop_map(Key::Int),
            ".*".prop_map(Key::Str),
            proptest::collection::vec(prop_oneof![Just(0u8), Just(0xFFu8), any::<u8>()], 0..6)
                .prop_map(|b| Key::Str(String::from_utf8_lossy(&b).into_owned())),
        ]
    }

    proptest! {
        #[test]
        fn key_encoding_preserves_order_and_round_trips(a in key_strategy(), b in key_strategy()) {
            let (ea, eb) = (enc_key(&a), enc_key(&b));
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
            let (back, used) = take_key(&ea).unwrap();
            prop_assert_eq!(back, a);
            prop_assert_eq!(used, ea.len());
        }

        #[test]
        fn number_index_order_matches_numeric_order(a in any::<f64>(), b in any::<f64>()) {
            prop_assume!(a.is_finite() && b.is_finite());
            let (ea, eb) = (enc_val(&serde_json::json!(a)), enc_val(&serde_json::json!(b)));
            let expect = a.partial_cmp(&b).unwrap();
            if a == b { prop_assert_eq!(ea, eb); } else { prop_assert_eq!(expect, ea.cmp(&eb)); }
        }

        #[test]
        fn string_index_values_are_prefix_free(a in ".*", b in ".*") {
            let ea = enc_val(&serde_json::json!(a));
            let eb = enc_val(&serde_json::json!(b));
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
            prop_assert_eq!(index_value_len(&ea).unwrap(), ea.len());
            if a != b { prop_assert!(!eb.starts_with(&ea)); }
        }

        #[test]
        fn key_json_text_matches_the_json_value(k in key_strategy()) {
            let mut text = String::new();
            k.write_json(&mut text);
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, k.to_json());
        }

        #[test]
        fn take_key_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = take_key(&bytes);
            let _ = index_value_len(&bytes);
        }
    }

    #[test]
    fn only_huge_numbers_are_inexact_in_indexes() {
        use serde_json::json;
        for (v, inexact) in [
            (json!(1), false),
            (json!(-2.5), false),
            (json!("x"), false),
            (json!(9_007_199_254_740_991i64), false),
            (json!(9_007_199_254_740_993i64), true),
            (json!(-9_007_199_254_740_993i64), true),
        ] {
            assert_eq!(index_value_is_inexact(&enc_val(&v)), inexact, "{v}");
        }
    }

    #[test]
    fn type_order_in_indexes() {
        use serde_json::json;
        let vals = [
            json!(null),
            json!(false),
            json!(true),
            json!(-5),
            json!(2.5),
            json!(""),
            json!("a"),
        ];
        for w in vals.windows(2) {
            assert!(enc_val(&w[0]) < enc_val(&w[1]), "{} < {}", w[0], w[1]);
        }
        assert!(enc_key(&Key::Int(i64::MAX)) < enc_key(&Key::Str(String::new())));
        assert_eq!(enc_val(&json!(0.0)), enc_val(&json!(-0.0)));
    }
}
