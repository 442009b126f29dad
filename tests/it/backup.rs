//! Backup and restore: a consistent copy of the whole store with a manifest of blake3 digests;
//! restore verifies every byte and the trail before the store appears, and only operators do
//! either.

use std::path::Path;

use govshare_core::access::policy::Treatment;
use govshare_core::audit::Verdict;
use govshare_core::{Engine, Error, Store};
use govshare_testkit::OPS;

use crate::access::{approve, request, small_store};
use crate::common::files_under as files;

const COUNT_BY_SEX: &str =
    "SELECT sex_code, count(*) AS n FROM person GROUP BY sex_code ORDER BY sex_code";

fn setup(dir: &Path) -> Engine {
    let store = small_store(&dir.join("store"));
    approve(
        &store,
        request("A", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    Engine::open(dir.join("store")).expect("engine")
}

fn answer(engine: &Engine, purpose: &str) -> String {
    let r = engine
        .session("a", purpose)
        .expect("session")
        .sql(COUNT_BY_SEX)
        .expect("query");
    arrow::util::pretty::pretty_format_batches(&r.batches)
        .expect("format")
        .to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    for f in files(from) {
        let rel = f.strip_prefix(from).expect("under");
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&f, &dest).expect("copy");
    }
}

fn kinds(engine: &Engine) -> Vec<(String, String, serde_json::Value)> {
    engine
        .audit()
        .records()
        .expect("records")
        .into_iter()
        .map(|r| (r.kind, r.actor, r.body))
        .collect()
}

/// A restored store answers as the original did, its trail verifies and records the restore
/// (with the manifest's digest the original's trail recorded for the backup).
#[test]
fn a_restored_store_answers_as_the_original_and_records_its_restore() {
    let dir = tempfile::tempdir().expect("tmp");
    let engine = setup(dir.path());
    let before = answer(&engine, "P");
    let (m, digest) = engine
        .backup(OPS, &dir.path().join("b1"), None)
        .expect("backup");
    assert!(
        m.files.iter().all(|f| f.stored),
        "a full backup stores everything"
    );
    assert!(
        m.files.iter().any(|f| f.path.ends_with(".parquet"))
            && m.files.iter().any(|f| f.path.starts_with("audit/seg-"))
            && m.files.iter().any(|f| f.path.starts_with("policy/"))
            && m.files.iter().any(|f| f.path.starts_with("keys/")),
        "data, trail, policy and keys are all in it"
    );
    let log = kinds(&engine);
    let started = log
        .iter()
        .position(|(k, a, _)| k == "backup" && a == OPS)
        .expect("recorded before the copy");
    let (_, _, end) = log
        .iter()
        .find(|(k, _, _)| k == "backup_end")
        .expect("its end");
    assert!(
        log.iter()
            .position(|(k, _, _)| k == "backup_end")
            .expect("end")
            > started
    );
    assert_eq!(end["manifest_blake3"], digest.as_str());

    let restored = dir.path().join("restored");
    Store::restore(dir.path().join("b1"), &restored, OPS).expect("restore");
    let again = Engine::open(&restored).expect("restored engine");
    assert_eq!(answer(&again, "P"), before);
    assert!(matches!(
        again.verify_audit("aud", None).expect("verify"),
        Verdict::Intact { .. }
    ));
    let restore = kinds(&again)
        .into_iter()
        .find(|(k, _, _)| k == "restore")
        .expect("the restore is on the restored trail");
    assert_eq!(restore.1, OPS);
    assert_eq!(restore.2["manifest_blake3"], digest.as_str());
    // A restore never overwrites.
    let e = Store::restore(dir.path().join("b1"), &restored, OPS).expect_err("exists");
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
}

/// Backing up and restoring are operators' acts: a consumer is refused (and, for the backup,
/// recorded); nothing is left behind.
#[test]
fn only_operators_back_up_and_restore() {
    let dir = tempfile::tempdir().expect("tmp");
    let engine = setup(dir.path());
    let e = engine
        .backup("a", &dir.path().join("stolen"), None)
        .expect_err("a consumer");
    assert!(matches!(e, Error::AccessDenied(_)), "{e}");
    assert!(!dir.path().join("stolen").exists());
    assert!(
        kinds(&engine)
            .iter()
            .any(|(k, a, b)| k == "act_denied" && a == "a" && b["act"] == "back up the store")
    );
    let e = engine
        .backup("ghost", &dir.path().join("stolen"), None)
        .expect_err("nobody");
    assert!(matches!(e, Error::AccessDenied(_)), "{e}");

    engine
        .backup(OPS, &dir.path().join("b1"), None)
        .expect("backup");
    let e = Store::restore(dir.path().join("b1"), dir.path().join("r"), "a").expect_err("a");
    assert!(matches!(e, Error::AccessDenied(_)), "{e}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.iter().any(|n| n == "r" || n.contains("restoring")),
        "{left:?}"
    );
}

/// One changed byte anywhere in a backup — a data file, an index, the trail, the keys, the
/// manifest or its digest — and the restore is refused, with nothing created.
#[test]
fn a_backup_with_any_one_byte_changed_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let engine = setup(dir.path());
    let good = dir.path().join("b1");
    engine.backup(OPS, &good, None).expect("backup");
    let all = files(&good);
    assert!(all.len() > 10, "{}", all.len());
    for (i, file) in all.iter().enumerate() {
        let rel = file.strip_prefix(&good).expect("under");
        if std::fs::metadata(file).expect("meta").len() == 0 {
            continue;
        }
        let copy = dir.path().join(format!("flip{i}"));
        copy_dir(&good, &copy);
        let target = copy.join(rel);
        let mut bytes = std::fs::read(&target).expect("read");
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(&target, &bytes).expect("write");
        let restored = dir.path().join(format!("r{i}"));
        let e = Store::restore(&copy, &restored, OPS)
            .expect_err(&format!("a changed byte in {}", rel.display()));
        assert!(matches!(e, Error::Corrupt(_)), "{}: {e}", rel.display());
        assert!(!restored.exists(), "{}", rel.display());
        assert!(
            govshare_core::store::backup::verify(&copy).is_err(),
            "the check finds it too: {}",
            rel.display()
        );
        std::fs::remove_dir_all(&copy).expect("clean");
    }
    // The untouched backup still restores.
    Store::restore(&good, dir.path().join("fine"), OPS).expect("restore");
}

/// An incremental backup stores only what changed since its base (a policy change: no data
/// file travels again), restores with its base, and is refused without it or when the base
/// was changed.
#[test]
fn incremental_backups_hold_only_what_changed_and_need_their_base() {
    let dir = tempfile::tempdir().expect("tmp");
    let engine = setup(dir.path());
    let (full, _) = engine
        .backup(OPS, &dir.path().join("b1"), None)
        .expect("full");
    let store = engine.store();
    approve(
        store,
        {
            let mut r = request("A", "person", &[("sex_code", Treatment::Clear)]);
            r.purpose_code = "P2".into();
            r
        },
        "psb",
    );
    let (inc, _) = engine
        .backup(OPS, &dir.path().join("b2"), Some(&dir.path().join("b1")))
        .expect("incremental");
    let stored: Vec<&str> = inc
        .files
        .iter()
        .filter(|f| f.stored)
        .map(|f| f.path.as_str())
        .collect();
    assert!(
        stored.iter().any(|p| p.starts_with("policy/")),
        "{stored:?}"
    );
    assert!(
        !stored
            .iter()
            .any(|p| p.contains("/data/") || p.contains("/index/")),
        "data and indexes did not change: {stored:?}"
    );
    assert!(inc.stored_bytes() < full.stored_bytes() / 2);
    let restored = dir.path().join("r2");
    Store::restore(dir.path().join("b2"), &restored, OPS).expect("restore with its base");
    let again = Engine::open(&restored).expect("engine");
    assert_eq!(answer(&again, "P2"), answer(&engine, "P2"));
    // A changed byte in a base file is caught through the incremental backup.
    let parquet = files(&dir.path().join("b1"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a data file");
    let mut bytes = std::fs::read(&parquet).expect("read");
    bytes[10] ^= 0x80;
    std::fs::write(&parquet, &bytes).expect("write");
    let e = Store::restore(dir.path().join("b2"), dir.path().join("r3"), OPS).expect_err("base");
    assert!(matches!(e, Error::Corrupt(_)), "{e}");
    // Without its base, an incremental backup cannot be restored.
    std::fs::remove_dir_all(dir.path().join("b1")).expect("rm");
    let e = Store::restore(dir.path().join("b2"), dir.path().join("r4"), OPS).expect_err("gone");
    assert!(matches!(e, Error::NotFound(_)), "{e}");
}
