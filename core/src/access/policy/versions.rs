//! The policy as a versioned document of the store: creating a store with its first
//! administrator, opening its writer for a user, reading the current policy and its history,
//! and committing an edit as a new version recorded on the writer's trail.
//!
//! These are inherent methods of [`Store`] and [`Writer`] written here, in the access layer,
//! so that storage never imports the policy (the store only keeps a chain of documents) and
//! so that the only public way to a writer passes the policy's authoriser.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditLog, Checkpoint};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::store::{Authorizer, Store, Writer};

use super::{
    Department, Facts, Founder, Policy, PolicyAuthorizer, PrincipalStatus, Role, Stewards, User,
};

/// One committed policy version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// Version number.
    pub version: u64,
    /// Who made the change.
    pub author: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// What was done, in words.
    pub note: String,
    /// The whole policy at this version.
    pub policy: Policy,
    /// The audit trail's head when this version was committed (see
    /// [`Manifest::anchor`](crate::store::Manifest::anchor)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Checkpoint>,
}

impl Store {
    /// Create a store at `root` with the built-in catalog and `founder` as its first platform
    /// administrator (policy version 1, on the trail as `init` by the founder). On an existing
    /// store this only opens it, and only when `founder` is one of its active platform
    /// administrators — a second `init` names no one.
    pub fn init(root: impl AsRef<Path>, founder: &Founder) -> Result<Store> {
        Store::init_with(root, founder, crate::audit::ChainHash::Blake3)
    }

    /// [`Store::init`] with the audit chain hashed by `chain` — SM3 (GM/T 0004-2012) where
    /// national cryptography is required. Chosen once, when the store is made, and recorded
    /// with its first policy version; an existing store keeps its own.
    pub fn init_with(
        root: impl AsRef<Path>,
        founder: &Founder,
        chain: crate::audit::ChainHash,
    ) -> Result<Store> {
        let (dept, admin) = founder.principals();
        let mut check = Policy::default();
        check.upsert_department(dept.clone())?;
        check.upsert_user(admin.clone())?;
        let store = Store::create(root, chain, |w| found(w, founder))?;
        if store.policy_version()? == 0 {
            // A store created before it had a founder (or by a crashed init before its
            // marker): it has no principals, so nothing was ever authorised in it.
            let audit = Arc::new(AuditLog::open(store.audit_dir())?);
            found(
                &mut store.lock_writer(&founder.user, audit, &PolicyAuthorizer)?,
                founder,
            )?;
        }
        let policy = store.policy()?;
        policy
            .require(&founder.user, Role::PlatformAdmin, "open this store as its founder")
            .map_err(|_| {
                Error::invalid(format!(
                    "the store at {} is initialised already, and '{}' is not one of its active platform administrators",
                    store.root().display(),
                    founder.user
                ))
            })?;
        Ok(store)
    }

    /// Take the writer lock for `actor`, with a trail of its own for the writer's records.
    /// Every act of the writer is authorised for `actor` by the policy first. A process that
    /// also has an [`Engine`](crate::Engine) should use [`Engine::writer`](crate::Engine::writer)
    /// instead, so its acts and its queries are group-committed on one open trail. A second
    /// writer, in this or another process, gets [`Error::Locked`] after a 200 ms grace period.
    pub fn writer(&self, actor: &str) -> Result<Writer<'_>> {
        self.writer_with(actor, Arc::new(AuditLog::open(self.audit_dir())?))
    }

    /// Take the writer lock for `actor`; the writer records its acts on `audit` (the trail of
    /// this store, opened by whoever owns it).
    pub fn writer_with(&self, actor: &str, audit: Arc<AuditLog>) -> Result<Writer<'_>> {
        self.lock_writer(actor, audit, &PolicyAuthorizer)
    }

    /// Restore the backup at `backup` into the new directory `target`, as operator `by` of the
    /// restored store's policy: every file is verified against the manifests (a single changed
    /// byte is refused), the restored trail must verify up to the head the backup recorded, and
    /// the restore is recorded on the restored trail before the store appears at `target`. A
    /// refused or failed restore leaves nothing at `target` (and, having no store to record
    /// into, is reported to the caller only).
    pub fn restore(
        backup: impl AsRef<Path>,
        target: impl AsRef<Path>,
        by: &str,
    ) -> Result<crate::store::backup::BackupManifest> {
        use crate::store::backup;
        let (backup_dir, target) = (backup.as_ref(), target.as_ref());
        let (manifest, digest, scratch) = backup::assemble(backup_dir, target)?;
        let checked = (|| {
            let store = Store::open(&scratch)?;
            match crate::audit::verify(&store.audit_dir(), Some(&manifest.audit_head))? {
                crate::audit::Verdict::Intact { .. } => {}
                crate::audit::Verdict::Broken { seq, problem, .. } => {
                    return Err(Error::Corrupt(format!(
                        "the backup's audit trail does not verify at record {seq}: {problem}"
                    )));
                }
            }
            PolicyAuthorizer.authorize(&store, by, &crate::store::Act::Restore)?;
            let audit = AuditLog::open(store.audit_dir())?;
            audit.append(
                "restore",
                by,
                serde_json::json!({
                    "from": backup_dir.display().to_string(),
                    "manifest_blake3": digest,
                    "taken_at": manifest.created_at,
                    "taken_by": manifest.by,
                    "audit_head": manifest.audit_head.seq,
                }),
            )?;
            audit.flush()
        })();
        if let Err(e) = checked {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
        backup::publish(&scratch, target)?;
        Ok(manifest)
    }

    /// The current policy version number (0 when no principal or grant was ever committed).
    pub fn policy_version(&self) -> Result<u64> {
        self.policy_chain().current()
    }

    /// The current policy (departments, users, grants, approvals); empty before the first
    /// change, which denies everything.
    pub fn policy(&self) -> Result<Policy> {
        Ok(self.policy_shared()?.as_ref().clone())
    }

    /// The policy in force, shared: parsed once per version (what every decision reads).
    pub fn policy_shared(&self) -> Result<Arc<Policy>> {
        let chain = self.policy_chain();
        self.current_doc(
            &chain,
            || Ok(Policy::default()),
            |v: PolicyVersion| v.policy,
        )
    }

    /// Every policy version, oldest first.
    pub fn policy_history(&self) -> Result<Vec<PolicyVersion>> {
        let chain = self.policy_chain();
        chain.list()?.into_iter().map(|v| chain.read(v)).collect()
    }
}

impl Founder {
    fn principals(&self) -> (Department, User) {
        (
            Department {
                code: self.department.clone(),
                name: self.department_name.clone(),
                region: self.region.clone(),
                status: PrincipalStatus::Active,
            },
            User {
                id: self.user.clone(),
                name: self.name.clone(),
                department: self.department.clone(),
                roles: vec![Role::PlatformAdmin],
                status: PrincipalStatus::Active,
            },
        )
    }
}

/// Commit policy version 1: the founder's department and the founder as platform
/// administrator. The only policy change not authorised by an earlier policy.
fn found(w: &mut Writer<'_>, founder: &Founder) -> Result<()> {
    let chain = w.store().policy_chain();
    if chain.current()? != 0 {
        return Ok(());
    }
    let (dept, admin) = founder.principals();
    let mut policy = Policy::default();
    policy.upsert_department(dept)?;
    policy.upsert_user(admin)?;
    let doc = PolicyVersion {
        version: 1,
        author: founder.user.clone(),
        created_at: Utc::now(),
        note: "init: first platform administrator".into(),
        policy,
        anchor: Some(w.anchor()?),
    };
    w.commit_recorded(
        &chain,
        1,
        &doc,
        "policy",
        serde_json::json!({
            "policy_version": 1,
            "note": "init: first platform administrator",
            "founder": founder.user,
            "chain_hash": crate::audit::ChainHash::of_dir(&w.store().audit_dir())?.name(),
        }),
    )?;
    Ok(())
}

impl Writer<'_> {
    /// Change the policy as the writer's actor: `f` edits a copy of the current policy; the
    /// edited copy is committed as a new version only if `f` succeeds *and* the actor may make
    /// every change it contains ([`Policy::authorize_change`]); otherwise nothing changes and
    /// the refusal is recorded.
    pub fn update_policy<T>(
        &mut self,
        note: &str,
        f: impl FnOnce(&mut Policy, &Catalog) -> Result<T>,
    ) -> Result<T> {
        self.update_policy_recorded(note, serde_json::Value::Null, f)
    }

    /// [`Writer::update_policy`] with `detail` on the commit's audit record (and on the
    /// refusal's): a workflow step records what was asked, with its reason, next to who and
    /// when.
    pub fn update_policy_recorded<T>(
        &mut self,
        note: &str,
        detail: serde_json::Value,
        f: impl FnOnce(&mut Policy, &Catalog) -> Result<T>,
    ) -> Result<T> {
        let author = self.actor().to_string();
        let author = author.as_str();
        let store = self.store();
        let chain = store.policy_chain();
        let before = store.policy()?;
        let mut policy = before.clone();
        let catalog = store.catalog()?;
        let now = self.now();
        // Who acts is settled before what they act on is looked at.
        let edited = before
            .active(author)
            .map(drop)
            .and_then(|()| f(&mut policy, &catalog))
            .and_then(|o| {
                // Who touched which dataset matters only to a new decision on a request (records
                // are never changed or removed, so a new one shows in the count); reading the
                // catalog history and manifests for every other edit would be wasted I/O.
                let stewards = if policy.approvals.len() != before.approvals.len() {
                    Stewards::of(store)?
                } else {
                    Stewards::default()
                };
                // Data versions matter only to answers of objections and resolutions of
                // conflicts; the calendar to every deadline.
                let versions_needed = policy.objections != before.objections
                    || policy.resolutions != before.resolutions;
                let facts = Facts::of(store, versions_needed)?;
                before.authorize_change(&policy, author, &catalog, &stewards, &facts, now)?;
                Ok(o)
            });
        let out = match edited {
            Ok(o) => o,
            Err(e) => {
                // Refused administrative acts are decisions too.
                let mut body = serde_json::json!({ "note": note, "reason": e.to_string() });
                if !detail.is_null() {
                    body["detail"] = detail;
                }
                self.record("policy_denied", author, body)?;
                return Err(e);
            }
        };
        if policy == before {
            // Nothing changed (an escalation sweep that found nothing overdue): no new version,
            // which would only copy the document, but the act is still on the trail.
            let mut body = serde_json::json!({ "note": note, "policy_version": chain.current()? });
            if !detail.is_null() {
                body["detail"] = detail;
            }
            self.record("policy_unchanged", author, body)?;
            return Ok(out);
        }
        let version = chain.current()? + 1;
        let doc = PolicyVersion {
            version,
            author: author.to_string(),
            created_at: Utc::now(),
            note: note.to_string(),
            policy,
            anchor: Some(self.anchor()?),
        };
        let mut body = serde_json::json!({ "policy_version": version, "note": note });
        if !detail.is_null() {
            body["detail"] = detail;
        }
        self.commit_recorded(&chain, version, &doc, "policy", body)?;
        Ok(out)
    }
}
