//! Access-control behaviour across policy changes, grants' rules, and principals: what the
//! one-query-at-a-time .slt files cannot show.

use chrono::{Duration, Utc};
use govshare_core::access::policy::{
    FieldGrant, GrantRequest, Mode, PrincipalStatus, Role, RowScope, Treatment,
};
use govshare_core::catalog::MaskKind;
use govshare_core::engine::Engine;
use govshare_core::{Error, Store};

use govshare_testkit::render;

pub fn small_store(dir: &std::path::Path) -> Store {
    store_with(dir, 500, 32 * 1024)
}

/// [`small_store`] with `persons` persons written in row groups of `row_group` rows.
pub fn store_with(dir: &std::path::Path, persons: usize, row_group: usize) -> Store {
    let store = govshare_testkit::generated_store(dir, 9, persons, 80, row_group);
    store
        .writer("root")
        .expect("w")
        .update_policy("setup", |p, _| {
            govshare_testkit::add_principals(
                p,
                "430000",
                &[
                    ("PLAT", "平台"),
                    ("PSB", "省公安厅"),
                    ("AMR", "省市场监督管理局"),
                    ("A", "甲局"),
                    ("B", "乙局"),
                ],
                &[
                    ("admin", "PLAT", Role::PlatformAdmin),
                    ("psb", "PSB", Role::ProviderApprover),
                    ("amr", "AMR", Role::ProviderApprover),
                    ("a", "A", Role::Consumer),
                    ("a2", "A", Role::Consumer),
                    ("b", "B", Role::Consumer),
                    ("aud", "PLAT", Role::Auditor),
                ],
            )
        })
        .expect("policy");
    store
}

pub fn request(dept: &str, dataset: &str, fields: &[(&str, Treatment)]) -> GrantRequest {
    let now = Utc::now();
    GrantRequest {
        consumer_dept: dept.into(),
        users: vec![],
        dataset: dataset.into(),
        fields: fields
            .iter()
            .map(|(f, t)| FieldGrant {
                field: f.to_string(),
                treatment: *t,
            })
            .collect(),
        purpose_code: "P".into(),
        purpose_text: "测试".into(),
        scope: RowScope::default(),
        modes: vec![Mode::Query],
        verify: None,
        export: None,
        aggregate: None,
        valid_from: now - Duration::minutes(1),
        valid_until: now + Duration::days(1),
    }
}

pub fn approve(store: &Store, r: GrantRequest, approver: &str) -> u64 {
    store
        .writer(approver)
        .expect("w")
        .update_policy("approve", |p, c| {
            p.decide_request(c, r, approver, true, "", Utc::now())
        })
        .expect("approve")
        .grant
        .expect("grant")
}

#[test]
fn suspension_and_revocation_take_effect_on_the_next_query_of_an_open_session() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let g = approve(
        &store,
        request("A", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    let engine = Engine::open(dir.path()).expect("engine");
    let s = engine.session("a", "P").expect("session");
    assert_eq!(
        s.sql("SELECT count(*) FROM person").expect("q").num_rows(),
        1
    );

    let set_dept = |st: PrincipalStatus| {
        store
            .writer("admin")
            .expect("w")
            .update_policy("status", |p, _| {
                p.departments.get_mut("A").expect("A").status = st;
                Ok(())
            })
    };
    set_dept(PrincipalStatus::Suspended).expect("suspend");
    let err = s
        .sql("SELECT count(*) FROM person")
        .expect_err("suspended department");
    assert!(
        matches!(&err, Error::AccessDenied(m) if m.contains("suspended")),
        "{err}"
    );
    assert!(engine.session("a", "P").is_err(), "no new session either");
    set_dept(PrincipalStatus::Active).expect("reactivate");
    s.sql("SELECT count(*) FROM person").expect("back");

    store
        .writer("admin")
        .expect("w")
        .update_policy("suspend user", |p, _| {
            p.users.get_mut("a").expect("a").status = PrincipalStatus::Suspended;
            Ok(())
        })
        .expect("suspend user");
    assert!(matches!(s.sql("SELECT 1"), Err(Error::AccessDenied(_))));
    // Another user of the same department is unaffected.
    engine
        .session("a2", "P")
        .expect("a2")
        .sql("SELECT count(*) FROM person")
        .expect("a2 query");

    // A host system: its open session is refused from the next query on when it is
    // suspended, and works again when it is reactivated.
    engine
        .upsert_system(
            "admin",
            govshare_core::access::policy::HostSystem {
                id: "hr".into(),
                name: "人社业务系统".into(),
                department: "A".into(),
                status: PrincipalStatus::Active,
            },
        )
        .expect("system");
    let mut login = govshare_core::access::policy::Login::new(
        "a2",
        "P",
        govshare_core::access::policy::AuthMethod::Password,
    );
    login.system = Some("hr".into());
    let via = engine.session_as(&login).expect("through hr");
    via.sql("SELECT count(*) FROM person").expect("hr active");
    engine
        .set_system_status("admin", "hr", PrincipalStatus::Suspended)
        .expect("suspend hr");
    let err = via
        .sql("SELECT count(*) FROM person")
        .expect_err("hr suspended");
    assert!(err.to_string().contains("'hr' is suspended"), "{err}");
    engine
        .set_system_status("admin", "hr", PrincipalStatus::Active)
        .expect("reactivate hr");
    via.sql("SELECT count(*) FROM person").expect("hr back");

    // A revoked grant: the open session's next query is refused, and no new session opens.
    store
        .writer("admin")
        .expect("w")
        .update_policy("revoke", |p, _| p.revoke(g, "admin", "done", Utc::now()))
        .expect("revoke");
    assert!(matches!(
        via.sql("SELECT count(*) FROM person"),
        Err(Error::AccessDenied(_))
    ));
    let err = engine
        .session("a2", "P")
        .expect_err("revoked grant: no valid grant left");
    assert!(err.to_string().contains("no valid"), "{err}");
}

#[test]
fn grant_rules_follow_share_types_and_default_masks() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let on_request = |r: GrantRequest, by: &str| {
        store
            .writer(by)
            .expect("w")
            .update_policy("request", |p, c| p.grant_on_request(c, r, by, Utc::now()))
    };
    // Not shared: never, whoever asks; the refusal says it must be reclassified.
    let err = on_request(
        request("A", "person", &[("marital_status_code", Treatment::Clear)]),
        "admin",
    )
    .expect_err("not shared");
    assert!(err.to_string().contains("reclassified"), "{err}");
    let err = store
        .writer("psb")
        .expect("w")
        .update_policy("approve", |p, c| {
            p.decide_request(
                c,
                request("A", "person", &[("marital_status_code", Treatment::Clear)]),
                "psb",
                true,
                "",
                Utc::now(),
            )
        })
        .expect_err("not even by approval");
    assert!(err.to_string().contains("reclassified"), "{err}");
    // Conditional: not on request.
    let err = on_request(
        request("A", "person", &[("name", Treatment::Clear)]),
        "admin",
    )
    .expect_err("conditional");
    assert!(err.to_string().contains("conditional"), "{err}");
    // Only a platform admin grants on request; only the providing department's approver approves.
    assert!(
        on_request(
            request("A", "legal_entity", &[("uscc", Treatment::Clear)]),
            "a"
        )
        .is_err()
    );
    let err = store
        .writer("amr")
        .expect("w")
        .update_policy("approve", |p, c| {
            p.decide_request(
                c,
                request("A", "person", &[("name", Treatment::Clear)]),
                "amr",
                true,
                "",
                Utc::now(),
            )
        })
        .expect_err("wrong provider");
    assert!(
        err.to_string().contains("its provider is department 'PSB'"),
        "{err}"
    );
    // A rejection needs its reason, and is recorded without a grant.
    assert!(
        store
            .writer("psb")
            .expect("w")
            .update_policy("reject", |p, c| p.decide_request(
                c,
                request("A", "person", &[("name", Treatment::Clear)]),
                "psb",
                false,
                " ",
                Utc::now()
            ))
            .is_err()
    );
    let ap = store
        .writer("psb")
        .expect("w")
        .update_policy("reject", |p, c| {
            p.decide_request(
                c,
                request("A", "person", &[("name", Treatment::Clear)]),
                "psb",
                false,
                "目的不明确",
                Utc::now(),
            )
        })
        .expect("reject");
    assert!(!ap.approved && ap.grant.is_none());
    // On request, a field with a default mask is masked even when asked clear.
    let g = on_request(
        request(
            "A",
            "legal_entity",
            &[
                ("uscc", Treatment::Clear),
                ("legal_rep_name", Treatment::Clear),
            ],
        ),
        "admin",
    )
    .expect("request");
    assert_eq!(
        g.request.fields[1].treatment,
        Treatment::Masked(MaskKind::Name)
    );
    let engine = Engine::open(dir.path()).expect("engine");
    let r = engine
        .session("a", "P")
        .expect("s")
        .sql("SELECT legal_rep_name FROM legal_entity")
        .expect("q");
    assert!(render(&r.batches).iter().all(|n| n.ends_with('*')));
    // The policy is versioned: the founding, the platform staff, the setup, the reasoned
    // rejection and the grant on request are versions; every refused change above committed
    // nothing.
    let history = store.policy_history().expect("history");
    assert_eq!(
        history.iter().map(|v| v.note.as_str()).collect::<Vec<_>>(),
        [
            "init: first platform administrator",
            "platform staff",
            "setup",
            "reject",
            "request"
        ]
    );
}

#[test]
fn pseudonyms_cannot_be_joined_across_departments_and_nothing_is_shared_between_principals() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    for d in ["A", "B"] {
        approve(
            &store,
            request(
                d,
                "legal_entity",
                &[
                    ("uscc", Treatment::Clear),
                    ("legal_rep_id", Treatment::Masked(MaskKind::Pseudonym)),
                ],
            ),
            "amr",
        );
    }
    let mut narrow = request("B", "person", &[("sex_code", Treatment::Clear)]);
    narrow.scope.regions = Some(vec!["110000".into()]);
    approve(&store, narrow, "psb");
    approve(
        &store,
        request("A", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    let engine = Engine::open(dir.path()).expect("engine");
    let (a, b) = (
        engine.session("a", "P").expect("a"),
        engine.session("b", "P").expect("b"),
    );
    let q = "SELECT uscc, legal_rep_id FROM legal_entity ORDER BY uscc";
    let (ra, rb) = (
        render(&a.sql(q).expect("a").batches),
        render(&b.sql(q).expect("b").batches),
    );
    assert_eq!(ra.len(), rb.len());
    for (x, y) in ra.iter().zip(&rb) {
        let (ux, px) = x.split_once(" | ").expect("cols");
        let (uy, py) = y.split_once(" | ").expect("cols");
        assert_eq!(ux, uy);
        assert_ne!(
            px, py,
            "the same person has different pseudonyms in A and B"
        );
    }
    // Stable within a department, so A can still count distinct representatives.
    assert_eq!(ra, render(&a.sql(q).expect("again").batches));
    // Interleaved queries of two principals with different scopes never mix.
    let count = |s: &govshare_core::Session| {
        render(&s.sql("SELECT count(*) FROM person").expect("count").batches)
    };
    let (ca, cb) = (count(&a), count(&b));
    for _ in 0..3 {
        assert_eq!(count(&b), cb);
        assert_eq!(count(&a), ca);
    }
    assert_ne!(ca, cb);
}

#[test]
fn streamed_results_equal_collected_results_and_read_as_arrow() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    approve(
        &store,
        request(
            "A",
            "person",
            &[
                ("citizen_id", Treatment::Masked(MaskKind::CitizenId)),
                ("sex_code", Treatment::Clear),
            ],
        ),
        "psb",
    );
    let engine = Engine::open(dir.path()).expect("engine");
    let s = engine.session("a", "P").expect("s");
    let q = "SELECT citizen_id, sex_code FROM person";
    let collected = render(&s.sql(q).expect("sql").batches);
    let reader = govshare_core::engine::QueryStreamArrow(s.sql_stream(q).expect("stream"));
    let schema = arrow::array::RecordBatchReader::schema(&reader);
    assert_eq!(schema.field(0).name(), "citizen_id");
    let streamed: Vec<_> = reader.map(|b| b.expect("batch")).collect();
    assert_eq!(render(&streamed), collected);
    assert_eq!(collected.len(), 500);
    // Access is decided before the first batch: a denied query fails at once.
    assert!(matches!(
        s.sql_stream("SELECT name FROM person"),
        Err(Error::AccessDenied(_))
    ));
}

/// Against other users of the host the store's files are the boundary: every directory of a
/// store is 0700 and every file 0600 (data, indexes, manifests, catalog, policy, keys, the
/// trail, subject bitmaps), and a pseudonym secret others can read is refused at open.
#[cfg(unix)]
#[test]
fn store_files_are_private_and_a_shared_secret_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("store");
    let store = small_store(&root);
    let r = request("A", "person", &[("sex_code", Treatment::Clear)]);
    approve(&store, r, "psb");
    let engine = Engine::open(&root).expect("engine");
    engine
        .session("a", "P")
        .and_then(|s| s.sql("SELECT count(*) FROM person"))
        .expect("query");
    fn walk(p: &std::path::Path, seen: &mut usize) {
        let mode = std::fs::metadata(p).expect("meta").permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} is mode {:o}",
            p.display(),
            mode & 0o777
        );
        *seen += 1;
        if p.is_dir() {
            for e in std::fs::read_dir(p).expect("dir") {
                walk(&e.expect("entry").path(), seen);
            }
        }
    }
    let mut seen = 0;
    walk(&root, &mut seen);
    assert!(seen > 20, "walked {seen} entries");
    drop(engine);
    let secret = root.join("keys").join("pseudonym.secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    match Engine::open(&root) {
        Err(Error::Corrupt(m)) => assert!(m.contains("can be read by other users"), "{m}"),
        other => panic!("a shared secret was accepted: {other:?}"),
    }
}

/// The current catalog decides at every query: an item reclassified as not shared after a
/// grant covered it drops out of that grant at the next query of an open session.
#[test]
fn an_item_reclassified_as_not_shared_drops_out_of_earlier_grants() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let r = request(
        "A",
        "person",
        &[
            ("sex_code", Treatment::Clear),
            ("ethnicity_code", Treatment::Clear),
        ],
    );
    approve(&store, r, "psb");
    let engine = Engine::open(dir.path()).expect("engine");
    let s = engine.session("a", "P").expect("session");
    s.sql("SELECT ethnicity_code FROM person LIMIT 1")
        .expect("granted and shared");
    let mut person = store.catalog().expect("catalog").datasets["person"].clone();
    for f in &mut person.fields {
        if f.name == "ethnicity_code" {
            f.share = govshare_core::catalog::ShareType::NotShared;
        }
    }
    store
        .writer(govshare_testkit::COORD)
        .expect("w")
        .apply_catalog(
            govshare_core::catalog::CatalogFile {
                datasets: vec![person],
                code_tables: Default::default(),
            },
            "ethnicity becomes not shared",
        )
        .expect("reclassify");
    match s.sql("SELECT ethnicity_code FROM person LIMIT 1") {
        Err(Error::AccessDenied(m)) => assert!(m.contains("ethnicity_code"), "{m}"),
        other => panic!("a not-shared item stayed readable: {other:?}"),
    }
    // The rest of the grant still works.
    let r = s
        .sql("SELECT count(*) FROM person WHERE sex_code = '1'")
        .expect("sex_code");
    assert_eq!(r.num_rows(), 1);
}

/// Counts answered from bitmaps over a scope that holds no row (a real county where nobody
/// in the store lives) say what SQL says of an empty input: an ungrouped count is one row of
/// 0, a grouped count has no groups.
#[test]
fn counts_from_bitmaps_over_an_empty_scope_are_one_zero_row_and_no_groups() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let snap = store.snapshot("person").expect("snapshot");
    let empty = govshare_core::regions::all()
        .iter()
        .map(|r| r.code)
        .filter(|c| !c.ends_with("00"))
        .find(|c| {
            snap.scope("hukou_region_code", c)
                .expect("scope")
                .is_empty()
        })
        .expect("a county nobody in the small store lives in");
    let mut r = request(
        "A",
        "person",
        &[
            ("sex_code", Treatment::Clear),
            ("hukou_region_code", Treatment::Clear),
            ("birth_date", Treatment::Clear),
        ],
    );
    r.scope = govshare_testkit::regions(&[empty]);
    approve(&store, r, "psb");
    let engine = Engine::open(dir.path()).expect("engine");
    let s = engine.session("a", "P").expect("s");
    let plan = s
        .sql("EXPLAIN SELECT count(*) FROM person")
        .expect("explain");
    assert!(
        render(&plan.batches).join("\n").contains("BitmapCounts"),
        "answered from the scope's bitmap"
    );
    let n = s.sql("SELECT count(*) AS n FROM person").expect("count");
    assert_eq!(render(&n.batches), ["0"], "one row, 0");
    // With a min beside it: one row, the min NULL (of no rows), as SQL answers.
    let q = "SELECT count(*), min(birth_date) FROM person";
    let plan = s.sql(&format!("EXPLAIN {q}")).expect("explain");
    assert!(
        render(&plan.batches)
            .join("\n")
            .contains("aggregates=[count(*), min(birth_date)]"),
        "answered from the scope's bitmap"
    );
    assert_eq!(render(&s.sql(q).expect("min").batches), ["0 | NULL"]);
    for q in [
        "SELECT sex_code, count(*) FROM person GROUP BY sex_code",
        "SELECT sex_code, max(birth_date) FROM person GROUP BY sex_code",
        "SELECT left(hukou_region_code, 4), count(*) FROM person GROUP BY 1",
    ] {
        assert_eq!(s.sql(q).expect("grouped").num_rows(), 0, "{q}");
    }
}

/// A grouped count over a value-indexed field is answered from bitmaps only when the session
/// sees the field in clear: granted masked (here nullified), the groups are the masked values
/// — one NULL group — never the indexed raw values.
#[test]
fn grouped_counts_over_a_masked_indexed_field_show_the_masked_groups() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let masked =
        govshare_core::access::policy::Treatment::Masked(govshare_core::catalog::MaskKind::Nullify);
    approve(
        &store,
        request("A", "person", &[("sex_code", masked)]),
        "psb",
    );
    let engine = Engine::open(dir.path()).expect("engine");
    let s = engine.session("a", "P").expect("s");
    let r = s
        .sql("SELECT sex_code, count(*) FROM person GROUP BY sex_code")
        .expect("q");
    assert_eq!(r.num_rows(), 1, "one group: every value is masked to NULL");
    assert!(r.batches[0].column(0).is_null(0));
    let plan = s
        .sql("EXPLAIN SELECT sex_code, count(*) FROM person GROUP BY sex_code")
        .expect("explain");
    let text = govshare_testkit::render(&plan.batches).join("\n");
    assert!(!text.contains("BitmapCounts"), "{text}");
}

/// The lookup API returns, for the keys asked, exactly what the session's SQL returns for
/// `key IN (...)`: only subjects in scope, every granted field masked as granted. A key out of
/// scope and a key that does not exist look the same (absent). The rows read are on the trail
/// (who-accessed finds the lookup); a grant that masks the key, or no grant, is refused and
/// the refusal recorded.
#[test]
fn lookup_by_key_returns_what_the_sql_would_for_subjects_in_scope_and_is_recorded() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let county = govshare_testkit::largest_county(&store);
    let mut r = request(
        "A",
        "person",
        &[
            ("citizen_id", Treatment::Clear),
            ("name", Treatment::Masked(MaskKind::Name)),
            ("sex_code", Treatment::Clear),
            ("birth_date", Treatment::Masked(MaskKind::DateToYear)),
        ],
    );
    r.scope = govshare_testkit::regions(&[&county]);
    approve(&store, r, "psb");
    approve(
        &store,
        request(
            "B",
            "person",
            &[("citizen_id", Treatment::Masked(MaskKind::CitizenId))],
        ),
        "psb",
    );
    let snap = store.snapshot("person").expect("snap");
    let inside = snap.scope("hukou_region_code", &county).expect("scope");
    let keys: Vec<String> =
        govshare_testkit::strings(&snap.read(None, Some(&["citizen_id"])).expect("keys"), 0);
    let ids = snap.key_index().expect("index");
    let (mut ins, mut outs) = (Vec::new(), Vec::new());
    for k in &keys {
        let row = ids.get(k).expect("row");
        if inside.contains(row) {
            ins.push(k.clone())
        } else {
            outs.push(k.clone())
        }
    }
    let asked: Vec<&str> = vec![&ins[0], &outs[0], "11010519491231002X", &ins[1]];
    let engine = Engine::open(dir.path()).expect("engine");
    // A citizen ID in clear is a sensitive item: a second-factor login.
    let a = engine
        .session_as(&govshare_core::access::policy::Login::new(
            "a",
            "P",
            govshare_core::access::policy::AuthMethod::SecondFactor,
        ))
        .expect("a");
    let got = a.lookup("person", &asked).expect("lookup");
    let list = asked
        .iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = a
        .sql(&format!(
            "SELECT * FROM person WHERE citizen_id IN ({list}) ORDER BY citizen_id"
        ))
        .expect("sql");
    assert_eq!(got.num_rows(), 2, "the two keys in scope, nothing else");
    let mut lookup_rows = render(&got.batches);
    lookup_rows.sort();
    let mut sql_rows = render(&sql.batches);
    sql_rows.sort();
    assert_eq!(lookup_rows, sql_rows);
    assert_eq!(
        got.schema, sql.schema,
        "the granted fields with their masked types"
    );
    assert!(!lookup_rows.iter().any(|l| l.contains(outs[0].as_str())));
    // On the trail: the lookup read the in-scope subject, not the out-of-scope one.
    let lookups = |key: &str| {
        engine
            .who_accessed("aud", key)
            .expect("who")
            .into_iter()
            .filter(|x| x.user == "a" && x.sql.starts_with("lookup by key"))
            .count()
    };
    assert_eq!(lookups(&ins[0]), 1);
    assert_eq!(lookups(&outs[0]), 0);
    // A masked key cannot be looked up; a dataset not granted cannot either. Both recorded.
    let b = engine.session("b", "P").expect("b");
    let refusals = || {
        engine
            .audit()
            .records()
            .expect("records")
            .iter()
            .filter(|r| r.kind == "query" && r.body["outcome"] == "denied")
            .count()
    };
    let before = refusals();
    assert!(matches!(
        b.lookup("person", &[ins[0].as_str()]),
        Err(Error::AccessDenied(m)) if m.contains("in clear")
    ));
    assert!(matches!(
        a.lookup("legal_entity", &["91430000000000000X"]),
        Err(Error::AccessDenied(_))
    ));
    assert_eq!(refusals(), before + 2);
}

/// `min` / `max` beside bitmap counts read only the aggregated field, for the rows in scope:
/// a deleted subject's value is gone from its group (the oldest person of each sex is
/// deleted here), rows outside the scope never count, and every group's values equal what
/// the live rows in scope hold — over data files read whole and with rows deleted, several
/// batches each, on more than one thread.
#[test]
fn min_and_max_beside_bitmap_counts_are_those_of_the_live_rows_in_scope() {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Date32Type;
    use govshare_core::ingest::{LoadMode, LoadOptions, Source};
    use std::collections::BTreeMap;

    let dir = tempfile::tempdir().expect("tmp");
    let store = store_with(dir.path(), 150_000, 4096);
    type Row = (String, Option<String>, Option<i32>, String);
    let rows = |s: &govshare_core::store::Snapshot| -> Vec<Row> {
        let b = s
            .read(
                None,
                Some(&["citizen_id", "sex_code", "birth_date", "hukou_region_code"]),
            )
            .expect("read");
        let mut out = Vec::new();
        for b in &b {
            let (k, sex, born, region) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_string::<i32>(),
                b.column(2).as_primitive::<Date32Type>(),
                b.column(3).as_string::<i32>(),
            );
            for i in 0..b.num_rows() {
                out.push((
                    k.value(i).to_string(),
                    sex.is_valid(i).then(|| sex.value(i).to_string()),
                    born.is_valid(i).then(|| born.value(i)),
                    region.value(i).to_string(),
                ));
            }
        }
        out
    };
    // The two most populous provinces: the first loses every 50th subject (its files are
    // read with gaps), the second none of its own (read whole, unless an oldest person lives
    // there).
    let before = rows(&store.snapshot("person").expect("s"));
    let mut by_prov: BTreeMap<String, usize> = BTreeMap::new();
    for r in &before {
        *by_prov.entry(r.3[..2].to_string()).or_default() += 1;
    }
    let mut provinces: Vec<(String, usize)> = by_prov.into_iter().collect();
    provinces.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let (gaps, whole) = (provinces[0].0.clone(), provinces[1].0.clone());
    let mut victims: Vec<&str> = before
        .iter()
        .filter(|r| r.3.starts_with(&gaps))
        .step_by(50)
        .map(|r| r.0.as_str())
        .collect();
    for sex in ["1", "2"] {
        let oldest = before
            .iter()
            .filter(|r| r.1.as_deref() == Some(sex) && r.2.is_some())
            .min_by_key(|r| r.2)
            .expect("someone of each sex");
        victims.push(&oldest.0);
    }
    victims.sort_unstable();
    victims.dedup();
    let csv = dir.path().join("del.csv");
    let body: String = victims.iter().map(|k| format!("delete,{k}\n")).collect();
    std::fs::write(&csv, format!("_op,citizen_id\n{body}")).expect("write");
    store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load(
            "person",
            Source::from_path(&csv),
            &LoadOptions {
                mode: LoadMode::Incremental,
                today: Some(crate::common::today()),
                ..Default::default()
            },
        )
        .expect("delete");
    let snap = store.snapshot("person").expect("s");
    let live = rows(&snap);
    assert_eq!(live.len(), before.len() - victims.len());
    let largest = snap.manifest().files.iter().map(|f| f.rows).max();
    assert!(
        largest.is_some_and(|n| n > 8192),
        "a data file of several batches: {largest:?}"
    );
    let day = |d: i32| {
        (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + Duration::days(d.into()))
            .to_string()
    };
    for (dept, user, prov) in [("A", "a", &gaps), ("B", "b", &whole)] {
        let mut r = request(
            dept,
            "person",
            &[
                ("sex_code", Treatment::Clear),
                ("birth_date", Treatment::Clear),
                ("hukou_region_code", Treatment::Clear),
            ],
        );
        r.scope = govshare_testkit::regions(&[format!("{prov}0000").as_str()]);
        approve(&store, r, "psb");
        let engine = Engine::open(dir.path()).expect("engine");
        let s = engine.session(user, "P").expect("s");
        let q = "SELECT left(hukou_region_code, 4), sex_code, count(*), min(birth_date), max(birth_date) FROM person GROUP BY 1, 2";
        let plan = s.sql(&format!("EXPLAIN {q}")).expect("explain");
        assert!(
            render(&plan.batches)
                .join("\n")
                .contains("aggregates=[count(*), min(birth_date), max(birth_date)]"),
            "answered from bitmaps"
        );
        // What the live rows in scope say.
        let mut expect: BTreeMap<(String, String), (u64, i32, i32)> = BTreeMap::new();
        for r in live.iter().filter(|r| r.3.starts_with(prov.as_str())) {
            let key = (
                r.3[..4].to_string(),
                r.1.clone().unwrap_or_else(|| "NULL".into()),
            );
            let born = r.2.expect("generated persons have birth dates");
            let e = expect.entry(key).or_insert((0, i32::MAX, i32::MIN));
            e.0 += 1;
            e.1 = e.1.min(born);
            e.2 = e.2.max(born);
        }
        let mut want: Vec<String> = expect
            .iter()
            .map(|((city, sex), (n, lo, hi))| {
                format!("{city} | {sex} | {n} | {} | {}", day(*lo), day(*hi))
            })
            .collect();
        want.sort();
        assert!(want.len() >= 2, "more than one group");
        assert_eq!(
            render(&s.sql(q).expect("q").batches),
            want,
            "province {prov}"
        );
    }
}
