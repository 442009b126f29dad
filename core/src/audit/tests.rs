//! Unit tests of the trail: chaining, tamper detection, torn tails, rollover, retention.

use super::archive::write_archive;
use super::segment::archive_name;
use super::*;
use std::fs::OpenOptions;
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
    // Many appenders at once, some not waiting: each waiting append gets the sequence number
    // of its own record, and every record is on the chain.
    let handles: Vec<_> = (0..32)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..25)
                    .filter_map(|i| {
                        let body = serde_json::json!({ "t": t, "i": i });
                        if i % 5 == 4 {
                            log.append_nowait("query_end", "t", body).expect("a");
                            None
                        } else {
                            Some((log.append("query", "t", body.clone()).expect("a"), body))
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let got: Vec<(u64, serde_json::Value)> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("join"))
        .collect();
    log.flush().expect("flush");
    let records = log.records().expect("records");
    assert_eq!(records.len(), 10 + 32 * 25);
    for (seq, body) in &got {
        let r = records.iter().find(|r| r.seq == *seq).expect("record");
        assert_eq!((&r.kind, &r.body), (&"query".to_string(), body));
    }
    let mut seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 32 * 20);
    match verify(dir.path(), None).expect("verify") {
        Verdict::Intact { records, .. } => assert_eq!(records, 10 + 32 * 25),
        v => panic!("{v:?}"),
    }
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

/// A crash mid-write leaves a partial record. Opening and reading leave it alone (and
/// verify reports it); the next append moves it aside and records that before its own record.
#[test]
fn a_torn_tail_is_reported_by_reads_and_repaired_by_the_next_append() {
    let (dir, log) = filled(3);
    drop(log);
    let p = seg(dir.path());
    let mut f = OpenOptions::new().append(true).open(&p).expect("open");
    f.write_all(b"0123abc {\"seq\":4,").expect("write");
    drop(f);
    let torn = std::fs::read(&p).expect("read");
    let log = AuditLog::open(dir.path()).expect("reopen");
    assert_eq!(log.records().expect("records").len(), 3);
    assert!(matches!(
        verify(dir.path(), None).expect("v"),
        Verdict::Broken { .. }
    ));
    log.checkpoint().expect("checkpoint");
    assert_eq!(
        std::fs::read(&p).expect("read"),
        torn,
        "reads changed the trail"
    );
    let seq = log.append("q", "u", serde_json::json!({})).expect("append");
    assert_eq!(seq, 5, "the recovery record is chained first");
    let recs = log.records().expect("records");
    assert_eq!(recs.len(), 5);
    assert_eq!(
        (recs[3].kind.as_str(), recs[3].actor.as_str()),
        ("recovery", "u")
    );
    assert!(matches!(
        verify(dir.path(), None).expect("v"),
        Verdict::Intact { records: 5, .. }
    ));
    assert!(std::fs::read_dir(dir.path()).expect("dir").any(|e| {
        e.expect("e")
            .file_name()
            .to_string_lossy()
            .starts_with("torn-")
    }));
    // Repair as an explicit act: nothing torn now, and the act is on the chain.
    assert!(!log.repair("ops").expect("repair"));
    assert_eq!(log.records().expect("records")[5].kind, "repair");
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

/// Two open logs on one trail (two processes, or an engine and a standalone writer): each
/// append returns the sequence number its record was written under, which is what completion
/// records and who-accessed refer to.
#[test]
fn append_returns_the_chain_sequence_number_with_two_open_logs() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = AuditLog::open(dir.path()).expect("a");
    let b = AuditLog::open(dir.path()).expect("b");
    let mut got = Vec::new();
    for i in 0..6 {
        let log = if i % 3 == 0 { &a } else { &b };
        got.push(
            log.append("query", "u", serde_json::json!({ "i": i }))
                .expect("append"),
        );
    }
    assert_eq!(got, vec![1, 2, 3, 4, 5, 6]);
    let recs = a.records().expect("records");
    for (seq, r) in got.iter().zip(&recs) {
        assert_eq!(*seq, r.seq);
    }
}

/// A record queued without waiting is written by the next group commit, before the record
/// that commit was for, or by `flush`, reads, or dropping the log — never lost while the
/// process lives, and it takes no sequence number from a waiting appender.
#[test]
fn records_queued_without_waiting_ride_along_with_the_next_commit() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = AuditLog::open(dir.path()).expect("open");
    let first = log
        .append("query", "u", serde_json::json!({"n": 1}))
        .expect("a");
    log.append_nowait("query_end", "u", serde_json::json!({"query": first}))
        .expect("queued");
    // Not on disk yet: a second log over the same directory does not see it.
    let other = AuditLog::open(dir.path()).expect("open");
    assert_eq!(other.checkpoint().expect("cp").seq, first);
    // The next waiting append writes both, in order, and gets its own number.
    let third = log
        .append("query", "u", serde_json::json!({"n": 2}))
        .expect("b");
    assert_eq!(third, first + 2);
    let kinds: Vec<String> = log
        .records()
        .expect("r")
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(kinds[kinds.len() - 3..], ["query", "query_end", "query"]);
    // Dropping the log writes what is still queued.
    log.append_nowait("query_end", "u", serde_json::json!({"query": third}))
        .expect("queued");
    drop(log);
    assert_eq!(other.checkpoint().expect("cp").seq, third + 1);
    assert!(matches!(
        verify(dir.path(), None).expect("verify"),
        Verdict::Intact { .. }
    ));
}

/// SM3 known answers from GM/T 0004-2012, appendix A (the two examples), through the chain's
/// own hash (the chain hashes `prev ‖ json`; with an empty `prev` that is the message).
#[test]
fn sm3_gives_the_standard_s_known_answers() {
    let hex = |h: [u8; 64]| String::from_utf8(h.to_vec()).expect("hex");
    assert_eq!(
        hex(ChainHash::Sm3.hex(b"", b"abc")),
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    );
    assert_eq!(
        hex(ChainHash::Sm3.hex(
            b"abcdabcdabcdabcdabcdabcdabcdabcd",
            b"abcdabcdabcdabcdabcdabcdabcdabcd"
        )),
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    );
    // And blake3's own first test vector (the empty input), so both paths are pinned.
    assert_eq!(
        hex(ChainHash::Blake3.hex(b"", b"")),
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    );
}

/// A trail made with SM3 chains every record with SM3, verifies, and catches an edit; a trail
/// whose `HASH` names another function than the one it was made with fails verification
/// (closed), and its hash cannot be changed once it has records.
#[test]
fn an_sm3_trail_chains_with_sm3_and_cannot_switch() {
    let dir = tempfile::tempdir().expect("tmp");
    ChainHash::Sm3.choose(dir.path()).expect("choose");
    let log = AuditLog::open(dir.path()).expect("open");
    for i in 0..5 {
        log.append("t", "a", serde_json::json!({ "i": i }))
            .expect("append");
    }
    drop(log);
    let text = std::fs::read_to_string(seg(dir.path())).expect("segment");
    let mut prev = "0".repeat(64);
    for line in text.lines() {
        let (hash, json) = line.split_once(' ').expect("line");
        let want = ChainHash::Sm3.hex(prev.as_bytes(), json.as_bytes());
        assert_eq!(hash.as_bytes(), &want[..]);
        assert_ne!(
            hash.as_bytes(),
            &ChainHash::Blake3.hex(prev.as_bytes(), json.as_bytes())[..]
        );
        prev = hash.to_string();
    }
    assert!(matches!(
        verify(dir.path(), None).expect("verify"),
        Verdict::Intact { records: 5, .. }
    ));
    let e = ChainHash::Blake3
        .choose(dir.path())
        .expect_err("records exist");
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    // Someone rewrites HASH: the chain no longer verifies.
    std::fs::write(dir.path().join("HASH"), "blake3").expect("write");
    assert!(matches!(
        verify(dir.path(), None).expect("verify"),
        Verdict::Broken { seq: 1, .. }
    ));
    std::fs::write(dir.path().join("HASH"), "sm3").expect("write");
    // An edited record is caught under SM3 as under blake3.
    let edited = text.replacen("\"i\":3", "\"i\":7", 1);
    std::fs::write(seg(dir.path()), edited).expect("write");
    assert!(matches!(
        verify(dir.path(), None).expect("verify"),
        Verdict::Broken { seq: 4, .. }
    ));
}

/// A segment large enough to be checked in several runs at once (one per thread): a problem
/// in any run is found at its own record and line, and an intact one verifies whole.
#[test]
fn a_large_segment_checked_in_parallel_runs_reports_the_first_problem_at_its_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = AuditLog::open(dir.path()).expect("open");
    let n = 4_000u64;
    for i in 0..n {
        let pad = "x".repeat(200);
        log.append_nowait("query", "u1", serde_json::json!({ "i": i, "pad": pad }))
            .expect("append");
    }
    log.flush().expect("flush");
    drop(log);
    let path = seg(dir.path());
    let original = std::fs::read(&path).expect("read");
    assert!(original.len() > 1 << 19, "large enough to be cut into runs");
    assert!(matches!(
        verify(dir.path(), None).expect("v"),
        Verdict::Intact { records, .. } if records == n
    ));
    let line_start = |seq: u64| -> usize {
        if seq == 1 {
            return 0;
        }
        original
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(seq as usize - 2)
            .map(|(i, _)| i + 1)
            .expect("line")
    };
    // Records early, in the middle (where a run may start) and late: each flip is reported at
    // its own record and line, whichever run holds it.
    for seq in [2u64, n / 2, n / 2 + 1, n * 3 / 4, n - 1] {
        let mut bytes = original.clone();
        bytes[line_start(seq) + 80] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        match verify(dir.path(), None).expect("v") {
            Verdict::Broken { seq: at, line, .. } => assert_eq!((at, line), (seq, seq)),
            v => panic!("flip in record {seq} not detected: {v:?}"),
        }
    }
    // A record deleted late in the segment: the next one is found where it belonged.
    let mut bytes = original.clone();
    let (a, b) = (line_start(n - 10), line_start(n - 9));
    bytes.drain(a..b);
    std::fs::write(&path, &bytes).expect("write");
    let (seq, problem) = broken_at(dir.path(), None);
    assert_eq!(seq, n - 10);
    assert!(problem.contains("missing"), "{problem}");
}

/// Runs `f` on a two-worker runtime (the engine's shape) and fails instead of hanging if the
/// appenders stall.
fn on_runtime<T>(f: impl std::future::Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(120), f)
            .await
            .expect("the appenders stalled")
    })
}

/// Thousands of task appenders, thread appenders and records queued without waiting, all at
/// once: every waiting appender gets its own record's sequence number, every record is on the
/// chain exactly once, and the lead passes between threads and the background committer
/// without anyone left waiting.
#[test]
fn task_and_thread_appenders_share_group_commits_and_nobody_is_left_waiting() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = Arc::new(AuditLog::open(dir.path()).expect("open"));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..60)
                    .map(|i| {
                        let body = serde_json::json!({ "thread": t, "i": i });
                        (log.append("query", "t", body.clone()).expect("a"), body)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut got: Vec<(u64, serde_json::Value)> = on_runtime(async {
        let tasks: Vec<_> = (0..2_000)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for i in 0..3 {
                        let body = serde_json::json!({ "task": t, "i": i });
                        if i == 1 {
                            log.append_nowait("query_end", "k", body).expect("q");
                        } else {
                            let seq = log.append_async("query", "k", body.clone()).await;
                            out.push((seq.expect("a"), body));
                        }
                    }
                    out
                })
            })
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            got.extend(t.await.expect("task"));
        }
        got
    });
    for h in threads {
        got.extend(h.join().expect("join"));
    }
    log.flush().expect("flush");
    let records = log.records().expect("records");
    let total = 6 * 60 + 2_000 * 3;
    assert_eq!(records.len(), total);
    let by_seq: std::collections::HashMap<u64, &Record> =
        records.iter().map(|r| (r.seq, r)).collect();
    for (seq, body) in &got {
        let r = by_seq[seq];
        assert_eq!((&r.kind, &r.body), (&"query".to_string(), body));
    }
    let mut seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 6 * 60 + 2_000 * 2);
    match verify(dir.path(), None).expect("verify") {
        Verdict::Intact { records, .. } => assert_eq!(records, total as u64),
        v => panic!("{v:?}"),
    }
}

/// A task appender whose future is dropped before its record is durable (a cancelled
/// request) loses no record — it is written with a later commit — and stalls nobody queued
/// behind it, even when a thread appender's commit would have handed it the lead.
#[test]
fn a_cancelled_task_appender_neither_loses_its_record_nor_stalls_the_queue() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = Arc::new(AuditLog::open(dir.path()).expect("open"));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..150 {
                    log.append("query", "t", serde_json::json!({ "thread": t, "i": i }))
                        .expect("a");
                }
            })
        })
        .collect();
    on_runtime(async {
        let mut kept = Vec::new();
        for i in 0..600 {
            // Polled once (queued, perhaps leading), then dropped.
            let mut cancelled =
                Box::pin(log.append_async("query", "c", serde_json::json!({ "cancelled": i })));
            assert!(futures::poll!(cancelled.as_mut()).is_pending());
            drop(cancelled);
            let log = log.clone();
            kept.push(tokio::spawn(async move {
                log.append_async("query", "k", serde_json::json!({ "kept": i }))
                    .await
            }));
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for k in kept {
            k.await.expect("task").expect("append");
        }
    });
    for h in threads {
        h.join().expect("join");
    }
    log.flush().expect("flush");
    let records = log.records().expect("records");
    assert_eq!(records.len(), 4 * 150 + 600 * 2);
    for i in 0..600 {
        assert!(
            records
                .iter()
                .any(|r| r.body == serde_json::json!({ "cancelled": i })),
            "cancelled record {i} was lost"
        );
    }
    assert!(matches!(
        verify(dir.path(), None).expect("verify"),
        Verdict::Intact { .. }
    ));
}

/// Outside any tokio runtime an async append commits on a thread of its own.
#[test]
fn an_async_append_outside_a_runtime_is_durable_when_it_resolves() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = Arc::new(AuditLog::open(dir.path()).expect("open"));
    let seq =
        futures::executor::block_on(log.append_async("query", "u", serde_json::json!({ "n": 1 })))
            .expect("append");
    assert_eq!(seq, 1);
    // Durable: another log over the directory sees it.
    let other = AuditLog::open(dir.path()).expect("open");
    assert_eq!(other.checkpoint().expect("cp").seq, 1);
}

/// The lead handed on after a thread appender's commit goes to the first appender that is
/// still waiting: a task appender takes it by starting a committer, and a cancelled one is
/// passed over (handing it the lead would leave everyone behind it waiting for ever).
#[test]
fn the_lead_goes_to_a_waiting_task_appender_never_to_a_cancelled_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = Arc::new(AuditLog::open(dir.path()).expect("open"));
    on_runtime(async {
        // A thread appender's commit is under way: whatever queues now waits for it.
        log.lock_state().expect("state").committing = true;
        let mut cancelled =
            Box::pin(log.append_async("query", "c", serde_json::json!({ "cancelled": 1 })));
        assert!(futures::poll!(cancelled.as_mut()).is_pending());
        drop(cancelled);
        let kept = tokio::spawn({
            let log = log.clone();
            async move {
                log.append_async("query", "k", serde_json::json!({ "kept": 1 }))
                    .await
            }
        });
        while log.lock_state().expect("state").pending.len() < 2 {
            tokio::task::yield_now().await;
        }
        // That commit ends; the lead is handed on.
        {
            let mut st = log.lock_state().expect("state");
            st.committing = false;
            st.hand_off(false);
        }
        assert_eq!(kept.await.expect("task").expect("append"), 2);
    });
    let kinds: Vec<String> = log
        .records()
        .expect("records")
        .into_iter()
        .map(|r| r.actor)
        .collect();
    assert_eq!(kinds, ["c", "k"]);
}

/// A segment another process started since this one last committed is followed: the chain
/// goes on from that process's records, not from this one's stale head, though the head
/// segment itself did not change (it was full).
#[test]
fn a_segment_started_by_another_process_is_followed() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = AuditLog::open_with(dir.path(), 3).expect("a");
    let b = AuditLog::open_with(dir.path(), 3).expect("b");
    let mut got = Vec::new();
    for i in 0..3 {
        got.push(
            a.append("query", "a", serde_json::json!({ "i": i }))
                .expect("a"),
        );
    }
    // `b` starts segment 4; `a`'s head segment (1-3) is unchanged.
    got.push(
        b.append("query", "b", serde_json::json!({ "i": 3 }))
            .expect("b"),
    );
    got.push(
        a.append("query", "a", serde_json::json!({ "i": 4 }))
            .expect("a"),
    );
    assert_eq!(got, [1, 2, 3, 4, 5]);
    match verify(dir.path(), None).expect("verify") {
        Verdict::Intact { records, .. } => assert_eq!(records, 5),
        v => panic!("{v:?}"),
    }
}
