//! Aggregate-only grants (scenario service): only aggregates of one dataset, groups smaller
//! than the grant's minimum suppressed whatever the query says, no use of the key, a daily
//! budget; what it does not prevent (differencing on other fields) stated in the docs.

use govshare_core::access::policy::{AggregateTerms, GrantRequest, Mode, Treatment};
use govshare_core::engine::Engine;
use govshare_core::{Error, Store};

use govshare_testkit::render;

use crate::access::{approve, request, small_store};

fn aggregate_request(purpose: &str, terms: AggregateTerms) -> GrantRequest {
    let mut r = request(
        "A",
        "person",
        &[
            ("citizen_id", Treatment::Clear),
            ("sex_code", Treatment::Clear),
            ("hukou_region_code", Treatment::Clear),
            ("education_code", Treatment::Clear),
            ("birth_date", Treatment::Clear),
        ],
    );
    r.purpose_code = purpose.into();
    r.modes = vec![Mode::Aggregate];
    r.aggregate = Some(terms);
    r
}

fn setup(dir: &std::path::Path) -> (Store, Engine) {
    let store = small_store(dir);
    approve(
        &store,
        aggregate_request(
            "AGG",
            AggregateTerms {
                min_group: 10,
                per_day: 1000,
            },
        ),
        "psb",
    );
    // The same fields for queries, to compare with (purpose Q, department B).
    let mut q = request(
        "B",
        "person",
        &[
            ("sex_code", Treatment::Clear),
            ("hukou_region_code", Treatment::Clear),
            ("education_code", Treatment::Clear),
            ("birth_date", Treatment::Clear),
        ],
    );
    q.purpose_code = "Q".into();
    approve(&store, q, "psb");
    let engine = Engine::open(store.root()).expect("engine");
    (store, engine)
}

/// Groups of at least the minimum come back exactly as a query would compute them; smaller
/// ones are suppressed — also when the query's own HAVING would keep them, in a derived
/// table, a DISTINCT, or a global aggregate over too few rows.
#[test]
fn only_groups_of_at_least_the_minimum_are_answered() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_store, engine) = setup(dir.path());
    let a = engine.session("a", "AGG").expect("aggregate session");
    let b = engine.session("b", "Q").expect("query session");
    let q = "SELECT substr(hukou_region_code, 1, 2) AS province, sex_code, count(*) AS n, \
             min(birth_date) AS oldest FROM person GROUP BY 1, 2";
    let got = render(&a.aggregate(q).expect("aggregate").batches);
    let all = render(&b.sql(q).expect("sql").batches);
    let big = render(
        &b.sql(&format!("SELECT * FROM ({q}) WHERE n >= 10"))
            .expect("sql")
            .batches,
    );
    assert_eq!(got, big, "the groups of 10 or more, as computed");
    assert!(
        got.len() < all.len() && !got.is_empty(),
        "some groups suppressed, some kept ({} of {})",
        got.len(),
        all.len()
    );
    // The query's own HAVING cannot bring small groups back.
    let having = "SELECT education_code, count(*) AS n FROM person GROUP BY 1 HAVING count(*) >= 1";
    let got = render(&a.aggregate(having).expect("having").batches);
    let want = render(
        &b.sql("SELECT education_code, count(*) AS n FROM person GROUP BY 1 HAVING count(*) >= 10")
            .expect("sql")
            .batches,
    );
    assert_eq!(got, want);
    // A derived table and DISTINCT are aggregations too.
    let derived =
        "SELECT n FROM (SELECT hukou_region_code, count(*) AS n FROM person GROUP BY 1) t";
    let got = a.aggregate(derived).expect("derived");
    assert!(
        govshare_testkit::render_cells(&got.batches)
            .iter()
            .all(|r| r[0].parse::<i64>().expect("n") >= 10)
    );
    let distinct = a
        .aggregate("SELECT DISTINCT hukou_region_code FROM person")
        .expect("distinct");
    assert!(
        distinct.num_rows()
            < b.sql("SELECT DISTINCT hukou_region_code FROM person")
                .expect("d")
                .num_rows()
    );
    // A global aggregate over fewer than 10 people says nothing.
    let few = a
        .aggregate("SELECT count(*) AS n FROM person WHERE birth_date > DATE '2024-06-01'")
        .expect("few");
    let n_few = b
        .sql("SELECT count(*) AS n FROM person WHERE birth_date > DATE '2024-06-01'")
        .expect("few")
        .num_rows();
    assert_eq!(n_few, 1);
    assert!(
        few.num_rows() == 0
            || govshare_testkit::render_cells(&few.batches)[0][0]
                .parse::<i64>()
                .expect("n")
                >= 10
    );
}

/// What an aggregate-only grant refuses: rows, functions that return rows, the key, joins,
/// unions, subqueries, window functions, EXPLAIN; the daily budget; a query grant does not
/// aggregate through `aggregate`, nor an aggregate grant query through `sql`. Every refusal is
/// recorded.
#[test]
fn aggregate_grants_refuse_rows_the_key_and_more_than_one_read() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, engine) = setup(dir.path());
    // A second factor: the key (an L4 item) is granted in clear, so only the aggregate rules
    // stand between the key and the query.
    let a = engine
        .session_as(&govshare_core::access::policy::Login::new(
            "a",
            "AGG",
            govshare_core::access::policy::AuthMethod::SecondFactor,
        ))
        .expect("aggregate session");
    for (sql, why) in [
        ("SELECT sex_code FROM person", "rows"),
        (
            "SELECT sex_code, array_agg(birth_date) FROM person GROUP BY 1",
            "array_agg",
        ),
        (
            "SELECT string_agg(education_code, ',') FROM person",
            "string_agg",
        ),
        (
            "SELECT count(*) FROM person WHERE citizen_id <> '11010519491231002X'",
            "key",
        ),
        ("SELECT count(DISTINCT citizen_id) FROM person", "key"),
        (
            "SELECT count(*) FROM person p JOIN person q ON p.sex_code = q.sex_code",
            "one dataset",
        ),
        (
            "SELECT count(*) FROM person UNION ALL SELECT count(*) FROM person",
            "one dataset",
        ),
        (
            "SELECT count(*) FROM person WHERE birth_date = (SELECT max(birth_date) FROM person)",
            "one dataset",
        ),
        (
            "SELECT sex_code, count(*) OVER (PARTITION BY sex_code) FROM person",
            "window",
        ),
        ("EXPLAIN SELECT count(*) FROM person", "EXPLAIN"),
    ] {
        match a.aggregate(sql) {
            Err(Error::AccessDenied(m)) => {
                assert!(
                    m.contains("aggregate-only") || m.contains(why),
                    "{sql}: {m}"
                )
            }
            other => panic!("{sql}: not refused ({why}): {other:?}"),
        }
    }
    assert!(matches!(
        a.sql("SELECT count(*) FROM person"),
        Err(Error::AccessDenied(_))
    ));
    let b = engine.session("b", "Q").expect("b");
    assert!(matches!(
        b.aggregate("SELECT count(*) FROM person"),
        Err(Error::AccessDenied(ref m)) if m.contains("Aggregate")
    ));
    let refusals = engine
        .audit()
        .records()
        .expect("records")
        .iter()
        .filter(|r| r.kind == "query" && r.body.get("aggregate").is_some())
        .filter(|r| r.body["outcome"] == "denied")
        .count();
    assert_eq!(refusals, 11);
    // The daily budget.
    approve(
        &store,
        aggregate_request(
            "TWO",
            AggregateTerms {
                min_group: 5,
                per_day: 2,
            },
        ),
        "psb",
    );
    let two = engine.session("a", "TWO").expect("two");
    for _ in 0..2 {
        two.aggregate("SELECT sex_code, count(*) FROM person GROUP BY 1")
            .expect("within the budget");
    }
    let e = two
        .aggregate("SELECT sex_code, count(*) FROM person GROUP BY 1")
        .expect_err("over the budget");
    assert!(
        matches!(e, Error::LimitExceeded(ref m) if m.contains("2 aggregate queries a day")),
        "{e}"
    );
}
