//! Principals and grants: departments, users, grant requests, approvals, rejections,
//! revocations.

use std::path::Path;

use govshare_core::Error;
use govshare_core::access::policy::{
    AggregateTerms, Department, ExportTerms, FieldGrant, GrantRequest, HostSystem, Mode, Origin,
    PrincipalStatus, Role, RowScope, Treatment, User, VerifyTerms,
};
use govshare_core::catalog::MaskKind;

use super::args::*;

pub(super) fn parse_role(r: &str) -> Result<Role, Error> {
    Role::parse(r)
}

pub(super) fn parse_mask(m: &str) -> Result<MaskKind, Error> {
    serde_json::from_value(serde_json::Value::String(m.to_string()))
        .map_err(|_| Error::invalid(format!("unknown mask '{m}' (citizen_id, name, phone, address, date_to_year, nullify, pseudonym)")))
}

/// Fields as the command line spells them: `name` (clear) or `name:mask`.
pub(super) fn parse_fields(fields: &[String]) -> Result<Vec<FieldGrant>, Error> {
    fields
        .iter()
        .map(|f| {
            Ok(match f.split_once(':') {
                None => FieldGrant {
                    field: f.trim().to_string(),
                    treatment: Treatment::Clear,
                },
                Some((n, m)) => FieldGrant {
                    field: n.trim().to_string(),
                    treatment: Treatment::of(parse_mask(m.trim())?),
                },
            })
        })
        .collect()
}

/// Verify limits as the command line spells them: `10,1000,3` or `10,1000,3,disclose`.
fn parse_verify(s: &str) -> Result<VerifyTerms, Error> {
    let bad = || {
        Error::invalid(format!(
            "--verify takes PER_SECOND,PER_DAY,PER_SUBJECT_PER_DAY[,disclose], not '{s}'"
        ))
    };
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let num = |i: usize| -> Result<u32, Error> {
        parts.get(i).and_then(|p| p.parse().ok()).ok_or_else(bad)
    };
    let disclose = match parts.get(3) {
        None => false,
        Some(&"disclose") => true,
        Some(_) => return Err(bad()),
    };
    if parts.len() > 4 {
        return Err(bad());
    }
    Ok(VerifyTerms {
        per_second: num(0)?,
        per_day: num(1)?,
        per_subject_per_day: num(2)?,
        disclose_absence: disclose,
    })
}

/// Aggregate limits as the command line spells them: `MIN_GROUP,PER_DAY`.
fn parse_aggregate(s: &str) -> Result<AggregateTerms, Error> {
    let bad = || Error::invalid(format!("--aggregate takes MIN_GROUP,PER_DAY, not '{s}'"));
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    match parts[..] {
        [min, day] => Ok(AggregateTerms {
            min_group: min.parse().map_err(|_| bad())?,
            per_day: day.parse().map_err(|_| bad())?,
        }),
        _ => Err(bad()),
    }
}

/// Export limits as the command line spells them: `MAX_ROWS,PER_DAY`.
fn parse_export(s: &str) -> Result<ExportTerms, Error> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    match parts[..] {
        [rows, day] => match (rows.parse(), day.parse()) {
            (Ok(max_rows), Ok(per_day)) => Ok(ExportTerms { max_rows, per_day }),
            _ => Err(Error::invalid(format!(
                "--export takes MAX_ROWS,PER_DAY, not '{s}'"
            ))),
        },
        _ => Err(Error::invalid(format!(
            "--export takes MAX_ROWS,PER_DAY, not '{s}'"
        ))),
    }
}

impl GrantArgs {
    pub(super) fn request(&self) -> Result<GrantRequest, Error> {
        let fields = parse_fields(&self.fields)?;
        let now = chrono::Utc::now();
        let verify = self.verify.as_deref().map(parse_verify).transpose()?;
        let export = self.export.as_deref().map(parse_export).transpose()?;
        let aggregate = self.aggregate.as_deref().map(parse_aggregate).transpose()?;
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
            modes: vec![match (&verify, &export, &aggregate) {
                (Some(_), _, _) => Mode::Verify,
                (_, Some(_), _) => Mode::Export,
                (_, _, Some(_)) => Mode::Aggregate,
                _ => Mode::Query,
            }],
            verify,
            export,
            aggregate,
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
            out!("department {code} added");
        }
        DeptCmd::Suspend { code, by } => {
            engine()?.set_department_status(&by, &code, PrincipalStatus::Suspended)?
        }
        DeptCmd::Activate { code, by } => {
            engine()?.set_department_status(&by, &code, PrincipalStatus::Active)?
        }
        DeptCmd::List { by } => {
            for d in engine()?.policy(&by)?.departments.values() {
                out!(
                    "{:<12} {:<20} region {} {}",
                    d.code,
                    d.name,
                    d.region,
                    status_label(d.status)
                );
            }
        }
    }
    Ok(())
}

pub(super) fn system_cmd(store: &Path, action: SystemCmd) -> Result<(), Error> {
    let engine = govshare_core::Engine::open(store)?;
    match action {
        SystemCmd::Add { id, name, dept, by } => {
            engine.upsert_system(
                &by,
                HostSystem {
                    id: id.clone(),
                    name,
                    department: dept,
                    status: PrincipalStatus::Active,
                },
            )?;
            out!("host system {id} registered");
        }
        SystemCmd::Suspend { id, by } => {
            engine.set_system_status(&by, &id, PrincipalStatus::Suspended)?;
            out!("host system {id} suspended");
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
            out!("user {id} added");
        }
        UserCmd::Suspend { id, by } => {
            govshare_core::Engine::open(store)?.set_user_status(
                &by,
                &id,
                PrincipalStatus::Suspended,
            )?;
            out!("user {id} suspended");
        }
        UserCmd::List { by } => {
            for u in govshare_core::Engine::open(store)?
                .policy(&by)?
                .users
                .values()
            {
                let roles: Vec<&str> = u.roles.iter().map(|r| r.label()).collect();
                out!(
                    "{:<12} {:<8} {:<12} {:<40} {}",
                    u.id,
                    u.name,
                    u.department,
                    roles.join(", "),
                    status_label(u.status)
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
            out!("grant {} created", g.id);
        }
        GrantCmd::Approve(a) => {
            let ap = engine()?.decide_request(&a.by, a.request()?, true, "")?;
            match ap.grant {
                Some(g) => out!("approval {} created grant {g}", ap.id),
                None => out!("approval {} recorded", ap.id),
            }
        }
        GrantCmd::Reject { args, reason } => {
            let ap = engine()?.decide_request(&args.by, args.request()?, false, &reason)?;
            out!("request rejected (approval record {})", ap.id);
        }
        GrantCmd::Revoke { id, by, reason } => {
            engine()?.revoke_grant(&by, id, &reason)?;
            out!("grant {id} revoked");
        }
        GrantCmd::List { by } => {
            let policy = engine()?.policy(&by)?;
            for g in policy.grants.values() {
                print_grant(g);
            }
            for a in policy.approvals.values() {
                let r = &a.request;
                let verdict = match (a.approved, a.grant) {
                    (true, Some(g)) => format!("approved, grant {g}"),
                    _ => format!("rejected: {}", a.reason),
                };
                out!(
                    "approval {} by {} on {}: {} → {} for {} — {verdict}",
                    a.id,
                    a.approver,
                    a.decided_at.format("%Y-%m-%d %H:%M"),
                    r.dataset,
                    r.consumer_dept,
                    r.purpose_code
                );
            }
        }
    }
    Ok(())
}

fn status_label(s: PrincipalStatus) -> &'static str {
    match s {
        PrincipalStatus::Active => "active",
        PrincipalStatus::Suspended => "suspended",
    }
}

/// The snake_case name a mask has in catalogs and on the command line.
fn mask_label(m: MaskKind) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// One grant, as people read it: who gets what, why, which rows, until when, from whom.
fn print_grant(g: &govshare_core::access::policy::Grant) {
    let r = &g.request;
    let fields: Vec<String> = r
        .fields
        .iter()
        .map(|f| match f.treatment {
            Treatment::Clear => f.field.clone(),
            Treatment::Masked(m) => format!("{} (masked: {})", f.field, mask_label(m)),
        })
        .collect();
    let rows = match (&r.scope.regions, &r.scope.subjects) {
        (None, None) => "all rows".to_string(),
        (Some(re), None) => format!("regions {}", re.join(", ")),
        (None, Some(su)) => format!("{} listed subjects", su.len()),
        (Some(re), Some(su)) => format!("regions {} ∩ {} listed subjects", re.join(", "), su.len()),
    };
    let users = if r.users.is_empty() {
        format!("every user of {}", r.consumer_dept)
    } else {
        r.users.join(", ")
    };
    let origin = match g.origin {
        Origin::Request => format!("on request, by {}", g.created_by),
        Origin::Approval(a) => format!("approved by {} (approval {a})", g.created_by),
        Origin::Application(a) => format!("granted at once for application {a}"),
        Origin::Renewal { agreement, of } => {
            format!("renews grant {of} under agreement {agreement}")
        }
    };
    let modes: Vec<String> = r
        .modes
        .iter()
        .map(|m| format!("{m:?}").to_lowercase())
        .collect();
    out!(
        "grant {}: {} may read {} for purpose {} ({})",
        g.id,
        r.consumer_dept,
        r.dataset,
        r.purpose_code,
        r.purpose_text
    );
    out!("    fields: {}", fields.join(", "));
    out!(
        "    rows:   {rows}; users: {users}; modes: {}",
        modes.join(", ")
    );
    out!(
        "    valid:  {} to {}; {origin}",
        r.valid_from.format("%Y-%m-%d"),
        r.valid_until.format("%Y-%m-%d")
    );
    if let Some((by, at, reason)) = &g.revoked {
        out!(
            "    REVOKED {} by {by}: {reason}",
            at.format("%Y-%m-%d %H:%M")
        );
    }
}
