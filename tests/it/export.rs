//! Bulk export: the granted fields and rows, masked as granted, in Parquet, CSV (UTF-8, GBK) or
//! Arrow IPC, with a manifest that verifies and whose digest is on the trail; the row and daily
//! limits of the grant; nothing left behind by a refused export.

use std::path::Path;

use govshare_core::access::policy::{ExportTerms, GrantRequest, Mode, Treatment};
use govshare_core::catalog::MaskKind;
use govshare_core::engine::{Engine, ExportFormat, verify_export};
use govshare_core::{Error, Store};

use govshare_testkit::render;

use crate::access::{approve, request, small_store};
use crate::common::read_parquet;

fn export_request(
    purpose: &str,
    fields: &[(&str, Treatment)],
    modes: Vec<Mode>,
    terms: ExportTerms,
) -> GrantRequest {
    let mut r = request("A", "person", fields);
    r.purpose_code = purpose.into();
    r.modes = modes;
    r.export = Some(terms);
    r
}

fn fields() -> Vec<(&'static str, Treatment)> {
    vec![
        ("citizen_id", Treatment::Masked(MaskKind::CitizenId)),
        ("name", Treatment::Masked(MaskKind::Name)),
        ("sex_code", Treatment::Clear),
        ("hukou_region_code", Treatment::Clear),
    ]
}

fn setup(dir: &Path) -> (Store, String) {
    let store = small_store(dir);
    let county = govshare_testkit::largest_county(&store);
    let mut r = export_request(
        "P",
        &fields(),
        vec![Mode::Query, Mode::Export],
        ExportTerms {
            max_rows: 10_000,
            per_day: 10,
        },
    );
    r.scope = govshare_testkit::regions(&[&county]);
    approve(&store, r, "psb");
    (store, county)
}

/// Every format carries exactly the rows and masked values the same grant shows in SQL; the
/// manifest verifies, its digest is the trail's, a changed byte is caught; the exported
/// subjects are on the trail; an export never overwrites.
#[test]
fn an_export_carries_what_the_grant_shows_and_its_manifest_verifies() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, county) = setup(&dir.path().join("store"));
    let engine = Engine::open(store.root()).expect("engine");
    let a = engine.session("a", "P").expect("a");
    let shown = a.sql("SELECT * FROM person").expect("sql");
    let want = render(&shown.batches);
    assert!(!want.is_empty());
    let out = dir.path().join("out");
    let mut seen = 0;
    let m = a
        .export("person", ExportFormat::Parquet, &out.join("pq"), &mut |n| {
            seen = n
        })
        .expect("parquet");
    assert_eq!(m.rows as usize, want.len());
    assert_eq!(seen, m.rows, "progress reached the end");
    assert_eq!(
        render(&read_parquet(&out.join("pq/person.parquet"))),
        want,
        "the granted rows, masked as granted"
    );
    let ipc = a
        .export(
            "person",
            ExportFormat::ArrowIpc,
            &out.join("ipc"),
            &mut |_| {},
        )
        .expect("ipc");
    let reader = arrow::ipc::reader::StreamReader::try_new(
        std::fs::File::open(out.join("ipc/person.arrows")).expect("open"),
        None,
    )
    .expect("ipc");
    let batches = reader.collect::<Result<Vec<_>, _>>().expect("batches");
    assert_eq!(render(&batches), want);
    assert_eq!(ipc.rows, m.rows);
    a.export(
        "person",
        ExportFormat::CsvUtf8,
        &out.join("csv"),
        &mut |_| {},
    )
    .expect("csv");
    a.export(
        "person",
        ExportFormat::CsvGbk,
        &out.join("gbk"),
        &mut |_| {},
    )
    .expect("gbk");
    let utf8 = std::fs::read_to_string(out.join("csv/person.csv")).expect("csv");
    let gbk = std::fs::read(out.join("gbk/person.csv")).expect("gbk");
    let (decoded, _, bad) = encoding_rs::GBK.decode(&gbk);
    assert!(!bad);
    assert_eq!(decoded, utf8, "the same rows, in GBK");
    assert_eq!(
        utf8.lines().count(),
        want.len() + 1,
        "a header and the rows"
    );
    assert!(utf8.starts_with("citizen_id,name,sex_code,hukou_region_code"));
    assert!(
        utf8.lines().skip(1).all(|l| l.contains('*')),
        "IDs and names masked"
    );
    // The manifest verifies, and its digest is the one on the trail.
    let (manifest, digest) =
        verify_export(&out.join("pq/person.parquet.manifest.json")).expect("verifies");
    assert_eq!(manifest, m);
    assert_eq!(manifest.fields[0], "citizen_id:CitizenId");
    let records = engine.audit().records().expect("records");
    let exported = records
        .iter()
        .find(|r| r.kind == "export" && r.body["query"] == m.query_seq)
        .expect("the export record");
    assert_eq!(exported.body["manifest_blake3"], digest.as_str());
    // A changed byte in a delivered file is caught.
    let path = out.join("pq/person.parquet");
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&path, &bytes).expect("write");
    assert!(matches!(
        verify_export(&out.join("pq/person.parquet.manifest.json")),
        Err(Error::Corrupt(_))
    ));
    // The exported subjects are on the trail; an out-of-scope one is not.
    let snap = store.snapshot("person").expect("snap");
    let inside = snap.scope("hukou_region_code", &county).expect("scope");
    let keys = govshare_testkit::strings(&snap.read(None, Some(&["citizen_id"])).expect("k"), 0);
    let index = snap.key_index().expect("index");
    let (mut ins, mut outs) = (None, None);
    for k in &keys {
        if inside.contains(index.get(k).expect("row")) {
            ins.get_or_insert(k.clone());
        } else {
            outs.get_or_insert(k.clone());
        }
    }
    let exports = |key: &str| {
        engine
            .who_accessed("aud", key)
            .expect("who")
            .into_iter()
            .filter(|x| x.sql.starts_with("export of person"))
            .count()
    };
    assert_eq!(exports(&ins.expect("inside")), 4);
    assert_eq!(exports(&outs.expect("outside")), 0);
    // Never over an earlier export.
    let e = a
        .export(
            "person",
            ExportFormat::Parquet,
            &out.join("ipc"),
            &mut |_| {},
        )
        .map(drop);
    assert!(e.is_ok(), "another format beside it is fine: {e:?}");
    let e = a
        .export(
            "person",
            ExportFormat::Parquet,
            &out.join("pq"),
            &mut |_| {},
        )
        .expect_err("exists");
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
}

/// Refusals: more rows in scope than the grant's `max_rows`, more exports in a day than its
/// `per_day`, no export grant at all — each recorded, and no file written.
#[test]
fn exports_are_refused_beyond_their_limits_and_without_an_export_grant() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(&dir.path().join("store"));
    let big = ExportTerms {
        max_rows: 10,
        per_day: 100,
    };
    let daily = ExportTerms {
        max_rows: 100_000,
        per_day: 2,
    };
    approve(
        &store,
        export_request("BIG", &fields(), vec![Mode::Export], big),
        "psb",
    );
    approve(
        &store,
        export_request("DAY", &fields(), vec![Mode::Export], daily),
        "psb",
    );
    let mut q = request("A", "person", &fields());
    q.purpose_code = "Q".into();
    approve(&store, q, "psb");
    let engine = Engine::open(store.root()).expect("engine");
    let out = dir.path().join("out");
    let e = engine
        .session("a", "BIG")
        .expect("a")
        .export(
            "person",
            ExportFormat::CsvUtf8,
            &out.join("big"),
            &mut |_| {},
        )
        .expect_err("500 rows > 10");
    assert!(
        matches!(e, Error::LimitExceeded(ref m) if m.contains("at most 10 rows")),
        "{e}"
    );
    assert!(!out.join("big").exists(), "nothing written");
    let day = engine.session("a", "DAY").expect("a");
    for i in 0..2 {
        day.export(
            "person",
            ExportFormat::Parquet,
            &out.join(format!("d{i}")),
            &mut |_| {},
        )
        .expect("within the day's exports");
    }
    let e = day
        .export(
            "person",
            ExportFormat::Parquet,
            &out.join("d2"),
            &mut |_| {},
        )
        .expect_err("a third export today");
    assert!(
        matches!(e, Error::LimitExceeded(ref m) if m.contains("2 exports a day")),
        "{e}"
    );
    assert!(!out.join("d2").exists());
    let e = engine
        .session("a", "Q")
        .expect("a")
        .export("person", ExportFormat::Parquet, &out.join("q"), &mut |_| {})
        .expect_err("a query grant does not export");
    assert!(
        matches!(e, Error::AccessDenied(ref m) if m.contains("Export")),
        "{e}"
    );
    let refusals = engine
        .audit()
        .records()
        .expect("records")
        .iter()
        .filter(|r| r.kind == "query" && r.body.get("export").is_some())
        .filter(|r| r.body["outcome"] == "denied")
        .count();
    assert_eq!(refusals, 3);
}
