//! Bound parameters: `$1`-style placeholders whose values are bound into the checked plan,
//! never pasted into the SQL — through the Rust door here, the command line in `cli`, C in
//! `ffi/tests/c/test_api.c` and Python in `python/tests/test_params.py`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::common::ScalarValue;
use govshare_core::access::policy::{AuthMethod, Login, Treatment};
use govshare_core::catalog::MaskKind;
use govshare_core::{Engine, Error};

use crate::access::{approve, request, small_store};

/// A value that turns `citizen_id = '<value>'` into a condition true for every row, if pasted.
const INJECTION: &str = "' OR '1'='1";

fn text_params(rows: &[&[&str]]) -> RecordBatch {
    let columns: Vec<(String, ArrayRef)> = (0..rows[0].len())
        .map(|c| {
            let values: Vec<&str> = rows.iter().map(|r| r[c]).collect();
            (
                format!("${}", c + 1),
                Arc::new(StringArray::from(values)) as ArrayRef,
            )
        })
        .collect();
    RecordBatch::try_from_iter(columns).expect("params")
}

fn count(r: &govshare_core::engine::QueryResult) -> i64 {
    r.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("count")
        .value(0)
}

/// Citizen IDs in clear are sensitive: a second-factor login.
fn login() -> Login {
    Login::new("a", "P", AuthMethod::SecondFactor)
}

fn setup(dir: &std::path::Path) -> (Engine, Vec<String>) {
    let store = small_store(dir);
    approve(
        &store,
        request(
            "A",
            "person",
            &[
                ("citizen_id", Treatment::Clear),
                ("sex_code", Treatment::Clear),
                ("birth_date", Treatment::Clear),
                ("name", Treatment::Masked(MaskKind::Name)),
            ],
        ),
        "psb",
    );
    let engine = Engine::open(dir).expect("engine");
    let ids = engine
        .session_as(&login())
        .expect("session")
        .sql("SELECT citizen_id FROM person ORDER BY citizen_id LIMIT 3")
        .expect("ids");
    let ids = ids.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("text")
        .iter()
        .flatten()
        .map(str::to_string)
        .collect();
    (engine, ids)
}

/// A bound value is compared as a value: the classic injection finds nobody, where the same
/// text pasted into the SQL would have matched every row.
#[test]
fn a_bound_value_is_a_value_never_sql() {
    let dir = tempfile::tempdir().expect("tmp");
    let (engine, ids) = setup(dir.path());
    let s = engine.session_as(&login()).expect("session");
    let sql = "SELECT count(*) FROM person WHERE citizen_id = $1";
    assert_eq!(
        count(&s.sql_params(sql, &text_params(&[&[&ids[0]]])).expect("one")),
        1
    );
    assert_eq!(
        count(
            &s.sql_params(sql, &text_params(&[&[INJECTION]]))
                .expect("injection")
        ),
        0,
        "the injection is just a citizen ID nobody has"
    );
    // What splicing would have done (the reason for binding).
    let spliced = s
        .sql(&format!(
            "SELECT count(*) FROM person WHERE citizen_id = '{INJECTION}'"
        ))
        .expect("spliced");
    assert!(count(&spliced) > 1, "spliced, it matches everyone");
    // A value cannot close a string or start a statement either.
    let e = text_params(&[&["x'); DROP TABLE person; --"]]);
    assert_eq!(count(&s.sql_params(sql, &e).expect("drop")), 0);
}

/// Values take the type their place asks for (text to a date here); several rows run as one
/// statement whose result holds every row's answer; the gate still decides on the fields.
#[test]
fn rows_of_parameters_run_as_one_statement_under_the_same_gate() {
    let dir = tempfile::tempdir().expect("tmp");
    let (engine, ids) = setup(dir.path());
    let s = engine.session_as(&login()).expect("session");
    let r = s
        .sql_params(
            "SELECT citizen_id, name FROM person WHERE citizen_id = $1",
            &text_params(&[&[&ids[0]], &[&ids[2]], &["110101190001010000"]]),
        )
        .expect("three rows");
    let mut got: Vec<String> = r
        .batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("s");
            (0..c.len())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    got.sort();
    assert_eq!(got, vec![ids[0].clone(), ids[2].clone()]);
    // Masks apply to what comes back, exactly as without parameters.
    let name_of = |r: &govshare_core::engine::QueryResult, id: &str| -> Option<String> {
        r.batches.iter().find_map(|b| {
            let ids = b.column(0).as_any().downcast_ref::<StringArray>()?;
            let names = b.column(1).as_any().downcast_ref::<StringArray>()?;
            (0..b.num_rows())
                .find(|&i| ids.value(i) == id)
                .map(|i| names.value(i).to_string())
        })
    };
    let plain = s
        .sql(&format!(
            "SELECT citizen_id, name FROM person WHERE citizen_id = '{}'",
            ids[0]
        ))
        .expect("plain");
    let masked = name_of(&plain, &ids[0]).expect("plain name");
    assert!(masked.contains('*'), "the name is masked: {masked}");
    assert_eq!(name_of(&r, &ids[0]), Some(masked));
    // Text to a date; two placeholders.
    let n = s
        .sql_params(
            "SELECT count(*) FROM person WHERE birth_date >= $1 AND sex_code = $2",
            &text_params(&[&["1900-01-01", "1"]]),
        )
        .expect("typed");
    assert!(count(&n) > 0);
    // A field outside the grant is refused with parameters as without.
    let e = s
        .sql_params(
            "SELECT count(*) FROM person WHERE mobile_phone = $1",
            &text_params(&[&["13800000000"]]),
        )
        .expect_err("not granted");
    assert!(matches!(e, Error::AccessDenied(_)), "{e}");
}

/// Mistakes in binding are typed errors that name the placeholder, never the value.
#[test]
fn binding_mistakes_are_invalid_input_without_the_value() {
    let dir = tempfile::tempdir().expect("tmp");
    let (engine, _) = setup(dir.path());
    let s = engine.session_as(&login()).expect("session");
    let invalid = |r: govshare_core::Result<govshare_core::engine::QueryResult>, says: &str| {
        let e = r.expect_err(says);
        assert!(matches!(e, Error::InvalidInput(_)), "{says}: {e}");
        assert!(e.to_string().contains(says), "{e}");
        assert!(!e.to_string().contains("secret-value"), "{e}");
    };
    invalid(
        s.sql("SELECT count(*) FROM person WHERE citizen_id = $1"),
        "bind one value",
    );
    invalid(
        s.sql_params(
            "SELECT count(*) FROM person WHERE citizen_id = $1",
            &text_params(&[&["a", "b"]]),
        ),
        "2 parameter column(s)",
    );
    invalid(
        s.sql_params(
            "SELECT count(*) FROM person WHERE birth_date > $1",
            &text_params(&[&["secret-value"]]),
        ),
        "$1 must be Date32",
    );
    invalid(
        s.sql_params(
            "SELECT count(*) FROM person WHERE citizen_id = $2",
            &text_params(&[&["secret-value"]]),
        ),
        "$1 is missing",
    );
    // A placeholder is a value, never a name: it cannot stand for a table.
    assert!(
        s.sql_params("SELECT * FROM $1", &text_params(&[&["person"]]))
            .is_err()
    );
}

/// The trail keeps the SQL with its placeholders and the values' keyed digests — never the
/// values themselves.
#[test]
fn the_trail_keeps_the_sql_and_the_digests_not_the_values() {
    let dir = tempfile::tempdir().expect("tmp");
    let (engine, ids) = setup(dir.path());
    let s = engine.session_as(&login()).expect("session");
    let sql = "SELECT sex_code FROM person WHERE citizen_id = $1";
    s.sql_params(sql, &text_params(&[&[&ids[1]]]))
        .expect("query");
    drop(s);
    let records = engine.audit().records().expect("records");
    let q = records
        .iter()
        .rev()
        .find(|r| r.kind == "query" && r.body["sql"] == sql)
        .expect("the query's record");
    assert_eq!(q.body["outcome"], "allowed");
    assert_eq!(q.body["params"]["rows"], 1);
    let digest = engine.parameter_digest(&ScalarValue::Utf8(Some(ids[1].clone())));
    assert_eq!(q.body["params"]["digests"][0][0], digest.as_str());
    assert_ne!(
        digest,
        engine.parameter_digest(&ScalarValue::Utf8(Some(ids[0].clone())))
    );
    // No byte of the audit directory holds the bound citizen ID.
    for entry in crate::common::files_under(&dir.path().join("audit")) {
        let bytes = std::fs::read(&entry).expect("read");
        assert!(
            !bytes.windows(ids[1].len()).any(|w| w == ids[1].as_bytes()),
            "{} holds the value",
            entry.display()
        );
    }
}
