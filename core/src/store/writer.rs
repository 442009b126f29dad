//! The one writer of a store: catalog changes, manifest commits and vacuum, each authorised
//! for the writer's actor and recorded on the audit trail the writer was handed.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;

use crate::audit::AuditLog;
use crate::calendar::{Clock, SystemClock};
use crate::catalog::{Catalog, CatalogFile};
use crate::error::{Error, IoContext, Result};

use super::authority::{Act, Authorizer};
use super::{CatalogVersion, DocChain, Manifest, Store};
use crate::audit::Checkpoint;

/// The one writer of a store, acting for one named user: every act is authorised for that
/// user first and recorded under their name. Holds the lock until dropped (or the process
/// dies, when the OS releases it).
pub struct Writer<'s> {
    pub(crate) store: &'s Store,
    audit: Arc<AuditLog>,
    actor: String,
    authorizer: &'static dyn Authorizer,
    clock: Arc<dyn Clock>,
    _lock: File,
}

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Writer({} as {})",
            self.store.root().display(),
            self.actor
        )
    }
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
    pub(super) fn new(
        store: &'s Store,
        audit: Arc<AuditLog>,
        lock: File,
        actor: &str,
        authorizer: &'static dyn Authorizer,
    ) -> Writer<'s> {
        Writer {
            store,
            audit,
            actor: actor.to_string(),
            authorizer,
            clock: Arc::new(SystemClock),
            _lock: lock,
        }
    }

    /// Count deadlines and stamp workflow records by `clock` (the engine's, which tests move).
    pub(crate) fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// The hash the store's trail chains with (its deliverables' digests follow it).
    pub(crate) fn chain_hash(&self) -> crate::audit::ChainHash {
        self.audit.chain_hash()
    }

    /// Now, by the writer's clock.
    pub fn now(&self) -> chrono::DateTime<Utc> {
        self.clock.now()
    }

    /// The user this writer acts for.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// Ask the authoriser whether the actor may do `act`; a refusal is recorded (refused acts
    /// are decisions too) and returned.
    pub(crate) fn authorize(&self, act: &Act<'_>) -> Result<()> {
        if let Err(e) = self.authorizer.authorize(self.store, &self.actor, act) {
            self.record(
                "act_denied",
                &self.actor,
                serde_json::json!({ "act": act.to_string(), "reason": e.to_string() }),
            )?;
            return Err(e);
        }
        Ok(())
    }

    /// Append an administrative record (who did what) to the writer's audit trail.
    pub(crate) fn record(&self, kind: &str, actor: &str, body: serde_json::Value) -> Result<u64> {
        self.audit.append(kind, actor, body)
    }

    /// The store written to.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// The trail's head now: documents carry it as their anchor.
    pub(crate) fn anchor(&self) -> Result<Checkpoint> {
        self.audit.checkpoint()
    }

    /// Commit `doc` as version `v` of `chain` with its audit record *before* it takes effect:
    /// the document is written (durable, not current), then the record — `kind`, `body` and a
    /// `commit` entry naming the chain, the version and the document's digest — then the
    /// pointer swap. A crash before the record leaves nothing in force; a crash after it
    /// leaves a recorded version that the next writer makes current ([`Writer::recover`]).
    pub(crate) fn commit_recorded<T: serde::Serialize>(
        &mut self,
        chain: &DocChain,
        v: u64,
        doc: &T,
        kind: &str,
        mut body: serde_json::Value,
    ) -> Result<u64> {
        let bytes = chain.write_doc(v, doc)?;
        crate::durable::failpoint("after-document");
        if let Some(o) = body.as_object_mut() {
            o.insert(
                "commit".into(),
                serde_json::json!({
                    "chain": chain.id,
                    "version": v,
                    "doc_blake3": blake3::hash(&bytes).to_hex().to_string(),
                }),
            );
        }
        let seq = self.record(kind, &self.actor.clone(), body)?;
        chain.swap(v)?;
        Ok(seq)
    }

    /// Reconcile commits a crash interrupted (run when a writer takes the lock): a document
    /// one past its chain's `CURRENT` whose audit record exists (same chain, version and
    /// digest) was in force by its record, and is made current (`recovered`); one without a
    /// record never took effect and is removed (`discarded`). Either way the trail says so.
    pub(crate) fn recover(&mut self) -> Result<()> {
        let mut chains = vec![
            self.store.catalog_chain(),
            self.store.policy_chain(),
            self.store.settings_chain(),
            self.store.calendar_chain(),
        ];
        let datasets = self.store.root().join("datasets");
        if let Ok(entries) = std::fs::read_dir(&datasets) {
            for e in entries {
                let name = e.at(&datasets)?.file_name().to_string_lossy().into_owned();
                if let Ok(c) = self.store.manifest_chain(&name) {
                    chains.push(c);
                }
            }
        }
        let mut records = None;
        for chain in chains {
            let v = chain.current()? + 1;
            let path = chain.doc_path(v);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if records.is_none() {
                records = Some(self.audit.records()?);
            }
            let digest = blake3::hash(&bytes).to_hex().to_string();
            let recorded = records.iter().flatten().rev().find(|r| {
                let c = &r.body["commit"];
                c["chain"] == chain.id.as_str()
                    && c["version"] == v
                    && c["doc_blake3"] == digest.as_str()
            });
            match recorded {
                Some(r) => {
                    let seq = r.seq;
                    chain.swap(v)?;
                    self.record(
                        "recovered",
                        &self.actor.clone(),
                        serde_json::json!({ "chain": chain.id, "version": v, "record": seq,
                            "note": "a commit interrupted after its audit record was completed" }),
                    )?;
                }
                None => {
                    std::fs::remove_file(&path).at(&path)?;
                    self.record(
                        "discarded",
                        &self.actor.clone(),
                        serde_json::json!({ "chain": chain.id, "version": v,
                            "note": "a commit interrupted before its audit record never took effect" }),
                    )?;
                }
            }
        }
        Ok(())
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
            anchor: Some(self.anchor()?),
        };
        self.commit_recorded(
            &chain,
            version,
            &cv,
            "catalog",
            serde_json::json!({ "catalog_version": version, "note": note, "changes": cv.changes }),
        )?;
        Ok(cv)
    }

    /// Apply a catalog file (add or replace datasets and code tables) as a new catalog version,
    /// authored by the writer's actor: a change that moves an item between share types is a
    /// reclassification (the coordinator's act), any other change the platform
    /// administrator's. A file that changes nothing commits nothing and returns the current
    /// version.
    pub fn apply_catalog(&mut self, file: CatalogFile, note: &str) -> Result<CatalogVersion> {
        let current = self.store.catalog_at(self.store.catalog_version()?)?;
        let mut next = current.catalog.clone();
        let changes = next.apply(file)?;
        if changes.is_empty() {
            return Ok(current);
        }
        let reclassified = crate::catalog::reclassified(&current.catalog, &next);
        if reclassified.is_empty() {
            let datasets = crate::catalog::changed_datasets(&current.catalog, &next);
            self.authorize(&Act::ChangeCatalog {
                datasets: &datasets,
            })?;
        } else {
            self.authorize(&Act::Reclassify {
                items: &reclassified,
            })?;
        }
        let author = self.actor.clone();
        self.commit_catalog(next, changes, &author, note)
    }

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
        self.commit_recorded(
            &chain,
            manifest.version,
            manifest,
            "load",
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

    /// Copy the whole store into the new directory `dest` (see [`super::backup`]), holding
    /// the writer lock so nothing commits meanwhile; with `base`, files unchanged since that
    /// earlier backup are referenced instead of copied. An operator's act: the trail records
    /// who copied the store where *before* the copy exists, then the manifest's digest.
    /// Returns the manifest and its blake3.
    pub fn backup(
        &mut self,
        dest: &std::path::Path,
        base: Option<&std::path::Path>,
    ) -> Result<(super::backup::BackupManifest, String)> {
        self.authorize(&Act::Backup)?;
        let actor = self.actor.clone();
        let place = serde_json::json!({
            "dest": dest.display().to_string(),
            "base": base.map(|b| b.display().to_string()),
        });
        let seq = self.record("backup", &actor, place)?;
        self.audit.flush()?;
        let head = self.anchor()?;
        let hash = self.audit.chain_hash();
        let taken = super::backup::take(
            self.store.root(),
            dest,
            base,
            &actor,
            head,
            self.now(),
            hash,
        );
        let body = match &taken {
            Ok((m, digest, sm3)) => {
                let mut body = serde_json::json!({
                    "backup": seq,
                    "outcome": "completed",
                    "manifest_blake3": digest,
                    "files": m.files.len(),
                    "stored_bytes": m.stored_bytes(),
                    "audit_head": m.audit_head.seq,
                });
                if let Some(sm3) = sm3 {
                    body["manifest_sm3"] = sm3.clone().into();
                }
                body
            }
            Err(e) => {
                serde_json::json!({ "backup": seq, "outcome": "failed", "reason": e.to_string() })
            }
        };
        self.record("backup_end", &actor, body)?;
        taken.map(|(m, digest, _)| (m, digest))
    }

    /// Remove all but the newest `keep` versions of `dataset` (at least 1), and every file no
    /// kept version references. Readers pinned to a removed version lose it: vacuum is explicit.
    pub fn vacuum(&mut self, dataset: &str, keep: usize) -> Result<VacuumReport> {
        let keep = keep.max(1);
        // Only datasets of the catalog: the name becomes a directory that files are deleted in.
        crate::catalog::check_dataset_name(dataset)?;
        self.store.catalog()?.dataset(dataset)?;
        self.authorize(&Act::Vacuum { dataset })?;
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
                if let Some(r) = &f.row_blocks {
                    referenced.insert(r.clone());
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
            &self.actor,
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
