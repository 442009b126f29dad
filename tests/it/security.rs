//! The security suite: principal + query → rows or error, one topic a file in
//! `tests/security/*.slt`, in the style of sqllogictest.
//!
//! File syntax (blocks separated by blank lines, `#` comments):
//! ```text
//! as <user> <purpose>          # the principal for the blocks that follow
//!
//! query                        # rows expected; the SQL runs as the current principal
//! SELECT ...
//! ----
//! raw: SELECT ...              # ...equal (as sorted rows) to this query on the raw data,
//! rows: 3                      # ...or this many rows,
//! empty                        # ...or none,
//! a | b                        # ...or exactly these rows (sorted), cells joined by " | ",
//! lacks: x ;; y                # ...or output text containing none of these,
//! has: z                       #    and containing this
//!
//! error <pattern>              # the SQL fails; the message contains the pattern's
//! SELECT ...                   # '.*'-separated parts in order (case-insensitive)
//! ```
//! `$NAME` placeholders are filled from the fixture (scope codes, in/out-of-scope subject
//! keys). Every error message is also checked never to contain a subject key or name from
//! the data. The raw reference reads the same store with every field clear and no scope.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{Duration, Utc};
use datafusion::prelude::SessionContext;
use govshare_core::access::policy::{
    Department, FieldGrant, GrantRequest, Mode, PrincipalStatus, Role, RowScope, Treatment, User,
};
use govshare_core::access::secured::SecuredTable;
use govshare_core::catalog::MaskKind;
use govshare_core::engine::Engine;
use govshare_core::ingest::{LoadOptions, Source};
use govshare_core::synth::Synth;
use govshare_core::{Error, Store};

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub engine: Engine,
    pub vars: BTreeMap<String, String>,
    raw: SessionContext,
    rt: tokio::runtime::Runtime,
    /// Raw values that must never appear in an error message.
    secrets: Vec<String>,
}

fn clear(fields: &[&str]) -> Vec<FieldGrant> {
    fields
        .iter()
        .map(|f| FieldGrant {
            field: f.to_string(),
            treatment: Treatment::Clear,
        })
        .collect()
}

fn masked(mut v: Vec<FieldGrant>, field: &str, m: MaskKind) -> Vec<FieldGrant> {
    v.push(FieldGrant {
        field: field.into(),
        treatment: Treatment::Masked(m),
    });
    v
}

fn req(
    dept: &str,
    dataset: &str,
    purpose: &str,
    fields: Vec<FieldGrant>,
    scope: RowScope,
) -> GrantRequest {
    let now = Utc::now();
    GrantRequest {
        consumer_dept: dept.into(),
        users: vec![],
        dataset: dataset.into(),
        fields,
        purpose_code: purpose.into(),
        purpose_text: format!("{purpose} 测试用途"),
        scope,
        modes: vec![Mode::Query],
        valid_from: now - Duration::days(1),
        valid_until: now + Duration::days(365),
    }
}

fn strings(b: &[RecordBatch], col: usize) -> Vec<String> {
    b.iter()
        .flat_map(|b| {
            let c = b.column(col).as_string::<i32>();
            (0..c.len())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build)
}

fn build() -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::init(dir.path()).expect("init");
    let synth = Synth::new(5, 4000, 300);
    let o = LoadOptions {
        row_group_size: 1024,
        ..Default::default()
    };
    store
        .writer()
        .expect("w")
        .load("person", Source::Batches(synth.persons(1000).collect()), &o)
        .expect("persons");
    store
        .writer()
        .expect("w")
        .load(
            "legal_entity",
            Source::Batches(synth.entities(100).collect()),
            &o,
        )
        .expect("entities");

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
    store
        .writer()
        .expect("w")
        .update_policy("root", "security fixture", |p, c| {
            for (code, name) in [
                ("PLAT", "省大数据中心"),
                ("PSB", "省公安厅"),
                ("AMR", "省市场监督管理局"),
                ("CIVIL", "省民政厅"),
                ("HRSS", "县人社局"),
                ("TAX", "省税务局"),
                ("SUSP", "某停用部门"),
            ] {
                p.upsert_department(Department {
                    code: code.into(),
                    name: name.into(),
                    region: p6.clone(),
                    status: PrincipalStatus::Active,
                })?;
            }
            for (id, dept, roles) in [
                ("admin", "PLAT", vec![Role::PlatformAdmin]),
                ("psb_appr", "PSB", vec![Role::ProviderApprover]),
                ("amr_appr", "AMR", vec![Role::ProviderApprover]),
                ("civil", "CIVIL", vec![Role::Consumer]),
                ("civil2", "CIVIL", vec![Role::Consumer]),
                ("gone", "CIVIL", vec![Role::Consumer]),
                ("hrss", "HRSS", vec![Role::Consumer]),
                ("tax", "TAX", vec![Role::Consumer]),
                ("susp", "SUSP", vec![Role::Consumer]),
                ("auditor", "PLAT", vec![Role::Auditor]),
            ] {
                p.upsert_user(User {
                    id: id.into(),
                    name: format!("{id} 实名"),
                    department: dept.into(),
                    roles,
                    status: PrincipalStatus::Active,
                })?;
            }
            p.users.get_mut("gone").expect("gone").status = PrincipalStatus::Suspended;
            let now = Utc::now();
            let region = |codes: &[&str]| RowScope {
                regions: Some(codes.iter().map(|s| s.to_string()).collect()),
                subjects: None,
            };
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
            p.decide_request(
                c,
                req("CIVIL", "person", "P01", f, region(&[&p6])),
                "psb_appr",
                true,
                "",
                now,
            )?;
            // CIVIL, P01 on entities by request: legal_rep_id only as a pseudonym.
            let f = masked(
                clear(&["uscc", "org_name", "domicile_region_code"]),
                "legal_rep_id",
                MaskKind::Pseudonym,
            );
            p.decide_request(
                c,
                req("CIVIL", "legal_entity", "P01", f, RowScope::default()),
                "amr_appr",
                true,
                "",
                now,
            )?;
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
            p.decide_request(
                c,
                req("HRSS", "person", "P02", f, region(&[county])),
                "psb_appr",
                true,
                "",
                now,
            )?;
            // HRSS, P02 on entities, on request (unconditional fields; legal_rep_name gets its default mask).
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
                req("HRSS", "legal_entity", "P02", f, RowScope::default()),
                "admin",
                now,
            )?;
            let f = masked(clear(&["uscc"]), "legal_rep_id", MaskKind::Pseudonym);
            p.decide_request(
                c,
                req("HRSS", "legal_entity", "P07", f, RowScope::default()),
                "amr_appr",
                true,
                "",
                now,
            )?;
            // TAX, P03: entities of the province with representatives in clear; persons only
            // the listed subjects.
            let f = clear(&[
                "uscc",
                "org_name",
                "legal_rep_id",
                "legal_rep_name",
                "registered_capital",
                "domicile_region_code",
            ]);
            p.decide_request(
                c,
                req("TAX", "legal_entity", "P03", f, region(&[&p6])),
                "amr_appr",
                true,
                "",
                now,
            )?;
            let subj = RowScope {
                regions: None,
                subjects: Some(subjects.clone()),
            };
            p.decide_request(
                c,
                req(
                    "TAX",
                    "person",
                    "P03",
                    clear(&["citizen_id", "name", "hukou_region_code"]),
                    subj,
                ),
                "psb_appr",
                true,
                "",
                now,
            )?;
            // CIVIL, P04, narrowed to civil2: pseudonymous IDs, national scope.
            let mut r = req(
                "CIVIL",
                "person",
                "P04",
                masked(clear(&["sex_code"]), "citizen_id", MaskKind::Pseudonym),
                RowScope::default(),
            );
            r.users = vec!["civil2".into()];
            p.decide_request(c, r, "psb_appr", true, "", now)?;
            // TAX, P05: expired. TAX, P06: revoked. SUSP, P01: its department is suspended.
            let mut r = req(
                "TAX",
                "person",
                "P05",
                clear(&["sex_code"]),
                RowScope::default(),
            );
            r.valid_from = now - Duration::days(30);
            r.valid_until = now - Duration::days(1);
            p.decide_request(c, r, "psb_appr", true, "", now)?;
            let a = p.decide_request(
                c,
                req(
                    "TAX",
                    "person",
                    "P06",
                    clear(&["sex_code"]),
                    RowScope::default(),
                ),
                "psb_appr",
                true,
                "",
                now,
            )?;
            p.revoke(a.grant.expect("grant"), "admin", "purpose fulfilled", now)?;
            p.decide_request(
                c,
                req(
                    "SUSP",
                    "person",
                    "P01",
                    clear(&["sex_code"]),
                    RowScope::default(),
                ),
                "psb_appr",
                true,
                "",
                now,
            )?;
            // TAX, P08: a future grant, not yet valid.
            let mut r = req(
                "TAX",
                "person",
                "P08",
                clear(&["sex_code"]),
                RowScope::default(),
            );
            r.valid_from = now + Duration::days(10);
            p.decide_request(c, r, "psb_appr", true, "", now)?;
            // Suspended after its grant was made: the grant stays, the department cannot use it.
            p.departments.get_mut("SUSP").expect("susp").status = PrincipalStatus::Suspended;
            Ok(())
        })
        .expect("policy");

    // The raw reference: same store, every field clear, no scope.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    let raw = SessionContext::new();
    for name in ["person", "legal_entity"] {
        let snap = Arc::new(store.snapshot(name).expect("snap"));
        let all = govshare_core::access::policy::DatasetAccess {
            grant_id: 0,
            fields: snap
                .dataset()
                .fields
                .iter()
                .map(|f| (f.name.clone(), Treatment::Clear))
                .collect(),
            scope: RowScope::default(),
        };
        raw.register_table(
            name,
            Arc::new(SecuredTable::new(snap, &all, [0; 32]).expect("raw table")),
        )
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

    pub fn assert_clean(&self, msg: &str) {
        for s in &self.secrets {
            assert!(
                !msg.contains(s.as_str()),
                "error message leaks a data value: {msg}"
            );
        }
    }
}

pub fn render(batches: &[RecordBatch]) -> Vec<String> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let fmts: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).expect("fmt"))
            .collect();
        for i in 0..b.num_rows() {
            rows.push(
                fmts.iter()
                    .map(|f| f.value(i).to_string())
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
        }
    }
    rows.sort();
    rows
}

fn matches(pattern: &str, msg: &str) -> bool {
    let msg = msg.to_lowercase();
    let mut pos = 0;
    for part in pattern.to_lowercase().split(".*") {
        match msg[pos..].find(part.trim()) {
            Some(i) => pos += i + part.trim().len(),
            None => return false,
        }
    }
    true
}

/// Run one .slt file; returns the number of cases.
fn run_file(path: &std::path::Path) -> usize {
    let f = fixture();
    let text = std::fs::read_to_string(path).expect("read slt");
    let mut principal: Option<(String, String)> = None;
    let mut cases = 0;
    let blocks: Vec<Vec<&str>> = text
        .split("\n\n")
        .map(|b| {
            b.lines()
                .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|b| !b.is_empty())
        .collect();
    for block in blocks {
        let head = block[0].trim();
        let here = format!("{}: block starting `{head}`", path.display());
        if let Some(rest) = head.strip_prefix("as ") {
            let mut it = rest.split_whitespace();
            principal = Some((
                it.next().expect("user").into(),
                it.next().expect("purpose").into(),
            ));
            assert_eq!(block.len(), 1, "{here}: `as` stands alone");
            continue;
        }
        let (user, purpose) = principal
            .clone()
            .unwrap_or_else(|| panic!("{here}: no `as` line before it"));
        cases += 1;
        let run = |sql: &str| f.engine.session(&user, &purpose).and_then(|s| s.sql(sql));
        if head == "query" {
            let sep = block
                .iter()
                .position(|l| l.trim() == "----")
                .unwrap_or_else(|| panic!("{here}: no ----"));
            let sql = f.subst(&block[1..sep].join("\n"));
            let expect: Vec<String> = block[sep + 1..].iter().map(|l| f.subst(l.trim())).collect();
            let got = match run(&sql) {
                Ok(r) => render(&r.batches),
                Err(e) => panic!("{here}: as {user}/{purpose}: {sql}\nfailed: {e}"),
            };
            match expect.first().map(String::as_str) {
                Some(e) if e.starts_with("raw:") => {
                    let want = f.raw_rows(e.trim_start_matches("raw:").trim());
                    assert_eq!(got, want, "{here}: as {user}/{purpose}: {sql}");
                }
                Some(e) if e.starts_with("rows:") => {
                    let n: usize = e.trim_start_matches("rows:").trim().parse().expect("count");
                    assert_eq!(got.len(), n, "{here}: as {user}/{purpose}: {sql}\n{got:?}");
                }
                Some(e) if e.starts_with("lacks:") || e.starts_with("has:") => {
                    let text = got.join("\n");
                    for line in &expect {
                        if let Some(l) = line.strip_prefix("lacks:") {
                            for part in l.split(";;") {
                                assert!(
                                    !text.contains(part.trim()),
                                    "{here}: output contains `{}`:\n{text}",
                                    part.trim()
                                );
                            }
                        } else if let Some(h) = line.strip_prefix("has:") {
                            assert!(
                                text.contains(h.trim()),
                                "{here}: output lacks `{}`:\n{text}",
                                h.trim()
                            );
                        }
                    }
                }
                Some("empty") => assert!(
                    got.is_empty(),
                    "{here}: as {user}/{purpose}: {sql}\ngot {got:?}"
                ),
                _ => {
                    let mut want = expect.clone();
                    want.sort();
                    assert_eq!(got, want, "{here}: as {user}/{purpose}: {sql}");
                }
            }
        } else if let Some(pattern) = head.strip_prefix("error") {
            let sql = f.subst(&block[1..].join("\n"));
            match run(&sql) {
                Ok(r) => panic!(
                    "{here}: as {user}/{purpose}: {sql}\nexpected an error, got {:?}",
                    render(&r.batches)
                ),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        matches(&f.subst(pattern.trim()), &msg),
                        "{here}: as {user}/{purpose}: {sql}\nerror `{msg}` does not match `{}`",
                        pattern.trim()
                    );
                    f.assert_clean(&msg);
                    if pattern.trim().starts_with("access denied") {
                        assert!(
                            matches!(e, Error::AccessDenied(_)),
                            "{here}: {e:?} is not an AccessDenied"
                        );
                    }
                }
            }
        } else {
            panic!("{here}: unknown directive");
        }
    }
    cases
}

#[test]
fn security_suite() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/security");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    let mut total = 0;
    for p in &files {
        let n = run_file(p);
        eprintln!("{}: {n} cases", p.display());
        total += n;
    }
    assert!(total >= 150, "the suite has {total} cases");
}
