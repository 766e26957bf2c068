//! Raw Node-API functions for the two calls a program makes once per record
//! in a loop: `get` and `upsert`.
//!
//! Why not `#[napi]` methods: for a point get, napi-rs 3's generated glue
//! (receiver unwrap, native-borrow scope and barrier, an owned `String` per
//! argument, the return conversion) cost about as much as the read itself,
//! and `JSON.parse` of the record text about as much again (most of it
//! for the six-attribute benchmark record; see bench/bench.js). Together
//! they held Node's gets at half the Rust API's rate.
//!
//! So a get hands a record to index.js "laid out" when it can (see
//! layout.rs): the attribute names and value types (the record's shape)
//! get a small id, numbers go into a shared `Float64Array` (`slots`), and
//! string values (and nested objects and arrays, as JSON text) are
//! concatenated into one JavaScript string. index.js builds the object
//! with a function it generates once per shape (an object literal: no
//! parsing). A record that cannot be laid out (more values than slots,
//! too many shapes, a string with a lone surrogate, anything unexpected)
//! comes back as JSON text, as before.
//!
//! Calls name their table by a small id that `tableId(name)` hands out
//! once per name (index.js keeps the map): reading a number costs the
//! native side far less than reading a name from a JavaScript string.
//!
//! These functions are made per database by [`functions`], with the
//! database in their callback data: there is no receiver to unwrap and no
//! way to call them on anything else. index.js keeps them private and
//! checks arguments before calling; what is checked here again is what
//! memory safety or a clear error needs. Everything runs on the JavaScript
//! thread, and no JavaScript runs during a call, so the `RefCell`s are
//! never borrowed twice.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void, CString};
use std::ptr;
use std::rc::Rc;

use napi::bindgen_prelude::ToNapiValue;
use napi::sys;
use tidelog::view::{CommitInfoView, RecordView};
use tidelog::{Database, Key, Record};

use crate::layout::{Shapes, FIRST_VALUE, SLOTS};
use crate::views::commit_obj;
use crate::{code_of, owe_events_raw, Slots};

/// Table names per database that calls may name by a small id (see
/// `table_id_body`); further names take index.js's general path.
const MAX_TABLE_IDS: usize = 1024;

/// What every function of one database shares.
struct Fast {
    db: Database,
    listeners: Slots,
    /// Argument text (table names, string keys, record JSON).
    arg: RefCell<Vec<u8>>,
    /// Table names by id: reading an id is much cheaper than reading a
    /// name from a JavaScript string on every call (about 60 ns of a
    /// point get, measured).
    tables: RefCell<Vec<Box<str>>>,
    /// Result text: a record's JSON, or a laid-out record's strings.
    out: RefCell<String>,
    shapes: RefCell<Shapes>,
    /// The `Float64Array` index.js reads laid-out numbers from: `SLOTS`
    /// numbers in an ArrayBuffer that `slots_ref` keeps alive (V8 never
    /// moves an ArrayBuffer's backing store).
    slots: *const Cell<f64>,
    slots_ref: sys::napi_ref,
    env: sys::napi_env,
}

impl Drop for Fast {
    fn drop(&mut self) {
        // SAFETY: `slots_ref` was made in `env`, which outlives its
        // finalizers (the only place a `Fast` is dropped, apart from a
        // failed `functions`, also in `env`).
        unsafe { sys::napi_delete_reference(self.env, self.slots_ref) };
    }
}

impl Fast {
    fn slots(&self) -> &[Cell<f64>] {
        // SAFETY: `slots` points to `SLOTS` f64s kept alive by `slots_ref`
        // as long as `self`; `Cell<f64>` has f64's layout, and JavaScript
        // only reads them between calls (same thread).
        unsafe { std::slice::from_raw_parts(self.slots, SLOTS) }
    }
}

const OK: sys::napi_status = sys::Status::napi_ok;

/// Throws `Error` with the `[TIDELOG:<CODE>] ` message prefix index.js
/// turns into a `TidelogError` subclass; returns the "no value" result.
unsafe fn throw(env: sys::napi_env, code: &str, msg: &str) -> sys::napi_value {
    let text = format!("[TIDELOG:{code}] {msg}").replace('\0', " ");
    let text = CString::new(text).unwrap_or_default();
    // SAFETY: `env` is the env of the running callback; `text` is a valid
    // NUL-terminated string that outlives the call.
    unsafe { sys::napi_throw_error(env, ptr::null(), text.as_ptr()) };
    ptr::null_mut()
}

unsafe fn throw_db(env: sys::napi_env, e: tidelog::Error) -> sys::napi_value {
    // SAFETY: as in `throw`.
    unsafe { throw(env, code_of(e.kind()), &e.to_string()) }
}

/// The callback's arguments and its `Fast`.
unsafe fn args<'a, const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> Option<([sys::napi_value; N], &'a Fast)> {
    let mut argv = [ptr::null_mut(); N];
    let mut argc = N;
    let mut data = ptr::null_mut();
    // SAFETY: `argv` has room for `argc` values; the out-pointers are valid.
    let status = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            &mut data,
        )
    };
    if status != OK || data.is_null() {
        return None;
    }
    // SAFETY: every function made by `functions` has an `Rc<Fast>` leaked
    // into its data, released only by its finalizer (after the function is
    // unreachable, so never during a call). Missing arguments are
    // `undefined`, which the conversions below reject.
    Some((argv, unsafe { &*(data as *const Fast) }))
}

/// Reads a JavaScript string into `buf` as UTF-8 (lone surrogates become
/// U+FFFD, as everywhere in Node-API). `None` if `v` is not a string.
unsafe fn read_str(env: sys::napi_env, v: sys::napi_value, buf: &mut Vec<u8>) -> Option<&str> {
    // Most arguments (table names, keys) fit the buffer's capacity, which
    // makes this one call; the length query is only for longer text.
    if buf.capacity() < 256 {
        buf.reserve(256);
    }
    let mut len = 0usize;
    for _ in 0..2 {
        let cap = buf.capacity();
        // SAFETY: `buf` has `cap` writable bytes; Node-API writes at most
        // `cap - 1` bytes and a NUL, and stores the byte count in `len`.
        let status = unsafe {
            sys::napi_get_value_string_utf8(
                env,
                v,
                buf.as_mut_ptr().cast::<c_char>(),
                cap,
                &mut len,
            )
        };
        if status != OK {
            return None;
        }
        // Node-API never splits a character when it truncates, so with
        // fewer than 4 bytes to spare the text may have been cut.
        if len + 4 < cap {
            // SAFETY: Node-API wrote `len` initialised bytes.
            unsafe { buf.set_len(len) };
            return std::str::from_utf8(buf).ok();
        }
        // SAFETY: a null buffer asks for the length only.
        let status =
            unsafe { sys::napi_get_value_string_utf8(env, v, ptr::null_mut(), 0, &mut len) };
        if status != OK {
            return None;
        }
        buf.clear();
        buf.reserve(len + 8);
    }
    None
}

/// A JavaScript string made from `text`: Latin-1 (a plain copy) when it is
/// ASCII, which record JSON nearly always is, else UTF-8.
unsafe fn js_string(env: sys::napi_env, text: &str) -> sys::napi_value {
    let mut v = ptr::null_mut();
    let p = text.as_ptr().cast::<c_char>();
    // SAFETY: `p` points to `text.len()` valid bytes; ASCII is Latin-1.
    let status = unsafe {
        if text.is_ascii() {
            sys::napi_create_string_latin1(env, p, text.len() as isize, &mut v)
        } else {
            sys::napi_create_string_utf8(env, p, text.len() as isize, &mut v)
        }
    };
    if status != OK {
        // SAFETY: as in `throw`.
        return unsafe { throw(env, "STORAGE", "cannot create a JavaScript string") };
    }
    v
}

/// `get`'s result: `null`, a laid-out record's text (`slots[0]` its shape
/// id) or the record's JSON text (`slots[0]` = -1).
unsafe fn get_result(
    env: sys::napi_env,
    fast: &Fast,
    found: tidelog::Result<Option<Record>>,
) -> sys::napi_value {
    match found {
        Ok(Some(r)) => {
            let (Ok(mut out), Ok(mut shapes)) =
                (fast.out.try_borrow_mut(), fast.shapes.try_borrow_mut())
            else {
                // SAFETY: as in `throw`.
                return unsafe { throw(env, "STORAGE", "reentrant get") };
            };
            // The record as the core's view has it: its attributes laid
            // out, its computed times in the slots after the shape id.
            let view = RecordView::of(&r);
            let slots = fast.slots();
            let id = shapes.lay_out(view.body, slots, &mut out);
            match id {
                Some(id) => {
                    slots[0].set(f64::from(id));
                    for (slot, t) in slots[1..FIRST_VALUE].iter().zip(view.times()) {
                        slot.set(t as f64);
                    }
                }
                None => {
                    slots[0].set(-1.0);
                    out.clear();
                    view.write_json(&mut out);
                }
            }
            // SAFETY: `env` is the running callback's.
            unsafe { js_string(env, &out) }
        }
        Ok(None) => {
            let mut v = ptr::null_mut();
            // SAFETY: valid out-pointer.
            unsafe { sys::napi_get_null(env, &mut v) };
            v
        }
        // SAFETY: as in `throw`.
        Err(e) => unsafe { throw_db(env, e) },
    }
}

/// `shape(id)`: `[["name","n"|"s"|"j"|"t"|"f"|"z"],...]` as JSON text.
unsafe fn shape_body(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by Node-API with a valid env and callback info.
    let Some(([id], fast)) = (unsafe { args::<1>(env, info) }) else {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "INVALID_INPUT", "invalid call") };
    };
    let mut n = 0u32;
    // SAFETY: valid out-pointer.
    if unsafe { sys::napi_get_value_uint32(env, id, &mut n) } != OK {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "INVALID_INPUT", "invalid shape id") };
    }
    let Ok(shapes) = fast.shapes.try_borrow() else {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "STORAGE", "reentrant call") };
    };
    match shapes.describe(n) {
        // SAFETY: `env` is the running callback's.
        Some(text) => unsafe { js_string(env, &text) },
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        None => unsafe { throw(env, "INVALID_INPUT", "unknown shape id") },
    }
}

/// Runs `f` with the name of the table a call names by id (see
/// `table_id_body`); if there is none, throws and returns what the callback
/// hands back to Node.
///
/// # Safety
/// `env` is the running callback's and `table` one of its arguments.
unsafe fn in_table<T>(
    env: sys::napi_env,
    fast: &Fast,
    table: sys::napi_value,
    f: impl FnOnce(&str) -> T,
) -> Result<T, sys::napi_value> {
    let Ok(tables) = fast.tables.try_borrow() else {
        // SAFETY: the caller's contract.
        return Err(unsafe { throw(env, "STORAGE", "reentrant call") });
    };
    let mut id = 0u32;
    // SAFETY: the caller's contract; valid out-pointer.
    let read = unsafe { sys::napi_get_value_uint32(env, table, &mut id) } == OK;
    match tables.get(id as usize) {
        Some(name) if read => Ok(f(name)),
        // SAFETY: the caller's contract.
        _ => Err(unsafe { throw(env, "INVALID_INPUT", "invalid table id") }),
    }
}

/// `tableId(name)`: the id calls may name this table by from now on, or
/// -1 once `MAX_TABLE_IDS` names have ids. Any string gets one: whether
/// the table exists is for each call to find out, as it is by name.
unsafe fn table_id_body(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by Node-API with a valid env and callback info.
    let Some(([name], fast)) = (unsafe { args::<1>(env, info) }) else {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "INVALID_INPUT", "invalid call") };
    };
    let (Ok(mut arg), Ok(mut tables)) = (fast.arg.try_borrow_mut(), fast.tables.try_borrow_mut())
    else {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "STORAGE", "reentrant call") };
    };
    // SAFETY: `name` is an argument of this call.
    let Some(name) = (unsafe { read_str(env, name, &mut arg) }) else {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe {
            throw(
                env,
                "INVALID_INPUT",
                "invalid table name: expected a string",
            )
        };
    };
    let id = match tables.iter().position(|t| **t == *name) {
        Some(id) => id as i32,
        None if tables.len() < MAX_TABLE_IDS => {
            tables.push(name.into());
            (tables.len() - 1) as i32
        }
        None => -1,
    };
    let mut v = ptr::null_mut();
    // SAFETY: valid out-pointer.
    if unsafe { sys::napi_create_int32(env, id, &mut v) } != OK {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "STORAGE", "cannot create a number") };
    }
    v
}

/// `getInt(tableId, key)`: `key` a number holding a safe integer.
unsafe fn get_int_body(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by Node-API with a valid env and callback info.
    let Some(([table, key], fast)) = (unsafe { args::<2>(env, info) }) else {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "INVALID_INPUT", "invalid call") };
    };
    let mut k = 0i64;
    // SAFETY: valid out-pointer.
    if unsafe { sys::napi_get_value_int64(env, key, &mut k) } != OK {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "INVALID_INPUT", "invalid key: expected an integer") };
    }
    // SAFETY: `table` is an argument of this call.
    match unsafe { in_table(env, fast, table, |name| fast.db.get(name, Key::Int(k))) } {
        // SAFETY: `env` is the running callback's.
        Ok(found) => unsafe { get_result(env, fast, found) },
        Err(thrown) => thrown,
    }
}

/// `getStr(tableId, key)`: `key` a string.
unsafe fn get_str_body(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by Node-API with a valid env and callback info.
    let Some(([table, key], fast)) = (unsafe { args::<2>(env, info) }) else {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "INVALID_INPUT", "invalid call") };
    };
    let Ok(mut arg) = fast.arg.try_borrow_mut() else {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "STORAGE", "reentrant call") };
    };
    // SAFETY: `key` is an argument of this call.
    let Some(k) = (unsafe { read_str(env, key, &mut arg) }) else {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "INVALID_INPUT", "invalid key: expected a string") };
    };
    let k = Key::Str(k.to_owned());
    drop(arg);
    // SAFETY: `table` is an argument of this call.
    match unsafe { in_table(env, fast, table, |name| fast.db.get(name, k)) } {
        // SAFETY: `env` is the running callback's.
        Ok(found) => unsafe { get_result(env, fast, found) },
        Err(thrown) => thrown,
    }
}

/// `upsert(tableId, json)`: returns what index.js builds the commit info
/// from (see [`commit_result`]), or throws.
unsafe fn upsert_body(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by Node-API with a valid env and callback info.
    let Some(([table, json], fast)) = (unsafe { args::<2>(env, info) }) else {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "INVALID_INPUT", "invalid call") };
    };
    let Ok(mut arg) = fast.arg.try_borrow_mut() else {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "STORAGE", "reentrant call") };
    };
    // SAFETY: `json` is an argument of this call.
    let Some(text) = (unsafe { read_str(env, json, &mut arg) }) else {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "INVALID_INPUT", "a record must be JSON text") };
    };
    let upserted = |name: &str| {
        let c = fast.db.upsert_json(name, text)?;
        // SAFETY: `env` is the running callback's, on the JavaScript thread.
        unsafe { owe_events_raw(&fast.listeners, env, name) };
        Ok(c)
    };
    // SAFETY: `table` is an argument of this call; `env` is the running
    // callback's.
    match unsafe { in_table(env, fast, table, upserted) } {
        // SAFETY: `env` and `fast` are this callback's, as `commit_result` requires.
        Ok(Ok(c)) => unsafe { commit_result(env, fast, c) },
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        Ok(Err(e)) => unsafe { throw_db(env, e) },
        Err(thrown) => thrown,
    }
}

/// The commit's stamp time as a BigInt, with the rest of the core's
/// `CommitInfoView` in the slots (`seq` in `slots[0]`, `stamp_ms` in
/// `slots[1]`; exact: both stay far below 2^53); index.js builds the
/// commit info object from them and the database's node id (`origin`),
/// which is cheaper than building it here property by property (an object
/// costs about a third of a microsecond). A stamp from another node (not
/// expected from a local commit, but the type allows it) comes back as the
/// whole object.
unsafe fn commit_result(
    env: sys::napi_env,
    fast: &Fast,
    c: tidelog::CommitInfo,
) -> sys::napi_value {
    let v = CommitInfoView::of(c);
    if v.origin != fast.db.node_id() {
        // SAFETY: `env` is the running callback's.
        return match unsafe { ToNapiValue::to_napi_value(env, commit_obj(c)) } {
            Ok(obj) => obj,
            // SAFETY: as in `throw`.
            Err(_) => unsafe { throw(env, "STORAGE", "cannot create the commit info") },
        };
    }
    let mut time = ptr::null_mut();
    // SAFETY: valid out-pointer; the value lives in this callback's scope.
    if unsafe { sys::napi_create_bigint_uint64(env, v.stamp.time, &mut time) } != OK {
        // SAFETY: `env` is the env of the running callback, as `throw` requires.
        return unsafe { throw(env, "STORAGE", "cannot create the commit info") };
    }
    let slots = fast.slots();
    slots[0].set(v.seq as f64);
    slots[1].set(v.stamp_ms as f64);
    time
}

/// Node-API entry points. An unwinding panic must not reach Node (it would
/// abort the process, taking the app with it), so each body runs under
/// `catch_unwind` and a panic becomes a thrown error.
///
/// # Safety
/// `env` and `info` are the ones Node-API passed to this callback.
unsafe fn guarded(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    body: unsafe fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value,
) -> sys::napi_value {
    // SAFETY: the caller's contract, handed on unchanged.
    match std::panic::catch_unwind(|| unsafe { body(env, info) }) {
        Ok(v) => v,
        // SAFETY: `env` is the running callback's.
        Err(_) => unsafe {
            throw(
                env,
                "STORAGE",
                "internal error (a bug in tidelog; please report it): the call was abandoned",
            )
        },
    }
}

unsafe extern "C" fn shape(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by Node-API with this callback's env and info.
    unsafe { guarded(env, info, shape_body) }
}

unsafe extern "C" fn table_id(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: called by Node-API with this callback's env and info.
    unsafe { guarded(env, info, table_id_body) }
}

unsafe extern "C" fn get_int(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by Node-API with this callback's env and info.
    unsafe { guarded(env, info, get_int_body) }
}

unsafe extern "C" fn get_str(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by Node-API with this callback's env and info.
    unsafe { guarded(env, info, get_str_body) }
}

unsafe extern "C" fn upsert(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by Node-API with this callback's env and info.
    unsafe { guarded(env, info, upsert_body) }
}

unsafe extern "C" fn release(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` is the `Rc<Fast>` leaked for this function in
    // `functions`; the finalizer runs once.
    drop(unsafe { Rc::from_raw(data as *const Fast) });
}

fn fail(what: &str) -> napi::Error {
    napi::Error::new(
        napi::Status::GenericFailure,
        format!("cannot set up the database's functions: {what}"),
    )
}

/// `{ tableId, getInt, getStr, upsert, shape, slots, recordTimes }` bound
/// to `db`.
///
/// # Safety
/// `env` must be the env of a callback running on the JavaScript thread.
pub(crate) unsafe fn functions(
    env: sys::napi_env,
    db: Database,
    listeners: Slots,
) -> napi::Result<sys::napi_value> {
    let check = |s: sys::napi_status, what: &str| if s == OK { Ok(()) } else { Err(fail(what)) };
    let mut buffer = ptr::null_mut();
    let mut data = ptr::null_mut();
    check(
        // SAFETY: valid out-pointers; V8 allocates zeroed, aligned memory.
        unsafe { sys::napi_create_arraybuffer(env, SLOTS * 8, &mut data, &mut buffer) },
        "arraybuffer",
    )?;
    let mut slots_ref = ptr::null_mut();
    check(
        // SAFETY: `buffer` is a live value of this scope.
        unsafe { sys::napi_create_reference(env, buffer, 1, &mut slots_ref) },
        "reference",
    )?;
    let fast = Rc::new(Fast {
        db,
        listeners,
        arg: RefCell::new(Vec::with_capacity(256)),
        tables: RefCell::new(Vec::new()),
        out: RefCell::new(String::with_capacity(256)),
        shapes: RefCell::new(Shapes::default()),
        slots: data as *const Cell<f64>,
        slots_ref,
        env,
    });
    let mut array = ptr::null_mut();
    check(
        // SAFETY: `buffer` holds exactly `SLOTS` f64s.
        unsafe {
            sys::napi_create_typedarray(
                env,
                sys::TypedarrayType::float64_array,
                SLOTS,
                buffer,
                0,
                &mut array,
            )
        },
        "Float64Array",
    )?;
    let mut obj = ptr::null_mut();
    // SAFETY: valid env and out-pointer.
    check(unsafe { sys::napi_create_object(env, &mut obj) }, "object")?;
    check(
        // SAFETY: `obj` and `array` are live values of this scope.
        unsafe { sys::napi_set_named_property(env, obj, c"slots".as_ptr(), array) },
        "slots",
    )?;
    // The names of the times in `slots[1..FIRST_VALUE]`, for index.js's
    // record builders: the core's list, not a copy of it.
    let mut times = ptr::null_mut();
    // SAFETY: valid env and out-pointer.
    check(unsafe { sys::napi_create_array(env, &mut times) }, "array")?;
    for (i, name) in RecordView::TIME_ATTRS.iter().enumerate() {
        // SAFETY: `env` is the running callback's; `times` is live.
        let set = unsafe {
            let v = js_string(env, name);
            !v.is_null() && sys::napi_set_element(env, times, i as u32, v) == OK
        };
        check(
            if set {
                OK
            } else {
                sys::Status::napi_generic_failure
            },
            "recordTimes",
        )?;
    }
    check(
        // SAFETY: `obj` and `times` are live values of this scope.
        unsafe { sys::napi_set_named_property(env, obj, c"recordTimes".as_ptr(), times) },
        "recordTimes",
    )?;
    type Cb = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;
    let list: [(&std::ffi::CStr, Cb); 5] = [
        (c"tableId", table_id),
        (c"getInt", get_int),
        (c"getStr", get_str),
        (c"upsert", upsert),
        (c"shape", shape),
    ];
    for (name, cb) in list {
        let data = Rc::into_raw(fast.clone()) as *mut c_void;
        let mut f = ptr::null_mut();
        // SAFETY: `name` is NUL-terminated (NAPI_AUTO_LENGTH); `data` stays
        // valid until the finalizer added below releases it.
        let made =
            unsafe { sys::napi_create_function(env, name.as_ptr(), -1, Some(cb), data, &mut f) };
        if made != OK {
            // SAFETY: `data` was leaked just above and never handed out.
            drop(unsafe { Rc::from_raw(data as *const Fast) });
            return Err(fail("function"));
        }
        // SAFETY: `f` is the function just made; `release` frees `data`
        // once it is collected.
        let added = unsafe {
            sys::napi_add_finalizer(
                env,
                f,
                data,
                Some(release),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        // Without a finalizer `data` leaks (the function may still be
        // called until it is collected, so it cannot be freed here).
        check(added, "finalizer")?;
        check(
            // SAFETY: `obj` and `f` are live values of this scope.
            unsafe { sys::napi_set_named_property(env, obj, name.as_ptr(), f) },
            "property",
        )?;
    }
    Ok(obj)
}
