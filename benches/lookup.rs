//! Read-side latency on a loaded store: key → row id, key → full row, and building row scopes
//! from roaring bitmaps (province / city / county, and an AND of two indexes).
//!
//! ```sh
//! cargo bench --bench lookup                         # 1M persons
//! GOVSHARE_BENCH_ROWS=100000 cargo bench --bench lookup
//! ```

use std::hint::black_box;

use arrow::array::AsArray;
use criterion::{Criterion, criterion_group, criterion_main};
use govshare_core::ingest::{LoadOptions, Source};
use govshare_core::synth::Synth;

fn rows() -> usize {
    std::env::var("GOVSHARE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn lookup(c: &mut Criterion) {
    let n = rows();
    let dir = tempfile::tempdir().expect("tmp");
    let store = govshare_testkit::init_store(dir.path());
    store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load(
            "person",
            Source::Batches(Synth::new(42, n, 0).persons(64 * 1024).collect()),
            &LoadOptions::default(),
        )
        .expect("load");
    let snap = store.snapshot("person").expect("snapshot");
    let keys: Vec<String> = {
        let b = snap
            .read(None, Some(&["citizen_id", "hukou_region_code"]))
            .expect("read");
        let mut k: Vec<String> = b
            .iter()
            .flat_map(|b| {
                let c = b.column(0).as_string::<i32>();
                (0..b.num_rows())
                    .step_by(97)
                    .map(|i| c.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        k.truncate(10_000);
        k
    };
    snap.lookup(&keys[0]).expect("warm the key index");

    let mut g = c.benchmark_group(format!("lookup/{n}"));
    let mut i = 0usize;
    g.bench_function("key_to_row_id", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(snap.lookup(black_box(&keys[i])).expect("lookup"))
        })
    });
    g.bench_function("key_to_full_row", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let id = snap.lookup(&keys[i]).expect("lookup").expect("present");
            black_box(
                snap.read(Some(&[id].into_iter().collect()), None)
                    .expect("read"),
            )
        })
    });
    g.finish();

    // Scope codes: the most populous county, its city and province.
    let idx = snap.bitmap_index("hukou_region_code").expect("index");
    let county = idx
        .bitmaps
        .iter()
        .filter(|(k, _)| k.len() == 6)
        .max_by_key(|(_, b)| b.len())
        .map(|(k, _)| k.clone())
        .expect("county");
    let mut g = c.benchmark_group(format!("scope/{n}"));
    for code in [
        format!("{}0000", &county[..2]),
        format!("{}00", &county[..4]),
        county.clone(),
    ] {
        g.bench_function(format!("region_{code}"), |b| {
            b.iter(|| {
                black_box(
                    snap.scope("hukou_region_code", black_box(&code))
                        .expect("scope"),
                )
            })
        });
    }
    g.bench_function("province_and_female", |b| {
        b.iter(|| {
            let a = snap
                .scope("hukou_region_code", &county[..2])
                .expect("scope");
            let f = snap.scope("sex_code", "2").expect("scope");
            black_box((a & f).len())
        })
    });
    g.bench_function("cold_index_load", |b| {
        b.iter(|| {
            let fresh = store.snapshot("person").expect("snapshot");
            black_box(
                fresh
                    .scope("hukou_region_code", &county)
                    .expect("scope")
                    .len(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
