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

fn ipc_bytes(batches: &[arrow::record_batch::RecordBatch]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w =
        arrow::ipc::writer::StreamWriter::try_new(&mut out, &batches[0].schema()).expect("ipc");
    for b in batches {
        w.write(b).expect("write");
    }
    w.finish().expect("finish");
    drop(w);
    out
}

fn sm3_hex(bytes: &[u8]) -> String {
    use sm3::Digest;
    sm3::Sm3::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A store made with national cryptography gives every deliverable an SM3 digest beside its
/// blake3 — the export and release files and manifests, every file of a backup and its
/// manifest — equal to SM3 recomputed here, on the trail, and checked on verification: a
/// changed SM3 in a manifest is refused even when the attacker also rewrites the blake3.
#[test]
fn a_national_cryptography_store_digests_its_deliverables_with_sm3() {
    use govshare_core::access::policy::{ExportTerms, Mode, Role};
    use govshare_core::audit::ChainHash;
    use govshare_core::engine::{ExportFormat, ReleaseSpec, verify_export, verify_release};
    use govshare_core::ingest::{LoadOptions, Source};

    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("store");
    let store =
        Store::init_with(&root, &govshare_testkit::founder(), ChainHash::Sm3).expect("init");
    store
        .writer(govshare_testkit::ROOT)
        .expect("w")
        .update_policy("principals", |p, _| {
            govshare_testkit::add_principals(
                p,
                "430000",
                &[("PSB", "省公安厅"), ("A", "甲局")],
                &[
                    (OPS, govshare_testkit::PLATFORM, Role::Operator),
                    ("psb", "PSB", Role::ProviderApprover),
                    ("a", "A", Role::Consumer),
                ],
            )
        })
        .expect("principals");
    let synth = govshare_core::synth::Synth::new(3, 300, 0);
    let input: Vec<arrow::record_batch::RecordBatch> = synth.persons(1024).collect();
    store
        .writer(OPS)
        .expect("w")
        .load(
            "person",
            Source::Batches(input.clone()),
            &LoadOptions::default(),
        )
        .expect("load");
    // The handover record's input digests: Arrow input is digested as its IPC stream.
    let handover = &store.versions("person").expect("versions")[0].handover;
    let ipc = ipc_bytes(&input);
    assert_eq!(handover.input_digest, blake3::hash(&ipc).to_hex().as_str());
    assert_eq!(handover.input_sm3.as_deref(), Some(sm3_hex(&ipc).as_str()));
    let mut r = request("A", "person", &[("sex_code", Treatment::Clear)]);
    r.modes = vec![Mode::Query, Mode::Export];
    r.export = Some(ExportTerms {
        max_rows: 1000,
        per_day: 10,
    });
    approve(&store, r, "psb");
    let engine = Engine::open(&root).expect("engine");
    let trail = |kind: &str| {
        engine
            .audit()
            .records()
            .expect("records")
            .into_iter()
            .rev()
            .find(|r| r.kind == kind)
            .expect("record")
    };

    // A query's result digests in its completion record.
    let result = engine
        .session("a", "P")
        .expect("session")
        .sql("SELECT sex_code FROM person ORDER BY sex_code")
        .expect("query");
    let ipc = ipc_bytes(&result.batches);
    let end = trail("query_end");
    assert_eq!(
        end.body["result_blake3"],
        blake3::hash(&ipc).to_hex().as_str()
    );
    assert_eq!(end.body["result_sm3"], sm3_hex(&ipc));

    // Export: the file's and the manifest's SM3, on the trail; a changed SM3 is refused.
    let out = dir.path().join("exp");
    let m = engine
        .session("a", "P")
        .expect("session")
        .export("person", ExportFormat::Parquet, &out, &mut |_| {})
        .expect("export");
    let file = std::fs::read(out.join("person.parquet")).expect("file");
    assert_eq!(m.files[0].sm3.as_deref(), Some(sm3_hex(&file).as_str()));
    let manifest = out.join("person.parquet.manifest.json");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    assert_eq!(
        trail("export").body["manifest_sm3"],
        sm3_hex(text.as_bytes())
    );
    verify_export(&manifest).expect("verifies");
    let sm3 = m.files[0].sm3.clone().expect("sm3");
    std::fs::write(&manifest, text.replace(&sm3, &"0".repeat(64))).expect("write");
    assert!(matches!(verify_export(&manifest), Err(Error::Corrupt(_))));

    // Release: the same.
    let out = dir.path().join("rel");
    let spec = ReleaseSpec {
        dataset: "person".into(),
        fields: vec!["sex_code".into(), "nationality_code".into()],
        k: 5,
        max_suppression: 0.05,
    };
    let r = engine
        .release_open_data("psb", &spec, &out)
        .expect("release");
    let file = std::fs::read(out.join("person.open.parquet")).expect("file");
    assert_eq!(
        r.manifest.files[0].sm3.as_deref(),
        Some(sm3_hex(&file).as_str())
    );
    let text = std::fs::read(govshare_core::engine::release_manifest_path(&out, "person"))
        .expect("manifest");
    assert_eq!(r.manifest_sm3.as_deref(), Some(sm3_hex(&text).as_str()));
    assert_eq!(
        trail("open_release_done").body["manifest_sm3"],
        sm3_hex(&text)
    );
    verify_release(&govshare_core::engine::release_manifest_path(
        &out, "person",
    ))
    .expect("ok");

    // Backup: every file and the manifest, on the trail; verification checks both digests.
    let dest = dir.path().join("bk");
    let (bm, _) = engine.backup(OPS, &dest, None).expect("backup");
    assert!(!bm.files.is_empty());
    for f in &bm.files {
        let bytes = std::fs::read(dest.join("files").join(&f.path)).expect("file");
        assert_eq!(
            f.sm3.as_deref(),
            Some(sm3_hex(&bytes).as_str()),
            "{}",
            f.path
        );
    }
    let text = std::fs::read_to_string(dest.join("backup.json")).expect("manifest");
    let recorded = std::fs::read_to_string(dest.join("backup.json.sm3")).expect("sm3");
    assert_eq!(recorded, sm3_hex(text.as_bytes()));
    assert_eq!(trail("backup_end").body["manifest_sm3"], recorded.as_str());
    govshare_core::store::backup::verify(&dest).expect("verifies");
    // A forged file digest with the blake3 of the forged manifest: its SM3 gives it away.
    let forged = text.replacen(bm.files[0].sm3.as_deref().expect("sm3"), &"0".repeat(64), 1);
    std::fs::write(dest.join("backup.json"), &forged).expect("write");
    std::fs::write(
        dest.join("backup.json.blake3"),
        blake3::hash(forged.as_bytes()).to_hex().as_bytes(),
    )
    .expect("write");
    let err = govshare_core::store::backup::verify(&dest).expect_err("forged");
    assert!(err.to_string().contains("SM3"), "{err}");
    // With the manifest's SM3 forged too, the file's own SM3 does not match.
    std::fs::write(dest.join("backup.json.sm3"), sm3_hex(forged.as_bytes())).expect("write");
    assert!(matches!(
        govshare_core::store::backup::verify(&dest),
        Err(Error::Corrupt(_))
    ));
}
