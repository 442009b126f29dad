//! `govshare`: the command-line tool over govshare-core.
//!
//! Run `govshare demo` for a guided tour on a generated store, or `govshare --help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use govshare_core::catalog::{CatalogFile, MaskKind, ShareType};
use govshare_core::ingest::{Encoding, HandoverInfo, LoadMode, LoadOptions, Source, write_csv};
use govshare_core::policy::{
    Department, FieldGrant, GrantRequest, Mode, PrincipalStatus, Role, RowScope, Treatment, User,
};
use govshare_core::store::Manifest;
use govshare_core::synth::Synth;
use govshare_core::{Error, Store, quality};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "govshare",
    version,
    about = "Government data-sharing engine: versioned base databases with validation and indexes"
)]
struct Cli {
    /// Store directory.
    #[arg(
        long,
        global = true,
        env = "GOVSHARE_STORE",
        default_value = "govshare-store"
    )]
    store: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum EncodingArg {
    Auto,
    Utf8,
    Gbk,
}

impl From<EncodingArg> for Encoding {
    fn from(e: EncodingArg) -> Self {
        match e {
            EncodingArg::Auto => Encoding::Auto,
            EncodingArg::Utf8 => Encoding::Utf8,
            EncodingArg::Gbk => Encoding::Gbk,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Csv,
    Parquet,
}

#[derive(Subcommand)]
enum Command {
    /// Create a store (with the built-in catalog) at --store.
    Init,
    /// Write deterministic synthetic person and legal-entity files.
    Generate {
        /// Number of persons.
        #[arg(long, default_value_t = 10_000)]
        persons: usize,
        /// Number of legal entities.
        #[arg(long, default_value_t = 1_000)]
        entities: usize,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output directory (person.csv / legal_entity.csv, or .parquet).
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// File format.
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
        /// CSV encoding.
        #[arg(long, value_enum, default_value = "utf8")]
        encoding: EncodingArg,
    },
    /// Load a CSV or Parquet file into a dataset as a new version.
    Load {
        /// Dataset name.
        dataset: String,
        /// Input file (.csv or .parquet).
        file: PathBuf,
        /// Upsert and delete by key (column `_op`: upsert/delete) instead of replacing.
        #[arg(long)]
        incremental: bool,
        /// Commit nothing if any row is invalid.
        #[arg(long)]
        strict: bool,
        /// CSV encoding.
        #[arg(long, value_enum, default_value = "auto")]
        encoding: EncodingArg,
        /// Providing department (default: the dataset's provider).
        #[arg(long, default_value = "")]
        provider: String,
        /// Person handing the data over.
        #[arg(long, default_value = "unspecified")]
        handover_person: String,
        /// Person receiving it.
        #[arg(long, default_value = "unspecified")]
        receiver: String,
        /// Delivery method.
        #[arg(long, default_value = "file")]
        method: String,
    },
    /// Show or change the catalog.
    Catalog {
        #[command(subcommand)]
        action: CatalogCmd,
    },
    /// List the versions of a dataset with their handover records.
    Versions {
        /// Dataset name.
        dataset: String,
    },
    /// Data-quality report of a file against a dataset (nothing is loaded).
    Validate {
        /// Input file.
        file: PathBuf,
        /// Dataset to check against.
        #[arg(long)]
        dataset: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Look a row up by key.
    Lookup {
        /// Dataset name.
        dataset: String,
        /// Key value (citizen ID, USCC, ...).
        key: String,
    },
    /// Rewrite a dataset's live rows into clustered files (new version, same content).
    Compact {
        /// Dataset name.
        dataset: String,
    },
    /// Delete all but the newest versions of a dataset and unreferenced files.
    Vacuum {
        /// Dataset name.
        dataset: String,
        /// Versions to keep.
        #[arg(long, default_value_t = 1)]
        keep: usize,
    },
    /// Manage departments.
    Dept {
        #[command(subcommand)]
        action: DeptCmd,
    },
    /// Manage real-name users.
    User {
        #[command(subcommand)]
        action: UserCmd,
    },
    /// Grants: request (unconditional fields), approve / reject (conditional), revoke, list.
    Grant {
        #[command(subcommand)]
        action: GrantCmd,
    },
    /// Run a SQL query as a user, for a declared purpose, under that user's grants.
    Sql {
        /// User id.
        #[arg(long)]
        user: String,
        /// Purpose code the query is made for.
        #[arg(long)]
        purpose: String,
        /// Print the rows as CSV (with a header) instead of a table.
        #[arg(long)]
        csv: bool,
        /// The query.
        query: String,
    },
    /// The audit trail: verify, tail, checkpoint, who-accessed.
    Audit {
        #[command(subcommand)]
        action: AuditCmd,
    },
    /// Guided tour: build a store with synthetic data and show what govshare does.
    Demo {
        /// Persons to generate.
        #[arg(long, default_value_t = 1_000_000)]
        persons: usize,
        /// Legal entities to generate.
        #[arg(long, default_value_t = 100_000)]
        entities: usize,
        /// Where the demo store is built (recreated on each run).
        #[arg(long, default_value = "govshare-demo")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Walk the hash chain; report the first altered, missing, reordered or truncated record.
    Verify {
        /// A checkpoint file kept from `audit checkpoint` (JSON).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// The last records.
    Tail {
        /// How many.
        #[arg(short, default_value_t = 10)]
        n: usize,
    },
    /// Print the chain head as JSON, for an external party to keep.
    Checkpoint,
    /// Every department, time and purpose whose query read this citizen ID or USCC.
    WhoAccessed {
        /// The subject's key.
        key: String,
    },
    /// Move closed segments into Parquet archives (they stay on the chain and verifiable).
    Archive {
        /// Who does it (recorded).
        #[arg(long)]
        by: String,
    },
    /// Delete archived records older than the retention (never younger ones).
    Purge {
        /// Retention in years; at least 3 (the regulations' minimum).
        #[arg(long, default_value_t = govshare_core::audit::Retention::MIN_YEARS)]
        retention_years: u32,
        /// Who does it (recorded).
        #[arg(long)]
        by: String,
    },
}

#[derive(Subcommand)]
enum DeptCmd {
    /// Add (or update) a department.
    Add {
        /// Code.
        code: String,
        /// Name.
        name: String,
        /// Region of jurisdiction (GB/T 2260 code).
        #[arg(long)]
        region: String,
        /// Who makes the change.
        #[arg(long)]
        by: String,
    },
    /// Suspend a department: every session of its users is refused from the next query on.
    Suspend {
        /// Code.
        code: String,
        /// Who makes the change.
        #[arg(long)]
        by: String,
    },
    /// Reactivate a department.
    Activate {
        /// Code.
        code: String,
        /// Who makes the change.
        #[arg(long)]
        by: String,
    },
    /// List departments.
    List,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add (or update) a user.
    Add {
        /// Account id.
        id: String,
        /// Real name.
        name: String,
        /// Department code.
        #[arg(long)]
        dept: String,
        /// Roles: consumer, provider-approver, platform-admin, auditor, coordinator.
        #[arg(long, value_delimiter = ',', default_value = "consumer")]
        roles: Vec<String>,
        /// Who makes the change.
        #[arg(long)]
        by: String,
    },
    /// Suspend a user.
    Suspend {
        /// Account id.
        id: String,
        /// Who makes the change.
        #[arg(long)]
        by: String,
    },
    /// List users.
    List,
}

#[derive(clap::Args)]
struct GrantArgs {
    /// Consumer department.
    #[arg(long)]
    dept: String,
    /// Dataset.
    #[arg(long)]
    dataset: String,
    /// Fields, each `name` (clear) or `name:mask` (citizen_id, name, phone, address,
    /// date_to_year, nullify, pseudonym).
    #[arg(long, value_delimiter = ',')]
    fields: Vec<String>,
    /// Purpose code.
    #[arg(long)]
    purpose: String,
    /// Purpose in words.
    #[arg(long)]
    purpose_text: String,
    /// Region scope (codes at any level).
    #[arg(long, value_delimiter = ',')]
    regions: Option<Vec<String>>,
    /// Subject scope (keys).
    #[arg(long, value_delimiter = ',')]
    subjects: Option<Vec<String>>,
    /// Narrow to these users of the department.
    #[arg(long, value_delimiter = ',')]
    users: Vec<String>,
    /// Validity in days from now.
    #[arg(long, default_value_t = 365)]
    days: i64,
    /// Acting user (platform admin for requests, provider approver for decisions).
    #[arg(long)]
    by: String,
}

#[derive(Subcommand)]
enum GrantCmd {
    /// Grant unconditional fields on request (platform administrator).
    Request(GrantArgs),
    /// Approve a request for conditional fields (provider approver).
    Approve(GrantArgs),
    /// Reject a request (provider approver), with a reason.
    Reject {
        #[command(flatten)]
        args: GrantArgs,
        /// Reason.
        #[arg(long)]
        reason: String,
    },
    /// Revoke a grant.
    Revoke {
        /// Grant id.
        id: u64,
        /// Who revokes.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// List grants.
    List,
}

#[derive(Subcommand)]
enum CatalogCmd {
    /// Datasets with their field counts by share type.
    List,
    /// Fields of one dataset.
    Show {
        /// Dataset name.
        dataset: String,
        /// Catalog version (default: current).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Every catalog version: who, when, what changed.
    History,
    /// Declare datasets / code tables from a JSON or TOML file, as a new catalog version.
    Apply {
        /// Catalog file.
        file: PathBuf,
        /// Who makes the change.
        #[arg(long)]
        author: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e {
                Error::InvalidInput(_) | Error::Rejected { .. } => 2,
                Error::NotFound(_) => 3,
                Error::AccessDenied(_) => 5,
                Error::Locked { .. } => 4,
                _ => 1,
            })
        }
    }
}

fn progress(total: Option<u64>, what: &str) -> ProgressBar {
    let pb = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::new_spinner(),
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:30}] {pos}/{len} rows ({per_sec}, {elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Init => {
            let s = Store::init(&cli.store)?;
            println!(
                "store ready at {} (catalog version {})",
                s.root().display(),
                s.catalog_version()?
            );
        }
        Command::Generate {
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
            println!("{n} persons → {}", p.display());
            let p = out.join(format!("legal_entity.{ext}"));
            let n = write_file(&p, synth.entities(64 * 1024), format, encoding.into())?;
            println!("{n} legal entities → {}", p.display());
        }
        Command::Load {
            dataset,
            file,
            incremental,
            strict,
            encoding,
            provider,
            handover_person,
            receiver,
            method,
        } => {
            let store = Store::open(&cli.store)?;
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
                mode: if incremental {
                    LoadMode::Incremental
                } else {
                    LoadMode::Full
                },
                strict,
                handover: HandoverInfo {
                    provider_dept: provider,
                    handover_person,
                    receiver,
                    method,
                },
                progress: Some(&tick),
                ..Default::default()
            };
            let t = Instant::now();
            let report = store.writer()?.load(&dataset, source, &opts);
            pb.finish_and_clear();
            let report = report?;
            let h = &report.manifest.handover;
            println!(
                "{dataset} version {}: {} read, {} accepted, {} rejected, {} deleted in {:.2?}; {} live rows",
                report.manifest.version,
                h.rows_read,
                h.rows_accepted,
                h.rows_rejected,
                h.rows_deleted,
                t.elapsed(),
                report.manifest.live_rows
            );
            if let Some(r) = report.rejects_file {
                println!("rejected rows are listed in {}", r.display());
            }
        }
        Command::Catalog { action } => catalog_cmd(&Store::open(&cli.store)?, action)?,
        Command::Versions { dataset } => {
            let store = Store::open(&cli.store)?;
            print_versions(&store.versions(&dataset)?);
        }
        Command::Validate {
            file,
            dataset,
            json,
        } => {
            let catalog = match Store::open(&cli.store) {
                Ok(s) => s.catalog()?,
                Err(Error::NotFound(_)) => govshare_core::catalog::Catalog::builtin(),
                Err(e) => return Err(e),
            };
            let today = chrono_today();
            let r = quality::report(&catalog, &dataset, &Source::from_path(&file), today)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).map_err(|e| Error::invalid(e.to_string()))?
                );
            } else {
                print!("{r}");
            }
        }
        Command::Lookup { dataset, key } => {
            let store = Store::open(&cli.store)?;
            let snap = store.snapshot(&dataset)?;
            match snap.lookup(&key)? {
                None => {
                    return Err(Error::NotFound(format!(
                        "no row with key {key} in {dataset} version {}",
                        snap.version()
                    )));
                }
                Some(id) => {
                    let rows = snap.read(Some(&[id].into_iter().collect()), None)?;
                    println!("{}", arrow_pretty(&rows)?);
                }
            }
        }
        Command::Compact { dataset } => {
            let store = Store::open(&cli.store)?;
            let m = store.writer()?.compact(&dataset)?;
            println!(
                "{dataset} compacted into version {} ({} files, {} rows)",
                m.version,
                m.files.len(),
                m.live_rows
            );
        }
        Command::Vacuum { dataset, keep } => {
            let store = Store::open(&cli.store)?;
            let r = store.writer()?.vacuum(&dataset, keep)?;
            println!(
                "removed versions {:?} and {} files",
                r.versions_removed, r.files_removed
            );
        }
        Command::Dept { action } => dept_cmd(&cli.store, action)?,
        Command::User { action } => user_cmd(&cli.store, action)?,
        Command::Grant { action } => grant_cmd(&cli.store, action)?,
        Command::Sql {
            user,
            purpose,
            csv,
            query,
        } => {
            let engine = govshare_core::Engine::open(&cli.store)?;
            let r = engine.session(&user, &purpose)?.sql(&query)?;
            if csv {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(std::io::stdout().lock());
                for b in &r.batches {
                    w.write(b)?;
                }
            } else {
                println!("{}", arrow_pretty(&r.batches)?);
                println!("({} rows)", r.num_rows());
            }
        }
        Command::Audit { action } => audit_cmd(&cli.store, action)?,
        Command::Demo {
            persons,
            entities,
            dir,
        } => demo(&dir, persons, entities)?,
    }
    Ok(())
}

fn audit_cmd(store: &Path, action: AuditCmd) -> Result<(), Error> {
    use govshare_core::audit::{Checkpoint, Verdict, verify};
    let s = Store::open(store)?;
    let dir = s.root().join("audit");
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
            let records = s.audit()?.records()?;
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
            let cp = s.audit()?.checkpoint()?;
            println!(
                "{}",
                serde_json::to_string(&cp).map_err(|e| Error::invalid(e.to_string()))?
            );
        }
        AuditCmd::Archive { by } => {
            let written = s.audit()?.archive(&by)?;
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
            let n = s.audit()?.purge_expired(retention, &by)?;
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

fn parse_role(r: &str) -> Result<Role, Error> {
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

fn parse_mask(m: &str) -> Result<MaskKind, Error> {
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

fn dept_cmd(store: &Path, action: DeptCmd) -> Result<(), Error> {
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

fn user_cmd(store: &Path, action: UserCmd) -> Result<(), Error> {
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

fn grant_cmd(store: &Path, action: GrantCmd) -> Result<(), Error> {
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

fn chrono_today() -> chrono::NaiveDate {
    chrono::Local::now().date_naive()
}

fn arrow_pretty(batches: &[arrow::array::RecordBatch]) -> Result<String, Error> {
    Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}

fn write_file(
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

fn share_label(s: ShareType) -> &'static str {
    match s {
        ShareType::Unconditional => "unconditional",
        ShareType::Conditional => "conditional",
        ShareType::NotShared => "not shared",
    }
}

fn catalog_cmd(store: &Store, action: CatalogCmd) -> Result<(), Error> {
    match action {
        CatalogCmd::List => {
            let c = store.catalog()?;
            println!("catalog version {}", store.catalog_version()?);
            println!(
                "{:<16} {:<18} {:>6} {:>14} {:>12} {:>11}  provider",
                "dataset", "label", "fields", "unconditional", "conditional", "not shared"
            );
            for d in c.datasets.values() {
                let count = |s| d.fields.iter().filter(|f| f.share == s).count();
                println!(
                    "{:<16} {:<14} {:>6} {:>14} {:>12} {:>11}  {}",
                    d.name,
                    d.label,
                    d.fields.len(),
                    count(ShareType::Unconditional),
                    count(ShareType::Conditional),
                    count(ShareType::NotShared),
                    d.provider
                );
            }
        }
        CatalogCmd::Show { dataset, version } => {
            let c = match version {
                Some(v) => store.catalog_at(v)?.catalog,
                None => store.catalog()?,
            };
            let d = c.dataset(&dataset)?;
            println!(
                "{} {} — key {}, clustered by {}, provider {}",
                d.name,
                d.label,
                d.key,
                d.cluster_field.as_deref().unwrap_or("-"),
                d.provider
            );
            println!(
                "{:<22} {:<16} {:<14} {:<20} {:<14} {:<5} {:<12} index",
                "field", "label", "type", "standard", "share", "grade", "mask"
            );
            for f in &d.fields {
                println!(
                    "{:<22} {:<12} {:<14} {:<20} {:<14} {:<5} {:<12} {:?}",
                    f.name,
                    f.label,
                    f.data_type.to_string(),
                    f.standard.to_string(),
                    share_label(f.share),
                    format!("{:?}", f.grade),
                    format!("{:?}", f.mask),
                    f.index
                );
            }
        }
        CatalogCmd::History => {
            for v in store.catalog_history()? {
                println!(
                    "version {} by {} at {}: {}",
                    v.version,
                    v.author,
                    v.created_at.format("%Y-%m-%d %H:%M:%S"),
                    v.note
                );
                for c in &v.changes {
                    println!("    {c}");
                }
            }
        }
        CatalogCmd::Apply { file, author, note } => {
            let f = CatalogFile::read(&file)?;
            let v = store.writer()?.apply_catalog(f, &author, &note)?;
            println!("catalog version {}", v.version);
            for c in &v.changes {
                println!("    {c}");
            }
        }
    }
    Ok(())
}

fn print_versions(ms: &[Manifest]) {
    for m in ms {
        let h = &m.handover;
        println!(
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

fn step(title: &str) {
    println!("\n== {title}");
}

fn demo(dir: &Path, persons: usize, entities: usize) -> Result<(), Error> {
    use arrow::array::AsArray;
    if dir.exists() {
        if !dir.join("govshare-store.json").exists() {
            return Err(Error::invalid(format!(
                "{} exists and is not a govshare store; refusing to replace it",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    step(&format!("1. A new store at {}", dir.display()));
    let store = Store::init(dir)?;
    catalog_cmd(&store, CatalogCmd::List)?;

    step(&format!(
        "2. Synthetic base data: {persons} persons, {entities} legal entities (seed 42)"
    ));
    let synth = Synth::new(42, persons, entities);
    let t = Instant::now();
    let person_batches: Vec<_> = synth.persons(64 * 1024).collect();
    let entity_batches: Vec<_> = synth.entities(64 * 1024).collect();
    println!("generated in {:.2?}", t.elapsed());

    step("3. Full loads: validate every value, cluster by region, build indexes, commit");
    for (name, batches, total) in [
        ("person", person_batches, persons),
        ("legal_entity", entity_batches, entities),
    ] {
        let pb = progress(Some(total as u64), name);
        let tick = |n: u64| pb.set_position(n);
        let opts = LoadOptions {
            handover: HandoverInfo {
                handover_person: "李明 (provider clerk)".into(),
                receiver: "王芳 (platform operator)".into(),
                method: "generated".into(),
                ..Default::default()
            },
            progress: Some(&tick),
            ..Default::default()
        };
        let t = Instant::now();
        let r = store.writer()?.load(name, Source::Batches(batches), &opts);
        pb.finish_and_clear();
        let r = r?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{name}: {} rows in {:.2}s ({:.0} rows/s), {} files, {} row groups",
            r.manifest.live_rows,
            secs,
            r.manifest.live_rows as f64 / secs,
            r.manifest.files.len(),
            r.manifest
                .files
                .iter()
                .map(|f| f.row_groups.len())
                .sum::<usize>()
        );
    }

    step("4. Key lookup and region scopes from roaring bitmaps");
    let snap = store.snapshot("person")?;
    let first = snap.read(Some(&[0u32].into_iter().collect()), Some(&["citizen_id"]))?;
    let key = first
        .first()
        .map(|b| b.column(0).as_string::<i32>().value(0).to_string())
        .unwrap_or_default();
    let t = Instant::now();
    let id = snap.lookup(&key)?;
    println!(
        "lookup of a citizen ID → row {id:?} ({:.2?}, including lazy index load)",
        t.elapsed()
    );
    let t = Instant::now();
    let id2 = snap.lookup(&key)?;
    println!("second lookup → row {id2:?} ({:.2?})", t.elapsed());
    let county = govshare_core::regions::all()
        .iter()
        .map(|r| {
            (
                r.code,
                snap.scope("hukou_region_code", r.code)
                    .map(|b| b.len())
                    .unwrap_or(0),
            )
        })
        .max_by_key(|(_, n)| *n)
        .map(|(c, _)| c)
        .unwrap_or("430623");
    for scope in [&county[..2], &county[..4], county] {
        let bm = snap.scope("hukou_region_code", scope)?;
        println!(
            "scope {scope:<6}: {:>8} persons, {:>3} of {} row groups touched",
            bm.len(),
            snap.row_groups_touched(&bm),
            snap.row_groups_total()
        );
    }
    let women = snap.scope("sex_code", "2")?;
    let here = snap.scope("hukou_region_code", county)?;
    println!(
        "women registered in {county}: {} (bitmap AND)",
        (&women & &here).len()
    );

    step("5. Incremental update: one upsert (new address), one delete — by key");
    let target = snap.read(Some(&[1u32, 2].into_iter().collect()), None)?;
    let batch = target.first().ok_or_else(|| Error::invalid("no rows"))?;
    let upd_key = batch.column(0).as_string::<i32>().value(0).to_string();
    let del_key = batch.column(0).as_string::<i32>().value(1).to_string();
    let tmp = dir.join("incremental.csv");
    let changed = batch.slice(0, 1);
    write_csv(&tmp, [changed], Encoding::Utf8)?;
    let text = std::fs::read_to_string(&tmp).map_err(|e| Error::Io {
        path: tmp.clone(),
        source: e,
    })?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let row = lines.next().unwrap_or_default().replace("号", "号(已迁居)");
    let csv = format!(
        "_op,{header}\nupsert,{row}\ndelete,{del_key}{}\n",
        ",".repeat(header.matches(',').count())
    );
    std::fs::write(&tmp, csv).map_err(|e| Error::Io {
        path: tmp.clone(),
        source: e,
    })?;
    let r = store.writer()?.load(
        "person",
        Source::from_path(&tmp),
        &LoadOptions {
            mode: LoadMode::Incremental,
            ..Default::default()
        },
    )?;
    println!(
        "version {}: {} upserted, {} deleted, {} live rows",
        r.manifest.version,
        r.manifest.handover.rows_accepted,
        r.manifest.handover.rows_deleted,
        r.manifest.live_rows
    );
    let v1 = store.snapshot_at("person", 1)?;
    let v2 = store.snapshot("person")?;
    println!(
        "deleted key in v1: {:?}, in v2: {:?}",
        v1.lookup(&del_key)?.is_some(),
        v2.lookup(&del_key)?.is_some()
    );
    let addr = |s: &govshare_core::Snapshot| -> Result<String, Error> {
        let id = s
            .lookup(&upd_key)?
            .ok_or_else(|| Error::NotFound(upd_key.clone()))?;
        let b = s.read(Some(&[id].into_iter().collect()), Some(&["hukou_address"]))?;
        Ok(b.first()
            .map(|b| b.column(0).as_string::<i32>().value(0).to_string())
            .unwrap_or_default())
    };
    println!(
        "updated address v1: {}\n                v2: {}",
        addr(&v1)?,
        addr(&v2)?
    );
    print_versions(&store.versions("person")?);

    step("6. Data-quality report on a provider file with some bad rows");
    let qfile = dir.join("quality-sample.csv");
    write_csv(&qfile, Synth::new(7, 2000, 0).persons(2000), Encoding::Utf8)?;
    let text = std::fs::read_to_string(&qfile).map_err(|e| Error::Io {
        path: qfile.clone(),
        source: e,
    })?;
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    // Break a few rows the way real exports break: a wrong check character, an impossible
    // date, a code outside its table, a repeated row, a sex code contradicting the ID.
    let mut set = |line: usize, col: usize, f: &dyn Fn(&str) -> String| {
        if let Some(l) = lines.get_mut(line) {
            let mut cols: Vec<String> = l.split(',').map(String::from).collect();
            if let Some(c) = cols.get_mut(col) {
                *c = f(c);
            }
            *l = cols.join(",");
        }
    };
    set(3, 0, &|c| flip_check(c));
    set(7, 5, &|_| "1990-02-30".into());
    set(20, 7, &|_| "XXX".into());
    set(25, 3, &|c| if c == "1" { "2".into() } else { "1".into() });
    if lines.len() > 30 {
        lines[30] = lines[2].clone();
    }
    std::fs::write(&qfile, lines.join("\n") + "\n").map_err(|e| Error::Io {
        path: qfile.clone(),
        source: e,
    })?;
    print!(
        "{}",
        quality::report(
            &store.catalog()?,
            "person",
            &Source::from_path(&qfile),
            chrono_today()
        )?
    );
    let subject = access_demo(dir, &store, county)?;
    step("8. The audit trail: every decision on a hash chain; who accessed a person");
    let engine = govshare_core::Engine::open(dir)?;
    match govshare_core::audit::verify(&dir.join("audit"), None)? {
        govshare_core::audit::Verdict::Intact { records, head } => println!(
            "chain intact: {records} records, head #{} {}…",
            head.seq,
            &head.hash[..16]
        ),
        other => println!("chain BROKEN: {other:?}"),
    }
    audit_cmd(dir, AuditCmd::Tail { n: 4 })?;
    println!("\n$ govshare audit who-accessed <a citizen ID in county {county}>");
    for a in engine.who_accessed(&subject)? {
        println!(
            "  {} dept {} user {} purpose {} read {} v{} — {}",
            a.time.format("%H:%M:%S"),
            a.department,
            a.user,
            a.purpose,
            a.dataset,
            a.version,
            a.sql
        );
    }
    println!(
        "\nDone. Explore with: govshare --store {} catalog show person | versions person | grant list | sql --user zhang --purpose P01 \"SELECT count(*) FROM person\"",
        dir.display()
    );
    Ok(())
}

/// Step 7 of the demo: departments, users, grants, and the same queries as three principals.
/// Returns the citizen ID of a person in the county, for the who-accessed example.
fn access_demo(dir: &Path, store: &Store, county: &str) -> Result<String, Error> {
    step(
        "7. Access control: departments, real-name users, grants — the same queries as three principals",
    );
    let now = chrono::Utc::now();
    let province = format!("{}0000", &county[..2]);
    store.writer()?.update_policy(
        "demo",
        "departments, users and grants of the demo",
        |p, c| {
            for (code, name, region) in [
                ("PLAT", "省大数据中心", province.as_str()),
                ("PSB", "省公安厅", province.as_str()),
                ("AMR", "省市场监督管理局", province.as_str()),
                ("CIVIL", "省民政厅", province.as_str()),
                ("HRSS", "县人力资源和社会保障局", county),
                ("TAX", "省税务局", province.as_str()),
            ] {
                p.upsert_department(Department {
                    code: code.into(),
                    name: name.into(),
                    region: region.into(),
                    status: PrincipalStatus::Active,
                })?;
            }
            for (id, name, dept, role) in [
                ("admin", "周平台", "PLAT", Role::PlatformAdmin),
                ("psb_appr", "赵审批", "PSB", Role::ProviderApprover),
                ("amr_appr", "钱审批", "AMR", Role::ProviderApprover),
                ("zhang", "张民政", "CIVIL", Role::Consumer),
                ("li", "李人社", "HRSS", Role::Consumer),
                ("wang", "王税务", "TAX", Role::Consumer),
            ] {
                p.upsert_user(User {
                    id: id.into(),
                    name: name.into(),
                    department: dept.into(),
                    roles: vec![role],
                    status: PrincipalStatus::Active,
                })?;
            }
            let grant = |dept: &str,
                         dataset: &str,
                         purpose: &str,
                         text: &str,
                         fields: &[(&str, Option<MaskKind>)],
                         regions: Option<Vec<String>>| GrantRequest {
                consumer_dept: dept.into(),
                users: vec![],
                dataset: dataset.into(),
                fields: fields
                    .iter()
                    .map(|(f, m)| FieldGrant {
                        field: f.to_string(),
                        treatment: m.map_or(Treatment::Clear, Treatment::Masked),
                    })
                    .collect(),
                purpose_code: purpose.into(),
                purpose_text: text.into(),
                scope: RowScope {
                    regions,
                    subjects: None,
                },
                modes: vec![Mode::Query],
                valid_from: now,
                valid_until: now + chrono::Duration::days(365),
            };
            let ident = [
                ("citizen_id", None),
                ("name", None),
                ("birth_date", None),
                ("hukou_region_code", None),
                ("hukou_address", None),
                ("mobile_phone", Some(MaskKind::Phone)),
            ];
            p.decide_request(
                c,
                grant(
                    "CIVIL",
                    "person",
                    "P01",
                    "最低生活保障资格审核",
                    &ident,
                    Some(vec![province.clone()]),
                ),
                "psb_appr",
                true,
                "",
                now,
            )?;
            let masked = [
                ("citizen_id", Some(MaskKind::CitizenId)),
                ("name", Some(MaskKind::Name)),
                ("birth_date", Some(MaskKind::DateToYear)),
                ("hukou_region_code", None),
                ("hukou_address", Some(MaskKind::Address)),
                ("mobile_phone", Some(MaskKind::Phone)),
            ];
            p.decide_request(
                c,
                grant(
                    "HRSS",
                    "person",
                    "P02",
                    "就业登记核查",
                    &masked,
                    Some(vec![county.to_string()]),
                ),
                "psb_appr",
                true,
                "",
                now,
            )?;
            p.grant_on_request(
                c,
                grant(
                    "TAX",
                    "legal_entity",
                    "P03",
                    "税务登记比对",
                    &[
                        ("uscc", None),
                        ("org_name", None),
                        ("registered_capital", None),
                        ("domicile_region_code", None),
                    ],
                    None,
                ),
                "admin",
                now,
            )?;
            Ok(())
        },
    )?;
    println!(
        "zhang (省民政厅, P01): person in province {province}, identity in clear, phone masked"
    );
    println!("li    (县人社局, P02):  person in county {county}, identity masked");
    println!("wang  (省税务局, P03):  legal_entity only");
    let engine = govshare_core::Engine::open(dir)?;
    let queries = [
        "SELECT citizen_id, name, birth_date, hukou_address, mobile_phone FROM person ORDER BY citizen_id LIMIT 3",
        "SELECT count(*) AS persons FROM person",
        "SELECT marital_status_code FROM person LIMIT 1",
    ];
    for q in queries {
        println!("\n$ {q}");
        for (user, purpose) in [("zhang", "P01"), ("li", "P02"), ("wang", "P03")] {
            print!("-- as {user}/{purpose}: ");
            match engine.session(user, purpose).and_then(|s| s.sql(q)) {
                Ok(r) => println!("\n{}", arrow_pretty(&r.batches)?),
                Err(e) => println!("{e}"),
            }
        }
    }
    let snap = store.snapshot("person")?;
    let row = snap
        .scope("hukou_region_code", county)?
        .min()
        .ok_or_else(|| Error::NotFound("nobody in the county".into()))?;
    let b = snap.read(Some(&[row].into_iter().collect()), Some(&["citizen_id"]))?;
    use arrow::array::AsArray;
    Ok(b.first()
        .map(|b| b.column(0).as_string::<i32>().value(0).to_string())
        .unwrap_or_default())
}

fn flip_check(line: &str) -> String {
    let mut s = line.to_string();
    if s.len() >= 18 {
        let c = s.as_bytes()[17];
        let r = if c == b'0' { "1" } else { "0" };
        s.replace_range(17..18, r);
    }
    s
}
