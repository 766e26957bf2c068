//! Argument checks, table options, and values handed to Python through
//! their serde shape (statuses).

use std::time::Duration;

use pyo3::prelude::*;
use tidelog::TableOptions;

use crate::convert::value_to_py;
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

pub(crate) fn table_options(
    primary_key: &str,
    indexes: Vec<String>,
    expiration: Option<i64>,
    conflict: Option<&str>,
    budget: (Option<i64>, Option<&str>),
) -> PyResult<TableOptions> {
    let (disk_budget_bytes, on_full) = disk_budget(budget.0, budget.1)?;
    Ok(TableOptions {
        primary_key: primary_key.to_string(),
        indexes,
        expiration: expiration
            .map(|e| non_negative("expiration", e))
            .transpose()?,
        conflict: crate::conflicts::policy(conflict)?,
        disk_budget_bytes,
        on_full,
    })
}

/// `disk_budget_bytes` and `on_full` as the options schema reads them, so
/// a bad value is refused with the same words in every binding.
pub(crate) fn disk_budget(
    bytes: Option<i64>,
    on_full: Option<&str>,
) -> PyResult<(Option<u64>, tidelog::OnFull)> {
    let bytes = bytes
        .map(|b| non_negative("disk_budget_bytes", b))
        .transpose()?;
    let mut v = serde_json::json!({ "disk_budget_bytes": bytes });
    if let Some(o) = on_full {
        v["on_full"] = serde_json::Value::from(o);
    }
    let t = tidelog::options::table_options(v).map_err(crate::error::to_py)?;
    Ok((t.disk_budget_bytes, t.on_full))
}

pub(crate) fn to_py_via_serde<'py, T: serde::Serialize>(
    py: Python<'py>,
    v: &T,
) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(v).map_err(|e| error::corrupt(e.to_string()))?;
    value_to_py(py, &value)
}
