//! The secured table and its scan: what a session's SQL reads instead of Parquet.
//!
//! A [`SecuredTable`] exposes **only the granted fields**, masked ones with their masked type,
//! so a denied field cannot be named anywhere in a query. Its [`SecuredScanExec`] is a *leaf*
//! of the physical plan: the Parquet reading, the row-scope barrier and the masks all happen
//! inside it, out of reach of DataFusion's optimizer. So:
//! - out-of-scope rows are never decoded — the roaring scope becomes a Parquet row selection
//!   (no user expression can ever see them: no error, cast or timing oracle);
//! - masks are applied before any batch leaves the node, so predicates, joins, grouping and
//!   functions above see masked values only;
//! - no filter is pushed into it (`Unsupported` for every filter, and, as a leaf without
//!   children, no physical filter or dynamic-filter pushdown can reach the Parquet reader), so
//!   no predicate touches raw statistics, page indexes or bloom filters;
//! - its statistics are unknown, so no COUNT/MIN/MAX/LIMIT is answered from file metadata;
//! - its EXPLAIN line names dataset, version and fields, never scope contents or row counts.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Statistics, project_schema};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use roaring::RoaringBitmap;

use crate::access::masks;
use crate::access::policy::{DatasetAccess, RowScope, Treatment};
use crate::catalog::{IndexKind, MaskKind};
use crate::error::{Error, Result};
use crate::store::Snapshot;

/// The rows of `snap` a scope covers: live rows ∩ regions ∩ subjects.
pub fn scope_rows(snap: &Snapshot, scope: &RowScope) -> Result<RoaringBitmap> {
    let mut rows = snap.live_rows()?;
    if let Some(regions) = &scope.regions {
        let def = snap.dataset();
        let field = def
            .cluster_field
            .as_deref()
            .filter(|f| def.field(f).is_some_and(|d| d.index == IndexKind::Region))
            .ok_or_else(|| {
                Error::AccessDenied(format!("dataset '{}' cannot be scoped by region", def.name))
            })?;
        let mut in_regions = RoaringBitmap::new();
        for code in regions {
            in_regions |= snap.scope(field, code)?;
        }
        rows &= in_regions;
    }
    if let Some(subjects) = &scope.subjects {
        let keys = snap.key_index()?;
        let listed: RoaringBitmap = subjects.iter().filter_map(|k| keys.get(k)).collect();
        rows &= listed;
    }
    Ok(rows)
}

/// The rows of one data file a scan selects, in row-id order. `inner.rows` is already the
/// scope ∩ live rows (see [`scope_rows`]), so deletions need no second pass here.
fn file_selection(inner: &Inner, file: usize) -> Result<RoaringBitmap> {
    let meta = inner
        .snapshot
        .manifest()
        .files
        .get(file)
        .ok_or_else(|| Error::Corrupt(format!("no data file {file}")))?;
    let end = (meta.row_base as u64 + meta.rows).min(u32::MAX as u64) as u32;
    let mut sel = RoaringBitmap::new();
    sel.insert_range(meta.row_base..end);
    sel &= &inner.rows;
    Ok(sel)
}

/// A dataset as one decision may see it.
#[derive(Debug)]
pub struct SecuredTable {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    snapshot: Arc<Snapshot>,
    /// Granted fields in schema order: (column name in the data files, mask).
    columns: Vec<(String, MaskKind)>,
    schema: SchemaRef,
    rows: RoaringBitmap,
    pseudonym_key: [u8; 32],
    /// Rows emitted so far per data file: the subjects "read" (see `engine`). Counts, not
    /// ids: a file's rows leave in row-id order, so the first k of its selection are exactly
    /// the rows emitted, and the bitmap is derived once, when the query ends.
    emitted: std::sync::Mutex<std::collections::BTreeMap<usize, u64>>,
}

impl SecuredTable {
    /// Build the table for `access` over `snapshot`; the scope bitmap is computed here, for
    /// this decision only, and dropped with it.
    pub fn new(
        snapshot: Arc<Snapshot>,
        access: &DatasetAccess,
        pseudonym_key: [u8; 32],
    ) -> Result<SecuredTable> {
        let def = snapshot.dataset();
        let mut columns = Vec::new();
        let mut fields = Vec::new();
        for (name, treatment) in access.fields() {
            // A field granted but absent from this data version is simply not there.
            let Some(f) = def.field(name) else { continue };
            let raw = f.data_type.arrow();
            let mask = match treatment {
                Treatment::Clear => MaskKind::Clear,
                Treatment::Masked(m) => *m,
            };
            if !masks::applicable(mask, &raw) {
                return Err(Error::AccessDenied(format!(
                    "mask {mask:?} cannot apply to {}.{name}",
                    def.name
                )));
            }
            let nullable = f.nullable || mask != MaskKind::Clear;
            fields.push(Field::new(name, masks::output_type(mask, &raw), nullable));
            columns.push((name.clone(), mask));
        }
        let rows = scope_rows(&snapshot, access.scope())?;
        Ok(SecuredTable {
            inner: Arc::new(Inner {
                snapshot,
                columns,
                schema: Arc::new(Schema::new(fields)),
                rows,
                pseudonym_key,
                emitted: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            }),
        })
    }

    /// Rows in scope (for tests and reports).
    pub fn scope_len(&self) -> u64 {
        self.inner.rows.len()
    }

    /// The row ids the scans of this table emitted so far.
    pub fn emitted(&self) -> Result<RoaringBitmap> {
        let counts = self
            .inner
            .emitted
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default();
        let mut out = RoaringBitmap::new();
        for (file, count) in counts {
            let mut sel = file_selection(&self.inner, file)?;
            if count < sel.len() {
                // Keep the first `count` ids: everything below the count-th one.
                if let Some(cut) = sel.select(count as u32) {
                    sel.remove_range(cut..);
                }
            }
            out |= sel;
        }
        Ok(out)
    }

    /// The data version read.
    pub fn snapshot(&self) -> &Snapshot {
        &self.inner.snapshot
    }
}

#[async_trait]
impl TableProvider for SecuredTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Every predicate runs above the barrier, on masked values, after the scope.
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    fn statistics(&self) -> Option<Statistics> {
        None
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projection: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..self.inner.columns.len()).collect());
        let schema = project_schema(&self.inner.schema, Some(&projection))?;
        // One partition per data file that holds in-scope rows.
        let files: Vec<usize> = self
            .inner
            .snapshot
            .manifest()
            .files
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                let end = (f.row_base as u64 + f.rows).min(u32::MAX as u64) as u32;
                self.inner.rows.range(f.row_base..end).next().is_some()
            })
            .map(|(i, _)| i)
            .collect();
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            // A fixed count: the number of files in scope is not the principal's to learn
            // (EXPLAIN prints partition counts).
            Partitioning::UnknownPartitioning(SCAN_PARTITIONS),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(SecuredScanExec {
            inner: self.inner.clone(),
            projection,
            schema,
            files,
            limit,
            props: Arc::new(props),
        }))
    }
}

/// The batches of one file with the file's index, in a partition's chain of files.
type FileBatches = Box<dyn Iterator<Item = DfResult<(usize, RecordBatch, Arc<Inner>)>> + Send>;

/// Output partitions of every secured scan, whatever its scope.
const SCAN_PARTITIONS: usize = 2;

/// The scan leaf: Parquet read with the scope as row selection, then masks.
#[derive(Debug)]
pub struct SecuredScanExec {
    inner: Arc<Inner>,
    projection: Vec<usize>,
    schema: SchemaRef,
    files: Vec<usize>,
    limit: Option<usize>,
    props: Arc<PlanProperties>,
}

impl DisplayAs for SecuredScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let snap = &self.inner.snapshot;
        let cols: Vec<String> = self
            .projection
            .iter()
            .map(|&i| {
                let (name, mask) = &self.inner.columns[i];
                if *mask == MaskKind::Clear {
                    name.clone()
                } else {
                    format!("{name}:{mask:?}")
                }
            })
            .collect();
        // Deliberately no scope contents, row or file counts, file names, or data version
        // (versions also count loads of rows outside the scope).
        write!(
            f,
            "SecuredScan: dataset={} fields=[{}]",
            snap.dataset().name,
            cols.join(", ")
        )
    }
}

impl ExecutionPlan for SecuredScanExec {
    fn name(&self) -> &str {
        "SecuredScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "SecuredScanExec has no children".into(),
            ))
        }
    }

    fn partition_statistics(&self, _partition: Option<usize>) -> DfResult<Arc<Statistics>> {
        // Unknown on purpose: file statistics include out-of-scope rows and raw values.
        Ok(Arc::new(Statistics::new_unknown(&self.schema)))
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let schema = self.schema.clone();
        // Partition p reads every SCAN_PARTITIONS-th file in scope, in order.
        let files: Vec<usize> = self
            .files
            .iter()
            .copied()
            .skip(partition)
            .step_by(SCAN_PARTITIONS)
            .collect();
        let inner = self.inner.clone();
        let names: Vec<String> = self
            .projection
            .iter()
            .map(|&i| inner.columns[i].0.clone())
            .collect();
        // With no column wanted (COUNT(*)), read the narrowest one for row counts only.
        let no_cols = names.is_empty();
        let read_cols: Vec<String> = if no_cols {
            vec![inner.snapshot.dataset().key.clone()]
        } else {
            names
        };
        let masks_: Vec<MaskKind> = self
            .projection
            .iter()
            .map(|&i| inner.columns[i].1)
            .collect();
        let key = inner.pseudonym_key;
        let out_schema = schema.clone();
        let mut remaining = self.limit.unwrap_or(usize::MAX);
        let iter = files
            .into_iter()
            .flat_map(move |file| {
                let cols: Vec<&str> = read_cols.iter().map(String::as_str).collect();
                let reader = inner
                    .snapshot
                    .file_reader(file, Some(&inner.rows), Some(&cols))
                    .map_err(|e| DataFusionError::External(Box::new(e)));
                let collector = inner.clone();
                let batches: FileBatches = match reader {
                    Ok(r) => Box::new(r.into_iter().flatten().map(move |b| {
                        b.map(|b| (file, b, collector.clone()))
                            .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
                    })),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                };
                batches
            })
            .map_while(move |item| {
                if remaining == 0 {
                    return None;
                }
                let r = (|| -> DfResult<RecordBatch> {
                    let (file, b, collector) = item?;
                    let n = b.num_rows().min(remaining);
                    let b = b.slice(0, n);
                    remaining -= n;
                    if let Ok(mut e) = collector.emitted.lock() {
                        *e.entry(file).or_default() += n as u64;
                    }
                    let cols: Vec<ArrayRef> = if no_cols {
                        Vec::new()
                    } else {
                        b.columns()
                            .iter()
                            .zip(&masks_)
                            .map(|(c, m)| {
                                masks::apply(*m, c, &key)
                                    .map_err(|e| DataFusionError::External(Box::new(e)))
                            })
                            .collect::<DfResult<_>>()?
                    };
                    Ok(RecordBatch::try_new_with_options(
                        out_schema.clone(),
                        cols,
                        &RecordBatchOptions::new().with_row_count(Some(n)),
                    )?)
                })();
                Some(r)
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(iter),
        )))
    }
}
