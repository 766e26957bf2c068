//! One open database as the Python objects share it, and the registry of
//! every handle open in the process, closed at exit.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use pyo3::prelude::*;

use crate::{error, fork};

/// One open database as the Python objects share it.
pub(crate) struct Handle {
    db: std::mem::ManuallyDrop<tidelog::Database>,
    fork_gen: u64,
    pub(crate) listener_errors: Arc<AtomicU64>,
}

impl Handle {
    /// Wraps a database just opened, and remembers it for `_close_all`.
    pub(crate) fn register(db: tidelog::Database) -> Arc<Handle> {
        let h = Arc::new(Handle {
            db: std::mem::ManuallyDrop::new(db),
            fork_gen: fork::generation(),
            listener_errors: Arc::new(AtomicU64::new(0)),
        });
        let mut open = OPEN.lock();
        open.retain(|w| w.strong_count() > 0);
        open.push(Arc::downgrade(&h));
        h
    }

    /// The database, unless this is a forked child of the process that
    /// opened it.
    #[inline]
    pub(crate) fn db(&self) -> PyResult<&tidelog::Database> {
        if fork::generation() != self.fork_gen {
            return Err(error::forked());
        }
        Ok(&self.db)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if fork::generation() != self.fork_gen {
            // Forked child: closing would wait for threads that only exist
            // in the parent. Leak the handle instead.
            return;
        }
        // SAFETY: dropped exactly once, here.
        let db = unsafe { std::mem::ManuallyDrop::take(&mut self.db) };
        if !db.is_closed() {
            // Release the GIL: closing waits for the listener thread, which
            // may be waiting for the GIL to call a Python listener.
            let closed = Python::try_attach(|py| py.detach(|| db.close()));
            if closed.is_none() {
                let _ = db.close();
            }
        }
    }
}

/// Every handle opened in this process, for `_close_all` at exit.
static OPEN: Mutex<Vec<Weak<Handle>>> = Mutex::new(Vec::new());

/// Closes every database still open in this process (registered with
/// `atexit` by the package, so listener threads stop before the interpreter
/// shuts down).
#[pyfunction]
pub(crate) fn _close_all(py: Python<'_>) {
    let handles: Vec<Arc<Handle>> = OPEN.lock().drain(..).filter_map(|w| w.upgrade()).collect();
    for h in &handles {
        if let Ok(db) = h.db() {
            let _ = py.detach(|| db.close());
        }
    }
}
