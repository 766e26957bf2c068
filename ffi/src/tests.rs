//! Rust-side checks of the boundary. The C suite (ffi/tests/c) exercises
//! every function from C; these guard the build itself.

use std::ffi::{CStr, CString};
use std::ptr;

use crate::*;

/// The committed header must be exactly what cbindgen generates now.
#[test]
fn header_is_current() {
    let fresh = include_str!(concat!(env!("OUT_DIR"), "/tidelog.h"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../include/tidelog.h");
    let committed = std::fs::read_to_string(path).expect("include/tidelog.h exists");
    assert!(
        committed == fresh,
        "include/tidelog.h is out of date with ffi/src: regenerate it with \
         `TIDELOG_UPDATE_HEADER=1 cargo build -p tidelog-ffi` and commit it"
    );
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn last_error() -> String {
    let p = tidelog_last_error();
    assert!(!p.is_null());
    // SAFETY: non-NULL last-error text is NUL-terminated and valid until the
    // next call on this thread.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[test]
fn panic_becomes_a_status_and_no_unwind_crosses() {
    assert_eq!(tidelog_selftest_panic(), tidelog_status::TIDELOG_PANIC);
    assert!(last_error().contains("deliberate panic"));
    assert_eq!(tidelog_abi_version(), TIDELOG_ABI_VERSION);
    assert!(tidelog_last_error().is_null() || !last_error().is_empty());
}

#[test]
fn roundtrip_and_handles_are_checked() {
    let dir = std::env::temp_dir().join(format!("tidelog-ffi-unit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut db = ptr::null_mut();
    let opts = c(r#"{"node_name": "n1"}"#);
    let d = c(dir.to_str().unwrap());
    // SAFETY: valid C strings and out pointers for every call below.
    unsafe {
        assert_eq!(
            tidelog_open(d.as_ptr(), opts.as_ptr(), &mut db),
            tidelog_status::TIDELOG_OK
        );
        assert_eq!(
            tidelog_create_table(db, c("t").as_ptr(), ptr::null()),
            tidelog_status::TIDELOG_OK
        );
        let mut seq = 0;
        assert_eq!(
            tidelog_upsert(
                db,
                c("t").as_ptr(),
                c(r#"{"id":1,"v":2}"#).as_ptr(),
                &mut seq
            ),
            tidelog_status::TIDELOG_OK
        );
        assert_eq!(seq, 1);
        let mut s = ptr::null_mut();
        assert_eq!(
            tidelog_get(db, c("t").as_ptr(), c("1").as_ptr(), &mut s),
            tidelog_status::TIDELOG_OK
        );
        let text = CStr::from_ptr(tidelog_string_data(s)).to_str().unwrap();
        assert!(text.contains("\"v\":2") && text.contains("__updatedtime__"));
        assert_eq!(tidelog_string_len(s), text.len());
        tidelog_string_free(s);

        tidelog_db_free(db);
        assert_eq!(tidelog_flush(db), tidelog_status::TIDELOG_INVALID_HANDLE);
        tidelog_db_free(db); // twice is harmless
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The fast key reader accepts exactly what the JSON path accepts.
#[test]
fn key_text_agrees_with_json() {
    let cases = [
        "0",
        "-0",
        "7",
        "-42",
        "123456789012345678",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "007",
        "-",
        "1.5",
        "1e3",
        " 1",
        "\"abc\"",
        "\"\"",
        "\"a\\\"b\"",
        "\"é€\"",
        "\"tab\there\"",
        "\"unterminated",
        "true",
        "null",
        "[1]",
        "{}",
        "",
        "\"a\"\"b\"",
    ];
    for text in cases {
        let fast = crate::json::key_text(text, "k").map_err(|f| f.status);
        let slow = serde_json::from_str::<serde_json::Value>(text)
            .map_err(|_| tidelog_status::TIDELOG_INVALID_JSON)
            .and_then(|v| crate::json::key(&v, "k").map_err(|f| f.status));
        assert_eq!(fast, slow, "{text:?}");
    }
}
