//! The result stream of a query: batches pulled through the runtime (or polled so a binding
//! can interrupt), counted and digested, and the completion record written at the end, on
//! failure or when the stream is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;

use crate::error::{Error, Result};

use super::{Engine, SecuredTables};

/// The batches of a running query; implements `Iterator` and arrow's `RecordBatchReader`.
pub struct QueryStream {
    pub(super) engine: Engine,
    pub(super) schema: SchemaRef,
    pub(super) stream: SendableRecordBatchStream,
    pub(super) audit: Option<QueryAudit>,
    pub(super) bounds: Bounds,
    /// Set once the query ended (completed, failed, stopped): later calls yield nothing.
    pub(super) ended: bool,
}

/// What stops a running query besides its end: the time limit and its session's cancel.
pub(super) struct Bounds {
    pub(super) deadline: Instant,
    pub(super) time_limit_ms: u64,
    pub(super) cancel: Arc<AtomicU64>,
    pub(super) generation: u64,
    /// When the stream is polled as a `futures::Stream`: the timer that wakes the task every
    /// [`TICK`] while the plan has nothing ready, so the time limit and a cancel are seen as
    /// promptly as by the iterator.
    pub(super) tick: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// How often a waiting query looks at its time limit and its session's cancel.
const TICK: std::time::Duration = std::time::Duration::from_millis(20);

impl Bounds {
    fn check(&self) -> Option<(Error, &'static str)> {
        if self.cancel.load(Ordering::SeqCst) != self.generation {
            return Some((Error::Interrupted, "cancelled"));
        }
        if Instant::now() >= self.deadline {
            return Some((
                Error::LimitExceeded(format!(
                    "the query ran past the time limit of {:.1} s (store settings)",
                    self.time_limit_ms as f64 / 1000.0
                )),
                "limit_exceeded",
            ));
        }
        None
    }
}

/// Up to this many scattered row ids are listed in a completion record itself; more go to a
/// bitmap file named by the record.
const INLINE_IDS: u64 = 256;

/// What the completion record of a query needs, gathered while it streams.
pub(super) struct QueryAudit {
    pub(super) seq: u64,
    pub(super) user: String,
    pub(super) tables: SecuredTables,
    pub(super) started: Instant,
    pub(super) rows: u64,
    pub(super) digest: arrow::ipc::writer::StreamWriter<crate::audit::TwinHasher>,
}

impl QueryStream {
    /// The trail's sequence number of the query's opening record.
    pub(super) fn query_seq(&self) -> Option<u64> {
        self.audit.as_ref().map(|a| a.seq)
    }

    /// The data version of `dataset` the query reads.
    pub(super) fn snapshot_version(&self, dataset: &str) -> Option<u64> {
        self.audit
            .as_ref()?
            .tables
            .iter()
            .find(|(n, _)| n == dataset)
            .map(|(_, t)| t.snapshot().version())
    }

    /// Append the completion record: rows, result digest, duration, and the subjects read —
    /// per dataset, the row ids the secured scan read: in the record as one range or a short
    /// list, or else as a roaring bitmap file whose digest is on the chain.
    fn finish(&mut self, outcome: &str) -> Result<()> {
        let Some(mut a) = self.audit.take() else {
            return Ok(());
        };
        a.digest.finish()?;
        let (digest, digest_sm3) = a.digest.into_inner()?.finalize();
        let store = self.engine.store();
        let dir = store.root().join("audit").join("subjects");
        let mut subjects = serde_json::Map::new();
        for (name, t) in &a.tables {
            let read = t.emitted()?;
            if read.is_empty() {
                continue;
            }
            let info = subjects_entry(&dir, a.seq, name, t.snapshot().version(), &read)?;
            subjects.insert(name.clone(), info);
        }
        // Not waited for: the query's opening record is durable already, so its completion
        // rides along with the next group commit (the next query's record) or is written
        // shortly after by a delayed flush; a query pays one fsync, not two.
        let mut body = serde_json::json!({
            "query": a.seq,
            "outcome": outcome,
            "rows": a.rows,
            "result_blake3": digest,
            "duration_ms": a.started.elapsed().as_secs_f64() * 1000.0,
            "subjects": subjects,
        });
        if let Some(sm3) = digest_sm3 {
            body["result_sm3"] = sm3.into();
        }
        self.engine
            .inner
            .audit
            .append_nowait("query_end", &a.user, body)?;
        self.engine.flush_soon();
        Ok(())
    }
}

/// What a completion record says was read of one dataset: the row ids `read` of `version`, in
/// the record as one range or a short list, or else as a roaring bitmap file in `dir` whose
/// digest is on the chain.
pub(super) fn subjects_entry(
    dir: &std::path::Path,
    seq: u64,
    name: &str,
    version: u64,
    read: &roaring::RoaringBitmap,
) -> Result<serde_json::Value> {
    // One run of row ids (a clustered region scope, a whole table) or a few ids (a lookup)
    // go in the record itself: no file to write and fsync per query.
    let (min, max) = (read.min().unwrap_or(0), read.max().unwrap_or(0));
    Ok(if read.len() == (max - min) as u64 + 1 {
        serde_json::json!({
            "version": version, "rows_read": read.len(), "row_range": [min, max as u64 + 1],
        })
    } else if read.len() <= INLINE_IDS {
        serde_json::json!({
            "version": version, "rows_read": read.len(),
            "row_ids": read.iter().collect::<Vec<u32>>(),
        })
    } else {
        crate::durable::create_private_dir(dir)?;
        let file = format!("q{seq}-{name}.bm");
        let bytes = crate::durable::write_bitmap(&dir.join(&file), read)?;
        serde_json::json!({
            "version": version,
            "rows_read": read.len(),
            "bitmap": file,
            "bitmap_blake3": blake3::hash(&bytes).to_hex().to_string(),
        })
    })
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
    /// milliseconds while the engine works; when it answers `true` the query stops with
    /// [`Error::Interrupted`]. Bindings use this to let Ctrl-C through while a long query
    /// runs without holding their interpreter's lock. Either way the query also stops at its
    /// time limit ([`Error::LimitExceeded`]) or when its session is cancelled
    /// ([`Session::cancel`](super::Session::cancel), [`Error::Interrupted`]); the completion
    /// record says which.
    pub fn next_interruptible(
        &mut self,
        mut interrupted: impl FnMut() -> bool,
    ) -> Option<Result<RecordBatch>> {
        if self.ended {
            return None;
        }
        if let Some((e, outcome)) = self.bounds.check() {
            return Some(Err(self.stop(e, outcome)));
        }
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
                        return Some(Err(self.stop(Error::Interrupted, "interrupted")));
                    }
                    if let Some((e, outcome)) = self.bounds.check() {
                        return Some(Err(self.stop(e, outcome)));
                    }
                    std::thread::park_timeout(TICK);
                }
            }
        };
        self.on_item(item)
    }

    /// End the query early: the completion record names why, and the plan is dropped (which
    /// cancels its tasks).
    fn stop(&mut self, e: Error, outcome: &str) -> Error {
        self.ended = true;
        let finished = self.finish(outcome);
        self.stream = Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::empty(),
            ),
        );
        match finished {
            Ok(()) => e,
            Err(f) => f,
        }
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
                let e = super::translate::runtime(e);
                let outcome = if matches!(e, Error::LimitExceeded(_)) {
                    "limit_exceeded"
                } else {
                    "failed"
                };
                self.ended = true;
                let _ = self.finish(outcome);
                Some(Err(e))
            }
            // End of results: the completion record must be written, or the caller hears why.
            None => {
                self.ended = true;
                self.finish("completed").err().map(Err)
            }
        }
    }
}

/// The async face of a query's results, for [`Session::sql_async`](super::Session::sql_async):
/// the same batches, counts, digest, bounds and completion record as the iterator.
impl futures::Stream for QueryStream {
    type Item = Result<RecordBatch>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use futures::{FutureExt, StreamExt};
        use std::task::Poll;
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some((e, outcome)) = this.bounds.check() {
            return Poll::Ready(Some(Err(this.stop(e, outcome))));
        }
        // The plan's own tasks run on the engine's runtime, whichever runtime polls this.
        let _runtime = this.engine.inner.runtime.enter();
        if let Poll::Ready(item) = this.stream.poll_next_unpin(cx) {
            this.bounds.tick = None;
            return Poll::Ready(this.on_item(item));
        }
        // Nothing ready: look again at the bounds after a tick (the timer is the engine
        // runtime's, so it fires whatever drives this task).
        loop {
            let tick = this
                .bounds
                .tick
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(TICK)));
            if tick.poll_unpin(cx).is_pending() {
                return Poll::Pending;
            }
            this.bounds.tick = None;
            if let Some((e, outcome)) = this.bounds.check() {
                return Poll::Ready(Some(Err(this.stop(e, outcome))));
            }
        }
    }
}

impl Iterator for QueryStream {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_interruptible(|| false)
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
