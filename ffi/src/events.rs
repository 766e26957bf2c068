//! Change listeners for C: a callback on the `tidelog-events` thread, or a
//! queue drained with tidelog_next_event().

use std::cell::Cell;
use std::ffi::{c_char, c_void, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tidelog_core::{Database, ListenerId};

use crate::guard::{guard, guard_void, str_arg, Fail, Out};
use crate::handles::{self, as_ptr, tidelog_db, tidelog_subscription, Object};
use crate::json;
use crate::strings::{new_string, tidelog_string};
use crate::tidelog_status::{self, *};

/// A change callback.
///
/// @param event_json the event as NUL-terminated JSON text, valid only
///                   during the call (copy it to keep it):
///                   `{"table": "t", "seq": 12, "origin": <u64>,
///                   "stamp": {"time": <u64>, "node": <u64>},
///                   "stamp_ms": ms, "local": true,
///                   "changes": [{"key": k, "record": {...} or null}]}`.
///                   `seq`: this instance's log sequence number of the
///                   transaction; `origin`: node id where it was first
///                   committed (= `stamp.node`); `stamp.time`: hybrid logical
///                   clock (ms since the epoch << 16 | counter); `stamp_ms`:
///                   its milliseconds; `local`: false for changes applied
///                   from a peer; `record`: the record after the change with
///                   `__createdtime__`/`__updatedtime__`, null for a delete.
///                   64-bit values are exact JSON integers: read them as
///                   integers, not doubles. The same fields as a Python or
///                   Node event (tidelog_core::view::ChangeEventView).
/// @param user_data  the pointer given to tidelog_subscribe().
pub type tidelog_change_fn =
    Option<unsafe extern "C" fn(event_json: *const c_char, user_data: *mut c_void)>;

/// The C caller's `user_data`, handed back on the events thread.
struct UserData(*mut c_void);

// SAFETY: the header's contract for tidelog_subscribe() makes the caller
// responsible for `user_data` being usable from the `tidelog-events` thread;
// tidelog never dereferences it, only passes it back.
unsafe impl Send for UserData {}
// SAFETY: as above; it is only read (copied) by tidelog.
unsafe impl Sync for UserData {}

struct CallbackTarget {
    /// Unique per subscription; marks "this thread is inside my callback".
    token: u64,
    cancelled: AtomicBool,
    /// Held for the whole callback, so unsubscribing can wait it out.
    busy: Mutex<()>,
    callback: unsafe extern "C" fn(*const c_char, *mut c_void),
    user_data: UserData,
}

thread_local! {
    /// Token of the subscription whose callback this thread is running.
    static IN_CALLBACK: Cell<u64> = const { Cell::new(0) };
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

impl CallbackTarget {
    fn deliver(&self, event: &tidelog_core::ChangeEvent) {
        if self.cancelled.load(Ordering::Acquire) {
            return;
        }
        let _busy = self.busy.lock();
        if self.cancelled.load(Ordering::Acquire) {
            return;
        }
        // Event JSON never contains NUL (serde_json escapes it) and stored
        // records always serialise; an event that did not is reported, not
        // handed to C half-made.
        let Some(text) = event_text(event).and_then(|t| CString::new(t).ok()) else {
            return;
        };
        let outer = IN_CALLBACK.with(|c| c.replace(self.token));
        // SAFETY: `callback` and `user_data` are what the C caller registered
        // and promised stay valid until unsubscribing returns (which waits
        // for this call through `busy`); `text` outlives the call.
        unsafe { (self.callback)(text.as_ptr(), self.user_data.0) };
        IN_CALLBACK.with(|c| c.set(outer));
    }
}

enum Delivery {
    Callback(Arc<CallbackTarget>),
    Queue(Mutex<Receiver<String>>),
}

/// What a subscription handle refers to.
pub(crate) struct Subscription {
    db: Database,
    listener: Mutex<Option<ListenerId>>,
    delivery: Delivery,
}

impl Subscription {
    /// Stops delivery. For a callback, waits until a call in progress on
    /// another thread has returned (not when called from that callback).
    fn stop(&self) {
        if let Some(id) = self.listener.lock().take() {
            self.db.remove_listener(id);
        }
        if let Delivery::Callback(t) = &self.delivery {
            t.cancelled.store(true, Ordering::Release);
            if IN_CALLBACK.with(|c| c.get()) != t.token {
                drop(t.busy.lock());
            }
        }
    }
}

/// Calls `callback` after every committed change to `table`, local or
/// replicated from a peer, in commit order.
///
/// Threading: the callback runs on the database's `tidelog-events` thread
/// (one per database, so calls never overlap), with no tidelog lock held.
/// It may call any tidelog function, writes included, even on the same
/// table (mind loops), and may unsubscribe itself. It may even close the
/// database (tidelog_close() / tidelog_db_free()): delivery then stops and
/// events still queued are dropped. Keep it quick: later events queue (in
/// memory) behind it. It must not unwind (C++ exception) or longjmp out.
///
/// @param db          a database handle.
/// @param table       table name (it need not exist yet).
/// @param callback    the function to call; not NULL.
/// @param user_data   passed back to `callback` untouched (may be NULL); it
///                    must stay valid until tidelog_unsubscribe() or
///                    tidelog_subscription_free() returned, or the database
///                    was closed.
/// @param out_sub     receives the subscription handle; release it with
///                    tidelog_subscription_free().
#[no_mangle]
pub unsafe extern "C" fn tidelog_subscribe(
    db: *mut tidelog_db,
    table: *const c_char,
    callback: tidelog_change_fn,
    user_data: *mut c_void,
    out_sub: *mut *mut tidelog_subscription,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { Out::new(out_sub, "out_sub", std::ptr::null_mut()) }?;
        let db = handles::db(db)?;
        // SAFETY: as above.
        let table = unsafe { str_arg(table, "table") }?;
        let callback = callback
            .ok_or_else(|| Fail::new(TIDELOG_NULL_ARGUMENT, "argument `callback` is NULL"))?;
        let target = Arc::new(CallbackTarget {
            token: NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
            cancelled: AtomicBool::new(false),
            busy: Mutex::new(()),
            callback,
            user_data: UserData(user_data),
        });
        let t = target.clone();
        let id = db.on_change(table, move |e| t.deliver(e))?;
        let sub = Subscription {
            db,
            listener: Mutex::new(Some(id)),
            delivery: Delivery::Callback(target),
        };
        out.set(as_ptr(handles::register(Object::Sub(Arc::new(sub)))));
        Ok(())
    })
}

/// Subscribes to changes of `table` into a queue, drained with
/// tidelog_next_event() from any thread of yours: the alternative to a
/// callback when you want events on your own thread. Events are the JSON
/// described at tidelog_change_fn. The queue is unbounded: drain it.
///
/// @param db      a database handle.
/// @param table   table name (it need not exist yet).
/// @param out_sub receives the subscription handle; release it with
///                tidelog_subscription_free().
#[no_mangle]
pub unsafe extern "C" fn tidelog_subscribe_queue(
    db: *mut tidelog_db,
    table: *const c_char,
    out_sub: *mut *mut tidelog_subscription,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { Out::new(out_sub, "out_sub", std::ptr::null_mut()) }?;
        let db = handles::db(db)?;
        // SAFETY: as above.
        let table = unsafe { str_arg(table, "table") }?;
        let (tx, rx) = mpsc::channel::<String>();
        let id = db.on_change(table, move |e| {
            if let Some(text) = event_text(e) {
                let _ = tx.send(text);
            }
        })?;
        let sub = Subscription {
            db,
            listener: Mutex::new(Some(id)),
            delivery: Delivery::Queue(Mutex::new(rx)),
        };
        out.set(as_ptr(handles::register(Object::Sub(Arc::new(sub)))));
        Ok(())
    })
}

/// Takes the next event from a queue subscription, waiting up to
/// `timeout_ms` for one.
///
/// @param sub        a subscription made by tidelog_subscribe_queue().
/// @param timeout_ms 0 to poll, a negative value to wait without limit
///                   (tidelog_unsubscribe(), tidelog_subscription_free() or
///                   closing the database from another thread end the wait).
/// @param out_json   receives the event JSON (see tidelog_change_fn); free it
///                   with tidelog_string_free().
/// @return TIDELOG_OK; TIDELOG_TIMEOUT if no event came in time;
///         TIDELOG_CLOSED once the subscription ended (unsubscribed, or the
///         database closed) and every queued event was taken;
///         TIDELOG_UNSUPPORTED for a callback subscription.
#[no_mangle]
pub unsafe extern "C" fn tidelog_next_event(
    sub: *mut tidelog_subscription,
    timeout_ms: i64,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: out pointer follows the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let sub = handles::sub::<Subscription>(sub)?;
        let Delivery::Queue(rx) = &sub.delivery else {
            return Err(Fail::new(
                TIDELOG_UNSUPPORTED,
                "this subscription delivers to a callback; tidelog_next_event needs one made by tidelog_subscribe_queue",
            ));
        };
        let rx = rx.lock();
        let got = if timeout_ms < 0 {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(Duration::from_millis(timeout_ms as u64))
        };
        match got {
            Ok(text) => {
                out.set(new_string(text)?);
                Ok(())
            }
            Err(RecvTimeoutError::Timeout) => Err(Fail::new(
                TIDELOG_TIMEOUT,
                format!("no event within {timeout_ms} ms"),
            )),
            Err(RecvTimeoutError::Disconnected) => Err(Fail::new(
                TIDELOG_CLOSED,
                "the subscription ended (unsubscribed or database closed) and its queue is empty",
            )),
        }
    })
}

/// Stops a subscription. For a callback subscription, when this returns
/// the callback is not running and will not be called again, so
/// `user_data` may be released. Called from inside its own callback, it
/// does not wait (the current call is the last). Do not call it while
/// holding a lock your callback takes. Unsubscribing twice is fine. The
/// handle must still be released with tidelog_subscription_free().
///
/// @param sub a subscription handle.
#[no_mangle]
pub extern "C" fn tidelog_unsubscribe(sub: *mut tidelog_subscription) -> tidelog_status {
    guard(|| {
        handles::sub::<Subscription>(sub)?.stop();
        Ok(())
    })
}

/// Unsubscribes (as tidelog_unsubscribe(), waiting out a callback in
/// progress) and releases the handle. NULL, and a handle already freed,
/// are accepted and ignored.
///
/// @param sub a subscription handle, or NULL.
#[no_mangle]
pub extern "C" fn tidelog_subscription_free(sub: *mut tidelog_subscription) {
    guard_void(|| {
        if let Some(Object::Sub(s)) = handles::take(sub as usize, |o| matches!(o, Object::Sub(_))) {
            if let Ok(s) = s.downcast::<Subscription>() {
                s.stop();
            }
        }
    })
}

/// The event's JSON, or `None` after logging why it could not be made.
fn event_text(event: &tidelog_core::ChangeEvent) -> Option<String> {
    match json::event(event) {
        Ok(text) => Some(text),
        Err(e) => {
            log::error!(
                target: "tidelog::listener",
                "change event for table {} (seq {}) not delivered: {}",
                event.table,
                event.seq,
                e.message
            );
            None
        }
    }
}
