//! tidelog errors as Python exceptions. The classes live in
//! `tidelog/_errors.py` (so they can also derive from `ValueError`,
//! `LookupError` and the built-in `TimeoutError`); this maps every
//! [`tidelog::Error`] to one of them by variant, then by [`ErrorKind`].

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use tidelog::{Error, ErrorKind};

static ERRORS_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// A `tidelog._errors.<class_name>` exception with `message`.
pub fn make(class_name: &str, message: String) -> PyErr {
    Python::attach(|py| {
        let class = ERRORS_MODULE
            .get_or_try_init(py, || py.import("tidelog._errors").map(Bound::unbind))
            .and_then(|m| m.bind(py).getattr(class_name))
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
        match class {
            Ok(c) => PyErr::from_type(c, (message,)),
            // Only if the package is broken; still a clear error.
            Err(e) => e,
        }
    })
}

pub fn class_for(e: &Error) -> &'static str {
    match e {
        Error::TableNotFound(_) => "TableNotFoundError",
        Error::RecordNotFound { .. } => "RecordNotFoundError",
        Error::PeerNotFound(_) => "PeerNotFoundError",
        Error::TableExists(_) => "TableExistsError",
        Error::DuplicateKey { .. } => "DuplicateKeyError",
        Error::PeerExists(_) => "PeerExistsError",
        Error::DiskFull { .. } => "DiskFullError",
        Error::TableFull { .. } => "TableFullError",
        _ => class_for_kind(e.kind()),
    }
}

#[allow(unreachable_patterns)] // ErrorKind only ever grows
pub fn class_for_kind(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::InvalidInput => "InvalidInputError",
        ErrorKind::NotFound => "NotFoundError",
        ErrorKind::AlreadyExists => "AlreadyExistsError",
        ErrorKind::Closed => "ClosedError",
        ErrorKind::Locked => "LockedError",
        ErrorKind::Storage => "StorageError",
        ErrorKind::Corrupt => "CorruptError",
        ErrorKind::ClockSkew => "ClockSkewError",
        ErrorKind::Timeout => "TimeoutError",
        ErrorKind::Tls => "TlsError",
        ErrorKind::Peer => "PeerError",
        ErrorKind::Unsupported => "UnsupportedError",
        _ => "Error",
    }
}

pub fn to_py(e: Error) -> PyErr {
    make(class_for(&e), e.to_string())
}

pub fn invalid(message: impl Into<String>) -> PyErr {
    make("InvalidInputError", message.into())
}

pub fn corrupt(message: String) -> PyErr {
    make("CorruptError", message)
}

pub fn forked() -> PyErr {
    make(
        "ForkedError",
        "this tidelog handle was opened in the parent process and cannot be used after os.fork(): \
         open the database in the child instead (after the parent closed it), or use the \
         'spawn' start method of multiprocessing"
            .to_string(),
    )
}

/// `?`-friendly conversion for core results.
pub trait IntoPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Error> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
