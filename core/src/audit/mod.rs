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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use chrono::{DateTime, Utc};
use futures::task::AtomicWaker;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

pub use archive::Retention;
use segment::{Head, chain_hash, parse_line, read_head, read_segment, segment_name, segments};
pub use verify::{Verdict, verify, verify_with_progress};

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

/// The hash function of a trail's chain, chosen when the store is made and kept beside the
/// segments in `HASH`: blake3 (the default; no file), or SM3 (GM/T 0004-2012) for stores that
/// must use national cryptography. Both give 32 bytes, written as 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainHash {
    /// blake3.
    #[default]
    Blake3,
    /// SM3, the national standard hash (GM/T 0004-2012).
    Sm3,
}

impl ChainHash {
    /// The name written in `HASH` and in records.
    pub fn name(self) -> &'static str {
        match self {
            ChainHash::Blake3 => "blake3",
            ChainHash::Sm3 => "sm3",
        }
    }

    /// The chain hash of the trail in `dir`: its `HASH` file, or blake3 when there is none
    /// (every trail made before the choice existed). An unknown name is a damaged trail.
    pub fn of_dir(dir: &Path) -> Result<ChainHash> {
        let p = dir.join("HASH");
        match std::fs::read_to_string(&p) {
            Ok(text) => match text.trim() {
                "blake3" => Ok(ChainHash::Blake3),
                "sm3" => Ok(ChainHash::Sm3),
                other => Err(Error::Corrupt(format!(
                    "{}: unknown chain hash '{other}'",
                    p.display()
                ))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ChainHash::Blake3),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    /// Choose the chain hash of a new trail in `dir` (before its first record). Refused when
    /// the trail already has records or another hash.
    pub(crate) fn choose(self, dir: &Path) -> Result<()> {
        crate::durable::create_private_dir(dir)?;
        let current = ChainHash::of_dir(dir)?;
        let has_records = !segment::segments(dir)?.is_empty();
        if has_records && current != self {
            return Err(Error::invalid(format!(
                "the trail already chains with {}; its hash cannot change",
                current.name()
            )));
        }
        if self != ChainHash::Blake3 || dir.join("HASH").exists() {
            crate::durable::write_durable(&dir.join("HASH"), self.name().as_bytes())?;
        }
        Ok(())
    }

    /// The 32-byte digest of `prev ‖ json`.
    pub fn digest(self, prev: &[u8], json: &[u8]) -> [u8; 32] {
        match self {
            ChainHash::Blake3 => *blake3::Hasher::new()
                .update(prev)
                .update(json)
                .finalize()
                .as_bytes(),
            ChainHash::Sm3 => {
                use sm3::Digest;
                let mut h = sm3::Sm3::new();
                h.update(prev);
                h.update(json);
                h.finalize().into()
            }
        }
    }

    /// The SM3 digest (hex) a national-cryptography store gives a deliverable or a recorded
    /// digest beside its blake3 (export, release and backup manifests and files; with
    /// [`TwinHasher`], load inputs and query results); `None` in a blake3 store, whose
    /// digests are blake3 only.
    pub fn twin(self, bytes: &[u8]) -> Option<String> {
        (self == ChainHash::Sm3).then(|| {
            use sm3::Digest;
            to_hex(&sm3::Sm3::digest(bytes))
        })
    }

    /// [`ChainHash::twin`] of everything `read` yields (a file, read once).
    pub fn twin_of(self, mut read: impl std::io::Read) -> std::io::Result<Option<String>> {
        if self != ChainHash::Sm3 {
            return Ok(None);
        }
        use sm3::Digest;
        let mut h = sm3::Sm3::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match read.read(&mut buf)? {
                0 => break,
                n => h.update(&buf[..n]),
            }
        }
        Ok(Some(to_hex(&h.finalize())))
    }

    /// [`ChainHash::digest`] as 64 lower-case hex digits, on the stack.
    pub fn hex(self, prev: &[u8], json: &[u8]) -> [u8; 64] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let d = self.digest(prev, json);
        let mut out = [0u8; 64];
        for (i, b) in d.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
        }
        out
    }
}

/// blake3 and, in a store chaining with SM3, SM3 of the same bytes, fed once: the digests of
/// a load's input (its handover record) and of a query's result (its completion record).
pub struct TwinHasher {
    blake3: blake3::Hasher,
    sm3: Option<sm3::Sm3>,
}

impl TwinHasher {
    /// A hasher for a store chaining with `hash`.
    pub fn new(hash: ChainHash) -> TwinHasher {
        use sm3::Digest;
        TwinHasher {
            blake3: blake3::Hasher::new(),
            sm3: (hash == ChainHash::Sm3).then(sm3::Sm3::new),
        }
    }

    /// Feed `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        use sm3::Digest;
        self.blake3.update(bytes);
        if let Some(h) = &mut self.sm3 {
            h.update(bytes);
        }
    }

    /// The blake3 (hex) of everything fed, and its SM3 in a national-cryptography store.
    pub fn finalize(&self) -> (String, Option<String>) {
        use sm3::Digest;
        (
            self.blake3.finalize().to_hex().to_string(),
            self.sm3.clone().map(|h| to_hex(&h.finalize())),
        )
    }
}

impl std::io::Write for TwinHasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lower-case hex of `bytes`.
fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

/// Where an appender waits for its record: the committer stores the record's sequence number
/// and wakes the appender, which returns without taking the lock again — with hundreds of
/// appenders, waking them through a condition variable (each re-taking the lock in turn)
/// costs more CPU than the commit itself.
struct Slot {
    /// 0 until committed; then the record's sequence number; [`FAILED`] if the commit failed.
    seq: AtomicU64,
    /// Set by a committer that leaves records queued behind it: this appender commits next
    /// (a task appender by starting a background committer).
    lead: AtomicBool,
    /// Set (under the state lock) when a task appender's future is dropped before its record
    /// is committed: nobody will act on a lead handed to it, so none is.
    abandoned: AtomicBool,
    waiter: Waiter,
}

/// Who waits on a [`Slot`].
enum Waiter {
    /// A thread in [`AuditLog::append`], parked.
    Thread(std::thread::Thread),
    /// A task awaiting [`AuditLog::append_async`]: woken through its waker, so thousands of
    /// waiting appenders cost no OS thread each and no context switch per record.
    Task(AtomicWaker),
}

impl Slot {
    fn new(waiter: Waiter) -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            lead: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            waiter,
        }
    }

    fn wake(&self) {
        match &self.waiter {
            Waiter::Thread(t) => t.unpark(),
            Waiter::Task(w) => w.wake(),
        }
    }

    fn is_task(&self) -> bool {
        matches!(self.waiter, Waiter::Task(_))
    }
}

/// A task appender's wait, as long as it lasts: dropped before its record is committed (the
/// future was cancelled), it makes sure the queue does not stall on it.
struct TaskWait<'a> {
    log: &'a Arc<AuditLog>,
    slot: Arc<Slot>,
}

impl Drop for TaskWait<'_> {
    fn drop(&mut self) {
        if self.slot.seq.load(Ordering::Acquire) != 0 {
            return;
        }
        let Ok(mut st) = self.log.lock_state() else {
            return;
        };
        self.slot.abandoned.store(true, Ordering::Release);
        // A lead handed to this appender (or about to be, had it not been abandoned) is
        // taken here: with nobody committing, start a committer for whoever still waits.
        let waiting = st.pending.iter().any(|(_, s)| {
            s.as_ref()
                .is_some_and(|s| !s.abandoned.load(Ordering::Acquire))
        });
        if !st.committing && waiting {
            st.committing = true;
            drop(st);
            let _ = self.log.start_committer();
        }
    }
}

/// The error every append and flush returns once a commit has failed.
fn unavailable(st: &State) -> Error {
    Error::Corrupt(format!(
        "audit trail unavailable: {}",
        st.failed.as_deref().unwrap_or("a commit failed")
    ))
}

/// A [`Slot`]'s sequence number when its commit failed.
const FAILED: u64 = u64::MAX;

struct State {
    head: Head,
    /// Records queued for the next commit, each with its waiting appender (none for
    /// [`AuditLog::append_nowait`]).
    pending: Vec<(Queued, Option<Arc<Slot>>)>,
    /// Tickets count this process's appends, so [`AuditLog::flush`] knows what to wait for.
    pending_last: u64,
    durable: u64,
    committing: bool,
    failed: Option<String>,
}

impl State {
    /// Latch the trail closed: every appender waiting — in the failed `batch`, or queued —
    /// fails with `reason`, and so does every later append.
    fn latch(&mut self, reason: String, batch: &[(Queued, Option<Arc<Slot>>)]) {
        self.failed = Some(reason);
        for (_, slot) in batch.iter().chain(self.pending.iter()) {
            if let Some(slot) = slot {
                slot.seq.store(FAILED, Ordering::Release);
                slot.wake();
            }
        }
    }

    /// After a commit (`committing` cleared): the first appender still waiting for a queued
    /// record is handed the lead and commits next — unless a `background` committer is
    /// finishing and that appender is a task: then the committer keeps the lead (`committing`
    /// set again) and commits once more. An abandoned task is passed over: nobody would act
    /// on its lead.
    fn hand_off(&mut self, background: bool) {
        let Some(next) = self
            .pending
            .iter()
            .filter_map(|(_, s)| s.as_ref())
            .find(|s| !s.abandoned.load(Ordering::Acquire))
        else {
            return;
        };
        if background && next.is_task() {
            self.committing = true;
        } else {
            next.lead.store(true, Ordering::Release);
            next.wake();
        }
    }
}

/// An open audit trail. Share one per process (`Arc`).
pub struct AuditLog {
    dir: PathBuf,
    /// The chain's hash function (the directory's `HASH`).
    chain: ChainHash,
    segment_records: u64,
    state: Mutex<State>,
    /// Where [`AuditLog::flush`] waits (appenders wait on their own [`Slot`]).
    flushed: Condvar,
    /// Appenders waiting now (threads in [`AuditLog::append`], tasks in
    /// [`AuditLog::append_async`]): a committer with company waits briefly for them to queue,
    /// so one fsync carries all their records.
    appenders: AtomicUsize,
}

/// How long a committer waits for the other appenders to queue their records (PostgreSQL's
/// `commit_delay` idea): well under one fsync on the disks this runs on.
const GATHER: std::time::Duration = std::time::Duration::from_micros(150);

/// Counts a thread in [`AuditLog::append`] for as long as it is there.
struct Appending<'a>(&'a AtomicUsize);

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
    /// The hash this trail chains with (and the store's digests follow, see
    /// [`ChainHash::twin`]).
    pub fn chain_hash(&self) -> ChainHash {
        self.chain
    }

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
            chain: ChainHash::of_dir(&dir)?,
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
            flushed: Condvar::new(),
            appenders: AtomicUsize::new(0),
        };
        let lock = log.os_lock()?;
        let (head, _torn) = read_head(&dir)?;
        {
            let mut st = log.lock_state()?;
            st.durable = head.seq;
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
        self.appenders.fetch_add(1, Ordering::Relaxed);
        let _appending = Appending(&self.appenders);
        let slot = Arc::new(Slot::new(Waiter::Thread(std::thread::current())));
        let mut st = self.enqueue(kind, actor, body, Some(slot.clone()))?;
        loop {
            match slot.seq.load(Ordering::Acquire) {
                0 => {}
                FAILED => return Err(unavailable(&st)),
                seq => return Ok(seq),
            }
            if !st.committing {
                st = self.commit_pending(st, false)?;
                continue;
            }
            drop(st);
            // Parked until the record is committed, or this appender is asked to commit the
            // next batch (a wake-up for anything else parks again).
            loop {
                std::thread::park();
                if slot.seq.load(Ordering::Acquire) != 0 || slot.lead.swap(false, Ordering::AcqRel)
                {
                    break;
                }
            }
            st = self.lock_state()?;
        }
    }

    /// [`AuditLog::append`] for async callers: the record is durable (fsynced) when the future
    /// resolves, but the wait holds no thread. The first task that finds nobody committing
    /// starts a committer on a blocking thread (the current tokio runtime's blocking pool, or
    /// a thread of its own outside one), which keeps committing while task appenders queue
    /// records and hands the lead to a thread appender when one is next — so thousands of
    /// concurrent appends cost one fsync per batch and a waker each, not an OS thread and two
    /// context switches each. Fails like [`AuditLog::append`]. A future dropped before it
    /// resolves does not withdraw its record: it is written with the next commit.
    pub async fn append_async(
        self: &Arc<Self>,
        kind: &str,
        actor: &str,
        body: serde_json::Value,
    ) -> Result<u64> {
        self.appenders.fetch_add(1, Ordering::Relaxed);
        let _appending = Appending(&self.appenders);
        let slot = Arc::new(Slot::new(Waiter::Task(AtomicWaker::new())));
        let start = {
            let mut st = self.enqueue(kind, actor, body, Some(slot.clone()))?;
            let start = !st.committing;
            st.committing |= start;
            start
        };
        let waiting = TaskWait {
            log: self,
            slot: slot.clone(),
        };
        if start {
            self.start_committer()?;
        }
        let seq = std::future::poll_fn(|cx| {
            let Waiter::Task(waker) = &slot.waiter else {
                unreachable!("a task appender's slot")
            };
            // Registered before the checks: a commit that ends after them wakes this task.
            waker.register(cx.waker());
            match slot.seq.load(Ordering::Acquire) {
                0 => {}
                FAILED => {
                    return std::task::Poll::Ready(Err(match self.lock_state() {
                        Ok(st) => unavailable(&st),
                        Err(e) => e,
                    }));
                }
                seq => return std::task::Poll::Ready(Ok(seq)),
            }
            if slot.lead.swap(false, Ordering::AcqRel) {
                // Handed the lead by a thread appender's commit: start the next one.
                let start = match self.lock_state() {
                    Ok(mut st) => {
                        let start = !st.committing;
                        st.committing |= start;
                        start
                    }
                    Err(e) => return std::task::Poll::Ready(Err(e)),
                };
                if start && let Err(e) = self.start_committer() {
                    return std::task::Poll::Ready(Err(e));
                }
            }
            std::task::Poll::Pending
        })
        .await;
        drop(waiting);
        seq
    }

    /// Run [`AuditLog::commit_in_background`] on a blocking thread; the caller has set
    /// `committing`. If no thread can be had, the commit runs nowhere: the trail is latched
    /// closed and the error returned, so no appender waits forever.
    fn start_committer(self: &Arc<Self>) -> Result<()> {
        let log = self.clone();
        let started = match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || log.commit_in_background());
                Ok(())
            }
            Err(_) => std::thread::Builder::new()
                .name("govshare-audit".into())
                .spawn(move || log.commit_in_background())
                .map(drop),
        };
        started.map_err(|e| {
            let error = Error::Io {
                path: self.dir.clone(),
                source: e,
            };
            if let Ok(mut st) = self.lock_state() {
                st.committing = false;
                st.latch(format!("no thread to commit on: {error}"), &[]);
                self.flushed.notify_all();
            }
            error
        })
    }

    /// Commit batch after batch while task appenders are next in line; stop when the queue
    /// is empty or a thread appender has been handed the lead.
    fn commit_in_background(self: Arc<Self>) {
        let Ok(mut st) = self.lock_state() else {
            return;
        };
        loop {
            st = match self.commit_pending(st, true) {
                Ok(st) => st,
                // Only a poisoned lock gets here; a failed write latches the trail and has
                // already woken every waiter with the error.
                Err(_) => return,
            };
            if !st.committing {
                return;
            }
        }
    }

    /// Queue one record and return at once; it is written with the next group commit (the
    /// next [`AuditLog::append`] or [`AuditLog::flush`], or when the log is dropped). For
    /// records that close something already durable — a query's completion — where a crash
    /// before the write only loses detail the trail reads conservatively (a query without its
    /// completion counts for every subject its grant covered).
    pub fn append_nowait(&self, kind: &str, actor: &str, body: serde_json::Value) -> Result<()> {
        self.enqueue(kind, actor, body, None).map(drop)
    }

    /// Wait until every record queued so far is durable (writing them if nobody is).
    pub fn flush(&self) -> Result<()> {
        let mut st = self.lock_state()?;
        let ticket = st.pending_last;
        loop {
            if st.durable >= ticket {
                return Ok(());
            }
            if st.failed.is_some() {
                return Err(unavailable(&st));
            }
            st = if st.committing {
                self.flushed
                    .wait(st)
                    .map_err(|_| Error::internal("audit state poisoned"))?
            } else {
                self.commit_pending(st, false)?
            };
        }
    }

    fn enqueue(
        &self,
        kind: &str,
        actor: &str,
        body: serde_json::Value,
        slot: Option<Arc<Slot>>,
    ) -> Result<std::sync::MutexGuard<'_, State>> {
        // The record is chained when it is written (another process may have appended since),
        // so only its own part is queued here — encoded before the lock is taken, so
        // concurrent appenders encode in parallel.
        let queued = Queued::encode(kind, actor, &body)?;
        let mut st = self.lock_state()?;
        if st.failed.is_some() {
            return Err(unavailable(&st));
        }
        st.pending.push((queued, slot));
        st.pending_last += 1;
        Ok(st)
    }

    /// Commit everything queued (the caller saw nobody committing), then hand each appender
    /// its sequence number and wake it; records queued meanwhile are handed to one of their
    /// appenders to commit next — except that a `background` committer keeps the lead
    /// (`committing` stays set) when a task appender is next, and commits again.
    fn commit_pending<'a>(
        &'a self,
        mut st: std::sync::MutexGuard<'a, State>,
        background: bool,
    ) -> Result<std::sync::MutexGuard<'a, State>> {
        st.committing = true;
        // With other appenders about, give them a moment to queue (yielding the core they
        // need): one fsync then carries them all. Alone, commit at once.
        let started = std::time::Instant::now();
        loop {
            let queued = st.pending.iter().filter(|(_, s)| s.is_some()).count();
            if queued >= self.appenders.load(Ordering::Relaxed) || started.elapsed() >= GATHER {
                break;
            }
            drop(st);
            std::thread::yield_now();
            st = self.lock_state()?;
        }
        let batch = std::mem::take(&mut st.pending);
        let first_ticket = st.durable + 1;
        let last_ticket = st.pending_last;
        drop(st);
        let queued: Vec<&Queued> = batch.iter().map(|(q, _)| q).collect();
        let res = self.commit(&queued, first_ticket, last_ticket);
        let mut st = self.lock_state()?;
        st.committing = false;
        let wake = |slot: &Slot, seq: u64| {
            slot.seq.store(seq, Ordering::Release);
            slot.wake();
        };
        match res {
            Ok(first_seq) => {
                for (i, (_, slot)) in batch.iter().enumerate() {
                    if let Some(slot) = slot {
                        wake(slot, first_seq + i as u64);
                    }
                }
                st.durable = last_ticket;
                st.hand_off(background);
            }
            Err(e) => {
                st.latch(e.to_string(), &batch);
            }
        }
        self.flushed.notify_all();
        Ok(st)
    }

    /// Chain and write a batch of queued bodies, then fsync. Tickets are this process's
    /// numbering; the sequence numbers written follow the chain head on disk. Returns the
    /// sequence number of the batch's first record.
    fn commit(&self, batch: &[&Queued], first_ticket: u64, last_ticket: u64) -> Result<u64> {
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
        // Whoever appended after this head wrote record `head.seq + 1` either into the head
        // segment (its length changed) or as the first record of a new segment named by it —
        // one stat, not a listing of the directory per commit.
        let newer = head.seq > 0 && self.dir.join(segment_name(head.seq + 1)).exists();
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
        let lines: Vec<&Queued> = recovery.iter().chain(batch.iter().copied()).collect();
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
            let hash = chain_hash(self.chain, &head.hash, json.as_bytes());
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
