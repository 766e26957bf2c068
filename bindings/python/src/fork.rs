//! Fork detection. A `pthread_atfork` child handler bumps a counter; each
//! handle remembers the counter at open and compares on every call (one
//! relaxed atomic load), so a forked child gets `ForkedError` instead of
//! touching threads and locks that only exist in the parent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    // Async-signal-safe: one atomic add.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Registers the handler once per process (inherited by forked children).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
}

/// How many forks separate this process from the original one.
#[inline]
pub fn generation() -> u64 {
    FORKS.load(Ordering::Relaxed)
}
