//! The data commands: create a store, generate, load, validate, look up, compact, vacuum, and
//! list versions; the catalog commands live in `catalog`.

use std::path::Path;
use std::time::Instant;

use govshare_core::access::policy::Founder;
use govshare_core::ingest::{Encoding, HandoverInfo, LoadMode, LoadOptions, Source, write_csv};
use govshare_core::store::Manifest;
use govshare_core::synth::Synth;
use govshare_core::{Engine, Error, Store, quality};

use super::args::*;
use super::*;

/// Run one data command on the store at `store`.
pub(super) fn run(store: &Path, cmd: DataCmd) -> Result<(), Error> {
    match cmd {
        DataCmd::Init {
            admin,
            admin_name,
            dept,
            dept_name,
            region,
            chain_hash,
        } => {
            let founder = Founder {
                user: admin.clone(),
                name: admin_name,
                department: dept,
                department_name: dept_name,
                region,
            };
            let s = Store::init_with(store, &founder, chain_hash.into())?;
            let chain = govshare_core::audit::ChainHash::of_dir(&s.audit_dir())?;
            out!(
                "store ready at {} (catalog version {}); first platform administrator: {admin}{}",
                s.root().display(),
                s.catalog_version()?,
                if chain == govshare_core::audit::ChainHash::Sm3 {
                    "; audit chain hashed with SM3"
                } else {
                    ""
                }
            );
        }
        DataCmd::Generate {
            persons,
            entities,
            seed,
            out,
            format,
            encoding,
        } => {
            std::fs::create_dir_all(&out).map_err(|e| Error::Io {
                path: out.clone(),
                source: e,
            })?;
            let synth = Synth::new(seed, persons, entities);
            let ext = if format == Format::Csv {
                "csv"
            } else {
                "parquet"
            };
            let p = out.join(format!("person.{ext}"));
            let n = write_file(&p, synth.persons(64 * 1024), format, encoding.into())?;
            out!("{n} persons → {}", p.display());
            let p = out.join(format!("legal_entity.{ext}"));
            let n = write_file(&p, synth.entities(64 * 1024), format, encoding.into())?;
            out!("{n} legal entities → {}", p.display());
        }
        DataCmd::Load {
            dataset,
            file,
            incremental,
            strict,
            allow_empty,
            encoding,
            provider,
            handover_person,
            receiver,
            method,
            corrects,
            by,
        } => {
            let engine = Engine::open(store)?;
            let source = match Source::from_path(&file) {
                Source::Csv { path, .. } => Source::Csv {
                    path,
                    encoding: encoding.into(),
                },
                s => s,
            };
            let pb = progress(None, "loading");
            let tick = |n: u64| pb.set_position(n);
            let opts = LoadOptions {
                mode: LoadMode::from_flag(incremental),
                strict,
                allow_empty,
                handover: HandoverInfo {
                    provider_dept: provider,
                    handover_person,
                    receiver,
                    method,
                    corrects,
                },
                progress: Some(&tick),
                ..Default::default()
            };
            let t = Instant::now();
            let report = engine.load(&by, &dataset, source, &opts);
            pb.finish_and_clear();
            let report = report?;
            let h = &report.handover;
            out!(
                "{dataset} version {}: {} read, {} accepted, {} rejected, {} deleted in {:.2?}; {} live rows",
                report.version,
                h.rows_read,
                h.rows_accepted,
                h.rows_rejected,
                h.rows_deleted,
                t.elapsed(),
                report.live_rows
            );
            if let Some(r) = report.rejects_file {
                out!("rejected rows are listed in {}", r.display());
            }
        }
        DataCmd::Catalog { action } => super::catalog::run(store, action)?,
        DataCmd::Release {
            dataset,
            fields,
            k,
            max_suppression,
            out,
            by,
        } => {
            let spec = govshare_core::engine::ReleaseSpec {
                dataset,
                fields,
                k,
                max_suppression,
            };
            let r = Engine::open(store)?.release_open_data(&by, &spec, &out)?;
            let m = &r.manifest;
            let levels: Vec<String> = m
                .generalisation
                .iter()
                .map(|(f, l)| format!("{f}={l}"))
                .collect();
            out!(
                "released {} of {} rows of {} version {} ({} suppressed) in {} groups; smallest group {} (k = {})",
                m.released,
                m.rows,
                m.dataset,
                m.version,
                m.suppressed,
                m.groups,
                m.smallest_group,
                m.k
            );
            out!(
                "generalised: {}; information loss {:.4}",
                if levels.is_empty() {
                    "nothing (no quasi-identifier)".to_string()
                } else {
                    levels.join(", ")
                },
                m.loss
            );
            for f in &m.files {
                out!(
                    "{} ({} bytes, blake3 {})",
                    out.join(&f.name).display(),
                    f.bytes,
                    f.blake3
                );
            }
            out!(
                "manifest: {} (blake3 {})",
                govshare_core::engine::release_manifest_path(&out, &m.dataset).display(),
                r.manifest_blake3
            );
        }
        DataCmd::ReleaseCheck { manifest } => {
            let (m, digest) = govshare_core::engine::verify_release(&manifest)?;
            out!(
                "ok: {} rows of {} version {} (k = {}, smallest group {}), {} file(s) as listed",
                m.released,
                m.dataset,
                m.version,
                m.k,
                m.smallest_group,
                m.files.len()
            );
            out!(
                "manifest blake3 {digest} (the trail's open_release_done record after release {})",
                m.release_seq
            );
        }
        DataCmd::Versions { dataset, by } => {
            print_versions(&Engine::open(store)?.versions(&by, &dataset)?);
        }
        DataCmd::Validate {
            file,
            dataset,
            json,
            by,
        } => {
            let catalog = match (Engine::open(store), by) {
                (Ok(engine), Some(by)) => engine.catalog(&by)?.catalog,
                (Ok(_), None) => {
                    return Err(Error::invalid(
                        "a store is open: name who checks with --by (reading its catalog is recorded)",
                    ));
                }
                (Err(Error::NotFound(_)), _) => govshare_core::catalog::Catalog::builtin(),
                (Err(e), _) => return Err(e),
            };
            let today = chrono_today();
            let r = quality::report(&catalog, &dataset, &Source::from_path(&file), today)?;
            if json {
                out!(
                    "{}",
                    serde_json::to_string_pretty(&r).map_err(|e| Error::invalid(e.to_string()))?
                );
            } else {
                out_partial!("{r}");
            }
        }
        DataCmd::Lookup {
            dataset,
            key,
            by,
            reason,
        } => {
            let r = Engine::open(store)?.lookup(&by, &reason, &dataset, &key)?;
            out!("{}", arrow_pretty(&r.batches)?);
        }
        DataCmd::Compact { dataset, by } => {
            let spinner = super::working(&format!("compacting {dataset}"));
            let m = Engine::open(store)?.compact(&by, &dataset);
            spinner.finish_and_clear();
            let m = m?;
            out!(
                "{dataset} compacted into version {} ({} files, {} rows)",
                m.version,
                m.files.len(),
                m.live_rows
            );
        }
        DataCmd::Vacuum { dataset, keep, by } => {
            let r = Engine::open(store)?.vacuum(&by, &dataset, keep)?;
            out!(
                "removed versions {:?} and {} files",
                r.versions_removed,
                r.files_removed
            );
        }
        DataCmd::Backup { dest, base, by } => {
            let spinner = super::working("backing up");
            let m = Engine::open(store)?.backup(&by, &dest, base.as_deref());
            spinner.finish_and_clear();
            let (m, digest) = m?;
            out!(
                "backup of {} files ({} bytes stored here) at {}; trail head {}; manifest blake3 {digest}",
                m.files.len(),
                m.stored_bytes(),
                dest.display(),
                m.audit_head.seq
            );
        }
        DataCmd::Restore { backup, target, by } => {
            let spinner = super::working("restoring");
            let m = govshare_core::Store::restore(&backup, &target, &by);
            spinner.finish_and_clear();
            let m = m?;
            out!(
                "restored {} files into {} (backup taken {} by {}); its trail verified",
                m.files.len(),
                target.display(),
                m.created_at.format("%Y-%m-%d %H:%M:%S"),
                m.by
            );
        }
        DataCmd::BackupCheck { backup } => {
            let (m, digest) = govshare_core::store::backup::verify(&backup)?;
            out!(
                "ok: {} files as listed (taken {} by {}); manifest blake3 {digest}",
                m.files.len(),
                m.created_at.format("%Y-%m-%d %H:%M:%S"),
                m.by
            );
        }
    }
    Ok(())
}

pub(super) fn write_file(
    path: &Path,
    batches: impl Iterator<Item = arrow::array::RecordBatch>,
    format: Format,
    enc: Encoding,
) -> Result<u64, Error> {
    if format == Format::Csv {
        return write_csv(path, batches, enc);
    }
    let mut batches = batches.peekable();
    let Some(first) = batches.peek() else {
        return Ok(0);
    };
    let f = std::fs::File::create(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut w = parquet::arrow::ArrowWriter::try_new(f, first.schema(), None)?;
    let mut n = 0;
    for b in batches {
        n += b.num_rows() as u64;
        w.write(&b)?;
    }
    w.close()?;
    Ok(n)
}

pub(super) fn print_versions(ms: &[Manifest]) {
    for m in ms {
        let h = &m.handover;
        out!(
            "v{:<3} {:?} {} — {} live rows in {} files; from {} by {} → {} ({}), read {} / accepted {} / rejected {} / deleted {}, input blake3 {}…",
            m.version,
            m.operation,
            m.created_at.format("%Y-%m-%d %H:%M:%S"),
            m.live_rows,
            m.files.len(),
            h.provider_dept,
            h.handover_person,
            h.receiver,
            h.method,
            h.rows_read,
            h.rows_accepted,
            h.rows_rejected,
            h.rows_deleted,
            h.input_digest.get(..16).unwrap_or(&h.input_digest),
        );
    }
}

/// `govshare verify`: one subject's claims (`--key`, `--claim FIELD=VALUE`) or a CSV file of
/// claims, answered as a table of match / no match.
pub(super) fn verify(
    store: &Path,
    user: &str,
    purpose: &str,
    dataset: &str,
    key: Option<String>,
    claims: &[String],
    file: Option<std::path::PathBuf>,
) -> Result<(), Error> {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};

    let engine = Engine::open(store)?;
    let session = engine.session(user, purpose)?;
    let batch = match (key, file) {
        (Some(key), _) => {
            let pairs = claims
                .iter()
                .map(|c| {
                    c.split_once('=')
                        .map(|(f, v)| (f.trim(), v))
                        .ok_or_else(|| {
                            Error::invalid(format!("--claim takes FIELD=VALUE, not '{c}'"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let v = session.verify_one(dataset, &key, &pairs)?;
            if let Some(found) = v.found {
                out!("found: {}", if found { "yes" } else { "no" });
            }
            for (field, matched) in v.fields {
                out!("{field}: {}", if matched { "match" } else { "no match" });
            }
            return Ok(());
        }
        (None, Some(path)) => {
            let text = std::fs::File::open(&path).map_err(|e| Error::Io {
                path: path.clone(),
                source: e,
            })?;
            let mut buffered = std::io::BufReader::new(text);
            let mut header = String::new();
            std::io::BufRead::read_line(&mut buffered, &mut header).map_err(|e| Error::Io {
                path: path.clone(),
                source: e,
            })?;
            // Every column as text: the engine reads each claim by its field's rules.
            let schema = Arc::new(Schema::new(
                header
                    .trim_end_matches(['\r', '\n'])
                    .split(',')
                    .map(|h| Field::new(h.trim(), DataType::Utf8, true))
                    .collect::<Vec<_>>(),
            ));
            let reader = arrow::csv::ReaderBuilder::new(schema.clone()).build(buffered)?;
            let batches = reader.collect::<Result<Vec<_>, _>>()?;
            arrow::compute::concat_batches(&schema, &batches)?
        }
        (None, None) => return Err(Error::invalid("give --key with --claim, or --file")),
    };
    let answer = session.verify(dataset, &batch)?;
    out!("{}", arrow_pretty(std::slice::from_ref(&answer))?);
    out!("({} checks)", answer.num_rows());
    Ok(())
}

/// `govshare export`: the export with a progress bar on stderr; the manifest's summary.
pub(super) fn export(
    store: &Path,
    user: &str,
    purpose: &str,
    auth: AuthArg,
    dataset: &str,
    format: &str,
    out: &Path,
) -> Result<(), Error> {
    let format = govshare_core::engine::ExportFormat::parse(format)?;
    let engine = Engine::open(store)?;
    let login = govshare_core::access::policy::Login::new(user, purpose, auth.into());
    let session = engine.session_as(&login)?;
    let bar = progress(None, "export");
    let m = session.export(dataset, format, out, &mut |rows| bar.set_position(rows));
    bar.finish_and_clear();
    let m = m?;
    for f in &m.files {
        out!(
            "{} rows → {} ({} bytes, blake3 {})",
            m.rows,
            out.join(&f.name).display(),
            f.bytes,
            f.blake3
        );
    }
    out!(
        "manifest: {}",
        govshare_core::engine::manifest_path(out, dataset, format).display()
    );
    Ok(())
}

/// `govshare changes`: the subscription's changes to a CSV file (written and synced before any
/// acknowledgement), then the acknowledgement when asked.
pub(super) fn changes(
    store: &Path,
    user: &str,
    purpose: &str,
    auth: AuthArg,
    dataset: &str,
    out: &Path,
    ack: bool,
) -> Result<(), Error> {
    let engine = Engine::open(store)?;
    let login = govshare_core::access::policy::Login::new(user, purpose, auth.into());
    let session = engine.session_as(&login)?;
    let c = session.changes(dataset)?;
    if out.exists() {
        return Err(Error::invalid(format!(
            "{} exists already; changes are never written over",
            out.display()
        )));
    }
    let mut buf = Vec::new();
    {
        let mut w = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut buf);
        if c.result.batches.is_empty() {
            w.write(&arrow::array::RecordBatch::new_empty(
                c.result.schema.clone(),
            ))?;
        }
        for b in &c.result.batches {
            w.write(b)?;
        }
    }
    let io = |e: std::io::Error| Error::Io {
        path: out.to_path_buf(),
        source: e,
    };
    let mut f = std::fs::File::create(out).map_err(io)?;
    std::io::Write::write_all(&mut f, &buf).map_err(io)?;
    f.sync_all().map_err(io)?;
    out!(
        "{} changes of {dataset} from version {} to {} → {} (token {})",
        c.result.num_rows(),
        c.from,
        c.to,
        out.display(),
        c.to
    );
    if ack {
        session.ack(dataset, c.to)?;
        out!("acknowledged {}", c.to);
    }
    Ok(())
}
