//! The sharing workflows and reports through the engine handle: one entry for every workflow
//! act (the same JSON the command line's `act` takes), the service catalog, conflicts, and the
//! reports. Each calls the same `Engine` method Rust and Python call.

use std::ffi::c_char;

use arrow::array::RecordBatchIterator;
use arrow::ffi_stream::FFI_ArrowArrayStream;
use govshare_core::engine::WorkflowAct;

use crate::handles::*;
// The whole C surface in scope: the types, and the other entry points the docs link to.
use crate::*;

/// Do one workflow act as user `by`: `act_json` is `{"act": "apply", ...}` (apply, complete,
/// return, resubmit, withdraw, dispute, hand_back, decide, escalate, file_objection,
/// request_extension, sign_off_extension, confirm, correct, make_agreement, renew_agreement,
/// revoke_agreement, close_reclassification, resolve_conflict, add_calendar_years; the README
/// lists their fields). What the act produced (the application, decision, objection, ...) is
/// written as JSON to `*out_json`. A refusal is `GS_ACCESS_DENIED`, a missing reason or a bad
/// act `GS_INVALID_INPUT`; either way the refusal is recorded.
///
/// # Safety
/// `by` and `act_json` are NULL or NUL-terminated; `out_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_act(
    engine: *mut gs_engine,
    by: *const c_char,
    act_json: *const c_char,
    out_json: *mut *mut c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract.
        let (by, json) = unsafe { (arg(by, "by")?, arg(act_json, "act_json")?) };
        let act: WorkflowAct = json_arg(json, "act_json")?;
        // SAFETY: per contract.
        unsafe { json_out(out_json, || to_json(&h.engine.act(by, act)?)) }
    })
}

/// The service catalog as user `by` applies against it (datasets, items, share types,
/// sources, versions, deadlines, what `by`'s department holds), as JSON in `*out_json`;
/// recorded.
///
/// # Safety
/// `by` is NULL or NUL-terminated; `out_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_service_catalog(
    engine: *mut gs_engine,
    by: *const c_char,
    out_json: *mut *mut c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract.
        unsafe {
            json_out(out_json, || {
                to_json(&h.engine.service_catalog(arg(by, "by")?)?)
            })
        }
    })
}

/// Conflicts between sources of `dataset` (every dataset when NULL) with their resolutions,
/// as user `by` may see them, as JSON in `*out_json`; recorded.
///
/// # Safety
/// `by` is NULL or NUL-terminated, `dataset` NULL or NUL-terminated; `out_json` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_conflicts(
    engine: *mut gs_engine,
    by: *const c_char,
    dataset: *const c_char,
    out_json: *mut *mut c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract.
        unsafe {
            json_out(out_json, || {
                to_json(
                    &h.engine
                        .conflicts(arg(by, "by")?, opt_arg(dataset, "dataset")?)?,
                )
            })
        }
    })
}

/// Query the report tables (usage, applications, objections, agreements, late_providers,
/// denials, volumes) with SQL as coordinator or auditor `by`; result as an Arrow C stream, as in
/// [`gs_session_query`]; recorded.
///
/// # Safety
/// `by` and `sql` are NULL or NUL-terminated; `out_stream` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_report_query(
    engine: *mut gs_engine,
    by: *const c_char,
    sql: *const c_char,
    out_stream: *mut FFI_ArrowArrayStream,
) -> gs_status {
    with_engine(engine, |h| {
        non_null(out_stream, "out_stream")?;
        // SAFETY: per contract.
        let (by, sql) = unsafe { (arg(by, "by")?, arg(sql, "sql")?) };
        let result = h.engine.report_sql(by, sql)?;
        let reader = RecordBatchIterator::new(result.batches.into_iter().map(Ok), result.schema);
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { put_stream(out_stream, Box::new(reader)) };
        Ok(())
    })
}

/// The HTML report (every report table, with charts) for coordinator or auditor `by`, in
/// `*out_html` (free with [`gs_string_free`]); recorded.
///
/// # Safety
/// `by` is NULL or NUL-terminated; `out_html` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_report_html(
    engine: *mut gs_engine,
    by: *const c_char,
    out_html: *mut *mut c_char,
) -> gs_status {
    with_engine(engine, |h| {
        non_null(out_html, "out_html")?;
        // SAFETY: per contract.
        let html = h.engine.report_html(unsafe { arg(by, "by")? })?;
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { put_string(out_html, html) };
        Ok(())
    })
}
