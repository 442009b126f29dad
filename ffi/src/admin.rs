//! Administrative acts through the engine handle: departments, users, grants, loads, the
//! audit trail. Each calls the same `Engine` method Rust and Python call.

use std::ffi::c_char;

use arrow::array::RecordBatchIterator;
use arrow::ffi_stream::FFI_ArrowArrayStream;
use govshare_core::access::policy::{Department, GrantRequest, PrincipalStatus, User};
use govshare_core::audit::{Checkpoint, Verdict};
use govshare_core::engine::ReleaseSpec;
use govshare_core::ingest::HandoverInfo;

use crate::handles::*;
// The whole C surface in scope: the types, and the other entry points the docs link to.
use crate::*;

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

pub(crate) fn status(active: bool) -> PrincipalStatus {
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

/// Register (or change) a host system as platform administrator `by`; `system_json` =
/// `{"id", "name", "department", "status"}`.
///
/// # Safety
/// `by` and `system_json` are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_upsert_system(
    engine: *mut gs_engine,
    by: *const c_char,
    system_json: *const c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract.
        let (by, system) = unsafe { (arg(by, "by")?, arg(system_json, "system_json")?) };
        let system: govshare_core::access::policy::HostSystem = json_arg(system, "system_json")?;
        Ok(h.engine.upsert_system(by, system)?)
    })
}

/// Suspend (`active` false) or reactivate a host system, as platform administrator `by`.
///
/// # Safety
/// `by` and `id` are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_set_system_active(
    engine: *mut gs_engine,
    by: *const c_char,
    id: *const c_char,
    active: bool,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract.
        let (by, id) = unsafe { (arg(by, "by")?, arg(id, "id")?) };
        let status = if active {
            govshare_core::access::policy::PrincipalStatus::Active
        } else {
            govshare_core::access::policy::PrincipalStatus::Suspended
        };
        Ok(h.engine.set_system_status(by, id, status)?)
    })
}

/// The policy document (departments, users, grants, approvals) as user `by` may see it, as
/// JSON in `*out_json` (free with [`gs_string_free`]); the listing is recorded.
///
/// # Safety
/// `by` is NULL or NUL-terminated; `out_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_policy(
    engine: *mut gs_engine,
    by: *const c_char,
    out_json: *mut *mut c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract.
        unsafe { json_out(out_json, || to_json(&h.engine.policy(arg(by, "by")?)?)) }
    })
}

/// Load, as operator `by`, a CSV (encoding detected) or Parquet file (by extension) into `dataset`: a full
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
    by: *const c_char,
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
                let (by, dataset, path, handover) = (
                    arg(by, "by")?,
                    arg(dataset, "dataset")?,
                    arg(path, "path")?,
                    opt_arg(handover_json, "handover_json")?,
                );
                let handover: HandoverInfo = match handover {
                    Some(j) => json_arg(j, "handover_json")?,
                    None => HandoverInfo::default(),
                };
                let summary = h.engine.load_file(
                    by,
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

/// Publish, as `by` (the provider-approver of the department providing every item), a
/// k-anonymous open-data extract into directory `dir`: `spec_json` is `{"dataset", "fields":
/// [...], "k", "max_suppression"}`. Not-open items are refused (`GS_ACCESS_DENIED`);
/// conditionally open ones are generalised until every released group holds `k` rows. The
/// release manifest (version, generalisation, k reached, suppressed rows, loss, the file's
/// blake3) is written as JSON to `*out_json`; its digest is on the audit trail.
///
/// # Safety
/// String arguments are NULL or NUL-terminated; `out_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_release_open_data(
    engine: *mut gs_engine,
    by: *const c_char,
    spec_json: *const c_char,
    dir: *const c_char,
    out_json: *mut *mut c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract (string arguments and `out_json`).
        unsafe {
            json_out(out_json, || {
                let (by, spec, dir) = (
                    arg(by, "by")?,
                    arg(spec_json, "spec_json")?,
                    arg(dir, "dir")?,
                );
                let spec: ReleaseSpec = json_arg(spec, "spec_json")?;
                let release = h
                    .engine
                    .release_open_data(by, &spec, std::path::Path::new(dir))?;
                to_json(&release.manifest)
            })
        }
    })
}

/// Verify the audit trail's hash chain as auditor `by` (recorded), against a kept checkpoint (`{"seq", "hash"}` JSON,
/// may be NULL). The verdict is written as JSON to `*out_json` either way
/// (`{"verdict": "intact", "records", "head"}` or `{"verdict": "broken", "segment", "line",
/// "seq", "problem"}`); the status is `GS_OK` for an intact chain and `GS_INTEGRITY` for a
/// broken one.
///
/// # Safety
/// `by` and `checkpoint_json` are NULL or NUL-terminated; `out_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_audit_verify(
    engine: *mut gs_engine,
    by: *const c_char,
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
        // SAFETY: per contract.
        let by = unsafe { arg(by, "by") }?;
        let verdict = h.engine.verify_audit(by, cp.as_ref())?;
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
/// external party to keep; taken by auditor `by` (recorded).
///
/// # Safety
/// `by` is NULL or NUL-terminated; `out_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_audit_checkpoint(
    engine: *mut gs_engine,
    by: *const c_char,
    out_json: *mut *mut c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract.
        unsafe {
            json_out(out_json, || {
                to_json(&h.engine.audit_checkpoint(arg(by, "by")?)?)
            })
        }
    })
}

/// Every recorded query (and administrative lookup) that read the person or legal entity
/// `key` (citizen ID or USCC), asked by auditor `by` (recorded), as a JSON array of
/// `{"query_seq", "time", "user", "department", "purpose", "dataset", "version", "sql"}` in
/// `*out_json`.
///
/// # Safety
/// `by` and `key` are NULL or NUL-terminated; `out_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gs_engine_who_accessed(
    engine: *mut gs_engine,
    by: *const c_char,
    key: *const c_char,
    out_json: *mut *mut c_char,
) -> gs_status {
    with_engine(engine, |h| {
        // SAFETY: per contract (`key` and `out_json`).
        unsafe {
            json_out(out_json, || {
                to_json(&h.engine.who_accessed(arg(by, "by")?, arg(key, "key")?)?)
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
