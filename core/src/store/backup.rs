//! Backup and restore of a whole store: data, indexes, catalog, policy, settings, keys and the
//! audit trail, as one consistent copy with a manifest of blake3 digests.
//!
//! ```text
//! <backup>/backup.json          the manifest: every file's path, size and blake3; the trail's
//!                               head at the moment of the copy; the base backup, if any
//! <backup>/backup.json.blake3   the manifest's own digest (also on the store's trail)
//! <backup>/backup.json.sm3      its SM3, in a store made with national cryptography (whose
//!                               files are listed with their SM3 beside their blake3)
//! <backup>/files/<path>         the files, under their paths in the store
//! ```
//!
//! **Consistency.** A backup is taken by a writer: the store's writer lock is held throughout,
//! so no load, compaction or policy change commits while files are copied. Queries go on and
//! append to the trail; the trail is flushed first and each segment is copied up to its last
//! whole record, so the copy's trail is whole and ends at or after the recorded head.
//!
//! **Incremental.** With a base backup, files whose path and digest are in the base are listed
//! but not copied (`stored: false`); data files are immutable, so after a load only the new
//! version's files travel. Restoring needs the base (found by the relative path recorded, and
//! checked against the digest of its manifest recorded here).
//!
//! **Restore** verifies every file's size and digest, the manifests' digests, and the restored
//! trail's hash chain before anything becomes visible at the target: the copy is assembled in
//! a scratch directory beside the target and renamed into place only when all of it holds. A
//! single changed byte anywhere is refused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::{ChainHash, Checkpoint};
use crate::durable::{create_private_dir, sync_dir, write_durable};
use crate::error::{Error, IoContext, Result};

const MANIFEST: &str = "backup.json";
const DIGEST: &str = "backup.json.blake3";
const DIGEST_SM3: &str = "backup.json.sm3";
const FILES: &str = "files";
const FORMAT: u32 = 1;

/// What a backup holds (`backup.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// Format version of the backup.
    pub format: u32,
    /// When the copy was taken.
    pub created_at: DateTime<Utc>,
    /// The operator who took it.
    pub by: String,
    /// The trail's head when the copy was taken (the copy's trail reaches at least this far).
    pub audit_head: Checkpoint,
    /// The backup this one adds to, if incremental.
    pub base: Option<BaseRef>,
    /// Every file of the store, in path order.
    pub files: Vec<BackupFile>,
}

/// The base of an incremental backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRef {
    /// Where the base is, relative to this backup's directory (or absolute).
    pub path: String,
    /// The blake3 of the base's manifest.
    pub manifest_blake3: String,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    /// Path in the store, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the content (hex).
    pub blake3: String,
    /// SM3 of the content (hex), in a store made with national cryptography.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm3: Option<String>,
    /// Whether this backup holds the bytes (false: they are in the base chain).
    pub stored: bool,
}

impl BackupManifest {
    /// Bytes this backup itself holds (the files it stored).
    pub fn stored_bytes(&self) -> u64 {
        self.files.iter().filter(|f| f.stored).map(|f| f.size).sum()
    }
}

/// Files of the store that are copied: everything but the lock files and temporary files of
/// interrupted writes.
fn store_files(root: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
        for entry in std::fs::read_dir(dir).at(dir)? {
            let entry = entry.at(dir)?;
            let path = entry.path();
            let kind = entry.file_type().at(&path)?;
            if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_file() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name == "LOCK" || name.ends_with(".tmp") {
                    continue;
                }
                let rel = path
                    .strip_prefix(root)
                    .map_err(|_| Error::internal("a store file outside the store"))?;
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

/// A relative backup path as a path under `dir`, refusing anything that would leave it.
fn under(dir: &Path, rel: &str) -> Result<PathBuf> {
    let mut p = dir.to_path_buf();
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\\') {
            return Err(Error::Corrupt(format!(
                "backup path '{rel}' is not a plain relative path"
            )));
        }
        p.push(part);
    }
    Ok(p)
}

/// Whether `rel` is a segment of the audit trail (copied up to its last whole record).
fn is_trail_segment(rel: &str) -> bool {
    rel.starts_with("audit/seg-") && rel.ends_with(".log")
}

/// Copy the store at `root` into the new directory `dest` (see the module docs); `base`, when
/// given, is an earlier backup whose unchanged files are referenced, not copied. The caller
/// holds the writer lock and has flushed the trail, whose head is `audit_head`. Files and the
/// manifest get an SM3 digest beside blake3 when `hash` is SM3. Returns the manifest and its
/// blake3 and SM3.
pub(crate) fn take(
    root: &Path,
    dest: &Path,
    base: Option<&Path>,
    by: &str,
    audit_head: Checkpoint,
    now: DateTime<Utc>,
    hash: ChainHash,
) -> Result<(BackupManifest, String, Option<String>)> {
    if dest.exists() {
        return Err(Error::invalid(format!(
            "{} exists: a backup goes into a new directory",
            dest.display()
        )));
    }
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if abs(dest).starts_with(abs(root)) {
        return Err(Error::invalid(
            "a backup cannot be taken into its own store",
        ));
    }
    let taken = copy(root, dest, base, hash).and_then(|(base, files)| {
        let manifest = BackupManifest {
            format: FORMAT,
            created_at: now,
            by: by.to_string(),
            audit_head,
            base,
            files,
        };
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::internal(format!("backup manifest: {e}")))?;
        let digest = blake3::hash(&text).to_hex().to_string();
        write_durable(&dest.join(MANIFEST), &text)?;
        write_durable(&dest.join(DIGEST), digest.as_bytes())?;
        let sm3 = hash.twin(&text);
        if let Some(d) = &sm3 {
            write_durable(&dest.join(DIGEST_SM3), d.as_bytes())?;
        }
        sync_dir(dest)?;
        Ok((manifest, digest, sm3))
    });
    if taken.is_err() {
        // Nothing half-made stays behind (it would hold copies of data files).
        let _ = std::fs::remove_dir_all(dest);
    }
    taken
}

/// Copy the store's files into `dest/files` (those not unchanged in `base`); returns the base's
/// reference and every file's entry.
fn copy(
    root: &Path,
    dest: &Path,
    base: Option<&Path>,
    hash: ChainHash,
) -> Result<(Option<BaseRef>, Vec<BackupFile>)> {
    let (base_ref, known) = match base {
        None => (None, HashMap::new()),
        Some(b) => {
            let (m, digest) = read_checked(b)?;
            let known: HashMap<String, String> =
                m.files.into_iter().map(|f| (f.path, f.blake3)).collect();
            let path = relative_to(b, dest);
            (
                Some(BaseRef {
                    path,
                    manifest_blake3: digest,
                }),
                known,
            )
        }
    };
    let files_dir = dest.join(FILES);
    create_private_dir(&files_dir)?;
    let mut files = Vec::new();
    for rel in store_files(root)? {
        let src = under(root, &rel)?;
        let mut bytes = std::fs::read(&src).at(&src)?;
        if is_trail_segment(&rel) {
            // Sessions may be appending: keep whole records only.
            let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            bytes.truncate(whole);
        }
        let digest = blake3::hash(&bytes).to_hex().to_string();
        let stored = known.get(&rel) != Some(&digest);
        if stored {
            let out = under(&files_dir, &rel)?;
            if let Some(parent) = out.parent() {
                create_private_dir(parent)?;
            }
            write_durable(&out, &bytes)?;
        }
        files.push(BackupFile {
            path: rel,
            size: bytes.len() as u64,
            blake3: digest,
            sm3: hash.twin(&bytes),
            stored,
        });
    }
    Ok((base_ref, files))
}

/// `path` as seen from `from` (relative when both are under one directory, else absolute).
fn relative_to(path: &Path, from: &Path) -> String {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (path, from) = (abs(path), abs(from));
    match (path.parent(), from.parent()) {
        (Some(a), Some(b)) if a == b => format!(
            "../{}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ),
        _ => path.display().to_string(),
    }
}

/// Read a backup's manifest and check it against its digest file.
fn read_checked(dir: &Path) -> Result<(BackupManifest, String)> {
    let mp = dir.join(MANIFEST);
    let text = std::fs::read(&mp).at(&mp)?;
    let dp = dir.join(DIGEST);
    let recorded = std::fs::read_to_string(&dp).at(&dp)?;
    let digest = blake3::hash(&text).to_hex().to_string();
    if recorded.trim() != digest {
        return Err(Error::Corrupt(format!(
            "{}: the manifest does not match its digest",
            mp.display()
        )));
    }
    let m: BackupManifest = serde_json::from_slice(&text)
        .map_err(|e| Error::Corrupt(format!("{}: {e}", mp.display())))?;
    // A manifest whose files carry SM3 digests has its own SM3 beside it, checked too.
    let sp = dir.join(DIGEST_SM3);
    let national = m.files.iter().any(|f| f.sm3.is_some());
    if national || sp.exists() {
        let recorded = std::fs::read_to_string(&sp).map_err(|e| {
            Error::Corrupt(format!("{}: the manifest's SM3 digest: {e}", sp.display()))
        })?;
        if Some(recorded.trim().to_string()) != ChainHash::Sm3.twin(&text) {
            return Err(Error::Corrupt(format!(
                "{}: the manifest does not match its SM3 digest",
                mp.display()
            )));
        }
    }
    if m.format != FORMAT {
        return Err(Error::Corrupt(format!(
            "{}: backup format {} (this govshare reads {FORMAT})",
            mp.display(),
            m.format
        )));
    }
    Ok((m, digest))
}

/// Where each file of the backup at `dir` is stored: this backup's or a base's `files/`, each
/// base checked against the digest recorded for it.
/// A backup's manifest, its digest, and where each of its files' bytes are.
type Located = (BackupManifest, String, Vec<(BackupFile, PathBuf)>);

fn locate(dir: &Path) -> Result<Located> {
    let (top, digest) = read_checked(dir)?;
    let mut out = Vec::with_capacity(top.files.len());
    let mut pending: Vec<&BackupFile> = Vec::new();
    for f in &top.files {
        if f.stored {
            out.push((f.clone(), under(&dir.join(FILES), &f.path)?));
        } else {
            pending.push(f);
        }
    }
    let mut here = dir.to_path_buf();
    let mut next = top.base.clone();
    let mut depth = 0;
    while !pending.is_empty() {
        let Some(base) = next else {
            return Err(Error::Corrupt(format!(
                "{}: {} file(s) are in a base backup, but none is named",
                dir.display(),
                pending.len()
            )));
        };
        depth += 1;
        if depth > 1000 {
            return Err(Error::Corrupt("backup bases form a loop".into()));
        }
        let base_dir = if Path::new(&base.path).is_absolute() {
            PathBuf::from(&base.path)
        } else {
            here.join(&base.path)
        };
        let (m, d) = read_checked(&base_dir).map_err(|e| match e {
            Error::Io { path, source } => {
                Error::NotFound(format!("the base backup {} ({source})", path.display()))
            }
            e => e,
        })?;
        if d != base.manifest_blake3 {
            return Err(Error::Corrupt(format!(
                "the base backup {} is not the one this backup was taken against",
                base_dir.display()
            )));
        }
        let in_base: HashMap<&str, &BackupFile> = m
            .files
            .iter()
            .filter(|f| f.stored)
            .map(|f| (f.path.as_str(), f))
            .collect();
        let mut still = Vec::new();
        for f in pending {
            match in_base.get(f.path.as_str()) {
                Some(b) if b.blake3 == f.blake3 => {
                    out.push((f.clone(), under(&base_dir.join(FILES), &f.path)?));
                }
                _ => still.push(f),
            }
        }
        pending = still;
        here = base_dir;
        next = m.base;
    }
    Ok((top, digest, out))
}

/// Check every file of the backup at `dir` (and of its bases) against the manifests: sizes,
/// digests, the manifests' own digests. Returns the manifest and its digest.
pub fn verify(dir: &Path) -> Result<(BackupManifest, String)> {
    let (m, digest, files) = locate(dir)?;
    for (f, path) in &files {
        read_verified(f, path)?;
    }
    Ok((m, digest))
}

fn read_verified(f: &BackupFile, path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::Corrupt(format!(
            "backup file {} is missing or unreadable: {e}",
            path.display()
        ))
    })?;
    let sm3_differs = f.sm3.is_some() && ChainHash::Sm3.twin(&bytes) != f.sm3;
    if bytes.len() as u64 != f.size
        || blake3::hash(&bytes).to_hex().as_str() != f.blake3
        || sm3_differs
    {
        return Err(Error::Corrupt(format!(
            "backup file {} does not match the manifest (changed or damaged)",
            f.path
        )));
    }
    Ok(bytes)
}

/// Restore the backup at `dir` into a scratch directory beside `target` and return it (not
/// yet at `target`): every file verified, the store's files in place. The caller checks the
/// restored trail and the actor's authority, records the restore, then calls [`publish`].
pub(crate) fn assemble(dir: &Path, target: &Path) -> Result<(BackupManifest, String, PathBuf)> {
    if target.exists() {
        return Err(Error::invalid(format!(
            "{} exists: a backup is restored into a new directory",
            target.display()
        )));
    }
    let (m, digest, files) = locate(dir)?;
    let name = target
        .file_name()
        .ok_or_else(|| Error::invalid("the restore target needs a directory name"))?;
    let scratch = target.with_file_name(format!(
        ".{}.restoring-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).at(&scratch)?;
    }
    let result = (|| {
        create_private_dir(&scratch)?;
        for (f, path) in &files {
            let bytes = read_verified(f, path)?;
            let out = under(&scratch, &f.path)?;
            if let Some(parent) = out.parent() {
                create_private_dir(parent)?;
            }
            write_durable(&out, &bytes)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(e);
    }
    Ok((m, digest, scratch))
}

/// Move an assembled restore into place.
pub(crate) fn publish(scratch: &Path, target: &Path) -> Result<()> {
    std::fs::rename(scratch, target).at(target)?;
    sync_dir(target)
}
