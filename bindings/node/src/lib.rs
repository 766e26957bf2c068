//! Node.js binding of tidelog (napi-rs 3).
//!
//! This crate is the native half; `index.js` is the public JavaScript API
//! and turns what these classes return into plain objects and typed errors.
//! Records cross the boundary as JSON text (`JSON.stringify` / `JSON.parse`
//! in JavaScript, serde_json here): measured faster than building objects
//! property by property through napi (see `bench/bench.js`). The per-record
//! hot paths, `get` and `upsert`, are raw Node-API functions in fast.rs,
//! and a get hands most records over laid out rather than as JSON text.
//!
//! Errors thrown from here carry `code` = one of the tidelog codes
//! (`NOT_FOUND`, `INVALID_INPUT`, ...). Rejections of async tasks carry the
//! code as a `[TIDELOG:<CODE>] ` prefix of the message, because libuv task
//! errors only hold a napi status; `index.js` turns both into `TidelogError`
//! subclasses.
//!
//! Threads: every call here runs on the JavaScript thread except the
//! `AsyncTask`s (libuv worker pool) and the change-listener closures, which
//! run on tidelog's `tidelog-events` thread and only queue JSON text onto a
//! threadsafe function.

#![allow(clippy::new_without_default)]

mod fast;
mod layout;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use napi::bindgen_prelude::{AsyncTask, BigInt, Either3, Function, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status, Task};
use napi_derive::napi;
use serde_json::Value;

use tidelog::log::WriteOp;
use tidelog::{
    ChangeEvent, CommitInfo, Database, Durability, EngineKind, ErrorKind, Key, ListenerId,
    LogEntry, OpenOptions, PeerConfig, PeerStatus, Record, ReplicationOptions, ScanOptions,
    Security, Stamp, TableFlow, TableInfo, TableOptions, TlsIdentity, Transaction,
};

// ---- errors -------------------------------------------------------------

/// Every error thrown to JavaScript: the tidelog code travels as a
/// `[TIDELOG:<CODE>] ` prefix of the message (napi-derive only throws
/// errors with a napi status), which index.js strips into `err.code`.
type R<T> = napi::Result<T>;

fn code_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidInput => "INVALID_INPUT",
        ErrorKind::NotFound => "NOT_FOUND",
        ErrorKind::AlreadyExists => "ALREADY_EXISTS",
        ErrorKind::Closed => "CLOSED",
        ErrorKind::Locked => "LOCKED",
        ErrorKind::Storage => "STORAGE",
        ErrorKind::Corrupt => "CORRUPT",
        ErrorKind::ClockSkew => "CLOCK_SKEW",
        ErrorKind::Timeout => "TIMEOUT",
        ErrorKind::Tls => "TLS",
        ErrorKind::Peer => "PEER",
        ErrorKind::Unsupported => "UNSUPPORTED",
    }
}

fn err(e: tidelog::Error) -> napi::Error {
    napi::Error::new(
        Status::GenericFailure,
        format!("[TIDELOG:{}] {e}", code_of(e.kind())),
    )
}

fn invalid(msg: impl Into<String>) -> napi::Error {
    napi::Error::new(
        Status::InvalidArg,
        format!("[TIDELOG:INVALID_INPUT] {}", msg.into()),
    )
}

trait OrJs<T> {
    fn js(self) -> napi::Result<T>;
}

impl<T> OrJs<T> for tidelog::Result<T> {
    fn js(self) -> napi::Result<T> {
        self.map_err(err)
    }
}

// ---- conversions --------------------------------------------------------

type JsKey = Either3<String, i64, BigInt>;

fn key_of(k: JsKey) -> napi::Result<Key> {
    match k {
        Either3::A(s) => Ok(Key::Str(s)),
        Either3::B(i) => Ok(Key::Int(i)),
        Either3::C(b) => match b.get_i64() {
            (i, true) => Ok(Key::Int(i)),
            _ => Err(invalid(
                "invalid key: a bigint key must fit in a signed 64-bit integer",
            )),
        },
    }
}

fn key_of_value(v: &Value, what: &str) -> napi::Result<Key> {
    Key::from_json(v).ok_or_else(|| {
        invalid(format!(
            "invalid {what}: primary key values are strings or integers"
        ))
    })
}

fn hex(id: u64) -> String {
    format!("{id:016x}")
}

/// A non-negative integer option given as a JS number.
fn uint(what: &str, v: f64) -> napi::Result<u64> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0 {
        Ok(v as u64)
    } else {
        Err(invalid(format!(
            "invalid {what}: must be a non-negative integer, got {v}"
        )))
    }
}

fn millis(what: &str, v: f64) -> napi::Result<Duration> {
    uint(what, v).map(Duration::from_millis)
}

fn push_json_str(out: &mut String, s: &str) {
    // Serializing a str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// `{"time":"<decimal>","node":"<hex>"}`: the time does not fit a JS
/// number, so it travels as text and becomes a bigint in index.js.
fn push_stamp(out: &mut String, s: &Stamp) {
    let _ = write!(
        out,
        "{{\"time\":\"{}\",\"node\":\"{:016x}\"}}",
        s.time, s.node
    );
}

fn records_json(records: &[Record]) -> String {
    let mut out = String::with_capacity(2 + records.len() * 96);
    out.push('[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        r.write_json(&mut out);
    }
    out.push(']');
    out
}

/// A log write's record with the two time attributes reads add.
fn push_logged_record(out: &mut String, json: &str, created: u64, stamp: &Stamp) {
    let created_ms = Stamp {
        time: created,
        node: 0,
    }
    .millis();
    let _ = write!(
        out,
        "{{\"__createdtime__\":{created_ms},\"__updatedtime__\":{}",
        stamp.millis()
    );
    let rest = json.strip_prefix('{').unwrap_or("}");
    if rest.trim_start() != "}" {
        out.push(',');
    }
    out.push_str(rest);
}

fn log_json(entries: &[LogEntry]) -> String {
    let mut out = String::from("[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let local_ms = Stamp {
            time: e.local_time,
            node: 0,
        }
        .millis();
        let _ = write!(out, "{{\"seq\":{},\"stamp\":", e.seq);
        push_stamp(&mut out, &e.stamp);
        let _ = write!(
            out,
            ",\"origin\":\"{:016x}\",\"localTimeMs\":{local_ms},\"writes\":[",
            e.origin()
        );
        for (j, w) in e.writes.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str("{\"table\":");
            push_json_str(&mut out, &w.table);
            out.push_str(",\"key\":");
            w.key.write_json(&mut out);
            match &w.op {
                WriteOp::Put { json, created } => {
                    out.push_str(",\"op\":\"put\",\"record\":");
                    push_logged_record(&mut out, json, *created, &e.stamp);
                }
                WriteOp::Delete => out.push_str(",\"op\":\"delete\",\"record\":null"),
            }
            out.push('}');
        }
        out.push_str("]}");
    }
    out.push(']');
    out
}

fn event_json(ev: &ChangeEvent) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("{\"table\":");
    push_json_str(&mut out, &ev.table);
    let _ = write!(
        out,
        ",\"seq\":{},\"origin\":\"{:016x}\",\"local\":{},\"stamp\":",
        ev.seq,
        ev.origin(),
        ev.local
    );
    push_stamp(&mut out, &ev.stamp);
    out.push_str(",\"changes\":[");
    for (i, c) in ev.changes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        c.write_json(&mut out);
    }
    out.push_str("]}");
    out
}

/// Parses record JSON text into the value the core API takes, with the
/// core's typed errors (not an object, invalid JSON).
fn record_value(json: &str) -> napi::Result<Value> {
    tidelog::record::parse_object(json).map(Value::Object).js()
}

// ---- plain objects ------------------------------------------------------

#[napi(object)]
pub struct OpenOpts {
    pub node_name: String,
    /// "fjall" (default) or "sled".
    pub engine: Option<String>,
    /// "grouped" (default) or "sync".
    pub durability: Option<String>,
    pub flush_interval_ms: Option<f64>,
    pub memory_budget: Option<f64>,
    pub max_record_bytes: Option<f64>,
    pub max_clock_skew_ms: Option<f64>,
    pub expiry_interval_ms: Option<f64>,
}

#[napi(object)]
pub struct TableOpts {
    pub primary_key: Option<String>,
    pub indexes: Option<Vec<String>>,
    pub expiration: Option<f64>,
}

#[napi(object, object_from_js = false)]
pub struct TableInfoObj {
    pub name: String,
    pub primary_key: String,
    pub indexes: Vec<String>,
    pub expiration: Option<f64>,
}

impl From<TableInfo> for TableInfoObj {
    fn from(t: TableInfo) -> Self {
        TableInfoObj {
            name: t.name,
            primary_key: t.primary_key,
            indexes: t.indexes,
            expiration: t.expiration.map(|e| e as f64),
        }
    }
}

#[napi(object, object_from_js = false)]
pub struct CommitObj {
    pub seq: f64,
    pub time: u64,
    pub node: String,
}

#[napi(object)]
pub struct RangeOpts {
    pub gt: Option<Value>,
    pub gte: Option<Value>,
    pub lt: Option<Value>,
    pub lte: Option<Value>,
    pub reverse: Option<bool>,
    pub limit: Option<f64>,
}

#[napi(object, object_from_js = false)]
pub struct LogBoundsObj {
    pub first: f64,
    pub last: f64,
}

#[napi(object)]
pub struct TlsOpts {
    /// Path of this node's PEM certificate chain, or the PEM text itself.
    pub cert: String,
    /// Path of this node's PEM private key, or the PEM text itself.
    pub key: String,
    /// Path of the PEM CA bundle that signs every peer, or the PEM text.
    pub ca: String,
}

#[napi(object)]
pub struct ReplicationOpts {
    pub tls: Option<TlsOpts>,
    pub insecure: Option<bool>,
    pub heartbeat_interval_ms: Option<f64>,
    pub idle_timeout_ms: Option<f64>,
    pub connect_timeout_ms: Option<f64>,
    pub backoff_initial_ms: Option<f64>,
    pub backoff_max_ms: Option<f64>,
    pub max_frame_bytes: Option<f64>,
    pub batch_max_txns: Option<f64>,
    pub window_txns: Option<f64>,
    pub sync_chunk_rows: Option<f64>,
    pub worker_threads: Option<f64>,
}

#[napi(object)]
pub struct TableFlowObj {
    pub table: String,
    pub publish: Option<bool>,
    pub subscribe: Option<bool>,
    pub since_ms: Option<f64>,
    pub priority: Option<u32>,
}

#[napi(object)]
pub struct PeerOpts {
    pub name: String,
    pub address: Option<String>,
    pub tables: Option<Vec<TableFlowObj>>,
}

#[napi(object, object_from_js = false)]
pub struct TableStatusObj {
    pub table: String,
    pub publish: bool,
    pub subscribe: bool,
    pub inbound: String,
    pub outbound: String,
}

#[napi(object, object_from_js = false)]
pub struct PeerStatusObj {
    pub name: String,
    pub address: Option<String>,
    pub connected: bool,
    pub since_ms: Option<f64>,
    pub last_error: Option<String>,
    pub node_id: Option<String>,
    pub tables: Vec<TableStatusObj>,
    pub sent_seq: f64,
    pub acked_seq: f64,
    pub received_seq: f64,
    pub backlog_txns: f64,
    pub backlog_bytes: f64,
    pub lag_ms: f64,
    pub refused_writes: f64,
    pub syncs_received: f64,
    pub connects: f64,
}

impl From<PeerStatus> for PeerStatusObj {
    fn from(p: PeerStatus) -> Self {
        PeerStatusObj {
            name: p.name,
            address: p.address,
            connected: p.connected,
            since_ms: p.since_ms.map(|v| v as f64),
            last_error: p.last_error,
            node_id: p.node_id.map(hex),
            tables: p
                .tables
                .into_iter()
                .map(|t| TableStatusObj {
                    table: t.table,
                    publish: t.publish,
                    subscribe: t.subscribe,
                    inbound: t.inbound,
                    outbound: t.outbound,
                })
                .collect(),
            sent_seq: p.sent_seq as f64,
            acked_seq: p.acked_seq as f64,
            received_seq: p.received_seq as f64,
            backlog_txns: p.backlog_txns as f64,
            backlog_bytes: p.backlog_bytes as f64,
            lag_ms: p.lag_ms as f64,
            refused_writes: p.refused_writes as f64,
            syncs_received: p.syncs_received as f64,
            connects: p.connects as f64,
        }
    }
}

#[napi(object, object_from_js = false)]
pub struct NodeCertObj {
    pub name: String,
    pub cert: String,
    pub key: String,
}

#[napi(object, object_from_js = false)]
pub struct DevCertsObj {
    pub ca: String,
    pub nodes: Vec<NodeCertObj>,
}

fn commit_obj(c: CommitInfo) -> CommitObj {
    CommitObj {
        seq: c.seq as f64,
        time: c.stamp.time,
        node: hex(c.stamp.node),
    }
}

fn open_options(o: OpenOpts) -> napi::Result<OpenOptions> {
    let mut opts = OpenOptions::new(o.node_name);
    match o.engine.as_deref() {
        None | Some("fjall") => opts = opts.engine(EngineKind::Fjall),
        Some("sled") => opts = opts.engine(EngineKind::Sled),
        Some(other) => {
            return Err(invalid(format!(
                "invalid engine: `{other}` must be \"fjall\" or \"sled\""
            )))
        }
    }
    let interval = match o.flush_interval_ms {
        Some(v) => millis("flushIntervalMs", v)?,
        None => Duration::from_millis(50),
    };
    match o.durability.as_deref() {
        None | Some("grouped") => opts = opts.durability(Durability::Grouped { interval }),
        Some("sync") => opts = opts.durability(Durability::Sync),
        Some(other) => {
            return Err(invalid(format!(
                "invalid durability: `{other}` must be \"grouped\" or \"sync\""
            )))
        }
    }
    if let Some(v) = o.memory_budget {
        opts = opts.memory_budget(uint("memoryBudget", v)?);
    }
    if let Some(v) = o.max_record_bytes {
        opts = opts.max_record_bytes(uint("maxRecordBytes", v)? as usize);
    }
    if let Some(v) = o.max_clock_skew_ms {
        opts = opts.max_clock_skew(millis("maxClockSkewMs", v)?);
    }
    if let Some(v) = o.expiry_interval_ms {
        let d = millis("expiryIntervalMs", v)?;
        if d.is_zero() {
            return Err(invalid("invalid expiryIntervalMs: must be at least 1"));
        }
        opts = opts.expiry_interval(d);
    }
    Ok(opts)
}

fn table_options(o: Option<TableOpts>) -> napi::Result<TableOptions> {
    let mut t = TableOptions::default();
    if let Some(o) = o {
        if let Some(pk) = o.primary_key {
            t.primary_key = pk;
        }
        if let Some(ix) = o.indexes {
            t.indexes = ix;
        }
        if let Some(e) = o.expiration {
            t.expiration = Some(uint("expiration", e)?);
        }
    }
    Ok(t)
}

fn pem_or_path(s: String) -> tidelog::PemSource {
    if s.trim_start().starts_with("-----BEGIN") {
        tidelog::PemSource::Pem(s.into_bytes())
    } else {
        tidelog::PemSource::File(PathBuf::from(s))
    }
}

fn replication_options(o: ReplicationOpts) -> napi::Result<ReplicationOptions> {
    let security = match (o.tls, o.insecure.unwrap_or(false)) {
        (Some(_), true) => {
            return Err(invalid(
                "invalid replication options: give either `tls` or `insecure: true`, not both",
            ))
        }
        (Some(t), false) => Security::MutualTls(TlsIdentity {
            cert_chain: pem_or_path(t.cert),
            key: pem_or_path(t.key),
            ca: pem_or_path(t.ca),
        }),
        (None, true) => Security::Insecure,
        (None, false) => {
            return Err(invalid(
                "invalid replication options: mutual TLS needs `tls: { cert, key, ca }`; plaintext needs an explicit `insecure: true`",
            ))
        }
    };
    let mut r = ReplicationOptions::new(security);
    if let Some(v) = o.heartbeat_interval_ms {
        r.heartbeat_interval = millis("heartbeatIntervalMs", v)?;
    }
    if let Some(v) = o.idle_timeout_ms {
        r.idle_timeout = millis("idleTimeoutMs", v)?;
    }
    if let Some(v) = o.connect_timeout_ms {
        r.connect_timeout = millis("connectTimeoutMs", v)?;
    }
    if let Some(v) = o.backoff_initial_ms {
        r.backoff_initial = millis("backoffInitialMs", v)?;
    }
    if let Some(v) = o.backoff_max_ms {
        r.backoff_max = millis("backoffMaxMs", v)?;
    }
    if let Some(v) = o.max_frame_bytes {
        r.max_frame_bytes = uint("maxFrameBytes", v)? as usize;
    }
    if let Some(v) = o.batch_max_txns {
        r.batch_max_txns = uint("batchMaxTxns", v)? as usize;
    }
    if let Some(v) = o.window_txns {
        r.window_txns = uint("windowTxns", v)?;
    }
    if let Some(v) = o.sync_chunk_rows {
        r.sync_chunk_rows = uint("syncChunkRows", v)? as usize;
    }
    if let Some(v) = o.worker_threads {
        r.worker_threads = uint("workerThreads", v)? as usize;
    }
    Ok(r)
}

fn peer_config(p: PeerOpts) -> napi::Result<PeerConfig> {
    let mut c = PeerConfig::new(p.name);
    c.address = p.address;
    for t in p.tables.unwrap_or_default() {
        c.tables.push(TableFlow {
            table: t.table,
            publish: t.publish.unwrap_or(false),
            subscribe: t.subscribe.unwrap_or(false),
            since_ms: t.since_ms.map(|v| uint("sinceMs", v)).transpose()?,
            priority: match t.priority {
                None => 0,
                Some(p) => u8::try_from(p).map_err(|_| {
                    invalid("invalid priority: must be 0 to 255 (higher is sent first)")
                })?,
            },
        });
    }
    Ok(c)
}

fn bounds(o: &RangeOpts) -> napi::Result<(Bound<&Value>, Bound<&Value>)> {
    let lower = match (&o.gt, &o.gte) {
        (Some(_), Some(_)) => return Err(invalid("invalid range: give `gt` or `gte`, not both")),
        (Some(v), None) => Bound::Excluded(v),
        (None, Some(v)) => Bound::Included(v),
        (None, None) => Bound::Unbounded,
    };
    let upper = match (&o.lt, &o.lte) {
        (Some(_), Some(_)) => return Err(invalid("invalid range: give `lt` or `lte`, not both")),
        (Some(v), None) => Bound::Excluded(v),
        (None, Some(v)) => Bound::Included(v),
        (None, None) => Bound::Unbounded,
    };
    Ok((lower, upper))
}

fn key_bound(b: Bound<&Value>, what: &str) -> napi::Result<Bound<Key>> {
    Ok(match b {
        Bound::Included(v) => Bound::Included(key_of_value(v, what)?),
        Bound::Excluded(v) => Bound::Excluded(key_of_value(v, what)?),
        Bound::Unbounded => Bound::Unbounded,
    })
}

fn limit_of(v: Option<f64>) -> napi::Result<Option<usize>> {
    v.map(|l| uint("limit", l).map(|l| l as usize)).transpose()
}

// ---- listeners ----------------------------------------------------------

/// One event on its way to JavaScript.
pub struct Ev {
    local: bool,
    json: String,
}

/// Weak (unreferenced) threadsafe function: by itself it never keeps the
/// event loop alive. See [`Keep`] for the one time it does.
type EventFn = ThreadsafeFunction<Ev, (), String, Status, false, true, 0>;

/// Keep-alive state of one listener, touched only on the JavaScript thread.
///
/// A change committed from JavaScript reaches the listener a moment later
/// (through the `tidelog-events` thread). So that a script which writes and
/// then ends still sees its own events, each such commit to the listener's
/// table counts one owed event and references the threadsafe function; each
/// local event delivered pays one back, and at zero it is unreferenced
/// again. Every local commit to a table produces exactly one event for each
/// of its listeners, so the count always returns to zero (it may dip below
/// for commits it did not count, which only means less keeping alive);
/// remote changes never hold the loop open.
#[derive(Default)]
struct Keep {
    owed: i64,
    referred: bool,
    /// The raw threadsafe function (0 once it is being released).
    raw: usize,
}

struct ListenerSlot {
    table: String,
    tsfn: Mutex<Option<EventFn>>,
    keep: Mutex<Keep>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ListenerSlot {
    /// Takes the threadsafe function out (to release it by dropping it).
    fn take(&self) -> Option<EventFn> {
        lock(&self.keep).raw = 0;
        lock(&self.tsfn).take()
    }

    /// JavaScript thread: a local commit touched this listener's table.
    fn owe(&self, env: &Env) {
        let mut k = lock(&self.keep);
        k.owed += 1;
        if k.owed > 0 && !k.referred && k.raw != 0 {
            // SAFETY: `raw` is this slot's live threadsafe function (it is
            // zeroed before the function is released), used on its JS thread.
            let status = unsafe {
                napi::sys::napi_ref_threadsafe_function(
                    env.raw(),
                    k.raw as napi::sys::napi_threadsafe_function,
                )
            };
            k.referred = status == napi::sys::Status::napi_ok;
        }
    }

    /// JavaScript thread: an event is being handed to the listener.
    fn delivered(&self, env: &Env, local: bool) {
        let mut k = lock(&self.keep);
        if local {
            k.owed -= 1;
        }
        if k.referred && k.owed <= 0 && k.raw != 0 {
            // SAFETY: as in `owe`.
            unsafe {
                napi::sys::napi_unref_threadsafe_function(
                    env.raw(),
                    k.raw as napi::sys::napi_threadsafe_function,
                )
            };
            k.referred = false;
        }
    }
}

// ---- the database -------------------------------------------------------

/// The native database handle. Use the `Database` class of index.js.
#[napi]
pub struct NativeDb {
    db: Database,
    node_hex: String,
    listeners: Slots,
}

type Slots = Arc<Mutex<HashMap<u64, Arc<ListenerSlot>>>>;

/// `owe_events` for the raw functions of fast.rs.
///
/// # Safety
/// `env` must be the env of a callback running on the JavaScript thread.
unsafe fn owe_events_raw(slots: &Slots, env: napi::sys::napi_env, table: &str) {
    owe_events(slots, &Env::from(env), [table]);
}

fn owe_events<'a>(slots: &Slots, env: &Env, tables: impl IntoIterator<Item = &'a str>) {
    let slots = lock(slots);
    if slots.is_empty() {
        return;
    }
    for t in tables {
        for s in slots.values().filter(|s| s.table == t) {
            s.owe(env);
        }
    }
}

#[napi]
impl NativeDb {
    #[napi(factory)]
    pub fn open(dir: String, opts: OpenOpts) -> napi::Result<NativeDb> {
        let db = Database::open(dir, open_options(opts)?).js()?;
        Ok(NativeDb {
            node_hex: hex(db.node_id()),
            db,
            listeners: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn get_key(&self, table: &str, key: Key) -> napi::Result<Option<String>> {
        Ok(self.db.get(table, key).js()?.map(|r| r.to_json_string()))
    }

    /// JavaScript thread, after a local commit to `tables` (each once):
    /// hold the loop open until their listeners got its events.
    fn owe_events<'a>(&self, env: &Env, tables: impl IntoIterator<Item = &'a str>) {
        owe_events(&self.listeners, env, tables);
    }

    /// Closes the database, then releases every listener's threadsafe
    /// function. Events committed before the close are still delivered
    /// (the function is referenced while its queue drains), after which
    /// nothing of this database keeps the process alive.
    #[napi]
    pub fn close(&self, env: Env) -> napi::Result<()> {
        let result = self.db.close();
        let slots: Vec<Arc<ListenerSlot>> = lock(&self.listeners).drain().map(|(_, s)| s).collect();
        for s in slots {
            if let Some(mut tsfn) = s.take() {
                // Hold the loop open just until the queued events ran; the
                // release below lets the function finish after that.
                #[allow(deprecated)]
                let _ = tsfn.refer(&env);
                drop(tsfn);
            }
        }
        result.js()
    }

    #[napi(getter)]
    pub fn node_name(&self) -> String {
        self.db.node_name().to_string()
    }

    #[napi(getter)]
    pub fn node_id(&self) -> String {
        self.node_hex.clone()
    }

    #[napi(getter)]
    pub fn path(&self) -> String {
        self.db.path().display().to_string()
    }

    #[napi(getter)]
    pub fn engine(&self) -> String {
        match self.db.engine() {
            EngineKind::Sled => "sled".into(),
            _ => "fjall".into(),
        }
    }

    #[napi(getter)]
    pub fn is_closed(&self) -> bool {
        self.db.is_closed()
    }

    #[napi]
    pub fn flush(&self) -> napi::Result<()> {
        self.db.flush().js()
    }

    #[napi]
    pub fn disk_bytes(&self) -> napi::Result<f64> {
        self.db.disk_bytes().js().map(|b| b as f64)
    }

    // ---- tables

    #[napi]
    pub fn create_table(
        &self,
        name: String,
        opts: Option<TableOpts>,
    ) -> napi::Result<TableInfoObj> {
        self.db
            .create_table(&name, table_options(opts)?)
            .js()
            .map(Into::into)
    }

    #[napi]
    pub fn ensure_table(&self, name: String, opts: Option<TableOpts>) -> napi::Result<bool> {
        self.db.ensure_table(&name, table_options(opts)?).js()
    }

    #[napi]
    pub fn drop_table(&self, name: String) -> napi::Result<()> {
        self.db.drop_table(&name).js()
    }

    #[napi]
    pub fn list_tables(&self) -> napi::Result<Vec<TableInfoObj>> {
        Ok(self
            .db
            .list_tables()
            .js()?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    #[napi]
    pub fn describe_table(&self, name: String) -> napi::Result<TableInfoObj> {
        self.db.describe_table(&name).js().map(Into::into)
    }

    // ---- writes (record = JSON text)

    #[napi]
    pub fn insert(&self, env: Env, table: String, json: String) -> napi::Result<CommitObj> {
        let v = record_value(&json)?;
        let c = self.db.insert(&table, v).js()?;
        self.owe_events(&env, [table.as_str()]);
        Ok(commit_obj(c))
    }

    #[napi]
    pub fn upsert(&self, env: Env, table: String, json: String) -> napi::Result<CommitObj> {
        let v = record_value(&json)?;
        let c = self.db.upsert(&table, v).js()?;
        self.owe_events(&env, [table.as_str()]);
        Ok(commit_obj(c))
    }

    #[napi]
    pub fn update(&self, env: Env, table: String, json: String) -> napi::Result<CommitObj> {
        let v = record_value(&json)?;
        let c = self.db.update(&table, v).js()?;
        self.owe_events(&env, [table.as_str()]);
        Ok(commit_obj(c))
    }

    #[napi]
    pub fn delete(&self, env: Env, table: String, key: JsKey) -> napi::Result<bool> {
        let existed = self.db.delete(&table, key_of(key)?).js()?;
        self.owe_events(&env, [table.as_str()]);
        Ok(existed)
    }

    #[napi]
    pub fn transaction(&self) -> NativeTx {
        NativeTx {
            tx: Some(self.db.transaction()),
            tables: Vec::new(),
            listeners: self.listeners.clone(),
        }
    }

    // ---- reads (records = JSON text)

    /// Any key type; index.js calls it for what fast.rs's `getInt` /
    /// `getStr` do not take (bigints, arguments of the wrong type, which
    /// napi-rs reports in its usual terms).
    #[napi]
    pub fn get(&self, table: String, key: JsKey) -> napi::Result<Option<String>> {
        self.get_key(&table, key_of(key)?)
    }

    #[napi]
    pub fn get_many(&self, table: String, keys: Vec<JsKey>) -> napi::Result<String> {
        let keys = keys.into_iter().map(key_of).collect::<R<Vec<Key>>>()?;
        let found = self.db.get_many(&table, &keys).js()?;
        let mut out = String::from("[");
        for (i, r) in found.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match r {
                Some(r) => r.write_json(&mut out),
                None => out.push_str("null"),
            }
        }
        out.push(']');
        Ok(out)
    }

    #[napi]
    pub fn scan(&self, table: String, opts: RangeOpts) -> napi::Result<String> {
        let (lo, hi) = bounds(&opts)?;
        let scan = ScanOptions {
            start: key_bound(lo, "scan bound")?,
            end: key_bound(hi, "scan bound")?,
            reverse: opts.reverse.unwrap_or(false),
            limit: limit_of(opts.limit)?,
        };
        Ok(records_json(&self.db.scan(&table, &scan).js()?))
    }

    #[napi]
    pub fn find(&self, table: String, attribute: String, opts: RangeOpts) -> napi::Result<String> {
        if opts.reverse.is_some() {
            return Err(invalid("invalid find options: `reverse` is only for scan"));
        }
        let (lo, hi) = bounds(&opts)?;
        let found = self
            .db
            .find(&table, &attribute, lo, hi, limit_of(opts.limit)?)
            .js()?;
        Ok(records_json(&found))
    }

    #[napi]
    pub fn find_eq(&self, table: String, attribute: String, value: Value) -> napi::Result<String> {
        Ok(records_json(
            &self.db.find_eq(&table, &attribute, &value).js()?,
        ))
    }

    #[napi]
    pub fn count(&self, table: String) -> napi::Result<f64> {
        self.db.count(&table).js().map(|n| n as f64)
    }

    // ---- log

    #[napi]
    pub fn log_bounds(&self) -> napi::Result<LogBoundsObj> {
        let b = self.db.log_bounds().js()?;
        Ok(LogBoundsObj {
            first: b.first as f64,
            last: b.last as f64,
        })
    }

    #[napi]
    pub fn read_log(&self, from_seq: f64, limit: f64) -> napi::Result<String> {
        let from = uint("fromSeq", from_seq)?;
        let limit = uint("limit", limit)? as usize;
        Ok(log_json(&self.db.read_log(from, limit).js()?))
    }

    #[napi]
    pub fn read_log_since(&self, since_ms: f64, limit: f64) -> napi::Result<String> {
        let since = uint("sinceMs", since_ms)?;
        let limit = uint("limit", limit)? as usize;
        Ok(log_json(&self.db.read_log_since(since, limit).js()?))
    }

    // ---- listeners

    /// Registers `callback(eventJson)` for changes to `table`. The
    /// threadsafe function is weak: it never keeps the process alive (apart
    /// from delivering the events of this script's own commits, see `Keep`).
    #[napi]
    pub fn on_change(&self, table: String, callback: Function<String, ()>) -> napi::Result<f64> {
        let slot = Arc::new(ListenerSlot {
            table: table.clone(),
            tsfn: Mutex::new(None),
            keep: Mutex::new(Keep::default()),
        });
        let weak = Arc::downgrade(&slot);
        let tsfn: EventFn = callback
            .build_threadsafe_function::<Ev>()
            .weak::<true>()
            .callee_handled::<false>()
            .build_callback(
                move |ctx: napi::threadsafe_function::ThreadsafeCallContext<Ev>| {
                    if let Some(slot) = weak.upgrade() {
                        slot.delivered(&ctx.env, ctx.value.local);
                    }
                    Ok(ctx.value.json)
                },
            )
            .map_err(|e| invalid(e.reason.clone()))?;
        lock(&slot.keep).raw = tsfn.raw() as usize;
        *lock(&slot.tsfn) = Some(tsfn);
        let target = slot.clone();
        let id = self.db.on_change(&table, move |ev| {
            let guard = lock(&target.tsfn);
            if let Some(tsfn) = guard.as_ref() {
                let ev = Ev {
                    local: ev.local,
                    json: event_json(ev),
                };
                let _ = tsfn.call(ev, ThreadsafeFunctionCallMode::NonBlocking);
            }
        });
        let id = match id {
            Ok(id) => id,
            Err(e) => {
                drop(slot.take());
                return Err(err(e));
            }
        };
        lock(&self.listeners).insert(id.0, slot);
        Ok(id.0 as f64)
    }

    #[napi]
    pub fn remove_listener(&self, id: f64) -> napi::Result<bool> {
        let id = uint("listener id", id)?;
        let slot = lock(&self.listeners).remove(&id);
        let found = self.db.remove_listener(ListenerId(id));
        if let Some(s) = slot {
            drop(s.take());
        }
        Ok(found)
    }

    // ---- replication

    #[napi]
    pub fn start_replication(&self, opts: ReplicationOpts) -> napi::Result<()> {
        self.db.start_replication(replication_options(opts)?).js()
    }

    #[napi]
    pub fn listen(&self, addr: String) -> napi::Result<String> {
        self.db.listen(&addr).js().map(|a| a.to_string())
    }

    #[napi]
    pub fn add_peer(&self, peer: PeerOpts) -> napi::Result<()> {
        self.db.add_peer(peer_config(peer)?).js()
    }

    #[napi]
    pub fn update_peer(&self, peer: PeerOpts) -> napi::Result<()> {
        self.db.update_peer(peer_config(peer)?).js()
    }

    #[napi]
    pub fn remove_peer(&self, name: String) -> napi::Result<()> {
        self.db.remove_peer(&name).js()
    }

    #[napi]
    pub fn peer_status(&self, name: String) -> napi::Result<PeerStatusObj> {
        self.db.peer_status(&name).js().map(Into::into)
    }

    #[napi]
    pub fn replication_status(&self) -> napi::Result<Vec<PeerStatusObj>> {
        Ok(self
            .db
            .replication_status()
            .js()?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Resolves once `peer` acknowledged this instance's log up to `seq`.
    /// The wait runs on the libuv worker pool, never on the event loop.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn wait_for_ack(
        &self,
        peer: String,
        seq: f64,
        timeout_ms: f64,
    ) -> napi::Result<AsyncTask<WaitAck>> {
        Ok(AsyncTask::new(WaitAck {
            db: self.db.clone(),
            peer,
            seq: uint("seq", seq)?,
            timeout: millis("timeoutMs", timeout_ms)?,
        }))
    }

    /// `{ getInt, getStr, upsert, shape, slots }`: raw Node-API functions
    /// bound to this database for index.js's hot paths (see fast.rs).
    #[napi(js_name = "_fast", ts_return_type = "unknown")]
    pub fn fast(&self, env: Env) -> napi::Result<Unknown<'_>> {
        // SAFETY: `env` is this call's env.
        let v = unsafe { fast::functions(env.raw(), self.db.clone(), self.listeners.clone())? };
        // SAFETY: `v` is a live value of this call's scope.
        Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), v) })
    }

    // ---- measurement helpers (not public API)

    /// The benchmark's upsert loop in Rust on this same database: records
    /// `from..to` of the benchmark's shape into `table`, each built inside
    /// the loop as a JavaScript loop builds its object. Returns seconds.
    #[napi(js_name = "_rustUpserts")]
    pub fn rust_upserts(&self, table: String, from: u32, to: u32) -> napi::Result<f64> {
        let t0 = Instant::now();
        for i in i64::from(from)..i64::from(to) {
            let rec = serde_json::json!({
                "id": i,
                "sensor": format!("s-{}", i % 100),
                "value": i as f64 * 0.5,
                "ts": 1_700_000_000_000i64 + i,
            });
            self.db.upsert(&table, rec).js()?;
        }
        Ok(t0.elapsed().as_secs_f64())
    }

    /// The benchmark's point-get loop in Rust: keys `from..to` of `table`,
    /// each record as the Rust API returns it (its JSON text, unparsed),
    /// or, with `parse`, also turned into a `serde_json::Value`. Returns
    /// seconds; fails if a record is missing.
    #[napi(js_name = "_rustGets")]
    pub fn rust_gets(&self, table: String, from: u32, to: u32, parse: bool) -> napi::Result<f64> {
        let t0 = Instant::now();
        let mut sum = 0.0;
        for i in i64::from(from)..i64::from(to) {
            let Some(r) = self.db.get(&table, i).js()? else {
                return Err(napi::Error::from_reason(format!(
                    "no record {i} in {table}"
                )));
            };
            sum += if parse {
                r.to_value()["value"].as_f64().unwrap_or(0.0)
            } else {
                r.body_json().len() as f64
            };
        }
        std::hint::black_box(sum);
        Ok(t0.elapsed().as_secs_f64())
    }

    /// Upsert taking a JS object converted field by field (napi serde-json),
    /// to compare with the JSON-text path.
    #[napi(js_name = "_upsertValue")]
    pub fn upsert_value(&self, table: String, record: Value) -> napi::Result<CommitObj> {
        self.db.upsert(&table, record).js().map(commit_obj)
    }

    /// Get returning a JS object built field by field (napi serde-json).
    #[napi(js_name = "_getValue")]
    pub fn get_value(&self, table: String, key: JsKey) -> napi::Result<Option<Value>> {
        Ok(self
            .db
            .get(&table, key_of(key)?)
            .js()?
            .map(|r| r.to_value()))
    }
}

// ---- transactions -------------------------------------------------------

/// A transaction being built; index.js drives it from `db.transaction(fn)`.
#[napi]
pub struct NativeTx {
    tx: Option<Transaction>,
    /// Tables written, each once (for the listeners' keep-alive).
    tables: Vec<String>,
    listeners: Slots,
}

fn finished() -> napi::Error {
    invalid("invalid transaction: it was already committed or rolled back; start a new one")
}

#[napi]
impl NativeTx {
    fn open(&mut self, table: &str) -> napi::Result<&mut Transaction> {
        let tx = self.tx.as_mut().ok_or_else(finished)?;
        if !self.tables.iter().any(|t| t == table) {
            self.tables.push(table.to_string());
        }
        Ok(tx)
    }

    #[napi]
    pub fn insert(&mut self, table: String, json: String) -> napi::Result<()> {
        let v = record_value(&json)?;
        self.open(&table)?.insert(&table, v).js().map(|_| ())
    }

    #[napi]
    pub fn upsert(&mut self, table: String, json: String) -> napi::Result<()> {
        let v = record_value(&json)?;
        self.open(&table)?.upsert(&table, v).js().map(|_| ())
    }

    #[napi]
    pub fn update(&mut self, table: String, json: String) -> napi::Result<()> {
        let v = record_value(&json)?;
        self.open(&table)?.update(&table, v).js().map(|_| ())
    }

    #[napi]
    pub fn delete(&mut self, table: String, key: JsKey) -> napi::Result<()> {
        let k = key_of(key)?;
        self.open(&table)?.delete(&table, k).js().map(|_| ())
    }

    #[napi(getter)]
    pub fn length(&self) -> u32 {
        self.tx.as_ref().map_or(0, |t| t.len() as u32)
    }

    #[napi(getter)]
    pub fn finished(&self) -> bool {
        self.tx.is_none()
    }

    #[napi]
    pub fn commit(&mut self, env: Env) -> napi::Result<CommitObj> {
        let tx = self.tx.take().ok_or_else(finished)?;
        let c = tx.commit().js()?;
        if c.seq > 0 {
            owe_events(
                &self.listeners,
                &env,
                self.tables.iter().map(String::as_str),
            );
        }
        Ok(commit_obj(c))
    }

    /// Commits on the libuv worker pool (useful with `durability: "sync"`,
    /// where a commit waits for the disk).
    #[napi(ts_return_type = "Promise<CommitObj>")]
    pub fn commit_async(&mut self) -> napi::Result<AsyncTask<CommitTask>> {
        let tx = self.tx.take().ok_or_else(finished)?;
        Ok(AsyncTask::new(CommitTask {
            tx: Some(tx),
            tables: std::mem::take(&mut self.tables),
            listeners: self.listeners.clone(),
        }))
    }

    /// Discards every staged write.
    #[napi]
    pub fn rollback(&mut self) {
        self.tx = None;
        self.tables.clear();
    }
}

// ---- async tasks --------------------------------------------------------

pub struct WaitAck {
    db: Database,
    peer: String,
    seq: u64,
    timeout: Duration,
}

impl Task for WaitAck {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        self.db
            .wait_for_ack(&self.peer, self.seq, self.timeout)
            .map_err(err)
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> napi::Result<()> {
        Ok(())
    }
}

pub struct CommitTask {
    tx: Option<Transaction>,
    tables: Vec<String>,
    listeners: Slots,
}

impl Task for CommitTask {
    type Output = CommitInfo;
    type JsValue = CommitObj;

    fn compute(&mut self) -> napi::Result<CommitInfo> {
        match self.tx.take() {
            Some(tx) => tx.commit().map_err(err),
            None => Err(napi::Error::new(
                Status::GenericFailure,
                "[TIDELOG:INVALID_INPUT] invalid transaction: already committed",
            )),
        }
    }

    fn resolve(&mut self, env: Env, output: CommitInfo) -> napi::Result<CommitObj> {
        if output.seq > 0 {
            owe_events(
                &self.listeners,
                &env,
                self.tables.iter().map(String::as_str),
            );
        }
        Ok(commit_obj(output))
    }
}

// ---- development certificates -------------------------------------------

/// Writes a development CA (`ca.pem`, `ca.key`) and a certificate and key
/// per node name into `out_dir` (which must not hold them yet).
#[napi]
pub fn dev_certs(
    out_dir: String,
    nodes: Vec<String>,
    ca_name: Option<String>,
) -> napi::Result<DevCertsObj> {
    let dir = PathBuf::from(&out_dir);
    let files = tidelog::net::certs::generate_dev_pki(
        &dir,
        ca_name.as_deref().unwrap_or("tidelog development CA"),
        &nodes,
    )
    .js()?;
    let (ca, _) = tidelog::net::certs::ca_paths(&dir);
    Ok(DevCertsObj {
        ca: ca.display().to_string(),
        nodes: nodes
            .into_iter()
            .zip(files)
            .map(|(name, f)| NodeCertObj {
                name,
                cert: f.cert_chain.display().to_string(),
                key: f.key.display().to_string(),
            })
            .collect(),
    })
}
