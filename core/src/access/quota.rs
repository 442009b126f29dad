//! Verify quotas: the per-grant counters that stop a verify grant from becoming an enumeration
//! oracle (an 18-character ID embeds a birth date and a region; unthrottled yes/no answers
//! enumerate people).
//!
//! The counters live in the store directory, one file per grant (`quota/verify-<id>.q`; exports
//! per day count the same way in `quota/export-<id>.q`), and are
//! changed only under an OS lock on that file: the limits hold across restarts of the process
//! and across every process that opens the store. A file is a 48-byte header — the current
//! one-second window and its count, the current Beijing day and its count — followed by an
//! open-addressed table of per-subject counters for the day. Subjects are keyed by a hash keyed
//! with the store's secret, so the file does not show which people were checked (a plain hash
//! of an ID would: the ID space is small enough to hash in full).
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

const MAGIC: &[u8; 8] = b"GSQUOTA1";
const HEADER: u64 = 48;
const SLOT: u64 = 16;
/// Probes before a subject gives up on finding its slot: a table that full refuses (fail
/// closed) rather than forgetting counts.
const MAX_PROBES: u64 = 256;
const MIN_SLOTS: u64 = 1 << 10;
const MAX_SLOTS: u64 = 1 << 22;

/// The file holding grant `grant`'s verify counters under the store root `root`.
pub fn path(root: &Path, grant: u64) -> PathBuf {
    path_kind(root, "verify", grant)
}

/// The file holding grant `grant`'s counters of one kind of request (`verify`, `export`).
fn path_kind(root: &Path, kind: &str, grant: u64) -> PathBuf {
    root.join("quota").join(format!("{kind}-{grant}.q"))
}

/// A subject's key as the counters know it: a hash keyed with the store's secret, never 0
/// (0 marks a free slot).
pub fn subject_tag(secret: &[u8; 32], key: &str) -> u64 {
    let h = blake3::keyed_hash(secret, key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b).max(1)
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
    slots: u64,
    second: i64,
    in_second: u64,
    day: i64,
    in_day: u64,
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
            slots: word(8),
            second: word(16) as i64,
            in_second: word(24),
            day: word(32) as i64,
            in_day: word(40),
        };
        let len = f.metadata().at(p)?.len();
        if !h.slots.is_power_of_two() || len != HEADER + h.slots * SLOT {
            return Err(Error::Corrupt(format!(
                "{}: quota table size does not match its header",
                p.display()
            )));
        }
        Ok(h)
    }

    fn write(&self, f: &File, p: &Path) -> Result<()> {
        let mut b = [0u8; HEADER as usize];
        b[..8].copy_from_slice(MAGIC);
        for (i, w) in [
            self.slots,
            self.second as u64,
            self.in_second,
            self.day as u64,
            self.in_day,
        ]
        .into_iter()
        .enumerate()
        {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&w.to_le_bytes());
        }
        f.write_all_at(&b, 0).at(p)
    }
}

/// The per-subject table of a counter file: read slot by slot, or — for a request that checks
/// many subjects — read whole once, so a batch costs two large I/Os instead of two per subject.
enum Table {
    OnDisk,
    Loaded(Vec<u8>),
}

impl Table {
    /// Requests of at least this many checks read the table whole when that is cheaper than
    /// a read and a write per subject (about 2 KiB of table per subject).
    fn open(f: &File, p: &Path, h: &Header, checks: usize) -> Result<Table> {
        let bytes = h.slots * SLOT;
        if checks < 64 || bytes > checks as u64 * 2048 {
            return Ok(Table::OnDisk);
        }
        let mut buf = vec![0u8; bytes as usize];
        f.read_exact_at(&mut buf, HEADER).at(p)?;
        Ok(Table::Loaded(buf))
    }

    /// (owner tag, day, count) of one slot.
    fn slot(&self, f: &File, p: &Path, slot: u64) -> Result<(u64, i64, u32)> {
        let mut b = [0u8; SLOT as usize];
        match self {
            Table::OnDisk => f.read_exact_at(&mut b, HEADER + slot * SLOT).at(p)?,
            Table::Loaded(buf) => {
                let at = (slot * SLOT) as usize;
                b.copy_from_slice(&buf[at..at + SLOT as usize]);
            }
        }
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        let mut d = [0u8; 4];
        d.copy_from_slice(&b[8..12]);
        let mut c = [0u8; 4];
        c.copy_from_slice(&b[12..16]);
        Ok((
            u64::from_le_bytes(w),
            i64::from(i32::from_le_bytes(d)),
            u32::from_le_bytes(c),
        ))
    }

    /// Write the new counts: slot by slot, or the whole table in one write.
    fn write(
        self,
        f: &File,
        p: &Path,
        day: i64,
        counted: &std::collections::HashMap<u64, (u64, u32)>,
    ) -> Result<()> {
        let encode = |tag: u64, count: u32| {
            let mut b = [0u8; SLOT as usize];
            b[..8].copy_from_slice(&tag.to_le_bytes());
            b[8..12].copy_from_slice(&(day as i32).to_le_bytes());
            b[12..16].copy_from_slice(&count.to_le_bytes());
            b
        };
        match self {
            Table::OnDisk => {
                for (tag, (slot, count)) in counted {
                    f.write_all_at(&encode(*tag, *count), HEADER + slot * SLOT)
                        .at(p)?;
                }
            }
            Table::Loaded(mut buf) => {
                for (tag, (slot, count)) in counted {
                    let at = (slot * SLOT) as usize;
                    buf[at..at + SLOT as usize].copy_from_slice(&encode(*tag, *count));
                }
                f.write_all_at(&buf, HEADER).at(p)?;
            }
        }
        Ok(())
    }
}

/// Counter files this process has open, by path: a check does not pay for opening, sizing
/// and closing its file. Each is behind a mutex because an OS file lock is held per open file,
/// not per thread: the mutex excludes this process's other threads, the OS lock other
/// processes.
static OPEN: std::sync::OnceLock<std::sync::Mutex<HashMap<PathBuf, Arc<std::sync::Mutex<File>>>>> =
    std::sync::OnceLock::new();

/// Releases the OS lock when a locked section ends, whichever way.
struct Unlock<'a>(&'a File);

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
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

/// This process's handle on the counter file at `p`: the cached one while the file is still
/// there (a store deleted and made again at the same path gets a fresh file), else a new one.
fn handle(p: &Path) -> Result<Arc<std::sync::Mutex<File>>> {
    let poisoned = || Error::internal("quota file cache poisoned");
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| poisoned())?;
    if let Some(h) = open.get(p) {
        let linked = h
            .lock()
            .map_err(|_| poisoned())?
            .metadata()
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) > 0);
        if linked {
            return Ok(h.clone());
        }
    }
    let h = Arc::new(std::sync::Mutex::new(open_file(p)?));
    open.insert(p.to_path_buf(), h.clone());
    Ok(h)
}

/// Run `body` on grant `grant`'s counter file of `kind` (created and sized on first use), its
/// header read, under this process's mutex and the OS lock on the file.
fn with_locked<R>(
    root: &Path,
    kind: &str,
    grant: u64,
    terms: &VerifyTerms,
    body: impl FnOnce(&File, &Path, Header) -> Result<R>,
) -> Result<R> {
    let p = path_kind(root, kind, grant);
    let h = handle(&p)?;
    let f = h
        .lock()
        .map_err(|_| Error::internal("quota file lock poisoned"))?;
    f.lock().at(&p)?;
    let _unlock = Unlock(&f);
    if f.metadata().at(&p)?.len() == 0 {
        // First use, under the lock: whoever creates the file sizes the table for the grant's
        // daily limit (every subject of a day fits at half load).
        let slots = (u64::from(terms.per_day) * 2)
            .next_power_of_two()
            .clamp(MIN_SLOTS, MAX_SLOTS);
        f.set_len(HEADER + slots * SLOT).at(&p)?;
        Header {
            slots,
            second: 0,
            in_second: 0,
            day: 0,
            in_day: 0,
        }
        .write(&f, &p)?;
    }
    let header = Header::read(&f, &p)?;
    body(&f, &p, header)
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
    with_locked(root, kind, grant, terms, |f, p, mut h| {
        let second = now.timestamp();
        let day = i64::from(crate::calendar::beijing_date(now).num_days_from_ce());
        if h.second != second {
            h.second = second;
            h.in_second = 0;
        }
        if h.day != day {
            h.day = day;
            h.in_day = 0;
        }
        if h.in_second + n > u64::from(terms.per_second) {
            return refuse("per second", terms.per_second);
        }
        if h.in_day + n > u64::from(terms.per_day) {
            return refuse("per day", terms.per_day);
        }
        // Per subject: find each subject's slot (its own, or a free or stale one), count this
        // request's checks of it, and only then write — all or nothing. When the daily limit is no
        // higher than the per-subject one, the per-subject limit can never bind: nothing to track.
        if terms.per_subject_per_day < terms.per_day {
            let table = Table::open(f, p, &h, subjects.len())?;
            let mut counted: std::collections::HashMap<u64, (u64, u32)> = Default::default();
            let mask = h.slots - 1;
            let mut taken: std::collections::HashSet<u64> = Default::default();
            for &tag in subjects {
                if let Some(c) = counted.get_mut(&tag) {
                    c.1 += 1;
                    if c.1 > terms.per_subject_per_day {
                        return refuse("of one subject per day", terms.per_subject_per_day);
                    }
                    continue;
                }
                let mut found = None;
                for probe in 0..MAX_PROBES {
                    let slot = (tag.wrapping_add(probe)) & mask;
                    let (owner, slot_day, count) = table.slot(f, p, slot)?;
                    if owner == tag && slot_day == day {
                        found = Some((slot, count));
                        break;
                    }
                    // Free, or another subject's count from an earlier day: reusable — unless an
                    // earlier subject of this request already claimed it.
                    if (owner == 0 || slot_day != day) && !taken.contains(&slot) {
                        found = Some((slot, 0));
                        break;
                    }
                }
                let Some((slot, count)) = found else {
                    return Err(Error::LimitExceeded(format!(
                        "grant {grant}'s per-subject counters are full for today; no more verify checks until tomorrow"
                    )));
                };
                if count + 1 > terms.per_subject_per_day {
                    return refuse("of one subject per day", terms.per_subject_per_day);
                }
                taken.insert(slot);
                counted.insert(tag, (slot, count + 1));
            }
            table.write(f, p, day, &counted)?;
        }
        h.in_second += n;
        h.in_day += n;
        h.write(f, p)
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
pub fn usage(root: &Path, grant: u64, terms: &VerifyTerms, now: DateTime<Utc>) -> Result<Usage> {
    let h = with_locked(root, "verify", grant, terms, |_, _, h| Ok(h))?;
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
            usage(dir.path(), 1, &t, at(1, 0, 0))
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
        assert_eq!(
            usage(dir.path(), 1, &t, at(16, 0, 0)).expect("usage").today,
            1
        );
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
        assert_eq!(
            usage(dir.path(), 3, &t, at(3, 0, 0)).expect("usage").today,
            50
        );
    }

    #[test]
    fn large_requests_read_the_table_whole_and_count_the_same() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = terms(10_000, 10_000, 2);
        let many: Vec<u64> = (1..=500).collect();
        // 500 subjects: the table is read and written whole.
        charge(dir.path(), 5, &t, at(5, 0, 0), &many).expect("first");
        charge(dir.path(), 5, &t, at(5, 0, 1), &many).expect("second");
        // A third check of any of them is refused, whole or one by one.
        let e = charge(dir.path(), 5, &t, at(5, 0, 2), &many).expect_err("third, whole");
        assert!(
            matches!(e, Error::LimitExceeded(ref m) if m.contains("one subject")),
            "{e}"
        );
        let e = charge(dir.path(), 5, &t, at(5, 0, 3), &[250]).expect_err("third, alone");
        assert!(matches!(e, Error::LimitExceeded(_)), "{e}");
        // Subjects never seen are free, slot by slot and whole.
        charge(dir.path(), 5, &t, at(5, 0, 4), &[501]).expect("new, alone");
        let fresh: Vec<u64> = (1000..1100).collect();
        charge(dir.path(), 5, &t, at(5, 0, 5), &fresh).expect("new, whole");
        assert_eq!(
            usage(dir.path(), 5, &t, at(5, 0, 5)).expect("usage").today,
            1101
        );
    }

    #[test]
    fn a_damaged_counter_file_refuses_instead_of_starting_over() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = terms(10, 10, 10);
        charge(dir.path(), 4, &t, at(4, 0, 0), &[1]).expect("first");
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
