//! The store: a directory of immutable Parquet files, versioned manifests and indexes.
//!
//! ```text
//! <store>/govshare-store.json          marker + format version
//! <store>/LOCK                         writer lock (one writer at a time, across processes)
//! <store>/catalog/CURRENT, vNNNNNNNN.json          catalog versions
//! <store>/datasets/<name>/CURRENT                  current data version of the dataset
//! <store>/datasets/<name>/manifests/vNNNNNNNN.json one manifest per version
//! <store>/datasets/<name>/data/*.parquet           immutable data files
//! <store>/datasets/<name>/deletes/*.dv             roaring deletion vectors (per file)
//! <store>/datasets/<name>/index/vN/*               key and bitmap indexes of version N
//! <store>/rejects/*.csv                            rejected rows of each load
//! ```
//!
//! **Commit protocol.** A writer writes every new file under a new name, fsyncs it, writes the
//! manifest `vN.json` (temp file, fsync, rename), and only then swaps `CURRENT` (temp file,
//! fsync, rename, fsync of the directory). A crash at any point leaves `CURRENT` naming the
//! last complete version; leftovers of the interrupted write are unreferenced and removed by
//! [`Writer::vacuum`]. Readers never take a lock: they read `CURRENT` once and pin that
//! manifest, whose files are never rewritten in place.
//!
//! **Row ids.** Within a version, the files in manifest order are numbered consecutively:
//! row id = `row_base` of its file + offset in the file. Deleted rows keep their ids (they are
//! masked by the file's deletion vector), so indexes of a version stay valid for it.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use roaring::RoaringBitmap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, CatalogFile, DatasetDef, IndexKind};
use crate::error::{Error, IoContext, Result};
use crate::index::{BitmapIndex, KeyIndex, region_prefix};

/// On-disk format version written in the store marker.
pub const FORMAT_VERSION: u32 = 1;
const MARKER: &str = "govshare-store.json";

/// A handover record (数据交接清单, 000 §15(1)): who delivered what, how, and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    /// Providing department.
    pub provider_dept: String,
    /// Person who handed the data over.
    pub handover_person: String,
    /// Person who received it on the platform side.
    pub receiver: String,
    /// Delivery method (file upload, interface, generated, compaction...).
    pub method: String,
    /// Where the data came from (file name, or a description).
    pub source: String,
    /// blake3 digest (hex) of the input as delivered.
    pub input_digest: String,
    /// When the load started.
    pub started_at: DateTime<Utc>,
    /// When the load committed.
    pub completed_at: DateTime<Utc>,
    /// Rows read from the input.
    pub rows_read: u64,
    /// Rows accepted (inserted or upserted).
    pub rows_accepted: u64,
    /// Rows rejected by validation.
    pub rows_rejected: u64,
    /// Rows deleted by key (incremental loads).
    pub rows_deleted: u64,
}

/// One immutable data file of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFile {
    /// Path relative to the dataset directory.
    pub path: String,
    /// Rows in the file (including deleted ones).
    pub rows: u64,
    /// Row id of the file's first row.
    pub row_base: u32,
    /// Rows per Parquet row group, in order.
    pub row_groups: Vec<u64>,
    /// Deletion vector (offsets within this file), relative path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes: Option<String>,
    /// Number of deleted rows.
    #[serde(default)]
    pub deleted: u64,
}

/// How a version came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// A full load replaced the dataset.
    Full,
    /// An incremental load upserted and deleted by key.
    Incremental,
    /// Compaction rewrote the live rows, clustered, without deletion vectors.
    Compaction,
}

/// The manifest of one version of one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub format: u32,
    /// The dataset definition the data was written with.
    pub dataset: DatasetDef,
    /// This version (1, 2, ...).
    pub version: u64,
    /// The version it was derived from.
    pub parent: Option<u64>,
    /// Catalog version in force at commit.
    pub catalog_version: u64,
    /// Commit time.
    pub created_at: DateTime<Utc>,
    /// What produced it.
    pub operation: Operation,
    /// Data files in row-id order.
    pub files: Vec<DataFile>,
    /// Key index file, relative path.
    pub key_index: String,
    /// Bitmap index files by field, relative paths.
    pub bitmap_indexes: BTreeMap<String, String>,
    /// Rows visible in this version.
    pub live_rows: u64,
    /// The handover record of the load that produced it.
    pub handover: Handover,
}

impl Manifest {
    /// Total row ids of the version (live and deleted).
    pub fn total_rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
}

/// One committed catalog version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogVersion {
    /// Version number (1 is the built-in catalog written by `init`).
    pub version: u64,
    /// Who made the change.
    pub author: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Why (free text from the author).
    pub note: String,
    /// What changed, one line each (see [`crate::catalog::diff`]).
    pub changes: Vec<String>,
    /// The whole catalog at this version.
    pub catalog: Catalog,
}

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
    pub policy: crate::policy::Policy,
}

/// Write `bytes` to `path` durably: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    {
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
    }
    std::fs::rename(&tmp, path).at(path)?;
    sync_dir(path)
}

/// fsync the directory holding `path`, so a rename in it is durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
    }
    Ok(())
}

/// Test hook: when `GOVSHARE_FAILPOINT` names this point, the process aborts right here, as a
/// crash would. Used by the crash-safety tests; costs one environment read per commit.
pub(crate) fn failpoint(name: &str) {
    if std::env::var("GOVSHARE_FAILPOINT").is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

/// A chain of versioned JSON documents with a `CURRENT` pointer.
struct DocChain {
    dir: PathBuf,
    what: &'static str,
}

impl DocChain {
    fn doc_path(&self, v: u64) -> PathBuf {
        self.dir.join(format!("v{v:08}.json"))
    }

    fn pointer(&self) -> PathBuf {
        self.dir.join("CURRENT")
    }

    /// The current version, 0 when nothing was committed.
    fn current(&self) -> Result<u64> {
        let p = self.pointer();
        match std::fs::read_to_string(&p) {
            Ok(s) => s.trim().parse().map_err(|_| {
                Error::Corrupt(format!("{} does not hold a version number", p.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    fn read<T: DeserializeOwned>(&self, v: u64) -> Result<T> {
        let p = self.doc_path(v);
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!(
                    "{} version {v} does not exist (never committed, or vacuumed)",
                    self.what
                )));
            }
            Err(e) => return Err(Error::Io { path: p, source: e }),
        };
        serde_json::from_slice(&text).map_err(|e| Error::Corrupt(format!("{}: {e}", p.display())))
    }

    /// Committed versions still on disk, oldest first.
    fn list(&self) -> Result<Vec<u64>> {
        let current = self.current()?;
        let mut out = Vec::new();
        let dir = match std::fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(Error::Io {
                    path: self.dir.clone(),
                    source: e,
                });
            }
        };
        for entry in dir {
            let name = entry.at(&self.dir)?.file_name();
            let name = name.to_string_lossy();
            if let Some(v) = name
                .strip_prefix('v')
                .and_then(|r| r.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
                && v <= current
            {
                out.push(v);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Commit `doc` as version `v`: document first, then the pointer swap.
    fn commit<T: Serialize>(&self, v: u64, doc: &T) -> Result<()> {
        std::fs::create_dir_all(&self.dir).at(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(doc).map_err(|e| Error::Serde {
            what: self.what.into(),
            message: e.to_string(),
        })?;
        write_durable(&self.doc_path(v), &bytes)?;
        failpoint("before-current-swap");
        write_durable(&self.pointer(), format!("{v}\n").as_bytes())
    }
}

/// A govshare store directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Marker {
    format: u32,
    created_at: DateTime<Utc>,
}

impl Store {
    /// Create a store at `root` (or open it, if one is there), with the built-in catalog as
    /// catalog version 1.
    pub fn init(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        if root.join(MARKER).exists() {
            return Store::open(&root);
        }
        std::fs::create_dir_all(&root).at(&root)?;
        let store = Store { root };
        let mut w = store.writer()?;
        let marker = Marker {
            format: FORMAT_VERSION,
            created_at: Utc::now(),
        };
        if store.catalog_chain().current()? == 0 {
            let catalog = Catalog::builtin();
            let changes = crate::catalog::diff(&Catalog::default(), &catalog);
            w.commit_catalog(catalog, changes, "govshare init", "built-in base databases")?;
        }
        let bytes = serde_json::to_vec_pretty(&marker).map_err(|e| Error::Serde {
            what: "store marker".into(),
            message: e.to_string(),
        })?;
        // The marker is written last: a directory without it is not (yet) a store.
        write_durable(&store.root.join(MARKER), &bytes)?;
        drop(w);
        Ok(store)
    }

    /// Open an existing store.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        let marker_path = root.join(MARKER);
        let bytes = match std::fs::read(&marker_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!(
                    "no govshare store at {} (create one with `govshare init`)",
                    root.display()
                )));
            }
            Err(e) => {
                return Err(Error::Io {
                    path: marker_path,
                    source: e,
                });
            }
        };
        let marker: Marker = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", marker_path.display())))?;
        if marker.format != FORMAT_VERSION {
            return Err(Error::Corrupt(format!(
                "store format {} is not supported (this build reads format {FORMAT_VERSION})",
                marker.format
            )));
        }
        Ok(Store { root })
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn catalog_chain(&self) -> DocChain {
        DocChain {
            dir: self.root.join("catalog"),
            what: "catalog",
        }
    }

    fn policy_chain(&self) -> DocChain {
        DocChain {
            dir: self.root.join("policy"),
            what: "policy",
        }
    }

    /// The current policy version number (0 when no principal or grant was ever committed).
    pub fn policy_version(&self) -> Result<u64> {
        self.policy_chain().current()
    }

    /// The current policy (departments, users, grants, approvals); empty before the first
    /// change, which denies everything.
    pub fn policy(&self) -> Result<crate::policy::Policy> {
        let chain = self.policy_chain();
        match chain.current()? {
            0 => Ok(crate::policy::Policy::default()),
            v => Ok(chain.read::<PolicyVersion>(v)?.policy),
        }
    }

    /// Every policy version, oldest first.
    pub fn policy_history(&self) -> Result<Vec<PolicyVersion>> {
        let chain = self.policy_chain();
        chain.list()?.into_iter().map(|v| chain.read(v)).collect()
    }

    /// The store's secret for deriving per-department pseudonym keys; made on first use.
    pub(crate) fn secret(&self) -> Result<[u8; 32]> {
        use std::io::Write;
        let dir = self.root.join("keys");
        let path = dir.join("pseudonym.secret");
        if let Ok(b) = std::fs::read(&path) {
            return b
                .try_into()
                .map_err(|_| Error::Corrupt(format!("{} is not 32 bytes", path.display())));
        }
        std::fs::create_dir_all(&dir).at(&dir)?;
        let mut secret = [0u8; 32];
        rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut secret)
            .map_err(|e| Error::Corrupt(format!("no OS randomness: {e}")))?;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(&secret).at(&path)?;
                f.sync_all().at(&path)?;
                Ok(secret)
            }
            // Another process made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let b = std::fs::read(&path).at(&path)?;
                b.try_into()
                    .map_err(|_| Error::Corrupt(format!("{} is not 32 bytes", path.display())))
            }
            Err(e) => Err(Error::Io { path, source: e }),
        }
    }

    /// The store's audit trail (one open log per store and process, shared by every engine
    /// and writer, so appends are group-committed together).
    pub fn audit(&self) -> Result<Arc<crate::audit::AuditLog>> {
        use std::sync::Weak;
        static OPEN: Mutex<Vec<(PathBuf, Weak<crate::audit::AuditLog>)>> = Mutex::new(Vec::new());
        let dir = self.root.join("audit");
        let key = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let mut open = OPEN
            .lock()
            .map_err(|_| Error::Corrupt("audit registry poisoned".into()))?;
        open.retain(|(_, w)| w.strong_count() > 0);
        if let Some(log) = open
            .iter()
            .find(|(k, _)| k == &key)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(log);
        }
        let log = Arc::new(crate::audit::AuditLog::open(dir)?);
        open.push((key, Arc::downgrade(&log)));
        Ok(log)
    }

    /// Append an administrative record (who did what) to the audit trail.
    pub(crate) fn record(&self, kind: &str, actor: &str, body: serde_json::Value) -> Result<u64> {
        self.audit()?.append(kind, actor, body)
    }

    pub(crate) fn dataset_dir(&self, dataset: &str) -> PathBuf {
        self.root.join("datasets").join(dataset)
    }

    fn manifest_chain(&self, dataset: &str) -> DocChain {
        DocChain {
            dir: self.dataset_dir(dataset).join("manifests"),
            what: "dataset",
        }
    }

    /// The current catalog version number.
    pub fn catalog_version(&self) -> Result<u64> {
        self.catalog_chain().current()
    }

    /// The current catalog.
    pub fn catalog(&self) -> Result<Catalog> {
        Ok(self.catalog_at(self.catalog_version()?)?.catalog)
    }

    /// A past (or the current) catalog version, with who changed what and when.
    pub fn catalog_at(&self, version: u64) -> Result<CatalogVersion> {
        self.catalog_chain().read(version)
    }

    /// Every catalog version, oldest first.
    pub fn catalog_history(&self) -> Result<Vec<CatalogVersion>> {
        let chain = self.catalog_chain();
        chain.list()?.into_iter().map(|v| chain.read(v)).collect()
    }

    /// The current data version of `dataset` (0 when never loaded).
    pub fn current_version(&self, dataset: &str) -> Result<u64> {
        self.manifest_chain(dataset).current()
    }

    /// Manifests of every version of `dataset` still on disk, oldest first.
    pub fn versions(&self, dataset: &str) -> Result<Vec<Manifest>> {
        let chain = self.manifest_chain(dataset);
        chain.list()?.into_iter().map(|v| chain.read(v)).collect()
    }

    /// Pin the current version of `dataset`.
    pub fn snapshot(&self, dataset: &str) -> Result<Snapshot> {
        let v = self.current_version(dataset)?;
        if v == 0 {
            self.catalog()?.dataset(dataset)?;
            return Err(Error::NotFound(format!(
                "dataset '{dataset}' has no data yet (load it with `govshare load {dataset} FILE`)"
            )));
        }
        self.snapshot_at(dataset, v)
    }

    /// Pin a given version of `dataset`.
    pub fn snapshot_at(&self, dataset: &str, version: u64) -> Result<Snapshot> {
        let manifest: Manifest = self.manifest_chain(dataset).read(version).map_err(
            |e| match e {
                Error::NotFound(_) => Error::NotFound(format!(
                    "dataset '{dataset}' has no version {version} (never committed, or vacuumed)"
                )),
                e => e,
            },
        )?;
        Ok(Snapshot {
            dir: self.dataset_dir(dataset),
            manifest,
            key_index: OnceLock::new(),
            bitmaps: Mutex::new(HashMap::new()),
        })
    }

    /// Take the writer lock. A second writer, in this or another process, gets
    /// [`Error::Locked`] at once rather than waiting.
    pub fn writer(&self) -> Result<Writer<'_>> {
        let path = self.root.join("LOCK");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .at(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Writer {
                store: self,
                _lock: file,
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
                path: self.root.clone(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::Io { path, source: e }),
        }
    }
}

/// The one writer of a store; holds the lock until dropped (or the process dies, when the OS
/// releases it).
#[derive(Debug)]
pub struct Writer<'s> {
    pub(crate) store: &'s Store,
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

impl Writer<'_> {
    /// The store written to.
    pub fn store(&self) -> &Store {
        self.store
    }

    fn commit_catalog(
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
        self.store.record(
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
    pub fn update_policy<T>(
        &mut self,
        author: &str,
        note: &str,
        f: impl FnOnce(&mut crate::policy::Policy, &Catalog) -> Result<T>,
    ) -> Result<T> {
        let chain = self.store.policy_chain();
        let mut policy = self.store.policy()?;
        let catalog = self.store.catalog()?;
        let out = match f(&mut policy, &catalog) {
            Ok(o) => o,
            Err(e) => {
                // Refused administrative acts are decisions too.
                self.store.record(
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
        self.store.record(
            "policy",
            author,
            serde_json::json!({ "policy_version": version, "note": note }),
        )?;
        Ok(out)
    }

    /// Commit a new manifest for its dataset (the data files must already be durable).
    pub(crate) fn commit_manifest(&mut self, manifest: &Manifest) -> Result<()> {
        let chain = self.store.manifest_chain(&manifest.dataset.name);
        let current = chain.current()?;
        if manifest.version != current + 1 || manifest.parent.unwrap_or(0) != current {
            return Err(Error::Corrupt(format!(
                "manifest version {} does not follow current version {current}",
                manifest.version
            )));
        }
        chain.commit(manifest.version, manifest)?;
        self.store.record(
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
        let chain = self.store.manifest_chain(dataset);
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
        let dir = self.store.dataset_dir(dataset);
        for sub in ["data", "deletes", "index"] {
            report.files_removed += remove_unreferenced(&dir, &dir.join(sub), &referenced)?;
        }
        self.store.record(
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

/// A pinned version of a dataset: its manifest, with indexes loaded lazily on first use.
#[derive(Debug)]
pub struct Snapshot {
    dir: PathBuf,
    manifest: Manifest,
    key_index: OnceLock<Arc<KeyIndex>>,
    bitmaps: Mutex<HashMap<String, Arc<BitmapIndex>>>,
}

impl Snapshot {
    /// The manifest of the pinned version.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The pinned version number.
    pub fn version(&self) -> u64 {
        self.manifest.version
    }

    /// The dataset definition the version was written with.
    pub fn dataset(&self) -> &DatasetDef {
        &self.manifest.dataset
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Deleted row ids of the version.
    pub fn deleted(&self) -> Result<RoaringBitmap> {
        let mut out = RoaringBitmap::new();
        for f in &self.manifest.files {
            out |= self
                .file_deletes(f)?
                .into_iter()
                .map(|o| o + f.row_base)
                .collect::<RoaringBitmap>();
        }
        Ok(out)
    }

    fn file_deletes(&self, f: &DataFile) -> Result<RoaringBitmap> {
        match &f.deletes {
            None => Ok(RoaringBitmap::new()),
            Some(rel) => read_bitmap(&self.path(rel)),
        }
    }

    /// Every live row id of the version.
    pub fn live_rows(&self) -> Result<RoaringBitmap> {
        let mut all = RoaringBitmap::new();
        let total = self.manifest.total_rows();
        if total > 0 {
            all.insert_range(0..total as u32);
        }
        all -= self.deleted()?;
        Ok(all)
    }

    /// The key index, loaded on first use.
    pub fn key_index(&self) -> Result<Arc<KeyIndex>> {
        if let Some(k) = self.key_index.get() {
            return Ok(k.clone());
        }
        let k = Arc::new(KeyIndex::read(&self.path(&self.manifest.key_index))?);
        Ok(self.key_index.get_or_init(|| k).clone())
    }

    /// Row id of the live row with this key.
    pub fn lookup(&self, key: &str) -> Result<Option<u32>> {
        self.key_index().map(|k| k.get(key))
    }

    /// The bitmap index of `field`, loaded on first use.
    pub fn bitmap_index(&self, field: &str) -> Result<Arc<BitmapIndex>> {
        let mut cache = self
            .bitmaps
            .lock()
            .map_err(|_| Error::Corrupt("index cache poisoned".into()))?;
        if let Some(b) = cache.get(field) {
            return Ok(b.clone());
        }
        let rel = self.manifest.bitmap_indexes.get(field).ok_or_else(|| {
            Error::NotFound(format!(
                "field '{}.{field}' has no bitmap index (indexed: {})",
                self.manifest.dataset.name,
                self.manifest
                    .bitmap_indexes
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let b = Arc::new(BitmapIndex::read(&self.path(rel))?);
        cache.insert(field.to_string(), b.clone());
        Ok(b)
    }

    /// Live rows whose `field` equals `value`; for a region-indexed field, `value` may be a
    /// province, city or county code (`430000`, `430600`, `430623`) and selects the whole area.
    pub fn scope(&self, field: &str, value: &str) -> Result<RoaringBitmap> {
        let def = self.manifest.dataset.require_field(field)?;
        let idx = self.bitmap_index(field)?;
        Ok(match def.index {
            IndexKind::Region => idx.get(region_prefix(value)?),
            _ => idx.get(value),
        })
    }

    /// Read rows of the version: `rows` (or all), minus deleted rows, as batches with the
    /// given columns (or all). Only the Parquet pages holding selected rows are decoded.
    pub fn read(
        &self,
        rows: Option<&RoaringBitmap>,
        columns: Option<&[&str]>,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for i in 0..self.manifest.files.len() {
            if let Some(reader) = self.file_reader(i, rows, columns)? {
                for b in reader {
                    out.push(b?);
                }
            }
        }
        Ok(out)
    }

    /// A reader over one data file of the version, limited to `rows` (global row ids, or all)
    /// minus deleted rows; `None` when no selected row lives in that file. The selection is
    /// applied inside the Parquet decoder: unselected rows are never materialised.
    pub fn file_reader(
        &self,
        file: usize,
        rows: Option<&RoaringBitmap>,
        columns: Option<&[&str]>,
    ) -> Result<Option<FileRows>> {
        let f = self
            .manifest
            .files
            .get(file)
            .ok_or_else(|| Error::NotFound(format!("data file {file}")))?;
        let end = f.row_base as u64 + f.rows;
        let mut local: RoaringBitmap = match rows {
            Some(r) => r
                .range(f.row_base..end.min(u32::MAX as u64 + 1) as u32)
                .map(|id| id - f.row_base)
                .collect(),
            None => {
                let mut b = RoaringBitmap::new();
                b.insert_range(0..f.rows as u32);
                b
            }
        };
        local -= self.file_deletes(f)?;
        if local.is_empty() {
            return Ok(None);
        }
        let path = self.path(&f.path);
        let handle = File::open(&path).at(&path)?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(handle)?;
        let mut order = None;
        let mask = match columns {
            None => ProjectionMask::all(),
            Some(cols) => {
                let schema = builder.schema().clone();
                let idx = cols
                    .iter()
                    .map(|c| {
                        schema.index_of(c).map_err(|_| {
                            Error::NotFound(format!(
                                "dataset '{}' has no field '{c}'",
                                self.manifest.dataset.name
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                // The decoder yields columns in file order; put them back in the order asked.
                let mut sorted = idx.clone();
                sorted.sort_unstable();
                sorted.dedup();
                let o: Vec<usize> = idx
                    .iter()
                    .map(|i| sorted.iter().position(|s| s == i).unwrap_or(0))
                    .collect();
                if o.iter().enumerate().any(|(a, b)| a != *b) || o.len() != sorted.len() {
                    order = Some(o);
                }
                ProjectionMask::roots(builder.parquet_schema(), idx)
            }
        };
        let (groups, selection) = selection_for(&local, &f.row_groups);
        let reader = builder
            .with_projection(mask)
            .with_row_groups(groups)
            .with_row_selection(selection)
            .with_batch_size(8192)
            .build()?;
        Ok(Some(FileRows { reader, order }))
    }

    /// How many Parquet row groups a read of `rows` would open (clustering makes a region
    /// scope touch few of them).
    pub fn row_groups_touched(&self, rows: &RoaringBitmap) -> usize {
        let mut n = 0;
        for f in &self.manifest.files {
            let mut start = f.row_base as u64;
            for &len in &f.row_groups {
                let end = start + len;
                if len > 0 && rows.range(start as u32..end as u32).next().is_some() {
                    n += 1;
                }
                start = end;
            }
        }
        n
    }

    /// Total row groups of the version.
    pub fn row_groups_total(&self) -> usize {
        self.manifest.files.iter().map(|f| f.row_groups.len()).sum()
    }
}

/// The selected rows of one data file, batch by batch, columns in the order requested.
pub struct FileRows {
    reader: ParquetRecordBatchReader,
    order: Option<Vec<usize>>,
}

impl Iterator for FileRows {
    type Item = std::result::Result<RecordBatch, arrow::error::ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.reader.next()?;
        Some(match &self.order {
            None => b,
            Some(o) => b.and_then(|b| b.project(o)),
        })
    }
}

/// Turn file-local selected offsets into the row groups to open and a selection over them.
fn selection_for(local: &RoaringBitmap, row_groups: &[u64]) -> (Vec<usize>, RowSelection) {
    let mut groups = Vec::new();
    let mut selectors: Vec<RowSelector> = Vec::new();
    let mut start = 0u64;
    for (g, &len) in row_groups.iter().enumerate() {
        let end = start + len;
        let in_group: Vec<u32> = local.range(start as u32..end as u32).collect();
        if !in_group.is_empty() {
            groups.push(g);
            // Runs of consecutive offsets become select/skip pairs.
            let mut pos = start;
            let mut i = 0;
            while i < in_group.len() {
                let run_start = in_group[i] as u64;
                let mut run_end = run_start + 1;
                i += 1;
                while i < in_group.len() && in_group[i] as u64 == run_end {
                    run_end += 1;
                    i += 1;
                }
                if run_start > pos {
                    selectors.push(RowSelector::skip((run_start - pos) as usize));
                }
                selectors.push(RowSelector::select((run_end - run_start) as usize));
                pos = run_end;
            }
            if end > pos {
                selectors.push(RowSelector::skip((end - pos) as usize));
            }
        }
        start = end;
    }
    (groups, RowSelection::from(selectors))
}

pub(crate) fn read_bitmap(path: &Path) -> Result<RoaringBitmap> {
    let bytes = std::fs::read(path).at(path)?;
    RoaringBitmap::deserialize_from(&bytes[..])
        .map_err(|e| Error::Corrupt(format!("deletion vector {}: {e}", path.display())))
}

pub(crate) fn write_bitmap(path: &Path, bm: &RoaringBitmap) -> Result<()> {
    let mut bytes = Vec::with_capacity(bm.serialized_size());
    bm.serialize_into(&mut bytes).at(path)?;
    write_durable(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_covers_runs_within_selected_groups() {
        let local: RoaringBitmap = [1u32, 2, 3, 7, 25].into_iter().collect();
        let (groups, sel) = selection_for(&local, &[10, 10, 10]);
        assert_eq!(groups, vec![0, 2]);
        // Group 0: skip 1, select 3, skip 3, select 1, skip 2; group 2: skip 5, select 1, skip 4.
        assert_eq!(sel.row_count(), 5);
        assert_eq!(sel.iter().map(|s| s.row_count).sum::<usize>(), 20);
    }

    #[test]
    fn init_is_idempotent_and_versions_the_catalog() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Store::init(dir.path()).expect("init");
        assert_eq!(s.catalog_version().expect("v"), 1);
        let s = Store::init(dir.path()).expect("re-init");
        assert_eq!(s.catalog_version().expect("v"), 1);
        assert!(
            s.catalog()
                .expect("catalog")
                .datasets
                .contains_key("person")
        );
        assert!(matches!(
            Store::open(dir.path().join("nope")),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn second_writer_is_refused_until_first_drops() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Store::init(dir.path()).expect("init");
        let w = s.writer().expect("first");
        let other = Store::open(dir.path()).expect("open");
        assert!(matches!(other.writer(), Err(Error::Locked { .. })));
        drop(w);
        other.writer().expect("free again");
    }
}
