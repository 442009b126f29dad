//! The ADBC (Arrow Database Connectivity) driver of govshare: one driver for every language
//! with an ADBC driver manager — Python's `adbc-driver-manager` and its DB-API 2.0 layer (so
//! `pandas.read_sql` works), Go, Java through JNI, R, C#.
//!
//! This crate only translates, like the C and Python bindings: an ADBC *database* is a store
//! (option `uri`: the store directory), a *connection* is a govshare session (options
//! `govshare.user`, `govshare.purpose`, and optionally `govshare.auth` — `password`,
//! `certificate` or `second_factor` — and `govshare.system`), and a *statement* runs through the
//! session's SQL door, with bound parameters through `Session::sql_params_stream`. Every
//! statement, and every catalog listing, is decided by the gate and recorded; `GetObjects` and
//! `GetTableSchema` show only what the session may see. Errors carry the gate's message, an
//! ADBC status, an SQLSTATE and the engine's stable error code (the detail
//! `govshare.error_code`; the C statuses have the same numbers).
//!
//! The C entry points (`AdbcGovshareAdbcInit`, and the generic `AdbcDriverInit`) come from the
//! Arrow project's `adbc_ffi` exporter, which also catches panics at the boundary.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use adbc_core::error::{Error as AdbcError, Result as AdbcResult, Status};
use adbc_core::options::{
    InfoCode, ObjectDepth, OptionConnection, OptionDatabase, OptionStatement, OptionValue,
};
use adbc_core::{CancelHandle, Connection, Database, Driver, Optionable, PartitionedResult};
use arrow::array::{RecordBatch, RecordBatchIterator, RecordBatchReader};
use arrow::datatypes::Schema;
use govshare_core::access::policy::{AuthMethod, Login};
use govshare_core::engine::{Canceller, QueryStreamArrow, VisibleDataset};
use govshare_core::{Engine, Error, ErrorCode, Session};

/// The C entry points. The exporter's macro writes `#[no_mangle] extern "C"` functions, which
/// the workspace's `unsafe_code` lint flags; the unsafe code itself is the Arrow project's.
#[allow(unsafe_code)]
mod entry {
    adbc_ffi::export_driver!(AdbcGovshareAdbcInit, super::GovshareDriver);
}

/// Connection option: the real-name user the session acts as.
pub const OPTION_USER: &str = "govshare.user";
/// Connection option: the declared purpose code.
pub const OPTION_PURPOSE: &str = "govshare.purpose";
/// Connection option: how the host authenticated the user (`password`, `certificate`,
/// `second_factor`; default `password`).
pub const OPTION_AUTH: &str = "govshare.auth";
/// Connection option: the registered host system the session runs through.
pub const OPTION_SYSTEM: &str = "govshare.system";

/// The error detail holding govshare's stable error code (the C status number, as text).
pub const ERROR_CODE_DETAIL: &str = "govshare.error_code";

/// The driver (stateless; the exporter makes one per database).
#[derive(Debug, Default)]
pub struct GovshareDriver;

impl Driver for GovshareDriver {
    type DatabaseType = GovshareDatabase;

    fn new_database(&mut self) -> AdbcResult<GovshareDatabase> {
        Ok(GovshareDatabase::default())
    }

    fn new_database_with_opts(
        &mut self,
        opts: impl IntoIterator<Item = (OptionDatabase, OptionValue)>,
    ) -> AdbcResult<GovshareDatabase> {
        let mut db = GovshareDatabase::default();
        for (k, v) in opts {
            db.set_option(k, v)?;
        }
        Ok(db)
    }
}

/// A store: its directory (option `uri`), opened on the first connection and shared by the
/// connections after it.
#[derive(Debug, Default)]
pub struct GovshareDatabase {
    store: Option<PathBuf>,
    engine: Mutex<Option<Engine>>,
}

impl GovshareDatabase {
    fn engine(&self) -> AdbcResult<Engine> {
        let mut engine = self
            .engine
            .lock()
            .map_err(|_| internal("database lock poisoned"))?;
        if let Some(e) = engine.as_ref() {
            return Ok(e.clone());
        }
        let store = self.store.as_ref().ok_or_else(|| {
            AdbcError::with_message_and_status(
                "set the database option 'uri' to the store directory",
                Status::InvalidState,
            )
        })?;
        let opened = Engine::open(store).map_err(to_adbc)?;
        *engine = Some(opened.clone());
        Ok(opened)
    }
}

impl Optionable for GovshareDatabase {
    type Option = OptionDatabase;

    fn set_option(&mut self, key: OptionDatabase, value: OptionValue) -> AdbcResult<()> {
        match key {
            OptionDatabase::Uri => {
                if self.engine.lock().map(|e| e.is_some()).unwrap_or(true) {
                    return Err(AdbcError::with_message_and_status(
                        "the store is already open; set 'uri' before the first connection",
                        Status::InvalidState,
                    ));
                }
                self.store = Some(PathBuf::from(text(&value, "uri")?));
                Ok(())
            }
            other => Err(unknown_option(other.as_ref())),
        }
    }

    fn get_option_string(&self, key: OptionDatabase) -> AdbcResult<String> {
        match (&key, &self.store) {
            (OptionDatabase::Uri, Some(p)) => Ok(p.display().to_string()),
            _ => Err(not_set(key.as_ref())),
        }
    }

    fn get_option_bytes(&self, key: OptionDatabase) -> AdbcResult<Vec<u8>> {
        Err(not_set(key.as_ref()))
    }

    fn get_option_int(&self, key: OptionDatabase) -> AdbcResult<i64> {
        Err(not_set(key.as_ref()))
    }

    fn get_option_double(&self, key: OptionDatabase) -> AdbcResult<f64> {
        Err(not_set(key.as_ref()))
    }
}

impl Database for GovshareDatabase {
    type ConnectionType = GovshareConnection;

    fn new_connection(&self) -> AdbcResult<GovshareConnection> {
        self.new_connection_with_opts(std::iter::empty())
    }

    fn new_connection_with_opts(
        &self,
        opts: impl IntoIterator<Item = (OptionConnection, OptionValue)>,
    ) -> AdbcResult<GovshareConnection> {
        let (mut user, mut purpose, mut auth, mut system) =
            (None, None, AuthMethod::Password, None);
        for (k, v) in opts {
            match k.as_ref() {
                OPTION_USER => user = Some(text(&v, OPTION_USER)?.to_string()),
                OPTION_PURPOSE => purpose = Some(text(&v, OPTION_PURPOSE)?.to_string()),
                OPTION_AUTH => auth = auth_method(text(&v, OPTION_AUTH)?)?,
                OPTION_SYSTEM => system = Some(text(&v, OPTION_SYSTEM)?.to_string()),
                _ => connection_setting(&k, &v)?,
            }
        }
        let (Some(user), Some(purpose)) = (user, purpose) else {
            return Err(AdbcError::with_message_and_status(
                format!(
                    "a govshare connection is a session: set the connection options \
                     '{OPTION_USER}' and '{OPTION_PURPOSE}'"
                ),
                Status::InvalidArguments,
            ));
        };
        let mut login = Login::new(&user, &purpose, auth);
        login.system = system;
        let session = self.engine()?.session_as(&login).map_err(to_adbc)?;
        Ok(GovshareConnection {
            session: Arc::new(session),
        })
    }
}

/// A session: every statement and listing decided by the gate for its user and purpose.
#[derive(Debug)]
pub struct GovshareConnection {
    session: Arc<Session>,
}

impl Optionable for GovshareConnection {
    type Option = OptionConnection;

    fn set_option(&mut self, key: OptionConnection, value: OptionValue) -> AdbcResult<()> {
        match key.as_ref() {
            OPTION_USER | OPTION_PURPOSE | OPTION_AUTH | OPTION_SYSTEM => {
                Err(AdbcError::with_message_and_status(
                    "a connection's session is fixed when it opens; open another connection",
                    Status::InvalidState,
                ))
            }
            _ => connection_setting(&key, &value),
        }
    }

    fn get_option_string(&self, key: OptionConnection) -> AdbcResult<String> {
        match key {
            OptionConnection::AutoCommit | OptionConnection::ReadOnly => Ok("true".into()),
            ref k if k.as_ref() == OPTION_USER => Ok(self.session.user().to_string()),
            ref k if k.as_ref() == OPTION_PURPOSE => Ok(self.session.purpose().to_string()),
            k => Err(not_set(k.as_ref())),
        }
    }

    fn get_option_bytes(&self, key: OptionConnection) -> AdbcResult<Vec<u8>> {
        Err(not_set(key.as_ref()))
    }

    fn get_option_int(&self, key: OptionConnection) -> AdbcResult<i64> {
        Err(not_set(key.as_ref()))
    }

    fn get_option_double(&self, key: OptionConnection) -> AdbcResult<f64> {
        Err(not_set(key.as_ref()))
    }
}

type Reader = Box<dyn RecordBatchReader + Send + 'static>;

impl Connection for GovshareConnection {
    type StatementType = GovshareStatement;

    fn new_statement(&mut self) -> AdbcResult<GovshareStatement> {
        Ok(GovshareStatement {
            session: self.session.clone(),
            sql: None,
            params: None,
        })
    }

    fn get_cancel_handle(&self) -> Box<dyn CancelHandle> {
        Box::new(Cancel(self.session.canceller()))
    }

    fn get_info(&self, _codes: Option<HashSet<InfoCode>>) -> AdbcResult<Reader> {
        Err(not_implemented("GetInfo"))
    }

    fn get_objects(
        &self,
        depth: ObjectDepth,
        catalog: Option<&str>,
        db_schema: Option<&str>,
        table_name: Option<&str>,
        table_type: Option<Vec<&str>>,
        column_name: Option<&str>,
    ) -> AdbcResult<Reader> {
        // Tables are named without catalog or schema in govshare's SQL: one unnamed catalog
        // and schema, matched only when no catalog or schema filter is given.
        let listed = self.session.catalog().map_err(to_adbc)?;
        let schema_ref = adbc_core::schemas::GET_OBJECTS_SCHEMA.clone();
        let unnamed_ok = catalog.is_none() && db_schema.is_none();
        let tables_ok = table_type.is_none_or(|t| t.contains(&"TABLE"));
        let rows = if !unnamed_ok {
            Vec::new()
        } else {
            vec![objects_row(
                &listed,
                depth,
                table_name.filter(|_| tables_ok),
                tables_ok,
                column_name,
            )]
        };
        let mut text = String::new();
        for row in rows {
            text.push_str(&row.to_string());
            text.push('\n');
        }
        let reader = arrow::json::ReaderBuilder::new(schema_ref.clone())
            .build(std::io::Cursor::new(text.into_bytes()))
            .map_err(|e| internal(&format!("GetObjects: {e}")))?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| internal(&format!("GetObjects: {e}")))?;
        Ok(Box::new(RecordBatchIterator::new(
            batches.into_iter().map(Ok),
            schema_ref,
        )))
    }

    fn get_table_schema(
        &self,
        catalog: Option<&str>,
        db_schema: Option<&str>,
        table_name: &str,
    ) -> AdbcResult<Schema> {
        if catalog.is_some_and(|c| !c.is_empty()) || db_schema.is_some_and(|s| !s.is_empty()) {
            return Err(AdbcError::with_message_and_status(
                "govshare tables have no catalog or schema: name the table alone",
                Status::NotFound,
            ));
        }
        // Exactly what a query of the table would return to this session — decided by the gate
        // and recorded like any query.
        let sql = format!(
            "SELECT * FROM \"{}\" LIMIT 0",
            table_name.replace('"', "\"\"")
        );
        let stream = self.session.sql_stream(&sql).map_err(to_adbc)?;
        Ok(stream.schema().as_ref().clone())
    }

    fn get_table_types(&self) -> AdbcResult<Reader> {
        let schema = adbc_core::schemas::GET_TABLE_TYPES_SCHEMA.clone();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(arrow::array::StringArray::from(vec!["TABLE"]))],
        )
        .map_err(|e| internal(&e.to_string()))?;
        Ok(Box::new(RecordBatchIterator::new([Ok(batch)], schema)))
    }

    fn get_statistic_names(&self) -> AdbcResult<Reader> {
        Err(not_implemented("GetStatisticNames"))
    }

    fn get_statistics(
        &self,
        _catalog: Option<&str>,
        _db_schema: Option<&str>,
        _table_name: Option<&str>,
        _approximate: bool,
    ) -> AdbcResult<Reader> {
        // Statistics describe rows the session may not see (out of scope, deleted).
        Err(not_implemented("GetStatistics"))
    }

    fn commit(&mut self) -> AdbcResult<()> {
        // Read-only: there is never anything to commit.
        Ok(())
    }

    fn rollback(&mut self) -> AdbcResult<()> {
        Ok(())
    }

    fn read_partition(&self, _partition: impl AsRef<[u8]>) -> AdbcResult<Reader> {
        Err(not_implemented("ReadPartition"))
    }
}

/// A query of a connection's session, with its bound parameters.
#[derive(Debug)]
pub struct GovshareStatement {
    session: Arc<Session>,
    sql: Option<String>,
    params: Option<RecordBatch>,
}

impl Optionable for GovshareStatement {
    type Option = OptionStatement;

    fn set_option(&mut self, key: OptionStatement, _value: OptionValue) -> AdbcResult<()> {
        Err(unknown_option(key.as_ref()))
    }

    fn get_option_string(&self, key: OptionStatement) -> AdbcResult<String> {
        Err(not_set(key.as_ref()))
    }

    fn get_option_bytes(&self, key: OptionStatement) -> AdbcResult<Vec<u8>> {
        Err(not_set(key.as_ref()))
    }

    fn get_option_int(&self, key: OptionStatement) -> AdbcResult<i64> {
        Err(not_set(key.as_ref()))
    }

    fn get_option_double(&self, key: OptionStatement) -> AdbcResult<f64> {
        Err(not_set(key.as_ref()))
    }
}

impl adbc_core::Statement for GovshareStatement {
    fn bind(&mut self, batch: RecordBatch) -> AdbcResult<()> {
        self.params = Some(batch);
        Ok(())
    }

    fn bind_stream(&mut self, reader: Box<dyn RecordBatchReader + Send>) -> AdbcResult<()> {
        let schema = reader.schema();
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&format!("the bound parameter stream failed: {e}")))?;
        let batch = arrow::compute::concat_batches(&schema, &batches)
            .map_err(|e| invalid(&format!("the bound parameters: {e}")))?;
        self.params = Some(batch);
        Ok(())
    }

    fn execute(&mut self) -> AdbcResult<Reader> {
        let sql = self.sql.as_deref().ok_or_else(|| {
            AdbcError::with_message_and_status(
                "set the statement's SQL query first",
                Status::InvalidState,
            )
        })?;
        let stream = match &self.params {
            Some(p) => self.session.sql_params_stream(sql, p),
            None => self.session.sql_stream(sql),
        }
        .map_err(to_adbc)?;
        Ok(Box::new(QueryStreamArrow(stream)))
    }

    fn execute_update(&mut self) -> AdbcResult<Option<i64>> {
        Err(AdbcError::with_message_and_status(
            "govshare is read-only: only queries are allowed (no DDL, DML, COPY or SET)",
            Status::Unauthorized,
        ))
    }

    fn execute_schema(&mut self) -> AdbcResult<Schema> {
        Err(not_implemented(
            "ExecuteSchema (run the query; its stream carries the schema)",
        ))
    }

    fn execute_partitions(&mut self) -> AdbcResult<PartitionedResult> {
        Err(not_implemented("ExecutePartitions"))
    }

    fn get_parameter_schema(&self) -> AdbcResult<Schema> {
        Err(not_implemented("GetParameterSchema"))
    }

    fn prepare(&mut self) -> AdbcResult<()> {
        // Planning happens when the statement runs, under the policy in force then (a grant
        // revoked after prepare must not be honoured).
        Ok(())
    }

    fn set_sql_query(&mut self, query: impl AsRef<str>) -> AdbcResult<()> {
        self.sql = Some(query.as_ref().to_string());
        self.params = None;
        Ok(())
    }

    fn set_substrait_plan(&mut self, _plan: impl AsRef<[u8]>) -> AdbcResult<()> {
        Err(not_implemented("Substrait plans"))
    }

    fn get_cancel_handle(&self) -> Box<dyn CancelHandle> {
        Box::new(Cancel(self.session.canceller()))
    }
}

/// Cancels the running queries of a session.
struct Cancel(Canceller);

impl CancelHandle for Cancel {
    fn try_cancel(&self) -> AdbcResult<()> {
        self.0.cancel();
        Ok(())
    }
}

/// One GetObjects row (the unnamed catalog) as JSON in `GET_OBJECTS_SCHEMA`'s shape.
fn objects_row(
    listed: &[VisibleDataset],
    depth: ObjectDepth,
    table_pattern: Option<&str>,
    tables_ok: bool,
    column_pattern: Option<&str>,
) -> serde_json::Value {
    if matches!(depth, ObjectDepth::Catalogs) {
        return serde_json::json!({ "catalog_name": null, "catalog_db_schemas": null });
    }
    let tables: Option<Vec<serde_json::Value>> =
        (!matches!(depth, ObjectDepth::Schemas)).then(|| {
            listed
                .iter()
                .filter(|d| tables_ok && table_pattern.is_none_or(|p| like(p, &d.dataset)))
                .map(|d| {
                    let columns: Option<Vec<serde_json::Value>> =
                        matches!(depth, ObjectDepth::All | ObjectDepth::Columns).then(|| {
                            d.fields
                                .iter()
                                .enumerate()
                                .filter(|(_, f)| column_pattern.is_none_or(|p| like(p, &f.name)))
                                .map(|(i, f)| {
                                    serde_json::json!({
                                        "column_name": f.name,
                                        "ordinal_position": i + 1,
                                        "xdbc_type_name": f.data_type,
                                        "xdbc_nullable": i16::from(f.nullable),
                                        "xdbc_is_nullable": if f.nullable { "YES" } else { "NO" },
                                    })
                                })
                                .collect()
                        });
                    serde_json::json!({
                        "table_name": d.dataset,
                        "table_type": "TABLE",
                        "table_columns": columns,
                        "table_constraints": [],
                    })
                })
                .collect()
        });
    serde_json::json!({
        "catalog_name": null,
        "catalog_db_schemas": [{ "db_schema_name": null, "db_schema_tables": tables }],
    })
}

/// SQL `LIKE` as ADBC's filters use it: `%` any run, `_` one character.
fn like(pattern: &str, s: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some(('_', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    go(&p, &s)
}

/// Connection settings ADBC clients set that mean nothing to a read-only engine: accepted
/// when they ask for what govshare is (read-only; autocommit either way, as there are no
/// transactions), refused otherwise.
fn connection_setting(key: &OptionConnection, value: &OptionValue) -> AdbcResult<()> {
    match key {
        OptionConnection::AutoCommit => Ok(()),
        OptionConnection::ReadOnly if text(value, "read_only")? == "true" => Ok(()),
        OptionConnection::ReadOnly => Err(AdbcError::with_message_and_status(
            "govshare connections are read-only",
            Status::NotImplemented,
        )),
        other => Err(unknown_option(other.as_ref())),
    }
}

fn auth_method(s: &str) -> AdbcResult<AuthMethod> {
    match s {
        "password" => Ok(AuthMethod::Password),
        "certificate" => Ok(AuthMethod::Certificate),
        "second_factor" | "second-factor" => Ok(AuthMethod::SecondFactor),
        other => Err(invalid(&format!(
            "'{OPTION_AUTH}' is password, certificate or second_factor, not '{other}'"
        ))),
    }
}

fn text<'a>(v: &'a OptionValue, key: &str) -> AdbcResult<&'a str> {
    match v {
        OptionValue::String(s) => Ok(s),
        _ => Err(invalid(&format!("option '{key}' takes a string"))),
    }
}

/// A govshare error as ADBC reports it: the gate's message, a status, the engine's stable
/// error code (`vendor_code`, the same numbers as the C statuses) and an SQLSTATE.
fn to_adbc(e: Error) -> AdbcError {
    let code = e.code();
    let (status, sqlstate) = match code {
        ErrorCode::AccessDenied => (Status::Unauthorized, *b"42501"),
        ErrorCode::InvalidInput => (Status::InvalidArguments, *b"42000"),
        ErrorCode::QueryFailed => (Status::InvalidData, *b"22000"),
        ErrorCode::NotFound => (Status::NotFound, *b"42S02"),
        ErrorCode::Rejected => (Status::InvalidData, *b"22000"),
        ErrorCode::Locked => (Status::InvalidState, *b"55006"),
        ErrorCode::Integrity => (Status::Integrity, *b"XX001"),
        ErrorCode::Io => (Status::IO, *b"58030"),
        ErrorCode::Internal => (Status::Internal, *b"XX000"),
        ErrorCode::Interrupted => (Status::Cancelled, *b"57014"),
        ErrorCode::LimitExceeded => (Status::InvalidState, *b"53000"),
    };
    let mut err = AdbcError::with_message_and_status(e.to_string(), status);
    err.vendor_code = code as i32;
    err.sqlstate = sqlstate.map(|b| b as std::os::raw::c_char);
    // ADBC 1.1 drivers (this exporter) report errors through their details, where the
    // vendor code is not carried: the stable code goes in a detail of its own too.
    err.details = Some(vec![(
        ERROR_CODE_DETAIL.to_string(),
        (code as i32).to_string().into_bytes(),
    )]);
    err
}

fn invalid(message: &str) -> AdbcError {
    AdbcError::with_message_and_status(message, Status::InvalidArguments)
}

fn internal(message: &str) -> AdbcError {
    AdbcError::with_message_and_status(message, Status::Internal)
}

fn not_implemented(what: &str) -> AdbcError {
    AdbcError::with_message_and_status(
        format!("{what} is not supported by govshare"),
        Status::NotImplemented,
    )
}

fn unknown_option(key: &str) -> AdbcError {
    AdbcError::with_message_and_status(format!("unknown option '{key}'"), Status::NotImplemented)
}

fn not_set(key: &str) -> AdbcError {
    AdbcError::with_message_and_status(format!("option '{key}' is not set"), Status::NotFound)
}

#[cfg(test)]
mod tests {
    use super::like;

    #[test]
    fn like_patterns_match_as_in_sql() {
        assert!(like("per%", "person"));
        assert!(like("p_rson", "person"));
        assert!(like("%", ""));
        assert!(!like("per_", "person"));
        assert!(!like("entity", "person"));
    }
}
