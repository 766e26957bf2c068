//! JSON in (options, keys, ranges) and JSON out (records, events, log).

use std::ops::Bound;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tidelog_core::view::{self, ChangeEventView, LogEntryView, RecordView};
use tidelog_core::{
    ChangeEvent, Durability, EngineKind, Key, LogEntry, OpenOptions, PemSource, Record,
    ReplicationOptions, Security, TlsIdentity,
};

use crate::guard::{Fail, FfiResult};

fn shape(what: &str, e: serde_json::Error) -> Fail {
    Fail::invalid(format!("{what}: {e}"))
}

// ---- open options -----------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenJson {
    node_name: String,
    #[serde(default)]
    engine: Option<String>,
    #[serde(default)]
    durability: Option<Value>,
    #[serde(default)]
    memory_budget: Option<u64>,
    #[serde(default)]
    max_record_bytes: Option<u64>,
    #[serde(default)]
    max_clock_skew_ms: Option<u64>,
    #[serde(default)]
    expiry_interval_ms: Option<u64>,
    #[serde(default)]
    recover_prefix: bool,
}

pub(crate) fn open_options(v: Value) -> FfiResult<OpenOptions> {
    let j: OpenJson = serde_json::from_value(v).map_err(|e| shape("open options", e))?;
    let mut o = OpenOptions::new(j.node_name);
    if let Some(e) = j.engine {
        o = o.engine(e.parse::<EngineKind>()?);
    }
    if let Some(d) = j.durability {
        o = o.durability(durability(&d)?);
    }
    if let Some(b) = j.memory_budget {
        o = o.memory_budget(b);
    }
    if let Some(b) = j.max_record_bytes {
        let b = usize::try_from(b)
            .map_err(|_| Fail::invalid("open options: max_record_bytes is too large"))?;
        o = o.max_record_bytes(b);
    }
    if let Some(ms) = j.max_clock_skew_ms {
        o = o.max_clock_skew(Duration::from_millis(ms));
    }
    if let Some(ms) = j.expiry_interval_ms {
        if ms == 0 {
            return Err(Fail::invalid(
                "open options: expiry_interval_ms must be at least 1",
            ));
        }
        o = o.expiry_interval(Duration::from_millis(ms));
    }
    Ok(o.recover_prefix(j.recover_prefix))
}

fn durability(v: &Value) -> FfiResult<Durability> {
    let bad = || {
        Fail::invalid(format!(
            "open options: durability must be \"sync\", \"grouped\" or {{\"grouped_ms\": <n>}}, got {v}"
        ))
    };
    match v {
        Value::String(s) if s == "sync" => Ok(Durability::Sync),
        Value::String(s) if s == "grouped" => Ok(Durability::default()),
        Value::Object(m) if m.len() == 1 => {
            let ms = m
                .get("grouped_ms")
                .and_then(Value::as_u64)
                .ok_or_else(bad)?;
            if ms == 0 {
                return Err(Fail::invalid(
                    "open options: grouped_ms must be at least 1 (use \"sync\" for every commit)",
                ));
            }
            Ok(Durability::Grouped {
                interval: Duration::from_millis(ms),
            })
        }
        _ => Err(bad()),
    }
}

// ---- replication options ------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsJson {
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    ca: Option<String>,
    #[serde(default)]
    cert_pem: Option<String>,
    #[serde(default)]
    key_pem: Option<String>,
    #[serde(default)]
    ca_pem: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplJson {
    #[serde(default)]
    tls: Option<TlsJson>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    heartbeat_ms: Option<u64>,
    #[serde(default)]
    idle_timeout_ms: Option<u64>,
    #[serde(default)]
    connect_timeout_ms: Option<u64>,
    #[serde(default)]
    backoff_initial_ms: Option<u64>,
    #[serde(default)]
    backoff_max_ms: Option<u64>,
    #[serde(default)]
    max_frame_bytes: Option<usize>,
    #[serde(default)]
    batch_max_txns: Option<usize>,
    #[serde(default)]
    window_txns: Option<u64>,
    #[serde(default)]
    sync_chunk_rows: Option<usize>,
    #[serde(default)]
    worker_threads: Option<usize>,
}

fn pem_source(file: Option<String>, pem: Option<String>, what: &str) -> FfiResult<PemSource> {
    match (file, pem) {
        (Some(f), None) => Ok(PemSource::File(f.into())),
        (None, Some(p)) => Ok(PemSource::Pem(p.into_bytes())),
        _ => Err(Fail::invalid(format!(
            "replication options: tls needs exactly one of `{what}` (a PEM file path) and `{what}_pem` (PEM text)"
        ))),
    }
}

pub(crate) fn replication_options(v: Value) -> FfiResult<ReplicationOptions> {
    let j: ReplJson = serde_json::from_value(v).map_err(|e| shape("replication options", e))?;
    let security = match (j.tls, j.insecure) {
        (Some(t), false) => Security::MutualTls(TlsIdentity {
            cert_chain: pem_source(t.cert, t.cert_pem, "cert")?,
            key: pem_source(t.key, t.key_pem, "key")?,
            ca: pem_source(t.ca, t.ca_pem, "ca")?,
        }),
        (None, true) => Security::Insecure,
        _ => {
            return Err(Fail::invalid(
                "replication options: give either `tls` ({\"cert\",\"key\",\"ca\"}) or `\"insecure\": true`, not both or neither",
            ))
        }
    };
    let mut o = ReplicationOptions::new(security);
    let ms = Duration::from_millis;
    if let Some(v) = j.heartbeat_ms {
        o.heartbeat_interval = ms(v);
    }
    if let Some(v) = j.idle_timeout_ms {
        o.idle_timeout = ms(v);
    }
    if let Some(v) = j.connect_timeout_ms {
        o.connect_timeout = ms(v);
    }
    if let Some(v) = j.backoff_initial_ms {
        o.backoff_initial = ms(v);
    }
    if let Some(v) = j.backoff_max_ms {
        o.backoff_max = ms(v);
    }
    if let Some(v) = j.max_frame_bytes {
        o.max_frame_bytes = v;
    }
    if let Some(v) = j.batch_max_txns {
        o.batch_max_txns = v;
    }
    if let Some(v) = j.window_txns {
        o.window_txns = v;
    }
    if let Some(v) = j.sync_chunk_rows {
        o.sync_chunk_rows = v;
    }
    if let Some(v) = j.worker_threads {
        o.worker_threads = v;
    }
    Ok(o)
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
