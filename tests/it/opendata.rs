//! Open data: a public account reads only what the catalog opens; a release holds only open
//! items, is k-anonymous over its quasi-identifiers (checked here from the stored rows, not
//! from what the release says of itself), counts what it suppressed, verifies against its
//! manifest and is on the trail; refusals leave no file and a record.

use std::collections::HashMap;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Date32Type;
use chrono::{Datelike, Utc};
use govshare_core::access::policy::{PrincipalStatus, Role, Treatment, User};
use govshare_core::engine::{Engine, ReleaseSpec, verify_release};
use govshare_core::{Error, Store};

use crate::access::{approve, request, small_store};
use crate::common::read_parquet;

const QUASI: [&str; 3] = ["hukou_region_code", "birth_date", "sex_code"];

fn spec(fields: &[&str], k: u64, max_suppression: f64) -> ReleaseSpec {
    ReleaseSpec {
        dataset: "person".into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        k,
        max_suppression,
    }
}

fn text(b: &RecordBatch, col: &str, row: usize) -> Option<String> {
    let a = b.column_by_name(col).expect("column").as_string::<i32>();
    (!a.is_null(row)).then(|| a.value(row).to_string())
}

/// The label of a stored value at a level, computed here independently of the library.
fn generalise(level: &str, region: &str, day: i32, sex: &str) -> Option<String> {
    let date = chrono::NaiveDate::from_num_days_from_ce_opt(day + 719_163).expect("date");
    match level {
        "county" => Some(region.to_string()),
        "city" => Some(format!("{}00", &region[..4])),
        "province" => Some(format!("{}0000", &region[..2])),
        "day" => Some(date.format("%Y-%m-%d").to_string()),
        "year" => Some(date.year().to_string()),
        "decade" => {
            let y = date.year() / 10 * 10;
            Some(format!("{y}-{}", y + 9))
        }
        "value" => Some(sex.to_string()),
        "withheld" => None,
        other => panic!("unknown level {other}"),
    }
}

type Group = (Option<String>, Option<String>, Option<String>);

/// Release `fields` (the three quasi-identifiers and the nationality) with `k` into `out`
/// and check the extract against the stored rows, generalised here to the manifest's levels:
/// the released groups are exactly those of at least k rows, each row with its own
/// nationality; every other row is counted as suppressed; only the asked items are there and
/// no citizen ID or name is anywhere in the file.
fn check_release(
    store: &Store,
    engine: &Engine,
    out: &Path,
    k: u64,
    max_suppression: f64,
) -> govshare_core::engine::Release {
    let fields = [QUASI[0], QUASI[1], QUASI[2], "nationality_code"];
    let r = engine
        .release_open_data("psb", &spec(&fields, k, max_suppression), out)
        .expect("release");
    let m = &r.manifest;
    assert_eq!(m.fields, fields);
    assert_eq!(m.rows, 500);
    assert_eq!(m.released + m.suppressed, m.rows);
    assert!(m.suppressed as f64 <= max_suppression * 500.0, "{m:?}");
    assert!(m.smallest_group >= k);
    assert_eq!(r.considered.len(), 4 * 4 * 2, "every node of the lattice");
    let levels: Vec<&str> = m.generalisation.iter().map(|(_, l)| l.as_str()).collect();

    let stored = store
        .snapshot("person")
        .expect("snap")
        .read(
            None,
            Some(&[
                "citizen_id",
                "name",
                QUASI[0],
                QUASI[1],
                QUASI[2],
                "nationality_code",
            ]),
        )
        .expect("read");
    let mut want: HashMap<Group, Vec<Option<String>>> = HashMap::new();
    let mut secrets = Vec::new();
    for b in &stored {
        let days = b.column(3).as_primitive::<Date32Type>();
        for i in 0..b.num_rows() {
            let region = text(b, QUASI[0], i).expect("region");
            let sex = text(b, QUASI[2], i).expect("sex");
            let g = (
                generalise(levels[0], &region, days.value(i), &sex),
                generalise(levels[1], &region, days.value(i), &sex),
                generalise(levels[2], &region, days.value(i), &sex),
            );
            want.entry(g)
                .or_default()
                .push(text(b, "nationality_code", i));
            secrets.push(text(b, "citizen_id", i).expect("id"));
            secrets.push(text(b, "name", i).expect("name"));
        }
    }
    let suppressed: usize = want
        .values()
        .filter(|v| v.len() < k as usize)
        .map(Vec::len)
        .sum();
    want.retain(|_, v| v.len() >= k as usize);
    assert_eq!(suppressed as u64, m.suppressed, "suppression is counted");

    let path = out.join("person.open.parquet");
    let released = read_parquet(&path);
    let names: Vec<String> = released[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, fields, "only the released items");
    let mut got: HashMap<Group, Vec<Option<String>>> = HashMap::new();
    for b in &released {
        for i in 0..b.num_rows() {
            let g = (
                text(b, QUASI[0], i),
                text(b, QUASI[1], i),
                text(b, QUASI[2], i),
            );
            got.entry(g)
                .or_default()
                .push(text(b, "nationality_code", i));
        }
    }
    assert!(
        got.values().all(|v| v.len() >= k as usize),
        "every released group holds k rows"
    );
    for v in want.values_mut().chain(got.values_mut()) {
        v.sort();
    }
    assert_eq!(got, want, "exactly the stored rows of groups of k or more");

    let bytes = std::fs::read(&path).expect("bytes");
    for s in &secrets {
        assert!(
            !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
            "a not-open value is in the extract"
        );
    }
    r
}

/// Releases of the person base database (500 generated persons) for several k are
/// k-anonymous over region, birth date and sex (see [`check_release`]), some with rows
/// suppressed; the manifest verifies, its digest is the trail's, and a flipped byte is
/// caught.
#[test]
fn a_release_is_k_anonymous_holds_only_open_items_and_is_on_the_trail() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(&dir.path().join("store"));
    let engine = Engine::open(store.root()).expect("engine");
    let mut suppressed = 0;
    for k in [2, 3, 5, 10, 25] {
        let out = dir.path().join(format!("open{k}"));
        suppressed += check_release(&store, &engine, &out, k, 0.05)
            .manifest
            .suppressed;
    }
    assert!(suppressed > 0, "suppression was exercised");

    let out = dir.path().join("open");
    let r = check_release(&store, &engine, &out, 5, 0.05);
    let m = &r.manifest;
    let manifest = govshare_core::engine::release_manifest_path(&out, "person");
    let (read_back, digest) = verify_release(&manifest).expect("verifies");
    assert_eq!(&read_back, m);
    assert_eq!(digest, r.manifest_blake3);
    let records = engine.audit().records().expect("records");
    let asked = records
        .iter()
        .find(|r| r.kind == "open_release" && r.seq == m.release_seq)
        .expect("the request record");
    assert_eq!(asked.actor, "psb");
    assert_eq!(asked.body["outcome"], "allowed");
    let done = records
        .iter()
        .find(|r| r.kind == "open_release_done" && r.body["release"] == m.release_seq)
        .expect("the completion record");
    assert_eq!(done.body["manifest_blake3"], digest.as_str());
    assert_eq!(done.body["suppressed"], m.suppressed);

    let path = out.join("person.open.parquet");
    let mut flipped = std::fs::read(&path).expect("bytes");
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    std::fs::write(&path, &flipped).expect("write");
    assert!(matches!(verify_release(&manifest), Err(Error::Corrupt(_))));
}

fn open_release_records(engine: &Engine, outcome: &str) -> usize {
    engine
        .audit()
        .records()
        .expect("records")
        .iter()
        .filter(|r| r.kind == "open_release" && r.body["outcome"] == outcome)
        .count()
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Only the provider's approver releases, only open items, and only when k can be reached:
/// a not-open item, another department's approver, a consumer, an unknown user, an item
/// with no hierarchy, an unreachable k and an existing extract are all refused; each refusal
/// is recorded and leaves no file.
#[test]
fn a_release_is_refused_for_not_open_items_other_departments_and_unreachable_k() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(&dir.path().join("store"));
    let engine = Engine::open(store.root()).expect("engine");
    let out = dir.path().join("open");
    let ok = [QUASI[0], QUASI[2]];
    let refusals: Vec<(&str, ReleaseSpec, &str)> = vec![
        ("psb", spec(&[QUASI[0], "citizen_id"], 5, 0.05), "not open"),
        ("psb", spec(&["name", QUASI[2]], 5, 0.05), "not open"),
        ("amr", spec(&ok, 5, 0.05), "provided by department 'PSB'"),
        ("a", spec(&ok, 5, 0.05), "provider-approver role"),
        ("ghost", spec(&ok, 5, 0.05), "unknown user"),
    ];
    for (i, (by, s, why)) in refusals.iter().enumerate() {
        let err = engine.release_open_data(by, s, &out).expect_err("refused");
        assert!(matches!(err, Error::AccessDenied(_)), "{by}: {err}");
        assert!(err.to_string().contains(why), "{by}: {err}");
        assert_eq!(open_release_records(&engine, "denied"), i + 1);
        assert_eq!(files_in(&out), 0, "a refusal writes nothing");
    }
    // More than 500 rows per group with nothing suppressed cannot be reached: the failure is
    // recorded after the allowed request, and nothing is left behind.
    let err = engine
        .release_open_data("psb", &spec(&ok, 501, 0.0), &out)
        .expect_err("unreachable");
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert!(
        err.to_string()
            .contains("no generalisation reaches k = 501"),
        "{err}"
    );
    let records = engine.audit().records().expect("records");
    let last = records.last().expect("record");
    assert_eq!(last.kind, "open_release_done");
    assert_eq!(last.body["outcome"], "failed");
    assert_eq!(files_in(&out), 0);
    // A release never overwrites one already made.
    engine
        .release_open_data("psb", &spec(&ok, 5, 0.05), &out)
        .expect("first");
    let err = engine
        .release_open_data("psb", &spec(&ok, 5, 0.05), &out)
        .expect_err("second");
    assert!(err.to_string().contains("never overwrites"), "{err}");
}

fn add_public(store: &Store) {
    store
        .writer("admin")
        .expect("w")
        .update_policy("public", |p, _| {
            govshare_testkit::add_principals(
                p,
                "430000",
                &[("PUB", "开放平台公众用户")],
                &[("pub", "PUB", Role::Public)],
            )
        })
        .expect("public account");
}

/// A public account reads, under its grants, only what the catalog opens to the public: an
/// unconditionally open item under a grant made on request, a conditionally open one only
/// under the provider's approval, a not-open one never — whatever the grant lists, with a
/// refusal that says why. A public account holds no government role.
#[test]
fn a_public_account_reads_only_open_items() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    add_public(&store);
    let mut asked = request(
        "PUB",
        "person",
        &[
            ("nationality_code", Treatment::Clear),
            ("sex_code", Treatment::Clear),
        ],
    );
    asked.users = vec![];
    store
        .writer("admin")
        .expect("w")
        .update_policy("request", |p, c| {
            p.grant_on_request(c, asked.clone(), "admin", Utc::now())
        })
        .expect("on request");
    let engine = Engine::open(dir.path()).expect("engine");
    let s = engine.session("pub", "P").expect("session");
    let rows = s
        .sql("SELECT nationality_code FROM person")
        .expect("unconditionally open")
        .num_rows();
    assert_eq!(rows, 500);
    let err = s
        .sql("SELECT sex_code FROM person")
        .expect_err("conditionally open, on request");
    assert!(err.to_string().contains("not open to the public"), "{err}");

    // The provider approves sex, region and name: the open ones become readable; the name,
    // not open, stays refused although the grant lists it.
    approve(
        &store,
        request(
            "PUB",
            "person",
            &[
                ("sex_code", Treatment::Clear),
                ("hukou_region_code", Treatment::Clear),
                ("name", Treatment::Clear),
            ],
        ),
        "psb",
    );
    let s = engine.session("pub", "P").expect("session");
    s.sql("SELECT sex_code, hukou_region_code FROM person")
        .expect("conditionally open, approved");
    let err = s.sql("SELECT name FROM person").expect_err("not open");
    assert!(matches!(err, Error::AccessDenied(_)), "{err}");
    assert!(err.to_string().contains("not open to the public"), "{err}");
    // `*` is the open items the grant lists, nothing more.
    let star = s.sql("SELECT * FROM person").expect("star");
    assert_eq!(star.schema.fields().len(), 2, "only the open items");

    let err = store
        .writer("admin")
        .expect("w")
        .update_policy("mixed", |p, _| {
            p.upsert_user(User {
                id: "pub2".into(),
                name: "pub2 实名".into(),
                department: "PUB".into(),
                roles: vec![Role::Public, Role::Consumer],
                status: PrincipalStatus::Active,
            })
        })
        .expect_err("public and consumer");
    assert!(err.to_string().contains("public role only"), "{err}");
}
