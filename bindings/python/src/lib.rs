//! The `tidelog` Python module (native part, `tidelog._tidelog`).
//!
//! Threads: every method may be called from any Python thread. Calls that
//! can block (opening, closing, commits, scans, finds, log reads, peer calls
//! and status, delivery waits) release the GIL while they run in Rust.
//! Change listeners run on tidelog's `tidelog-events` thread, which takes
//! the GIL for each call.
//!
//! Fork: a handle opened before `os.fork()` refuses every call in the child
//! with `ForkedError` (the parent's background threads do not exist there,
//! and its locks may be held), and is leaked rather than closed when the
//! child drops it, so nothing in the child waits for a thread that is gone.

#[cfg(feature = "bench")]
mod bench;
mod conflicts;
mod convert;
mod error;
mod fork;
mod handle;
mod logging;
mod objects;
mod options;
mod transaction;
mod views;

use std::ops::Bound as RBound;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use serde_json::Value;
use tidelog::{CommitInfo as CoreCommit, Key, ListenerId, ScanOptions};

use convert::*;
use error::{invalid, IntoPy};
use handle::*;
use objects::*;
use transaction::*;
use views::*;

/// An open tidelog database. Create one with `tidelog.open()`; use it as a
/// context manager to close it at the end of a `with` block. Every method
/// may be called from any thread.
#[pyclass(frozen, module = "tidelog", name = "Database")]
struct PyDatabase {
    h: Arc<Handle>,
}

impl PyDatabase {
    /// One write in a transaction of its own, with the GIL released.
    fn write(
        &self,
        py: Python<'_>,
        table: &Bound<'_, PyString>,
        stage: impl FnOnce(&mut tidelog::Transaction, &str) -> tidelog::Result<()> + Send,
    ) -> PyResult<PyCommitInfo> {
        let db = self.h.db()?;
        let t = py_str(table)?;
        let commit = || -> tidelog::Result<CoreCommit> {
            let mut tx = db.transaction();
            stage(&mut tx, t)?;
            tx.commit()
        };
        Ok(py.detach(commit).py()?.into())
    }
}

#[pymethods]
impl PyDatabase {
    /// This node's name (the DNS name in its TLS certificate).
    #[getter]
    fn node_name(&self) -> PyResult<String> {
        Ok(self.h.db()?.node_name().to_string())
    }

    /// This instance's stable node id (the origin in its version stamps).
    #[getter]
    fn node_id(&self) -> PyResult<u64> {
        Ok(self.h.db()?.node_id())
    }

    /// Transactions this handle lost: at open to a damaged journal (with
    /// `recover_prefix=True`), or to a failed write the engine could not
    /// keep (sled, grouped durability).
    #[getter]
    fn dropped_transactions(&self) -> PyResult<u64> {
        Ok(self.h.db()?.dropped_transactions())
    }

    /// The data directory.
    #[getter]
    fn path(&self) -> PyResult<String> {
        Ok(self.h.db()?.path().display().to_string())
    }

    /// The storage engine: "fjall" or "sled".
    #[getter]
    fn engine(&self) -> PyResult<&'static str> {
        Ok(self.h.db()?.engine().as_str())
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> PyResult<bool> {
        Ok(self.h.db()?.is_closed())
    }

    /// How many listener calls raised an exception so far (each one was
    /// reported through `sys.unraisablehook`).
    #[getter]
    fn listener_errors(&self) -> u64 {
        self.h.listener_errors.load(Ordering::Relaxed)
    }

    /// Flushes, stops replication and listeners, and releases the data
    /// directory. Later calls raise `ClosedError`. Closing twice is fine. In
    /// a forked child it only lets go of the parent's handle.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        match self.h.db() {
            Ok(db) => py.detach(|| db.close()).py(),
            Err(_) => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (_exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.h.db() {
            Ok(db) => format!(
                "<tidelog.Database node_name={:?} path={:?}{}>",
                db.node_name(),
                db.path().display().to_string(),
                if db.is_closed() { " closed" } else { "" }
            ),
            Err(_) => "<tidelog.Database (from the parent process; unusable after fork)>".into(),
        }
    }

    /// Makes every commit so far durable on disk.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let db = self.h.db()?;
        py.detach(|| db.flush()).py()
    }

    /// Bytes the data directory occupies on disk.
    fn disk_bytes(&self, py: Python<'_>) -> PyResult<u64> {
        let db = self.h.db()?;
        py.detach(|| db.disk_bytes()).py()
    }

    // ---- tables ----------------------------------------------------------

    /// Creates a table. Raises `TableExistsError` if it exists.
    #[pyo3(signature = (name, *, primary_key="id", indexes=None, expiration=None, conflict=None, disk_budget_bytes=None, on_full=None))]
    #[allow(clippy::too_many_arguments)]
    fn create_table<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        primary_key: &str,
        indexes: Option<Vec<String>>,
        expiration: Option<i64>,
        conflict: Option<&str>,
        disk_budget_bytes: Option<i64>,
        on_full: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let db = self.h.db()?;
        let opts = table_options(
            primary_key,
            indexes.unwrap_or_default(),
            expiration,
            conflict,
            (disk_budget_bytes, on_full),
        )?;
        let info = py.detach(|| db.create_table(name, opts)).py()?;
        to_py_via_serde(py, &info)
    }

    /// Creates the table unless it exists; returns whether it created it.
    #[pyo3(signature = (name, *, primary_key="id", indexes=None, expiration=None, conflict=None, disk_budget_bytes=None, on_full=None))]
    #[allow(clippy::too_many_arguments)]
    fn ensure_table(
        &self,
        py: Python<'_>,
        name: &str,
        primary_key: &str,
        indexes: Option<Vec<String>>,
        expiration: Option<i64>,
        conflict: Option<&str>,
        disk_budget_bytes: Option<i64>,
        on_full: Option<&str>,
    ) -> PyResult<bool> {
        let db = self.h.db()?;
        let opts = table_options(
            primary_key,
            indexes.unwrap_or_default(),
            expiration,
            conflict,
            (disk_budget_bytes, on_full),
        )?;
        py.detach(|| db.ensure_table(name, opts)).py()
    }

    /// Drops a table and its records locally (never replicated).
    fn drop_table(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let db = self.h.db()?;
        py.detach(|| db.drop_table(name)).py()
    }

    /// Every table, by name.
    fn list_tables<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let tables = self.h.db()?.list_tables().py()?;
        to_py_via_serde(py, &tables)
    }

    /// A table's definition.
    fn describe_table<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let info = self.h.db()?.describe_table(name).py()?;
        to_py_via_serde(py, &info)
    }

    /// A table's live records, their logical bytes and what its budget
    /// dropped, read without a scan.
    fn table_stats<'py>(&self, py: Python<'py>, table: &str) -> PyResult<Bound<'py, PyAny>> {
        let db = self.h.db()?;
        let s = py.detach(|| db.table_stats(table)).py()?;
        to_py_via_serde(py, &s)
    }

    /// Sets (or with `None` removes) a table's disk budget while running.
    #[pyo3(signature = (table, disk_budget_bytes, on_full=None))]
    fn set_table_budget(
        &self,
        py: Python<'_>,
        table: &str,
        disk_budget_bytes: Option<i64>,
        on_full: Option<&str>,
    ) -> PyResult<()> {
        let db = self.h.db()?;
        let (bytes, on_full) = crate::objects::disk_budget(disk_budget_bytes, on_full)?;
        py.detach(|| db.set_table_budget(table, bytes.map(|b| (b, on_full))))
            .py()
    }

    // ---- writes ----------------------------------------------------------

    /// Inserts a new record; raises `DuplicateKeyError` if the key exists.
    fn insert(
        &self,
        py: Python<'_>,
        table: &Bound<'_, PyString>,
        record: &Bound<'_, PyAny>,
    ) -> PyResult<PyCommitInfo> {
        let r = py_to_record_arg(record)?;
        self.write(py, table, |tx, t| r.insert(tx, t))
    }

    /// Inserts or replaces a record.
    fn upsert(
        &self,
        py: Python<'_>,
        table: &Bound<'_, PyString>,
        record: &Bound<'_, PyAny>,
    ) -> PyResult<PyCommitInfo> {
        let r = py_to_record_arg(record)?;
        self.write(py, table, |tx, t| r.upsert(tx, t))
    }

    /// Merges attributes into an existing record; raises
    /// `RecordNotFoundError` if there is none.
    fn update(
        &self,
        py: Python<'_>,
        table: &Bound<'_, PyString>,
        patch: &Bound<'_, PyAny>,
    ) -> PyResult<PyCommitInfo> {
        let v = py_to_record(patch)?;
        self.write(py, table, |tx, t| tx.update(t, v).map(|_| ()))
    }

    /// Deletes a record (a tombstone replicates); returns whether a live
    /// record was there.
    fn delete(
        &self,
        py: Python<'_>,
        table: &Bound<'_, PyString>,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let db = self.h.db()?;
        let t = py_str(table)?;
        let k = py_to_key(key)?;
        py.detach(|| db.delete(t, k)).py()
    }

    /// Adds `by` to the integer attribute `attr` of the record with `key`
    /// (creating `{primary key: key, attr: by}` if there is none).
    /// Increments made on different nodes add up when they meet.
    #[pyo3(signature = (table, key, attr, by=1))]
    fn increment(
        &self,
        py: Python<'_>,
        table: &Bound<'_, PyString>,
        key: &Bound<'_, PyAny>,
        attr: &str,
        by: i64,
    ) -> PyResult<PyCommitInfo> {
        let db = self.h.db()?;
        let t = py_str(table)?;
        let k = py_to_key(key)?;
        Ok(py.detach(|| db.increment(t, k, attr, by)).py()?.into())
    }

    /// A transaction over one or more tables: use it as a context manager
    /// (`with db.transaction() as tx:`) to commit on success and discard on
    /// an exception, or call `commit()` / `rollback()`.
    fn transaction(&self) -> PyResult<PyTransaction> {
        let tx = self.h.db()?.transaction();
        Ok(PyTransaction::new(self.h.clone(), tx))
    }

    // ---- reads -----------------------------------------------------------

    /// The record with this key as a dict (with `__createdtime__` and
    /// `__updatedtime__`), or None.
    fn get<'py>(
        &self,
        py: Python<'py>,
        table: &Bound<'_, PyString>,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let db = self.h.db()?;
        let t = py_str(table)?;
        let k = py_to_key(key)?;
        let r = py.detach(|| db.get(t, k)).py()?;
        opt_record_to_py(py, r.as_ref())
    }

    /// Records for several keys, in order (None where missing).
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        table: &Bound<'_, PyString>,
        keys: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let db = self.h.db()?;
        let t = py_str(table)?;
        let mut ks = Vec::new();
        for k in keys.try_iter()? {
            ks.push(py_to_key(&k?)?);
        }
        let rs = py.detach(|| db.get_many(t, &ks)).py()?;
        let list = PyList::empty(py);
        for r in &rs {
            list.append(opt_record_to_py(py, r.as_ref())?)?;
        }
        Ok(list)
    }

    /// Records in primary-key order from `start` (inclusive unless
    /// `start_inclusive=False`) to `end` (exclusive unless
    /// `end_inclusive=True`); None means unbounded.
    #[pyo3(signature = (table, *, start=None, end=None, start_inclusive=true, end_inclusive=false, reverse=false, limit=None))]
    #[allow(clippy::too_many_arguments)]
    fn scan<'py>(
        &self,
        py: Python<'py>,
        table: &Bound<'_, PyString>,
        start: Option<&Bound<'_, PyAny>>,
        end: Option<&Bound<'_, PyAny>>,
        start_inclusive: bool,
        end_inclusive: bool,
        reverse: bool,
        limit: Option<i64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let db = self.h.db()?;
        let t = py_str(table)?;
        let bound = |k: Option<&Bound<'_, PyAny>>, incl: bool| -> PyResult<RBound<Key>> {
            Ok(match k {
                None => RBound::Unbounded,
                Some(k) if k.is_none() => RBound::Unbounded,
                Some(k) if incl => RBound::Included(py_to_key(k)?),
                Some(k) => RBound::Excluded(py_to_key(k)?),
            })
        };
        let opts = ScanOptions {
            start: bound(start, start_inclusive)?,
            end: bound(end, end_inclusive)?,
            reverse,
            limit: limit_arg(limit)?,
        };
        let rs = py.detach(|| db.scan(t, &opts)).py()?;
        records_to_py(py, &rs)
    }

    /// Records whose indexed `attribute` lies between `lower` and `upper`
    /// (inclusive unless told otherwise; None means unbounded), in index
    /// order. An array attribute matches if any element does.
    #[pyo3(signature = (table, attribute, *, lower=None, upper=None, lower_inclusive=true, upper_inclusive=true, limit=None))]
    #[allow(clippy::too_many_arguments)]
    fn find<'py>(
        &self,
        py: Python<'py>,
        table: &Bound<'_, PyString>,
        attribute: &str,
        lower: Option<&Bound<'_, PyAny>>,
        upper: Option<&Bound<'_, PyAny>>,
        lower_inclusive: bool,
        upper_inclusive: bool,
        limit: Option<i64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let db = self.h.db()?;
        let t = py_str(table)?;
        let value = |v: Option<&Bound<'_, PyAny>>| -> PyResult<Option<Value>> {
            match v {
                Some(v) if !v.is_none() => Ok(Some(py_to_value(v, 0)?)),
                _ => Ok(None),
            }
        };
        let (lo, hi) = (value(lower)?, value(upper)?);
        let limit = limit_arg(limit)?;
        let rs = py
            .detach(|| {
                fn b(v: &Option<Value>, incl: bool) -> RBound<&Value> {
                    match v {
                        None => RBound::Unbounded,
                        Some(v) if incl => RBound::Included(v),
                        Some(v) => RBound::Excluded(v),
                    }
                }
                db.find(
                    t,
                    attribute,
                    b(&lo, lower_inclusive),
                    b(&hi, upper_inclusive),
                    limit,
                )
            })
            .py()?;
        records_to_py(py, &rs)
    }

    /// Records whose indexed `attribute` equals `value` (None matches null).
    fn find_eq<'py>(
        &self,
        py: Python<'py>,
        table: &Bound<'_, PyString>,
        attribute: &str,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let db = self.h.db()?;
        let t = py_str(table)?;
        let v = py_to_value(value, 0)?;
        let rs = py.detach(|| db.find_eq(t, attribute, &v)).py()?;
        records_to_py(py, &rs)
    }

    /// Number of live records in the table.
    fn count(&self, py: Python<'_>, table: &Bound<'_, PyString>) -> PyResult<u64> {
        let db = self.h.db()?;
        let t = py_str(table)?;
        py.detach(|| db.count(t)).py()
    }

    /// The stored JSON text of a record (without the time attributes).
    /// Internal: used by the benchmark to compare conversion paths.
    fn _get_json(
        &self,
        py: Python<'_>,
        table: &Bound<'_, PyString>,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<Option<String>> {
        let db = self.h.db()?;
        let t = py_str(table)?;
        let k = py_to_key(key)?;
        let r = py.detach(|| db.get(t, k)).py()?;
        Ok(r.map(|r| r.to_json_string()))
    }

    // ---- log -------------------------------------------------------------

    /// `{"first": oldest sequence in the log, "last": newest committed}`.
    fn log_bounds<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let b = self.h.db()?.log_bounds().py()?;
        let d = PyDict::new(py);
        d.set_item("first", b.first)?;
        d.set_item("last", b.last)?;
        Ok(d)
    }

    /// Log entries from sequence `from_seq` on, oldest first.
    #[pyo3(signature = (from_seq=1, limit=1000))]
    fn read_log<'py>(
        &self,
        py: Python<'py>,
        from_seq: i64,
        limit: i64,
    ) -> PyResult<Bound<'py, PyList>> {
        let db = self.h.db()?;
        let from = non_negative("from_seq", from_seq)?;
        let limit = non_negative("limit", limit)? as usize;
        let es = py.detach(|| db.read_log(from, limit)).py()?;
        let list = PyList::empty(py);
        for e in &es {
            list.append(log_entry_to_py(py, e, db.node_id())?)?;
        }
        Ok(list)
    }

    /// Log entries committed at or after `millis` (ms since the epoch).
    #[pyo3(signature = (millis, limit=1000))]
    fn read_log_since<'py>(
        &self,
        py: Python<'py>,
        millis: i64,
        limit: i64,
    ) -> PyResult<Bound<'py, PyList>> {
        let db = self.h.db()?;
        let millis = non_negative("millis", millis)?;
        let limit = non_negative("limit", limit)? as usize;
        let es = py.detach(|| db.read_log_since(millis, limit)).py()?;
        let list = PyList::empty(py);
        for e in &es {
            list.append(log_entry_to_py(py, e, db.node_id())?)?;
        }
        Ok(list)
    }

    // ---- conflicts -------------------------------------------------------

    /// The conflict log, oldest first: a dict per write that lost to a
    /// concurrent one (also the records of the system table `_conflicts`).
    fn conflicts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let db = self.h.db()?;
        let es = py.detach(|| db.conflicts()).py()?;
        conflicts::entries_to_py(py, &es)
    }

    /// How many entries the conflict log dropped to stay within its bounds.
    fn conflicts_dropped(&self) -> PyResult<u64> {
        Ok(self.h.db()?.conflicts_dropped())
    }

    /// Makes `resolver(case)` decide the conflicts of `table` (a table
    /// created with `conflict="resolver"`), replacing an earlier one. It
    /// runs on a tidelog thread, holding the GIL; it returns
    /// "take_remote", "keep_local", "delete" or a dict (the record to
    /// write). An exception or any other answer is logged (logger
    /// `tidelog.resolver`) and counts as "take_remote".
    fn set_conflict_resolver(
        &self,
        py: Python<'_>,
        table: &str,
        resolver: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let db = self.h.db()?;
        if db.is_closed() {
            return Err(tidelog::Error::Closed).py();
        }
        if !resolver.is_callable() {
            return Err(invalid(format!(
                "resolver must be callable, got {}",
                type_name(resolver)
            )));
        }
        let r = conflicts::resolver(table, resolver.clone().unbind());
        py.detach(|| db.set_conflict_resolver(table, r)).py()
    }

    /// Removes the resolver of `table`; returns whether one was set.
    fn clear_conflict_resolver(&self, py: Python<'_>, table: &str) -> PyResult<bool> {
        let db = self.h.db()?;
        Ok(py.detach(|| db.clear_conflict_resolver(table)))
    }

    // ---- listeners -------------------------------------------------------

    /// Calls `callback(event)` after every committed change to `table`,
    /// local or replicated, in commit order, on the `tidelog-events` thread.
    /// An exception in the callback is reported through
    /// `sys.unraisablehook` and counted in `listener_errors`; the listener
    /// stays registered. Returns an id for `remove_listener`.
    fn on_change(&self, table: &str, callback: &Bound<'_, PyAny>) -> PyResult<u64> {
        let db = self.h.db()?;
        if !callback.is_callable() {
            return Err(invalid(format!(
                "callback must be callable, got {}",
                type_name(callback)
            )));
        }
        let cb: Py<PyAny> = callback.clone().unbind();
        let errors = self.h.listener_errors.clone();
        let id = db
            .on_change(table, move |ev| {
                // None while the interpreter is shutting down: nothing to call.
                let _ = Python::try_attach(|py| {
                    let result = event_to_py(py, ev).and_then(|e| cb.call1(py, (e,)));
                    if let Err(e) = result {
                        errors.fetch_add(1, Ordering::Relaxed);
                        e.write_unraisable(py, Some(cb.bind(py)));
                    }
                });
            })
            .py()?;
        Ok(id.0)
    }

    /// Unregisters a listener; returns whether it was registered.
    fn remove_listener(&self, listener_id: u64) -> PyResult<bool> {
        Ok(self.h.db()?.remove_listener(ListenerId(listener_id)))
    }

    // ---- replication -----------------------------------------------------

    /// Starts the replication engine. Give `cert`, `key` and `ca` (PEM file
    /// paths) for mutual TLS, or `insecure=True` for plaintext (tests on a
    /// trusted loopback only). The other keywords are the options schema's
    /// replication settings (`heartbeat_interval="1s"`, `max_frame_bytes`,
    /// ...; see `tidelog::options`): durations are strings with a unit.
    #[pyo3(signature = (*, cert=None, key=None, ca=None, **options))]
    fn start_replication(
        &self,
        py: Python<'_>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let db = self.h.db()?;
        let o = options::replication_options(py, [cert, key, ca], options)?;
        py.detach(|| db.start_replication(o)).py()
    }

    /// Accepts peers dialing in on `addr` ("host:port"; port 0 picks a free
    /// one). Returns the bound address as "host:port".
    fn listen(&self, py: Python<'_>, addr: &str) -> PyResult<String> {
        let db = self.h.db()?;
        Ok(py.detach(|| db.listen(addr)).py()?.to_string())
    }

    /// Adds a peer. With `address` this instance dials it; without, it
    /// waits for the peer to dial in. `addresses`: more "host:port"s of
    /// the same logical peer (several hubs with one node name), tried after
    /// `address` in order. `tables` lists dicts like
    /// `{"table": "alerts", "publish": True, "subscribe": False}` (and an
    /// optional `"since_ms"`, and `"priority"` 0-255: higher is sent first).
    #[pyo3(signature = (name, **config))]
    fn add_peer(
        &self,
        py: Python<'_>,
        name: &str,
        config: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let db = self.h.db()?;
        let config = options::peer_config(py, name, config)?;
        py.detach(|| db.add_peer(config)).py()
    }

    /// Replaces a peer's configuration (same arguments as `add_peer`); its
    /// link restarts with it.
    #[pyo3(signature = (name, **config))]
    fn update_peer(
        &self,
        py: Python<'_>,
        name: &str,
        config: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let db = self.h.db()?;
        let config = options::peer_config(py, name, config)?;
        py.detach(|| db.update_peer(config)).py()
    }

    /// Removes a peer and closes its link (its resume point is kept).
    fn remove_peer(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let db = self.h.db()?;
        py.detach(|| db.remove_peer(name)).py()
    }

    /// Status of one peer as a dict (connected, since_ms, last_error,
    /// tables, sent/acked/received sequences, backlog, lag, refusals...).
    fn peer_status<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let db = self.h.db()?;
        let s = py.detach(|| db.peer_status(name)).py()?;
        to_py_via_serde(py, &s)
    }

    /// Status of every peer, by name.
    fn replication_status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let db = self.h.db()?;
        let s = py.detach(|| db.replication_status()).py()?;
        to_py_via_serde(py, &s)
    }

    /// Blocks (without the GIL) until `peer` acknowledged this instance's
    /// log up to `seq` (e.g. `CommitInfo.seq`); raises `TimeoutError` after
    /// `timeout` seconds, saying what the link looks like, and `PeerError`
    /// if the transaction writes a table this instance publishes to `peer`
    /// but `peer` does not subscribe to (it would never be acknowledged).
    #[pyo3(signature = (peer, seq, timeout=30.0))]
    fn wait_for_ack(&self, py: Python<'_>, peer: &str, seq: i64, timeout: f64) -> PyResult<()> {
        let db = self.h.db()?;
        let seq = non_negative("seq", seq)?;
        let timeout = seconds("timeout", timeout)?;
        // Wait in slices so Ctrl-C (and other signals) get through.
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let slice = left.min(Duration::from_millis(200));
            match py.detach(|| db.wait_for_ack(peer, seq, slice)) {
                Err(tidelog::Error::NotAcknowledged { .. }) if left > slice => {
                    py.check_signals()?;
                }
                other => {
                    // A timeout keeps the last slice's account of the link,
                    // with the caller's whole timeout.
                    return other
                        .map_err(|mut e| {
                            if let tidelog::Error::NotAcknowledged { after, .. } = &mut e {
                                *after = timeout;
                            }
                            e
                        })
                        .py();
                }
            }
        }
    }

    /// Blocks (without the GIL) until every peer this instance publishes to
    /// acknowledged this instance's log up to `seq` (`None`: everything
    /// committed when the call starts); raises `TimeoutError` after
    /// `timeout` seconds, saying what the link looks like, and `PeerError`
    /// if the transaction writes a table published to a peer that does not
    /// subscribe to it.
    #[pyo3(signature = (seq=None, timeout=30.0))]
    fn wait_for_delivery(&self, py: Python<'_>, seq: Option<i64>, timeout: f64) -> PyResult<()> {
        let db = self.h.db()?;
        let timeout = seconds("timeout", timeout)?;
        // Fixed once: each slice below must wait for the same position, not
        // for whatever was committed by the time it starts.
        let seq = match seq {
            Some(s) => non_negative("seq", s)?,
            None => py.detach(|| db.log_bounds()).py()?.last,
        };
        // Wait in slices so Ctrl-C (and other signals) get through.
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let slice = left.min(Duration::from_millis(200));
            match py.detach(|| db.wait_for_delivery(Some(seq), slice)) {
                Err(tidelog::Error::NotAcknowledged { .. }) if left > slice => {
                    py.check_signals()?;
                }
                other => {
                    return other
                        .map_err(|mut e| {
                            if let tidelog::Error::NotAcknowledged { after, .. } = &mut e {
                                *after = timeout;
                            }
                            e
                        })
                        .py();
                }
            }
        }
    }

    /// The benchmark's upsert loop in Rust on this database (see
    /// `bench/bench.py`): records `start..stop` into `table`; returns
    /// seconds. Not public API; only in a build with the `bench` feature.
    #[cfg(feature = "bench")]
    fn _rust_upserts(&self, py: Python<'_>, table: &str, start: i64, stop: i64) -> PyResult<f64> {
        let db = self.h.db()?;
        py.detach(|| bench::upserts(db, table, start, stop)).py()
    }

    /// The benchmark's point-get loop in Rust (see `bench::gets`);
    /// returns seconds. Not public API; only with the `bench` feature.
    #[cfg(feature = "bench")]
    fn _rust_gets(
        &self,
        py: Python<'_>,
        table: &str,
        start: i64,
        stop: i64,
        parse: bool,
    ) -> PyResult<f64> {
        let db = self.h.db()?;
        py.detach(|| bench::gets(db, table, start, stop, parse))
            .py()
    }
}

/// Opens (creating if needed) the data directory `path` for node
/// `node_name`. The keywords are the options schema's open options
/// (`engine`, `durability` "grouped" or "sync", `flush_interval="50ms"`,
/// `memory_budget="64MiB"`, `retention={...}`, ...; see `tidelog::options`).
/// Use the result as a context manager to close it.
#[pyfunction]
#[pyo3(signature = (path, node_name, **options))]
fn open(
    py: Python<'_>,
    path: PathBuf,
    node_name: &str,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyDatabase> {
    fork::install();
    let o = options::open_options(py, node_name, options)?;
    let db = py.detach(|| tidelog::Database::open(&path, o)).py()?;
    Ok(PyDatabase {
        h: Handle::register(db),
    })
}

/// Writes a development PKI into `out_dir`: a CA (`ca.pem`, `ca.key`) and a
/// certificate and key per node name (`<node>.pem`, `<node>.key`). For tests
/// and trying tidelog out; production clusters use their own PKI. Refuses
/// to overwrite existing files. Returns the paths.
#[pyfunction]
#[pyo3(signature = (out_dir, nodes, *, ca_name="tidelog dev CA"))]
fn dev_certs<'py>(
    py: Python<'py>,
    out_dir: PathBuf,
    nodes: Vec<String>,
    ca_name: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let files = py
        .detach(|| tidelog::net::certs::generate_dev_pki(&out_dir, ca_name, &nodes))
        .py()?;
    let (ca, _) = tidelog::net::certs::ca_paths(&out_dir);
    let out = PyDict::new(py);
    out.set_item("ca", ca.display().to_string())?;
    let by_node = PyDict::new(py);
    for (name, f) in nodes.iter().zip(files) {
        let d = PyDict::new(py);
        d.set_item("cert", f.cert_chain.display().to_string())?;
        d.set_item("key", f.key.display().to_string())?;
        by_node.set_item(name, d)?;
    }
    out.set_item("nodes", by_node)?;
    Ok(out)
}

#[pymodule]
fn _tidelog(m: &Bound<'_, PyModule>) -> PyResult<()> {
    fork::install();
    logging::install();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Whether the benchmark's hidden Rust loops are built in (the `bench`
    // feature); release builds leave them out.
    m.add("_bench", cfg!(feature = "bench"))?;
    m.add_class::<PyDatabase>()?;
    m.add_class::<PyTransaction>()?;
    m.add_class::<PyCommitInfo>()?;
    m.add_function(wrap_pyfunction!(open, m)?)?;
    m.add_function(wrap_pyfunction!(dev_certs, m)?)?;
    m.add_function(wrap_pyfunction!(_close_all, m)?)?;
    m.add_function(wrap_pyfunction!(logging::_stop_logging, m)?)?;
    Ok(())
}
