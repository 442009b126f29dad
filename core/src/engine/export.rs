//! Bulk export (shared service, 共享服务): the granted fields and rows of one dataset version,
//! masked as granted, written to Parquet, CSV (UTF-8 or GBK) or Arrow IPC, with a manifest
//! whose digest is on the trail.
//!
//! An export is a query in export mode: decided by the gate under an export grant, its row
//! count checked against the grant's `max_rows` and its day's count against `per_day` before
//! anything is written, recorded durably before the first row is read, its subjects recorded
//! when it ends. Files are written under temporary names and renamed only when complete, so a
//! failed export leaves nothing behind; the manifest (`<dataset>.<ext>.manifest.json`) names the
//! dataset, version, grant, row count and the blake3 of each file, and its own blake3 is in an
//! `export` record on the trail, so a recipient can prove what they received
//! ([`verify_export`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::audit::ChainHash;
use crate::error::{Error, IoContext, Result};

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// Parquet (zstd).
    Parquet,
    /// CSV with a header, UTF-8.
    CsvUtf8,
    /// CSV with a header, GBK (GB18030), as many government systems expect.
    CsvGbk,
    /// Arrow IPC stream.
    ArrowIpc,
}

impl ExportFormat {
    fn extension(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::CsvUtf8 | ExportFormat::CsvGbk => "csv",
            ExportFormat::ArrowIpc => "arrows",
        }
    }

    /// The format named `s` (`parquet`, `csv`, `csv-gbk`, `arrow`).
    pub fn parse(s: &str) -> Result<ExportFormat> {
        match s {
            "parquet" => Ok(ExportFormat::Parquet),
            "csv" | "csv-utf8" => Ok(ExportFormat::CsvUtf8),
            "csv-gbk" => Ok(ExportFormat::CsvGbk),
            "arrow" | "ipc" => Ok(ExportFormat::ArrowIpc),
            _ => Err(Error::invalid(format!(
                "unknown export format '{s}' (parquet, csv, csv-gbk, arrow)"
            ))),
        }
    }
}

/// One exported file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportFile {
    /// File name, in the manifest's directory.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// blake3 of the file (hex).
    pub blake3: String,
    /// SM3 of the file (hex), in a store made with national cryptography.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm3: Option<String>,
}

/// What an export delivered: written beside the files and digested on the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportManifest {
    /// Dataset.
    pub dataset: String,
    /// Data version exported.
    pub version: u64,
    /// The export grant.
    pub grant: u64,
    /// Who exported, for which purpose, in which department.
    pub user: String,
    /// Purpose code.
    pub purpose: String,
    /// Department code.
    pub department: String,
    /// The granted fields, with their masks (`field:Mask`).
    pub fields: Vec<String>,
    /// Format.
    pub format: ExportFormat,
    /// Rows exported.
    pub rows: u64,
    /// The files.
    pub files: Vec<ExportFile>,
    /// The trail record of the export (its opening query record).
    pub query_seq: u64,
    /// When.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Where batches go while an export runs: a writer for the chosen format over a temporary
/// file.
pub(super) struct Sink {
    path: PathBuf,
    tmp: PathBuf,
    writer: Writer,
    hash: ChainHash,
}

enum Writer {
    Parquet(parquet::arrow::ArrowWriter<File>),
    Csv {
        out: BufWriter<File>,
        gbk: bool,
        header: bool,
    },
    Ipc(arrow::ipc::writer::StreamWriter<BufWriter<File>>),
}

impl Sink {
    /// A sink for `dataset`'s rows (schema `schema`) in `dir`; refuses to overwrite. The file
    /// is digested with blake3, and SM3 beside it when `hash` is SM3.
    pub(super) fn create(
        dir: &Path,
        dataset: &str,
        format: ExportFormat,
        schema: &arrow::datatypes::SchemaRef,
        hash: ChainHash,
    ) -> Result<Sink> {
        // Checked again here: another export may have finished since `check_target`.
        check_target(dir, dataset, format)?;
        std::fs::create_dir_all(dir).at(dir)?;
        let path = dir.join(format!("{dataset}.{}", format.extension()));
        let tmp = dir.join(format!(".{dataset}.{}.part", format.extension()));
        let file = File::create(&tmp).at(&tmp)?;
        let writer = match format {
            ExportFormat::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build();
                Writer::Parquet(parquet::arrow::ArrowWriter::try_new(
                    file,
                    schema.clone(),
                    Some(props),
                )?)
            }
            ExportFormat::CsvUtf8 | ExportFormat::CsvGbk => Writer::Csv {
                out: BufWriter::new(file),
                gbk: format == ExportFormat::CsvGbk,
                header: true,
            },
            ExportFormat::ArrowIpc => Writer::Ipc(arrow::ipc::writer::StreamWriter::try_new(
                BufWriter::new(file),
                schema,
            )?),
        };
        Ok(Sink {
            path,
            tmp,
            writer,
            hash,
        })
    }

    /// Write one batch.
    pub(super) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match &mut self.writer {
            Writer::Parquet(w) => w.write(batch)?,
            Writer::Csv { out, gbk, header } => {
                let mut buf = Vec::new();
                arrow::csv::WriterBuilder::new()
                    .with_header(*header)
                    .build(&mut buf)
                    .write(batch)?;
                *header = false;
                if *gbk {
                    let text = String::from_utf8_lossy(&buf);
                    let (bytes, _, unmappable) = encoding_rs::GBK.encode(&text);
                    if unmappable {
                        return Err(Error::invalid(
                            "a value has characters GBK cannot encode; export as UTF-8",
                        ));
                    }
                    out.write_all(&bytes).at(&self.tmp)?;
                } else {
                    out.write_all(&buf).at(&self.tmp)?;
                }
            }
            Writer::Ipc(w) => w.write(batch)?,
        }
        Ok(())
    }

    /// Finish the file, sync it, rename it into place; its manifest entry.
    pub(super) fn finish(self) -> Result<ExportFile> {
        let file = match self.writer {
            Writer::Parquet(w) => w.into_inner()?,
            Writer::Csv { out, .. } => out.into_inner().map_err(|e| Error::Io {
                path: self.tmp.clone(),
                source: e.into_error(),
            })?,
            Writer::Ipc(mut w) => {
                w.finish()?;
                w.into_inner()?.into_inner().map_err(|e| Error::Io {
                    path: self.tmp.clone(),
                    source: e.into_error(),
                })?
            }
        };
        file.sync_all().at(&self.tmp)?;
        drop(file);
        let entry = file_entry(&self.tmp, &self.path, self.hash)?;
        std::fs::rename(&self.tmp, &self.path).at(&self.path)?;
        Ok(entry)
    }

    /// Remove the unfinished file (an export that failed leaves nothing).
    pub(super) fn abandon(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Refuse an export whose file or manifest exists already in `dir` (an export never
/// overwrites).
pub(super) fn check_target(dir: &Path, dataset: &str, format: ExportFormat) -> Result<()> {
    let path = dir.join(format!("{dataset}.{}", format.extension()));
    for p in [&path, &manifest_path(dir, dataset, format)] {
        if p.exists() {
            return Err(Error::invalid(format!(
                "{} exists already; an export never overwrites",
                p.display()
            )));
        }
    }
    Ok(())
}

fn file_entry(read_from: &Path, named: &Path, hash: ChainHash) -> Result<ExportFile> {
    let mut h = blake3::Hasher::new();
    h.update_reader(File::open(read_from).at(read_from)?)
        .at(read_from)?;
    let sm3 = hash
        .twin_of(File::open(read_from).at(read_from)?)
        .at(read_from)?;
    Ok(ExportFile {
        name: named
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes: std::fs::metadata(read_from).at(read_from)?.len(),
        blake3: h.finalize().to_hex().to_string(),
        sm3,
    })
}

/// Where an export of `dataset` as `format` into `dir` puts its manifest (exports of other
/// formats may sit beside it).
pub fn manifest_path(dir: &Path, dataset: &str, format: ExportFormat) -> PathBuf {
    dir.join(format!("{dataset}.{}.manifest.json", format.extension()))
}

/// Write the manifest (durably) and return its bytes' blake3 (and SM3 under `hash` SM3).
pub(super) fn write_manifest(
    dir: &Path,
    m: &ExportManifest,
    hash: ChainHash,
) -> Result<(String, Option<String>)> {
    write_json(
        &manifest_path(dir, &m.dataset, m.format),
        m,
        "export manifest",
        hash,
    )
}

/// Write `doc` as pretty JSON to `path` (through a synced temporary beside it, then a rename)
/// and return its bytes' blake3, and their SM3 when `hash` is SM3.
pub(super) fn write_json<T: Serialize>(
    path: &Path,
    doc: &T,
    what: &str,
    hash: ChainHash,
) -> Result<(String, Option<String>)> {
    let bytes = serde_json::to_vec_pretty(doc).map_err(|e| Error::Serde {
        what: what.into(),
        message: e.to_string(),
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.part"));
    let mut f = File::create(&tmp).at(&tmp)?;
    f.write_all(&bytes).at(&tmp)?;
    f.sync_all().at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)?;
    Ok((blake3::hash(&bytes).to_hex().to_string(), hash.twin(&bytes)))
}

/// Check an export as received: every file the manifest at `manifest` names is there, with
/// its size and blake3. Returns the manifest and its blake3 (to compare with the trail's
/// `export` record); a missing or altered file is [`Error::Corrupt`] naming it.
pub fn verify_export(manifest: &Path) -> Result<(ExportManifest, String)> {
    let bytes = std::fs::read(manifest).at(manifest)?;
    let m: ExportManifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Corrupt(format!("{}: {e}", manifest.display())))?;
    check_files(manifest, &m.files)?;
    Ok((m, blake3::hash(&bytes).to_hex().to_string()))
}

/// Every file a manifest at `manifest` lists is beside it with its size and blake3.
pub(super) fn check_files(manifest: &Path, files: &[ExportFile]) -> Result<()> {
    let dir = manifest.parent().unwrap_or(Path::new("."));
    for f in files {
        // Names come from the manifest: only plain file names beside it.
        if f.name.contains('/') || f.name.contains('\\') || f.name.starts_with('.') {
            return Err(Error::Corrupt(format!(
                "{}: file name '{}' is not a plain name",
                manifest.display(),
                f.name
            )));
        }
        let path = dir.join(&f.name);
        // A file listed with an SM3 digest is checked with it too.
        let hash = if f.sm3.is_some() {
            ChainHash::Sm3
        } else {
            ChainHash::Blake3
        };
        let got = file_entry(&path, &path, hash)?;
        if got.bytes != f.bytes || got.blake3 != f.blake3 || got.sm3 != f.sm3 {
            return Err(Error::Corrupt(format!(
                "{} does not match its manifest (altered or truncated)",
                path.display()
            )));
        }
    }
    Ok(())
}
