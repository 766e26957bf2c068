//! Transactions over several tables.

use std::ffi::c_char;
use std::sync::Arc;

use parking_lot::Mutex;
use tidelog_core::view::CommitInfoView;
use tidelog_core::Transaction;

use crate::guard::{
    guard, guard_void, parse_json, record_text_fail, str_arg, Fail, FfiResult, OptOut, Out,
};
use crate::handles::{self, as_ptr, tidelog_db, tidelog_txn, Object};
use crate::json;
use crate::strings::{new_string, tidelog_string};
use crate::tidelog_status::{self, TIDELOG_INVALID_HANDLE};

/// Starts a transaction: writes staged on it to one or more tables commit
/// atomically with one version stamp and one log entry, or not at all.
/// Nothing is visible until tidelog_txn_commit(); reads (on the database
/// handle) see committed state only.
///
/// A transaction handle is meant for one thread at a time; calls on it
/// from several threads are serialised, not undefined.
///
/// @param db      a database handle.
/// @param out_txn receives the transaction handle. Release it with
///                tidelog_txn_free(), committed or not.
#[no_mangle]
pub unsafe extern "C" fn tidelog_txn_begin(
    db: *mut tidelog_db,
    out_txn: *mut *mut tidelog_txn,
) -> tidelog_status {
    guard(|| {
        // SAFETY: out pointer follows the header contract.
        let out = unsafe { Out::new(out_txn, "out_txn", std::ptr::null_mut()) }?;
        let db = handles::db(db)?;
        if db.is_closed() {
            return Err(tidelog_core::Error::Closed.into());
        }
        let slot = Arc::new(Mutex::new(Some(db.transaction())));
        out.set(as_ptr(handles::register(Object::Txn(slot))));
        Ok(())
    })
}

pub(crate) fn with_open_txn<T>(
    txn: *mut tidelog_txn,
    f: impl FnOnce(&mut Transaction) -> FfiResult<T>,
) -> FfiResult<T> {
    let slot = handles::txn(txn)?;
    let mut guard = slot.lock();
    match guard.as_mut() {
        Some(t) => f(t),
        None => Err(Fail::new(
            TIDELOG_INVALID_HANDLE,
            "the transaction was already committed: begin a new one",
        )),
    }
}

#[derive(Clone, Copy)]
enum Stage {
    Insert,
    Upsert,
    Update,
}

/// Inserts and upserts are read as text (see `Transaction::upsert_json`);
/// an update merges a parsed patch.
enum Arg<'a> {
    Text(&'a str),
    Patch(serde_json::Value),
}

/// # Safety
/// Pointer arguments follow the header contract.
unsafe fn stage(
    txn: *mut tidelog_txn,
    table: *const c_char,
    record_json: *const c_char,
    kind: Stage,
) -> tidelog_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let table = unsafe { str_arg(table, "table") }?;
        // SAFETY: forwarded contract.
        let text = unsafe { str_arg(record_json, "record_json") }?;
        let record = match kind {
            Stage::Update => Arg::Patch(parse_json(text, "record_json")?),
            Stage::Insert | Stage::Upsert => Arg::Text(text),
        };
        with_open_txn(txn, |t| {
            let staged = match (kind, record) {
                (_, Arg::Patch(patch)) => t.update(table, patch),
                (Stage::Insert, Arg::Text(text)) => t.insert_json(table, text),
                (_, Arg::Text(text)) => t.upsert_json(table, text),
            };
            staged.map_err(|e| record_text_fail(e, "record_json"))?;
            Ok(())
        })
    })
}

/// Stages an insert (checked against existing keys at commit). The record
/// is validated now: a bad record fails here and is not staged; the
/// transaction stays usable.
///
/// @param txn         a transaction handle.
/// @param table       table name.
/// @param record_json a JSON object holding the primary key.
#[no_mangle]
pub unsafe extern "C" fn tidelog_txn_insert(
    txn: *mut tidelog_txn,
    table: *const c_char,
    record_json: *const c_char,
) -> tidelog_status {
    // SAFETY: forwarded contract.
    unsafe { stage(txn, table, record_json, Stage::Insert) }
}

/// Stages an upsert (insert or replace).
///
/// @param txn         a transaction handle.
/// @param table       table name.
/// @param record_json a JSON object holding the primary key.
#[no_mangle]
pub unsafe extern "C" fn tidelog_txn_upsert(
    txn: *mut tidelog_txn,
    table: *const c_char,
    record_json: *const c_char,
) -> tidelog_status {
    // SAFETY: forwarded contract.
    unsafe { stage(txn, table, record_json, Stage::Upsert) }
}

/// Stages an update (merge into an existing record, checked at commit).
///
/// @param txn        a transaction handle.
/// @param table      table name.
/// @param patch_json a JSON object with the primary key and the attributes
///                   to set.
#[no_mangle]
pub unsafe extern "C" fn tidelog_txn_update(
    txn: *mut tidelog_txn,
    table: *const c_char,
    patch_json: *const c_char,
) -> tidelog_status {
    // SAFETY: forwarded contract.
    unsafe { stage(txn, table, patch_json, Stage::Update) }
}

/// Stages a delete.
///
/// @param txn      a transaction handle.
/// @param table    table name.
/// @param key_json the primary key as JSON: `42` or `"abc"`.
#[no_mangle]
pub unsafe extern "C" fn tidelog_txn_delete(
    txn: *mut tidelog_txn,
    table: *const c_char,
    key_json: *const c_char,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let table = unsafe { str_arg(table, "table") }?;
        // SAFETY: as above.
        let key = json::key_text(unsafe { str_arg(key_json, "key_json") }?, "key_json")?;
        with_open_txn(txn, |t| {
            t.delete(table, key)?;
            Ok(())
        })
    })
}

/// Commits every staged write atomically. Whatever the outcome, the
/// transaction is finished: later calls on it return
/// TIDELOG_INVALID_HANDLE; it still has to be freed with tidelog_txn_free().
/// Committing an empty transaction succeeds with sequence 0.
///
/// @param txn     a transaction handle.
/// @param out_seq optional (may be NULL): receives the transaction's log
///                sequence number, for tidelog_wait_for_ack().
/// @return TIDELOG_OK, TIDELOG_ALREADY_EXISTS (an insert hit a key; nothing
///         was written), TIDELOG_NOT_FOUND (an update found no record, or a
///         table was dropped), TIDELOG_CLOSED, ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_txn_commit(
    txn: *mut tidelog_txn,
    out_seq: *mut u64,
) -> tidelog_status {
    guard(|| {
        // SAFETY: out pointer follows the header contract.
        let out = unsafe { OptOut::new(out_seq, 0) };
        out.set(take_open(txn)?.commit()?.seq);
        Ok(())
    })
}

/// Commits every staged write, as tidelog_txn_commit(), and hands out what
/// the commit was given as JSON: `{"seq": n, "origin": <u64>, "stamp":
/// {"time": <u64>, "node": <u64>}, "stamp_ms": ms}`. `seq`: the log
/// sequence number (0 for an empty transaction), for tidelog_wait_for_ack();
/// `origin`: this instance's node id (= `stamp.node`); `stamp`: the version
/// stamp every write of the transaction carries, the same in the log and on
/// every replica; `stamp_ms`: its milliseconds (the records'
/// `__updatedtime__`). 64-bit values are exact JSON integers. The same
/// fields as Python's `CommitInfo` and Node's commit objects
/// (tidelog_core::view::CommitInfoView).
///
/// @param txn      a transaction handle.
/// @param out_json receives the commit info. Free it with
///                 tidelog_string_free().
/// @return as tidelog_txn_commit(); on failure `*out_json` is NULL.
#[no_mangle]
pub unsafe extern "C" fn tidelog_txn_commit_json(
    txn: *mut tidelog_txn,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: out pointer follows the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let info = take_open(txn)?.commit()?;
        out.set(new_string(json::to_text(&CommitInfoView::of(info))?)?);
        Ok(())
    })
}

/// The transaction's core handle, taken out of its slot: whatever the
/// commit's outcome, the C handle is finished.
fn take_open(txn: *mut tidelog_txn) -> FfiResult<Transaction> {
    let slot = handles::txn(txn)?;
    let t = slot.lock().take();
    t.ok_or_else(|| {
        Fail::new(
            TIDELOG_INVALID_HANDLE,
            "the transaction was already committed: begin a new one",
        )
    })
}

/// Releases a transaction handle, discarding its staged writes if it was
/// not committed. NULL, and a handle already freed, are accepted and
/// ignored.
///
/// @param txn a transaction handle, or NULL.
#[no_mangle]
pub extern "C" fn tidelog_txn_free(txn: *mut tidelog_txn) {
    guard_void(|| {
        drop(handles::take(txn as usize, |o| matches!(o, Object::Txn(_))));
    })
}
