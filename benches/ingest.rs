//! Ingest throughput: load + validate + cluster + index + commit, from Arrow batches and from
//! a UTF-8 CSV file.
//!
//! ```sh
//! cargo bench --bench ingest                         # 1M persons
//! GOVSHARE_BENCH_ROWS=100000 cargo bench --bench ingest
//! ```
//! Data are generated once, outside the timed closure; each iteration loads into a fresh store.

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

criterion_group!(benches, ingest);
criterion_main!(benches);
