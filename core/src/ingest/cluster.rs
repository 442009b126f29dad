//! Clustering: rows sorted by (cluster field, key) into Parquet files with fixed-size row
//! groups, with the key and bitmap indexes built from the sorted rows as they are written.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use arrow::array::ArrayRef;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::array::{StringArray, UInt32Array};
use arrow::compute::{concat, interleave_record_batch, take_record_batch};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use roaring::RoaringBitmap;

use crate::catalog::{DatasetDef, IndexKind};
use crate::error::{Error, IoContext, Result};
use crate::index::{BitmapIndex, KeyEntries};
use crate::store::DataFile;
use crate::validate::Reject;

/// Files and indexes written for the rows of one load (or one compaction).
#[derive(Default)]
pub(super) struct Written {
    pub(super) files: Vec<DataFile>,
    pub(super) keys: KeyEntries,
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

    /// The cluster field's column of `batch`, if the dataset is clustered.
    fn cluster_column<'b>(&self, batch: &'b RecordBatch) -> Result<Option<&'b StringArray>> {
        self.def
            .cluster_field
            .as_deref()
            .map(|c| string_column(batch, c))
            .transpose()
    }

    pub(super) fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        // Sorted here, while the batch is in cache, by (cluster field, key): each province's
        // share of it is then a contiguous, sorted run, staged as one slice. The province's
        // final sort gathers from its runs each in order — a stream per run, where gathering
        // from unsorted batches was a cache miss per row and column.
        let order = sort_order(
            self.cluster_column(batch)?,
            string_column(batch, &self.def.key)?,
        );
        let sorted = take_record_batch(batch, &order)?;
        let cluster = self.cluster_column(&sorted)?;
        let bucket_of = |i: usize| match cluster {
            None => "all",
            Some(c) if c.is_null(i) => "__",
            Some(c) => c.value(i).get(..2).unwrap_or("__"),
        };
        let mut start = 0;
        while start < sorted.num_rows() {
            let bucket = bucket_of(start);
            let mut end = start + 1;
            while end < sorted.num_rows() && bucket_of(end) == bucket {
                end += 1;
            }
            let part = sorted.slice(start, end - start);
            let (w, rows) = match self.buckets.get_mut(bucket) {
                Some(w) => w,
                None => {
                    let p = self.staging_dir.join(format!("{bucket}.arrow"));
                    let f = BufWriter::new(crate::durable::create_private(&p)?);
                    self.buckets
                        .entry(bucket.to_string())
                        .or_insert((FileWriter::try_new(f, &batch.schema())?, 0))
                }
            };
            w.write(&part)?;
            *rows += part.num_rows() as u64;
            start = end;
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
            jobs.push((bucket, next as u32, rows));
            next += rows;
        }
        // Largest provinces first: the two threads then finish together, rather than one
        // writing the last large province alone.
        jobs.sort_by_key(|(_, _, rows)| std::cmp::Reverse(*rows));
        let taken = AtomicUsize::new(0);
        let work = || {
            let mut done = Vec::new();
            while let Some((bucket, base, _)) = jobs.get(taken.fetch_add(1, Ordering::Relaxed)) {
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
            out.keys.append(part.keys);
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
        // Only the two sort columns are copied into one array each; the rows are then
        // gathered from the staged batches in sorted order directly (`interleave`), not from
        // a copy of the whole province first.
        let column = |name: &str| -> Result<ArrayRef> {
            let i = schema.index_of(name)?;
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            Ok(concat(&parts)?)
        };
        let cluster = self.def.cluster_field.as_deref().map(column).transpose()?;
        let keys = column(&self.def.key)?;
        let order = sort_order(
            cluster.as_ref().map(|c| c.as_string::<i32>()),
            keys.as_string(),
        );
        drop((cluster, keys));
        let starts: Vec<usize> = batches
            .iter()
            .scan(0, |at, b| {
                let start = *at;
                *at += b.num_rows();
                Some(start)
            })
            .collect();
        let picks: Vec<(usize, usize)> = order
            .values()
            .iter()
            .map(|&row| {
                let row = row as usize;
                let b = starts.partition_point(|s| *s <= row) - 1;
                (b, row - starts[b])
            })
            .collect();
        let sorted = if batches.is_empty() {
            RecordBatch::new_empty(schema.clone())
        } else {
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            interleave_record_batch(&refs, &picks)?
        };
        drop(batches);
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
        for i in 0..keys.len() {
            out.keys.push(keys.value(i), base + i as u32);
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
            for &l in levels {
                // Each value's row ids are gathered in a vector and turned into a bitmap once:
                // pushing ids one at a time into a roaring bitmap scans a dense container's
                // words for its maximum on every push (15% of a 10M load). Rows arrive sorted
                // by the cluster field, so a value usually repeats its predecessor's: the
                // previous slot is tried before the map.
                let mut values: Vec<(&str, Vec<u32>)> = Vec::new();
                let mut slots: HashMap<&str, usize> = HashMap::new();
                let mut last: Option<(&str, usize)> = None;
                for i in 0..col.len() {
                    if col.is_null(i) {
                        continue;
                    }
                    let v = col.value(i);
                    let k = if l == usize::MAX {
                        v
                    } else {
                        v.get(..l).unwrap_or(v)
                    };
                    let at = match last {
                        Some((lk, at)) if lk == k => at,
                        _ => {
                            let at = *slots.entry(k).or_insert_with(|| {
                                values.push((k, Vec::new()));
                                values.len() - 1
                            });
                            last = Some((k, at));
                            at
                        }
                    };
                    values[at].1.push(base + i as u32);
                }
                for (k, ids) in values {
                    let rows = RoaringBitmap::from_sorted_iter(ids)
                        .map_err(|_| Error::internal("row ids of a value out of order"))?;
                    match idx.bitmaps.get_mut(k) {
                        Some(b) => *b |= rows,
                        None => {
                            idx.bitmaps.insert(k.to_string(), rows);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A text column of `batch` by name.
fn string_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    Ok(batch
        .column_by_name(name)
        .ok_or_else(|| Error::Corrupt(format!("column {name} missing")))?
        .as_string::<i32>())
}

/// The order of rows by (cluster value, key), nulls first — what `lexsort` on the two
/// columns gives, at a fraction of its cost: rows are sorted as pairs of numbers, and strings
/// are compared only where those tie (citizen IDs sharing their first 16 bytes; cluster
/// values longer than 15 bytes sharing their first 15).
fn sort_order(cluster: Option<&StringArray>, keys: &StringArray) -> UInt32Array {
    use crate::index::{prefix, sort_by_prefix};
    let value = |i: u32| cluster.and_then(|c| c.is_valid(i as usize).then(|| c.value(i as usize)));
    let full = |a: u32, b: u32| {
        value(a)
            .cmp(&value(b))
            .then_with(|| keys.value(a as usize).cmp(keys.value(b as usize)))
    };
    let mut order: Vec<((u128, u128), u32)> = (0..keys.len() as u32)
        .map(|i| {
            let c = value(i).map_or(0, |v| cluster_code(v.as_bytes()));
            ((c, prefix(keys.value(i as usize).as_bytes())), i)
        })
        .collect();
    sort_by_prefix(&mut order, full);
    // Long cluster values share a code without being equal; there the key's prefix must not
    // decide first: such runs are put in full order.
    let mut i = 0;
    while i < order.len() {
        let code = order[i].0.0;
        let mut j = i + 1;
        while j < order.len() && order[j].0.0 == code {
            j += 1;
        }
        if code as u8 == LONG && j - i > 1 {
            order[i..j].sort_unstable_by(|a, b| full(a.1, b.1));
        }
        i = j;
    }
    order.into_iter().map(|(_, i)| i).collect()
}

/// The last byte of a [`cluster_code`] of a value longer than 15 bytes.
const LONG: u8 = 17;

/// A cluster value as a number that orders values as strings do and, up to 15 bytes, tells
/// every two apart: the first 15 bytes zero-padded, then the length plus one (`LONG` past 15).
/// 0 is left for null, which sorts first.
fn cluster_code(v: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = v.len().min(15);
    b[..n].copy_from_slice(&v[..n]);
    b[15] = v.len().min(16) as u8 + 1;
    u128::from_be_bytes(b)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::compute::{SortColumn, lexsort_to_indices};
    use rand::{Rng, SeedableRng};

    /// The prefix sort gives exactly lexsort's order over (cluster, key), nulls first: values
    /// sharing their first 16 bytes (citizen IDs of one county and birth date), shorter than
    /// 16 bytes, prefixes of each other, with NUL bytes, empty and null.
    #[test]
    fn the_prefix_sort_orders_rows_as_lexsort_does() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let alphabet = ['0', '1', '9', 'X', '\0', '省'];
        let text = |long: bool, rng: &mut rand_chacha::ChaCha8Rng| {
            let mut s: String = if long && rng.random_bool(0.7) {
                "4301021990010100".into()
            } else {
                String::new()
            };
            for _ in 0..rng.random_range(0..6) {
                s.push(alphabet[rng.random_range(0..alphabet.len())]);
            }
            s
        };
        let n = 4000;
        let clusters: StringArray = (0..n)
            .map(|_| (!rng.random_bool(0.05)).then(|| text(rng.random_bool(0.3), &mut rng)))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let keys: StringArray = (0..n)
            .map(|_| {
                loop {
                    let k = text(true, &mut rng);
                    if seen.insert(k.clone()) {
                        break Some(k);
                    }
                }
            })
            .collect();
        let expected = lexsort_to_indices(
            &[
                SortColumn {
                    values: Arc::new(clusters.clone()),
                    options: None,
                },
                SortColumn {
                    values: Arc::new(keys.clone()),
                    options: None,
                },
            ],
            None,
        )
        .expect("lexsort");
        let got = sort_order(Some(&clusters), &keys);
        if let Some(at) = (0..n).find(|&i| got.value(i) != expected.value(i)) {
            let show = |r: u32| {
                (
                    clusters
                        .is_valid(r as usize)
                        .then(|| clusters.value(r as usize).to_string()),
                    keys.value(r as usize).to_string(),
                )
            };
            panic!(
                "at {at}: got {:?} expected {:?}",
                show(got.value(at)),
                show(expected.value(at))
            );
        }
        let by_key = lexsort_to_indices(
            &[SortColumn {
                values: Arc::new(keys.clone()),
                options: None,
            }],
            None,
        )
        .expect("lexsort");
        assert_eq!(sort_order(None, &keys), by_key);
    }
}
