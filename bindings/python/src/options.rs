//! Keyword options into core's one options schema (`tidelog::options`):
//! the keywords become the schema's JSON object as they are, so a new
//! option in core works here without code (only the stubs list it).
//!
//! The one Python-only rule: a duration given as a number is the older
//! spelling, seconds, as `time.sleep` takes them. It still works for one
//! release, with a `DeprecationWarning`; the schema's own spelling is a
//! string with a unit (`"50ms"`, `"10s"`). A `None` keyword means "the
//! default", as it always did.

use pyo3::exceptions::PyDeprecationWarning;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt};
use serde_json::{Map, Value};
use tidelog::options;
use tidelog::{OpenOptions, PeerConfig, ReplicationOptions};

use crate::convert::py_to_value;
use crate::error::{invalid, IntoPy};

/// The duration options whose Python spelling used to be seconds.
const SECONDS_BEFORE: &[&str] = &[
    "flush_interval",
    "max_clock_skew",
    "expiry_interval",
    "heartbeat_interval",
    "idle_timeout",
    "connect_timeout",
    "backoff_initial",
    "backoff_max",
];

fn older_seconds(py: Python<'_>, key: &str, v: &Bound<'_, PyAny>) -> PyResult<Value> {
    let secs: f64 = v.extract()?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(invalid(format!(
            "invalid {key}: {secs} is not a duration; write a string with a unit, e.g. {key}=\"50ms\""
        )));
    }
    PyErr::warn(
        py,
        &py.get_type::<PyDeprecationWarning>(),
        &std::ffi::CString::new(format!(
            "{key}={secs}: a number of seconds is the older spelling of a duration; write \
             {key}=\"{secs}s\" (durations are strings with a unit or integer milliseconds \
             in every binding)"
        ))?,
        2,
    )?;
    Ok(Value::String(format!("{secs}s")))
}

/// `base` plus every keyword that is not `None`, as the schema's object.
fn object<const N: usize>(
    py: Python<'_>,
    base: [(&str, Value); N],
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Value> {
    let mut base: Map<String, Value> = base.into_iter().map(|(k, v)| (k.into(), v)).collect();
    for (k, v) in kwargs.into_iter().flat_map(|d| d.iter()) {
        let key: String = k.extract()?;
        if v.is_none() {
            continue;
        }
        let number = (v.is_instance_of::<PyFloat>() || v.is_instance_of::<PyInt>())
            && !v.is_instance_of::<PyBool>();
        let value = if number && SECONDS_BEFORE.contains(&key.as_str()) {
            older_seconds(py, &key, &v)?
        } else {
            py_to_value(&v, 0)?
        };
        base.insert(key, value);
    }
    Ok(Value::Object(base))
}

pub(crate) fn open_options(
    py: Python<'_>,
    node_name: &str,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<OpenOptions> {
    options::open_from_json(object(py, [("node_name", node_name.into())], kwargs)?).py()
}

/// `cert`, `key` and `ca` are PEM file paths (any `os.PathLike`).
pub(crate) fn replication_options(
    py: Python<'_>,
    tls: [Option<std::path::PathBuf>; 3],
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<ReplicationOptions> {
    let mut t = Map::new();
    for (name, p) in ["cert", "key", "ca"].iter().zip(tls) {
        if let Some(p) = p {
            let s = p.to_str().ok_or_else(|| {
                invalid(format!("{name} path {} is not valid UTF-8", p.display()))
            })?;
            t.insert((*name).into(), s.into());
        }
    }
    let v = if t.is_empty() {
        object(py, [], kwargs)?
    } else {
        object(py, [("tls", Value::Object(t))], kwargs)?
    };
    options::replication_from_json(v).py()
}

pub(crate) fn peer_config(
    py: Python<'_>,
    name: &str,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<PeerConfig> {
    options::peer_from_json(object(py, [("name", name.into())], kwargs)?).py()
}
