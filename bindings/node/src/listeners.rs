//! Change listeners: threadsafe functions that never keep the event loop
//! alive by themselves, and the keep-alive owed for local commits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::Function;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use tidelog::ChangeEvent;

use crate::convert::invalid;
use crate::views::{event_obj, ChangeEventObj};

// ---- listeners ----------------------------------------------------------

/// One event on its way to JavaScript.
pub struct Ev {
    local: bool,
    event: ChangeEventObj,
}

/// Weak (unreferenced) threadsafe function: by itself it never keeps the
/// event loop alive. See [`Keep`] for the one time it does.
type EventFn = ThreadsafeFunction<Ev, (), ChangeEventObj, Status, false, true, 0>;

/// Keep-alive state of one listener, touched only on the JavaScript thread.
///
/// A change committed from JavaScript reaches the listener a moment later
/// (through the `tidelog-events` thread). So that a script which writes and
/// then ends still sees its own events, each such commit to the listener's
/// table counts one owed event and references the threadsafe function; each
/// local event delivered pays one back, and at zero it is unreferenced
/// again. Every local commit to a table produces exactly one event for each
/// of its listeners, so the count always returns to zero (it may dip below
/// for commits it did not count, which only means less keeping alive);
/// remote changes never hold the loop open.
#[derive(Default)]
struct Keep {
    owed: i64,
    referred: bool,
    /// The raw threadsafe function (0 once it is being released).
    raw: usize,
}

pub(crate) struct ListenerSlot {
    table: String,
    tsfn: Mutex<Option<EventFn>>,
    keep: Mutex<Keep>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ListenerSlot {
    /// A listener for `table` whose threadsafe function is weak and calls
    /// `callback(event)` on the JavaScript thread.
    pub(crate) fn new(
        table: &str,
        callback: Function<ChangeEventObj, ()>,
    ) -> napi::Result<Arc<Self>> {
        let slot = Arc::new(ListenerSlot {
            table: table.to_string(),
            tsfn: Mutex::new(None),
            keep: Mutex::new(Keep::default()),
        });
        let weak = Arc::downgrade(&slot);
        let tsfn: EventFn = callback
            .build_threadsafe_function::<Ev>()
            .weak::<true>()
            .callee_handled::<false>()
            .build_callback(
                move |ctx: napi::threadsafe_function::ThreadsafeCallContext<Ev>| {
                    if let Some(slot) = weak.upgrade() {
                        slot.delivered(&ctx.env, ctx.value.local);
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
    /// unless it was released.
    pub(crate) fn send(&self, ev: &ChangeEvent) {
        let guard = lock(&self.tsfn);
        if let Some(tsfn) = guard.as_ref() {
            let ev = Ev {
                local: ev.local,
                event: event_obj(ev),
            };
            let _ = tsfn.call(ev, ThreadsafeFunctionCallMode::NonBlocking);
        }
    }

    /// Takes the threadsafe function out (to release it by dropping it).
    pub(crate) fn take(&self) -> Option<EventFn> {
        lock(&self.keep).raw = 0;
        lock(&self.tsfn).take()
    }

    /// JavaScript thread: a local commit touched this listener's table.
    fn owe(&self, env: &Env) {
        let mut k = lock(&self.keep);
        k.owed += 1;
        if k.owed > 0 && !k.referred && k.raw != 0 {
            // SAFETY: `raw` is this slot's live threadsafe function (it is
            // zeroed before the function is released), used on its JS thread.
            let status = unsafe {
                napi::sys::napi_ref_threadsafe_function(
                    env.raw(),
                    k.raw as napi::sys::napi_threadsafe_function,
                )
            };
            k.referred = status == napi::sys::Status::napi_ok;
        }
    }

    /// JavaScript thread: an event is being handed to the listener.
    fn delivered(&self, env: &Env, local: bool) {
        let mut k = lock(&self.keep);
        if local {
            k.owed -= 1;
        }
        if k.referred && k.owed <= 0 && k.raw != 0 {
            // SAFETY: as in `owe`.
            unsafe {
                napi::sys::napi_unref_threadsafe_function(
                    env.raw(),
                    k.raw as napi::sys::napi_threadsafe_function,
                )
            };
            k.referred = false;
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
