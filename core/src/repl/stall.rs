//! A link that is up but moves nothing: found by a watchdog beside the
//! link's halves, reported in status with a reason, and torn down so the
//! dialer redials.
//!
//! The reasons (`PeerStatus::stalled`, `TableStatus::stalled`) start with a
//! code, then a sentence for people:
//!
//! - `no_ack_progress`: this node sent transactions the peer has not
//!   acknowledged, and no acknowledgement moved (nor an initial sync) for
//!   longer than the stall time (the peer does not apply, or its
//!   acknowledgements do not come back);
//! - `write_blocked`: one frame could not be written for that long: the
//!   peer (or something between) stopped reading while the socket stays
//!   open (half-open);
//! - `apply_stuck`: a frame from the peer has been applying for that long
//!   (counted from when its storage call starts: waiting for one of the
//!   runtime's blocking threads on a busy hub is queueing, not a stall),
//!   or frames arrive and none is applied.
//!
//! The stall time is three heartbeat intervals, and at least 2 s.
//!
//! Not stalls: a table the link's budget holds (quota or window: nothing is
//! sent, so nothing waits for an acknowledgement), a rate-capped link whose
//! acknowledgements move, an initial sync whose chunks are written, an idle
//! link, a peer that says each heartbeat it applied but holds the
//! acknowledgement for its sink (`AckHeld`, see `repl::sunk`; the reason
//! is the peer's `last_error`).

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Initial-sync frames written: a sync that moves is progress, though
    /// it is not acknowledged and acknowledgements of the log queue
    /// behind it on the peer.
    bulk_written: AtomicU64,
    /// Frames the peer acknowledges one by one, in order (data frames and
    /// progress positions), the number of the last data frame among them,
    /// and the acknowledgements received. Counted by frame, not by the
    /// acknowledged position: while the budget holds a table, frames of
    /// exempt tables are acknowledged without the position moving.
    frames_sent: AtomicU64,
    last_data_frame: AtomicU64,
    acks: AtomicU64,
    /// `AckHeld` frames received: the peer applies, but a sink of its
    /// holds the acknowledgement (see `repl::sunk`); progress, not a stall.
    held: AtomicU64,
}

impl Activity {
    pub(crate) fn begin_write(&self, kind: &'static str) {
        *self.writing.lock() = Some((Instant::now(), kind));
    }

    pub(crate) fn end_write(&self) {
        *self.writing.lock() = None;
    }

    /// A frame the peer acknowledges is on its way; `data`: it carries
    /// transactions.
    pub(crate) fn frame_queued(&self, data: bool) {
        let n = self.frames_sent.fetch_add(1, Ordering::Relaxed) + 1;
        if data {
            self.last_data_frame.fetch_max(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn acked(&self) {
        self.acks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn ack_held(&self) {
        self.held.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn wrote_bulk(&self) {
        self.bulk_written.fetch_add(1, Ordering::Relaxed);
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

/// The least stall time, whatever the heartbeat: below it, one large
/// frame being applied on a busy machine (or a debug build) would pass
/// for a stall, and each false one costs a reconnect.
pub(crate) const STALL_FLOOR: Duration = Duration::from_secs(2);

/// The stall time: three heartbeat intervals, at least [`STALL_FLOOR`].
pub(crate) fn stall_after(heartbeat: Duration) -> Duration {
    (heartbeat * STALL_HEARTBEATS).max(STALL_FLOOR)
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
    // Once a heartbeat: a stall shows within three to four of them, at
    // one wakeup per link per heartbeat, like the heartbeat itself.
    let tick = heartbeat.max(Duration::from_millis(10));
    let (mut last_acks, mut last_bulk, mut last_held) = (0, 0, 0);
    let mut progress_at = Instant::now();
    let name = peer.name();
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let of_limit = format!(
        "stall time {}: {STALL_HEARTBEATS} heartbeats, at least {}",
        secs(limit),
        secs(STALL_FLOOR)
    );
    loop {
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        let acks = activity.acks.load(Ordering::Relaxed);
        let waiting = activity
            .last_data_frame
            .load(Ordering::Relaxed)
            .saturating_sub(acks);
        let bulk = activity.bulk_written.load(Ordering::Relaxed);
        let held = activity.held.load(Ordering::Relaxed);
        if acks != last_acks || waiting == 0 || bulk != last_bulk || held != last_held {
            (last_acks, last_bulk, last_held) = (acks, bulk, held);
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
                    "{NO_ACK_PROGRESS}: {waiting} frame(s) of transactions sent to `{name}` await an acknowledgement (it acknowledged up to sequence {}), none came for {} ({of_limit})",
                    *peer.acked.borrow(),
                    secs(now - progress_at)
                ),
                true,
            ))
        } else {
            None
        };
        match found {
            Some((code, reason, writer_free)) => {
                peer.note_stall(code == APPLY_STUCK, &reason);
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
