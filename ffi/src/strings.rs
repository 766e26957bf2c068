//! Strings handed out to C. They are real allocations (the hot read path
//! hands out one per call): a box with a magic number, checked on every use
//! and overwritten on free.

use std::ffi::c_char;

use crate::guard::{guard, guard_void, str_arg, Fail, FfiResult, Out};
use crate::tidelog_status::{self, *};

const STRING_LIVE: u64 = 0x7469_6465_6c6f_6753; // "tidelogS"
const STRING_DEAD: u64 = 0xdead_dead_dead_dead;

/// A NUL-terminated UTF-8 string handed out by tidelog (opaque). Read it
/// with tidelog_string_data() and tidelog_string_len(); release it with
/// tidelog_string_free(), never with free().
pub struct tidelog_string {
    magic: u64,
    /// UTF-8 text plus one terminating NUL, and no other NUL.
    text: Vec<u8>,
}

/// Hands a string out to C.
pub(crate) fn new_string(text: String) -> FfiResult<*mut tidelog_string> {
    // Like CString::new, minus its shrink-to-fit reallocation.
    let mut text = text.into_bytes();
    if text.contains(&0) {
        return Err(Fail::new(
            TIDELOG_CORRUPT,
            "the result contains a NUL character and cannot be returned as a C string",
        ));
    }
    text.push(0);
    Ok(Box::into_raw(Box::new(tidelog_string {
        magic: STRING_LIVE,
        text,
    })))
}

/// # Safety
/// `s` is NULL or a pointer tidelog handed out and that was not freed.
unsafe fn live_string<'a>(s: *const tidelog_string) -> Option<&'a tidelog_string> {
    if s.is_null() || !s.is_aligned() {
        return None;
    }
    // SAFETY: non-NULL and aligned; by the contract it is a live
    // tidelog_string (the magic check below catches most other pointers).
    let r = unsafe { &*s };
    (r.magic == STRING_LIVE).then_some(r)
}

/// The text of a string handed out by tidelog: NUL-terminated UTF-8,
/// valid until tidelog_string_free() on it. Never fails.
///
/// @param s a string from tidelog, or NULL.
/// @return its text; NULL if `s` is NULL or not a live tidelog string.
#[no_mangle]
pub unsafe extern "C" fn tidelog_string_data(s: *const tidelog_string) -> *const c_char {
    // SAFETY: the caller passes NULL or a live string (header contract).
    match unsafe { live_string(s) } {
        Some(r) => r.text.as_ptr().cast(),
        None => std::ptr::null(),
    }
}

/// The length in bytes of a string handed out by tidelog, without the
/// terminating NUL. Never fails.
///
/// @param s a string from tidelog, or NULL.
/// @return its length; 0 if `s` is NULL or not a live tidelog string.
#[no_mangle]
pub unsafe extern "C" fn tidelog_string_len(s: *const tidelog_string) -> usize {
    // SAFETY: the caller passes NULL or a live string (header contract).
    match unsafe { live_string(s) } {
        Some(r) => r.text.len() - 1,
        None => 0,
    }
}

/// Frees a string handed out by tidelog. NULL is accepted and ignored.
/// A pointer that is not a live tidelog string is ignored when recognised
/// as such (its magic number is checked), but freeing the same string twice
/// is undefined behaviour like any double free: set your pointer to NULL.
///
/// @param s a string from tidelog, or NULL.
#[no_mangle]
pub unsafe extern "C" fn tidelog_string_free(s: *mut tidelog_string) {
    guard_void(|| {
        // SAFETY: the caller passes NULL or a live string (header contract).
        if unsafe { live_string(s) }.is_none() {
            return;
        }
        // SAFETY: `s` is a live string, so it came from Box::into_raw in
        // `new_string` and nothing else owns it; poison it, then drop it.
        unsafe {
            std::ptr::addr_of_mut!((*s).magic).write_volatile(STRING_DEAD);
            drop(Box::from_raw(s));
        }
    })
}

/// Takes back a string C handed to tidelog (a resolver's answer): its text,
/// with the string freed. `None` for NULL or a pointer that is not a live
/// tidelog string.
///
/// # Safety
/// `s` is NULL or a pointer that came from tidelog and nobody else frees.
pub(crate) unsafe fn take_string(s: *mut tidelog_string) -> Option<String> {
    // SAFETY: forwarded contract.
    unsafe { live_string(s) }?;
    // SAFETY: `s` is a live string, so it came from Box::into_raw in
    // `new_string` and, by the contract, only we own it now.
    let mut b = unsafe { Box::from_raw(s) };
    b.magic = STRING_DEAD;
    let mut text = std::mem::take(&mut b.text);
    text.pop();
    // Made from a &str by tidelog_string_new() or from a String by
    // `new_string`, so it is UTF-8; checked anyway rather than trusted.
    String::from_utf8(text).ok()
}

/// Makes a tidelog string holding a copy of `text`: the way to hand text
/// to tidelog where a call says it takes a ::tidelog_string (a conflict
/// resolver's record to write, see ::tidelog_resolver_fn). Free it with
/// tidelog_string_free() unless you handed it over.
///
/// @param text NUL-terminated UTF-8, copied (the caller keeps it).
/// @param out  receives the new string (NULL on failure).
/// @return TIDELOG_OK, TIDELOG_NULL_ARGUMENT, TIDELOG_INVALID_UTF8.
#[no_mangle]
pub unsafe extern "C" fn tidelog_string_new(
    text: *const c_char,
    out: *mut *mut tidelog_string,
) -> tidelog_status {
    guard(|| {
        // SAFETY: pointer arguments follow the header contract.
        let out = unsafe { Out::new(out, "out", std::ptr::null_mut()) }?;
        // SAFETY: as above.
        let text = unsafe { str_arg(text, "text") }?;
        out.set(new_string(text.to_string())?);
        Ok(())
    })
}
