use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use govshare_core::ingest::{Encoding, LoadOptions, Source, write_csv};
use govshare_core::synth::Synth;
use govshare_core::{Snapshot, Store};

pub fn today() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 22).expect("date")
}

pub fn opts() -> LoadOptions<'static> {
    LoadOptions {
        today: Some(today()),
        row_group_size: 1024,
        ..Default::default()
    }
}

/// A store with `n` generated persons loaded as version 1.
pub fn person_store(dir: &Path, n: usize) -> Store {
    let store = govshare_testkit::init_store(dir);
    let batches: Vec<RecordBatch> = Synth::new(1, n, 0).persons(4096).collect();
    store
        .writer(govshare_testkit::OPS)
        .expect("writer")
        .load("person", Source::Batches(batches), &opts())
        .expect("load");
    store
}

/// Generated persons written as CSV.
pub fn person_csv(dir: &Path, n: usize, seed: u64, enc: Encoding) -> PathBuf {
    let p = dir.join(format!("person-{seed}-{n}-{enc:?}.csv"));
    write_csv(&p, Synth::new(seed, n, 0).persons(4096), enc).expect("csv");
    p
}

/// All values of a text column over a read.
pub fn strings(batches: &[RecordBatch], col: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(col).expect("column").as_string::<i32>();
            (0..c.len())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every live key of a snapshot, sorted.
pub fn keys(s: &Snapshot) -> Vec<String> {
    let mut k = strings(
        &s.read(None, Some(&["citizen_id"])).expect("read"),
        "citizen_id",
    );
    k.sort();
    k
}

/// Every file under `dir`, recursively, in path order.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every batch of a Parquet file (an export or a release as a recipient reads it).
pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).expect("open");
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("parquet")
        .build()
        .expect("reader")
        .collect::<Result<Vec<_>, _>>()
        .expect("batches")
}
