//! Administrative acts on an open [`Engine`]: principals, grants, approvals, loads, audit
//! checks — the calls a host needs to operate the platform.
//!
//! The CLI, the C ABI and the Python module all call these, so an act means the same thing
//! whichever door it came through. Every act goes through the store's single writer (a second
//! concurrent writer gets [`Error::Locked`]) and lands on the audit trail as the store records
//! policy changes and loads. Who may do what is decided by [`Policy`]'s own rules (e.g. only
//! the providing department's approver approves a conditional field).

use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::Serialize;

use crate::access::policy::{
    Approval, Department, Grant, GrantRequest, Policy, PrincipalStatus, User,
};
use crate::audit::{Checkpoint, Verdict};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ingest::{HandoverInfo, LoadMode, LoadOptions, Source};
use crate::store::Handover;

/// What a load committed, in a form every binding can print or serialise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadSummary {
    /// The dataset loaded.
    pub dataset: String,
    /// The data version it created.
    pub version: u64,
    /// Rows live in that version.
    pub live_rows: u64,
    /// The handover record (who delivered what; read/accepted/rejected counts; input digest).
    pub handover: Handover,
    /// Where rejected rows are listed, when there were any.
    pub rejects_file: Option<PathBuf>,
}

impl Engine {
    /// The current policy document (departments, users, grants, approvals), for listings.
    pub fn policy(&self) -> Result<Policy> {
        self.store().policy()
    }

    /// Add or replace a department.
    pub fn upsert_department(&self, by: &str, d: Department) -> Result<()> {
        let note = format!("department {}", d.code);
        self.store()
            .writer()?
            .update_policy(by, &note, |p, _| p.upsert_department(d))
    }

    /// Suspend or reactivate a department; its users' next queries are decided accordingly.
    pub fn set_department_status(
        &self,
        by: &str,
        code: &str,
        status: PrincipalStatus,
    ) -> Result<()> {
        let note = format!("department {code} {status:?}");
        self.writer()?.update_policy(by, &note, |p, _| {
            let d = p
                .departments
                .get_mut(code)
                .ok_or_else(|| Error::NotFound(format!("department '{code}'")))?;
            d.status = status;
            Ok(())
        })
    }

    /// Add or replace a real-name user.
    pub fn upsert_user(&self, by: &str, u: User) -> Result<()> {
        let note = format!("user {}", u.id);
        self.store()
            .writer()?
            .update_policy(by, &note, |p, _| p.upsert_user(u))
    }

    /// Suspend or reactivate a user.
    pub fn set_user_status(&self, by: &str, id: &str, status: PrincipalStatus) -> Result<()> {
        let note = format!("user {id} {status:?}");
        self.writer()?.update_policy(by, &note, |p, _| {
            let u = p
                .users
                .get_mut(id)
                .ok_or_else(|| Error::NotFound(format!("user '{id}'")))?;
            u.status = status;
            Ok(())
        })
    }

    /// Grant on request (unconditional fields only, by a platform admin; see
    /// [`Policy::grant_on_request`]).
    pub fn request_grant(&self, by: &str, request: GrantRequest) -> Result<Grant> {
        self.store()
            .writer()?
            .update_policy(by, "grant on request", |p, c| {
                p.grant_on_request(c, request, by, Utc::now())
            })
    }

    /// Approve (creating a grant) or reject a request, by the providing department's approver
    /// (see [`Policy::decide_request`]). A rejection needs a reason.
    pub fn decide_request(
        &self,
        by: &str,
        request: GrantRequest,
        approve: bool,
        reason: &str,
    ) -> Result<Approval> {
        let note = if approve {
            "approve request"
        } else {
            "reject request"
        };
        self.writer()?.update_policy(by, note, |p, c| {
            p.decide_request(c, request, by, approve, reason, Utc::now())
        })
    }

    /// Revoke a grant; sessions relying on it are refused from their next query on.
    pub fn revoke_grant(&self, by: &str, grant: u64, reason: &str) -> Result<()> {
        self.store()
            .writer()?
            .update_policy(by, &format!("revoke grant {grant}"), |p, _| {
                p.revoke(grant, by, reason, Utc::now())
            })
    }

    /// Load a CSV (encoding detected) or Parquet file (by extension) into `dataset`: a full
    /// replacement, or with `incremental` an upsert/delete by key. With `strict`, nothing is
    /// committed when any row is invalid.
    pub fn load_file(
        &self,
        dataset: &str,
        path: &Path,
        incremental: bool,
        strict: bool,
        handover: HandoverInfo,
    ) -> Result<LoadSummary> {
        if !path.is_file() {
            return Err(Error::NotFound(format!("input file {}", path.display())));
        }
        let opts = LoadOptions {
            mode: LoadMode::from_flag(incremental),
            strict,
            handover,
            ..Default::default()
        };
        self.load(dataset, Source::from_path(path), &opts)
    }

    /// Load `source` into `dataset` with full control of the options (encoding, progress,
    /// row group size): one writer transaction on this engine's trail. [`Engine::load_file`]
    /// and the command line both come here.
    pub fn load(&self, dataset: &str, source: Source, opts: &LoadOptions) -> Result<LoadSummary> {
        let report = self.writer()?.load(dataset, source, opts)?;
        Ok(LoadSummary {
            dataset: dataset.to_string(),
            version: report.manifest.version,
            live_rows: report.manifest.live_rows,
            handover: report.manifest.handover.clone(),
            rejects_file: report.rejects_file,
        })
    }

    /// Walk the audit chain (see [`crate::audit::verify`]), against `checkpoint` when given.
    pub fn verify_audit(&self, checkpoint: Option<&Checkpoint>) -> Result<Verdict> {
        crate::audit::verify(self.audit().dir(), checkpoint)
    }
}
