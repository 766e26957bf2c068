//! Errors thrown to JavaScript, and the conversions between JavaScript
//! values, JSON text and tidelog types that every call shares.

use std::time::Duration;

use napi::bindgen_prelude::{BigInt, Either, Either3};
use napi::Status;
use serde_json::Value;
use tidelog::{ErrorKind, Key};

// ---- errors -------------------------------------------------------------

/// Every error thrown to JavaScript: the tidelog code travels as a
/// `[TIDELOG:<CODE>] ` prefix of the message (napi-derive only throws
/// errors with a napi status), which index.js strips into `err.code`.
pub(crate) type R<T> = napi::Result<T>;

pub(crate) fn code_of(kind: ErrorKind) -> &'static str {
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

pub(crate) fn err(e: tidelog::Error) -> napi::Error {
    napi::Error::new(
        Status::GenericFailure,
        format!("[TIDELOG:{}] {e}", code_of(e.kind())),
    )
}

pub(crate) fn invalid(msg: impl Into<String>) -> napi::Error {
    napi::Error::new(
        Status::InvalidArg,
        format!("[TIDELOG:INVALID_INPUT] {}", msg.into()),
    )
}

pub(crate) trait OrJs<T> {
    fn js(self) -> napi::Result<T>;
}

impl<T> OrJs<T> for tidelog::Result<T> {
    fn js(self) -> napi::Result<T> {
        self.map_err(err)
    }
}

// ---- conversions --------------------------------------------------------

pub(crate) type JsKey = Either3<String, i64, BigInt>;

pub(crate) fn key_of(k: JsKey) -> napi::Result<Key> {
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

/// An increment amount: index.js passes a safe integer or an i64 bigint.
pub(crate) type JsBy = Either<i64, BigInt>;

pub(crate) fn by_of(by: JsBy) -> napi::Result<i64> {
    match by {
        Either::A(i) => Ok(i),
        Either::B(b) => match b.get_i64() {
            (i, true) => Ok(i),
            _ => Err(invalid(
                "invalid increment: a bigint amount must fit in a signed 64-bit integer",
            )),
        },
    }
}

pub(crate) fn key_of_value(v: &Value, what: &str) -> napi::Result<Key> {
    Key::from_json(v).ok_or_else(|| {
        invalid(format!(
            "invalid {what}: primary key values are strings or integers"
        ))
    })
}

/// A non-negative integer option given as a JS number.
pub(crate) fn uint(what: &str, v: f64) -> napi::Result<u64> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0 {
        Ok(v as u64)
    } else {
        Err(invalid(format!(
            "invalid {what}: must be a non-negative integer, got {v}"
        )))
    }
}

pub(crate) fn millis(what: &str, v: f64) -> napi::Result<Duration> {
    uint(what, v).map(Duration::from_millis)
}

/// Parses record JSON text into the value the core API takes, with the
/// core's typed errors (not an object, invalid JSON).
pub(crate) fn record_value(json: &str) -> napi::Result<Value> {
    tidelog::record::parse_object(json).map(Value::Object).js()
}

// ---- status -------------------------------------------------------------

/// Peer status (or a list of them) as JSON text for index.js, derived from
/// the core's own serialization so that a field the core adds reaches Node
/// without a change here. The rules, the same for every field, and the
/// same as for the other views (views.rs):
/// - names are camelCased (`since_ms` -> `sinceMs`), as everywhere in the
///   Node API;
/// - `None` is `null` (serde writes it), never a missing key;
/// - 64-bit identifiers and stamps (`node_id`, `node`, `*_node_id`, a
///   stamp's `time`) travel as decimal text that index.js turns into
///   bigints: a JS number would round them;
/// - every other integer (counters, sequences, ms times) stays a JSON
///   number, a JS number: exact below 2^53, which they do not reach.
///
/// Takes `serde_json::to_value(&status)`.
pub(crate) fn status_json(status: serde_json::Result<Value>) -> napi::Result<String> {
    let v = status.map_err(|e| invalid(format!("cannot serialize the status: {e}")))?;
    Ok(node_shape("", v).to_string())
}

fn is_node_id(key: &str) -> bool {
    key == "node" || key == "node_id" || key.ends_with("_node_id")
}

fn node_shape(key: &str, v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let stamp = m.len() == 2 && m.contains_key("time") && m.contains_key("node");
            Value::Object(
                m.into_iter()
                    .map(|(k, v)| {
                        let v = match (stamp && k == "time", v) {
                            (true, Value::Number(n)) => Value::String(n.to_string()),
                            (_, v) => node_shape(&k, v),
                        };
                        (camel_case(&k), v)
                    })
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.into_iter().map(|v| node_shape(key, v)).collect()),
        Value::Number(n) if is_node_id(key) => Value::String(n.to_string()),
        v => v,
    }
}

pub(crate) fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn status_shape_for_node() {
        let v = serde_json::json!({
            "since_ms": 5, "node_id": 255u64, "last_error": null,
            "tables": [{"table": "t", "last_refused_stamp": {"time": u64::MAX, "node": 1}}]
        });
        let out: Value = serde_json::from_str(&node_shape("", v).to_string()).unwrap();
        assert_eq!(
            out,
            serde_json::json!({
                "sinceMs": 5, "nodeId": "255", "lastError": null,
                "tables": [{"table": "t", "lastRefusedStamp": {
                    "time": u64::MAX.to_string(), "node": "1"}}]
            })
        );
    }
}
