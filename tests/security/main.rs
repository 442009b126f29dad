//! The security suite: principal + query → rows or error, one topic a file in
//! `tests/security/*.slt`, run by the `sqllogictest` crate's runner (the format of DataFusion's
//! own suite). One test per file, named by the file: `cargo test --test security -- 03_scope`
//! runs one; a failure names the file and line.
//!
//! - `connection <user>@<purpose>` switches the principal for all the records that follow,
//!   up to the next `connection` line (one session per principal, opened on first use).
//! - `query <types> rowsort` then `----` and the expected rows, cells joined by ` | `; the
//!   expected section may instead be `raw: <SQL>` (equal, as sorted rows, to this query on the
//!   raw data: same files, every field clear, no scope), `rows: N`, or `lacks: a ;; b` /
//!   `has: c` lines about the output text.
//! - `query error <regex>`: the query fails; the message is `<CODE>: <message>`, the code being
//!   the engine's stable error code (`ACCESS_DENIED`, `INVALID_INPUT`, ...).
//!
//! `$NAME` placeholders are filled from the fixture (scope codes, in/out-of-scope subject
//! keys). Every error message is also checked never to contain a subject key or name from the
//! data. Regenerate column types and expected rows after a deliberate change with
//! `GOVSHARE_SLT_COMPLETE=1 cargo test --test security` (records whose expectation still holds
//! are kept as written).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use arrow::datatypes::DataType;
use govshare_core::Session;
use govshare_core::access::policy::{AuthMethod, Login};
use govshare_testkit::{Fixture, fixture, render_cells};
use sqllogictest::harness::{Arguments, Failed, Trial, run};
use sqllogictest::{
    Connection, DB, DBOutput, DefaultColumnType, Normalizer, Record, Runner, default_normalizer,
    strict_column_validator, update_record_with_output,
};

/// An error as the runner sees it: the stable code, then the engine's message.
#[derive(Debug)]
struct QueryError(String);

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

/// One principal's connection: a session opened for `user@purpose` — a second-factor login,
/// as the hosts of the suite's principals authenticate them — or for `user@purpose/password`.
struct Principal {
    fixture: &'static Fixture,
    login: Login,
    session: Option<Session>,
}

impl DB for Principal {
    type Error = QueryError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, QueryError> {
        let sql = self.fixture.subst(sql);
        let outcome = match &self.session {
            Some(s) => s.sql(&sql),
            None => self.fixture.engine.session_as(&self.login).and_then(|s| {
                let r = s.sql(&sql);
                self.session = Some(s);
                r
            }),
        };
        match outcome {
            Ok(r) => Ok(DBOutput::Rows {
                types: r
                    .schema
                    .fields()
                    .iter()
                    .map(|f| column_type(f.data_type()))
                    .collect(),
                rows: render_cells(&r.batches),
            }),
            Err(e) => {
                let msg = e.to_string();
                // A leak fails the file whatever the expectation says.
                self.fixture.assert_clean(&msg);
                Err(QueryError(format!("{}: {msg}", e.code().name())))
            }
        }
    }
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating() || matches!(t, DataType::Decimal128(..)) => {
            DefaultColumnType::FloatingPoint
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

/// The expectations: rows (sorted, cells joined by ` | `), `raw:`, `rows:`, `lacks:`/`has:`.
/// A plain function (the runner takes a function pointer), so it reaches the fixture through
/// its process-wide instance.
fn validate(_: Normalizer, actual: &[Vec<String>], expected: &[String]) -> bool {
    let f = fixture();
    let mut got: Vec<String> = actual.iter().map(|r| r.join(" | ")).collect();
    got.sort();
    let expected: Vec<String> = expected.iter().map(|l| f.subst(l.trim())).collect();
    match expected.first().map(String::as_str) {
        Some(e) if e.starts_with("raw:") => got == f.raw_rows(e.trim_start_matches("raw:").trim()),
        Some(e) if e.starts_with("rows:") => e
            .trim_start_matches("rows:")
            .trim()
            .parse::<usize>()
            .is_ok_and(|n| n == got.len()),
        Some(e) if e.starts_with("lacks:") || e.starts_with("has:") => {
            let text = got.join("\n");
            expected.iter().all(|line| {
                if let Some(l) = line.strip_prefix("lacks:") {
                    l.split(";;").all(|part| !text.contains(part.trim()))
                } else if let Some(h) = line.strip_prefix("has:") {
                    text.contains(h.trim())
                } else {
                    false
                }
            })
        }
        _ => {
            let mut want = expected;
            want.sort();
            got == want
        }
    }
}

/// Run one file; with `complete`, rewrite it with the actual column types and rows of the
/// records whose expectation fails.
fn run_file(path: &Path, complete: bool) -> Result<(), Failed> {
    let f = fixture();
    let principal: Rc<RefCell<Option<Login>>> = Rc::default();
    let current = principal.clone();
    let mut runner = Runner::new(move || {
        let who = current.borrow().clone();
        async move {
            let login = who.ok_or_else(|| {
                QueryError("no `connection user@purpose` before this record".into())
            })?;
            Ok(Principal {
                fixture: f,
                login,
                session: None,
            })
        }
    });
    runner.with_validator(validate);
    runner.with_column_validator(strict_column_validator);
    let records = sqllogictest::parse_file::<DefaultColumnType>(path)
        .map_err(|e| Failed::from(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    let mut queries = 0;
    let mut current = Connection::Default;
    for mut record in records {
        if let Record::Connection(Connection::Named(name)) = &record {
            let (user, purpose) = name.split_once('@').ok_or_else(|| {
                Failed::from(format!(
                    "{}: `connection {name}` is not user@purpose",
                    path.display()
                ))
            })?;
            let (purpose, auth) = match purpose.split_once('/') {
                None => (purpose, AuthMethod::SecondFactor),
                Some((p, "password")) => (p, AuthMethod::Password),
                Some(_) => {
                    return Err(Failed::from(format!(
                        "{}: `connection {name}`: only /password may follow the purpose",
                        path.display()
                    )));
                }
            };
            *principal.borrow_mut() = Some(Login::new(user, purpose, auth));
            current = Connection::Named(name.clone());
        }
        // In plain sqllogictest a `connection` line applies to the next record only; here it
        // switches the principal until the next one, so each record runs on it.
        if let Record::Query { connection, .. } | Record::Statement { connection, .. } = &mut record
        {
            *connection = current.clone();
            queries += 1;
        }
        if complete {
            let output = futures::executor::block_on(runner.apply_record(record.clone()));
            let updated = update_record_with_output(
                &record,
                &output,
                " | ",
                validate,
                default_normalizer,
                strict_column_validator,
            );
            out.push(updated.unwrap_or(record));
        } else {
            runner.run(record)?;
        }
    }
    if complete {
        let mut text: String = out.iter().map(|r| format!("{r}\n")).collect();
        // Records print their own trailing blank line; keep one blank line between records.
        while text.contains("\n\n\n") {
            text = text.replace("\n\n\n", "\n\n");
        }
        let text = format!("{}\n", text.trim_end());
        std::fs::write(path, text).map_err(|e| Failed::from(e.to_string()))?;
    }
    if queries == 0 {
        return Err(format!("{}: no query records", path.display()).into());
    }
    Ok(())
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/security");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/security")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    let complete = std::env::var_os("GOVSHARE_SLT_COMPLETE").is_some();
    let mut trials: Vec<Trial> = files
        .iter()
        .map(|p| {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let p = p.clone();
            Trial::test(name, move || run_file(&p, complete))
        })
        .collect();
    // The suite as a whole stays large: a file deleted or emptied is noticed.
    let files_for_count = files.clone();
    trials.push(Trial::test("suite_size", move || {
        let n: usize = files_for_count
            .iter()
            .map(|p| {
                sqllogictest::parse_file::<DefaultColumnType>(p)
                    .map(|rs| {
                        rs.iter()
                            .filter(|r| matches!(r, Record::Query { .. }))
                            .count()
                    })
                    .unwrap_or(0)
            })
            .sum();
        if n >= 150 {
            Ok(())
        } else {
            Err(format!("the security suite has {n} queries, fewer than 150").into())
        }
    }));
    run(&Arguments::from_args(), trials).exit();
}
