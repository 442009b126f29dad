//! `govshare`: the command-line tool over govshare-core.
//!
//! Run `govshare demo` for a guided tour on a generated store, or `govshare --help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use govshare_core::catalog::{CatalogFile, ShareType};
use govshare_core::ingest::{Encoding, HandoverInfo, LoadMode, LoadOptions, Source, write_csv};
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
        Command::Demo {
            persons,
            entities,
            dir,
        } => demo(&dir, persons, entities)?,
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
    println!(
        "\nDone. Explore with: govshare --store {} catalog show person | versions person | lookup person {key}",
        dir.display()
    );
    Ok(())
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
