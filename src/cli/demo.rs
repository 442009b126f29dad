//! The guided tour: build a store with synthetic data and show what govshare does, step by
//! step, through the same core calls the other commands use.

use std::path::Path;
use std::time::Instant;

use govshare_core::access::policy::{
    AuthMethod, Department, FieldGrant, Founder, GrantRequest, Login, Mode, PrincipalStatus, Role,
    RowScope, Treatment, User,
};
use govshare_core::catalog::MaskKind;
use govshare_core::ingest::{Encoding, HandoverInfo, LoadMode, LoadOptions, Source, write_csv};
use govshare_core::synth::Synth;
use govshare_core::{Error, Store, quality};

use super::args::*;
use super::*;

/// The demo's operator (loads), auditor (audit reads) and coordinator (escalations, reports).
const OPERATOR: &str = "ops";
const AUDITOR: &str = "audit";
const COORDINATOR: &str = "coord";

fn step(title: &str) {
    out!("\n== {title}");
}

pub(super) fn run(dir: &Path, persons: usize, entities: usize) -> Result<(), Error> {
    use arrow::array::AsArray;
    if dir.exists() {
        if !dir.join("govshare-store.json").exists() {
            return Err(Error::invalid(format!(
                "{} exists and is not a govshare store; refusing to replace it",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    step(&format!(
        "1. A new store at {}, its first platform administrator, the platform's staff",
        dir.display()
    ));
    let founder = Founder {
        user: "admin".into(),
        name: "周平台".into(),
        department: "PLAT".into(),
        department_name: "省大数据中心".into(),
        region: "430000".into(),
    };
    let store = Store::init(dir, &founder)?;
    let engine = govshare_core::Engine::open(dir)?;
    for (id, name, role) in [
        (OPERATOR, "王芳", Role::Operator),
        (AUDITOR, "孙审计", Role::Auditor),
        (COORDINATOR, "吴协调", Role::Coordinator),
    ] {
        engine.upsert_user(
            "admin",
            User {
                id: id.into(),
                name: name.into(),
                department: "PLAT".into(),
                roles: vec![role],
                status: PrincipalStatus::Active,
            },
        )?;
    }
    out!(
        "admin (platform-admin) added {OPERATOR} (operator), {AUDITOR} (auditor) and {COORDINATOR} (coordinator)"
    );
    super::catalog::run(dir, CatalogCmd::List { by: "admin".into() })?;

    step(&format!(
        "2. Synthetic base data: {persons} persons, {entities} legal entities (seed 42)"
    ));
    let synth = Synth::new(42, persons, entities);
    let t = Instant::now();
    let person_batches: Vec<_> = synth.persons(64 * 1024).collect();
    let entity_batches: Vec<_> = synth.entities(64 * 1024).collect();
    out!("generated in {:.2?}", t.elapsed());
    // Three generated persons the later steps look up and change: taken from the input, so
    // the demo never reads the store around the gate.
    let sample = person_batches
        .first()
        .map(|b| b.slice(0, b.num_rows().min(3)))
        .ok_or_else(|| Error::invalid("no persons generated"))?;
    let sample_id = |i: usize| -> String {
        sample
            .column_by_name("citizen_id")
            .map(|c| c.as_string::<i32>().value(i).to_string())
            .unwrap_or_default()
    };

    step("3. Full loads: validate every value, cluster by region, build indexes, commit");
    for (name, batches, total) in [
        ("person", person_batches, persons),
        ("legal_entity", entity_batches, entities),
    ] {
        let pb = progress(Some(total as u64), name);
        let tick = |n: u64| pb.set_position(n);
        let opts = LoadOptions {
            handover: HandoverInfo {
                handover_person: "李明 (provider clerk)".into(),
                receiver: "王芳 (platform operator)".into(),
                method: "generated".into(),
                ..Default::default()
            },
            progress: Some(&tick),
            ..Default::default()
        };
        let t = Instant::now();
        let r = engine
            .writer(OPERATOR)?
            .load(name, Source::Batches(batches), &opts);
        pb.finish_and_clear();
        let r = r?;
        let secs = t.elapsed().as_secs_f64();
        out!(
            "{name}: {} rows in {:.2}s ({:.0} rows/s), {} files, {} row groups",
            r.manifest.live_rows,
            secs,
            r.manifest.live_rows as f64 / secs,
            r.manifest.files.len(),
            r.manifest
                .files
                .iter()
                .map(|f| f.row_groups.len())
                .sum::<usize>()
        );
    }

    step("4. Key lookup and region scopes from roaring bitmaps");
    let snap = store.snapshot("person")?;
    let key = sample_id(0);
    let t = Instant::now();
    let id = snap.lookup(&key)?;
    out!(
        "key index: a citizen ID → row {id:?} ({:.2?}, including lazy index load)",
        t.elapsed()
    );
    let t = Instant::now();
    let found = engine.lookup(OPERATOR, "demo: check a delivered record", "person", &key)?;
    out!(
        "the operator's lookup of that person: {} row, {} fields ({:.2?}; recorded with its reason)",
        found.num_rows(),
        found.schema.fields().len(),
        t.elapsed()
    );
    let county = govshare_core::regions::all()
        .iter()
        .map(|r| {
            (
                r.code,
                snap.scope("hukou_region_code", r.code)
                    .map(|b| b.len())
                    .unwrap_or(0),
            )
        })
        .max_by_key(|(_, n)| *n)
        .map(|(c, _)| c)
        .unwrap_or("430623");
    for scope in [&county[..2], &county[..4], county] {
        let bm = snap.scope("hukou_region_code", scope)?;
        out!(
            "scope {scope:<6}: {:>8} persons, {:>3} of {} row groups touched",
            bm.len(),
            snap.row_groups_touched(&bm),
            snap.row_groups_total()
        );
    }
    let women = snap.scope("sex_code", "2")?;
    let here = snap.scope("hukou_region_code", county)?;
    out!(
        "women registered in {county}: {} (bitmap AND)",
        (&women & &here).len()
    );

    step("5. Incremental update: one upsert (new address), one delete — by key");
    let upd_key = sample_id(1);
    let del_key = sample_id(2);
    let tmp = dir.join("incremental.csv");
    let changed = sample.slice(1, 1);
    write_csv(&tmp, [changed], Encoding::Utf8)?;
    let text = std::fs::read_to_string(&tmp).map_err(|e| Error::Io {
        path: tmp.clone(),
        source: e,
    })?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let row = lines.next().unwrap_or_default().replace("号", "号(已迁居)");
    let csv = format!(
        "_op,{header}\nupsert,{row}\ndelete,{del_key}{}\n",
        ",".repeat(header.matches(',').count())
    );
    std::fs::write(&tmp, csv).map_err(|e| Error::Io {
        path: tmp.clone(),
        source: e,
    })?;
    let r = engine.writer(OPERATOR)?.load(
        "person",
        Source::from_path(&tmp),
        &LoadOptions {
            mode: LoadMode::Incremental,
            ..Default::default()
        },
    )?;
    out!(
        "version {}: {} upserted, {} deleted, {} live rows",
        r.manifest.version,
        r.manifest.handover.rows_accepted,
        r.manifest.handover.rows_deleted,
        r.manifest.live_rows
    );
    let v1 = store.snapshot_at("person", 1)?;
    let v2 = store.snapshot("person")?;
    out!(
        "deleted key in v1: {:?}, in v2: {:?}",
        v1.lookup(&del_key)?.is_some(),
        v2.lookup(&del_key)?.is_some()
    );
    let address = |b: &arrow::array::RecordBatch, row: usize| -> String {
        b.column_by_name("hukou_address")
            .map(|c| c.as_string::<i32>().value(row).to_string())
            .unwrap_or_default()
    };
    let now = engine.lookup(OPERATOR, "demo: check the update", "person", &upd_key)?;
    out!(
        "updated address as delivered: {}\n                  now stored: {}",
        address(&sample, 1),
        now.batches
            .first()
            .map(|b| address(b, 0))
            .unwrap_or_default()
    );
    super::data::print_versions(&engine.versions(AUDITOR, "person")?);

    step("6. Data-quality report on a provider file with some bad rows");
    let qfile = dir.join("quality-sample.csv");
    write_csv(&qfile, Synth::new(7, 2000, 0).persons(2000), Encoding::Utf8)?;
    let text = std::fs::read_to_string(&qfile).map_err(|e| Error::Io {
        path: qfile.clone(),
        source: e,
    })?;
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    // Break a few rows the way real exports break: a wrong check character, an impossible
    // date, a code outside its table, a repeated row, a sex code contradicting the ID.
    let mut set = |line: usize, col: usize, f: &dyn Fn(&str) -> String| {
        if let Some(l) = lines.get_mut(line) {
            let mut cols: Vec<String> = l.split(',').map(String::from).collect();
            if let Some(c) = cols.get_mut(col) {
                *c = f(c);
            }
            *l = cols.join(",");
        }
    };
    set(3, 0, &|c| flip_check(c));
    set(7, 5, &|_| "1990-02-30".into());
    set(20, 7, &|_| "XXX".into());
    set(25, 3, &|c| if c == "1" { "2".into() } else { "1".into() });
    if lines.len() > 30 {
        lines[30] = lines[2].clone();
    }
    std::fs::write(&qfile, lines.join("\n") + "\n").map_err(|e| Error::Io {
        path: qfile.clone(),
        source: e,
    })?;
    out_partial!(
        "{}",
        quality::report(
            &store.catalog()?,
            "person",
            &Source::from_path(&qfile),
            chrono_today()
        )?
    );
    let subject = access_demo(&engine, county)?;
    application_demo(&engine, dir)?;
    step("9. The audit trail: every decision on a hash chain; who accessed a person");
    match engine.verify_audit(AUDITOR, None)? {
        govshare_core::audit::Verdict::Intact { records, head } => out!(
            "chain intact: {records} records, head #{} {}…",
            head.seq,
            &head.hash[..16]
        ),
        other => out!("chain BROKEN: {other:?}"),
    }
    super::audit::run(
        dir,
        AuditCmd::Tail {
            n: 4,
            by: AUDITOR.into(),
        },
    )?;
    out!("\n$ govshare audit who-accessed <a citizen ID in county {county}> --by {AUDITOR}");
    for a in engine.who_accessed(AUDITOR, &subject)? {
        out!(
            "  {} dept {} user {} purpose {} read {} v{} — {}",
            a.time.format("%H:%M:%S"),
            a.department,
            a.user,
            a.purpose,
            a.dataset,
            a.version,
            a.sql
        );
    }
    out!(
        "\nDone. Explore with: govshare --store {} catalog show person --by zhang | versions person --by audit | grant list --by admin | sql --user zhang --purpose P01 \"SELECT count(*) FROM person\"",
        dir.display()
    );
    Ok(())
}

/// Step 7 of the demo: departments, users, grants, and the same queries as three principals.
/// Returns the citizen ID of a person in the county, for the who-accessed example.
fn access_demo(engine: &govshare_core::Engine, county: &str) -> Result<String, Error> {
    step(
        "7. Access control: departments, real-name users, grants — each by the user whose act it is; the same queries as three principals",
    );
    let now = chrono::Utc::now();
    let province = format!("{}0000", &county[..2]);
    engine
        .writer("admin")?
        .update_policy("departments and users of the demo", |p, _| {
            for (code, name, region) in [
                ("PLAT", "省大数据中心", province.as_str()),
                ("PSB", "省公安厅", province.as_str()),
                ("AMR", "省市场监督管理局", province.as_str()),
                ("CIVIL", "省民政厅", province.as_str()),
                ("HRSS", "县人力资源和社会保障局", county),
                ("TAX", "省税务局", province.as_str()),
            ] {
                p.upsert_department(Department {
                    code: code.into(),
                    name: name.into(),
                    region: region.into(),
                    status: PrincipalStatus::Active,
                })?;
            }
            for (id, name, dept, role) in [
                ("psb_appr", "赵审批", "PSB", Role::ProviderApprover),
                ("amr_appr", "钱审批", "AMR", Role::ProviderApprover),
                ("zhang", "张民政", "CIVIL", Role::Consumer),
                ("li", "李人社", "HRSS", Role::Consumer),
                ("wang", "王税务", "TAX", Role::Consumer),
            ] {
                p.upsert_user(User {
                    id: id.into(),
                    name: name.into(),
                    department: dept.into(),
                    roles: vec![role],
                    status: PrincipalStatus::Active,
                })?;
            }
            Ok(())
        })?;
    let grant = |dept: &str,
                 dataset: &str,
                 purpose: &str,
                 text: &str,
                 fields: &[(&str, Option<MaskKind>)],
                 regions: Option<Vec<String>>| GrantRequest {
        consumer_dept: dept.into(),
        users: vec![],
        dataset: dataset.into(),
        fields: fields
            .iter()
            .map(|(f, m)| FieldGrant {
                field: f.to_string(),
                treatment: m.map_or(Treatment::Clear, Treatment::Masked),
            })
            .collect(),
        purpose_code: purpose.into(),
        purpose_text: text.into(),
        scope: RowScope {
            regions,
            subjects: None,
        },
        modes: vec![Mode::Query],
        verify: None,
        export: None,
        aggregate: None,
        valid_from: now,
        valid_until: now + chrono::Duration::days(365),
    };
    let ident = [
        ("citizen_id", None),
        ("name", None),
        ("birth_date", None),
        ("hukou_region_code", None),
        ("hukou_address", None),
        ("mobile_phone", Some(MaskKind::Phone)),
    ];
    engine
        .writer("psb_appr")?
        .update_policy("demo approvals", |p, c| {
            p.decide_request(
                c,
                grant(
                    "CIVIL",
                    "person",
                    "P01",
                    "最低生活保障资格审核",
                    &ident,
                    Some(vec![province.clone()]),
                ),
                "psb_appr",
                true,
                "",
                now,
            )?;
            let masked = [
                ("citizen_id", Some(MaskKind::CitizenId)),
                ("name", Some(MaskKind::Name)),
                ("birth_date", Some(MaskKind::DateToYear)),
                ("hukou_region_code", None),
                ("hukou_address", Some(MaskKind::Address)),
                ("mobile_phone", Some(MaskKind::Phone)),
            ];
            p.decide_request(
                c,
                grant(
                    "HRSS",
                    "person",
                    "P02",
                    "就业登记核查",
                    &masked,
                    Some(vec![county.to_string()]),
                ),
                "psb_appr",
                true,
                "",
                now,
            )?;
            Ok(())
        })?;
    engine
        .writer("admin")?
        .update_policy("demo grant on request", |p, c| {
            p.grant_on_request(
                c,
                grant(
                    "TAX",
                    "legal_entity",
                    "P03",
                    "税务登记比对",
                    &[
                        ("uscc", None),
                        ("org_name", None),
                        ("registered_capital", None),
                        ("domicile_region_code", None),
                    ],
                    None,
                ),
                "admin",
                now,
            )?;
            Ok(())
        })?;
    out!("zhang (省民政厅, P01): person in province {province}, identity in clear, phone masked");
    out!("li    (县人社局, P02):  person in county {county}, identity masked");
    out!("wang  (省税务局, P03):  legal_entity only");
    let queries = [
        "SELECT citizen_id, name, birth_date, hukou_address, mobile_phone FROM person ORDER BY citizen_id LIMIT 3",
        "SELECT count(*) AS persons FROM person",
        "SELECT marital_status_code FROM person LIMIT 1",
    ];
    for q in queries {
        out!("\n$ {q}");
        for (user, purpose) in [("zhang", "P01"), ("li", "P02"), ("wang", "P03")] {
            out_partial!("-- as {user}/{purpose}: ");
            // The host authenticated them with a second factor: sensitive items in clear
            // (grade L4, the citizen ID) need it.
            let login = Login::new(user, purpose, AuthMethod::SecondFactor);
            match engine.session_as(&login).and_then(|s| s.sql(q)) {
                Ok(r) => out!("\n{}", arrow_pretty(&r.batches)?),
                Err(e) => out!("{e}"),
            }
        }
    }
    // A person of the county, found the way everyone finds data: through the gate, on the
    // trail (zhang's grant covers the province in clear).
    let login = Login::new("zhang", "P01", AuthMethod::SecondFactor);
    let b = engine.session_as(&login)?.sql(&format!(
        "SELECT citizen_id FROM person WHERE hukou_region_code = '{county}' ORDER BY citizen_id LIMIT 1"
    ))?;
    use arrow::array::AsArray;
    b.batches
        .first()
        .filter(|b| b.num_rows() > 0)
        .map(|b| b.column(0).as_string::<i32>().value(0).to_string())
        .ok_or_else(|| Error::NotFound("nobody in the county".into()))
}

/// Step 8: an application from the tax bureau going through the completeness check and the
/// provider's decision, on the working-day calendar; the coordinator's report.
fn application_demo(engine: &govshare_core::Engine, dir: &Path) -> Result<(), Error> {
    use govshare_core::access::policy::{AppDecision, ApplicationForm};
    use govshare_core::engine::{WorkflowAct as Act, WorkflowOutcome as Out};
    step(
        "8. An application in working days: wang applies, admin checks completeness, psb_appr approves narrower",
    );
    let now = engine.now();
    let form = ApplicationForm {
        request: GrantRequest {
            consumer_dept: "TAX".into(),
            users: vec!["wang".into()],
            dataset: "person".into(),
            fields: [
                ("sex_code", Treatment::Clear),
                ("name", Treatment::Clear),
                ("mobile_phone", Treatment::Clear),
            ]
            .into_iter()
            .map(|(f, treatment)| FieldGrant {
                field: f.into(),
                treatment,
            })
            .collect(),
            purpose_code: "P04".into(),
            purpose_text: "个人所得税专项附加扣除核验".into(),
            scope: RowScope::default(),
            modes: vec![Mode::Query],
            verify: None,
            export: None,
            aggregate: None,
            valid_from: now,
            valid_until: now + chrono::Duration::days(365),
        },
        legal_basis: "《中华人民共和国个人所得税法》第六条".into(),
    };
    let id = match engine.act("wang", Act::Apply { form })? {
        Out::Application(a) => {
            out!(
                "wang applied (application {}): sex_code is unconditional, granted at once (grant {}); name and mobile_phone are conditional: {}",
                a.id,
                a.immediate_grant.unwrap_or_default(),
                a.state.label()
            );
            a.id
        }
        other => return Err(Error::internal(format!("unexpected outcome {other:?}"))),
    };
    match engine.act("wang", Act::Complete { application: id }) {
        Err(e) => out!("wang passes his own completeness check? {e}"),
        Ok(_) => return Err(Error::internal("an applicant passed his own check")),
    }
    if let Out::Application(a) = engine.act("admin", Act::Complete { application: id })? {
        out!(
            "admin: complete — to PSB, due {} (the person dataset's 3 working days, counted on the Chinese calendar with its holidays and 调休)",
            a.due.map(|d| d.to_string()).unwrap_or_default()
        );
    }
    let narrower = AppDecision {
        approve: true,
        reason: "同意核验姓名；手机号非必要，不予提供".into(),
        fields: Some(vec![FieldGrant {
            field: "name".into(),
            treatment: Treatment::Masked(MaskKind::Name),
        }]),
        scope: None,
        valid_until: None,
    };
    if let Out::Approval(ap) = engine.act(
        "psb_appr",
        Act::Decide {
            application: id,
            decision: narrower,
        },
    )? {
        out!(
            "psb_appr: approved narrower — name masked, no phone (grant {})",
            ap.grant.unwrap_or_default()
        );
    }
    out!(
        "
$ govshare application list --by wang"
    );
    super::workflow::application(dir, AppCmd::List { by: "wang".into() })?;
    out!(
        "
$ govshare report applications --by {COORDINATOR}"
    );
    let r = engine.report_sql(
        COORDINATOR,
        "SELECT id, dataset, consumer_dept, provider, state, due, overdue FROM applications",
    )?;
    out!("{}", arrow_pretty(&r.batches)?);
    Ok(())
}

fn flip_check(line: &str) -> String {
    let mut s = line.to_string();
    if s.len() >= 18 {
        let c = s.as_bytes()[17];
        let r = if c == b'0' { "1" } else { "0" };
        s.replace_range(17..18, r);
    }
    s
}
