//! The service modes beyond SQL on a loaded store: verify (核验) — one subject's claims, and
//! batches of claims — and bulk export.
//!
//! ```sh
//! cargo bench --bench services                          # 1M persons
//! GOVSHARE_BENCH_ROWS=10000000 cargo bench --bench services
//! ```
//! `single` is `Session::verify_one` as a host calls it: the gate in verify mode, the quota
//! charged (a locked counter file), the opening record durable before the answer, the subject's
//! stored values read through the key index and row blocks. `single_no_audit` is the same
//! decision, quota and comparison without the trail (the engine has no unaudited path; this
//! bench assembles it). `batch_10k` is one `Session::verify` of 10,000 claims (one durable
//! record for the batch); `batch_10k_no_audit` the same without the trail, and
//! `batch_10k_compare_only` only the comparison of a prepared request. `export/parquet` and `export/csv` export the whole table's granted
//! fields (two masked) under an export grant, into a fresh directory each time.
//! `feed/initial` is a push subscription's first delivery (every subject as an insert);
//! `feed/catch_up_10k_updates` the delivery after an incremental load updated 10,000 subjects.

use std::hint::black_box;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, StringArray};
use arrow::record_batch::RecordBatch;
use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use govshare_core::Engine;
use govshare_core::access::policy::{AuthMethod, Login, Mode, Role, RowScope, VerifyTerms};
use govshare_core::access::quota;
use govshare_core::access::verify::Verifier;
use govshare_testkit as testkit;

fn rows() -> usize {
    std::env::var("GOVSHARE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn verify(c: &mut Criterion) {
    let n = rows();
    let dir = tempfile::tempdir().expect("tmp");
    let store = testkit::generated_store(dir.path(), 42, n, 0, 32 * 1024);
    testkit::principals(
        &store,
        "430000",
        &[("PSB", "省公安厅"), ("D", "bench dept")],
        &[
            ("appr", "PSB", Role::ProviderApprover),
            ("u", "D", Role::Consumer),
        ],
    );
    let mut r = testkit::request(
        "D",
        "person",
        "V",
        testkit::fields(&["name", "birth_date"], &[]),
        RowScope::default(),
    );
    r.modes = vec![Mode::Verify];
    // Limits far above what the bench asks: it measures the checks, not the refusals. The
    // per-subject limit is below the daily one, so every check updates its subject's counter
    // (the largest table: 4M slots).
    r.verify = Some(VerifyTerms {
        per_second: u32::MAX,
        per_day: u32::MAX,
        per_subject_per_day: 1_000_000,
        disclose_absence: false,
    });
    let mut x = testkit::request(
        "D",
        "person",
        "X",
        testkit::fields(
            &["sex_code", "hukou_region_code"],
            &[
                ("citizen_id", govshare_core::catalog::MaskKind::CitizenId),
                ("name", govshare_core::catalog::MaskKind::Name),
                ("birth_date", govshare_core::catalog::MaskKind::DateToYear),
            ],
        ),
        RowScope::default(),
    );
    x.modes = vec![Mode::Export];
    x.export = Some(govshare_core::access::policy::ExportTerms {
        max_rows: u64::MAX,
        per_day: u32::MAX,
    });
    let mut f = testkit::request(
        "D",
        "person",
        "F",
        testkit::fields(&["citizen_id", "sex_code", "hukou_region_code"], &[]),
        RowScope::default(),
    );
    f.modes = vec![Mode::Push];
    testkit::approve(&store, "appr", vec![r, x, f]);
    let snap = store.snapshot("person").expect("snap");
    let people = snap
        .read(None, Some(&["citizen_id", "name", "birth_date"]))
        .expect("read");
    // Every 97th person, up to 10,000: subjects spread over the whole table.
    let (mut keys, mut names, mut dates) = (Vec::new(), Vec::new(), Vec::new());
    for b in &people {
        let (k, nm) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
        );
        let d = arrow::compute::cast(b.column(2), &arrow::datatypes::DataType::Utf8).expect("d");
        let d = d.as_string::<i32>();
        for i in (0..b.num_rows()).step_by(97) {
            keys.push(k.value(i).to_string());
            names.push(nm.value(i).to_string());
            dates.push(d.value(i).to_string());
        }
    }
    keys.truncate(10_000);
    let batch = RecordBatch::try_from_iter([
        (
            "citizen_id",
            Arc::new(StringArray::from(keys.clone())) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from(names[..keys.len()].to_vec())),
        ),
        (
            "birth_date",
            Arc::new(StringArray::from(dates[..keys.len()].to_vec())),
        ),
    ])
    .expect("claims");
    let engine = Engine::open(dir.path()).expect("engine");
    let login = Login::new("u", "V", AuthMethod::Password);
    let s = engine.session_as(&login).expect("session");

    let mut g = c.benchmark_group(format!("verify/{n}"));
    let mut i = 0usize;
    g.bench_function("single", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(
                s.verify_one(
                    "person",
                    &keys[i],
                    &[("name", &names[i]), ("birth_date", &dates[i])],
                )
                .expect("verify"),
            )
        })
    });
    let one = |i: usize| batch.slice(i, 1);
    let cache = std::sync::Arc::new(govshare_core::access::verify::DigestCache::default());
    g.bench_function("single_no_audit", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let policy = store.policy_shared().expect("policy");
            let catalog = store.catalog_shared().expect("catalog");
            let decision = policy
                .decide(&catalog, &login, Mode::Verify, Utc::now())
                .expect("decide");
            let access = &decision.datasets()["person"];
            let v = Verifier::new(store.pinned("person").expect("snap"), access, cache.clone())
                .expect("v");
            let claims = one(i);
            let (claimed, canon) = v.prepare(&claims).expect("prepare");
            let tag = quota::subject_tag(&[7; 32], canon[0].as_deref().unwrap_or_default());
            quota::charge(store.root(), 0, &v.terms(), Utc::now(), &[tag]).expect("quota");
            black_box(v.check(&claims, &claimed, &canon).expect("check"))
        })
    });
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.sample_size(10);
    g.bench_function("batch_10k", |b| {
        b.iter(|| black_box(s.verify("person", &batch).expect("verify")))
    });
    // The batch's parts, to see where its time goes: the comparison alone (a prepared
    // verifier), and with the decision, the request's shape and the quota (no trail).
    // The decision and the verifier, as `Session::verify` makes them (without the trail).
    let prepared = || {
        let policy = store.policy_shared().expect("policy");
        let catalog = store.catalog_shared().expect("catalog");
        let decision = policy
            .decide(&catalog, &login, Mode::Verify, Utc::now())
            .expect("decide");
        let v = Verifier::new(
            store.pinned("person").expect("snap"),
            &decision.datasets()["person"],
            cache.clone(),
        )
        .expect("v");
        let (claimed, canon) = v.prepare(&batch).expect("prepare");
        (v, claimed, canon)
    };
    let (v, claimed, canon) = prepared();
    g.bench_function("batch_10k_compare_only", |b| {
        b.iter(|| black_box(v.check(&batch, &claimed, &canon).expect("check")))
    });
    g.bench_function("batch_10k_no_audit", |b| {
        b.iter(|| {
            let (v, claimed, canon) = prepared();
            let tags: Vec<u64> = canon
                .iter()
                .map(|k| quota::subject_tag(&[7; 32], k.as_deref().unwrap_or_default()))
                .collect();
            quota::charge(store.root(), 0, &v.terms(), Utc::now(), &tags).expect("quota");
            black_box(v.check(&batch, &claimed, &canon).expect("check"))
        })
    });
    g.finish();

    let x = engine
        .session_as(&Login::new("u", "X", AuthMethod::Password))
        .expect("export session");
    let mut g = c.benchmark_group(format!("export/{n}"));
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    for (name, format) in [
        ("parquet", govshare_core::engine::ExportFormat::Parquet),
        ("csv", govshare_core::engine::ExportFormat::CsvUtf8),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || tempfile::tempdir().expect("tmp"),
                |out| {
                    black_box(
                        x.export("person", format, out.path(), &mut |_| {})
                            .expect("export"),
                    )
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    g.finish();

    // The change feed: the first delivery (every subject as an insert), then a catch-up after
    // an incremental load of 10,000 updates spread over the table.
    let feed = engine
        .session_as(&Login::new("u", "F", AuthMethod::SecondFactor))
        .expect("feed session");
    let mut g = c.benchmark_group(format!("feed/{n}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("initial", |b| {
        b.iter(|| black_box(feed.changes("person").expect("changes")))
    });
    let first = feed.changes("person").expect("changes");
    feed.ack("person", first.to).expect("ack");
    let ids: roaring::RoaringBitmap = keys
        .iter()
        .map(|k| snap.lookup(k).expect("lookup").expect("present"))
        .collect();
    let rows = snap.read(Some(&ids), None).expect("rows");
    let rows = arrow::compute::concat_batches(&rows[0].schema(), &rows).expect("concat");
    let sex = rows.schema().index_of("sex_code").expect("sex");
    let flipped: Vec<&str> = rows
        .column(sex)
        .as_string::<i32>()
        .iter()
        .map(|v| if v == Some("1") { "2" } else { "1" })
        .collect();
    let mut cols: Vec<ArrayRef> =
        vec![Arc::new(StringArray::from(vec!["upsert"; rows.num_rows()]))];
    let mut fields = vec![arrow::datatypes::Field::new(
        "_op",
        arrow::datatypes::DataType::Utf8,
        false,
    )];
    for (i, (fl, col)) in rows
        .schema()
        .fields()
        .iter()
        .zip(rows.columns())
        .enumerate()
    {
        fields.push(fl.as_ref().clone());
        cols.push(if i == sex {
            Arc::new(StringArray::from(flipped.clone()))
        } else {
            col.clone()
        });
    }
    let upserts =
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols).expect("batch");
    store
        .writer(testkit::OPS)
        .expect("writer")
        .load(
            "person",
            govshare_core::ingest::Source::Batches(vec![upserts]),
            &govshare_core::ingest::LoadOptions {
                mode: govshare_core::ingest::LoadMode::Incremental,
                ..Default::default()
            },
        )
        .expect("incremental load");
    let caught = feed.changes("person").expect("catch-up");
    assert_eq!(
        caught.result.num_rows(),
        keys.len(),
        "one update per changed subject"
    );
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("catch_up_10k_updates", |b| {
        b.iter(|| black_box(feed.changes("person").expect("changes")))
    });
    g.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
