//! Administrative acts on an open [`Engine`]: principals, grants, approvals, loads, audit
//! checks — the calls a host needs to operate the platform.
//!
//! The CLI, the C ABI and the Python module all call these, so an act means the same thing
//! whichever door it came through. Every act goes through the store's single writer (a second
//! concurrent writer gets [`Error::Locked`]) and lands on the audit trail as the store records
//! policy changes and loads. Who may do what is decided by [`Policy`]'s own rules (e.g. only
//! the providing department's approver approves a conditional field).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::access::policy::{
    Approval, Department, Grant, GrantRequest, HostSystem, Policy, PrincipalStatus, Role, User,
};
use crate::audit::{Checkpoint, Retention, Verdict};
use crate::catalog::CatalogFile;
use crate::engine::{Engine, QueryResult};
use crate::error::{Error, Result};
use crate::ingest::{HandoverInfo, LoadMode, LoadOptions, Source};
use crate::store::{CatalogVersion, Handover, Manifest, VacuumReport};

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
    /// The current policy document (departments, users, grants, approvals) as `by` may see it
    /// (see [`Policy::view_for`]); the listing is recorded.
    pub fn policy(&self, by: &str) -> Result<Policy> {
        let outcome = (|| {
            self.store()
                .policy()?
                .view_for(by, &self.store().catalog()?)
        })();
        self.record_read("policy_read", by, serde_json::json!({}), outcome.as_ref())?;
        outcome
    }

    /// The published catalog (every dataset and item with its share type, grade, default mask
    /// and provider), as any active user `by` reads it — the list departments apply against;
    /// the reading is recorded.
    pub fn catalog(&self, by: &str) -> Result<CatalogVersion> {
        let outcome = (|| {
            self.store().policy()?.active(by)?;
            let store = self.store();
            store.catalog_at(store.catalog_version()?)
        })();
        self.record_read("catalog_read", by, serde_json::json!({}), outcome.as_ref())?;
        outcome
    }

    /// Every catalog version (who changed what, when), as any active user `by` (recorded).
    pub fn catalog_history(&self, by: &str) -> Result<Vec<CatalogVersion>> {
        let outcome = (|| {
            self.store().policy()?.active(by)?;
            self.store().catalog_history()
        })();
        self.record_read(
            "catalog_history",
            by,
            serde_json::json!({}),
            outcome.as_ref().map(Vec::len),
        )?;
        outcome
    }

    /// The versions of `dataset` with their handover records, as an operator, platform
    /// administrator or auditor `by` (recorded): who delivered what, when, with what counts.
    pub fn versions(&self, by: &str, dataset: &str) -> Result<Vec<Manifest>> {
        let outcome = (|| {
            crate::catalog::check_dataset_name(dataset)?;
            let policy = self.store().policy()?;
            let (u, _) = policy.active(by)?;
            let overseer = [Role::Operator, Role::PlatformAdmin, Role::Auditor]
                .iter()
                .any(|r| u.roles.contains(r));
            if !overseer {
                return Err(Error::AccessDenied(format!(
                    "user '{by}' may not list the versions of '{dataset}': that needs the operator, platform-admin or auditor role"
                )));
            }
            self.store().catalog()?.dataset(dataset)?;
            self.store().versions(dataset)
        })();
        self.record_read(
            "versions_read",
            by,
            serde_json::json!({ "dataset": dataset }),
            outcome.as_ref().map(Vec::len),
        )?;
        outcome
    }

    /// An operator's administrative lookup of one row by key, with the reason recorded (and
    /// the row id, so [`Engine::who_accessed`] finds it): the whole stored row, unmasked —
    /// operators maintain the data. Not a consumer's read: consumers query through sessions.
    pub fn lookup(&self, by: &str, reason: &str, dataset: &str, key: &str) -> Result<QueryResult> {
        let found = (|| {
            crate::catalog::check_dataset_name(dataset)?;
            let policy = self.store().policy()?;
            let u = policy.require(by, Role::Operator, &format!("look up rows of '{dataset}'"))?;
            if reason.trim().is_empty() {
                return Err(Error::invalid(
                    "an administrative lookup must give its reason (it is recorded)",
                ));
            }
            let snap = self.store().pinned(dataset)?;
            let row = snap.lookup(key)?;
            Ok((u.department.clone(), snap, row))
        })();
        let body = match &found {
            Ok((dept, snap, row)) => serde_json::json!({
                "dataset": dataset, "version": snap.version(), "row": row,
                "department": dept, "reason": reason,
            }),
            Err(_) => serde_json::json!({ "dataset": dataset, "reason": reason }),
        };
        self.record_read("admin_lookup", by, body, found.as_ref())?;
        let (_, snap, row) = found?;
        let Some(row) = row else {
            return Err(Error::NotFound(format!(
                "no row with that key in {dataset} version {}",
                snap.version()
            )));
        };
        let batches = snap.read(Some(&[row].into_iter().collect()), None)?;
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| Error::internal("a found row read as no batch"))?;
        Ok(QueryResult { schema, batches })
    }

    /// Add or replace a department.
    pub fn upsert_department(&self, by: &str, d: Department) -> Result<()> {
        let note = format!("department {}", d.code);
        self.writer(by)?
            .update_policy(&note, |p, _| p.upsert_department(d))
    }

    /// Suspend or reactivate a department; its users' next queries are decided accordingly.
    pub fn set_department_status(
        &self,
        by: &str,
        code: &str,
        status: PrincipalStatus,
    ) -> Result<()> {
        let note = format!("department {code} {status:?}");
        self.writer(by)?.update_policy(&note, |p, _| {
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
        self.writer(by)?
            .update_policy(&note, |p, _| p.upsert_user(u))
    }

    /// Suspend or reactivate a user.
    pub fn set_user_status(&self, by: &str, id: &str, status: PrincipalStatus) -> Result<()> {
        let note = format!("user {id} {status:?}");
        self.writer(by)?.update_policy(&note, |p, _| {
            let u = p
                .users
                .get_mut(id)
                .ok_or_else(|| Error::NotFound(format!("user '{id}'")))?;
            u.status = status;
            Ok(())
        })
    }

    /// Register (or change) a host system, as a platform administrator.
    pub fn upsert_system(&self, by: &str, system: HostSystem) -> Result<()> {
        let note = format!("host system {}", system.id);
        self.writer(by)?.update_policy(&note, |p, _| {
            if system.id.trim().is_empty() || system.name.trim().is_empty() {
                return Err(Error::invalid("a host system needs an id and a name"));
            }
            if !p.departments.contains_key(&system.department) {
                return Err(Error::NotFound(format!(
                    "department '{}'",
                    system.department
                )));
            }
            p.systems.insert(system.id.clone(), system);
            Ok(())
        })
    }

    /// Suspend or reactivate a host system; its sessions are decided accordingly from their
    /// next query on.
    pub fn set_system_status(&self, by: &str, id: &str, status: PrincipalStatus) -> Result<()> {
        let note = format!("host system {id} {status:?}");
        self.writer(by)?.update_policy(&note, |p, _| {
            let s = p
                .systems
                .get_mut(id)
                .ok_or_else(|| Error::NotFound(format!("host system '{id}'")))?;
            s.status = status;
            Ok(())
        })
    }

    /// Grant on request (unconditional fields only, by a platform admin; see
    /// [`Policy::grant_on_request`]).
    pub fn request_grant(&self, by: &str, request: GrantRequest) -> Result<Grant> {
        self.writer(by)?.update_policy("grant on request", |p, c| {
            p.grant_on_request(c, request, by, self.now())
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
        self.writer(by)?.update_policy(note, |p, c| {
            p.decide_request(c, request, by, approve, reason, self.now())
        })
    }

    /// Revoke a grant; sessions relying on it are refused from their next query on.
    pub fn revoke_grant(&self, by: &str, grant: u64, reason: &str) -> Result<()> {
        self.writer(by)?
            .update_policy(&format!("revoke grant {grant}"), |p, _| {
                p.revoke(grant, by, reason, self.now())
            })
    }

    /// Load a CSV (encoding detected) or Parquet file (by extension) into `dataset`: a full
    /// replacement, or with `incremental` an upsert/delete by key. With `strict`, nothing is
    /// committed when any row is invalid.
    pub fn load_file(
        &self,
        by: &str,
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
        self.load(by, dataset, Source::from_path(path), &opts)
    }

    /// Load `source` into `dataset` as operator `by`, with full control of the options
    /// (encoding, progress, row group size): one writer transaction on this engine's trail.
    /// [`Engine::load_file`] and the command line both come here.
    pub fn load(
        &self,
        by: &str,
        dataset: &str,
        source: Source,
        opts: &LoadOptions,
    ) -> Result<LoadSummary> {
        let report = self.writer(by)?.load(dataset, source, opts)?;
        Ok(LoadSummary {
            dataset: dataset.to_string(),
            version: report.manifest.version,
            live_rows: report.manifest.live_rows,
            handover: report.manifest.handover.clone(),
            rejects_file: report.rejects_file,
        })
    }

    /// Apply a catalog file as `by` (a platform administrator; a coordinator when it
    /// reclassifies items).
    pub fn apply_catalog(&self, by: &str, file: CatalogFile, note: &str) -> Result<CatalogVersion> {
        self.writer(by)?.apply_catalog(file, note)
    }

    /// Compact `dataset` as operator `by`.
    pub fn compact(&self, by: &str, dataset: &str) -> Result<Manifest> {
        self.writer(by)?.compact(dataset)
    }

    /// Remove all but the newest `keep` versions of `dataset`, as operator `by`.
    pub fn vacuum(&self, by: &str, dataset: &str, keep: usize) -> Result<VacuumReport> {
        self.writer(by)?.vacuum(dataset, keep)
    }

    /// Copy the whole store into the new directory `dest` as operator `by` (see
    /// [`crate::store::backup`]); with `base`, an earlier backup whose unchanged files are
    /// referenced rather than copied. Recorded before the copy exists, then with the
    /// manifest's digest. Returns the manifest and its blake3.
    pub fn backup(
        &self,
        by: &str,
        dest: &Path,
        base: Option<&Path>,
    ) -> Result<(crate::store::backup::BackupManifest, String)> {
        self.writer(by)?.backup(dest, base)
    }

    /// Walk the audit chain (see [`crate::audit::verify`]) as auditor `by`, against
    /// `checkpoint` when given; the check and its verdict are recorded.
    pub fn verify_audit(&self, by: &str, checkpoint: Option<&Checkpoint>) -> Result<Verdict> {
        self.verify_audit_with_progress(by, checkpoint, &mut |_, _| {})
    }

    /// [`Engine::verify_audit`], calling `progress(segments checked, segments)` as the walk
    /// goes (for a progress bar over a long trail).
    pub fn verify_audit_with_progress(
        &self,
        by: &str,
        checkpoint: Option<&Checkpoint>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Verdict> {
        let outcome = self
            .require(by, Role::Auditor, "verify the audit trail")
            .and_then(|()| self.audit().flush())
            .and_then(|()| {
                crate::audit::verify_with_progress(self.audit().dir(), checkpoint, progress)
            })
            .and_then(|v| match (v, self.anchor()?) {
                // The store's own documents anchor the head as it was at each commit: a trail
                // cut short below the newest anchor is broken even with no checkpoint kept.
                (Verdict::Intact { .. }, Some(anchor)) => {
                    crate::audit::verify(self.audit().dir(), Some(&anchor))
                }
                (v, _) => Ok(v),
            });
        let body = match &outcome {
            Ok(Verdict::Intact { records, .. }) => {
                serde_json::json!({ "verdict": "intact", "records": records })
            }
            Ok(Verdict::Broken { seq, .. }) => {
                serde_json::json!({ "verdict": "broken", "at": seq })
            }
            Err(_) => serde_json::json!({}),
        };
        self.record_read("audit_verify", by, body, outcome.as_ref())?;
        outcome
    }

    /// The trail's head, for an external party to keep, as auditor `by` (recorded).
    pub fn audit_checkpoint(&self, by: &str) -> Result<Checkpoint> {
        let outcome = self
            .require(by, Role::Auditor, "take an audit checkpoint")
            .and_then(|()| self.audit().flush())
            .and_then(|()| self.audit().checkpoint());
        self.record_read(
            "audit_checkpoint",
            by,
            serde_json::json!({}),
            outcome.as_ref(),
        )?;
        outcome
    }

    /// Repair the trail as operator `by`, an explicit, recorded act: a torn tail left by a
    /// crash is moved aside (see [`crate::audit::AuditLog::repair`]); returns whether there was
    /// one.
    pub fn repair_audit(&self, by: &str) -> Result<bool> {
        self.require(by, Role::Operator, "repair the audit trail")
            .or_else(|e| self.refused("audit_repair", by, e))?;
        self.audit().repair(by)
    }

    /// Move closed trail segments into Parquet archives, as operator `by`.
    pub fn archive_audit(&self, by: &str) -> Result<Vec<PathBuf>> {
        self.require(by, Role::Operator, "archive the audit trail")
            .or_else(|e| self.refused("audit_archive", by, e))?;
        self.audit().archive(by)
    }

    /// Delete archived records older than `retention`, as operator `by`.
    pub fn purge_audit(&self, by: &str, retention: Retention) -> Result<u64> {
        self.require(by, Role::Operator, "purge expired audit records")
            .or_else(|e| self.refused("audit_purge", by, e))?;
        self.audit().purge_expired(retention, by)
    }

    /// The newest audit anchor any current document of the store carries (catalog, policy,
    /// dataset manifests).
    fn anchor(&self) -> Result<Option<Checkpoint>> {
        let store = self.store();
        let mut anchors: Vec<Checkpoint> = Vec::new();
        anchors.extend(
            store
                .catalog_history()?
                .into_iter()
                .filter_map(|v| v.anchor),
        );
        anchors.extend(store.policy_history()?.into_iter().filter_map(|v| v.anchor));
        for name in store.catalog()?.datasets.keys() {
            anchors.extend(store.versions(name)?.into_iter().filter_map(|m| m.anchor));
        }
        Ok(anchors.into_iter().max_by_key(|a| a.seq))
    }

    fn require(&self, by: &str, role: Role, act: &str) -> Result<()> {
        self.store().policy()?.require(by, role, act).map(drop)
    }

    fn refused(&self, kind: &str, by: &str, e: Error) -> Result<()> {
        self.record_read(kind, by, serde_json::json!({}), Err::<(), _>(&e))?;
        Err(e)
    }
}
