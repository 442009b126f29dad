//! The one writer of a store: catalog changes, manifest commits and vacuum, each recorded on
//! the audit trail the writer was handed.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;

use crate::audit::AuditLog;
use crate::catalog::{Catalog, CatalogFile};
use crate::error::{Error, IoContext, Result};

use super::{CatalogVersion, Manifest, Store};

/// The one writer of a store; holds the lock until dropped (or the process dies, when the OS
/// releases it).
#[derive(Debug)]
pub struct Writer<'s> {
    pub(crate) store: &'s Store,
    audit: Arc<AuditLog>,
    _lock: File,
}

/// What [`Writer::vacuum`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VacuumReport {
    /// Versions whose manifests were removed.
    pub versions_removed: Vec<u64>,
    /// Files removed (data, deletion vectors, indexes, crash leftovers).
    pub files_removed: usize,
}

impl<'s> Writer<'s> {
    pub(super) fn new(store: &'s Store, audit: Arc<AuditLog>, lock: File) -> Writer<'s> {
        Writer {
            store,
            audit,
            _lock: lock,
        }
    }

    /// Append an administrative record (who did what) to the writer's audit trail.
    pub(crate) fn record(&self, kind: &str, actor: &str, body: serde_json::Value) -> Result<u64> {
        self.audit.append(kind, actor, body)
    }

    /// The store written to.
    pub fn store(&self) -> &Store {
        self.store
    }

    pub(super) fn commit_catalog(
        &mut self,
        catalog: Catalog,
        changes: Vec<String>,
        author: &str,
        note: &str,
    ) -> Result<CatalogVersion> {
        let chain = self.store.catalog_chain();
        let version = chain.current()? + 1;
        let cv = CatalogVersion {
            version,
            author: author.to_string(),
            created_at: Utc::now(),
            note: note.to_string(),
            changes,
            catalog,
        };
        chain.commit(version, &cv)?;
        self.record(
            "catalog",
            author,
            serde_json::json!({ "catalog_version": version, "note": note, "changes": cv.changes }),
        )?;
        Ok(cv)
    }

    /// Apply a catalog file (add or replace datasets and code tables) as a new catalog version.
    /// A file that changes nothing commits nothing and returns the current version.
    pub fn apply_catalog(
        &mut self,
        file: CatalogFile,
        author: &str,
        note: &str,
    ) -> Result<CatalogVersion> {
        if author.trim().is_empty() {
            return Err(Error::invalid(
                "a catalog change needs an author (real-name accountability)",
            ));
        }
        let current = self.store.catalog_at(self.store.catalog_version()?)?;
        let mut next = current.catalog.clone();
        let changes = next.apply(file)?;
        if changes.is_empty() {
            return Ok(current);
        }
        self.commit_catalog(next, changes, author, note)
    }

    /// Change the policy: `f` edits a copy of the current policy; if it succeeds the result is
    /// committed as a new version by `author`, otherwise nothing changes.
    /// Commit a new manifest for its dataset (the data files must already be durable).
    pub(crate) fn commit_manifest(&mut self, manifest: &Manifest) -> Result<()> {
        let chain = self.store.manifest_chain(&manifest.dataset.name)?;
        let current = chain.current()?;
        if manifest.version != current + 1 || manifest.parent.unwrap_or(0) != current {
            return Err(Error::Corrupt(format!(
                "manifest version {} does not follow current version {current}",
                manifest.version
            )));
        }
        chain.commit(manifest.version, manifest)?;
        self.record(
            "load",
            &manifest.handover.handover_person,
            serde_json::json!({
                "dataset": manifest.dataset.name,
                "version": manifest.version,
                "operation": manifest.operation,
                "live_rows": manifest.live_rows,
                "handover": manifest.handover,
            }),
        )?;
        Ok(())
    }

    /// Remove all but the newest `keep` versions of `dataset` (at least 1), and every file no
    /// kept version references. Readers pinned to a removed version lose it: vacuum is explicit.
    pub fn vacuum(&mut self, dataset: &str, keep: usize) -> Result<VacuumReport> {
        let keep = keep.max(1);
        // Only datasets of the catalog: the name becomes a directory that files are deleted in.
        crate::catalog::check_dataset_name(dataset)?;
        self.store.catalog()?.dataset(dataset)?;
        let chain = self.store.manifest_chain(dataset)?;
        let versions = chain.list()?;
        let split = versions.len().saturating_sub(keep);
        let (old, kept) = versions.split_at(split);
        let mut referenced = std::collections::HashSet::new();
        for v in kept {
            let m: Manifest = chain.read(*v)?;
            for f in &m.files {
                referenced.insert(f.path.clone());
                if let Some(d) = &f.deletes {
                    referenced.insert(d.clone());
                }
            }
            referenced.insert(m.key_index.clone());
            referenced.extend(m.bitmap_indexes.values().cloned());
        }
        let mut report = VacuumReport::default();
        for v in old {
            let p = chain.doc_path(*v);
            std::fs::remove_file(&p).at(&p)?;
            report.versions_removed.push(*v);
        }
        let dir = self.store.dataset_dir(dataset)?;
        for sub in ["data", "deletes", "index"] {
            report.files_removed += remove_unreferenced(&dir, &dir.join(sub), &referenced)?;
        }
        self.record(
            "vacuum",
            "govshare",
            serde_json::json!({ "dataset": dataset, "versions_removed": report.versions_removed, "files_removed": report.files_removed }),
        )?;
        Ok(report)
    }
}

fn remove_unreferenced(
    base: &Path,
    dir: &Path,
    keep: &std::collections::HashSet<String>,
) -> Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source: e,
            });
        }
    };
    for entry in entries {
        let path = entry.at(dir)?.path();
        if path.is_dir() {
            removed += remove_unreferenced(base, &path, keep)?;
            let _ = std::fs::remove_dir(&path); // only succeeds when now empty
            continue;
        }
        let rel = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        if !keep.contains(&rel) {
            std::fs::remove_file(&path).at(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}
