//! Concurrent writes for C: counters (tidelog_increment()), the conflict
//! log (tidelog_conflicts()), and a per-table resolver callback.
//!
//! The resolver is a C function pointer plus `user_data`. The core calls the
//! Rust closure made here on one of its own threads; the closure hands the
//! case to C as JSON text and reads the answer back. Everything C can get
//! wrong (a code outside `tidelog_resolution`, a record that is not JSON, a
//! NULL record for a write) ends as "take the remote version" plus a log
//! record naming the mistake, never as an error inside replication.
//!
//! Each installed resolver is remembered here per (database handle, table),
//! so that replacing or clearing it, or closing the database, can wait out
//! a call in progress before returning: only then may C free `user_data`.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tidelog_core::{ConflictCase, ConflictResolver, Resolution};

use crate::db_txn::with_open_txn;
use crate::guard::{guard, str_arg, Fail, OptOut, Out};
use crate::handles::{self, tidelog_db, tidelog_txn};
use crate::json;
use crate::strings::{new_string, take_string, tidelog_string};
use crate::tidelog_status;

/// What a resolver answers (its return value, as an `int32_t`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tidelog_resolution {
    /// Keep the remote version (what last writer wins would do when the
    /// remote write is newer). Also what any invalid answer counts as.
    TIDELOG_TAKE_REMOTE = 0,
    /// Keep the local version.
    TIDELOG_KEEP_LOCAL = 1,
    /// Write the record the resolver put in `*out_record` (a JSON object
    /// with the primary key).
    TIDELOG_WRITE = 2,
    /// Delete the record.
    TIDELOG_DELETE = 3,
}

/// A conflict resolver, installed with tidelog_set_conflict_resolver().
///
/// @param case_json  the conflict as NUL-terminated JSON text, valid only
///                   during the call (copy it to keep it):
///                   `{"table": "t", "key": k, "local": {...} or null,
///                   "local_stamp": {"time": <u64>, "node": <u64>},
///                   "remote": {...} or null, "remote_stamp": {...}}`
///                   (null: that side is a delete).
/// @param user_data  the pointer given to tidelog_set_conflict_resolver().
/// @param out_record points to a `tidelog_string *` that is NULL when the
///                   call starts. To answer ::TIDELOG_WRITE, store there a
///                   string made with tidelog_string_new() holding the
///                   record as a JSON object. Whatever is stored there
///                   belongs to tidelog from then on, whatever the answer:
///                   tidelog frees it; never free it yourself.
/// @return a ::tidelog_resolution value. Any other value, ::TIDELOG_WRITE
///         without a record, or a record that is not a JSON object counts
///         as ::TIDELOG_TAKE_REMOTE and is reported to the log callback
///         (target "tidelog::resolver").
pub type tidelog_resolver_fn = Option<
    unsafe extern "C" fn(
        case_json: *const c_char,
        user_data: *mut c_void,
        out_record: *mut *mut tidelog_string,
    ) -> i32,
>;

/// The C caller's `user_data`, handed back on a library thread.
struct UserData(*mut c_void);

// SAFETY: tidelog_set_conflict_resolver()'s contract makes the caller
// responsible for `user_data` being usable from tidelog's threads; tidelog
// never dereferences it, only passes it back.
unsafe impl Send for UserData {}
// SAFETY: as above; it is only copied.
unsafe impl Sync for UserData {}

type ResolverCallback =
    unsafe extern "C" fn(*const c_char, *mut c_void, *mut *mut tidelog_string) -> i32;

struct Target {
    /// Unique per installed resolver; marks "this thread is inside it".
    token: u64,
    table: String,
    cancelled: AtomicBool,
    /// Read-held by every call in progress, so `stop` can wait them out
    /// (calls for several conflicts may run at once).
    running: RwLock<()>,
    callback: ResolverCallback,
    user_data: UserData,
}

thread_local! {
    /// Token of the resolver this thread is running (0: none).
    static IN_RESOLVER: Cell<u64> = const { Cell::new(0) };
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// Installed resolvers by (database handle, table).
type Targets = HashMap<(usize, String), Arc<Target>>;
static TARGETS: Mutex<Option<Targets>> = Mutex::new(None);

/// Runs `change` (the core's install or removal) and updates the registry
/// under one lock, so that concurrent calls for the same table cannot leave
/// the core holding a resolver the registry does not know (which closing
/// would then not wait for). Returns the resolver replaced or removed, to
/// be stopped after the lock is released.
fn swap<T>(
    db: usize,
    table: &str,
    new: Option<Arc<Target>>,
    change: impl FnOnce() -> tidelog_core::Result<T>,
) -> tidelog_core::Result<(T, Option<Arc<Target>>)> {
    let mut g = TARGETS.lock();
    let done = change()?;
    let map = g.get_or_insert_with(HashMap::new);
    let key = (db, table.to_string());
    let old = match new {
        Some(t) => map.insert(key, t),
        None => map.remove(&key),
    };
    Ok((done, old))
}

/// Stops every resolver installed through database handle `db` (when it is
/// closed or freed), waiting out calls in progress on other threads.
pub(crate) fn stop_all(db: usize) {
    let mine: Vec<Arc<Target>> = {
        let mut g = TARGETS.lock();
        let Some(map) = g.as_mut() else { return };
        let keys: Vec<(usize, String)> = map.keys().filter(|k| k.0 == db).cloned().collect();
        keys.into_iter().filter_map(|k| map.remove(&k)).collect()
    };
    for t in mine {
        t.stop();
    }
}

fn warn(table: &str, why: std::fmt::Arguments<'_>) {
    log::warn!(target: "tidelog::resolver", "conflict resolver for table {table}: {why}; took the remote version");
}

impl Target {
    fn stop(&self) {
        self.cancelled.store(true, Ordering::Release);
        // From inside this very resolver (it cleared itself, or closed the
        // database) there is nothing to wait for but the caller itself.
        if IN_RESOLVER.with(|c| c.get()) != self.token {
            drop(self.running.write());
        }
    }

    fn resolve(&self, case: &ConflictCase) -> Resolution {
        let _running = self.running.read();
        if self.cancelled.load(Ordering::Acquire) {
            return Resolution::TakeRemote;
        }
        let text = case.to_json().to_string();
        // serde_json escapes NUL, so this cannot fail; if it did, the remote
        // version is the safe answer.
        let Ok(text) = CString::new(text) else {
            warn(
                &self.table,
                format_args!("the case could not be handed to C"),
            );
            return Resolution::TakeRemote;
        };
        let mut out: *mut tidelog_string = std::ptr::null_mut();
        let outer = IN_RESOLVER.with(|c| c.replace(self.token));
        // SAFETY: `callback` and `user_data` are what the C caller installed
        // and promised stay valid until clearing, replacing or closing
        // returns (each waits for this call through `running`); `text` and
        // `out` outlive the call.
        let code = unsafe { (self.callback)(text.as_ptr(), self.user_data.0, &mut out) };
        IN_RESOLVER.with(|c| c.set(outer));
        // SAFETY: `out` is NULL or, by the callback's contract, a string it
        // made with tidelog_string_new(); ownership passes to us here.
        let record = unsafe { take_string(out) };
        self.answer(code, record)
    }

    fn answer(&self, code: i32, record: Option<String>) -> Resolution {
        use tidelog_resolution::*;
        match code {
            c if c == TIDELOG_TAKE_REMOTE as i32 => Resolution::TakeRemote,
            c if c == TIDELOG_KEEP_LOCAL as i32 => Resolution::KeepLocal,
            c if c == TIDELOG_DELETE as i32 => Resolution::Delete,
            c if c == TIDELOG_WRITE as i32 => match record {
                None => {
                    warn(
                        &self.table,
                        format_args!("it answered TIDELOG_WRITE but left *out_record NULL"),
                    );
                    Resolution::TakeRemote
                }
                Some(text) => match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => Resolution::Write(v),
                    Ok(other) => {
                        warn(
                            &self.table,
                            format_args!("the record to write is not a JSON object: {other}"),
                        );
                        Resolution::TakeRemote
                    }
                    Err(e) => {
                        warn(
                            &self.table,
                            format_args!("the record to write is not valid JSON: {e}"),
                        );
                        Resolution::TakeRemote
                    }
                },
            },
            other => {
                warn(
                    &self.table,
                    format_args!("it returned {other}, which is not a tidelog_resolution (0-3)"),
                );
                Resolution::TakeRemote
            }
        }
    }
}

// ---- counters ----------------------------------------------------------------

/// Adds `by` to the integer attribute `attr` of a record, in a transaction
/// of its own, creating the record `{<primary key>: key, attr: by}` if it
/// is absent. Increments made on different nodes add up when they meet
/// (each node's contribution is kept apart), unlike two upserts of the sum.
///
/// @param db       a database handle.
/// @param table    table name.
/// @param key_json the primary key as JSON: `42` or `"abc"`.
/// @param attr     the attribute to add to (its value must be an integer
///                 if present).
/// @param by       the amount, negative to subtract.
/// @param out_seq  optional (may be NULL): receives the log sequence number.
/// @return TIDELOG_OK, TIDELOG_NOT_FOUND (no such table),
///         TIDELOG_INVALID_INPUT (bad key or attribute, the attribute holds
///         a non-integer, overflow), TIDELOG_CLOSED, ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_increment(
    db: *mut tidelog_db,
    table: *const c_char,
    key_json: *const c_char,
    attr: *const c_char,
    by: i64,
    out_seq: *mut u64,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { OptOut::new(out_seq, 0) };
        let db = handles::db(db)?;
        // SAFETY: as above.
        let table = unsafe { str_arg(table, "table") }?;
        // SAFETY: as above.
        let key = json::key_text(unsafe { str_arg(key_json, "key_json") }?, "key_json")?;
        // SAFETY: as above.
        let attr = unsafe { str_arg(attr, "attr") }?;
        out.set(db.increment(table, key, attr, by)?.seq);
        Ok(())
    })
}

/// Stages an increment (see tidelog_increment()) in a transaction.
///
/// @param txn      a transaction handle.
/// @param table    table name.
/// @param key_json the primary key as JSON: `42` or `"abc"`.
/// @param attr     the integer attribute to add to.
/// @param by       the amount, negative to subtract.
#[no_mangle]
pub unsafe extern "C" fn tidelog_txn_increment(
    txn: *mut tidelog_txn,
    table: *const c_char,
    key_json: *const c_char,
    attr: *const c_char,
    by: i64,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let table = unsafe { str_arg(table, "table") }?;
        // SAFETY: as above.
        let key = json::key_text(unsafe { str_arg(key_json, "key_json") }?, "key_json")?;
        // SAFETY: as above.
        let attr = unsafe { str_arg(attr, "attr") }?;
        with_open_txn(txn, |t| {
            t.increment(table, key, attr, by)?;
            Ok(())
        })
    })
}

// ---- the conflict log ------------------------------------------------------------

/// Reads the conflict log, oldest first: a JSON array of `{"id":
/// "<node>:<n>", "table", "key", "rule": "lww"|"merge"|"keep_local"|
/// "resolver", "lost": "local"|"remote", "winner": {"time", "node"},
/// "winner_origin": "<node name>", "loser": {...}, "loser_origin",
/// "loser_values": {...} or null, "at_ms": ms}`. `lost`: which write lost
/// (a local one a remote write overwrote, or a remote one that lost);
/// `loser_values`: the losing record (under "merge", only the losing
/// attributes; null for a delete). The same entries are the records of the
/// system table `_conflicts`, readable with tidelog_get() and
/// tidelog_scan(). The log is bounded: see tidelog_conflicts_dropped().
///
/// @param db       a database handle.
/// @param out_json receives the JSON text; free it with tidelog_string_free().
#[no_mangle]
pub unsafe extern "C" fn tidelog_conflicts(
    db: *mut tidelog_db,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: out pointer follows the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let entries = handles::db(db)?.conflicts()?;
        let all: Vec<Value> = entries.iter().map(|e| e.to_json()).collect();
        out.set(new_string(Value::Array(all).to_string())?);
        Ok(())
    })
}

/// How many entries the conflict log dropped to stay within its size and
/// age bounds.
///
/// @param db        a database handle.
/// @param out_count receives the count (0 on failure).
#[no_mangle]
pub unsafe extern "C" fn tidelog_conflicts_dropped(
    db: *mut tidelog_db,
    out_count: *mut u64,
) -> tidelog_status {
    guard(|| {
        // SAFETY: out pointer follows the header contract.
        let out = unsafe { Out::new(out_count, "out_count", 0) }?;
        out.set(handles::db(db)?.conflicts_dropped());
        Ok(())
    })
}

// ---- resolvers -------------------------------------------------------------------

/// Installs `callback` as the conflict resolver of `table` (created with
/// `"conflict": "resolver"`), replacing an earlier one. Without one, such a
/// table falls back to last writer wins.
///
/// Threading: the callback runs on a tidelog thread (the one applying a
/// peer's transaction), never on one of yours, with no tidelog lock held.
/// Conflicts arriving from several peers may be resolved at the same time
/// on different threads, so it must be thread-safe. It may read the
/// database; it should not write the record in question itself (answer
/// ::TIDELOG_WRITE instead). It may block, but replication from that peer
/// waits meanwhile. It must not unwind (C++ exception) or longjmp out.
///
/// The answer other than the state last writer wins produced is committed
/// as a new local write that replicates, so every node ends with it.
///
/// @param db        a database handle.
/// @param table     table name.
/// @param callback  the resolver; not NULL.
/// @param user_data passed back to `callback` untouched (may be NULL); it
///                  must stay valid until tidelog_clear_conflict_resolver()
///                  for this table returned, a later
///                  tidelog_set_conflict_resolver() for it returned, or
///                  tidelog_close() / tidelog_db_free() returned: each of
///                  them waits for a call in progress (except one made
///                  from inside this callback).
/// @return TIDELOG_OK, TIDELOG_NOT_FOUND (no such table),
///         TIDELOG_INVALID_INPUT (the table's policy is not "resolver"),
///         TIDELOG_NULL_ARGUMENT, TIDELOG_CLOSED, ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_set_conflict_resolver(
    db: *mut tidelog_db,
    table: *const c_char,
    callback: tidelog_resolver_fn,
    user_data: *mut c_void,
) -> tidelog_status {
    guard(|| {
        let handle = db as usize;
        let db = handles::db(db)?;
        // SAFETY: string argument follows the header contract.
        let table = unsafe { str_arg(table, "table") }?;
        if db.is_closed() {
            return Err(tidelog_core::Error::Closed.into());
        }
        let Some(callback) = callback else {
            return Err(Fail::new(
                tidelog_status::TIDELOG_NULL_ARGUMENT,
                "argument `callback` is NULL: pass a function, or call tidelog_clear_conflict_resolver",
            ));
        };
        let target = Arc::new(Target {
            token: NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
            table: table.to_string(),
            cancelled: AtomicBool::new(false),
            running: RwLock::new(()),
            callback,
            user_data: UserData(user_data),
        });
        let t = target.clone();
        let resolver: ConflictResolver = Arc::new(move |case: &ConflictCase| {
            // A panic here would unwind through the core's apply thread;
            // the remote version is the answer that changes nothing.
            catch_unwind(AssertUnwindSafe(|| t.resolve(case))).unwrap_or_else(|_| {
                warn(
                    &t.table,
                    format_args!("a bug in tidelog's C adapter panicked"),
                );
                Resolution::TakeRemote
            })
        });
        let ((), old) = swap(handle, table, Some(target), || {
            db.set_conflict_resolver(table, resolver)
        })?;
        if let Some(old) = old {
            old.stop();
        }
        Ok(())
    })
}

/// Removes the conflict resolver of `table` (it falls back to last writer
/// wins). When this returns, the callback is not running and will not be
/// called again, so its `user_data` may be released (called from inside
/// the callback, the current call is the last).
///
/// @param db          a database handle.
/// @param table       table name.
/// @param out_was_set optional (may be NULL): receives whether one was set.
#[no_mangle]
pub unsafe extern "C" fn tidelog_clear_conflict_resolver(
    db: *mut tidelog_db,
    table: *const c_char,
    out_was_set: *mut bool,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { OptOut::new(out_was_set, false) };
        let handle = db as usize;
        let db = handles::db(db)?;
        // SAFETY: as above.
        let table = unsafe { str_arg(table, "table") }?;
        let (was, old) = swap(
            handle,
            table,
            None,
            || Ok(db.clear_conflict_resolver(table)),
        )?;
        if let Some(t) = old {
            t.stop();
        }
        out.set(was);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    unsafe extern "C" fn never(
        _: *const c_char,
        _: *mut c_void,
        _: *mut *mut tidelog_string,
    ) -> i32 {
        0
    }

    fn target() -> Target {
        Target {
            token: 0,
            table: "t".into(),
            cancelled: AtomicBool::new(false),
            running: RwLock::new(()),
            callback: never,
            user_data: UserData(std::ptr::null_mut()),
        }
    }

    #[test]
    fn every_answer_c_can_give_maps_to_a_resolution() {
        let t = target();
        assert_eq!(t.answer(0, None), Resolution::TakeRemote);
        assert_eq!(t.answer(1, None), Resolution::KeepLocal);
        assert_eq!(t.answer(3, None), Resolution::Delete);
        assert_eq!(
            t.answer(2, Some(r#"{"id":1,"v":"x"}"#.into())),
            Resolution::Write(json!({"id": 1, "v": "x"}))
        );
        // A record handed over with another answer is ignored (and freed).
        assert_eq!(t.answer(1, Some("{}".into())), Resolution::KeepLocal);
    }

    #[test]
    fn hostile_answers_take_the_remote_version() {
        let t = target();
        for code in [-1, 4, 42, i32::MIN, i32::MAX] {
            assert_eq!(t.answer(code, None), Resolution::TakeRemote, "code {code}");
        }
        assert_eq!(t.answer(2, None), Resolution::TakeRemote);
        for text in ["{not json", "[1,2]", "42", "null", "\"x\"", ""] {
            assert_eq!(
                t.answer(2, Some(text.into())),
                Resolution::TakeRemote,
                "{text:?}"
            );
        }
    }

    #[test]
    fn strings_made_by_c_are_taken_back_once() {
        let text = CString::new("{\"id\":1}").unwrap();
        let mut s = std::ptr::null_mut();
        // SAFETY: a valid C string and out pointer.
        let made = unsafe { crate::tidelog_string_new(text.as_ptr(), &mut s) };
        assert_eq!(made, tidelog_status::TIDELOG_OK);
        // SAFETY: `s` came from tidelog_string_new and is handed over once.
        let back = unsafe { take_string(s) };
        assert_eq!(back.as_deref(), Some("{\"id\":1}"));
        // SAFETY: NULL is accepted.
        assert_eq!(unsafe { take_string(std::ptr::null_mut()) }, None);
        let mut out = std::ptr::NonNull::<tidelog_string>::dangling().as_ptr();
        // SAFETY: a NULL text with a valid out pointer.
        let refused = unsafe { crate::tidelog_string_new(std::ptr::null(), &mut out) };
        assert_eq!(refused, tidelog_status::TIDELOG_NULL_ARGUMENT);
        assert!(out.is_null());
    }
}
