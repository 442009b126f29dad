//! The segment format: file names, reading a segment (a `.log` as it is, an archive rebuilt
//! into lines), parsing and chaining lines, and finding the head of the chain.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, StringArray};

use crate::error::{Error, IoContext, Result};

use super::{Checkpoint, Record, ZERO};

pub(super) struct Head {
    pub(super) seq: u64,
    pub(super) hash: String,
    pub(super) segment: PathBuf,
    pub(super) segment_first: u64,
    /// Bytes of the current segment known to this process; a different size on disk means
    /// another process appended.
    pub(super) len: u64,
}

pub(super) fn segment_name(first: u64) -> String {
    format!("seg-{first:012}.log")
}

pub(super) fn archive_name(first: u64) -> String {
    format!("arch-{first:012}.parquet")
}

pub(super) fn is_archive(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "parquet")
}

/// Where the chain starts after a purge: the last purged record.
pub(super) fn read_anchor(dir: &Path) -> Result<Option<Checkpoint>> {
    let p = dir.join("ANCHOR");
    match std::fs::read_to_string(&p) {
        Ok(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { path: p, source: e }),
    }
}

pub(super) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source: e,
            });
        }
    };
    for e in entries {
        let p = e.at(dir)?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let first = name
            .strip_prefix("seg-")
            .and_then(|r| r.strip_suffix(".log"))
            .or_else(|| {
                name.strip_prefix("arch-")
                    .and_then(|r| r.strip_suffix(".parquet"))
            })
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            out.push((first, p));
        }
    }
    // A segment present as both `.log` and `.parquet` is an archive interrupted before the log
    // was removed: the log is the original and wins (sorted first, kept by the dedup).
    out.sort_by(|a, b| a.0.cmp(&b.0).then(is_archive(&a.1).cmp(&is_archive(&b.1))));
    out.dedup_by_key(|(first, _)| *first);
    // Segments wholly before the purge anchor are leftovers of an interrupted purge.
    if let Some(anchor) = read_anchor(dir)? {
        out.retain(|(first, _)| *first > anchor.seq);
    }
    Ok(out)
}

/// A segment's lines (`HASH JSON\n`), from a `.log` as it is or rebuilt from an archive.
pub(super) fn read_segment(path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    read_segment_into(path, &mut out)?;
    Ok(out)
}

/// [`read_segment`] into `out` (cleared first), so one buffer serves a walk over many segments.
pub(super) fn read_segment_into(path: &Path, out: &mut Vec<u8>) -> Result<()> {
    use std::io::Read as _;
    out.clear();
    if !is_archive(path) {
        File::open(path).at(path)?.read_to_end(out).at(path)?;
        return Ok(());
    }
    let file = File::open(path).at(path)?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_projection(parquet::arrow::ProjectionMask::all())
        .build()?;
    for batch in reader {
        let batch = batch?;
        let col = |name: &str| -> Result<&StringArray> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| {
                    Error::Corrupt(format!("{}: archive lacks column {name}", path.display()))
                })
        };
        let (hash, record) = (col("hash")?, col("record")?);
        for i in 0..batch.num_rows() {
            out.extend_from_slice(hash.value(i).as_bytes());
            out.push(b' ');
            out.extend_from_slice(record.value(i).as_bytes());
            out.push(b'\n');
        }
    }
    Ok(())
}

/// Parse one line into (hash, record); `None` when it is not a well-formed record line.
pub(super) fn parse_line(line: &[u8]) -> Option<(String, Record)> {
    let text = std::str::from_utf8(line).ok()?;
    let (hash, json) = text.split_once(' ')?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((hash.to_string(), serde_json::from_str(json).ok()?))
}

pub(super) fn chain_hash(chain: super::ChainHash, prev: &str, json: &[u8]) -> String {
    let hex = chain.hex(prev.as_bytes(), json);
    String::from_utf8_lossy(&hex).into_owned()
}

/// Read the head of the chain from the last segment; returns the head and, when the segment
/// ends in a torn (partial) line, its byte offset.
pub(super) fn read_head(dir: &Path) -> Result<(Head, Option<u64>)> {
    let segs = segments(dir)?;
    let Some((first, path)) = segs.last().cloned() else {
        return Ok((
            Head {
                seq: 0,
                hash: ZERO.into(),
                segment: dir.join(segment_name(1)),
                segment_first: 1,
                len: 0,
            },
            None,
        ));
    };
    let data = read_segment(&path)?;
    let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let torn = (complete < data.len()).then_some(complete as u64);
    let body = &data[..complete];
    let last = body[..complete.saturating_sub(1)]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let (seq, hash) = if complete == 0 {
        // An empty segment follows the previous one: its head is the previous segment's.
        (first - 1, prev_segment_head(dir, &segs)?)
    } else {
        let (hash, rec) = parse_line(&body[last..complete - 1]).ok_or_else(|| {
            Error::Corrupt(format!("last record of {} is malformed", path.display()))
        })?;
        (rec.seq, hash)
    };
    Ok((
        Head {
            seq,
            hash,
            segment: path,
            segment_first: first,
            len: complete as u64,
        },
        torn,
    ))
}

pub(super) fn prev_segment_head(dir: &Path, segs: &[(u64, PathBuf)]) -> Result<String> {
    if segs.len() < 2 {
        return Ok(read_anchor(dir)?.map_or_else(|| ZERO.into(), |a| a.hash));
    }
    let (_, p) = &segs[segs.len() - 2];
    let data = read_segment(p)?;
    let line = data
        .split(|&b| b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap_or_default();
    parse_line(line)
        .map(|(h, _)| h)
        .ok_or_else(|| Error::Corrupt(format!("last record of {} is malformed", p.display())))
}
