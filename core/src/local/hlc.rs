//! Hybrid logical clock. A stamp is wall-clock milliseconds in the high 48
//! bits and a logical counter in the low 16, so stamps compare as integers,
//! stay close to real time, and never go backwards even if the wall clock
//! does. Seeing a remote stamp pulls the clock forward, which is what makes a
//! local write made after a remote one win over it under any clock skew.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

pub(crate) const LOGICAL_BITS: u32 = 16;

/// Milliseconds since the Unix epoch by the wall clock.
pub fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The HLC value at the start of millisecond `ms`; saturates for times
/// beyond what 48 bits of milliseconds hold (year 10889), so a "since" far
/// in the future means "nothing yet" rather than wrapping to the past.
pub(crate) fn millis_to_hlc(ms: u64) -> u64 {
    ms.saturating_mul(1 << LOGICAL_BITS)
}

pub(crate) struct Hlc {
    last: AtomicU64,
    max_skew_ms: u64,
    wall: fn() -> u64,
    /// Added to the wall clock: zero except under the test hook
    /// [`crate::Database::skew_clock_for_tests`].
    offset_ms: AtomicI64,
}

impl Hlc {
    pub(crate) fn new(max_skew: Duration) -> Hlc {
        Hlc::with_wall(max_skew, wall_millis)
    }

    pub(crate) fn with_wall(max_skew: Duration, wall: fn() -> u64) -> Hlc {
        Hlc {
            last: AtomicU64::new(0),
            max_skew_ms: max_skew.as_millis() as u64,
            wall,
            offset_ms: AtomicI64::new(0),
        }
    }

    fn wall_ms(&self) -> u64 {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        (self.wall)().saturating_add_signed(offset)
    }

    /// Test hook: this clock runs `offset_ms` off the wall clock from now
    /// on, and is set back to that time even if it already went past it.
    /// Real clocks never go back (that is what the HLC is for); a test
    /// needs it to model a node whose clock was wrong and then fixed
    /// without waiting out the difference.
    pub(crate) fn set_offset_for_tests(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
        self.last
            .store(millis_to_hlc(self.wall_ms()), Ordering::Relaxed);
    }

    /// A new stamp, greater than every stamp issued or observed before.
    pub(crate) fn now(&self) -> u64 {
        let wall = millis_to_hlc(self.wall_ms());
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = wall.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Checks that `remote` is not too far ahead of the wall clock, without
    /// advancing anything.
    pub(crate) fn check(&self, remote: u64, origin: u64) -> Result<()> {
        let wall = self.wall_ms();
        let remote_ms = remote >> LOGICAL_BITS;
        if remote_ms > wall.saturating_add(self.max_skew_ms) {
            return Err(Error::ClockSkew {
                origin,
                ahead_ms: remote_ms - wall,
                limit_ms: self.max_skew_ms,
            });
        }
        Ok(())
    }

    /// Advances the clock past a stamp seen from elsewhere (a peer, or the
    /// stored state at open). Callers check skew first where it matters.
    pub(crate) fn observe(&self, remote: u64) {
        self.last.fetch_max(remote, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frozen() -> u64 {
        1_000_000
    }

    #[test]
    fn monotonic_even_with_a_frozen_wall_clock() {
        let c = Hlc::with_wall(Duration::from_secs(60), frozen);
        let mut prev = 0;
        for _ in 0..100_000 {
            let s = c.now();
            assert!(s > prev);
            prev = s;
        }
    }

    #[test]
    fn observing_a_remote_stamp_makes_later_local_stamps_win() {
        let c = Hlc::with_wall(Duration::from_secs(60), frozen);
        let remote = millis_to_hlc(frozen() + 30_000) + 5;
        c.check(remote, 1).expect("within skew");
        c.observe(remote);
        assert!(c.now() > remote);
    }

    #[test]
    fn stamps_beyond_max_skew_are_refused_and_do_not_move_the_clock() {
        let c = Hlc::with_wall(Duration::from_secs(60), frozen);
        let before = c.now();
        let remote = millis_to_hlc(frozen() + 3_600_000);
        match c.check(remote, 7) {
            Err(Error::ClockSkew {
                origin: 7,
                ahead_ms,
                limit_ms: 60_000,
            }) => {
                assert_eq!(ahead_ms, 3_600_000)
            }
            other => panic!("expected ClockSkew, got {other:?}"),
        }
        assert!(c.now() < remote);
        assert!(c.now() > before);
    }

    #[test]
    fn far_future_times_saturate() {
        assert_eq!(millis_to_hlc(u64::MAX), u64::MAX);
        assert_eq!(millis_to_hlc(1), 1 << LOGICAL_BITS);
    }

    #[test]
    fn concurrent_stamps_are_unique() {
        let c = std::sync::Arc::new(Hlc::new(Duration::from_secs(60)));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..10_000).map(|_| c.now()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
