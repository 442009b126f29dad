//! A load is atomic: a process killed at any moment (SIGKILL, or an abort at the commit's most
//! delicate point) leaves the previous version current, complete and readable, and the next
//! writer is not blocked by a stale lock.

use std::process::Command;
use std::time::Duration;

use govshare_core::Store;
use govshare_core::ingest::Encoding;

use crate::common::*;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_govshare")
}

fn assert_v1_intact(store: &Store, expect_keys: &[String]) {
    assert_eq!(store.current_version("person").expect("v"), 1);
    let s = store.snapshot("person").expect("snapshot");
    assert_eq!(&keys(&s), expect_keys);
    let k = &expect_keys[7];
    assert!(s.lookup(k).expect("lookup").is_some());
}

fn load_cmd(root: &std::path::Path, csv: &std::path::Path) -> Command {
    let mut c = Command::new(bin());
    c.args([
        "--store",
        root.to_str().expect("utf8"),
        "load",
        "person",
        csv.to_str().expect("utf8"),
        "--by",
        govshare_testkit::OPS,
    ]);
    c
}

fn kinds(store: &Store) -> Vec<String> {
    govshare_core::audit::AuditLog::open(store.audit_dir())
        .expect("trail")
        .records()
        .expect("records")
        .into_iter()
        .map(|r| r.kind)
        .collect()
}

/// The record comes before the commit takes effect. A load aborted before its audit record
/// (after its data files, or after its manifest) leaves the previous version current, and the
/// next writer discards the unrecorded manifest; a load aborted after its record but before the
/// pointer swap is completed by the next writer — never a version in force without a record.
#[test]
fn a_commit_aborted_before_its_record_never_takes_effect_and_after_it_is_completed() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("s");
    let store = person_store(&root, 500);
    let before = keys(&store.snapshot("person").expect("s"));
    let csv = person_csv(dir.path(), 800, 77, Encoding::Utf8);
    for point in ["after-data-files", "after-document"] {
        let out = load_cmd(&root, &csv)
            .env("GOVSHARE_FAILPOINT", point)
            .output()
            .expect("spawn");
        assert!(!out.status.success(), "the child crashed at {point}");
        assert_v1_intact(&store, &before);
        // Only version 1's load record: the aborted load has none.
        assert_eq!(kinds(&store).iter().filter(|k| *k == "load").count(), 1);
    }
    // The next writer reconciles: the manifest written without a record is discarded; the
    // crashed writer's lock died with it; leftovers are unreferenced and vacuumable.
    let r = store
        .writer(govshare_testkit::OPS)
        .expect("lock is free")
        .vacuum("person", 1)
        .expect("vacuum");
    assert!(
        r.files_removed > 0,
        "leftovers of the crashed loads were found"
    );
    assert_v1_intact(&store, &before);
    assert_eq!(
        kinds(&store).iter().filter(|k| *k == "discarded").count(),
        1
    );
    // Aborted after its record: not current yet, but in force by its record — the next
    // writer completes it.
    let out = load_cmd(&root, &csv)
        .env("GOVSHARE_FAILPOINT", "before-current-swap")
        .output()
        .expect("spawn");
    assert!(!out.status.success());
    assert_v1_intact(&store, &before);
    assert_eq!(kinds(&store).iter().filter(|k| *k == "load").count(), 2);
    drop(store.writer(govshare_testkit::OPS).expect("writer"));
    assert_eq!(store.current_version("person").expect("v"), 2);
    assert_eq!(
        store.snapshot("person").expect("s").manifest().live_rows,
        800
    );
    assert_eq!(kinds(&store).last().map(String::as_str), Some("recovered"));
    let ok = load_cmd(&root, &csv).output().expect("spawn");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(store.current_version("person").expect("v"), 3);
}

/// Killed at random moments, loads and policy changes never leave a version in force without
/// its audit record: after the next writer reconciles, every version of the person data and
/// of the policy up to the current one has a `commit` record naming it.
#[test]
fn sigkill_never_leaves_an_act_in_force_without_its_record() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("s");
    let store = person_store(&root, 300);
    let csv = person_csv(dir.path(), 3_000, 80, Encoding::Utf8);
    let mut rng = 0x2545_f491_u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for trial in 0..16 {
        let mut cmd = if trial % 2 == 0 {
            load_cmd(&root, &csv)
        } else {
            let mut c = Command::new(bin());
            c.args([
                "--store",
                root.to_str().expect("utf8"),
                "dept",
                "add",
                &format!("D{trial}"),
                "某局",
                "--region",
                "430000",
                "--by",
                govshare_testkit::ROOT,
            ]);
            c
        };
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(20 + next(400)));
        child.kill().ok();
        child.wait().expect("reap");
        // The next writer reconciles whatever the kill interrupted.
        drop(store.writer(govshare_testkit::OPS).expect("writer"));
        let records = govshare_core::audit::AuditLog::open(store.audit_dir())
            .expect("trail")
            .records()
            .expect("records");
        let recorded = |chain: &str, v: u64| {
            records
                .iter()
                .any(|r| r.body["commit"]["chain"] == chain && r.body["commit"]["version"] == v)
        };
        for v in 1..=store.current_version("person").expect("v") {
            assert!(recorded("datasets/person", v), "trial {trial}: person v{v}");
        }
        for v in 1..=store.policy_version().expect("v") {
            assert!(recorded("policy", v), "trial {trial}: policy v{v}");
        }
    }
}

#[test]
fn sigkill_at_random_moments_during_a_load_never_damages_the_store() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("s");
    let store = person_store(&root, 300);
    let before = keys(&store.snapshot("person").expect("s"));
    let csv = person_csv(dir.path(), 20_000, 78, Encoding::Utf8);
    let mut killed_midway = 0;
    for delay_ms in [5u64, 40, 120, 250, 500, 900] {
        let mut child = Command::new(bin())
            .args([
                "--store",
                root.to_str().expect("utf8"),
                "load",
                "person",
                csv.to_str().expect("utf8"),
                "--by",
                govshare_testkit::OPS,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let finished = child.try_wait().expect("wait").is_some();
        child.kill().ok(); // SIGKILL on Unix
        let out = child.wait_with_output().expect("reap");
        let v = store.current_version("person").expect("v");
        if !finished && v == 1 {
            killed_midway += 1;
            assert_v1_intact(&store, &before);
        } else {
            // The load won the race and committed: it must then be complete.
            assert_eq!(
                store.snapshot("person").expect("s").manifest().live_rows,
                20_000,
                "after {delay_ms} ms (finished: {finished}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            break;
        }
    }
    assert!(
        killed_midway >= 1,
        "at least one kill landed before the commit"
    );
}

#[test]
fn readers_do_not_block_and_see_whole_versions_while_a_writer_runs() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("s");
    let store = person_store(&root, 400);
    let csv = person_csv(dir.path(), 20_000, 79, Encoding::Utf8);
    let mut child = Command::new(bin())
        .args([
            "--store",
            root.to_str().expect("utf8"),
            "load",
            "person",
            csv.to_str().expect("utf8"),
            "--by",
            govshare_testkit::OPS,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut saw_locked = false;
    while child.try_wait().expect("wait").is_none() {
        // A reader in this process opens whatever is current: always a whole version.
        let s = store.snapshot("person").expect("snapshot");
        let n = keys(&s).len() as u64;
        assert_eq!(n, s.manifest().live_rows);
        assert!(n == 400 || n == 20_000);
        match store.writer(govshare_testkit::OPS) {
            Err(govshare_core::Error::Locked { .. }) => saw_locked = true,
            Ok(_) => {} // the child has not taken the lock yet, or has finished
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.wait().expect("exit").success());
    assert!(saw_locked, "a second writer was refused while the load ran");
    assert_eq!(
        store.snapshot("person").expect("s").manifest().live_rows,
        20_000
    );
}
