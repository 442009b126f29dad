//! The peers' workload (`peers/run_peers.py` of the project's shared documents, outside this
//! repository) on govshare, with access control on, over the peers' own Parquet file — for
//! side-by-side numbers with DuckDB and PostgreSQL.
//!
//! ```sh
//! cargo run --release --example peer_workload -- DATA_DIR [REPEATS]
//! ```
//! Loads `DATA_DIR/person.parquet` into `DATA_DIR/govshare-store` (once), reclassifies
//! `marital_status_code` to conditional (the peers' q5 filters on it; in govshare's catalog it
//! is not shared, so a coordinator's reclassification is what a real deployment would need),
//! grants two principals the peers' "secured" shape — citizen_id, name and mobile_phone masked,
//! sex_code, birth_date, hukou_region_code, education_code, marital_status_code clear — one
//! national, one scoped to county `SCOPE_COUNTY` (default 451425) — and a third purpose with
//! `citizen_id` in clear for the point lookup (q4), and prints the median of REPEATS warm runs
//! per query, like `run_peers.py`; then q4 once more through the session's lookup API (decided and recorded).
//! `ONLY=q1_full_agg,lookup` runs only the queries named (`lookup`: the lookup API) — for profiles.

use std::time::Instant;

use chrono::Utc;
use govshare_core::Engine;
use govshare_core::access::policy::{AuthMethod, Login, Role, RowScope};
use govshare_core::catalog::{CatalogFile, MaskKind, ShareType};
use govshare_core::ingest::{LoadOptions, Source};
use govshare_testkit as testkit;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let data = std::path::PathBuf::from(
        args.get(1)
            .ok_or("usage: peer_workload DATA_DIR [REPEATS]")?,
    );
    let repeats: usize = args.get(2).map(|r| r.parse()).transpose()?.unwrap_or(5);
    let county = std::env::var("SCOPE_COUNTY").unwrap_or_else(|_| "451425".into());
    let root = data.join("govshare-store");
    let store = testkit::init_store(&root);
    if store.current_version("person")? == 0 {
        let t = Instant::now();
        let r = store.writer(govshare_testkit::OPS)?.load(
            "person",
            Source::Parquet(data.join("person.parquet")),
            &LoadOptions::default(),
        )?;
        println!(
            "loaded {} rows ({} rejected) in {:.1}s: {:.0} rows/s",
            r.manifest.live_rows,
            r.manifest.handover.rows_rejected,
            t.elapsed().as_secs_f64(),
            r.manifest.live_rows as f64 / t.elapsed().as_secs_f64()
        );
        let mut catalog = store.catalog()?;
        let person = catalog
            .datasets
            .get_mut("person")
            .ok_or("no person dataset")?;
        for f in &mut person.fields {
            if f.name == "marital_status_code" {
                f.share = ShareType::Conditional;
            }
        }
        let file = CatalogFile {
            datasets: vec![person.clone()],
            code_tables: Default::default(),
        };
        store
            .writer(testkit::COORD)?
            .apply_catalog(file, "reclassify marital_status_code for the benchmark")?;
        store
            .writer(testkit::ROOT)?
            .update_policy("peer principals", |p, _| {
                testkit::add_principals(
                    p,
                    "450000",
                    &[("PSB", "省公安厅"), ("D", "consumer")],
                    &[
                        ("appr", "PSB", Role::ProviderApprover),
                        ("u", "D", Role::Consumer),
                    ],
                )
            })?;
        store.writer("appr")?.update_policy("peer grants", |p, c| {
            let fields = testkit::fields(
                &[
                    "sex_code",
                    "birth_date",
                    "hukou_region_code",
                    "education_code",
                    "marital_status_code",
                ],
                &[
                    // Not the citizen ID mask: with birth_date in clear it would give
                    // the ID back (the linkage rule refuses that grant).
                    ("citizen_id", MaskKind::Pseudonym),
                    ("name", MaskKind::Name),
                    ("mobile_phone", MaskKind::Phone),
                ],
            );
            for (purpose, scope) in [
                ("ALL", RowScope::default()),
                ("COUNTY", testkit::regions(&[&county])),
            ] {
                let r = testkit::request("D", "person", purpose, fields.clone(), scope);
                p.decide_request(c, r, "appr", true, "", Utc::now())?;
            }
            // The point lookup needs the key in clear (a pseudonym cannot be looked up).
            let lookup = testkit::fields(
                &["citizen_id", "hukou_region_code"],
                &[("name", MaskKind::Name)],
            );
            let r = testkit::request("D", "person", "LOOKUP", lookup, RowScope::default());
            p.decide_request(c, r, "appr", true, "", Utc::now())?;
            Ok(())
        })?;
    }
    let engine = Engine::open(&root)?;
    // Second-factor logins: marital status, reclassified above, is a sensitive item in clear.
    let login = |purpose: &str| Login::new("u", purpose, AuthMethod::SecondFactor);
    let all = engine.session_as(&login("ALL"))?;
    let cty = engine.session_as(&login("COUNTY"))?;
    let key_session = engine.session_as(&login("LOOKUP"))?;
    // A subject to look up: the 12345th row's key (read by the operator, outside the timing).
    let key = {
        let b = store.snapshot("person")?.read(
            Some(&[12345u32].into_iter().collect()),
            Some(&["citizen_id"]),
        )?;
        arrow::array::AsArray::as_string::<i32>(b[0].column(0))
            .value(0)
            .to_string()
    };
    let q4 = format!("SELECT name, hukou_region_code FROM person WHERE citizen_id = '{key}'");
    let queries = [
        (
            "q1_full_agg",
            &all,
            "SELECT substr(hukou_region_code,1,2) AS prov, sex_code, count(*) AS n, min(birth_date) AS oldest FROM person GROUP BY 1,2",
        ),
        (
            "q2_filter_project",
            &all,
            "SELECT citizen_id, name, birth_date FROM person WHERE birth_date BETWEEN DATE '1990-01-01' AND DATE '1990-01-31' AND sex_code = '2'",
        ),
        (
            "q3_scoped_agg",
            &cty,
            "SELECT education_code, count(*) AS n FROM person GROUP BY 1",
        ),
        ("q4_point", &key_session, q4.as_str()),
        (
            "q5_scoped_masked_list",
            &cty,
            "SELECT citizen_id, name, mobile_phone FROM person WHERE marital_status_code = '20'",
        ),
    ];
    // `ONLY=q1_full_agg` (a comma-separated list) runs just those queries, for profiles.
    let only = std::env::var("ONLY").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|q| q == name))
    };
    for (name, session, sql) in queries {
        if !wanted(name) {
            continue;
        }
        session.sql(sql)?; // warm
        let mut times = Vec::with_capacity(repeats);
        let mut rows = 0;
        for _ in 0..repeats {
            let t = Instant::now();
            rows = session.sql(sql)?.num_rows();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{:9} {:8} {name:24} {:10.2} ms  rows={rows}",
            "govshare",
            "secured",
            times[times.len() / 2]
        );
    }
    // The same subject through the session's lookup API (key index ∩ scope → row blocks →
    // masks; decided and recorded like a query).
    if !wanted("lookup") {
        return Ok(());
    }
    let mut times = Vec::new();
    for _ in 0..repeats.max(5) {
        let t = Instant::now();
        let rows = key_session.lookup("person", &[key.as_str()])?.num_rows();
        assert_eq!(rows, 1);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{:9} {:8} {:24} {:10.2} ms  rows=1",
        "govshare",
        "lookup",
        "q4_point",
        times[times.len() / 2]
    );
    Ok(())
}
