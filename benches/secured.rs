//! Secured vs raw: the same queries on the same Parquet files, through govshare's secured scan
//! (grant checked, scope barrier, masks) and through plain DataFusion (`register_parquet`).
//!
//! ```sh
//! cargo bench --bench secured                          # 1M persons
//! GOVSHARE_BENCH_ROWS=10000000 cargo bench --bench secured
//! ```
//! Groups: `full_scan_aggregate`, `filter_project`, `county_scope` (secured with a county
//! grant vs raw with the equivalent WHERE vs raw over the whole table), `region_counts` (counts
//! by city and sex over the whole table, from the indexes), `concurrent_queries` (many small
//! queries at once, from threads and from async tasks, and the trail's capacity while queries
//! run), and `planning`
//! (a query the optimizer empties, so only decision + context + planning are timed; once more
//! with the store on `/dev/shm`, where the trail's sync costs nothing, to show planning apart
//! from the device).
//!
//! Each group has three columns where it makes sense: `secured` (the engine: decision, secured
//! scan, two durable audit records), `secured_no_audit` (the same decision and secured scan
//! registered in a plain DataFusion context by this bench — the engine itself has no unaudited
//! path), and `raw_datafusion`. `secured` − `secured_no_audit` is the audit's cost.

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use govshare_core::Engine;
use govshare_core::access::policy::{AuthMethod, Login, Mode, Role, RowScope};
use govshare_core::access::secured::SecuredTable;
use govshare_core::catalog::ShareType;
use govshare_testkit as testkit;

fn rows() -> usize {
    std::env::var("GOVSHARE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn setup(dir: &std::path::Path, n: usize) -> (Engine, String) {
    let store = testkit::generated_store(dir, 42, n, 0, 32 * 1024);
    let county = testkit::largest_county(&store);
    let def = store.snapshot("person").expect("snap").dataset().clone();
    let shared: Vec<&str> = def
        .fields
        .iter()
        .filter(|f| f.share != ShareType::NotShared)
        .map(|f| f.name.as_str())
        .collect();
    testkit::principals(
        &store,
        "430000",
        &[("PSB", "省公安厅"), ("D", "bench dept")],
        &[
            ("appr", "PSB", Role::ProviderApprover),
            ("u", "D", Role::Consumer),
        ],
    );
    let requests = [
        ("ALL", RowScope::default()),
        ("CTY", testkit::regions(&[&county])),
    ]
    .into_iter()
    .map(|(purpose, scope)| {
        testkit::request("D", "person", purpose, testkit::fields(&shared, &[]), scope)
    })
    .collect();
    testkit::approve(&store, "appr", requests);
    (Engine::open(dir).expect("engine"), county)
}

fn secured(c: &mut Criterion) {
    let n = rows();
    let dir = tempfile::tempdir().expect("tmp");
    let (engine, county) = setup(dir.path(), n);
    // Second-factor logins: the grants hold sensitive items (grade L4) in clear.
    let login = |purpose: &str| Login::new("u", purpose, AuthMethod::SecondFactor);
    let all = engine.session_as(&login("ALL")).expect("session");
    let cty = engine.session_as(&login("CTY")).expect("session");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("rt");
    let raw = SessionContext::new();
    let data = dir.path().join("datasets/person/data");
    rt.block_on(raw.register_parquet(
        "person",
        data.to_str().expect("utf8"),
        ParquetReadOptions::default(),
    ))
    .expect("register");
    // Secured without audit: what `Session::sql` does minus the two audit appends (and minus
    // the digest of the result, which only the audit needs).
    let store = engine.store();
    let run_unaudited = |purpose: &str, q: &str| {
        let policy = store.policy_shared().expect("policy");
        let catalog = store.catalog_shared().expect("catalog");
        let decision = policy
            .decide(&catalog, &login(purpose), Mode::Query, Utc::now())
            .expect("decide");
        let snap = store.pinned("person").expect("snap");
        let table =
            SecuredTable::new(snap, &decision.datasets()["person"], [7; 32]).expect("table");
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_target_partitions(2),
        );
        ctx.register_table("person", std::sync::Arc::new(table))
            .expect("register");
        rt.block_on(async {
            ctx.sql(q)
                .await
                .expect("plan")
                .collect()
                .await
                .expect("run")
        })
    };
    let run_raw = |q: &str| {
        rt.block_on(async {
            raw.sql(q)
                .await
                .expect("plan")
                .collect()
                .await
                .expect("run")
        })
    };

    // A full scan: `count(birth_date)` keeps it off the bitmaps (only `count(*)` is a
    // bitmap's cardinality), so this measures the secured scan itself.
    let q1 = "SELECT sex_code, count(birth_date), min(birth_date), max(birth_date) FROM person GROUP BY sex_code";
    // The peers' q1: counts from bitmaps, min from birth_date alone.
    let q7 = "SELECT substr(hukou_region_code, 1, 2) AS prov, sex_code, count(*) AS n, min(birth_date) AS oldest FROM person GROUP BY 1, 2";
    let q2 = "SELECT citizen_id, name, hukou_address FROM person WHERE birth_date >= DATE '2000-01-01' AND sex_code = '2'";
    let q3 = "SELECT sex_code, count(*) FROM person GROUP BY sex_code";
    let q3_raw = format!(
        "SELECT sex_code, count(*) FROM person WHERE hukou_region_code = '{county}' GROUP BY sex_code"
    );
    let q0 = "SELECT citizen_id FROM person WHERE 1 = 0";
    let key = {
        let b = store
            .snapshot("person")
            .expect("snap")
            .read(
                Some(&[(n as u32) / 3].into_iter().collect()),
                Some(&["citizen_id"]),
            )
            .expect("key");
        datafusion::arrow::array::AsArray::as_string::<i32>(b[0].column(0))
            .value(0)
            .to_string()
    };
    let q4 = format!("SELECT name, hukou_region_code FROM person WHERE citizen_id = '{key}'");
    // Same answers, or the comparison means nothing.
    let rows_of = |b: Vec<datafusion::arrow::array::RecordBatch>| -> usize {
        b.iter().map(|b| b.num_rows()).sum()
    };
    assert_eq!(all.sql(q2).expect("q2").num_rows(), rows_of(run_raw(q2)));
    assert_eq!(
        all.sql(q2).expect("q2").num_rows(),
        rows_of(run_unaudited("ALL", q2))
    );
    assert_eq!(
        govshare_testkit::render(&all.sql(q7).expect("q7").batches),
        govshare_testkit::render(&run_raw(q7)),
        "bitmap aggregate = raw aggregate"
    );

    // The same store once more on /dev/shm, where the trail's sync costs nothing: the engine's
    // whole path minus the device's flush.
    let shm = std::path::Path::new("/dev/shm")
        .is_dir()
        .then(|| tempfile::tempdir_in("/dev/shm").ok())
        .flatten();
    let mem_engine = shm.as_ref().map(|d| setup(d.path(), n).0);
    let mem = mem_engine
        .as_ref()
        .map(|e| e.session_as(&login("ALL")).expect("session"));

    let mut g = c.benchmark_group(format!("full_scan_aggregate/{n}"));
    g.sample_size(10);
    g.bench_function("secured", |b| {
        b.iter(|| black_box(all.sql(q1).expect("q1")))
    });
    if let Some(mem) = &mem {
        g.bench_function("secured_trail_on_tmpfs", |b| {
            b.iter(|| black_box(mem.sql(q1).expect("q1")))
        });
    }
    g.bench_function("secured_no_audit", |b| {
        b.iter(|| black_box(run_unaudited("ALL", q1)))
    });
    g.bench_function("raw_datafusion", |b| b.iter(|| black_box(run_raw(q1))));
    g.finish();

    let mut g = c.benchmark_group(format!("bitmap_aggregate/{n}"));
    g.sample_size(10);
    g.bench_function("secured", |b| {
        b.iter(|| black_box(all.sql(q7).expect("q7")))
    });
    g.bench_function("raw_datafusion", |b| b.iter(|| black_box(run_raw(q7))));
    g.finish();

    let mut g = c.benchmark_group(format!("filter_project/{n}"));
    g.sample_size(10);
    g.bench_function("secured", |b| {
        b.iter(|| black_box(all.sql(q2).expect("q2")))
    });
    g.bench_function("secured_no_audit", |b| {
        b.iter(|| black_box(run_unaudited("ALL", q2)))
    });
    g.bench_function("raw_datafusion", |b| b.iter(|| black_box(run_raw(q2))));
    g.finish();

    let mut g = c.benchmark_group(format!("county_scope/{n}"));
    g.sample_size(20);
    g.bench_function("secured_county_grant", |b| {
        b.iter(|| black_box(cty.sql(q3).expect("q3")))
    });
    g.bench_function("secured_county_no_audit", |b| {
        b.iter(|| black_box(run_unaudited("CTY", q3)))
    });
    g.bench_function("raw_where_county", |b| {
        b.iter(|| black_box(run_raw(&q3_raw)))
    });
    g.bench_function("raw_full_table", |b| b.iter(|| black_box(run_raw(q3))));
    g.finish();

    // Counts by city and sex over the whole table: answered from the region and value indexes.
    let q6 =
        "SELECT left(hukou_region_code, 4) AS city, sex_code, count(*) FROM person GROUP BY 1, 2";
    assert_eq!(
        all.sql(q6).expect("q6").num_rows(),
        rows_of(run_raw(q6)),
        "same groups"
    );
    let mut g = c.benchmark_group(format!("region_counts/{n}"));
    g.sample_size(20);
    g.bench_function("secured", |b| {
        b.iter(|| black_box(all.sql(q6).expect("q6")))
    });
    g.bench_function("raw_datafusion", |b| b.iter(|| black_box(run_raw(q6))));
    g.finish();

    let mut g = c.benchmark_group(format!("point_lookup/{n}"));
    assert_eq!(all.sql(&q4).expect("q4").num_rows(), 1);
    g.bench_function("secured", |b| {
        b.iter(|| black_box(all.sql(&q4).expect("q4")))
    });
    g.bench_function("secured_no_audit", |b| {
        b.iter(|| black_box(run_unaudited("ALL", &q4)))
    });
    g.bench_function("raw_datafusion", |b| b.iter(|| black_box(run_raw(&q4))));
    // The lookup API: keys in, the granted fields of those subjects out, no SQL. Without audit:
    // decision, secured table, key index ∩ scope, row blocks, masks — what one subject's
    // granted fields cost in process.
    let keys = [key.as_str()];
    assert_eq!(all.lookup("person", &keys).expect("lookup").num_rows(), 1);
    g.bench_function("lookup_api", |b| {
        b.iter(|| black_box(all.lookup("person", &keys).expect("lookup")))
    });
    g.bench_function("lookup_api_no_audit", |b| {
        b.iter(|| {
            let policy = store.policy_shared().expect("policy");
            let catalog = store.catalog_shared().expect("catalog");
            let decision = policy
                .decide(&catalog, &login("ALL"), Mode::Query, Utc::now())
                .expect("decide");
            let table = SecuredTable::new(
                store.pinned("person").expect("snap"),
                &decision.datasets()["person"],
                [7; 32],
            )
            .expect("table");
            let plan = table.lookup(&keys).expect("plan");
            black_box(
                rt.block_on(datafusion::physical_plan::collect(
                    plan,
                    std::sync::Arc::new(datafusion::execution::TaskContext::default()),
                ))
                .expect("run"),
            )
        })
    });
    g.finish();

    // Many small queries at once, each with its durable opening record: host threads calling
    // `Session::sql`, tasks awaiting `Session::sql_async` (the record awaited on a waker, the
    // fsync shared), and the trail's own capacity — 1024 tasks appending durable records —
    // while two threads keep querying through the same trail.
    let mut g = c.benchmark_group("concurrent_queries");
    g.sample_size(10);
    let shared = std::sync::Arc::new(engine.session_as(&login("ALL")).expect("session"));
    let per = 40;
    g.throughput(criterion::Throughput::Elements(64 * per));
    g.bench_function("sync_64_threads", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for _ in 0..64 {
                    s.spawn(|| {
                        for _ in 0..per {
                            black_box(shared.sql(q0).expect("q0"));
                        }
                    });
                }
            })
        })
    });
    g.throughput(criterion::Throughput::Elements(256 * per / 4));
    g.bench_function("async_256_tasks", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..256)
                    .map(|_| {
                        let session = shared.clone();
                        tokio::spawn(async move {
                            for _ in 0..per / 4 {
                                let stream = session.sql_async(q0).await.expect("q0");
                                let batches: Vec<_> =
                                    futures::StreamExt::collect::<Vec<_>>(stream).await;
                                black_box(batches);
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
            })
        })
    });
    // About 100k records per run.
    let per_task: u64 = 98;
    g.throughput(criterion::Throughput::Elements(1024 * per_task));
    g.bench_function("trail_1024_tasks_appending_while_2_threads_query", |b| {
        let trail = engine.audit().clone();
        b.iter(|| {
            let done = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        while !done.load(std::sync::atomic::Ordering::Relaxed) {
                            black_box(shared.sql(q0).expect("q0"));
                        }
                    });
                }
                rt.block_on(async {
                    let tasks: Vec<_> = (0..1024u64)
                        .map(|t| {
                            let trail = trail.clone();
                            tokio::spawn(async move {
                                for i in 0..per_task {
                                    let body = serde_json::json!({ "bench": t * 1000 + i });
                                    black_box(
                                        trail
                                            .append_async("bench", "u", body)
                                            .await
                                            .expect("append"),
                                    );
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("task");
                    }
                });
                done.store(true, std::sync::atomic::Ordering::Relaxed);
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("planning");
    g.bench_function("secured", |b| {
        b.iter(|| black_box(all.sql(q0).expect("q0")))
    });
    g.bench_function("secured_no_audit", |b| {
        b.iter(|| black_box(run_unaudited("ALL", q0)))
    });
    g.bench_function("raw_datafusion", |b| b.iter(|| black_box(run_raw(q0))));
    // The engine's whole path with its trail on tmpfs (where a sync is free): decision,
    // context, planning and both records written — everything a query pays but the device's
    // flush, which group commit shares among concurrent queries.
    if let Some(mem) = &mem {
        g.bench_function("secured_trail_on_tmpfs", |b| {
            b.iter(|| black_box(mem.sql(q0).expect("q0")))
        });
    }
    g.finish();
}

criterion_group!(benches, secured);
criterion_main!(benches);
