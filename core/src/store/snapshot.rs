//! A pinned version of a dataset and the reads it serves: live rows, indexes, region scopes,
//! and Parquet reads limited to a bitmap of row ids.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::file::metadata::PageIndexPolicy;
use roaring::RoaringBitmap;

use crate::catalog::{DatasetDef, IndexKind};
use crate::error::{Error, IoContext, Result};
use crate::index::{BitmapIndex, KeyIndex};
use crate::regions::region_prefix;

use super::rowblocks::RowBlocks;
use super::{DataFile, Manifest};

/// A pinned version of a dataset: its manifest, with indexes, live rows and the data files'
/// Parquet footers loaded lazily on first use. A version's files never change once committed,
/// so a snapshot the store keeps (see `Store::pinned`) serves every later query of that
/// version from memory: the index files are read and checked once, not once per query.
#[derive(Debug)]
pub struct Snapshot {
    dir: PathBuf,
    manifest: Manifest,
    key_index: OnceLock<Arc<KeyIndex>>,
    bitmaps: Mutex<HashMap<String, Arc<BitmapIndex>>>,
    live: OnceLock<Arc<RoaringBitmap>>,
    /// Per data file: its deletion vector (file-local offsets) and Parquet metadata with the
    /// offset index, so a selection of a few rows decodes only the pages holding them.
    files: Vec<OnceLock<Arc<FileMeta>>>,
    /// Per data file: its row blocks, opened on the first point read.
    blocks: Vec<OnceLock<Arc<RowBlocks>>>,
}

/// Up to this many rows of one file are read from its row blocks (a block each, at most)
/// rather than from Parquet (a page per column per row group touched).
const POINT_READ_ROWS: u64 = 64;

/// What a snapshot keeps of one data file after first use.
#[derive(Debug)]
struct FileMeta {
    deletes: RoaringBitmap,
    parquet: ArrowReaderMetadata,
}

impl Snapshot {
    pub(super) fn new(dir: PathBuf, manifest: Manifest) -> Snapshot {
        let files = manifest.files.iter().map(|_| OnceLock::new()).collect();
        let blocks = manifest.files.iter().map(|_| OnceLock::new()).collect();
        Snapshot {
            dir,
            manifest,
            key_index: OnceLock::new(),
            bitmaps: Mutex::new(HashMap::new()),
            live: OnceLock::new(),
            files,
            blocks,
        }
    }

    fn file_meta(&self, file: usize) -> Result<Arc<FileMeta>> {
        let slot = self
            .files
            .get(file)
            .ok_or_else(|| Error::NotFound(format!("data file {file}")))?;
        if let Some(m) = slot.get() {
            return Ok(m.clone());
        }
        let f = &self.manifest.files[file];
        let path = self.path(&f.path);
        let handle = File::open(&path).at(&path)?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let parquet = ArrowReaderMetadata::load(&handle, options)?;
        let meta = Arc::new(FileMeta {
            deletes: self.file_deletes(f)?,
            parquet,
        });
        Ok(slot.get_or_init(|| meta).clone())
    }

    /// The manifest of the pinned version.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The pinned version number.
    pub fn version(&self) -> u64 {
        self.manifest.version
    }

    /// The dataset definition the version was written with.
    pub fn dataset(&self) -> &DatasetDef {
        &self.manifest.dataset
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Deleted row ids of the version.
    pub fn deleted(&self) -> Result<RoaringBitmap> {
        let mut out = RoaringBitmap::new();
        for f in &self.manifest.files {
            out |= self
                .file_deletes(f)?
                .into_iter()
                .map(|o| o + f.row_base)
                .collect::<RoaringBitmap>();
        }
        Ok(out)
    }

    fn file_deletes(&self, f: &DataFile) -> Result<RoaringBitmap> {
        match &f.deletes {
            None => Ok(RoaringBitmap::new()),
            Some(rel) => crate::durable::read_bitmap(&self.path(rel)),
        }
    }

    /// Every live row id of the version.
    pub fn live_rows(&self) -> Result<RoaringBitmap> {
        Ok(self.live()?.as_ref().clone())
    }

    /// Every live row id of the version, computed once.
    pub fn live(&self) -> Result<Arc<RoaringBitmap>> {
        if let Some(l) = self.live.get() {
            return Ok(l.clone());
        }
        let mut all = RoaringBitmap::new();
        let total = self.manifest.total_rows();
        if total > 0 {
            all.insert_range(0..total as u32);
        }
        all -= self.deleted()?;
        Ok(self.live.get_or_init(|| Arc::new(all)).clone())
    }

    /// The key index, loaded on first use.
    pub fn key_index(&self) -> Result<Arc<KeyIndex>> {
        if let Some(k) = self.key_index.get() {
            return Ok(k.clone());
        }
        let k = Arc::new(KeyIndex::read(&self.path(&self.manifest.key_index))?);
        Ok(self.key_index.get_or_init(|| k).clone())
    }

    /// Row id of the live row with this key.
    pub fn lookup(&self, key: &str) -> Result<Option<u32>> {
        self.key_index().map(|k| k.get(key))
    }

    /// The bitmap index of `field`, loaded on first use.
    pub fn bitmap_index(&self, field: &str) -> Result<Arc<BitmapIndex>> {
        let mut cache = self
            .bitmaps
            .lock()
            .map_err(|_| Error::internal("index cache poisoned"))?;
        if let Some(b) = cache.get(field) {
            return Ok(b.clone());
        }
        let rel = self.manifest.bitmap_indexes.get(field).ok_or_else(|| {
            Error::NotFound(format!(
                "field '{}.{field}' has no bitmap index (indexed: {})",
                self.manifest.dataset.name,
                self.manifest
                    .bitmap_indexes
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let b = Arc::new(BitmapIndex::read(&self.path(rel))?);
        cache.insert(field.to_string(), b.clone());
        Ok(b)
    }

    /// Live rows whose `field` equals `value`; for a region-indexed field, `value` may be a
    /// province, city or county code (`430000`, `430600`, `430623`) and selects the whole area.
    pub fn scope(&self, field: &str, value: &str) -> Result<RoaringBitmap> {
        let def = self.manifest.dataset.require_field(field)?;
        let idx = self.bitmap_index(field)?;
        Ok(match def.index {
            IndexKind::Region => idx.get(region_prefix(value)?),
            _ => idx.get(value),
        })
    }

    /// Read rows of the version: `rows` (or all), minus deleted rows, as batches with the
    /// given columns (or all). Only the Parquet pages holding selected rows are decoded.
    pub fn read(
        &self,
        rows: Option<&RoaringBitmap>,
        columns: Option<&[&str]>,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for i in 0..self.manifest.files.len() {
            if let Some(reader) = self.file_reader(i, rows, columns)? {
                for b in reader {
                    out.push(b?);
                }
            }
        }
        Ok(out)
    }

    /// A reader over one data file of the version, limited to `rows` (global row ids, or all)
    /// minus deleted rows; `None` when no selected row lives in that file. The selection is
    /// applied inside the Parquet decoder: unselected rows are never materialised.
    pub fn file_reader(
        &self,
        file: usize,
        rows: Option<&RoaringBitmap>,
        columns: Option<&[&str]>,
    ) -> Result<Option<FileRows>> {
        let local = self.file_rows(file, rows)?;
        self.read_local(file, &local, columns)
    }

    /// The live rows of one data file among `rows` (global row ids, or all), as offsets in
    /// the file.
    pub fn file_rows(&self, file: usize, rows: Option<&RoaringBitmap>) -> Result<RoaringBitmap> {
        let f = self
            .manifest
            .files
            .get(file)
            .ok_or_else(|| Error::NotFound(format!("data file {file}")))?;
        let end = f.row_base as u64 + f.rows;
        let file_range = f.row_base..end.min(u32::MAX as u64 + 1) as u32;
        let whole = || {
            let mut b = RoaringBitmap::new();
            b.insert_range(0..f.rows as u32);
            b
        };
        // Rows are chosen per file; with region clustering a file is mostly wholly in or out
        // of a scope, so those cases are one range operation instead of one insert per id.
        let mut local: RoaringBitmap = match rows {
            None => whole(),
            Some(r) => match r.range_cardinality(file_range.clone()) {
                0 => return Ok(RoaringBitmap::new()),
                n if n == f.rows => whole(),
                _ => r.range(file_range).map(|id| id - f.row_base).collect(),
            },
        };
        if f.deletes.is_some() {
            local -= &self.file_meta(file)?.deletes;
        }
        Ok(local)
    }

    /// The Parquet metadata of one data file (row groups, statistics, page index), read once.
    pub fn parquet_metadata(&self, file: usize) -> Result<ArrowReaderMetadata> {
        Ok(self.file_meta(file)?.parquet.clone())
    }

    /// A reader over the rows of one data file at `local` offsets (see [`Snapshot::file_rows`];
    /// the caller has removed deleted rows); `None` when `local` is empty.
    pub fn read_local(
        &self,
        file: usize,
        local: &RoaringBitmap,
        columns: Option<&[&str]>,
    ) -> Result<Option<FileRows>> {
        if local.is_empty() {
            return Ok(None);
        }
        let f = self
            .manifest
            .files
            .get(file)
            .ok_or_else(|| Error::NotFound(format!("data file {file}")))?;
        if local.len() <= POINT_READ_ROWS
            && let Some(rel) = &f.row_blocks
        {
            return self.read_blocks(file, rel, local, columns).map(Some);
        }
        let meta = self.file_meta(file)?;
        let path = self.path(&f.path);
        let handle = File::open(&path).at(&path)?;
        let builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(handle, meta.parquet.clone());
        let mut order = None;
        let mask = match columns {
            None => ProjectionMask::all(),
            Some(cols) => {
                let schema = builder.schema().clone();
                let idx = cols
                    .iter()
                    .map(|c| {
                        schema.index_of(c).map_err(|_| {
                            Error::NotFound(format!(
                                "dataset '{}' has no field '{c}'",
                                self.manifest.dataset.name
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                // The decoder yields columns in file order; put them back in the order asked.
                let mut sorted = idx.clone();
                sorted.sort_unstable();
                sorted.dedup();
                let o: Vec<usize> = idx
                    .iter()
                    .map(|i| sorted.iter().position(|s| s == i).unwrap_or(0))
                    .collect();
                if o.iter().enumerate().any(|(a, b)| a != *b) || o.len() != sorted.len() {
                    order = Some(o);
                }
                ProjectionMask::roots(builder.parquet_schema(), idx)
            }
        };
        let (groups, selection) = selection_for(local, &f.row_groups);
        let reader = builder
            .with_projection(mask)
            .with_row_groups(groups)
            .with_row_selection(selection)
            .with_batch_size(8192)
            .build()?;
        Ok(Some(FileRows {
            source: Source::Parquet { reader, order },
        }))
    }

    /// A few rows of one data file from its row blocks: one small block decompressed per
    /// row instead of a Parquet page per column.
    fn read_blocks(
        &self,
        file: usize,
        rel: &str,
        local: &RoaringBitmap,
        columns: Option<&[&str]>,
    ) -> Result<FileRows> {
        let slot = self
            .blocks
            .get(file)
            .ok_or_else(|| Error::NotFound(format!("data file {file}")))?;
        let blocks = match slot.get() {
            Some(b) => b.clone(),
            None => {
                let opened = Arc::new(RowBlocks::open(
                    &self.path(rel),
                    &self.manifest.dataset.arrow_schema(),
                )?);
                if opened.rows() != self.manifest.files[file].rows {
                    return Err(Error::Corrupt(format!(
                        "row blocks {rel} hold {} rows, their data file {}",
                        opened.rows(),
                        self.manifest.files[file].rows
                    )));
                }
                slot.get_or_init(|| opened).clone()
            }
        };
        let def = &self.manifest.dataset;
        let idx: Vec<usize> = match columns {
            None => (0..def.fields.len()).collect(),
            Some(cols) => cols
                .iter()
                .map(|c| {
                    def.fields.iter().position(|f| f.name == *c).ok_or_else(|| {
                        Error::NotFound(format!("dataset '{}' has no field '{c}'", def.name))
                    })
                })
                .collect::<Result<_>>()?,
        };
        Ok(FileRows {
            source: Source::Ready(Some(blocks.read(local, &idx)?)),
        })
    }

    /// How many Parquet row groups a read of `rows` would open (clustering makes a region
    /// scope touch few of them).
    pub fn row_groups_touched(&self, rows: &RoaringBitmap) -> usize {
        let mut n = 0;
        for f in &self.manifest.files {
            let mut start = f.row_base as u64;
            for &len in &f.row_groups {
                let end = start + len;
                if len > 0 && rows.range(start as u32..end as u32).next().is_some() {
                    n += 1;
                }
                start = end;
            }
        }
        n
    }

    /// Total row groups of the version.
    pub fn row_groups_total(&self) -> usize {
        self.manifest.files.iter().map(|f| f.row_groups.len()).sum()
    }
}

/// The selected rows of one data file, batch by batch, columns in the order requested.
pub struct FileRows {
    source: Source,
}

/// Where a read's rows come from: decoded from Parquet, or already read from row blocks.
enum Source {
    Parquet {
        reader: ParquetRecordBatchReader,
        order: Option<Vec<usize>>,
    },
    Ready(Option<RecordBatch>),
}

impl Iterator for FileRows {
    type Item = std::result::Result<RecordBatch, arrow::error::ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.source {
            Source::Parquet { reader, order } => {
                let b = reader.next()?;
                Some(match order {
                    None => b,
                    Some(o) => b.and_then(|b| b.project(o)),
                })
            }
            Source::Ready(b) => b.take().map(Ok),
        }
    }
}

/// Turn file-local selected offsets into the row groups to open and a selection over them.
fn selection_for(local: &RoaringBitmap, row_groups: &[u64]) -> (Vec<usize>, RowSelection) {
    let mut groups = Vec::new();
    let mut selectors: Vec<RowSelector> = Vec::new();
    let mut start = 0u64;
    for (g, &len) in row_groups.iter().enumerate() {
        let end = start + len;
        let group = start as u32..end as u32;
        let selected = local.range_cardinality(group.clone());
        if selected == len {
            // The whole group: one selector, no walk over its ids.
            groups.push(g);
            selectors.push(RowSelector::select(len as usize));
        } else if selected > 0 {
            let in_group: Vec<u32> = local.range(group).collect();
            groups.push(g);
            // Runs of consecutive offsets become select/skip pairs.
            let mut pos = start;
            let mut i = 0;
            while i < in_group.len() {
                let run_start = in_group[i] as u64;
                let mut run_end = run_start + 1;
                i += 1;
                while i < in_group.len() && in_group[i] as u64 == run_end {
                    run_end += 1;
                    i += 1;
                }
                if run_start > pos {
                    selectors.push(RowSelector::skip((run_start - pos) as usize));
                }
                selectors.push(RowSelector::select((run_end - run_start) as usize));
                pos = run_end;
            }
            if end > pos {
                selectors.push(RowSelector::skip((end - pos) as usize));
            }
        }
        start = end;
    }
    (groups, RowSelection::from(selectors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wholly_selected_group_is_one_selector_and_partial_groups_keep_their_runs() {
        let mut local = RoaringBitmap::new();
        local.insert_range(10..20); // all of group 1
        local.insert(23); // one row of group 2
        let (groups, sel) = selection_for(&local, &[10, 10, 10]);
        assert_eq!(groups, vec![1, 2]);
        let got: Vec<(bool, usize)> = sel.iter().map(|s| (s.skip, s.row_count)).collect();
        assert_eq!(
            got,
            [(false, 10), (true, 3), (false, 1), (true, 6)],
            "group 1 whole; group 2: skip 3, select 1, skip 6"
        );
    }

    #[test]
    fn selection_covers_runs_within_selected_groups() {
        let local: RoaringBitmap = [1u32, 2, 3, 7, 25].into_iter().collect();
        let (groups, sel) = selection_for(&local, &[10, 10, 10]);
        assert_eq!(groups, vec![0, 2]);
        // Group 0: skip 1, select 3, skip 3, select 1, skip 2; group 2: skip 5, select 1, skip 4.
        assert_eq!(sel.row_count(), 5);
        assert_eq!(sel.iter().map(|s| s.row_count).sum::<usize>(), 20);
    }
}
