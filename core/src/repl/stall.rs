//! A link that is up but moves nothing: found by a watchdog beside the
//! link's halves, reported in status with a reason, and torn down so the
//! dialer redials.
//!
//! The reasons (`PeerStatus::stalled`, `TableStatus::stalled`) start with a
//! code, then a sentence for people:
//!
//! - `no_ack_progress`: this node sent log entries the peer has not
//!   acknowledged, and no acknowledgement moved for longer than the stall
//!   time (the peer does not apply, or its acknowledgements do not come
//!   back);
//! - `write_blocked`: one frame could not be written for that long: the
//!   peer (or something between) stopped reading while the socket stays
//!   open (half-open);
//! - `apply_stuck`: a frame from the peer has been applying for that long,
//!   or frames arrive and none is applied.
//!
//! Not stalls: a table the link's budget holds (quota or window: nothing is
//! sent, so nothing waits for an acknowledgement), a rate-capped link whose
//! acknowledgements move, an initial sync whose chunks are written, an idle
//! link.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::peer::PeerState;

/// How many heartbeat intervals without progress make a stall.
pub(crate) const STALL_HEARTBEATS: u32 = 3;

/// The stall codes, as they start a reason.
pub(crate) const NO_ACK_PROGRESS: &str = "no_ack_progress";
pub(crate) const WRITE_BLOCKED: &str = "write_blocked";
pub(crate) const APPLY_STUCK: &str = "apply_stuck";

/// What the halves of one link are doing, for the watchdog.
#[derive(Default)]
pub(crate) struct Activity {
    /// The write loop is writing a frame of this kind since then.
    writing: Mutex<Option<(Instant, &'static str)>>,
    /// The receiver is handling a data frame (or passes over frames after
    /// a delta miss) since then.
    applying: Mutex<Option<Instant>>,
}

impl Activity {
    pub(crate) fn begin_write(&self, kind: &'static str) {
        *self.writing.lock() = Some((Instant::now(), kind));
    }

    pub(crate) fn end_write(&self) {
        *self.writing.lock() = None;
    }

    /// Keeps the earliest start: frames passed over after a delta miss
    /// do not restart the clock.
    pub(crate) fn begin_apply(&self) {
        self.applying.lock().get_or_insert_with(Instant::now);
    }

    pub(crate) fn end_apply(&self) {
        *self.applying.lock() = None;
    }
}

/// The stall time: three heartbeat intervals.
pub(crate) fn stall_after(heartbeat: Duration) -> Duration {
    heartbeat * STALL_HEARTBEATS
}

/// A stall the watchdog found: its reason, and whether the writer can still
/// say goodbye.
pub(crate) struct Stall {
    pub(crate) reason: String,
    pub(crate) writer_free: bool,
}

/// Watches one link until it stalls; returns the stall (already counted,
/// logged and shown in status). Never returns for a healthy link.
pub(crate) async fn watch(
    peer: Arc<PeerState>,
    activity: Arc<Activity>,
    heartbeat: Duration,
) -> Stall {
    let limit = stall_after(heartbeat);
    let tick = (heartbeat / 2).max(Duration::from_millis(10));
    let mut last_acked = *peer.acked.borrow();
    let mut progress_at = Instant::now();
    let name = peer.name();
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let of_limit = format!("{STALL_HEARTBEATS} heartbeats = {}", secs(limit));
    loop {
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        let acked = *peer.acked.borrow();
        let sent = peer.counters.lock().sent_seq;
        if acked != last_acked || sent <= acked {
            last_acked = acked;
            progress_at = now;
        }
        let writing = *activity.writing.lock();
        let applying = *activity.applying.lock();
        let found = if let Some((since, kind)) = writing.filter(|(s, _)| now - *s > limit) {
            Some((
                WRITE_BLOCKED,
                format!(
                    "{WRITE_BLOCKED}: a {kind} frame to `{name}` could not be written for {} ({of_limit}): it stopped reading while the connection stays open (half-open)",
                    secs(now - since)
                ),
                false,
            ))
        } else if let Some(since) = applying.filter(|s| now - *s > limit) {
            Some((
                APPLY_STUCK,
                format!(
                    "{APPLY_STUCK}: frames from `{name}` have not been applied for {} ({of_limit})",
                    secs(now - since)
                ),
                true,
            ))
        } else if now - progress_at > limit {
            Some((
                NO_ACK_PROGRESS,
                format!(
                    "{NO_ACK_PROGRESS}: log entries up to {sent} sent to `{name}`, acknowledged only up to {acked}, and no acknowledgement for {} ({of_limit})",
                    secs(now - progress_at)
                ),
                true,
            ))
        } else {
            None
        };
        match found {
            Some((code, reason, writer_free)) => {
                peer.note_stall(code, &reason);
                log::warn!(target: "tidelog::repl", "link to `{name}` stalled, tearing it down to redial: {reason}");
                return Stall {
                    reason,
                    writer_free,
                };
            }
            // A link that moves again (or has nothing to move) is no
            // longer stalled, whatever an earlier link was.
            None if writing.is_none() && applying.is_none() && progress_at == now => {
                peer.clear_stall();
            }
            None => {}
        }
    }
}
