//! The audit commands: verify, tail, checkpoint, archive, purge, who-accessed.

use std::path::Path;

use govshare_core::{Error, Store};

use super::args::*;

pub(super) fn run(store: &Path, action: AuditCmd) -> Result<(), Error> {
    use govshare_core::audit::{Checkpoint, Verdict, verify};
    let s = Store::open(store)?;
    let dir = s.audit_dir();
    // The trail alone: reading or archiving it needs no engine (no runtime, no keys).
    let log = || govshare_core::audit::AuditLog::open(&dir);
    match action {
        AuditCmd::Verify { checkpoint } => {
            let cp: Option<Checkpoint> =
                match checkpoint {
                    None => None,
                    Some(p) => {
                        let text = std::fs::read_to_string(&p).map_err(|e| Error::Io {
                            path: p.clone(),
                            source: e,
                        })?;
                        Some(serde_json::from_str(&text).map_err(|e| {
                            Error::invalid(format!("checkpoint {}: {e}", p.display()))
                        })?)
                    }
                };
            match verify(&dir, cp.as_ref())? {
                Verdict::Intact { records, head } => println!(
                    "audit trail intact: {records} records, head {} {}",
                    head.seq, head.hash
                ),
                Verdict::Broken {
                    segment,
                    line,
                    seq,
                    problem,
                } => {
                    return Err(Error::Corrupt(format!(
                        "audit trail broken at record {seq} ({}, line {line}): {problem}",
                        segment.display()
                    )));
                }
            }
        }
        AuditCmd::Tail { n } => {
            let records = log()?.records()?;
            for r in &records[records.len().saturating_sub(n)..] {
                println!(
                    "{} {} {:<14} {:<10} {}",
                    r.seq,
                    r.time.format("%Y-%m-%d %H:%M:%S%.3f"),
                    r.kind,
                    r.actor,
                    r.body
                );
            }
        }
        AuditCmd::Checkpoint => {
            let cp = log()?.checkpoint()?;
            println!(
                "{}",
                serde_json::to_string(&cp).map_err(|e| Error::invalid(e.to_string()))?
            );
        }
        AuditCmd::Archive { by } => {
            let written = log()?.archive(&by)?;
            println!("archived {} segment(s)", written.len());
            for p in written {
                println!("  {}", p.display());
            }
        }
        AuditCmd::Purge {
            retention_years,
            by,
        } => {
            let retention = govshare_core::audit::Retention::years(retention_years)?;
            let n = log()?.purge_expired(retention, &by)?;
            println!(
                "purged {n} record(s) older than {} years",
                retention.in_years()
            );
        }
        AuditCmd::WhoAccessed { key } => {
            let engine = govshare_core::Engine::open(store)?;
            let hits = engine.who_accessed(&key)?;
            if hits.is_empty() {
                println!("no recorded query read {key}");
            }
            for a in hits {
                println!(
                    "{} read by dept {} user {} purpose {} — {} v{} (query #{}: {})",
                    a.time.format("%Y-%m-%d %H:%M:%S"),
                    a.department,
                    a.user,
                    a.purpose,
                    a.dataset,
                    a.version,
                    a.query_seq,
                    a.sql
                );
            }
        }
    }
    Ok(())
}
