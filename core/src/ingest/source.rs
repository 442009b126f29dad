//! Sources: CSV (UTF-8 or GBK, decoded as it streams, malformed bytes an error), Parquet and
//! Arrow batches, each hashed (blake3) as it is read for the handover record; and CSV output
//! in the shape providers deliver.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::StreamWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::audit::{ChainHash, TwinHasher};
use crate::error::{Error, IoContext, Result};

use super::{Encoding, Source};

const CSV_BATCH: usize = 64 * 1024;

/// Feeds the input's hasher (blake3, and SM3 in a national-cryptography store) with every
/// byte read, so the handover digest covers the input as delivered without a second pass.
pub(super) struct Hashing<R> {
    inner: R,
    hasher: Arc<Mutex<TwinHasher>>,
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
pub(super) struct Decoding<R> {
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

pub(super) fn detect_encoding(path: &Path) -> Result<&'static encoding_rs::Encoding> {
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

type BatchIter = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

/// Open a source as a stream of raw batches plus the hasher that will hold its digest (SM3
/// beside blake3 when `hash` is SM3).
pub(super) fn open_source(
    source: &Source,
    hash: ChainHash,
) -> Result<(BatchIter, Arc<Mutex<TwinHasher>>)> {
    let hasher = Arc::new(Mutex::new(TwinHasher::new(hash)));
    match source {
        Source::Csv { path, encoding } => {
            let enc = match encoding {
                Encoding::Auto => detect_encoding(path)?,
                Encoding::Utf8 => encoding_rs::UTF_8,
                Encoding::Gbk => encoding_rs::GBK,
            };
            let open = |h: Arc<Mutex<TwinHasher>>| -> Result<Decoding<Hashing<BufReader<File>>>> {
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
                let header_only = TwinHasher::new(ChainHash::Blake3);
                let mut r = BufReader::new(open(Arc::new(Mutex::new(header_only)))?);
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
                let mut f = File::open(path).at(path)?;
                let mut h = hasher
                    .lock()
                    .map_err(|_| Error::internal("hasher poisoned"))?;
                std::io::copy(&mut f, &mut *h).at(path)?;
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
                    .map_err(|_| Error::internal("hasher poisoned"))?;
                // The digest of Arrow input is that of its IPC stream encoding.
                let mut w = StreamWriter::try_new(&mut *h, &first.schema())?;
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

/// The raw batches of a source, as read (for reports that do not load).
pub fn raw_batches(source: &Source) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
    Ok(open_source(source, ChainHash::Blake3)?.0)
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
