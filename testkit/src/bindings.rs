//! The binding tests' fixture (Python's suite and doctests).

use std::path::Path;

use chrono::Utc;
use govshare_core::access::policy::{Role, RowScope};
use govshare_core::catalog::MaskKind;
use govshare_core::engine::Engine;
use govshare_core::synth::Synth;

use crate::{add_principals, fields, regions, request};

/// The store the binding tests use (Python's suite and doctests; `govshare-fixture bindings`
/// builds it for them): 200 persons and 20 entities from seed 7 loaded from CSV files, and
///
/// - departments PLAT, PSB, STAT, CIVIL (region 430000); users admin (PLAT) platform admin,
///   appr (PSB) approver, analyst (STAT), civil and other (CIVIL) consumers, auditor (PLAT);
/// - STAT, purpose STATS: sex_code and hukou_region_code, granted on request (unconditional);
/// - CIVIL, FULL: citizen_id, name, sex_code, hukou_region_code in clear;
/// - CIVIL, CHECK: citizen_id clear, name and mobile_phone masked;
/// - CIVIL, PROV: FULL's fields, rows of the most populous province only;
/// - CIVIL, VERIFY: name and birth_date may be verified (20 a day, 2 per subject, absence
///   disclosed);
/// - CIVIL, EXPORT: name (masked), sex_code, hukou_region_code of PROV's province may be
///   exported (1,000 rows an export, 50 a day);
/// - CIVIL, AGG: aggregates of sex_code and hukou_region_code, groups of at least 5;
/// - CIVIL, PUSH: a change feed of citizen_id and sex_code.
#[derive(Debug, Clone)]
pub struct BindingsStore {
    /// The store directory.
    pub path: std::path::PathBuf,
    /// The most populous province (2 digits): the PROV grant's scope.
    pub province: String,
    /// Where the generated CSV files are.
    pub data: std::path::PathBuf,
}

/// Build [`BindingsStore`] under `root` (`root/store`, `root/data`).
pub fn bindings_store(root: &Path) -> BindingsStore {
    use govshare_core::ingest::{Encoding, HandoverInfo, write_csv};
    let path = root.join("store");
    let data = root.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    crate::init_store(&path);
    let synth = Synth::new(7, 200, 20);
    let (person_csv, entity_csv) = (data.join("person.csv"), data.join("legal_entity.csv"));
    write_csv(&person_csv, synth.persons(64 * 1024), Encoding::Utf8).expect("person csv");
    write_csv(&entity_csv, synth.entities(64 * 1024), Encoding::Utf8).expect("entity csv");
    let engine = Engine::open(&path).expect("engine");
    for (dataset, csv) in [("person", &person_csv), ("legal_entity", &entity_csv)] {
        engine
            .load_file(
                crate::OPS,
                dataset,
                csv,
                false,
                false,
                HandoverInfo::default(),
            )
            .expect("load");
    }
    let province = {
        let snap = engine.store().snapshot("person").expect("snapshot");
        let idx = snap.bitmap_index("hukou_region_code").expect("index");
        // Most rows first, then the smaller code: the order the Python fixture used.
        idx.bitmaps
            .iter()
            .filter(|(k, _)| k.len() == 2)
            .max_by(|(ka, a), (kb, b)| a.len().cmp(&b.len()).then(kb.cmp(ka)))
            .map(|(k, _)| k.clone())
            .expect("a province")
    };
    let identity = ["citizen_id", "name", "sex_code", "hukou_region_code"];
    let prov6 = format!("{province}0000");
    engine
        .writer(crate::ROOT)
        .expect("writer")
        .update_policy("binding test principals", |p, _| {
            add_principals(
                p,
                "430000",
                &[
                    ("PLAT", "省大数据中心"),
                    ("PSB", "省公安厅"),
                    ("STAT", "省统计局"),
                    ("CIVIL", "省民政厅"),
                ],
                &[
                    ("admin", "PLAT", Role::PlatformAdmin),
                    ("appr", "PSB", Role::ProviderApprover),
                    ("analyst", "STAT", Role::Consumer),
                    ("civil", "CIVIL", Role::Consumer),
                    ("other", "CIVIL", Role::Consumer),
                    ("auditor", "PLAT", Role::Auditor),
                ],
            )
        })
        .expect("principals");
    let now = Utc::now();
    engine
        .writer("admin")
        .expect("writer")
        .update_policy("binding test grant on request", |p, c| {
            let stats = fields(&["sex_code", "hukou_region_code"], &[]);
            p.grant_on_request(
                c,
                request("STAT", "person", "STATS", stats, RowScope::default()),
                "admin",
                now,
            )
        })
        .expect("request");
    engine
        .writer("appr")
        .expect("writer")
        .update_policy("binding test approvals", |p, c| {
            let check = fields(
                &["citizen_id"],
                &[("name", MaskKind::Name), ("mobile_phone", MaskKind::Phone)],
            );
            for (purpose, f, scope) in [
                ("FULL", fields(&identity, &[]), RowScope::default()),
                ("CHECK", check, RowScope::default()),
                ("PROV", fields(&identity, &[]), regions(&[&prov6])),
            ] {
                p.decide_request(
                    c,
                    request("CIVIL", "person", purpose, f, scope),
                    "appr",
                    true,
                    "",
                    now,
                )?;
            }
            // VERIFY: name and birth date may be checked (never read), 20 checks a day, each
            // subject at most twice, absence disclosed.
            let mut verify = request(
                "CIVIL",
                "person",
                "VERIFY",
                fields(&["name", "birth_date"], &[]),
                RowScope::default(),
            );
            verify.modes = vec![govshare_core::access::policy::Mode::Verify];
            verify.verify = Some(govshare_core::access::policy::VerifyTerms {
                per_second: 100,
                per_day: 20,
                per_subject_per_day: 2,
                disclose_absence: true,
            });
            p.decide_request(c, verify, "appr", true, "", now)?;
            // EXPORT: sex_code and hukou_region_code of the province, at most 1,000 rows an
            // export, 50 exports a day.
            let mut export = request(
                "CIVIL",
                "person",
                "EXPORT",
                fields(
                    &["sex_code", "hukou_region_code"],
                    &[("name", MaskKind::Name)],
                ),
                regions(&[&prov6]),
            );
            export.modes = vec![govshare_core::access::policy::Mode::Export];
            export.export = Some(govshare_core::access::policy::ExportTerms {
                max_rows: 1_000,
                per_day: 50,
            });
            p.decide_request(c, export, "appr", true, "", now)?;
            // AGG: aggregates of sex_code and hukou_region_code, groups of at least 5, 100
            // queries a day.
            let mut agg = request(
                "CIVIL",
                "person",
                "AGG",
                fields(&["sex_code", "hukou_region_code"], &[]),
                RowScope::default(),
            );
            agg.modes = vec![govshare_core::access::policy::Mode::Aggregate];
            agg.aggregate = Some(govshare_core::access::policy::AggregateTerms {
                min_group: 5,
                per_day: 100,
            });
            p.decide_request(c, agg, "appr", true, "", now)?;
            // PUSH: a change feed of citizen_id and sex_code.
            let mut push = request(
                "CIVIL",
                "person",
                "PUSH",
                fields(&["citizen_id", "sex_code"], &[]),
                RowScope::default(),
            );
            push.modes = vec![govshare_core::access::policy::Mode::Push];
            p.decide_request(c, push, "appr", true, "", now)?;
            Ok(())
        })
        .expect("policy");
    BindingsStore {
        path,
        province,
        data,
    }
}
