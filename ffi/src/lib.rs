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

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread::ThreadId;

use arrow::array::RecordBatchIterator;
use arrow::ffi_stream::FFI_ArrowArrayStream;
use govshare_core::access::policy::{Department, GrantRequest, PrincipalStatus, User};
use govshare_core::audit::{Checkpoint, Verdict};
use govshare_core::engine::QueryStreamArrow;
use govshare_core::error::{Error, ErrorCode};
use govshare_core::ingest::HandoverInfo;
use govshare_core::{Engine, Session};

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

/// A failure on its way out: status and message.
struct Failure {
    status: gs_status,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            status: status_of(&e),
            message: e.to_string(),
        }
    }
}

fn bad_arg(message: impl Into<String>) -> Failure {
    Failure {
        status: gs_status::GS_INVALID_ARGUMENT,
        message: message.into(),
    }
}

/// The last message per thread, kept on a handle. Old entries of other threads stay until the
/// handle is closed; a thread only ever reads its own.
#[derive(Default)]
struct Messages(Mutex<HashMap<ThreadId, CString>>);

impl Messages {
    fn set(&self, msg: Option<&CString>) {
        if let Ok(mut m) = self.0.lock() {
            let id = std::thread::current().id();
            match msg {
                Some(msg) => m.insert(id, msg.clone()),
                None => m.remove(&id),
            };
        }
    }

    fn get(&self) -> *const c_char {
        let Ok(m) = self.0.lock() else {
            return c"message store poisoned".as_ptr();
        };
        // The CString lives in the map until this thread's next call on the handle or the
        // handle's close, which is the lifetime the header promises.
        m.get(&std::thread::current().id())
            .map_or(c"".as_ptr(), |s| s.as_ptr())
    }
}

struct EngineHandle {
    engine: Engine,
    messages: Messages,
}

struct SessionHandle {
    session: Session,
    messages: Messages,
}

/// Live handles by token. Tokens count up and are never reused, so a stale handle can never
/// alias a new one.
struct Registry<T> {
    live: Mutex<HashMap<usize, Arc<T>>>,
}

static NEXT_TOKEN: AtomicUsize = AtomicUsize::new(1);
static ENGINES: LazyLock<Registry<EngineHandle>> = LazyLock::new(Registry::new);
static SESSIONS: LazyLock<Registry<SessionHandle>> = LazyLock::new(Registry::new);

impl<T> Registry<T> {
    fn new() -> Self {
        Registry {
            live: Mutex::new(HashMap::new()),
        }
    }

    fn insert(&self, value: T) -> Result<usize, Failure> {
        // Step by 16 so tokens look like aligned pointers to tools that inspect them.
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed) * 16;
        self.lock()?.insert(token, Arc::new(value));
        Ok(token)
    }

    fn get(&self, token: usize) -> Option<Arc<T>> {
        self.live.lock().ok()?.get(&token).cloned()
    }

    fn remove(&self, token: usize) -> Result<Option<Arc<T>>, Failure> {
        Ok(self.lock()?.remove(&token))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<usize, Arc<T>>>, Failure> {
        self.live.lock().map_err(|_| Failure {
            status: gs_status::GS_INTERNAL,
            message: "handle registry poisoned".into(),
        })
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn to_cstring(s: String) -> CString {
    // Interior NULs cannot be represented; replace them rather than lose the message.
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

/// Run one entry point: catch panics, record the message on `messages` (when the call has a
/// live handle) and in the thread's last error, return the status.
fn run(messages: Option<&Messages>, f: impl FnOnce() -> Result<(), Failure>) -> gs_status {
    let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Failure {
            status: gs_status::GS_PANIC,
            message: format!("internal error (panic): {what}"),
        })
    });
    match outcome {
        Ok(()) => {
            if let Some(m) = messages {
                m.set(None);
            }
            gs_status::GS_OK
        }
        Err(f) => {
            let msg = to_cstring(f.message);
            if let Some(m) = messages {
                m.set(Some(&msg));
            }
            LAST_ERROR.with(|l| *l.borrow_mut() = msg);
            f.status
        }
    }
}

/// Borrow a C string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for the call.
unsafe fn arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(bad_arg(format!("{name} is NULL")));
    }
    // SAFETY: non-null and NUL-terminated per this function's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|e| bad_arg(format!("{name} is not valid UTF-8: {e}")))
}

/// Like [`arg`], but NULL means "not given".
///
/// # Safety
/// As [`arg`].
unsafe fn opt_arg<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract.
        unsafe { arg(p, name) }.map(Some)
    }
}

fn json_arg<T: serde::de::DeserializeOwned>(text: &str, name: &str) -> Result<T, Failure> {
    serde_json::from_str(text).map_err(|e| bad_arg(format!("{name}: {e}")))
}

/// Write an owned string to an out-parameter.
///
/// # Safety
/// `out` is a valid, writable `char **` (checked non-NULL before the call's work starts).
unsafe fn put_string(out: *mut *mut c_char, value: String) {
    // SAFETY: checked by the caller.
    unsafe { *out = to_cstring(value).into_raw() };
}

/// Compute a result string and write it to `*out` (set to NULL first, so a failure leaves
/// NULL there): the shape of every `char **out_json` function.
///
/// # Safety
/// `out` is NULL (refused) or a writable `char **`.
unsafe fn json_out(
    out: *mut *mut c_char,
    f: impl FnOnce() -> Result<String, Failure>,
) -> Result<(), Failure> {
    non_null(out, "out_json")?;
    // SAFETY: checked non-NULL, writable per contract.
    unsafe { *out = std::ptr::null_mut() };
    let text = f()?;
    // SAFETY: as above.
    unsafe { put_string(out, text) };
    Ok(())
}

fn to_json(value: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| Failure {
        status: gs_status::GS_INTERNAL,
        message: format!("serialising the result: {e}"),
    })
}

fn non_null<T>(p: *mut T, name: &str) -> Result<(), Failure> {
    if p.is_null() {
        Err(bad_arg(format!("{name} is NULL")))
    } else {
        Ok(())
    }
}

fn engine_of(e: *const gs_engine) -> Result<Arc<EngineHandle>, Failure> {
    ENGINES.get(e as usize).ok_or_else(|| Failure {
        status: gs_status::GS_INVALID_HANDLE,
        message: if e.is_null() {
            "engine handle is NULL".into()
        } else {
            "engine handle is closed or was never opened".into()
        },
    })
}

fn session_of(s: *const gs_session) -> Result<Arc<SessionHandle>, Failure> {
    SESSIONS.get(s as usize).ok_or_else(|| Failure {
        status: gs_status::GS_INVALID_HANDLE,
        message: if s.is_null() {
            "session handle is NULL".into()
        } else {
            "session handle is closed or was never opened".into()
        },
    })
}

/// Run an engine entry point: resolve the handle, then `f`, recording the outcome on it.
fn with_engine(
    e: *const gs_engine,
    f: impl FnOnce(&EngineHandle) -> Result<(), Failure>,
) -> gs_status {
    match engine_of(e) {
        Ok(h) => run(Some(&h.messages), || f(&h)),
        Err(fail) => run(None, || Err(fail)),
    }
}

/// Run a session entry point: resolve the handle, then `f`, recording the outcome on it.
fn with_session(
    s: *const gs_session,
    f: impl FnOnce(&SessionHandle) -> Result<(), Failure>,
) -> gs_status {
    match session_of(s) {
        Ok(h) => run(Some(&h.messages), || f(&h)),
        Err(fail) => run(None, || Err(fail)),
    }
}

/// Export a reader as an Arrow C stream into `out`.
///
/// # Safety
/// `out` is valid for writes of one `struct ArrowArrayStream` (checked non-NULL).
unsafe fn put_stream(
    out: *mut FFI_ArrowArrayStream,
    reader: Box<dyn arrow::array::RecordBatchReader + Send>,
) {
    // SAFETY: `out` is writable per the contract; whatever it held is overwritten without
    // being released, as the Arrow C stream interface specifies for out-parameters.
    unsafe { std::ptr::write(out, FFI_ArrowArrayStream::new(reader)) };
}

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

/// Create an empty store at `path` (directories are created; a store already there is left
/// as it is). Open it with [`gs_engine_open`].
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_store_init(path: *const c_char) -> gs_status {
    run(None, || {
        // SAFETY: per contract.
        let path = unsafe { arg(path, "path") }?;
        govshare_core::Store::init(path)?;
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

/// Open a session for real-name `user` acting for `purpose` (a purpose code of their grants).
///
/// The user must exist and be active; what they may see is decided per query. On failure
/// `*out_session` is NULL and the message is on the engine. Destroy with
/// [`gs_session_close`]. Thread-safe.
///
/// # Safety
/// `user` and `purpose` are NULL or NUL-terminated strings; `out_session` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_session_open(
    engine: *mut gs_engine,
    user: *const c_char,
    purpose: *const c_char,
    out_session: *mut *mut gs_session,
) -> gs_status {
    with_engine(engine, |h| {
        non_null(out_session, "out_session")?;
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { *out_session = std::ptr::null_mut() };
        // SAFETY: per contract.
        let (user, purpose) = unsafe { (arg(user, "user")?, arg(purpose, "purpose")?) };
        let session = h.engine.session(user, purpose)?;
        let token = SESSIONS.insert(SessionHandle {
            session,
            messages: Messages::default(),
        })?;
        // SAFETY: as above.
        unsafe { *out_session = token as *mut gs_session };
        Ok(())
    })
}

/// Close a session (its end is recorded on the audit trail). NULL is accepted (`GS_OK`); a
/// handle already closed gives `GS_INVALID_HANDLE`. Streams returned by [`gs_session_query`]
/// stay valid and must still be released.
///
/// # Safety
/// None beyond passing a value previously returned by govshare or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_session_close(session: *mut gs_session) -> gs_status {
    if session.is_null() {
        return gs_status::GS_OK;
    }
    run(None, || match SESSIONS.remove(session as usize)? {
        Some(_) => Ok(()),
        None => Err(Failure {
            status: gs_status::GS_INVALID_HANDLE,
            message: "session handle is closed or was never opened".into(),
        }),
    })
}

/// The message of the calling thread's last failed call on `session`, or `""`.
///
/// Borrowed: valid until the calling thread's next call on `session` or until it is closed.
/// Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn gs_session_errmsg(session: *const gs_session) -> *const c_char {
    match SESSIONS.get(session as usize) {
        Some(h) => h.messages.get(),
        None => c"invalid session handle (NULL or closed)".as_ptr(),
    }
}

/// Run one SQL query under the session's current grants and write its result to `out_stream`
/// as an Arrow C stream.
///
/// Access is decided and the query is recorded durably on the audit trail before this
/// returns; a denial returns `GS_ACCESS_DENIED` with a message naming what is missing and
/// leaves `*out_stream` untouched. On `GS_OK` the caller owns the stream: pull batches with
/// `get_next` until it yields a released array, then call `release` (which records the
/// query's completion). The stream may be consumed on any one thread at a time.
///
/// # Safety
/// `sql` is NULL or a NUL-terminated string; `out_stream` is NULL or points to writable memory
/// for one `struct ArrowArrayStream` (its previous content is overwritten, not released).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_session_query(
    session: *mut gs_session,
    sql: *const c_char,
    out_stream: *mut FFI_ArrowArrayStream,
) -> gs_status {
    with_session(session, |h| {
        non_null(out_stream, "out_stream")?;
        // SAFETY: per contract.
        let sql = unsafe { arg(sql, "sql") }?;
        let stream = h.session.sql_stream(sql)?;
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { put_stream(out_stream, Box::new(QueryStreamArrow(stream))) };
        Ok(())
    })
}

/// The catalog as this session may see it now: a JSON array of
/// `{"dataset": name, "fields": [{"name", "type", "nullable"}]}` with only the granted
/// fields (masked fields with their masked type). Written to `*out_json` (free with
/// [`gs_string_free`]); NULL on failure.
///
/// # Safety
/// `out_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_session_catalog(
    session: *mut gs_session,
    out_json: *mut *mut c_char,
) -> gs_status {
    with_session(session, |h| {
        // SAFETY: per contract.
        unsafe { json_out(out_json, || to_json(&h.session.catalog()?)) }
    })
}

/// Add or replace a department, given as JSON
/// `{"code", "name", "region", "status": "active"|"suspended"}`; `by` is the acting user
/// (recorded). `GS_LOCKED` when another writer holds the store.
///
/// # Safety
/// `by` and `department_json` are NULL or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_upsert_department(
    engine: *mut gs_engine,
    by: *const c_char,
    department_json: *const c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract.
        let (by, json) = unsafe { (arg(by, "by")?, arg(department_json, "department_json")?) };
        let d: Department = json_arg(json, "department_json")?;
        Ok(h.engine.upsert_department(by, d)?)
    })
}

/// Suspend (`active` false) or reactivate a department.
///
/// # Safety
/// `by` and `code` are NULL or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_set_department_active(
    engine: *mut gs_engine,
    by: *const c_char,
    code: *const c_char,
    active: bool,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract.
        let (by, code) = unsafe { (arg(by, "by")?, arg(code, "code")?) };
        Ok(h.engine.set_department_status(by, code, status(active))?)
    })
}

fn status(active: bool) -> PrincipalStatus {
    if active {
        PrincipalStatus::Active
    } else {
        PrincipalStatus::Suspended
    }
}

/// Add or replace a real-name user, given as JSON `{"id", "name", "department", "roles":
/// ["consumer"|"provider_approver"|"platform_admin"|"auditor"|"coordinator"], "status"}`.
///
/// # Safety
/// `by` and `user_json` are NULL or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_upsert_user(
    engine: *mut gs_engine,
    by: *const c_char,
    user_json: *const c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract.
        let (by, json) = unsafe { (arg(by, "by")?, arg(user_json, "user_json")?) };
        let u: User = json_arg(json, "user_json")?;
        Ok(h.engine.upsert_user(by, u)?)
    })
}

/// Suspend (`active` false) or reactivate a user.
///
/// # Safety
/// `by` and `user_id` are NULL or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_set_user_active(
    engine: *mut gs_engine,
    by: *const c_char,
    user_id: *const c_char,
    active: bool,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract.
        let (by, id) = unsafe { (arg(by, "by")?, arg(user_id, "user_id")?) };
        Ok(h.engine.set_user_status(by, id, status(active))?)
    })
}

/// Grant on request (unconditional fields; `by` must be a platform admin). The request is
/// JSON: `{"consumer_dept", "users": [], "dataset", "fields": [{"field", "treatment":
/// "clear"|{"masked": "id_number"|...}}], "purpose_code", "purpose_text", "scope":
/// {"regions": null|[..], "subjects": null|[..]}, "modes": ["query"], "valid_from",
/// "valid_until"}` (RFC 3339 times). The new grant's id is written to `*out_grant_id`.
///
/// # Safety
/// `by` and `request_json` are NULL or NUL-terminated strings; `out_grant_id` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_request_grant(
    engine: *mut gs_engine,
    by: *const c_char,
    request_json: *const c_char,
    out_grant_id: *mut u64,
) -> gs_status {
    with_engine(engine, |h| {
        non_null(out_grant_id, "out_grant_id")?;
        // SAFETY: per contract.
        let (by, json) = unsafe { (arg(by, "by")?, arg(request_json, "request_json")?) };
        let r: GrantRequest = json_arg(json, "request_json")?;
        let g = h.engine.request_grant(by, r)?;
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { *out_grant_id = g.id };
        Ok(())
    })
}

/// Approve (`approve` true: a grant is created) or reject a request (JSON as in
/// [`gs_engine_request_grant`]); `by` must be the providing department's approver. A
/// rejection needs a `reason` (may be NULL when approving). `*out_grant_id` receives the new
/// grant's id, or 0 for a rejection.
///
/// # Safety
/// String arguments are NULL or NUL-terminated; `out_grant_id` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_decide_request(
    engine: *mut gs_engine,
    by: *const c_char,
    request_json: *const c_char,
    approve: bool,
    reason: *const c_char,
    out_grant_id: *mut u64,
) -> gs_status {
    with_engine(engine, |h| {
        non_null(out_grant_id, "out_grant_id")?;
        // SAFETY: per contract.
        let (by, json, reason) = unsafe {
            (
                arg(by, "by")?,
                arg(request_json, "request_json")?,
                opt_arg(reason, "reason")?.unwrap_or(""),
            )
        };
        let r: GrantRequest = json_arg(json, "request_json")?;
        let ap = h.engine.decide_request(by, r, approve, reason)?;
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { *out_grant_id = ap.grant.unwrap_or(0) };
        Ok(())
    })
}

/// Revoke a grant; sessions relying on it are refused from their next query on.
///
/// # Safety
/// `by` and `reason` are NULL or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_revoke_grant(
    engine: *mut gs_engine,
    by: *const c_char,
    grant_id: u64,
    reason: *const c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract.
        let (by, reason) = unsafe { (arg(by, "by")?, arg(reason, "reason")?) };
        Ok(h.engine.revoke_grant(by, grant_id, reason)?)
    })
}

/// The policy document (departments, users, grants, approvals) as JSON in `*out_json`
/// (free with [`gs_string_free`]).
///
/// # Safety
/// `out_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_policy(
    engine: *mut gs_engine,
    out_json: *mut *mut c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract.
        unsafe { json_out(out_json, || to_json(&h.engine.policy()?)) }
    })
}

/// Load a CSV (encoding detected) or Parquet file (by extension) into `dataset`: a full
/// replacement, or with `incremental` an upsert/delete by key (`_op` column); with `strict`
/// nothing is committed when any row is invalid (`GS_REJECTED`). `handover_json` (may be
/// NULL) is `{"provider_dept", "handover_person", "receiver", "method"}`. The load summary
/// (version, live rows, handover record, rejects file) is written as JSON to `*out_json`.
///
/// # Safety
/// String arguments are NULL or NUL-terminated; `out_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_load(
    engine: *mut gs_engine,
    dataset: *const c_char,
    path: *const c_char,
    incremental: bool,
    strict: bool,
    handover_json: *const c_char,
    out_json: *mut *mut c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract (string arguments and `out_json`).
        unsafe {
            json_out(out_json, || {
                let (dataset, path, handover) = (
                    arg(dataset, "dataset")?,
                    arg(path, "path")?,
                    opt_arg(handover_json, "handover_json")?,
                );
                let handover: HandoverInfo = match handover {
                    Some(j) => json_arg(j, "handover_json")?,
                    None => HandoverInfo::default(),
                };
                let summary = h.engine.load_file(
                    dataset,
                    std::path::Path::new(path),
                    incremental,
                    strict,
                    handover,
                )?;
                to_json(&summary)
            })
        }
    })
}

/// Verify the audit trail's hash chain, against a kept checkpoint (`{"seq", "hash"}` JSON,
/// may be NULL). The verdict is written as JSON to `*out_json` either way
/// (`{"verdict": "intact", "records", "head"}` or `{"verdict": "broken", "segment", "line",
/// "seq", "problem"}`); the status is `GS_OK` for an intact chain and `GS_INTEGRITY` for a
/// broken one.
///
/// # Safety
/// `checkpoint_json` is NULL or NUL-terminated; `out_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_audit_verify(
    engine: *mut gs_engine,
    checkpoint_json: *const c_char,
    out_json: *mut *mut c_char,
) -> gs_status {
    with_engine(engine, |h| {
        non_null(out_json, "out_json")?;
        // SAFETY: checked.
        unsafe { *out_json = std::ptr::null_mut() };
        // SAFETY: per contract.
        let cp = unsafe { opt_arg(checkpoint_json, "checkpoint_json") }?
            .map(|j| json_arg::<Checkpoint>(j, "checkpoint_json"))
            .transpose()?;
        let verdict = h.engine.verify_audit(cp.as_ref())?;
        // SAFETY: checked.
        unsafe { put_string(out_json, to_json(&verdict)?) };
        match verdict {
            Verdict::Intact { .. } => Ok(()),
            Verdict::Broken { seq, problem, .. } => Err(Failure {
                status: gs_status::GS_INTEGRITY,
                message: format!("audit trail broken at record {seq}: {problem}"),
            }),
        }
    })
}

/// The audit chain's head as checkpoint JSON `{"seq", "hash"}` in `*out_json`, for an
/// external party to keep.
///
/// # Safety
/// `out_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_audit_checkpoint(
    engine: *mut gs_engine,
    out_json: *mut *mut c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract.
        unsafe { json_out(out_json, || to_json(&h.engine.audit().checkpoint()?)) }
    })
}

/// Every recorded query that read the person or legal entity `key` (citizen ID or USCC), as a
/// JSON array of `{"query_seq", "time", "user", "department", "purpose", "dataset",
/// "version", "sql"}` in `*out_json`.
///
/// # Safety
/// `key` is NULL or NUL-terminated; `out_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_who_accessed(
    engine: *mut gs_engine,
    key: *const c_char,
    out_json: *mut *mut c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract (`key` and `out_json`).
        unsafe {
            json_out(out_json, || {
                to_json(&h.engine.who_accessed(arg(key, "key")?)?)
            })
        }
    })
}

/// Query the audit trail (table `audit_log`) with SQL as `user`: an auditor sees every
/// record, anyone else only their department's. Result as an Arrow C stream, as in
/// [`gs_session_query`].
///
/// # Safety
/// `user` and `sql` are NULL or NUL-terminated; `out_stream` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_audit_query(
    engine: *mut gs_engine,
    user: *const c_char,
    sql: *const c_char,
    out_stream: *mut FFI_ArrowArrayStream,
) -> gs_status {
    with_engine(engine, |h| {
        non_null(out_stream, "out_stream")?;
        // SAFETY: per contract.
        let (user, sql) = unsafe { (arg(user, "user")?, arg(sql, "sql")?) };
        let result = h.engine.audit_sql(user, sql)?;
        let reader = RecordBatchIterator::new(result.batches.into_iter().map(Ok), result.schema);
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { put_stream(out_stream, Box::new(reader)) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
