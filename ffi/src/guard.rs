//! The boundary: panic barrier, last-error message, argument checks.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::Value;
use tidelog_core::Error;

use crate::tidelog_status::{self, *};

/// Why a call failed: the status it returns and the last-error message.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) status: tidelog_status,
    pub(crate) message: String,
}

impl Fail {
    pub(crate) fn new(status: tidelog_status, message: impl Into<String>) -> Fail {
        Fail {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Fail {
        Fail::new(TIDELOG_INVALID_INPUT, message)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::new(status_of(&e), e.to_string())
    }
}

pub(crate) type FfiResult<T = ()> = Result<T, Fail>;

/// The stable mapping from core errors to status codes.
pub(crate) fn status_of(e: &Error) -> tidelog_status {
    use tidelog_core::ErrorKind as K;
    match e {
        Error::InvalidJson(_) => return TIDELOG_INVALID_JSON,
        Error::InvalidUtf8(_) => return TIDELOG_INVALID_UTF8,
        _ => {}
    }
    match e.kind() {
        K::InvalidInput => TIDELOG_INVALID_INPUT,
        K::NotFound => TIDELOG_NOT_FOUND,
        K::AlreadyExists => TIDELOG_ALREADY_EXISTS,
        K::Closed => TIDELOG_CLOSED,
        K::Locked => TIDELOG_LOCKED,
        K::Storage => TIDELOG_STORAGE,
        K::Corrupt => TIDELOG_CORRUPT,
        K::ClockSkew => TIDELOG_CLOCK_SKEW,
        K::Timeout => TIDELOG_TIMEOUT,
        K::Tls => TIDELOG_TLS,
        K::Peer => TIDELOG_PEER,
        K::Unsupported => TIDELOG_UNSUPPORTED,
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: String) {
    // A message never contains NUL in practice; if it does, show it escaped.
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = Some(c));
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut e) = e.try_borrow_mut() {
            if e.is_some() {
                *e = None;
            }
        }
    });
}

pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|e| match &*e.borrow() {
            Some(c) => c.as_ptr(),
            None => std::ptr::null(),
        })
        .unwrap_or(std::ptr::null())
}

/// Runs one entry point's body: catches panics, maps the outcome to a
/// status, and sets or clears the thread's last-error message.
pub(crate) fn guard(f: impl FnOnce() -> FfiResult) -> tidelog_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            clear_last_error();
            TIDELOG_OK
        }
        Ok(Err(fail)) => {
            set_last_error(fail.message);
            fail.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            set_last_error(format!(
                "internal error (a bug in tidelog; please report it): panic: {what}"
            ));
            TIDELOG_PANIC
        }
    }
}

/// For the calls that return nothing (the free functions): a panic is
/// swallowed, since there is no status to report it with.
pub(crate) fn guard_void(f: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(f));
}

/// Borrows a required C string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid and
/// unmodified for `'a` (the duration of the call).
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(Fail::new(
            TIDELOG_NULL_ARGUMENT,
            format!("argument `{what}` is NULL"),
        ));
    }
    // SAFETY: non-NULL, and the caller's contract (above) makes it a valid
    // NUL-terminated string for the whole call.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|e| {
        Fail::new(
            TIDELOG_INVALID_UTF8,
            format!(
                "argument `{what}` is not valid UTF-8 (first bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// Borrows an optional C string argument (NULL means "not given").
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn opt_str_arg<'a>(p: *const c_char, what: &str) -> FfiResult<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract of this function.
    unsafe { str_arg(p, what) }.map(Some)
}

/// Parses a required JSON text argument.
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn json_arg(p: *const c_char, what: &str) -> FfiResult<Value> {
    // SAFETY: forwarded contract of this function.
    let text = unsafe { str_arg(p, what) }?;
    parse_json(text, what)
}

/// Parses an optional JSON text argument (NULL means "not given").
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn opt_json_arg(p: *const c_char, what: &str) -> FfiResult<Option<Value>> {
    // SAFETY: forwarded contract of this function.
    match unsafe { opt_str_arg(p, what) }? {
        Some(text) => parse_json(text, what).map(Some),
        None => Ok(None),
    }
}

/// A core error from reading a record argument given as JSON text, worded
/// as [`json_arg`] words a parse failure, so every call that takes JSON
/// says it the same way.
pub(crate) fn record_text_fail(e: Error, what: &str) -> Fail {
    match e {
        Error::InvalidJson(why) => Fail::new(
            TIDELOG_INVALID_JSON,
            format!("argument `{what}` is not valid JSON: {why}"),
        ),
        other => other.into(),
    }
}

/// Parses JSON text already taken from an argument named `what`.
pub(crate) fn parse_json(text: &str, what: &str) -> FfiResult<Value> {
    serde_json::from_str(text).map_err(|e| {
        Fail::new(
            TIDELOG_INVALID_JSON,
            format!("argument `{what}` is not valid JSON: {e}"),
        )
    })
}

/// A required out parameter, checked and reset when the call starts, so
/// that after a failure it holds NULL or 0.
pub(crate) struct Out<T: Copy>(*mut T);

impl<T: Copy> Out<T> {
    /// # Safety
    /// `p` is NULL or points to writable, properly aligned memory for a `T`
    /// for the duration of the call.
    pub(crate) unsafe fn new(p: *mut T, what: &str, reset: T) -> FfiResult<Out<T>> {
        if p.is_null() {
            return Err(Fail::new(
                TIDELOG_NULL_ARGUMENT,
                format!("out parameter `{what}` is NULL"),
            ));
        }
        // SAFETY: non-NULL and writable by this function's contract.
        unsafe { p.write(reset) };
        Ok(Out(p))
    }

    pub(crate) fn set(self, value: T) {
        // SAFETY: checked non-NULL in `new`, writable by its contract.
        unsafe { self.0.write(value) }
    }
}

/// An optional out parameter: NULL means the caller does not want it.
pub(crate) struct OptOut<T: Copy>(*mut T);

impl<T: Copy> OptOut<T> {
    /// # Safety
    /// As [`Out::new`].
    pub(crate) unsafe fn new(p: *mut T, reset: T) -> OptOut<T> {
        if !p.is_null() {
            // SAFETY: non-NULL and writable by this function's contract.
            unsafe { p.write(reset) };
        }
        OptOut(p)
    }

    pub(crate) fn is_null(&self) -> bool {
        self.0.is_null()
    }

    pub(crate) fn set(self, value: T) {
        if !self.0.is_null() {
            // SAFETY: non-NULL, writable by the contract of `new`.
            unsafe { self.0.write(value) }
        }
    }
}
