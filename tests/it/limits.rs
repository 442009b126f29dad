//! Bounded queries: the memory, recursion and time limits of the store's settings, and
//! cancellation from another thread — each a typed error and a recorded outcome — and an
//! EXPLAIN that says nothing about what lies outside the scope.

use std::time::Duration;

use govshare_core::access::policy::{AuthMethod, Login, Treatment};
use govshare_core::engine::Engine;
use govshare_core::store::{QueryLimits, Settings};
use govshare_core::{Error, Store};
use govshare_testkit::{ROOT, render};

use crate::access::{approve, request, small_store};

/// A second-factor login of `user` for purpose P (the grants below hold the citizen ID in
/// clear, a sensitive item).
fn strong(user: &str) -> Login {
    Login::new(user, "P", AuthMethod::SecondFactor)
}

/// A store where `a` (department A) may read sex_code and citizen_id of every person.
fn setup(dir: &std::path::Path) -> (Store, Engine) {
    let store = small_store(dir);
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
    let engine = Engine::open(dir).expect("engine");
    (store, engine)
}

fn set_limits(store: &Store, limits: QueryLimits) {
    store
        .writer(ROOT)
        .expect("w")
        .update_settings(Settings { query: limits }, "test limits")
        .expect("settings");
}

/// The outcome the last completion record gives.
fn last_outcome(engine: &Engine) -> String {
    engine
        .audit()
        .records()
        .expect("records")
        .iter()
        .rev()
        .find(|r| r.kind == "query_end")
        .map(|r| r.body["outcome"].as_str().unwrap_or_default().to_string())
        .expect("a completion record")
}

const FOREVER: &str =
    "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t";
/// 500³ rows of string concatenation: far longer than any limit below.
const SLOW: &str =
    "SELECT max(x.sex_code || y.sex_code || z.sex_code) FROM person x, person y, person z";

#[test]
fn a_runaway_recursion_stops_at_the_depth_limit() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, engine) = setup(dir.path());
    let s = engine.session_as(&strong("a")).expect("session");
    match s.sql(FOREVER) {
        Err(Error::LimitExceeded(m)) => assert!(m.contains("recursion depth limit of 100"), "{m}"),
        other => panic!("an endless recursion was not stopped: {other:?}"),
    }
    assert_eq!(last_outcome(&engine), "limit_exceeded");
    let fifty = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 50) SELECT count(*) FROM t";
    assert_eq!(
        render(&s.sql(fifty).expect("within the limit").batches),
        ["50"]
    );
    set_limits(
        &store,
        QueryLimits {
            recursion_depth: 10,
            ..Default::default()
        },
    );
    match s.sql(fifty) {
        Err(Error::LimitExceeded(m)) => assert!(m.contains("limit of 10"), "{m}"),
        other => panic!("the store's setting was not applied: {other:?}"),
    }
}

#[test]
fn a_query_stops_at_the_memory_limit() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, engine) = setup(dir.path());
    set_limits(
        &store,
        QueryLimits {
            memory_bytes: 16 << 20,
            ..Default::default()
        },
    );
    let s = engine.session_as(&strong("a")).expect("session");
    // 250,000 distinct 378-character groups: about 90 MiB of hash table, and no spilling.
    let wide = "SELECT repeat(x.citizen_id, 20) || y.citizen_id AS k, count(*) \
                FROM person x, person y GROUP BY 1";
    match s.sql(wide) {
        Err(Error::LimitExceeded(m)) => assert!(m.contains("Resources exhausted"), "{m}"),
        other => panic!(
            "the memory limit did not hold: {:?}",
            other.map(|r| r.num_rows())
        ),
    }
    assert_eq!(last_outcome(&engine), "limit_exceeded");
    s.sql("SELECT count(*) FROM person")
        .expect("a small query still runs");
}

#[test]
fn a_query_stops_at_the_time_limit() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, engine) = setup(dir.path());
    set_limits(
        &store,
        QueryLimits {
            time_limit_ms: 300,
            ..Default::default()
        },
    );
    let s = engine.session_as(&strong("a")).expect("session");
    let t = std::time::Instant::now();
    match s.sql(SLOW) {
        Err(Error::LimitExceeded(m)) => assert!(m.contains("time limit of 0.3 s"), "{m}"),
        other => panic!("the time limit did not hold: {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(last_outcome(&engine), "limit_exceeded");
    // The audit queries run under the same limits.
    // 90⁴ rows from a recursion within the depth limit.
    let slow_audit = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 90) \
                      SELECT max(a.n * b.n * c.n * d.n) FROM t a, t b, t c, t d";
    match engine.audit_sql("aud", slow_audit) {
        Err(Error::LimitExceeded(m)) => assert!(m.contains("time limit"), "{m}"),
        other => panic!("the audit query ran unbounded: {other:?}"),
    }
}

#[test]
fn a_query_is_cancelled_from_another_thread() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_store, engine) = setup(dir.path());
    let s = engine.session_as(&strong("a")).expect("session");
    let canceller = s.canceller();
    let t = std::time::Instant::now();
    let result = std::thread::scope(|scope| {
        let run = scope.spawn(|| s.sql(SLOW));
        std::thread::sleep(Duration::from_millis(300));
        canceller.cancel();
        run.join().expect("join")
    });
    assert!(matches!(result, Err(Error::Interrupted)), "{result:?}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(last_outcome(&engine), "cancelled");
    // Later queries of the same session run normally.
    assert_eq!(
        render(&s.sql("SELECT count(*) FROM person").expect("next").batches),
        ["500"]
    );
}

/// The async stream of `Session::sql_async` keeps the iterator's bounds: while the plan has
/// nothing ready its timer looks at the time limit and at the session's cancel, so a slow
/// query stops at either, with a typed error and the outcome on its completion record.
#[test]
fn an_async_query_stops_at_the_time_limit_and_when_cancelled() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().expect("tmp");
    let (store, engine) = setup(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let s = engine.session_as(&strong("a")).expect("session");
    // Far longer than either bound; a stream that never looked would be stopped here.
    fn bounded<T>(rt: &tokio::runtime::Runtime, f: impl std::future::Future<Output = T>) -> T {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), f)
                .await
                .expect("the async query ran past its bounds")
        })
    }
    set_limits(
        &store,
        QueryLimits {
            time_limit_ms: 300,
            ..Default::default()
        },
    );
    let first = bounded(&rt, async {
        let mut stream = s.sql_async(SLOW).await.expect("planned");
        StreamExt::next(&mut stream).await
    });
    match first {
        Some(Err(Error::LimitExceeded(m))) => assert!(m.contains("time limit of 0.3 s"), "{m}"),
        other => panic!("the time limit did not hold: {other:?}"),
    }
    assert_eq!(last_outcome(&engine), "limit_exceeded");
    set_limits(&store, QueryLimits::default());
    let canceller = s.canceller();
    let t = std::time::Instant::now();
    let first = bounded(&rt, async {
        let mut stream = s.sql_async(SLOW).await.expect("planned");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            canceller.cancel();
        });
        StreamExt::next(&mut stream).await
    });
    assert!(matches!(first, Some(Err(Error::Interrupted))), "{first:?}");
    // Seen within a tick or so, not when the plan next produces something (minutes here).
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(last_outcome(&engine), "cancelled");
}

#[test]
fn limits_are_the_platform_administrators_and_checked() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _engine) = setup(dir.path());
    let change = |by: &str, limits: QueryLimits| {
        store
            .writer(by)
            .expect("w")
            .update_settings(Settings { query: limits }, "x")
    };
    assert!(matches!(
        change("a", QueryLimits::default()),
        Err(Error::AccessDenied(m)) if m.contains("platform-admin")
    ));
    assert!(matches!(
        change(
            ROOT,
            QueryLimits {
                time_limit_ms: 0,
                ..Default::default()
            }
        ),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(store.settings().expect("s"), Settings::default());
}

/// EXPLAIN of the same query is the same text for a principal scoped to one county and one
/// with the whole country, and stays the same after a load: no version, file or row counts.
#[test]
fn explain_says_nothing_about_what_lies_outside_the_scope() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let county = govshare_testkit::largest_county(&store);
    approve(
        &store,
        request("A", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    let mut r = request("B", "person", &[("sex_code", Treatment::Clear)]);
    r.scope = govshare_testkit::regions(&[&county]);
    approve(&store, r, "psb");
    let engine = Engine::open(dir.path()).expect("engine");
    let q = "EXPLAIN SELECT sex_code, count(*) FROM person GROUP BY sex_code";
    let explain = |user: &str| {
        render(
            &engine
                .session(user, "P")
                .expect("s")
                .sql(q)
                .expect("q")
                .batches,
        )
    };
    let national = explain("a");
    assert_eq!(national, explain("b"));
    store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .compact("person")
        .expect("a new version");
    assert_eq!(national, explain("b"));
}
