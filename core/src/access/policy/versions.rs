//! The policy as a versioned document of the store: reading the current version and its
//! history, and committing an edit as a new version recorded on the writer's trail.
//!
//! These are inherent methods of [`Store`] and [`Writer`] written here, in the access layer,
//! so that storage never imports the policy (the store only keeps a chain of documents).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::error::Result;
use crate::store::{Store, Writer};

use super::Policy;

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
}

impl Store {
    /// The current policy version number (0 when no principal or grant was ever committed).
    pub fn policy_version(&self) -> Result<u64> {
        self.policy_chain().current()
    }

    /// The current policy (departments, users, grants, approvals); empty before the first
    /// change, which denies everything.
    pub fn policy(&self) -> Result<Policy> {
        let chain = self.policy_chain();
        match chain.current()? {
            0 => Ok(Policy::default()),
            v => Ok(chain.read::<PolicyVersion>(v)?.policy),
        }
    }

    /// Every policy version, oldest first.
    pub fn policy_history(&self) -> Result<Vec<PolicyVersion>> {
        let chain = self.policy_chain();
        chain.list()?.into_iter().map(|v| chain.read(v)).collect()
    }
}

impl Writer<'_> {
    /// Change the policy: `f` edits a copy of the current policy; if it succeeds the result is
    /// committed as a new version by `author`, otherwise nothing changes.
    pub fn update_policy<T>(
        &mut self,
        author: &str,
        note: &str,
        f: impl FnOnce(&mut Policy, &Catalog) -> Result<T>,
    ) -> Result<T> {
        let store = self.store();
        let chain = store.policy_chain();
        let mut policy = store.policy()?;
        let catalog = store.catalog()?;
        let out = match f(&mut policy, &catalog) {
            Ok(o) => o,
            Err(e) => {
                // Refused administrative acts are decisions too.
                self.record(
                    "policy_denied",
                    author,
                    serde_json::json!({ "note": note, "reason": e.to_string() }),
                )?;
                return Err(e);
            }
        };
        let version = chain.current()? + 1;
        chain.commit(
            version,
            &PolicyVersion {
                version,
                author: author.to_string(),
                created_at: Utc::now(),
                note: note.to_string(),
                policy,
            },
        )?;
        self.record(
            "policy",
            author,
            serde_json::json!({ "policy_version": version, "note": note }),
        )?;
        Ok(out)
    }
}
