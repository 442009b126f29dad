//! The store's settings: the limits every query runs under. Versioned like the catalog (a
//! change is an act of a platform administrator, recorded before it takes effect); a store that
//! never changed them runs with the defaults.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::authority::Act;
use super::{Store, Writer};

/// Bounds on one query, whoever runs it. A query that reaches one fails with
/// [`Error::LimitExceeded`] and its completion record says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryLimits {
    /// Memory a query's operators may reserve (sorts, joins, aggregates, recursion buffers).
    pub memory_bytes: u64,
    /// Iterations a recursive CTE may run.
    pub recursion_depth: u32,
    /// Wall-clock time from planning to the last batch, in milliseconds.
    pub time_limit_ms: u64,
}

impl Default for QueryLimits {
    /// 2 GiB, 100 iterations, 10 minutes: generous for the workloads the regulations describe
    /// (lookups, scoped lists, statistics), small enough that one principal cannot take the
    /// machine.
    fn default() -> Self {
        QueryLimits {
            memory_bytes: 2 << 30,
            recursion_depth: 100,
            time_limit_ms: 600_000,
        }
    }
}

/// Everything the store lets its administrators tune.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Limits of every query.
    #[serde(default)]
    pub query: QueryLimits,
}

/// One committed settings version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingsVersion {
    /// Version number.
    pub version: u64,
    /// Who changed them.
    pub author: String,
    /// When.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Why.
    pub note: String,
    /// The settings.
    pub settings: Settings,
    /// The audit trail's head when committed (see [`super::Manifest::anchor`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<crate::audit::Checkpoint>,
}

impl Settings {
    fn check(&self) -> Result<()> {
        let q = &self.query;
        if q.memory_bytes < 16 << 20 {
            return Err(Error::invalid("query memory limit below 16 MiB"));
        }
        if q.recursion_depth == 0 {
            return Err(Error::invalid("recursion depth limit must be at least 1"));
        }
        if q.time_limit_ms < 100 {
            return Err(Error::invalid("query time limit below 100 ms"));
        }
        Ok(())
    }
}

impl Store {
    /// The settings in force (the defaults until a first change).
    pub fn settings(&self) -> Result<Settings> {
        let chain = self.settings_chain();
        let doc = self.current_doc(
            &chain,
            || Ok(Settings::default()),
            |v: SettingsVersion| v.settings,
        )?;
        Ok(doc.as_ref().clone())
    }
}

impl Writer<'_> {
    /// Replace the settings, as a platform administrator, recorded before they apply.
    pub fn update_settings(&mut self, settings: Settings, note: &str) -> Result<SettingsVersion> {
        self.authorize(&Act::ChangeSettings)?;
        settings.check()?;
        let chain = self.store().settings_chain();
        let version = chain.current()? + 1;
        let doc = SettingsVersion {
            version,
            author: self.actor().to_string(),
            created_at: chrono::Utc::now(),
            note: note.to_string(),
            settings,
            anchor: Some(self.anchor()?),
        };
        self.commit_recorded(
            &chain,
            version,
            &doc,
            "settings",
            serde_json::json!({ "settings_version": version, "note": note, "settings": doc.settings }),
        )?;
        Ok(doc)
    }
}
