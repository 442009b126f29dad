//! Library-level calls and the engine handle: status names, version, last error, strings,
//! creating a store, opening and closing an engine.

use std::ffi::{CStr, CString, c_char};

use govshare_core::Engine;

use crate::handles::*;
// The whole C surface in scope: the types, and the other entry points the docs link to.
use crate::*;

/// The name of a status (`"GS_ACCESS_DENIED"`), for logs. Never NULL; a static string.
#[unsafe(no_mangle)]
pub extern "C" fn gs_status_name(status: gs_status) -> *const c_char {
    status.name().as_ptr()
}

/// The library version (`"0.1.0"`). Never NULL; a static string.
#[unsafe(no_mangle)]
pub extern "C" fn gs_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

/// The message of the calling thread's last failed call (any function), or `""` when it has
/// had none. This is where failures without a handle (e.g. of [`gs_engine_open`]) are read.
///
/// Borrowed: valid until the calling thread's next failing govshare call. Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn gs_last_error() -> *const c_char {
    // The CString stays in this thread's slot until the next failure replaces it.
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// Free a string returned through a `char **` out-parameter. NULL is accepted and ignored.
///
/// # Safety
/// `s` is NULL or a string govshare returned and that has not been freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: created by `CString::into_raw` in `put_string`, freed once per contract.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// Create an empty store at `path` (directories are created) with its first platform
/// administrator, `founder_json` = `{"user", "name", "department", "department_name",
/// "region"}`; every later act is done by a user that administrator (or another) adds. On a
/// store already there this succeeds only when the founder is one of its active platform
/// administrators. Open it with [`gs_engine_open`].
///
/// # Safety
/// `path` and `founder_json` are NULL or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_store_init(
    path: *const c_char,
    founder_json: *const c_char,
) -> gs_status {
    run(None, || {
        // SAFETY: per contract.
        let (path, founder) = unsafe { (arg(path, "path")?, arg(founder_json, "founder_json")?) };
        let founder: govshare_core::access::policy::Founder = json_arg(founder, "founder_json")?;
        govshare_core::Store::init(path, &founder)?;
        Ok(())
    })
}

/// Open the store at `path` and write the engine handle to `*out_engine`.
///
/// On failure `*out_engine` is set to NULL and the message is in [`gs_last_error`]
/// (`GS_NOT_FOUND` when there is no store at `path`). Destroy the engine with
/// [`gs_engine_close`]. Thread-safe.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out_engine` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_open(
    path: *const c_char,
    out_engine: *mut *mut gs_engine,
) -> gs_status {
    run(None, || {
        non_null(out_engine, "out_engine")?;
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { *out_engine = std::ptr::null_mut() };
        // SAFETY: per contract.
        let path = unsafe { arg(path, "path") }?;
        let engine = Engine::open(path)?;
        let token = ENGINES.insert(EngineHandle {
            engine,
            messages: Messages::default(),
        })?;
        // SAFETY: as above.
        unsafe { *out_engine = token as *mut gs_engine };
        Ok(())
    })
}

/// Close an engine handle. NULL is accepted (`GS_OK`); a handle already closed gives
/// `GS_INVALID_HANDLE`. Sessions opened from it remain valid until they are closed; messages
/// borrowed from [`gs_engine_errmsg`] become invalid.
///
/// # Safety
/// None beyond passing a value previously returned by govshare or NULL; other values are
/// detected and refused.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_close(engine: *mut gs_engine) -> gs_status {
    if engine.is_null() {
        return gs_status::GS_OK;
    }
    run(None, || match ENGINES.remove(engine as usize)? {
        Some(_) => Ok(()),
        None => Err(Failure {
            status: gs_status::GS_INVALID_HANDLE,
            message: "engine handle is closed or was never opened".into(),
        }),
    })
}

/// The message of the calling thread's last failed call on `engine`, or `""`.
///
/// Borrowed: valid until the calling thread's next call on `engine` or until `engine` is
/// closed. Never NULL (a static message for a NULL or closed handle).
#[unsafe(no_mangle)]
pub extern "C" fn gs_engine_errmsg(engine: *const gs_engine) -> *const c_char {
    match ENGINES.get(engine as usize) {
        Some(h) => h.messages.get(),
        None => c"invalid engine handle (NULL or closed)".as_ptr(),
    }
}
