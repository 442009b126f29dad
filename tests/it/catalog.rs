use govshare_core::Error;
use govshare_core::catalog::CatalogFile;
use govshare_core::ingest::Source;

use crate::common::*;

const GDP: &str = r#"
[[datasets]]
name = "county_economy"
label = "县域经济指标"
key = "region_code"
cluster_field = "region_code"
provider = "省统计局"
update_frequency = "yearly"
fields = [
  { name = "region_code", label = "区划代码", type = "utf8", standard = "region_code", nullable = false, share = "unconditional", grade = "L1", index = "region" },
  { name = "gdp", label = "地区生产总值(亿元)", type = "decimal(20,2)", share = "unconditional", grade = "L1" },
  { name = "year", label = "年度", type = "int64", nullable = false, share = "unconditional", grade = "L1" },
]
"#;

#[test]
fn declared_dataset_is_first_class_and_catalog_is_versioned() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = govshare_testkit::init_store(&dir.path().join("s"));
    let file = CatalogFile::parse(GDP, true, "gdp.toml").expect("parse");
    let v = store
        .writer(govshare_testkit::ROOT)
        .expect("w")
        .apply_catalog(file.clone(), "add county economy")
        .expect("apply");
    assert_eq!(v.version, 2);
    assert_eq!(
        v.changes,
        vec!["+ dataset county_economy (3 fields)".to_string()]
    );
    // Applying the same file again changes nothing and commits nothing.
    assert_eq!(
        store
            .writer(govshare_testkit::ROOT)
            .expect("w")
            .apply_catalog(file, "again")
            .expect("noop")
            .version,
        2
    );

    let csv = dir.path().join("gdp.csv");
    std::fs::write(&csv, "region_code,gdp,year\n430623,312.55,2025\n430602,1020.10,2025\n451425,88.00,2025\n430603,abc,2025\n").expect("w");
    let r = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load("county_economy", Source::from_path(&csv), &opts())
        .expect("load");
    assert_eq!(
        (r.manifest.live_rows, r.manifest.handover.rows_rejected),
        (3, 1)
    );
    let s = store.snapshot("county_economy").expect("snap");
    assert_eq!(s.scope("region_code", "430600").expect("scope").len(), 2);
    assert!(s.lookup("451425").expect("lookup").is_some());

    // Old catalog versions stay readable; history says who changed what.
    assert!(
        store
            .catalog_at(1)
            .expect("v1")
            .catalog
            .dataset("county_economy")
            .is_err()
    );
    let h = store.catalog_history().expect("history");
    assert_eq!(h.len(), 2);
    assert_eq!(
        (h[1].author.as_str(), h[1].note.as_str()),
        (govshare_testkit::ROOT, "add county economy")
    );

    // Changing a field is a new version with a diff line; a change by no user is refused.
    let changed = GDP.replace("地区生产总值(亿元)", "GDP(亿元)");
    let f = CatalogFile::parse(&changed, true, "gdp2.toml").expect("parse");
    assert!(
        store
            .writer(" ")
            .expect("w")
            .apply_catalog(f.clone(), "x")
            .is_err()
    );
    let v3 = store
        .writer(govshare_testkit::ROOT)
        .expect("w")
        .apply_catalog(f, "relabel")
        .expect("apply");
    assert_eq!(v3.changes, vec!["~ field county_economy.gdp".to_string()]);
    // The data version keeps the definition it was written with.
    assert_eq!(
        s.dataset().require_field("gdp").expect("gdp").label,
        "地区生产总值(亿元)"
    );
}

#[test]
fn malformed_catalog_files_are_typed_errors() {
    for (text, toml) in [
        ("{not json", false),
        ("datasets = 3", true),
        (r#"{"datasets":[{"name":"x"}]}"#, false),
    ] {
        assert!(matches!(
            CatalogFile::parse(text, toml, "t"),
            Err(Error::InvalidInput(_))
        ));
    }
}
