//! Argument checks, the `CommitInfo` class, and the dicts that log entries,
//! change events and statuses become.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tidelog::{ChangeEvent, CommitInfo as CoreCommit, LogEntry, TableOptions, WriteOp};

use crate::convert::{json_to_py, key_to_py, opt_record_to_py, value_to_py};
use crate::error::{self, invalid};

pub(crate) fn seconds(what: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        invalid(format!(
            "{what} must be a finite, non-negative number of seconds, got {s}"
        ))
    })
}

pub(crate) fn non_negative(what: &str, v: i64) -> PyResult<u64> {
    u64::try_from(v).map_err(|_| invalid(format!("{what} must not be negative, got {v}")))
}

pub(crate) fn limit_arg(v: Option<i64>) -> PyResult<Option<usize>> {
    v.map(|l| non_negative("limit", l).map(|l| l as usize))
        .transpose()
}

/// What a commit was given.
#[pyclass(frozen, module = "tidelog", name = "CommitInfo")]
pub(crate) struct PyCommitInfo {
    /// Local log sequence number of the transaction (0 if it wrote nothing).
    #[pyo3(get)]
    seq: u64,
    /// Hybrid-logical-clock time of the version stamp.
    #[pyo3(get)]
    time: u64,
    /// Node id of the origin (this instance).
    #[pyo3(get)]
    origin: u64,
}

#[pymethods]
impl PyCommitInfo {
    /// Wall-clock milliseconds since the epoch of the stamp
    /// (the records' `__updatedtime__`).
    #[getter]
    fn millis(&self) -> u64 {
        tidelog::Stamp {
            time: self.time,
            node: self.origin,
        }
        .millis()
    }

    fn __repr__(&self) -> String {
        format!(
            "CommitInfo(seq={}, time={}, origin={:#x})",
            self.seq, self.time, self.origin
        )
    }
}

impl From<CoreCommit> for PyCommitInfo {
    fn from(c: CoreCommit) -> Self {
        PyCommitInfo {
            seq: c.seq,
            time: c.stamp.time,
            origin: c.stamp.node,
        }
    }
}

pub(crate) fn table_options(
    primary_key: &str,
    indexes: Vec<String>,
    expiration: Option<i64>,
) -> PyResult<TableOptions> {
    Ok(TableOptions {
        primary_key: primary_key.to_string(),
        indexes,
        expiration: expiration
            .map(|e| non_negative("expiration", e))
            .transpose()?,
    })
}

pub(crate) fn to_py_via_serde<'py, T: serde::Serialize>(
    py: Python<'py>,
    v: &T,
) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(v).map_err(|e| error::corrupt(e.to_string()))?;
    value_to_py(py, &value)
}

fn millis_of(hlc_time: u64) -> u64 {
    tidelog::Stamp {
        time: hlc_time,
        node: 0,
    }
    .millis()
}

pub(crate) fn log_entry_to_py<'py>(py: Python<'py>, e: &LogEntry) -> PyResult<Bound<'py, PyAny>> {
    let d = PyDict::new(py);
    d.set_item("seq", e.seq)?;
    d.set_item("time", e.stamp.time)?;
    d.set_item("origin", e.stamp.node)?;
    d.set_item("millis", e.stamp.millis())?;
    d.set_item("local_millis", millis_of(e.local_time))?;
    let writes = PyList::empty(py);
    for w in &e.writes {
        let wd = PyDict::new(py);
        wd.set_item("table", &w.table)?;
        wd.set_item("key", key_to_py(py, &w.key)?)?;
        match &w.op {
            WriteOp::Put { json, created } => {
                wd.set_item("op", "put")?;
                let rec = json_to_py(py, json)?;
                if let Ok(rd) = rec.cast::<PyDict>() {
                    rd.set_item("__createdtime__", millis_of(*created))?;
                    rd.set_item("__updatedtime__", e.stamp.millis())?;
                }
                wd.set_item("record", rec)?;
            }
            WriteOp::Delete => {
                wd.set_item("op", "delete")?;
                wd.set_item("record", py.None())?;
            }
        }
        writes.append(wd)?;
    }
    d.set_item("writes", writes)?;
    Ok(d.into_any())
}

pub(crate) fn event_to_py<'py>(py: Python<'py>, e: &ChangeEvent) -> PyResult<Bound<'py, PyAny>> {
    let d = PyDict::new(py);
    d.set_item("table", &e.table)?;
    d.set_item("seq", e.seq)?;
    d.set_item("time", e.stamp.time)?;
    d.set_item("origin", e.origin())?;
    d.set_item("millis", e.stamp.millis())?;
    d.set_item("local", e.local)?;
    let changes = PyList::empty(py);
    for c in &e.changes {
        let cd = PyDict::new(py);
        cd.set_item("key", key_to_py(py, &c.key)?)?;
        cd.set_item("record", opt_record_to_py(py, c.record.as_ref())?)?;
        changes.append(cd)?;
    }
    d.set_item("changes", changes)?;
    Ok(d.into_any())
}
