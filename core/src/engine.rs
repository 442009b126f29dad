//! Engine and sessions: the read path every binding uses.
//!
//! ```
//! use govshare_core::engine::Engine;
//! let dir = tempfile::tempdir().expect("tmp");
//! govshare_core::Store::init(dir.path())?;
//! let engine = Engine::open(dir.path())?;
//! // No principal exists yet: the gate fails closed.
//! assert!(matches!(engine.session("u1", "P01"), Err(govshare_core::Error::AccessDenied(_))));
//! # Ok::<(), govshare_core::Error>(())
//! ```
//!
//! Every query goes through [`Session::sql`]: it reads the *current* policy (so a suspension
//! or revocation takes effect on the next query of every open session), asks the gate
//! ([`crate::policy::Policy::decide`]) for a decision, and builds a DataFusion context for that
//! decision only — one [`SecuredTable`] per granted dataset, nothing else registered, a closed
//! SQL surface. The context, its plans and its scope bitmaps are dropped with the query, so
//! nothing computed for one principal is ever served to another.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::Utc;
use datafusion::config::Dialect;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;

use std::time::Instant;

use datafusion::execution::SendableRecordBatchStream;

use crate::audit::AuditLog;
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::masks::department_key;
use crate::policy::Treatment;
use crate::policy::{Decision, Mode, how_to_obtain};
use crate::secured::SecuredTable;
use crate::store::Store;

/// An open store with the runtime that executes its queries. Cheap to clone; share one per
/// process.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    store: Store,
    audit: Arc<AuditLog>,
    runtime: tokio::runtime::Runtime,
    secret: [u8; 32],
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({})", self.inner.store.root().display())
    }
}

/// The secured tables registered for one decision, by dataset name.
type SecuredTables = Vec<(String, Arc<SecuredTable>)>;

/// One access to a subject, from the audit trail.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Access {
    /// Sequence number of the query's opening record.
    pub query_seq: u64,
    /// When the query completed.
    pub time: chrono::DateTime<Utc>,
    /// Real-name user.
    pub user: String,
    /// Department.
    pub department: String,
    /// Declared purpose.
    pub purpose: String,
    /// Dataset read.
    pub dataset: String,
    /// Data version read.
    pub version: u64,
    /// The query text.
    pub sql: String,
}

/// A dataset as a session sees it ([`Session::catalog`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VisibleDataset {
    /// Dataset name (the SQL table name).
    pub dataset: String,
    /// The granted fields, in schema order.
    pub fields: Vec<VisibleField>,
}

/// One granted field ([`Session::catalog`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VisibleField {
    /// Column name.
    pub name: String,
    /// Arrow type as delivered (after masking), e.g. `Utf8`, `Date32`.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether nulls may appear (always for masked fields).
    pub nullable: bool,
}

/// The result of a query: its schema and batches.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Result schema.
    pub schema: SchemaRef,
    /// Result rows.
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// Total rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

impl Engine {
    /// Open the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Engine> {
        let store = Store::open(path)?;
        let secret = store.secret()?;
        let audit = store.audit()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("govshare")
            .build()
            .map_err(|e| Error::Io {
                path: store.root().to_path_buf(),
                source: e,
            })?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                store,
                audit,
                runtime,
                secret,
            }),
        })
    }

    /// The audit trail.
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// Who accessed this subject (a citizen ID or USCC): every completed query whose secured
    /// scan emitted the subject's row — after the row scope and deletions, before any of the
    /// query's own filters (which all run above the scan). That is the documented meaning of
    /// "read": a row that left the barrier was read, whether or not it reached the result.
    pub fn who_accessed(&self, key: &str) -> Result<Vec<Access>> {
        let store = self.store();
        let records = self.inner.audit.records()?;
        let opened: std::collections::HashMap<u64, &crate::audit::Record> = records
            .iter()
            .filter(|r| r.kind == "query")
            .map(|r| (r.seq, r))
            .collect();
        let mut rows_by_version: std::collections::HashMap<(String, u64), Option<u32>> =
            Default::default();
        let mut out = Vec::new();
        for r in records.iter().filter(|r| r.kind == "query_end") {
            let Some(subjects) = r.body.get("subjects").and_then(|s| s.as_object()) else {
                continue;
            };
            for (dataset, info) in subjects {
                let version = info.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
                let row = match rows_by_version.entry((dataset.clone(), version)) {
                    std::collections::hash_map::Entry::Occupied(e) => *e.get(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let id = match store.snapshot_at(dataset, version) {
                            Ok(snap) => snap.lookup(key)?,
                            // A vacuumed version can no longer map keys to rows.
                            Err(Error::NotFound(_)) => None,
                            Err(e) => return Err(e),
                        };
                        *v.insert(id)
                    }
                };
                let Some(row) = row else { continue };
                let file = info
                    .get("bitmap")
                    .and_then(|b| b.as_str())
                    .unwrap_or_default();
                let path = store.root().join("audit").join("subjects").join(file);
                let bytes = std::fs::read(&path).map_err(|e| Error::Io {
                    path: path.clone(),
                    source: e,
                })?;
                let want = info
                    .get("bitmap_blake3")
                    .and_then(|d| d.as_str())
                    .unwrap_or_default();
                if blake3::hash(&bytes).to_hex().as_str() != want {
                    return Err(Error::Corrupt(format!(
                        "subject bitmap {} does not match its audit record {}",
                        path.display(),
                        r.seq
                    )));
                }
                let bm = roaring::RoaringBitmap::deserialize_from(&bytes[..])
                    .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
                if bm.contains(row) {
                    let q = r
                        .body
                        .get("query")
                        .and_then(|q| q.as_u64())
                        .and_then(|q| opened.get(&q));
                    let field = |k: &str| {
                        q.and_then(|q| q.body.get(k))
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_string()
                    };
                    out.push(Access {
                        query_seq: q.map_or(0, |q| q.seq),
                        time: r.time,
                        user: r.actor.clone(),
                        department: field("department"),
                        purpose: field("purpose"),
                        dataset: dataset.clone(),
                        version,
                        sql: field("sql"),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Query the audit trail with SQL as table `audit_log` (seq, time, kind, actor,
    /// department, purpose, sql, outcome, body). An auditor sees every record; any other active
    /// user only the records of their own department. The same closed surface applies, and
    /// the query itself is recorded.
    pub fn audit_sql(&self, user: &str, sql: &str) -> Result<QueryResult> {
        use arrow::array::{StringArray, UInt64Array};
        let policy = self.store().policy()?;
        let u = policy.users.get(user);
        let active = u.is_some_and(|u| {
            u.status == crate::policy::PrincipalStatus::Active
                && policy
                    .departments
                    .get(&u.department)
                    .is_some_and(|d| d.status == crate::policy::PrincipalStatus::Active)
        });
        let Some(u) = u.filter(|_| active) else {
            let e = Error::AccessDenied(format!(
                "user '{user}' is unknown, or they or their department are suspended"
            ));
            self.inner.audit.append(
                "audit_query",
                user,
                serde_json::json!({ "sql": sql, "outcome": "denied", "reason": e.to_string() }),
            )?;
            return Err(e);
        };
        let auditor = u.roles.contains(&crate::policy::Role::Auditor);
        let dept_of = |actor: &str| {
            policy
                .users
                .get(actor)
                .map(|x| x.department.clone())
                .unwrap_or_default()
        };
        let records = self.inner.audit.records()?;
        let rows: Vec<_> = records
            .iter()
            .map(|r| {
                let dept = r
                    .body
                    .get("department")
                    .and_then(|d| d.as_str())
                    .map(String::from)
                    .unwrap_or_else(|| dept_of(&r.actor));
                (r, dept)
            })
            .filter(|(_, d)| auditor || d == &u.department)
            .collect();
        let text = |f: &dyn Fn(&crate::audit::Record, &String) -> Option<String>| -> StringArray {
            rows.iter().map(|(r, d)| f(r, d)).collect()
        };
        let field = |k: &'static str| {
            move |r: &crate::audit::Record, _: &String| {
                r.body.get(k).and_then(|v| v.as_str()).map(String::from)
            }
        };
        let schema = Arc::new(arrow::datatypes::Schema::new(
            [
                "seq",
                "time",
                "kind",
                "actor",
                "department",
                "purpose",
                "sql",
                "outcome",
                "body",
            ]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                arrow::datatypes::Field::new(
                    *n,
                    if i == 0 {
                        arrow::datatypes::DataType::UInt64
                    } else {
                        arrow::datatypes::DataType::Utf8
                    },
                    true,
                )
            })
            .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(rows.iter().map(|(r, _)| r.seq).collect::<UInt64Array>()),
                Arc::new(text(&|r, _| Some(r.time.to_rfc3339()))),
                Arc::new(text(&|r, _| Some(r.kind.clone()))),
                Arc::new(text(&|r, _| Some(r.actor.clone()))),
                Arc::new(text(&|_, d| Some(d.clone()))),
                Arc::new(text(&field("purpose"))),
                Arc::new(text(&field("sql"))),
                Arc::new(text(&field("outcome"))),
                Arc::new(text(&|r, _| Some(r.body.to_string()))),
            ],
        )?;
        let table = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]])
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let ctx = closed_context();
        ctx.register_table("audit_log", Arc::new(table))
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let result: Result<QueryResult> = (|| {
            let stmt = ctx
                .state()
                .sql_to_statement(sql, &Dialect::Generic)
                .map_err(|e| Error::invalid(e.to_string()))?;
            only_queries(&stmt)?;
            let options = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            self.inner.runtime.block_on(async {
                let df = ctx
                    .sql_with_options(sql, options)
                    .await
                    .map_err(|e| Error::invalid(e.to_string()))?;
                refuse_plan(df.logical_plan())?;
                let schema = Arc::new(df.schema().as_arrow().clone());
                let batches = df
                    .collect()
                    .await
                    .map_err(|e| Error::invalid(e.to_string()))?;
                Ok(QueryResult { schema, batches })
            })
        })();
        let body = match &result {
            Ok(r) => {
                serde_json::json!({ "sql": sql, "outcome": "allowed", "scope": if auditor { "all" } else { "own department" }, "rows": r.num_rows() })
            }
            Err(e) => {
                serde_json::json!({ "sql": sql, "outcome": "denied", "reason": e.to_string() })
            }
        };
        self.inner.audit.append("audit_query", user, body)?;
        result
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Open a session for `user` acting for `purpose`. Fails at once when the gate would deny
    /// every query (unknown or suspended principal, no valid grant for the purpose).
    pub fn session(&self, user: &str, purpose: &str) -> Result<Session> {
        let outcome = decide(self, user, purpose);
        let body = match &outcome {
            Ok(d) => {
                serde_json::json!({ "purpose": purpose, "department": d.department, "outcome": "allowed" })
            }
            Err(e) => {
                serde_json::json!({ "purpose": purpose, "outcome": "denied", "reason": e.to_string() })
            }
        };
        self.inner.audit.append("session_open", user, body)?;
        outcome?;
        Ok(Session {
            engine: self.clone(),
            user: user.to_string(),
            purpose: purpose.to_string(),
        })
    }
}

/// A principal acting for a declared purpose. Every query re-checks the policy. Opening and
/// dropping a session are both on the audit trail.
#[derive(Debug)]
pub struct Session {
    engine: Engine,
    user: String,
    purpose: String,
}

/// A DataFusion context with the closed surface: no table functions (generate_series, range,
/// file readers), no CREATE EXTERNAL TABLE factories, URL tables never enabled, and an
/// information_schema that lists only what is registered for this one decision.
fn closed_context() -> SessionContext {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(2)
        .with_default_catalog_and_schema("govshare", "public");
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_table_functions(HashMap::new())
        .with_table_factories(HashMap::new())
        .build();
    SessionContext::new_with_state(state)
}

/// The gate, asked with the current policy and catalog.
fn decide(engine: &Engine, user: &str, purpose: &str) -> Result<Decision> {
    let store = engine.store();
    let policy = store.policy()?;
    let catalog = store.catalog()?;
    policy.decide(&catalog, user, purpose, Mode::Query, Utc::now())
}

/// The allowlist: a session runs queries (and EXPLAIN of queries, and SHOW over its own
/// information_schema) — nothing else, whatever DataFusion would otherwise accept.
fn only_queries(stmt: &DfStatement) -> Result<()> {
    use datafusion::sql::sqlparser::ast::Statement as Sql;
    let refuse = |what: &str| {
        Err(Error::AccessDenied(format!(
            "only queries are allowed; {what} is refused"
        )))
    };
    let analyze = || {
        Err(Error::AccessDenied(
            "EXPLAIN ANALYZE is not allowed: its run-time counters can reveal rows outside the scope".into(),
        ))
    };
    match stmt {
        DfStatement::Statement(s) => match s.as_ref() {
            Sql::Query(_) | Sql::ShowTables { .. } | Sql::ShowColumns { .. } => Ok(()),
            Sql::Explain { analyze: true, .. } => analyze(),
            Sql::Explain { statement, .. } => {
                only_queries(&DfStatement::Statement(statement.clone()))
            }
            other => refuse(
                other
                    .to_string()
                    .split_whitespace()
                    .next()
                    .unwrap_or("this statement"),
            ),
        },
        DfStatement::Explain(e) if e.options.analyze => analyze(),
        DfStatement::Explain(e) => only_queries(&e.statement),
        DfStatement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE"),
        DfStatement::CopyTo(_) => refuse("COPY"),
        DfStatement::Reset(_) => refuse("RESET"),
    }
}

/// Statements a session may never run, however they are spelt (DataFusion's SQL options cover
/// DDL/DML/SET; these cover what they do not).
fn refuse_plan(plan: &LogicalPlan) -> Result<()> {
    match plan {
        LogicalPlan::Analyze(_) => Err(Error::AccessDenied(
            "EXPLAIN ANALYZE is not allowed: its run-time counters can reveal rows outside the scope".into(),
        )),
        LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_) | LogicalPlan::Statement(_) => {
            Err(Error::AccessDenied("only queries are allowed: no DDL, DML, COPY or SET".into()))
        }
        _ => Ok(()),
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Nobody is left to hear an error here; the trail's own failure latch makes the next
        // query of any session fail instead.
        let _ = self.engine.inner.audit.append(
            "session_close",
            &self.user,
            serde_json::json!({ "purpose": self.purpose }),
        );
    }
}

impl Session {
    /// The user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The declared purpose.
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    /// The decision the gate makes now for this session.
    pub fn decision(&self) -> Result<Decision> {
        decide(&self.engine, &self.user, &self.purpose)
    }

    /// The datasets and fields this session may see, as (dataset, schema) pairs.
    pub fn visible(&self) -> Result<Vec<(String, SchemaRef)>> {
        let decision = self.decision()?;
        let (_, tables) = self.context(&decision)?;
        Ok(tables
            .into_iter()
            .map(|(n, t)| (n, datafusion::catalog::TableProvider::schema(t.as_ref())))
            .collect())
    }

    /// The catalog as this session may see it now: each visible dataset with its granted
    /// fields (masked fields with their masked type) — what the bindings list.
    pub fn catalog(&self) -> Result<Vec<VisibleDataset>> {
        Ok(self
            .visible()?
            .into_iter()
            .map(|(dataset, schema)| VisibleDataset {
                dataset,
                fields: schema
                    .fields()
                    .iter()
                    .map(|f| VisibleField {
                        name: f.name().clone(),
                        data_type: f.data_type().to_string(),
                        nullable: f.is_nullable(),
                    })
                    .collect(),
            })
            .collect())
    }

    fn context(&self, decision: &Decision) -> Result<(SessionContext, SecuredTables)> {
        let store = self.engine.store();
        let key = department_key(&self.engine.inner.secret, &decision.department);
        let ctx = closed_context();
        let mut tables = Vec::new();
        for (name, access) in &decision.datasets {
            let snap = match store.snapshot(name) {
                Ok(s) => Arc::new(s),
                // Granted but never loaded: the dataset is simply empty of data; not visible.
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let table = Arc::new(SecuredTable::new(snap, access, key)?);
            ctx.register_table(name.as_str(), table.clone())
                .map_err(|e| Error::Corrupt(e.to_string()))?;
            tables.push((name.clone(), table));
        }
        Ok((ctx, tables))
    }

    /// Run one SQL query under the current policy and collect its result.
    pub fn sql(&self, sql: &str) -> Result<QueryResult> {
        let stream = self.sql_stream(sql)?;
        let schema = stream.schema();
        let batches = stream.collect::<Result<Vec<_>>>()?;
        Ok(QueryResult { schema, batches })
    }

    /// Plan one SQL query under the current policy and return its result as a stream of
    /// batches (an Arrow `RecordBatchReader`), for results too large to collect. Access is
    /// decided before the first batch; the stream holds the query's context until dropped.
    pub fn sql_stream(&self, sql: &str) -> Result<QueryStream> {
        let started = Instant::now();
        let audit = &self.engine.inner.audit;
        match self.plan(sql) {
            Ok((decision, tables, schema, stream)) => {
                let datasets: serde_json::Map<String, serde_json::Value> = tables
                    .iter()
                    .map(|(name, t)| {
                        let access = &decision.datasets[name];
                        (
                            name.clone(),
                            serde_json::json!({
                                "grant": access.grant_id,
                                "version": t.snapshot().version(),
                                "fields": access.fields.iter().map(|(f, tr)| match tr {
                                    Treatment::Clear => f.clone(),
                                    Treatment::Masked(m) => format!("{f}:{m:?}"),
                                }).collect::<Vec<_>>(),
                            }),
                        )
                    })
                    .collect();
                // Durable before the caller can pull a single batch; no record, no results.
                let seq = audit.append(
                    "query",
                    &self.user,
                    serde_json::json!({
                        "sql": sql,
                        "purpose": self.purpose,
                        "department": decision.department,
                        "datasets": datasets,
                        "outcome": "allowed",
                    }),
                )?;
                let digest = arrow::ipc::writer::StreamWriter::try_new(
                    HashWriter(blake3::Hasher::new()),
                    &schema,
                )?;
                Ok(QueryStream {
                    engine: self.engine.clone(),
                    schema,
                    stream,
                    audit: Some(QueryAudit {
                        seq,
                        user: self.user.clone(),
                        tables,
                        started,
                        rows: 0,
                        digest,
                    }),
                })
            }
            Err(e) => {
                let kind = if matches!(e, Error::AccessDenied(_)) {
                    "denied"
                } else {
                    "failed"
                };
                audit.append(
                    "query",
                    &self.user,
                    serde_json::json!({ "sql": sql, "purpose": self.purpose, "outcome": kind, "reason": e.to_string() }),
                )?;
                Err(e)
            }
        }
    }

    /// Decide, build the context, check and plan `sql`, start execution.
    fn plan(
        &self,
        sql: &str,
    ) -> Result<(
        Decision,
        SecuredTables,
        SchemaRef,
        SendableRecordBatchStream,
    )> {
        let decision = self.decision()?;
        let (ctx, tables) = self.context(&decision)?;
        let catalog = self.engine.store().catalog()?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let stmt = ctx
            .state()
            .sql_to_statement(sql, &Dialect::Generic)
            .map_err(|e| translate(e, &catalog, &decision))?;
        only_queries(&stmt)?;
        self.engine.inner.runtime.block_on(async {
            // The SQL options refuse the same again, as a second line.
            let df = ctx
                .sql_with_options(sql, options)
                .await
                .map_err(|e| translate(e, &catalog, &decision))?;
            refuse_plan(df.logical_plan())?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let stream = df
                .execute_stream()
                .await
                .map_err(|e| translate(e, &catalog, &decision))?;
            Ok((decision, tables, schema, stream))
        })
    }
}

/// The batches of a running query; implements `Iterator` and arrow's `RecordBatchReader`.
pub struct QueryStream {
    engine: Engine,
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
    audit: Option<QueryAudit>,
}

/// What the completion record of a query needs, gathered while it streams.
struct QueryAudit {
    seq: u64,
    user: String,
    tables: SecuredTables,
    started: Instant,
    rows: u64,
    digest: arrow::ipc::writer::StreamWriter<HashWriter>,
}

/// Hashes what is written to it (the result's Arrow IPC encoding, for the result digest).
struct HashWriter(blake3::Hasher);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl QueryStream {
    /// Append the completion record: rows, result digest, duration, and the subjects read —
    /// per dataset, the row ids the secured scan emitted, kept as a roaring bitmap file whose
    /// digest is on the chain.
    fn finish(&mut self, outcome: &str) -> Result<()> {
        let Some(mut a) = self.audit.take() else {
            return Ok(());
        };
        a.digest.finish()?;
        let digest = a.digest.into_inner()?.0.finalize().to_hex().to_string();
        let store = self.engine.store();
        let dir = store.root().join("audit").join("subjects");
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
            path: dir.clone(),
            source: e,
        })?;
        let mut subjects = serde_json::Map::new();
        for (name, t) in &a.tables {
            let read = t.emitted()?;
            if read.is_empty() {
                continue;
            }
            let file = format!("q{}-{name}.bm", a.seq);
            let mut bytes = Vec::with_capacity(read.serialized_size());
            read.serialize_into(&mut bytes).map_err(|e| Error::Io {
                path: dir.join(&file),
                source: e,
            })?;
            crate::store::write_durable(&dir.join(&file), &bytes)?;
            subjects.insert(
                name.clone(),
                serde_json::json!({
                    "version": t.snapshot().version(),
                    "rows_read": read.len(),
                    "bitmap": file,
                    "bitmap_blake3": blake3::hash(&bytes).to_hex().to_string(),
                }),
            );
        }
        self.engine.inner.audit.append(
            "query_end",
            &a.user,
            serde_json::json!({
                "query": a.seq,
                "outcome": outcome,
                "rows": a.rows,
                "result_blake3": digest,
                "duration_ms": a.started.elapsed().as_secs_f64() * 1000.0,
                "subjects": subjects,
            }),
        )?;
        Ok(())
    }
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        // A stream dropped before its end still gets its completion record; an error here has
        // nobody left to report to, and the opening record is already durable.
        let _ = self.finish("abandoned");
    }
}

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueryStream({:?})", self.schema)
    }
}

impl QueryStream {
    /// The result schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl QueryStream {
    /// The next batch like [`Iterator::next`], but asking `interrupted` every few
    /// milliseconds while the engine works; when it answers `true` the wait stops with
    /// [`Error::Interrupted`] (drop the stream to cancel the query). Bindings use this to let
    /// Ctrl-C through while a long query runs without holding their interpreter's lock.
    pub fn next_interruptible(
        &mut self,
        mut interrupted: impl FnMut() -> bool,
    ) -> Option<Result<RecordBatch>> {
        use futures::StreamExt;
        use std::task::{Context, Poll, Wake, Waker};
        /// Wakes the polling thread when DataFusion has made progress.
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        // Polled on this thread inside the runtime's context, so the tasks the plan spawns run
        // on the runtime's workers as with `block_on`.
        let _runtime = self.engine.inner.runtime.enter();
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let item = loop {
            match self.stream.poll_next_unpin(&mut cx) {
                Poll::Ready(item) => break item,
                Poll::Pending => {
                    if interrupted() {
                        return Some(Err(Error::Interrupted));
                    }
                    std::thread::park_timeout(std::time::Duration::from_millis(20));
                }
            }
        };
        self.on_item(item)
    }

    /// Account for one item of the plan's stream: digest and count a batch, write the
    /// completion record at the end or on failure.
    fn on_item(
        &mut self,
        item: Option<std::result::Result<RecordBatch, DataFusionError>>,
    ) -> Option<Result<RecordBatch>> {
        match item {
            Some(Ok(batch)) => {
                if let Some(a) = self.audit.as_mut() {
                    a.rows += batch.num_rows() as u64;
                    if let Err(e) = a.digest.write(&batch) {
                        return Some(Err(e.into()));
                    }
                }
                Some(Ok(batch))
            }
            Some(Err(e)) => {
                let _ = self.finish("failed");
                Some(Err(Error::invalid(e.to_string())))
            }
            // End of results: the completion record must be written, or the caller hears why.
            None => self.finish("completed").err().map(Err),
        }
    }
}

impl Iterator for QueryStream {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        use futures::StreamExt;
        let item = self.engine.inner.runtime.block_on(self.stream.next());
        self.on_item(item)
    }
}

impl Iterator for QueryStreamArrow {
    type Item = std::result::Result<RecordBatch, arrow::error::ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0
            .next()
            .map(|r| r.map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e))))
    }
}

/// A [`QueryStream`] seen as arrow's `RecordBatchReader` (errors as `ArrowError`), ready for
/// the Arrow C stream interface.
pub struct QueryStreamArrow(pub QueryStream);

impl arrow::array::RecordBatchReader for QueryStreamArrow {
    fn schema(&self) -> SchemaRef {
        self.0.schema.clone()
    }
}

/// Turn a DataFusion planning error into the error a user can act on. A name that resolves to
/// nothing because it was not granted becomes an access denial naming dataset, field, share
/// type and the way to obtain it. Messages carry names only, never values.
fn translate(e: DataFusionError, catalog: &Catalog, decision: &Decision) -> Error {
    let msg = e.to_string();
    if let Some(field) = missing_field(&e) {
        for (name, def) in &catalog.datasets {
            if let Some(f) = def.field(&field) {
                let granted = decision
                    .datasets
                    .get(name)
                    .is_some_and(|a| a.fields.iter().any(|(n, _)| n == &field));
                if !granted {
                    return Error::AccessDenied(format!(
                        "field {name}.{field} ({}) is not granted to department '{}' for purpose '{}'; it is {}",
                        f.label,
                        decision.department,
                        decision.purpose,
                        how_to_obtain(f.share)
                    ));
                }
            }
        }
        return Error::invalid(format!(
            "no column named '{field}' among the granted fields"
        ));
    }
    if let Some(table) = missing_table(&msg) {
        if let Ok(def) = catalog.dataset(&table) {
            return Error::AccessDenied(format!(
                "dataset {} ({}) is not granted to department '{}' for purpose '{}'; apply to {} through the platform",
                def.name, def.label, decision.department, decision.purpose, def.provider
            ));
        }
        return Error::NotFound(format!("no table '{table}' among the granted datasets"));
    }
    // SQLOptions' refusals of DDL, DML (COPY included) and statements (SET, PREPARE...).
    for kind in [
        "DDL not supported",
        "DML not supported",
        "Statement not supported",
    ] {
        if msg.contains(kind) {
            return Error::AccessDenied(format!("only queries are allowed ({kind})"));
        }
    }
    match e {
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            Error::invalid(msg)
        }
        DataFusionError::NotImplemented(m) => {
            if m.contains("DDL")
                || m.contains("DML")
                || m.contains("Statement")
                || m.to_lowercase().contains("not supported")
            {
                Error::AccessDenied(format!("only queries are allowed: {m}"))
            } else {
                Error::invalid(m)
            }
        }
        other => Error::invalid(other.to_string()),
    }
}

fn missing_field(e: &DataFusionError) -> Option<String> {
    use datafusion::common::SchemaError;
    match e {
        DataFusionError::SchemaError(se, _) => match se.as_ref() {
            SchemaError::FieldNotFound { field, .. } => Some(field.name.clone()),
            _ => None,
        },
        DataFusionError::Context(_, inner) => missing_field(inner),
        DataFusionError::Diagnostic(_, inner) => missing_field(inner),
        _ => None,
    }
}

fn missing_table(msg: &str) -> Option<String> {
    // "table 'govshare.public.person' not found"
    let start = msg.find("table '")? + 7;
    let rest = &msg[start..];
    let end = rest.find('\'')?;
    if !rest[end..].starts_with("' not found") {
        return None;
    }
    Some(
        rest[..end]
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_string(),
    )
}
