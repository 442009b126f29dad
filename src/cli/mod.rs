//! The command-line tool: argument definitions in `args`, one module per command family, the
//! demo in its own file. Commands only parse, call govshare-core (the same `Engine`, `Session`
//! and administrative calls the C and Python bindings use) and print.

mod args;
mod audit;
mod catalog;
mod data;
mod demo;
mod principals;

use std::process::ExitCode;

use clap::Parser;
use govshare_core::{Error, ErrorCode};
use indicatif::{ProgressBar, ProgressStyle};

use args::{Cli, Command};

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
        Command::Audit { action } => audit::run(&cli.store, action)?,
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
