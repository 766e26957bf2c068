//! Table statistics and disk budgets.

use std::ffi::c_char;

use crate::guard::{guard, json_arg, str_arg, Out};
use crate::handles;
use crate::json;
use crate::strings::{new_string, tidelog_string};
use crate::tidelog_status;

/// A table's statistics, kept with every commit and read without a scan:
/// `{"records", "bytes", "dropped", "disk_budget_bytes"}`. `bytes` is the
/// logical size a budget limits: each live record's stored key plus its
/// JSON text; `dropped` counts records removed by `"on_full":
/// "drop_oldest"`; `disk_budget_bytes` is null without a budget.
///
/// @param db       a database handle.
/// @param table    table name.
/// @param out_json receives the JSON text; free it with tidelog_string_free().
/// @return TIDELOG_OK, TIDELOG_NOT_FOUND, ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_table_stats(
    db: *mut handles::tidelog_db,
    table: *const c_char,
    out_json: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { Out::new(out_json, "out_json", std::ptr::null_mut()) }?;
        let db = handles::db(db)?;
        // SAFETY: as above.
        let table = unsafe { str_arg(table, "table") }?;
        out.set(new_string(json::to_text(&db.table_stats(table)?)?)?);
        Ok(())
    })
}

/// Sets or removes a table's disk budget while the database runs.
///
/// A write that would take the table past its budget fails with
/// TIDELOG_STORAGE (`"on_full": "refuse"`, the default; other tables keep
/// writing, deletes still work), or removes the table's records written
/// longest ago in the same commit (`"drop_oldest"`; counted in
/// tidelog_table_stats()). A `"drop_oldest"` budget below the table's
/// bytes drops at once.
///
/// @param db          a database handle.
/// @param table       table name.
/// @param budget_json `{"disk_budget_bytes": n, "on_full": "refuse" |
///                    "drop_oldest"}`; `{"disk_budget_bytes": null}` removes
///                    the budget. 0 bytes is refused.
/// @return TIDELOG_OK, TIDELOG_NOT_FOUND, TIDELOG_INVALID_INPUT, ...
#[no_mangle]
pub unsafe extern "C" fn tidelog_set_table_budget(
    db: *mut handles::tidelog_db,
    table: *const c_char,
    budget_json: *const c_char,
) -> tidelog_status {
    guard(|| {
        let db = handles::db(db)?;
        // SAFETY: string arguments follow the header contract.
        let table = unsafe { str_arg(table, "table") }?;
        // SAFETY: as above.
        let v = unsafe { json_arg(budget_json, "budget_json") }?;
        let t = tidelog_core::options::table_options(v)?;
        db.set_table_budget(table, t.disk_budget_bytes.map(|b| (b, t.on_full)))?;
        Ok(())
    })
}
