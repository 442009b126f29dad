//! The tamper-evident audit trail.
//!
//! Every record is one line `HASH JSON\n` in a segment file `audit/seg-<first seq>.log`, where
//! `JSON` holds the sequence number, time, kind, actor, body and the hash of the previous
//! record, and `HASH = blake3(previous hash ‖ JSON)`. [`verify`] walks the chain across
//! segments and names the first record that is altered, missing, out of order, or where the
//! file is truncated — also against a [`Checkpoint`] kept elsewhere.
//!
//! Appends are group-committed: concurrent appenders queue their lines, one of them writes and
//! fsyncs the whole batch, and every appender returns only once its record is durable. Across
//! processes an OS lock (`audit/LOCK`) serialises commits, and a process re-reads the chain
//! head when another one has appended since. A torn tail found on open (a crash mid-write) is
//! moved to a quarantine file and recorded on the chain — never silently dropped.
//!
//! **Retention and archiving.** Closed segments can be archived ([`AuditLog::archive`]) into
//! `arch-<first seq>.parquet`: one row per record with its hash and the exact JSON that was
//! hashed, so the chain verifies across `.log` and `.parquet` segments alike, and auditors can
//! read the archive with any Parquet tool. Records are kept for a [`Retention`] of at least
//! three years (the regulations' minimum, also the default); [`AuditLog::purge_expired`] is the
//! only way to delete records and removes only archived segments whose *newest* record is older
//! than the retention. A purge is itself a record on the chain, and the `ANCHOR` file it leaves
//! (the last purged sequence number and hash) is only accepted by [`verify`] when that record
//! backs it — deleting younger segments and forging an anchor is detected.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use arrow::array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// Records per segment before a new segment file is started.
pub const SEGMENT_RECORDS: u64 = 100_000;

/// The part of a record the hash covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// When it was appended.
    pub time: DateTime<Utc>,
    /// Hash (hex) of the previous record; 64 zeros for the first.
    pub prev: String,
    /// What kind of decision or act: `session_open`, `query`, `query_end`, `denied`,
    /// `policy`, `catalog`, `load`, `recovery`, ...
    pub kind: String,
    /// The real-name user (or system component) acting.
    pub actor: String,
    /// Kind-specific content.
    pub body: serde_json::Value,
}

/// A chain head an external party can keep: verification against it detects truncation and
/// rewriting of everything up to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sequence number of the head.
    pub seq: u64,
    /// Its hash (hex).
    pub hash: String,
}

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

/// The clock records are stamped with. Tests skew it to make records "old"; nothing else can.
#[cfg(not(test))]
fn now() -> DateTime<Utc> {
    Utc::now()
}

#[cfg(test)]
thread_local! {
    static CLOCK_SKEW: std::cell::Cell<chrono::TimeDelta> = const { std::cell::Cell::new(chrono::TimeDelta::zero()) };
}

#[cfg(test)]
fn now() -> DateTime<Utc> {
    Utc::now() + CLOCK_SKEW.with(|c| c.get())
}

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

struct Head {
    seq: u64,
    hash: String,
    segment: PathBuf,
    segment_first: u64,
    /// Bytes of the current segment known to this process; a different size on disk means
    /// another process appended.
    len: u64,
}

struct State {
    head: Head,
    pending: Vec<u8>,
    pending_last: u64,
    durable: u64,
    committing: bool,
    failed: Option<String>,
}

/// An open audit trail. Share one per process (`Arc`).
pub struct AuditLog {
    dir: PathBuf,
    segment_records: u64,
    state: Mutex<State>,
    cond: Condvar,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({})", self.dir.display())
    }
}

fn segment_name(first: u64) -> String {
    format!("seg-{first:012}.log")
}

fn archive_name(first: u64) -> String {
    format!("arch-{first:012}.parquet")
}

fn is_archive(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "parquet")
}

/// Where the chain starts after a purge: the last purged record.
fn read_anchor(dir: &Path) -> Result<Option<Checkpoint>> {
    let p = dir.join("ANCHOR");
    match std::fs::read_to_string(&p) {
        Ok(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { path: p, source: e }),
    }
}

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
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

/// The schema of an archived segment.
fn archive_schema() -> Arc<Schema> {
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

/// A segment's lines (`HASH JSON\n`), from a `.log` as it is or rebuilt from an archive.
fn read_segment(path: &Path) -> Result<Vec<u8>> {
    if !is_archive(path) {
        return std::fs::read(path).at(path);
    }
    let file = File::open(path).at(path)?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_projection(parquet::arrow::ProjectionMask::all())
        .build()?;
    let mut out = Vec::new();
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
    Ok(out)
}

/// Write the lines of a `.log` segment as a Parquet archive (to `dest`, fsynced).
fn write_archive(lines: &[u8], dest: &Path) -> Result<()> {
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
    let file = File::create(dest).at(dest)?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    w.write(&batch)?;
    let file = w.into_inner()?;
    file.sync_all().at(dest)?;
    Ok(())
}

/// Parse one line into (hash, record); `None` when it is not a well-formed record line.
fn parse_line(line: &[u8]) -> Option<(String, Record)> {
    let text = std::str::from_utf8(line).ok()?;
    let (hash, json) = text.split_once(' ')?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((hash.to_string(), serde_json::from_str(json).ok()?))
}

fn chain_hash(prev: &str, json: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(prev.as_bytes());
    h.update(json);
    h.finalize().to_hex().to_string()
}

/// Read the head of the chain from the last segment; returns the head and, when the segment
/// ends in a torn (partial) line, its byte offset.
fn read_head(dir: &Path) -> Result<(Head, Option<u64>)> {
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

fn prev_segment_head(dir: &Path, segs: &[(u64, PathBuf)]) -> Result<String> {
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

impl AuditLog {
    /// Open (or create) the trail in `dir`. A torn tail is quarantined and recorded.
    pub fn open(dir: impl AsRef<Path>) -> Result<AuditLog> {
        Self::open_with(dir, SEGMENT_RECORDS)
    }

    /// [`AuditLog::open`] with segments of `segment_records` records.
    pub fn open_with(dir: impl AsRef<Path>, segment_records: u64) -> Result<AuditLog> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).at(&dir)?;
        let log = AuditLog {
            dir: dir.clone(),
            segment_records: segment_records.max(1),
            state: Mutex::new(State {
                head: Head {
                    seq: 0,
                    hash: ZERO.into(),
                    segment: dir.join(segment_name(1)),
                    segment_first: 1,
                    len: 0,
                },
                pending: Vec::new(),
                pending_last: 0,
                durable: 0,
                committing: false,
                failed: None,
            }),
            cond: Condvar::new(),
        };
        let lock = log.os_lock()?;
        let (head, torn) = read_head(&dir)?;
        let mut recovered = None;
        if let Some(at) = torn {
            let q = dir.join(format!(
                "torn-{}-{}.bin",
                head.segment_first,
                Utc::now().format("%Y%m%dT%H%M%S%.f")
            ));
            let data = std::fs::read(&head.segment).at(&head.segment)?;
            std::fs::write(&q, &data[at as usize..]).at(&q)?;
            let f = OpenOptions::new()
                .write(true)
                .open(&head.segment)
                .at(&head.segment)?;
            f.set_len(at).at(&head.segment)?;
            f.sync_all().at(&head.segment)?;
            recovered = Some((at, data.len() as u64 - at, q));
        }
        {
            let mut st = log.lock_state()?;
            st.durable = head.seq;
            st.pending_last = head.seq;
            st.head = head;
        }
        drop(lock);
        if let Some((at, bytes, q)) = recovered {
            log.append(
                "recovery",
                "govshare",
                serde_json::json!({
                    "torn_tail_offset": at,
                    "torn_tail_bytes": bytes,
                    "quarantined_to": q.file_name().map(|n| n.to_string_lossy().into_owned()),
                    "note": "an interrupted write left a partial record; it was moved aside, not dropped",
                }),
            )?;
        }
        Ok(log)
    }

    /// The directory of the trail.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn os_lock(&self) -> Result<File> {
        let p = self.dir.join("LOCK");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .at(&p)?;
        f.lock().at(&p)?;
        Ok(f)
    }

    fn lock_state(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::Corrupt("audit state poisoned".into()))
    }

    /// Append one record and return its sequence number once it is durable (fsynced). Fails
    /// — and every later append fails — if the trail cannot be written: callers fail closed.
    pub fn append(&self, kind: &str, actor: &str, body: serde_json::Value) -> Result<u64> {
        let mut st = self.lock_state()?;
        if let Some(f) = &st.failed {
            return Err(Error::Corrupt(format!("audit trail unavailable: {f}")));
        }
        // The record is chained when it is written (another process may have appended since),
        // so only the body is queued here.
        let body = serde_json::to_string(&(kind, actor, body)).map_err(|e| Error::Serde {
            what: "audit record".into(),
            message: e.to_string(),
        })?;
        st.pending.extend_from_slice(body.as_bytes());
        st.pending.push(b'\n');
        st.pending_last += 1;
        let ticket = st.pending_last;
        loop {
            if st.durable >= ticket {
                return Ok(ticket);
            }
            if let Some(f) = &st.failed {
                return Err(Error::Corrupt(format!("audit trail unavailable: {f}")));
            }
            if !st.committing {
                st.committing = true;
                let batch = std::mem::take(&mut st.pending);
                let first_ticket = st.durable + 1;
                let last_ticket = st.pending_last;
                drop(st);
                let res = self.commit(&batch, first_ticket, last_ticket);
                st = self.lock_state()?;
                st.committing = false;
                match res {
                    Ok(()) => st.durable = last_ticket,
                    Err(e) => st.failed = Some(e.to_string()),
                }
                self.cond.notify_all();
            } else {
                st = self
                    .cond
                    .wait(st)
                    .map_err(|_| Error::Corrupt("audit state poisoned".into()))?;
            }
        }
    }

    /// Chain and write a batch of queued bodies, then fsync. Tickets are this process's
    /// numbering; the sequence numbers written follow the chain head on disk.
    fn commit(&self, batch: &[u8], first_ticket: u64, last_ticket: u64) -> Result<()> {
        let _lock = self.os_lock()?;
        let mut head = {
            let st = self.lock_state()?;
            Head {
                seq: st.head.seq,
                hash: st.head.hash.clone(),
                segment: st.head.segment.clone(),
                segment_first: st.head.segment_first,
                len: st.head.len,
            }
        };
        let on_disk = std::fs::metadata(&head.segment)
            .map(|m| m.len())
            .unwrap_or(0);
        let newer = segments(&self.dir)?.last().map(|(f, _)| *f).unwrap_or(1) != head.segment_first;
        if on_disk != head.len || newer {
            head = read_head(&self.dir)?.0; // another process appended
        }
        let ticket_offset = head.seq as i128 - (first_ticket as i128 - 1);
        let mut out: Vec<u8> = Vec::with_capacity(batch.len() * 2);
        let mut file_changes: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        for (i, line) in batch
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let (kind, actor, body): (String, String, serde_json::Value) =
                serde_json::from_slice(line).map_err(|e| Error::Serde {
                    what: "audit record".into(),
                    message: e.to_string(),
                })?;
            let seq = head.seq + 1;
            debug_assert_eq!(
                seq as i128,
                first_ticket as i128 + i as i128 + ticket_offset
            );
            if seq - head.segment_first >= self.segment_records {
                file_changes.push((head.segment.clone(), std::mem::take(&mut out)));
                head.segment_first = seq;
                head.segment = self.dir.join(segment_name(seq));
                head.len = 0;
            }
            let rec = Record {
                seq,
                time: now(),
                prev: head.hash.clone(),
                kind,
                actor,
                body,
            };
            let json = serde_json::to_vec(&rec).map_err(|e| Error::Serde {
                what: "audit record".into(),
                message: e.to_string(),
            })?;
            let hash = chain_hash(&head.hash, &json);
            out.extend_from_slice(hash.as_bytes());
            out.push(b' ');
            out.extend_from_slice(&json);
            out.push(b'\n');
            head.seq = seq;
            head.hash = hash;
        }
        let _ = last_ticket;
        file_changes.push((head.segment.clone(), out));
        for (path, bytes) in file_changes {
            if bytes.is_empty() {
                continue;
            }
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .at(&path)?;
            f.write_all(&bytes).at(&path)?;
            f.sync_data().at(&path)?;
            if path == head.segment {
                head.len = f.seek(SeekFrom::End(0)).at(&path)?;
            }
        }
        crate::store::sync_dir(&head.segment)?;
        self.lock_state()?.head = head;
        Ok(())
    }

    /// The current chain head, to be kept by an external party.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let _lock = self.os_lock()?;
        let (head, _) = read_head(&self.dir)?;
        Ok(Checkpoint {
            seq: head.seq,
            hash: head.hash,
        })
    }

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
                crate::store::sync_dir(&dest)?;
                std::fs::remove_file(path).at(path)?;
                crate::store::sync_dir(path)?;
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
            let mut f = File::create(&tmp).at(&tmp)?;
            f.write_all(text.as_bytes()).at(&tmp)?;
            f.sync_all().at(&tmp)?;
        }
        std::fs::rename(&tmp, &anchor).at(&anchor)?;
        crate::store::sync_dir(&anchor)?;
        for p in &doomed {
            std::fs::remove_file(p).at(p)?;
        }
        crate::store::sync_dir(&anchor)?;
        Ok(seq + 1 - first)
    }

    /// Every record, in order (for tails, queries and reports).
    pub fn records(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for (_, p) in segments(&self.dir)? {
            let data = read_segment(&p)?;
            for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let (_, r) = parse_line(line).ok_or_else(|| {
                    Error::Corrupt(format!("malformed record in {}", p.display()))
                })?;
                out.push(r);
            }
        }
        Ok(out)
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The whole chain is intact (and contains the checkpoint, when one was given).
    Intact {
        /// Records checked.
        records: u64,
        /// The head.
        head: Checkpoint,
    },
    /// The first problem, with where it is.
    Broken {
        /// Segment file.
        segment: PathBuf,
        /// Line number within it (1-based).
        line: u64,
        /// Sequence number expected there.
        seq: u64,
        /// What is wrong.
        problem: String,
    },
}

/// The fields of a record that chaining needs, borrowed from the line (hex hashes and kinds
/// need no unescaping; a record whose `prev` or `kind` would need it is not well-formed).
#[derive(Deserialize)]
struct Link<'a> {
    seq: u64,
    prev: &'a str,
    kind: &'a str,
}

/// What one segment's check found: its head and whether it holds the purge record backing
/// the anchor, or the first problem in it.
enum SegmentCheck {
    Ok {
        last_hash: String,
        last_seq: u64,
        lines: u64,
        backs_anchor: bool,
    },
    Broken(Verdict),
}

/// Check one segment on its own, given the sequence number and hash its first record must
/// follow. Segments are independent once those are known, so [`verify`] checks them in
/// parallel and reports the first problem in chain order.
fn check_segment(
    path: &Path,
    first: u64,
    data: &[u8],
    mut prev: String,
    mut expect: u64,
    checkpoint: Option<&Checkpoint>,
    anchor: Option<&Checkpoint>,
) -> SegmentCheck {
    let broken = |line: u64, seq: u64, problem: String| {
        SegmentCheck::Broken(Verdict::Broken {
            segment: path.to_path_buf(),
            line,
            seq,
            problem,
        })
    };
    if first != expect {
        return broken(
            1,
            expect,
            format!(
                "segment starts at record {first}; records {expect}..{} are missing",
                first.saturating_sub(1)
            ),
        );
    }
    let mut backs_anchor = false;
    let mut line_no = 0u64;
    let mut rest = data;
    while !rest.is_empty() {
        line_no += 1;
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return broken(
                line_no,
                expect,
                "the file is truncated inside this record (torn tail)".into(),
            );
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let hash = line
            .get(..64)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        let json = line.get(65..).filter(|_| line.get(64) == Some(&b' '));
        let (Some(hash), Some(json)) = (hash, json) else {
            return broken(
                line_no,
                expect,
                "record is not well-formed (altered)".into(),
            );
        };
        let Ok(link) = serde_json::from_slice::<Link<'_>>(json) else {
            return broken(
                line_no,
                expect,
                "record is not well-formed (altered)".into(),
            );
        };
        if link.seq != expect {
            let what = if link.seq > expect {
                "missing (deleted)"
            } else {
                "out of order (reordered or duplicated)"
            };
            return broken(
                line_no,
                expect,
                format!(
                    "found record {} where {expect} belongs: record {expect} is {what}",
                    link.seq
                ),
            );
        }
        if link.prev != prev {
            return broken(
                line_no,
                expect,
                "does not chain to the previous record (reordered or altered)".into(),
            );
        }
        let computed = chain_hash(&prev, json);
        if computed.as_bytes() != hash {
            return broken(
                line_no,
                expect,
                "content does not match its hash (altered)".into(),
            );
        }
        if let Some(cp) = checkpoint
            && cp.seq == link.seq
            && cp.hash != computed
        {
            return broken(
                line_no,
                expect,
                "differs from the kept checkpoint (rewritten)".into(),
            );
        }
        // Only a purge record needs its body: parse it in full then.
        if let Some(a) = anchor
            && link.kind == "purge"
            && let Ok(rec) = serde_json::from_slice::<Record>(json)
            && rec.body["through_seq"] == a.seq
            && rec.body["through_hash"] == a.hash.as_str()
        {
            backs_anchor = true;
        }
        prev = computed;
        expect += 1;
    }
    SegmentCheck::Ok {
        last_hash: prev,
        last_seq: expect - 1,
        lines: line_no,
        backs_anchor,
    }
}

/// The hash and sequence number on the last complete line of a segment (what the next
/// segment must follow); `None` when there is none or it does not parse, in which case that
/// segment's own check reports why.
fn last_link(data: &[u8]) -> Option<(String, u64)> {
    let complete = data.iter().rposition(|&b| b == b'\n')?;
    let start = data[..complete]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let hash = String::from_utf8_lossy(data.get(start..start + 64)?).into_owned();
    let link: Link<'_> = serde_json::from_slice(data.get(start + 65..complete)?).ok()?;
    Some((hash, link.seq))
}

/// Walk the chain in `dir` and report the first altered, missing, reordered or truncated
/// record; with `checkpoint`, also that the chain reaches it with the same hash. Segments are
/// checked on up to two threads; the first problem in chain order is reported.
pub fn verify(dir: &Path, checkpoint: Option<&Checkpoint>) -> Result<Verdict> {
    let anchor = read_anchor(dir)?;
    let segs = segments(dir)?;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 2);
    // Where the next segment must start: after the anchor (or the beginning), then after the
    // previous segment's last record as that segment claims it.
    let mut prev = anchor
        .as_ref()
        .map_or_else(|| ZERO.to_string(), |a| a.hash.clone());
    let mut expect = anchor.as_ref().map_or(1, |a| a.seq + 1);
    let mut records = anchor.as_ref().map_or(0, |a| a.seq);
    let mut head_hash = prev.clone();
    let mut anchor_backed = anchor.is_none();
    let mut last_seg = PathBuf::new();
    let mut last_line = 0;
    // A window of segments at a time, one thread each: memory stays at `workers` segments
    // however long the trail is.
    for window in segs.chunks(workers) {
        let mut jobs = Vec::with_capacity(window.len());
        for (first, path) in window {
            let data = read_segment(path)?;
            let start = (prev.clone(), expect);
            // An empty segment passes the chain on unchanged; an unreadable last line is that
            // segment's own problem, found by its check (the next one then starts anywhere).
            if !data.is_empty() {
                (prev, expect) = last_link(&data).map_or((String::new(), 0), |(h, s)| (h, s + 1));
            }
            jobs.push((*first, path, start.0, start.1, data));
        }
        let checks: Vec<SegmentCheck> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|(first, path, start_prev, start_seq, data)| {
                    let anchor = anchor.as_ref();
                    scope.spawn(move || {
                        check_segment(
                            path,
                            *first,
                            data,
                            start_prev.clone(),
                            *start_seq,
                            checkpoint,
                            anchor,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        SegmentCheck::Broken(Verdict::Broken {
                            segment: dir.to_path_buf(),
                            line: 0,
                            seq: 0,
                            problem: "verification thread failed".into(),
                        })
                    })
                })
                .collect()
        });
        for (check, (_, path)) in checks.into_iter().zip(window) {
            match check {
                SegmentCheck::Broken(v) => return Ok(v),
                SegmentCheck::Ok {
                    last_hash,
                    last_seq,
                    lines,
                    backs_anchor,
                } => {
                    if lines > 0 {
                        records = last_seq;
                        head_hash = last_hash;
                    }
                    anchor_backed |= backs_anchor;
                    last_seg = path.clone();
                    last_line = lines;
                }
            }
        }
    }
    if !anchor_backed {
        return Ok(Verdict::Broken {
            segment: dir.join("ANCHOR"),
            line: 1,
            seq: anchor.as_ref().map_or(1, |a| a.seq + 1),
            problem: "the trail starts after a purge anchor that no purge record backs \
                      (records were deleted outside the retention rules)"
                .into(),
        });
    }
    if let Some(cp) = checkpoint
        && cp.seq > records
    {
        return Ok(Verdict::Broken {
            segment: last_seg,
            line: last_line + 1,
            seq: records + 1,
            problem: format!(
                "the trail ends at record {records} but the kept checkpoint is at {} (truncated)",
                cp.seq
            ),
        });
    }
    Ok(Verdict::Intact {
        records,
        head: Checkpoint {
            seq: records,
            hash: head_hash,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn filled(n: usize) -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().expect("tmp");
        let log = AuditLog::open(dir.path()).expect("open");
        for i in 0..n {
            log.append("query", "u1", serde_json::json!({ "i": i }))
                .expect("append");
        }
        (dir, log)
    }

    fn seg(dir: &Path) -> PathBuf {
        dir.join(segment_name(1))
    }

    fn broken_at(dir: &Path, cp: Option<&Checkpoint>) -> (u64, String) {
        match verify(dir, cp).expect("verify") {
            Verdict::Broken { seq, problem, .. } => (seq, problem),
            v => panic!("not detected: {v:?}"),
        }
    }

    #[test]
    fn intact_chain_verifies_and_concurrent_appends_get_distinct_seqs() {
        let (dir, log) = filled(10);
        let log = Arc::new(log);
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|i| {
                            log.append("query", "t", serde_json::json!({ "t": t, "i": i }))
                                .expect("a")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("join"))
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 200);
        match verify(dir.path(), None).expect("verify") {
            Verdict::Intact { records, .. } => assert_eq!(records, 210),
            v => panic!("{v:?}"),
        }
        assert_eq!(log.records().expect("records").len(), 210);
    }

    #[test]
    fn every_single_byte_flip_is_detected_at_its_record() {
        let (dir, _log) = filled(5);
        let p = seg(dir.path());
        let orig = std::fs::read(&p).expect("read");
        let line_of = |off: usize| orig[..off].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        for off in 0..orig.len() {
            let mut d = orig.clone();
            d[off] ^= 0x01;
            std::fs::write(&p, &d).expect("write");
            let (seq, _) = broken_at(dir.path(), None);
            // A flipped newline merges or splits records: the damage shows at that record or
            // the next one; anything else must be pinned to its own record.
            let want = line_of(off);
            if orig[off] == b'\n' {
                assert!(seq == want || seq == want + 1, "offset {off}: seq {seq}");
            } else {
                assert_eq!(seq, want, "offset {off}");
            }
        }
    }

    #[test]
    fn deletion_swap_and_truncation_are_detected_with_position() {
        let (dir, log) = filled(6);
        let cp = log.checkpoint().expect("checkpoint");
        let p = seg(dir.path());
        let orig = std::fs::read_to_string(&p).expect("read");
        let lines: Vec<&str> = orig.lines().collect();
        let write =
            |ls: &[&str], tail: &str| std::fs::write(&p, ls.join("\n") + "\n" + tail).expect("w");
        let mut del = lines.clone();
        del.remove(2);
        write(&del, "");
        let (seq, problem) = broken_at(dir.path(), None);
        assert_eq!(seq, 3);
        assert!(problem.contains("missing"), "{problem}");
        let mut swap = lines.clone();
        swap.swap(3, 4);
        write(&swap, "");
        let (seq, problem) = broken_at(dir.path(), None);
        assert_eq!(seq, 4);
        assert!(
            problem.contains("out of order") || problem.contains("missing"),
            "{problem}"
        );
        write(&lines[..5], &lines[5][..20]);
        let (seq, problem) = broken_at(dir.path(), None);
        assert_eq!(seq, 6);
        assert!(problem.contains("truncated"), "{problem}");
        // Cutting whole records off the end is invisible without a checkpoint, caught with one.
        write(&lines[..4], "");
        assert!(matches!(
            verify(dir.path(), None).expect("v"),
            Verdict::Intact { .. }
        ));
        let (seq, problem) = broken_at(dir.path(), Some(&cp));
        assert_eq!(seq, 5);
        assert!(problem.contains("checkpoint"), "{problem}");
    }

    #[test]
    fn torn_tail_is_quarantined_and_recorded_on_open() {
        let (dir, log) = filled(3);
        drop(log);
        let p = seg(dir.path());
        let mut f = OpenOptions::new().append(true).open(&p).expect("open");
        f.write_all(b"0123abc {\"seq\":4,").expect("write");
        drop(f);
        let log = AuditLog::open(dir.path()).expect("reopen");
        let recs = log.records().expect("records");
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[3].kind, "recovery");
        assert!(matches!(
            verify(dir.path(), None).expect("v"),
            Verdict::Intact { records: 4, .. }
        ));
        assert!(std::fs::read_dir(dir.path()).expect("dir").any(|e| {
            e.expect("e")
                .file_name()
                .to_string_lossy()
                .starts_with("torn-")
        }));
    }

    #[test]
    fn segments_roll_over_and_chain_across() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = AuditLog::open_with(dir.path(), 10).expect("open");
        for i in 0..25 {
            log.append("q", "u", serde_json::json!(i)).expect("append");
        }
        assert_eq!(segments(dir.path()).expect("segs").len(), 3);
        // Reopened, the head is found in the last segment and the chain continues.
        drop(log);
        let log = AuditLog::open_with(dir.path(), 10).expect("reopen");
        log.append("q", "u", serde_json::json!(25)).expect("append");
        assert!(matches!(
            verify(dir.path(), None).expect("v"),
            Verdict::Intact { records: 26, .. }
        ));
        assert!(matches!(
            verify(dir.path(), None).expect("v"),
            Verdict::Intact { .. }
        ));
        // Deleting the first segment is a missing range.
        std::fs::remove_file(seg(dir.path())).expect("rm");
        let (seq, problem) = broken_at(dir.path(), None);
        assert_eq!(seq, 1);
        assert!(problem.contains("missing"), "{problem}");
    }

    fn skew_clock(by: chrono::TimeDelta) {
        CLOCK_SKEW.with(|c| c.set(by));
    }

    #[test]
    fn retention_below_three_years_is_refused() {
        assert!(Retention::years(2).is_err());
        assert_eq!(Retention::default().in_years(), 3);
        assert_eq!(Retention::years(5).expect("5").in_years(), 5);
    }

    #[test]
    fn archived_segments_verify_and_read_like_logs_and_tampering_is_found() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = AuditLog::open_with(dir.path(), 10).expect("open");
        for i in 0..25 {
            log.append("q", "u", serde_json::json!({ "i": i }))
                .expect("append");
        }
        let before = log.records().expect("records");
        let written = log.archive("ops").expect("archive");
        assert_eq!(written.len(), 2, "the two closed segments, never the head");
        assert!(!seg(dir.path()).exists());
        let after = log.records().expect("records");
        assert_eq!(&after[..25], &before[..]);
        assert_eq!(after[25].kind, "archive");
        assert!(matches!(
            verify(dir.path(), None).expect("v"),
            Verdict::Intact { records: 26, .. }
        ));
        // Archiving again finds nothing new; appends continue on the same chain after reopen.
        drop(log);
        let log = AuditLog::open_with(dir.path(), 10).expect("reopen");
        assert!(log.archive("ops").expect("archive").is_empty());
        log.append("q", "u", serde_json::json!(26)).expect("append");
        assert!(matches!(
            verify(dir.path(), None).expect("v"),
            Verdict::Intact { records: 27, .. }
        ));
        // Change one record inside the second archive (record 13) and rewrite the file.
        let arch = dir.path().join(archive_name(11));
        let lines = read_segment(&arch).expect("read");
        let text = String::from_utf8(lines).expect("utf8");
        let altered = text.replacen("\"i\":12", "\"i\":99", 1);
        assert_ne!(altered, text);
        write_archive(altered.as_bytes(), &arch).expect("rewrite");
        let (seq, problem) = broken_at(dir.path(), None);
        assert_eq!(seq, 13);
        assert!(problem.contains("altered"), "{problem}");
    }

    #[test]
    fn purge_deletes_only_archived_records_older_than_retention() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = AuditLog::open_with(dir.path(), 10).expect("open");
        // Records 1..=20 written "four years ago", 21..=25 two years ago, the rest now.
        skew_clock(-chrono::TimeDelta::days(4 * 366));
        for i in 0..20 {
            log.append("q", "u", serde_json::json!(i)).expect("append");
        }
        skew_clock(-chrono::TimeDelta::days(2 * 365));
        for i in 20..25 {
            log.append("q", "u", serde_json::json!(i)).expect("append");
        }
        skew_clock(chrono::TimeDelta::zero());
        for i in 25..32 {
            log.append("q", "u", serde_json::json!(i)).expect("append");
        }
        // Nothing is archived yet: nothing may go, however old.
        assert_eq!(
            log.purge_expired(Retention::default(), "ops").expect("p"),
            0
        );
        log.archive("ops").expect("archive");
        // Segments: 1..=10 and 11..=20 (4 years old), 21..=30 (newest record: now), head.
        // A longer retention keeps everything.
        assert_eq!(
            log.purge_expired(Retention::years(5).expect("5"), "ops")
                .expect("p"),
            0
        );
        assert_eq!(
            log.purge_expired(Retention::default(), "ops").expect("p"),
            20
        );
        assert!(!dir.path().join(archive_name(1)).exists());
        assert!(!dir.path().join(archive_name(11)).exists());
        assert!(dir.path().join(archive_name(21)).exists());
        let recs = log.records().expect("records");
        assert_eq!(recs.first().map(|r| r.seq), Some(21));
        let purge = recs.iter().find(|r| r.kind == "purge").expect("recorded");
        assert_eq!(purge.body["through_seq"], 20);
        assert_eq!(purge.body["records"], 20);
        match verify(dir.path(), None).expect("v") {
            Verdict::Intact { records, .. } => assert_eq!(records, recs.last().expect("l").seq),
            v => panic!("{v:?}"),
        }
        // Purging again deletes nothing: what is left is within retention.
        assert_eq!(
            log.purge_expired(Retention::default(), "ops").expect("p"),
            0
        );
        // An attacker deletes the next (young) archive and forges the anchor past it: no purge
        // record backs that anchor, so verification fails.
        let lines = read_segment(&dir.path().join(archive_name(21))).expect("read");
        let last = lines
            .split(|&b| b == b'\n')
            .rfind(|l| !l.is_empty())
            .and_then(parse_line)
            .expect("last");
        std::fs::remove_file(dir.path().join(archive_name(21))).expect("rm");
        std::fs::write(
            dir.path().join("ANCHOR"),
            serde_json::to_string(&Checkpoint {
                seq: last.1.seq,
                hash: last.0,
            })
            .expect("json"),
        )
        .expect("forge");
        let (_, problem) = broken_at(dir.path(), None);
        assert!(problem.contains("no purge record"), "{problem}");
    }
}
