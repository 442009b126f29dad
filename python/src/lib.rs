//! `govshare._internal`: the native half of the Python package.
//!
//! A thin layer over [`govshare_core`]: each method converts its arguments, calls core with the
//! GIL released, and maps errors onto the exception classes below; structured arguments and
//! results cross as JSON text that the pure-Python package (`govshare/`) builds and parses.
//! Results leave as Arrow data through the PyCapsule interface (`__arrow_c_stream__`,
//! `__arrow_c_array__`, `__arrow_c_schema__`), so no copy is made and no pyarrow version is
//! linked in. The Arrow C structures come from arrow's own `ffi` module; a capsule is three
//! lines of pyo3, so no further crate is needed for it.

use std::ffi::CStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, TryLockError};

use arrow::array::{RecordBatch, StructArray};
use arrow::datatypes::SchemaRef;
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use arrow::ffi_stream::FFI_ArrowArrayStream;
use govshare_core::access::policy::{Department, GrantRequest, PrincipalStatus, User};
use govshare_core::audit::Checkpoint;
use govshare_core::engine::{QueryStream, QueryStreamArrow};
use govshare_core::ingest::{Encoding, HandoverInfo, write_csv};
use govshare_core::synth::Synth;
use govshare_core::{Engine, Error, ErrorCode, Session};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyTuple};

create_exception!(
    govshare,
    GovshareError,
    PyException,
    "Base class of every error govshare raises."
);
create_exception!(
    govshare,
    AccessDenied,
    GovshareError,
    "The policy refuses: the message names what is missing and how access is obtained."
);
create_exception!(
    govshare,
    InvalidInput,
    GovshareError,
    "The request is malformed: bad SQL, an unknown column, invalid data."
);
create_exception!(
    govshare,
    NotFound,
    GovshareError,
    "A named thing (store, dataset, user, grant, file) does not exist."
);
create_exception!(
    govshare,
    IntegrityError,
    GovshareError,
    "The store or the audit trail is corrupt or fails verification."
);
create_exception!(
    govshare,
    Locked,
    GovshareError,
    "Another writer holds the store's lock; retry later."
);
create_exception!(
    govshare,
    Rejected,
    GovshareError,
    "A strict load found invalid rows and committed nothing."
);

create_exception!(
    govshare,
    QueryFailed,
    InvalidInput,
    "The query was accepted but failed while it ran, by its own doing (a division by zero, a failing cast)."
);
create_exception!(
    govshare,
    LimitExceeded,
    GovshareError,
    "The query hit a resource limit (memory, recursion depth, time)."
);
create_exception!(
    govshare,
    StorageError,
    GovshareError,
    "A file-system error on the store's files."
);
create_exception!(
    govshare,
    InternalError,
    GovshareError,
    "An invariant of govshare broke (a bug or a broken environment), not the caller's fault."
);

/// One record batch from an Arrow IPC stream written by pyarrow (`what` names it in errors).
fn ipc_batch(ipc: &[u8], what: &str) -> govshare_core::Result<RecordBatch> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
        .map_err(|e| {
            govshare_core::Error::invalid(format!("{what} are not an Arrow IPC stream: {e}"))
        })?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| govshare_core::Error::invalid(format!("{what}: {e}")))?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// The exception class of an error code. The core's `ErrorCode` is the one table; this match
/// is exhaustive, so a new code does not compile until it has its class.
fn class_of(py: Python<'_>, code: ErrorCode) -> Bound<'_, pyo3::types::PyType> {
    match code {
        ErrorCode::InvalidInput => py.get_type::<InvalidInput>(),
        ErrorCode::AccessDenied => py.get_type::<AccessDenied>(),
        ErrorCode::NotFound => py.get_type::<NotFound>(),
        ErrorCode::Rejected => py.get_type::<Rejected>(),
        ErrorCode::Locked => py.get_type::<Locked>(),
        ErrorCode::Integrity => py.get_type::<IntegrityError>(),
        ErrorCode::Io => py.get_type::<StorageError>(),
        ErrorCode::Internal => py.get_type::<InternalError>(),
        ErrorCode::Interrupted => py.get_type::<pyo3::exceptions::PyKeyboardInterrupt>(),
        ErrorCode::QueryFailed => py.get_type::<QueryFailed>(),
        ErrorCode::LimitExceeded => py.get_type::<LimitExceeded>(),
    }
}

/// The exception a core error is raised as (same message as Rust's `Display`), of the class
/// its code names.
fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    Python::attach(|py| PyErr::from_type(class_of(py, e.code()), msg))
}

fn json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> PyResult<T> {
    serde_json::from_str(text).map_err(|e| PyValueError::new_err(format!("{what}: {e}")))
}

fn to_json(v: &impl serde::Serialize) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| GovshareError::new_err(e.to_string()))
}

fn status(active: bool) -> PrincipalStatus {
    if active {
        PrincipalStatus::Active
    } else {
        PrincipalStatus::Suspended
    }
}

/// Create an empty store at `path` with its first platform administrator (`founder_json`:
/// user, name, department, department_name, region); on a store already there, succeed only
/// for one of its active platform administrators.
#[pyfunction]
fn init_store(py: Python<'_>, path: PathBuf, founder_json: &str) -> PyResult<()> {
    let founder: govshare_core::access::policy::Founder = json(founder_json, "founder")?;
    py.detach(|| govshare_core::Store::init(&path, &founder).map(|_| ()))
        .map_err(to_py)
}

/// Write deterministic synthetic `person.csv` and `legal_entity.csv` into `dir` (for demos,
/// tests and trying govshare out); returns the two paths.
#[pyfunction]
fn write_synthetic(
    py: Python<'_>,
    dir: PathBuf,
    persons: usize,
    entities: usize,
    seed: u64,
) -> PyResult<(PathBuf, PathBuf)> {
    py.detach(|| {
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
            path: dir.clone(),
            source: e,
        })?;
        let synth = Synth::new(seed, persons, entities);
        let p = dir.join("person.csv");
        let e = dir.join("legal_entity.csv");
        write_csv(&p, synth.persons(64 * 1024), Encoding::Utf8)?;
        write_csv(&e, synth.entities(64 * 1024), Encoding::Utf8)?;
        Ok((p, e))
    })
    .map_err(to_py)
}

/// An open store (`Engine` in Rust). Thread-safe.
#[pyclass(frozen, module = "govshare._internal")]
struct RawEngine {
    engine: Engine,
}

#[pymethods]
impl RawEngine {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let engine = py.detach(|| Engine::open(&path)).map_err(to_py)?;
        Ok(RawEngine { engine })
    }

    fn session(&self, py: Python<'_>, user: &str, purpose: &str) -> PyResult<RawSession> {
        let session = py
            .detach(|| self.engine.session(user, purpose))
            .map_err(to_py)?;
        Ok(RawSession {
            session: Mutex::new(Some(Arc::new(session))),
        })
    }

    fn session_as(&self, py: Python<'_>, login_json: &str) -> PyResult<RawSession> {
        let login: govshare_core::access::policy::Login = json(login_json, "login")?;
        let session = py
            .detach(|| self.engine.session_as(&login))
            .map_err(to_py)?;
        Ok(RawSession {
            session: Mutex::new(Some(Arc::new(session))),
        })
    }

    fn upsert_system(&self, py: Python<'_>, by: &str, system_json: &str) -> PyResult<()> {
        let s: govshare_core::access::policy::HostSystem = json(system_json, "host system")?;
        py.detach(|| self.engine.upsert_system(by, s))
            .map_err(to_py)
    }

    fn set_system_active(&self, py: Python<'_>, by: &str, id: &str, active: bool) -> PyResult<()> {
        py.detach(|| self.engine.set_system_status(by, id, status(active)))
            .map_err(to_py)
    }

    fn upsert_department(&self, py: Python<'_>, by: &str, department_json: &str) -> PyResult<()> {
        let d: Department = json(department_json, "department")?;
        py.detach(|| self.engine.upsert_department(by, d))
            .map_err(to_py)
    }

    fn set_department_active(
        &self,
        py: Python<'_>,
        by: &str,
        code: &str,
        active: bool,
    ) -> PyResult<()> {
        py.detach(|| self.engine.set_department_status(by, code, status(active)))
            .map_err(to_py)
    }

    fn upsert_user(&self, py: Python<'_>, by: &str, user_json: &str) -> PyResult<()> {
        let u: User = json(user_json, "user")?;
        py.detach(|| self.engine.upsert_user(by, u)).map_err(to_py)
    }

    fn set_user_active(&self, py: Python<'_>, by: &str, id: &str, active: bool) -> PyResult<()> {
        py.detach(|| self.engine.set_user_status(by, id, status(active)))
            .map_err(to_py)
    }

    fn request_grant(&self, py: Python<'_>, by: &str, request_json: &str) -> PyResult<u64> {
        let r: GrantRequest = json(request_json, "grant request")?;
        py.detach(|| self.engine.request_grant(by, r))
            .map(|g| g.id)
            .map_err(to_py)
    }

    fn decide_request(
        &self,
        py: Python<'_>,
        by: &str,
        request_json: &str,
        approve: bool,
        reason: &str,
    ) -> PyResult<Option<u64>> {
        let r: GrantRequest = json(request_json, "grant request")?;
        py.detach(|| self.engine.decide_request(by, r, approve, reason))
            .map(|a| a.grant)
            .map_err(to_py)
    }

    fn revoke_grant(&self, py: Python<'_>, by: &str, grant_id: u64, reason: &str) -> PyResult<()> {
        py.detach(|| self.engine.revoke_grant(by, grant_id, reason))
            .map_err(to_py)
    }

    fn policy_json(&self, py: Python<'_>, by: &str) -> PyResult<String> {
        let p = py.detach(|| self.engine.policy(by)).map_err(to_py)?;
        to_json(&p)
    }

    fn release_open_data(
        &self,
        py: Python<'_>,
        by: &str,
        spec_json: &str,
        out: PathBuf,
    ) -> PyResult<String> {
        let spec: govshare_core::engine::ReleaseSpec = json(spec_json, "release spec")?;
        let release = py
            .detach(|| self.engine.release_open_data(by, &spec, &out))
            .map_err(to_py)?;
        to_json(&release.manifest)
    }

    #[pyo3(signature = (by, dataset, path, incremental, strict, handover_json=None))]
    #[allow(clippy::too_many_arguments)]
    fn load(
        &self,
        py: Python<'_>,
        by: &str,
        dataset: &str,
        path: PathBuf,
        incremental: bool,
        strict: bool,
        handover_json: Option<&str>,
    ) -> PyResult<String> {
        let handover: HandoverInfo = match handover_json {
            Some(j) => json(j, "handover")?,
            None => HandoverInfo::default(),
        };
        let summary = py
            .detach(|| {
                self.engine
                    .load_file(by, dataset, &path, incremental, strict, handover)
            })
            .map_err(to_py)?;
        to_json(&summary)
    }

    #[pyo3(signature = (by, checkpoint_json=None))]
    fn audit_verify(
        &self,
        py: Python<'_>,
        by: &str,
        checkpoint_json: Option<&str>,
    ) -> PyResult<String> {
        let cp: Option<Checkpoint> = checkpoint_json.map(|j| json(j, "checkpoint")).transpose()?;
        let v = py
            .detach(|| self.engine.verify_audit(by, cp.as_ref()))
            .map_err(to_py)?;
        to_json(&v)
    }

    fn audit_checkpoint(&self, py: Python<'_>, by: &str) -> PyResult<String> {
        let cp = py
            .detach(|| self.engine.audit_checkpoint(by))
            .map_err(to_py)?;
        to_json(&cp)
    }

    fn who_accessed(&self, py: Python<'_>, by: &str, key: &str) -> PyResult<String> {
        let hits = py
            .detach(|| self.engine.who_accessed(by, key))
            .map_err(to_py)?;
        to_json(&hits)
    }

    fn audit_sql(&self, py: Python<'_>, user: &str, sql: &str) -> PyResult<RawStream> {
        let r = py
            .detach(|| self.engine.audit_sql(user, sql))
            .map_err(to_py)?;
        Ok(RawStream::new(
            r.schema,
            Source::Collected(r.batches.into_iter()),
        ))
    }

    fn act(&self, py: Python<'_>, by: &str, act_json: &str) -> PyResult<String> {
        let act: govshare_core::engine::WorkflowAct = json(act_json, "act")?;
        let out = py.detach(|| self.engine.act(by, act)).map_err(to_py)?;
        to_json(&out)
    }

    fn service_catalog(&self, py: Python<'_>, by: &str) -> PyResult<String> {
        let out = py
            .detach(|| self.engine.service_catalog(by))
            .map_err(to_py)?;
        to_json(&out)
    }

    #[pyo3(signature = (by, dataset=None))]
    fn conflicts(&self, py: Python<'_>, by: &str, dataset: Option<&str>) -> PyResult<String> {
        let out = py
            .detach(|| self.engine.conflicts(by, dataset))
            .map_err(to_py)?;
        to_json(&out)
    }

    fn report_sql(&self, py: Python<'_>, by: &str, sql: &str) -> PyResult<RawStream> {
        let r = py
            .detach(|| self.engine.report_sql(by, sql))
            .map_err(to_py)?;
        Ok(RawStream::new(
            r.schema,
            Source::Collected(r.batches.into_iter()),
        ))
    }

    fn report_html(&self, py: Python<'_>, by: &str) -> PyResult<String> {
        py.detach(|| self.engine.report_html(by)).map_err(to_py)
    }
}

/// A user acting for a purpose (`Session` in Rust). Thread-safe; `close` ends it.
#[pyclass(frozen, module = "govshare._internal")]
struct RawSession {
    session: Mutex<Option<Arc<Session>>>,
}

impl RawSession {
    fn get(&self) -> PyResult<Arc<Session>> {
        self.session
            .lock()
            .map_err(|_| PyRuntimeError::new_err("session state poisoned"))?
            .clone()
            .ok_or_else(|| GovshareError::new_err("the session is closed"))
    }
}

#[pymethods]
impl RawSession {
    #[getter]
    fn user(&self) -> PyResult<String> {
        Ok(self.get()?.user().to_string())
    }

    #[getter]
    fn purpose(&self) -> PyResult<String> {
        Ok(self.get()?.purpose().to_string())
    }

    fn sql(&self, py: Python<'_>, sql: &str) -> PyResult<RawStream> {
        let session = self.get()?;
        let stream = py.detach(|| session.sql_stream(sql)).map_err(to_py)?;
        Ok(RawStream::new(
            stream.schema(),
            Source::Query(Box::new(stream)),
        ))
    }

    /// Run `sql` with its `$1`, `$2`, ... bound to the columns of an Arrow IPC stream (one row
    /// per execution): the values never become SQL text.
    fn sql_params(&self, py: Python<'_>, sql: &str, params_ipc: &[u8]) -> PyResult<RawStream> {
        let session = self.get()?;
        let stream = py
            .detach(|| -> govshare_core::Result<QueryStream> {
                let params = ipc_batch(params_ipc, "parameters")?;
                session.sql_params_stream(sql, &params)
            })
            .map_err(to_py)?;
        Ok(RawStream::new(
            stream.schema(),
            Source::Query(Box::new(stream)),
        ))
    }

    /// The subscription's changes: (from, to, result).
    fn changes(&self, py: Python<'_>, dataset: &str) -> PyResult<(u64, u64, RawStream)> {
        let session = self.get()?;
        let c = py.detach(|| session.changes(dataset)).map_err(to_py)?;
        Ok((
            c.from,
            c.to,
            RawStream::new(
                c.result.schema.clone(),
                Source::Collected(c.result.batches.into_iter()),
            ),
        ))
    }

    fn ack(&self, py: Python<'_>, dataset: &str, token: u64) -> PyResult<()> {
        let session = self.get()?;
        py.detach(|| session.ack(dataset, token)).map_err(to_py)
    }

    fn aggregate(&self, py: Python<'_>, sql: &str) -> PyResult<RawStream> {
        let session = self.get()?;
        let stream = py.detach(|| session.aggregate_stream(sql)).map_err(to_py)?;
        Ok(RawStream::new(
            stream.schema(),
            Source::Query(Box::new(stream)),
        ))
    }

    fn lookup(&self, py: Python<'_>, dataset: &str, keys: Vec<String>) -> PyResult<RawStream> {
        let session = self.get()?;
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let stream = py
            .detach(|| session.lookup_stream(dataset, &keys))
            .map_err(to_py)?;
        Ok(RawStream::new(
            stream.schema(),
            Source::Query(Box::new(stream)),
        ))
    }

    /// Verify claims given as an Arrow IPC stream (pyarrow writes one without unsafe code on
    /// either side); the answer as a collected result.
    fn verify(&self, py: Python<'_>, dataset: &str, claims_ipc: &[u8]) -> PyResult<RawStream> {
        let session = self.get()?;
        let answer = py
            .detach(|| session.verify(dataset, &ipc_batch(claims_ipc, "claims")?))
            .map_err(to_py)?;
        Ok(RawStream::new(
            answer.schema(),
            Source::Collected(vec![answer].into_iter()),
        ))
    }

    /// Export a dataset into `dir`; the manifest as JSON.
    fn export(
        &self,
        py: Python<'_>,
        dataset: &str,
        format: &str,
        dir: PathBuf,
    ) -> PyResult<String> {
        let session = self.get()?;
        let manifest = py
            .detach(|| {
                let format = govshare_core::engine::ExportFormat::parse(format)?;
                session.export(dataset, format, &dir, &mut |_| {})
            })
            .map_err(to_py)?;
        to_json(&manifest)
    }

    fn catalog_json(&self, py: Python<'_>) -> PyResult<String> {
        let session = self.get()?;
        let c = py.detach(|| session.catalog()).map_err(to_py)?;
        to_json(&c)
    }

    fn cancel(&self) -> PyResult<()> {
        self.get()?.cancel();
        Ok(())
    }

    fn close(&self) -> PyResult<()> {
        // The session ends (and is recorded) when the last query using it lets go.
        self.session
            .lock()
            .map_err(|_| PyRuntimeError::new_err("session state poisoned"))?
            .take();
        Ok(())
    }

    #[getter]
    fn closed(&self) -> PyResult<bool> {
        Ok(self
            .session
            .lock()
            .map_err(|_| PyRuntimeError::new_err("session state poisoned"))?
            .is_none())
    }
}

/// Where a result's batches come from.
enum Source {
    /// A running query (its completion is recorded when it ends or is dropped). Boxed: the
    /// stream carries its digest state and is far larger than the other variant.
    Query(Box<QueryStream>),
    /// An already collected result (audit queries).
    Collected(std::vec::IntoIter<RecordBatch>),
}

/// The batches of one result, read once: batch by batch (`next_batch`, interruptible with
/// Ctrl-C) or handed over whole as an Arrow C stream (`__arrow_c_stream__`).
#[pyclass(frozen, module = "govshare._internal")]
struct RawStream {
    schema: SchemaRef,
    source: Mutex<Option<Source>>,
}

impl RawStream {
    fn new(schema: SchemaRef, source: Source) -> Self {
        RawStream {
            schema,
            source: Mutex::new(Some(source)),
        }
    }

    /// The source, without waiting: a stream read from two threads at once is a usage error,
    /// and waiting here while holding the GIL could deadlock with the reader that needs it.
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, Option<Source>>> {
        match self.source.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(PyRuntimeError::new_err(
                "this result is being read by another thread",
            )),
            Err(TryLockError::Poisoned(_)) => Err(PyRuntimeError::new_err("result poisoned")),
        }
    }
}

const SCHEMA_CAPSULE: &CStr = c"arrow_schema";
const ARRAY_CAPSULE: &CStr = c"arrow_array";
const STREAM_CAPSULE: &CStr = c"arrow_array_stream";

fn schema_capsule<'py>(py: Python<'py>, schema: &SchemaRef) -> PyResult<Bound<'py, PyCapsule>> {
    let ffi = FFI_ArrowSchema::try_from(schema.as_ref())
        .map_err(|e| GovshareError::new_err(e.to_string()))?;
    PyCapsule::new_with_value(py, ffi, SCHEMA_CAPSULE)
}

#[pymethods]
impl RawStream {
    /// The result schema, as an Arrow schema capsule.
    #[pyo3(signature = ())]
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        schema_capsule(py, &self.schema)
    }

    /// Hand the remaining batches over as an Arrow C stream (read once). The consumer pulls
    /// them without the GIL. `requested_schema` is accepted and ignored, as the protocol
    /// allows.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let source = self
            .lock()?
            .take()
            .ok_or_else(|| GovshareError::new_err("this result has already been read"))?;
        let reader: Box<dyn arrow::array::RecordBatchReader + Send> = match source {
            Source::Query(q) => Box::new(QueryStreamArrow(*q)),
            Source::Collected(it) => Box::new(arrow::array::RecordBatchIterator::new(
                it.map(Ok),
                self.schema.clone(),
            )),
        };
        PyCapsule::new_with_value(py, FFI_ArrowArrayStream::new(reader), STREAM_CAPSULE)
    }

    /// The next batch (an object with `__arrow_c_array__`), or None at the end. The GIL is
    /// released while the engine works, and Ctrl-C interrupts: the query is cancelled and
    /// `KeyboardInterrupt` raised.
    fn next_batch(&self, py: Python<'_>) -> PyResult<Option<RawBatch>> {
        let mut guard = self.lock()?;
        let Some(source) = guard.as_mut() else {
            return Err(GovshareError::new_err(
                "this result has already been read or closed",
            ));
        };
        let item = match source {
            Source::Collected(it) => it.next().map(Ok),
            Source::Query(q) => {
                let mut signal: Option<PyErr> = None;
                let item = py.detach(|| {
                    q.next_interruptible(|| {
                        Python::attach(|py| match py.check_signals() {
                            Ok(()) => false,
                            Err(e) => {
                                signal = Some(e);
                                true
                            }
                        })
                    })
                });
                if let Some(e) = signal {
                    // Dropping the stream cancels the query and records it as abandoned.
                    *guard = None;
                    return Err(e);
                }
                item
            }
        };
        match item {
            Some(Ok(batch)) => Ok(Some(RawBatch { batch })),
            Some(Err(e)) => {
                *guard = None;
                Err(to_py(e))
            }
            None => {
                *guard = None;
                Ok(None)
            }
        }
    }

    /// Stop reading; a running query is cancelled (and recorded as abandoned).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let source = self.lock()?.take();
        // The completion record is written on drop: do it without the GIL.
        py.detach(move || drop(source));
        Ok(())
    }
}

/// One record batch, exported through `__arrow_c_array__`.
#[pyclass(frozen, module = "govshare._internal")]
struct RawBatch {
    batch: RecordBatch,
}

#[pymethods]
impl RawBatch {
    #[getter]
    fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let _ = requested_schema;
        let schema = schema_capsule(py, &self.batch.schema())?;
        let data = StructArray::from(self.batch.clone()).into();
        let array = PyCapsule::new_with_value(py, FFI_ArrowArray::new(&data), ARRAY_CAPSULE)?;
        PyTuple::new(py, [schema.into_any(), array.into_any()])
    }
}

/// The native module.
#[pymodule]
fn _internal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(init_store, m)?)?;
    m.add_function(wrap_pyfunction!(write_synthetic, m)?)?;
    m.add_class::<RawEngine>()?;
    m.add_class::<RawSession>()?;
    m.add_class::<RawStream>()?;
    m.add_class::<RawBatch>()?;
    m.add("GovshareError", py.get_type::<GovshareError>())?;
    m.add("AccessDenied", py.get_type::<AccessDenied>())?;
    m.add("InvalidInput", py.get_type::<InvalidInput>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("IntegrityError", py.get_type::<IntegrityError>())?;
    m.add("Locked", py.get_type::<Locked>())?;
    m.add("Rejected", py.get_type::<Rejected>())?;
    m.add("QueryFailed", py.get_type::<QueryFailed>())?;
    m.add("LimitExceeded", py.get_type::<LimitExceeded>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    // The table itself, so the Python tests can check it: error code -> exception class.
    let classes = pyo3::types::PyDict::new(py);
    for code in ErrorCode::ALL {
        classes.set_item(code as i32, class_of(py, code))?;
    }
    m.add("ERROR_CLASSES", classes)?;
    Ok(())
}
