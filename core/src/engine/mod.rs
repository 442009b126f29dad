//! Engine and sessions: the read path every binding uses.
//!
//! ```
//! use govshare_core::engine::Engine;
//! let dir = tempfile::tempdir().expect("tmp");
//! let founder = govshare_core::access::policy::Founder {
//!     user: "root".into(), name: "平台管理员".into(),
//!     department: "PLAT".into(), department_name: "省大数据中心".into(), region: "430000".into(),
//! };
//! govshare_core::Store::init(dir.path(), &founder)?;
//! let engine = Engine::open(dir.path())?;
//! // No consumer and no grant exist yet: the gate fails closed.
//! assert!(matches!(engine.session("u1", "P01"), Err(govshare_core::Error::AccessDenied(_))));
//! # Ok::<(), govshare_core::Error>(())
//! ```
//!
//! Every query goes through [`Session::sql`]: it reads the *current* policy (so a suspension
//! or revocation takes effect on the next query of every open session), asks the gate
//! ([`crate::access::policy::Policy::decide`]) for a decision, and builds a DataFusion context for that
//! decision only — one [`SecuredTable`] per granted dataset, nothing else registered, a closed
//! SQL surface. The context, its plans and its scope bitmaps are dropped with the query, so
//! nothing computed for one principal is ever served to another.

mod admin;
mod export;
mod feed;
mod release;
mod reports;
mod session;
mod stream;
mod surface;
mod trail;
mod translate;
mod workflow;

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::access::policy::{AuthMethod, Login, Mode};
use crate::access::secured::SecuredTable;
use crate::audit::AuditLog;
use crate::calendar::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::store::{Store, Writer};

pub use admin::LoadSummary;
pub use export::{ExportFile, ExportFormat, ExportManifest, manifest_path, verify_export};
pub use release::{Release, ReleaseManifest, ReleaseSpec, release_manifest_path, verify_release};
pub use reports::{RENEWAL_WINDOW_DAYS, REPORTS, UNUSUAL_FACTOR, UNUSUAL_FLOOR};
pub use session::{Canceller, ChangeSet, Session, Verification, VisibleDataset, VisibleField};
pub use stream::{QueryStream, QueryStreamArrow};
pub use trail::Access;
pub use workflow::{
    ConflictEntry, SERVED_MODES, ServiceEntry, ServiceItem, WorkflowAct, WorkflowOutcome,
};

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
    /// The closed SQL surface every query's context is a copy of.
    surface: surface::Surface,
    secret: [u8; 32],
    clock: Arc<dyn Clock>,
    /// Verify's per-row digests of the fields checked, per dataset version (data, not
    /// decisions: the same for every principal).
    digests: Arc<crate::access::verify::DigestCache>,
    /// A delayed flush of the trail is scheduled: one at a time, not one per query.
    flush_scheduled: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({})", self.inner.store.root().display())
    }
}

/// The secured tables registered for one decision, by dataset name.
pub(crate) type SecuredTables = Vec<(String, Arc<SecuredTable>)>;

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

/// How long a record queued without waiting may stay unwritten when no later record carries
/// it to disk.
const FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

impl Engine {
    /// Write the trail's queued records soon, unless a group commit does first.
    pub(crate) fn flush_soon(&self) {
        use std::sync::atomic::Ordering;
        // A flush already scheduled covers this record: it takes everything queued when it
        // starts, and it clears the flag before it starts, so a record queued after that
        // schedules the next one.
        if self.inner.flush_scheduled.swap(true, Ordering::SeqCst) {
            return;
        }
        let audit = self.inner.audit.clone();
        let scheduled = self.inner.flush_scheduled.clone();
        self.inner.runtime.spawn(async move {
            tokio::time::sleep(FLUSH_DELAY).await;
            scheduled.store(false, Ordering::SeqCst);
            // A failed write latches the trail closed; the next query reports it.
            let _ = tokio::task::spawn_blocking(move || audit.flush()).await;
        });
    }

    /// Open the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Engine> {
        Engine::open_with_clock(path, Arc::new(SystemClock))
    }

    /// Open the store at `path` with time taken from `clock`: grant validity, deadlines in
    /// working days, and the times of workflow transitions. Tests move a
    /// [`ManualClock`](crate::calendar::ManualClock); the audit trail's own timestamps stay on
    /// the system clock.
    pub fn open_with_clock(path: impl AsRef<Path>, clock: Arc<dyn Clock>) -> Result<Engine> {
        let store = Store::open(path)?;
        let secret = store.secret()?;
        let audit = Arc::new(AuditLog::open(store.audit_dir())?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("govshare")
            .enable_time()
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
                surface: surface::Surface::new()?,
                flush_scheduled: Default::default(),
                secret,
                clock,
                digests: Default::default(),
            }),
        })
    }

    /// The audit trail (shared: [`AuditLog::append_async`] takes it as an `Arc`).
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.inner.audit
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Open a session for `user` acting for `purpose`, as the embedding process itself (no
    /// host system) with single-factor authentication: sensitive items (grade L4) in clear are
    /// withheld; see [`Engine::session_as`]. Fails at once when the gate would deny every query
    /// (unknown or suspended principal, no valid grant for the purpose in any served mode).
    pub fn session(&self, user: &str, purpose: &str) -> Result<Session> {
        self.session_as(&Login::new(user, purpose, AuthMethod::Password))
    }

    /// Open a session for a login: the user, the purpose, the host system it runs through
    /// (registered, active) and how the host authenticated the user — all recorded, all
    /// decided again at every query.
    pub fn session_as(&self, login: &Login) -> Result<Session> {
        // A session is for whichever served mode its department holds a grant in (a verify-only
        // department opens one to verify); each request is decided again in its own mode.
        let mut outcome = session::decide(self, login, Mode::Query);
        for mode in &SERVED_MODES[1..] {
            if matches!(outcome, Err(Error::AccessDenied(_)))
                && let Ok(d) = session::decide(self, login, *mode)
            {
                outcome = Ok(d);
            }
        }
        let body = match &outcome {
            Ok(d) => serde_json::json!({
                "purpose": login.purpose, "department": d.department(), "system": login.system,
                "auth": login.auth, "outcome": "allowed",
            }),
            Err(e) => serde_json::json!({
                "purpose": login.purpose, "system": login.system, "auth": login.auth,
                "outcome": "denied", "reason": e.to_string(),
            }),
        };
        self.inner.audit.append("session_open", &login.user, body)?;
        outcome?;
        Ok(Session {
            engine: self.clone(),
            user: login.user.clone(),
            purpose: login.purpose.clone(),
            login: login.clone(),
            cancel: Default::default(),
        })
    }

    /// Record an administrative read (a listing, a lookup, an audit question) with its
    /// outcome: reads are decisions too, allowed or denied.
    pub(crate) fn record_read<T>(
        &self,
        kind: &str,
        by: &str,
        mut body: serde_json::Value,
        outcome: std::result::Result<T, &Error>,
    ) -> Result<()> {
        if let Some(o) = body.as_object_mut() {
            match outcome {
                Ok(_) => {
                    o.insert("outcome".into(), "allowed".into());
                }
                Err(e) => {
                    o.insert("outcome".into(), "denied".into());
                    o.insert("reason".into(), e.to_string().into());
                }
            }
        }
        self.inner.audit.append(kind, by, body).map(drop)
    }

    /// Take the store's writer lock for `actor`, whose every act the policy authorises first;
    /// the writer records its acts on this engine's trail, so administrative acts and queries
    /// of one process are group-committed together.
    pub fn writer(&self, actor: &str) -> Result<Writer<'_>> {
        let mut w = self.store().writer_with(actor, self.inner.audit.clone())?;
        w.set_clock(self.inner.clock.clone());
        Ok(w)
    }

    /// Now, by the engine's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.clock.now()
    }

    /// The digest a query's audit record keeps of one bound parameter value: blake3 keyed
    /// with the store's secret over the value's type and text, 32 hex digits. Keyed, because a
    /// plain hash of a citizen ID could be reversed by hashing every possible ID; an auditor
    /// who suspects a value asks this engine for its digest and compares.
    pub fn parameter_digest(&self, value: &datafusion::common::ScalarValue) -> String {
        let text = format!("{}:{value}", value.data_type());
        blake3::keyed_hash(&self.inner.secret, text.as_bytes()).to_hex()[..32].to_string()
    }

    /// The record of a query's bound parameters: how many rows and columns, and each value's
    /// [`Engine::parameter_digest`] row by row — for up to 16 rows; a larger batch is recorded
    /// by one digest over all its values, in order.
    pub(crate) fn parameter_digests(
        &self,
        params: &arrow::array::RecordBatch,
    ) -> Result<serde_json::Value> {
        use datafusion::common::ScalarValue;
        let mut rows = Vec::new();
        let mut all = blake3::Hasher::new_keyed(&self.inner.secret);
        for row in 0..params.num_rows() {
            let mut digests = Vec::with_capacity(params.num_columns());
            for col in params.columns() {
                let v = ScalarValue::try_from_array(col, row)
                    .map_err(|e| Error::invalid(format!("a parameter value: {e}")))?;
                let d = self.parameter_digest(&v);
                all.update(d.as_bytes());
                digests.push(d);
            }
            if params.num_rows() <= 16 {
                rows.push(digests);
            }
        }
        let mut record = serde_json::json!({
            "rows": params.num_rows(),
            "columns": params.num_columns(),
        });
        if params.num_rows() <= 16 {
            record["digests"] = serde_json::json!(rows);
        } else {
            record["digest"] = serde_json::json!(all.finalize().to_hex().to_string());
        }
        Ok(record)
    }
}
