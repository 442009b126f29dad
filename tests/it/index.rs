//! Bitmap scopes must equal a full scan with the same predicate, on random data and after
//! incremental changes.

use std::collections::BTreeSet;

use arrow::array::{Array, AsArray};
use govshare_core::ingest::{LoadMode, LoadOptions, Source};
use govshare_core::synth::Synth;
use proptest::prelude::*;

use crate::common::*;

/// Row ids (by scan order = row-id order) whose `field` satisfies `pred`, computed by reading
/// every live row; row ids come from the key index so the comparison is id-exact.
fn scan_ids(
    s: &govshare_core::Snapshot,
    field: &str,
    pred: &dyn Fn(&str) -> bool,
) -> BTreeSet<u32> {
    let batches = s.read(None, Some(&["citizen_id", field])).expect("read");
    let mut out = BTreeSet::new();
    for b in &batches {
        let k = b.column(0).as_string::<i32>();
        let v = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            if v.is_valid(i) && pred(v.value(i)) {
                out.insert(s.lookup(k.value(i)).expect("lookup").expect("key indexed"));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn bitmap_scopes_equal_full_scan(seed in 0u64..1_000, n in 50usize..1500, deletes in proptest::collection::vec(0usize..1500, 0..40)) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = govshare_testkit::init_store(dir.path());
        let o = LoadOptions { row_group_size: 1024, today: Some(today()), ..Default::default() };
        store.writer(govshare_testkit::OPS).expect("w").load("person", Source::Batches(Synth::new(seed, n, 0).persons(333).collect()), &o).expect("load");
        // Half the cases also go through an incremental delete, so deletion vectors and
        // derived indexes are covered.
        if !deletes.is_empty() && seed % 2 == 0 {
            let s = store.snapshot("person").expect("s");
            let all = keys(&s);
            let victims: BTreeSet<&String> = deletes.iter().map(|d| &all[d % all.len()]).collect();
            let csv = dir.path().join("del.csv");
            let body: String = victims.iter().map(|k| format!("delete,{k}\n")).collect();
            std::fs::write(&csv, format!("_op,citizen_id\n{body}")).expect("write");
            store.writer(govshare_testkit::OPS).expect("w").load("person", Source::from_path(&csv), &LoadOptions { mode: LoadMode::Incremental, ..o }).expect("inc");
        }
        let s = store.snapshot("person").expect("s");
        let regions: BTreeSet<String> = {
            let b = s.read(None, Some(&["hukou_region_code"])).expect("r");
            strings(&b, "hukou_region_code").into_iter().collect()
        };
        for code in regions.iter().take(5) {
            for prefix in [&code[..2], &code[..4], &code[..]] {
                let scoped: BTreeSet<u32> = s.scope("hukou_region_code", prefix).expect("scope").iter().collect();
                let p = prefix.to_string();
                prop_assert_eq!(&scoped, &scan_ids(&s, "hukou_region_code", &|v: &str| v.starts_with(&p)));
            }
        }
        for (field, value) in [("sex_code", "1"), ("sex_code", "2"), ("person_status", "正常"), ("person_status", "死亡"), ("ethnicity_code", "01")] {
            let scoped: BTreeSet<u32> = s.scope(field, value).expect("scope").iter().collect();
            prop_assert_eq!(&scoped, &scan_ids(&s, field, &|v: &str| v == value));
        }
        // Reading a scope returns exactly the rows a filtered scan does.
        let code = regions.iter().next().expect("one region");
        let bm = s.scope("hukou_region_code", &code[..4]).expect("scope");
        let read = strings(&s.read(Some(&bm), Some(&["hukou_region_code"])).expect("read"), "hukou_region_code");
        prop_assert_eq!(read.len() as u64, bm.len());
        prop_assert!(read.iter().all(|v| v.starts_with(&code[..4])));
    }
}

#[test]
fn clustering_makes_a_county_scope_touch_few_row_groups() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = govshare_testkit::init_store(dir.path());
    let o = LoadOptions {
        row_group_size: 1024,
        today: Some(today()),
        ..Default::default()
    };
    store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load(
            "person",
            Source::Batches(Synth::new(3, 60_000, 0).persons(8192).collect()),
            &o,
        )
        .expect("load");
    let s = store.snapshot("person").expect("s");
    let total = s.row_groups_total();
    assert!(total >= 59, "60k rows in 1k-row groups");
    // The most populous county: its rows are contiguous, so they span at most
    // ceil(n / 1024) + 1 row groups.
    let counties: BTreeSet<String> = strings(
        &s.read(None, Some(&["hukou_region_code"])).expect("r"),
        "hukou_region_code",
    )
    .into_iter()
    .collect();
    let (code, bm) = counties
        .iter()
        .map(|c| (c.clone(), s.scope("hukou_region_code", c).expect("scope")))
        .max_by_key(|(_, b)| b.len())
        .expect("a county");
    let touched = s.row_groups_touched(&bm);
    assert!(
        touched as u64 <= bm.len().div_ceil(1024) + 1,
        "county {code}: {} rows touch {touched} of {total} groups",
        bm.len()
    );
    let (min, max) = (bm.min().expect("min"), bm.max().expect("max"));
    assert_eq!(
        u64::from(max - min + 1),
        bm.len(),
        "a county's rows are one contiguous run"
    );
}
