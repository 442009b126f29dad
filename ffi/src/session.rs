//! Sessions: open and close, queries as Arrow C streams, lookups by key, verify, the session's
//! catalog.

use std::ffi::c_char;

use arrow::array::RecordBatchReader;
use arrow::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use govshare_core::access::policy::{AuthMethod, Login};
use govshare_core::engine::QueryStreamArrow;
use govshare_core::{Error, Session};

use crate::handles::*;
// The whole C surface in scope: the types, and the other entry points the docs link to.
use crate::*;

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
    // SAFETY: per contract.
    unsafe {
        open_session(engine, out_session, || {
            let (user, purpose) = (arg(user, "user")?, arg(purpose, "purpose")?);
            Ok(Login::new(user, purpose, AuthMethod::Password))
        })
    }
}

/// Open a session for a login, `login_json` = `{"user", "purpose", "system", "auth"}`:
/// `system` names the registered host system the session runs through (or null), `auth` how
/// the host authenticated the user (`"password"`, `"certificate"` or `"second_factor"`;
/// sensitive items in clear need `"second_factor"`). Otherwise as [`gs_session_open`], which
/// is this with no system and `"password"`.
///
/// # Safety
/// `login_json` is NULL or NUL-terminated; `out_session` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_session_open_as(
    engine: *mut gs_engine,
    login_json: *const c_char,
    out_session: *mut *mut gs_session,
) -> gs_status {
    // SAFETY: per contract.
    unsafe {
        open_session(engine, out_session, || {
            json_arg(arg(login_json, "login_json")?, "login_json")
        })
    }
}

/// Both session doors: NULL the out-pointer, read the login, open the session, hand out its
/// handle.
///
/// # Safety
/// `out_session` is NULL or writable; `login` reads only arguments valid per its caller's
/// contract.
unsafe fn open_session(
    engine: *mut gs_engine,
    out_session: *mut *mut gs_session,
    login: impl FnOnce() -> Result<Login, Failure>,
) -> gs_status {
    with_engine(engine, |h| {
        non_null(out_session, "out_session")?;
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { *out_session = std::ptr::null_mut() };
        let session = h.engine.session_as(&login()?)?;
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
    // SAFETY: per contract.
    unsafe { stream_sql(session, sql, out_stream, Session::sql_stream) }
}

/// [`gs_session_query`] with the query's `$1`, `$2`, ... placeholders bound to `params`, an
/// Arrow C stream with one column per placeholder (in order) and one row per execution; the
/// results of all rows come as one stream. The values are bound into the planned query, never
/// pasted into its text, and the audit trail records the SQL with the values' digests.
/// govshare takes `params` over and releases it whatever the outcome.
///
/// # Safety
/// As [`gs_session_query`]; `params` is NULL or a valid, unreleased Arrow C stream this call
/// may take over.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_session_query_params(
    session: *mut gs_session,
    sql: *const c_char,
    params: *mut FFI_ArrowArrayStream,
    out_stream: *mut FFI_ArrowArrayStream,
) -> gs_status {
    // Taken over first, so it is released on every path (an invalid handle included).
    // SAFETY: a valid stream per contract; `from_raw` moves it out and marks the caller's
    // struct released.
    let params = unsafe { take_stream(params) };
    with_session(session, |h| {
        non_null(out_stream, "out_stream")?;
        // SAFETY: per contract.
        let sql = unsafe { arg(sql, "sql") }?;
        let params = collect_stream(params, "params")?;
        let stream = h.session.sql_params_stream(sql, &params)?;
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { put_stream(out_stream, Box::new(QueryStreamArrow(stream))) };
        Ok(())
    })
}

/// Take over an Arrow C stream argument (`None` when NULL or not a stream).
///
/// # Safety
/// `stream` is NULL or a valid, unreleased Arrow C stream.
unsafe fn take_stream(stream: *mut FFI_ArrowArrayStream) -> Option<ArrowArrayStreamReader> {
    if stream.is_null() {
        None
    } else {
        // SAFETY: per contract; `from_raw` moves it out and marks the caller's struct released.
        unsafe { ArrowArrayStreamReader::from_raw(stream) }.ok()
    }
}

/// All of a taken-over stream argument as one batch (`what` names it in errors).
fn collect_stream(
    reader: Option<ArrowArrayStreamReader>,
    what: &str,
) -> Result<arrow::array::RecordBatch, Failure> {
    let reader =
        reader.ok_or_else(|| bad_arg(format!("{what} is NULL or not an Arrow C stream")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(format!("{what} stream failed: {e}")))?;
    Ok(arrow::compute::concat_batches(&schema, &batches).map_err(Error::from)?)
}

/// The SQL doors ([`gs_session_query`], [`gs_session_aggregate`]): check the arguments, run
/// `sql` through `door`, hand its stream to `*out_stream`.
///
/// # Safety
/// As [`gs_session_query`].
unsafe fn stream_sql(
    session: *mut gs_session,
    sql: *const c_char,
    out_stream: *mut FFI_ArrowArrayStream,
    door: fn(&Session, &str) -> govshare_core::Result<govshare_core::engine::QueryStream>,
) -> gs_status {
    with_session(session, |h| {
        non_null(out_stream, "out_stream")?;
        // SAFETY: per contract.
        let sql = unsafe { arg(sql, "sql") }?;
        let stream = door(&h.session, sql)?;
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { put_stream(out_stream, Box::new(QueryStreamArrow(stream))) };
        Ok(())
    })
}

/// Cancel the session's running queries, from any thread: each stops at its next check (within
/// milliseconds), its stream's `get_next` fails with the message "interrupted", and its
/// completion record says it was cancelled. Queries started later run normally.
///
/// # Safety
/// None beyond passing a value previously returned by govshare or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_session_cancel(session: *mut gs_session) -> gs_status {
    with_session(session, |h| {
        h.session.cancel();
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

/// The subjects of `dataset` with the keys in `keys_json` (a JSON array of strings), as this
/// session may see them: every granted field, masked as granted; a key not found, deleted or
/// out of scope is simply absent. Through the key index, not a scan; decided and recorded
/// like [`gs_session_query`], and read the same way from `*out_stream`. The key field must be
/// granted in clear.
///
/// # Safety
/// `dataset` and `keys_json` are NULL or NUL-terminated strings; `out_stream` is NULL or points
/// to writable memory for one `struct ArrowArrayStream`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_session_lookup(
    session: *mut gs_session,
    dataset: *const c_char,
    keys_json: *const c_char,
    out_stream: *mut FFI_ArrowArrayStream,
) -> gs_status {
    with_session(session, |h| {
        non_null(out_stream, "out_stream")?;
        // SAFETY: per contract.
        let dataset = unsafe { arg(dataset, "dataset") }?;
        // SAFETY: per contract.
        let keys: Vec<String> = json_arg(unsafe { arg(keys_json, "keys_json") }?, "keys_json")?;
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let stream = h.session.lookup_stream(dataset, &keys)?;
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { put_stream(out_stream, Box::new(QueryStreamArrow(stream))) };
        Ok(())
    })
}

/// Verify claims (核验) under a verify grant. `claims` is an Arrow C stream whose first column
/// is the dataset's key and whose other columns are claimed fields (text, or a type that
/// converts to text); govshare takes it over and releases it whatever the outcome. The answer
/// — one row per claim: a Boolean per claimed field (true: match, false: no match, null: not
/// claimed), and a `found` column first only when the grant may disclose absence; never a
/// value — is written to `*out_stream`. Charged to the grant's quotas (`GS_LIMIT_EXCEEDED`
/// over a limit, nothing answered) and recorded durably before it is answered.
///
/// # Safety
/// `dataset` is NULL or NUL-terminated; `claims` is NULL or a valid, unreleased Arrow C stream
/// this call may take over; `out_stream` is NULL or writable for one `struct ArrowArrayStream`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_session_verify(
    session: *mut gs_session,
    dataset: *const c_char,
    claims: *mut FFI_ArrowArrayStream,
    out_stream: *mut FFI_ArrowArrayStream,
) -> gs_status {
    // Taken over first, so it is released on every path (an invalid handle included).
    // SAFETY: per contract.
    let reader = unsafe { take_stream(claims) };
    with_session(session, |h| {
        non_null(out_stream, "out_stream")?;
        // SAFETY: per contract.
        let dataset = unsafe { arg(dataset, "dataset") }?;
        let claims = collect_stream(reader, "claims")?;
        let answer = h.session.verify(dataset, &claims)?;
        let schema = answer.schema();
        let reader = arrow::array::RecordBatchIterator::new([Ok(answer)], schema);
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { put_stream(out_stream, Box::new(reader)) };
        Ok(())
    })
}

/// Export the granted fields and rows of `dataset` (masked as granted) into the directory
/// `dir` under an export grant, as `format` (`"parquet"`, `"csv"`, `"csv-gbk"`, `"arrow"`):
/// `<dataset>.<ext>` and `<dataset>.<ext>.manifest.json`, whose blake3 is on the audit trail. The
/// manifest is also written to `*out_manifest_json` (free with [`gs_string_free`]).
/// `GS_LIMIT_EXCEEDED` beyond the grant's rows per export or exports per day; a failed export
/// leaves no file.
///
/// # Safety
/// `dataset`, `format` and `dir` are NULL or NUL-terminated; `out_manifest_json` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_session_export(
    session: *mut gs_session,
    dataset: *const c_char,
    format: *const c_char,
    dir: *const c_char,
    out_manifest_json: *mut *mut c_char,
) -> gs_status {
    with_session(session, |h| {
        // SAFETY: per contract.
        let (dataset, format, dir) = unsafe {
            (
                arg(dataset, "dataset")?,
                arg(format, "format")?,
                arg(dir, "dir")?,
            )
        };
        let format = govshare_core::engine::ExportFormat::parse(format)?;
        // SAFETY: per contract.
        unsafe {
            json_out(out_manifest_json, || {
                to_json(&h.session.export(
                    dataset,
                    format,
                    std::path::Path::new(dir),
                    &mut |_| {},
                )?)
            })
        }
    })
}

/// Run an aggregate query under an aggregate-only grant: only aggregates of one dataset, groups
/// with fewer subjects than the grant's minimum left out, no use of the key field, within the
/// grant's queries per day (`GS_LIMIT_EXCEEDED` beyond). Otherwise as [`gs_session_query`].
///
/// # Safety
/// As [`gs_session_query`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_session_aggregate(
    session: *mut gs_session,
    sql: *const c_char,
    out_stream: *mut FFI_ArrowArrayStream,
) -> gs_status {
    // SAFETY: per contract.
    unsafe { stream_sql(session, sql, out_stream, Session::aggregate_stream) }
}

/// The changes of `dataset` for this session's push subscription since its last
/// acknowledgement, read like [`gs_session_query`]'s result from `*out_stream`: `_op`
/// (`insert`, `update`, `delete`) and the granted fields, masked as granted. `*out_token` gets
/// the version to acknowledge with [`gs_session_ack`] once they are applied; until then the
/// same changes are delivered again.
///
/// # Safety
/// `dataset` is NULL or NUL-terminated; `out_stream` is NULL or writable for one
/// `struct ArrowArrayStream`; `out_token` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_session_changes(
    session: *mut gs_session,
    dataset: *const c_char,
    out_stream: *mut FFI_ArrowArrayStream,
    out_token: *mut u64,
) -> gs_status {
    with_session(session, |h| {
        non_null(out_stream, "out_stream")?;
        non_null(out_token, "out_token")?;
        // SAFETY: per contract.
        let dataset = unsafe { arg(dataset, "dataset") }?;
        let c = h.session.changes(dataset)?;
        let reader = arrow::array::RecordBatchIterator::new(
            c.result.batches.into_iter().map(Ok),
            c.result.schema.clone(),
        );
        // SAFETY: checked non-NULL, writable per contract.
        unsafe {
            put_stream(out_stream, Box::new(reader));
            *out_token = c.to;
        }
        Ok(())
    })
}

/// Acknowledge that the changes up to `token` (from [`gs_session_changes`]) are applied:
/// recorded on the trail, then the subscription moves on. An older token is a no-op.
///
/// # Safety
/// `dataset` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_session_ack(
    session: *mut gs_session,
    dataset: *const c_char,
    token: u64,
) -> gs_status {
    with_session(session, |h| {
        // SAFETY: per contract.
        let dataset = unsafe { arg(dataset, "dataset") }?;
        h.session.ack(dataset, token)?;
        Ok(())
    })
}
