//! Who may do what: the role each act needs, separation of duties (003 §11: 审批、操作、核验
//! 分离), and the check of every policy change *by its effect*.
//!
//! A policy change is an edit of a copy of the policy document; [`Policy::authorize_change`]
//! compares the copy with the original and asks, for every difference, whether the author may
//! make it. So whatever code made the edit — a CLI command, a binding, a test fixture — the
//! document that gets committed is one its author was allowed to produce: no grant can appear
//! that its approver did not decide, no user can gain a role but from a platform
//! administrator, and nobody edits their own account.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::access::masks::{LINKAGES, at_least};
use crate::catalog::{Catalog, MaskKind, ShareType};
use crate::error::{Error, Result};
use crate::store::{Act, Authorizer, Store};

use super::{Approval, Grant, Origin, Policy, Role, Treatment, User, denied};

impl Role {
    /// The role's name as the command line and the messages spell it.
    pub fn label(self) -> &'static str {
        match self {
            Role::Consumer => "consumer",
            Role::ProviderApprover => "provider-approver",
            Role::PlatformAdmin => "platform-admin",
            Role::Auditor => "auditor",
            Role::Coordinator => "coordinator",
            Role::Operator => "operator",
            Role::Public => "public",
        }
    }

    /// Every role, in the order the messages list them.
    pub const ALL: [Role; 7] = [
        Role::Consumer,
        Role::ProviderApprover,
        Role::PlatformAdmin,
        Role::Auditor,
        Role::Coordinator,
        Role::Operator,
        Role::Public,
    ];

    /// Parse a role name (`provider-approver` or `provider_approver`).
    pub fn parse(s: &str) -> Result<Role> {
        let s = s.trim().replace('_', "-");
        Role::ALL
            .into_iter()
            .find(|r| r.label() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown role '{s}' ({})",
                    Role::ALL.map(Role::label).join(", ")
                ))
            })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl Treatment {
    /// The mask this treatment applies (`Clear` for clear; `Masked(Clear)` is clear too).
    pub fn mask(self) -> MaskKind {
        match self {
            Treatment::Clear => MaskKind::Clear,
            Treatment::Masked(m) => m,
        }
    }

    /// The treatment applying `mask`, spelt canonically (`Masked(Clear)` becomes `Clear`).
    pub fn of(mask: MaskKind) -> Treatment {
        match mask {
            MaskKind::Clear => Treatment::Clear,
            m => Treatment::Masked(m),
        }
    }
}

/// Who has touched each dataset, for separation of duties: the authors of catalog versions
/// that added or changed it, and the operators who committed its data versions.
#[derive(Debug, Clone, Default)]
pub struct Stewards {
    /// Dataset → authors of catalog changes to it.
    pub catalog_authors: BTreeMap<String, BTreeSet<String>>,
    /// Dataset → operators who committed its versions still on disk.
    pub committers: BTreeMap<String, BTreeSet<String>>,
}

impl Stewards {
    /// Read them from the store's catalog history and manifests.
    pub fn of(store: &Store) -> Result<Stewards> {
        let mut s = Stewards::default();
        let mut prev = Catalog::default();
        for v in store.catalog_history()? {
            for d in crate::catalog::changed_datasets(&prev, &v.catalog) {
                s.catalog_authors
                    .entry(d)
                    .or_default()
                    .insert(v.author.clone());
            }
            prev = v.catalog;
        }
        for name in prev.datasets.keys() {
            for m in store.versions(name)? {
                if !m.committed_by.is_empty() {
                    s.committers
                        .entry(name.clone())
                        .or_default()
                        .insert(m.committed_by);
                }
            }
        }
        Ok(s)
    }
}

impl Policy {
    /// The active user `user` (of an active department) holding `role`, or a denial that says
    /// which role `act` needs and what the user holds.
    pub fn require(&self, user: &str, role: Role, act: &str) -> Result<&User> {
        let (u, _) = self.active_user(user)?;
        if !u.roles.contains(&role) {
            let held = u.roles.iter().map(|r| r.label()).collect::<Vec<_>>();
            return Err(denied(format!(
                "user '{user}' may not {act}: that needs the {role} role, and '{user}' holds {}",
                if held.is_empty() {
                    "none".to_string()
                } else {
                    held.join(", ")
                }
            )));
        }
        Ok(u)
    }

    /// The policy as `user` may see it: platform administrators, coordinators and auditors the
    /// whole document; anyone else every department (codes and names are not secret), the
    /// users of their own department, and the grants and approvals that concern it — as
    /// consumer, or as provider of the dataset when they approve for it.
    pub fn view_for(&self, user: &str, catalog: &Catalog) -> Result<Policy> {
        let (u, _) = self.active_user(user)?;
        let overseer = [Role::PlatformAdmin, Role::Coordinator, Role::Auditor]
            .iter()
            .any(|r| u.roles.contains(r));
        if overseer {
            return Ok(self.clone());
        }
        let dept = u.department.clone();
        let approver = u.roles.contains(&Role::ProviderApprover);
        let concerns = |r: &super::GrantRequest, provider: Option<&str>| {
            r.consumer_dept == dept || approver && provider == Some(dept.as_str())
        };
        let provider_of = |g: &super::GrantRequest| {
            catalog
                .dataset(&g.dataset)
                .ok()
                .map(|d| d.provider.as_str())
        };
        Ok(Policy {
            departments: self.departments.clone(),
            users: self
                .users
                .iter()
                .filter(|(_, x)| x.department == dept)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            systems: self
                .systems
                .iter()
                .filter(|(_, x)| x.department == dept)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            grants: self
                .grants
                .iter()
                .filter(|(_, g)| concerns(&g.request, provider_of(&g.request)))
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            approvals: self
                .approvals
                .iter()
                .filter(|(_, a)| concerns(&a.request, provider_of(&a.request)))
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            applications: self
                .applications
                .iter()
                .filter(|(_, a)| concerns(&a.request, provider_of(&a.request)))
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            objections: self
                .objections
                .iter()
                .filter(|(_, o)| o.department == dept || approver && o.provider == dept)
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            agreements: self
                .agreements
                .iter()
                .filter(|(_, a)| a.consumer_dept == dept || approver && a.provider == dept)
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            reclassifications: self
                .reclassifications
                .iter()
                .filter(|(_, r)| {
                    self.applications
                        .get(&r.application)
                        .is_some_and(|a| a.request.consumer_dept == dept)
                })
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            // Resolutions concern sources: an approver sees their department's.
            resolutions: BTreeMap::new(),
            next_id: self.next_id,
        })
    }

    /// Whether `actor` may do the storage act `act`: operators load, compact and vacuum;
    /// platform administrators change the catalog; coordinators reclassify items.
    pub fn authorize_act(&self, actor: &str, act: &Act<'_>) -> Result<()> {
        let role = match act {
            Act::Load { .. }
            | Act::Compact { .. }
            | Act::Vacuum { .. }
            | Act::ChangeCalendar { .. }
            | Act::Backup
            | Act::Restore => Role::Operator,
            Act::ChangeCatalog { .. } | Act::ChangeSettings => Role::PlatformAdmin,
            Act::Reclassify { .. } => Role::Coordinator,
        };
        self.require(actor, role, &act.to_string()).map(drop)
    }

    /// Whether `author` may turn this policy into `after`. Every difference is checked:
    /// departments and users (platform administrators, never one's own account), approvals
    /// (the providing department's approver, with separation of duties), grants (made by the
    /// approval that created them or on request by a platform administrator, at least the
    /// catalog's default masks, no linkage that undoes a mask), revocations (a platform
    /// administrator or the provider's approver). Records are never changed or removed.
    pub fn authorize_change(
        &self,
        after: &Policy,
        author: &str,
        catalog: &Catalog,
        stewards: &Stewards,
        facts: &super::Facts,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.active_user(author)?;
        for (code, d) in &self.departments {
            match after.departments.get(code) {
                None => {
                    return Err(denied(format!(
                        "department '{code}' cannot be removed: departments are suspended, never deleted (grants and records name them)"
                    )));
                }
                Some(n) if n != d => {
                    self.require(author, Role::PlatformAdmin, "change departments")?;
                }
                _ => {}
            }
        }
        if after.departments.len() > self.departments.len() {
            self.require(author, Role::PlatformAdmin, "add departments")?;
        }
        if after.systems != self.systems {
            self.require(
                author,
                Role::PlatformAdmin,
                "register or change host systems",
            )?;
            if let Some(id) = self
                .systems
                .keys()
                .find(|id| !after.systems.contains_key(*id))
            {
                return Err(denied(format!(
                    "host system '{id}' cannot be removed: systems are suspended, never deleted (records name them)"
                )));
            }
        }
        if let Some(id) = self.users.keys().find(|id| !after.users.contains_key(*id)) {
            return Err(denied(format!(
                "user '{id}' cannot be removed: accounts are suspended, never deleted (records name them)"
            )));
        }
        for (id, u) in &after.users {
            if self.users.get(id) == Some(u) {
                continue;
            }
            self.require(author, Role::PlatformAdmin, "add or change users")?;
            if id == author {
                return Err(denied(format!(
                    "user '{author}' may not change their own account, roles or status: another platform administrator must"
                )));
            }
            super::check_roles(u)?;
        }
        for (id, a) in &self.approvals {
            if after.approvals.get(id) != Some(a) {
                return Err(denied(format!(
                    "approval {id} is a record: it is never changed or removed"
                )));
            }
        }
        for (id, a) in &after.approvals {
            if !self.approvals.contains_key(id) {
                self.check_decision(a, author, catalog, stewards)?;
            }
        }
        for (id, g) in &self.grants {
            match after.grants.get(id) {
                None => {
                    return Err(denied(format!(
                        "grant {id} cannot be removed: grants are revoked, never deleted"
                    )));
                }
                Some(h) if h == g => {}
                Some(h) => self.check_revocation(g, h, author, catalog)?,
            }
        }
        for (id, g) in &after.grants {
            if !self.grants.contains_key(id) {
                self.check_new_grant(after, g, author, catalog, now)?;
            }
        }
        self.check_workflows(after, author, catalog, facts, now)
    }

    fn check_decision(
        &self,
        a: &Approval,
        author: &str,
        catalog: &Catalog,
        stewards: &Stewards,
    ) -> Result<()> {
        if a.approver != author {
            return Err(denied(format!(
                "approval {} names '{}' as its approver, but '{author}' is making the change",
                a.id, a.approver
            )));
        }
        let r = &a.request;
        if let Some(app) = a.application
            && self.check_application_decision(a, app, author)?.is_some()
        {
            // Decided by the coordinator on escalation or dispute: checked there.
            return Ok(());
        }
        let me = self.require(
            author,
            Role::ProviderApprover,
            &format!("decide requests for '{}'", r.dataset),
        )?;
        let def = catalog.dataset(&r.dataset)?;
        if me.department != def.provider {
            return Err(denied(format!(
                "user '{author}' of department '{}' may not decide requests for '{}': its provider is department '{}' (approvers are matched by department code)",
                me.department, def.name, def.provider
            )));
        }
        if !a.approved {
            if a.reason.trim().is_empty() {
                return Err(Error::invalid("a rejection must give its reason"));
            }
            return Ok(());
        }
        let sod = "separation of duties (003 §11: approval, operation and checking stay apart)";
        if me.department == r.consumer_dept {
            return Err(denied(format!(
                "{sod}: user '{author}' may not approve a grant for their own department '{}'",
                r.consumer_dept
            )));
        }
        let touched = |m: &BTreeMap<String, BTreeSet<String>>| {
            m.get(&r.dataset).is_some_and(|s| s.contains(author))
        };
        if touched(&stewards.catalog_authors) {
            return Err(denied(format!(
                "{sod}: user '{author}' authored a catalog change of '{}' and may not approve access to it",
                r.dataset
            )));
        }
        if touched(&stewards.committers) {
            return Err(denied(format!(
                "{sod}: user '{author}' loaded data into '{}' as its operator and may not approve access to it",
                r.dataset
            )));
        }
        Ok(())
    }

    fn check_revocation(
        &self,
        g: &Grant,
        h: &Grant,
        author: &str,
        catalog: &Catalog,
    ) -> Result<()> {
        let mut unrevoked = h.clone();
        unrevoked.revoked = None;
        let Some((by, _, reason)) = &h.revoked else {
            return Err(denied(format!(
                "grant {} cannot be changed or reinstated: make a new grant",
                g.id
            )));
        };
        if g.revoked.is_some() || unrevoked != *g {
            return Err(denied(format!(
                "grant {} cannot be changed after it is made: revoke it and make a new one",
                g.id
            )));
        }
        if by != author {
            return Err(denied(format!(
                "the revocation of grant {} names '{by}', but '{author}' is making the change",
                g.id
            )));
        }
        if reason.trim().is_empty() {
            return Err(Error::invalid("a revocation must give its reason"));
        }
        let (u, _) = self.active_user(author)?;
        let provider = catalog
            .dataset(&g.request.dataset)
            .map(|d| d.provider.clone())
            .unwrap_or_default();
        let approver_of_provider =
            u.roles.contains(&Role::ProviderApprover) && u.department == provider;
        if !u.roles.contains(&Role::PlatformAdmin) && !approver_of_provider {
            return Err(denied(format!(
                "user '{author}' may not revoke grant {}: that needs the platform-admin role or the provider-approver role in department '{provider}'",
                g.id
            )));
        }
        Ok(())
    }

    fn check_new_grant(
        &self,
        after: &Policy,
        g: &Grant,
        author: &str,
        catalog: &Catalog,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if g.created_by != author || g.revoked.is_some() {
            return Err(denied(format!(
                "grant {} names '{}' as its maker, but '{author}' is making the change",
                g.id, g.created_by
            )));
        }
        let def = after.check_request(catalog, &g.request)?;
        match g.origin {
            Origin::Request => {
                self.require(author, Role::PlatformAdmin, "grant on request")?;
                for fg in &g.request.fields {
                    let f = def.require_field(&fg.field)?;
                    if f.share != ShareType::Unconditional {
                        return Err(denied(format!(
                            "{}.{} is {}",
                            def.name,
                            f.name,
                            super::how_to_obtain(f.share)
                        )));
                    }
                    if !at_least(fg.treatment.mask(), f.mask) {
                        return Err(denied(format!(
                            "a request gets at least the catalog's default mask: {}.{} is shown as {:?} at least, and {:?} does not hide that much",
                            def.name,
                            f.name,
                            f.mask,
                            fg.treatment.mask()
                        )));
                    }
                }
            }
            Origin::Approval(aid) => {
                let fresh = !self.approvals.contains_key(&aid);
                let backed = after.approvals.get(&aid).is_some_and(|a| {
                    fresh
                        && a.approved
                        && a.approver == author
                        && a.grant == Some(g.id)
                        && a.request == g.request
                });
                if !backed {
                    return Err(denied(format!(
                        "grant {} claims approval {aid}, which is not a new approval of exactly this request by '{author}'",
                        g.id
                    )));
                }
            }
            Origin::Application(_) | Origin::Renewal { .. } => {
                self.check_workflow_grant(after, g, author)?;
            }
        }
        after.check_linkage(g, now)
    }

    /// The linkage rule: the grant, together with the department's other valid grants of the
    /// same dataset for the same purpose, must not show in clear a field that gives back what
    /// one of its masks hides (see [`LINKAGES`]).
    pub fn check_linkage(&self, g: &Grant, now: DateTime<Utc>) -> Result<()> {
        let r = &g.request;
        let together: Vec<&Grant> = self
            .grants
            .values()
            .filter(|o| {
                o.id == g.id
                    || o.revoked.is_none()
                        && o.request.consumer_dept == r.consumer_dept
                        && o.request.purpose_code == r.purpose_code
                        && o.request.dataset == r.dataset
                        && now < o.request.valid_until
            })
            .collect();
        let fields = || {
            together
                .iter()
                .flat_map(|o| o.request.fields.iter().map(move |f| (o.id, f)))
        };
        for l in LINKAGES {
            for (masked_in, masked) in fields().filter(|(_, f)| f.treatment.mask() == l.mask) {
                let clear = fields().find(|(_, f)| {
                    l.derived_by.contains(&f.field.as_str())
                        && f.treatment.mask() == MaskKind::Clear
                });
                if let Some((clear_in, d)) = clear {
                    let other = [masked_in, clear_in].into_iter().find(|id| *id != g.id);
                    return Err(denied(format!(
                        "linkage rule: {ds}.{m} masked as {mask:?} hides {hides}, and {ds}.{d} in clear gives it back{within}; grant {d} masked (date_to_year) or {m} as a pseudonym",
                        ds = r.dataset,
                        m = masked.field,
                        d = d.field,
                        mask = l.mask,
                        hides = l.hides,
                        within = match other {
                            None => String::new(),
                            Some(o) => format!(
                                " (together with grant {o} of department '{}' for purpose '{}')",
                                r.consumer_dept, r.purpose_code
                            ),
                        },
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The policy as the store's writers' authoriser: each storage act is decided on the policy
/// current when the writer asks (under the writer lock, so it cannot change in between).
pub(crate) struct PolicyAuthorizer;

impl Authorizer for PolicyAuthorizer {
    fn authorize(&self, store: &Store, actor: &str, act: &Act<'_>) -> Result<()> {
        store.policy()?.authorize_act(actor, act)
    }
}
