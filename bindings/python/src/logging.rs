//! The core's log records, handed to Python's `logging` module: logger
//! `tidelog`, with a child per target (`tidelog::repl` -> `tidelog.repl`).
//!
//! Records are queued and emitted by one thread of ours, never on the
//! thread that logged: that thread may hold one of the library's locks
//! while a Python thread holding the GIL waits for it, and taking the GIL
//! there would deadlock. The queue is bounded; a flood drops records rather
//! than slowing the library down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;

use pyo3::prelude::*;

/// Records waiting for the emitting thread.
const QUEUE: usize = 1024;

struct Entry {
    logger: String,
    level: u8,
    message: String,
}

struct PyLog {
    queue: SyncSender<Entry>,
}

static LOGGER: OnceLock<PyLog> = OnceLock::new();

/// Cleared at interpreter exit (after the databases are closed): a thread
/// attaching to a finalizing interpreter may be stopped or hang.
static LIVE: AtomicBool = AtomicBool::new(true);

impl log::Log for PyLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // The library's own records down to debug; what the crates under it
        // (rustls) log per handshake only from warnings up.
        LIVE.load(Ordering::Relaxed)
            && m.level() <= log::Level::Debug
            && (m.target().starts_with("tidelog") || m.level() <= log::Level::Warn)
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let target = r.target();
        let logger = if target == "tidelog" || target.starts_with("tidelog::") {
            target.replace("::", ".")
        } else {
            format!("tidelog.{}", target.replace("::", "."))
        };
        let level = match r.level() {
            log::Level::Error => 40,
            log::Level::Warn => 30,
            log::Level::Info => 20,
            log::Level::Debug => 10,
            log::Level::Trace => 5,
        };
        let entry = Entry {
            logger,
            level,
            message: r.args().to_string(),
        };
        match self.queue.try_send(entry) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn flush(&self) {}
}

fn emit(py: Python<'_>, logging: &Bound<'_, PyModule>, e: &Entry) -> PyResult<()> {
    let logger = logging.call_method1("getLogger", (e.logger.as_str(),))?;
    if logger
        .call_method1("isEnabledFor", (e.level,))?
        .is_truthy()?
    {
        logger.call_method1("log", (e.level, "%s", e.message.as_str()))?;
    }
    let _ = py;
    Ok(())
}

/// Installs the logger once per process (called when the module loads).
pub fn install() {
    if LOGGER.get().is_some() {
        return;
    }
    let (tx, rx) = sync_channel::<Entry>(QUEUE);
    let spawned = std::thread::Builder::new()
        .name("tidelog-log".into())
        .spawn(move || {
            for entry in rx {
                if !LIVE.load(Ordering::Relaxed) {
                    break;
                }
                let done = Python::try_attach(|py| {
                    let result = py
                        .import("logging")
                        .and_then(|logging| emit(py, &logging, &entry));
                    // A failing handler is Python's to report, as
                    // logging.Handler.handleError would.
                    if let Err(e) = result {
                        e.write_unraisable(py, None);
                    }
                });
                if done.is_none() {
                    break;
                }
            }
        });
    // Without the thread there is nowhere to send records: stay silent.
    if spawned.is_err() {
        return;
    }
    let logger = LOGGER.get_or_init(|| PyLog { queue: tx });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

/// Stops handing records to Python; `tidelog/__init__.py` calls it at exit.
#[pyfunction]
pub fn _stop_logging() {
    LIVE.store(false, Ordering::Relaxed);
}
