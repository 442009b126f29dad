//! Versioned JSON documents with a `CURRENT` pointer: the commit protocol of catalogs, policies
//! and dataset manifests. A writer writes the document, then its audit record, then swaps the
//! pointer (each durable; see `Writer::commit_recorded`), so no version is in force without
//! its record; a document past `CURRENT` is a commit interrupted before or after its record,
//! which the next writer reconciles.

use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::durable::{failpoint, write_durable};
use crate::error::{Error, IoContext, Result};

/// A chain of versioned JSON documents with a `CURRENT` pointer.
pub(crate) struct DocChain {
    pub(crate) dir: PathBuf,
    pub(crate) what: &'static str,
    /// The chain's name in audit records: its directory relative to the store root.
    pub(crate) id: String,
}

impl DocChain {
    pub(crate) fn doc_path(&self, v: u64) -> PathBuf {
        self.dir.join(format!("v{v:08}.json"))
    }

    pub(crate) fn pointer(&self) -> PathBuf {
        self.dir.join("CURRENT")
    }

    /// The current version, 0 when nothing was committed.
    pub(crate) fn current(&self) -> Result<u64> {
        let p = self.pointer();
        match std::fs::read_to_string(&p) {
            Ok(s) => s.trim().parse().map_err(|_| {
                Error::Corrupt(format!("{} does not hold a version number", p.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    pub(crate) fn read<T: DeserializeOwned>(&self, v: u64) -> Result<T> {
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
    pub(crate) fn list(&self) -> Result<Vec<u64>> {
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

    /// Write `doc` as version `v` (durable, not yet current); its bytes, for the digest the
    /// audit record carries.
    pub(crate) fn write_doc<T: Serialize>(&self, v: u64, doc: &T) -> Result<Vec<u8>> {
        crate::durable::create_private_dir(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(doc).map_err(|e| Error::Serde {
            what: self.what.into(),
            message: e.to_string(),
        })?;
        write_durable(&self.doc_path(v), &bytes)?;
        Ok(bytes)
    }

    /// Make version `v` current.
    pub(crate) fn swap(&self, v: u64) -> Result<()> {
        failpoint("before-current-swap");
        write_durable(&self.pointer(), format!("{v}\n").as_bytes())
    }
}
