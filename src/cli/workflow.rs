//! Workflow commands: the service catalog, applications, objections, agreements,
//! escalation, conflicts, calendar years, any act as JSON, and reports. Each builds a
//! `WorkflowAct` (or a read) and calls the engine; the policy decides.

use std::path::Path;

use govshare_core::access::policy::{AppDecision, ApplicationForm};
use govshare_core::engine::{Engine, WorkflowAct as Act, WorkflowOutcome};
use govshare_core::{Error, QueryResult};

use super::args::*;
use super::principals::parse_fields;

/// JSON of a value (the types here always serialise; a failure is an internal error).
fn json(v: &impl serde::Serialize) -> Result<String, Error> {
    serde_json::to_string_pretty(v).map_err(|e| Error::internal(e.to_string()))
}

fn print_outcome(o: &WorkflowOutcome) -> Result<(), Error> {
    out!("{}", json(o)?);
    Ok(())
}

fn act(engine: &Engine, by: &str, a: Act) -> Result<(), Error> {
    print_outcome(&engine.act(by, a)?)
}

pub(super) fn services(store: &Path, by: &str, as_json: bool) -> Result<(), Error> {
    let entries = Engine::open(store)?.service_catalog(by)?;
    if as_json {
        out!("{}", json(&entries)?);
        return Ok(());
    }
    for e in entries {
        out!(
            "{} {} — provider {}, version {}, last update {}, updated {}, decided within {} working days, objections answered within {}",
            e.dataset,
            e.label,
            e.provider,
            e.version,
            e.last_update
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "never".into()),
            e.update_frequency,
            e.approval_days,
            e.objection_days
        );
        for i in e.items {
            let share = json(&i.share)?;
            let held = match i.held {
                Some(t) => format!("held ({})", json(&t)?.replace('\n', "")),
                None => String::new(),
            };
            out!(
                "    {:<22} {:<10} {:<14} {:?} source {:<6} {held}",
                i.name,
                i.label,
                share.trim_matches('"'),
                i.grade,
                i.source
            );
        }
    }
    Ok(())
}

pub(super) fn application(store: &Path, action: AppCmd) -> Result<(), Error> {
    let engine = Engine::open(store)?;
    match action {
        AppCmd::Apply { grant, legal_basis } => {
            let form = ApplicationForm {
                request: grant.request()?,
                legal_basis,
            };
            act(&engine, &grant.by, Act::Apply { form })
        }
        AppCmd::Step {
            id,
            step,
            reason,
            by,
        } => {
            let a = match step {
                StepArg::Complete => Act::Complete { application: id },
                StepArg::Return => Act::Return {
                    application: id,
                    reason,
                },
                StepArg::Resubmit => Act::Resubmit { application: id },
                StepArg::Withdraw => Act::Withdraw {
                    application: id,
                    reason,
                },
                StepArg::Dispute => Act::Dispute {
                    application: id,
                    reason,
                },
                StepArg::HandBack => Act::HandBack {
                    application: id,
                    reason,
                },
            };
            act(&engine, &by, a)
        }
        AppCmd::Decide {
            id,
            reject,
            reason,
            fields,
            days,
            by,
        } => {
            let decision = AppDecision {
                approve: !reject,
                reason,
                fields: fields.as_deref().map(parse_fields).transpose()?,
                scope: None,
                valid_until: days.map(|d| engine.now() + chrono::Duration::days(d)),
            };
            act(
                &engine,
                &by,
                Act::Decide {
                    application: id,
                    decision,
                },
            )
        }
        AppCmd::List { by } => {
            let today = govshare_core::calendar::beijing_date(engine.now());
            for a in engine.policy(&by)?.applications.values() {
                let due = match a.due {
                    Some(d) if a.state.is_open() && today > d => format!("due {d} (OVERDUE)"),
                    Some(d) => format!("due {d}"),
                    None => String::new(),
                };
                out!(
                    "application {} by {} ({}) for {}: {} received {} {due}",
                    a.id,
                    a.applicant,
                    a.request.consumer_dept,
                    a.request.dataset,
                    a.state.label(),
                    a.received
                );
                for t in &a.history {
                    out!(
                        "    {} {:<13} by {:<10} {}",
                        t.at.with_timezone(&govshare_core::calendar::beijing())
                            .format("%Y-%m-%d %H:%M %:z"),
                        t.to.label(),
                        t.by,
                        t.reason
                    );
                }
            }
            Ok(())
        }
    }
}

pub(super) fn objection(store: &Path, action: ObjectionCmd) -> Result<(), Error> {
    let engine = Engine::open(store)?;
    match action {
        ObjectionCmd::File {
            dataset,
            key,
            field,
            description,
            discovered,
            by,
        } => {
            let discovered_on =
                discovered.unwrap_or_else(|| govshare_core::calendar::beijing_date(engine.now()));
            act(
                &engine,
                &by,
                Act::FileObjection {
                    dataset,
                    key,
                    field,
                    description,
                    discovered_on,
                },
            )
        }
        ObjectionCmd::Extend {
            id,
            days,
            reason,
            by,
        } => act(
            &engine,
            &by,
            Act::RequestExtension {
                objection: id,
                days,
                reason,
            },
        ),
        ObjectionCmd::SignOff { id, reason, by } => act(
            &engine,
            &by,
            Act::SignOffExtension {
                objection: id,
                reason,
            },
        ),
        ObjectionCmd::Answer {
            id,
            version,
            reason,
            by,
        } => {
            let a = match version {
                Some(version) => Act::Correct {
                    objection: id,
                    version,
                    reason,
                },
                None => Act::Confirm {
                    objection: id,
                    reason,
                },
            };
            act(&engine, &by, a)
        }
        ObjectionCmd::List { by } => {
            for o in engine.policy(&by)?.objections.values() {
                out!(
                    "objection {} on {}.{} by {} ({}), source {}: {} due {}{}",
                    o.id,
                    o.dataset,
                    o.field,
                    o.filed_by,
                    o.department,
                    o.provider,
                    o.state.label(),
                    o.due,
                    if o.filed_late { ", filed late" } else { "" }
                );
            }
            Ok(())
        }
    }
}

pub(super) fn agreement(store: &Path, action: AgreementCmd) -> Result<(), Error> {
    let engine = Engine::open(store)?;
    match action {
        AgreementCmd::Make {
            dept,
            title,
            grants,
            until,
            by,
        } => act(
            &engine,
            &by,
            Act::MakeAgreement {
                consumer_dept: dept,
                title,
                grants,
                until,
            },
        ),
        AgreementCmd::Renew { id, until, by } => act(
            &engine,
            &by,
            Act::RenewAgreement {
                agreement: id,
                until,
            },
        ),
        AgreementCmd::Revoke { id, reason, by } => act(
            &engine,
            &by,
            Act::RevokeAgreement {
                agreement: id,
                reason,
            },
        ),
    }
}

pub(super) fn escalate(store: &Path, by: &str) -> Result<(), Error> {
    act(&Engine::open(store)?, by, Act::Escalate)
}

pub(super) fn conflicts(store: &Path, action: ConflictCmd) -> Result<(), Error> {
    let engine = Engine::open(store)?;
    match action {
        ConflictCmd::List { dataset, by } => {
            for c in engine.conflicts(&by, dataset.as_deref())? {
                let state = match &c.resolution {
                    Some(r) => format!("resolved by {}: {}", r.by, r.reason),
                    None => "open".into(),
                };
                out!(
                    "{} key {} field {}: {} kept over {} — {state}",
                    c.id,
                    c.conflict.key,
                    c.conflict.field,
                    c.conflict.authority,
                    c.conflict.source
                );
            }
            Ok(())
        }
        ConflictCmd::Resolve {
            id,
            version,
            reason,
            by,
        } => act(
            &engine,
            &by,
            Act::ResolveConflict {
                conflict: id,
                correction_version: version,
                reason,
            },
        ),
    }
}

pub(super) fn calendar(store: &Path, action: CalendarCmd) -> Result<(), Error> {
    match action {
        CalendarCmd::Add { file, note, by } => {
            let text = std::fs::read_to_string(&file).map_err(|e| Error::Io {
                path: file.clone(),
                source: e,
            })?;
            let years = govshare_core::calendar::WorkCalendar::parse(&text)?;
            act(
                &Engine::open(store)?,
                &by,
                Act::AddCalendarYears { years, note },
            )
        }
    }
}

pub(super) fn generic(store: &Path, by: &str, json: &str) -> Result<(), Error> {
    let a: Act = serde_json::from_str(json).map_err(|e| {
        Error::invalid(format!("the act is not valid JSON for a workflow act: {e}"))
    })?;
    act(&Engine::open(store)?, by, a)
}

fn write_csv(path: &Path, r: &QueryResult) -> Result<(), Error> {
    let f = std::fs::File::create(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(f);
    for b in &r.batches {
        w.write(b)?;
    }
    Ok(())
}

pub(super) fn report(
    store: &Path,
    name: Option<String>,
    sql: Option<String>,
    csv: Option<std::path::PathBuf>,
    html: Option<std::path::PathBuf>,
    by: &str,
) -> Result<(), Error> {
    let engine = Engine::open(store)?;
    if let Some(path) = &html {
        let page = engine.report_html(by)?;
        std::fs::write(path, page).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        out!("report written to {}", path.display());
    }
    let query = match (name, sql) {
        (_, Some(sql)) => sql,
        (Some(name), None) => {
            if !govshare_core::engine::REPORTS
                .iter()
                .any(|(n, _)| *n == name)
            {
                let names: Vec<&str> = govshare_core::engine::REPORTS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect();
                return Err(Error::invalid(format!(
                    "unknown report '{name}' ({})",
                    names.join(", ")
                )));
            }
            format!("SELECT * FROM {name}")
        }
        (None, None) if html.is_some() => return Ok(()),
        (None, None) => {
            for (n, what) in govshare_core::engine::REPORTS {
                out!("{n:<15} {what}");
            }
            return Ok(());
        }
    };
    let r = engine.report_sql(by, &query)?;
    match csv {
        Some(path) => {
            write_csv(&path, &r)?;
            out!("{} rows written to {}", r.num_rows(), path.display());
        }
        None => {
            out!("{}", super::arrow_pretty(&r.batches)?);
            out!("({} rows)", r.num_rows());
        }
    }
    Ok(())
}
