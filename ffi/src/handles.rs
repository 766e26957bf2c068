//! Handles. Database, transaction and subscription handles are ids in a
//! process-wide registry, shaped as pointers for C; they are never
//! dereferenced, so a freed, forged or mixed-up handle is a clean
//! `TIDELOG_INVALID_HANDLE`. Ids are never reused, so a handle freed and
//! then used again cannot reach a newer object either.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tidelog_core::{Database, Transaction};

use crate::guard::{Fail, FfiResult};
use crate::tidelog_status::*;

/// An open database (opaque). Created by tidelog_open(), released by
/// tidelog_db_free().
pub struct tidelog_db {
    _opaque: [u8; 0],
}

/// A transaction being built (opaque). Created by tidelog_txn_begin(),
/// released by tidelog_txn_free().
pub struct tidelog_txn {
    _opaque: [u8; 0],
}

/// A change subscription (opaque). Created by tidelog_subscribe() or
/// tidelog_subscribe_queue(), released by tidelog_subscription_free().
pub struct tidelog_subscription {
    _opaque: [u8; 0],
}

/// The state of a transaction handle: `None` once committed.
pub(crate) type TxnSlot = Arc<Mutex<Option<Transaction>>>;

pub(crate) enum Object {
    Db(Database),
    Txn(TxnSlot),
    // Held as `Any` so that the registry does not name the events module's
    // type (events builds on handles, not the other way round); `sub`
    // downcasts it back.
    Sub(Arc<dyn Any + Send + Sync>),
}

impl Object {
    fn kind(&self) -> &'static str {
        match self {
            Object::Db(_) => "a database handle",
            Object::Txn(_) => "a transaction handle",
            Object::Sub(_) => "a subscription handle",
        }
    }
}

static OBJECTS: RwLock<BTreeMap<usize, Object>> = RwLock::new(BTreeMap::new());
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// Registers an object and returns its handle value (never 0, never reused).
pub(crate) fn register(obj: Object) -> usize {
    // Multiples of 16 look like aligned pointers to debuggers and tools.
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) << 4;
    OBJECTS.write().insert(id, obj);
    id
}

pub(crate) fn as_ptr<T>(id: usize) -> *mut T {
    std::ptr::without_provenance_mut(id)
}

fn wrong_handle(what: &str, found: Option<&Object>) -> Fail {
    let message = match found {
        Some(other) => format!("expected {what}, got {}", other.kind()),
        None => format!("{what} that is unknown or already freed"),
    };
    Fail::new(TIDELOG_INVALID_HANDLE, message)
}

fn null_handle(what: &str) -> Fail {
    Fail::new(TIDELOG_NULL_ARGUMENT, format!("{what} is NULL"))
}

/// The database behind a handle (a cheap clone, so the registry lock is not
/// held while the call runs).
pub(crate) fn db(h: *const tidelog_db) -> FfiResult<Database> {
    if h.is_null() {
        return Err(null_handle("the database handle"));
    }
    match OBJECTS.read().get(&(h as usize)) {
        Some(Object::Db(db)) => Ok(db.clone()),
        other => Err(wrong_handle("a database handle", other)),
    }
}

pub(crate) fn txn(h: *const tidelog_txn) -> FfiResult<TxnSlot> {
    if h.is_null() {
        return Err(null_handle("the transaction handle"));
    }
    match OBJECTS.read().get(&(h as usize)) {
        Some(Object::Txn(t)) => Ok(t.clone()),
        other => Err(wrong_handle("a transaction handle", other)),
    }
}

pub(crate) fn sub<T: Any + Send + Sync>(h: *const tidelog_subscription) -> FfiResult<Arc<T>> {
    if h.is_null() {
        return Err(null_handle("the subscription handle"));
    }
    match OBJECTS.read().get(&(h as usize)) {
        Some(found @ Object::Sub(s)) => s
            .clone()
            .downcast::<T>()
            .map_err(|_| wrong_handle("a subscription handle", Some(found))),
        other => Err(wrong_handle("a subscription handle", other)),
    }
}

/// Removes a handle of the expected kind; anything else is left alone.
pub(crate) fn take(id: usize, pick: fn(&Object) -> bool) -> Option<Object> {
    let mut objects = OBJECTS.write();
    if objects.get(&id).is_some_and(pick) {
        objects.remove(&id)
    } else {
        None
    }
}
