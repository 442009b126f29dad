//! The security suite's fixture: the store the `.slt` files are written against.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use chrono::{Duration, Utc};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use govshare_core::Result;
use govshare_core::access::policy::{FieldGrant, Policy, PrincipalStatus, Role, RowScope};
use govshare_core::catalog::Catalog;
use govshare_core::catalog::MaskKind;
use govshare_core::engine::Engine;

use crate::{ROOT, add_principals, fields, generated_store, render, request, strings};

/// The security suite's store: persons and entities, seven departments, ten users and the
/// grants the `.slt` files are written against (see `build`), plus a raw reference context
/// over the same files with every field clear and no scope.
pub struct Fixture {
    _dir: tempfile::TempDir,
    /// The engine over the fixture store.
    pub engine: Engine,
    /// `$NAME` placeholders of the `.slt` files: scope codes and in/out-of-scope subject keys.
    pub vars: BTreeMap<String, String>,
    raw: SessionContext,
    rt: tokio::runtime::Runtime,
    /// Raw values that must never appear in an error message.
    secrets: Vec<String>,
}

fn clear(fields: &[&str]) -> Vec<FieldGrant> {
    self::fields(fields, &[])
}

fn masked(mut v: Vec<FieldGrant>, field: &str, m: MaskKind) -> Vec<FieldGrant> {
    v.extend(fields(&[], &[(field, m)]));
    v
}

/// The security suite's store, built once per process.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build)
}

fn build() -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let store = generated_store(dir.path(), 5, 4000, 300, 1024);

    // Scope codes from the data: the most populous province and, in it, the largest county.
    let persons = store.snapshot("person").expect("p");
    let idx = persons.bitmap_index("hukou_region_code").expect("idx");
    let counties_in = |p: &str| {
        idx.bitmaps
            .keys()
            .filter(|k| k.len() == 6 && k.starts_with(p))
            .count()
    };
    let (prov, _) = idx
        .bitmaps
        .iter()
        .filter(|(k, _)| k.len() == 2 && counties_in(k) >= 3)
        .max_by_key(|(_, b)| b.len())
        .expect("province");
    let (county, _) = idx
        .bitmaps
        .iter()
        .filter(|(k, _)| k.len() == 6 && k.starts_with(prov.as_str()))
        .max_by_key(|(_, b)| b.len())
        .expect("county");
    let rows = persons
        .read(None, Some(&["citizen_id", "hukou_region_code", "name"]))
        .expect("read");
    let ids = strings(&rows, 0);
    let regions = strings(&rows, 1);
    let names = strings(&rows, 2);
    let pick = |pred: &dyn Fn(&str) -> bool| {
        ids.iter()
            .zip(&regions)
            .find(|(_, r)| pred(r))
            .map(|(i, _)| i.clone())
            .expect("subject")
    };
    let in_county = pick(&|r| r == county);
    let in_prov_not_county = pick(&|r| r.starts_with(prov.as_str()) && r != county);
    let out_prov = pick(&|r| !r.starts_with(prov.as_str()));
    let ents = store.snapshot("legal_entity").expect("e");
    let erows = ents
        .read(
            None,
            Some(&["legal_rep_id", "uscc", "domicile_region_code"]),
        )
        .expect("read");
    let reps = strings(&erows, 0);
    let subjects: Vec<String> = reps.iter().take(5).cloned().collect();
    let non_rep = ids
        .iter()
        .find(|i| !reps.contains(i))
        .expect("someone")
        .clone();
    let in_uscc = strings(&erows, 1)
        .into_iter()
        .zip(strings(&erows, 2))
        .find(|(_, r)| r.starts_with(prov.as_str()))
        .map(|(u, _)| u)
        .expect("entity in province");

    let p6 = format!("{prov}0000");
    // Each act by the user whose act it is: the platform administrator adds principals, each
    // provider's approver decides on its own data, the administrator grants on request,
    // revokes and suspends.
    let act = |by: &str, note: &str, f: &mut dyn FnMut(&mut Policy, &Catalog) -> Result<()>| {
        store
            .writer(by)
            .expect("w")
            .update_policy(note, |p, c| f(p, c))
            .expect(note);
    };
    act(ROOT, "security fixture principals", &mut |p, _| {
        add_principals(
            p,
            &p6,
            &[
                ("PLAT", "省大数据中心"),
                ("PSB", "省公安厅"),
                ("AMR", "省市场监督管理局"),
                ("CIVIL", "省民政厅"),
                ("HRSS", "县人社局"),
                ("TAX", "省税务局"),
                ("SUSP", "某停用部门"),
            ],
            &[
                ("admin", "PLAT", Role::PlatformAdmin),
                ("psb_appr", "PSB", Role::ProviderApprover),
                ("amr_appr", "AMR", Role::ProviderApprover),
                ("civil", "CIVIL", Role::Consumer),
                ("civil2", "CIVIL", Role::Consumer),
                ("gone", "CIVIL", Role::Consumer),
                ("hrss", "HRSS", Role::Consumer),
                ("tax", "TAX", Role::Consumer),
                ("susp", "SUSP", Role::Consumer),
                ("auditor", "PLAT", Role::Auditor),
            ],
        )?;
        p.users.get_mut("gone").expect("gone").status = PrincipalStatus::Suspended;
        Ok(())
    });
    let now = Utc::now();
    let mut p06 = 0;
    act(
        "psb_appr",
        "security fixture: person approvals",
        &mut |p, c| {
            let mut approve = |r| p.decide_request(c, r, "psb_appr", true, "", now);
            // CIVIL, P01: a province, clear identity, masked address and phone.
            let f = clear(&[
                "citizen_id",
                "name",
                "sex_code",
                "birth_date",
                "hukou_region_code",
                "person_status",
            ]);
            let f = masked(
                masked(f, "hukou_address", MaskKind::Address),
                "mobile_phone",
                MaskKind::Phone,
            );
            approve(request("CIVIL", "person", "P01", f, crate::regions(&[&p6])))?;
            // HRSS, P02: one county, masked identity, birth year only.
            let f = masked(
                masked(
                    masked(
                        clear(&["sex_code", "hukou_region_code"]),
                        "citizen_id",
                        MaskKind::CitizenId,
                    ),
                    "name",
                    MaskKind::Name,
                ),
                "birth_date",
                MaskKind::DateToYear,
            );
            approve(request(
                "HRSS",
                "person",
                "P02",
                f,
                crate::regions(&[county]),
            ))?;
            // TAX, P03: persons only the listed subjects.
            let subj = RowScope {
                regions: None,
                subjects: Some(subjects.clone()),
            };
            approve(request(
                "TAX",
                "person",
                "P03",
                clear(&["citizen_id", "name", "hukou_region_code"]),
                subj,
            ))?;
            // CIVIL, P04, narrowed to civil2: pseudonymous IDs, national scope.
            let mut r = request(
                "CIVIL",
                "person",
                "P04",
                masked(clear(&["sex_code"]), "citizen_id", MaskKind::Pseudonym),
                RowScope::default(),
            );
            r.users = vec!["civil2".into()];
            approve(r)?;
            // TAX, P05: expired. TAX, P06: revoked below. SUSP, P01: its department is suspended
            // below.
            let only_sex = |purpose: &str| {
                request(
                    "TAX",
                    "person",
                    purpose,
                    clear(&["sex_code"]),
                    RowScope::default(),
                )
            };
            let mut r = only_sex("P05");
            r.valid_from = now - Duration::days(30);
            r.valid_until = now - Duration::days(1);
            approve(r)?;
            p06 = approve(only_sex("P06"))?.grant.expect("grant");
            let mut r = only_sex("P01");
            r.consumer_dept = "SUSP".into();
            approve(r)?;
            // TAX, P08: a future grant, not yet valid.
            let mut r = only_sex("P08");
            r.valid_from = now + Duration::days(10);
            approve(r)?;
            Ok(())
        },
    );
    act(
        "amr_appr",
        "security fixture: entity approvals",
        &mut |p, c| {
            let mut approve = |r| p.decide_request(c, r, "amr_appr", true, "", now);
            // CIVIL, P01 on entities: legal_rep_id only as a pseudonym.
            let f = masked(
                clear(&["uscc", "org_name", "domicile_region_code"]),
                "legal_rep_id",
                MaskKind::Pseudonym,
            );
            approve(request(
                "CIVIL",
                "legal_entity",
                "P01",
                f,
                RowScope::default(),
            ))?;
            let f = masked(clear(&["uscc"]), "legal_rep_id", MaskKind::Pseudonym);
            approve(request(
                "HRSS",
                "legal_entity",
                "P07",
                f,
                RowScope::default(),
            ))?;
            // TAX, P03: entities of the province with representatives in clear.
            let f = clear(&[
                "uscc",
                "org_name",
                "legal_rep_id",
                "legal_rep_name",
                "registered_capital",
                "domicile_region_code",
            ]);
            approve(request(
                "TAX",
                "legal_entity",
                "P03",
                f,
                crate::regions(&[&p6]),
            ))?;
            Ok(())
        },
    );
    act(
        "admin",
        "security fixture: requests, revocation, suspension",
        &mut |p, c| {
            // HRSS, P02 on entities, on request (unconditional fields; legal_rep_name gets its
            // default mask).
            let f = clear(&[
                "uscc",
                "org_name",
                "legal_rep_name",
                "domicile_region_code",
                "reg_status",
                "registered_capital",
            ]);
            p.grant_on_request(
                c,
                request("HRSS", "legal_entity", "P02", f, RowScope::default()),
                "admin",
                now,
            )?;
            p.revoke(p06, "admin", "purpose fulfilled", now)?;
            // Suspended after its grant was made: the grant stays, the department cannot use it.
            p.departments.get_mut("SUSP").expect("susp").status = PrincipalStatus::Suspended;
            Ok(())
        },
    );

    // The raw reference: same store, every field clear, no scope.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    // Read straight from the dataset's Parquet files (version 1 is all there is): the
    // reference must not go through the gate it checks.
    let raw = SessionContext::new();
    for name in ["person", "legal_entity"] {
        let data = dir.path().join("datasets").join(name).join("data");
        rt.block_on(raw.register_parquet(
            name,
            data.to_str().expect("utf8 path"),
            ParquetReadOptions::default(),
        ))
        .expect("register");
    }
    let mut vars = BTreeMap::new();
    vars.insert("P".to_string(), prov.clone());
    vars.insert("P6".to_string(), p6);
    vars.insert("C".to_string(), county.clone());
    vars.insert("C4".to_string(), county[..4].to_string());
    vars.insert("IN_ID".to_string(), in_county.clone());
    vars.insert("PROV_ID".to_string(), in_prov_not_county.clone());
    vars.insert("OUT_ID".to_string(), out_prov.clone());
    vars.insert("REP_ID".to_string(), subjects[0].clone());
    vars.insert("NONREP_ID".to_string(), non_rep.clone());
    vars.insert("IN_USCC".to_string(), in_uscc);
    let mut secrets: Vec<String> = ids.iter().take(3000).cloned().collect();
    secrets.extend(
        names
            .into_iter()
            .filter(|n| n.chars().count() >= 3)
            .take(500),
    );
    let engine = Engine::open(dir.path()).expect("engine");
    Fixture {
        _dir: dir,
        engine,
        vars,
        raw,
        rt,
        secrets,
    }
}

impl Fixture {
    /// Fill `$NAME` placeholders from [`Fixture::vars`].
    pub fn subst(&self, s: &str) -> String {
        let mut out = s.to_string();
        // Longest names first, so $P6 is not read as $P followed by "6".
        let mut keys: Vec<&String> = self.vars.keys().collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
        for k in keys {
            out = out.replace(&format!("${k}"), &self.vars[k]);
        }
        out
    }

    /// The rows of `sql` on the raw reference (every field clear, no scope), rendered.
    pub fn raw_rows(&self, sql: &str) -> Vec<String> {
        let batches = self.rt.block_on(async {
            self.raw
                .sql(sql)
                .await
                .expect("raw plan")
                .collect()
                .await
                .expect("raw run")
        });
        render(&batches)
    }

    /// Panic when `msg` contains a subject key or a name from the data.
    pub fn assert_clean(&self, msg: &str) {
        for s in &self.secrets {
            assert!(
                !msg.contains(s.as_str()),
                "error message leaks a data value: {msg}"
            );
        }
    }
}
