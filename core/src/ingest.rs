//! Loading data: CSV (UTF-8 or GBK), Parquet or Arrow batches → validated, clustered,
//! indexed, committed as a new version.
//!
//! A **full load** replaces the dataset. Valid rows stream into per-province staging files
//! (Arrow IPC), so memory stays bounded by one province, not the whole input; each province is
//! then sorted by (cluster field, key) and written as one Parquet file, while the key index and
//! bitmap indexes are built from the sorted rows. An **incremental load** upserts and deletes
//! by key: replaced and deleted rows are masked by roaring deletion vectors, new rows go into
//! delta files, and the indexes are derived from the previous version's — nothing already
//! written is rewritten. [`Writer::compact`] folds deletion vectors and deltas back into
//! clustered files.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::{FileWriter, StreamWriter};
use chrono::{NaiveDate, Utc};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use roaring::RoaringBitmap;

use crate::catalog::{DatasetDef, IndexKind};
use crate::error::{Error, IoContext, Result};
use crate::index::{BitmapIndex, KeyIndex};
use crate::store::{DataFile, Handover, Manifest, Operation, Writer, failpoint, write_bitmap};
use crate::validate::{QualityStats, Reject, Validator};

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
}

impl Default for HandoverInfo {
    fn default() -> Self {
        HandoverInfo {
            provider_dept: String::new(),
            handover_person: "unspecified".into(),
            receiver: "unspecified".into(),
            method: "file".into(),
        }
    }
}

/// Options of a load.
pub struct LoadOptions<'a> {
    /// Full or incremental.
    pub mode: LoadMode,
    /// Commit nothing when any row is invalid.
    pub strict: bool,
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

const CSV_BATCH: usize = 64 * 1024;

/// Feeds a blake3 hasher with every byte read, so the handover digest covers the input as
/// delivered without a second pass.
struct Hashing<R> {
    inner: R,
    hasher: Arc<Mutex<blake3::Hasher>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut h) = self.hasher.lock() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Streams bytes in a legacy encoding out as UTF-8; malformed input is an error with its byte
/// offset, never a silent U+FFFD.
struct Decoding<R> {
    inner: R,
    decoder: encoding_rs::Decoder,
    input: Vec<u8>,
    in_len: usize,
    consumed: u64,
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
}

impl<R: Read> Decoding<R> {
    fn new(inner: R, enc: &'static encoding_rs::Encoding) -> Self {
        Decoding {
            inner,
            decoder: enc.new_decoder(),
            input: vec![0; 64 * 1024],
            in_len: 0,
            consumed: 0,
            out: Vec::new(),
            out_pos: 0,
            eof: false,
        }
    }
}

impl<R: Read> Read for Decoding<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.out_pos >= self.out.len() {
            if self.eof && self.in_len == 0 {
                return Ok(0);
            }
            if !self.eof && self.in_len < self.input.len() {
                let n = self.inner.read(&mut self.input[self.in_len..])?;
                if n == 0 {
                    self.eof = true;
                }
                self.in_len += n;
            }
            let cap = self
                .decoder
                .max_utf8_buffer_length_without_replacement(self.in_len)
                .unwrap_or(self.in_len * 3 + 16);
            self.out.resize(cap.max(16), 0);
            let (res, read, written) = self.decoder.decode_to_utf8_without_replacement(
                &self.input[..self.in_len],
                &mut self.out,
                self.eof,
            );
            if let encoding_rs::DecoderResult::Malformed(_, _) = res {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "byte {} of the input is not valid {}",
                        self.consumed + read as u64,
                        self.decoder.encoding().name()
                    ),
                ));
            }
            self.input.copy_within(read..self.in_len, 0);
            self.in_len -= read;
            self.consumed += read as u64;
            self.out.truncate(written);
            self.out_pos = 0;
            if self.eof && self.in_len == 0 && written == 0 {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

fn detect_encoding(path: &Path) -> Result<&'static encoding_rs::Encoding> {
    let mut head = Vec::new();
    File::open(path)
        .at(path)?
        .take(1 << 20)
        .read_to_end(&mut head)
        .at(path)?;
    if head.starts_with(b"\xEF\xBB\xBF") {
        return Ok(encoding_rs::UTF_8);
    }
    Ok(match std::str::from_utf8(&head) {
        Ok(_) => encoding_rs::UTF_8,
        // error_len() == None: only a character cut at the 1 MiB boundary.
        Err(e) if e.error_len().is_none() => encoding_rs::UTF_8,
        Err(_) => encoding_rs::GBK,
    })
}

type BatchIter = Box<dyn Iterator<Item = Result<RecordBatch>>>;

/// Open a source as a stream of raw batches plus the hasher that will hold its digest.
fn open_source(source: &Source) -> Result<(BatchIter, Arc<Mutex<blake3::Hasher>>)> {
    let hasher = Arc::new(Mutex::new(blake3::Hasher::new()));
    match source {
        Source::Csv { path, encoding } => {
            let enc = match encoding {
                Encoding::Auto => detect_encoding(path)?,
                Encoding::Utf8 => encoding_rs::UTF_8,
                Encoding::Gbk => encoding_rs::GBK,
            };
            let open =
                |h: Arc<Mutex<blake3::Hasher>>| -> Result<Decoding<Hashing<BufReader<File>>>> {
                    let f = File::open(path).at(path)?;
                    Ok(Decoding::new(
                        Hashing {
                            inner: BufReader::new(f),
                            hasher: h,
                        },
                        enc,
                    ))
                };
            // Header only: every column is read as text and typed by the validator, so a bad
            // value rejects one row instead of failing type inference for the whole file.
            let mut header = String::new();
            {
                let mut r = BufReader::new(open(Arc::new(Mutex::new(blake3::Hasher::new())))?);
                std::io::BufRead::read_line(&mut r, &mut header)
                    .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
            }
            let names = arrow::csv::reader::Format::default()
                .with_header(true)
                .infer_schema(header.as_bytes(), Some(0))
                .map_err(|e| Error::invalid(format!("{}: header: {e}", path.display())))?
                .0;
            let schema = Arc::new(Schema::new(
                names
                    .fields()
                    .iter()
                    .map(|f| Field::new(f.name().trim(), DataType::Utf8, true))
                    .collect::<Vec<_>>(),
            ));
            let reader = arrow::csv::ReaderBuilder::new(schema)
                .with_header(true)
                .with_batch_size(CSV_BATCH)
                .build(open(hasher.clone())?)?;
            let p = path.display().to_string();
            Ok((
                Box::new(reader.map(move |b| b.map_err(|e| Error::invalid(format!("{p}: {e}"))))),
                hasher,
            ))
        }
        Source::Parquet(path) => {
            {
                let f = File::open(path).at(path)?;
                let mut h = hasher
                    .lock()
                    .map_err(|_| Error::Corrupt("hasher poisoned".into()))?;
                h.update_reader(f).at(path)?;
            }
            let f = File::open(path).at(path)?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(f)?
                .with_batch_size(CSV_BATCH)
                .build()?;
            Ok((Box::new(reader.map(|b| b.map_err(Error::from))), hasher))
        }
        Source::Batches(batches) => {
            if let Some(first) = batches.first() {
                let mut h = hasher
                    .lock()
                    .map_err(|_| Error::Corrupt("hasher poisoned".into()))?;
                // The digest of Arrow input is that of its IPC stream encoding.
                let mut w = StreamWriter::try_new(HashSink(&mut h), &first.schema())?;
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            let owned = batches.clone();
            Ok((Box::new(owned.into_iter().map(Ok)), hasher))
        }
    }
}

struct HashSink<'a>(&'a mut blake3::Hasher);

impl std::io::Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Files and indexes written for the rows of one load (or one compaction).
struct Written {
    files: Vec<DataFile>,
    keys: Vec<(Box<str>, u32)>,
    bitmaps: BTreeMap<String, BitmapIndex>,
    rows: u64,
}

/// Stages rows per province, then writes each province sorted by (cluster field, key) into
/// its own Parquet file, assigning row ids from `base` and building index entries on the way.
struct ClusteredWriter<'d> {
    def: &'d DatasetDef,
    dataset_dir: PathBuf,
    staging_dir: PathBuf,
    version: u64,
    row_group_size: usize,
    buckets: BTreeMap<String, FileWriter<BufWriter<File>>>,
}

impl<'d> ClusteredWriter<'d> {
    fn new(
        def: &'d DatasetDef,
        dataset_dir: &Path,
        version: u64,
        row_group_size: usize,
    ) -> Result<Self> {
        let staging_dir = dataset_dir.join(format!("staging-v{version}"));
        let _ = std::fs::remove_dir_all(&staging_dir); // leftovers of a crashed attempt
        std::fs::create_dir_all(&staging_dir).at(&staging_dir)?;
        for sub in ["data", "deletes", "index"] {
            let d = dataset_dir.join(sub);
            std::fs::create_dir_all(&d).at(&d)?;
        }
        Ok(ClusteredWriter {
            def,
            dataset_dir: dataset_dir.to_path_buf(),
            staging_dir,
            version,
            row_group_size: row_group_size.max(1024),
            buckets: BTreeMap::new(),
        })
    }

    fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let groups: BTreeMap<String, Vec<u32>> = match &self.def.cluster_field {
            None => BTreeMap::from([("all".to_string(), (0..batch.num_rows() as u32).collect())]),
            Some(c) => {
                let col = batch
                    .column_by_name(c)
                    .ok_or_else(|| Error::Corrupt(format!("cluster column {c} missing")))?
                    .as_string::<i32>();
                let mut g: BTreeMap<String, Vec<u32>> = BTreeMap::new();
                for i in 0..col.len() {
                    let p = if col.is_null(i) {
                        "__"
                    } else {
                        col.value(i).get(..2).unwrap_or("__")
                    };
                    match g.get_mut(p) {
                        Some(v) => v.push(i as u32),
                        None => {
                            g.insert(p.to_string(), vec![i as u32]);
                        }
                    }
                }
                g
            }
        };
        for (bucket, idx) in groups {
            let part = if idx.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &arrow::array::UInt32Array::from(idx))?
            };
            let w = match self.buckets.get_mut(&bucket) {
                Some(w) => w,
                None => {
                    let p = self.staging_dir.join(format!("{bucket}.arrow"));
                    let f = BufWriter::new(File::create(&p).at(&p)?);
                    self.buckets
                        .entry(bucket)
                        .or_insert(FileWriter::try_new(f, &batch.schema())?)
                }
            };
            w.write(&part)?;
        }
        Ok(())
    }

    fn finish(mut self, base: u64, tag: &str) -> Result<Written> {
        let schema = self.def.arrow_schema();
        let mut out = Written {
            files: Vec::new(),
            keys: Vec::new(),
            bitmaps: BTreeMap::new(),
            rows: 0,
        };
        let buckets = std::mem::take(&mut self.buckets);
        let mut next = base;
        for (bucket, mut w) in buckets {
            w.finish()?;
            drop(w);
            let p = self.staging_dir.join(format!("{bucket}.arrow"));
            let reader = FileReader::try_new(BufReader::new(File::open(&p).at(&p)?), None)?;
            let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
            let all = concat_batches(&schema, &batches)?;
            drop(batches);
            let mut sort_cols = Vec::new();
            if let Some(c) = &self.def.cluster_field {
                sort_cols.push(SortColumn {
                    values: all.column(schema.index_of(c)?).clone(),
                    options: None,
                });
            }
            sort_cols.push(SortColumn {
                values: all.column(schema.index_of(&self.def.key)?).clone(),
                options: None,
            });
            let order = lexsort_to_indices(&sort_cols, None)?;
            let sorted = take_record_batch(&all, &order)?;
            drop(all);
            std::fs::remove_file(&p).at(&p)?;
            if next + sorted.num_rows() as u64 > u32::MAX as u64 {
                return Err(Error::invalid(
                    "a dataset version is limited to 2^32 row ids; compact or split it",
                ));
            }
            let rel = format!("data/v{}-{tag}-{bucket}.parquet", self.version);
            let row_groups = self.write_parquet(&self.dataset_dir.join(&rel), &sorted)?;
            self.index_rows(&sorted, next as u32, &mut out)?;
            out.files.push(DataFile {
                path: rel,
                rows: sorted.num_rows() as u64,
                row_base: next as u32,
                row_groups,
                deletes: None,
                deleted: 0,
            });
            next += sorted.num_rows() as u64;
            out.rows += sorted.num_rows() as u64;
        }
        let _ = std::fs::remove_dir_all(&self.staging_dir);
        Ok(out)
    }

    fn write_parquet(&self, path: &Path, batch: &RecordBatch) -> Result<Vec<u64>> {
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(self.row_group_size))
            .build();
        let f = File::create(path).at(path)?;
        let mut w = ArrowWriter::try_new(f, batch.schema(), Some(props))?;
        let mut groups = Vec::new();
        let mut off = 0;
        while off < batch.num_rows() {
            let len = self.row_group_size.min(batch.num_rows() - off);
            w.write(&batch.slice(off, len))?;
            // An explicit flush makes row-group boundaries exactly what the manifest records.
            w.flush()?;
            groups.push(len as u64);
            off += len;
        }
        let f = w.into_inner()?;
        f.sync_all().at(path)?;
        Ok(groups)
    }

    fn index_rows(&self, batch: &RecordBatch, base: u32, out: &mut Written) -> Result<()> {
        let keys = batch
            .column_by_name(&self.def.key)
            .ok_or_else(|| Error::Corrupt("key column missing".into()))?
            .as_string::<i32>();
        out.keys.reserve(keys.len());
        for i in 0..keys.len() {
            out.keys.push((keys.value(i).into(), base + i as u32));
        }
        for f in self
            .def
            .fields
            .iter()
            .filter(|f| f.index != IndexKind::None)
        {
            let col = batch
                .column_by_name(&f.name)
                .ok_or_else(|| Error::Corrupt(format!("column {} missing", f.name)))?
                .as_string::<i32>();
            let idx = out.bitmaps.entry(f.name.clone()).or_default();
            let levels: &[usize] = if f.index == IndexKind::Region {
                &[2, 4, 6]
            } else {
                &[usize::MAX]
            };
            for i in 0..col.len() {
                if col.is_null(i) {
                    continue;
                }
                let v = col.value(i);
                for &l in levels {
                    let k = if l == usize::MAX {
                        v
                    } else {
                        v.get(..l).unwrap_or(v)
                    };
                    let id = base + i as u32;
                    match idx.bitmaps.get_mut(k) {
                        // Row ids arrive in increasing order: push appends in O(1).
                        Some(bm) => {
                            if bm.try_push(id).is_err() {
                                bm.insert(id);
                            }
                        }
                        None => {
                            idx.bitmaps
                                .insert(k.to_string(), RoaringBitmap::from_iter([id]));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn write_rejects(path: &Path, rejects: &[Reject]) -> Result<()> {
    use std::io::Write;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).at(d)?;
    }
    let mut w = BufWriter::new(File::create(path).at(path)?);
    writeln!(w, "row,field,reason").at(path)?;
    for r in rejects {
        writeln!(
            w,
            "{},{},\"{}\"",
            r.row,
            r.field,
            r.reason.replace('"', "\"\"")
        )
        .at(path)?;
    }
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .at(path)
}

impl Writer<'_> {
    /// Load `source` into `dataset` as a new version.
    ///
    /// Invalid rows are listed (row, field, reason) in a rejects file under `<store>/rejects/`.
    /// In strict mode any invalid row makes the load commit nothing ([`Error::Rejected`]);
    /// otherwise the valid rows are committed. Either way the previous version is untouched.
    pub fn load(
        &mut self,
        dataset: &str,
        source: Source,
        opts: &LoadOptions<'_>,
    ) -> Result<LoadReport> {
        let started_at = Utc::now();
        let store = self.store;
        let catalog_version = store.catalog_version()?;
        let catalog = store.catalog()?;
        let def = catalog.dataset(dataset)?.clone();
        let current = store.current_version(dataset)?;
        let prev = if current > 0 {
            Some(store.snapshot_at(dataset, current)?)
        } else {
            None
        };
        if opts.mode == LoadMode::Incremental && prev.is_none() {
            return Err(Error::invalid(format!(
                "dataset '{dataset}' has no data yet: its first load must be a full load"
            )));
        }
        let version = current + 1;
        let today = opts
            .today
            .unwrap_or_else(|| chrono::Local::now().date_naive());
        let mut validator =
            Validator::new(&catalog, &def, today, opts.mode == LoadMode::Incremental);
        let (batches, hasher) = open_source(&source)?;
        let dir = store.dataset_dir(dataset);
        let base = prev.as_ref().map_or(0, |p| p.manifest().total_rows());
        let mut cw = ClusteredWriter::new(&def, &dir, version, opts.row_group_size)?;
        let mut rejects = Vec::new();
        let mut deletes = Vec::new();
        let mut read = 0u64;
        for batch in batches {
            let batch = batch?;
            let checked = validator.check(&batch, read + 1)?;
            read += batch.num_rows() as u64;
            cw.push(&checked.rows)?;
            rejects.extend(checked.rejects);
            deletes.extend(checked.deletes);
            if let Some(p) = opts.progress {
                p(read);
            }
        }
        // Incremental: which existing rows the upserts replace and the deletes remove.
        let mut removed = RoaringBitmap::new();
        let mut rows_deleted = 0u64;
        if let Some(prev) = prev.as_ref().filter(|_| opts.mode == LoadMode::Incremental) {
            let kidx = prev.key_index()?;
            for (row, key) in &deletes {
                match kidx.get(key) {
                    Some(id) => {
                        removed.insert(id);
                        rows_deleted += 1;
                    }
                    None => rejects.push(Reject {
                        row: *row,
                        field: def.key.clone(),
                        reason: "delete: no row with this key in the current version".into(),
                    }),
                }
            }
            rejects.sort_by_key(|r| r.row);
        }
        let rejected_rows = {
            let mut rows: Vec<u64> = rejects.iter().map(|r| r.row).collect();
            rows.dedup();
            rows.len() as u64
        };
        let rejects_file = if rejects.is_empty() {
            None
        } else {
            let p = store.root().join("rejects").join(format!(
                "{dataset}-v{version}-{}.csv",
                started_at.format("%Y%m%dT%H%M%S%.3fZ")
            ));
            write_rejects(&p, &rejects)?;
            Some(p)
        };
        if opts.strict && rejected_rows > 0 {
            let _ = std::fs::remove_dir_all(&cw.staging_dir);
            return Err(Error::Rejected {
                rejected: rejected_rows,
                total: read,
                rejects_file: rejects_file.unwrap_or_default(),
            });
        }
        let tag = if opts.mode == LoadMode::Full {
            "full"
        } else {
            "delta"
        };
        let written = cw.finish(if opts.mode == LoadMode::Full { 0 } else { base }, tag)?;
        let input_digest = hasher
            .lock()
            .map_err(|_| Error::Corrupt("hasher poisoned".into()))?
            .finalize()
            .to_hex()
            .to_string();
        let mut handover = Handover {
            provider_dept: if opts.handover.provider_dept.is_empty() {
                def.provider.clone()
            } else {
                opts.handover.provider_dept.clone()
            },
            handover_person: opts.handover.handover_person.clone(),
            receiver: opts.handover.receiver.clone(),
            method: opts.handover.method.clone(),
            source: source.describe(),
            input_digest,
            started_at,
            completed_at: started_at,
            rows_read: read,
            rows_accepted: written.rows,
            rows_rejected: rejected_rows,
            rows_deleted,
        };
        let (operation, prev_for_merge) = match opts.mode {
            LoadMode::Full => (Operation::Full, None),
            LoadMode::Incremental => (Operation::Incremental, prev.as_ref()),
        };
        let manifest = self.assemble(
            &def,
            version,
            catalog_version,
            operation,
            written,
            prev_for_merge,
            removed,
            &mut handover,
        )?;
        let stats = validator.stats;
        Ok(LoadReport {
            manifest,
            rejects_file,
            stats,
        })
    }

    /// Rewrite the live rows of the current version into clustered files without deletion
    /// vectors, as a new version with the same content.
    pub fn compact(&mut self, dataset: &str) -> Result<Manifest> {
        let started_at = Utc::now();
        let store = self.store;
        let snap = store.snapshot(dataset)?;
        let def = snap.dataset().clone();
        let version = snap.version() + 1;
        let mut cw = ClusteredWriter::new(&def, &store.dataset_dir(dataset), version, 32 * 1024)?;
        for b in snap.read(None, None)? {
            cw.push(&b)?;
        }
        let written = cw.finish(0, "compact")?;
        let mut handover = Handover {
            provider_dept: snap.manifest().handover.provider_dept.clone(),
            handover_person: "govshare".into(),
            receiver: "govshare".into(),
            method: "compaction".into(),
            source: format!("{dataset} version {}", snap.version()),
            input_digest: String::new(),
            started_at,
            completed_at: started_at,
            rows_read: snap.manifest().live_rows,
            rows_accepted: written.rows,
            rows_rejected: 0,
            rows_deleted: 0,
        };
        let catalog_version = snap.manifest().catalog_version;
        self.assemble(
            &def,
            version,
            catalog_version,
            Operation::Compaction,
            written,
            None,
            RoaringBitmap::new(),
            &mut handover,
        )
    }

    /// Write indexes and deletion vectors for a new version and commit its manifest.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        &mut self,
        def: &DatasetDef,
        version: u64,
        catalog_version: u64,
        operation: Operation,
        written: Written,
        prev: Option<&crate::store::Snapshot>,
        removed: RoaringBitmap,
        handover: &mut Handover,
    ) -> Result<Manifest> {
        let dir = self.store.dataset_dir(&def.name);
        let idx_dir = dir.join("index").join(format!("v{version}"));
        std::fs::create_dir_all(&idx_dir).at(&idx_dir)?;
        let mut files = Vec::new();
        let mut keys = written.keys;
        let mut bitmaps = written.bitmaps;
        let mut removed_all = removed.clone();
        if let Some(prev) = prev {
            // Upserted keys replace their old rows: those old rows are removed too.
            let old_keys = prev.key_index()?;
            for (k, _) in &keys {
                if let Some(id) = old_keys.get(k) {
                    removed_all.insert(id);
                }
            }
            for (i, f) in prev.manifest().files.iter().enumerate() {
                let end = f.row_base as u64 + f.rows;
                let local: RoaringBitmap = removed_all
                    .range(f.row_base..end as u32)
                    .map(|id| id - f.row_base)
                    .collect();
                let mut nf = f.clone();
                if !local.is_empty() {
                    let mut dv = match &f.deletes {
                        Some(rel) => crate::store::read_bitmap(&dir.join(rel))?,
                        None => RoaringBitmap::new(),
                    };
                    dv |= local;
                    let rel = format!("deletes/v{version}-f{i}.dv");
                    write_bitmap(&dir.join(&rel), &dv)?;
                    nf.deleted = dv.len();
                    nf.deletes = Some(rel);
                }
                files.push(nf);
            }
            keys.extend(
                old_keys
                    .iter()
                    .filter(|(_, id)| !removed_all.contains(*id))
                    .map(|(k, id)| (k.into(), id)),
            );
            for field in prev.manifest().bitmap_indexes.keys() {
                let old = prev.bitmap_index(field)?;
                let new = bitmaps.entry(field.clone()).or_default();
                for (v, bm) in &old.bitmaps {
                    let kept = bm - &removed_all;
                    if !kept.is_empty() {
                        *new.bitmaps.entry(v.clone()).or_default() |= kept;
                    }
                }
            }
        }
        files.extend(written.files);
        let key_rel = format!("index/v{version}/key.idx");
        KeyIndex::build(keys)?.write(&dir.join(&key_rel))?;
        let mut bitmap_indexes = BTreeMap::new();
        for f in def.fields.iter().filter(|f| f.index != IndexKind::None) {
            let rel = format!("index/v{version}/{}.bm", f.name);
            bitmaps
                .remove(&f.name)
                .unwrap_or_default()
                .write(&dir.join(&rel))?;
            bitmap_indexes.insert(f.name.clone(), rel);
        }
        failpoint("after-data-files");
        let live_rows = files.iter().map(|f| f.rows - f.deleted).sum();
        handover.completed_at = Utc::now();
        let manifest = Manifest {
            format: crate::store::FORMAT_VERSION,
            dataset: def.clone(),
            version,
            parent: (version > 1).then(|| version - 1),
            catalog_version,
            created_at: handover.completed_at,
            operation,
            files,
            key_index: key_rel,
            bitmap_indexes,
            live_rows,
            handover: handover.clone(),
        };
        self.commit_manifest(&manifest)?;
        Ok(manifest)
    }
}

/// The raw batches of a source, as read (for reports that do not load).
pub fn raw_batches(source: &Source) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
    Ok(open_source(source)?.0)
}

/// Write batches as CSV (header row; list fields joined with `|`, dates as `YYYY-MM-DD`), in
/// UTF-8 or GBK — the shape of a provider's export, for tests, benches and `govshare generate`.
pub fn write_csv(
    path: &Path,
    batches: impl IntoIterator<Item = RecordBatch>,
    encoding: Encoding,
) -> Result<u64> {
    use std::io::Write;
    let mut out = BufWriter::new(File::create(path).at(path)?);
    let mut rows = 0u64;
    let mut header = true;
    let mut encoder = (encoding == Encoding::Gbk).then(|| encoding_rs::GBK.new_encoder());
    for batch in batches {
        let cols: Vec<arrow::array::ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::List(_) => {
                    let l = c.as_list::<i32>();
                    Arc::new(
                        (0..l.len())
                            .map(|i| {
                                l.is_valid(i).then(|| {
                                    let v = l.value(i);
                                    let s = v.as_string::<i32>();
                                    (0..s.len())
                                        .map(|j| s.value(j))
                                        .collect::<Vec<_>>()
                                        .join("|")
                                })
                            })
                            .collect::<arrow::array::StringArray>(),
                    ) as arrow::array::ArrayRef
                }
                _ => c.clone(),
            })
            .collect();
        let schema = Arc::new(Schema::new(
            batch
                .schema()
                .fields()
                .iter()
                .zip(&cols)
                .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let flat = RecordBatch::try_new(schema, cols)?;
        let mut buf = Vec::new();
        {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(header)
                .build(&mut buf);
            w.write(&flat)?;
        }
        header = false;
        match &mut encoder {
            None => out.write_all(&buf).at(path)?,
            Some(enc) => {
                let text = std::str::from_utf8(&buf).map_err(|e| Error::invalid(e.to_string()))?;
                let mut dst = vec![
                    0u8;
                    enc.max_buffer_length_from_utf8_without_replacement(text.len())
                        .unwrap_or(text.len() * 4)
                ];
                let (res, _, written) =
                    enc.encode_from_utf8_without_replacement(text, &mut dst, false);
                if let encoding_rs::EncoderResult::Unmappable(c) = res {
                    return Err(Error::invalid(format!(
                        "character {c:?} cannot be written in GBK"
                    )));
                }
                out.write_all(&dst[..written]).at(path)?;
            }
        }
        rows += flat.num_rows() as u64;
    }
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .at(path)?;
    Ok(rows)
}
