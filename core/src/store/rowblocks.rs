//! Row blocks: a data file's rows kept a second time, row-wise, in small compressed blocks,
//! so one subject's row costs a few kilobytes read and decompressed instead of a Parquet page
//! per column (a point read of a 15-column person is ~15 pages of 16 KB each).
//!
//! Written beside each Parquet file when it is written (same rows, same order), immutable
//! like it, and optional: a file without row blocks (older stores, types without a row
//! encoding) is read through Parquet. The scan never uses them; [`super::Snapshot::read_local`]
//! does for selections of a few rows.
//!
//! The encoding is our own, not arrow's row format, because that one is documented as unstable
//! across arrow releases and these files outlive a build. Each block is checked (blake3,
//! first 8 bytes) before it is decompressed, and the footer as a whole, so a damaged file is an
//! error, never a wrong row.
//!
//! ```text
//! "GSROWBK1"  block 0 … block n-1   footer   footer_len:u64  "GSROWBK1"
//! block  = snappy( u32 offset of each row in the block … | row … )
//! row    = null bitmap (1 bit per column) | each non-null value
//! footer = rows:u64 rows_per_block:u32 ncols:u32 | per column: type code, name |
//!          per block: offset:u64 digest:[u8; 8] | end:u64 | blake3 of the footer so far
//! ```

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float64Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float64Type, Int64Type, Schema, SchemaRef,
    TimeUnit, TimestampMicrosecondType,
};
use roaring::RoaringBitmap;

use crate::error::{Error, IoContext, Result};

const MAGIC: &[u8; 8] = b"GSROWBK1";

/// Rows per block: small enough that a block (a few KB) decompresses in microseconds, large
/// enough that compression has something to work with.
pub(crate) const ROWS_PER_BLOCK: usize = 32;

/// The column types with a row encoding (a file with any other type gets no row blocks).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Utf8,
    Int64,
    Float64,
    Boolean,
    Date32,
    TimestampMicros,
    Decimal(u8, i8),
    ListUtf8,
}

impl Kind {
    fn of(t: &DataType) -> Option<Kind> {
        Some(match t {
            DataType::Utf8 => Kind::Utf8,
            DataType::Int64 => Kind::Int64,
            DataType::Float64 => Kind::Float64,
            DataType::Boolean => Kind::Boolean,
            DataType::Date32 => Kind::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, None) => Kind::TimestampMicros,
            DataType::Decimal128(p, s) => Kind::Decimal(*p, *s),
            DataType::List(f) if f.data_type() == &DataType::Utf8 => Kind::ListUtf8,
            _ => return None,
        })
    }

    fn data_type(self) -> DataType {
        match self {
            Kind::Utf8 => DataType::Utf8,
            Kind::Int64 => DataType::Int64,
            Kind::Float64 => DataType::Float64,
            Kind::Boolean => DataType::Boolean,
            Kind::Date32 => DataType::Date32,
            Kind::TimestampMicros => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::Decimal(p, s) => DataType::Decimal128(p, s),
            Kind::ListUtf8 => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        }
    }

    fn code(self) -> [u8; 3] {
        match self {
            Kind::Utf8 => [1, 0, 0],
            Kind::Int64 => [2, 0, 0],
            Kind::Float64 => [3, 0, 0],
            Kind::Boolean => [4, 0, 0],
            Kind::Date32 => [5, 0, 0],
            Kind::TimestampMicros => [6, 0, 0],
            Kind::Decimal(p, s) => [7, p, s as u8],
            Kind::ListUtf8 => [8, 0, 0],
        }
    }

    fn from_code(c: [u8; 3]) -> Option<Kind> {
        Some(match c[0] {
            1 => Kind::Utf8,
            2 => Kind::Int64,
            3 => Kind::Float64,
            4 => Kind::Boolean,
            5 => Kind::Date32,
            6 => Kind::TimestampMicros,
            7 => Kind::Decimal(c[1], c[2] as i8),
            8 => Kind::ListUtf8,
            _ => return None,
        })
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Encode one value of column `col` at `row` (known non-null).
fn put_value(out: &mut Vec<u8>, kind: Kind, col: &dyn Array, row: usize) {
    match kind {
        Kind::Utf8 => put_str(out, col.as_string::<i32>().value(row)),
        Kind::Int64 => {
            out.extend_from_slice(&col.as_primitive::<Int64Type>().value(row).to_le_bytes())
        }
        Kind::Float64 => {
            out.extend_from_slice(&col.as_primitive::<Float64Type>().value(row).to_le_bytes())
        }
        Kind::Boolean => out.push(col.as_boolean().value(row) as u8),
        Kind::Date32 => {
            out.extend_from_slice(&col.as_primitive::<Date32Type>().value(row).to_le_bytes())
        }
        Kind::TimestampMicros => out.extend_from_slice(
            &col.as_primitive::<TimestampMicrosecondType>()
                .value(row)
                .to_le_bytes(),
        ),
        Kind::Decimal(..) => out.extend_from_slice(
            &col.as_primitive::<Decimal128Type>()
                .value(row)
                .to_le_bytes(),
        ),
        Kind::ListUtf8 => {
            let items = col.as_list::<i32>().value(row);
            let items = items.as_string::<i32>();
            put_varint(out, items.len() as u64);
            for i in 0..items.len() {
                // 0 = a null item; otherwise length + 1.
                if items.is_null(i) {
                    put_varint(out, 0);
                } else {
                    let v = items.value(i);
                    put_varint(out, v.len() as u64 + 1);
                    out.extend_from_slice(v.as_bytes());
                }
            }
        }
    }
}

/// Write the row blocks of `batch` to `path` (fsynced). Returns `false`, writing nothing, when
/// a column's type has no row encoding.
pub(crate) fn write(path: &Path, batch: &RecordBatch) -> Result<bool> {
    let schema = batch.schema();
    let Some(kinds) = schema
        .fields()
        .iter()
        .map(|f| Kind::of(f.data_type()))
        .collect::<Option<Vec<Kind>>>()
    else {
        return Ok(false);
    };
    let ncols = kinds.len();
    let mut file = std::io::BufWriter::new(crate::durable::create_private(path)?);
    file.write_all(MAGIC).at(path)?;
    let mut pos = MAGIC.len() as u64;
    let mut index: Vec<(u64, [u8; 8])> = Vec::new();
    let mut raw = Vec::new();
    let mut encoder = snap::raw::Encoder::new();
    let mut compressed = Vec::new();
    let columns: Vec<&dyn Array> = batch.columns().iter().map(|c| c.as_ref()).collect();
    let mut start = 0;
    while start < batch.num_rows() {
        let end = (start + ROWS_PER_BLOCK).min(batch.num_rows());
        raw.clear();
        raw.resize((end - start) * 4, 0);
        for row in start..end {
            let at = raw.len() as u32;
            raw[(row - start) * 4..(row - start) * 4 + 4].copy_from_slice(&at.to_le_bytes());
            let nulls_at = raw.len();
            raw.resize(nulls_at + ncols.div_ceil(8), 0);
            for (c, (col, kind)) in columns.iter().zip(&kinds).enumerate() {
                if col.is_null(row) {
                    raw[nulls_at + c / 8] |= 1 << (c % 8);
                } else {
                    put_value(&mut raw, *kind, *col, row);
                }
            }
        }
        compressed.resize(snap::raw::max_compress_len(raw.len()), 0);
        let n = encoder
            .compress(&raw, &mut compressed)
            .map_err(|e| Error::internal(format!("row block compression: {e}")))?;
        let block = &compressed[..n];
        let mut digest = [0u8; 8];
        digest.copy_from_slice(&blake3::hash(block).as_bytes()[..8]);
        index.push((pos, digest));
        file.write_all(block).at(path)?;
        pos += n as u64;
        start = end;
    }
    let mut footer = Vec::new();
    footer.extend_from_slice(&(batch.num_rows() as u64).to_le_bytes());
    footer.extend_from_slice(&(ROWS_PER_BLOCK as u32).to_le_bytes());
    footer.extend_from_slice(&(ncols as u32).to_le_bytes());
    for (f, k) in schema.fields().iter().zip(&kinds) {
        footer.extend_from_slice(&k.code());
        put_str(&mut footer, f.name());
    }
    for (off, digest) in &index {
        footer.extend_from_slice(&off.to_le_bytes());
        footer.extend_from_slice(digest);
    }
    footer.extend_from_slice(&pos.to_le_bytes());
    let sum = blake3::hash(&footer);
    footer.extend_from_slice(sum.as_bytes());
    file.write_all(&footer).at(path)?;
    file.write_all(&(footer.len() as u64).to_le_bytes())
        .at(path)?;
    file.write_all(MAGIC).at(path)?;
    let file = file.into_inner().map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().at(path)?;
    Ok(true)
}

/// An open row-block file: its footer in memory, blocks read on demand (positioned reads, so
/// any number of threads share one handle).
#[derive(Debug)]
pub(crate) struct RowBlocks {
    file: File,
    path: std::path::PathBuf,
    rows: u64,
    kinds: Vec<Kind>,
    schema: SchemaRef,
    /// Block start offsets, then the end of the last block.
    offsets: Vec<u64>,
    digests: Vec<[u8; 8]>,
}

/// A little reader over a byte slice whose every step is bounds-checked: damaged bytes are an
/// error, never a panic.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.take(1)?.first()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = usize::try_from(self.varint()?).ok()?;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

impl RowBlocks {
    /// Open the row blocks at `path`, checking the footer and that its columns are `schema`'s.
    pub(crate) fn open(path: &Path, schema: &Schema) -> Result<RowBlocks> {
        let corrupt = |what: &str| Error::Corrupt(format!("row blocks {}: {what}", path.display()));
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        if len < 32 {
            return Err(corrupt("too short"));
        }
        let mut head = [0u8; 8];
        read_at(&file, path, 0, &mut head)?;
        let mut tail = [0u8; 16];
        read_at(&file, path, len - 16, &mut tail)?;
        if &head != MAGIC || &tail[8..] != MAGIC {
            return Err(corrupt("not a row-block file"));
        }
        let footer_len = u64::from_le_bytes(tail[..8].try_into().unwrap_or_default());
        if footer_len < 32 + 16 || footer_len > len - 24 {
            return Err(corrupt("footer length out of range"));
        }
        let mut footer = vec![0u8; footer_len as usize];
        read_at(&file, path, len - 16 - footer_len, &mut footer)?;
        let (body, sum) = footer.split_at(footer.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(corrupt("footer fails its checksum"));
        }
        let mut c = Cursor { bytes: body, at: 0 };
        let parse = (|| {
            let rows = u64::from_le_bytes(c.array()?);
            let per_block = u32::from_le_bytes(c.array()?) as usize;
            let ncols = u32::from_le_bytes(c.array()?) as usize;
            if per_block != ROWS_PER_BLOCK || ncols > 4096 {
                return None;
            }
            let mut kinds = Vec::with_capacity(ncols);
            let mut fields = Vec::with_capacity(ncols);
            for _ in 0..ncols {
                let kind = Kind::from_code(c.array()?)?;
                let name = c.str()?;
                fields.push(Field::new(name, kind.data_type(), true));
                kinds.push(kind);
            }
            let blocks = usize::try_from(rows.div_ceil(ROWS_PER_BLOCK as u64)).ok()?;
            let mut offsets = Vec::with_capacity(blocks + 1);
            let mut digests = Vec::with_capacity(blocks);
            for _ in 0..blocks {
                offsets.push(u64::from_le_bytes(c.array()?));
                digests.push(c.array()?);
            }
            offsets.push(u64::from_le_bytes(c.array()?));
            let ordered = offsets.windows(2).all(|w| w[0] <= w[1])
                && offsets.first().is_some_and(|&o| o >= MAGIC.len() as u64)
                && offsets.last().is_some_and(|&o| o <= len - 16 - footer_len);
            (ordered && c.at == body.len()).then_some((rows, kinds, fields, offsets, digests))
        })();
        let (rows, kinds, fields, offsets, digests) = parse.ok_or_else(|| corrupt("bad footer"))?;
        // The caller's schema, not the footer's: nullability as the data file declares it.
        let same = fields.len() == schema.fields().len()
            && fields
                .iter()
                .zip(schema.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if !same {
            return Err(corrupt("columns differ from the data file's"));
        }
        Ok(RowBlocks {
            file,
            path: path.to_path_buf(),
            rows,
            kinds,
            schema: Arc::new(schema.clone()),
            offsets,
            digests,
        })
    }

    /// Rows in the file.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// The rows at `local` offsets (in offset order), with the `columns` (indexes into the
    /// file's schema) in the order given, as one batch typed like the data file.
    pub(crate) fn read(&self, local: &RoaringBitmap, columns: &[usize]) -> Result<RecordBatch> {
        let corrupt =
            |what: String| Error::Corrupt(format!("row blocks {}: {what}", self.path.display()));
        if local.max().is_some_and(|m| m as u64 >= self.rows) {
            return Err(Error::NotFound(format!(
                "row offset past the end of {}",
                self.path.display()
            )));
        }
        if let Some(&c) = columns.iter().find(|&&c| c >= self.kinds.len()) {
            return Err(Error::NotFound(format!(
                "column {c} of {}",
                self.path.display()
            )));
        }
        let mut builders: Vec<Box<dyn ArrayBuilder>> = columns
            .iter()
            .map(|&c| builder(self.kinds[c], local.len() as usize))
            .collect();
        let ncols = self.kinds.len();
        let mut decoder = snap::raw::Decoder::new();
        let mut compressed = Vec::new();
        let mut raw = Vec::new();
        let mut current = usize::MAX;
        for offset in local {
            let block = offset as usize / ROWS_PER_BLOCK;
            if block != current {
                let (start, end) = (self.offsets[block], self.offsets[block + 1]);
                compressed.resize((end - start) as usize, 0);
                read_at(&self.file, &self.path, start, &mut compressed)?;
                if blake3::hash(&compressed).as_bytes()[..8] != self.digests[block] {
                    return Err(corrupt(format!("block {block} fails its checksum")));
                }
                let n = snap::raw::decompress_len(&compressed)
                    .map_err(|e| corrupt(format!("block {block}: {e}")))?;
                raw.resize(n, 0);
                decoder
                    .decompress(&compressed, &mut raw)
                    .map_err(|e| corrupt(format!("block {block}: {e}")))?;
                current = block;
            }
            let in_block = offset as usize % ROWS_PER_BLOCK;
            let start = raw
                .get(in_block * 4..in_block * 4 + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
                .ok_or_else(|| corrupt(format!("block {block}: row table")))?;
            decode_row(&raw, start, &self.kinds, ncols, columns, &mut builders)
                .ok_or_else(|| corrupt(format!("block {block}: row {in_block}")))?;
        }
        let fields: Vec<Field> = columns
            .iter()
            .map(|&c| self.schema.field(c).clone())
            .collect();
        let arrays: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
    }
}

fn builder(kind: Kind, n: usize) -> Box<dyn ArrayBuilder> {
    match kind {
        Kind::Utf8 => Box::new(StringBuilder::with_capacity(n, n * 16)),
        Kind::Int64 => Box::new(Int64Builder::with_capacity(n)),
        Kind::Float64 => Box::new(Float64Builder::with_capacity(n)),
        Kind::Boolean => Box::new(BooleanBuilder::with_capacity(n)),
        Kind::Date32 => Box::new(Date32Builder::with_capacity(n)),
        Kind::TimestampMicros => Box::new(TimestampMicrosecondBuilder::with_capacity(n)),
        Kind::Decimal(p, s) => {
            Box::new(Decimal128Builder::with_capacity(n).with_data_type(DataType::Decimal128(p, s)))
        }
        Kind::ListUtf8 => Box::new(ListBuilder::new(StringBuilder::new())),
    }
}

/// Decode the row starting at `start` of a block into the builders of the wanted columns.
fn decode_row(
    raw: &[u8],
    start: usize,
    kinds: &[Kind],
    ncols: usize,
    columns: &[usize],
    builders: &mut [Box<dyn ArrayBuilder>],
) -> Option<()> {
    let mut c = Cursor {
        bytes: raw,
        at: start,
    };
    let nulls = c.take(ncols.div_ceil(8))?;
    // Each wanted column's builder, by file column (a column may be asked for twice).
    let mut values: Vec<Option<&[u8]>> = Vec::with_capacity(ncols);
    for (i, kind) in kinds.iter().enumerate() {
        if nulls[i / 8] & (1 << (i % 8)) != 0 {
            values.push(None);
            continue;
        }
        let from = c.at;
        match kind {
            Kind::Utf8 => {
                c.str()?;
            }
            Kind::Int64 | Kind::Float64 | Kind::TimestampMicros => {
                c.take(8)?;
            }
            Kind::Boolean => {
                c.take(1)?;
            }
            Kind::Date32 => {
                c.take(4)?;
            }
            Kind::Decimal(..) => {
                c.take(16)?;
            }
            Kind::ListUtf8 => {
                let n = c.varint()?;
                for _ in 0..n {
                    let len = c.varint()?;
                    if len > 0 {
                        std::str::from_utf8(c.take(usize::try_from(len - 1).ok()?)?).ok()?;
                    }
                }
            }
        }
        values.push(raw.get(from..c.at));
    }
    for (b, &col) in builders.iter_mut().zip(columns) {
        let v = *values.get(col)?;
        append(b.as_mut(), kinds[col], v)?;
    }
    Some(())
}

/// Append one encoded value (already bounds-checked by [`decode_row`]) or a null.
fn append(b: &mut dyn ArrayBuilder, kind: Kind, v: Option<&[u8]>) -> Option<()> {
    let any = b.as_any_mut();
    match kind {
        Kind::Utf8 => {
            let b = any.downcast_mut::<StringBuilder>()?;
            match v {
                None => b.append_null(),
                Some(v) => b.append_value(Cursor { bytes: v, at: 0 }.str()?),
            }
        }
        Kind::Int64 => {
            let b = any.downcast_mut::<Int64Builder>()?;
            b.append_option(v.map(|v| i64::from_le_bytes(v.try_into().unwrap_or_default())));
        }
        Kind::Float64 => {
            let b = any.downcast_mut::<Float64Builder>()?;
            b.append_option(v.map(|v| f64::from_le_bytes(v.try_into().unwrap_or_default())));
        }
        Kind::Boolean => {
            let b = any.downcast_mut::<BooleanBuilder>()?;
            b.append_option(v.map(|v| v.first() == Some(&1)));
        }
        Kind::Date32 => {
            let b = any.downcast_mut::<Date32Builder>()?;
            b.append_option(v.map(|v| i32::from_le_bytes(v.try_into().unwrap_or_default())));
        }
        Kind::TimestampMicros => {
            let b = any.downcast_mut::<TimestampMicrosecondBuilder>()?;
            b.append_option(v.map(|v| i64::from_le_bytes(v.try_into().unwrap_or_default())));
        }
        Kind::Decimal(..) => {
            let b = any.downcast_mut::<Decimal128Builder>()?;
            b.append_option(v.map(|v| i128::from_le_bytes(v.try_into().unwrap_or_default())));
        }
        Kind::ListUtf8 => {
            let b = any.downcast_mut::<ListBuilder<StringBuilder>>()?;
            match v {
                None => b.append_null(),
                Some(v) => {
                    let mut c = Cursor { bytes: v, at: 0 };
                    let n = c.varint()?;
                    for _ in 0..n {
                        match c.varint()? {
                            0 => b.values().append_null(),
                            len => b.values().append_value(
                                std::str::from_utf8(c.take(usize::try_from(len - 1).ok()?)?)
                                    .ok()?,
                            ),
                        }
                    }
                    b.append(true);
                }
            }
        }
    }
    Some(())
}

#[cfg(unix)]
fn read_at(file: &File, path: &Path, offset: u64, buf: &mut [u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset).at(path)
}

#[cfg(windows)]
fn read_at(file: &File, path: &Path, mut offset: u64, mut buf: &mut [u8]) -> Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        let n = file.seek_read(buf, offset).at(path)?;
        if n == 0 {
            return Err(Error::Corrupt(format!("{} ends early", path.display())));
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };

    fn sample(n: usize) -> RecordBatch {
        let mut list = ListBuilder::new(StringBuilder::new());
        for i in 0..n {
            match i % 3 {
                0 => list.append_null(),
                1 => {
                    list.values().append_value(format!("甲{i}"));
                    list.values().append_null();
                    list.append(true);
                }
                _ => list.append(true),
            }
        }
        let some = |i: usize| i % 7 != 3;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| some(i).then(|| format!("名字{i}").repeat(i % 5))),
            )),
            Arc::new(Int64Array::from_iter(
                (0..n).map(|i| some(i).then_some(i as i64 * -7)),
            )),
            Arc::new(Float64Array::from_iter(
                (0..n).map(|i| some(i).then_some(i as f64 / 3.0)),
            )),
            Arc::new(BooleanArray::from_iter(
                (0..n).map(|i| some(i).then_some(i % 2 == 0)),
            )),
            Arc::new(Date32Array::from_iter(
                (0..n).map(|i| some(i).then_some(i as i32 - 500)),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter(
                (0..n).map(|i| some(i).then_some(i as i64 * 1_000_003)),
            )),
            Arc::new(
                Decimal128Array::from_iter((0..n).map(|i| some(i).then_some(i as i128 * 101)))
                    .with_precision_and_scale(12, 2)
                    .expect("decimal"),
            ),
            Arc::new(list.finish()),
        ];
        let fields: Vec<Field> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("batch")
    }

    #[test]
    fn any_rows_and_columns_read_back_as_written() {
        let dir = tempfile::tempdir().expect("tmp");
        let batch = sample(1000);
        let p = dir.path().join("f.rows");
        assert!(write(&p, &batch).expect("write"));
        let rb = RowBlocks::open(&p, &batch.schema()).expect("open");
        assert_eq!(rb.rows(), 1000);
        let picks: RoaringBitmap = [0u32, 1, 2, 31, 32, 33, 500, 998, 999]
            .into_iter()
            .collect();
        let columns = [7usize, 0, 3, 0, 6, 1, 2, 4, 5];
        let got = rb.read(&picks, &columns).expect("read");
        let idx = arrow::array::UInt32Array::from(picks.iter().collect::<Vec<_>>());
        let want = arrow::compute::take_record_batch(&batch, &idx)
            .expect("take")
            .project(&columns)
            .expect("project");
        assert_eq!(got, want);
        let all: RoaringBitmap = (0..1000).collect();
        let everything: Vec<usize> = (0..8).collect();
        assert_eq!(rb.read(&all, &everything).expect("all"), batch);
    }

    #[test]
    fn damage_anywhere_is_an_error_and_never_a_wrong_row() {
        let dir = tempfile::tempdir().expect("tmp");
        let batch = sample(100);
        let p = dir.path().join("f.rows");
        write(&p, &batch).expect("write");
        let good = std::fs::read(&p).expect("read");
        let all: RoaringBitmap = (0..100).collect();
        let everything: Vec<usize> = (0..8).collect();
        // Every byte flipped in turn: open or read fails, or (never) the rows differ.
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x41;
            std::fs::write(&p, &bad).expect("write");
            let outcome =
                RowBlocks::open(&p, &batch.schema()).and_then(|rb| rb.read(&all, &everything));
            match outcome {
                Err(Error::Corrupt(_)) => {}
                Ok(b) => panic!(
                    "byte {at} flipped and the file still read (equal: {})",
                    b == batch
                ),
                Err(e) => panic!("byte {at}: unexpected error {e}"),
            }
        }
        for cut in [0, 10, good.len() / 2, good.len() - 1] {
            std::fs::write(&p, &good[..cut]).expect("write");
            assert!(
                RowBlocks::open(&p, &batch.schema()).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_schema_that_differs_or_an_unencodable_type_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let batch = sample(10);
        let p = dir.path().join("f.rows");
        write(&p, &batch).expect("write");
        let other = batch
            .schema()
            .project(&[1, 0, 2, 3, 4, 5, 6, 7])
            .expect("project");
        assert!(matches!(
            RowBlocks::open(&p, &other),
            Err(Error::Corrupt(_))
        ));
        let odd = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, true)])),
            vec![Arc::new(arrow::array::Int32Array::from(vec![1]))],
        )
        .expect("batch");
        let q = dir.path().join("g.rows");
        assert!(!write(&q, &odd).expect("write"));
        assert!(!q.exists());
    }
}
