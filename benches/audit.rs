//! Audit trail throughput: durable appends (group commit, 1, 8, 64 and 256 appending threads,
//! 1024 and 4096 appending tasks — many concurrent small queries are what a group commit is
//! for) and chain verification.
//!
//! ```sh
//! cargo bench --bench audit
//! ```

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use govshare_core::audit::{AuditLog, Verdict, verify};

fn body(i: u64) -> serde_json::Value {
    serde_json::json!({ "sql": "SELECT count(*) FROM person WHERE sex_code = '2'", "purpose": "P01", "department": "CIVIL", "i": i })
}

fn audit(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit_append");
    g.sample_size(10);
    for threads in [1usize, 8, 64, 256] {
        let per = match threads {
            1 => 500,
            8 => 5_000,
            // About 50k records per run, whatever the thread count.
            t => 50_000 / t,
        };
        g.throughput(Throughput::Elements((threads * per) as u64));
        g.bench_function(format!("durable_{threads}_threads"), |b| {
            b.iter_batched(
                || tempfile::tempdir().expect("tmp"),
                |dir| {
                    let log = Arc::new(AuditLog::open(dir.path()).expect("open"));
                    let hs: Vec<_> = (0..threads)
                        .map(|t| {
                            let log = log.clone();
                            std::thread::spawn(move || {
                                for i in 0..per {
                                    black_box(
                                        log.append("query", "bench", body((t * per + i) as u64))
                                            .expect("append"),
                                    );
                                }
                            })
                        })
                        .collect();
                    for h in hs {
                        h.join().expect("join");
                    }
                    dir
                },
                BatchSize::PerIteration,
            )
        });
    }
    // The same from tasks on a two-worker runtime (the engine's shape): `append_async` waits
    // on a waker, not a parked thread, so the appenders cost no context switch each.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    for tasks in [1024usize, 4096] {
        // About 100k records per run.
        let per = 100_000 / tasks;
        g.throughput(Throughput::Elements((tasks * per) as u64));
        g.bench_function(format!("durable_{tasks}_tasks"), |b| {
            b.iter_batched(
                || tempfile::tempdir().expect("tmp"),
                |dir| {
                    let log = Arc::new(AuditLog::open(dir.path()).expect("open"));
                    rt.block_on(async {
                        let hs: Vec<_> = (0..tasks)
                            .map(|t| {
                                let log = log.clone();
                                tokio::spawn(async move {
                                    for i in 0..per {
                                        let body = body((t * per + i) as u64);
                                        black_box(
                                            log.append_async("query", "bench", body)
                                                .await
                                                .expect("append"),
                                        );
                                    }
                                })
                            })
                            .collect();
                        for h in hs {
                            h.await.expect("join");
                        }
                    });
                    dir
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();

    // A 200k-record trail, written once (8 threads), verified repeatedly.
    let dir = tempfile::tempdir().expect("tmp");
    {
        let log = Arc::new(AuditLog::open(dir.path()).expect("open"));
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..25_000u64 {
                        log.append("query", "bench", body(t * 25_000 + i))
                            .expect("append");
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().expect("join");
        }
    }
    let mut g = c.benchmark_group("audit_verify");
    g.sample_size(10);
    g.throughput(Throughput::Elements(200_000));
    g.bench_function("200k_records", |b| {
        b.iter(|| {
            let v = verify(dir.path(), None).expect("verify");
            assert!(matches!(
                v,
                Verdict::Intact {
                    records: 200_000,
                    ..
                }
            ));
            black_box(v)
        })
    });
    g.finish();
}

criterion_group!(benches, audit);
criterion_main!(benches);
