//! The command-line tool: argument definitions in `args`, one module per command family, the
//! demo in its own file. Commands only parse, call govshare-core (the same `Engine`, `Session`
//! and administrative calls the C and Python bindings use) and print.

/// `println!` for the command's output, ending the program quietly when stdout is closed
/// (`govshare ... | head`) instead of panicking.
macro_rules! out {
    () => { $crate::cli::emit(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::emit(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` with the same closed-pipe handling as [`out!`].
macro_rules! out_partial {
    ($($t:tt)*) => { $crate::cli::emit(format_args!($($t)*)) };
}

mod args;
mod audit;
mod catalog;
mod data;
mod demo;
mod principals;
mod workflow;

use std::process::ExitCode;

use clap::Parser;
use govshare_core::{Error, ErrorCode};
use indicatif::{ProgressBar, ProgressStyle};

use args::{Cli, Command, OutputFormat};

/// Parse the command line, run the command, map its error onto the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Write to stdout; a closed pipe ends the program with success (the reader has what it
/// wanted), any other write failure with exit code 1.
pub(crate) fn emit(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// A spinner with the elapsed time for an operation whose progress cannot be counted (it
/// draws on a terminal only; finish it when the work ends).
pub(crate) fn working(what: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(what.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

pub(crate) fn progress(total: Option<u64>, what: &str) -> ProgressBar {
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
        Command::Data(cmd) => data::run(&cli.store, cmd)?,
        Command::Dept { action } => principals::dept_cmd(&cli.store, action)?,
        Command::User { action } => principals::user_cmd(&cli.store, action)?,
        Command::Grant { action } => principals::grant_cmd(&cli.store, action)?,
        Command::System { action } => principals::system_cmd(&cli.store, action)?,
        Command::Sql {
            user,
            purpose,
            auth,
            format,
            csv,
            params,
            query,
        } => {
            let engine = govshare_core::Engine::open(&cli.store)?;
            let login = govshare_core::access::policy::Login::new(&user, &purpose, auth.into());
            let session = engine.session_as(&login)?;
            // Ctrl-C cancels the query (it ends recorded as cancelled, and the command exits
            // with the interrupted code) rather than killing the process mid-query.
            let cancel = session.canceller();
            ctrlc::set_handler(move || cancel.cancel())
                .map_err(|e| Error::internal(format!("cannot handle Ctrl-C: {e}")))?;
            let r = if params.is_empty() {
                session.sql(&query)?
            } else {
                // One row of text values; each is converted to the type its place asks for.
                let columns = params.iter().enumerate().map(|(i, v)| {
                    (
                        format!("${}", i + 1),
                        std::sync::Arc::new(arrow::array::StringArray::from(vec![v.as_str()]))
                            as arrow::array::ArrayRef,
                    )
                });
                let row = arrow::array::RecordBatch::try_from_iter(columns)?;
                session.sql_params(&query, &row)?
            };
            let format = if csv { OutputFormat::Csv } else { format };
            print_result(&r, format, "rows")?;
        }
        Command::ByKey {
            user,
            purpose,
            auth,
            format,
            dataset,
            keys,
        } => {
            let engine = govshare_core::Engine::open(&cli.store)?;
            let login = govshare_core::access::policy::Login::new(&user, &purpose, auth.into());
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let r = engine.session_as(&login)?.lookup(&dataset, &keys)?;
            print_result(&r, format, "rows")?;
        }
        Command::Changes {
            user,
            purpose,
            auth,
            dataset,
            out,
            ack,
        } => data::changes(&cli.store, &user, &purpose, auth, &dataset, &out, ack)?,
        Command::Aggregate {
            user,
            purpose,
            auth,
            format,
            query,
        } => {
            let engine = govshare_core::Engine::open(&cli.store)?;
            let login = govshare_core::access::policy::Login::new(&user, &purpose, auth.into());
            let r = engine.session_as(&login)?.aggregate(&query)?;
            print_result(&r, format, "groups")?;
        }
        Command::Export {
            user,
            purpose,
            auth,
            dataset,
            format,
            out,
        } => data::export(&cli.store, &user, &purpose, auth, &dataset, &format, &out)?,
        Command::ExportCheck { manifest } => {
            let (m, digest) = govshare_core::engine::verify_export(&manifest)?;
            out!(
                "ok: {} rows of {} version {} (grant {}), {} file(s) as listed",
                m.rows,
                m.dataset,
                m.version,
                m.grant,
                m.files.len()
            );
            out!(
                "manifest blake3 {digest} (the trail's export record after query {})",
                m.query_seq
            );
        }
        Command::Verify {
            user,
            purpose,
            dataset,
            key,
            claims,
            file,
        } => data::verify(&cli.store, &user, &purpose, &dataset, key, &claims, file)?,
        Command::Services { by, json } => workflow::services(&cli.store, &by, json)?,
        Command::Application { action } => workflow::application(&cli.store, action)?,
        Command::Objection { action } => workflow::objection(&cli.store, action)?,
        Command::Agreement { action } => workflow::agreement(&cli.store, action)?,
        Command::Escalate { by } => workflow::escalate(&cli.store, &by)?,
        Command::Conflicts { action } => workflow::conflicts(&cli.store, action)?,
        Command::Calendar { action } => workflow::calendar(&cli.store, action)?,
        Command::Act { json, by } => workflow::generic(&cli.store, &by, &json)?,
        Command::Report {
            name,
            sql,
            csv,
            html,
            by,
        } => workflow::report(&cli.store, name, sql, csv, html, &by)?,
        Command::Audit { action } => audit::run(&cli.store, action)?,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "govshare", &mut script);
            out_partial!("{}", String::from_utf8_lossy(&script));
        }
        Command::Demo {
            persons,
            entities,
            dir,
        } => demo::run(&dir, persons, entities)?,
    }
    Ok(())
}

pub(crate) fn chrono_today() -> chrono::NaiveDate {
    chrono::Local::now().date_naive()
}

/// Print a query's rows in `format` (`what` counts them under a table: "rows", "groups").
pub(crate) fn print_result(
    r: &govshare_core::engine::QueryResult,
    format: OutputFormat,
    what: &str,
) -> Result<(), Error> {
    match format {
        OutputFormat::Table => {
            out!("{}", arrow_pretty(&r.batches)?);
            out!("({} {what})", r.num_rows());
        }
        OutputFormat::Csv => {
            let mut buf = Vec::new();
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut buf);
            for b in &r.batches {
                w.write(b)?;
            }
            drop(w);
            out_partial!("{}", String::from_utf8_lossy(&buf));
        }
        OutputFormat::Json => {
            let mut buf = Vec::new();
            let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
            for b in &r.batches {
                w.write(b)?;
            }
            w.finish()?;
            drop(w);
            out_partial!("{}", String::from_utf8_lossy(&buf));
        }
        OutputFormat::Arrow => {
            use std::io::Write;
            let mut buf = Vec::new();
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &r.schema)?;
            for b in &r.batches {
                w.write(b)?;
            }
            w.finish()?;
            drop(w);
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(&buf).and_then(|()| out.flush())
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(Error::Io {
                    path: "<stdout>".into(),
                    source: e,
                });
            }
        }
    }
    Ok(())
}

pub(crate) fn arrow_pretty(batches: &[arrow::array::RecordBatch]) -> Result<String, Error> {
    Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}

/// The process exit code of an error, by its stable code (README lists them): 2 the request
/// was wrong (bad input, a refused strict load, a query that failed as it ran or hit a limit),
/// 3 not found, 4 store locked, 5 access denied, 1 anything else (integrity, I/O, internal,
/// interrupted).
fn exit_code(e: &Error) -> u8 {
    match e.code() {
        ErrorCode::InvalidInput
        | ErrorCode::Rejected
        | ErrorCode::QueryFailed
        | ErrorCode::LimitExceeded => 2,
        ErrorCode::NotFound => 3,
        ErrorCode::Locked => 4,
        ErrorCode::AccessDenied => 5,
        ErrorCode::Integrity | ErrorCode::Io | ErrorCode::Internal | ErrorCode::Interrupted => 1,
    }
}
