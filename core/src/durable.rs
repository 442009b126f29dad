//! Durable file writes: the one leaf every subsystem that commits something uses.
//!
//! A write is durable when a crash cannot leave it half done: the bytes go to a temporary
//! file, which is fsynced, renamed over the target and followed by an fsync of the directory
//! (so the rename itself survives). Nothing here knows about stores, logs or indexes.

use std::fs::File;
use std::path::Path;

use roaring::RoaringBitmap;

use crate::error::{Error, IoContext, Result};

/// Write `bytes` to `path` durably: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    {
        let mut f = create_private(&tmp)?;
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
/// crash would. `<point>:pause=<file>` instead creates `<file>` and waits there for ever, so a
/// test can kill the process from outside (SIGKILL) at exactly this point. Used by the
/// crash-safety tests; costs one environment read per commit.
pub(crate) fn failpoint(name: &str) {
    let Ok(v) = std::env::var("GOVSHARE_FAILPOINT") else {
        return;
    };
    if v == name {
        std::process::abort();
    }
    if let Some(signal) = v
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix(":pause="))
    {
        // If the file cannot be created the test waiting for it times out and says so.
        let _ = std::fs::write(signal, b"");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// Read a deletion vector (a roaring bitmap file).
pub(crate) fn read_bitmap(path: &Path) -> Result<RoaringBitmap> {
    let bytes = std::fs::read(path).at(path)?;
    RoaringBitmap::deserialize_from(&bytes[..])
        .map_err(|e| Error::Corrupt(format!("deletion vector {}: {e}", path.display())))
}

/// Serialise a roaring bitmap and write it durably; returns the bytes written (callers that
/// record the file's digest hash exactly these).
pub(crate) fn write_bitmap(path: &Path, bm: &RoaringBitmap) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(bm.serialized_size());
    bm.serialize_into(&mut bytes).at(path)?;
    write_durable(path, &bytes)?;
    Ok(bytes)
}

/// Options for a file only its owner may read and write (mode 0600 where the OS has modes):
/// data, indexes, manifests, keys and the trail are nobody else's business on a shared host.
pub(crate) fn private_file() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o
}

/// Create (or truncate) a private file for writing.
pub(crate) fn create_private(path: &Path) -> Result<File> {
    private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .at(path)
}

/// Create a directory and its missing parents, each only its owner may enter (mode 0700).
pub(crate) fn create_private_dir(path: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(path).at(path)
}
