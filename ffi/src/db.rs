//! Open and close, tables, single writes, reads and the log.

use std::ffi::c_char;

use serde_json::Value;
use tidelog_core::{Database, ScanOptions, TableOptions};

use crate::guard::{
    guard, guard_void, json_arg, opt_json_arg, parse_json, record_text_fail, str_arg, Fail,
    FfiResult, OptOut, Out,
};
use crate::handles::{self, as_ptr, tidelog_db, Object};
use crate::json;
use crate::strings::{new_string, tidelog_string};
use crate::tidelog_status;

// ---- lifecycle -------------------------------------------------------------

/// Opens (creating if needed) the data directory `dir`.
///
/// A directory is opened by one handle in one process at a time; a second
/// open fails with TIDELOG_LOCKED. The node name and the engine are fixed
/// when the directory is created.
///
/// Options, as a JSON object in the options schema shared by every binding
/// and the serve config (only `node_name` is required; unknown fields are
/// refused; a refusal names the option and what it accepts). A duration is
/// an integer of milliseconds or a string with a unit (`"250ms"`, `"10s"`);
/// a size is an integer of bytes or a string (`"64MiB"`):
///
/// - `"node_name"`: this node's name, unique in the cluster and equal to
///   the DNS name in its TLS certificate, e.g. `"edge-1"`;
/// - `"engine"`: `"fjall"` (default) or `"sled"`;
/// - `"durability"`: `"sync"` (every commit on disk before it returns) or
///   `"grouped"` (default: flushed together every `"flush_interval"`,
///   default 50 ms, 1 ms to 1 h);
/// - `"profile"`: `"edge"` (default: a 16 MiB memory budget) or `"hub"`
///   (64 MiB);
/// - `"memory_budget"`: size for caches and write buffers (default: the
///   profile's, 4 MiB to 1 TiB; it wins over the profile's);
/// - `"max_record_bytes"` (default 1 MiB, up to 1 GiB), `"max_clock_skew"`
///   (default 60 s, 1 ms to 30 d), `"expiry_interval"` (default 1 s, 1 ms
///   to 1 d);
/// - `"retention"`: `{"log_max_bytes", "log_max_age", "log_min_age",
///   "tombstone_min_age", "tombstone_max_age"}` (see the README);
/// - `"conflict_log_max_bytes"` (default 4 MiB; 0 turns the conflict log
///   off) and `"conflict_log_max_age"` (default 7 d) bound the conflict
///   log (tidelog_conflicts(); entries dropped: tidelog_conflicts_dropped());
/// - `"recover_prefix"`: `true` opens a directory whose engine journal was
///   damaged by keeping its longest valid prefix (the count dropped goes to
///   the log) instead of failing with TIDELOG_CORRUPT (default `false`);
/// - `"listener_queue_max"`: change events queued for callbacks before new
///   ones are dropped and reported in the next event's `"missed"` (default
///   10000, 1 to 16777216).
///
/// Older spellings still accepted for one release: `"max_clock_skew_ms"`,
/// `"expiry_interval_ms"`, `{"grouped_ms": n}` as `"durability"`.
///
/// @param dir          path of the data directory (UTF-8).
/// @param options_json the options above, e.g. `{"node_name": "edge-1"}`.
/// @param out_db       receives the new handle (NULL on failure). Release it
///                     with tidelog_db_free().
/// @return TIDELOG_OK, TIDELOG_LOCKED, TIDELOG_INVALID_INPUT, TIDELOG_STORAGE,
///         TIDELOG_CORRUPT, ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_open(
    dir: *const c_char,
    options_json: *const c_char,
    out_db: *mut *mut tidelog_db,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { Out::new(out_db, "out_db", std::ptr::null_mut()) }?;
        // SAFETY: as above.
        let dir = unsafe { str_arg(dir, "dir") }?;
        // SAFETY: as above.
        let opts = json::open_options(unsafe { json_arg(options_json, "options_json") }?)?;
        let db = Database::open(dir, opts)?;
        out.set(as_ptr(handles::register(Object::Db(db))));
        Ok(())
    })
}

/// Closes the database: stops replication and change delivery (queued
/// events are delivered first, unless called from a change callback),
/// flushes, and releases the data directory. The handle stays valid until
/// tidelog_db_free(): every later call on it fails with TIDELOG_CLOSED
/// (except tidelog_node_info()). Closing twice is fine.
///
/// May be called from a change callback of this database; it then does not
/// wait for the events thread (which is the calling thread).
///
/// @param db a database handle.
/// @return TIDELOG_OK, or TIDELOG_STORAGE if the final flush failed (the
///         database is closed anyway).
#[no_mangle]
pub extern "C" fn tidelog_close(db: *mut tidelog_db) -> tidelog_status {
    guard(|| {
        let d = handles::db(db)?;
        // Before the core lets go of them: a resolver's `user_data` may be
        // freed once this returns, so no call of it may still be running.
        crate::conflicts::stop_all(db as usize);
        Ok(d.close()?)
    })
}

/// Closes the database if still open and releases the handle. NULL, and a
/// handle that was already freed, are accepted and ignored. After this
/// call the handle value is invalid: any call with it returns
/// TIDELOG_INVALID_HANDLE. Free subscriptions and transactions of this
/// database before or after; both orders are safe.
///
/// @param db a database handle, or NULL.
#[no_mangle]
pub extern "C" fn tidelog_db_free(db: *mut tidelog_db) {
    guard_void(|| {
        if let Some(Object::Db(d)) = handles::take(db as usize, |o| matches!(o, Object::Db(_))) {
            crate::conflicts::stop_all(db as usize);
            let _ = d.close();
        }
    })
}

/// Describes this instance: `{"node_name": "...", "node_id": <u64>,
/// "node_id_hex": "...", "path": "...", "engine": "fjall"|"sled",
/// "closed": false, "dropped_transactions": 0}`. `node_id` is the origin in
/// version stamps; compare it as `node_id_hex` if your JSON parser keeps
/// numbers as doubles. `dropped_transactions`: transactions this handle
/// lost, at open to a damaged journal (with `"recover_prefix": true`) or to
/// a failed write the engine could not keep (sled, grouped durability).
///
/// @param db       a database handle (also works when closed).
/// @param out_json receives the JSON text; free it with tidelog_string_free().
#[no_mangle]
pub unsafe extern "C" fn tidelog_node_info(
    db: *mut tidelog_db,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: out pointer follows the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let db = handles::db(db)?;
        let info = serde_json::json!({
            "node_name": db.node_name(),
            "node_id": db.node_id(),
            "node_id_hex": format!("{:016x}", db.node_id()),
            "path": db.path().to_string_lossy(),
            "engine": db.engine().as_str(),
            "closed": db.is_closed(),
            "dropped_transactions": db.dropped_transactions(),
        });
        out.set(new_string(info.to_string())?);
        Ok(())
    })
}

/// Makes every commit so far durable on disk (useful with grouped
/// durability before a planned power-off).
///
/// @param db a database handle.
#[no_mangle]
pub extern "C" fn tidelog_flush(db: *mut tidelog_db) -> tidelog_status {
    guard(|| Ok(handles::db(db)?.flush()?))
}

// ---- tables ------------------------------------------------------------------

/// Through core's options schema, so a refusal names the option (e.g.
/// `conflict`) as in every other binding.
fn table_options(v: Option<Value>) -> FfiResult<TableOptions> {
    match v {
        None => Ok(TableOptions::default()),
        Some(v) => Ok(tidelog_core::options::table_options(v)?),
    }
}

/// Creates a table. Table definitions are local: never replicated.
///
/// @param db           a database handle.
/// @param table        table name: 1-128 of `[A-Za-z0-9_.-]`, not starting
///                     with `__`.
/// @param options_json NULL for the defaults, or `{"primary_key": "id",
///                     "indexes": ["attr", ...], "expiration": seconds,
///                     "conflict": "lww"}` (each optional). `"conflict"`
///                     is the rule for concurrent writes from different
///                     nodes: `"lww"` (default: last writer wins),
///                     `"merge"` (per attribute: the newer write of each
///                     attribute wins), `"keep_local"` (the local version
///                     wins), `"resolver"` (the callback installed with
///                     tidelog_set_conflict_resolver() decides). Losing
///                     writes are recorded, see tidelog_conflicts().
///                     `"disk_budget_bytes"` and `"on_full"`: the table's
///                     disk budget, see tidelog_set_table_budget().
/// @return TIDELOG_OK, TIDELOG_ALREADY_EXISTS, TIDELOG_INVALID_INPUT, ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_create_table(
    db: *mut tidelog_db,
    table: *const c_char,
    options_json: *const c_char,
) -> tidelog_status {
    guard(|| {
        let db = handles::db(db)?;
        // SAFETY: string arguments follow the header contract.
        let table = unsafe { str_arg(table, "table") }?;
        // SAFETY: as above.
        let opts = table_options(unsafe { opt_json_arg(options_json, "options_json") }?)?;
        db.create_table(table, opts)?;
        Ok(())
    })
}

/// Creates a table unless it already exists (its options are then left as
/// they are).
///
/// @param db           a database handle.
/// @param table        table name.
/// @param options_json as for tidelog_create_table(); may be NULL.
/// @param out_created  optional (may be NULL): receives true if this call
///                     created the table.
#[no_mangle]
pub unsafe extern "C" fn tidelog_ensure_table(
    db: *mut tidelog_db,
    table: *const c_char,
    options_json: *const c_char,
    out_created: *mut bool,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { OptOut::new(out_created, false) };
        let db = handles::db(db)?;
        // SAFETY: as above.
        let table = unsafe { str_arg(table, "table") }?;
        // SAFETY: as above.
        let opts = table_options(unsafe { opt_json_arg(options_json, "options_json") }?)?;
        out.set(db.ensure_table(table, opts)?);
        Ok(())
    })
}

/// Drops a table and all its records locally (never replicated).
///
/// @param db    a database handle.
/// @param table table name.
/// @return TIDELOG_OK, TIDELOG_NOT_FOUND, ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_drop_table(
    db: *mut tidelog_db,
    table: *const c_char,
) -> tidelog_status {
    guard(|| {
        let db = handles::db(db)?;
        // SAFETY: string argument follows the header contract.
        let table = unsafe { str_arg(table, "table") }?;
        Ok(db.drop_table(table)?)
    })
}

/// Lists the tables: a JSON array of `{"name", "primary_key", "indexes",
/// "expiration", "conflict"}` objects, by name.
///
/// @param db       a database handle.
/// @param out_json receives the JSON text; free it with tidelog_string_free().
#[no_mangle]
pub unsafe extern "C" fn tidelog_list_tables(
    db: *mut tidelog_db,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: out pointer follows the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let tables = handles::db(db)?.list_tables()?;
        out.set(new_string(json::to_text(&tables)?)?);
        Ok(())
    })
}

/// Describes one table: `{"name", "primary_key", "indexes", "expiration",
/// "conflict"}`.
///
/// @param db       a database handle.
/// @param table    table name.
/// @param out_json receives the JSON text; free it with tidelog_string_free().
/// @return TIDELOG_OK, TIDELOG_NOT_FOUND, ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_describe_table(
    db: *mut tidelog_db,
    table: *const c_char,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let db = handles::db(db)?;
        // SAFETY: as above.
        let table = unsafe { str_arg(table, "table") }?;
        out.set(new_string(json::to_text(&db.describe_table(table)?)?)?);
        Ok(())
    })
}

// ---- single writes -------------------------------------------------------

#[derive(Clone, Copy)]
enum WriteKind {
    Insert,
    Upsert,
    Update,
}

/// # Safety
/// Pointer arguments follow the header contract.
unsafe fn write_one(
    db: *mut tidelog_db,
    table: *const c_char,
    record_json: *const c_char,
    out_seq: *mut u64,
    kind: WriteKind,
) -> tidelog_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let out = unsafe { OptOut::new(out_seq, 0) };
        let db = handles::db(db)?;
        // SAFETY: forwarded contract.
        let table = unsafe { str_arg(table, "table") }?;
        // SAFETY: forwarded contract.
        let text = unsafe { str_arg(record_json, "record_json") }?;
        // Inserts and upserts are read as text (see
        // `Database::upsert_json`); an update merges a parsed patch.
        let written = match kind {
            WriteKind::Insert => db.insert_json(table, text),
            WriteKind::Upsert => db.upsert_json(table, text),
            WriteKind::Update => db.update(table, parse_json(text, "record_json")?),
        };
        let info = written.map_err(|e| record_text_fail(e, "record_json"))?;
        out.set(info.seq);
        Ok(())
    })
}

/// Inserts a new record, in a transaction of its own.
///
/// @param db          a database handle.
/// @param table       table name.
/// @param record_json a JSON object holding the primary key attribute (a
///                    string or an integer). `__createdtime__` and
///                    `__updatedtime__` are ignored if present.
/// @param out_seq     optional (may be NULL): receives the transaction's log
///                    sequence number, for tidelog_wait_for_ack().
/// @return TIDELOG_OK, TIDELOG_ALREADY_EXISTS (the key exists),
///         TIDELOG_NOT_FOUND (no such table), TIDELOG_INVALID_INPUT (not an
///         object, missing or wrongly typed key, too large), TIDELOG_INVALID_JSON,
///         TIDELOG_CLOSED, ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_insert(
    db: *mut tidelog_db,
    table: *const c_char,
    record_json: *const c_char,
    out_seq: *mut u64,
) -> tidelog_status {
    // SAFETY: forwarded contract.
    unsafe { write_one(db, table, record_json, out_seq, WriteKind::Insert) }
}

/// Inserts or replaces a record, in a transaction of its own.
///
/// @param db          a database handle.
/// @param table       table name.
/// @param record_json a JSON object holding the primary key attribute.
/// @param out_seq     optional (may be NULL): receives the log sequence number.
/// @return as tidelog_insert(), without TIDELOG_ALREADY_EXISTS.
#[no_mangle]
pub unsafe extern "C" fn tidelog_upsert(
    db: *mut tidelog_db,
    table: *const c_char,
    record_json: *const c_char,
    out_seq: *mut u64,
) -> tidelog_status {
    // SAFETY: forwarded contract.
    unsafe { write_one(db, table, record_json, out_seq, WriteKind::Upsert) }
}

/// Merges the given attributes into an existing record, in a transaction
/// of its own.
///
/// @param db         a database handle.
/// @param table      table name.
/// @param patch_json a JSON object with the primary key and the attributes
///                   to set.
/// @param out_seq    optional (may be NULL): receives the log sequence number.
/// @return as tidelog_insert(), with TIDELOG_NOT_FOUND also when there is no
///         record with that key.
#[no_mangle]
pub unsafe extern "C" fn tidelog_update(
    db: *mut tidelog_db,
    table: *const c_char,
    patch_json: *const c_char,
    out_seq: *mut u64,
) -> tidelog_status {
    // SAFETY: forwarded contract.
    unsafe { write_one(db, table, patch_json, out_seq, WriteKind::Update) }
}

/// Deletes a record (leaving a tombstone that replicates), in a
/// transaction of its own. Deleting a missing key is not an error.
///
/// @param db          a database handle.
/// @param table       table name.
/// @param key_json    the primary key as JSON: `42` or `"abc"`.
/// @param out_existed optional (may be NULL): receives whether a record was
///                    there.
#[no_mangle]
pub unsafe extern "C" fn tidelog_delete(
    db: *mut tidelog_db,
    table: *const c_char,
    key_json: *const c_char,
    out_existed: *mut bool,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { OptOut::new(out_existed, false) };
        let db = handles::db(db)?;
        // SAFETY: as above.
        let table = unsafe { str_arg(table, "table") }?;
        // SAFETY: as above.
        let key = json::key_text(unsafe { str_arg(key_json, "key_json") }?, "key_json")?;
        out.set(db.delete(table, key)?);
        Ok(())
    })
}

// ---- reads -------------------------------------------------------------------

/// Reads one record by primary key.
///
/// @param db       a database handle.
/// @param table    table name.
/// @param key_json the primary key as JSON: `42` or `"abc"`.
/// @param out_json receives the record as a JSON object with
///                 `__createdtime__` and `__updatedtime__` (ms since the
///                 epoch), or NULL if there is no such record (the status
///                 is still TIDELOG_OK). Free it with tidelog_string_free().
/// @return TIDELOG_OK, TIDELOG_NOT_FOUND (no such table), TIDELOG_INVALID_INPUT
///         (bad key), ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_get(
    db: *mut tidelog_db,
    table: *const c_char,
    key_json: *const c_char,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let db = handles::db(db)?;
        // SAFETY: as above.
        let table = unsafe { str_arg(table, "table") }?;
        // SAFETY: as above.
        let key = json::key_text(unsafe { str_arg(key_json, "key_json") }?, "key_json")?;
        if let Some(r) = db.get(table, key)? {
            out.set(new_string(json::record(&r))?);
        }
        Ok(())
    })
}

/// Reads several records by primary key.
///
/// @param db        a database handle.
/// @param table     table name.
/// @param keys_json a JSON array of keys, e.g. `[1, 2, "x"]`.
/// @param out_json  receives a JSON array with, per key in order, the record
///                  or `null`. Free it with tidelog_string_free().
#[no_mangle]
pub unsafe extern "C" fn tidelog_get_many(
    db: *mut tidelog_db,
    table: *const c_char,
    keys_json: *const c_char,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let db = handles::db(db)?;
        // SAFETY: as above.
        let table = unsafe { str_arg(table, "table") }?;
        // SAFETY: as above.
        let keys = json::keys(&unsafe { json_arg(keys_json, "keys_json") }?)?;
        let rs = db.get_many(table, &keys)?;
        out.set(new_string(json::maybe_records(&rs))?);
        Ok(())
    })
}

/// Reads records in primary-key order (integers before strings) within a
/// key range.
///
/// @param db         a database handle.
/// @param table      table name.
/// @param range_json NULL for the whole table, or `{"gt"|"gte": key,
///                   "lt"|"lte": key, "reverse": false, "limit": n}` (each
///                   optional).
/// @param out_json   receives a JSON array of records. Free it with
///                   tidelog_string_free().
#[no_mangle]
pub unsafe extern "C" fn tidelog_scan(
    db: *mut tidelog_db,
    table: *const c_char,
    range_json: *const c_char,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let db = handles::db(db)?;
        // SAFETY: as above.
        let table = unsafe { str_arg(table, "table") }?;
        // SAFETY: as above.
        let range = json::RangeJson::parse(
            unsafe { opt_json_arg(range_json, "range_json") }?,
            "scan range",
        )?;
        let opts = ScanOptions {
            start: json::key_bound(range.lower())?,
            end: json::key_bound(range.upper())?,
            reverse: range.reverse,
            limit: range.limit,
        };
        out.set(new_string(json::records(&db.scan(table, &opts)?))?);
        Ok(())
    })
}

/// Finds records by an indexed attribute (or the primary key) within a
/// range, in index order. A record whose attribute is an array matches if
/// any element does.
///
/// @param db         a database handle.
/// @param table      table name.
/// @param attribute  an indexed attribute, or the primary key attribute.
/// @param range_json NULL for every record with the attribute, or
///                   `{"gt"|"gte": value, "lt"|"lte": value, "limit": n}`
///                   (values are JSON scalars). `"reverse"` is not supported.
/// @param out_json   receives a JSON array of records. Free it with
///                   tidelog_string_free().
/// @return TIDELOG_OK, TIDELOG_INVALID_INPUT (attribute not indexed, bad
///         bound), TIDELOG_NOT_FOUND (no such table), ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_find(
    db: *mut tidelog_db,
    table: *const c_char,
    attribute: *const c_char,
    range_json: *const c_char,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let db = handles::db(db)?;
        // SAFETY: as above.
        let table = unsafe { str_arg(table, "table") }?;
        // SAFETY: as above.
        let attribute = unsafe { str_arg(attribute, "attribute") }?;
        // SAFETY: as above.
        let range = json::RangeJson::parse(
            unsafe { opt_json_arg(range_json, "range_json") }?,
            "find range",
        )?;
        if range.reverse {
            return Err(Fail::invalid(
                "find range: `reverse` is only supported by scan",
            ));
        }
        let rs = db.find(table, attribute, range.lower(), range.upper(), range.limit)?;
        out.set(new_string(json::records(&rs))?);
        Ok(())
    })
}

/// Finds records whose indexed attribute equals a value.
///
/// @param db         a database handle.
/// @param table      table name.
/// @param attribute  an indexed attribute, or the primary key attribute.
/// @param value_json the value as JSON (a scalar), e.g. `"s-7"` or `21`.
/// @param out_json   receives a JSON array of records. Free it with
///                   tidelog_string_free().
#[no_mangle]
pub unsafe extern "C" fn tidelog_find_eq(
    db: *mut tidelog_db,
    table: *const c_char,
    attribute: *const c_char,
    value_json: *const c_char,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let db = handles::db(db)?;
        // SAFETY: as above.
        let table = unsafe { str_arg(table, "table") }?;
        // SAFETY: as above.
        let attribute = unsafe { str_arg(attribute, "attribute") }?;
        // SAFETY: as above.
        let value = unsafe { json_arg(value_json, "value_json") }?;
        let rs = db.find_eq(table, attribute, &value)?;
        out.set(new_string(json::records(&rs))?);
        Ok(())
    })
}

/// Counts the live records of a table.
///
/// @param db        a database handle.
/// @param table     table name.
/// @param out_count receives the count (0 on failure).
#[no_mangle]
pub unsafe extern "C" fn tidelog_count(
    db: *mut tidelog_db,
    table: *const c_char,
    out_count: *mut u64,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { Out::new(out_count, "out_count", 0) }?;
        let db = handles::db(db)?;
        // SAFETY: as above.
        let table = unsafe { str_arg(table, "table") }?;
        out.set(db.count(table)?);
        Ok(())
    })
}

// ---- transaction log -------------------------------------------------------

/// Where the transaction log starts and ends.
///
/// @param db        a database handle.
/// @param out_first receives the oldest sequence still in the log (`last + 1`
///                  when it is empty).
/// @param out_last  receives the newest committed sequence (0 before the
///                  first commit).
#[no_mangle]
pub unsafe extern "C" fn tidelog_log_bounds(
    db: *mut tidelog_db,
    out_first: *mut u64,
    out_last: *mut u64,
) -> tidelog_status {
    guard(|| {
        // SAFETY: out pointers follow the header contract.
        let first = unsafe { Out::new(out_first, "out_first", 0) }?;
        // SAFETY: as above.
        let last = unsafe { Out::new(out_last, "out_last", 0) }?;
        let b = handles::db(db)?.log_bounds()?;
        first.set(b.first);
        last.set(b.last);
        Ok(())
    })
}

/// Reads the transaction log from a sequence number on, oldest first.
///
/// Each entry: `{"seq": n, "origin": <u64>, "stamp": {"time": <u64>,
/// "node": <u64>}, "stamp_ms": ms, "local": bool, "logged_ms": ms,
/// "writes": [{"table": "t", "key": k, "op": "put", "record": {...}} or
/// {"table": "t", "key": k, "op": "delete", "record": null}]}`.
/// `seq`: this instance's log sequence number; `origin`: node id of the
/// instance where the transaction was first committed (= `stamp.node`);
/// `stamp`: its version stamp, the same on every replica (`time`: hybrid
/// logical clock, ms since the epoch << 16 | counter); `stamp_ms`: the
/// stamp's milliseconds (the records' `__updatedtime__`); `local`: whether
/// this instance wrote it (false: applied from a peer); `logged_ms`: when
/// this instance wrote it to its log (what tidelog_read_log_since()
/// compares); `record`: the record after the write, with
/// `__createdtime__`/`__updatedtime__`. 64-bit values are exact JSON
/// integers: read them as integers, not doubles. Python and Node hand out
/// the same fields (tidelog_core::view::LogEntryView).
///
/// @param db       a database handle.
/// @param from_seq first sequence number wanted.
/// @param limit    most entries to return.
/// @param out_json receives a JSON array of entries. Free it with
///                 tidelog_string_free().
#[no_mangle]
pub unsafe extern "C" fn tidelog_read_log(
    db: *mut tidelog_db,
    from_seq: u64,
    limit: u32,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: out pointer follows the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let db = handles::db(db)?;
        let entries = db.read_log(from_seq, limit as usize)?;
        out.set(new_string(json::log_entries(&entries, db.node_id())?)?);
        Ok(())
    })
}

/// Reads the transaction log from a point in time on (entries this
/// instance committed at or after `since_ms`), oldest first; entries as in
/// tidelog_read_log().
///
/// @param db       a database handle.
/// @param since_ms milliseconds since the epoch.
/// @param limit    most entries to return.
/// @param out_json receives a JSON array of entries. Free it with
///                 tidelog_string_free().
#[no_mangle]
pub unsafe extern "C" fn tidelog_read_log_since(
    db: *mut tidelog_db,
    since_ms: u64,
    limit: u32,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: out pointer follows the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let db = handles::db(db)?;
        // Stamps keep milliseconds in 48 bits; later times would wrap around
        // in the core's conversion and select everything instead of nothing.
        let since_ms = since_ms.min((1 << 48) - 1);
        let entries = db.read_log_since(since_ms, limit as usize)?;
        out.set(new_string(json::log_entries(&entries, db.node_id())?)?);
        Ok(())
    })
}
