//! The documents of a store: manifests of dataset versions (with their handover records) and
//! catalog versions. Plain serde types; reading and committing them is the chain's job.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::Checkpoint;
use crate::catalog::{Catalog, DatasetDef};

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
    /// SM3 digest (hex) of the input, in a store made with national cryptography.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_sm3: Option<String>,
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
    /// Objections this version corrects (a correction references what it answers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corrects: Vec<u64>,
}

/// A value a load did not write because its source is not the field's authoritative one
/// (一数一源) and disagreed with the value in force: the key, the field and both sources —
/// never either value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The subject's key.
    pub key: String,
    /// The field.
    pub field: String,
    /// The field's authoritative department, whose value stands.
    pub authority: String,
    /// The department whose load disagreed.
    pub source: String,
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
    /// The same rows in row blocks (relative path), for point reads; absent in stores written
    /// before row blocks existed, or when a column type has no row encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_blocks: Option<String>,
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
    /// The operator (a user of the store) whose act committed it; separation of duties keeps
    /// them from approving access to what they loaded.
    #[serde(default)]
    pub committed_by: String,
    /// The audit trail's head when this version was committed (before its own record): a trail
    /// cut short below it no longer verifies, checkpoint or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Checkpoint>,
    /// Values this version kept from the authoritative source against a disagreeing load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
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
    /// The audit trail's head when this version was committed (see [`Manifest::anchor`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Checkpoint>,
}
