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

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

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
        if let Some(first) = name
            .strip_prefix("seg-")
            .and_then(|r| r.strip_suffix(".log"))
            .and_then(|n| n.parse().ok())
        {
            out.push((first, p));
        }
    }
    out.sort();
    Ok(out)
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
    let data = std::fs::read(&path).at(&path)?;
    let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let torn = (complete < data.len()).then_some(complete as u64);
    let body = &data[..complete];
    let last = body[..complete.saturating_sub(1)]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let (seq, hash) = if complete == 0 {
        // An empty segment follows the previous one: its head is the previous segment's.
        (first - 1, prev_segment_head(&segs)?)
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

fn prev_segment_head(segs: &[(u64, PathBuf)]) -> Result<String> {
    if segs.len() < 2 {
        return Ok(ZERO.into());
    }
    let (_, p) = &segs[segs.len() - 2];
    let data = std::fs::read(p).at(p)?;
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
                time: Utc::now(),
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

    /// Every record, in order (for tails, queries and reports).
    pub fn records(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for (_, p) in segments(&self.dir)? {
            let mut data = Vec::new();
            File::open(&p).at(&p)?.read_to_end(&mut data).at(&p)?;
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
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Walk the chain in `dir` and report the first altered, missing, reordered or truncated
/// record; with `checkpoint`, also that the chain reaches it with the same hash.
pub fn verify(dir: &Path, checkpoint: Option<&Checkpoint>) -> Result<Verdict> {
    let mut prev = ZERO.to_string();
    let mut expect = 1u64;
    let mut last_seg = PathBuf::new();
    let mut last_line = 0;
    for (first, path) in segments(dir)? {
        let data = std::fs::read(&path).at(&path)?;
        let broken = |line: u64, seq: u64, problem: String| Verdict::Broken {
            segment: path.clone(),
            line,
            seq,
            problem,
        };
        if first != expect {
            return Ok(broken(
                1,
                expect,
                format!(
                    "segment starts at record {first}; records {expect}..{} are missing",
                    first.saturating_sub(1)
                ),
            ));
        }
        let mut line_no = 0u64;
        let mut rest = &data[..];
        while !rest.is_empty() {
            line_no += 1;
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                return Ok(broken(
                    line_no,
                    expect,
                    "the file is truncated inside this record (torn tail)".into(),
                ));
            };
            let line = &rest[..end];
            rest = &rest[end + 1..];
            let Some((hash, rec)) = parse_line(line) else {
                return Ok(broken(
                    line_no,
                    expect,
                    "record is not well-formed (altered)".into(),
                ));
            };
            if rec.seq != expect {
                let what = if rec.seq > expect {
                    "missing (deleted)"
                } else {
                    "out of order (reordered or duplicated)"
                };
                return Ok(broken(
                    line_no,
                    expect,
                    format!(
                        "found record {} where {expect} belongs: record {expect} is {what}",
                        rec.seq
                    ),
                ));
            }
            if rec.prev != prev {
                return Ok(broken(
                    line_no,
                    expect,
                    "does not chain to the previous record (reordered or altered)".into(),
                ));
            }
            let json = &line[65..];
            if chain_hash(&prev, json) != hash {
                return Ok(broken(
                    line_no,
                    expect,
                    "content does not match its hash (altered)".into(),
                ));
            }
            if let Some(cp) = checkpoint
                && cp.seq == rec.seq
                && cp.hash != hash
            {
                return Ok(broken(
                    line_no,
                    expect,
                    "differs from the kept checkpoint (rewritten)".into(),
                ));
            }
            prev = hash;
            expect += 1;
        }
        last_seg = path.clone();
        last_line = line_no;
    }
    let records = expect - 1;
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
            hash: prev,
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
}
