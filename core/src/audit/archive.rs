//! Retention and archiving: closed segments become Parquet archives that stay on the chain,
//! and the only delete — a purge of archived segments older than the retention — is backed by
//! a record and an anchor.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

use super::segment::{archive_name, is_archive, parse_line, read_anchor, read_segment, segments};
use super::{AuditLog, Checkpoint, now};

/// How long records are kept before [`AuditLog::purge_expired`] may delete them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    years: u32,
}

impl Retention {
    /// The regulations' minimum (000 §23: logs are kept at least three years).
    pub const MIN_YEARS: u32 = 3;

    /// A retention of `years`; fewer than [`Retention::MIN_YEARS`] is refused.
    pub fn years(years: u32) -> Result<Retention> {
        if years < Self::MIN_YEARS {
            return Err(Error::invalid(format!(
                "audit retention of {years} years is below the required minimum of {} years",
                Self::MIN_YEARS
            )));
        }
        Ok(Retention { years })
    }

    /// The number of years.
    pub fn in_years(&self) -> u32 {
        self.years
    }

    /// Records at or after this instant are within retention at `now`.
    fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_sub_months(chrono::Months::new(12 * self.years))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            years: Self::MIN_YEARS,
        }
    }
}

/// The schema of an archived segment.
pub(super) fn archive_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::UInt64, false),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("kind", DataType::Utf8, false),
        Field::new("actor", DataType::Utf8, false),
        Field::new("hash", DataType::Utf8, false),
        // The exact JSON that was hashed: verification needs its bytes, not a re-encoding.
        Field::new("record", DataType::Utf8, false),
    ]))
}

/// Write the lines of a `.log` segment as a Parquet archive (to `dest`, fsynced).
pub(super) fn write_archive(lines: &[u8], dest: &Path) -> Result<()> {
    let (mut seq, mut time, mut kind, mut actor, mut hash, mut record) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let (h, r) = parse_line(line)
            .ok_or_else(|| Error::Corrupt(format!("malformed record before {}", dest.display())))?;
        let json = std::str::from_utf8(&line[65..])
            .map_err(|_| Error::Corrupt("record is not UTF-8".into()))?;
        seq.push(r.seq);
        time.push(r.time.timestamp_micros());
        kind.push(r.kind);
        actor.push(r.actor);
        hash.push(h);
        record.push(json.to_string());
    }
    let batch = RecordBatch::try_new(
        archive_schema(),
        vec![
            Arc::new(UInt64Array::from(seq)),
            Arc::new(TimestampMicrosecondArray::from(time).with_timezone("UTC")),
            Arc::new(StringArray::from(kind)),
            Arc::new(StringArray::from(actor)),
            Arc::new(StringArray::from(hash)),
            Arc::new(StringArray::from(record)),
        ],
    )?;
    let file = crate::durable::create_private(dest)?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    w.write(&batch)?;
    let file = w.into_inner()?;
    file.sync_all().at(dest)?;
    Ok(())
}

impl AuditLog {
    /// Archive every closed segment (all but the one being appended to) as Parquet. Each
    /// archive is written, fsynced and read back byte-for-byte equal before its `.log` is
    /// removed; an interruption leaves the `.log` authoritative. The act is recorded. Returns
    /// the archives written.
    pub fn archive(&self, actor: &str) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        {
            let _lock = self.os_lock()?;
            let segs = segments(&self.dir)?;
            for (first, path) in segs.iter().take(segs.len().saturating_sub(1)) {
                if is_archive(path) {
                    continue;
                }
                let lines = std::fs::read(path).at(path)?;
                let dest = self.dir.join(archive_name(*first));
                // Not a segment name until renamed (`segments` ignores it), but read as Parquet.
                let tmp = self.dir.join(format!("arch-{first:012}.tmp.parquet"));
                write_archive(&lines, &tmp)?;
                if read_segment(&tmp)? != lines {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(Error::Corrupt(format!(
                        "archive of {} does not read back identically; the log is kept",
                        path.display()
                    )));
                }
                std::fs::rename(&tmp, &dest).at(&dest)?;
                crate::durable::sync_dir(&dest)?;
                std::fs::remove_file(path).at(path)?;
                crate::durable::sync_dir(path)?;
                written.push(dest);
            }
        }
        if !written.is_empty() {
            let names: Vec<String> = written
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            self.append("archive", actor, serde_json::json!({ "archives": names }))?;
        }
        Ok(written)
    }

    /// Delete archived segments whose newest record is older than `retention` — the only way
    /// records ever leave the trail. Segments go strictly from the oldest on, stopping at the
    /// first one that is not archived or not expired, so the rest of the chain stays whole.
    /// The purge is recorded first, then the `ANCHOR` is moved, then the files are removed.
    /// Returns the number of records deleted.
    pub fn purge_expired(&self, retention: Retention, actor: &str) -> Result<u64> {
        let cutoff = retention.cutoff(now());
        let segs = segments(&self.dir)?;
        let mut doomed = Vec::new();
        let mut through: Option<(u64, String)> = None;
        for (i, (_, path)) in segs.iter().enumerate() {
            // The head segment is never archived, so it is never purged.
            if i + 1 == segs.len() || !is_archive(path) {
                break;
            }
            let data = read_segment(path)?;
            let Some((hash, newest)) = data
                .split(|&b| b == b'\n')
                .rfind(|l| !l.is_empty())
                .and_then(parse_line)
            else {
                break;
            };
            if newest.time >= cutoff {
                break;
            }
            through = Some((newest.seq, hash));
            doomed.push(path.clone());
        }
        let Some((seq, hash)) = through else {
            return Ok(0);
        };
        let first = read_anchor(&self.dir)?.map_or(1, |a| a.seq + 1);
        self.append(
            "purge",
            actor,
            serde_json::json!({
                "through_seq": seq,
                "through_hash": hash,
                "records": seq + 1 - first,
                "retention_years": retention.in_years(),
                "cutoff": cutoff,
            }),
        )?;
        let anchor = self.dir.join("ANCHOR");
        let tmp = self.dir.join("ANCHOR.tmp");
        let text = serde_json::to_string(&Checkpoint { seq, hash }).map_err(|e| Error::Serde {
            what: "audit anchor".into(),
            message: e.to_string(),
        })?;
        {
            let mut f = crate::durable::create_private(&tmp)?;
            f.write_all(text.as_bytes()).at(&tmp)?;
            f.sync_all().at(&tmp)?;
        }
        std::fs::rename(&tmp, &anchor).at(&anchor)?;
        crate::durable::sync_dir(&anchor)?;
        for p in &doomed {
            std::fs::remove_file(p).at(p)?;
        }
        crate::durable::sync_dir(&anchor)?;
        Ok(seq + 1 - first)
    }
}
