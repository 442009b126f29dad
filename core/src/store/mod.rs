//! The store: a directory of immutable Parquet files, versioned manifests and indexes.
//!
//! ```text
//! <store>/govshare-store.json          marker + format version
//! <store>/LOCK                         writer lock (one writer at a time, across processes)
//! <store>/catalog/CURRENT, vNNNNNNNN.json          catalog versions
//! <store>/datasets/<name>/CURRENT                  current data version of the dataset
//! <store>/datasets/<name>/manifests/vNNNNNNNN.json one manifest per version
//! <store>/datasets/<name>/data/*.parquet           immutable data files
//! <store>/datasets/<name>/data/*.rows              the same rows in row blocks (point reads)
//! <store>/datasets/<name>/deletes/*.dv             roaring deletion vectors (per file)
//! <store>/datasets/<name>/index/vN/*               key and bitmap indexes of version N
//! <store>/rejects/*.csv                            rejected rows of each load
//! ```
//!
//! A whole store is copied and restored by [`backup`], with a manifest of blake3 digests.
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

mod authority;
pub mod backup;
mod chain;
mod manifest;
pub(crate) mod rowblocks;
mod settings;
mod snapshot;
mod workdays;
mod writer;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::AuditLog;
use crate::catalog::Catalog;
use crate::durable::write_durable;
use crate::error::{Error, IoContext, Result};

pub use authority::{Act, Authorizer};
pub(crate) use chain::DocChain;
pub use manifest::{CatalogVersion, Conflict, DataFile, Handover, Manifest, Operation};
pub use settings::{QueryLimits, Settings, SettingsVersion};
pub use snapshot::{FileRows, Snapshot};
pub use workdays::CalendarVersion;
pub use writer::{VacuumReport, Writer};

/// How often a writer retries a held lock (every 20 ms) before reporting [`Error::Locked`].
const LOCK_GRACE_TRIES: u32 = 10;

/// On-disk format version written in the store marker.
pub const FORMAT_VERSION: u32 = 1;
const MARKER: &str = "govshare-store.json";

/// A secret others can read is no secret: refuse it rather than derive pseudonym keys from it
/// (the owner makes it private again with `chmod 600`, after asking who read it).
fn refuse_shared_secret(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).at(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::Corrupt(format!(
                "{} can be read by other users (mode {:o}); make it private (chmod 600) — \
                 govshare will not use a secret others may have copied",
                path.display(),
                mode & 0o777
            )));
        }
    }
    Ok(())
}

/// A govshare store directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// The current version of each dataset read through [`Store::pinned`], kept so its indexes
    /// and footers are read once per version, not once per query. Shared by clones of the
    /// handle (an engine and the writers it opens).
    pinned: Arc<Mutex<HashMap<String, Arc<Snapshot>>>>,
    /// The current version of each document chain (catalog, policy, settings) as parsed,
    /// per the type it was parsed into: a query reads them all, and parsing a policy document
    /// with its workflow records costs more than the query's planning. Keyed by version, so
    /// a commit (which moves `CURRENT`) is seen by the next read.
    docs: Arc<Mutex<DocCache>>,
}

type DocCache = HashMap<(String, TypeId), (u64, Arc<dyn Any + Send + Sync>)>;

#[derive(Serialize, Deserialize)]
struct Marker {
    format: u32,
    created_at: DateTime<Utc>,
}

impl Store {
    /// Create a store at `root` (or open it, if one is there, without calling `found`), with
    /// the built-in catalog as catalog version 1; `found` runs under the same writer lock
    /// before the marker is written, so a directory with a marker always has what `found`
    /// committed (the policy's first administrator; see `Store::init` in `access::policy`).
    pub(crate) fn create(
        root: impl AsRef<Path>,
        chain: crate::audit::ChainHash,
        found: impl FnOnce(&mut Writer<'_>) -> Result<()>,
    ) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        if root.join(MARKER).exists() {
            return Store::open(&root);
        }
        crate::durable::create_private_dir(&root)?;
        let store = Store {
            root,
            pinned: Default::default(),
            docs: Default::default(),
        };
        // Before the first record: the whole chain uses one hash.
        chain.choose(&store.audit_dir())?;
        let audit = Arc::new(AuditLog::open(store.audit_dir())?);
        let mut w = store.lock_writer("govshare init", audit, &authority::Nobody)?;
        let marker = Marker {
            format: FORMAT_VERSION,
            created_at: Utc::now(),
        };
        if store.catalog_chain().current()? == 0 {
            let catalog = Catalog::builtin();
            let changes = crate::catalog::diff(&Catalog::default(), &catalog);
            w.commit_catalog(catalog, changes, "govshare init", "built-in base databases")?;
        }
        found(&mut w)?;
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
        Ok(Store {
            root,
            pinned: Default::default(),
            docs: Default::default(),
        })
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn catalog_chain(&self) -> DocChain {
        DocChain {
            dir: self.root.join("catalog"),
            what: "catalog",
            id: "catalog".into(),
        }
    }

    /// The chain of policy documents (the access layer reads and commits through it).
    pub(crate) fn policy_chain(&self) -> DocChain {
        DocChain {
            dir: self.root.join("policy"),
            what: "policy",
            id: "policy".into(),
        }
    }

    /// The chain of settings documents.
    pub(crate) fn settings_chain(&self) -> DocChain {
        DocChain {
            dir: self.root.join("settings"),
            what: "settings",
            id: "settings".into(),
        }
    }

    /// The chain of working-day calendar additions.
    pub(crate) fn calendar_chain(&self) -> DocChain {
        DocChain {
            dir: self.root.join("calendar"),
            what: "calendar",
            id: "calendar".into(),
        }
    }

    /// The directory of the store's audit trail.
    pub fn audit_dir(&self) -> PathBuf {
        self.root.join("audit")
    }

    /// The current policy version number (0 when no principal or grant was ever committed).
    /// The store's secret for deriving per-department pseudonym keys; made on first use.
    pub(crate) fn secret(&self) -> Result<[u8; 32]> {
        use std::io::Write;
        let dir = self.root.join("keys");
        let path = dir.join("pseudonym.secret");
        if let Ok(b) = std::fs::read(&path) {
            refuse_shared_secret(&path)?;
            return b
                .try_into()
                .map_err(|_| Error::Corrupt(format!("{} is not 32 bytes", path.display())));
        }
        crate::durable::create_private_dir(&dir)?;
        let mut secret = [0u8; 32];
        rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut secret)
            .map_err(|e| Error::internal(format!("no OS randomness: {e}")))?;
        // Published whole or not at all: written to a private temporary file, then hard-linked
        // into place, which fails when another process published first — a reader never sees
        // a half-written secret.
        let tmp = dir.join(format!(
            "pseudonym.secret.{}.{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        {
            let mut f = crate::durable::create_private(&tmp)?;
            f.write_all(&secret).at(&tmp)?;
            f.sync_all().at(&tmp)?;
        }
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                crate::durable::sync_dir(&path)?;
                Ok(secret)
            }
            // Another process published first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let b = std::fs::read(&path).at(&path)?;
                b.try_into()
                    .map_err(|_| Error::Corrupt(format!("{} is not 32 bytes", path.display())))
            }
            Err(e) => Err(Error::Io { path, source: e }),
        }
    }

    /// The directory of `dataset`, for a name the catalog could hold (never outside the store).
    pub(crate) fn dataset_dir(&self, dataset: &str) -> Result<PathBuf> {
        crate::catalog::check_dataset_name(dataset)?;
        Ok(self.root.join("datasets").join(dataset))
    }

    pub(crate) fn manifest_chain(&self, dataset: &str) -> Result<DocChain> {
        Ok(DocChain {
            dir: self.dataset_dir(dataset)?.join("manifests"),
            what: "dataset",
            id: format!("datasets/{dataset}"),
        })
    }

    /// The current catalog version number.
    pub fn catalog_version(&self) -> Result<u64> {
        self.catalog_chain().current()
    }

    /// The current catalog.
    pub fn catalog(&self) -> Result<Catalog> {
        Ok(self.catalog_shared()?.as_ref().clone())
    }

    /// The current catalog, shared: parsed once per version.
    pub fn catalog_shared(&self) -> Result<Arc<Catalog>> {
        let chain = self.catalog_chain();
        self.current_doc(
            &chain,
            || Err(Error::Corrupt("the store has no catalog".into())),
            |v: CatalogVersion| v.catalog,
        )
    }

    /// The current document of `chain`, parsed into `D` and kept as `f` makes it (`empty`
    /// when nothing was committed), from the cache when the version has not moved.
    pub(crate) fn current_doc<D, T>(
        &self,
        chain: &chain::DocChain,
        empty: impl FnOnce() -> Result<T>,
        f: impl FnOnce(D) -> T,
    ) -> Result<Arc<T>>
    where
        D: serde::de::DeserializeOwned,
        T: Send + Sync + 'static,
    {
        let v = chain.current()?;
        let key = (chain.id.clone(), TypeId::of::<T>());
        if let Ok(cache) = self.docs.lock()
            && let Some((cached, doc)) = cache.get(&key)
            && *cached == v
            && let Ok(doc) = doc.clone().downcast::<T>()
        {
            return Ok(doc);
        }
        let doc = Arc::new(match v {
            0 => empty()?,
            v => f(chain.read::<D>(v)?),
        });
        if let Ok(mut cache) = self.docs.lock() {
            cache.insert(key, (v, doc.clone()));
        }
        Ok(doc)
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
        self.manifest_chain(dataset)?.current()
    }

    /// Manifests of every version of `dataset` still on disk, oldest first.
    pub fn versions(&self, dataset: &str) -> Result<Vec<Manifest>> {
        let chain = self.manifest_chain(dataset)?;
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

    /// The current version of `dataset`, shared: the first call per version loads it, later
    /// calls return the same snapshot (with its indexes already read) until a new version is
    /// committed. What a query reads; a version's files are immutable, so nothing cached here
    /// can go stale — only superseded, and then it is replaced.
    pub fn pinned(&self, dataset: &str) -> Result<Arc<Snapshot>> {
        let v = self.current_version(dataset)?;
        if let Ok(cache) = self.pinned.lock()
            && let Some(s) = cache.get(dataset)
            && s.version() == v
        {
            return Ok(s.clone());
        }
        let snap = Arc::new(self.snapshot(dataset)?);
        if let Ok(mut cache) = self.pinned.lock() {
            // A concurrent commit may have moved on meanwhile: keep the newer of the two.
            let newer = cache
                .get(dataset)
                .is_some_and(|s| s.version() > snap.version());
            if !newer {
                cache.insert(dataset.to_string(), snap.clone());
            }
        }
        Ok(snap)
    }

    /// Pin a given version of `dataset`.
    pub fn snapshot_at(&self, dataset: &str, version: u64) -> Result<Snapshot> {
        let manifest: Manifest = self.manifest_chain(dataset)?.read(version).map_err(
            |e| match e {
                Error::NotFound(_) => Error::NotFound(format!(
                    "dataset '{dataset}' has no version {version} (never committed, or vacuumed)"
                )),
                e => e,
            },
        )?;
        Ok(Snapshot::new(self.dataset_dir(dataset)?, manifest))
    }

    /// Take the writer lock for `actor`, whose acts `authorizer` decides and `audit` records.
    /// A second writer, in this or another process, gets [`Error::Locked`] after a grace period
    /// of 200 ms rather than waiting for a long act to end. Crate-private: the public doors (`Store::writer`, `Engine::writer`) pass the
    /// policy's authoriser.
    pub(crate) fn lock_writer(
        &self,
        actor: &str,
        audit: Arc<AuditLog>,
        authorizer: &'static dyn Authorizer,
    ) -> Result<Writer<'_>> {
        let path = self.root.join("LOCK");
        let file = crate::durable::private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .at(&path)?;
        // A short grace period: another writer's brief act (a policy edit, a reconciliation,
        // or the instant a forked child still shares the lock before it execs) ends within
        // it; a long one (a load) is reported at once after it.
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    let mut w = Writer::new(self, audit, file, actor, authorizer);
                    w.recover()?;
                    return Ok(w);
                }
                Err(std::fs::TryLockError::WouldBlock) if tries < LOCK_GRACE_TRIES => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Locked {
                        path: self.root.clone(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::Io { path, source: e });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(s: &Store) -> Result<Writer<'_>> {
        let audit = Arc::new(AuditLog::open(s.audit_dir())?);
        s.lock_writer("t", audit, &authority::Nobody)
    }

    #[test]
    fn create_is_idempotent_and_versions_the_catalog() {
        let dir = tempfile::tempdir().expect("tmp");
        let s =
            Store::create(dir.path(), crate::audit::ChainHash::Blake3, |_| Ok(())).expect("init");
        assert_eq!(s.catalog_version().expect("v"), 1);
        let s = Store::create(dir.path(), crate::audit::ChainHash::Blake3, |_| {
            panic!("not founded twice")
        })
        .expect("re-init");
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
        let s =
            Store::create(dir.path(), crate::audit::ChainHash::Blake3, |_| Ok(())).expect("init");
        let w = writer(&s).expect("first");
        let other = Store::open(dir.path()).expect("open");
        assert!(matches!(writer(&other), Err(Error::Locked { .. })));
        drop(w);
        writer(&other).expect("free again");
    }
}
