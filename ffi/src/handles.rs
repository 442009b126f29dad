//! The plumbing every entry point shares: failures and their messages, the handle registries
//! (tokens, never reused), panic catching, and argument conversion. No access decision is made
//! here or anywhere in this crate.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread::ThreadId;

use arrow::ffi_stream::FFI_ArrowArrayStream;
use govshare_core::error::Error;
use govshare_core::{Engine, Session};

use crate::{gs_engine, gs_session, gs_status, status_of};

/// A failure on its way out: status and message.
pub(crate) struct Failure {
    pub(crate) status: gs_status,
    pub(crate) message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            status: status_of(&e),
            message: e.to_string(),
        }
    }
}

pub(crate) fn bad_arg(message: impl Into<String>) -> Failure {
    Failure {
        status: gs_status::GS_INVALID_ARGUMENT,
        message: message.into(),
    }
}

/// The last message per thread, kept on a handle. Old entries of other threads stay until the
/// handle is closed; a thread only ever reads its own.
#[derive(Default)]
pub(crate) struct Messages(Mutex<HashMap<ThreadId, CString>>);

impl Messages {
    pub(crate) fn set(&self, msg: Option<&CString>) {
        if let Ok(mut m) = self.0.lock() {
            let id = std::thread::current().id();
            match msg {
                Some(msg) => m.insert(id, msg.clone()),
                None => m.remove(&id),
            };
        }
    }

    pub(crate) fn get(&self) -> *const c_char {
        let Ok(m) = self.0.lock() else {
            return c"message store poisoned".as_ptr();
        };
        // The CString lives in the map until this thread's next call on the handle or the
        // handle's close, which is the lifetime the header promises.
        m.get(&std::thread::current().id())
            .map_or(c"".as_ptr(), |s| s.as_ptr())
    }
}

pub(crate) struct EngineHandle {
    pub(crate) engine: Engine,
    pub(crate) messages: Messages,
}

pub(crate) struct SessionHandle {
    pub(crate) session: Session,
    pub(crate) messages: Messages,
}

/// Live handles by token. Tokens count up and are never reused, so a stale handle can never
/// alias a new one.
pub(crate) struct Registry<T> {
    pub(crate) live: Mutex<HashMap<usize, Arc<T>>>,
}

pub(crate) static NEXT_TOKEN: AtomicUsize = AtomicUsize::new(1);
pub(crate) static ENGINES: LazyLock<Registry<EngineHandle>> = LazyLock::new(Registry::new);
pub(crate) static SESSIONS: LazyLock<Registry<SessionHandle>> = LazyLock::new(Registry::new);

impl<T> Registry<T> {
    pub(crate) fn new() -> Self {
        Registry {
            live: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn insert(&self, value: T) -> Result<usize, Failure> {
        // Step by 16 so tokens look like aligned pointers to tools that inspect them.
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed) * 16;
        self.lock()?.insert(token, Arc::new(value));
        Ok(token)
    }

    pub(crate) fn get(&self, token: usize) -> Option<Arc<T>> {
        self.live.lock().ok()?.get(&token).cloned()
    }

    pub(crate) fn remove(&self, token: usize) -> Result<Option<Arc<T>>, Failure> {
        Ok(self.lock()?.remove(&token))
    }

    pub(crate) fn lock(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, HashMap<usize, Arc<T>>>, Failure> {
        self.live.lock().map_err(|_| Failure {
            status: gs_status::GS_INTERNAL,
            message: "handle registry poisoned".into(),
        })
    }
}

thread_local! {
    pub(crate) static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn to_cstring(s: String) -> CString {
    // Interior NULs cannot be represented; replace them rather than lose the message.
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

/// Run one entry point: catch panics, record the message on `messages` (when the call has a
/// live handle) and in the thread's last error, return the status.
pub(crate) fn run(
    messages: Option<&Messages>,
    f: impl FnOnce() -> Result<(), Failure>,
) -> gs_status {
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
pub(crate) unsafe fn arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, Failure> {
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
pub(crate) unsafe fn opt_arg<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract.
        unsafe { arg(p, name) }.map(Some)
    }
}

pub(crate) fn json_arg<T: serde::de::DeserializeOwned>(
    text: &str,
    name: &str,
) -> Result<T, Failure> {
    serde_json::from_str(text).map_err(|e| bad_arg(format!("{name}: {e}")))
}

/// Write an owned string to an out-parameter.
///
/// # Safety
/// `out` is a valid, writable `char **` (checked non-NULL before the call's work starts).
pub(crate) unsafe fn put_string(out: *mut *mut c_char, value: String) {
    // SAFETY: checked by the caller.
    unsafe { *out = to_cstring(value).into_raw() };
}

/// Compute a result string and write it to `*out` (set to NULL first, so a failure leaves
/// NULL there): the shape of every `char **out_json` function.
///
/// # Safety
/// `out` is NULL (refused) or a writable `char **`.
pub(crate) unsafe fn json_out(
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

pub(crate) fn to_json(value: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| Failure {
        status: gs_status::GS_INTERNAL,
        message: format!("serialising the result: {e}"),
    })
}

pub(crate) fn non_null<T>(p: *mut T, name: &str) -> Result<(), Failure> {
    if p.is_null() {
        Err(bad_arg(format!("{name} is NULL")))
    } else {
        Ok(())
    }
}

pub(crate) fn engine_of(e: *const gs_engine) -> Result<Arc<EngineHandle>, Failure> {
    ENGINES.get(e as usize).ok_or_else(|| Failure {
        status: gs_status::GS_INVALID_HANDLE,
        message: if e.is_null() {
            "engine handle is NULL".into()
        } else {
            "engine handle is closed or was never opened".into()
        },
    })
}

pub(crate) fn session_of(s: *const gs_session) -> Result<Arc<SessionHandle>, Failure> {
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
pub(crate) fn with_engine(
    e: *const gs_engine,
    f: impl FnOnce(&EngineHandle) -> Result<(), Failure>,
) -> gs_status {
    match engine_of(e) {
        Ok(h) => run(Some(&h.messages), || f(&h)),
        Err(fail) => run(None, || Err(fail)),
    }
}

/// Run a session entry point: resolve the handle, then `f`, recording the outcome on it.
pub(crate) fn with_session(
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
pub(crate) unsafe fn put_stream(
    out: *mut FFI_ArrowArrayStream,
    reader: Box<dyn arrow::array::RecordBatchReader + Send>,
) {
    // SAFETY: `out` is writable per the contract; whatever it held is overwritten without
    // being released, as the Arrow C stream interface specifies for out-parameters.
    unsafe { std::ptr::write(out, FFI_ArrowArrayStream::new(reader)) };
}
