//! Principals, grants and the gate.
//!
//! The [`Policy`] document (departments, real-name users, grants, approvals) is versioned in
//! the store like the catalog. [`Policy::decide`] is **the one policy decision point**: every
//! read path asks it, per query, what a user acting for a purpose may see; it fails closed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, DatasetDef, Grade, MaskKind, OpenType, ShareType};
use crate::error::{Error, Result};

mod authority;
mod versions;
mod workflow;
pub(crate) use authority::PolicyAuthorizer;
pub use authority::Stewards;
pub use versions::PolicyVersion;
pub use workflow::{
    Agreement, AppDecision, AppState, Application, ApplicationForm, Facts, MAX_EXTENSION_DAYS,
    Objection, ObjectionState, REPORT_DAYS, Reclassification, Renewal, Resolution, Transition,
    VersionFacts, conflict_id,
};

/// Lifecycle of a department or user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalStatus {
    /// May act.
    #[default]
    Active,
    /// Suspended (003 §20): every query fails from the next one on.
    Suspended,
}

/// A department (政务部门).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Department {
    /// Code, unique.
    pub code: String,
    /// Name.
    pub name: String,
    /// Region of jurisdiction (GB/T 2260 code).
    pub region: String,
    /// Status.
    pub status: PrincipalStatus,
}

/// Roles a real-name user can hold; approve / operate / verify stay separate (003 §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Queries data under its department's grants.
    Consumer,
    /// Approves or rejects requests for its department's conditional data.
    ProviderApprover,
    /// Runs the platform: catalog, principals, grants on request.
    PlatformAdmin,
    /// Reads the audit trail.
    Auditor,
    /// Resolves disputes; reclassifies items between share types.
    Coordinator,
    /// Runs the store: loads, compaction, vacuum, administrative lookups.
    Operator,
    /// A member of the public (an open-data platform account, 开放平台): reads, under its
    /// grants, only items the catalog opens to the public (001 §18, 002 §25) — never a
    /// not-open item, a conditionally open one only under a provider's approval. Holds no
    /// other role.
    Public,
}

/// How the host authenticated the user of a session (the host asserts it; govshare records it
/// and decides by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A password (or any single factor).
    #[default]
    Password,
    /// A certificate (digital ID, USB key).
    Certificate,
    /// Two factors, e.g. password and a one-time code: needed for sensitive items (grade L4)
    /// in clear (003 §11: sensitive information needs a second check).
    SecondFactor,
}

/// Who asks: the real-name user, the purpose, the host system the session runs through (a
/// registered principal; `None` for the process that embeds govshare itself, e.g. the
/// command line) and how the host authenticated the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// Account id.
    pub user: String,
    /// Purpose code.
    pub purpose: String,
    /// The host system, by id.
    #[serde(default)]
    pub system: Option<String>,
    /// How the user was authenticated.
    #[serde(default)]
    pub auth: AuthMethod,
}

impl Login {
    /// A direct login (no host system) authenticated by `auth`.
    pub fn new(user: &str, purpose: &str, auth: AuthMethod) -> Login {
        Login {
            user: user.into(),
            purpose: purpose.into(),
            system: None,
            auth,
        }
    }
}

/// A host system that links govshare (third-party systems, 004 §20-21): registered by a
/// platform administrator, run by a department; suspending it refuses its sessions from their
/// next query on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSystem {
    /// Id, unique.
    pub id: String,
    /// Name.
    pub name: String,
    /// The department that runs it.
    pub department: String,
    /// Status.
    pub status: PrincipalStatus,
}

/// The first platform administrator and their department, named when a store is created
/// (like `initdb`'s superuser): every later act is done by a user this one, or another
/// administrator, added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Founder {
    /// Account id.
    pub user: String,
    /// Real name.
    pub name: String,
    /// Department code (the platform's own department).
    pub department: String,
    /// Department name.
    pub department_name: String,
    /// Region of jurisdiction (GB/T 2260 code).
    pub region: String,
}

/// A real-name user (accounts are personal, 000 §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Account id.
    pub id: String,
    /// Real name.
    pub name: String,
    /// Department code.
    pub department: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Status.
    pub status: PrincipalStatus,
}

/// How a granted field is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Treatment {
    /// As stored.
    Clear,
    /// Through the named mask.
    Masked(MaskKind),
}

/// One field of a grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldGrant {
    /// Field name.
    pub field: String,
    /// Clear or masked.
    pub treatment: Treatment,
}

/// Which rows a grant covers. `None` on a dimension means no restriction on it; both are
/// intersected when both are given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowScope {
    /// Region codes (province, city or county level) of the dataset's cluster field.
    pub regions: Option<Vec<String>>,
    /// Explicit subject keys (citizen IDs, USCCs).
    pub subjects: Option<Vec<String>>,
}

/// Service modes (000 §19, 002 §20), each served by its own door and decided in its own mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// SQL queries.
    Query,
    /// Yes/no verification.
    Verify,
    /// Bulk export.
    Export,
    /// Change push.
    Push,
    /// Aggregates only.
    Aggregate,
}

/// The limits of a verify-mode grant: how many checks it answers, against enumeration (an
/// 18-character ID embeds a birth date and a region, so unthrottled yes/no answers enumerate
/// people). Counted per grant across every process on the store ([`crate::access::quota`]);
/// a zero limit allows nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyTerms {
    /// Checks per second (a fixed one-second window).
    pub per_second: u32,
    /// Checks per day (a Beijing calendar day).
    pub per_day: u32,
    /// Checks of one subject per day: repeated guesses at one person's name stop here.
    pub per_subject_per_day: u32,
    /// Whether an answer may say that no such subject exists (in scope); otherwise an unknown
    /// subject answers "no match" on every field, indistinguishable from wrong claims.
    pub disclose_absence: bool,
}

/// The limits of an export-mode grant (bulk delivery of the granted fields and rows): how
/// many rows one export may carry and how many exports a day the grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportTerms {
    /// Rows in scope one export may carry; a larger scope is refused, not cut.
    pub max_rows: u64,
    /// Exports per day (a Beijing calendar day).
    pub per_day: u32,
}

/// The limits of an aggregate-only grant (scenario service): the smallest group it answers and
/// how many queries a day it allows (a budget against differencing queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateTerms {
    /// Groups with fewer subjects are suppressed.
    pub min_group: u32,
    /// Queries per day (a Beijing calendar day).
    pub per_day: u32,
}

/// Where a grant came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A request for unconditional fields, opened at once.
    Request,
    /// An approval by the providing department (or, on escalation or dispute, the
    /// coordinator).
    Approval(u64),
    /// The unconditional items of an application, granted at once.
    Application(u64),
    /// The renewal of grant `of` under agreement `agreement`.
    Renewal {
        /// The agreement.
        agreement: u64,
        /// The grant renewed.
        of: u64,
    },
}

/// What a consumer department asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRequest {
    /// Consumer department.
    pub consumer_dept: String,
    /// Narrow to these users (empty: every user of the department).
    pub users: Vec<String>,
    /// Dataset.
    pub dataset: String,
    /// Fields and the treatment asked for.
    pub fields: Vec<FieldGrant>,
    /// Purpose code.
    pub purpose_code: String,
    /// Purpose in words (000 §20: purpose, objects, scope, fields).
    pub purpose_text: String,
    /// Rows.
    pub scope: RowScope,
    /// Service modes.
    pub modes: Vec<Mode>,
    /// The limits of the verify mode; required when `modes` holds [`Mode::Verify`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyTerms>,
    /// The limits of the export mode; required when `modes` holds [`Mode::Export`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportTerms>,
    /// The limits of the aggregate mode; required when `modes` holds [`Mode::Aggregate`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<AggregateTerms>,
    /// Start of validity.
    pub valid_from: DateTime<Utc>,
    /// End of validity (exclusive).
    pub valid_until: DateTime<Utc>,
}

/// A grant in force (or revoked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Id.
    pub id: u64,
    /// What was granted.
    pub request: GrantRequest,
    /// How it came about.
    pub origin: Origin,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Revocation, if any: (by, at, reason).
    pub revoked: Option<(String, DateTime<Utc>, String)>,
}

/// A provider's decision on a request for conditional data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Id.
    pub id: u64,
    /// The request decided on.
    pub request: GrantRequest,
    /// Approver (a provider-approver of the providing department).
    pub approver: String,
    /// Approved or not.
    pub approved: bool,
    /// Reason (required for a rejection).
    pub reason: String,
    /// When.
    pub decided_at: DateTime<Utc>,
    /// The grant it created.
    pub grant: Option<u64>,
    /// The application decided, when it came through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<u64>,
}

/// The policy document: principals, grants, approvals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Departments by code.
    pub departments: BTreeMap<String, Department>,
    /// Users by id.
    pub users: BTreeMap<String, User>,
    /// Grants by id.
    pub grants: BTreeMap<u64, Grant>,
    /// Approvals by id.
    pub approvals: BTreeMap<u64, Approval>,
    /// Registered host systems by id.
    #[serde(default)]
    pub systems: BTreeMap<String, HostSystem>,
    /// Applications by id.
    #[serde(default)]
    pub applications: BTreeMap<u64, Application>,
    /// Objections by id.
    #[serde(default)]
    pub objections: BTreeMap<u64, Objection>,
    /// Sharing agreements by id.
    #[serde(default)]
    pub agreements: BTreeMap<u64, Agreement>,
    /// Requests to reclassify not-shared items, by id.
    #[serde(default)]
    pub reclassifications: BTreeMap<u64, Reclassification>,
    /// Resolutions of conflicts between sources, by conflict id.
    #[serde(default)]
    pub resolutions: BTreeMap<String, Resolution>,
    /// Next id for grants, approvals and workflow records.
    pub next_id: u64,
}

/// What one dataset looks like to a decision. Made only by [`Policy::decide`] (its fields are
/// private to the policy module), so a [`SecuredTable`](crate::access::secured::SecuredTable)
/// can only be built from what the gate decided.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetAccess {
    pub(in crate::access::policy) grant_id: u64,
    pub(in crate::access::policy) fields: Vec<(String, Treatment)>,
    pub(in crate::access::policy) scope: RowScope,
    pub(in crate::access::policy) verify: Option<VerifyTerms>,
    pub(in crate::access::policy) export: Option<ExportTerms>,
    pub(in crate::access::policy) aggregate: Option<AggregateTerms>,
}

impl DatasetAccess {
    /// The grant it comes from.
    pub fn grant_id(&self) -> u64 {
        self.grant_id
    }

    /// Granted fields in catalog order, with treatment.
    pub fn fields(&self) -> &[(String, Treatment)] {
        &self.fields
    }

    /// Rows.
    pub fn scope(&self) -> &RowScope {
        &self.scope
    }

    /// The limits of a verify decision (`None` in other modes).
    pub fn verify_terms(&self) -> Option<VerifyTerms> {
        self.verify
    }

    /// The limits of an export decision (`None` in other modes).
    pub fn export_terms(&self) -> Option<ExportTerms> {
        self.export
    }

    /// The limits of an aggregate-only decision (`None` in other modes).
    pub fn aggregate_terms(&self) -> Option<AggregateTerms> {
        self.aggregate
    }
}

/// The outcome of [`Policy::decide`]: the user, department, purpose and per-dataset access.
/// Only the policy module makes one (the fields are private to it): code elsewhere can read a
/// decision, never forge or widen it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub(in crate::access::policy) user: String,
    pub(in crate::access::policy) department: String,
    pub(in crate::access::policy) purpose: String,
    pub(in crate::access::policy) datasets: BTreeMap<String, DatasetAccess>,
    pub(in crate::access::policy) withheld: Vec<(String, String)>,
    pub(in crate::access::policy) not_open: Vec<(String, String)>,
}

impl Decision {
    /// User id.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Department code.
    pub fn department(&self) -> &str {
        &self.department
    }

    /// Purpose code.
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    /// Access per dataset name.
    pub fn datasets(&self) -> &BTreeMap<String, DatasetAccess> {
        &self.datasets
    }

    /// Granted `(dataset, field)`s left out because the session's authentication is too weak
    /// for them (sensitive items in clear need a second factor).
    pub fn withheld(&self) -> &[(String, String)] {
        &self.withheld
    }

    /// Granted `(dataset, field)`s left out because the user is a member of the public and
    /// the catalog does not open them to the public (or opens them only on approval, and the
    /// grant was made on request).
    pub fn not_open(&self) -> &[(String, String)] {
        &self.not_open
    }
}

fn denied(msg: impl Into<String>) -> Error {
    Error::AccessDenied(msg.into())
}

/// A user's roles hold together: a public account holds the public role only (no government
/// role), however the account is written (added, or edited in the policy document).
pub(crate) fn check_roles(u: &User) -> Result<()> {
    if u.roles.contains(&Role::Public) && u.roles.len() > 1 {
        return Err(Error::invalid(format!(
            "user '{}': a public account holds the public role only (no government role)",
            u.id
        )));
    }
    Ok(())
}

/// How access to a field is obtained, for error messages.
pub fn how_to_obtain(share: ShareType) -> &'static str {
    match share {
        ShareType::Unconditional => {
            "an unconditional item: request it from the platform administrator and it is granted at once"
        }
        ShareType::Conditional => {
            "a conditional item: apply to the providing department, whose approver decides within the statutory working days"
        }
        ShareType::NotShared => {
            "a not-shared item: it cannot be granted; it must first be reclassified through coordination (002 §21)"
        }
    }
}

impl Policy {
    /// The active user `user` of an active department, or a denial saying why not: every act
    /// and every read is done by someone who exists and may act.
    pub fn active(&self, user: &str) -> Result<(&User, &Department)> {
        self.active_user(user)
    }

    fn active_user(&self, user: &str) -> Result<(&User, &Department)> {
        let u = self.users.get(user).ok_or_else(|| {
            denied(format!(
                "unknown user '{user}': every act and query is done by an existing user of this store"
            ))
        })?;
        if u.status != PrincipalStatus::Active {
            return Err(denied(format!("user '{user}' is suspended")));
        }
        let d = self.departments.get(&u.department).ok_or_else(|| {
            denied(format!(
                "user '{user}' belongs to unknown department '{}'",
                u.department
            ))
        })?;
        if d.status != PrincipalStatus::Active {
            return Err(denied(format!("department '{}' is suspended", d.code)));
        }
        Ok((u, d))
    }

    /// The decision for `user` acting for `purpose` in `mode` at `now`. Fails closed: unknown
    /// or suspended principals and the absence of any valid grant are denials.
    pub fn decide(
        &self,
        catalog: &Catalog,
        login: &Login,
        mode: Mode,
        now: DateTime<Utc>,
    ) -> Result<Decision> {
        let (user, purpose) = (login.user.as_str(), login.purpose.as_str());
        let (u, d) = self.active_user(user)?;
        if let Some(id) = &login.system {
            let s = self.systems.get(id).ok_or_else(|| {
                denied(format!(
                    "host system '{id}' is not registered: sessions run through registered systems only"
                ))
            })?;
            if s.status != PrincipalStatus::Active {
                return Err(denied(format!("host system '{id}' is suspended")));
            }
        }
        let (mut withheld, mut not_open) = (Vec::new(), Vec::new());
        let public = u.roles.contains(&Role::Public);
        if !public && !u.roles.contains(&Role::Consumer) {
            return Err(denied(format!("user '{user}' has no consumer role")));
        }
        let mut datasets: BTreeMap<String, DatasetAccess> = BTreeMap::new();
        // Newest valid grant per dataset wins: a decision never merges grants, so it never
        // shows more than one grant allows.
        for g in self.grants.values().rev() {
            let r = &g.request;
            let valid = g.revoked.is_none()
                && r.consumer_dept == d.code
                && (r.users.is_empty() || r.users.iter().any(|x| x == user))
                && r.purpose_code == purpose
                && r.modes.contains(&mode)
                && r.valid_from <= now
                && now < r.valid_until;
            // A verify grant answers only within its limits: one without them (a document
            // older than the limits) answers nothing.
            let (verify, export, aggregate) = match mode {
                Mode::Verify => match r.verify {
                    Some(t) => (Some(t), None, None),
                    None => continue,
                },
                Mode::Export => match r.export {
                    Some(t) => (None, Some(t), None),
                    None => continue,
                },
                Mode::Aggregate => match r.aggregate {
                    Some(t) => (None, None, Some(t)),
                    None => continue,
                },
                _ => (None, None, None),
            };
            if !valid || datasets.contains_key(&r.dataset) {
                continue;
            }
            let Ok(def) = catalog.dataset(&r.dataset) else {
                continue;
            };
            // Catalog order; fields no longer in the catalog, or reclassified as not shared
            // since the grant was made, are dropped (the current catalog decides, at every
            // query; fail closed).
            // A grant made on request holds only what is unconditional *now*, at no less than
            // today's default mask; an approver's treatment of conditional items stands.
            let on_request = self.on_request(g);
            let fields = def
                .fields
                .iter()
                .filter(|f| f.share != ShareType::NotShared)
                .filter(|f| !on_request || f.share == ShareType::Unconditional)
                .filter_map(|f| {
                    r.fields.iter().find(|g| g.field == f.name).map(|g| {
                        let mut t = g.treatment.mask();
                        if on_request && !crate::access::masks::at_least(t, f.mask) {
                            t = f.mask;
                        }
                        (f, Treatment::of(t))
                    })
                })
                // The public reads open items only (001 §18, 002 §25): unconditionally open
                // ones under any grant, conditionally open ones only under an approver's
                // grant, not-open ones never — whatever the grant lists.
                // Sensitive items in clear need a second factor (003 §11).
                .filter(|(f, t)| {
                    let open = !public
                        || match f.open {
                            OpenType::Unconditional => true,
                            OpenType::Conditional => !on_request,
                            OpenType::NotOpen => false,
                        };
                    let strong = f.grade < Grade::L4
                        || *t != Treatment::Clear
                        || login.auth == AuthMethod::SecondFactor;
                    if !open {
                        not_open.push((def.name.clone(), f.name.clone()));
                    } else if !strong {
                        withheld.push((def.name.clone(), f.name.clone()));
                    }
                    open && strong
                })
                .map(|(f, t)| (f.name.clone(), t))
                .collect();
            datasets.insert(
                r.dataset.clone(),
                DatasetAccess {
                    grant_id: g.id,
                    fields,
                    scope: r.scope.clone(),
                    verify,
                    export,
                    aggregate,
                },
            );
        }
        if datasets.is_empty() {
            return Err(denied(format!(
                "department '{}' holds no valid {mode:?} grant for purpose '{purpose}' (expired, revoked, or never granted)",
                d.code
            )));
        }
        Ok(Decision {
            user: user.into(),
            department: d.code.clone(),
            purpose: purpose.into(),
            datasets,
            withheld,
            not_open,
        })
    }

    fn check_request(&self, catalog: &Catalog, r: &GrantRequest) -> Result<DatasetDef> {
        let d = self
            .departments
            .get(&r.consumer_dept)
            .ok_or_else(|| Error::NotFound(format!("department '{}'", r.consumer_dept)))?;
        if d.status != PrincipalStatus::Active {
            return Err(denied(format!("department '{}' is suspended", d.code)));
        }
        for u in &r.users {
            let user = self
                .users
                .get(u)
                .ok_or_else(|| Error::NotFound(format!("user '{u}'")))?;
            if user.department != r.consumer_dept {
                return Err(Error::invalid(format!(
                    "user '{u}' is not in department '{}'",
                    r.consumer_dept
                )));
            }
        }
        let def = catalog.dataset(&r.dataset)?.clone();
        if r.fields.is_empty() {
            return Err(Error::invalid("a grant needs at least one field"));
        }
        if r.purpose_code.trim().is_empty() || r.purpose_text.trim().is_empty() {
            return Err(Error::invalid(
                "a grant needs a purpose code and a stated purpose (000 §20)",
            ));
        }
        if r.modes.is_empty() {
            return Err(Error::invalid("a grant needs at least one service mode"));
        }
        match (r.modes.contains(&Mode::Verify), &r.verify) {
            (true, None) => {
                return Err(Error::invalid(
                    "a verify grant needs its limits (checks per second, per day and per subject per day)",
                ));
            }
            (false, Some(_)) => {
                return Err(Error::invalid(
                    "verify limits are given but the grant has no verify mode",
                ));
            }
            _ => {}
        }
        match (r.modes.contains(&Mode::Aggregate), &r.aggregate) {
            (true, None) => {
                return Err(Error::invalid(
                    "an aggregate-only grant needs its limits (minimum group size, queries per day)",
                ));
            }
            (true, Some(t)) if t.min_group < 2 => {
                return Err(Error::invalid(
                    "an aggregate-only grant's minimum group size is at least 2",
                ));
            }
            (false, Some(_)) => {
                return Err(Error::invalid(
                    "aggregate limits are given but the grant has no aggregate mode",
                ));
            }
            _ => {}
        }
        match (r.modes.contains(&Mode::Export), &r.export) {
            (true, None) => {
                return Err(Error::invalid(
                    "an export grant needs its limits (rows per export, exports per day)",
                ));
            }
            (false, Some(_)) => {
                return Err(Error::invalid(
                    "export limits are given but the grant has no export mode",
                ));
            }
            _ => {}
        }
        if r.valid_until <= r.valid_from {
            return Err(Error::invalid("valid_until must be after valid_from"));
        }
        if let Some(regions) = &r.scope.regions {
            if def.cluster_field.is_none() {
                return Err(Error::invalid(format!(
                    "dataset '{}' has no region field to scope by",
                    def.name
                )));
            }
            for code in regions {
                crate::regions::region_prefix(code)?;
            }
        }
        for fg in &r.fields {
            let f = def.require_field(&fg.field)?;
            if f.share == ShareType::NotShared {
                return Err(denied(format!(
                    "{}.{} is {}",
                    def.name,
                    f.name,
                    how_to_obtain(ShareType::NotShared)
                )));
            }
            if let Treatment::Masked(m) = fg.treatment
                && !crate::access::masks::applicable(m, &f.data_type.arrow())
            {
                return Err(Error::invalid(format!(
                    "mask {m:?} does not apply to {}.{} ({})",
                    def.name, f.name, f.data_type
                )));
            }
        }
        Ok(def)
    }

    /// Grant a request at once. Only unconditional fields qualify; each field gets at least
    /// its catalog default mask (a request for clear is masked by default where the catalog
    /// says so).
    pub fn grant_on_request(
        &mut self,
        catalog: &Catalog,
        mut r: GrantRequest,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Grant> {
        self.require(by, Role::PlatformAdmin, "grant on request")?;
        let def = self.check_request(catalog, &r)?;
        for fg in &mut r.fields {
            let f = def.require_field(&fg.field)?;
            if f.share == ShareType::Conditional {
                return Err(denied(format!(
                    "{}.{} is {}",
                    def.name,
                    f.name,
                    how_to_obtain(ShareType::Conditional)
                )));
            }
            // At least the catalog default: a weaker ask (clear included, however spelt) gets
            // the default.
            if !crate::access::masks::at_least(fg.treatment.mask(), f.mask) {
                fg.treatment = Treatment::of(f.mask);
            } else {
                fg.treatment = Treatment::of(fg.treatment.mask());
            }
        }
        Ok(self.insert_grant(r, Origin::Request, by, now))
    }

    fn insert_grant(
        &mut self,
        request: GrantRequest,
        origin: Origin,
        by: &str,
        now: DateTime<Utc>,
    ) -> Grant {
        self.next_id += 1;
        let g = Grant {
            id: self.next_id,
            request,
            origin,
            created_by: by.into(),
            created_at: now,
            revoked: None,
        };
        self.grants.insert(g.id, g.clone());
        g
    }

    /// Decide on a request as a provider-approver of the dataset's providing department.
    /// Approving creates the grant as asked (clear fields included); rejecting needs a reason.
    pub fn decide_request(
        &mut self,
        catalog: &Catalog,
        r: GrantRequest,
        approver: &str,
        approve: bool,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Approval> {
        let a = self.require(
            approver,
            Role::ProviderApprover,
            &format!("decide requests for '{}'", r.dataset),
        )?;
        let def = catalog.dataset(&r.dataset)?;
        if a.department != def.provider {
            return Err(denied(format!(
                "user '{approver}' of department '{}' may not decide requests for '{}': its provider is department '{}'",
                a.department, def.name, def.provider
            )));
        }
        if !approve && reason.trim().is_empty() {
            return Err(Error::invalid("a rejection must give its reason"));
        }
        if approve {
            self.check_request(catalog, &r)?;
        }
        self.next_id += 1;
        let id = self.next_id;
        let grant = approve.then(|| {
            self.insert_grant(r.clone(), Origin::Approval(id), approver, now)
                .id
        });
        let ap = Approval {
            id,
            request: r,
            approver: approver.into(),
            approved: approve,
            reason: reason.into(),
            decided_at: now,
            grant,
            application: None,
        };
        self.approvals.insert(id, ap.clone());
        Ok(ap)
    }

    /// Revoke a grant; takes effect on the next query of every session.
    pub fn revoke(&mut self, grant: u64, by: &str, reason: &str, now: DateTime<Utc>) -> Result<()> {
        let g = self
            .grants
            .get_mut(&grant)
            .ok_or_else(|| Error::NotFound(format!("grant {grant}")))?;
        g.revoked = Some((by.into(), now, reason.into()));
        Ok(())
    }

    /// Add or replace a department.
    pub fn upsert_department(&mut self, d: Department) -> Result<()> {
        if d.code.trim().is_empty() || d.name.trim().is_empty() {
            return Err(Error::invalid("a department needs a code and a name"));
        }
        crate::ident::validate_region_code(&d.region)
            .map_err(|e| Error::invalid(format!("department region: {e}")))?;
        self.departments.insert(d.code.clone(), d);
        Ok(())
    }

    /// Add or replace a user.
    pub fn upsert_user(&mut self, u: User) -> Result<()> {
        if u.id.trim().is_empty() || u.name.trim().is_empty() {
            return Err(Error::invalid("a user needs an id and a real name"));
        }
        if !self.departments.contains_key(&u.department) {
            return Err(Error::NotFound(format!("department '{}'", u.department)));
        }
        check_roles(&u)?;
        self.users.insert(u.id.clone(), u);
        Ok(())
    }
}
