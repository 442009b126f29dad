//! The C ABI from C: `ffi/examples/query.c`, the user guide's program (`docs/guide/platform.md`)
//! and `ffi/tests/c/test_api.c` are compiled with the
//! system C compiler against `libgovshare.so` and run (the test program under valgrind when
//! it is installed, failing on any memory error or definite leak). The security cases in
//! `ffi/tests/c/cases.txt` must give the same rows and errors through C as through Rust.

use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use govshare_core::Engine;
use govshare_core::access::policy::{
    AggregateTerms, AuthMethod, ExportTerms, Login, Mode, Role, RowScope, VerifyTerms,
};
use govshare_core::catalog::MaskKind;
use govshare_core::ingest::{Encoding, write_csv};
use govshare_core::synth::Synth;
use govshare_testkit as testkit;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put `libgovshare.so` for this test: beside the test binary in `deps/` (a test
/// build does not copy it up to `target/<profile>/` as `cargo build` does).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let deps = exe.parent().expect("deps dir");
    [Some(deps), deps.parent()]
        .into_iter()
        .flatten()
        .find(|d| d.join("libgovshare.so").exists())
        .unwrap_or(deps)
        .to_path_buf()
}

fn compile(src: &Path, out: &Path) {
    let lib = lib_dir();
    assert!(
        lib.join("libgovshare.so").exists(),
        "libgovshare.so not found in {}",
        lib.display()
    );
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-pthread"])
        .arg("-I")
        .arg(manifest_dir().join("include"))
        .arg(src)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lgovshare", "-o"])
        .arg(out)
        .status()
        .expect("run the C compiler (cc)");
    assert!(status.success(), "compiling {} failed", src.display());
}

/// A store with persons and the principals of the cases: alice (CIVIL) with grants FULL,
/// MASK (masked identity), CTY (one county), VER (verify names), EXP (export sex codes), AGG (aggregates of
/// sex codes) and PSH (a change feed); bob
/// (TAX) with none.
fn fixture(dir: &Path) -> PathBuf {
    let root = dir.join("store");
    let store = testkit::generated_store(&root, 9, 1500, 0, 256);
    let county = testkit::largest_county(&store);
    let engine = Engine::open(&root).expect("engine");
    engine
        .writer(testkit::ROOT)
        .expect("writer")
        .update_policy("C test principals", |p, _| {
            testkit::add_principals(
                p,
                "430000",
                &[
                    ("PSB", "省公安厅"),
                    ("CIVIL", "省民政厅"),
                    ("TAX", "省税务局"),
                ],
                &[
                    ("appr", "PSB", Role::ProviderApprover),
                    ("alice", "CIVIL", Role::Consumer),
                    ("bob", "TAX", Role::Consumer),
                ],
            )
        })
        .expect("principals");
    let identity = ["citizen_id", "name", "sex_code", "hukou_region_code"];
    let masked = [
        ("citizen_id", MaskKind::CitizenId),
        ("name", MaskKind::Name),
        ("mobile_phone", MaskKind::Phone),
    ];
    let grants = [
        ("FULL", testkit::fields(&identity, &[]), RowScope::default()),
        (
            "MASK",
            testkit::fields(&["sex_code"], &masked),
            RowScope::default(),
        ),
        (
            "CTY",
            testkit::fields(&identity, &[]),
            testkit::regions(&[&county]),
        ),
    ];
    for (purpose, fields, scope) in grants {
        let request = testkit::request("CIVIL", "person", purpose, fields, scope);
        engine
            .decide_request("appr", request, true, "")
            .expect("grant");
    }
    // VER: name may be checked, never read; absence disclosed; at most 3 checks of a subject
    // a day.
    let mut verify = testkit::request(
        "CIVIL",
        "person",
        "VER",
        testkit::fields(&["name"], &[]),
        RowScope::default(),
    );
    verify.modes = vec![Mode::Verify];
    verify.verify = Some(VerifyTerms {
        per_second: 1000,
        per_day: 1000,
        per_subject_per_day: 3,
        disclose_absence: true,
    });
    engine
        .decide_request("appr", verify, true, "")
        .expect("verify grant");
    // EXP: sex_code may be exported, 5 exports a day.
    let mut export = testkit::request(
        "CIVIL",
        "person",
        "EXP",
        testkit::fields(&["sex_code"], &[]),
        RowScope::default(),
    );
    export.modes = vec![Mode::Export];
    export.export = Some(ExportTerms {
        max_rows: 100_000,
        per_day: 5,
    });
    engine
        .decide_request("appr", export, true, "")
        .expect("export grant");
    // AGG: aggregates of sex_code, groups of at least 100.
    let mut agg = testkit::request(
        "CIVIL",
        "person",
        "AGG",
        testkit::fields(&["sex_code"], &[]),
        RowScope::default(),
    );
    agg.modes = vec![Mode::Aggregate];
    agg.aggregate = Some(AggregateTerms {
        min_group: 100,
        per_day: 10,
    });
    engine
        .decide_request("appr", agg, true, "")
        .expect("aggregate grant");
    // PSH: a change feed of citizen_id and sex_code.
    let mut push = testkit::request(
        "CIVIL",
        "person",
        "PSH",
        testkit::fields(&["citizen_id", "sex_code"], &[]),
        RowScope::default(),
    );
    push.modes = vec![Mode::Push];
    engine
        .decide_request("appr", push, true, "")
        .expect("push grant");
    root
}

/// What the Rust API gives for each case, in the C program's output format.
fn rust_outcomes(store: &Path, cases: &str) -> String {
    let engine = Engine::open(store).expect("engine");
    let mut out = String::new();
    let opts = FormatOptions::default().with_null("NULL");
    let cases = cases
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    for (n, line) in cases.enumerate() {
        let mut parts = line.splitn(3, '|');
        let (user, purpose, sql) = (
            parts.next().expect("user"),
            parts.next().expect("purpose"),
            parts.next().expect("sql"),
        );
        // The C program opens second-factor sessions for the cases too.
        let login = Login::new(user, purpose, AuthMethod::SecondFactor);
        let result = engine.session_as(&login).and_then(|s| s.sql(sql));
        match result {
            Ok(r) => {
                out.push_str(&format!("CASE {n} GS_OK\n"));
                for b in &r.batches {
                    let cols: Vec<ArrayFormatter> = b
                        .columns()
                        .iter()
                        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).expect("fmt"))
                        .collect();
                    for row in 0..b.num_rows() {
                        let cells: Vec<String> =
                            cols.iter().map(|c| c.value(row).to_string()).collect();
                        out.push_str(&cells.join("\t"));
                        out.push('\n');
                    }
                }
            }
            Err(e) => {
                let name = govshare::status_of(&e).name().to_string_lossy();
                out.push_str(&format!("CASE {n} {name}\nMSG {e}\n"));
            }
        }
    }
    out
}

#[test]
fn c_example_and_c_test_program() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = fixture(dir.path());
    let cases_path = manifest_dir().join("tests/c/cases.txt");
    let cases = std::fs::read_to_string(&cases_path).expect("cases");
    let expected = rust_outcomes(&store, &cases);
    let csv = dir.path().join("persons.csv");
    write_csv(&csv, Synth::new(3, 300, 0).persons(300), Encoding::Utf8).expect("csv");

    // The integrator's example: a query that works, and one that is denied (exit code 5).
    let example = dir.path().join("query");
    compile(&manifest_dir().join("examples/query.c"), &example);
    let run = |sql: &str| {
        Command::new(&example)
            .arg(&store)
            .args(["alice", "FULL", sql])
            .output()
            .expect("run example")
    };
    let ok = run("SELECT citizen_id, sex_code FROM person ORDER BY citizen_id LIMIT 3");
    let text = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("citizen_id\tsex_code\n") && text.contains("(3 rows)"),
        "{text}"
    );
    let denied = run("SELECT marital_status_code FROM person");
    let text = String::from_utf8_lossy(&denied.stdout);
    assert_eq!(denied.status.code(), Some(5), "{text}");
    assert!(
        text.contains("denied: access denied: field person.marital_status_code"),
        "{text}"
    );

    // The user guide's C program (docs/guide/platform.md), as printed there.
    let guide = std::fs::read_to_string(manifest_dir().join("../docs/guide/platform.md"))
        .expect("the platform guide");
    let program = guide
        .split("```c\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a C program in the platform guide");
    let src = dir.path().join("guide.c");
    std::fs::write(&src, program).expect("write guide.c");
    let bin = dir.path().join("guide");
    compile(&src, &bin);
    let out = Command::new(&bin)
        .arg(&store)
        .args(["alice", "FULL"])
        .output()
        .expect("run the guide's program");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("refused: access denied: field person.marital")
            && text.contains("found 3 of 3"),
        "{text}"
    );

    // The test program, under valgrind when available.
    let test = dir.path().join("test_api");
    compile(&manifest_dir().join("tests/c/test_api.c"), &test);
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let valgrind = Command::new("valgrind").arg("--version").output().is_ok();
    let mut cmd = if valgrind {
        let mut c = Command::new("valgrind");
        c.args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            "--show-leak-kinds=definite,indirect",
        ])
        .arg(&test);
        c
    } else {
        Command::new(&test)
    };
    let out = cmd
        .arg(&store)
        .arg(&cases_path)
        .arg(&csv)
        .arg(&scratch)
        .output()
        .expect("run test_api");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "test_api failed ({:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    assert!(stdout.contains("OK all"), "{stdout}");
    if valgrind {
        assert!(
            stderr.contains("ERROR SUMMARY: 0 errors"),
            "valgrind: {stderr}"
        );
    }
    // Same rows and errors through C as through Rust.
    let c_cases: String = stdout
        .split_inclusive('\n')
        .take_while(|l| !l.starts_with("OK cases"))
        .collect();
    assert_eq!(c_cases, expected);
    // The cases cover allowed, masked, scoped and denied outcomes.
    for kind in ["GS_OK", "GS_ACCESS_DENIED"] {
        assert!(expected.contains(kind), "{expected}");
    }
}
