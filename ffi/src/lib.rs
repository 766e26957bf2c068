//! The C ABI of tidelog: `include/tidelog.h`, `libtidelog.so` and
//! `libtidelog.a`.
//!
//! Thin by design: every entry point checks its arguments, parses JSON text
//! into `serde_json::Value`, calls the core crate and turns the result into a
//! status code plus JSON text. Conventions every function follows:
//!
//! - it runs inside [`guard::guard`], so no panic crosses the boundary (it
//!   becomes `TIDELOG_PANIC`) and the thread's last-error message is set
//!   (failure) or cleared (success);
//! - handles are ids looked up in a registry, never dereferenced, so a freed
//!   or foreign handle is reported as `TIDELOG_INVALID_HANDLE`, not undefined
//!   behaviour;
//! - `unsafe` appears only at the boundary (borrowing C strings, writing out
//!   parameters, calling the C callback), each block with a `SAFETY` note.
//!
//! The doc comments on the `extern "C"` items become the Doxygen comments of
//! the generated header; the header's preamble lives in `cbindgen.toml`.

#![allow(non_camel_case_types)]
// The C caller cannot see Rust's `unsafe`; the pointer contract every
// function shares is stated once, at the top of the header.
#![allow(clippy::missing_safety_doc)]

mod conflicts;
mod db;
mod db_txn;
mod events;
mod guard;
mod handles;
mod json;
mod logging;
mod repl;
mod strings;
mod table_stats;

use std::ffi::c_char;

pub use conflicts::*;
pub use db::*;
pub use db_txn::*;
pub use events::*;
pub use handles::{tidelog_db, tidelog_subscription, tidelog_txn};
pub use logging::*;
pub use repl::*;
pub use strings::*;
pub use table_stats::*;

/// The ABI version this header describes. Compare it with
/// tidelog_abi_version() at run time: they differ when the program was
/// compiled against a different header than the library it loaded.
pub const TIDELOG_ABI_VERSION: u32 = 1;

/// Status of every call that can fail. `TIDELOG_OK` is 0; codes 1 to 12 are
/// the core library's error kinds (stable, only ever appended); codes from
/// 100 on are errors of the C boundary itself. After any status other than
/// `TIDELOG_OK`, tidelog_last_error() says what went wrong.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tidelog_status {
    /// Success.
    TIDELOG_OK = 0,
    /// Malformed input: a bad name, key, option or record (not a JSON
    /// object, missing or wrongly typed primary key, too large, ...).
    TIDELOG_INVALID_INPUT = 1,
    /// The named table, record or peer does not exist.
    TIDELOG_NOT_FOUND = 2,
    /// An insert hit an existing key, or a table or peer already exists.
    TIDELOG_ALREADY_EXISTS = 3,
    /// The database was closed (tidelog_close()).
    TIDELOG_CLOSED = 4,
    /// The data directory is in use by another handle or process.
    TIDELOG_LOCKED = 5,
    /// The storage engine or the file system failed.
    TIDELOG_STORAGE = 6,
    /// Stored data could not be decoded.
    TIDELOG_CORRUPT = 7,
    /// A clock stamp is too far ahead of the local wall clock.
    TIDELOG_CLOCK_SKEW = 8,
    /// A wait ran out of time (tidelog_wait_for_ack(), tidelog_next_event()).
    TIDELOG_TIMEOUT = 9,
    /// TLS configuration or handshake problem (certificate, key, CA).
    TIDELOG_TLS = 10,
    /// A peer misbehaved, or the replication link or listener failed.
    TIDELOG_PEER = 11,
    /// Not allowed in the current state (e.g. peer calls before
    /// tidelog_start_replication(), or starting it twice).
    TIDELOG_UNSUPPORTED = 12,
    /// A required pointer argument was NULL.
    TIDELOG_NULL_ARGUMENT = 100,
    /// A string argument was not valid UTF-8.
    TIDELOG_INVALID_UTF8 = 101,
    /// A JSON argument could not be parsed as JSON at all.
    TIDELOG_INVALID_JSON = 102,
    /// A handle that was never handed out, already freed, or of another
    /// kind (e.g. a transaction passed as a database), or a transaction
    /// that was already committed.
    TIDELOG_INVALID_HANDLE = 103,
    /// A bug inside tidelog panicked; the panic was caught at the boundary.
    /// The handle stays usable, but please report the message.
    TIDELOG_PANIC = 104,
}

/// The ABI version of the loaded library (TIDELOG_ABI_VERSION of the
/// header it was built with). Never fails.
#[no_mangle]
pub extern "C" fn tidelog_abi_version() -> u32 {
    TIDELOG_ABI_VERSION
}

/// The library's version, e.g. "0.1.0": a static string, never freed.
/// Never fails.
#[no_mangle]
pub extern "C" fn tidelog_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// What the most recent tidelog call on this thread failed with, as a
/// NUL-terminated UTF-8 message; NULL if that call succeeded (or there was
/// none). Every call that returns a tidelog_status sets or clears it.
///
/// The text belongs to tidelog: do not free it. It stays valid until the
/// next tidelog call on the same thread; copy it to keep it.
#[no_mangle]
pub extern "C" fn tidelog_last_error() -> *const c_char {
    guard::last_error_ptr()
}

/// The name of a status code, e.g. "TIDELOG_NOT_FOUND": a static string,
/// never freed; "TIDELOG_UNKNOWN_STATUS" for a value that is not a
/// tidelog_status. Never fails.
///
/// @param status a value returned by a tidelog call (passed as int so any
///               value is safe to pass).
#[no_mangle]
pub extern "C" fn tidelog_status_name(status: i32) -> *const c_char {
    let name: &'static str = match status {
        0 => "TIDELOG_OK\0",
        1 => "TIDELOG_INVALID_INPUT\0",
        2 => "TIDELOG_NOT_FOUND\0",
        3 => "TIDELOG_ALREADY_EXISTS\0",
        4 => "TIDELOG_CLOSED\0",
        5 => "TIDELOG_LOCKED\0",
        6 => "TIDELOG_STORAGE\0",
        7 => "TIDELOG_CORRUPT\0",
        8 => "TIDELOG_CLOCK_SKEW\0",
        9 => "TIDELOG_TIMEOUT\0",
        10 => "TIDELOG_TLS\0",
        11 => "TIDELOG_PEER\0",
        12 => "TIDELOG_UNSUPPORTED\0",
        100 => "TIDELOG_NULL_ARGUMENT\0",
        101 => "TIDELOG_INVALID_UTF8\0",
        102 => "TIDELOG_INVALID_JSON\0",
        103 => "TIDELOG_INVALID_HANDLE\0",
        104 => "TIDELOG_PANIC\0",
        _ => "TIDELOG_UNKNOWN_STATUS\0",
    };
    name.as_ptr().cast()
}

/// Self-test of the panic barrier: panics inside the library on purpose
/// and returns what the barrier made of it, which is always TIDELOG_PANIC
/// (with a last-error message). Lets a binding or a build check that no
/// Rust panic can cross into C with this build's settings. Has no other
/// effect (the panic message may be printed on stderr).
#[no_mangle]
pub extern "C" fn tidelog_selftest_panic() -> tidelog_status {
    guard::guard(|| panic!("tidelog_selftest_panic: deliberate panic"))
}

#[cfg(test)]
mod bench;
#[cfg(test)]
mod status_fields;
#[cfg(test)]
mod tests;
