//! Open-data releases (数据开放, 001 §18-19, 002 §25-26): a providing department publishes a
//! de-identified, k-anonymous extract of one dataset version.
//!
//! A release is an act, not a session read: only the approver of the department that
//! provides every released item may do it. What may enter follows the catalog's open types:
//! an unconditionally open item is released as it is; a conditionally open item only
//! de-identified — as a quasi-identifier, generalised by its hierarchy (region, date, code)
//! until every released group holds at least `k` rows ([`crate::access::anonymize`]); a
//! not-open item never. The request is recorded durably (`open_release`, allowed or denied)
//! before a row is read; the extract and its manifest (dataset, version, generalisation, k
//! reached, suppressed rows, loss, blake3 of the file) are written under temporary names and
//! renamed when complete, and the manifest's blake3 is in an `open_release_done` record.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::access::anonymize::{Generalisation, Hierarchy, KAnonymity, anonymize};
use crate::access::policy::Role;
use crate::catalog::OpenType;
use crate::engine::Engine;
use crate::engine::export::{ExportFile, ExportFormat, Sink, check_files, manifest_path};
use crate::error::{Error, IoContext, Result};

/// What to release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSpec {
    /// Dataset.
    pub dataset: String,
    /// The items, in the order the extract has them.
    pub fields: Vec<String>,
    /// Every released group holds at least this many rows (≥ 2).
    pub k: u64,
    /// At most this share of rows may be suppressed (0 to 0.5).
    pub max_suppression: f64,
}

/// What a release published: written beside the extract, its blake3 on the trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    /// Dataset.
    pub dataset: String,
    /// Data version released.
    pub version: u64,
    /// Who released it, and their department.
    pub released_by: String,
    /// The providing department.
    pub department: String,
    /// The items, in order.
    pub fields: Vec<String>,
    /// Per quasi-identifier: the item and the level it was generalised to.
    pub generalisation: Vec<(String, String)>,
    /// The k asked for, and the smallest released group (≥ k).
    pub k: u64,
    /// The smallest released group.
    pub smallest_group: u64,
    /// The share of rows that could have been suppressed.
    pub max_suppression: f64,
    /// Live rows of the version.
    pub rows: u64,
    /// Rows released.
    pub released: u64,
    /// Rows suppressed (in groups smaller than k).
    pub suppressed: u64,
    /// Groups released.
    pub groups: u64,
    /// Information loss, 0 (as stored) to 1 (nothing left): see [`crate::access::anonymize`].
    pub loss: f64,
    /// The extract.
    pub files: Vec<ExportFile>,
    /// The trail record of the request.
    pub release_seq: u64,
    /// When.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A release as done: its manifest, the manifest's blake3 (as on the trail), and every
/// generalisation considered.
#[derive(Debug, Clone)]
pub struct Release {
    /// The manifest.
    pub manifest: ReleaseManifest,
    /// blake3 of the manifest's bytes, also in the `open_release_done` record.
    pub manifest_blake3: String,
    /// SM3 of the manifest's bytes, in a store made with national cryptography (also on the
    /// trail).
    pub manifest_sm3: Option<String>,
    /// Every node of the generalisation lattice with its loss and suppression.
    pub considered: Vec<Generalisation>,
}

/// The extract's name stem: `<dataset>.open` (`<dataset>.open.parquet` and its manifest).
fn stem(dataset: &str) -> String {
    format!("{dataset}.open")
}

/// Where a release of `dataset` into `dir` puts its manifest.
pub fn release_manifest_path(dir: &Path, dataset: &str) -> std::path::PathBuf {
    manifest_path(dir, &stem(dataset), ExportFormat::Parquet)
}

/// Check a received release against its manifest: the extract is there with its size and
/// blake3. Returns the manifest and its blake3 (to compare with the trail's
/// `open_release_done` record).
pub fn verify_release(manifest: &Path) -> Result<(ReleaseManifest, String)> {
    let bytes = std::fs::read(manifest).at(manifest)?;
    let m: ReleaseManifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Corrupt(format!("{}: {e}", manifest.display())))?;
    check_files(manifest, &m.files)?;
    Ok((m, blake3::hash(&bytes).to_hex().to_string()))
}

impl Engine {
    /// Publish a k-anonymous open-data extract of `spec.dataset`'s current version into `dir`
    /// as `<dataset>.open.parquet` with a manifest `<dataset>.open.parquet.manifest.json`, as
    /// `by`, the provider-approver of the department providing every item. Refused (and the
    /// refusal recorded) for a not-open item, a conditionally open item with no
    /// generalisation hierarchy, or when no generalisation reaches `k` within the allowed
    /// suppression; existing files are never overwritten, and a failed release leaves none.
    pub fn release_open_data(&self, by: &str, spec: &ReleaseSpec, dir: &Path) -> Result<Release> {
        let planned = self.plan_release(by, spec, dir);
        let mut body = serde_json::json!({
            "dataset": spec.dataset, "fields": spec.fields, "k": spec.k,
            "max_suppression": spec.max_suppression,
        });
        match &planned {
            Ok(_) => body["outcome"] = "allowed".into(),
            Err(e) => {
                body["outcome"] = "denied".into();
                body["reason"] = e.to_string().into();
            }
        }
        // Durable before a row is read: the request is on the trail whatever follows.
        let seq = self.inner.audit.append("open_release", by, body)?;
        let (department, quasi) = planned?;
        let done = self.write_release(by, spec, dir, seq, department, &quasi);
        let record = match &done {
            Ok(r) => {
                let mut body = serde_json::json!({
                    "release": seq, "outcome": "released",
                    "version": r.manifest.version,
                    "released": r.manifest.released, "suppressed": r.manifest.suppressed,
                    "smallest_group": r.manifest.smallest_group,
                    "generalisation": r.manifest.generalisation,
                    "manifest_blake3": r.manifest_blake3,
                    "files": r.manifest.files.iter().map(|f| &f.blake3).collect::<Vec<_>>(),
                });
                if let Some(sm3) = &r.manifest_sm3 {
                    body["manifest_sm3"] = sm3.clone().into();
                    body["files_sm3"] = r.manifest.files.iter().map(|f| f.sm3.clone()).collect();
                }
                body
            }
            Err(e) => serde_json::json!({
                "release": seq, "outcome": "failed", "reason": e.to_string(),
            }),
        };
        self.inner.audit.append("open_release_done", by, record)?;
        done
    }

    /// Who releases, and what: the releasing department and the quasi-identifiers with their
    /// hierarchies, or why not.
    fn plan_release(
        &self,
        by: &str,
        spec: &ReleaseSpec,
        dir: &Path,
    ) -> Result<(String, Vec<(String, Hierarchy)>)> {
        crate::catalog::check_dataset_name(&spec.dataset)?;
        let policy = self.store().policy()?;
        let what = format!("release open data of '{}'", spec.dataset);
        let user = policy.require(by, Role::ProviderApprover, &what)?;
        let catalog = self.store().catalog()?;
        let def = catalog.dataset(&spec.dataset)?;
        if spec.fields.is_empty() {
            return Err(Error::invalid("a release needs at least one item"));
        }
        let mut quasi = Vec::new();
        for (i, name) in spec.fields.iter().enumerate() {
            if spec.fields[..i].contains(name) {
                return Err(Error::invalid(format!("item '{name}' is listed twice")));
            }
            let f = def.require_field(name)?;
            let source = def.source_of(f);
            if source != user.department {
                return Err(Error::AccessDenied(format!(
                    "user '{by}' may not {what}: {}.{name} is provided by department '{source}', and only its provider opens it",
                    def.name
                )));
            }
            match f.open {
                OpenType::NotOpen => {
                    return Err(Error::AccessDenied(format!(
                        "{}.{name} ({}) is not open: it never enters an open-data release (001 §18)",
                        def.name, f.label
                    )));
                }
                OpenType::Conditional => match Hierarchy::of(f) {
                    Some(h) => quasi.push((name.clone(), h)),
                    None => {
                        return Err(Error::invalid(format!(
                            "{}.{name} is conditionally open but has no generalisation hierarchy (a region code, a date or a code-table value): it cannot be released de-identified",
                            def.name
                        )));
                    }
                },
                OpenType::Unconditional => {}
            }
        }
        let name = stem(&spec.dataset);
        crate::engine::export::check_target(dir, &name, ExportFormat::Parquet)?;
        Ok((user.department.clone(), quasi))
    }

    fn write_release(
        &self,
        by: &str,
        spec: &ReleaseSpec,
        dir: &Path,
        seq: u64,
        department: String,
        quasi: &[(String, Hierarchy)],
    ) -> Result<Release> {
        let snap = self.store().pinned(&spec.dataset)?;
        let columns: Vec<&str> = spec.fields.iter().map(String::as_str).collect();
        let batches = snap.read(None, Some(&columns))?;
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        // The order within a group comes from a key no reader of the extract knows.
        let seed = blake3::keyed_hash(&self.inner.secret, format!("open_release {seq}").as_bytes());
        let mut seed8 = [0u8; 8];
        seed8.copy_from_slice(&seed.as_bytes()[..8]);
        let anon = anonymize(
            &batches,
            &spec.fields,
            quasi,
            KAnonymity {
                k: spec.k,
                max_suppression: spec.max_suppression,
            },
            u64::from_le_bytes(seed8),
        )?;
        drop(batches);
        let name = stem(&spec.dataset);
        let hash = self.inner.audit.chain_hash();
        let mut sink = Sink::create(dir, &name, ExportFormat::Parquet, &anon.schema, hash)?;
        let written = anon.batches.iter().try_for_each(|b| sink.write(b));
        if let Err(e) = written {
            sink.abandon();
            return Err(e);
        }
        let file = sink.finish()?;
        let c = &anon.chosen;
        let manifest = ReleaseManifest {
            dataset: spec.dataset.clone(),
            version: snap.version(),
            released_by: by.to_string(),
            department,
            fields: spec.fields.clone(),
            generalisation: c.levels.clone(),
            k: spec.k,
            smallest_group: c.smallest_group,
            max_suppression: spec.max_suppression,
            rows,
            released: c.released,
            suppressed: c.suppressed,
            groups: c.groups,
            loss: c.loss,
            files: vec![file],
            release_seq: seq,
            created_at: self.now(),
        };
        let path = release_manifest_path(dir, &spec.dataset);
        let (digest, sm3) =
            crate::engine::export::write_json(&path, &manifest, "release manifest", hash)?;
        Ok(Release {
            manifest,
            manifest_blake3: digest,
            manifest_sm3: sm3,
            considered: anon.considered,
        })
    }
}
