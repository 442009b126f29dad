//! The tamper-evident audit trail.
//!
//! Every record is one line `HASH JSON\n` in a segment file `audit/seg-<first seq>.log`, where
//! `JSON` holds the sequence number, time, kind, actor, body and the hash of the previous
//! record, and `HASH = blake3(previous hash ‖ JSON)`. [`verify()`] walks the chain across
//! segments and names the first record that is altered, missing, out of order, or where the
//! file is truncated — also against a [`Checkpoint`] kept elsewhere.
//!
//! Appends are group-committed: concurrent appenders queue their lines, one of them writes and
//! fsyncs the whole batch, and every appender returns only once its record is durable. Across
//! processes an OS lock (`audit/LOCK`) serialises commits, and a process re-reads the chain
//! head when another one has appended since. A torn tail (a crash mid-write) is left alone by
//! opening and reading — a read never changes the trail, and [`verify()`] reports it — and is
//! repaired by the next process that appends, under the OS lock: the partial bytes are moved
//! to a quarantine file and a `recovery` record, chained before the appender's own records,
//! says so. [`AuditLog::repair`] does the same as an explicit act.
//!
//! **Retention and archiving.** Closed segments can be archived ([`AuditLog::archive`]) into
//! `arch-<first seq>.parquet`: one row per record with its hash and the exact JSON that was
//! hashed, so the chain verifies across `.log` and `.parquet` segments alike, and auditors can
//! read the archive with any Parquet tool. Records are kept for a [`Retention`] of at least
//! three years (the regulations' minimum, also the default); [`AuditLog::purge_expired`] is the
//! only way to delete records and removes only archived segments whose *newest* record is older
//! than the retention. A purge is itself a record on the chain, and the `ANCHOR` file it leaves
//! (the last purged sequence number and hash) is only accepted by [`verify()`] when that record
//! backs it — deleting younger segments and forging an anchor is detected.

mod archive;
mod segment;
#[cfg(test)]
mod tests;
mod verify;

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

pub use archive::Retention;
use segment::{Head, chain_hash, parse_line, read_head, read_segment, segment_name, segments};
pub use verify::{Verdict, verify};

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

/// A record queued for the next group commit, encoded by its appender (outside the lock):
/// the commit only prepends the chain fields and hashes.
struct Queued {
    actor: String,
    /// `,"kind":…,"actor":…,"body":…}`: the JSON of the record after its chain fields.
    tail: String,
}

impl Queued {
    fn encode(kind: &str, actor: &str, body: &serde_json::Value) -> Result<Queued> {
        let err = |e: serde_json::Error| Error::Serde {
            what: "audit record".into(),
            message: e.to_string(),
        };
        let tail = format!(
            ",\"kind\":{},\"actor\":{},\"body\":{}}}",
            serde_json::to_string(kind).map_err(err)?,
            serde_json::to_string(actor).map_err(err)?,
            serde_json::to_string(body).map_err(err)?
        );
        Ok(Queued {
            actor: actor.to_string(),
            tail,
        })
    }
}

struct State {
    head: Head,
    pending: Vec<Queued>,
    pending_last: u64,
    durable: u64,
    /// The sequence number each committed ticket was written under, until its appender takes
    /// it: tickets count this process's appends, sequence numbers the chain's (another process
    /// may have appended in between), and callers refer to records by sequence number.
    seqs: std::collections::HashMap<u64, u64>,
    /// Tickets queued by [`AuditLog::append_nowait`]: nobody takes their sequence number.
    unclaimed: std::collections::HashSet<u64>,
    committing: bool,
    failed: Option<String>,
    /// The batch now open for appends (numbered from 1); the committer takes it whole.
    batch: u64,
    /// The last ticket taken by a committer (equal to `durable` when none is committing).
    taken: u64,
}

/// An open audit trail. Share one per process (`Arc`).
pub struct AuditLog {
    dir: PathBuf,
    segment_records: u64,
    state: Mutex<State>,
    /// Waiters of batch b wait on `cond[b % 2]`: a commit wakes its own batch's appenders and
    /// one appender of the next batch (to commit it), not everyone — with hundreds of
    /// appenders, waking all of them at every commit costs more CPU than the commit.
    cond: [Condvar; 2],
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({})", self.dir.display())
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Records queued without waiting are written before the log goes; nobody is left to
        // hear an error (a failed write latches the log, and the trail then simply lacks the
        // records, which readers take conservatively).
        let _ = self.flush();
    }
}

impl AuditLog {
    /// Open (or create) the trail in `dir`. Opening changes nothing in an existing trail (a
    /// torn tail is repaired by the next append; see the module docs).
    pub fn open(dir: impl AsRef<Path>) -> Result<AuditLog> {
        Self::open_with(dir, SEGMENT_RECORDS)
    }

    /// [`AuditLog::open`] with segments of `segment_records` records.
    pub fn open_with(dir: impl AsRef<Path>, segment_records: u64) -> Result<AuditLog> {
        let dir = dir.as_ref().to_path_buf();
        crate::durable::create_private_dir(&dir)?;
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
                seqs: std::collections::HashMap::new(),
                unclaimed: std::collections::HashSet::new(),
                committing: false,
                failed: None,
                batch: 1,
                taken: 0,
            }),
            cond: [Condvar::new(), Condvar::new()],
        };
        let lock = log.os_lock()?;
        let (head, _torn) = read_head(&dir)?;
        {
            let mut st = log.lock_state()?;
            st.durable = head.seq;
            st.taken = head.seq;
            st.pending_last = head.seq;
            st.head = head;
        }
        drop(lock);
        Ok(log)
    }

    /// The directory of the trail.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn os_lock(&self) -> Result<File> {
        let p = self.dir.join("LOCK");
        let f = crate::durable::private_file()
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
            .map_err(|_| Error::internal("audit state poisoned"))
    }

    /// Append one record and return its sequence number once it is durable (fsynced). Fails
    /// — and every later append fails — if the trail cannot be written: callers fail closed.
    pub fn append(&self, kind: &str, actor: &str, body: serde_json::Value) -> Result<u64> {
        let (st, ticket) = self.enqueue(kind, actor, body, false)?;
        let mut st = self.wait_durable(st, ticket)?;
        st.seqs.remove(&ticket).ok_or_else(|| {
            Error::internal(format!("audit append {ticket} lost its sequence number"))
        })
    }

    /// Queue one record and return at once; it is written with the next group commit (the
    /// next [`AuditLog::append`] or [`AuditLog::flush`], or when the log is dropped). For
    /// records that close something already durable — a query's completion — where a crash
    /// before the write only loses detail the trail reads conservatively (a query without its
    /// completion counts for every subject its grant covered).
    pub fn append_nowait(&self, kind: &str, actor: &str, body: serde_json::Value) -> Result<()> {
        self.enqueue(kind, actor, body, true).map(|_| ())
    }

    /// Wait until every record queued so far is durable (writing them if nobody is).
    pub fn flush(&self) -> Result<()> {
        let st = self.lock_state()?;
        let ticket = st.pending_last;
        self.wait_durable(st, ticket).map(|_| ())
    }

    fn enqueue(
        &self,
        kind: &str,
        actor: &str,
        body: serde_json::Value,
        unclaimed: bool,
    ) -> Result<(std::sync::MutexGuard<'_, State>, u64)> {
        // The record is chained when it is written (another process may have appended since),
        // so only its own part is queued here — encoded before the lock is taken, so
        // concurrent appenders encode in parallel.
        let queued = Queued::encode(kind, actor, &body)?;
        let mut st = self.lock_state()?;
        if let Some(f) = &st.failed {
            return Err(Error::Corrupt(format!("audit trail unavailable: {f}")));
        }
        st.pending.push(queued);
        st.pending_last += 1;
        let ticket = st.pending_last;
        if unclaimed {
            st.unclaimed.insert(ticket);
        }
        Ok((st, ticket))
    }

    /// Block until `ticket` is durable, committing the queue when no one else is.
    fn wait_durable<'a>(
        &'a self,
        mut st: std::sync::MutexGuard<'a, State>,
        ticket: u64,
    ) -> Result<std::sync::MutexGuard<'a, State>> {
        // The batch the ticket is in: the one being committed, or the open one.
        let mine = if ticket <= st.taken {
            st.batch - 1
        } else {
            st.batch
        };
        loop {
            if st.durable >= ticket {
                return Ok(st);
            }
            if let Some(f) = &st.failed {
                return Err(Error::Corrupt(format!("audit trail unavailable: {f}")));
            }
            if !st.committing {
                st.committing = true;
                let batch = std::mem::take(&mut st.pending);
                let number = st.batch;
                st.batch += 1;
                let first_ticket = st.durable + 1;
                let last_ticket = st.pending_last;
                st.taken = last_ticket;
                drop(st);
                let res = self.commit(&batch, first_ticket, last_ticket);
                st = self.lock_state()?;
                st.committing = false;
                match res {
                    Ok(first_seq) => {
                        for t in first_ticket..=last_ticket {
                            // Nobody waits for the number of a record queued without waiting.
                            if !st.unclaimed.remove(&t) {
                                st.seqs.insert(t, first_seq + (t - first_ticket));
                            }
                        }
                        st.durable = last_ticket;
                        self.cond[(number % 2) as usize].notify_all();
                        // Records queued meanwhile form the next batch: one of its appenders
                        // commits it.
                        if !st.pending.is_empty() {
                            self.cond[(st.batch % 2) as usize].notify_one();
                        }
                    }
                    Err(e) => {
                        st.failed = Some(e.to_string());
                        self.cond.iter().for_each(Condvar::notify_all);
                    }
                }
            } else {
                st = self.cond[(mine % 2) as usize]
                    .wait(st)
                    .map_err(|_| Error::internal("audit state poisoned"))?;
            }
        }
    }

    /// Chain and write a batch of queued bodies, then fsync. Tickets are this process's
    /// numbering; the sequence numbers written follow the chain head on disk. Returns the
    /// sequence number of the batch's first record.
    fn commit(&self, batch: &[Queued], first_ticket: u64, last_ticket: u64) -> Result<u64> {
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
        let mut recovery = None;
        if on_disk != head.len || newer {
            // Another process appended, or a crash left a partial record.
            let (h, torn) = read_head(&self.dir)?;
            head = h;
            if let Some(at) = torn {
                recovery = Some(self.quarantine(&head, at)?);
            }
        }
        // A recovery record is chained before this batch, in the same fsync, by the process
        // that found the torn tail.
        let actor = batch.first().map_or("govshare", |q| q.actor.as_str());
        let recovery = recovery
            .map(|body| Queued::encode("recovery", actor, &body))
            .transpose()?;
        let lines: Vec<&Queued> = recovery.iter().chain(batch).collect();
        let skipped = lines.len() as u64 - (last_ticket + 1 - first_ticket);
        let first_seq = head.seq + 1 + skipped;
        // One time for the batch: its records become durable together.
        let time = serde_json::to_string(&now()).map_err(|e| Error::Serde {
            what: "audit record".into(),
            message: e.to_string(),
        })?;
        let mut out: Vec<u8> = Vec::with_capacity(batch.len() * 512);
        let mut file_changes: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        let mut json = String::new();
        for q in &lines {
            use std::fmt::Write as _;
            let seq = head.seq + 1;
            if seq - head.segment_first >= self.segment_records {
                file_changes.push((head.segment.clone(), std::mem::take(&mut out)));
                head.segment_first = seq;
                head.segment = self.dir.join(segment_name(seq));
                head.len = 0;
            }
            // The fields of `Record` in its order, as serde_json writes them.
            json.clear();
            let _ = write!(
                json,
                "{{\"seq\":{seq},\"time\":{time},\"prev\":\"{}\"{}",
                head.hash, q.tail
            );
            let hash = chain_hash(&head.hash, json.as_bytes());
            out.extend_from_slice(hash.as_bytes());
            out.push(b' ');
            out.extend_from_slice(json.as_bytes());
            out.push(b'\n');
            head.seq = seq;
            head.hash = hash;
        }
        let _ = last_ticket;
        file_changes.push((head.segment.clone(), out));
        let mut created = false;
        for (path, bytes) in file_changes {
            if bytes.is_empty() {
                continue;
            }
            // Under the OS lock: nobody else creates segments meanwhile.
            created |= !path.exists();
            let mut f = crate::durable::private_file()
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
        if created {
            // A new segment's directory entry must survive too; appends to an existing file
            // are made durable by its own fdatasync (data and size).
            crate::durable::sync_dir(&head.segment)?;
        }
        self.lock_state()?.head = head;
        Ok(first_seq)
    }

    /// Move the partial record at byte `at` of the head segment to a quarantine file and cut
    /// it from the segment (under the OS lock); the body of the `recovery` record that says so.
    fn quarantine(&self, head: &Head, at: u64) -> Result<serde_json::Value> {
        let q = self.dir.join(format!(
            "torn-{}-{}.bin",
            head.segment_first,
            Utc::now().format("%Y%m%dT%H%M%S%.f")
        ));
        let data = std::fs::read(&head.segment).at(&head.segment)?;
        crate::durable::create_private(&q)?
            .write_all(&data[at as usize..])
            .at(&q)?;
        let f = crate::durable::private_file()
            .write(true)
            .open(&head.segment)
            .at(&head.segment)?;
        f.set_len(at).at(&head.segment)?;
        f.sync_all().at(&head.segment)?;
        Ok(serde_json::json!({
            "torn_tail_offset": at,
            "torn_tail_bytes": data.len() as u64 - at,
            "quarantined_to": q.file_name().map(|n| n.to_string_lossy().into_owned()),
            "note": "an interrupted write left a partial record; it was moved aside, not dropped",
        }))
    }

    /// Repair the trail explicitly, as `actor`: a `repair` record whose append moves a torn
    /// tail, if there is one, aside (with its `recovery` record). Returns whether there was
    /// one.
    pub fn repair(&self, actor: &str) -> Result<bool> {
        let torn = {
            let _lock = self.os_lock()?;
            read_head(&self.dir)?.1.is_some()
        };
        self.append("repair", actor, serde_json::json!({ "torn_tail": torn }))?;
        Ok(torn)
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
        // This log's own queued records belong to what it reads.
        self.flush()?;
        let mut out = Vec::new();
        let segs = segments(&self.dir)?;
        for (i, (_, p)) in segs.iter().enumerate() {
            let mut data = read_segment(p)?;
            if i + 1 == segs.len() {
                // A torn tail (a partial last line) is not a record; the next append repairs it.
                let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
                data.truncate(complete);
            }
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
