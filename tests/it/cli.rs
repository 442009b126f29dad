//! The `govshare` binary end to end: what a provider's operator would type.

use std::process::{Command, Output};

fn govshare(store: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_govshare"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("spawn govshare")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn init_generate_load_inspect_validate() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    let data = dir.path().join("data");
    ok(&govshare(&store, &["init"]));
    let out = ok(&govshare(
        &store,
        &[
            "generate",
            "--persons",
            "2000",
            "--entities",
            "200",
            "--out",
            data.to_str().expect("p"),
            "--encoding",
            "gbk",
        ],
    ));
    assert!(out.contains("2000 persons"));
    let person = data.join("person.csv");
    let out = ok(&govshare(
        &store,
        &[
            "load",
            "person",
            person.to_str().expect("p"),
            "--handover-person",
            "李明",
            "--receiver",
            "王芳",
        ],
    ));
    assert!(
        out.contains("person version 1: 2000 read, 2000 accepted, 0 rejected"),
        "{out}"
    );
    ok(&govshare(
        &store,
        &[
            "load",
            "legal_entity",
            data.join("legal_entity.csv").to_str().expect("p"),
            "--strict",
        ],
    ));
    let out = ok(&govshare(&store, &["catalog", "list"]));
    assert!(out.contains("person") && out.contains("legal_entity"));
    let out = ok(&govshare(&store, &["catalog", "show", "person"]));
    assert!(out.contains("citizen_id") && out.contains("not shared"));
    let out = ok(&govshare(&store, &["catalog", "history"]));
    assert!(out.contains("version 1 by govshare init"));
    let out = ok(&govshare(&store, &["versions", "person"]));
    assert!(out.contains("by 李明 → 王芳"), "{out}");
    let out = ok(&govshare(
        &store,
        &[
            "validate",
            person.to_str().expect("p"),
            "--dataset",
            "person",
        ],
    ));
    assert!(out.contains("2000 rows, 0 with errors"), "{out}");
    let out = ok(&govshare(
        &store,
        &[
            "validate",
            person.to_str().expect("p"),
            "--dataset",
            "person",
            "--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["stats"]["rows"], 2000);
}

#[test]
fn errors_are_messages_with_exit_codes_not_panics() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    let o = govshare(&store, &["versions", "person"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no govshare store"));
    ok(&govshare(&store, &["init"]));
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "citizen_id,name\n\"unterminated,x\n").expect("w");
    let o = govshare(
        &store,
        &["load", "person", bad.to_str().expect("p"), "--strict"],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("error:") && !err.contains("panicked"),
        "{err}"
    );
    let o = govshare(&store, &["lookup", "person", "110105194912310021"]);
    assert_eq!(o.status.code(), Some(3));
    // A retention below the legal minimum is refused before anything is touched; a purge
    // within retention deletes nothing and is not an error.
    let o = govshare(
        &store,
        &["audit", "purge", "--retention-years", "2", "--by", "ops"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("minimum of 3 years"));
    let out = ok(&govshare(&store, &["audit", "purge", "--by", "ops"]));
    assert!(
        out.contains("purged 0 record(s) older than 3 years"),
        "{out}"
    );
    let out = ok(&govshare(&store, &["audit", "archive", "--by", "ops"]));
    assert!(out.contains("archived 0 segment(s)"), "{out}");
    ok(&govshare(&store, &["audit", "verify"]));
}

#[test]
fn access_control_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    let data = dir.path().join("data");
    ok(&govshare(&store, &["init"]));
    ok(&govshare(
        &store,
        &[
            "generate",
            "--persons",
            "1000",
            "--entities",
            "0",
            "--out",
            data.to_str().expect("p"),
        ],
    ));
    ok(&govshare(
        &store,
        &[
            "load",
            "person",
            data.join("person.csv").to_str().expect("p"),
        ],
    ));
    for args in [
        vec![
            "dept",
            "add",
            "PSB",
            "省公安厅",
            "--region",
            "430000",
            "--by",
            "root",
        ],
        vec![
            "dept",
            "add",
            "CIVIL",
            "民政厅",
            "--region",
            "430000",
            "--by",
            "root",
        ],
        vec![
            "user",
            "add",
            "appr",
            "赵审批",
            "--dept",
            "PSB",
            "--roles",
            "provider-approver",
            "--by",
            "root",
        ],
        vec![
            "user",
            "add",
            "civ",
            "张民政",
            "--dept",
            "CIVIL",
            "--by",
            "root",
        ],
        vec![
            "grant",
            "approve",
            "--by",
            "appr",
            "--dept",
            "CIVIL",
            "--dataset",
            "person",
            "--fields",
            "citizen_id:citizen_id,sex_code",
            "--purpose",
            "P01",
            "--purpose-text",
            "低保审核",
        ],
    ] {
        ok(&govshare(&store, &args));
    }
    let out = ok(&govshare(
        &store,
        &[
            "sql",
            "--user",
            "civ",
            "--purpose",
            "P01",
            "SELECT citizen_id FROM person LIMIT 2",
        ],
    ));
    assert!(
        out.contains("********") && out.contains("(2 rows)"),
        "{out}"
    );
    let o = govshare(
        &store,
        &[
            "sql",
            "--user",
            "civ",
            "--purpose",
            "P01",
            "SELECT name FROM person",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(5),
        "access denied has its own exit code"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("person.name"));
    let o = govshare(
        &store,
        &[
            "grant",
            "request",
            "--by",
            "appr",
            "--dept",
            "CIVIL",
            "--dataset",
            "person",
            "--fields",
            "marital_status_code",
            "--purpose",
            "P01",
            "--purpose-text",
            "x",
        ],
    );
    assert_eq!(o.status.code(), Some(5));
    ok(&govshare(
        &store,
        &["dept", "suspend", "CIVIL", "--by", "root"],
    ));
    let o = govshare(
        &store,
        &[
            "sql",
            "--user",
            "civ",
            "--purpose",
            "P01",
            "SELECT count(*) FROM person",
        ],
    );
    assert_eq!(o.status.code(), Some(5));
    assert!(ok(&govshare(&store, &["grant", "list"])).contains("低保审核"));
}

/// A dataset name is never a path: `vacuum ../../x` (or any command naming a dataset) is
/// refused before a file is touched, and what lies outside the store survives.
#[test]
fn dataset_names_cannot_reach_outside_the_store() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    ok(&govshare(&store, &["init"]));
    // A directory that looks like a dataset's, next to the store.
    let outside = dir.path().join("somewhere");
    std::fs::create_dir_all(outside.join("data")).expect("mkdir");
    let victim = outside.join("data").join("precious.parquet");
    std::fs::write(&victim, b"not yours").expect("write");
    for args in [
        vec!["vacuum", "../../somewhere"],
        vec!["vacuum", "/tmp"],
        vec!["compact", "../../somewhere"],
        vec!["versions", "../../somewhere"],
        vec!["lookup", "../../somewhere", "x"],
    ] {
        let o = govshare(&store, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("is not a dataset name"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read(&victim).expect("still there"), b"not yours");
    // A well-formed name that is not in the catalog is not vacuumed either.
    let o = govshare(&store, &["vacuum", "no_such_dataset"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
