//! A link's byte budget: a token bucket at `max_bytes_per_sec`, a quota
//! per UTC day or month, and the UTC windows when bulk tables flow.
//!
//! The write loop debits every frame it writes (acknowledgements and
//! heartbeats too) with the bytes it put on the stream; the sender waits
//! for the bucket before it plans the next frame, so the bytes on the wire
//! follow the cap whatever is queued. A table is HELD, never skipped, while
//! the quota is spent (unless `exempt_from_quota`) or, for a `bulk` table,
//! outside every window: its lane does not move, so the acknowledged
//! position stays before its writes and their receipts wait.
//!
//! One meter lives as long as the peer (not the link), so a reconnect does
//! not refill the bucket, and the quota's use is stored in the database
//! (at most about once a second: a crash forgets at most that much).

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::config::{LinkBudget, PeerConfig, QuotaPeriod, TableFlow, Window};
use crate::local::hlc::wall_millis;

/// Smallest frame the sender cuts under a cap, whatever the rate.
const MIN_FRAME_BYTES: usize = 512;

/// Estimated TLS bytes per frame (record header, tag, content type): the
/// budget is about what the link carries, and the proxy or the carrier
/// counts those too. One record per 16 KiB of frame.
const TLS_OVERHEAD: usize = 29;
const TLS_RECORD: usize = 16 * 1024;

const DAY_MS: u64 = 86_400_000;

/// Added to the wall clock for quota periods and windows. Test only: lets
/// a test reach the next period or a window without waiting for it. The
/// rate cap uses a monotonic clock and ignores it.
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Moves the clock that quota periods and bulk windows see by `ms`
/// (process-wide). For tests only; never call it in production.
#[doc(hidden)]
pub fn set_budget_clock_offset_ms(ms: i64) {
    CLOCK_OFFSET_MS.store(ms, Ordering::SeqCst);
}

fn now_ms() -> u64 {
    let off = CLOCK_OFFSET_MS.load(Ordering::SeqCst);
    wall_millis().saturating_add_signed(off)
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month) of a day since 1970-01-01.
fn civil_month(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// When the period holding `at_ms` ends (UTC), in ms since the epoch.
pub(crate) fn period_end_ms(period: QuotaPeriod, at_ms: u64) -> u64 {
    match period {
        QuotaPeriod::Day => (at_ms / DAY_MS + 1) * DAY_MS,
        QuotaPeriod::Month => {
            let (y, m) = civil_month((at_ms / DAY_MS) as i64);
            let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (days_from_civil(y, m, 1).max(0) as u64) * DAY_MS
        }
    }
}

/// `2026-12-05T00:00Z`, for messages.
pub(crate) fn utc_label(ms: u64) -> String {
    let days = (ms / DAY_MS) as i64;
    let (y, m) = civil_month(days);
    let d = days - days_from_civil(y, m, 1) + 1;
    let min = (ms % DAY_MS) / 60_000;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}Z", min / 60, min % 60)
}

/// The quota's use, as stored per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct QuotaUse {
    /// End of the period `used` belongs to (ms since the epoch).
    pub(crate) period_end_ms: u64,
    pub(crate) used: u64,
}

/// Why a table does not flow now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// The quota is spent until this time and the table is not exempt.
    Quota { until_ms: u64 },
    /// A bulk table outside every window.
    Window,
}

struct Inner {
    rate: Option<u64>,
    quota: Option<u64>,
    period: QuotaPeriod,
    windows: Vec<Window>,
    tokens: f64,
    refilled: Instant,
    quota_use: QuotaUse,
    stored: QuotaUse,
    stored_at: Instant,
    /// When the sender last had to wait for the cap (status: held by the
    /// rate while that is recent).
    waited_at: Option<Instant>,
}

pub(crate) struct Meter {
    inner: Mutex<Inner>,
    /// Data frames the sender queued that the write loop has not written:
    /// a metered sender plans the next one only once this is 0, so what it
    /// decides (priority, hold) is decided when the frame can go, and the
    /// quota is checked against bytes already counted.
    queued: AtomicUsize,
    written: tokio::sync::Notify,
}

impl Meter {
    pub(crate) fn new(budget: Option<&LinkBudget>, stored: QuotaUse) -> Meter {
        let now = Instant::now();
        let m = Meter {
            inner: Mutex::new(Inner {
                rate: None,
                quota: None,
                period: QuotaPeriod::Day,
                windows: Vec::new(),
                tokens: 0.0,
                refilled: now,
                quota_use: stored,
                stored,
                stored_at: now,
                waited_at: None,
            }),
            queued: AtomicUsize::new(0),
            written: tokio::sync::Notify::new(),
        };
        m.configure(budget);
        m
    }

    /// Takes a new budget (validated before); the quota's use carries over.
    pub(crate) fn configure(&self, budget: Option<&LinkBudget>) {
        let mut i = self.inner.lock();
        let b = budget.cloned().unwrap_or_default();
        i.rate = b.max_bytes_per_sec;
        i.quota = b.quota_bytes;
        i.period = b.quota_period.unwrap_or(QuotaPeriod::Day);
        i.windows = b
            .windows
            .iter()
            .filter_map(|w| Window::parse(w).ok())
            .collect();
        if let Some(r) = i.rate {
            i.tokens = i.tokens.min(burst(r));
        }
    }

    /// Whether the link has any budget at all.
    pub(crate) fn is_metered(&self) -> bool {
        let i = self.inner.lock();
        i.rate.is_some() || i.quota.is_some() || !i.windows.is_empty()
    }

    /// A new link: nothing of it is queued yet (an older link's count
    /// died with it).
    pub(crate) fn new_link(&self) {
        self.queued.store(0, Ordering::SeqCst);
    }

    /// The sender queued a data frame.
    pub(crate) fn queued_frame(&self) {
        self.queued.fetch_add(1, Ordering::SeqCst);
    }

    /// The write loop wrote a data frame.
    pub(crate) fn wrote_frame(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        self.written.notify_waiters();
    }

    /// Returns once no data frame waits for the write loop.
    pub(crate) async fn wait_written(&self) {
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            if self.queued.load(Ordering::SeqCst) == 0 {
                return;
            }
            written.await;
        }
    }

    pub(crate) fn rate(&self) -> Option<u64> {
        self.inner.lock().rate
    }

    /// Counts a frame of `bytes` written to the stream.
    pub(crate) fn debit(&self, bytes: usize) {
        let wire = bytes + TLS_OVERHEAD * bytes.div_ceil(TLS_RECORD).max(1);
        let mut i = self.inner.lock();
        i.refill();
        if i.rate.is_some() {
            i.tokens -= wire as f64;
        }
        i.roll(now_ms());
        i.quota_use.used = i.quota_use.used.saturating_add(wire as u64);
    }

    /// Returns once the bucket is not in debt: the next frame may go.
    pub(crate) async fn wait_for_tokens(&self) {
        loop {
            let wait = {
                let mut i = self.inner.lock();
                i.refill();
                match i.rate {
                    Some(r) if i.tokens < 0.0 => {
                        i.waited_at = Some(Instant::now());
                        Duration::from_secs_f64(-i.tokens / r as f64)
                    }
                    _ => return,
                }
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// Most bytes of one data frame: about a quarter second of the cap, so
    /// a higher-priority table waits at most about that behind bulk data,
    /// and no more than the quota has left, so a frame overshoots a quota
    /// by little.
    pub(crate) fn frame_bytes(&self, otherwise: usize) -> usize {
        let mut n = otherwise;
        if let Some(r) = self.rate() {
            n = n.min((r / 4) as usize);
        }
        if let Some((left, _)) = self.quota_left() {
            n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        n.max(MIN_FRAME_BYTES).min(otherwise)
    }

    /// Whether a table with these flags may flow now, and if not why.
    pub(crate) fn hold(&self, bulk: bool, exempt: bool) -> Option<Hold> {
        let now = now_ms();
        let mut i = self.inner.lock();
        i.roll(now);
        if !exempt && i.quota.is_some_and(|q| i.quota_use.used >= q) {
            return Some(Hold::Quota {
                until_ms: i.quota_use.period_end_ms,
            });
        }
        if bulk && !i.windows.is_empty() {
            let minute = ((now % DAY_MS) / 60_000) as u32;
            if !i.windows.iter().any(|w| w.contains(minute)) {
                return Some(Hold::Window);
            }
        }
        None
    }

    /// (bytes left in the period, when it ends), with a quota.
    pub(crate) fn quota_left(&self) -> Option<(u64, u64)> {
        let mut i = self.inner.lock();
        i.roll(now_ms());
        let q = i.quota?;
        Some((
            q.saturating_sub(i.quota_use.used),
            i.quota_use.period_end_ms,
        ))
    }

    /// Whether the sender had to wait for the cap within the last second:
    /// a saturated link waits before nearly every frame, an idle one never.
    pub(crate) fn rate_bound(&self) -> bool {
        let i = self.inner.lock();
        i.rate.is_some()
            && i.waited_at
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
    }

    /// The quota's use to store, if it changed and the last store is a
    /// second old (or the period rolled): stores are batched, not per frame.
    pub(crate) fn to_store(&self) -> Option<QuotaUse> {
        self.store_if(false)
    }

    /// The quota's use to store if it changed at all (a link ended).
    pub(crate) fn to_store_now(&self) -> Option<QuotaUse> {
        self.store_if(true)
    }

    fn store_if(&self, now: bool) -> Option<QuotaUse> {
        let mut i = self.inner.lock();
        i.quota?;
        let due = i.quota_use.period_end_ms != i.stored.period_end_ms
            || (i.quota_use != i.stored
                && (now || i.stored_at.elapsed() >= Duration::from_secs(1)));
        if !due {
            return None;
        }
        i.stored = i.quota_use;
        i.stored_at = Instant::now();
        Some(i.quota_use)
    }

    /// What the budget holds back now: `quota` or `window` if it holds a
    /// published table, `rate` if the sender waited for the cap.
    pub(crate) fn held_now(&self, config: &PeerConfig) -> Option<&'static str> {
        let mut window = false;
        for t in config.tables.iter().filter(|t| t.publish) {
            match self.hold(t.bulk, t.exempt_from_quota) {
                Some(Hold::Quota { .. }) => return Some("quota"),
                Some(Hold::Window) => window = true,
                None => {}
            }
        }
        if window {
            Some("window")
        } else if self.rate_bound() {
            Some("rate")
        } else {
            None
        }
    }

    /// Why the budget holds a write to `tables`, if it does: first its
    /// own tables, then any other (held writes before it hold the
    /// acknowledged position, so its receipt waits for them too).
    pub(crate) fn reason(&self, config: &PeerConfig, tables: Option<&[String]>) -> Option<String> {
        let own = |t: &TableFlow| tables.is_none_or(|ts| ts.contains(&t.table));
        let published = config.tables.iter().filter(|t| t.publish);
        let (mine, others): (Vec<_>, Vec<_>) = published.partition(|t| own(t));
        for (t, before) in mine.into_iter().map(|t| (t, "")).chain(
            others
                .into_iter()
                .map(|t| (t, "writes before this one are held: ")),
        ) {
            match self.hold(t.bulk, t.exempt_from_quota) {
                Some(Hold::Quota { until_ms }) => {
                    return Some(format!(
                        "{before}the link's byte quota for this {} is spent until {} and table `{}` is not exempt_from_quota: it goes out then, or raise quota_bytes",
                        match config.budget.as_ref().and_then(|b| b.quota_period) {
                            Some(QuotaPeriod::Month) => "month",
                            _ => "day",
                        },
                        utc_label(until_ms),
                        t.table
                    ))
                }
                Some(Hold::Window) => {
                    return Some(format!(
                        "{before}table `{}` is bulk and the link is outside its windows ({}): it goes out in the next window",
                        t.table,
                        config
                            .budget
                            .as_ref()
                            .map(|b| b.windows.join(", "))
                            .unwrap_or_default()
                    ))
                }
                None => {}
            }
        }
        let rate = self.rate()?;
        self.rate_bound().then(|| {
            format!(
                "the link's cap of {rate} bytes/s is saturated and holds the backlog ahead of this write: wait longer, or raise max_bytes_per_sec"
            )
        })
    }
}

fn burst(rate: u64) -> f64 {
    // Half a second: over any 60 s the wire carries at most the cap plus
    // this, plus the one frame in debt.
    rate as f64 / 2.0
}

impl Inner {
    fn refill(&mut self) {
        let now = Instant::now();
        if let Some(r) = self.rate {
            let dt = now.duration_since(self.refilled).as_secs_f64();
            self.tokens = (self.tokens + dt * r as f64).min(burst(r));
        }
        self.refilled = now;
    }

    fn roll(&mut self, now: u64) {
        if now >= self.quota_use.period_end_ms {
            self.quota_use = QuotaUse {
                period_end_ms: period_end_ms(self.period, now),
                used: 0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::repl::config::validate_budget as validate;

    #[test]
    fn windows_parse_and_wrap_midnight() {
        let w = Window::parse("22:00-06:00").unwrap();
        assert!(w.contains(23 * 60));
        assert!(w.contains(0));
        assert!(w.contains(5 * 60 + 59));
        assert!(!w.contains(6 * 60));
        assert!(!w.contains(12 * 60));
        let w = Window::parse(" 09:30 - 17:00 ").unwrap();
        assert!(w.contains(9 * 60 + 30) && !w.contains(17 * 60) && !w.contains(9 * 60));
        let w = Window::parse("18:00-24:00").unwrap();
        assert!(w.contains(23 * 60 + 59) && !w.contains(0));
        for bad in [
            "",
            "9:00-10:00",
            "09:00",
            "25:00-01:00",
            "10:60-11:00",
            "10:00-10:00",
            "aa:bb-cc:dd",
            "24:00-01:00",
            "00:00-24:00x",
            "-1:00-02:00",
        ] {
            let e = Window::parse(bad).unwrap_err().to_string();
            assert!(e.contains("HH:MM-HH:MM"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_cap_below_the_minimum_is_refused_with_the_minimum() {
        let b = LinkBudget {
            max_bytes_per_sec: Some(100),
            ..LinkBudget::default()
        };
        let e = validate(&b).unwrap_err().to_string();
        assert!(e.contains("1024") && e.contains("max_bytes_per_sec"), "{e}");
        let b = LinkBudget {
            quota_bytes: Some(0),
            ..LinkBudget::default()
        };
        assert!(validate(&b).is_err());
        let b = LinkBudget {
            max_bytes_per_sec: Some(1024),
            quota_bytes: Some(1),
            windows: vec!["23:00-01:00".into()],
            ..LinkBudget::default()
        };
        validate(&b).unwrap();
    }

    #[test]
    fn period_ends_are_utc_midnights_and_month_starts() {
        // 2026-12-04T03:45Z
        let t = days_from_civil(2026, 12, 4) as u64 * DAY_MS + (3 * 60 + 45) * 60_000;
        assert_eq!(utc_label(t), "2026-12-04T03:45Z");
        assert_eq!(
            utc_label(period_end_ms(QuotaPeriod::Day, t)),
            "2026-12-05T00:00Z"
        );
        assert_eq!(
            utc_label(period_end_ms(QuotaPeriod::Month, t)),
            "2027-01-01T00:00Z"
        );
        let feb = days_from_civil(2028, 2, 29) as u64 * DAY_MS;
        assert_eq!(utc_label(feb), "2028-02-29T00:00Z");
        assert_eq!(
            utc_label(period_end_ms(QuotaPeriod::Month, feb)),
            "2028-03-01T00:00Z"
        );
        // The last millisecond of a day is still that day.
        let end = period_end_ms(QuotaPeriod::Day, t);
        assert_eq!(period_end_ms(QuotaPeriod::Day, end - 1), end);
        assert_eq!(period_end_ms(QuotaPeriod::Day, end), end + DAY_MS);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }

    #[test]
    fn the_bucket_debts_and_refills_at_the_rate() {
        let b = LinkBudget {
            max_bytes_per_sec: Some(10_000),
            ..LinkBudget::default()
        };
        let m = Meter::new(Some(&b), QuotaUse::default());
        m.debit(10_000 - TLS_OVERHEAD);
        {
            let mut i = m.inner.lock();
            i.refilled -= Duration::from_millis(500);
            i.refill();
            // 10,000 in debt, 5,000 back in half a second.
            assert!((i.tokens + 5_000.0).abs() < 100.0, "{}", i.tokens);
            i.refilled -= Duration::from_secs(60);
            i.refill();
            assert_eq!(i.tokens, 5_000.0, "capped at a half-second burst");
        }
        assert_eq!(m.frame_bytes(1 << 20), 2_500);
        assert_eq!(m.frame_bytes(1_000), 1_000);
    }

    #[test]
    fn a_spent_quota_holds_what_is_not_exempt_until_the_next_period() {
        let b = LinkBudget {
            quota_bytes: Some(1_000),
            ..LinkBudget::default()
        };
        let m = Meter::new(Some(&b), QuotaUse::default());
        assert_eq!(m.hold(false, false), None);
        m.debit(2_000);
        let Some(Hold::Quota { until_ms }) = m.hold(false, false) else {
            panic!("not held")
        };
        assert_eq!(m.hold(true, true), None, "exempt flows");
        assert_eq!(m.quota_left(), Some((0, until_ms)));
        // Restored from storage in the same period: still spent.
        let stored = m.to_store().expect("first store is due");
        let again = Meter::new(Some(&b), stored);
        assert!(again.hold(false, false).is_some());
        // A stored use from a past period counts for nothing.
        let old = QuotaUse {
            period_end_ms: 1,
            used: 5_000,
        };
        assert_eq!(Meter::new(Some(&b), old).hold(false, false), None);
    }
}
