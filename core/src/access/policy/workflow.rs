//! The sharing workflows of the regulations, as records in the policy document: applications
//! (申请 → 完整性审核 → 提供部门审核, within working days, escalation, disputes),
//! objections on data (疑义/纠错, with one extension signed off), agreements for long-term needs
//! (共享协议), requests to reclassify not-shared items, and resolutions of conflicts between
//! sources (一数一源).
//!
//! The methods here only *build* the edited document — the next state, the deadline, the grant
//! an approval makes. Whether the author may make that edit is decided in one place,
//! [`Policy::authorize_change`], by comparing the document before and after: every transition
//! is checked against the table of who may move a record from which state to which (with the
//! separation of duties, the mandatory reasons and the deadlines), whatever code made it.
//! Every transition is kept in the record's history (who, when, why) and the commit of each
//! policy version is on the audit trail.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::access::masks::at_least;
use crate::calendar::{WorkCalendar, beijing_date};
use crate::catalog::{Catalog, DatasetDef, ShareType};
use crate::error::{Error, Result};
use crate::store::Store;

use super::{
    Approval, FieldGrant, Grant, GrantRequest, Origin, Policy, Role, RowScope, Treatment, denied,
};

/// One step of a record's life: the state it entered, who moved it, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition<S> {
    /// The state entered.
    pub to: S,
    /// Who made the step.
    pub by: String,
    /// When (the engine's clock).
    pub at: DateTime<Utc>,
    /// Why (mandatory where the table says so: returns, rejections, disputes, extensions).
    pub reason: String,
}

/// Where an application stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppState {
    /// Filed; waiting for the platform administrator's completeness check.
    Submitted,
    /// Returned to the applicant as incomplete (with the reason); the applicant resubmits.
    Returned,
    /// Complete; with the providing department's approvers, due by the deadline.
    UnderReview,
    /// Overdue at the provider: the coordinator decides (or hands it back with a new deadline).
    Escalated,
    /// Approved (possibly narrower than asked): a grant was made.
    Approved,
    /// Rejected with a reason.
    Rejected,
    /// The applicant disputes a rejection: the coordinator decides.
    Disputed,
    /// Withdrawn by the applicant.
    Withdrawn,
    /// Only unconditional items were asked: granted at once, nothing to approve.
    Granted,
    /// Only not-shared items were asked: referred to the coordinator as a reclassification
    /// request, nothing to approve.
    Referred,
}

impl AppState {
    /// Whether the application still waits for someone.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            AppState::Submitted
                | AppState::Returned
                | AppState::UnderReview
                | AppState::Escalated
                | AppState::Disputed
        )
    }

    /// The state's name as records and the command line spell it.
    pub fn label(self) -> &'static str {
        match self {
            AppState::Submitted => "submitted",
            AppState::Returned => "returned",
            AppState::UnderReview => "under_review",
            AppState::Escalated => "escalated",
            AppState::Approved => "approved",
            AppState::Rejected => "rejected",
            AppState::Disputed => "disputed",
            AppState::Withdrawn => "withdrawn",
            AppState::Granted => "granted",
            AppState::Referred => "referred",
        }
    }
}

/// An application for data (000 §20, 001 §15, 002 §21, 004 §11): items, purpose, use objects
/// and row scope, modes, duration, legal basis — and its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Id.
    pub id: u64,
    /// The consumer who filed it.
    pub applicant: String,
    /// What is asked: items (of any share type), purpose code and text, use objects (users)
    /// and row scope, modes, validity.
    pub request: GrantRequest,
    /// The legal basis (法律依据) of the need.
    pub legal_basis: String,
    /// The Beijing date it was filed (the day received, which a deadline does not count).
    pub received: NaiveDate,
    /// Where it stands.
    pub state: AppState,
    /// The deadline of the current stage (the provider's, from the completeness check).
    pub due: Option<NaiveDate>,
    /// The grant of its unconditional items, made at once.
    pub immediate_grant: Option<u64>,
    /// The reclassification request its not-shared items became.
    pub reclassification: Option<u64>,
    /// The latest decision on its conditional items.
    pub approval: Option<u64>,
    /// Every transition, oldest first.
    pub history: Vec<Transition<AppState>>,
}

/// Where an objection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectionState {
    /// Filed; the provider must answer by the deadline.
    Open,
    /// The provider asked for more time; another approver of the provider must sign it off.
    ExtensionRequested,
    /// Extended once (at most 10 working days), signed off.
    Extended,
    /// Overdue: surfaced to the coordinator.
    Escalated,
    /// Answered: the data is right, with the reason.
    Confirmed,
    /// Answered: corrected by a data version that references the objection.
    Corrected,
}

impl ObjectionState {
    /// Whether the objection still waits for an answer.
    pub fn is_open(self) -> bool {
        !matches!(self, ObjectionState::Confirmed | ObjectionState::Corrected)
    }

    /// The state's name.
    pub fn label(self) -> &'static str {
        match self {
            ObjectionState::Open => "open",
            ObjectionState::ExtensionRequested => "extension_requested",
            ObjectionState::Extended => "extended",
            ObjectionState::Escalated => "escalated",
            ObjectionState::Confirmed => "confirmed",
            ObjectionState::Corrected => "corrected",
        }
    }
}

/// An objection (疑义/纠错) a consumer files on one field of one subject (000 §21(4), §22(3);
/// 001 §13). The value itself is never part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objection {
    /// Id.
    pub id: u64,
    /// The consumer who filed it.
    pub filed_by: String,
    /// Their department.
    pub department: String,
    /// Dataset.
    pub dataset: String,
    /// The subject's key.
    pub key: String,
    /// The field.
    pub field: String,
    /// What is wrong, in words (no data values).
    pub description: String,
    /// When the consumer found it.
    pub discovered_on: NaiveDate,
    /// When it was filed (Beijing date).
    pub filed_on: NaiveDate,
    /// Filed later than 3 working days after discovery (000 §22(3)).
    pub filed_late: bool,
    /// The department that must answer: the field's authoritative source.
    pub provider: String,
    /// Where it stands.
    pub state: ObjectionState,
    /// The answer's deadline.
    pub due: NaiveDate,
    /// Working days of the one extension, once asked.
    pub extension_days: Option<u32>,
    /// The data version that corrected it.
    pub correction_version: Option<u64>,
    /// Every transition, oldest first.
    pub history: Vec<Transition<ObjectionState>>,
}

/// Working days a consumer has to report an error it found (000 §22(3)).
pub const REPORT_DAYS: u32 = 3;
/// The longest extension of an objection's deadline (001 §13).
pub const MAX_EXTENSION_DAYS: u32 = 10;

/// A renewal of an agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    /// Who renewed it.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The new end of the term.
    pub until: DateTime<Utc>,
    /// The grants it made (one per grant of the previous term).
    pub grants: Vec<u64>,
}

/// A sharing agreement for a long-term, stable need (004 §12): grants of one provider to one
/// consumer department under one term, renewed before it ends, revoked together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// Id.
    pub id: u64,
    /// The providing department.
    pub provider: String,
    /// The consumer department.
    pub consumer_dept: String,
    /// What it is for.
    pub title: String,
    /// The grants of the current term.
    pub grants: Vec<u64>,
    /// End of the current term (exclusive); the grants end with it.
    pub until: DateTime<Utc>,
    /// The provider's approver who made it.
    pub made_by: String,
    /// When.
    pub made_at: DateTime<Utc>,
    /// Renewals, oldest first.
    pub renewals: Vec<Renewal>,
    /// Revocation: (by, at, reason).
    pub revoked: Option<(String, DateTime<Utc>, String)>,
}

/// A request to reclassify not-shared items, from an application, for the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reclassification {
    /// Id.
    pub id: u64,
    /// The application it came from.
    pub application: u64,
    /// Dataset.
    pub dataset: String,
    /// The not-shared items asked for.
    pub fields: Vec<String>,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// The coordinator's closing: (by, at, outcome in words).
    pub closed: Option<(String, DateTime<Utc>, String)>,
}

/// The authoritative source's resolution of a conflict between sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// Who resolved it (an approver of the authoritative department).
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The authoritative department's later version that corrected its value, if it did; none
    /// when its value stands.
    pub correction_version: Option<u64>,
    /// Why.
    pub reason: String,
}

/// What a committed data version says about the workflows: its source, the objections it
/// corrects and the conflicts it recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionFacts {
    /// The department that delivered it.
    pub provider: String,
    /// Objections it corrects.
    pub corrects: Vec<u64>,
    /// Conflict ids it recorded (`dataset:version:n`).
    pub conflicts: Vec<(String, crate::store::Conflict)>,
}

/// What the store knows that a workflow edit is checked against: the calendar in force and
/// the data versions (per dataset, by version).
#[derive(Debug, Clone)]
pub struct Facts {
    /// The working-day calendar.
    pub calendar: WorkCalendar,
    /// Dataset → version → what it says.
    pub versions: BTreeMap<String, BTreeMap<u64, VersionFacts>>,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            calendar: WorkCalendar::builtin(),
            versions: BTreeMap::new(),
        }
    }
}

impl Facts {
    /// The calendar of `store`, and its data versions when `with_versions`.
    pub fn of(store: &Store, with_versions: bool) -> Result<Facts> {
        let mut versions = BTreeMap::new();
        if with_versions {
            for name in store.catalog()?.datasets.keys() {
                let mut vs = BTreeMap::new();
                for m in store.versions(name)? {
                    vs.insert(
                        m.version,
                        VersionFacts {
                            provider: m.handover.provider_dept.clone(),
                            corrects: m.handover.corrects.clone(),
                            conflicts: m
                                .conflicts
                                .iter()
                                .enumerate()
                                .map(|(i, c)| (conflict_id(name, m.version, i), c.clone()))
                                .collect(),
                        },
                    );
                }
                versions.insert(name.clone(), vs);
            }
        }
        Ok(Facts {
            calendar: store.calendar()?,
            versions,
        })
    }

    fn conflict(&self, id: &str) -> Option<&crate::store::Conflict> {
        self.versions
            .values()
            .flat_map(|vs| vs.values())
            .flat_map(|v| v.conflicts.iter())
            .find(|(cid, _)| cid == id)
            .map(|(_, c)| c)
    }
}

/// The id of the `n`-th conflict recorded by `version` of `dataset`.
pub fn conflict_id(dataset: &str, version: u64, n: usize) -> String {
    format!("{dataset}:{version}:{n}")
}

/// What an applicant files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationForm {
    /// Dataset, items (any share type, with the treatment asked), purpose, use objects
    /// (users), row scope, modes and validity.
    pub request: GrantRequest,
    /// Legal basis.
    pub legal_basis: String,
}

/// A provider's (or, on escalation and dispute, the coordinator's) decision on an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppDecision {
    /// Approve or reject.
    pub approve: bool,
    /// Why (mandatory for a rejection).
    #[serde(default)]
    pub reason: String,
    /// Approve narrower: these conditional items only, with these treatments (at least as
    /// strong as asked); `None` approves the conditional items as asked.
    #[serde(default)]
    pub fields: Option<Vec<FieldGrant>>,
    /// Approve a smaller row scope.
    #[serde(default)]
    pub scope: Option<RowScope>,
    /// Approve a shorter validity (end, exclusive).
    #[serde(default)]
    pub valid_until: Option<DateTime<Utc>>,
}

/// The items of a request split by share type, in the catalog's terms.
fn split(def: &DatasetDef, fields: &[FieldGrant]) -> Result<[Vec<FieldGrant>; 3]> {
    let mut out: [Vec<FieldGrant>; 3] = Default::default();
    for fg in fields {
        let f = def.require_field(&fg.field)?;
        let i = match f.share {
            ShareType::Unconditional => 0,
            ShareType::Conditional => 1,
            ShareType::NotShared => 2,
        };
        out[i].push(fg.clone());
    }
    Ok(out)
}

/// The unconditional items as granted at once: at least the catalog's default mask.
fn immediate_fields(def: &DatasetDef, asked: &[FieldGrant]) -> Result<Vec<FieldGrant>> {
    asked
        .iter()
        .map(|fg| {
            let f = def.require_field(&fg.field)?;
            let m = fg.treatment.mask();
            let m = if at_least(m, f.mask) { m } else { f.mask };
            Ok(FieldGrant {
                field: fg.field.clone(),
                treatment: Treatment::of(m),
            })
        })
        .collect()
}

fn step<S>(to: S, by: &str, now: DateTime<Utc>, reason: &str) -> Transition<S> {
    Transition {
        to,
        by: by.into(),
        at: now,
        reason: reason.into(),
    }
}

impl Policy {
    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// File an application as consumer `by`. Unconditional items are granted at once (at
    /// least the catalog's default masks); not-shared items become a reclassification request
    /// for the coordinator; conditional items wait for the platform administrator's
    /// completeness check.
    pub fn apply(
        &mut self,
        catalog: &Catalog,
        form: ApplicationForm,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Application> {
        let r = &form.request;
        let def = catalog.dataset(&r.dataset)?;
        if r.fields.is_empty() {
            return Err(Error::invalid("an application needs at least one item"));
        }
        let [uncond, cond, not_shared] = split(def, &r.fields)?;
        let id = self.take_id();
        let immediate_grant = if uncond.is_empty() {
            None
        } else {
            let mut g = r.clone();
            g.fields = immediate_fields(def, &uncond)?;
            Some(self.insert_grant(g, Origin::Application(id), by, now).id)
        };
        let reclassification = if not_shared.is_empty() {
            None
        } else {
            let rid = self.take_id();
            self.reclassifications.insert(
                rid,
                Reclassification {
                    id: rid,
                    application: id,
                    dataset: r.dataset.clone(),
                    fields: not_shared.iter().map(|f| f.field.clone()).collect(),
                    requested_by: by.into(),
                    requested_at: now,
                    closed: None,
                },
            );
            Some(rid)
        };
        let state = if !cond.is_empty() {
            AppState::Submitted
        } else if !uncond.is_empty() {
            AppState::Granted
        } else {
            AppState::Referred
        };
        let app = Application {
            id,
            applicant: by.into(),
            request: form.request,
            legal_basis: form.legal_basis,
            received: beijing_date(now),
            state,
            due: None,
            immediate_grant,
            reclassification,
            approval: None,
            history: vec![step(state, by, now, "")],
        };
        self.applications.insert(id, app.clone());
        Ok(app)
    }

    fn application_mut(&mut self, id: u64) -> Result<&mut Application> {
        self.applications
            .get_mut(&id)
            .ok_or_else(|| Error::NotFound(format!("application {id}")))
    }

    /// Move application `id` to `to` as `by`; moving to under review sets the provider's
    /// deadline. The move is checked by [`Policy::authorize_change`].
    #[allow(clippy::too_many_arguments)]
    pub fn move_application(
        &mut self,
        catalog: &Catalog,
        calendar: &WorkCalendar,
        id: u64,
        to: AppState,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Application> {
        let a = self.application_mut(id)?;
        if matches!(to, AppState::Approved | AppState::Rejected) {
            return Err(Error::invalid(
                "approve or reject an application by deciding it (decide_application)",
            ));
        }
        if to == AppState::UnderReview {
            let days = catalog.dataset(&a.request.dataset)?.approval_days();
            a.due = Some(calendar.add_working_days(beijing_date(now), days)?);
        }
        a.state = to;
        a.history.push(step(to, by, now, reason));
        Ok(a.clone())
    }

    /// Decide application `id` as `by` (the provider's approver while it is under review; the
    /// coordinator when it is escalated or disputed): approve — possibly narrower — making a
    /// grant of the conditional items, or reject with a reason.
    pub fn decide_application(
        &mut self,
        id: u64,
        d: &AppDecision,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Approval> {
        let app = self
            .applications
            .get(&id)
            .ok_or_else(|| Error::NotFound(format!("application {id}")))?
            .clone();
        let mut r = app.request.clone();
        r.fields = self.decided_items(&app);
        if let Some(fs) = &d.fields {
            r.fields = fs.clone();
        }
        if let Some(s) = &d.scope {
            r.scope = s.clone();
        }
        if let Some(u) = d.valid_until {
            r.valid_until = u;
        }
        let aid = self.take_id();
        let grant = d.approve.then(|| {
            self.insert_grant(r.clone(), Origin::Approval(aid), by, now)
                .id
        });
        let ap = Approval {
            id: aid,
            request: r,
            approver: by.into(),
            approved: d.approve,
            reason: d.reason.clone(),
            decided_at: now,
            grant,
            application: Some(id),
        };
        self.approvals.insert(aid, ap.clone());
        let to = if d.approve {
            AppState::Approved
        } else {
            AppState::Rejected
        };
        let a = self.application_mut(id)?;
        a.state = to;
        a.approval = Some(aid);
        a.history.push(step(to, by, now, &d.reason));
        Ok(ap)
    }

    /// Escalate every application and objection overdue at `now` to the coordinator, as `by`
    /// (a coordinator or platform administrator); returns the ids escalated.
    pub fn escalate_overdue(
        &mut self,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<(Vec<u64>, Vec<u64>)> {
        let (u, _) = self.active_user(by)?;
        if !u.roles.contains(&Role::Coordinator) && !u.roles.contains(&Role::PlatformAdmin) {
            return Err(denied(format!(
                "user '{by}' may not escalate overdue applications and objections: that needs the coordinator or platform-admin role"
            )));
        }
        let today = beijing_date(now);
        let mut apps = Vec::new();
        for a in self.applications.values_mut() {
            if a.state == AppState::UnderReview && a.due.is_some_and(|d| today > d) {
                let why = format!(
                    "overdue: the provider's deadline was {}",
                    a.due.unwrap_or_default()
                );
                a.state = AppState::Escalated;
                a.history.push(step(AppState::Escalated, by, now, &why));
                apps.push(a.id);
            }
        }
        let mut objs = Vec::new();
        for o in self.objections.values_mut() {
            let waiting = matches!(
                o.state,
                ObjectionState::Open
                    | ObjectionState::ExtensionRequested
                    | ObjectionState::Extended
            );
            if waiting && today > o.due {
                let why = format!("overdue: the answer was due {}", o.due);
                o.state = ObjectionState::Escalated;
                o.history
                    .push(step(ObjectionState::Escalated, by, now, &why));
                objs.push(o.id);
            }
        }
        Ok((apps, objs))
    }

    /// File an objection on `dataset.field` of the subject `key`, as consumer `by`, who found
    /// the problem on `discovered_on`. The provider (the field's authoritative source) must
    /// answer within the dataset's objection deadline.
    #[allow(clippy::too_many_arguments)]
    pub fn file_objection(
        &mut self,
        catalog: &Catalog,
        calendar: &WorkCalendar,
        by: &str,
        dataset: &str,
        key: &str,
        field: &str,
        description: &str,
        discovered_on: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<Objection> {
        let def = catalog.dataset(dataset)?;
        let f = def.require_field(field)?;
        let department = self
            .users
            .get(by)
            .map(|u| u.department.clone())
            .unwrap_or_default();
        let today = beijing_date(now);
        let id = self.take_id();
        let o = Objection {
            id,
            filed_by: by.into(),
            department,
            dataset: dataset.into(),
            key: key.into(),
            field: field.into(),
            description: description.into(),
            discovered_on,
            filed_on: today,
            filed_late: today > calendar.add_working_days(discovered_on, REPORT_DAYS)?,
            provider: def.source_of(f).to_string(),
            state: ObjectionState::Open,
            due: calendar.add_working_days(today, def.objection_days())?,
            extension_days: None,
            correction_version: None,
            history: vec![step(ObjectionState::Open, by, now, description)],
        };
        self.objections.insert(id, o.clone());
        Ok(o)
    }

    /// Move objection `id` as `by`: ask for the one extension (`days`), sign it off (moving the
    /// deadline), or answer it — confirmed, or corrected by data version `correction`.
    #[allow(clippy::too_many_arguments)]
    pub fn move_objection(
        &mut self,
        calendar: &WorkCalendar,
        id: u64,
        to: ObjectionState,
        by: &str,
        reason: &str,
        days: Option<u32>,
        correction: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<Objection> {
        let o = self
            .objections
            .get_mut(&id)
            .ok_or_else(|| Error::NotFound(format!("objection {id}")))?;
        match to {
            ObjectionState::ExtensionRequested => {
                o.extension_days = Some(days.ok_or_else(|| {
                    Error::invalid("an extension names its length in working days")
                })?);
            }
            ObjectionState::Extended => {
                let days = o
                    .extension_days
                    .ok_or_else(|| Error::invalid("no extension was asked for"))?;
                o.due = calendar.add_working_days(o.due, days)?;
            }
            ObjectionState::Corrected => {
                o.correction_version = Some(correction.ok_or_else(|| {
                    Error::invalid("a correction names the data version that made it")
                })?);
            }
            _ => {}
        }
        o.state = to;
        o.history.push(step(to, by, now, reason));
        Ok(o.clone())
    }

    /// Make an agreement as the provider's approver `by`: `grants` (valid grants of the
    /// provider's datasets to `consumer_dept`, each ending at `until`) under one term.
    pub fn make_agreement(
        &mut self,
        by: &str,
        consumer_dept: &str,
        title: &str,
        grants: Vec<u64>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Agreement> {
        let provider = self
            .users
            .get(by)
            .map(|u| u.department.clone())
            .unwrap_or_default();
        let id = self.take_id();
        let a = Agreement {
            id,
            provider,
            consumer_dept: consumer_dept.into(),
            title: title.into(),
            grants,
            until,
            made_by: by.into(),
            made_at: now,
            renewals: Vec::new(),
            revoked: None,
        };
        self.agreements.insert(id, a.clone());
        Ok(a)
    }

    /// Renew agreement `id` before it ends, to `until`: each grant of the current term gets a
    /// successor from the old end to the new one.
    pub fn renew_agreement(
        &mut self,
        id: u64,
        by: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Agreement> {
        let a = self
            .agreements
            .get(&id)
            .ok_or_else(|| Error::NotFound(format!("agreement {id}")))?
            .clone();
        let mut made = Vec::new();
        for gid in &a.grants {
            let g = self
                .grants
                .get(gid)
                .ok_or_else(|| Error::NotFound(format!("grant {gid}")))?;
            if g.revoked.is_some() {
                continue;
            }
            let mut r = g.request.clone();
            r.valid_from = g.request.valid_until;
            r.valid_until = until;
            made.push(
                self.insert_grant(
                    r,
                    Origin::Renewal {
                        agreement: id,
                        of: *gid,
                    },
                    by,
                    now,
                )
                .id,
            );
        }
        let a = self
            .agreements
            .get_mut(&id)
            .ok_or_else(|| Error::NotFound(format!("agreement {id}")))?;
        a.renewals.push(Renewal {
            by: by.into(),
            at: now,
            until,
            grants: made.clone(),
        });
        a.grants = made;
        a.until = until;
        Ok(a.clone())
    }

    /// Revoke agreement `id` and every grant of its current term.
    pub fn revoke_agreement(
        &mut self,
        id: u64,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Agreement> {
        let a = self
            .agreements
            .get_mut(&id)
            .ok_or_else(|| Error::NotFound(format!("agreement {id}")))?;
        a.revoked = Some((by.into(), now, reason.into()));
        let a = a.clone();
        for gid in &a.grants {
            if self.grants.get(gid).is_some_and(|g| g.revoked.is_none()) {
                self.revoke(*gid, by, reason, now)?;
            }
        }
        Ok(a)
    }

    /// Close a reclassification request as the coordinator, saying what was done.
    pub fn close_reclassification(
        &mut self,
        id: u64,
        by: &str,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> Result<Reclassification> {
        let r = self
            .reclassifications
            .get_mut(&id)
            .ok_or_else(|| Error::NotFound(format!("reclassification request {id}")))?;
        r.closed = Some((by.into(), now, outcome.into()));
        Ok(r.clone())
    }

    /// Resolve conflict `id` (see [`conflict_id`]) as an approver of the authoritative source.
    pub fn resolve_conflict(
        &mut self,
        id: &str,
        by: &str,
        correction_version: Option<u64>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Resolution> {
        let r = Resolution {
            by: by.into(),
            at: now,
            correction_version,
            reason: reason.into(),
        };
        self.resolutions.insert(id.to_string(), r.clone());
        Ok(r)
    }

    /// The items of application `app` that wait for a decision: the conditional ones as
    /// applied for — not those its immediate grant holds, nor those referred to the
    /// coordinator (the split is read from those records, so no catalog is needed).
    fn decided_items(&self, app: &Application) -> Vec<FieldGrant> {
        let immediate = app.immediate_grant.and_then(|g| self.grants.get(&g));
        let referred = app
            .reclassification
            .and_then(|x| self.reclassifications.get(&x));
        app.request
            .fields
            .iter()
            .filter(|f| {
                !immediate.is_some_and(|g| g.request.fields.iter().any(|x| x.field == f.field))
                    && !referred.is_some_and(|x| x.fields.contains(&f.field))
            })
            .cloned()
            .collect()
    }

    /// Whether grant `g` holds only what an on-request grant may (it was made on request or
    /// at once for an application, or renews such a grant).
    pub(crate) fn on_request(&self, g: &Grant) -> bool {
        let mut g = g;
        for _ in 0..=self.grants.len() {
            match g.origin {
                Origin::Request | Origin::Application(_) => return true,
                Origin::Approval(_) => return false,
                Origin::Renewal { of, .. } => match self.grants.get(&of) {
                    Some(p) => g = p,
                    None => return true,
                },
            }
        }
        true
    }
}

// ---- the checks, by effect ----------------------------------------------------------------

fn reason_needed(reason: &str, what: &str) -> Result<()> {
    if reason.trim().is_empty() {
        return Err(Error::invalid(format!("{what} must give its reason")));
    }
    Ok(())
}

/// Whether `narrow` asks no more than `wide`: fewer or equal items (each at least as hidden),
/// users within, rows within, modes within, validity within.
fn check_narrower(narrow: &GrantRequest, wide: &GrantRequest, items: &[FieldGrant]) -> Result<()> {
    let bad = |m: &str| {
        Err(denied(format!(
            "an approval can only narrow the application: {m}"
        )))
    };
    if narrow.consumer_dept != wide.consumer_dept
        || narrow.dataset != wide.dataset
        || narrow.purpose_code != wide.purpose_code
        || narrow.purpose_text != wide.purpose_text
    {
        return bad("the consumer, dataset and purpose stay as applied for");
    }
    for f in &narrow.fields {
        match items.iter().find(|w| w.field == f.field) {
            None => {
                return bad(&format!(
                    "{} is not a conditional item of the application",
                    f.field
                ));
            }
            Some(w) if !at_least(f.treatment.mask(), w.treatment.mask()) => {
                return bad(&format!("{} would be shown more than asked", f.field));
            }
            _ => {}
        }
    }
    if !wide.users.is_empty()
        && (narrow.users.is_empty() || narrow.users.iter().any(|u| !wide.users.contains(u)))
    {
        return bad("users outside those applied for");
    }
    if narrow.modes.iter().any(|m| !wide.modes.contains(m)) {
        return bad("service modes not applied for");
    }
    if narrow.valid_from < wide.valid_from || narrow.valid_until > wide.valid_until {
        return bad("validity beyond what was applied for");
    }
    let within_regions = match (&wide.scope.regions, &narrow.scope.regions) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(w), Some(n)) => n.iter().all(|code| {
            let p = crate::regions::region_prefix(code).unwrap_or(code);
            w.iter()
                .any(|wc| crate::regions::region_prefix(wc).is_ok_and(|wp| p.starts_with(wp)))
        }),
    };
    let within_subjects = match (&wide.scope.subjects, &narrow.scope.subjects) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(w), Some(n)) => n.iter().all(|k| w.contains(k)),
    };
    if !within_regions || !within_subjects {
        return bad("rows outside the scope applied for");
    }
    Ok(())
}

impl Policy {
    /// The workflow part of [`Policy::authorize_change`]: applications, objections,
    /// agreements, reclassification requests and conflict resolutions.
    pub(super) fn check_workflows(
        &self,
        after: &Policy,
        author: &str,
        catalog: &Catalog,
        facts: &Facts,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let never_removed =
            |what: &str, id: &str| denied(format!("{what} {id} is a record: it is never removed"));
        for id in self.applications.keys() {
            if !after.applications.contains_key(id) {
                return Err(never_removed("application", &id.to_string()));
            }
        }
        for (id, a) in &after.applications {
            match self.applications.get(id) {
                None => self.check_new_application(after, a, author, catalog)?,
                Some(b) if b == a => {}
                Some(b) => self.check_application_step(after, b, a, author, catalog, facts, now)?,
            }
        }
        for id in self.objections.keys() {
            if !after.objections.contains_key(id) {
                return Err(never_removed("objection", &id.to_string()));
            }
        }
        for (id, o) in &after.objections {
            match self.objections.get(id) {
                None => self.check_new_objection(o, author, catalog, facts, now)?,
                Some(b) if b == o => {}
                Some(b) => self.check_objection_step(b, o, author, facts, now)?,
            }
        }
        for (id, r) in &self.reclassifications {
            match after.reclassifications.get(id) {
                None => return Err(never_removed("reclassification request", &id.to_string())),
                Some(n) if n == r => {}
                Some(n) => {
                    let mut open = n.clone();
                    open.closed = None;
                    let Some((by, _, outcome)) = &n.closed else {
                        return Err(denied("a closed reclassification request stays closed"));
                    };
                    if r.closed.is_some() || open != *r || by != author {
                        return Err(denied(format!(
                            "reclassification request {id} can only be closed, once, by its closer"
                        )));
                    }
                    self.require(author, Role::Coordinator, "close reclassification requests")?;
                    reason_needed(outcome, "closing a reclassification request")?;
                }
            }
        }
        for (id, r) in &after.reclassifications {
            if !self.reclassifications.contains_key(id) {
                let backed = after.applications.get(&r.application).is_some_and(|a| {
                    !self.applications.contains_key(&a.id) && a.reclassification == Some(*id)
                });
                if !backed || r.closed.is_some() {
                    return Err(denied(format!(
                        "reclassification request {id} is made only by filing an application"
                    )));
                }
            }
        }
        for (id, r) in &self.resolutions {
            if after.resolutions.get(id) != Some(r) {
                return Err(never_removed("the resolution of conflict", id));
            }
        }
        for (id, r) in &after.resolutions {
            if !self.resolutions.contains_key(id) {
                self.check_resolution(id, r, author, facts)?;
            }
        }
        for (id, a) in &self.agreements {
            match after.agreements.get(id) {
                None => return Err(never_removed("agreement", &id.to_string())),
                Some(n) if n == a => {}
                Some(n) => self.check_agreement_step(after, a, n, author, now)?,
            }
        }
        for (id, a) in &after.agreements {
            if !self.agreements.contains_key(id) {
                self.check_new_agreement(a, author, catalog, now)?;
            }
        }
        Ok(())
    }

    fn check_new_application(
        &self,
        after: &Policy,
        a: &Application,
        author: &str,
        catalog: &Catalog,
    ) -> Result<()> {
        let me = self.require(author, Role::Consumer, "apply for data")?;
        let r = &a.request;
        if a.applicant != author || a.history.len() != 1 || a.history[0].by != author {
            return Err(denied(format!(
                "application {} names '{}' as its applicant, but '{author}' is filing it",
                a.id, a.applicant
            )));
        }
        if me.department != r.consumer_dept {
            return Err(denied(format!(
                "user '{author}' of department '{}' may only apply for their own department, not '{}'",
                me.department, r.consumer_dept
            )));
        }
        if a.legal_basis.trim().is_empty() {
            return Err(Error::invalid(
                "an application states its legal basis (the law or duty that needs the data)",
            ));
        }
        let def = catalog.dataset(&r.dataset)?;
        let [uncond, cond, not_shared] = split(def, &r.fields)?;
        // Everything but the not-shared items must make a valid grant request.
        let mut shareable = r.clone();
        shareable.fields = uncond.iter().chain(&cond).cloned().collect();
        if !shareable.fields.is_empty() {
            after.check_request(catalog, &shareable)?;
        }
        let expected = if !cond.is_empty() {
            AppState::Submitted
        } else if !uncond.is_empty() {
            AppState::Granted
        } else {
            AppState::Referred
        };
        if a.state != expected
            || a.history[0].to != expected
            || a.due.is_some()
            || a.approval.is_some()
        {
            return Err(denied(format!(
                "a new application starts as {} (its items decide), nothing decided",
                expected.label()
            )));
        }
        match (a.immediate_grant, uncond.is_empty()) {
            (None, true) => {}
            (Some(gid), false) => {
                let ok = after.grants.get(&gid).is_some_and(|g| {
                    let mut want = r.clone();
                    want.fields = immediate_fields(def, &uncond).unwrap_or_default();
                    g.origin == Origin::Application(a.id)
                        && g.request == want
                        && g.created_by == author
                });
                if !ok {
                    return Err(denied(format!(
                        "application {}: its immediate grant holds exactly its unconditional items at no less than the default masks",
                        a.id
                    )));
                }
            }
            _ => {
                return Err(denied(format!(
                    "application {}: unconditional items, and only they, are granted at once",
                    a.id
                )));
            }
        }
        let referred = a
            .reclassification
            .and_then(|x| after.reclassifications.get(&x));
        let ok = match (referred, not_shared.is_empty()) {
            (None, true) => a.reclassification.is_none(),
            (Some(x), false) => {
                x.application == a.id
                    && x.dataset == r.dataset
                    && x.requested_by == author
                    && x.fields
                        == not_shared
                            .iter()
                            .map(|f| f.field.clone())
                            .collect::<Vec<_>>()
            }
            _ => false,
        };
        if !ok {
            return Err(denied(format!(
                "application {}: its not-shared items, and only they, go to the coordinator as a reclassification request",
                a.id
            )));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn check_application_step(
        &self,
        after: &Policy,
        b: &Application,
        a: &Application,
        author: &str,
        catalog: &Catalog,
        facts: &Facts,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut same = a.clone();
        same.state = b.state;
        same.due = b.due;
        same.approval = b.approval;
        same.history = b.history.clone();
        if same != *b
            || a.history.len() != b.history.len() + 1
            || a.history[..b.history.len()] != b.history[..]
        {
            return Err(denied(format!(
                "application {}: only its state moves, one recorded step at a time; what was applied for and its history never change",
                a.id
            )));
        }
        let t = &a.history[b.history.len()];
        if t.by != author || t.to != a.state {
            return Err(denied(format!(
                "application {}: the step names '{}', but '{author}' is making it",
                a.id, t.by
            )));
        }
        let today = beijing_date(now);
        let (from, to) = (b.state, a.state);
        let illegal = || {
            denied(format!(
                "application {}: no step leads from {} to {}",
                a.id,
                from.label(),
                to.label()
            ))
        };
        let keeps_due = a.due == b.due;
        let keeps_decision = a.approval == b.approval;
        use AppState::*;
        match (from, to) {
            (Submitted, UnderReview) => {
                self.require(
                    author,
                    Role::PlatformAdmin,
                    "check applications for completeness",
                )?;
                let days = catalog.dataset(&a.request.dataset)?.approval_days();
                let due = facts.calendar.add_working_days(today, days)?;
                if a.due != Some(due) || !keeps_decision {
                    return Err(denied(format!(
                        "application {}: the provider's deadline is {days} working days from today, {due}",
                        a.id
                    )));
                }
            }
            (Submitted, Returned) => {
                self.require(
                    author,
                    Role::PlatformAdmin,
                    "return incomplete applications",
                )?;
                reason_needed(&t.reason, "returning an application")?;
                if !keeps_due || !keeps_decision {
                    return Err(illegal());
                }
            }
            (Returned, Submitted)
            | (Submitted | Returned | UnderReview | Escalated | Disputed, Withdrawn) => {
                if author != a.applicant {
                    return Err(denied(format!(
                        "only the applicant '{}' resubmits or withdraws application {}",
                        a.applicant, a.id
                    )));
                }
                if !keeps_due || !keeps_decision {
                    return Err(illegal());
                }
            }
            (UnderReview, Escalated) => {
                let (u, _) = self.active_user(author)?;
                if !u.roles.contains(&Role::Coordinator) && !u.roles.contains(&Role::PlatformAdmin)
                {
                    return Err(denied(format!(
                        "user '{author}' may not escalate applications: that needs the coordinator or platform-admin role"
                    )));
                }
                match b.due {
                    Some(due) if today > due => {}
                    due => {
                        return Err(denied(format!(
                            "application {} is not overdue: the provider has until {}",
                            a.id,
                            due.map(|d| d.to_string())
                                .unwrap_or_else(|| "no deadline".into())
                        )));
                    }
                }
                if !keeps_due || !keeps_decision {
                    return Err(illegal());
                }
            }
            (Escalated, UnderReview) => {
                self.require(
                    author,
                    Role::Coordinator,
                    "hand escalated applications back",
                )?;
                reason_needed(&t.reason, "handing an application back")?;
                let days = catalog.dataset(&a.request.dataset)?.approval_days();
                let due = facts.calendar.add_working_days(today, days)?;
                if a.due != Some(due) || !keeps_decision {
                    return Err(denied(format!(
                        "application {}: the new deadline is {days} working days from today, {due}",
                        a.id
                    )));
                }
            }
            (Rejected, Disputed) => {
                if author != a.applicant {
                    return Err(denied(format!(
                        "only the applicant '{}' disputes the rejection of application {}",
                        a.applicant, a.id
                    )));
                }
                reason_needed(&t.reason, "a dispute")?;
                if !keeps_due || !keeps_decision {
                    return Err(illegal());
                }
            }
            (UnderReview | Escalated | Disputed, Approved | Rejected) => {
                // The decision itself (who, separation of duties, narrowing) is checked with
                // the approval record; here only that the step and the record go together.
                let ok = a.approval.is_some_and(|aid| {
                    !self.approvals.contains_key(&aid)
                        && after.approvals.get(&aid).is_some_and(|ap| {
                            ap.application == Some(a.id)
                                && ap.approver == author
                                && ap.approved == (to == Approved)
                                && ap.reason == t.reason
                        })
                });
                if !ok || !keeps_due {
                    return Err(denied(format!(
                        "application {} is approved or rejected only by a new decision on it by '{author}'",
                        a.id
                    )));
                }
            }
            _ => return Err(illegal()),
        }
        Ok(())
    }

    /// The part of checking a new approval that concerns its application: the stage decides
    /// who may decide (the provider's approver under review; the coordinator when escalated
    /// or disputed), and an approval only narrows what was applied for.
    pub(super) fn check_application_decision(
        &self,
        ap: &Approval,
        app_id: u64,
        author: &str,
    ) -> Result<Option<()>> {
        let app = self.applications.get(&app_id).ok_or_else(|| {
            denied(format!(
                "approval {} names application {app_id}, which does not exist",
                ap.id
            ))
        })?;
        let coordinator_stage = match app.state {
            AppState::UnderReview => false,
            AppState::Escalated | AppState::Disputed => true,
            s => {
                return Err(denied(format!(
                    "application {app_id} is {}: it is not waiting for a decision",
                    s.label()
                )));
            }
        };
        let decided = self.decided_items(app);
        if ap.approved {
            check_narrower(&ap.request, &app.request, &decided)?;
            if ap.request.fields.is_empty() {
                return Err(Error::invalid(
                    "an approval grants at least one item; to grant none, reject",
                ));
            }
        } else {
            reason_needed(&ap.reason, "a rejection")?;
        }
        if !coordinator_stage {
            // The provider's approver: checked by the caller like any decision on a request.
            return Ok(None);
        }
        let me = self.require(
            author,
            Role::Coordinator,
            &format!(
                "decide application {app_id}, which is {}",
                app.state.label()
            ),
        )?;
        if me.department == app.request.consumer_dept {
            return Err(denied(format!(
                "separation of duties (003 §11): coordinator '{author}' may not decide for their own department '{}'",
                app.request.consumer_dept
            )));
        }
        Ok(Some(()))
    }

    fn check_new_objection(
        &self,
        o: &Objection,
        author: &str,
        catalog: &Catalog,
        facts: &Facts,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let me = self.require(author, Role::Consumer, "file objections")?;
        if o.filed_by != author || o.department != me.department {
            return Err(denied(format!(
                "objection {} names '{}' as its filer, but '{author}' is filing it",
                o.id, o.filed_by
            )));
        }
        let def = catalog.dataset(&o.dataset)?;
        let f = def.require_field(&o.field)?;
        // Only what the department was shown can be found wrong: it holds a grant of the item.
        let holds = self.grants.values().any(|g| {
            g.revoked.is_none()
                && g.request.consumer_dept == me.department
                && g.request.dataset == o.dataset
                && g.request.fields.iter().any(|x| x.field == o.field)
        });
        if !holds {
            return Err(denied(format!(
                "department '{}' holds no grant of {}.{}: objections are filed on data a department receives",
                me.department, o.dataset, o.field
            )));
        }
        if o.key.trim().is_empty() {
            return Err(Error::invalid("an objection names the subject's key"));
        }
        reason_needed(&o.description, "an objection")?;
        let today = beijing_date(now);
        if o.discovered_on > today {
            return Err(Error::invalid("an error cannot be found in the future"));
        }
        let expected = Objection {
            filed_late: today
                > facts
                    .calendar
                    .add_working_days(o.discovered_on, REPORT_DAYS)?,
            provider: def.source_of(f).to_string(),
            state: ObjectionState::Open,
            due: facts
                .calendar
                .add_working_days(today, def.objection_days())?,
            extension_days: None,
            correction_version: None,
            filed_on: today,
            ..o.clone()
        };
        if *o != expected || o.history.len() != 1 || o.history[0].by != author {
            return Err(denied(format!(
                "objection {}: a new objection is open, due {} working days from today, answered by the field's source",
                o.id,
                def.objection_days()
            )));
        }
        Ok(())
    }

    fn check_objection_step(
        &self,
        b: &Objection,
        o: &Objection,
        author: &str,
        facts: &Facts,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut same = o.clone();
        same.state = b.state;
        same.due = b.due;
        same.extension_days = b.extension_days;
        same.correction_version = b.correction_version;
        same.history = b.history.clone();
        if same != *b
            || o.history.len() != b.history.len() + 1
            || o.history[..b.history.len()] != b.history[..]
        {
            return Err(denied(format!(
                "objection {}: only its state moves, one recorded step at a time",
                o.id
            )));
        }
        let t = &o.history[b.history.len()];
        if t.by != author || t.to != o.state {
            return Err(denied(format!(
                "objection {}: the step names '{}', but '{author}' is making it",
                o.id, t.by
            )));
        }
        let today = beijing_date(now);
        let provider_approver = |act: &str| -> Result<()> {
            let u = self.require(author, Role::ProviderApprover, act)?;
            if u.department != o.provider {
                return Err(denied(format!(
                    "user '{author}' of department '{}' may not {act}: objection {} is for department '{}', the source of {}.{}",
                    u.department, o.id, o.provider, o.dataset, o.field
                )));
            }
            Ok(())
        };
        let illegal = || {
            denied(format!(
                "objection {}: no step leads from {} to {}",
                o.id,
                b.state.label(),
                o.state.label()
            ))
        };
        use ObjectionState::*;
        let unchanged_but = |due: bool, ext: bool, corr: bool| {
            (due || o.due == b.due)
                && (ext || o.extension_days == b.extension_days)
                && (corr || o.correction_version == b.correction_version)
        };
        match (b.state, o.state) {
            (Open, ExtensionRequested) => {
                provider_approver("ask for more time on objections")?;
                reason_needed(&t.reason, "an extension")?;
                if today > b.due {
                    return Err(denied(format!(
                        "objection {}: an extension is asked before the deadline ({}), not after",
                        o.id, b.due
                    )));
                }
                match o.extension_days {
                    Some(d) if (1..=MAX_EXTENSION_DAYS).contains(&d) => {}
                    _ => {
                        return Err(Error::invalid(format!(
                            "an extension is 1 to {MAX_EXTENSION_DAYS} working days (001 §13)"
                        )));
                    }
                }
                if !unchanged_but(false, true, false) {
                    return Err(illegal());
                }
            }
            (ExtensionRequested, Extended) => {
                provider_approver("sign off extensions")?;
                let asker = b.history.last().map(|s| s.by.as_str()).unwrap_or_default();
                if asker == author {
                    return Err(denied(format!(
                        "objection {}: an extension is signed off by another approver of '{}' than the one who asked ('{asker}')",
                        o.id, o.provider
                    )));
                }
                let days = b.extension_days.unwrap_or_default();
                let due = facts.calendar.add_working_days(b.due, days)?;
                if o.due != due || !unchanged_but(true, false, false) {
                    return Err(denied(format!(
                        "objection {}: the extended deadline is {days} working days after {}, {due}",
                        o.id, b.due
                    )));
                }
            }
            (Open | ExtensionRequested | Extended | Escalated, Confirmed | Corrected) => {
                provider_approver("answer objections")?;
                reason_needed(&t.reason, "an answer")?;
                if o.state == Corrected {
                    let v = o.correction_version.unwrap_or_default();
                    let refs = facts
                        .versions
                        .get(&o.dataset)
                        .and_then(|vs| vs.get(&v))
                        .is_some_and(|f| f.corrects.contains(&o.id) && f.provider == o.provider);
                    if !refs {
                        return Err(denied(format!(
                            "objection {}: a correction is a data version of '{}' loaded for department '{}' that references the objection; version {v} is not",
                            o.id, o.dataset, o.provider
                        )));
                    }
                    if !unchanged_but(false, false, true) {
                        return Err(illegal());
                    }
                } else if !unchanged_but(false, false, false) {
                    return Err(illegal());
                }
            }
            (Open | ExtensionRequested | Extended, Escalated) => {
                let (u, _) = self.active_user(author)?;
                if !u.roles.contains(&Role::Coordinator) && !u.roles.contains(&Role::PlatformAdmin)
                {
                    return Err(denied(format!(
                        "user '{author}' may not escalate objections: that needs the coordinator or platform-admin role"
                    )));
                }
                if today <= b.due {
                    return Err(denied(format!(
                        "objection {} is not overdue: the answer is due {}",
                        o.id, b.due
                    )));
                }
                if !unchanged_but(false, false, false) {
                    return Err(illegal());
                }
            }
            _ => return Err(illegal()),
        }
        Ok(())
    }

    fn check_resolution(
        &self,
        id: &str,
        r: &Resolution,
        author: &str,
        facts: &Facts,
    ) -> Result<()> {
        let c = facts
            .conflict(id)
            .ok_or_else(|| Error::NotFound(format!("conflict {id}")))?;
        let u = self.require(
            author,
            Role::ProviderApprover,
            "resolve conflicts between sources",
        )?;
        if u.department != c.authority || r.by != author {
            return Err(denied(format!(
                "conflict {id} is resolved by the authoritative source of {}, department '{}' (一数一源)",
                c.field, c.authority
            )));
        }
        reason_needed(&r.reason, "a resolution")?;
        if let Some(v) = r.correction_version {
            let (ds, cv) = id
                .split_once(':')
                .and_then(|(ds, rest)| Some((ds, rest.split(':').next()?.parse::<u64>().ok()?)))
                .ok_or_else(|| Error::invalid(format!("conflict id '{id}'")))?;
            let ok = v > cv
                && facts
                    .versions
                    .get(ds)
                    .and_then(|vs| vs.get(&v))
                    .is_some_and(|f| f.provider == c.authority);
            if !ok {
                return Err(denied(format!(
                    "conflict {id}: a correction is a later version of '{ds}' from department '{}'",
                    c.authority
                )));
            }
        }
        Ok(())
    }

    fn check_new_agreement(
        &self,
        a: &Agreement,
        author: &str,
        catalog: &Catalog,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let u = self.require(author, Role::ProviderApprover, "make sharing agreements")?;
        if a.made_by != author
            || a.provider != u.department
            || a.revoked.is_some()
            || !a.renewals.is_empty()
        {
            return Err(denied(format!(
                "agreement {} is made by an approver of its providing department, '{author}' of '{}'",
                a.id, u.department
            )));
        }
        if a.title.trim().is_empty() || a.grants.is_empty() {
            return Err(Error::invalid(
                "an agreement has a title and at least one grant",
            ));
        }
        if a.until <= now {
            return Err(Error::invalid("an agreement's term ends in the future"));
        }
        for gid in &a.grants {
            let g = self
                .grants
                .get(gid)
                .ok_or_else(|| Error::NotFound(format!("grant {gid}")))?;
            let provider = catalog
                .dataset(&g.request.dataset)
                .map(|d| d.provider.as_str())
                .unwrap_or("");
            let ok = g.revoked.is_none()
                && g.request.consumer_dept == a.consumer_dept
                && provider == a.provider
                && g.request.valid_until == a.until;
            if !ok {
                return Err(denied(format!(
                    "grant {gid} cannot be part of agreement {}: its grants are unrevoked grants of '{}' data to '{}' ending with the term",
                    a.id, a.provider, a.consumer_dept
                )));
            }
            if self
                .agreements
                .values()
                .any(|o| o.revoked.is_none() && o.grants.contains(gid))
            {
                return Err(denied(format!("grant {gid} is already under an agreement")));
            }
        }
        Ok(())
    }

    fn check_agreement_step(
        &self,
        after: &Policy,
        b: &Agreement,
        a: &Agreement,
        author: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if b.revoked.is_some() {
            return Err(denied(format!(
                "agreement {} is revoked: it does not change",
                b.id
            )));
        }
        if let Some((by, _, reason)) = &a.revoked {
            let mut same = a.clone();
            same.revoked = None;
            if same != *b || by != author {
                return Err(denied(format!(
                    "agreement {}: a revocation changes nothing else",
                    a.id
                )));
            }
            reason_needed(reason, "revoking an agreement")?;
            let (u, _) = self.active_user(author)?;
            let provider_approver =
                u.roles.contains(&Role::ProviderApprover) && u.department == b.provider;
            if !provider_approver && !u.roles.contains(&Role::PlatformAdmin) {
                return Err(denied(format!(
                    "user '{author}' may not revoke agreement {}: that needs the platform-admin role or the provider-approver role in '{}'",
                    a.id, b.provider
                )));
            }
            if let Some(g) = b
                .grants
                .iter()
                .find(|g| after.grants.get(g).is_some_and(|g| g.revoked.is_none()))
            {
                return Err(denied(format!(
                    "revoking agreement {} revokes its grant {g} too",
                    a.id
                )));
            }
            return Ok(());
        }
        // A renewal.
        let u = self.require(author, Role::ProviderApprover, "renew sharing agreements")?;
        if u.department != b.provider {
            return Err(denied(format!(
                "agreement {} is renewed by an approver of '{}'",
                a.id, b.provider
            )));
        }
        if now >= b.until {
            return Err(denied(format!(
                "agreement {} ended {}: it is renewed before it ends; make a new one",
                a.id, b.until
            )));
        }
        let Some(rn) = a.renewals.last() else {
            return Err(denied(format!(
                "agreement {} changes only by renewal or revocation",
                a.id
            )));
        };
        let mut same = a.clone();
        same.renewals.pop();
        same.grants = b.grants.clone();
        same.until = b.until;
        if same != *b
            || a.renewals.len() != b.renewals.len() + 1
            || rn.by != author
            || rn.until <= b.until
            || a.until != rn.until
            || a.grants != rn.grants
        {
            return Err(denied(format!(
                "agreement {}: a renewal extends the term and renews its grants, nothing else",
                a.id
            )));
        }
        let live: Vec<u64> = b
            .grants
            .iter()
            .copied()
            .filter(|g| self.grants.get(g).is_some_and(|g| g.revoked.is_none()))
            .collect();
        if rn.grants.len() != live.len() {
            return Err(denied(format!(
                "agreement {}: a renewal renews each of its grants",
                a.id
            )));
        }
        for (new, old) in rn.grants.iter().zip(&live) {
            let ok = after.grants.get(new).is_some_and(|g| {
                g.origin
                    == (Origin::Renewal {
                        agreement: a.id,
                        of: *old,
                    })
            });
            if !ok {
                return Err(denied(format!(
                    "agreement {}: grant {new} does not renew grant {old}",
                    a.id
                )));
            }
        }
        Ok(())
    }

    /// Whether a new grant of origin [`Origin::Application`] or [`Origin::Renewal`] is backed
    /// by its application or agreement in this same change.
    pub(super) fn check_workflow_grant(
        &self,
        after: &Policy,
        g: &Grant,
        author: &str,
    ) -> Result<()> {
        match g.origin {
            Origin::Application(aid) => {
                let ok = !self.applications.contains_key(&aid)
                    && after
                        .applications
                        .get(&aid)
                        .is_some_and(|a| a.applicant == author && a.immediate_grant == Some(g.id));
                if !ok {
                    return Err(denied(format!(
                        "grant {} claims application {aid}, which is not a new application by '{author}' granting it",
                        g.id
                    )));
                }
            }
            Origin::Renewal { agreement, of } => {
                let old = self.grants.get(&of);
                let ok = after.agreements.get(&agreement).is_some_and(|a| {
                    a.renewals.last().is_some_and(|r| {
                        r.by == author
                            && r.grants.contains(&g.id)
                            && old.is_some_and(|o| {
                                let mut want = o.request.clone();
                                want.valid_from = o.request.valid_until;
                                want.valid_until = r.until;
                                g.request == want
                            })
                    })
                }) && self.agreements.get(&agreement).map(|a| a.renewals.len())
                    != after.agreements.get(&agreement).map(|a| a.renewals.len());
                if !ok {
                    return Err(denied(format!(
                        "grant {} claims to renew grant {of} under agreement {agreement}, which no renewal by '{author}' in this change backs",
                        g.id
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    }
}
