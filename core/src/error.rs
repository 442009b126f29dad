//! One error type for the engine.
//!
//! Variants separate "the caller asked for something wrong" ([`Error::InvalidInput`],
//! [`Error::NotFound`], [`Error::Rejected`], [`Error::Locked`], a query that fails while it
//! runs: [`Error::Query`], a limit it hit: [`Error::LimitExceeded`]) from "something underneath
//! failed" ([`Error::Io`], [`Error::Arrow`], [`Error::Parquet`]), "the store is not what it
//! should be" ([`Error::Corrupt`]) and "an invariant of govshare broke" ([`Error::Internal`]).
//!
//! Every error has one stable [`ErrorCode`]: the C status (`gs_status`) and the Python
//! exception class are both derived from it, and tests in both bindings check that each code
//! maps to its own status and class.

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

    /// The query was accepted and planned but failed while it ran, by its own doing: a
    /// division by zero, a cast that fails, a function given an argument it refuses. The
    /// message is DataFusion's and names no data values of rows outside the scope (those are
    /// never evaluated).
    #[error("query failed: {0}")]
    Query(String),

    /// The query hit a resource limit (memory, recursion depth, time).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),

    /// An invariant of govshare itself broke (a poisoned lock, no OS randomness, a bookkeeping
    /// mismatch, an internal error of DataFusion): a bug or a broken environment, not the
    /// caller's fault and not a corrupt store.
    #[error("internal error: {0}")]
    Internal(String),

    /// A running query was stopped by its caller: Ctrl-C (Python, the command line) or a
    /// cancel of its session from another thread (`Session::cancel`, `gs_session_cancel`). Its
    /// completion record says `interrupted` or `cancelled`.
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

    /// Shorthand for [`Error::Internal`].
    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }

    /// The stable code of this error (the one table bindings derive their statuses from).
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidInput(_) => ErrorCode::InvalidInput,
            Error::AccessDenied(_) => ErrorCode::AccessDenied,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Rejected { .. } => ErrorCode::Rejected,
            Error::Locked { .. } => ErrorCode::Locked,
            Error::Corrupt(_) => ErrorCode::Integrity,
            Error::Io { .. } => ErrorCode::Io,
            Error::Query(_) => ErrorCode::QueryFailed,
            Error::LimitExceeded(_) => ErrorCode::LimitExceeded,
            Error::Interrupted => ErrorCode::Interrupted,
            Error::Internal(_) | Error::Arrow(_) | Error::Parquet(_) | Error::Serde { .. } => {
                ErrorCode::Internal
            }
        }
    }
}

/// The kind of an error, as bindings report it. Values are part of the C ABI (`gs_status`
/// uses the same numbers) and are never renumbered or reused; 0-2 and 11 are the C layer's
/// own (success, bad argument, bad handle, panic).
///
/// Deliberately not `#[non_exhaustive]`: the bindings match on it exhaustively, so a new code
/// does not compile until it has its C status and its Python class.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// [`Error::InvalidInput`].
    InvalidInput = 3,
    /// [`Error::AccessDenied`].
    AccessDenied = 4,
    /// [`Error::NotFound`].
    NotFound = 5,
    /// [`Error::Rejected`].
    Rejected = 6,
    /// [`Error::Locked`].
    Locked = 7,
    /// [`Error::Corrupt`]: the store or the trail fails its own checks.
    Integrity = 8,
    /// [`Error::Io`].
    Io = 9,
    /// [`Error::Internal`], and Arrow, Parquet or serialisation failures underneath.
    Internal = 10,
    /// [`Error::Interrupted`].
    Interrupted = 12,
    /// [`Error::Query`].
    QueryFailed = 13,
    /// [`Error::LimitExceeded`].
    LimitExceeded = 14,
}

impl ErrorCode {
    /// Every code, in value order.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidInput,
        ErrorCode::AccessDenied,
        ErrorCode::NotFound,
        ErrorCode::Rejected,
        ErrorCode::Locked,
        ErrorCode::Integrity,
        ErrorCode::Io,
        ErrorCode::Internal,
        ErrorCode::Interrupted,
        ErrorCode::QueryFailed,
        ErrorCode::LimitExceeded,
    ];

    /// The code's stable name (`ACCESS_DENIED`), as the security suite's expected errors and
    /// logs spell it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::AccessDenied => "ACCESS_DENIED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Rejected => "REJECTED",
            ErrorCode::Locked => "LOCKED",
            ErrorCode::Integrity => "INTEGRITY",
            ErrorCode::Io => "IO",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Interrupted => "INTERRUPTED",
            ErrorCode::QueryFailed => "QUERY_FAILED",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
        }
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
