//! What the database hands out (commit info, log entries, change events),
//! built field by field from the core's views (`tidelog::view`): the same
//! fields as C's JSON and Node's objects, as a `CommitInfo` object and dicts.
//! Records inside them are the dicts a get returns.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tidelog::view::{ChangeEventView, CommitInfoView, LogEntryView};
use tidelog::{ChangeEvent, CommitInfo as CoreCommit, LogEntry, Stamp};

use crate::convert::{key_to_py, opt_record_view_to_py};

/// What a commit was given: the fields of the core's `CommitInfoView`.
#[pyclass(frozen, module = "tidelog", name = "CommitInfo")]
pub(crate) struct PyCommitInfo {
    view: CommitInfoView,
}

#[pymethods]
impl PyCommitInfo {
    /// Local log sequence number of the transaction (0 if it wrote nothing).
    #[getter]
    fn seq(&self) -> u64 {
        self.view.seq
    }

    /// Node id of this instance, where the transaction was committed (the
    /// same as `stamp["node"]`).
    #[getter]
    fn origin(&self) -> u64 {
        self.view.origin
    }

    /// The version stamp: `{"time": hybrid-logical-clock time, "node": origin}`.
    #[getter]
    fn stamp<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stamp_to_py(py, &self.view.stamp)
    }

    /// Wall-clock milliseconds since the epoch of the stamp (the records'
    /// `__updatedtime__`).
    #[getter]
    fn stamp_ms(&self) -> u64 {
        self.view.stamp_ms
    }

    /// The stamp's hybrid-logical-clock time (`stamp["time"]`); kept for one
    /// release, use `stamp`.
    #[getter]
    fn time(&self) -> u64 {
        self.view.stamp.time
    }

    /// The same as `stamp_ms`; kept for one release.
    #[getter]
    fn millis(&self) -> u64 {
        self.view.stamp_ms
    }

    fn __repr__(&self) -> String {
        let v = &self.view;
        format!(
            "CommitInfo(seq={}, origin={:#x}, stamp={{'time': {}, 'node': {:#x}}}, stamp_ms={})",
            v.seq, v.origin, v.stamp.time, v.stamp.node, v.stamp_ms
        )
    }
}

impl From<CoreCommit> for PyCommitInfo {
    fn from(c: CoreCommit) -> Self {
        PyCommitInfo {
            view: CommitInfoView::of(c),
        }
    }
}

fn stamp_to_py<'py>(py: Python<'py>, s: &Stamp) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("time", s.time)?;
    d.set_item("node", s.node)?;
    Ok(d)
}

/// A log entry as a dict: the fields of the core's `LogEntryView`, one by
/// one.
pub(crate) fn log_entry_to_py<'py>(
    py: Python<'py>,
    e: &LogEntry,
    own_node: u64,
) -> PyResult<Bound<'py, PyAny>> {
    let v = LogEntryView::of(e, own_node);
    let d = PyDict::new(py);
    d.set_item("seq", v.seq)?;
    d.set_item("origin", v.origin)?;
    d.set_item("stamp", stamp_to_py(py, &v.stamp)?)?;
    d.set_item("stamp_ms", v.stamp_ms)?;
    d.set_item("local", v.local)?;
    d.set_item("logged_ms", v.logged_ms)?;
    let writes = PyList::empty(py);
    for w in &v.writes {
        let wd = PyDict::new(py);
        wd.set_item("table", w.table)?;
        wd.set_item("key", key_to_py(py, w.key)?)?;
        wd.set_item("op", w.op.as_str())?;
        wd.set_item("record", opt_record_view_to_py(py, w.record.as_ref())?)?;
        writes.append(wd)?;
    }
    d.set_item("writes", writes)?;
    Ok(d.into_any())
}

/// A change event as a dict: the fields of the core's `ChangeEventView`,
/// one by one.
pub(crate) fn event_to_py<'py>(py: Python<'py>, e: &ChangeEvent) -> PyResult<Bound<'py, PyAny>> {
    let v = ChangeEventView::of(e);
    let d = PyDict::new(py);
    d.set_item("table", v.table)?;
    d.set_item("seq", v.seq)?;
    d.set_item("origin", v.origin)?;
    d.set_item("stamp", stamp_to_py(py, &v.stamp)?)?;
    d.set_item("stamp_ms", v.stamp_ms)?;
    d.set_item("local", v.local)?;
    let changes = PyList::empty(py);
    for c in &v.changes {
        let cd = PyDict::new(py);
        cd.set_item("key", key_to_py(py, c.key)?)?;
        cd.set_item("record", opt_record_view_to_py(py, c.record.as_ref())?)?;
        changes.append(cd)?;
    }
    d.set_item("changes", changes)?;
    d.set_item("missed", v.missed)?;
    Ok(d.into_any())
}
