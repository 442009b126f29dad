//! Ingest throughput: load + validate + cluster + index + commit, from Arrow batches and from
//! a UTF-8 CSV file; and the throughput of a whole-store backup and its verified restore.
//!
//! ```sh
//! cargo bench --bench ingest                         # 1M persons
//! GOVSHARE_BENCH_ROWS=100000 cargo bench --bench ingest
//! cargo bench --bench ingest -- backup               # backup and restore only
//! ```
//! Data are generated once, outside the timed closure; each iteration loads into a fresh store
//! (backs up into, restores into a fresh directory). Backup and restore throughput is in bytes
//! of the store.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use govshare_core::ingest::{Encoding, LoadOptions, Source, write_csv};
use govshare_core::synth::Synth;

fn rows() -> usize {
    std::env::var("GOVSHARE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn ingest(c: &mut Criterion) {
    let n = rows();
    let batches: Vec<_> = Synth::new(42, n, 0).persons(64 * 1024).collect();
    let data = tempfile::tempdir().expect("tmp");
    let csv = data.path().join("person.csv");
    write_csv(&csv, batches.iter().cloned(), Encoding::Utf8).expect("csv");

    let mut g = c.benchmark_group("ingest");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("arrow/{n}"), |b| {
        b.iter_batched(
            || (tempfile::tempdir().expect("tmp"), batches.clone()),
            |(dir, batches)| {
                let store = govshare_testkit::init_store(dir.path());
                let r = store
                    .writer(govshare_testkit::OPS)
                    .expect("w")
                    .load("person", Source::Batches(batches), &LoadOptions::default())
                    .expect("load");
                black_box(r.manifest.live_rows);
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function(format!("csv/{n}"), |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tmp"),
            |dir| {
                let store = govshare_testkit::init_store(dir.path());
                let r = store
                    .writer(govshare_testkit::OPS)
                    .expect("w")
                    .load("person", Source::from_path(&csv), &LoadOptions::default())
                    .expect("load");
                black_box(r.manifest.live_rows);
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn backup(c: &mut Criterion) {
    let n = rows();
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("store");
    govshare_testkit::generated_store(&root, 42, n, 0, 64 * 1024);
    let engine = govshare_core::Engine::open(&root).expect("engine");
    let full = dir.path().join("full");
    let (m, _) = engine
        .backup(govshare_testkit::OPS, &full, None)
        .expect("backup");
    let bytes = m.stored_bytes();
    let mut g = c.benchmark_group(format!("backup/{n}"));
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("full", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tmp"),
            |out| {
                black_box(
                    engine
                        .backup(govshare_testkit::OPS, &out.path().join("b"), None)
                        .expect("backup"),
                );
                out
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("restore", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tmp"),
            |out| {
                black_box(
                    govshare_core::Store::restore(
                        &full,
                        out.path().join("r"),
                        govshare_testkit::OPS,
                    )
                    .expect("restore"),
                );
                out
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, ingest, backup);
criterion_main!(benches);
