//! JSON in (options, keys, ranges) and JSON out (records, events, log).

use std::fmt::Write as _;
use std::ops::Bound;

use serde::Deserialize;
use serde_json::Value;
use tidelog_core::options;
use tidelog_core::{
    ChangeEvent, Key, LogEntry, OpenOptions, Record, ReplicationOptions, Stamp, WriteOp,
};

use crate::guard::{Fail, FfiResult};

fn shape(what: &str, e: serde_json::Error) -> Fail {
    Fail::invalid(format!("{what}: {e}"))
}

// ---- options ------------------------------------------------------------
//
// Decoded by core's one options schema (`tidelog::options`): the units,
// ranges, older spellings and error messages are the same as in Python,
// Node and the serve config.

pub(crate) fn open_options(v: Value) -> FfiResult<OpenOptions> {
    Ok(options::open_from_json(v)?)
}

pub(crate) fn replication_options(v: Value) -> FfiResult<ReplicationOptions> {
    Ok(options::replication_from_json(v)?)
}

// ---- keys and ranges ----------------------------------------------------

/// A key from its JSON text. Plain integers and plain strings (no escapes),
/// the common case on the point-read path, skip the JSON parser; anything
/// else goes through it, so the accepted language is exactly JSON.
pub(crate) fn key_text(text: &str, what: &str) -> FfiResult<Key> {
    let b = text.as_bytes();
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if !digits.is_empty()
        && digits.len() <= 18
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || digits == b"0")
        // JSON's -0 is a float, not an integer key.
        && text != "-0"
    {
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Key::Int(i));
        }
    }
    if b.len() >= 2
        && b[0] == b'"'
        && b[b.len() - 1] == b'"'
        && b[1..b.len() - 1]
            .iter()
            .all(|&c| c >= 0x20 && c != b'"' && c != b'\\')
    {
        return Ok(Key::Str(text[1..text.len() - 1].to_string()));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| {
        Fail::new(
            crate::tidelog_status::TIDELOG_INVALID_JSON,
            format!("argument `{what}` is not valid JSON: {e}"),
        )
    })?;
    key(&v, what)
}

pub(crate) fn key(v: &Value, what: &str) -> FfiResult<Key> {
    Key::from_json(v).ok_or_else(|| {
        Fail::invalid(format!(
            "{what} must be a JSON string or an integer that fits in 64 bits, got {v}"
        ))
    })
}

pub(crate) fn keys(v: &Value) -> FfiResult<Vec<Key>> {
    match v {
        Value::Array(items) => items.iter().map(|k| key(k, "each key")).collect(),
        other => Err(Fail::invalid(format!(
            "keys must be a JSON array of keys, got {other}"
        ))),
    }
}

/// `{"gt"|"gte": v, "lt"|"lte": v, "reverse": b, "limit": n}`, all optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeJson {
    #[serde(default)]
    gt: Option<Value>,
    #[serde(default)]
    gte: Option<Value>,
    #[serde(default)]
    lt: Option<Value>,
    #[serde(default)]
    lte: Option<Value>,
    #[serde(default)]
    pub(crate) reverse: bool,
    #[serde(default)]
    pub(crate) limit: Option<usize>,
}

impl RangeJson {
    pub(crate) fn parse(v: Option<Value>, what: &str) -> FfiResult<RangeJson> {
        let r: RangeJson = match v {
            None => RangeJson::default(),
            Some(v) => serde_json::from_value(v).map_err(|e| shape(what, e))?,
        };
        if r.gt.is_some() && r.gte.is_some() || r.lt.is_some() && r.lte.is_some() {
            return Err(Fail::invalid(format!(
                "{what}: give at most one of gt/gte and one of lt/lte"
            )));
        }
        Ok(r)
    }

    pub(crate) fn lower(&self) -> Bound<&Value> {
        match (&self.gt, &self.gte) {
            (Some(v), _) => Bound::Excluded(v),
            (_, Some(v)) => Bound::Included(v),
            _ => Bound::Unbounded,
        }
    }

    pub(crate) fn upper(&self) -> Bound<&Value> {
        match (&self.lt, &self.lte) {
            (Some(v), _) => Bound::Excluded(v),
            (_, Some(v)) => Bound::Included(v),
            _ => Bound::Unbounded,
        }
    }
}

pub(crate) fn key_bound(b: Bound<&Value>) -> FfiResult<Bound<Key>> {
    Ok(match b {
        Bound::Included(v) => Bound::Included(key(v, "a scan bound")?),
        Bound::Excluded(v) => Bound::Excluded(key(v, "a scan bound")?),
        Bound::Unbounded => Bound::Unbounded,
    })
}

// ---- output ---------------------------------------------------------------

fn push_json_str(out: &mut String, s: &str) {
    // Serializing a str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn push_stamp(out: &mut String, s: &Stamp) {
    let _ = write!(
        out,
        "\"origin\":{},\"origin_hex\":\"{:016x}\",\"stamp\":{{\"time\":{},\"node\":{}}}",
        s.node, s.node, s.time, s.node
    );
}

/// One record as JSON text, with room for the C string's NUL.
pub(crate) fn record(r: &Record) -> String {
    let mut out = String::with_capacity(r.body_json().len() + 80);
    r.write_json(&mut out);
    out
}

/// `[record, ...]` (each with `__createdtime__`/`__updatedtime__`).
pub(crate) fn records(rs: &[Record]) -> String {
    let mut out = String::with_capacity(2 + rs.len() * 64);
    out.push('[');
    for (i, r) in rs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        r.write_json(&mut out);
    }
    out.push(']');
    out
}

/// `[record or null, ...]`.
pub(crate) fn maybe_records(rs: &[Option<Record>]) -> String {
    let mut out = String::with_capacity(2 + rs.len() * 64);
    out.push('[');
    for (i, r) in rs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match r {
            Some(r) => r.write_json(&mut out),
            None => out.push_str("null"),
        }
    }
    out.push(']');
    out
}

/// One change event, as listeners receive it.
pub(crate) fn event(e: &ChangeEvent) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("{\"table\":");
    push_json_str(&mut out, &e.table);
    let _ = write!(out, ",\"seq\":{},\"local\":{},", e.seq, e.local);
    push_stamp(&mut out, &e.stamp);
    let _ = write!(out, ",\"updated_ms\":{},\"changes\":[", e.stamp.millis());
    for (i, c) in e.changes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        c.write_json(&mut out);
    }
    out.push_str("]}");
    out
}

/// `[entry, ...]` for the log readers.
pub(crate) fn log_entries(entries: &[LogEntry], own_node: u64) -> String {
    let mut out = String::from("[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"seq\":{},\"local\":{},\"local_time\":{},\"committed_ms\":{},",
            e.seq,
            e.origin() == own_node,
            e.local_time,
            Stamp {
                time: e.local_time,
                node: 0
            }
            .millis()
        );
        push_stamp(&mut out, &e.stamp);
        out.push_str(",\"writes\":[");
        for (j, w) in e.writes.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str("{\"table\":");
            push_json_str(&mut out, &w.table);
            out.push_str(",\"key\":");
            w.key.write_json(&mut out);
            match &w.op {
                WriteOp::Put { json, .. } => {
                    out.push_str(",\"op\":\"put\",\"record\":");
                    out.push_str(json);
                }
                WriteOp::Delete => out.push_str(",\"op\":\"delete\""),
            }
            out.push('}');
        }
        out.push_str("]}");
    }
    out.push(']');
    out
}

pub(crate) fn to_text<T: serde::Serialize>(v: &T) -> FfiResult<String> {
    serde_json::to_string(v).map_err(|e| Fail::invalid(format!("cannot encode result: {e}")))
}
