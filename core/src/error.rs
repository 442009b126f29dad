//! One error type for the engine.
//!
//! Variants separate "the caller asked for something wrong" ([`Error::InvalidInput`],
//! [`Error::NotFound`], [`Error::Rejected`], [`Error::Locked`]) from "something underneath
//! failed" ([`Error::Io`], [`Error::Arrow`], [`Error::Parquet`]) and "the store is not what it
//! should be" ([`Error::Corrupt`]), so bindings can map them to stable codes and exception types.

use std::path::PathBuf;

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in govshare-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something malformed: a bad argument, an unknown column, a catalog file
    /// that does not parse. The message says what and where.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The policy refuses: unknown or suspended principal, no valid grant, a field or dataset
    /// not granted, a forbidden statement. The message says what is missing and how access is
    /// obtained; it never contains data values.
    #[error("access denied: {0}")]
    AccessDenied(String),

    /// A named thing (dataset, field, version, store) does not exist.
    #[error("not found: {0}")]
    NotFound(String),

    /// A strict load found invalid rows and committed nothing.
    #[error(
        "strict load refused: {rejected} of {total} rows were invalid; nothing was committed \
         (details in {})", rejects_file.display()
    )]
    Rejected {
        /// Number of rows that failed validation.
        rejected: u64,
        /// Number of rows read from the input.
        total: u64,
        /// CSV file listing row, field and reason of each rejection.
        rejects_file: PathBuf,
    },

    /// Another process holds the store's writer lock.
    #[error(
        "the store at {} is locked by another writer; only one load or catalog change may run \
         at a time — wait for it to finish", path.display()
    )]
    Locked {
        /// The store directory.
        path: PathBuf,
    },

    /// The store's files contradict each other or their own checksums.
    #[error("store is corrupt: {0}")]
    Corrupt(String),

    /// The caller interrupted a running query (e.g. Ctrl-C in Python); its stream should be
    /// dropped, which cancels the work and records the query as abandoned.
    #[error("the query was interrupted")]
    Interrupted,
    /// File system error, with the path involved.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Arrow failed (decoding CSV, casting, building arrays).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Parquet failed (reading or writing a data file).
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    /// A JSON or TOML document (manifest, catalog) failed to (de)serialise.
    #[error("serialisation of {what}: {message}")]
    Serde {
        /// Which document.
        what: String,
        /// The parser's message.
        message: String,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }
}

/// Attach a path to an [`std::io::Error`].
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
