//! The sharing workflows on an open [`Engine`]: the service catalog a principal applies
//! against, and every workflow act — applications, objections, agreements, reclassification
//! requests, conflict resolutions, calendar years — through one entry, [`Engine::act`].
//!
//! An act is a value ([`WorkflowAct`]) so that every door (Rust, C, Python, the command line)
//! sends the same thing and the trail records it as sent: the policy commit's audit record
//! carries the act (with its reason) next to who did it and when. Who may do it is decided by
//! the policy, by the effect of the edit ([`Policy::authorize_change`]).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::access::policy::{
    Agreement, AppDecision, AppState, Application, ApplicationForm, Approval, Mode, Objection,
    ObjectionState, Policy, Reclassification, Resolution, Role, Treatment, conflict_id,
    how_to_obtain,
};
use crate::calendar::YearTable;
use crate::catalog::{Grade, ShareType, Status};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::store::{CalendarVersion, Conflict};

/// One workflow act, as every binding sends it (JSON: `{"act": "apply", ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "act", rename_all = "snake_case", deny_unknown_fields)]
pub enum WorkflowAct {
    /// File an application (a consumer).
    Apply {
        /// What is applied for.
        #[serde(flatten)]
        form: ApplicationForm,
    },
    /// Pass the completeness check: the application goes to the provider, with its deadline
    /// (a platform administrator).
    Complete {
        /// Application id.
        application: u64,
    },
    /// Return an incomplete application (a platform administrator, with the reason).
    Return {
        /// Application id.
        application: u64,
        /// What is missing.
        reason: String,
    },
    /// Resubmit a returned application (its applicant).
    Resubmit {
        /// Application id.
        application: u64,
    },
    /// Withdraw an open application (its applicant).
    Withdraw {
        /// Application id.
        application: u64,
        /// Why.
        #[serde(default)]
        reason: String,
    },
    /// Dispute a rejection before the coordinator (its applicant, with the reason).
    Dispute {
        /// Application id.
        application: u64,
        /// Why the rejection is wrong.
        reason: String,
    },
    /// Hand an escalated application back to the provider with a new deadline (the
    /// coordinator).
    HandBack {
        /// Application id.
        application: u64,
        /// Why.
        reason: String,
    },
    /// Approve (possibly narrower) or reject (with the reason): the provider's approver, or the
    /// coordinator on escalation and dispute.
    Decide {
        /// Application id.
        application: u64,
        /// The decision.
        #[serde(flatten)]
        decision: AppDecision,
    },
    /// Escalate everything overdue to the coordinator (a coordinator or platform administrator).
    Escalate,
    /// File an objection on one field of one subject (a consumer whose department holds it).
    FileObjection {
        /// Dataset.
        dataset: String,
        /// The subject's key.
        key: String,
        /// The field.
        field: String,
        /// What is wrong, in words (no data values).
        description: String,
        /// When it was found (Beijing date).
        discovered_on: NaiveDate,
    },
    /// Ask for the one extension of an objection's deadline (the source's approver).
    RequestExtension {
        /// Objection id.
        objection: u64,
        /// Working days, at most 10.
        days: u32,
        /// Why.
        reason: String,
    },
    /// Sign off an extension (another approver of the source).
    SignOffExtension {
        /// Objection id.
        objection: u64,
        /// Note.
        reason: String,
    },
    /// Answer an objection: the data is right (the source's approver).
    Confirm {
        /// Objection id.
        objection: u64,
        /// Why it is right.
        reason: String,
    },
    /// Answer an objection: corrected by a data version that references it.
    Correct {
        /// Objection id.
        objection: u64,
        /// The data version.
        version: u64,
        /// What was corrected.
        reason: String,
    },
    /// Make a sharing agreement (the provider's approver).
    MakeAgreement {
        /// Consumer department.
        consumer_dept: String,
        /// What it is for.
        title: String,
        /// Its grants (each ending with the term).
        grants: Vec<u64>,
        /// End of the term.
        until: DateTime<Utc>,
    },
    /// Renew an agreement before it ends (the provider's approver).
    RenewAgreement {
        /// Agreement id.
        agreement: u64,
        /// New end of the term.
        until: DateTime<Utc>,
    },
    /// Revoke an agreement and its grants.
    RevokeAgreement {
        /// Agreement id.
        agreement: u64,
        /// Why.
        reason: String,
    },
    /// Close a reclassification request (the coordinator), saying what was done.
    CloseReclassification {
        /// Request id.
        request: u64,
        /// What was done.
        outcome: String,
    },
    /// Resolve a conflict between sources (an approver of the authoritative source).
    ResolveConflict {
        /// Conflict id (`dataset:version:n`).
        conflict: String,
        /// The authoritative source's later version that corrected its value, if any.
        #[serde(default)]
        correction_version: Option<u64>,
        /// Why.
        reason: String,
    },
    /// Add (or correct) working-day calendar years (an operator).
    AddCalendarYears {
        /// The years, each from its State Council notice.
        years: Vec<YearTable>,
        /// Why.
        note: String,
    },
}

/// What an act produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkflowOutcome {
    /// An application, as it stands after the act.
    Application(Application),
    /// A decision on an application.
    Approval(Approval),
    /// An objection, as it stands after the act.
    Objection(Objection),
    /// An agreement, as it stands after the act.
    Agreement(Agreement),
    /// A closed reclassification request.
    Reclassification(Reclassification),
    /// A conflict's resolution.
    Resolution(Resolution),
    /// What an escalation moved.
    Escalated {
        /// Applications escalated.
        applications: Vec<u64>,
        /// Objections escalated.
        objections: Vec<u64>,
    },
    /// The calendar additions now in force.
    Calendar(CalendarVersion),
}

/// One item of the service catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceItem {
    /// Field name.
    pub name: String,
    /// Chinese label.
    pub label: String,
    /// Share type.
    pub share: ShareType,
    /// Grade.
    pub grade: Grade,
    /// What applying for it involves.
    pub requirement: &'static str,
    /// The department that is its authoritative source.
    pub source: String,
    /// How the principal's department holds it now (a valid grant for some purpose), if it
    /// does: the treatment.
    pub held: Option<Treatment>,
}

/// One dataset of the service catalog (资源目录 as a consumer sees it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceEntry {
    /// Dataset (the SQL table name).
    pub dataset: String,
    /// Chinese label.
    pub label: String,
    /// Description.
    pub description: String,
    /// Providing department.
    pub provider: String,
    /// Current data version (0: no data yet).
    pub version: u64,
    /// When that version was committed.
    pub last_update: Option<DateTime<Utc>>,
    /// Declared update frequency.
    pub update_frequency: String,
    /// Lifecycle status.
    pub status: Status,
    /// The service modes a grant may name, and those served today.
    pub modes: Vec<Mode>,
    /// Working days the provider has to decide an application.
    pub approval_days: u32,
    /// Working days the provider has to answer an objection.
    pub objection_days: u32,
    /// Usage requirements: what every application states.
    pub requirements: Vec<&'static str>,
    /// The items.
    pub items: Vec<ServiceItem>,
}

/// A conflict between sources with its resolution, if any.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConflictEntry {
    /// Id (`dataset:version:n`).
    pub id: String,
    /// Dataset.
    pub dataset: String,
    /// The version that recorded it (keeping the authoritative value).
    pub version: u64,
    /// The key, field and both sources.
    #[serde(flatten)]
    pub conflict: Conflict,
    /// The authoritative source's resolution.
    pub resolution: Option<Resolution>,
}

/// The service modes served: every mode a grant may name.
pub const SERVED_MODES: [Mode; 5] = [
    Mode::Query,
    Mode::Verify,
    Mode::Export,
    Mode::Aggregate,
    Mode::Push,
];

impl WorkflowAct {
    fn note(&self) -> String {
        let id = |what: &str, n: &u64| format!("{what} {n}");
        match self {
            WorkflowAct::Apply { form } => format!("application for {}", form.request.dataset),
            WorkflowAct::Complete { application } => id("complete application", application),
            WorkflowAct::Return { application, .. } => id("return application", application),
            WorkflowAct::Resubmit { application } => id("resubmit application", application),
            WorkflowAct::Withdraw { application, .. } => id("withdraw application", application),
            WorkflowAct::Dispute { application, .. } => id("dispute application", application),
            WorkflowAct::HandBack { application, .. } => id("hand back application", application),
            WorkflowAct::Decide {
                application,
                decision,
            } => id(
                if decision.approve {
                    "approve application"
                } else {
                    "reject application"
                },
                application,
            ),
            WorkflowAct::Escalate => "escalate overdue".into(),
            WorkflowAct::FileObjection { dataset, field, .. } => {
                format!("objection on {dataset}.{field}")
            }
            WorkflowAct::RequestExtension { objection, .. } => id("extension asked", objection),
            WorkflowAct::SignOffExtension { objection, .. } => {
                id("extension signed off", objection)
            }
            WorkflowAct::Confirm { objection, .. } => id("objection confirmed", objection),
            WorkflowAct::Correct { objection, .. } => id("objection corrected", objection),
            WorkflowAct::MakeAgreement { consumer_dept, .. } => {
                format!("agreement with {consumer_dept}")
            }
            WorkflowAct::RenewAgreement { agreement, .. } => id("renew agreement", agreement),
            WorkflowAct::RevokeAgreement { agreement, .. } => id("revoke agreement", agreement),
            WorkflowAct::CloseReclassification { request, .. } => {
                id("close reclassification request", request)
            }
            WorkflowAct::ResolveConflict { conflict, .. } => format!("resolve conflict {conflict}"),
            WorkflowAct::AddCalendarYears { .. } => "calendar years".into(),
        }
    }

    /// The act as its record shows it: object keys of subjects are left out (the key of an
    /// objection's subject is in the policy record itself, readable by the roles that need it).
    fn detail(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("key");
            if let Some(scope) = o.get_mut("scope").and_then(|s| s.as_object_mut()) {
                scope.remove("subjects");
            }
        }
        v
    }
}

impl Engine {
    /// Do one workflow act as `by`: the policy decides whether `by` may (role, separation of
    /// duties, state, deadline, reason) and the step is committed with its record — or refused
    /// with its record.
    pub fn act(&self, by: &str, act: WorkflowAct) -> Result<WorkflowOutcome> {
        let note = act.note();
        let detail = act.detail();
        let now = self.now();
        let mut w = self.writer(by)?;
        if let WorkflowAct::AddCalendarYears { years, note } = act {
            return Ok(WorkflowOutcome::Calendar(
                w.add_calendar_years(&years, &note)?,
            ));
        }
        let calendar = self.store().calendar()?;
        w.update_policy_recorded(&note, detail, move |p: &mut Policy, c| {
            use WorkflowAct as A;
            let app = |p: &mut Policy, id, to, reason: &str| {
                p.move_application(c, &calendar, id, to, by, reason, now)
                    .map(WorkflowOutcome::Application)
            };
            let obj = |p: &mut Policy, id, to, reason: &str, days, version| {
                p.move_objection(&calendar, id, to, by, reason, days, version, now)
                    .map(WorkflowOutcome::Objection)
            };
            match act {
                A::Apply { form } => p.apply(c, form, by, now).map(WorkflowOutcome::Application),
                A::Complete { application } => app(p, application, AppState::UnderReview, ""),
                A::Return {
                    application,
                    reason,
                } => app(p, application, AppState::Returned, &reason),
                A::Resubmit { application } => app(p, application, AppState::Submitted, ""),
                A::Withdraw {
                    application,
                    reason,
                } => app(p, application, AppState::Withdrawn, &reason),
                A::Dispute {
                    application,
                    reason,
                } => app(p, application, AppState::Disputed, &reason),
                A::HandBack {
                    application,
                    reason,
                } => app(p, application, AppState::UnderReview, &reason),
                A::Decide {
                    application,
                    decision,
                } => p
                    .decide_application(application, &decision, by, now)
                    .map(WorkflowOutcome::Approval),
                A::Escalate => {
                    let (applications, objections) = p.escalate_overdue(by, now)?;
                    Ok(WorkflowOutcome::Escalated {
                        applications,
                        objections,
                    })
                }
                A::FileObjection {
                    dataset,
                    key,
                    field,
                    description,
                    discovered_on,
                } => p
                    .file_objection(
                        c,
                        &calendar,
                        by,
                        &dataset,
                        &key,
                        &field,
                        &description,
                        discovered_on,
                        now,
                    )
                    .map(WorkflowOutcome::Objection),
                A::RequestExtension {
                    objection,
                    days,
                    reason,
                } => obj(
                    p,
                    objection,
                    ObjectionState::ExtensionRequested,
                    &reason,
                    Some(days),
                    None,
                ),
                A::SignOffExtension { objection, reason } => {
                    obj(p, objection, ObjectionState::Extended, &reason, None, None)
                }
                A::Confirm { objection, reason } => {
                    obj(p, objection, ObjectionState::Confirmed, &reason, None, None)
                }
                A::Correct {
                    objection,
                    version,
                    reason,
                } => obj(
                    p,
                    objection,
                    ObjectionState::Corrected,
                    &reason,
                    None,
                    Some(version),
                ),
                A::MakeAgreement {
                    consumer_dept,
                    title,
                    grants,
                    until,
                } => p
                    .make_agreement(by, &consumer_dept, &title, grants, until, now)
                    .map(WorkflowOutcome::Agreement),
                A::RenewAgreement { agreement, until } => p
                    .renew_agreement(agreement, by, until, now)
                    .map(WorkflowOutcome::Agreement),
                A::RevokeAgreement { agreement, reason } => p
                    .revoke_agreement(agreement, by, &reason, now)
                    .map(WorkflowOutcome::Agreement),
                A::CloseReclassification { request, outcome } => p
                    .close_reclassification(request, by, &outcome, now)
                    .map(WorkflowOutcome::Reclassification),
                A::ResolveConflict {
                    conflict,
                    correction_version,
                    reason,
                } => p
                    .resolve_conflict(&conflict, by, correction_version, &reason, now)
                    .map(WorkflowOutcome::Resolution),
                A::AddCalendarYears { .. } => Err(Error::internal("handled above")),
            }
        })
    }

    /// The service catalog as `by` (any active user) may apply against it: every active
    /// dataset with its provider, current version and last update, declared frequency, the
    /// modes, deadlines and requirements, and each shareable item with its share type, source
    /// and what `by`'s department holds of it now. The reading is recorded.
    pub fn service_catalog(&self, by: &str) -> Result<Vec<ServiceEntry>> {
        let outcome = (|| {
            let store = self.store();
            let policy = store.policy()?;
            let (_, dept) = policy.active(by)?;
            let catalog = store.catalog()?;
            let now = self.now();
            let mut out = Vec::new();
            for def in catalog.datasets.values() {
                if def.status != Status::Active {
                    continue;
                }
                let version = store.current_version(&def.name)?;
                let last_update = if version > 0 {
                    Some(store.snapshot_at(&def.name, version)?.manifest().created_at)
                } else {
                    None
                };
                let held = |field: &str| {
                    policy
                        .grants
                        .values()
                        .rev()
                        .filter(|g| {
                            let r = &g.request;
                            g.revoked.is_none()
                                && r.consumer_dept == dept.code
                                && r.dataset == def.name
                                && r.valid_from <= now
                                && now < r.valid_until
                        })
                        .find_map(|g| {
                            g.request
                                .fields
                                .iter()
                                .find(|f| f.field == field)
                                .map(|f| f.treatment)
                        })
                };
                out.push(ServiceEntry {
                    dataset: def.name.clone(),
                    label: def.label.clone(),
                    description: def.description.clone(),
                    provider: def.provider.clone(),
                    version,
                    last_update,
                    update_frequency: def.update_frequency.clone(),
                    status: def.status,
                    modes: SERVED_MODES.to_vec(),
                    approval_days: def.approval_days(),
                    objection_days: def.objection_days(),
                    requirements: vec![
                        "purpose code and purpose in words (000 §20)",
                        "use objects: the users, and the rows (regions or subjects)",
                        "service modes and the period of use",
                        "the legal basis of the need",
                    ],
                    items: def
                        .fields
                        .iter()
                        .filter(|f| f.status == Status::Active)
                        .map(|f| ServiceItem {
                            name: f.name.clone(),
                            label: f.label.clone(),
                            share: f.share,
                            grade: f.grade,
                            requirement: how_to_obtain(f.share),
                            source: def.source_of(f).to_string(),
                            held: held(&f.name),
                        })
                        .collect(),
                });
            }
            Ok(out)
        })();
        self.record_read(
            "service_catalog_read",
            by,
            serde_json::json!({}),
            outcome.as_ref(),
        )?;
        outcome
    }

    /// Conflicts between sources recorded by loads of `dataset` (every dataset when `None`),
    /// with their resolutions — for `by` an approver of the authoritative source (their own
    /// conflicts), a coordinator or an auditor. The reading is recorded.
    pub fn conflicts(&self, by: &str, dataset: Option<&str>) -> Result<Vec<ConflictEntry>> {
        let outcome = (|| {
            let store = self.store();
            let policy = store.policy()?;
            let (u, _) = policy.active(by)?;
            let all = u.roles.contains(&Role::Coordinator) || u.roles.contains(&Role::Auditor);
            if !all {
                policy.require(by, Role::ProviderApprover, "list conflicts between sources")?;
            }
            let catalog = store.catalog()?;
            let mut out = Vec::new();
            for name in catalog.datasets.keys() {
                if dataset.is_some_and(|d| d != name) {
                    continue;
                }
                for m in store.versions(name)? {
                    for (i, c) in m.conflicts.iter().enumerate() {
                        if !all && c.authority != u.department {
                            continue;
                        }
                        let id = conflict_id(name, m.version, i);
                        out.push(ConflictEntry {
                            resolution: policy.resolutions.get(&id).cloned(),
                            id,
                            dataset: name.clone(),
                            version: m.version,
                            conflict: c.clone(),
                        });
                    }
                }
            }
            Ok(out)
        })();
        self.record_read(
            "conflicts_read",
            by,
            serde_json::json!({ "dataset": dataset }),
            outcome.as_ref(),
        )?;
        outcome
    }
}
