//! The C ABI of govshare: `libgovshare` for host systems written in C, C++, Java, C# or Go.
//!
//! A thin layer over [`govshare_core`]: every function converts its arguments, calls core and
//! converts the outcome into a [`gs_status`]; there is no logic of its own, so a session reached
//! through C obeys exactly the access control, masks, scopes and audit of a Rust session.
//! The header `ffi/include/govshare.h` is generated from this file by cbindgen and committed;
//! a test fails when it drifts.
//!
//! Conventions, for every function:
//! - Handles ([`gs_engine`], [`gs_session`]) are opaque tokens checked against a registry on
//!   every call and never reused: a NULL, closed or never-opened handle gives
//!   [`gs_status::GS_INVALID_HANDLE`], not a crash.
//! - Strings in are NUL-terminated UTF-8, borrowed for the call; NULL or invalid UTF-8 gives
//!   [`gs_status::GS_INVALID_ARGUMENT`]. Strings out (`char **out_json`) are owned by the caller
//!   and freed with [`gs_string_free`].
//! - Every fallible function returns a status; the message of a failure is kept for the
//!   calling thread, on the handle it was called with ([`gs_engine_errmsg`],
//!   [`gs_session_errmsg`]) and in [`gs_last_error`].
//! - No panic crosses the boundary: one is caught and reported as [`gs_status::GS_PANIC`].
//! - All handles may be used from several threads at once.

// The C boundary cannot be crossed without raw pointers; every `unsafe` here is an
// `extern "C"` entry point whose contract is in its `# Safety` section.
#![allow(unsafe_code)]
// The exported types carry their C names (`gs_engine`), which the header shows as they are.
#![allow(non_camel_case_types)]

mod admin;
mod handles;
mod session;
mod store;
mod workflow;

use std::ffi::CStr;

use govshare_core::error::{Error, ErrorCode};

pub use admin::*;
pub use session::*;
pub use store::*;

/// The outcome of a call. Values are part of the ABI: they are never renumbered or reused.
#[repr(i32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum gs_status {
    /// Success.
    GS_OK = 0,
    /// A NULL pointer, a string that is not UTF-8, malformed JSON, or an out-of-range value.
    GS_INVALID_ARGUMENT = 1,
    /// The handle is NULL, already closed, or was never returned by govshare.
    GS_INVALID_HANDLE = 2,
    /// The request is malformed in govshare's terms (bad SQL, an unknown column, invalid data).
    GS_INVALID_INPUT = 3,
    /// The policy refuses; the message says what is missing and how access is obtained.
    GS_ACCESS_DENIED = 4,
    /// A named thing (store, dataset, user, grant, file) does not exist.
    GS_NOT_FOUND = 5,
    /// A strict load found invalid rows and committed nothing.
    GS_REJECTED = 6,
    /// Another writer holds the store's lock; retry later.
    GS_LOCKED = 7,
    /// The store or audit trail is corrupt or fails verification.
    GS_INTEGRITY = 8,
    /// A file-system error.
    GS_IO = 9,
    /// Any other failure inside the engine (Arrow, Parquet, serialisation).
    GS_INTERNAL = 10,
    /// A bug: govshare panicked. The call had no effect beyond what the message says.
    GS_PANIC = 11,
    /// The query was interrupted by its caller.
    GS_INTERRUPTED = 12,
    /// The query was accepted but failed while it ran, by its own doing (a division by zero,
    /// a failing cast).
    GS_QUERY_FAILED = 13,
    /// The query hit a resource limit (memory, recursion depth, time).
    GS_LIMIT_EXCEEDED = 14,
}

/// An open store with its query runtime.
///
/// Opened by [`gs_engine_open`], destroyed by [`gs_engine_close`]. Thread-safe: any number of
/// threads may use one engine at once. Sessions opened from it stay usable after it is closed.
pub struct gs_engine {
    _opaque: [u8; 0],
}

/// A real-name user acting for a declared purpose; every query re-checks the policy.
///
/// Opened by [`gs_session_open`], destroyed by [`gs_session_close`] (which records the
/// session's end on the audit trail). Thread-safe.
pub struct gs_session {
    _opaque: [u8; 0],
}

impl gs_status {
    /// The status's name as in the header (`"GS_ACCESS_DENIED"`).
    pub fn name(self) -> &'static CStr {
        match self {
            gs_status::GS_OK => c"GS_OK",
            gs_status::GS_INVALID_ARGUMENT => c"GS_INVALID_ARGUMENT",
            gs_status::GS_INVALID_HANDLE => c"GS_INVALID_HANDLE",
            gs_status::GS_INVALID_INPUT => c"GS_INVALID_INPUT",
            gs_status::GS_ACCESS_DENIED => c"GS_ACCESS_DENIED",
            gs_status::GS_NOT_FOUND => c"GS_NOT_FOUND",
            gs_status::GS_REJECTED => c"GS_REJECTED",
            gs_status::GS_LOCKED => c"GS_LOCKED",
            gs_status::GS_INTEGRITY => c"GS_INTEGRITY",
            gs_status::GS_IO => c"GS_IO",
            gs_status::GS_INTERNAL => c"GS_INTERNAL",
            gs_status::GS_PANIC => c"GS_PANIC",
            gs_status::GS_INTERRUPTED => c"GS_INTERRUPTED",
            gs_status::GS_QUERY_FAILED => c"GS_QUERY_FAILED",
            gs_status::GS_LIMIT_EXCEEDED => c"GS_LIMIT_EXCEEDED",
        }
    }
}

/// The status a core error is reported with (the mapping every entry point uses).
pub fn status_of(e: &Error) -> gs_status {
    status_of_code(e.code())
}

/// The status of an error code: the same number, by construction (the core's
/// [`ErrorCode`] is the one table; this match is exhaustive, so a new code needs a status).
pub fn status_of_code(code: ErrorCode) -> gs_status {
    match code {
        ErrorCode::InvalidInput => gs_status::GS_INVALID_INPUT,
        ErrorCode::AccessDenied => gs_status::GS_ACCESS_DENIED,
        ErrorCode::NotFound => gs_status::GS_NOT_FOUND,
        ErrorCode::Rejected => gs_status::GS_REJECTED,
        ErrorCode::Locked => gs_status::GS_LOCKED,
        ErrorCode::Integrity => gs_status::GS_INTEGRITY,
        ErrorCode::Io => gs_status::GS_IO,
        ErrorCode::Internal => gs_status::GS_INTERNAL,
        ErrorCode::Interrupted => gs_status::GS_INTERRUPTED,
        ErrorCode::QueryFailed => gs_status::GS_QUERY_FAILED,
        ErrorCode::LimitExceeded => gs_status::GS_LIMIT_EXCEEDED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    /// The committed header is what cbindgen generates from this file today.
    #[test]
    fn header_is_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
        let mut generated = Vec::new();
        cbindgen::Builder::new()
            .with_crate(dir)
            .with_config(config)
            .generate()
            .expect("generate header")
            .write(&mut generated);
        let path = dir.join("include/govshare.h");
        if std::env::var_os("GOVSHARE_BLESS").is_some() {
            std::fs::write(&path, &generated).expect("write header");
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "ffi/include/govshare.h is out of date; regenerate with \
             GOVSHARE_BLESS=1 cargo test -p govshare-ffi header_is_current"
        );
    }

    /// Each core error code is reported under the C status of the same number, and no two
    /// codes share a status: the core's table is the C table.
    #[test]
    fn every_error_code_has_its_own_status_of_the_same_number() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let status = status_of_code(code);
            assert_eq!(status as i32, code as i32, "{code:?}");
            assert!(seen.insert(status as i32), "{code:?} shares a status");
        }
    }

    #[test]
    fn misuse_gives_codes_not_crashes() {
        // SAFETY: NULL and bogus handles are part of the contract being tested.
        unsafe {
            let mut e: *mut gs_engine = std::ptr::null_mut();
            assert_eq!(
                gs_engine_open(std::ptr::null(), &mut e),
                gs_status::GS_INVALID_ARGUMENT
            );
            assert!(e.is_null());
            let bogus = 0xdead_0000usize as *mut gs_engine;
            let mut s: *mut gs_session = std::ptr::null_mut();
            assert_eq!(
                gs_session_open(bogus, c"u".as_ptr(), c"p".as_ptr(), &mut s),
                gs_status::GS_INVALID_HANDLE
            );
            assert_eq!(gs_engine_close(bogus), gs_status::GS_INVALID_HANDLE);
            assert_eq!(gs_engine_close(std::ptr::null_mut()), gs_status::GS_OK);
            let msg = CStr::from_ptr(gs_last_error()).to_string_lossy();
            assert!(msg.contains("closed or was never opened"), "{msg}");
            let bad = [0xffu8, 0xfe, 0];
            assert_eq!(
                gs_engine_open(bad.as_ptr().cast(), &mut e),
                gs_status::GS_INVALID_ARGUMENT
            );
            let missing = tempfile::tempdir().expect("tmp");
            let p =
                CString::new(missing.path().join("nope").to_string_lossy().as_bytes()).expect("c");
            assert_eq!(gs_engine_open(p.as_ptr(), &mut e), gs_status::GS_NOT_FOUND);
        }
    }
}
