//! The library's log records (refused links, resyncs, failed background
//! work) handed to an optional C callback.

use std::cell::Cell;
use std::ffi::{c_char, c_void, CString};

use parking_lot::RwLock;

use crate::guard::{guard, Fail};
use crate::tidelog_status::{self, *};

/// A log callback.
///
/// @param level     1 error, 2 warn, 3 info, 4 debug, 5 trace.
/// @param target    where the record comes from, e.g. "tidelog::repl"
///                  (links and syncs), "tidelog::storage",
///                  "tidelog::maintenance", "tidelog::listener".
/// @param message   the record's text. Both strings are NUL-terminated and
///                  valid only during the call (copy them to keep them).
/// @param user_data the pointer given to tidelog_set_log_callback().
pub type tidelog_log_fn = Option<
    unsafe extern "C" fn(
        level: i32,
        target: *const c_char,
        message: *const c_char,
        user_data: *mut c_void,
    ),
>;

struct Sink {
    callback: unsafe extern "C" fn(i32, *const c_char, *const c_char, *mut c_void),
    user_data: *mut c_void,
}

// SAFETY: tidelog_set_log_callback()'s contract makes the caller responsible
// for the callback and `user_data` being usable from any thread; tidelog
// never dereferences `user_data`, only passes it back.
unsafe impl Send for Sink {}
// SAFETY: as above; the pointers are only copied.
unsafe impl Sync for Sink {}

/// A record holds the read lock for the whole call, so replacing the
/// callback (write lock) waits out calls in progress and the old
/// `user_data` may be released once tidelog_set_log_callback() returns.
static SINK: RwLock<Option<Sink>> = RwLock::new(None);

thread_local! {
    /// Set while this thread runs the callback: a record logged from inside
    /// it (the callback calling into tidelog) is dropped, not delivered
    /// recursively, and the callback cannot replace itself (deadlock).
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

struct CLogger;

static LOGGER: CLogger = CLogger;

impl log::Log for CLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) || IN_CALLBACK.with(Cell::get) {
            return;
        }
        let sink = SINK.read();
        let Some(sink) = sink.as_ref() else {
            return;
        };
        // A NUL inside the text would cut it short in C; it cannot be
        // represented, so it becomes a space.
        let cstr = |s: String| CString::new(s.replace('\0', " ")).unwrap_or_default();
        let target = cstr(r.target().to_string());
        let message = cstr(r.args().to_string());
        IN_CALLBACK.with(|c| c.set(true));
        // SAFETY: the callback and `user_data` are what the C caller
        // registered and promised stay valid until it is replaced (which
        // waits for this call through the read lock); both strings outlive
        // the call.
        unsafe {
            (sink.callback)(
                r.level() as i32,
                target.as_ptr(),
                message.as_ptr(),
                sink.user_data,
            )
        };
        IN_CALLBACK.with(|c| c.set(false));
    }

    fn flush(&self) {}
}

/// Sends the library's log records to `callback`: refused replication
/// links, resyncs, failed background flushes, a change listener that
/// panicked. Without a callback (the default) they are dropped; nothing is
/// written to stderr.
///
/// Threading: the callback runs on whichever thread logs (the replication
/// threads, the maintenance thread, the `tidelog-events` thread, or the
/// caller's own thread inside a tidelog call), possibly on several at once,
/// so it must be thread-safe; it should return quickly. A record logged
/// while the callback runs on the same thread is dropped.
///
/// Replacing or removing the callback waits until calls in progress have
/// returned: after this returns, the previous `user_data` may be released.
/// It applies to every database in the process.
///
/// @param callback  the function to call, or NULL to stop logging.
/// @param user_data passed back to `callback` untouched (may be NULL).
/// @param min_level the least severe level delivered: 1 error, 2 warn,
///                  3 info, 4 debug, 5 trace (0: none).
/// @return TIDELOG_OK; TIDELOG_INVALID_INPUT for a level outside 0..=5;
///         TIDELOG_UNSUPPORTED when called from inside the log callback.
#[no_mangle]
pub extern "C" fn tidelog_set_log_callback(
    callback: tidelog_log_fn,
    user_data: *mut c_void,
    min_level: i32,
) -> tidelog_status {
    guard(|| {
        let level = match min_level {
            0 => log::LevelFilter::Off,
            1 => log::LevelFilter::Error,
            2 => log::LevelFilter::Warn,
            3 => log::LevelFilter::Info,
            4 => log::LevelFilter::Debug,
            5 => log::LevelFilter::Trace,
            _ => {
                return Err(Fail::new(
                    TIDELOG_INVALID_INPUT,
                    format!(
                        "min_level {min_level} is not a level: use 0 (none), 1 (error), 2 (warn), 3 (info), 4 (debug) or 5 (trace)"
                    ),
                ))
            }
        };
        if IN_CALLBACK.with(Cell::get) {
            return Err(Fail::new(
                TIDELOG_UNSUPPORTED,
                "tidelog_set_log_callback cannot be called from inside the log callback",
            ));
        }
        // Fails only if another logger owns this process's copy of the
        // facade, which nothing else in libtidelog installs.
        let _ = log::set_logger(&LOGGER);
        let mut sink = SINK.write();
        *sink = callback.map(|callback| Sink {
            callback,
            user_data,
        });
        log::set_max_level(if sink.is_some() {
            level
        } else {
            log::LevelFilter::Off
        });
        Ok(())
    })
}
