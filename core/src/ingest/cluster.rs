//! Clustering: rows sorted by (cluster field, key) into Parquet files with fixed-size row
//! groups, with the key and bitmap indexes built from the sorted rows as they are written.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use roaring::RoaringBitmap;

use crate::catalog::{DatasetDef, IndexKind};
use crate::error::{Error, IoContext, Result};
use crate::index::BitmapIndex;
use crate::store::DataFile;
use crate::validate::Reject;

/// Files and indexes written for the rows of one load (or one compaction).
#[derive(Default)]
pub(super) struct Written {
    pub(super) files: Vec<DataFile>,
    pub(super) keys: Vec<(Box<str>, u32)>,
    pub(super) bitmaps: BTreeMap<String, BitmapIndex>,
    pub(super) rows: u64,
}

/// Stages rows per province, then writes each province sorted by (cluster field, key) into
/// its own Parquet file, assigning row ids from `base` and building index entries on the way.
pub(super) struct ClusteredWriter<'d> {
    pub(super) def: &'d DatasetDef,
    pub(super) dataset_dir: PathBuf,
    pub(super) staging_dir: PathBuf,
    pub(super) version: u64,
    pub(super) row_group_size: usize,
    /// Per province: its staging file and the rows staged in it.
    pub(super) buckets: BTreeMap<String, (FileWriter<BufWriter<File>>, u64)>,
}

/// Bytes per Parquet data page (checked per write batch of 1024 rows): about what a point
/// read decodes per column.
const PAGE_BYTES: usize = 16 * 1024;

/// Whether a field's values are (nearly) all different — identifiers, names, phones,
/// addresses — so a dictionary would only overflow.
fn mostly_distinct(def: &DatasetDef, f: &crate::catalog::FieldDef) -> bool {
    use crate::catalog::{MaskKind, Standard};
    f.name == def.key
        || matches!(
            f.standard,
            Standard::CitizenId | Standard::Uscc | Standard::MobilePhone | Standard::Phone
        )
        || matches!(
            f.mask,
            MaskKind::CitizenId | MaskKind::Name | MaskKind::Phone | MaskKind::Address
        )
}

impl<'d> ClusteredWriter<'d> {
    pub(super) fn new(
        def: &'d DatasetDef,
        dataset_dir: &Path,
        version: u64,
        row_group_size: usize,
    ) -> Result<Self> {
        let staging_dir = dataset_dir.join(format!("staging-v{version}"));
        let _ = std::fs::remove_dir_all(&staging_dir); // leftovers of a crashed attempt
        crate::durable::create_private_dir(&staging_dir)?;
        for sub in ["data", "deletes", "index"] {
            let d = dataset_dir.join(sub);
            crate::durable::create_private_dir(&d)?;
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

    pub(super) fn push(&mut self, batch: &RecordBatch) -> Result<()> {
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
            let (w, rows) = match self.buckets.get_mut(&bucket) {
                Some(w) => w,
                None => {
                    let p = self.staging_dir.join(format!("{bucket}.arrow"));
                    let f = BufWriter::new(crate::durable::create_private(&p)?);
                    self.buckets
                        .entry(bucket)
                        .or_insert((FileWriter::try_new(f, &batch.schema())?, 0))
                }
            };
            w.write(&part)?;
            *rows += part.num_rows() as u64;
        }
        Ok(())
    }

    pub(super) fn finish(mut self, base: u64, tag: &str) -> Result<Written> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Row ids are assigned in province order up front, so the provinces can then be
        // sorted and written in any order: two at a time, one per core.
        let mut jobs = Vec::new();
        let mut next = base;
        for (bucket, (mut w, rows)) in std::mem::take(&mut self.buckets) {
            w.finish()?;
            drop(w);
            if next + rows > u32::MAX as u64 + 1 {
                return Err(Error::invalid(
                    "a dataset version is limited to 2^32 row ids; compact or split it",
                ));
            }
            jobs.push((bucket, next as u32));
            next += rows;
        }
        let taken = AtomicUsize::new(0);
        let work = || {
            let mut done = Vec::new();
            while let Some((bucket, base)) = jobs.get(taken.fetch_add(1, Ordering::Relaxed)) {
                let r = self.write_bucket(bucket, *base, tag);
                let failed = r.is_err();
                done.push((*base, r));
                if failed {
                    break;
                }
            }
            done
        };
        let mut parts = std::thread::scope(|s| {
            let other = s.spawn(work);
            let mut mine = work();
            match other.join() {
                Ok(theirs) => mine.extend(theirs),
                Err(_) => mine.push((0, Err(Error::internal("a province writer panicked")))),
            }
            mine
        });
        parts.sort_by_key(|(base, _)| *base);
        let mut out = Written::default();
        for (_, part) in parts {
            let part = part?;
            out.files.extend(part.files);
            out.keys.extend(part.keys);
            out.rows += part.rows;
            for (field, index) in part.bitmaps {
                let merged = out.bitmaps.entry(field).or_default();
                for (value, rows) in index.bitmaps {
                    match merged.bitmaps.get_mut(&value) {
                        Some(b) => *b |= rows,
                        None => {
                            merged.bitmaps.insert(value, rows);
                        }
                    }
                }
            }
        }
        if out.rows != next - base {
            return Err(Error::internal(
                "provinces written differ from those staged",
            ));
        }
        let _ = std::fs::remove_dir_all(&self.staging_dir);
        Ok(out)
    }

    /// Sort one staged province and write its Parquet file, its row blocks and its index
    /// entries, with row ids from `base`.
    fn write_bucket(&self, bucket: &str, base: u32, tag: &str) -> Result<Written> {
        let schema = self.def.arrow_schema();
        let mut out = Written::default();
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
        let rel = format!("data/v{}-{tag}-{bucket}.parquet", self.version);
        let rel_rows = format!("data/v{}-{tag}-{bucket}.rows", self.version);
        // The row blocks are written on another thread while this one writes the Parquet
        // file and the indexes: same rows, independent outputs.
        let (row_groups, row_blocks) = std::thread::scope(|s| {
            let blocks = s.spawn(|| {
                crate::store::rowblocks::write(&self.dataset_dir.join(&rel_rows), &sorted)
            });
            let groups = self
                .write_parquet(&self.dataset_dir.join(&rel), &sorted)
                .and_then(|g| {
                    self.index_rows(&sorted, base, &mut out)?;
                    Ok(g)
                });
            let blocks = blocks
                .join()
                .map_err(|_| Error::internal("the row-block writer panicked"))
                .and_then(|r| r);
            Ok::<_, Error>((groups?, blocks?))
        })?;
        out.files.push(DataFile {
            path: rel,
            rows: sorted.num_rows() as u64,
            row_base: base,
            row_groups,
            deletes: None,
            deleted: 0,
            row_blocks: row_blocks.then_some(rel_rows),
        });
        out.rows = sorted.num_rows() as u64;
        Ok(out)
    }

    fn write_parquet(&self, path: &Path, batch: &RecordBatch) -> Result<Vec<u64>> {
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(self.row_group_size))
            // Small pages by bytes: reading one subject's row (a key lookup) decodes one
            // page per column, so page size is what a lookup costs (the offset index lets the
            // reader skip the others). Plain columns of identifiers and names get pages of a
            // thousand-odd rows; dictionary-encoded code columns, a few bits a row, keep long
            // pages, which is what a scan wants (every page has a fixed cost).
            .set_data_page_size_limit(PAGE_BYTES);
        for f in self
            .def
            .fields
            .iter()
            .filter(|f| mostly_distinct(self.def, f))
        {
            // A dictionary of near-unique values overflows and falls back to plain encoding,
            // but the overflowed dictionary page stays in the file, and every read of the
            // column chunk — one row by key too — must decode it first (300 KB of citizen
            // IDs per row group). Plain from the start.
            props = props.set_column_dictionary_enabled(ColumnPath::from(f.name.as_str()), false);
        }
        let props = props.build();
        let f = crate::durable::create_private(path)?;
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

pub(super) fn write_rejects(path: &Path, rejects: &[Reject]) -> Result<()> {
    use std::io::Write;
    if let Some(d) = path.parent() {
        crate::durable::create_private_dir(d)?;
    }
    let mut w = BufWriter::new(crate::durable::create_private(path)?);
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
