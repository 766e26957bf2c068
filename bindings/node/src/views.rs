//! What the database hands out (commit info, log entries, change events),
//! as JavaScript objects built field by field from the core's views
//! (`tidelog::view`): the same fields as C's JSON and Python's dicts, with
//! Node's two representation rules: names camelCased by napi-rs
//! (`stamp_ms` is `stampMs`), and 64-bit identifiers and stamps (`origin`,
//! `stamp.time`, `stamp.node`) as bigints; sequence numbers and millisecond
//! times are numbers (exact below 2^53, which they do not reach).
//!
//! Records (in log writes and changes) are the core's `RecordView` text
//! handed to `JSON.parse`, so they are the same objects a get returns.

use std::ptr;

use napi::bindgen_prelude::{BigInt, Either, ToNapiValue, TypeName};
use napi::{sys, ValueType};
use napi_derive::napi;
use tidelog::view::{ChangeEventView, CommitInfoView, LogEntryView, RecordView};
use tidelog::{ChangeEvent, CommitInfo, Key, LogEntry, Stamp};

/// A record: JSON text that reaches JavaScript as what `JSON.parse` makes
/// of it (the same object a get returns).
pub struct RecordJs(String);

impl RecordJs {
    fn of(r: &RecordView<'_>) -> Self {
        let mut text = String::with_capacity(r.body.len() + 80);
        r.write_json(&mut text);
        RecordJs(text)
    }
}

impl TypeName for RecordJs {
    fn type_name() -> &'static str {
        "Record"
    }

    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for RecordJs {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        let fail = || napi::Error::from_reason("cannot hand a record to JSON.parse");
        let ok = sys::Status::napi_ok;
        let (mut global, mut json, mut parse, mut out) = (
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
        );
        // SAFETY: `env` is a live env on the JavaScript thread (the trait's
        // contract); every out-pointer is valid, the names NUL-terminated.
        unsafe {
            let text = String::to_napi_value(env, val.0)?;
            if sys::napi_get_global(env, &mut global) != ok
                || sys::napi_get_named_property(env, global, c"JSON".as_ptr(), &mut json) != ok
                || sys::napi_get_named_property(env, json, c"parse".as_ptr(), &mut parse) != ok
                || sys::napi_call_function(env, json, parse, 1, &text, &mut out) != ok
            {
                return Err(fail());
            }
        }
        Ok(out)
    }
}

pub(crate) type KeyJs = Either<i64, String>;

pub(crate) fn key_js(k: &Key) -> KeyJs {
    match k {
        Key::Int(i) => Either::A(*i),
        Key::Str(s) => Either::B(s.clone()),
    }
}

#[napi(object, object_from_js = false)]
pub struct StampObj {
    pub time: BigInt,
    pub node: BigInt,
}

pub(crate) fn stamp_obj(s: &Stamp) -> StampObj {
    StampObj {
        time: BigInt::from(s.time),
        node: BigInt::from(s.node),
    }
}

/// `CommitInfoView`.
#[napi(object, object_from_js = false)]
pub struct CommitObj {
    pub seq: f64,
    pub origin: BigInt,
    pub stamp: StampObj,
    pub stamp_ms: f64,
}

pub(crate) fn commit_obj(c: CommitInfo) -> CommitObj {
    let v = CommitInfoView::of(c);
    CommitObj {
        seq: v.seq as f64,
        origin: BigInt::from(v.origin),
        stamp: stamp_obj(&v.stamp),
        stamp_ms: v.stamp_ms as f64,
    }
}

/// `LogWriteView`.
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct LogWriteObj {
    pub table: String,
    pub key: KeyJs,
    pub op: String,
    pub record: Option<RecordJs>,
}

/// `LogEntryView`.
#[napi(object, object_from_js = false)]
pub struct LogEntryObj {
    pub seq: f64,
    pub origin: BigInt,
    pub stamp: StampObj,
    pub stamp_ms: f64,
    pub local: bool,
    pub logged_ms: f64,
    pub writes: Vec<LogWriteObj>,
}

pub(crate) fn log_objs(entries: &[LogEntry], own_node: u64) -> Vec<LogEntryObj> {
    entries
        .iter()
        .map(|e| {
            let v = LogEntryView::of(e, own_node);
            LogEntryObj {
                seq: v.seq as f64,
                origin: BigInt::from(v.origin),
                stamp: stamp_obj(&v.stamp),
                stamp_ms: v.stamp_ms as f64,
                local: v.local,
                logged_ms: v.logged_ms as f64,
                writes: v
                    .writes
                    .iter()
                    .map(|w| LogWriteObj {
                        table: w.table.to_string(),
                        key: key_js(w.key),
                        op: w.op.as_str().to_string(),
                        record: w.record.as_ref().map(RecordJs::of),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// `ChangeView`.
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct ChangeObj {
    pub key: KeyJs,
    pub record: Option<RecordJs>,
}

/// `ChangeEventView`. Built on tidelog's events thread (plain Rust data),
/// turned into JavaScript values on the JavaScript thread.
#[napi(object, object_from_js = false)]
pub struct ChangeEventObj {
    pub table: String,
    pub seq: f64,
    pub origin: BigInt,
    pub stamp: StampObj,
    pub stamp_ms: f64,
    pub local: bool,
    pub changes: Vec<ChangeObj>,
    pub missed: f64,
}

pub(crate) fn event_obj(e: &ChangeEvent) -> ChangeEventObj {
    let v = ChangeEventView::of(e);
    ChangeEventObj {
        table: v.table.to_string(),
        seq: v.seq as f64,
        origin: BigInt::from(v.origin),
        stamp: stamp_obj(&v.stamp),
        stamp_ms: v.stamp_ms as f64,
        local: v.local,
        changes: v
            .changes
            .iter()
            .map(|c| ChangeObj {
                key: key_js(c.key),
                record: c.record.as_ref().map(RecordJs::of),
            })
            .collect(),
        missed: v.missed as f64,
    }
}
