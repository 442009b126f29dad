//! The audit trail end to end: one record per decision, fail closed, crash safety, and
//! who-accessed against a brute-force recomputation.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};

use govshare_core::access::policy::{RowScope, Treatment};
use govshare_core::audit::{AuditLog, Verdict, verify};
use govshare_core::catalog::CatalogFile;
use govshare_core::engine::Engine;
use govshare_core::ingest::{LoadOptions, Source};
use govshare_core::synth::Synth;
use govshare_core::{Error, Store};

use crate::access::{approve, request, small_store};

fn kinds(engine: &Engine) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in engine.audit().records().expect("records") {
        *m.entry(r.kind).or_default() += 1;
    }
    m
}

fn delta(
    before: &BTreeMap<String, usize>,
    after: &BTreeMap<String, usize>,
) -> BTreeMap<String, usize> {
    let was = |k: &String| *before.get(k).unwrap_or(&0);
    after
        .iter()
        .filter(|(k, v)| **v > was(k))
        .map(|(k, v)| (k.clone(), v - was(k)))
        .collect()
}

fn one(k: &str) -> BTreeMap<String, usize> {
    BTreeMap::from([(k.to_string(), 1)])
}

#[test]
fn every_decision_produces_exactly_one_record_with_its_content() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let engine = Engine::open(dir.path()).expect("engine");
    let mut before = kinds(&engine);
    let mut step = |what: &dyn Fn(), want: BTreeMap<String, usize>| {
        what();
        let after = kinds(&engine);
        assert_eq!(delta(&before, &after), want);
        before = after;
    };
    step(
        &|| {
            approve(
                &store,
                request(
                    "A",
                    "person",
                    &[
                        ("sex_code", Treatment::Clear),
                        ("citizen_id", Treatment::Clear),
                    ],
                ),
                "psb",
            );
        },
        one("policy"),
    );
    step(
        &|| {
            let _ = store.writer("a").expect("w").update_policy("x", |p, c| {
                p.grant_on_request(
                    c,
                    request("A", "person", &[("name", Treatment::Clear)]),
                    "a",
                    chrono::Utc::now(),
                )
            });
        },
        one("policy_denied"),
    );
    // A second-factor login: the grant holds the citizen ID (grade L4) in clear.
    let login = govshare_core::access::policy::Login::new(
        "a",
        "P",
        govshare_core::access::policy::AuthMethod::SecondFactor,
    );
    let s = engine.session_as(&login).expect("session");
    assert_eq!(delta(&before, &kinds(&engine)), one("session_open"));
    before = kinds(&engine);
    let r = s
        .sql("SELECT sex_code, count(*) FROM person GROUP BY sex_code")
        .expect("q");
    let after = kinds(&engine);
    assert_eq!(
        delta(&before, &after),
        BTreeMap::from([("query".into(), 1), ("query_end".into(), 1)])
    );
    before = after;
    let recs = engine.audit().records().expect("records");
    let (q, end) = (&recs[recs.len() - 2], &recs[recs.len() - 1]);
    assert_eq!(
        (
            q.actor.as_str(),
            q.body["purpose"].as_str(),
            q.body["department"].as_str()
        ),
        ("a", Some("P"), Some("A"))
    );
    assert_eq!(
        q.body["datasets"]["person"]["fields"],
        serde_json::json!(["citizen_id", "sex_code"])
    );
    assert!(q.body["datasets"]["person"]["grant"].as_u64().is_some());
    assert_eq!(end.body["query"].as_u64(), Some(q.seq));
    assert_eq!(end.body["rows"].as_u64(), Some(r.num_rows() as u64));
    assert_eq!(
        end.body["subjects"]["person"]["rows_read"].as_u64(),
        Some(500)
    );
    assert_eq!(end.body["result_blake3"].as_str().map(str::len), Some(64));
    assert!(end.body["duration_ms"].as_f64().is_some());
    // A denied query: one record, with the reason, and no completion.
    assert!(s.sql("SELECT name FROM person").is_err());
    let after = kinds(&engine);
    assert_eq!(delta(&before, &after), one("query"));
    before = after;
    let last = engine.audit().records().expect("r").pop().expect("last");
    assert_eq!(last.body["outcome"], "denied");
    assert!(
        last.body["reason"]
            .as_str()
            .expect("reason")
            .contains("person.name")
    );
    drop(s);
    assert_eq!(delta(&before, &kinds(&engine)), one("session_close"));
    before = kinds(&engine);
    assert!(engine.session("nobody", "P").is_err());
    assert_eq!(delta(&before, &kinds(&engine)), one("session_open"));
    before = kinds(&engine);
    let gdp = r#"{"datasets":[{"name":"gdp","label":"GDP","key":"k","provider":"统计局","fields":[{"name":"k","label":"k","type":"utf8","nullable":false,"share":"unconditional","grade":"L1"}]}]}"#;
    store
        .writer(govshare_testkit::ROOT)
        .expect("w")
        .apply_catalog(CatalogFile::parse(gdp, false, "t").expect("p"), "add")
        .expect("apply");
    assert_eq!(delta(&before, &kinds(&engine)), one("catalog"));
    before = kinds(&engine);
    store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load(
            "person",
            Source::Batches(Synth::new(3, 50, 0).persons(50).collect()),
            &LoadOptions::default(),
        )
        .expect("load");
    assert_eq!(delta(&before, &kinds(&engine)), one("load"));
    let load = engine.audit().records().expect("r").pop().expect("last");
    assert_eq!(load.body["handover"]["rows_accepted"].as_u64(), Some(50));
    assert!(matches!(
        verify(&dir.path().join("audit"), None).expect("verify"),
        Verdict::Intact { .. }
    ));
}

#[test]
fn a_failing_audit_store_fails_the_query_before_any_result() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    approve(
        &store,
        request("A", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    let engine = Engine::open(dir.path()).expect("engine");
    let s = engine.session("a", "P").expect("session");
    s.sql("SELECT count(*) FROM person")
        .expect("works while the trail works");
    // The trail's current segment becomes unwritable (a directory where the file was).
    let audit = dir.path().join("audit");
    let seg = std::fs::read_dir(&audit)
        .expect("dir")
        .map(|e| e.expect("e").path())
        .find(|p| p.to_string_lossy().ends_with(".log"))
        .expect("segment");
    let kept = std::fs::read(&seg).expect("read");
    std::fs::remove_file(&seg).expect("rm");
    std::fs::create_dir(&seg).expect("mkdir");
    let err = s
        .sql("SELECT count(*) FROM person")
        .expect_err("no audit, no query");
    assert!(!matches!(err, Error::AccessDenied(_)), "{err}");
    assert!(
        s.sql_stream("SELECT sex_code FROM person").is_err(),
        "no stream either"
    );
    assert!(
        futures::executor::block_on(s.sql_async("SELECT sex_code FROM person")).is_err(),
        "nor an async one"
    );
    std::fs::remove_dir(&seg).expect("rmdir");
    std::fs::write(&seg, kept).expect("restore");
    // The failure latches for this process: the trail stays closed until reopened.
    assert!(s.sql("SELECT count(*) FROM person").is_err());
}

/// Queries through `Session::sql_async` are answered and recorded like `Session::sql`: the
/// same rows, an opening record per query (durable before its stream is returned) and a
/// completion record naming it with the rows returned — with 64 of them in flight at once on
/// two threads, their opening records group-committed together.
#[test]
fn async_queries_are_answered_and_recorded_like_sync_ones_many_at_once() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    approve(
        &store,
        request(
            "A",
            "person",
            &[
                ("sex_code", Treatment::Clear),
                ("birth_date", Treatment::Clear),
            ],
        ),
        "psb",
    );
    let engine = Engine::open(dir.path()).expect("engine");
    let s = engine.session("a", "P").expect("session");
    let sql = "SELECT sex_code, count(*), min(birth_date) FROM person GROUP BY 1 ORDER BY 1";
    let want = govshare_testkit::render(&s.sql(sql).expect("sync").batches);
    let before = engine.audit().records().expect("records").len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    // A host spawns these on its own runtime: the future must be `Send`.
    fn sendable<F: std::future::Future + Send>(f: F) -> F {
        f
    }
    let answers = rt.block_on(futures::future::join_all((0..64).map(|_| async {
        let stream = sendable(s.sql_async(sql)).await.expect("allowed");
        let batches: Vec<_> = StreamExt::map(stream, |b| b.expect("batch"))
            .collect()
            .await;
        govshare_testkit::render(&batches)
    })));
    for got in &answers {
        assert_eq!(got, &want);
    }
    let records = engine.audit().records().expect("records");
    let new = &records[before..];
    let opened: Vec<u64> = new
        .iter()
        .filter(|r| r.kind == "query" && r.body["sql"] == sql)
        .map(|r| {
            assert_eq!(r.body["outcome"], "allowed");
            assert_eq!(
                r.body["datasets"]["person"]["fields"]
                    .as_array()
                    .map(Vec::len),
                Some(2)
            );
            r.seq
        })
        .collect();
    assert_eq!(opened.len(), 64);
    for seq in &opened {
        let end = new
            .iter()
            .find(|r| r.kind == "query_end" && r.body["query"] == *seq)
            .expect("a completion record for every async query");
        assert_eq!(end.body["outcome"], "completed");
        assert_eq!(end.body["rows"], want.len() as u64);
    }
}

/// The child side of the kill test: appends from 4 threads forever, printing each
/// acknowledged sequence number. Only active when the parent sets the variable.
#[test]
fn child_appender() {
    let Ok(dir) = std::env::var("GOVSHARE_AUDIT_CHILD_DIR") else {
        return;
    };
    let log = std::sync::Arc::new(AuditLog::open(&dir).expect("open"));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let seq = log
                        .append("query", "child", serde_json::json!({ "t": t, "i": i }))
                        .expect("append");
                    println!("ack {seq}");
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

#[test]
fn sigkill_mid_append_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().expect("tmp");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "audit::child_appender",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("GOVSHARE_AUDIT_CHILD_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().expect("stdout");
        let mut acked = 0u64;
        for line in std::io::BufReader::new(out).lines() {
            let line = line.expect("line");
            if let Some(n) = line.strip_prefix("ack ") {
                acked = acked.max(n.parse().expect("seq"));
                if acked >= 300 * (round + 1) {
                    break;
                }
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        // Reopening recovers (and records) any torn tail; every acknowledged record is there
        // and the chain verifies.
        let log = AuditLog::open(dir.path()).expect("reopen");
        let records = log.records().expect("records");
        assert!(
            records.len() as u64 >= acked,
            "round {round}: {} records < {acked} acknowledged",
            records.len()
        );
        assert!(matches!(
            verify(dir.path(), None).expect("verify"),
            Verdict::Intact { .. }
        ));
    }
}

#[test]
fn who_accessed_matches_a_brute_force_recomputation() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let snap = store.snapshot("person").expect("snap");
    let regions = crate::common::strings(
        &snap.read(None, Some(&["hukou_region_code"])).expect("r"),
        "hukou_region_code",
    );
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &regions {
        *counts.entry(&r[..2]).or_default() += 1;
    }
    let big = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(p, _)| format!("{p}0000"))
        .expect("province");
    // A: national; B: one province; A2 (same dept as A) runs under A's grant.
    approve(
        &store,
        request(
            "A",
            "person",
            &[
                ("sex_code", Treatment::Clear),
                ("hukou_region_code", Treatment::Clear),
            ],
        ),
        "psb",
    );
    let mut r = request("B", "person", &[("sex_code", Treatment::Clear)]);
    r.scope = RowScope {
        regions: Some(vec![big.clone()]),
        subjects: None,
    };
    approve(&store, r, "psb");
    let engine = Engine::open(dir.path()).expect("engine");
    let runs = [
        ("a", "SELECT count(*) FROM person"),
        (
            "b",
            "SELECT sex_code, count(*) FROM person GROUP BY sex_code",
        ),
        ("a2", "SELECT count(*) FROM person WHERE sex_code = '1'"),
        ("b", "SELECT count(*) FROM person WHERE sex_code = '2'"),
    ];
    for (user, sql) in runs {
        engine.session(user, "P").expect("s").sql(sql).expect("q");
    }
    // Brute force: without a predicate the scan emits every in-scope row; with one, it
    // evaluates the predicate on every in-scope row of each row group its statistics cannot
    // rule out. Here each province is one file of one row group (all in scope for both
    // principals), so a `sex_code = 'v'` query reads a subject exactly when the subject is
    // in scope and someone of the same province has sex code v.
    assert!(
        snap.manifest()
            .files
            .iter()
            .all(|f| f.row_groups.len() == 1)
    );
    let cols = snap
        .read(None, Some(&["citizen_id", "sex_code"]))
        .expect("r");
    let ids = crate::common::strings(&cols, "citizen_id");
    let sexes = crate::common::strings(&cols, "sex_code");
    let has_sex: std::collections::BTreeSet<(&str, &str)> = regions
        .iter()
        .zip(&sexes)
        .map(|(r, s)| (&r[..2], s.as_str()))
        .collect();
    let evaluated = |region: &str, sql: &str| match sql.split_once("sex_code = '") {
        Some((_, v)) => has_sex.contains(&(&region[..2], &v[..1])),
        None => true,
    };
    for (id, region) in ids.iter().zip(&regions).step_by(7) {
        let mut want: Vec<(String, String)> = runs
            .iter()
            .filter(|(u, _)| *u != "b" || region.starts_with(&big[..2]))
            .filter(|(_, q)| evaluated(region, q))
            .map(|(u, q)| (u.to_string(), q.to_string()))
            .collect();
        let mut got: Vec<(String, String)> = engine
            .who_accessed("aud", id)
            .expect("who")
            .into_iter()
            .map(|a| (a.user, a.sql))
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "subject in {region}");
    }
    // LIMIT narrows "read" to the rows the scan actually emitted: never more than asked for.
    engine
        .session("a", "P")
        .expect("s")
        .sql("SELECT sex_code FROM person LIMIT 3")
        .expect("q");
    let end = engine
        .audit()
        .records()
        .expect("r")
        .into_iter()
        .rev()
        .find(|r| r.kind == "query_end")
        .expect("end");
    assert!(
        end.body["subjects"]["person"]["rows_read"]
            .as_u64()
            .expect("n")
            < 500
    );
    assert!(
        engine
            .who_accessed("aud", "110105194912310021")
            .expect("who")
            .is_empty()
    );
    let _ = Store::open(dir.path()).expect("reopen");
}

#[test]
fn auditors_query_the_trail_with_sql_departments_see_only_their_own() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    approve(
        &store,
        request("A", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    approve(
        &store,
        request("B", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    let engine = Engine::open(dir.path()).expect("engine");
    engine
        .session("a", "P")
        .expect("a")
        .sql("SELECT count(*) FROM person")
        .expect("qa");
    engine
        .session("b", "P")
        .expect("b")
        .sql("SELECT count(*) FROM person")
        .expect("qb");
    let q = "SELECT department, count(*) FROM audit_log WHERE kind = 'query' GROUP BY department ORDER BY department";
    let all = govshare_testkit::render(&engine.audit_sql("aud", q).expect("auditor").batches);
    assert_eq!(all, vec!["A | 1".to_string(), "B | 1".to_string()]);
    let own = govshare_testkit::render(&engine.audit_sql("a", q).expect("consumer").batches);
    assert_eq!(own, vec!["A | 1".to_string()]);
    // The same closed surface: no writes to the trail through SQL.
    assert!(matches!(
        engine.audit_sql("aud", "DELETE FROM audit_log"),
        Err(Error::AccessDenied(_))
    ));
    assert!(matches!(
        engine.audit_sql("nobody", q),
        Err(Error::AccessDenied(_))
    ));
    // Auditors' own queries are on the trail too.
    let last = engine.audit().records().expect("r").pop().expect("last");
    assert_eq!(
        (last.kind.as_str(), last.actor.as_str()),
        ("audit_query", "nobody")
    );
}

/// A trail cut short verifies as intact on its own (every remaining record chains); the store's
/// commits anchor the head they saw, so the engine's verification finds the cut without any
/// checkpoint kept outside.
#[test]
fn a_truncated_trail_is_caught_by_the_anchors_in_the_store() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    approve(
        &store,
        request("A", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    let engine = Engine::open(dir.path()).expect("engine");
    assert!(matches!(
        engine.verify_audit("aud", None).expect("verify"),
        Verdict::Intact { .. }
    ));
    let anchor = store
        .policy_history()
        .expect("history")
        .last()
        .and_then(|v| v.anchor.clone())
        .expect("the policy version anchors the trail");
    drop(engine);
    // Cut the trail back to well below the anchor, at a record boundary.
    let seg = store.audit_dir().join("seg-000000000001.log");
    let text = std::fs::read(&seg).expect("segment");
    let keep = anchor.seq as usize - 3;
    let cut = text
        .split_inclusive(|b| *b == b'\n')
        .take(keep)
        .map(<[u8]>::len)
        .sum::<usize>();
    std::fs::write(&seg, &text[..cut]).expect("truncate");
    assert!(
        matches!(
            govshare_core::audit::verify(&store.audit_dir(), None).expect("raw"),
            Verdict::Intact { .. }
        ),
        "on its own the shortened chain is consistent"
    );
    let engine = Engine::open(dir.path()).expect("engine");
    match engine.verify_audit("aud", None).expect("verify") {
        Verdict::Broken { problem, .. } => assert!(problem.contains("checkpoint"), "{problem}"),
        other => panic!("a truncated trail verified: {other:?}"),
    }
}

/// Two processes querying at once, and a third killed mid-query: every completion record
/// points at its own opening record, who-accessed gives exactly the brute-force answer, and
/// the killed query is counted (as unfinished) for every subject in its scope.
#[test]
fn concurrent_processes_and_a_killed_query_keep_who_accessed_exact() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let snap = store.snapshot("person").expect("snap");
    let rows = snap
        .read(None, Some(&["citizen_id", "hukou_region_code"]))
        .expect("r");
    let ids = crate::common::strings(&rows, "citizen_id");
    let regions = crate::common::strings(&rows, "hukou_region_code");
    let prov = format!("{}0000", &regions[0][..2]);
    approve(
        &store,
        request("A", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    let mut r = request("B", "person", &[("sex_code", Treatment::Clear)]);
    r.scope = RowScope {
        regions: Some(vec![prov.clone()]),
        subjects: None,
    };
    approve(&store, r, "psb");
    let sql = |user: &str, q: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_govshare"));
        c.arg("--store")
            .arg(dir.path())
            .args(["sql", "--user", user, "--purpose", "P", q]);
        c
    };
    let runs = |user: &'static str| {
        let sql = &sql;
        move || {
            for i in 0..6 {
                let q = format!("SELECT count(*) FROM person WHERE sex_code <> '{user}{i}'");
                let out = sql(user, &q).output().expect("spawn");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    };
    std::thread::scope(|s| {
        s.spawn(runs("a"));
        s.spawn(runs("b"));
    });
    // A long query of a's (national scope: 500³ rows), killed once its opening record is
    // durable.
    let slow = "SELECT max(x.sex_code || y.sex_code || z.sex_code) FROM person x CROSS JOIN person y CROSS JOIN person z";
    let mut child = sql("a", slow)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let log = AuditLog::open(store.audit_dir()).expect("trail");
    let opened = || {
        log.records()
            .expect("records")
            .iter()
            .any(|r| r.kind == "query" && r.body["sql"] == slow)
    };
    let t = std::time::Instant::now();
    while !opened() {
        assert!(t.elapsed().as_secs() < 60, "the slow query never opened");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // Every completion record names an opening record of the same user.
    let records = log.records().expect("records");
    for end in records.iter().filter(|r| r.kind == "query_end") {
        let q = end.body["query"].as_u64().expect("query");
        let open = records.iter().find(|r| r.seq == q).expect("opening record");
        assert_eq!((open.kind.as_str(), &open.actor), ("query", &end.actor));
    }
    let engine = Engine::open(dir.path()).expect("engine");
    for (id, region) in ids.iter().zip(&regions).step_by(11) {
        let in_b = region.starts_with(&prov[..2]);
        let mut want: Vec<(String, bool)> = (0..6).map(|_| ("a".to_string(), true)).collect();
        want.push(("a".to_string(), false));
        if in_b {
            want.extend((0..6).map(|_| ("b".to_string(), true)));
        }
        let mut got: Vec<(String, bool)> = engine
            .who_accessed("aud", id)
            .expect("who")
            .into_iter()
            .map(|a| (a.user, a.finished))
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "subject in {region}");
    }
}

/// Row-group statistics prune only row groups *every row of which* is live and in scope. What
/// a pushed-down predicate was evaluated on is on the trail (subjects read), so the trail
/// shows which groups were pruned: with a predicate no row satisfies, groups wholly in a
/// province scope are skipped unread, while the groups of a subject-list scope — each also
/// holding rows outside it — are read row by row, so no statistic speaks for those rows.
#[test]
fn statistics_prune_only_row_groups_wholly_in_scope() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = crate::access::store_with(dir.path(), 25_000, 1024);
    let snap = store.snapshot("person").expect("snap");
    let batches = snap
        .read(None, Some(&["citizen_id", "hukou_region_code"]))
        .expect("r");
    let ids = crate::common::strings(&batches, "citizen_id");
    let regions = crate::common::strings(&batches, "hukou_region_code");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &regions {
        *counts.entry(&r[..2]).or_default() += 1;
    }
    let (prov, _) = counts.iter().max_by_key(|(_, n)| **n).expect("province");
    let prov = prov.to_string();
    let in_prov: Vec<&String> = ids
        .iter()
        .zip(&regions)
        .filter(|(_, r)| r.starts_with(&prov))
        .map(|(i, _)| i)
        .collect();
    // Each file holds one province, so the province scope covers whole row groups.
    assert!(
        snap.manifest().files.iter().any(|f| f.row_groups.len() > 1),
        "the fixture must have files of several row groups"
    );
    let fields = [
        ("citizen_id", Treatment::Clear),
        ("birth_date", Treatment::Clear),
        ("hukou_region_code", Treatment::Clear),
    ];
    let mut r = request("A", "person", &fields);
    r.scope = RowScope {
        regions: Some(vec![format!("{prov}0000")]),
        subjects: None,
    };
    approve(&store, r, "psb");
    let listed: Vec<String> = ids.iter().step_by(3989).cloned().collect();
    let mut r = request("B", "person", &fields);
    r.scope = RowScope {
        regions: None,
        subjects: Some(listed.clone()),
    };
    approve(&store, r, "psb");
    let engine = Engine::open(dir.path()).expect("engine");
    let never = "SELECT count(*) FROM person WHERE birth_date > DATE '2999-01-01'";
    for user in ["a", "b"] {
        let n = engine.session(user, "P").expect("s").sql(never).expect("q");
        let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
            n.batches[0].column(0),
        )
        .value(0);
        assert_eq!(n, 0);
    }
    let read_by = |id: &str| -> Vec<String> {
        engine
            .who_accessed("aud", id)
            .expect("who")
            .into_iter()
            .map(|a| a.user)
            .collect()
    };
    for id in in_prov.iter().step_by(50) {
        assert!(
            !read_by(id).contains(&"a".to_string()),
            "a row group wholly in the province scope was judged by its statistics"
        );
    }
    for id in &listed {
        assert_eq!(
            read_by(id),
            vec!["b".to_string()],
            "a listed subject's row group also holds unlisted rows: it is filtered row by row"
        );
    }
    // And an unlisted subject beside them was never evaluated.
    assert!(read_by(&ids[1]).is_empty());
}

/// The subjects a query read are kept three ways — one range of row ids or a short list in
/// the completion record, or a bitmap file whose digest the record holds — and who-accessed
/// answers the same through each; an altered bitmap file is refused, not believed.
#[test]
fn subjects_read_as_a_range_a_list_or_a_bitmap_file_answer_who_accessed_alike() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = crate::access::store_with(dir.path(), 2000, 1024);
    let snap = store.snapshot("person").expect("snap");
    let ids = crate::common::strings(
        &snap.read(None, Some(&["citizen_id"])).expect("r"),
        "citizen_id",
    );
    let fields = [
        ("citizen_id", Treatment::Clear),
        ("sex_code", Treatment::Clear),
    ];
    approve(&store, request("A", "person", &fields), "psb");
    let scattered: Vec<String> = ids.iter().step_by(5).cloned().collect();
    assert!(
        scattered.len() > 256,
        "more scattered ids than a record lists"
    );
    let mut r = request("B", "person", &fields);
    r.scope = RowScope {
        regions: None,
        subjects: Some(scattered.clone()),
    };
    approve(&store, r, "psb");
    let engine = Engine::open(dir.path()).expect("engine");
    let login = |u: &str| {
        govshare_core::access::policy::Login::new(
            u,
            "P",
            govshare_core::access::policy::AuthMethod::SecondFactor,
        )
    };
    let a = engine.session_as(&login("a")).expect("s");
    a.sql("SELECT count(*) FROM person")
        .expect("whole table: one range");
    let two = format!(
        "SELECT sex_code FROM person WHERE citizen_id IN ('{}', '{}')",
        ids[3], ids[1500]
    );
    a.sql(&two).expect("a lookup: a short list");
    engine
        .session_as(&login("b"))
        .expect("s")
        .sql("SELECT count(*) FROM person")
        .expect("scattered scope: a bitmap file");
    let ends: Vec<serde_json::Value> = engine
        .audit()
        .records()
        .expect("records")
        .into_iter()
        .filter(|r| r.kind == "query_end")
        .map(|r| r.body["subjects"]["person"].clone())
        .collect();
    assert!(ends[0].get("row_range").is_some(), "{}", ends[0]);
    assert_eq!(
        ends[1]["row_ids"].as_array().map(Vec::len),
        Some(2),
        "{}",
        ends[1]
    );
    assert!(ends[2].get("bitmap").is_some(), "{}", ends[2]);
    let users = |id: &str| -> Vec<String> {
        let mut u: Vec<String> = engine
            .who_accessed("aud", id)
            .expect("who")
            .into_iter()
            .map(|a| a.user)
            .collect();
        u.sort();
        u
    };
    assert_eq!(users(&ids[3]), ["a", "a"], "range and list");
    assert_eq!(users(&ids[5]), ["a", "b"], "range and bitmap file");
    assert_eq!(users(&ids[6]), ["a"], "in the range only");
    // Alter the bitmap file: who-accessed refuses it instead of answering from it.
    let file = ends[2]["bitmap"].as_str().expect("file");
    let path = dir.path().join("audit").join("subjects").join(file);
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).expect("write");
    assert!(matches!(
        engine.who_accessed("aud", &ids[5]),
        Err(Error::Corrupt(_))
    ));
}

/// A query's completion record reaches the disk on its own, soon, with no later query or
/// flush to carry it — and so does the next round's, after the first delayed flush has run
/// (one delayed flush is scheduled at a time, not one per query).
#[test]
fn completion_records_reach_the_disk_soon_without_a_later_query() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    approve(
        &store,
        request("A", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    let engine = Engine::open(dir.path()).expect("engine");
    let s = engine.session("a", "P").expect("session");
    // What another process sees: the records on disk, not this engine's queue.
    let on_disk = || {
        AuditLog::open(store.audit_dir())
            .expect("trail")
            .records()
            .expect("records")
            .iter()
            .filter(|r| r.kind == "query_end")
            .count()
    };
    let mut want = on_disk();
    for round in 0..2 {
        for _ in 0..3 {
            s.sql("SELECT count(*) FROM person").expect("query");
        }
        want += 3;
        let t = std::time::Instant::now();
        while on_disk() < want {
            assert!(
                t.elapsed().as_secs() < 10,
                "round {round}: completion records still queued"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    drop(s);
    drop(engine);
}
