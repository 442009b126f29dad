//! The sharing workflows: applications and objections as state machines with every refusal
//! (wrong role, separation of duties, missing reason, overdue), agreements on the calendar,
//! one source per field, the service catalog.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use govshare_core::access::policy::{
    AppDecision, AppState, ApplicationForm, FieldGrant, GrantRequest, Mode, ObjectionState, Origin,
    PrincipalStatus, Role, RowScope, Treatment,
};
use govshare_core::calendar::ManualClock;
use govshare_core::catalog::{CatalogFile, MaskKind, ShareType};
use govshare_core::engine::{Engine, WorkflowAct as Act, WorkflowOutcome as Out};
use govshare_core::ingest::{HandoverInfo, LoadMode, LoadOptions, Source};
use govshare_core::{Error, Store};
use govshare_testkit::{COORD, OPS, ROOT};

use crate::access::small_store;

/// 10:00 Beijing time on `date`.
fn beijing(date: &str) -> DateTime<Utc> {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("date");
    Utc.from_utc_datetime(&d.and_hms_opt(2, 0, 0).expect("time"))
}

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    engine: Engine,
    clock: ManualClock,
}

/// The small store, with a second PSB approver (for sign-offs), a consumer inside PSB (for
/// separation of duties), a coordinator of department B, and the clock on Monday 27 January
/// 2025 — the last working day before Spring Festival.
fn world() -> World {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    govshare_testkit::principals(
        &store,
        "430000",
        &[("MIIT", "省通信管理局")],
        &[
            ("psb2", "PSB", Role::ProviderApprover),
            ("psbc", "PSB", Role::Consumer),
            ("coordb", "B", Role::Coordinator),
            ("miit", "MIIT", Role::ProviderApprover),
        ],
    );
    let clock = ManualClock::new(beijing("2025-01-27"));
    let engine = Engine::open_with_clock(dir.path(), Arc::new(clock.clone())).expect("engine");
    World {
        _dir: dir,
        store,
        engine,
        clock,
    }
}

fn fields(items: &[(&str, Treatment)]) -> Vec<FieldGrant> {
    items
        .iter()
        .map(|(f, t)| FieldGrant {
            field: f.to_string(),
            treatment: *t,
        })
        .collect()
}

fn form(w: &World, dept: &str, items: &[(&str, Treatment)]) -> ApplicationForm {
    let now = w.engine.now();
    ApplicationForm {
        request: GrantRequest {
            consumer_dept: dept.into(),
            users: vec![],
            dataset: "person".into(),
            fields: fields(items),
            purpose_code: "P".into(),
            purpose_text: "社会救助资格核查".into(),
            scope: RowScope::default(),
            modes: vec![Mode::Query],
            verify: None,
            export: None,
            aggregate: None,
            valid_from: now,
            valid_until: now + Duration::days(365),
        },
        legal_basis: "《社会救助暂行办法》第十一条".into(),
    }
}

fn app(o: Out) -> govshare_core::access::policy::Application {
    match o {
        Out::Application(a) => a,
        other => panic!("not an application: {other:?}"),
    }
}

fn denied(r: govshare_core::Result<Out>, needle: &str) {
    match r {
        Err(Error::AccessDenied(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected a denial containing '{needle}', got {other:?}"),
    }
}

fn invalid(r: govshare_core::Result<Out>, needle: &str) {
    match r {
        Err(Error::InvalidInput(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected invalid input containing '{needle}', got {other:?}"),
    }
}

fn apply(w: &World, by: &str, items: &[(&str, Treatment)]) -> u64 {
    let dept = w.store.policy().expect("p").users[by].department.clone();
    app(w
        .engine
        .act(
            by,
            Act::Apply {
                form: form(w, &dept, items),
            },
        )
        .expect("apply"))
    .id
}

fn decide(approve: bool, reason: &str) -> AppDecision {
    AppDecision {
        approve,
        reason: reason.into(),
        fields: None,
        scope: None,
        valid_until: None,
    }
}

/// The columns the session of `user` for purpose `P` sees of `person` (none when refused).
fn visible(w: &World, user: &str) -> Vec<String> {
    let Ok(s) = w.engine.session(user, "P") else {
        return vec![];
    };
    s.catalog()
        .expect("catalog")
        .into_iter()
        .filter(|d| d.dataset == "person")
        .flat_map(|d| d.fields.into_iter().map(|f| f.name))
        .collect()
}

/// Whether every name `user` reads (purpose `P`) is masked as a surname and stars.
fn names_masked(w: &World, user: &str) -> bool {
    let s = w.engine.session(user, "P").expect("session");
    let r = s
        .sql("SELECT name FROM person WHERE name IS NOT NULL LIMIT 20")
        .expect("query");
    let names = crate::common::strings(&r.batches, "name");
    !names.is_empty() && names.iter().all(|n| n.ends_with('*'))
}

#[test]
fn an_application_goes_through_completeness_check_and_approval_with_every_step_recorded() {
    let w = world();
    let id = apply(
        &w,
        "a",
        &[
            ("sex_code", Treatment::Clear),
            ("name", Treatment::Clear),
            ("birth_date", Treatment::Clear),
            ("marital_status_code", Treatment::Clear),
        ],
    );
    let p = w.store.policy().expect("policy");
    let a = &p.applications[&id];
    assert_eq!(a.state, AppState::Submitted);
    assert_eq!(a.received.to_string(), "2025-01-27");
    // The unconditional item is granted at once; the not-shared one is referred.
    let g = &p.grants[&a.immediate_grant.expect("immediate grant")];
    assert_eq!(g.origin, Origin::Application(id));
    assert_eq!(g.request.fields, fields(&[("sex_code", Treatment::Clear)]));
    let r = &p.reclassifications[&a.reclassification.expect("referred")];
    assert_eq!(r.fields, ["marital_status_code"]);
    assert_eq!(visible(&w, "a"), ["sex_code"]);

    // Completeness check: the provider's deadline is 3 working days (person), counted across
    // Spring Festival: 5, 6, 7 February.
    let a = app(w
        .engine
        .act(ROOT, Act::Complete { application: id })
        .expect("complete"));
    assert_eq!(a.state, AppState::UnderReview);
    assert_eq!(a.due.expect("due").to_string(), "2025-02-07");

    // The approver approves narrower: name masked, birth date to the year only.
    w.clock.set(beijing("2025-02-05"));
    let d = AppDecision {
        fields: Some(fields(&[
            ("name", Treatment::Masked(MaskKind::Name)),
            ("birth_date", Treatment::Masked(MaskKind::DateToYear)),
        ])),
        ..decide(true, "同意，按最小必要脱敏提供")
    };
    let ap = match w
        .engine
        .act(
            "psb",
            Act::Decide {
                application: id,
                decision: d,
            },
        )
        .expect("decide")
    {
        Out::Approval(ap) => ap,
        other => panic!("{other:?}"),
    };
    assert_eq!(ap.application, Some(id));
    let p = w.store.policy().expect("policy");
    let a = &p.applications[&id];
    assert_eq!(a.state, AppState::Approved);
    assert_eq!(a.approval, Some(ap.id));
    let steps: Vec<(AppState, &str)> = a.history.iter().map(|t| (t.to, t.by.as_str())).collect();
    assert_eq!(
        steps,
        [
            (AppState::Submitted, "a"),
            (AppState::UnderReview, ROOT),
            (AppState::Approved, "psb")
        ]
    );
    assert_eq!(a.history[2].at, beijing("2025-02-05"));
    assert_eq!(a.history[2].reason, "同意，按最小必要脱敏提供");
    // The newest grant wins in a decision: the approval's (name and birth date, masked).
    let seen = visible(&w, "a");
    assert!(seen.contains(&"name".to_string()), "{seen:?}");
    assert!(names_masked(&w, "a"));
    // Every step is on the trail with the act as sent, its author and its reason.
    let records = w.engine.audit().records().expect("records");
    let steps: Vec<(&str, String)> = records
        .iter()
        .filter(|r| r.kind == "policy" && r.body["detail"]["application"] == id)
        .map(|r| (r.actor.as_str(), r.body["detail"]["act"].to_string()))
        .collect();
    assert_eq!(
        steps,
        [(ROOT, "\"complete\"".into()), ("psb", "\"decide\"".into())]
    );
    assert!(
        records
            .iter()
            .any(|r| r.kind == "policy" && r.actor == "a" && r.body["detail"]["act"] == "apply")
    );
}

#[test]
fn application_refusals_wrong_role_separation_of_duties_missing_reason_and_narrowing() {
    let w = world();
    let id = apply(&w, "a", &[("name", Treatment::Masked(MaskKind::Name))]);
    // Wrong role: a consumer cannot pass its own completeness check; an approver cannot
    // either; nobody decides before the check.
    denied(
        w.engine.act("a", Act::Complete { application: id }),
        "platform-admin",
    );
    denied(
        w.engine.act("psb", Act::Complete { application: id }),
        "platform-admin",
    );
    denied(
        w.engine.act(
            "psb",
            Act::Decide {
                application: id,
                decision: decide(true, ""),
            },
        ),
        "not waiting for a decision",
    );
    // A return needs its reason; the applicant resubmits.
    invalid(
        w.engine.act(
            ROOT,
            Act::Return {
                application: id,
                reason: " ".into(),
            },
        ),
        "reason",
    );
    w.engine
        .act(
            ROOT,
            Act::Return {
                application: id,
                reason: "缺少法律依据原文".into(),
            },
        )
        .expect("return");
    denied(
        w.engine.act("a2", Act::Resubmit { application: id }),
        "only the applicant",
    );
    w.engine
        .act("a", Act::Resubmit { application: id })
        .expect("resubmit");
    w.engine
        .act(ROOT, Act::Complete { application: id })
        .expect("complete");
    // The wrong provider, the platform administrator, a consumer: refused.
    for (who, needle) in [
        ("amr", "its provider is department 'PSB'"),
        (ROOT, "provider-approver"),
        ("a", "provider-approver"),
    ] {
        denied(
            w.engine.act(
                who,
                Act::Decide {
                    application: id,
                    decision: decide(true, ""),
                },
            ),
            needle,
        );
    }
    // A rejection needs its reason.
    invalid(
        w.engine.act(
            "psb",
            Act::Decide {
                application: id,
                decision: decide(false, ""),
            },
        ),
        "reason",
    );
    // Narrower only: clear where a mask was asked, rows outside the scope, a longer validity.
    let wider = [
        AppDecision {
            fields: Some(fields(&[("name", Treatment::Clear)])),
            ..decide(true, "")
        },
        AppDecision {
            fields: Some(fields(&[(
                "mobile_phone",
                Treatment::Masked(MaskKind::Phone),
            )])),
            ..decide(true, "")
        },
        AppDecision {
            valid_until: Some(w.engine.now() + Duration::days(4000)),
            ..decide(true, "")
        },
    ];
    for d in wider {
        denied(
            w.engine.act(
                "psb",
                Act::Decide {
                    application: id,
                    decision: d,
                },
            ),
            "can only narrow",
        );
    }
    // Separation of duties: PSB's approver decides nothing for PSB's own consumer.
    let own = apply(&w, "psbc", &[("name", Treatment::Masked(MaskKind::Name))]);
    w.engine
        .act(ROOT, Act::Complete { application: own })
        .expect("complete");
    denied(
        w.engine.act(
            "psb",
            Act::Decide {
                application: own,
                decision: decide(true, ""),
            },
        ),
        "separation of duties",
    );
    // A consumer applies for its own department only; and a forged edit that widens an
    // application after the fact is refused by effect.
    let mut f = form(&w, "B", &[("sex_code", Treatment::Clear)]);
    f.legal_basis = "x".into();
    denied(w.engine.act("a", Act::Apply { form: f }), "own department");
    let e = w
        .engine
        .writer("a")
        .expect("w")
        .update_policy("widen", |p, _| {
            let a = p.applications.get_mut(&id).expect("app");
            a.request.fields[0].treatment = Treatment::Clear;
            Ok(())
        })
        .expect_err("widened");
    assert!(e.to_string().contains("never change"), "{e}");
    // Nor can an applicant grant itself a conditional item "at once".
    let e = w
        .engine
        .writer("a")
        .expect("w")
        .update_policy("forge", |p, c| {
            let mut f = form(&w, "A", &[("sex_code", Treatment::Clear)]);
            let a = p.apply(c, f.clone(), "a", w.engine.now())?;
            let g = a.immediate_grant.expect("grant");
            f.request.fields = fields(&[("name", Treatment::Clear)]);
            p.grants.get_mut(&g).expect("g").request = f.request;
            Ok(())
        })
        .expect_err("forged");
    assert!(e.to_string().contains("unconditional items"), "{e}");
    // An application without its legal basis is incomplete from the start.
    let mut f = form(&w, "A", &[("sex_code", Treatment::Clear)]);
    f.legal_basis = "  ".into();
    invalid(w.engine.act("a", Act::Apply { form: f }), "legal basis");
    // Approved, then the applicant cannot withdraw it.
    w.engine
        .act(
            "psb",
            Act::Decide {
                application: id,
                decision: decide(true, "同意"),
            },
        )
        .expect("approve");
    denied(
        w.engine.act(
            "a",
            Act::Withdraw {
                application: id,
                reason: "x".into(),
            },
        ),
        "no step leads from approved to withdrawn",
    );
}

#[test]
fn overdue_applications_escalate_to_the_coordinator_who_decides_and_disputes_go_there_too() {
    let w = world();
    let id = apply(&w, "a", &[("name", Treatment::Masked(MaskKind::Name))]);
    w.engine
        .act(ROOT, Act::Complete { application: id })
        .expect("complete"); // due 7 February 2025
    // Not overdue yet: the sweep moves nothing, and a forged escalation is refused.
    w.clock.set(beijing("2025-02-07"));
    let versions = w.store.policy_version().expect("v");
    match w.engine.act(COORD, Act::Escalate).expect("sweep") {
        Out::Escalated { applications, .. } => assert!(applications.is_empty()),
        other => panic!("{other:?}"),
    }
    // A sweep that moves nothing makes no policy version, but is on the trail; and it is the
    // coordinator's (or a platform administrator's) to run even then.
    assert_eq!(w.store.policy_version().expect("v"), versions);
    assert!(
        w.engine
            .audit()
            .records()
            .expect("r")
            .iter()
            .any(|r| r.kind == "policy_unchanged" && r.actor == COORD)
    );
    denied(w.engine.act("a", Act::Escalate), "coordinator");
    let e = w
        .engine
        .writer(COORD)
        .expect("w")
        .update_policy("forge", |p, c| {
            let cal = govshare_core::calendar::WorkCalendar::builtin();
            p.move_application(c, &cal, id, AppState::Escalated, COORD, "", w.engine.now())
        })
        .expect_err("early");
    assert!(e.to_string().contains("not overdue"), "{e}");
    // Saturday 8 February 2025 is a working day, and the deadline has passed.
    w.clock.set(beijing("2025-02-08"));
    denied(w.engine.act("a", Act::Escalate), "coordinator");
    match w.engine.act(COORD, Act::Escalate).expect("sweep") {
        Out::Escalated { applications, .. } => assert_eq!(applications, [id]),
        other => panic!("{other:?}"),
    }
    // The provider no longer decides; the coordinator does (not for their own department).
    denied(
        w.engine.act(
            "psb",
            Act::Decide {
                application: id,
                decision: decide(true, ""),
            },
        ),
        "coordinator",
    );
    let mine = apply(&w, "b", &[("name", Treatment::Masked(MaskKind::Name))]);
    w.engine
        .act(ROOT, Act::Complete { application: mine })
        .expect("complete");
    w.clock.set(beijing("2025-02-20"));
    w.engine.act(COORD, Act::Escalate).expect("sweep");
    denied(
        w.engine.act(
            "coordb",
            Act::Decide {
                application: mine,
                decision: decide(true, ""),
            },
        ),
        "own department",
    );
    // The coordinator rejects (with a reason); the applicant disputes (with a reason); the
    // coordinator decides the dispute and the grant is made.
    w.engine
        .act(
            COORD,
            Act::Decide {
                application: id,
                decision: decide(false, "用途与申请数据项不匹配"),
            },
        )
        .expect("reject");
    invalid(
        w.engine.act(
            "a",
            Act::Dispute {
                application: id,
                reason: "".into(),
            },
        ),
        "reason",
    );
    w.engine
        .act(
            "a",
            Act::Dispute {
                application: id,
                reason: "救助审核依法需要核对姓名".into(),
            },
        )
        .expect("dispute");
    denied(
        w.engine.act(
            "psb",
            Act::Decide {
                application: id,
                decision: decide(true, ""),
            },
        ),
        "coordinator",
    );
    w.engine
        .act(
            COORD,
            Act::Decide {
                application: id,
                decision: decide(true, "协调后同意"),
            },
        )
        .expect("coordinator approves");
    let a = &w.store.policy().expect("p").applications[&id];
    let states: Vec<AppState> = a.history.iter().map(|t| t.to).collect();
    assert_eq!(
        states,
        [
            AppState::Submitted,
            AppState::UnderReview,
            AppState::Escalated,
            AppState::Rejected,
            AppState::Disputed,
            AppState::Approved
        ]
    );
    assert!(
        a.history[2].reason.contains("2025-02-07"),
        "{:?}",
        a.history[2]
    );
    assert!(names_masked(&w, "a"));
}

/// A grant of `person.name` for department A, then objections on it.
fn objection_world() -> (World, u64) {
    let w = world();
    let id = apply(&w, "a", &[("name", Treatment::Clear)]);
    w.engine
        .act(ROOT, Act::Complete { application: id })
        .expect("complete");
    w.engine
        .act(
            "psb",
            Act::Decide {
                application: id,
                decision: decide(true, "同意"),
            },
        )
        .expect("approve");
    (w, id)
}

fn a_key(store: &Store) -> String {
    let snap = store.snapshot("person").expect("snap");
    crate::common::strings(
        &snap.read(None, Some(&["citizen_id"])).expect("read"),
        "citizen_id",
    )[7]
    .clone()
}

fn file(w: &World, by: &str, key: &str, discovered: &str) -> govshare_core::Result<Out> {
    w.engine.act(
        by,
        Act::FileObjection {
            dataset: "person".into(),
            key: key.into(),
            field: "name".into(),
            description: "姓名与户籍登记不一致".into(),
            discovered_on: NaiveDate::parse_from_str(discovered, "%Y-%m-%d").expect("d"),
        },
    )
}

fn objection(o: Out) -> govshare_core::access::policy::Objection {
    match o {
        Out::Objection(o) => o,
        other => panic!("{other:?}"),
    }
}

#[test]
fn objections_are_answered_in_time_with_one_signed_off_extension_and_corrections_reference_them() {
    let (w, _) = objection_world();
    let key = a_key(&w.store);
    // Found on Friday 24 January, filed Monday 27: within 3 working days (Sunday 26 was worked).
    let o = objection(file(&w, "a", &key, "2025-01-24").expect("file"));
    assert!(!o.filed_late);
    assert_eq!(o.provider, "PSB");
    // person: 5 working days — 5, 6, 7, 8 (Saturday worked), 10 February.
    assert_eq!(o.due.to_string(), "2025-02-10");
    // Found on 20 January: the 3 working days ended on 23 January; filed late, still filed.
    let late = objection(file(&w, "a", &key, "2025-01-20").expect("file"));
    assert!(late.filed_late);
    // Department B holds no grant of person.name: it cannot have found an error in it.
    denied(file(&w, "b", &key, "2025-01-24"), "holds no grant");

    // The wrong department cannot answer; an answer needs its reason.
    denied(
        w.engine.act(
            "amr",
            Act::Confirm {
                objection: o.id,
                reason: "核实无误".into(),
            },
        ),
        "objection",
    );
    invalid(
        w.engine.act(
            "psb",
            Act::Confirm {
                objection: o.id,
                reason: "".into(),
            },
        ),
        "reason",
    );
    // One extension, at most 10 working days, signed off by another approver.
    invalid(
        w.engine.act(
            "psb",
            Act::RequestExtension {
                objection: o.id,
                days: 11,
                reason: "需调取档案".into(),
            },
        ),
        "1 to 10",
    );
    w.engine
        .act(
            "psb",
            Act::RequestExtension {
                objection: o.id,
                days: 5,
                reason: "需调取档案".into(),
            },
        )
        .expect("ask");
    denied(
        w.engine.act(
            "psb",
            Act::SignOffExtension {
                objection: o.id,
                reason: "同意".into(),
            },
        ),
        "another approver",
    );
    let o2 = objection(
        w.engine
            .act(
                "psb2",
                Act::SignOffExtension {
                    objection: o.id,
                    reason: "主要负责人同意延期".into(),
                },
            )
            .expect("sign off"),
    );
    assert_eq!(o2.state, ObjectionState::Extended);
    assert_eq!(o2.due.to_string(), "2025-02-17"); // 11, 12, 13, 14, 17 February
    denied(
        w.engine.act(
            "psb",
            Act::RequestExtension {
                objection: o.id,
                days: 3,
                reason: "again".into(),
            },
        ),
        "no step leads from extended",
    );
    // A correction is a data version that references the objection.
    denied(
        w.engine.act(
            "psb",
            Act::Correct {
                objection: o.id,
                version: 1,
                reason: "已更正".into(),
            },
        ),
        "references the objection",
    );
    let snap = w.store.snapshot("person").expect("snap");
    let row = snap.lookup(&key).expect("lookup").expect("present");
    let batch = snap
        .read(Some(&[row].into_iter().collect()), None)
        .expect("read")
        .remove(0);
    let opts = LoadOptions {
        mode: LoadMode::Incremental,
        handover: HandoverInfo {
            corrects: vec![o.id],
            ..Default::default()
        },
        ..Default::default()
    };
    let v = w
        .engine
        .load(OPS, "person", Source::Batches(vec![batch]), &opts)
        .expect("correction load")
        .version;
    let done = objection(
        w.engine
            .act(
                "psb",
                Act::Correct {
                    objection: o.id,
                    version: v,
                    reason: "已按户籍档案更正".into(),
                },
            )
            .expect("corrected"),
    );
    assert_eq!(done.state, ObjectionState::Corrected);
    assert_eq!(done.correction_version, Some(v));

    // The late one is overdue after 10 February and escalates; the provider still answers.
    w.clock.set(beijing("2025-02-11"));
    match w.engine.act(COORD, Act::Escalate).expect("sweep") {
        Out::Escalated { objections, .. } => assert_eq!(objections, [late.id]),
        other => panic!("{other:?}"),
    }
    let ans = objection(
        w.engine
            .act(
                "psb",
                Act::Confirm {
                    objection: late.id,
                    reason: "经核实数据无误".into(),
                },
            )
            .expect("answer"),
    );
    let states: Vec<ObjectionState> = ans.history.iter().map(|t| t.to).collect();
    assert_eq!(
        states,
        [
            ObjectionState::Open,
            ObjectionState::Escalated,
            ObjectionState::Confirmed
        ]
    );
    // The subject's key is in the record, not on the trail's copy of the act.
    let trail = w.engine.audit().records().expect("records");
    assert!(
        !trail
            .iter()
            .any(|r| r.kind == "policy" && r.body["detail"].to_string().contains(&key))
    );
}

/// Upserts of the persons `keys` (the first `n` of the current version when `None`) with
/// `name` and `mobile_phone` changed.
fn changed_persons(store: &Store, n: usize, keys: Option<&[String]>) -> (Vec<String>, RecordBatch) {
    let snap = store.snapshot("person").expect("snap");
    let rows: roaring::RoaringBitmap = match keys {
        Some(keys) => keys
            .iter()
            .map(|k| snap.lookup(k).expect("lookup").expect("present"))
            .collect(),
        None => snap.live_rows().expect("live").iter().take(n).collect(),
    };
    let all = snap.read(Some(&rows), None).expect("read");
    let batch = arrow::compute::concat_batches(&all[0].schema(), &all).expect("concat");
    // Row-id order; put it back in the order of `keys`.
    let got = crate::common::strings(std::slice::from_ref(&batch), "citizen_id");
    let order: Vec<u32> = match keys {
        Some(keys) => keys
            .iter()
            .map(|k| got.iter().position(|g| g == k).expect("row") as u32)
            .collect(),
        None => (0..got.len() as u32).collect(),
    };
    let batch = arrow::compute::take_record_batch(&batch, &arrow::array::UInt32Array::from(order))
        .expect("take");
    let keys = crate::common::strings(std::slice::from_ref(&batch), "citizen_id");
    let mut cols = batch.columns().to_vec();
    let schema = batch.schema();
    let set = |cols: &mut Vec<arrow::array::ArrayRef>, name: &str, v: Vec<String>| {
        cols[schema.index_of(name).expect("col")] = Arc::new(StringArray::from(v));
    };
    set(
        &mut cols,
        "name",
        (0..n).map(|i| format!("新名{i}")).collect(),
    );
    set(
        &mut cols,
        "mobile_phone",
        (0..n).map(|i| format!("1390000{i:04}")).collect(),
    );
    (keys, RecordBatch::try_new(schema, cols).expect("batch"))
}

fn load_from(w: &World, dept: &str, batch: RecordBatch) -> u64 {
    let opts = LoadOptions {
        mode: LoadMode::Incremental,
        handover: HandoverInfo {
            provider_dept: dept.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    w.engine
        .load(OPS, "person", Source::Batches(vec![batch]), &opts)
        .expect("load")
        .version
}

fn value(w: &World, key: &str, field: &str) -> String {
    let r = w
        .engine
        .lookup(OPS, "核对一数一源冲突", "person", key)
        .expect("lookup");
    crate::common::strings(&r.batches, field)[0].clone()
}

#[test]
fn one_source_per_field_a_disagreeing_source_is_recorded_not_written() {
    let w = world();
    // The catalog names the telecom regulator as the source of person.mobile_phone.
    let mut f = CatalogFile::default();
    let mut person = w.store.catalog().expect("c").datasets["person"].clone();
    person
        .fields
        .iter_mut()
        .find(|f| f.name == "mobile_phone")
        .expect("field")
        .provider = Some("MIIT".into());
    f.datasets.push(person);
    w.engine
        .apply_catalog(ROOT, f, "mobile phone from MIIT")
        .expect("catalog");
    let (keys, batch) = changed_persons(&w.store, 3, None);
    let before: Vec<String> = keys.iter().map(|k| value(&w, k, "mobile_phone")).collect();
    // PSB delivers new names (its own) and new phones (not its own).
    let v = load_from(&w, "PSB", batch.clone());
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(value(&w, k, "name"), format!("新名{i}"), "PSB's own field");
        // A value in force is kept; a missing one is filled (nothing to disagree with).
        let want = if before[i].is_empty() {
            format!("1390000{i:04}")
        } else {
            before[i].clone()
        };
        assert_eq!(value(&w, k, "mobile_phone"), want, "MIIT's field");
    }
    let m = w
        .store
        .snapshot_at("person", v)
        .expect("v")
        .manifest()
        .clone();
    let got: Vec<(String, String, String, String)> = m
        .conflicts
        .iter()
        .map(|c| {
            (
                c.key.clone(),
                c.field.clone(),
                c.authority.clone(),
                c.source.clone(),
            )
        })
        .collect();
    let want: Vec<_> = keys
        .iter()
        .filter(|k| !before[keys.iter().position(|x| x == *k).expect("i")].is_empty())
        .map(|k| {
            (
                k.clone(),
                "mobile_phone".into(),
                "MIIT".into(),
                "PSB".into(),
            )
        })
        .collect();
    assert_eq!(got, want);
    // Never a value in a conflict.
    let text = serde_json::to_string(&m.conflicts).expect("json");
    assert!(
        !text.contains("1390000") && !text.contains("新名"),
        "{text}"
    );
    // MIIT delivers the same rows: its phones are written; the names it sends back are PSB's
    // now, so they agree and nothing conflicts on them.
    let (_, now_rows) = changed_persons(&w.store, 3, Some(&keys));
    let v2 = load_from(&w, "MIIT", now_rows);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(value(&w, k, "mobile_phone"), format!("1390000{i:04}"));
    }
    let m2 = w
        .store
        .snapshot_at("person", v2)
        .expect("v2")
        .manifest()
        .clone();
    assert!(m2.conflicts.iter().all(|c| c.field != "mobile_phone"));
    // A source other than the dataset's provider removes no subject: the delete is rejected.
    let (_, rows) = changed_persons(&w.store, 1, Some(&keys[..1]));
    let mut cols = rows.columns().to_vec();
    cols.push(Arc::new(StringArray::from(vec!["delete"])));
    let mut fields: Vec<arrow::datatypes::FieldRef> =
        rows.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(arrow::datatypes::Field::new(
        "_op",
        arrow::datatypes::DataType::Utf8,
        false,
    )));
    let delete = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols)
        .expect("delete");
    let live = w.store.snapshot("person").expect("s").manifest().live_rows;
    let opts = LoadOptions {
        mode: LoadMode::Incremental,
        handover: HandoverInfo {
            provider_dept: "MIIT".into(),
            ..Default::default()
        },
        allow_empty: true,
        ..Default::default()
    };
    let s = w
        .engine
        .load(OPS, "person", Source::Batches(vec![delete]), &opts)
        .expect("load");
    assert_eq!(s.handover.rows_deleted, 0);
    assert_eq!(s.handover.rows_rejected, 1);
    assert_eq!(s.live_rows, live);
    // Listing: MIIT's approver sees MIIT's conflicts, PSB's sees none of them, a consumer none.
    let listed = w.engine.conflicts("miit", Some("person")).expect("list");
    assert_eq!(listed.len(), want.len());
    assert!(w.engine.conflicts("psb", None).expect("list").is_empty());
    assert!(matches!(
        w.engine.conflicts("a", None),
        Err(Error::AccessDenied(_))
    ));
    assert_eq!(
        w.engine.conflicts(COORD, None).expect("all").len(),
        want.len()
    );
    // Resolution: by the authoritative source only, with a reason; a correction is a later
    // version from that source.
    let cid = listed[0].id.clone();
    let resolve = |by: &str, v: Option<u64>, reason: &str| {
        w.engine.act(
            by,
            Act::ResolveConflict {
                conflict: cid.clone(),
                correction_version: v,
                reason: reason.into(),
            },
        )
    };
    denied(resolve("psb", None, "以公安为准"), "authoritative source");
    invalid(resolve("miit", None, ""), "reason");
    denied(resolve("miit", Some(v), "已更正"), "later version");
    resolve("miit", Some(v2), "已按运营商实名数据更正").expect("resolved");
    let listed = w.engine.conflicts("miit", Some("person")).expect("list");
    assert_eq!(
        listed[0]
            .resolution
            .as_ref()
            .expect("resolved")
            .correction_version,
        Some(v2)
    );
    denied(resolve("miit", None, "again"), "never removed");
}

#[test]
fn agreements_group_grants_renew_before_expiry_on_the_calendar_and_revoke_together() {
    let w = world();
    let term_end = beijing("2025-07-01");
    let mut f = form(&w, "A", &[("name", Treatment::Masked(MaskKind::Name))]);
    f.request.valid_until = term_end;
    let id = app(w.engine.act("a", Act::Apply { form: f }).expect("apply")).id;
    w.engine
        .act(ROOT, Act::Complete { application: id })
        .expect("complete");
    let ap = match w
        .engine
        .act(
            "psb",
            Act::Decide {
                application: id,
                decision: decide(true, "长期稳定需求"),
            },
        )
        .expect("approve")
    {
        Out::Approval(a) => a,
        other => panic!("{other:?}"),
    };
    let grant = ap.grant.expect("grant");
    let make = |by: &str, grants: Vec<u64>, until| {
        w.engine.act(
            by,
            Act::MakeAgreement {
                consumer_dept: "A".into(),
                title: "社会救助人口信息共享协议".into(),
                grants,
                until,
            },
        )
    };
    denied(make("a", vec![grant], term_end), "provider-approver");
    denied(make("amr", vec![grant], term_end), "cannot be part");
    denied(
        make("psb", vec![grant], beijing("2025-08-01")),
        "ending with the term",
    );
    let ag = match make("psb", vec![grant], term_end).expect("agreement") {
        Out::Agreement(a) => a,
        other => panic!("{other:?}"),
    };
    // The coordinator's report says when the renewal is due: within 10 working days of the
    // end (1 July 2025, a Tuesday; 17 June is 10 working days before it).
    let due = |date: &str| {
        w.clock.set(beijing(date));
        let r = w
            .engine
            .report_sql(
                COORD,
                &format!(
                    "SELECT working_days_left, renewal_due FROM agreements WHERE id = {}",
                    ag.id
                ),
            )
            .expect("report");
        govshare_testkit::render_cells(&r.batches)[0].join("|")
    };
    assert_eq!(due("2025-06-16"), "11|false");
    assert_eq!(due("2025-06-17"), "10|true");
    // Renewed before it ends: a successor grant from the old end to the new one.
    w.clock.set(beijing("2025-06-20"));
    let renewed = match w
        .engine
        .act(
            "psb",
            Act::RenewAgreement {
                agreement: ag.id,
                until: beijing("2026-07-01"),
            },
        )
        .expect("renew")
    {
        Out::Agreement(a) => a,
        other => panic!("{other:?}"),
    };
    let next = renewed.grants[0];
    let p = w.store.policy().expect("p");
    assert_eq!(p.grants[&next].request.valid_from, term_end);
    assert_eq!(
        p.grants[&next].origin,
        Origin::Renewal {
            agreement: ag.id,
            of: grant
        }
    );
    // After the first term the session runs on the renewed grant.
    w.clock.set(beijing("2025-07-02"));
    assert!(names_masked(&w, "a"));
    // A renewal after the end is refused; so is one by the wrong department.
    w.clock.set(beijing("2026-07-02"));
    denied(
        w.engine.act(
            "psb",
            Act::RenewAgreement {
                agreement: ag.id,
                until: beijing("2027-07-01"),
            },
        ),
        "renewed before it ends",
    );
    w.clock.set(beijing("2026-01-05"));
    denied(
        w.engine.act(
            "amr",
            Act::RenewAgreement {
                agreement: ag.id,
                until: beijing("2027-07-01"),
            },
        ),
        "renewed by an approver",
    );
    // Revocation needs its reason and revokes the grants: the next query is refused.
    let session = w.engine.session("a", "P").expect("session");
    invalid(
        w.engine.act(
            "psb",
            Act::RevokeAgreement {
                agreement: ag.id,
                reason: "".into(),
            },
        ),
        "reason",
    );
    w.engine
        .act(
            "psb",
            Act::RevokeAgreement {
                agreement: ag.id,
                reason: "业务调整，终止共享".into(),
            },
        )
        .expect("revoke");
    assert!(matches!(
        session.sql("SELECT count(*) FROM person"),
        Err(Error::AccessDenied(_))
    ));
}

#[test]
fn the_service_catalog_lists_what_a_principal_may_apply_for_and_what_it_holds() {
    let w = world();
    apply(&w, "a", &[("sex_code", Treatment::Clear)]);
    let cat = w.engine.service_catalog("a").expect("catalog");
    let person = cat.iter().find(|e| e.dataset == "person").expect("person");
    assert_eq!(person.provider, "PSB");
    assert_eq!(person.version, 1);
    assert!(person.last_update.is_some());
    assert_eq!(person.update_frequency, "real-time");
    assert_eq!((person.approval_days, person.objection_days), (3, 5));
    assert_eq!(
        person.modes,
        [
            Mode::Query,
            Mode::Verify,
            Mode::Export,
            Mode::Aggregate,
            Mode::Push
        ],
        "every mode a grant may name is served"
    );
    let item = |n: &str| person.items.iter().find(|i| i.name == n).expect("item");
    assert_eq!(item("sex_code").held, Some(Treatment::Clear));
    assert_eq!(item("name").held, None);
    assert_eq!(item("name").share, ShareType::Conditional);
    assert!(
        item("marital_status_code")
            .requirement
            .contains("reclassified")
    );
    let entity = cat
        .iter()
        .find(|e| e.dataset == "legal_entity")
        .expect("le");
    assert_eq!((entity.approval_days, entity.objection_days), (5, 10));
    // Any active user reads it; someone suspended or unknown does not, and the reading is
    // recorded either way.
    w.engine
        .set_user_status(ROOT, "b", PrincipalStatus::Suspended)
        .expect("suspend");
    assert!(matches!(
        w.engine.service_catalog("b"),
        Err(Error::AccessDenied(_))
    ));
    let reads = w
        .engine
        .audit()
        .records()
        .expect("r")
        .iter()
        .filter(|r| r.kind == "service_catalog_read")
        .count();
    assert_eq!(reads, 2);
}

#[test]
fn calendar_years_are_added_by_an_operator_as_a_recorded_act() {
    let w = world();
    let y = govshare_core::calendar::YearTable {
        year: 2027,
        source: "国务院办公厅关于2027年部分节假日安排的通知".into(),
        off: vec!["01-01".into()],
        work: vec![],
    };
    let add = |by: &str| {
        w.engine.act(
            by,
            Act::AddCalendarYears {
                years: vec![y.clone()],
                note: "2027 notice".into(),
            },
        )
    };
    denied(add("a"), "operator");
    denied(add(ROOT), "operator");
    add(OPS).expect("added");
    assert!(w.store.calendar().expect("cal").years().contains(&2027));
    assert!(
        w.engine
            .audit()
            .records()
            .expect("r")
            .iter()
            .any(|r| r.kind == "calendar" && r.actor == OPS)
    );
}
