//! Verify mode (核验): match / no match per field under a verify grant, never a value; the
//! grant's scope, fields and mode; quotas that stop enumeration and hold across engines and
//! days; every answer and refusal on the trail.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use chrono::{Datelike, Utc};
use govshare_core::access::policy::{
    AuthMethod, GrantRequest, Login, Mode, Treatment, VerifyTerms,
};
use govshare_core::calendar::ManualClock;
use govshare_core::catalog::MaskKind;
use govshare_core::engine::Engine;
use govshare_core::{Error, Store};

use crate::access::{approve, request, small_store};

fn verify_request(fields: &[&str], terms: VerifyTerms) -> GrantRequest {
    let mut r = request(
        "A",
        "person",
        &fields
            .iter()
            .map(|f| (*f, Treatment::Masked(MaskKind::Nullify)))
            .collect::<Vec<_>>(),
    );
    r.modes = vec![Mode::Verify];
    r.verify = Some(terms);
    // Valid for longer than the days the quota test steps through.
    r.valid_until = Utc::now() + chrono::Duration::days(30);
    r
}

fn terms(per_second: u32, per_day: u32, per_subject: u32, disclose: bool) -> VerifyTerms {
    VerifyTerms {
        per_second,
        per_day,
        per_subject_per_day: per_subject,
        disclose_absence: disclose,
    }
}

/// One claim row: the key, then (field, claimed value or `None` for not claimed).
type Claim<'a> = (&'a str, Vec<(&'a str, Option<&'a str>)>);

/// A claims batch: the key column, then each claimed field.
fn claims(rows: &[Claim<'_>]) -> RecordBatch {
    let mut cols: Vec<(String, ArrayRef)> = vec![(
        "citizen_id".into(),
        Arc::new(StringArray::from(
            rows.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        )),
    )];
    for (i, (field, _)) in rows[0].1.iter().enumerate() {
        let values: Vec<Option<&str>> = rows.iter().map(|(_, c)| c[i].1).collect();
        cols.push((field.to_string(), Arc::new(StringArray::from(values))));
    }
    RecordBatch::try_from_iter(cols).expect("claims")
}

fn answers(b: &RecordBatch, col: &str) -> Vec<Option<bool>> {
    let c = b
        .column_by_name(col)
        .expect("column")
        .as_any()
        .downcast_ref::<BooleanArray>()
        .expect("boolean");
    (0..c.len())
        .map(|i| c.is_valid(i).then(|| c.value(i)))
        .collect()
}

/// (key, name, birth date) of every person, and whether they live in `county`.
fn persons(store: &Store, county: &str) -> Vec<(String, String, chrono::NaiveDate, bool)> {
    let snap = store.snapshot("person").expect("snap");
    let inside = snap.scope("hukou_region_code", county).expect("scope");
    let b = snap
        .read(None, Some(&["citizen_id", "name", "birth_date"]))
        .expect("read");
    let keys = govshare_testkit::strings(&b, 0);
    let names = govshare_testkit::strings(&b, 1);
    let dates: Vec<chrono::NaiveDate> = b
        .iter()
        .flat_map(|b| {
            let d = b
                .column(2)
                .as_any()
                .downcast_ref::<arrow::array::Date32Array>()
                .expect("dates");
            (0..d.len())
                .map(|i| d.value_as_date(i).expect("date"))
                .collect::<Vec<_>>()
        })
        .collect();
    let index = snap.key_index().expect("index");
    keys.into_iter()
        .zip(names)
        .zip(dates)
        .map(|((k, n), d)| {
            let row = index.get(&k).expect("row");
            (k, n, d, inside.contains(row))
        })
        .collect()
}

/// A verify grant answers match / no match on fields the department cannot read at all, for
/// subjects in its scope only, with the comparison rules (spacing, date formats); nothing in
/// the answer is a value; the check is on the trail under the subjects compared.
#[test]
fn verify_answers_match_or_no_match_for_subjects_in_scope_and_never_a_value() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let county = govshare_testkit::largest_county(&store);
    let mut r = verify_request(&["name", "birth_date"], terms(100, 1000, 10, false));
    r.scope = govshare_testkit::regions(&[&county]);
    approve(&store, r, "psb");
    let people = persons(&store, &county);
    let inside = people.iter().find(|p| p.3).expect("someone inside");
    let outside = people.iter().find(|p| !p.3).expect("someone outside");
    let engine = Engine::open(dir.path()).expect("engine");
    let a = engine.session("a", "P").expect("a");
    // No query grant: the department cannot read a name at all.
    assert!(matches!(
        a.sql("SELECT name FROM person"),
        Err(Error::AccessDenied(_))
    ));
    let spaced: String = inside.1.chars().flat_map(|c| [c, ' ']).collect::<String>();
    let d = inside.2;
    let written = format!("{}年{}月{}日", d.year(), d.month(), d.day());
    let batch = claims(&[
        (
            inside.0.as_str(),
            vec![
                ("name", Some(spaced.as_str())),
                ("birth_date", Some(&written)),
            ],
        ),
        (
            inside.0.as_str(),
            vec![
                ("name", Some("不是这个人")),
                ("birth_date", Some("1900-01-01")),
            ],
        ),
        (
            outside.0.as_str(),
            vec![
                ("name", Some(outside.1.as_str())),
                ("birth_date", Some(&outside.2.to_string())),
            ],
        ),
        (
            "11010519491231002X",
            vec![("name", Some("张三")), ("birth_date", Some("1949-12-31"))],
        ),
        (
            inside.0.as_str(),
            vec![("name", None), ("birth_date", Some("not a date"))],
        ),
    ]);
    let got = a.verify("person", &batch).expect("verify");
    assert_eq!(
        answers(&got, "name"),
        vec![Some(true), Some(false), Some(false), Some(false), None]
    );
    assert_eq!(
        answers(&got, "birth_date"),
        vec![
            Some(true),
            Some(false),
            Some(false),
            Some(false),
            Some(false)
        ]
    );
    assert_eq!(
        got.schema().fields().len(),
        2,
        "no `found` column: absence is not disclosed"
    );
    assert!(
        got.schema()
            .fields()
            .iter()
            .all(|f| f.data_type() == &DataType::Boolean),
        "only yes/no"
    );
    // The single-subject form says the same.
    let one = a
        .verify_one("person", &inside.0, &[("name", &inside.1)])
        .expect("one");
    assert_eq!(one.found, None);
    assert_eq!(one.fields, vec![("name".to_string(), true)]);
    // On the trail: the in-scope subject was compared (twice here), the out-of-scope one not.
    let verified = |key: &str| {
        engine
            .who_accessed("aud", key)
            .expect("who")
            .into_iter()
            .filter(|x| x.user == "a" && x.sql.starts_with("verify name"))
            .count()
    };
    assert_eq!(verified(&inside.0), 2);
    assert_eq!(verified(&outside.0), 0);
}

/// Refusals: no verify grant (a query grant is not one), a field outside the verify grant, a
/// malformed request, a grant in query mode used by a verify-only department; each refusal is
/// recorded. A verify grant without limits cannot be made.
#[test]
fn verify_refuses_other_modes_fields_outside_the_grant_and_bad_requests() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    approve(
        &store,
        verify_request(&["name"], terms(100, 1000, 10, false)),
        "psb",
    );
    approve(
        &store,
        request("B", "person", &[("name", Treatment::Clear)]),
        "psb",
    );
    let mut no_terms = verify_request(&["name"], terms(1, 1, 1, false));
    no_terms.verify = None;
    let e = store
        .writer("psb")
        .expect("w")
        .update_policy("approve", |p, c| {
            p.decide_request(c, no_terms, "psb", true, "", Utc::now())
        })
        .expect_err("a verify grant without limits");
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    let people = persons(&store, "110000");
    let key = people[0].0.as_str();
    let engine = Engine::open(dir.path()).expect("engine");
    let refusals = || {
        engine
            .audit()
            .records()
            .expect("records")
            .iter()
            .filter(|r| r.kind == "query" && r.body.get("verify").is_some())
            .filter(|r| r.body["outcome"] != "allowed")
            .count()
    };
    let b = engine.session("b", "P").expect("b");
    let e = b
        .verify_one("person", key, &[("name", "张三")])
        .expect_err("query grant only");
    assert!(
        matches!(e, Error::AccessDenied(ref m) if m.contains("Verify")),
        "{e}"
    );
    let a = engine.session("a", "P").expect("a");
    let e = a
        .verify_one("person", key, &[("mobile_phone", "13800138000")])
        .expect_err("not in the grant");
    assert!(
        matches!(e, Error::AccessDenied(ref m) if m.contains("person.mobile_phone") && !m.contains("13800138000")),
        "{e}"
    );
    let wrong_key = RecordBatch::try_from_iter([
        (
            "name",
            Arc::new(StringArray::from(vec!["张三"])) as ArrayRef,
        ),
        ("citizen_id", Arc::new(StringArray::from(vec![key]))),
    ])
    .expect("batch");
    assert!(matches!(
        a.verify("person", &wrong_key),
        Err(Error::InvalidInput(_))
    ));
    let key_only = RecordBatch::try_from_iter([(
        "citizen_id",
        Arc::new(StringArray::from(vec![key])) as ArrayRef,
    )])
    .expect("batch");
    assert!(matches!(
        a.verify("person", &key_only),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(refusals(), 4, "every refusal is on the trail");
    // A verify grant is not a query grant.
    assert!(matches!(
        a.sql("SELECT count(*) FROM person"),
        Err(Error::AccessDenied(_))
    ));
}

/// Enumeration: guessing IDs stops at the daily quota, repeated guesses at one subject stop
/// at the per-subject limit, a burst stops at the per-second limit; the counts survive a new
/// engine on the store (a restart) and start over on the next Beijing day. Absence is said
/// only when the grant discloses it.
#[test]
fn verify_quotas_stop_enumeration_across_restarts_until_the_next_day() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    approve(
        &store,
        verify_request(&["name"], terms(12, 40, 3, true)),
        "psb",
    );
    let people = persons(&store, "110000");
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let engine = Engine::open_with_clock(dir.path(), clock.clone()).expect("engine");
    let a = engine
        .session_as(&Login::new("a", "P", AuthMethod::Password))
        .expect("a");
    // Guessing: IDs that differ in the sequence digits, ten per request.
    let guesses: Vec<String> = (0..200)
        .map(|i| format!("110105199001{:02}{:03}X", 1 + i % 28, i))
        .collect();
    let mut answered = 0;
    let mut refused = None;
    for (n, chunk) in guesses.chunks(10).enumerate() {
        // A second apart: only the daily quota binds.
        clock.advance(chrono::Duration::seconds(1));
        let rows: Vec<Claim<'_>> = chunk
            .iter()
            .map(|k| (k.as_str(), vec![("name", Some("张三"))]))
            .collect();
        match a.verify("person", &claims(&rows)) {
            Ok(got) => {
                answered += got.num_rows();
                assert!(
                    answers(&got, "found").iter().all(|f| *f == Some(false)),
                    "disclosed: no such subjects"
                );
            }
            Err(e) => {
                refused = Some((n, e));
                break;
            }
        }
    }
    assert_eq!(answered, 40, "the daily quota, no more");
    let (n, e) = refused.expect("refused");
    assert_eq!(n, 4);
    assert!(
        matches!(e, Error::LimitExceeded(ref m) if m.contains("per day")),
        "{e}"
    );
    // A restart does not reset the count.
    drop(a);
    drop(engine);
    let engine = Engine::open_with_clock(dir.path(), clock.clone()).expect("engine again");
    let a = engine.session("a", "P").expect("a");
    assert!(matches!(
        a.verify_one("person", &people[0].0, &[("name", &people[0].1)]),
        Err(Error::LimitExceeded(_))
    ));
    // The next Beijing day: guesses at one real person stop at the per-subject limit.
    clock.advance(chrono::Duration::days(1));
    for _ in 0..3 {
        clock.advance(chrono::Duration::seconds(1));
        let v = a
            .verify_one("person", &people[0].0, &[("name", "李四")])
            .expect("within the per-subject limit");
        assert_eq!(v.found, Some(true));
    }
    let e = a
        .verify_one("person", &people[0].0, &[("name", &people[0].1)])
        .expect_err("4th guess at one subject");
    assert!(
        matches!(e, Error::LimitExceeded(ref m) if m.contains("one subject")),
        "{e}"
    );
    // A burst within one second: the per-second limit.
    clock.advance(chrono::Duration::seconds(1));
    let burst: Vec<Claim<'_>> = people[1..14]
        .iter()
        .map(|p| (p.0.as_str(), vec![("name", Some(p.1.as_str()))]))
        .collect();
    let e = a
        .verify("person", &claims(&burst))
        .expect_err("13 > 12 a second");
    assert!(
        matches!(e, Error::LimitExceeded(ref m) if m.contains("per second")),
        "{e}"
    );
    let got = a
        .verify("person", &claims(&burst[..12]))
        .expect("12 a second");
    assert_eq!(answers(&got, "name"), vec![Some(true); 12]);
    // Every refusal is recorded, with the limit it hit.
    let limits = engine
        .audit()
        .records()
        .expect("records")
        .iter()
        .filter(|r| r.kind == "query" && r.body["outcome"] == "denied")
        .filter(|r| {
            r.body["reason"]
                .as_str()
                .is_some_and(|m| m.contains("limit exceeded"))
        })
        .count();
    assert_eq!(limits, 4);
}

/// The digests a check compares agree with reading the stored values, for every kind of
/// field (text, codes, phone numbers, dates, timestamps, lists): true claims, altered ones and
/// missing ones, for subjects across the table.
#[test]
fn digest_checks_agree_with_reading_the_stored_values() {
    use govshare_core::access::verify::{DigestCache, Verifier};
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let fields = [
        "name",
        "birth_date",
        "hukou_region_code",
        "mobile_phone",
        "updated_at",
        "former_names",
        "death_date",
    ];
    approve(
        &store,
        verify_request(&fields, terms(1000, 1000, 10, true)),
        "psb",
    );
    let policy = store.policy().expect("policy");
    let catalog = store.catalog().expect("catalog");
    let decision = policy
        .decide(
            &catalog,
            &Login::new("a", "P", AuthMethod::Password),
            Mode::Verify,
            Utc::now(),
        )
        .expect("decide");
    let v = Verifier::new(
        store.pinned("person").expect("snap"),
        &decision.datasets()["person"],
        Arc::new(DigestCache::default()),
    )
    .expect("verifier");
    let snap = store.snapshot("person").expect("snap");
    let mut cols = vec!["citizen_id"];
    cols.extend(fields);
    let stored = snap.read(None, Some(&cols)).expect("read");
    let stored = arrow::compute::concat_batches(&stored[0].schema(), &stored).expect("concat");
    // Each field's stored value as text (a list: its first element), then altered or left out.
    let text = |c: usize| -> Vec<Option<String>> {
        let col = stored.column(c);
        match col.as_any().downcast_ref::<arrow::array::ListArray>() {
            Some(l) => (0..l.len())
                .map(|i| {
                    (l.is_valid(i) && !l.value(i).is_empty())
                        .then(|| arrow::compute::cast(&l.value(i), &DataType::Utf8).expect("c"))
                        .map(|v| {
                            v.as_any()
                                .downcast_ref::<StringArray>()
                                .expect("s")
                                .value(0)
                                .to_string()
                        })
                })
                .collect::<Vec<_>>(),
            None => {
                let t = arrow::compute::cast(col, &DataType::Utf8).expect("cast");
                let t = t.as_any().downcast_ref::<StringArray>().expect("s").clone();
                t.iter().map(|x| x.map(str::to_string)).collect()
            }
        }
    };
    let n = stored.num_rows();
    // Every 7th subject, over and over: a batch large enough that its key lookups are split
    // over two threads (and answers must come back in claim order).
    let picked: Vec<usize> = (0..n).step_by(7).cycle().take(5000).collect();
    let mut arrays: Vec<(String, ArrayRef)> = Vec::new();
    for (c, name) in cols.iter().enumerate() {
        let values = text(c);
        let claims: Vec<Option<String>> = picked
            .iter()
            .enumerate()
            .map(|(j, &row)| match (c, j % 3) {
                (0, _) => values[row].clone(),
                (_, 0) => values[row].clone(),
                (_, 1) => values[row].clone().map(|v| format!("{v}9")),
                _ => None,
            })
            .collect();
        arrays.push((name.to_string(), Arc::new(StringArray::from(claims))));
    }
    let batch = RecordBatch::try_from_iter(arrays).expect("claims");
    let (claimed, keys) = v.prepare(&batch).expect("prepare");
    let fast = v.check(&batch, &claimed, &keys).expect("digests");
    let slow = v
        .check_by_reading(&batch, &claimed, &keys)
        .expect("reading");
    assert_eq!(fast.answer, slow.answer);
    assert_eq!(fast.subjects, slow.subjects);
    // And both say what is true: a true claim of a stored value matches, an altered one not.
    let name = answers(&fast.answer, "name");
    assert!(name.iter().step_by(3).all(|a| *a == Some(true)));
    assert!(name.iter().skip(1).step_by(3).all(|a| *a == Some(false)));
    let matched: usize = fields
        .iter()
        .map(|f| {
            answers(&fast.answer, f)
                .iter()
                .filter(|a| **a == Some(true))
                .count()
        })
        .sum();
    assert!(
        matched > picked.len(),
        "every kind of field matched somewhere"
    );
}
