//! Change listeners: threadsafe functions that never keep the event loop
//! alive by themselves, a bounded hand-off to the JavaScript thread, and
//! the keep-alive owed for local commits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use napi::bindgen_prelude::Function;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use tidelog::{ChangeEvent, Database};

use crate::convert::invalid;
use crate::views::{event_obj, ChangeEventObj};

// ---- listeners ----------------------------------------------------------

/// One event on its way to JavaScript.
pub struct Ev {
    local: bool,
    /// `None`: no event, only a call that checks the keep-alive again (see
    /// [`ListenerSlot::wake`]); index.js does not pass it to the listener.
    event: Option<ChangeEventObj>,
}

/// Weak (unreferenced) threadsafe function: by itself it never keeps the
/// event loop alive. See [`Keep`] for the one time it does.
type EventFn = ThreadsafeFunction<Ev, (), Option<ChangeEventObj>, Status, false, true, 0>;

/// How often a waker looks whether the database's listener queue is empty.
const WAKE_POLL: Duration = Duration::from_millis(1);

/// Keep-alive state of one listener, touched only on the JavaScript thread.
///
/// A change committed from JavaScript reaches the listener a moment later
/// (through the `tidelog-events` thread). So that a script which writes and
/// then ends still sees its own events, each such commit to the listener's
/// table counts one owed event and references the threadsafe function; each
/// local event delivered, or dropped by the hand-off, pays one back, and at
/// zero it is unreferenced again. The count may dip below zero for a
/// commit whose event arrives before its count (`commitAsync` counts on
/// resolve), which only means less keeping alive; remote changes never
/// hold the loop open.
///
/// Events the core drops are not told apart by origin, and the last ones
/// of a table are reported nowhere, so once anything was dropped the count
/// can stay above zero with nothing more to come. Then it is settled by
/// looking: with neither the core's queue nor the hand-off holding
/// anything, every commit already counted has been delivered or dropped,
/// and the count goes to zero ([`ListenerSlot::settle`]).
#[derive(Default)]
struct Keep {
    owed: i64,
    referred: bool,
    /// The raw threadsafe function (0 once it is being released).
    raw: usize,
}

/// What waits in the threadsafe function's queue (its own queue is
/// unbounded, so a busy JavaScript thread would let it grow without limit).
/// Touched by the event thread (`send`) and the JavaScript thread.
#[derive(Default)]
struct Handoff {
    queued: usize,
    /// Events dropped since the last one queued: added to its `missed`.
    dropped: u64,
    /// Local events dropped: the keep-alive they were owed is paid back by
    /// the next delivery.
    local_dropped: i64,
    /// Whether this hand-off ever dropped an event.
    ever_dropped: bool,
}

/// Where events for this listener may still be.
enum InFlight {
    Nowhere,
    /// In the hand-off: their delivery will settle the keep-alive again.
    Handoff,
    /// In the core's queue (of this table or another).
    Core,
}

pub(crate) struct ListenerSlot {
    table: String,
    tsfn: Mutex<Option<EventFn>>,
    keep: Mutex<Keep>,
    /// The most events queued for JavaScript (the database's
    /// `listener_queue_max`); past it events are dropped and counted.
    max: usize,
    handoff: Mutex<Handoff>,
    /// Weak: the core's listener closure holds this slot, so a strong
    /// handle would keep the database alive through itself. Gone means the
    /// handle was dropped, and then nothing more is committed through it.
    db: Weak<Database>,
    /// A waker thread is running (at most one per listener).
    waking: AtomicBool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ListenerSlot {
    /// A listener for `table` whose threadsafe function is weak and calls
    /// `callback(event)` on the JavaScript thread, with at most `max`
    /// events waiting for it.
    pub(crate) fn new(
        table: &str,
        max: usize,
        db: Weak<Database>,
        callback: Function<ChangeEventObj, ()>,
    ) -> napi::Result<Arc<Self>> {
        let slot = Arc::new(ListenerSlot {
            table: table.to_string(),
            tsfn: Mutex::new(None),
            keep: Mutex::new(Keep::default()),
            max: max.max(1),
            handoff: Mutex::new(Handoff::default()),
            db,
            waking: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&slot);
        let tsfn: EventFn = callback
            .build_threadsafe_function::<Ev>()
            .weak::<true>()
            .callee_handled::<false>()
            .build_callback(
                move |ctx: napi::threadsafe_function::ThreadsafeCallContext<Ev>| {
                    if let Some(slot) = weak.upgrade() {
                        let paid = if ctx.value.event.is_some() {
                            let mut h = lock(&slot.handoff);
                            h.queued = h.queued.saturating_sub(1);
                            std::mem::take(&mut h.local_dropped)
                        } else {
                            0
                        };
                        slot.delivered(&ctx.env, ctx.value.local, paid);
                    }
                    Ok(ctx.value.event)
                },
            )
            .map_err(|e| invalid(e.reason.clone()))?;
        lock(&slot.keep).raw = tsfn.raw() as usize;
        *lock(&slot.tsfn) = Some(tsfn);
        Ok(slot)
    }

    /// Any thread (tidelog's event thread): queues `ev` for the listener,
    /// unless it was released. Never waits for JavaScript: with `max`
    /// events already queued it drops `ev` and counts it (and what the core
    /// had dropped before it) in the next queued event's `missed`.
    pub(crate) fn send(&self, ev: &ChangeEvent) {
        let guard = lock(&self.tsfn);
        let Some(tsfn) = guard.as_ref() else {
            return;
        };
        let mut h = lock(&self.handoff);
        if h.queued >= self.max {
            h.dropped += 1 + ev.missed;
            h.ever_dropped = true;
            if ev.local {
                h.local_dropped += 1;
            }
            return;
        }
        let mut event = event_obj(ev);
        event.missed += std::mem::take(&mut h.dropped) as f64;
        let status = tsfn.call(
            Ev {
                local: ev.local,
                event: Some(event),
            },
            ThreadsafeFunctionCallMode::NonBlocking,
        );
        if status == Status::Ok {
            h.queued += 1;
        }
    }

    /// Events waiting for the JavaScript thread now (never above the bound).
    pub(crate) fn queued(&self) -> usize {
        lock(&self.handoff).queued
    }

    /// Takes the threadsafe function out (to release it by dropping it).
    pub(crate) fn take(&self) -> Option<EventFn> {
        lock(&self.keep).raw = 0;
        lock(&self.tsfn).take()
    }

    /// JavaScript thread: a local commit touched this listener's table.
    fn owe(self: &Arc<Self>, env: &Env) {
        let mut k = lock(&self.keep);
        k.owed += 1;
        self.settle(env, &mut k);
    }

    /// JavaScript thread: an event (or, for `local == false` and nothing
    /// paid, only a wake-up) is being handed to the listener; `paid` local
    /// events were dropped by the hand-off.
    fn delivered(self: &Arc<Self>, env: &Env, local: bool, paid: i64) {
        let mut k = lock(&self.keep);
        if local {
            k.owed -= 1;
        }
        k.owed -= paid;
        self.settle(env, &mut k);
    }

    /// JavaScript thread: references the function while events are owed.
    /// Once anything was dropped the count alone may never reach zero, so
    /// then it looks where events still are: nowhere settles the count;
    /// in the hand-off, their delivery comes back here; only in the core's
    /// queue (possibly another table's, and no event of this table may
    /// follow), a waker calls back here once that queue is empty.
    fn settle(self: &Arc<Self>, env: &Env, k: &mut Keep) {
        if k.raw == 0 {
            return;
        }
        if k.owed > 0 && self.drops_seen() {
            match self.in_flight() {
                InFlight::Nowhere => k.owed = 0,
                InFlight::Handoff => {}
                InFlight::Core => self.wake(),
            }
        }
        let raw = k.raw as napi::sys::napi_threadsafe_function;
        if k.owed > 0 && !k.referred {
            // SAFETY: `raw` is this slot's live threadsafe function (it is
            // zeroed before the function is released), used on its JS thread.
            let status = unsafe { napi::sys::napi_ref_threadsafe_function(env.raw(), raw) };
            k.referred = status == napi::sys::Status::napi_ok;
        } else if k.owed <= 0 && k.referred {
            // SAFETY: as above.
            unsafe { napi::sys::napi_unref_threadsafe_function(env.raw(), raw) };
            k.referred = false;
        }
    }

    /// Whether the core or this hand-off ever dropped an event (sticky: a
    /// commit counted later may be one dropped before).
    fn drops_seen(&self) -> bool {
        lock(&self.handoff).ever_dropped
            || self
                .db
                .upgrade()
                .is_some_and(|db| db.listener_events_missed() > 0)
    }

    fn in_flight(&self) -> InFlight {
        // The core's count first: its event thread hands an event over
        // (`send`, counted in `queued`) before it takes it off that count,
        // so 0 there and then 0 here means no event is on its way.
        let pending = self
            .db
            .upgrade()
            .map_or(0, |db| db.listener_events_pending());
        if lock(&self.handoff).queued > 0 {
            InFlight::Handoff
        } else if pending > 0 {
            InFlight::Core
        } else {
            InFlight::Nowhere
        }
    }

    /// Starts a thread (unless one runs) that waits for the core's listener
    /// queue to be empty, then calls the threadsafe function with no event,
    /// so [`Self::settle`] runs again on the JavaScript thread. Polling,
    /// since the core has nothing to wait on; it only ever runs after
    /// drops, while an owed event is unaccounted for.
    fn wake(self: &Arc<Self>) {
        if self.waking.swap(true, Ordering::AcqRel) {
            return;
        }
        let slot = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("tidelog-node-wake".into())
            .spawn(move || loop {
                let Some(slot) = slot.upgrade() else { return };
                let pending = slot
                    .db
                    .upgrade()
                    .map_or(0, |db| db.listener_events_pending());
                if pending == 0 {
                    slot.waking.store(false, Ordering::Release);
                    if let Some(tsfn) = lock(&slot.tsfn).as_ref() {
                        let _ = tsfn.call(
                            Ev {
                                local: false,
                                event: None,
                            },
                            ThreadsafeFunctionCallMode::NonBlocking,
                        );
                    }
                    return;
                }
                if lock(&slot.tsfn).is_none() {
                    // Released: nothing left to keep alive.
                    return;
                }
                drop(slot);
                std::thread::sleep(WAKE_POLL);
            });
        if spawned.is_err() {
            // No thread: the next delivery or commit tries again.
            self.waking.store(false, Ordering::Release);
        }
    }
}

pub(crate) type Slots = Arc<Mutex<HashMap<u64, Arc<ListenerSlot>>>>;

/// `owe_events` for the raw functions of fast.rs.
///
/// # Safety
/// `env` must be the env of a callback running on the JavaScript thread.
pub(crate) unsafe fn owe_events_raw(slots: &Slots, env: napi::sys::napi_env, table: &str) {
    owe_events(slots, &Env::from(env), [table]);
}

pub(crate) fn owe_events<'a>(slots: &Slots, env: &Env, tables: impl IntoIterator<Item = &'a str>) {
    let slots = lock(slots);
    if slots.is_empty() {
        return;
    }
    for t in tables {
        for s in slots.values().filter(|s| s.table == t) {
            s.owe(env);
        }
    }
}
