//! Holds on the log by consumers other than peers (the cloud sinks). Kept
//! apart from `retention` (which reads the database) so the database can
//! own the holds without a cycle.

use std::sync::atomic::Ordering;

/// Positions in the log that consumers other than peers (the cloud sinks)
/// still need, held like a peer's acknowledgement: entries after a hold
/// stay until the caps force them out. A hold ends when its owner drops it.
#[derive(Default)]
pub(crate) struct LogHolds {
    holds: parking_lot::Mutex<Vec<std::sync::Weak<std::sync::atomic::AtomicU64>>>,
}

impl LogHolds {
    /// A new hold at `seq` (entries up to `seq` may go); the owner moves it
    /// with `store` as it consumes the log.
    pub(crate) fn hold(&self, seq: u64) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        let hold = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(seq));
        let mut holds = self.holds.lock();
        holds.retain(|h| h.strong_count() > 0);
        holds.push(std::sync::Arc::downgrade(&hold));
        hold
    }

    /// The lowest live hold; `u64::MAX` when there is none.
    pub(crate) fn floor(&self) -> u64 {
        self.holds
            .lock()
            .iter()
            .filter_map(|h| h.upgrade())
            .map(|h| h.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }
}
