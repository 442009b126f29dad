//! Reports for the coordinator and auditors: each table checked against counts computed
//! independently from the audit trail (and against what the test itself did), role scoping,
//! and the rendered page in headless Chromium.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use govshare_core::access::policy::{ApplicationForm, GrantRequest, Mode, RowScope, Treatment};
use govshare_core::calendar::ManualClock;
use govshare_core::engine::{Engine, WorkflowAct as Act};
use govshare_core::{Error, QueryResult};
use govshare_testkit::{COORD, ROOT, render_cells};

use crate::access::small_store;

fn beijing(date: &str) -> DateTime<Utc> {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("date");
    Utc.from_utc_datetime(&d.and_hms_opt(2, 0, 0).expect("time"))
}

fn apply(engine: &Engine, by: &str, dept: &str, field: &str) -> u64 {
    let now = engine.now();
    let form = ApplicationForm {
        request: GrantRequest {
            consumer_dept: dept.into(),
            users: vec![],
            dataset: "person".into(),
            fields: vec![govshare_core::access::policy::FieldGrant {
                field: field.into(),
                treatment: Treatment::Clear,
            }],
            purpose_code: "P".into(),
            purpose_text: "统计分析".into(),
            scope: RowScope::default(),
            modes: vec![Mode::Query],
            verify: None,
            export: None,
            aggregate: None,
            valid_from: now,
            valid_until: now + chrono::Duration::days(30),
        },
        legal_basis: "《统计法》第七条".into(),
    };
    match engine.act(by, Act::Apply { form }).expect("apply") {
        govshare_core::engine::WorkflowOutcome::Application(a) => a.id,
        other => panic!("{other:?}"),
    }
}

/// A platform with activity: department A queries (some refused), B is refused a session,
/// applications pending (one overdue), on Monday 3 March 2025 by the engine's clock.
fn busy() -> (tempfile::TempDir, Engine, ManualClock) {
    let dir = tempfile::tempdir().expect("tmp");
    let _store = small_store(dir.path());
    let clock = ManualClock::new(beijing("2025-03-03"));
    let engine = Engine::open_with_clock(dir.path(), Arc::new(clock.clone())).expect("engine");
    apply(&engine, "a", "A", "sex_code"); // granted at once
    let overdue = apply(&engine, "a2", "A", "name");
    engine
        .act(
            ROOT,
            Act::Complete {
                application: overdue,
            },
        )
        .expect("complete"); // due Thursday 6 March
    apply(&engine, "b", "B", "name"); // waiting for the completeness check
    let s = engine.session("a", "P").expect("session");
    for sql in [
        "SELECT count(*) FROM person",
        "SELECT sex_code FROM person LIMIT 7",
        "SELECT sex_code, count(*) FROM person GROUP BY sex_code",
    ] {
        s.sql(sql).expect("query");
    }
    for sql in ["SELECT name FROM person", "SELECT * FROM legal_entity"] {
        assert!(s.sql(sql).is_err());
    }
    assert!(engine.session("b", "P").is_err());
    clock.set(beijing("2025-03-10"));
    (dir, engine, clock)
}

fn rows(r: &QueryResult) -> Vec<String> {
    render_cells(&r.batches)
        .into_iter()
        .map(|r| r.join("|"))
        .collect()
}

#[test]
fn report_tables_agree_with_counts_computed_from_the_trail() {
    let (_dir, engine, _clock) = busy();
    let records = engine.audit().records().expect("records");

    // usage: recount queries per department/purpose and rows from the trail directly.
    let mut want: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    let rows_of: BTreeMap<u64, u64> = records
        .iter()
        .filter(|r| r.kind == "query_end")
        .map(|r| {
            (
                r.body["query"].as_u64().expect("q"),
                r.body["rows"].as_u64().expect("n"),
            )
        })
        .collect();
    for r in records.iter().filter(|r| r.kind == "query") {
        let dept = match r.body["department"].as_str() {
            Some(d) => d.to_string(),
            None => if r.actor.starts_with('a') { "A" } else { "B" }.to_string(),
        };
        let e = want
            .entry((dept, r.body["purpose"].as_str().expect("p").to_string()))
            .or_default();
        match r.body["outcome"].as_str() {
            Some("allowed") => {
                e.0 += 1;
                e.2 += rows_of.get(&r.seq).copied().unwrap_or(0);
            }
            Some("denied") => e.1 += 1,
            _ => {}
        }
    }
    // And what the test did: three allowed, two refused; 1 + 7 + 2 rows.
    assert_eq!(want[&("A".to_string(), "P".to_string())], (3, 2, 10));
    let got = engine
        .report_sql(
            COORD,
            "SELECT department, purpose, queries, denied, rows FROM usage ORDER BY department, purpose",
        )
        .expect("usage");
    let want_rows: Vec<String> = want
        .iter()
        .map(|((d, p), (q, n, r))| format!("{d}|{p}|{q}|{n}|{r}"))
        .collect();
    assert_eq!(rows(&got), want_rows);

    // denials: every refused record per user and kind.
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &records {
        if r.body["outcome"] == "denied" || r.kind == "policy_denied" || r.kind == "act_denied" {
            *want.entry((r.actor.clone(), r.kind.clone())).or_default() += 1;
        }
    }
    assert_eq!(want[&("a".to_string(), "query".to_string())], 2);
    assert_eq!(want[&("b".to_string(), "session_open".to_string())], 1);
    let got = engine
        .report_sql(
            COORD,
            "SELECT user, kind, attempts FROM denials ORDER BY user, kind",
        )
        .expect("denials");
    let want_rows: Vec<String> = want
        .iter()
        .map(|((u, k), n)| format!("{u}|{k}|{n}"))
        .collect();
    assert_eq!(rows(&got), want_rows);

    // applications: pending and overdue from the policy and the calendar. The one under
    // review was due Thursday 6 March; on Monday 10 March it is two working days late.
    let got = engine
        .report_sql(
            COORD,
            "SELECT applicant, state, pending, due, overdue, working_days_late FROM applications ORDER BY id",
        )
        .expect("applications");
    assert_eq!(
        rows(&got),
        [
            "a|granted|false|NULL|false|NULL",
            "a2|under_review|true|2025-03-06|true|2",
            "b|submitted|true|NULL|false|NULL",
        ]
    );
    // volumes: per user-day, the same rows as usage for that user.
    let got = engine
        .report_sql(COORD, "SELECT user, queries, rows, unusual FROM volumes")
        .expect("volumes");
    assert_eq!(rows(&got), ["a|3|10|false"]);
    // late providers: nothing delivered since 2026 is late on a 2025 clock; the frequencies
    // are the catalog's.
    let got = engine
        .report_sql(
            COORD,
            "SELECT dataset, update_frequency, late FROM late_providers ORDER BY dataset",
        )
        .expect("late");
    assert_eq!(
        rows(&got),
        ["legal_entity|daily|false", "person|real-time|false"]
    );
}

#[test]
fn reports_are_for_coordinators_and_auditors_and_every_read_is_recorded() {
    let (_dir, engine, clock) = busy();
    for who in ["a", "psb", ROOT, "ghost"] {
        assert!(
            matches!(
                engine.report_sql(who, "SELECT * FROM usage"),
                Err(Error::AccessDenied(_))
            ),
            "{who}"
        );
    }
    // An auditor's own acts are not in what they read.
    engine
        .report_sql("aud", "SELECT * FROM usage")
        .expect("auditor");
    let own = engine
        .report_sql("aud", "SELECT count(*) FROM denials WHERE user = 'aud'")
        .expect("auditor");
    assert_eq!(rows(&own), ["0"]);
    // The closed surface applies: no files, no catalog functions.
    assert!(
        engine
            .report_sql(COORD, "SELECT * FROM read_parquet('/etc/passwd')")
            .is_err()
    );
    // Late providers show once the clock passes the declared frequency.
    clock.set(Utc::now() + chrono::Duration::days(3));
    let late = engine
        .report_sql(
            COORD,
            "SELECT dataset FROM late_providers WHERE late ORDER BY dataset",
        )
        .expect("late");
    assert_eq!(rows(&late), ["legal_entity", "person"]);
    let recorded = engine
        .audit()
        .records()
        .expect("r")
        .iter()
        .filter(|r| r.kind == "report_query")
        .count();
    assert_eq!(recorded, 8);
}

/// The browser the rendering test drives: `GOVSHARE_CHROMIUM`, or Debian's `chromium`
/// (scripts/test.sh installs it).
fn chromium() -> String {
    let bin = std::env::var("GOVSHARE_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "the report rendering test needs headless Chromium: install Debian's `chromium` (scripts/test.sh does) or set GOVSHARE_CHROMIUM"
    );
    bin
}

#[test]
fn the_html_report_renders_in_headless_chromium_with_its_charts_drawn() {
    let (dir, engine, _clock) = busy();
    let html = engine.report_html(COORD).expect("html");
    assert!(matches!(
        engine.report_html("a"),
        Err(Error::AccessDenied(_))
    ));
    let page = dir.path().join("report.html");
    std::fs::write(&page, &html).expect("write");
    let profile = tempfile::tempdir().expect("profile");
    let out = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let attr = |name: &str| -> usize {
        let at = dom
            .find(&format!("{name}=\""))
            .unwrap_or_else(|| panic!("{name} missing: the page's script did not run"));
        dom[at + name.len() + 2..]
            .split('"')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("number")
    };
    // Bars: 1 department + 3 application states + 2 users refused + 1 user with rows.
    assert_eq!(attr("data-bars"), 7);
    assert_eq!(
        attr("data-bars-drawn"),
        7,
        "every bar laid out with a width"
    );
    for heading in [
        "Usage per department",
        "Applications pending",
        "Denied attempts",
        "Unusual volumes",
    ] {
        assert!(dom.contains(heading), "{heading}");
    }
}
