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
}

#[napi(object, object_from_js = false)]
pub struct TableInfoObj {
    pub name: String,
    pub primary_key: String,
    pub indexes: Vec<String>,
    pub expiration: Option<f64>,
    pub conflict: String,
}

impl From<TableInfo> for TableInfoObj {
    fn from(t: TableInfo) -> Self {
        TableInfoObj {
            conflict: t.conflict.name().to_string(),
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
    }
    Ok(t)
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
