//! Verify quotas: the per-grant counters that stop a verify grant from becoming an enumeration
//! oracle (an 18-character ID embeds a birth date and a region; unthrottled yes/no answers
//! enumerate people).
//!
//! The counters live in the store directory, one file per grant (`quota/verify-<id>.q`; exports
//! and aggregate queries per day count the same way in `quota/export-<id>.q` and
//! `quota/aggregate-<id>.q`), and are changed only under an OS lock on that file: the limits
//! hold across restarts of the process and across every process that opens the store. A file
//! is a 48-byte header — the current one-second window and its count, the current Beijing day,
//! its count and the length of its log — followed by the day's log of checked subjects, one
//! 8-byte tag per check, appended. The log starts afresh each Beijing day, so it never holds
//! more than the grant's daily limit of tags. Subjects are keyed by a hash keyed with the
//! store's secret, so the file does not show which people were checked (a plain hash of an ID
//! would: the ID space is small enough to hash in full).
//!
//! Each process keeps the day's per-subject counts folded from the log in memory, and under the
//! lock reads only the part of the log other processes appended since: a request of n checks
//! costs a header read, one append of 8·n bytes and a header write, whatever the table size.
//!
//! A request is charged all or nothing, before it is answered: if any limit would be passed,
//! nothing is counted and nothing is answered. The counters are written to the page cache, not
//! synced: they survive a process restart and are shared at once, while a machine crash may
//! forget the last moments' counts (the audit trail still holds every answered check).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Utc};

use crate::access::policy::VerifyTerms;
use crate::error::{Error, IoContext, Result};

const MAGIC: &[u8; 8] = b"GSQUOTA2";
const HEADER: u64 = 48;
/// Bytes per log entry (one subject tag).
const TAG: u64 = 8;

/// The file holding grant `grant`'s verify counters under the store root `root`.
pub fn path(root: &Path, grant: u64) -> PathBuf {
    path_kind(root, "verify", grant)
}

/// The file holding grant `grant`'s counters of one kind of request (`verify`, `export`).
fn path_kind(root: &Path, kind: &str, grant: u64) -> PathBuf {
    root.join("quota").join(format!("{kind}-{grant}.q"))
}

/// A subject's key as the counters know it: a hash keyed with the store's secret.
pub fn subject_tag(secret: &[u8; 32], key: &str) -> u64 {
    let h = blake3::keyed_hash(secret, key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// What the counters of one grant say now (for tests and reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Checks answered in the current second.
    pub this_second: u64,
    /// Checks answered today (Beijing day).
    pub today: u64,
}

struct Header {
    second: i64,
    in_second: u64,
    day: i64,
    in_day: u64,
    /// Tags in the day's log.
    logged: u64,
}

impl Header {
    fn read(f: &File, p: &Path) -> Result<Header> {
        let mut b = [0u8; HEADER as usize];
        f.read_exact_at(&mut b, 0).at(p)?;
        if &b[..8] != MAGIC {
            return Err(Error::Corrupt(format!(
                "{}: not a quota file (bad magic)",
                p.display()
            )));
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let h = Header {
            second: word(8) as i64,
            in_second: word(16),
            day: word(24) as i64,
            in_day: word(32),
            logged: word(40),
        };
        // A log shorter than its header says was damaged: refuse rather than forget counts.
        // (Longer is fine: a writer that stopped between its append and its header write.)
        let len = f.metadata().at(p)?.len();
        if h.logged > h.in_day || len < HEADER + h.logged * TAG {
            return Err(Error::Corrupt(format!(
                "{}: the quota log does not match its header",
                p.display()
            )));
        }
        Ok(h)
    }

    fn write(&self, f: &File, p: &Path) -> Result<()> {
        let mut b = [0u8; HEADER as usize];
        b[..8].copy_from_slice(MAGIC);
        for (i, w) in [
            self.second as u64,
            self.in_second,
            self.day as u64,
            self.in_day,
            self.logged,
        ]
        .into_iter()
        .enumerate()
        {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&w.to_le_bytes());
        }
        f.write_all_at(&b, 0).at(p)
    }
}

/// One counter file as this process knows it: the open file and the day's per-subject counts
/// folded from the first `folded` tags of its log.
struct Counter {
    file: File,
    day: i64,
    folded: u64,
    per_subject: HashMap<u64, u32>,
}

impl Counter {
    /// Bring the folded counts up to the log described by `h` (read under the lock): start
    /// over when the day changed, then fold the tags other processes appended.
    fn catch_up(&mut self, p: &Path, h: &Header) -> Result<()> {
        if self.day != h.day || self.folded > h.logged {
            self.day = h.day;
            self.folded = 0;
            self.per_subject.clear();
        }
        if self.folded < h.logged {
            let mut buf = vec![0u8; ((h.logged - self.folded) * TAG) as usize];
            self.file
                .read_exact_at(&mut buf, HEADER + self.folded * TAG)
                .at(p)?;
            for chunk in buf.chunks_exact(TAG as usize) {
                let mut w = [0u8; 8];
                w.copy_from_slice(chunk);
                *self.per_subject.entry(u64::from_le_bytes(w)).or_default() += 1;
            }
            self.folded = h.logged;
        }
        Ok(())
    }
}

/// Counter files this process has open, by path: a check does not pay for opening the file
/// or re-reading the day's log. Each is behind a mutex because an OS file lock is held per open
/// file, not per thread: the mutex excludes this process's other threads, the OS lock other
/// processes.
type Counters = HashMap<PathBuf, Arc<std::sync::Mutex<Counter>>>;
static OPEN: std::sync::OnceLock<std::sync::Mutex<Counters>> = std::sync::OnceLock::new();

/// A counter under this process's mutex and the OS lock on its file; releases the OS lock
/// when the locked section ends, whichever way (a panic included, or other processes would
/// wait for ever).
struct Locked<'a>(std::sync::MutexGuard<'a, Counter>);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.0.file.unlock();
    }
}

fn open_file(p: &Path) -> Result<File> {
    if let Some(dir) = p.parent() {
        crate::durable::create_private_dir(dir)?;
    }
    crate::durable::private_file()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .at(p)
}

/// This process's counter for the file at `p`: the cached one while the file is still there
/// (a store deleted and made again at the same path gets a fresh file), else a new one.
fn handle(p: &Path) -> Result<Arc<std::sync::Mutex<Counter>>> {
    let poisoned = || Error::internal("quota file cache poisoned");
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| poisoned())?;
    if let Some(h) = open.get(p) {
        let linked = h
            .lock()
            .map_err(|_| poisoned())?
            .file
            .metadata()
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) > 0);
        if linked {
            return Ok(h.clone());
        }
    }
    let h = Arc::new(std::sync::Mutex::new(Counter {
        file: open_file(p)?,
        day: i64::MIN,
        folded: 0,
        per_subject: HashMap::new(),
    }));
    open.insert(p.to_path_buf(), h.clone());
    Ok(h)
}

/// Run `body` on grant `grant`'s counter file of `kind` (created on first use), its header
/// read, under this process's mutex and the OS lock on the file.
fn with_locked<R>(
    root: &Path,
    kind: &str,
    grant: u64,
    body: impl FnOnce(&mut Counter, &Path, Header) -> Result<R>,
) -> Result<R> {
    let p = path_kind(root, kind, grant);
    let h = handle(&p)?;
    let c = h
        .lock()
        .map_err(|_| Error::internal("quota file lock poisoned"))?;
    c.file.lock().at(&p)?;
    let mut locked = Locked(c);
    let c = &mut *locked.0;
    if c.file.metadata().at(&p)?.len() == 0 {
        // First use, under the lock.
        Header {
            second: 0,
            in_second: 0,
            day: 0,
            in_day: 0,
            logged: 0,
        }
        .write(&c.file, &p)?;
    }
    let header = Header::read(&c.file, &p)?;
    body(c, &p, header)
}

/// Charge `subjects` (one tag per check, repeats allowed) to grant `grant` at `now`, or refuse
/// with [`Error::LimitExceeded`] naming the limit — then nothing is counted. The message never
/// names a subject.
pub fn charge(
    root: &Path,
    grant: u64,
    terms: &VerifyTerms,
    now: DateTime<Utc>,
    subjects: &[u64],
) -> Result<()> {
    charge_kind(root, "verify", grant, terms, now, subjects)
}

/// [`charge`] for another kind of request (`export`: one tag per export, per-day limit only),
/// counted in its own file.
pub fn charge_kind(
    root: &Path,
    kind: &str,
    grant: u64,
    terms: &VerifyTerms,
    now: DateTime<Utc>,
    subjects: &[u64],
) -> Result<()> {
    let n = subjects.len() as u64;
    let refuse = |what: &str, limit: u32| {
        Err(Error::LimitExceeded(format!(
            "grant {grant} answers at most {limit} verify checks {what}; this request of {n} check(s) would pass it"
        )))
    };
    with_locked(root, kind, grant, |c, p, mut h| {
        let second = now.timestamp();
        let day = i64::from(crate::calendar::beijing_date(now).num_days_from_ce());
        if h.second != second {
            h.second = second;
            h.in_second = 0;
        }
        let new_day = h.day != day;
        if new_day {
            // A new day: its log starts empty (the old one is cut off below).
            h.day = day;
            h.in_day = 0;
            h.logged = 0;
        }
        if h.in_second + n > u64::from(terms.per_second) {
            return refuse("per second", terms.per_second);
        }
        if h.in_day + n > u64::from(terms.per_day) {
            return refuse("per day", terms.per_day);
        }
        // Per subject: count this request's checks of each subject on top of the day's, and
        // only then append — all or nothing. When the daily limit is no higher than the
        // per-subject one, the per-subject limit can never bind: nothing to track.
        if terms.per_subject_per_day < terms.per_day {
            c.catch_up(p, &h)?;
            let mut mine: HashMap<u64, u32> = HashMap::with_capacity(subjects.len());
            for &tag in subjects {
                let here = mine.entry(tag).or_default();
                *here += 1;
                let before = c.per_subject.get(&tag).copied().unwrap_or(0);
                if before + *here > terms.per_subject_per_day {
                    return refuse("of one subject per day", terms.per_subject_per_day);
                }
            }
            let mut bytes = Vec::with_capacity(subjects.len() * TAG as usize);
            for tag in subjects {
                bytes.extend_from_slice(&tag.to_le_bytes());
            }
            c.file.write_all_at(&bytes, HEADER + h.logged * TAG).at(p)?;
            for (tag, k) in mine {
                *c.per_subject.entry(tag).or_default() += k;
            }
            h.logged += n;
            c.folded = h.logged;
        }
        h.in_second += n;
        h.in_day += n;
        h.write(&c.file, p)?;
        if new_day {
            // Yesterday's log beyond today's start is dropped (after the header no longer
            // counts it, so a crash in between loses nothing that counts).
            c.file.set_len(HEADER + h.logged * TAG).at(p)?;
        }
        Ok(())
    })
}

/// Charge one request of `kind` to grant `grant`'s daily budget of `per_day` (exports,
/// aggregate queries), or refuse with [`Error::LimitExceeded`] saying so (`what`: "exports",
/// "aggregate queries").
pub fn charge_daily(
    root: &Path,
    kind: &str,
    what: &str,
    grant: u64,
    per_day: u32,
    now: DateTime<Utc>,
) -> Result<()> {
    // A daily count only: no per-second window, no subjects (the per-subject limit is set
    // where it can never bind, so no subject table is kept).
    let terms = VerifyTerms {
        per_second: u32::MAX,
        per_day,
        per_subject_per_day: u32::MAX,
        disclose_absence: false,
    };
    charge_kind(root, kind, grant, &terms, now, &[0]).map_err(|e| match e {
        Error::LimitExceeded(_) => Error::LimitExceeded(format!(
            "grant {grant} allows {per_day} {what} a day; none is left today"
        )),
        e => e,
    })
}

/// The counters of grant `grant` as they stand at `now` (zero when it never answered).
pub fn usage(root: &Path, grant: u64, now: DateTime<Utc>) -> Result<Usage> {
    let h = with_locked(root, "verify", grant, |_, _, h| Ok(h))?;
    let day = i64::from(crate::calendar::beijing_date(now).num_days_from_ce());
    Ok(Usage {
        this_second: if h.second == now.timestamp() {
            h.in_second
        } else {
            0
        },
        today: if h.day == day { h.in_day } else { 0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn terms(per_second: u32, per_day: u32, per_subject: u32) -> VerifyTerms {
        VerifyTerms {
            per_second,
            per_day,
            per_subject_per_day: per_subject,
            disclose_absence: false,
        }
    }

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, h, m, s)
            .single()
            .expect("time")
    }

    #[test]
    fn each_limit_refuses_whole_requests_and_counts_nothing_when_it_does() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = terms(5, 8, 2);
        let tags: Vec<u64> = (1..=4).collect();
        charge(dir.path(), 1, &t, at(1, 0, 0), &tags).expect("4 of 5 per second");
        // Two more in the same second pass the per-second limit: refused whole, nothing counted.
        let e = charge(dir.path(), 1, &t, at(1, 0, 0), &[10, 11]).expect_err("per second");
        assert!(
            matches!(e, Error::LimitExceeded(ref m) if m.contains("per second")),
            "{e}"
        );
        assert_eq!(
            usage(dir.path(), 1, at(1, 0, 0))
                .expect("usage")
                .this_second,
            4
        );
        // A new second: per-day is the limit now (4 used of 8).
        charge(dir.path(), 1, &t, at(1, 0, 1), &[10, 11, 12, 13]).expect("8 of 8 today");
        let e = charge(dir.path(), 1, &t, at(1, 0, 2), &[14]).expect_err("per day");
        assert!(
            matches!(e, Error::LimitExceeded(ref m) if m.contains("per day")),
            "{e}"
        );
        // The next Beijing day (16:00 UTC is midnight in Beijing) starts afresh.
        charge(dir.path(), 1, &t, at(16, 0, 0), &[14]).expect("a new day");
        assert_eq!(usage(dir.path(), 1, at(16, 0, 0)).expect("usage").today, 1);
        // Other grants count apart.
        charge(dir.path(), 2, &t, at(1, 0, 2), &[1]).expect("grant 2 is fresh");
    }

    #[test]
    fn one_subject_is_checked_at_most_its_limit_per_day_within_and_across_requests() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = terms(1000, 1000, 3);
        let e = charge(dir.path(), 7, &t, at(2, 0, 0), &[42, 42, 42, 42]).expect_err("4 > 3");
        assert!(
            matches!(e, Error::LimitExceeded(ref m) if m.contains("one subject")),
            "{e}"
        );
        charge(dir.path(), 7, &t, at(2, 0, 0), &[42, 42]).expect("2 of 3");
        charge(dir.path(), 7, &t, at(2, 0, 1), &[42, 43]).expect("3 of 3");
        let e = charge(dir.path(), 7, &t, at(2, 0, 2), &[43, 42]).expect_err("4th of 42");
        assert!(matches!(e, Error::LimitExceeded(_)), "{e}");
        // The refused request counted nothing: 43 still has two left.
        charge(dir.path(), 7, &t, at(2, 0, 3), &[43, 43]).expect("43: 3 of 3");
        // Tomorrow (Beijing), 42 may be checked again.
        charge(dir.path(), 7, &t, at(17, 0, 0), &[42, 42, 42]).expect("a new day");
    }

    #[test]
    fn counters_are_shared_by_concurrent_threads() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = terms(1_000_000, 1_000_000, 1);
        // Eight threads charge the same subjects at once: each subject is answered exactly once
        // (processes: `it::cli::verify_limits_hold_across_concurrent_processes`).
        let won: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (1..=50u64)
                            .filter(|&tag| charge(dir.path(), 3, &t, at(3, 0, 0), &[tag]).is_ok())
                            .count()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("join")).sum()
        });
        assert_eq!(won, 50);
        assert_eq!(usage(dir.path(), 3, at(3, 0, 0)).expect("usage").today, 50);
    }

    #[test]
    fn counts_appended_by_another_opener_are_folded_in_before_deciding() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = terms(10_000, 10_000, 2);
        let many: Vec<u64> = (1..=500).collect();
        charge(dir.path(), 5, &t, at(5, 0, 0), &many).expect("first");
        // Another process's append, as it would leave the file: this process's cached counts
        // are behind the log and must catch up from it.
        let p = path(dir.path(), 5);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .expect("open");
        let mut h = Header::read(&f, &p).expect("header");
        f.write_all_at(&250u64.to_le_bytes(), HEADER + h.logged * TAG)
            .expect("append");
        h.logged += 1;
        h.in_day += 1;
        h.write(&f, &p).expect("header");
        // 250 has been checked twice now: a third check is refused, alone or in a batch.
        let e = charge(dir.path(), 5, &t, at(5, 0, 1), &[250]).expect_err("third, alone");
        assert!(
            matches!(e, Error::LimitExceeded(ref m) if m.contains("one subject")),
            "{e}"
        );
        let e = charge(dir.path(), 5, &t, at(5, 0, 2), &many).expect_err("in a batch");
        assert!(matches!(e, Error::LimitExceeded(_)), "{e}");
        // Subjects checked once have one left; those never seen two.
        charge(dir.path(), 5, &t, at(5, 0, 3), &[1]).expect("second of 1");
        charge(dir.path(), 5, &t, at(5, 0, 4), &[1000, 1000]).expect("new");
        assert_eq!(usage(dir.path(), 5, at(5, 0, 4)).expect("usage").today, 504);
        // The next day the log starts over and is cut back.
        charge(dir.path(), 5, &t, at(17, 0, 0), &[250, 250]).expect("a new day");
        assert_eq!(std::fs::metadata(&p).expect("meta").len(), HEADER + 2 * TAG);
    }

    #[test]
    fn a_damaged_counter_file_refuses_instead_of_starting_over() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = terms(10, 10, 2);
        charge(dir.path(), 4, &t, at(4, 0, 0), &[1, 2]).expect("first");
        let p = path(dir.path(), 4);
        let len = std::fs::metadata(&p).expect("meta").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("open")
            .set_len(len - 1)
            .expect("truncate");
        let e = charge(dir.path(), 4, &t, at(4, 0, 1), &[1]).expect_err("corrupt");
        assert!(matches!(e, Error::Corrupt(_)), "{e}");
    }

    #[test]
    fn subject_tags_depend_on_the_store_secret() {
        let a = subject_tag(&[1; 32], "110101199003071234");
        assert_ne!(a, subject_tag(&[2; 32], "110101199003071234"));
        assert_ne!(a, subject_tag(&[1; 32], "110101199003071235"));
        assert_ne!(a, 0);
    }
}
