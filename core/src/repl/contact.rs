//! When a peer was last in touch, and for a peer a rule admitted, which
//! rule and how long it may stay silent and still hold the log. Kept
//! apart from the link's counters: the retention floor reads it for every
//! peer once a second, and an admission record persists it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::local::hlc::wall_millis;

/// What a peer admitted by a rule carries besides its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// The rule that admitted it.
    pub(crate) rule: String,
    /// First contact, ms since the epoch.
    pub(crate) first_ms: u64,
    /// The rule's `max_silence`.
    pub(crate) max_silence: Option<Duration>,
}

#[derive(Debug, Default)]
pub(crate) struct Contact {
    /// Set for a peer a rule admitted; `None` for a configured one.
    admission: Mutex<Option<Admitted>>,
    /// When a link to the peer last went up or down, ms since the epoch
    /// (0: never, in this run or, for an admitted peer, any run).
    last_ms: AtomicU64,
    /// Its hold on the log was released (silent past `max_silence`) and
    /// that was logged; a contact sets it back.
    released: AtomicBool,
    /// `forget_peer` deleted its records: a link ending afterwards must
    /// not write its admission record back.
    forgotten: AtomicBool,
}

impl Contact {
    /// Marks the peer as admitted by a rule, last in touch at `last_ms`
    /// (an earlier time than the one known is ignored).
    pub(crate) fn set_admission(&self, a: Admitted, last_ms: u64) {
        *self.admission.lock() = Some(a);
        self.last_ms.fetch_max(last_ms, Ordering::Relaxed);
    }

    pub(crate) fn admission(&self) -> Option<Admitted> {
        self.admission.lock().clone()
    }

    /// The rule that admitted the peer; `None` for a configured peer.
    pub(crate) fn rule(&self) -> Option<String> {
        self.admission.lock().as_ref().map(|a| a.rule.clone())
    }

    pub(crate) fn last_contact_ms(&self) -> Option<u64> {
        let ms = self.last_ms.load(Ordering::Relaxed);
        (ms > 0).then_some(ms)
    }

    /// Notes a contact now (a link went up or down).
    pub(crate) fn touch(&self) {
        self.last_ms.fetch_max(wall_millis(), Ordering::Relaxed);
        self.released.store(false, Ordering::Relaxed);
    }

    pub(crate) fn forget(&self) {
        self.forgotten.store(true, Ordering::Release);
    }

    pub(crate) fn is_forgotten(&self) -> bool {
        self.forgotten.load(Ordering::Acquire)
    }

    /// Whether this is the first time since its last contact that the
    /// peer is found not to hold the log (so that is logged once).
    pub(crate) fn first_release(&self) -> bool {
        !self.released.swap(true, Ordering::Relaxed)
    }

    /// Whether the peer's acknowledged position holds back log trimming at
    /// `now_ms`: always, unless a rule admitted it with a `max_silence`
    /// and it has been away (`connected` says no) for longer than that.
    pub(crate) fn holds_log(&self, now_ms: u64, connected: impl FnOnce() -> bool) -> bool {
        let Some(silence) = self.admission.lock().as_ref().and_then(|a| a.max_silence) else {
            return true;
        };
        if connected() {
            return true;
        }
        let last = self.last_ms.load(Ordering::Relaxed);
        now_ms.saturating_sub(last) <= silence.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_admitted_peer_silent_past_its_max_silence_stops_holding_the_log() {
        let c = Contact::default();
        assert!(
            c.holds_log(u64::MAX, || false),
            "configured peers always hold"
        );
        let a = |s| Admitted {
            rule: "r".into(),
            first_ms: 1,
            max_silence: s,
        };
        c.set_admission(a(None), 1000);
        assert!(c.holds_log(u64::MAX, || false), "no max_silence: holds");
        c.set_admission(a(Some(Duration::from_secs(1))), 1000);
        assert!(c.holds_log(2000, || false));
        assert!(!c.holds_log(2001, || false));
        assert!(c.holds_log(2001, || true), "connected: holds");
        // An older last contact never moves it back.
        c.set_admission(a(Some(Duration::from_secs(1))), 10);
        assert_eq!(c.last_contact_ms(), Some(1000));
        assert_eq!(c.rule().as_deref(), Some("r"));
        assert!(c.first_release() && !c.first_release());
        c.touch();
        assert!(c.first_release(), "a contact re-arms the note");
    }
}
