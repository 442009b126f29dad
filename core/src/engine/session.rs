//! Sessions: a principal acting for a declared purpose. Each query asks the gate, builds a
//! context holding only that decision's secured tables, plans through the closed surface and
//! starts the audited stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;

use crate::access::aggregate;
use crate::access::masks::department_key;
use crate::access::policy::AggregateTerms;
use crate::access::policy::{Decision, Login, Mode, Treatment};
use crate::access::quota::{self, subject_tag};
use crate::access::secured::SecuredTable;
use crate::access::verify::Verifier;
use crate::error::{Error, Result};
use arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

use super::export::{ExportFormat, ExportManifest};
use super::stream::{Bounds, QueryAudit, QueryStream};
use super::surface;
use super::translate::Denials;
use super::{Engine, QueryResult, SecuredTables};
use crate::store::QueryLimits;

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

/// A principal acting for a declared purpose. Every query re-checks the policy. Opening and
/// dropping a session are both on the audit trail.
#[derive(Debug)]
pub struct Session {
    pub(super) engine: Engine,
    pub(super) user: String,
    pub(super) purpose: String,
    pub(super) login: Login,
    /// Bumped by [`Session::cancel`]; a running query stops when it no longer matches the
    /// value it started with.
    pub(super) cancel: Arc<AtomicU64>,
}

/// Cancels the running queries of one session from any thread (a signal handler, a watchdog,
/// another thread of the host): see [`Session::canceller`].
#[derive(Debug, Clone)]
pub struct Canceller(Arc<AtomicU64>);

impl Canceller {
    /// Stop every query of the session that is running now; later queries run normally.
    pub fn cancel(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The gate, asked with the current policy and catalog, for a service mode.
pub(super) fn decide(engine: &Engine, login: &Login, mode: Mode) -> Result<Decision> {
    let store = engine.store();
    let policy = store.policy_shared()?;
    let catalog = store.catalog_shared()?;
    policy.decide(&catalog, login, mode, engine.now())
}

/// The changes of one subscription ([`Session::changes`]): apply them, then acknowledge `to`.
#[derive(Debug)]
pub struct ChangeSet {
    /// The version last acknowledged (0: nothing delivered yet).
    pub from: u64,
    /// The version the changes lead to: the token to acknowledge ([`Session::ack`]).
    pub to: u64,
    /// `_op` (`insert`, `update`, `delete`) and the granted fields, masked as granted.
    pub result: QueryResult,
}

/// One subject's answer from [`Session::verify_one`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Whether the subject exists in scope — only when the grant may say so.
    pub found: Option<bool>,
    /// Per claimed field, in the order claimed: match or no match.
    pub fields: Vec<(String, bool)>,
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

    /// Stop every query of this session that is running now (from another thread: the
    /// session is `Sync`); each ends with [`Error::Interrupted`] and a completion record
    /// saying it was cancelled. Later queries run normally.
    pub fn cancel(&self) {
        self.canceller().cancel();
    }

    /// A handle that cancels this session's running queries, to hand to another thread or a
    /// signal handler.
    pub fn canceller(&self) -> Canceller {
        Canceller(self.cancel.clone())
    }

    /// The decision the gate makes now for this session (for the engine's own use: what a
    /// session shows of it goes through [`Session::catalog`], which is recorded).
    pub(crate) fn decision(&self) -> Result<Decision> {
        decide(&self.engine, &self.login, Mode::Query)
    }

    /// The datasets and fields this session may see, as (dataset, schema) pairs.
    fn visible(&self) -> Result<Vec<(String, SchemaRef)>> {
        let decision = self.decision()?;
        let (_, tables) = self.context(&decision)?;
        Ok(tables
            .into_iter()
            .map(|(n, t)| (n, datafusion::catalog::TableProvider::schema(t.as_ref())))
            .collect())
    }

    /// The catalog as this session may see it now: each visible dataset with its granted
    /// fields (masked fields with their masked type) — what the bindings list. Decided by the
    /// gate and recorded like a query.
    pub fn catalog(&self) -> Result<Vec<VisibleDataset>> {
        let outcome = self.visible();
        let body = serde_json::json!({ "purpose": self.purpose });
        self.engine
            .record_read("session_catalog", &self.user, body, outcome.as_ref())?;
        Ok(outcome?
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
        let key = department_key(&self.engine.inner.secret, decision.department());
        let ctx = self.engine.inner.surface.context();
        let mut tables = Vec::new();
        for (name, access) in decision.datasets() {
            let snap = match store.pinned(name) {
                Ok(s) => s,
                // Granted but never loaded: the dataset is simply empty of data; not visible.
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let table = Arc::new(SecuredTable::new(snap, access, key)?);
            ctx.register_table(name.as_str(), table.clone())
                .map_err(|e| Error::internal(e.to_string()))?;
            tables.push((name.clone(), table));
        }
        Ok((ctx, tables))
    }

    /// Run one SQL query under the current policy and collect its result.
    pub fn sql(&self, sql: &str) -> Result<QueryResult> {
        collect(self.sql_stream(sql)?)
    }

    /// Plan one SQL query under the current policy and return its result as a stream of
    /// batches (an Arrow `RecordBatchReader`), for results too large to collect. Access is
    /// decided before the first batch; the stream holds the query's context until dropped.
    pub fn sql_stream(&self, sql: &str) -> Result<QueryStream> {
        self.query(sql, None)
    }

    /// Run one SQL query with its placeholders `$1`, `$2`, ... bound to `params` — one column
    /// per placeholder, in order, and one row per execution (the results of all rows together,
    /// in no set order) — and collect the result. Values are bound into the planned query after
    /// it is parsed and checked, never pasted into its text, each converted to the type its
    /// place asks for; the audit record holds the SQL and the values' digests
    /// ([`crate::Engine::parameter_digest`]), never the values.
    pub fn sql_params(&self, sql: &str, params: &RecordBatch) -> Result<QueryResult> {
        collect(self.sql_params_stream(sql, params)?)
    }

    /// [`Session::sql_params`] as a stream of batches.
    pub fn sql_params_stream(&self, sql: &str, params: &RecordBatch) -> Result<QueryStream> {
        self.query(sql, Some(params))
    }

    /// [`Session::sql_stream`] for async hosts (a Rust service answering many requests on a
    /// few threads): decided and planned on the calling task (a few hundred microseconds of
    /// CPU), then the opening record is awaited through [`AuditLog::append_async`] — durable
    /// before the stream is returned, as always, but the wait holds no thread, so concurrent
    /// queries share group-committed fsyncs. Read the result with the stream's
    /// `futures::Stream` implementation (`StreamExt::next`); the completion record is written
    /// at its end, as with the iterator.
    ///
    /// [`AuditLog::append_async`]: crate::audit::AuditLog::append_async
    pub async fn sql_async(&self, sql: &str) -> Result<QueryStream> {
        let started = Instant::now();
        let generation = self.cancel.load(Ordering::SeqCst);
        let planned = self.plan_async(sql).await;
        let what = request("sql", serde_json::json!(sql));
        self.start_async(started, generation, what, planned).await
    }

    fn query(&self, sql: &str, params: Option<&RecordBatch>) -> Result<QueryStream> {
        let started = Instant::now();
        // A cancel from now on stops this query (taken before anything is recorded, so a
        // cancel sent once the query is on the trail always lands).
        let generation = self.cancel.load(Ordering::SeqCst);
        let planned = self.plan(sql, params);
        let mut what = request("sql", serde_json::json!(sql));
        if let Some(p) = params {
            what.insert("params".into(), self.engine.parameter_digests(p)?);
        }
        self.start(started, generation, what, planned)
    }

    /// The subjects of `dataset` with the given keys, as this session may see them: every
    /// granted field, masked as granted, for the keys that exist among the rows in scope (in
    /// row order; a key not found, deleted or out of scope is simply absent). Through the key
    /// index, not a scan; decided, recorded and bounded like a query (the trail holds the
    /// rows read, not the keys asked). The key field must be granted in clear.
    pub fn lookup(&self, dataset: &str, keys: &[&str]) -> Result<QueryResult> {
        collect(self.lookup_stream(dataset, keys)?)
    }

    /// [`Session::lookup`] as a stream of batches.
    pub fn lookup_stream(&self, dataset: &str, keys: &[&str]) -> Result<QueryStream> {
        let started = Instant::now();
        let generation = self.cancel.load(Ordering::SeqCst);
        let planned = self.plan_lookup(dataset, keys);
        let what = serde_json::json!({ "dataset": dataset, "keys": keys.len() });
        self.start(started, generation, request("lookup", what), planned)
    }

    /// Verify claims (核验) under a verify-mode grant: `claims` holds the key column (named as
    /// the dataset's key) and one column per claimed field; the answer has one row per claim
    /// row — match / no match per field, never a value (see [`crate::access::verify`] for the
    /// comparison rules). A subject that does not exist or lies outside the grant's scope
    /// answers "no match" on every field, unless the grant discloses absence (then a `found`
    /// column says so). Charged to the grant's quotas before it is answered (over a limit:
    /// [`Error::LimitExceeded`], nothing answered); recorded like a query — the opening record
    /// durable before the answer, the subjects compared in the completion record.
    pub fn verify(&self, dataset: &str, claims: &RecordBatch) -> Result<RecordBatch> {
        let started = Instant::now();
        let audit = &self.engine.inner.audit;
        let mut what = serde_json::json!({ "dataset": dataset, "checks": claims.num_rows() });
        let decided = self.prepare_verify(dataset, claims, &mut what);
        let VerifyRequest {
            decision,
            verifier,
            claimed,
            keys,
        } = match decided {
            Ok(d) => d,
            Err(e) => {
                let kind = if matches!(e, Error::AccessDenied(_) | Error::LimitExceeded(_)) {
                    "denied"
                } else {
                    "failed"
                };
                audit.append(
                    "query",
                    &self.user,
                    serde_json::json!({ "verify": what, "purpose": self.purpose, "outcome": kind, "reason": e.to_string() }),
                )?;
                return Err(e);
            }
        };
        let access = &decision.datasets()[dataset];
        let version = verifier.snapshot().version();
        // Durable before the answer: no record, no answer.
        let seq = audit.append(
            "query",
            &self.user,
            serde_json::json!({
                "verify": what,
                "purpose": self.purpose,
                "department": decision.department(),
                "datasets": { dataset: {
                    "grant": access.grant_id(),
                    "version": version,
                    "fields": claimed,
                }},
                "outcome": "allowed",
            }),
        )?;
        let checked = verifier.check(claims, &claimed, &keys);
        let mut subjects = serde_json::Map::new();
        if let Ok(c) = &checked
            && !c.subjects.is_empty()
        {
            let dir = self.engine.store().root().join("audit").join("subjects");
            let entry = super::stream::subjects_entry(&dir, seq, dataset, version, &c.subjects)?;
            subjects.insert(dataset.to_string(), entry);
        }
        audit.append_nowait(
            "query_end",
            &self.user,
            serde_json::json!({
                "query": seq,
                "outcome": if checked.is_ok() { "completed" } else { "failed" },
                "rows": claims.num_rows(),
                "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
                "subjects": subjects,
            }),
        )?;
        self.engine.flush_soon();
        Ok(checked?.answer)
    }

    /// [`Session::verify`] for one subject: `claims` as (field, claimed value) pairs.
    pub fn verify_one(
        &self,
        dataset: &str,
        key: &str,
        claims: &[(&str, &str)],
    ) -> Result<Verification> {
        let key_field = self
            .engine
            .store()
            .catalog_shared()?
            .dataset(dataset)?
            .key
            .clone();
        let mut fields = vec![Field::new(key_field, DataType::Utf8, false)];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![key]))];
        for (f, v) in claims {
            fields.push(Field::new(*f, DataType::Utf8, false));
            columns.push(Arc::new(StringArray::from(vec![*v])));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        let answer = self.verify(dataset, &batch)?;
        let mut out = Verification {
            found: None,
            fields: Vec::new(),
        };
        for (f, col) in answer.schema().fields().iter().zip(answer.columns()) {
            let b = col
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| Error::internal("verify answered a non-Boolean column"))?;
            if f.name() == "found" && out.found.is_none() && out.fields.is_empty() {
                out.found = Some(b.value(0));
            } else {
                out.fields
                    .push((f.name().clone(), b.is_valid(0) && b.value(0)));
            }
        }
        Ok(out)
    }

    /// The gate in verify mode, the request's shape, and the grant's quotas: everything that
    /// may refuse a verify request before it is recorded as allowed.
    fn prepare_verify(
        &self,
        dataset: &str,
        claims: &RecordBatch,
        what: &mut serde_json::Value,
    ) -> Result<VerifyRequest> {
        let decision = decide(&self.engine, &self.login, Mode::Verify)?;
        let access = decision.datasets().get(dataset).ok_or_else(|| {
            Error::AccessDenied(format!(
                "no verify grant lets {} check '{dataset}' for this purpose",
                self.user
            ))
        })?;
        let verifier = Verifier::new(
            self.engine.store().pinned(dataset)?,
            access,
            self.engine.inner.digests.clone(),
        )?;
        let (claimed, keys) = verifier.prepare(claims)?;
        what["fields"] = serde_json::json!(claimed);
        let secret = &self.engine.inner.secret;
        let tags: Vec<u64> = keys
            .iter()
            .map(|k| subject_tag(secret, k.as_deref().unwrap_or_default()))
            .collect();
        quota::charge(
            self.engine.store().root(),
            access.grant_id(),
            &verifier.terms(),
            self.engine.now(),
            &tags,
        )?;
        Ok(VerifyRequest {
            decision,
            verifier,
            claimed,
            keys,
        })
    }

    /// Export the granted fields and rows of `dataset` (masked as granted) into `dir` as
    /// `<dataset>.<ext>` with a manifest `<dataset>.<ext>.manifest.json`, under an export grant:
    /// refused when the rows in scope pass the grant's `max_rows` or the day's exports its
    /// `per_day` (nothing written, the refusal recorded); recorded like a query (durable before
    /// the first row; the subjects exported in the completion record), and the manifest's
    /// blake3 in an `export` record. `progress` is called with the rows written so far. A
    /// failed export leaves no file behind; existing files are never overwritten.
    pub fn export(
        &self,
        dataset: &str,
        format: ExportFormat,
        dir: &std::path::Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ExportManifest> {
        let started = Instant::now();
        let generation = self.cancel.load(Ordering::SeqCst);
        let planned = self.plan_export(dataset, format, dir);
        let what = serde_json::json!({ "dataset": dataset, "format": format });
        let (grant, fields) = match &planned {
            Ok(p) => {
                let access = &p.decision.datasets()[dataset];
                (
                    access.grant_id(),
                    access
                        .fields()
                        .iter()
                        .map(|(f, t)| match t {
                            Treatment::Clear => f.clone(),
                            Treatment::Masked(m) => format!("{f}:{m:?}"),
                        })
                        .collect::<Vec<_>>(),
                )
            }
            Err(_) => (0, Vec::new()),
        };
        let department = planned
            .as_ref()
            .map(|p| p.decision.department().to_string())
            .unwrap_or_default();
        let mut stream = self.start(started, generation, request("export", what), planned)?;
        let version = stream.snapshot_version(dataset).unwrap_or(0);
        let query_seq = stream.query_seq().unwrap_or(0);
        let hash = self.engine.inner.audit.chain_hash();
        let mut sink = super::export::Sink::create(dir, dataset, format, &stream.schema(), hash)?;
        let mut rows = 0u64;
        let written = (|| {
            for batch in stream.by_ref() {
                let batch = batch?;
                sink.write(&batch)?;
                rows += batch.num_rows() as u64;
                progress(rows);
            }
            Ok::<_, Error>(())
        })();
        if let Err(e) = written {
            sink.abandon();
            return Err(e);
        }
        let file = sink.finish()?;
        drop(stream);
        let manifest = ExportManifest {
            dataset: dataset.to_string(),
            version,
            grant,
            user: self.user.clone(),
            purpose: self.purpose.clone(),
            department,
            fields,
            format,
            rows,
            files: vec![file],
            query_seq,
            created_at: self.engine.now(),
        };
        let (digest, sm3) = super::export::write_manifest(dir, &manifest, hash)?;
        let mut record = serde_json::json!({
            "query": query_seq,
            "dataset": dataset,
            "rows": rows,
            "manifest_blake3": digest,
            "files": manifest.files.iter().map(|f| &f.blake3).collect::<Vec<_>>(),
        });
        if let Some(sm3) = sm3 {
            record["manifest_sm3"] = sm3.into();
            record["files_sm3"] = manifest.files.iter().map(|f| f.sm3.clone()).collect();
        }
        self.engine
            .inner
            .audit
            .append("export", &self.user, record)?;
        Ok(manifest)
    }

    /// The changes of `dataset` for this session's push subscription (a grant in push mode):
    /// inserts, updates and deletes between the version last acknowledged and the current one,
    /// through the grant's fields, masks and scope (a subject leaving the scope is a delete).
    /// Decided and recorded like a query; moves nothing — acknowledge `to` with
    /// [`Session::ack`] once applied, or read the same changes again.
    pub fn changes(&self, dataset: &str) -> Result<ChangeSet> {
        let started = Instant::now();
        let generation = self.cancel.load(Ordering::SeqCst);
        let mut span = (0, 0);
        let planned = self.plan_changes(dataset, &mut span);
        let what = serde_json::json!({ "dataset": dataset, "from": span.0, "to": span.1 });
        let stream = self.start(started, generation, request("changes", what), planned)?;
        Ok(ChangeSet {
            from: span.0,
            to: span.1,
            result: collect(stream)?,
        })
    }

    /// Acknowledge that the changes up to version `token` of `dataset` are applied: the next
    /// [`Session::changes`] starts there. Recorded (durably) before the cursor moves; an
    /// older token than the cursor is already acknowledged and changes nothing.
    pub fn ack(&self, dataset: &str, token: u64) -> Result<()> {
        let outcome = (|| {
            let decision = decide(&self.engine, &self.login, Mode::Push)?;
            let access = decision.datasets().get(dataset).ok_or_else(|| {
                Error::AccessDenied(format!(
                    "no push grant subscribes {} to '{dataset}' for this purpose",
                    self.user
                ))
            })?;
            let current = self.engine.store().current_version(dataset)?;
            if token > current {
                return Err(Error::invalid(format!(
                    "token {token} is past the current version of '{dataset}'"
                )));
            }
            let grant = access.grant_id();
            let cursor = super::feed::cursor(self.engine.store().root(), grant)?;
            Ok((grant, cursor.acked))
        })();
        let body = |o: &str| serde_json::json!({ "dataset": dataset, "token": token, "purpose": self.purpose, "outcome": o });
        // Crash tests: a subscriber killed after reading, before its acknowledgement.
        crate::durable::failpoint("feed_before_ack");
        match outcome {
            Ok((grant, acked)) => {
                if token <= acked {
                    return Ok(());
                }
                let mut b = body("allowed");
                b["grant"] = serde_json::json!(grant);
                b["from"] = serde_json::json!(acked);
                self.engine.inner.audit.append("feed_ack", &self.user, b)?;
                crate::durable::failpoint("feed_ack_recorded");
                super::feed::set_cursor(self.engine.store().root(), grant, token)
            }
            Err(e) => {
                let mut b = body("denied");
                b["reason"] = serde_json::json!(e.to_string());
                self.engine.inner.audit.append("feed_ack", &self.user, b)?;
                Err(e)
            }
        }
    }

    /// The gate in push mode, the two versions' secured tables and the plan of their
    /// differences; `span` gets (from, to).
    fn plan_changes(&self, dataset: &str, span: &mut (u64, u64)) -> Result<Planned> {
        let decision = decide(&self.engine, &self.login, Mode::Push)?;
        let access = decision.datasets().get(dataset).ok_or_else(|| {
            Error::AccessDenied(format!(
                "no push grant subscribes {} to '{dataset}' for this purpose",
                self.user
            ))
        })?;
        let store = self.engine.store();
        let def = store.catalog_shared()?.dataset(dataset)?.clone();
        // Changes are matched by key: it must be delivered as itself or as a pseudonym (a
        // masked ID is not unique).
        let key_ok = access.fields().iter().any(|(f, t)| {
            f == &def.key
                && matches!(
                    t,
                    Treatment::Clear | Treatment::Masked(crate::catalog::MaskKind::Pseudonym)
                )
        });
        if !key_ok {
            return Err(Error::AccessDenied(format!(
                "a push grant on '{dataset}' must include its key '{}' in clear or as a pseudonym",
                def.key
            )));
        }
        let cursor = super::feed::cursor(store.root(), access.grant_id())?;
        let key = department_key(&self.engine.inner.secret, decision.department());
        let current = store.pinned(dataset)?;
        *span = (cursor.acked, current.version());
        let ctx = self.engine.inner.surface.context();
        let (new, old): (
            Arc<SecuredTable>,
            Arc<dyn datafusion::catalog::TableProvider>,
        ) = if cursor.acked == 0 {
            // Nothing delivered yet: everything in scope is new.
            let new = Arc::new(SecuredTable::new(current, access, key)?);
            let schema = datafusion::catalog::TableProvider::schema(new.as_ref());
            let empty = datafusion::datasource::MemTable::try_new(schema, vec![vec![]])
                .map_err(|e| Error::internal(e.to_string()))?;
            (new, Arc::new(empty))
        } else {
            let snap = store.snapshot_at(dataset, cursor.acked).map_err(|e| match e {
                    Error::NotFound(_) => Error::NotFound(format!(
                        "version {} of '{dataset}', last acknowledged by this subscription, was vacuumed; the subscription must start over",
                        cursor.acked
                    )),
                    e => e,
                })?;
            // Only rows that can differ are compared (see `feed::changed_rows`).
            let (old_rows, new_rows) = super::feed::changed_rows(&snap, &current)?;
            let new = Arc::new(SecuredTable::new_within(
                current,
                access,
                key,
                Some(&new_rows),
            )?);
            let old = SecuredTable::new_within(Arc::new(snap), access, key, Some(&old_rows))?;
            (new, Arc::new(old))
        };
        let schema = datafusion::catalog::TableProvider::schema(new.as_ref());
        ctx.register_table("new", new.clone())
            .map_err(|e| Error::internal(e.to_string()))?;
        ctx.register_table("old", old)
            .map_err(|e| Error::internal(e.to_string()))?;
        let fields: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let sql = super::feed::changes_sql(&def.key, &fields);
        self.plan_in(
            ctx,
            vec![(dataset.to_string(), new)],
            decision,
            &sql,
            None,
            None,
        )
    }

    /// Run an aggregate query under an aggregate-only grant (scenario service): only
    /// aggregates of one dataset, groups of fewer than the grant's minimum number of subjects
    /// suppressed, no use of the key field, within the grant's queries per day (see
    /// [`crate::access::aggregate`] for the rules and what they do not prevent). Recorded like a
    /// query.
    pub fn aggregate(&self, sql: &str) -> Result<QueryResult> {
        collect(self.aggregate_stream(sql)?)
    }

    /// [`Session::aggregate`] as a stream of batches.
    pub fn aggregate_stream(&self, sql: &str) -> Result<QueryStream> {
        let started = Instant::now();
        let generation = self.cancel.load(Ordering::SeqCst);
        let planned = self.plan_aggregate(sql);
        self.start(
            started,
            generation,
            request("aggregate", serde_json::json!(sql)),
            planned,
        )
    }

    /// The gate in aggregate mode, the plan checked and rewritten by the aggregate-only rules
    /// for the one dataset it reads, and the grant's daily budget.
    fn plan_aggregate(&self, sql: &str) -> Result<Planned> {
        let decision = decide(&self.engine, &self.login, Mode::Aggregate)?;
        let catalog = self.engine.store().catalog_shared()?;
        let terms: std::collections::HashMap<String, (String, u64, AggregateTerms)> = decision
            .datasets()
            .iter()
            .filter_map(|(name, a)| {
                let key = catalog.dataset(name).ok()?.key.clone();
                Some((name.clone(), (key, a.grant_id(), a.aggregate_terms()?)))
            })
            .collect();
        // A lock, not a cell: the rewrite is shared with the planning future, which is `Send`.
        let charged = std::sync::Mutex::new(None);
        let rewrite = |plan: datafusion::logical_expr::LogicalPlan| {
            let table = aggregate::scanned_table(&plan).ok_or_else(|| {
                Error::AccessDenied(
                    "an aggregate-only grant answers only aggregates over groups: a query reads one dataset once".into(),
                )
            })?;
            let (key, grant, t) = terms.get(&table).ok_or_else(|| {
                Error::AccessDenied(format!("no aggregate grant covers '{table}'"))
            })?;
            *charged
                .lock()
                .map_err(|_| Error::internal("aggregate charge poisoned"))? = Some((*grant, *t));
            aggregate::enforce(plan, key, t.min_group)
        };
        let planned = self.plan_decided(decision, sql, Some(&rewrite))?;
        let (grant, t) = charged
            .into_inner()
            .map_err(|_| Error::internal("aggregate charge poisoned"))?
            .ok_or_else(|| Error::internal("an aggregate query was planned without its grant"))?;
        quota::charge_daily(
            self.engine.store().root(),
            "aggregate",
            "aggregate queries",
            grant,
            t.per_day,
            self.engine.now(),
        )?;
        Ok(planned)
    }

    /// The gate in export mode, the plan of the whole granted table, and the grant's limits
    /// (rows in scope, exports today) — everything that may refuse an export before it starts.
    fn plan_export(
        &self,
        dataset: &str,
        format: ExportFormat,
        dir: &std::path::Path,
    ) -> Result<Planned> {
        let decision = decide(&self.engine, &self.login, Mode::Export)?;
        let access = decision.datasets().get(dataset).ok_or_else(|| {
            Error::AccessDenied(format!(
                "no export grant lets {} export '{dataset}' for this purpose",
                self.user
            ))
        })?;
        let terms = access.export_terms().ok_or_else(|| {
            Error::AccessDenied(format!("the grant on '{dataset}' is not an export grant"))
        })?;
        let grant = access.grant_id();
        // Dataset names are catalog identifiers; quoted all the same.
        let planned = self.plan_decided(
            decision,
            &format!("SELECT * FROM \"{}\"", dataset.replace('"', "\"\"")),
            None,
        )?;
        let in_scope: u64 = planned
            .tables
            .iter()
            .filter(|(n, _)| n == dataset)
            .map(|(_, t)| t.scope_len())
            .sum();
        if in_scope > terms.max_rows {
            return Err(Error::LimitExceeded(format!(
                "grant {grant} exports at most {} rows at a time; the rows in scope are more — ask for a narrower scope",
                terms.max_rows
            )));
        }
        // An existing target is the caller's mistake: refused (and recorded) before the export
        // is recorded as allowed or charged to the day's count.
        super::export::check_target(dir, dataset, format)?;
        quota::charge_daily(
            self.engine.store().root(),
            "export",
            "exports",
            grant,
            terms.per_day,
            self.engine.now(),
        )?;
        Ok(planned)
    }

    /// Decide and plan a lookup: one secured table, its key index, no SQL.
    fn plan_lookup(&self, dataset: &str, keys: &[&str]) -> Result<Planned> {
        let decision = self.decision()?;
        let limits = self.engine.store().settings()?.query;
        let access = decision.datasets().get(dataset).ok_or_else(|| {
            Error::AccessDenied(format!(
                "no grant lets {} read '{dataset}' for this purpose",
                self.user
            ))
        })?;
        let key = department_key(&self.engine.inner.secret, decision.department());
        let table = Arc::new(SecuredTable::new(
            self.engine.store().pinned(dataset)?,
            access,
            key,
        )?);
        let plan = table.lookup(keys)?;
        Ok(Planned {
            schema: plan.schema(),
            plan,
            task: Arc::new(datafusion::execution::TaskContext::default()),
            tables: vec![(dataset.to_string(), table)],
            decision,
            limits,
        })
    }

    /// Put an allowed request's opening record on the trail (durable), then start it; or
    /// record its refusal or failure. `what` is the request as recorded: its SQL, or the
    /// dataset and number of keys of a lookup.
    fn start(
        &self,
        started: Instant,
        generation: u64,
        what: serde_json::Map<String, serde_json::Value>,
        planned: Result<Planned>,
    ) -> Result<QueryStream> {
        let audit = &self.engine.inner.audit;
        match self.opening(what, planned) {
            Opening::Allowed(planned, body) => {
                let seq = audit.append("query", &self.user, body)?;
                self.launch(started, generation, seq, planned)
            }
            Opening::Refused(e, body) => {
                audit.append("query", &self.user, body)?;
                Err(e)
            }
        }
    }

    /// [`Session::start`] waiting for the opening record without holding a thread.
    async fn start_async(
        &self,
        started: Instant,
        generation: u64,
        what: serde_json::Map<String, serde_json::Value>,
        planned: Result<Planned>,
    ) -> Result<QueryStream> {
        let audit = &self.engine.inner.audit;
        match self.opening(what, planned) {
            Opening::Allowed(planned, body) => {
                let seq = audit.append_async("query", &self.user, body).await?;
                self.launch(started, generation, seq, planned)
            }
            Opening::Refused(e, body) => {
                audit.append_async("query", &self.user, body).await?;
                Err(e)
            }
        }
    }

    /// The opening record of a request: what it asked, for what purpose, and either what the
    /// decision granted (grants, versions, fields as treated) or why it was refused.
    fn opening(
        &self,
        what: serde_json::Map<String, serde_json::Value>,
        planned: Result<Planned>,
    ) -> Opening {
        let mut body = what;
        body.insert("purpose".into(), serde_json::json!(self.purpose));
        match planned {
            Ok(planned) => {
                let decision = &planned.decision;
                let datasets: serde_json::Map<String, serde_json::Value> = planned
                    .tables
                    .iter()
                    .map(|(name, t)| {
                        let access = &decision.datasets()[name];
                        (
                            name.clone(),
                            serde_json::json!({
                                "grant": access.grant_id(),
                                "version": t.snapshot().version(),
                                "fields": access.fields().iter().map(|(f, tr)| match tr {
                                    Treatment::Clear => f.clone(),
                                    Treatment::Masked(m) => format!("{f}:{m:?}"),
                                }).collect::<Vec<_>>(),
                            }),
                        )
                    })
                    .collect();
                body.insert(
                    "department".into(),
                    serde_json::json!(decision.department()),
                );
                body.insert("datasets".into(), serde_json::Value::Object(datasets));
                body.insert("outcome".into(), serde_json::json!("allowed"));
                Opening::Allowed(planned, serde_json::Value::Object(body))
            }
            Err(e) => {
                // A limit hit before anything ran (an export's rows or daily count) is a
                // refusal too.
                let kind = if matches!(e, Error::AccessDenied(_) | Error::LimitExceeded(_)) {
                    "denied"
                } else {
                    "failed"
                };
                body.insert("outcome".into(), serde_json::json!(kind));
                body.insert("reason".into(), serde_json::json!(e.to_string()));
                Opening::Refused(e, serde_json::Value::Object(body))
            }
        }
    }

    /// Start an allowed request whose opening record `seq` is durable: only now does anything
    /// run. DataFusion may start tasks as soon as a plan is executed, and no row is read
    /// before the trail holds the query (its grant and data version fix what it may read, so
    /// a killed process still leaves who-accessed true).
    fn launch(
        &self,
        started: Instant,
        generation: u64,
        seq: u64,
        planned: Planned,
    ) -> Result<QueryStream> {
        let Planned {
            tables,
            schema,
            plan,
            task,
            limits,
            ..
        } = planned;
        let stream = {
            let _rt = self.engine.inner.runtime.enter();
            datafusion::physical_plan::execute_stream(plan, task)
                .map_err(super::translate::runtime)?
        };
        let digest = arrow::ipc::writer::StreamWriter::try_new(
            crate::audit::TwinHasher::new(self.engine.inner.audit.chain_hash()),
            &schema,
        )?;
        Ok(QueryStream {
            engine: self.engine.clone(),
            schema,
            stream,
            ended: false,
            bounds: Bounds {
                deadline: started + std::time::Duration::from_millis(limits.time_limit_ms),
                time_limit_ms: limits.time_limit_ms,
                cancel: self.cancel.clone(),
                generation,
                tick: None,
            },
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

    /// Decide, build the context under the store's query limits, check and plan `sql` down
    /// to a bounded physical plan — nothing executed yet.
    fn plan(&self, sql: &str, params: Option<&RecordBatch>) -> Result<Planned> {
        let decision = self.decision()?;
        let (ctx, tables) = self.context(&decision)?;
        self.plan_in(ctx, tables, decision, sql, params, None)
    }

    /// [`Session::plan`] under a decision already made (in any mode).
    /// `rewrite`, when given, checks and rewrites the logical plan before it is optimised (the
    /// aggregate-only rules).
    fn plan_decided(
        &self,
        decision: Decision,
        sql: &str,
        rewrite: Option<&Rewrite<'_>>,
    ) -> Result<Planned> {
        let (ctx, tables) = self.context(&decision)?;
        self.plan_in(ctx, tables, decision, sql, None, rewrite)
    }

    /// Check and plan `sql` in `ctx` (holding `tables`, for `decision`) under the store's
    /// query limits down to a bounded physical plan — nothing executed yet.
    fn plan_in(
        &self,
        ctx: SessionContext,
        tables: SecuredTables,
        decision: Decision,
        sql: &str,
        params: Option<&RecordBatch>,
        rewrite: Option<&Rewrite<'_>>,
    ) -> Result<Planned> {
        self.engine
            .inner
            .runtime
            .block_on(self.plan_in_async(ctx, tables, decision, sql, params, rewrite))
    }

    /// [`Session::plan`] for [`Session::sql_async`]: the same decision and planning, awaited
    /// on the caller's task (inside the engine's runtime context, as with `block_on`).
    async fn plan_async(&self, sql: &str) -> Result<Planned> {
        let decision = self.decision()?;
        let (ctx, tables) = self.context(&decision)?;
        InRuntime {
            runtime: self.engine.inner.runtime.handle(),
            future: std::pin::pin!(self.plan_in_async(ctx, tables, decision, sql, None, None)),
        }
        .await
    }

    /// The body of [`Session::plan_in`].
    async fn plan_in_async(
        &self,
        ctx: SessionContext,
        tables: SecuredTables,
        decision: Decision,
        sql: &str,
        params: Option<&RecordBatch>,
        rewrite: Option<&Rewrite<'_>>,
    ) -> Result<Planned> {
        let limits = self.engine.store().settings()?.query;
        let catalog = self.engine.store().catalog_shared()?;
        let (schema, plan) = {
            let denials = Denials {
                catalog: &catalog,
                decision: &decision,
            };
            let mut df = surface::plan(&ctx, sql, params, &denials).await?;
            if let Some(rewrite) = rewrite {
                let (state, plan) = df.into_parts();
                df = datafusion::dataframe::DataFrame::new(state, rewrite(plan)?);
            }
            let schema = Arc::new(df.schema().as_arrow().clone());
            let plan = surface::physical(df, &limits, &denials).await?;
            (schema, plan)
        };
        Ok(Planned {
            decision,
            tables,
            schema,
            plan,
            task: surface::task_context(&ctx, &limits)?,
            limits,
        })
    }
}

/// A future polled inside a runtime's context: whatever it spawns runs on that runtime, whichever
/// executor drives it.
struct InRuntime<'a, F> {
    runtime: &'a tokio::runtime::Handle,
    future: std::pin::Pin<&'a mut F>,
}

impl<F: std::future::Future> std::future::Future for InRuntime<'_, F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let _entered = self.runtime.enter();
        self.future.as_mut().poll(cx)
    }
}

/// A request as its audit record names it: `{kind: what}`.
fn request(kind: &str, what: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert(kind.to_string(), what);
    m
}

/// A query's whole result (its completion is recorded when the stream ends).
fn collect(stream: QueryStream) -> Result<QueryResult> {
    let schema = stream.schema();
    let batches = stream.collect::<Result<Vec<_>>>()?;
    Ok(QueryResult { schema, batches })
}

/// A check and rewrite of a logical plan before it is optimised.
type Rewrite<'a> = dyn Fn(datafusion::logical_expr::LogicalPlan) -> Result<datafusion::logical_expr::LogicalPlan>
    + Sync
    + 'a;

/// A verify request decided, checked for shape and charged to its quotas, not answered.
struct VerifyRequest {
    decision: Decision,
    verifier: Verifier,
    /// The claimed fields, in request order.
    claimed: Vec<String>,
    /// The canonical key of each claim row.
    keys: Vec<Option<String>>,
}

/// A query decided and planned, not started.
/// A request's opening record, with what goes on once it is written.
enum Opening {
    /// Allowed: the plan starts once the record is durable.
    Allowed(Planned, serde_json::Value),
    /// Refused or failed before anything ran: the error is returned once it is recorded.
    Refused(Error, serde_json::Value),
}

struct Planned {
    decision: Decision,
    tables: SecuredTables,
    schema: SchemaRef,
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    task: Arc<datafusion::execution::TaskContext>,
    limits: QueryLimits,
}
