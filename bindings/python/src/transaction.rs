//! The `Transaction` class.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::convert::{py_str, py_to_key, py_to_record, py_to_record_arg};
use crate::error::{invalid, IntoPy};
use crate::handle::Handle;
use crate::views::PyCommitInfo;

/// Writes to one or more tables that commit atomically with one version
/// stamp, or not at all. Nothing is visible before `commit()`. As a context
/// manager it commits when the block succeeds and discards everything when
/// it raises. Reads see committed state, not this transaction's writes.
#[pyclass(frozen, module = "tidelog", name = "Transaction")]
pub(crate) struct PyTransaction {
    h: Arc<Handle>,
    tx: Mutex<Option<tidelog::Transaction>>,
}

impl PyTransaction {
    pub(crate) fn new(h: Arc<Handle>, tx: tidelog::Transaction) -> PyTransaction {
        PyTransaction {
            h,
            tx: Mutex::new(Some(tx)),
        }
    }

    fn with_tx<R>(&self, f: impl FnOnce(&mut tidelog::Transaction) -> PyResult<R>) -> PyResult<R> {
        self.h.db()?;
        let mut g = self.tx.lock();
        match g.as_mut() {
            Some(tx) => f(tx),
            None => Err(invalid(
                "this transaction was already committed or rolled back: start a new one",
            )),
        }
    }
}

#[pymethods]
impl PyTransaction {
    /// Stages an insert (checked against existing keys at commit).
    fn insert<'py>(
        slf: &Bound<'py, Self>,
        table: &Bound<'_, PyString>,
        record: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, Self>> {
        let t = py_str(table)?;
        let r = py_to_record_arg(record)?;
        slf.get().with_tx(|tx| r.insert(tx, t).py())?;
        Ok(slf.clone())
    }

    /// Stages an upsert.
    fn upsert<'py>(
        slf: &Bound<'py, Self>,
        table: &Bound<'_, PyString>,
        record: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, Self>> {
        let t = py_str(table)?;
        let r = py_to_record_arg(record)?;
        slf.get().with_tx(|tx| r.upsert(tx, t).py())?;
        Ok(slf.clone())
    }

    /// Stages an update (merge into an existing record).
    fn update<'py>(
        slf: &Bound<'py, Self>,
        table: &Bound<'_, PyString>,
        patch: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, Self>> {
        let t = py_str(table)?;
        let v = py_to_record(patch)?;
        slf.get().with_tx(|tx| tx.update(t, v).map(|_| ()).py())?;
        Ok(slf.clone())
    }

    /// Stages a delete.
    fn delete<'py>(
        slf: &Bound<'py, Self>,
        table: &Bound<'_, PyString>,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, Self>> {
        let t = py_str(table)?;
        let k = py_to_key(key)?;
        slf.get().with_tx(|tx| tx.delete(t, k).map(|_| ()).py())?;
        Ok(slf.clone())
    }

    /// Stages an increment of the integer attribute `attr` (see
    /// `Database.increment`).
    #[pyo3(signature = (table, key, attr, by=1))]
    fn increment<'py>(
        slf: &Bound<'py, Self>,
        table: &Bound<'_, PyString>,
        key: &Bound<'_, PyAny>,
        attr: &str,
        by: i64,
    ) -> PyResult<Bound<'py, Self>> {
        let t = py_str(table)?;
        let k = py_to_key(key)?;
        slf.get()
            .with_tx(|tx| tx.increment(t, k, attr, by).map(|_| ()).py())?;
        Ok(slf.clone())
    }

    /// Commits every staged write atomically; the transaction is then done.
    fn commit(&self, py: Python<'_>) -> PyResult<PyCommitInfo> {
        self.h.db()?;
        let tx = self.tx.lock().take().ok_or_else(|| {
            invalid("this transaction was already committed or rolled back: start a new one")
        })?;
        Ok(py.detach(|| tx.commit()).py()?.into())
    }

    /// Discards every staged write; the transaction is then done. Calling it
    /// again is fine.
    fn rollback(&self) {
        drop(self.tx.lock().take());
    }

    /// Whether the transaction can still take writes (not yet committed or
    /// rolled back).
    #[getter]
    fn active(&self) -> bool {
        self.tx.lock().is_some()
    }

    /// Number of staged writes.
    fn __len__(&self) -> usize {
        self.tx.lock().as_ref().map_or(0, |t| t.len())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let failed = exc_type.is_some_and(|t| !t.is_none());
        let tx = self.tx.lock().take();
        if let (Some(tx), false) = (tx, failed) {
            self.h.db()?;
            py.detach(|| tx.commit()).py()?;
        }
        Ok(false)
    }
}
