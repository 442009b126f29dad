//! Loading data: CSV (UTF-8 or GBK), Parquet or Arrow batches → validated, clustered,
//! indexed, committed as a new version.
//!
//! A **full load** replaces the dataset. Valid rows stream into per-province staging files
//! (Arrow IPC), so memory stays bounded by one province, not the whole input; each province is
//! then sorted by (cluster field, key) and written as one Parquet file, while the key index and
//! bitmap indexes are built from the sorted rows. An **incremental load** upserts and deletes
//! by key: replaced and deleted rows are masked by roaring deletion vectors, new rows go into
//! delta files, and the indexes are derived from the previous version's — nothing already
//! written is rewritten. [`Writer::compact`](crate::store::Writer::compact) folds deletion vectors and deltas back into
//! clustered files.

mod cluster;
mod load;
mod source;
mod sources;

use std::path::PathBuf;

use arrow::array::RecordBatch;
use chrono::NaiveDate;

use crate::store::Manifest;
use crate::validate::QualityStats;

pub use source::{raw_batches, write_csv};

/// Text encoding of a CSV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// UTF-8 if the first megabyte decodes as UTF-8 (or starts with a BOM), otherwise GBK.
    #[default]
    Auto,
    /// UTF-8 (a BOM is skipped).
    Utf8,
    /// GBK / GB18030, common in government exports.
    Gbk,
}

/// Where a load reads from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A CSV file with a header row naming the fields.
    Csv {
        /// The file.
        path: PathBuf,
        /// Its encoding.
        encoding: Encoding,
    },
    /// A Parquet file whose columns are named like the fields.
    Parquet(PathBuf),
    /// Arrow record batches already in memory.
    Batches(Vec<RecordBatch>),
}

impl Source {
    /// Pick CSV or Parquet by file extension.
    pub fn from_path(path: impl Into<PathBuf>) -> Source {
        let path = path.into();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
        {
            Source::Parquet(path)
        } else {
            Source::Csv {
                path,
                encoding: Encoding::Auto,
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Csv { path, .. } | Source::Parquet(path) => path.display().to_string(),
            Source::Batches(b) => format!("{} Arrow record batches", b.len()),
        }
    }
}

/// Full or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadMode {
    /// Replace the dataset.
    #[default]
    Full,
    /// Upsert and delete by key (an optional `_op` column marks deletes).
    Incremental,
}

impl LoadMode {
    /// [`LoadMode::Incremental`] when `incremental`, else [`LoadMode::Full`]: the doors take a
    /// flag.
    pub fn from_flag(incremental: bool) -> LoadMode {
        if incremental {
            LoadMode::Incremental
        } else {
            LoadMode::Full
        }
    }
}

/// Who delivered the data, for the handover record. Missing fields take their defaults when
/// it is read from JSON (as the bindings do).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct HandoverInfo {
    /// Providing department (defaults to the dataset's provider when empty).
    pub provider_dept: String,
    /// Person who handed the data over.
    pub handover_person: String,
    /// Person who received it.
    pub receiver: String,
    /// Delivery method.
    pub method: String,
    /// Objections the delivered data corrects.
    pub corrects: Vec<u64>,
}

impl Default for HandoverInfo {
    fn default() -> Self {
        HandoverInfo {
            provider_dept: String::new(),
            handover_person: "unspecified".into(),
            receiver: "unspecified".into(),
            method: "file".into(),
            corrects: Vec::new(),
        }
    }
}

/// Options of a load.
pub struct LoadOptions<'a> {
    /// Full or incremental.
    pub mode: LoadMode,
    /// Commit nothing when any row is invalid.
    pub strict: bool,
    /// Let a full load with no valid row commit, emptying the dataset. Without it such a load
    /// (an empty, header-only or all-rejected file) commits nothing: wiping a base database is
    /// never the side effect of a bad delivery.
    pub allow_empty: bool,
    /// The handover record's people and method.
    pub handover: HandoverInfo,
    /// "Today" for not-in-the-future checks (defaults to the current date).
    pub today: Option<NaiveDate>,
    /// Rows per Parquet row group (smaller = finer region pruning, more metadata).
    pub row_group_size: usize,
    /// Called with the number of input rows read so far, after each batch.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        LoadOptions {
            mode: LoadMode::Full,
            strict: false,
            allow_empty: false,
            handover: HandoverInfo::default(),
            today: None,
            row_group_size: 32 * 1024,
            progress: None,
        }
    }
}

/// What a load did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The committed manifest.
    pub manifest: Manifest,
    /// Where rejected rows are listed (when there were any).
    pub rejects_file: Option<PathBuf>,
    /// Quality counts over every input row.
    pub stats: QualityStats,
}
