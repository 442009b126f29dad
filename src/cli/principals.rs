//! Principals and grants: departments, users, grant requests, approvals, rejections,
//! revocations.

use std::path::Path;

use govshare_core::access::policy::{
    Department, FieldGrant, GrantRequest, Mode, PrincipalStatus, Role, RowScope, Treatment, User,
};
use govshare_core::catalog::MaskKind;
use govshare_core::{Error, Store};

use super::args::*;

pub(super) fn parse_role(r: &str) -> Result<Role, Error> {
    Ok(match r.trim() {
        "consumer" => Role::Consumer,
        "provider-approver" | "provider_approver" => Role::ProviderApprover,
        "platform-admin" | "platform_admin" => Role::PlatformAdmin,
        "auditor" => Role::Auditor,
        "coordinator" => Role::Coordinator,
        other => {
            return Err(Error::invalid(format!(
                "unknown role '{other}' (consumer, provider-approver, platform-admin, auditor, coordinator)"
            )));
        }
    })
}

pub(super) fn parse_mask(m: &str) -> Result<MaskKind, Error> {
    serde_json::from_value(serde_json::Value::String(m.to_string()))
        .map_err(|_| Error::invalid(format!("unknown mask '{m}' (citizen_id, name, phone, address, date_to_year, nullify, pseudonym)")))
}

impl GrantArgs {
    fn request(&self) -> Result<GrantRequest, Error> {
        let fields = self
            .fields
            .iter()
            .map(|f| {
                Ok(match f.split_once(':') {
                    None => FieldGrant {
                        field: f.trim().to_string(),
                        treatment: Treatment::Clear,
                    },
                    Some((n, m)) => FieldGrant {
                        field: n.trim().to_string(),
                        treatment: Treatment::Masked(parse_mask(m.trim())?),
                    },
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let now = chrono::Utc::now();
        Ok(GrantRequest {
            consumer_dept: self.dept.clone(),
            users: self.users.clone(),
            dataset: self.dataset.clone(),
            fields,
            purpose_code: self.purpose.clone(),
            purpose_text: self.purpose_text.clone(),
            scope: RowScope {
                regions: self.regions.clone(),
                subjects: self.subjects.clone(),
            },
            modes: vec![Mode::Query],
            valid_from: now,
            valid_until: now + chrono::Duration::days(self.days),
        })
    }
}

pub(super) fn dept_cmd(store: &Path, action: DeptCmd) -> Result<(), Error> {
    let engine = || govshare_core::Engine::open(store);
    match action {
        DeptCmd::Add {
            code,
            name,
            region,
            by,
        } => {
            engine()?.upsert_department(
                &by,
                Department {
                    code: code.clone(),
                    name,
                    region,
                    status: PrincipalStatus::Active,
                },
            )?;
            println!("department {code} added");
        }
        DeptCmd::Suspend { code, by } => {
            engine()?.set_department_status(&by, &code, PrincipalStatus::Suspended)?
        }
        DeptCmd::Activate { code, by } => {
            engine()?.set_department_status(&by, &code, PrincipalStatus::Active)?
        }
        DeptCmd::List => {
            for d in Store::open(store)?.policy()?.departments.values() {
                println!(
                    "{:<12} {:<20} region {} {:?}",
                    d.code, d.name, d.region, d.status
                );
            }
        }
    }
    Ok(())
}

pub(super) fn user_cmd(store: &Path, action: UserCmd) -> Result<(), Error> {
    match action {
        UserCmd::Add {
            id,
            name,
            dept,
            roles,
            by,
        } => {
            let roles = roles
                .iter()
                .map(|r| parse_role(r))
                .collect::<Result<Vec<_>, _>>()?;
            govshare_core::Engine::open(store)?.upsert_user(
                &by,
                User {
                    id: id.clone(),
                    name,
                    department: dept,
                    roles,
                    status: PrincipalStatus::Active,
                },
            )?;
            println!("user {id} added");
        }
        UserCmd::Suspend { id, by } => {
            govshare_core::Engine::open(store)?.set_user_status(
                &by,
                &id,
                PrincipalStatus::Suspended,
            )?;
            println!("user {id} suspended");
        }
        UserCmd::List => {
            for u in Store::open(store)?.policy()?.users.values() {
                println!(
                    "{:<12} {:<8} {:<12} {:?} {:?}",
                    u.id, u.name, u.department, u.roles, u.status
                );
            }
        }
    }
    Ok(())
}

pub(super) fn grant_cmd(store: &Path, action: GrantCmd) -> Result<(), Error> {
    let engine = || govshare_core::Engine::open(store);
    match action {
        GrantCmd::Request(a) => {
            let g = engine()?.request_grant(&a.by, a.request()?)?;
            println!("grant {} created", g.id);
        }
        GrantCmd::Approve(a) => {
            let ap = engine()?.decide_request(&a.by, a.request()?, true, "")?;
            println!("approval {} created grant {:?}", ap.id, ap.grant);
        }
        GrantCmd::Reject { args, reason } => {
            let ap = engine()?.decide_request(&args.by, args.request()?, false, &reason)?;
            println!("request rejected (approval record {})", ap.id);
        }
        GrantCmd::Revoke { id, by, reason } => {
            engine()?.revoke_grant(&by, id, &reason)?;
            println!("grant {id} revoked");
        }
        GrantCmd::List => {
            for g in Store::open(store)?.policy()?.grants.values() {
                let r = &g.request;
                println!(
                    "grant {:<4} {} → {} on {} for {} ({}) fields {:?} scope {:?} until {} {:?}{}",
                    g.id,
                    r.dataset,
                    r.consumer_dept,
                    r.dataset,
                    r.purpose_code,
                    r.purpose_text,
                    r.fields
                        .iter()
                        .map(|f| match f.treatment {
                            Treatment::Clear => f.field.clone(),
                            Treatment::Masked(m) => format!("{}:{m:?}", f.field),
                        })
                        .collect::<Vec<_>>(),
                    r.scope,
                    r.valid_until.format("%Y-%m-%d"),
                    g.origin,
                    if g.revoked.is_some() { " REVOKED" } else { "" }
                );
            }
        }
    }
    Ok(())
}
