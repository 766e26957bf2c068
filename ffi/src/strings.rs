//! Strings handed out to C. They are real allocations (the hot read path
//! hands out one per call): a box with a magic number, checked on every use
//! and overwritten on free.

use std::ffi::c_char;

use crate::guard::{guard_void, Fail, FfiResult};
use crate::tidelog_status::*;

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
