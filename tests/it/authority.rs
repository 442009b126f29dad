//! Authority: every act is done by an existing, active user holding the role for it; a
//! policy change is authorised by what it changes; separation of duties; grants only tighten
//! (default-mask floor, linkage rule); administrative reads are decided and recorded.

use chrono::Utc;
use govshare_core::access::policy::{
    Grant, Origin, Policy, PrincipalStatus, Role, Treatment, User,
};
use govshare_core::catalog::{CatalogFile, MaskKind, ShareType};
use govshare_core::engine::Engine;
use govshare_core::ingest::{LoadOptions, Source};
use govshare_core::synth::Synth;
use govshare_core::{Error, Store};
use govshare_testkit::{COORD, OPS, ROOT, render};

use crate::access::{approve, request, small_store};

fn denied(r: Result<impl std::fmt::Debug, Error>, needle: &str) {
    match r {
        Err(Error::AccessDenied(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected a denial mentioning {needle:?}, got {other:?}"),
    }
}

fn count(engine: &Engine, kind: &str, outcome: Option<&str>) -> usize {
    engine
        .audit()
        .records()
        .expect("records")
        .iter()
        .filter(|r| r.kind == kind && outcome.is_none_or(|o| r.body["outcome"] == o))
        .count()
}

fn user(id: &str, dept: &str, roles: &[Role]) -> User {
    User {
        id: id.into(),
        name: format!("{id} 实名"),
        department: dept.into(),
        roles: roles.to_vec(),
        status: PrincipalStatus::Active,
    }
}

fn edit(
    store: &Store,
    by: &str,
    f: impl FnOnce(&mut Policy, &govshare_core::catalog::Catalog) -> govshare_core::Result<()>,
) -> govshare_core::Result<()> {
    store.writer(by)?.update_policy("test edit", f)
}

fn persons(n: usize) -> Source {
    Source::Batches(Synth::new(21, n, 0).persons(n).collect())
}

fn catalog_with(store: &Store, f: impl Fn(&mut govshare_core::catalog::FieldDef)) -> CatalogFile {
    let mut c = store.catalog().expect("catalog");
    let mut datasets = Vec::new();
    for name in ["person", "legal_entity"] {
        let d = c.datasets.get_mut(name).expect("dataset");
        d.fields.iter_mut().for_each(&f);
        datasets.push(d.clone());
    }
    CatalogFile {
        datasets,
        code_tables: Default::default(),
    }
}

/// The escalation chain of the round-1 review cannot start: a consumer cannot make an
/// approver, a user that does not exist cannot act, operators load and administrators do not,
/// the catalog changes only by its administrator and items move between share types only by
/// the coordinator; every refusal names the role it lacks and is on the trail.
#[test]
fn every_act_needs_an_existing_active_user_with_the_role_for_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let engine = Engine::open(dir.path()).expect("engine");
    denied(
        edit(&store, "a", |p, _| {
            p.upsert_user(user("evil", "PSB", &[Role::ProviderApprover]))
        }),
        "needs the platform-admin role",
    );
    denied(
        edit(&store, "ghost", |p, _| {
            p.departments.get_mut("A").expect("A").status = PrincipalStatus::Suspended;
            Ok(())
        }),
        "unknown user 'ghost'",
    );
    // A suspended administrator is no administrator.
    edit(&store, ROOT, |p, _| {
        p.users.get_mut("admin").expect("admin").status = PrincipalStatus::Suspended;
        Ok(())
    })
    .expect("root suspends admin");
    denied(
        edit(&store, "admin", |p, _| p.upsert_user(user("x", "A", &[]))),
        "suspended",
    );
    // Nobody edits their own account, not even the founder.
    denied(
        edit(&store, ROOT, |p, _| {
            p.users
                .get_mut(ROOT)
                .expect("root")
                .roles
                .push(Role::ProviderApprover);
            Ok(())
        }),
        "their own account",
    );
    // Loads, compaction and vacuum are the operator's.
    let opts = LoadOptions::default();
    denied(
        store
            .writer(ROOT)
            .expect("w")
            .load("person", persons(10), &opts),
        "needs the operator role",
    );
    denied(store.writer("a").expect("w").compact("person"), "operator");
    denied(
        store.writer("psb").expect("w").vacuum("person", 1),
        "operator",
    );
    store
        .writer(OPS)
        .expect("w")
        .compact("person")
        .expect("the operator compacts");
    // The catalog: ordinary changes by a platform administrator, reclassification by the
    // coordinator, and neither by the other.
    let relabel = catalog_with(&store, |f| {
        if f.name == "education_code" {
            f.label = "最高学历".into();
        }
    });
    let reclassify = catalog_with(&store, |f| {
        if f.name == "education_code" {
            f.share = ShareType::Conditional;
        }
    });
    denied(
        store
            .writer(OPS)
            .expect("w")
            .apply_catalog(relabel.clone(), "x"),
        "platform-admin",
    );
    denied(
        store
            .writer(COORD)
            .expect("w")
            .apply_catalog(relabel.clone(), "x"),
        "platform-admin",
    );
    denied(
        store
            .writer(ROOT)
            .expect("w")
            .apply_catalog(reclassify.clone(), "x"),
        "needs the coordinator role",
    );
    store
        .writer(ROOT)
        .expect("w")
        .apply_catalog(relabel, "relabel")
        .expect("admin relabels");
    store
        .writer(COORD)
        .expect("w")
        .apply_catalog(reclassify, "reclassify")
        .expect("coordinator reclassifies");
    // Every refusal above is a record; nothing refused was committed.
    assert_eq!(count(&engine, "policy_denied", None), 4);
    assert_eq!(count(&engine, "act_denied", None), 6);
    let history = store.catalog_history().expect("history");
    let authors: Vec<&str> = history.iter().map(|v| v.author.as_str()).collect();
    assert_eq!(authors, ["govshare init", ROOT, COORD]);
}

/// Whatever code edits the policy document, what is committed is checked against what it
/// changes: a grant written straight into the document, an approval by someone else, a grant
/// rewritten or deleted, a change smuggled in with a legitimate approval — all refused.
#[test]
fn a_policy_edit_is_authorised_by_what_it_changes() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let g = approve(
        &store,
        request("A", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    // A platform administrator writes a grant of conditional data into the document.
    denied(
        edit(&store, "admin", |p, _| {
            let mut forged: Grant = p.grants[&g].clone();
            forged.id = 999;
            forged.created_by = "admin".into();
            forged.origin = Origin::Approval(998);
            forged.request.fields = govshare_testkit::fields(&["citizen_id", "name"], &[]);
            p.grants.insert(999, forged);
            Ok(())
        }),
        "claims approval 998",
    );
    // An approval recorded in someone else's name.
    denied(
        edit(&store, "admin", |p, c| {
            p.decide_request(
                c,
                request("B", "person", &[("name", Treatment::Clear)]),
                "psb",
                true,
                "",
                Utc::now(),
            )
            .map(drop)
        }),
        "names 'psb' as its approver",
    );
    // The approver widens an existing grant instead of making a new one.
    denied(
        edit(&store, "psb", |p, _| {
            let f = govshare_testkit::fields(&["citizen_id"], &[]);
            p.grants.get_mut(&g).expect("g").request.fields.extend(f);
            Ok(())
        }),
        "cannot be changed",
    );
    denied(
        edit(&store, "admin", |p, _| {
            p.grants.remove(&g);
            Ok(())
        }),
        "never deleted",
    );
    // A legitimate approval that also promotes a user.
    denied(
        edit(&store, "psb", |p, c| {
            p.decide_request(
                c,
                request("B", "person", &[("name", Treatment::Clear)]),
                "psb",
                true,
                "",
                Utc::now(),
            )?;
            p.users
                .get_mut("b")
                .expect("b")
                .roles
                .push(Role::PlatformAdmin);
            Ok(())
        }),
        "platform-admin",
    );
    // Revocation: by an administrator or the provider's approver, with a reason.
    denied(
        edit(&store, "a", |p, _| p.revoke(g, "a", "mine", Utc::now())),
        "may not revoke",
    );
    assert!(matches!(
        edit(&store, "psb", |p, _| p.revoke(g, "psb", " ", Utc::now())),
        Err(Error::InvalidInput(_))
    ));
    edit(&store, "psb", |p, _| {
        p.revoke(g, "psb", "purpose fulfilled", Utc::now())
    })
    .expect("the provider's approver revokes");
    assert_eq!(store.policy().expect("p").grants.len(), 1);
}

/// 审批、操作、核验分离 (003 §11): an approver does not approve for their own department, nor
/// access to a dataset whose catalog entry they authored or whose data they loaded; an auditor
/// does not audit their own acts.
#[test]
fn separation_of_duties() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    edit(&store, ROOT, |p, _| {
        p.upsert_user(user("psb_user", "PSB", &[Role::Consumer]))?;
        p.upsert_user(user(
            "psb_admin",
            "PSB",
            &[Role::ProviderApprover, Role::PlatformAdmin],
        ))?;
        p.upsert_user(user(
            "psb_ops",
            "PSB",
            &[Role::ProviderApprover, Role::Operator],
        ))?;
        p.upsert_user(user("aud2", "PLAT", &[Role::Auditor]))
    })
    .expect("users");
    let ask = |dept: &str| request(dept, "person", &[("name", Treatment::Clear)]);
    let decide = |by: &str, dept: &str| {
        edit(&store, by, |p, c| {
            p.decide_request(c, ask(dept), by, true, "", Utc::now())
                .map(drop)
        })
    };
    denied(decide("psb", "PSB"), "their own department 'PSB'");
    // A catalog change of `person` by psb_admin disqualifies them from approving access to it.
    decide("psb_admin", "A").expect("no conflict yet");
    let relabel = catalog_with(&store, |f| {
        if f.name == "name" {
            f.description = "实名".into();
        }
    });
    store
        .writer("psb_admin")
        .expect("w")
        .apply_catalog(relabel, "describe name")
        .expect("catalog change");
    denied(
        decide("psb_admin", "B"),
        "authored a catalog change of 'person'",
    );
    // Loading `person` disqualifies psb_ops likewise.
    decide("psb_ops", "B").expect("no conflict yet");
    store
        .writer("psb_ops")
        .expect("w")
        .load("person", persons(50), &LoadOptions::default())
        .expect("load");
    denied(decide("psb_ops", "A"), "loaded data into 'person'");
    // The plain approver is unaffected.
    decide("psb", "B").expect("psb approves");
    // Auditors: aud's own acts are not in aud's view of the trail; aud2 sees them.
    let engine = Engine::open(dir.path()).expect("engine");
    engine
        .verify_audit("aud", None)
        .expect("aud verifies the chain");
    let q = "SELECT count(*) FROM audit_log WHERE actor = 'aud'";
    assert_eq!(
        render(&engine.audit_sql("aud", q).expect("aud").batches),
        ["0"]
    );
    assert_ne!(
        render(&engine.audit_sql("aud2", q).expect("aud2").batches),
        ["0"]
    );
}

/// Grants only tighten: a request gets at least the catalog's default mask however it is
/// asked for (clear, `Masked(Clear)`, a grant written straight into the document), stronger
/// masks are kept, and a grant made on request follows the *current* catalog at every query —
/// a stronger default applies, an item no longer unconditional drops out.
#[test]
fn grants_only_tighten() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let on_request = |fields: &[(&str, Treatment)], purpose: &str| {
        let mut r = request("A", "legal_entity", fields);
        r.purpose_code = purpose.into();
        store
            .writer("admin")
            .expect("w")
            .update_policy("req", |p, c| p.grant_on_request(c, r, "admin", Utc::now()))
    };
    let g = on_request(
        &[
            ("uscc", Treatment::Clear),
            ("org_name", Treatment::Clear),
            ("legal_rep_name", Treatment::Masked(MaskKind::Clear)),
        ],
        "P",
    )
    .expect("request");
    assert_eq!(
        g.request.fields[2].treatment,
        Treatment::Masked(MaskKind::Name),
        "Masked(Clear) is clear, and clear gets the default mask"
    );
    let g2 = on_request(
        &[("legal_rep_name", Treatment::Masked(MaskKind::Nullify))],
        "P2",
    )
    .expect("stronger");
    assert_eq!(
        g2.request.fields[0].treatment,
        Treatment::Masked(MaskKind::Nullify)
    );
    // Written straight into the document, the same weaker grant is refused.
    denied(
        edit(&store, "admin", |p, _| {
            let mut forged = p.grants[&g.id].clone();
            forged.id = 500;
            forged.request.purpose_code = "P3".into();
            forged.request.fields[2].treatment = Treatment::Clear;
            p.grants.insert(500, forged);
            Ok(())
        }),
        "at least the catalog's default mask",
    );
    let engine = Engine::open(dir.path()).expect("engine");
    let s = engine.session("a", "P").expect("session");
    let orgs = |s: &govshare_core::Session| {
        render(
            &s.sql("SELECT org_name FROM legal_entity ORDER BY uscc LIMIT 3")
                .expect("q")
                .batches,
        )
    };
    assert!(orgs(&s).iter().all(|n| !n.ends_with('*')));
    // The administrator gives org_name a default mask: the grant made on request follows.
    let masked = catalog_with(&store, |f| {
        if f.name == "org_name" {
            f.mask = MaskKind::Name;
        }
    });
    store
        .writer(ROOT)
        .expect("w")
        .apply_catalog(masked, "org names masked by default")
        .expect("catalog");
    assert!(orgs(&s).iter().all(|n| n.ends_with('*')), "{:?}", orgs(&s));
    // The coordinator makes uscc conditional: it drops out of the on-request grant.
    let conditional = catalog_with(&store, |f| {
        if f.name == "uscc" {
            f.share = ShareType::Conditional;
        }
    });
    store
        .writer(COORD)
        .expect("w")
        .apply_catalog(conditional, "uscc becomes conditional")
        .expect("reclassify");
    denied(s.sql("SELECT uscc FROM legal_entity"), "uscc");
    s.sql("SELECT org_name FROM legal_entity")
        .expect("the rest of the grant stands");
}

/// The linkage rule: the citizen ID mask hides the birth date, so a grant — or the union of a
/// department's grants of a dataset for one purpose — with the masked ID and `birth_date` in
/// clear is refused with the reason; another purpose is another question.
#[test]
fn a_masked_id_is_never_granted_beside_the_birth_date_in_clear() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let try_approve = |purpose: &str, fields: &[(&str, Treatment)]| {
        let mut r = request("A", "person", fields);
        r.purpose_code = purpose.into();
        edit(&store, "psb", |p, c| {
            p.decide_request(c, r, "psb", true, "", Utc::now())
                .map(drop)
        })
    };
    let masked_id = ("citizen_id", Treatment::Masked(MaskKind::CitizenId));
    denied(
        try_approve("P", &[masked_id, ("birth_date", Treatment::Clear)]),
        "linkage rule",
    );
    try_approve(
        "P",
        &[
            masked_id,
            ("birth_date", Treatment::Masked(MaskKind::DateToYear)),
        ],
    )
    .expect("birth year only");
    match try_approve("P", &[("birth_date", Treatment::Clear)]) {
        Err(Error::AccessDenied(m)) => {
            assert!(
                m.contains("linkage rule") && m.contains("together with grant "),
                "{m}"
            )
        }
        other => panic!("the union of one purpose's grants was not checked: {other:?}"),
    }
    try_approve("Q", &[("birth_date", Treatment::Clear)]).expect("another purpose");
    // A pseudonymous ID hides everything: no linkage with the birth date.
    try_approve(
        "R",
        &[
            ("citizen_id", Treatment::Masked(MaskKind::Pseudonym)),
            ("birth_date", Treatment::Clear),
        ],
    )
    .expect("pseudonym");
}

/// Administrative reads are decisions too: the policy listing, who-accessed, audit
/// verification, checkpoints and an operator's lookup each need a user with the role, leave a
/// record either way, and show a department only what concerns it.
#[test]
fn administrative_reads_are_decided_and_recorded() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    approve(
        &store,
        request("A", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    approve(
        &store,
        request("B", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    let engine = Engine::open(dir.path()).expect("engine");
    let key = {
        let snap = store.snapshot("person").expect("snap");
        let b = snap
            .read(Some(&[3u32].into_iter().collect()), Some(&["citizen_id"]))
            .expect("read");
        govshare_testkit::strings(&b, 0)[0].clone()
    };
    // Who may read what.
    denied(engine.policy("ghost"), "unknown user 'ghost'");
    let mine = engine.policy("a").expect("a's view");
    assert!(
        mine.users.keys().all(|u| u.starts_with('a')),
        "{:?}",
        mine.users.keys()
    );
    assert!(mine.grants.values().all(|g| g.request.consumer_dept == "A"));
    assert_eq!(engine.policy("admin").expect("all").grants.len(), 2);
    let psb = engine.policy("psb").expect("provider's view");
    assert_eq!(psb.grants.len(), 2, "the provider sees grants on its data");
    denied(engine.who_accessed("a", &key), "needs the auditor role");
    denied(engine.verify_audit("ops", None), "auditor");
    denied(engine.audit_checkpoint("a"), "auditor");
    denied(
        engine.lookup("aud", "curious", "person", &key),
        "needs the operator role",
    );
    assert!(matches!(
        engine.lookup(OPS, " ", "person", &key),
        Err(Error::InvalidInput(_))
    ));
    let row = engine
        .lookup(OPS, "地址核对", "person", &key)
        .expect("the operator looks up");
    assert_eq!(row.num_rows(), 1);
    // Each question is on the trail, allowed or denied; the operator's lookup is found by
    // who-accessed with its reason.
    for (kind, denials) in [
        ("policy_read", 1),
        ("who_accessed", 1),
        ("audit_verify", 1),
        ("audit_checkpoint", 1),
        ("admin_lookup", 2),
    ] {
        assert_eq!(count(&engine, kind, Some("denied")), denials, "{kind}");
    }
    let hits = engine.who_accessed("aud", &key).expect("aud asks");
    assert!(
        hits.iter()
            .any(|h| h.user == OPS && h.purpose.contains("地址核对")),
        "{hits:?}"
    );
    assert_eq!(count(&engine, "who_accessed", Some("allowed")), 1);
}
