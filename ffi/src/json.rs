//! JSON in (options, keys, ranges) and JSON out (records, events, log).

use std::ops::Bound;

use serde::Deserialize;
use serde_json::Value;
use tidelog_core::options;
use tidelog_core::view::{self, ChangeEventView, LogEntryView, RecordView};
use tidelog_core::{ChangeEvent, Key, LogEntry, OpenOptions, Record, ReplicationOptions};

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
//
// What C receives is the core's view of it (tidelog_core::view), serialised
// as it is: the header's descriptions of records, events and log entries
// are those structs' field docs.

/// One record as JSON text (with `__createdtime__`/`__updatedtime__`).
pub(crate) fn record(r: &Record) -> String {
    let mut out = String::with_capacity(r.body_json().len() + 80);
    // The view's own serialisation, written without a parser: a point read
    // is the C ABI's hottest path.
    RecordView::of(r).write_json(&mut out);
    out
}

/// `[record, ...]`.
pub(crate) fn records(rs: &[Record]) -> String {
    view::records_json(rs.iter().map(Some))
}

/// `[record or null, ...]`.
pub(crate) fn maybe_records(rs: &[Option<Record>]) -> String {
    view::records_json(rs.iter().map(Option::as_ref))
}

/// One change event, as listeners receive it.
pub(crate) fn event(e: &ChangeEvent) -> FfiResult<String> {
    to_text(&ChangeEventView::of(e))
}

/// `[entry, ...]` for the log readers.
pub(crate) fn log_entries(entries: &[LogEntry], own_node: u64) -> FfiResult<String> {
    let views: Vec<LogEntryView<'_>> = entries
        .iter()
        .map(|e| LogEntryView::of(e, own_node))
        .collect();
    to_text(&views)
}

pub(crate) fn to_text<T: serde::Serialize>(v: &T) -> FfiResult<String> {
    serde_json::to_string(v).map_err(|e| Fail::invalid(format!("cannot encode result: {e}")))
}
