//! The plain objects calls take and return (options go through
//! options.rs).

use std::ops::Bound;

use napi_derive::napi;
use serde_json::Value;
use tidelog::{Key, TableInfo, TableOptions};

use crate::convert::{invalid, key_of_value, uint};

// ---- plain objects ------------------------------------------------------

#[napi(object)]
pub struct TableOpts {
    pub primary_key: Option<String>,
    pub indexes: Option<Vec<String>>,
    pub expiration: Option<f64>,
    /// "lww" (default), "merge", "keep_local" or "resolver".
    pub conflict: Option<String>,
    /// Logical bytes the table's live records may take.
    pub disk_budget_bytes: Option<f64>,
    /// "refuse" (default) or "drop_oldest".
    pub on_full: Option<String>,
}

#[napi(object, object_from_js = false)]
pub struct TableStatsObj {
    pub records: f64,
    pub bytes: f64,
    pub dropped: f64,
    pub disk_budget_bytes: Option<f64>,
}

impl From<tidelog::TableStats> for TableStatsObj {
    fn from(s: tidelog::TableStats) -> Self {
        TableStatsObj {
            records: s.records as f64,
            bytes: s.bytes as f64,
            dropped: s.dropped as f64,
            disk_budget_bytes: s.disk_budget_bytes.map(|b| b as f64),
        }
    }
}

#[napi(object, object_from_js = false)]
pub struct TableInfoObj {
    pub name: String,
    pub primary_key: String,
    pub indexes: Vec<String>,
    pub expiration: Option<f64>,
    pub conflict: String,
    pub disk_budget_bytes: Option<f64>,
    pub on_full: String,
}

impl From<TableInfo> for TableInfoObj {
    fn from(t: TableInfo) -> Self {
        TableInfoObj {
            conflict: t.conflict.name().to_string(),
            name: t.name,
            primary_key: t.primary_key,
            indexes: t.indexes,
            expiration: t.expiration.map(|e| e as f64),
            disk_budget_bytes: t.disk_budget_bytes.map(|b| b as f64),
            on_full: match t.on_full {
                tidelog::OnFull::Refuse => "refuse",
                tidelog::OnFull::DropOldest => "drop_oldest",
            }
            .to_string(),
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
        if let Some(c) = o.conflict {
            t.conflict = crate::conflicts::policy(&c)?;
        }
        (t.disk_budget_bytes, t.on_full) = disk_budget(o.disk_budget_bytes, o.on_full)?;
    }
    Ok(t)
}

/// `disk_budget_bytes` and `on_full` as the options schema reads them, so
/// a bad value is refused with the same words in every binding.
pub(crate) fn disk_budget(
    bytes: Option<f64>,
    on_full: Option<String>,
) -> napi::Result<(Option<u64>, tidelog::OnFull)> {
    let bytes = bytes.map(|b| uint("disk_budget_bytes", b)).transpose()?;
    let mut v = serde_json::json!({ "disk_budget_bytes": bytes });
    if let Some(o) = on_full {
        v["on_full"] = Value::from(o);
    }
    let t = tidelog::options::table_options(v).map_err(crate::convert::err)?;
    Ok((t.disk_budget_bytes, t.on_full))
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
