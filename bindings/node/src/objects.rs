//! The plain objects calls take and return, and the options they turn
//! into.

use std::ops::Bound;
use std::path::PathBuf;
use std::time::Duration;

use napi_derive::napi;
use serde_json::Value;
use tidelog::{
    Durability, EngineKind, Key, OpenOptions, PeerConfig, ReplicationOptions, Security, TableFlow,
    TableInfo, TableOptions, TlsIdentity,
};

use crate::convert::{invalid, key_of_value, millis, uint};

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
    pub recover_prefix: Option<bool>,
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

pub(crate) fn open_options(o: OpenOpts) -> napi::Result<OpenOptions> {
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
    Ok(opts.recover_prefix(o.recover_prefix.unwrap_or(false)))
}

pub(crate) fn table_options(o: Option<TableOpts>) -> napi::Result<TableOptions> {
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

pub(crate) fn replication_options(o: ReplicationOpts) -> napi::Result<ReplicationOptions> {
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

pub(crate) fn peer_config(p: PeerOpts) -> napi::Result<PeerConfig> {
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

pub(crate) fn bounds(o: &RangeOpts) -> napi::Result<(Bound<&Value>, Bound<&Value>)> {
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

pub(crate) fn key_bound(b: Bound<&Value>, what: &str) -> napi::Result<Bound<Key>> {
    Ok(match b {
        Bound::Included(v) => Bound::Included(key_of_value(v, what)?),
        Bound::Excluded(v) => Bound::Excluded(key_of_value(v, what)?),
        Bound::Unbounded => Bound::Unbounded,
    })
}

pub(crate) fn limit_of(v: Option<f64>) -> napi::Result<Option<usize>> {
    v.map(|l| uint("limit", l).map(|l| l as usize)).transpose()
}
