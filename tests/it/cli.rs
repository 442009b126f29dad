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

/// `init` naming `root` as the first platform administrator, who adds the operator `ops` and
/// the auditor `aud`.
fn init(store: &std::path::Path) {
    ok(&govshare(
        store,
        &[
            "init",
            "--admin",
            "root",
            "--admin-name",
            "平台管理员",
            "--region",
            "430000",
        ],
    ));
    for (id, name, role) in [("ops", "王芳", "operator"), ("aud", "孙审计", "auditor")] {
        ok(&govshare(
            store,
            &[
                "user", "add", id, name, "--dept", "PLAT", "--roles", role, "--by", "root",
            ],
        ));
    }
}

#[test]
fn init_generate_load_inspect_validate() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    let data = dir.path().join("data");
    init(&store);
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
            "--by",
            "ops",
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
            "--by",
            "ops",
        ],
    ));
    let out = ok(&govshare(&store, &["catalog", "list", "--by", "aud"]));
    assert!(out.contains("person") && out.contains("legal_entity"));
    let out = ok(&govshare(
        &store,
        &["catalog", "show", "person", "--by", "aud"],
    ));
    assert!(out.contains("citizen_id") && out.contains("not shared"));
    let out = ok(&govshare(&store, &["catalog", "history", "--by", "aud"]));
    assert!(out.contains("version 1 by govshare init"));
    // The operator's lookup prints the row and is on the trail with its reason.
    let id = data_first_id(&person);
    let out = ok(&govshare(
        &store,
        &[
            "lookup",
            "person",
            &id,
            "--by",
            "ops",
            "--reason",
            "地址核对",
        ],
    ));
    assert!(out.contains(&id), "{out}");
    let o = govshare(
        &store,
        &["lookup", "person", &id, "--by", "aud", "--reason", "x"],
    );
    assert_eq!(o.status.code(), Some(5), "only operators look rows up");
    let out = ok(&govshare(
        &store,
        &["audit", "who-accessed", &id, "--by", "aud"],
    ));
    assert!(
        out.contains("user ops") && out.contains("地址核对"),
        "{out}"
    );
    let out = ok(&govshare(&store, &["versions", "person", "--by", "aud"]));
    assert!(out.contains("by 李明 → 王芳"), "{out}");
    let out = ok(&govshare(
        &store,
        &[
            "validate",
            person.to_str().expect("p"),
            "--dataset",
            "person",
            "--by",
            "ops",
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
            "--by",
            "ops",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["stats"]["rows"], 2000);
}

#[test]
fn errors_are_messages_with_exit_codes_not_panics() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    let o = govshare(&store, &["versions", "person", "--by", "aud"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no govshare store"));
    init(&store);
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "citizen_id,name\n\"unterminated,x\n").expect("w");
    let o = govshare(
        &store,
        &[
            "load",
            "person",
            bad.to_str().expect("p"),
            "--strict",
            "--by",
            "ops",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("error:") && !err.contains("panicked"),
        "{err}"
    );
    let o = govshare(
        &store,
        &[
            "lookup",
            "person",
            "110105194912310021",
            "--by",
            "ops",
            "--reason",
            "数据核对",
        ],
    );
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
    ok(&govshare(&store, &["audit", "verify", "--by", "aud"]));
}

#[test]
fn access_control_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    let data = dir.path().join("data");
    init(&store);
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
            "--by",
            "ops",
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
    assert!(ok(&govshare(&store, &["grant", "list", "--by", "root"])).contains("低保审核"));
}

/// A dataset name is never a path: `vacuum ../../x` (or any command naming a dataset) is
/// refused before a file is touched, and what lies outside the store survives.
#[test]
fn dataset_names_cannot_reach_outside_the_store() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    init(&store);
    // A directory that looks like a dataset's, next to the store.
    let outside = dir.path().join("somewhere");
    std::fs::create_dir_all(outside.join("data")).expect("mkdir");
    let victim = outside.join("data").join("precious.parquet");
    std::fs::write(&victim, b"not yours").expect("write");
    for args in [
        vec!["vacuum", "../../somewhere", "--by", "ops"],
        vec!["vacuum", "/tmp", "--by", "ops"],
        vec!["compact", "../../somewhere", "--by", "ops"],
        vec!["versions", "../../somewhere", "--by", "aud"],
        vec![
            "lookup",
            "../../somewhere",
            "x",
            "--by",
            "ops",
            "--reason",
            "r",
        ],
    ] {
        let o = govshare(&store, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("is not a dataset name"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read(&victim).expect("still there"), b"not yours");
    // A well-formed name that is not in the catalog is not vacuumed either.
    let o = govshare(&store, &["vacuum", "no_such_dataset", "--by", "ops"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The first citizen ID of a generated person CSV (GBK or UTF-8: IDs are ASCII).
fn data_first_id(csv: &std::path::Path) -> String {
    let bytes = std::fs::read(csv).expect("csv");
    let line = bytes
        .split(|b| *b == b'\n')
        .nth(1)
        .expect("a data row")
        .to_vec();
    String::from_utf8_lossy(&line)
        .split(',')
        .next()
        .expect("id")
        .to_string()
}

/// The escalation chain the round-1 review found, step by step: a consumer cannot make an
/// approver, an unknown user cannot act, a request cannot lift a default mask, the catalog
/// cannot be changed by nobody — and the trail records every refusal.
#[test]
fn nobody_acts_beyond_their_role() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    init(&store);
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
            "TAX",
            "税务局",
            "--region",
            "430000",
            "--by",
            "root",
        ],
        vec![
            "user",
            "add",
            "wang",
            "王税务",
            "--dept",
            "TAX",
            "--by",
            "root",
        ],
    ] {
        ok(&govshare(&store, &args));
    }
    let refused = |args: &[&str], needle: &str| {
        let o = govshare(&store, args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(5), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    // wang, a consumer, cannot create an approver ...
    refused(
        &[
            "user",
            "add",
            "evil",
            "E",
            "--dept",
            "PSB",
            "--roles",
            "provider-approver",
            "--by",
            "wang",
        ],
        "needs the platform-admin role",
    );
    // ... so evil does not exist and cannot approve anything for wang.
    refused(
        &[
            "grant",
            "approve",
            "--by",
            "evil",
            "--dept",
            "TAX",
            "--dataset",
            "person",
            "--fields",
            "citizen_id,name,mobile_phone",
            "--purpose",
            "X",
            "--purpose-text",
            "x",
        ],
        "unknown user 'evil'",
    );
    refused(
        &[
            "dept", "add", "X", "某局", "--region", "430000", "--by", "ghost",
        ],
        "unknown user 'ghost'",
    );
    refused(
        &["dept", "suspend", "TAX", "--by", "wang"],
        "platform-admin",
    );
    // root cannot change their own account, not even to add a role.
    refused(
        &[
            "user",
            "add",
            "root",
            "平台管理员",
            "--dept",
            "PLAT",
            "--roles",
            "platform-admin,provider-approver",
            "--by",
            "root",
        ],
        "their own account",
    );
    let catalog = dir.path().join("c.toml");
    std::fs::write(
        &catalog,
        "[[datasets]]\nname = \"gdp\"\nlabel = \"GDP\"\nkey = \"k\"\nprovider = \"TAX\"\nfields = [{ name = \"k\", label = \"k\", type = \"utf8\", nullable = false, share = \"unconditional\", grade = \"L1\" }]\n",
    )
    .expect("write");
    refused(
        &[
            "catalog",
            "apply",
            catalog.to_str().expect("p"),
            "--author",
            "ghost",
        ],
        "unknown user 'ghost'",
    );
    refused(
        &[
            "catalog",
            "apply",
            catalog.to_str().expect("p"),
            "--by",
            "ops",
        ],
        "platform-admin",
    );
    ok(&govshare(
        &store,
        &[
            "catalog",
            "apply",
            catalog.to_str().expect("p"),
            "--by",
            "root",
        ],
    ));
    // A request for an unconditional field "in clear" still gets the catalog's default mask.
    ok(&govshare(
        &store,
        &[
            "grant",
            "request",
            "--by",
            "root",
            "--dept",
            "TAX",
            "--dataset",
            "legal_entity",
            "--fields",
            "uscc,legal_rep_name:clear",
            "--purpose",
            "P03",
            "--purpose-text",
            "税务登记比对",
        ],
    ));
    let list = ok(&govshare(&store, &["grant", "list", "--by", "root"]));
    assert!(
        list.contains("fields: uscc, legal_rep_name (masked: name)"),
        "{list}"
    );
    // wang sees their department's grants, not the staff.
    let mine = ok(&govshare(&store, &["user", "list", "--by", "wang"]));
    assert!(mine.contains("wang") && !mine.contains("root"), "{mine}");
    // Every refusal above is on the trail.
    let tail = ok(&govshare(
        &store,
        &["audit", "tail", "-n", "40", "--by", "aud"],
    ));
    assert!(
        tail.matches("policy_denied").count() >= 4 && tail.contains("act_denied"),
        "{tail}"
    );
}

/// `govshare ... | head`: a reader that stops early ends the command quietly (it panicked on
/// the closed pipe before).
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    stat_store(&store, &dir.path().join("data"));
    // 90,000 rows as a table: far more than a pipe buffer holds.
    let mut child = Command::new(env!("CARGO_BIN_EXE_govshare"))
        .arg("--store")
        .arg(&store)
        .args([
            "sql",
            "--user",
            "stat",
            "--purpose",
            "S",
            "SELECT a.sex_code FROM person a CROSS JOIN person b",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("a line");
    assert!(first.starts_with('+'), "{first}");
    // The reader is gone; what the command still writes meets a closed pipe.
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{err}");
}

/// Ctrl-C (SIGINT) during a query cancels it: the command exits with the interrupted code
/// (1) and a message, not a panic, and the trail records the query as cancelled.
#[cfg(unix)]
#[test]
fn ctrl_c_cancels_a_running_query_and_records_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    stat_store(&store, &dir.path().join("data"));
    let slow =
        "SELECT max(x.sex_code || y.sex_code || z.sex_code) FROM person x, person y, person z";
    let child = Command::new(env!("CARGO_BIN_EXE_govshare"))
        .arg("--store")
        .arg(&store)
        .args(["sql", "--user", "stat", "--purpose", "S", slow])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait until the query is on the trail (so it is running), then press Ctrl-C.
    let log = govshare_core::audit::AuditLog::open(store.join("audit")).expect("trail");
    let t = std::time::Instant::now();
    while !log
        .records()
        .expect("records")
        .iter()
        .any(|r| r.kind == "query" && r.body["sql"] == slow)
    {
        assert!(t.elapsed().as_secs() < 60, "the query never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("interrupted") && !err.contains("panicked"),
        "{err}"
    );
    let end = log
        .records()
        .expect("records")
        .into_iter()
        .rev()
        .find(|r| r.kind == "query_end")
        .expect("a completion record");
    assert_eq!(end.body["outcome"], "cancelled");
}

/// A new store ([`init`]) with 300 generated persons and `stat` of STAT, granted sex_code for
/// purpose S on request.
fn stat_store(store: &std::path::Path, data: &std::path::Path) {
    init(store);
    ok(&govshare(
        store,
        &[
            "generate",
            "--persons",
            "300",
            "--entities",
            "0",
            "--out",
            data.to_str().expect("p"),
        ],
    ));
    for args in [
        vec![
            "load",
            "person",
            data.join("person.csv").to_str().expect("p"),
            "--by",
            "ops",
        ],
        vec![
            "dept",
            "add",
            "STAT",
            "统计局",
            "--region",
            "430000",
            "--by",
            "root",
        ],
        vec![
            "user",
            "add",
            "stat",
            "钱统计",
            "--dept",
            "STAT",
            "--by",
            "root",
        ],
        vec![
            "grant",
            "request",
            "--by",
            "root",
            "--dept",
            "STAT",
            "--dataset",
            "person",
            "--fields",
            "sex_code",
            "--purpose",
            "S",
            "--purpose-text",
            "统计",
        ],
    ] {
        ok(&govshare(store, &args));
    }
}

#[test]
fn workflows_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    stat_store(&store, &dir.path().join("data"));
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
            "coord",
            "周协调",
            "--dept",
            "PLAT",
            "--roles",
            "coordinator",
            "--by",
            "root",
        ],
    ] {
        ok(&govshare(&store, &args));
    }
    let json = |o: &Output| -> serde_json::Value {
        serde_json::from_str(&ok(o)).expect("the command prints JSON")
    };
    // A consumer applies: an unconditional item at once, a conditional one to the check.
    let app = json(&govshare(
        &store,
        &[
            "application",
            "apply",
            "--by",
            "stat",
            "--dept",
            "STAT",
            "--dataset",
            "person",
            "--fields",
            "hukou_region_code,name:name",
            "--purpose",
            "S",
            "--purpose-text",
            "人口统计",
            "--legal-basis",
            "《统计法》第七条",
        ],
    ));
    assert_eq!(app["kind"], "application");
    assert_eq!(app["state"], "submitted");
    let id = app["id"].as_u64().expect("id").to_string();
    // The consumer cannot pass its own completeness check (exit code 5, access denied).
    let o = govshare(
        &store,
        &["application", "step", &id, "complete", "--by", "stat"],
    );
    assert_eq!(o.status.code(), Some(5));
    let app = json(&govshare(
        &store,
        &["application", "step", &id, "complete", "--by", "root"],
    ));
    assert_eq!(app["state"], "under_review");
    // A rejection without a reason is bad input (exit code 2); the approval goes through.
    let o = govshare(
        &store,
        &["application", "decide", &id, "--reject", "--by", "appr"],
    );
    assert_eq!(o.status.code(), Some(2));
    let ap = json(&govshare(
        &store,
        &[
            "application",
            "decide",
            &id,
            "--reason",
            "同意",
            "--by",
            "appr",
        ],
    ));
    assert_eq!(ap["approved"], true);
    let names = ok(&govshare(
        &store,
        &[
            "sql",
            "--user",
            "stat",
            "--purpose",
            "S",
            "--csv",
            "SELECT name FROM person LIMIT 3",
        ],
    ));
    assert!(names.lines().skip(1).all(|n| n.ends_with('*')), "{names}");
    let listed = ok(&govshare(&store, &["application", "list", "--by", "stat"]));
    for step in ["submitted", "under_review", "approved"] {
        assert!(listed.contains(step), "{listed}");
    }
    let services = ok(&govshare(&store, &["services", "--by", "stat"]));
    assert!(
        services.contains("person") && services.contains("held"),
        "{services}"
    );
    // Reports for the coordinator: a table, CSV, the HTML page; not for the consumer.
    let report = ok(&govshare(
        &store,
        &["report", "applications", "--by", "coord"],
    ));
    assert!(report.contains("approved"), "{report}");
    let csv = dir.path().join("usage.csv");
    ok(&govshare(
        &store,
        &[
            "report",
            "usage",
            "--csv",
            csv.to_str().expect("p"),
            "--by",
            "coord",
        ],
    ));
    assert!(
        std::fs::read_to_string(&csv)
            .expect("csv")
            .starts_with("department,purpose")
    );
    let html = dir.path().join("report.html");
    ok(&govshare(
        &store,
        &[
            "report",
            "--html",
            html.to_str().expect("p"),
            "--by",
            "coord",
        ],
    ));
    assert!(
        std::fs::read_to_string(&html)
            .expect("html")
            .contains("<svg")
    );
    assert_eq!(
        govshare(&store, &["report", "usage", "--by", "stat"])
            .status
            .code(),
        Some(5)
    );
    // Any act as JSON; the escalation sweep; a calendar year from a file.
    let esc = json(&govshare(&store, &["escalate", "--by", "coord"]));
    assert_eq!(esc["kind"], "escalated");
    let o = govshare(
        &store,
        &[
            "act",
            "--by",
            "stat",
            r#"{"act": "withdraw", "application": 1}"#,
        ],
    );
    assert!(!o.status.success());
    let year = dir.path().join("2027.toml");
    std::fs::write(
        &year,
        "[[year]]\nyear = 2027\nsource = \"国务院办公厅关于2027年部分节假日安排的通知\"\noff = [\"01-01\"]\nwork = []\n",
    )
    .expect("toml");
    assert_eq!(
        govshare(
            &store,
            &["calendar", "add", year.to_str().expect("p"), "--by", "root"]
        )
        .status
        .code(),
        Some(5)
    );
    let cal = json(&govshare(
        &store,
        &["calendar", "add", year.to_str().expect("p"), "--by", "ops"],
    ));
    assert_eq!(cal["years"][0]["year"], 2027);
}

/// The provincial public security department PSB and its approver `appr`, who grants access to
/// the person dataset.
fn add_approver(store: &std::path::Path) {
    ok(&govshare(
        store,
        &[
            "dept",
            "add",
            "PSB",
            "省公安厅",
            "--region",
            "430000",
            "--by",
            "root",
        ],
    ));
    ok(&govshare(
        store,
        &[
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
    ));
}

/// Lookup by key and verify from the command line: `grant approve --verify LIMITS` makes a
/// verify grant; `verify` answers match / no match (from `--claim`s or a CSV file) and stops at
/// the per-subject limit with the limit's exit code; `by-key` prints the granted fields.
#[test]
fn lookup_and_verify_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    let data = dir.path().join("data");
    stat_store(&store, &data);
    add_approver(&store);
    let csv = std::fs::read_to_string(data.join("person.csv")).expect("csv");
    let first: Vec<&str> = csv.lines().nth(1).expect("row").split(',').collect();
    let (id, name) = (first[0], first[1]);
    for args in [
        vec![
            "grant",
            "approve",
            "--by",
            "appr",
            "--dept",
            "STAT",
            "--dataset",
            "person",
            "--fields",
            "name,birth_date",
            "--purpose",
            "V",
            "--purpose-text",
            "身份核验",
            "--verify",
            "10,100,2,disclose",
        ],
        vec![
            "grant",
            "approve",
            "--by",
            "appr",
            "--dept",
            "STAT",
            "--dataset",
            "person",
            "--fields",
            "citizen_id,name:name",
            "--purpose",
            "L",
            "--purpose-text",
            "按号查询",
        ],
    ] {
        ok(&govshare(&store, &args));
    }
    let spaced = format!(" {name} ");
    let out = ok(&govshare(
        &store,
        &[
            "verify",
            "--user",
            "stat",
            "--purpose",
            "V",
            "person",
            "--key",
            id,
            "--claim",
            &format!("name={spaced}"),
            "--claim",
            "birth_date=1800-01-01",
        ],
    ));
    assert_eq!(out, "found: yes\nname: match\nbirth_date: no match\n");
    assert!(!out.contains(name), "no value in an answer");
    let claims = dir.path().join("claims.csv");
    std::fs::write(
        &claims,
        format!("citizen_id,name\n{id},{name}\n11010519491231002X,张三\n"),
    )
    .expect("claims");
    let out = ok(&govshare(
        &store,
        &[
            "verify",
            "--user",
            "stat",
            "--purpose",
            "V",
            "person",
            "--file",
            claims.to_str().expect("p"),
        ],
    ));
    assert!(out.contains("(2 checks)"), "{out}");
    assert!(out.contains("true") && out.contains("false"), "{out}");
    // The subject was checked twice today: the third check is refused, with its exit code.
    let refused = govshare(
        &store,
        &[
            "verify",
            "--user",
            "stat",
            "--purpose",
            "V",
            "person",
            "--key",
            id,
            "--claim",
            "name=李四",
        ],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("one subject"), "{err}");
    // A verify grant does not answer SQL; the lookup grant shows the name masked.
    assert!(
        !govshare(
            &store,
            &[
                "sql",
                "--user",
                "stat",
                "--purpose",
                "V",
                "SELECT name FROM person"
            ]
        )
        .status
        .success()
    );
    let out = ok(&govshare(
        &store,
        &[
            "by-key",
            "--user",
            "stat",
            "--purpose",
            "L",
            "--auth",
            "second-factor",
            "person",
            id,
        ],
    ));
    assert!(out.contains(id) && out.contains("(1 rows)"), "{out}");
    assert!(!out.contains(name), "the name is granted masked: {out}");
}

/// Export and aggregates from the command line: `grant approve --export MAX_ROWS,PER_DAY`
/// makes an export grant; `export` writes the file and its manifest; `export-check` verifies a
/// delivery and catches a changed file; the daily limit refuses with its exit code;
/// `grant request --aggregate MIN_GROUP,PER_DAY` and `aggregate` answer only large groups.
#[test]
fn export_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    let data = dir.path().join("data");
    stat_store(&store, &data);
    add_approver(&store);
    ok(&govshare(
        &store,
        &[
            "grant",
            "approve",
            "--by",
            "appr",
            "--dept",
            "STAT",
            "--dataset",
            "person",
            "--fields",
            "sex_code,name:name",
            "--purpose",
            "X",
            "--purpose-text",
            "批量共享",
            "--export",
            "1000,1",
        ],
    ));
    let out = dir.path().join("out");
    let o = out.to_str().expect("p");
    let printed = ok(&govshare(
        &store,
        &[
            "export",
            "--user",
            "stat",
            "--purpose",
            "X",
            "person",
            "--format",
            "csv",
            "--out",
            o,
        ],
    ));
    assert!(printed.contains("300 rows"), "{printed}");
    let text = std::fs::read_to_string(out.join("person.csv")).expect("csv");
    assert_eq!(text.lines().count(), 301);
    assert!(text.starts_with("name,sex_code\n"), "{text}");
    let manifest = out.join("person.csv.manifest.json");
    let checked = ok(&govshare(
        &store,
        &["export-check", manifest.to_str().expect("p")],
    ));
    assert!(checked.starts_with("ok: 300 rows of person"), "{checked}");
    // The day's one export is used: refused, and nothing written.
    let again = govshare(
        &store,
        &[
            "export",
            "--user",
            "stat",
            "--purpose",
            "X",
            "person",
            "--out",
            dir.path().join("again").to_str().expect("p"),
        ],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("1 exports a day"));
    assert!(!dir.path().join("again").exists());
    // A changed delivery fails the check.
    std::fs::write(out.join("person.csv"), text.replace('*', "#")).expect("tamper");
    assert!(
        !govshare(&store, &["export-check", manifest.to_str().expect("p")])
            .status
            .success()
    );
    // An aggregate-only grant: groups of at least 100 of the 300 persons by sex.
    ok(&govshare(
        &store,
        &[
            "grant",
            "request",
            "--by",
            "root",
            "--dept",
            "STAT",
            "--dataset",
            "person",
            "--fields",
            "sex_code",
            "--purpose",
            "A",
            "--purpose-text",
            "统计分析",
            "--aggregate",
            "100,10",
        ],
    ));
    let groups = ok(&govshare(
        &store,
        &[
            "aggregate",
            "--user",
            "stat",
            "--purpose",
            "A",
            "SELECT sex_code, count(*) AS n FROM person GROUP BY 1",
        ],
    ));
    assert!(groups.contains("(2 groups)"), "{groups}");
    let rows = govshare(
        &store,
        &[
            "aggregate",
            "--user",
            "stat",
            "--purpose",
            "A",
            "SELECT sex_code FROM person",
        ],
    );
    assert!(!rows.status.success());
    assert!(String::from_utf8_lossy(&rows.stderr).contains("aggregate-only"));
}

/// The verify counters are shared by processes: six `govshare verify` processes check one
/// subject at once under a limit of two checks of a subject a day — exactly two are answered.
#[test]
fn verify_limits_hold_across_concurrent_processes() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    let data = dir.path().join("data");
    stat_store(&store, &data);
    add_approver(&store);
    let csv = std::fs::read_to_string(data.join("person.csv")).expect("csv");
    let id = csv
        .lines()
        .nth(2)
        .expect("row")
        .split(',')
        .next()
        .expect("id")
        .to_string();
    ok(&govshare(
        &store,
        &[
            "grant",
            "approve",
            "--by",
            "appr",
            "--dept",
            "STAT",
            "--dataset",
            "person",
            "--fields",
            "name",
            "--purpose",
            "V",
            "--purpose-text",
            "身份核验",
            "--verify",
            "100,1000,2",
        ],
    ));
    let runs: Vec<_> = (0..6)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_govshare"))
                .arg("--store")
                .arg(&store)
                .args([
                    "verify",
                    "--user",
                    "stat",
                    "--purpose",
                    "V",
                    "person",
                    "--key",
                    &id,
                    "--claim",
                    "name=张三",
                ])
                .spawn()
                .expect("spawn")
        })
        .collect();
    let answered = runs
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .filter(|o| o.status.success())
        .count();
    assert_eq!(answered, 2, "the per-subject limit across processes");
}

/// `sql --param` binds values (the injection text is a value that matches nobody), and
/// `--format` prints the same answer as a table, CSV, JSON lines or an Arrow IPC stream.
#[test]
fn parameters_and_output_formats_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    stat_store(&store, &dir.path().join("data"));
    let by_sex = "SELECT count(*) AS n FROM person WHERE sex_code = $1";
    let sql = |extra: &[&str]| {
        let mut args = vec!["sql", "--user", "stat", "--purpose", "S"];
        args.extend_from_slice(extra);
        govshare(&store, &args)
    };
    let json = |o: &Output| -> serde_json::Value {
        serde_json::from_str(ok(o).trim()).expect("one JSON line")
    };
    let women = json(&sql(&["--param", "2", "--format", "json", by_sex]))["n"]
        .as_i64()
        .expect("n");
    assert!(women > 0, "{women}");
    assert_eq!(
        json(&sql(&[
            "--param",
            "' OR '1'='1",
            "--format",
            "json",
            by_sex
        ]))["n"],
        0,
        "bound, the injection is a sex code nobody has"
    );
    let csv = ok(&sql(&["--param", "2", "--format", "csv", by_sex]));
    assert_eq!(csv, format!("n\n{women}\n"));
    let table = ok(&sql(&["--param", "2", by_sex]));
    assert!(
        table.contains(&women.to_string()) && table.contains("(1 rows)"),
        "{table}"
    );
    let arrow = sql(&["--param", "2", "--format", "arrow", by_sex]);
    assert!(arrow.status.success());
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow.stdout), None)
            .expect("an Arrow IPC stream");
    let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
    let n = batches[0]
        .column_by_name("n")
        .expect("n")
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .expect("int64")
        .value(0);
    assert_eq!(n, women);
    // A placeholder without its value is the caller's mistake: exit code 2.
    let o = sql(&[by_sex]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("placeholder"));
}

/// Shell completions come from the same command definitions: every command is offered.
#[test]
fn shell_completions_offer_the_commands() {
    let dir = tempfile::tempdir().expect("tmp");
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&govshare(dir.path(), &["completions", shell]));
        for command in ["sql", "by-key", "verify", "export", "audit"] {
            assert!(script.contains(command), "{shell}: {command} missing");
        }
    }
    let o = govshare(dir.path(), &["completions", "cmd.exe"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

/// `backup`, `backup-check` and `restore` from the command line: the restored store answers
/// the same query; a consumer cannot take a backup.
#[test]
fn backup_and_restore_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    stat_store(&store, &dir.path().join("data"));
    let q = [
        "sql",
        "--user",
        "stat",
        "--purpose",
        "S",
        "--format",
        "csv",
        "SELECT sex_code, count(*) AS n FROM person GROUP BY 1 ORDER BY 1",
    ];
    let before = ok(&govshare(&store, &q));
    let b = dir.path().join("b");
    let out = ok(&govshare(
        &store,
        &["backup", b.to_str().expect("p"), "--by", "ops"],
    ));
    assert!(out.contains("manifest blake3"), "{out}");
    assert!(ok(&govshare(&store, &["backup-check", b.to_str().expect("p")])).starts_with("ok: "));
    let r = dir.path().join("restored");
    ok(&govshare(
        &store,
        &[
            "restore",
            b.to_str().expect("p"),
            r.to_str().expect("p"),
            "--by",
            "ops",
        ],
    ));
    assert_eq!(ok(&govshare(&r, &q)), before);
    let o = govshare(
        &store,
        &[
            "backup",
            dir.path().join("x").to_str().expect("p"),
            "--by",
            "stat",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(5),
        "a consumer may not copy the store"
    );
}

/// `init --chain-hash sm3`: the store's audit chain is SM3 (GM/T 0004-2012) from its first
/// record, the choice is on the trail, and the trail verifies — also after a backup's restore.
#[test]
fn a_store_made_for_national_cryptography_chains_its_trail_with_sm3() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    let out = ok(&govshare(
        &store,
        &[
            "init",
            "--admin",
            "root",
            "--admin-name",
            "平台管理员",
            "--region",
            "430000",
            "--chain-hash",
            "sm3",
        ],
    ));
    assert!(out.contains("SM3"), "{out}");
    assert_eq!(
        std::fs::read_to_string(store.join("audit/HASH")).expect("HASH"),
        "sm3"
    );
    for (id, role) in [("ops", "operator"), ("aud", "auditor")] {
        ok(&govshare(
            &store,
            &[
                "user", "add", id, id, "--dept", "PLAT", "--roles", role, "--by", "root",
            ],
        ));
    }
    assert!(ok(&govshare(&store, &["audit", "verify", "--by", "aud"])).contains("intact"));
    let engine = govshare_core::Engine::open(&store).expect("engine");
    let records = engine.audit().records().expect("records");
    assert!(
        records
            .iter()
            .any(|r| r.kind == "policy" && r.body["chain_hash"] == "sm3"),
        "the choice is recorded"
    );
    drop(engine);
    let b = dir.path().join("b");
    let r = dir.path().join("r");
    ok(&govshare(
        &store,
        &["backup", b.to_str().expect("p"), "--by", "ops"],
    ));
    ok(&govshare(
        &store,
        &[
            "restore",
            b.to_str().expect("p"),
            r.to_str().expect("p"),
            "--by",
            "ops",
        ],
    ));
    assert!(ok(&govshare(&r, &["audit", "verify", "--by", "aud"])).contains("intact"));
    assert_eq!(
        std::fs::read_to_string(r.join("audit/HASH")).expect("HASH"),
        "sm3"
    );
}

/// An open-data release from the command line: the provider's approver publishes a
/// k-anonymous extract and the summary names the generalisation, the suppression and the
/// manifest; `release-check` verifies it; a not-open item and a consumer are refused with
/// the access-denied exit code and nothing written.
#[test]
fn open_data_release_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    let data = dir.path().join("data");
    stat_store(&store, &data);
    add_approver(&store);
    let out = dir.path().join("open");
    let o = out.to_str().expect("p");
    let release = |by: &str, fields: &str| {
        govshare(
            &store,
            &[
                "release",
                "person",
                "--fields",
                fields,
                "--k",
                "5",
                "--max-suppression",
                "0.05",
                "--out",
                o,
                "--by",
                by,
            ],
        )
    };
    for (by, fields) in [("appr", "citizen_id,sex_code"), ("stat", "sex_code")] {
        let refused = release(by, fields);
        assert_eq!(refused.status.code(), Some(5), "access denied");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("access denied"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
        assert!(!out.exists(), "a refusal writes nothing");
    }
    let printed = ok(&release("appr", "hukou_region_code,birth_date,sex_code"));
    assert!(
        printed.contains("of 300 rows of person version 1"),
        "{printed}"
    );
    assert!(
        printed.contains("generalised: hukou_region_code="),
        "{printed}"
    );
    assert!(printed.contains("information loss"), "{printed}");
    let manifest = out.join("person.open.parquet.manifest.json");
    let checked = ok(&govshare(
        &store,
        &["release-check", manifest.to_str().expect("p")],
    ));
    assert!(checked.starts_with("ok: "), "{checked}");
    assert!(checked.contains("open_release_done"), "{checked}");
}
