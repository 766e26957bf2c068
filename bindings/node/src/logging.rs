//! The core's log records for JavaScript: an optional callback set with
//! `setLogCallback`, called on the JavaScript thread through a weak
//! threadsafe function (it never keeps the process alive). Without one,
//! warnings and errors go to stderr, as the library printed them before it
//! had a log facade.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use napi::bindgen_prelude::Function;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

use crate::convert::invalid;
use crate::listeners::lock;

/// One log record, as the callback receives it.
#[napi(object)]
pub struct LogRecord {
    /// "error", "warn", "info", "debug" or "trace".
    pub level: String,
    /// Where it comes from, e.g. "tidelog::repl".
    pub target: String,
    pub message: String,
}

type LogFn = ThreadsafeFunction<LogRecord, (), LogRecord, Status, false, true, 0>;

struct Sink {
    callback: Option<LogFn>,
    level: log::LevelFilter,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    callback: None,
    level: log::LevelFilter::Warn,
});

struct NodeLog;

static LOGGER: NodeLog = NodeLog;

impl log::Log for NodeLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // What the crates under the library (rustls) log per handshake is
        // only passed on from warnings up.
        m.target().starts_with("tidelog") || m.level() <= log::Level::Warn
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let sink = lock(&SINK);
        if r.level() > sink.level {
            return;
        }
        let record = LogRecord {
            level: r.level().as_str().to_lowercase(),
            target: r.target().to_string(),
            message: r.args().to_string(),
        };
        match &sink.callback {
            // Non-blocking: the logging thread may hold a library lock.
            Some(f) => {
                let _ = f.call(record, ThreadsafeFunctionCallMode::NonBlocking);
            }
            None => {
                let _ = writeln!(std::io::stderr(), "tidelog: {}", record.message);
            }
        }
    }

    fn flush(&self) {}
}

static INSTALLED: OnceLock<()> = OnceLock::new();

/// Installs the logger once per process (when the addon loads).
pub(crate) fn install() {
    INSTALLED.get_or_init(|| {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
    });
}

/// Routes log records to `callback` from `minLevel` up ("error", "warn",
/// "info" (default), "debug", "trace"); null restores the default
/// (warnings and errors to stderr).
#[napi]
pub fn set_log_callback(
    callback: Option<Function<LogRecord, ()>>,
    min_level: Option<String>,
) -> napi::Result<()> {
    install();
    let level = match min_level.as_deref() {
        None | Some("info") => log::LevelFilter::Info,
        Some("error") => log::LevelFilter::Error,
        Some("warn") => log::LevelFilter::Warn,
        Some("debug") => log::LevelFilter::Debug,
        Some("trace") => log::LevelFilter::Trace,
        Some(other) => {
            return Err(invalid(format!(
                "minLevel must be one of \"error\", \"warn\", \"info\", \"debug\", \"trace\", got {other:?}"
            )))
        }
    };
    let f = match callback {
        Some(cb) => Some(
            cb.build_threadsafe_function::<LogRecord>()
                .weak::<true>()
                .callee_handled::<false>()
                .build_callback(|ctx| Ok(ctx.value))
                .map_err(|e| invalid(e.reason.clone()))?,
        ),
        None => None,
    };
    let mut sink = lock(&SINK);
    sink.level = if f.is_some() {
        level
    } else {
        log::LevelFilter::Warn
    };
    log::set_max_level(sink.level);
    // The previous function, if any, is released here (dropped).
    sink.callback = f;
    Ok(())
}
