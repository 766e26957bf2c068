//! Concurrent writes for Python: the `conflict` table option, the conflict
//! log as dicts, and a Python callable as a table's conflict resolver.
//!
//! The resolver runs on a tidelog library thread (the one applying a
//! peer's transaction), which takes the GIL for each call. Whatever the
//! callable does wrong (raises, returns something that is not an answer)
//! is logged on the `tidelog.resolver` logger and counts as "take remote":
//! replication never stops over a bug in a resolver.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use tidelog::{ConflictCase, ConflictPolicy, ConflictResolver, Resolution};

use crate::convert::{py_to_value, type_name, value_to_py};
use crate::error::IntoPy;

/// The answers a resolver may give as text; any mapping is a record to write.
const ANSWERS: &str =
    "\"take_remote\", \"keep_local\", \"delete\", or a dict (the record to write)";

/// A `conflict=` keyword into the core's policy, by its options-schema name.
pub(crate) fn policy(name: Option<&str>) -> PyResult<ConflictPolicy> {
    name.map_or(Ok(ConflictPolicy::LastWriterWins), |n| {
        ConflictPolicy::from_name(n).py()
    })
}

/// The conflict log as a list of dicts, oldest first.
pub(crate) fn entries_to_py<'py>(
    py: Python<'py>,
    entries: &[tidelog::ConflictEntry],
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for e in entries {
        list.append(value_to_py(py, &e.to_json())?)?;
    }
    Ok(list)
}

fn answer(v: &Bound<'_, PyAny>) -> Result<Resolution, String> {
    if let Ok(s) = v.cast::<PyString>() {
        return match crate::convert::py_str(s).unwrap_or("") {
            "take_remote" => Ok(Resolution::TakeRemote),
            "keep_local" => Ok(Resolution::KeepLocal),
            "delete" => Ok(Resolution::Delete),
            other => Err(format!("it returned {other:?}; expected {ANSWERS}")),
        };
    }
    if v.is_instance_of::<PyDict>() {
        return py_to_value(v, 0)
            .map(Resolution::Write)
            .map_err(|e| format!("the record it returned is not JSON: {e}"));
    }
    Err(format!(
        "it returned a value of type {}; expected {ANSWERS}",
        type_name(v)
    ))
}

fn took_remote(table: &str, why: &str) -> Resolution {
    log::warn!(target: "tidelog::resolver", "conflict resolver for table {table}: {why}; took the remote version");
    Resolution::TakeRemote
}

/// `callable` as the core's resolver for `table`.
pub(crate) fn resolver(table: &str, callable: Py<PyAny>) -> ConflictResolver {
    let table = table.to_string();
    Arc::new(move |case: &ConflictCase| {
        // None while the interpreter is shutting down: nobody to ask.
        let asked = Python::try_attach(|py| {
            let arg = value_to_py(py, &case.to_json())
                .map_err(|e| format!("the case could not be made a dict: {e}"))?;
            match callable.call1(py, (arg,)) {
                Ok(v) => answer(v.bind(py)),
                Err(e) => {
                    let tb = e
                        .traceback(py)
                        .and_then(|t| t.format().ok())
                        .unwrap_or_default();
                    let kind = e
                        .get_type(py)
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_else(|_| "an exception".into());
                    Err(format!("it raised {kind}: {}\n{tb}", e.value(py)))
                }
            }
        });
        match asked {
            Some(Ok(r)) => r,
            Some(Err(why)) => took_remote(&table, &why),
            None => took_remote(&table, "the Python interpreter is shutting down"),
        }
    })
}
