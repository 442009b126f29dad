//! The audit commands: verify, tail, checkpoint, archive, purge, who-accessed.

use std::path::Path;

use govshare_core::Error;

use super::args::*;

pub(super) fn run(store: &Path, action: AuditCmd) -> Result<(), Error> {
    use govshare_core::audit::{Checkpoint, Verdict};
    // Every audit read and act goes through the engine: it is decided (auditor, operator) and
    // recorded.
    let engine = govshare_core::Engine::open(store)?;
    match action {
        AuditCmd::Verify { checkpoint, by } => {
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
            let bar = super::progress(None, "verifying");
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:>12} [{bar:30}] {pos}/{len} segments ({elapsed})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            let verdict =
                engine.verify_audit_with_progress(&by, cp.as_ref(), &mut |done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                });
            bar.finish_and_clear();
            match verdict? {
                Verdict::Intact { records, head } => out!(
                    "audit trail intact: {records} records, head {} {}",
                    head.seq,
                    head.hash
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
        AuditCmd::Tail { n, by } => {
            let r = engine.audit_sql(
                &by,
                &format!(
                    "SELECT seq, time, kind, actor, body FROM audit_log ORDER BY seq DESC LIMIT {n}"
                ),
            )?;
            let mut lines = Vec::new();
            for b in &r.batches {
                lines.extend(cells(b)?);
            }
            for l in lines.iter().rev() {
                out!("{}", l.join(" "));
            }
        }
        AuditCmd::Checkpoint { by } => {
            let cp = engine.audit_checkpoint(&by)?;
            out!(
                "{}",
                serde_json::to_string(&cp).map_err(|e| Error::invalid(e.to_string()))?
            );
        }
        AuditCmd::Repair { by } => {
            if engine.repair_audit(&by)? {
                out!("a torn tail was moved aside; the repair is on the trail");
            } else {
                out!("nothing to repair; the check is on the trail");
            }
        }
        AuditCmd::Archive { by } => {
            let written = engine.archive_audit(&by)?;
            out!("archived {} segment(s)", written.len());
            for p in written {
                out!("  {}", p.display());
            }
        }
        AuditCmd::Purge {
            retention_years,
            by,
        } => {
            let retention = govshare_core::audit::Retention::years(retention_years)?;
            let n = engine.purge_audit(&by, retention)?;
            out!(
                "purged {n} record(s) older than {} years",
                retention.in_years()
            );
        }
        AuditCmd::WhoAccessed { key, by } => {
            let hits = engine.who_accessed(&by, &key)?;
            if hits.is_empty() {
                out!("no recorded read of that subject");
            }
            for a in hits {
                out!(
                    "{} read by dept {} user {} purpose {} — {} v{} (record #{}: {})",
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

/// The cells of a batch as text, row by row.
fn cells(b: &arrow::array::RecordBatch) -> Result<Vec<Vec<String>>, Error> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default();
    let cols = b
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..b.num_rows())
        .map(|i| cols.iter().map(|c| c.value(i).to_string()).collect())
        .collect())
}
