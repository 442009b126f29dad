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
//! - a query's predicates are evaluated *inside* it, after the barrier (late
//!   materialisation): on the in-scope live rows only, on the values the session sees (a
//!   predicate on a masked column runs on the masked value), and only the rows that pass have
//!   their other columns decoded and masked. They are accepted as `Inexact`, so the same
//!   predicate runs again above the scan on what it emits. Row-group statistics prune only
//!   row groups every row of which is live and in scope, and only on columns the session sees
//!   in clear (see `prunable`), so a statistic never speaks for a row the session may not see;
//!   as a leaf without children, no physical or dynamic filter reaches the Parquet reader;
//! - a key the session sees in clear, compared with `=` or `IN` to literals, is looked up in
//!   the key index and intersected with the scope: a point query reads one row, not the table;
//! - its statistics are unknown, so no COUNT/MIN/MAX/LIMIT is answered from file metadata;
//! - its EXPLAIN line names dataset, version and fields, never scope contents or row counts.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue, Statistics, ToDFSchema, project_schema};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::{
    RecordBatchReceiverStreamBuilder, RecordBatchStreamAdapter,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::file::metadata::RowGroupMetaData;
use roaring::RoaringBitmap;

use crate::access::masks;
use crate::access::policy::{DatasetAccess, RowScope, Treatment};
use crate::catalog::{IndexKind, MaskKind};
use crate::error::{Error, Result};
use crate::store::Snapshot;

/// The rows of `snap` a scope covers: live rows ∩ regions ∩ subjects. The whole dataset's
/// scope is the snapshot's own live rows, shared (no copy of a 10M-row bitmap per query).
pub fn scope_rows(snap: &Snapshot, scope: &RowScope) -> Result<Arc<RoaringBitmap>> {
    let live = snap.live()?;
    if scope.regions.is_none() && scope.subjects.is_none() {
        return Ok(live);
    }
    let mut rows = RoaringBitmap::new();
    if let Some(regions) = &scope.regions {
        let def = snap.dataset();
        let field = def
            .cluster_field
            .as_deref()
            .filter(|f| def.field(f).is_some_and(|d| d.index == IndexKind::Region))
            .ok_or_else(|| {
                Error::AccessDenied(format!("dataset '{}' cannot be scoped by region", def.name))
            })?;
        for code in regions {
            rows |= snap.scope(field, code)?;
        }
        rows &= live.as_ref();
    }
    if let Some(subjects) = &scope.subjects {
        let keys = snap.key_index()?;
        let listed: RoaringBitmap = subjects.iter().filter_map(|k| keys.get(k)).collect();
        if scope.regions.is_some() {
            rows &= listed;
        } else {
            rows = listed & live.as_ref();
        }
    }
    Ok(Arc::new(rows))
}

/// The row ids among `rows` in a range, in row-id order.
fn range_selection(rows: &RoaringBitmap, range: std::ops::Range<u32>) -> RoaringBitmap {
    let mut sel = RoaringBitmap::new();
    sel.insert_range(range);
    sel &= rows;
    sel
}

/// What one scan emitted of one run of row groups: the first `count` of the rows it read
/// there.
#[derive(Debug)]
struct Emitted {
    /// Global row ids of the run.
    range: std::ops::Range<u32>,
    /// The global row ids the scan read in the run, when a predicate or a key lookup
    /// narrowed them; `None` for the whole of the scope in the run.
    read: Option<RoaringBitmap>,
    count: u64,
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
    rows: Arc<RoaringBitmap>,
    pseudonym_key: [u8; 32],
    /// What the scans emitted, per scan and data file: the subjects "read" (see `engine`).
    /// Counts, not ids: a file's rows leave in row-id order, so the first k of the rows read
    /// there are exactly the rows emitted, and the bitmap is derived once, when the query ends.
    emitted: std::sync::Mutex<Vec<Emitted>>,
}

impl Inner {
    /// Add one scan's entry to the record of rows read; its index, for counts added later.
    fn record(&self, part: Emitted) -> Result<usize> {
        let mut emitted = self
            .emitted
            .lock()
            .map_err(|_| Error::internal("emitted rows lock poisoned"))?;
        emitted.push(part);
        Ok(emitted.len() - 1)
    }
}

impl SecuredTable {
    /// Build the table for `access` over `snapshot`; the scope bitmap is computed here, for
    /// this decision only, and dropped with it.
    pub fn new(
        snapshot: Arc<Snapshot>,
        access: &DatasetAccess,
        pseudonym_key: [u8; 32],
    ) -> Result<SecuredTable> {
        Self::new_within(snapshot, access, pseudonym_key, None)
    }

    /// [`SecuredTable::new`] narrowed further to the row ids `within` (the rows a change feed
    /// compares): the scope is the grant's, intersected — never widened.
    pub fn new_within(
        snapshot: Arc<Snapshot>,
        access: &DatasetAccess,
        pseudonym_key: [u8; 32],
        within: Option<&RoaringBitmap>,
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
        let mut rows = scope_rows(&snapshot, access.scope())?;
        if let Some(within) = within {
            rows = Arc::new(rows.as_ref() & within);
        }
        Ok(SecuredTable {
            inner: Arc::new(Inner {
                snapshot,
                columns,
                schema: Arc::new(Schema::new(fields)),
                rows,
                pseudonym_key,
                emitted: std::sync::Mutex::new(Vec::new()),
            }),
        })
    }

    /// Rows in scope (for tests and reports).
    pub fn scope_len(&self) -> u64 {
        self.inner.rows.len()
    }

    /// The rows in scope: live rows of the version within the grant's scope.
    pub(crate) fn scope(&self) -> &RoaringBitmap {
        &self.inner.rows
    }

    /// The row ids the scans of this table emitted so far.
    pub fn emitted(&self) -> Result<RoaringBitmap> {
        let parts = self
            .inner
            .emitted
            .lock()
            .map_err(|_| Error::internal("emitted rows lock poisoned"))?;
        let mut out = RoaringBitmap::new();
        for part in parts.iter() {
            let count = part.count;
            if count == 0 {
                continue;
            }
            let mut sel = match &part.read {
                Some(read) => read.clone(),
                None => range_selection(&self.inner.rows, part.range.clone()),
            };
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

    /// Another handle on the same table (same scope, same emitted-rows record).
    pub(crate) fn clone_handle(&self) -> SecuredTable {
        SecuredTable {
            inner: self.inner.clone(),
        }
    }

    /// Whether `count(*)` grouped by `field` (`prefix`: by its first `prefix` characters) can
    /// be answered from bitmaps exactly: the session sees the field in clear, as text, the
    /// version holds its index, and the index has a bitmap per group — a value index for the
    /// whole value; a region index (GB/T 2260 codes, six digits by validation, indexed by
    /// province, city and county) for the first 2, 4 or 6 characters.
    pub(crate) fn counts_by_bitmap(&self, field: &str, prefix: Option<usize>) -> bool {
        let def = self.inner.snapshot.dataset();
        let indexed = def.field(field).is_some_and(|f| {
            f.data_type.arrow() == arrow::datatypes::DataType::Utf8
                && match (f.index, prefix) {
                    (IndexKind::Values, None) => true,
                    (IndexKind::Region, None | Some(2 | 4 | 6)) => {
                        f.standard == crate::catalog::Standard::RegionCode
                    }
                    _ => false,
                }
        });
        indexed
            && self.sees_in_clear(field)
            && self
                .inner
                .snapshot
                .manifest()
                .bitmap_indexes
                .contains_key(field)
    }

    /// Whether the session sees `field` in clear (so an aggregate over its raw values is an
    /// aggregate over what the session sees).
    pub(crate) fn sees_in_clear(&self, field: &str) -> bool {
        self.inner
            .columns
            .iter()
            .any(|(n, m)| n == field && *m == MaskKind::Clear)
    }

    /// The groups of `groupings` — each a field, or a region field's first 2, 4 or 6
    /// characters — among the rows in scope with their rows (NULL where a row has no value),
    /// from the indexes; every row in scope is recorded as read. Only for groupings
    /// [`SecuredTable::counts_by_bitmap`] accepts. The groups partition the scope.
    pub(crate) fn group_rows(
        &self,
        groupings: &[(String, Option<usize>)],
    ) -> Result<Vec<(Vec<Option<String>>, RoaringBitmap)>> {
        let rows = self.inner.rows.as_ref();
        let mut groups: Vec<(Vec<Option<String>>, RoaringBitmap)> =
            vec![(Vec::new(), rows.clone())];
        for (field, prefix) in groupings {
            let index = self.inner.snapshot.bitmap_index(field)?;
            // A region index holds every code's province (2), city (4) and county (6) key;
            // one level partitions the rows as the prefix does. A value index: every key.
            let level = match self.inner.snapshot.dataset().require_field(field)?.index {
                IndexKind::Region => Some(prefix.unwrap_or(6)),
                _ => None,
            };
            let mut next = Vec::new();
            for (values, within) in groups {
                let mut valued = RoaringBitmap::new();
                for (v, bm) in &index.bitmaps {
                    if level.is_some_and(|l| v.len() != l) {
                        continue;
                    }
                    let both = &within & bm;
                    if !both.is_empty() {
                        valued |= &both;
                        let mut key = values.clone();
                        key.push(Some(v.clone()));
                        next.push((key, both));
                    }
                }
                let nulls = within - valued;
                if !nulls.is_empty() {
                    let mut key = values;
                    key.push(None);
                    next.push((key, nulls));
                }
            }
            groups = next;
        }
        let total = self
            .inner
            .snapshot
            .manifest()
            .total_rows()
            .min(u32::MAX as u64) as u32;
        self.inner.record(Emitted {
            range: 0..total,
            read: None,
            count: rows.len(),
        })?;
        Ok(groups)
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
        // `Inexact`: evaluated inside the scan (after the scope, on masked values) to decode
        // less, and again above it, so what the query means never depends on this node.
        Ok(filters
            .iter()
            .map(|f| {
                if pushable(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    fn statistics(&self) -> Option<Statistics> {
        None
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projection: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..self.inner.columns.len()).collect());
        let schema = project_schema(&self.inner.schema, Some(&projection))?;
        let filters: Vec<Expr> = filters.iter().filter(|f| pushable(f)).cloned().collect();
        let predicate = self.predicate(state, &filters)?.map(Arc::new);
        // A key in clear compared with literals: the key index, within the scope.
        let rows = match self.key_rows(&filters).map_err(ext)? {
            Some(keys) => Arc::new(keys & self.inner.rows.as_ref()),
            None => self.inner.rows.clone(),
        };
        Ok(Arc::new(self.exec(
            projection,
            schema,
            rows,
            predicate,
            limit,
            SCAN_PARTITIONS,
        )))
    }
}

impl SecuredTable {
    /// The scan of `rows` (the scope, or part of it) with the columns of `projection`.
    fn exec(
        &self,
        projection: Vec<usize>,
        schema: SchemaRef,
        rows: Arc<RoaringBitmap>,
        predicate: Option<Arc<Predicate>>,
        limit: Option<usize>,
        partitions: usize,
    ) -> SecuredScanExec {
        let units = split_units(&self.inner.snapshot, &rows, partitions);
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            // A fixed count: the number of files in scope is not the principal's to learn
            // (EXPLAIN prints partition counts).
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        SecuredScanExec {
            inner: self.inner.clone(),
            projection,
            schema,
            rows,
            units,
            predicate,
            limit,
            props: Arc::new(props),
        }
    }

    /// The plan that reads the subjects with `keys` among the rows in scope — every granted
    /// field, masked as granted, in row-id order; keys not found, deleted or out of scope are
    /// simply absent (the three are indistinguishable). Only for a key the session sees in
    /// clear: on a masked key, a lookup would answer a question about raw keys that the
    /// session's SQL cannot ask (its `=` compares the masked value).
    pub fn lookup(&self, keys: &[&str]) -> Result<Arc<dyn ExecutionPlan>> {
        let def = self.inner.snapshot.dataset();
        let clear = self
            .inner
            .columns
            .iter()
            .any(|(n, m)| n == &def.key && *m == MaskKind::Clear);
        if !clear {
            return Err(Error::AccessDenied(format!(
                "looking up {} by key needs its key field '{}' granted in clear",
                def.name, def.key
            )));
        }
        let index = self.inner.snapshot.key_index()?;
        let mut rows: RoaringBitmap = keys.iter().filter_map(|k| index.get(k)).collect();
        rows &= self.inner.rows.as_ref();
        let projection: Vec<usize> = (0..self.inner.columns.len()).collect();
        Ok(Arc::new(self.exec(
            projection,
            self.inner.schema.clone(),
            Arc::new(rows),
            None,
            None,
            // A few rows: one partition, read where the stream is polled (no tasks to spawn).
            1,
        )))
    }
}

impl SecuredTable {
    /// The pushed-down predicates as one conjunction over the columns they read, planned
    /// against those columns' *masked* types.
    fn predicate(&self, state: &dyn DfSession, filters: &[Expr]) -> DfResult<Option<Predicate>> {
        let Some(expr) = conjunction(filters.to_vec()) else {
            return Ok(None);
        };
        let mut columns: Vec<usize> = Vec::new();
        for c in expr.column_refs() {
            let i = self.inner.schema.index_of(&c.name)?;
            if !columns.contains(&i) {
                columns.push(i);
            }
        }
        columns.sort_unstable();
        let sub = Arc::new(self.inner.schema.project(&columns)?);
        let physical = state.create_physical_expr(expr.clone(), &sub.clone().to_dfschema()?)?;
        // Statistics describe raw values: only conjuncts on clear columns may consult them.
        let clear = |f: &Expr| {
            f.column_refs().iter().all(|c| {
                self.inner
                    .columns
                    .iter()
                    .any(|(n, m)| n == &c.name && *m == MaskKind::Clear)
            })
        };
        let pruning = match conjunction(filters.iter().filter(|f| clear(f)).cloned()) {
            Some(e) => {
                let physical = state.create_physical_expr(e, &sub.clone().to_dfschema()?)?;
                PruningPredicateBuilder::new()
                    .with_file_schema(sub.clone())
                    .build(physical)
            }
            None => None,
        };
        Ok(Some(Predicate {
            columns,
            schema: sub,
            expr: physical,
            pruning,
            text: expr.to_string(),
        }))
    }

    /// Rows with the keys a filter names (`key = 'v'`, `'v' = key`, `key IN ('v', ...)`), when
    /// the session sees the key in clear; `None` when no filter is such a lookup. Several
    /// lookups intersect (they are conjuncts). Exact: the index holds every live key once.
    fn key_rows(&self, filters: &[Expr]) -> Result<Option<RoaringBitmap>> {
        let key = &self.inner.snapshot.dataset().key;
        let clear = self
            .inner
            .columns
            .iter()
            .any(|(n, m)| n == key && *m == MaskKind::Clear);
        if !clear {
            // On a masked key, `=` compares the masked value: the index of raw keys would
            // answer a different question.
            return Ok(None);
        }
        let mut found: Option<RoaringBitmap> = None;
        for f in filters {
            let values = lookup_values(f, key);
            if let Some(values) = values {
                let index = self.inner.snapshot.key_index()?;
                let rows: RoaringBitmap = values.iter().filter_map(|v| index.get(v)).collect();
                found = Some(match found {
                    Some(f) => f & rows,
                    None => rows,
                });
            }
        }
        Ok(found)
    }
}

/// The keys a filter looks up, when it is one: `key = 'v'`, `'v' = key`, `key IN ('v', ...)`,
/// or an `OR` of such (DataFusion rewrites a short `IN` list into one).
fn lookup_values<'e>(e: &'e Expr, key: &str) -> Option<Vec<&'e str>> {
    let is_key = |e: &Expr| matches!(e, Expr::Column(c) if c.name == key);
    match e {
        Expr::BinaryExpr(b) if b.op == Operator::Eq => match (b.left.as_ref(), b.right.as_ref()) {
            (c, Expr::Literal(v, _)) | (Expr::Literal(v, _), c) if is_key(c) => {
                text_literal(v).map(|s| vec![s])
            }
            _ => None,
        },
        Expr::BinaryExpr(b) if b.op == Operator::Or => {
            let mut left = lookup_values(&b.left, key)?;
            left.extend(lookup_values(&b.right, key)?);
            Some(left)
        }
        Expr::InList(l) if !l.negated && is_key(&l.expr) => l
            .list
            .iter()
            .map(|e| match e {
                Expr::Literal(v, _) => text_literal(v),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// A string literal's text (a NULL literal matches nothing, like `= NULL`).
fn text_literal(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// Whether a filter may run inside the scan: deterministic (it runs twice, inside and above)
/// and self-contained (no subquery, which would read other tables from inside this one).
fn pushable(e: &Expr) -> bool {
    !e.is_volatile()
        && !e
            .exists(|x| {
                Ok(matches!(
                    x,
                    Expr::ScalarSubquery(_)
                        | Expr::InSubquery(_)
                        | Expr::Exists(_)
                        | Expr::OuterReferenceColumn(..)
                        | Expr::Placeholder(_)
                ))
            })
            .unwrap_or(true)
}

/// `with_new_children` of a leaf plan node: itself, or an error if given children.
pub(crate) fn leaf(
    node: Arc<dyn ExecutionPlan>,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    if children.is_empty() {
        Ok(node)
    } else {
        Err(DataFusionError::Internal(format!(
            "{} has no children",
            node.name()
        )))
    }
}

fn ext(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The query's predicates as the scan evaluates them.
#[derive(Debug)]
struct Predicate {
    /// Table columns it reads (indexes into the table schema), ascending.
    columns: Vec<usize>,
    /// Those columns with their masked types: what the expression is planned against.
    schema: SchemaRef,
    expr: Arc<dyn PhysicalExpr>,
    /// The conjuncts over columns the session sees in clear, as a pruning predicate over
    /// row-group statistics (see [`prune_groups`]).
    pruning: Option<Arc<PruningPredicate>>,
    /// For EXPLAIN: the user's own predicate, nothing about the scope.
    text: String,
}

/// A run of row groups of one file that one partition reads: global row ids `range`.
#[derive(Debug, Clone)]
struct Unit {
    file: usize,
    range: std::ops::Range<u32>,
}

/// Split the row groups holding selected rows into `parts` runs of about equal selected
/// rows, in row-id order: the partitions share the work whatever the files' sizes, and a
/// partition opens each file once per run, not once per row group.
fn split_units(snap: &Snapshot, rows: &RoaringBitmap, parts: usize) -> Vec<Vec<Unit>> {
    let mut groups: Vec<(usize, std::ops::Range<u32>, u64)> = Vec::new();
    for (i, f) in snap.manifest().files.iter().enumerate() {
        let mut start = f.row_base as u64;
        for &len in &f.row_groups {
            let end = (start + len).min(u32::MAX as u64 + 1);
            let r = start as u32..end as u32;
            let n = rows.range_cardinality(r.clone());
            if n > 0 {
                groups.push((i, r, n));
            }
            start = end;
        }
    }
    let total: u64 = groups.iter().map(|g| g.2).sum();
    let mut out: Vec<Vec<Unit>> = vec![Vec::new(); parts];
    let mut seen = 0u64;
    for (file, r, n) in groups {
        let p = ((seen * parts as u64) / total.max(1)).min(parts as u64 - 1) as usize;
        seen += n;
        match out[p].last_mut() {
            Some(u) if u.file == file && u.range.end == r.start => u.range.end = r.end,
            _ => out[p].push(Unit { file, range: r }),
        }
    }
    out
}

/// The batches of one unit with its entry in the emitted list.
type UnitBatches = Box<dyn Iterator<Item = DfResult<(usize, RecordBatch)>> + Send>;

/// Output partitions of every secured scan, whatever its scope.
const SCAN_PARTITIONS: usize = 2;

/// The scan leaf: Parquet read with the scope as row selection, predicates, then masks.
#[derive(Debug)]
pub struct SecuredScanExec {
    inner: Arc<Inner>,
    projection: Vec<usize>,
    schema: SchemaRef,
    /// The rows this scan may read: the table's scope, narrowed by a key lookup.
    rows: Arc<RoaringBitmap>,
    units: Vec<Vec<Unit>>,
    predicate: Option<Arc<Predicate>>,
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
        )?;
        if let Some(p) = &self.predicate {
            write!(f, " predicate=[{}]", p.text)?;
        }
        Ok(())
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
        leaf(self, children)
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
        let units = self.units.get(partition).cloned().unwrap_or_default();
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
        let rows = self.rows.clone();
        let predicate = self.predicate.clone();
        let narrowed = !Arc::ptr_eq(&self.rows, &self.inner.rows);
        let collector = inner.clone();
        let has_predicate = predicate.is_some();
        // A few rows (a key lookup) decode faster than a hand-over to another thread.
        let few = self.rows.len() <= INLINE_ROWS;
        let iter = units
            .into_iter()
            .flat_map({
                let inner = inner.clone();
                move |u| {
                    if has_predicate {
                        pieces(&inner.snapshot, u, PIECE_ROWS)
                    } else {
                        vec![u]
                    }
                }
            })
            .flat_map(move |unit| {
                let batches: UnitBatches = match open_unit(
                    &inner,
                    &rows,
                    &unit,
                    predicate.as_deref(),
                    narrowed,
                    &read_cols,
                ) {
                    Ok(Some((slot, r))) => Box::new(r.map(move |b| {
                        b.map(|b| (slot, b))
                            .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
                    })),
                    Ok(None) => Box::new(std::iter::empty()),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                };
                batches
            })
            .map_while(move |item| {
                if remaining == 0 {
                    return None;
                }
                let r = (|| -> DfResult<(usize, RecordBatch)> {
                    let (slot, b) = item?;
                    let n = b.num_rows().min(remaining);
                    let b = b.slice(0, n);
                    remaining -= n;
                    let cols: Vec<ArrayRef> = if no_cols {
                        Vec::new()
                    } else {
                        b.columns()
                            .iter()
                            .zip(&masks_)
                            .map(|(c, m)| masks::apply(*m, c, &key).map_err(ext))
                            .collect::<DfResult<_>>()?
                    };
                    let b = RecordBatch::try_new_with_options(
                        out_schema.clone(),
                        cols,
                        &RecordBatchOptions::new().with_row_count(Some(n)),
                    )?;
                    Ok((slot, b))
                })();
                Some(r)
            });
        // A batch counts as emitted when the scan's consumer takes it, not when it is
        // decoded: a consumer that stops early (a LIMIT above) leaves nothing counted that it
        // never saw.
        let emit = move |(slot, b): (usize, RecordBatch)| {
            if let Ok(mut e) = collector.emitted.lock()
                && let Some(part) = e.get_mut(slot)
            {
                part.count += b.num_rows() as u64;
            }
            b
        };
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(r) if !few => r,
            _ => {
                let batches = iter.map(move |r| r.map(&emit));
                return Ok(Box::pin(RecordBatchStreamAdapter::new(
                    schema,
                    futures::stream::iter(batches),
                )));
            }
        };
        // Decoding and masking run on a blocking thread, never on an async worker; a batch or
        // two ahead of the consumer, and no further. Each batch's slot goes ahead of it on a
        // side channel, in the same order, for `emit` on the consumer's side.
        let mut builder = RecordBatchReceiverStreamBuilder::new(schema.clone(), 2);
        let tx = builder.tx();
        let (side_tx, side_rx) = std::sync::mpsc::channel::<usize>();
        builder.spawn_blocking_on(
            move || {
                for item in iter {
                    let item = item.map(|(slot, b)| {
                        let _ = side_tx.send(slot);
                        b
                    });
                    if tx.blocking_send(item).is_err() {
                        break; // the consumer is gone: stop decoding
                    }
                }
                Ok(())
            },
            &runtime,
        );
        let batches = builder.build().map(move |r| {
            r.and_then(|b| match side_rx.try_recv() {
                Ok(slot) => Ok(emit((slot, b))),
                Err(_) => Err(DataFusionError::Internal(
                    "a scanned batch arrived without its row record".into(),
                )),
            })
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

/// Scans of at most this many rows (a key lookup's, read from row blocks) decode on the
/// thread that polls them: cheaper than a hand-over. Anything larger runs on a blocking
/// thread — the access-control suite's scans included, so the barrier is tested there.
const INLINE_ROWS: u64 = 64;

/// Open one unit: its selected live rows, narrowed by the predicate (evaluated on those rows
/// only, on masked values), registered in the emitted list; `None` when nothing is left.
///
/// What counts as *read* (the subjects on the trail): every row a predicate was evaluated on
/// — its values decided the answer, whether or not it passed — and, without a predicate, the
/// rows emitted.
fn open_unit(
    inner: &Arc<Inner>,
    rows: &RoaringBitmap,
    unit: &Unit,
    predicate: Option<&Predicate>,
    narrowed: bool,
    read_cols: &[String],
) -> DfResult<Option<(usize, crate::store::FileRows)>> {
    let snap = &inner.snapshot;
    let base = snap
        .manifest()
        .files
        .get(unit.file)
        .map(|f| f.row_base)
        .ok_or_else(|| ext(Error::Corrupt(format!("no data file {}", unit.file))))?;
    let mut local = snap.file_rows(unit.file, Some(rows)).map_err(ext)?;
    local.remove_range(..unit.range.start - base);
    local.remove_range(unit.range.end - base..);
    let global = |local: &RoaringBitmap| {
        let mut g = RoaringBitmap::new();
        // Back to global ids: each run of offsets shifted by the file's base.
        for (lo, hi) in runs(local) {
            g.insert_range(lo + base..hi + base);
        }
        g
    };
    // Row groups the statistics rule out are not read at all (so not "read" either).
    if let Some(pruning) = predicate.and_then(|p| p.pruning.as_ref()) {
        local = prune_groups(snap, unit.file, local, pruning)?;
    }
    let (read, count) = match predicate {
        Some(_) => (Some(global(&local)), local.len()),
        None if narrowed => (Some(global(&local)), 0),
        None => (None, 0),
    };
    let slot = inner
        .record(Emitted {
            range: unit.range.clone(),
            read,
            count,
        })
        .map_err(ext)?;
    if let Some(p) = predicate {
        local = filter_rows(inner, unit.file, local, p)?;
    }
    let cols: Vec<&str> = read_cols.iter().map(String::as_str).collect();
    let reader = snap
        .read_local(unit.file, &local, Some(&cols))
        .map_err(ext)?;
    Ok(reader.map(|r| (slot, r)))
}

/// A unit cut at row-group boundaries into pieces of at least `rows` rows, so a predicate is
/// evaluated piece by piece and the first rows can leave before the whole run is filtered.
fn pieces(snap: &Snapshot, unit: Unit, rows: u64) -> Vec<Unit> {
    let Some(f) = snap.manifest().files.get(unit.file) else {
        return vec![unit];
    };
    let mut out = Vec::new();
    let mut start = f.row_base as u64;
    let mut piece_start = unit.range.start;
    for &len in &f.row_groups {
        let end = start + len;
        if start >= unit.range.start as u64
            && end <= unit.range.end as u64
            && end - piece_start as u64 >= rows
        {
            out.push(Unit {
                file: unit.file,
                range: piece_start..end as u32,
            });
            piece_start = end as u32;
        }
        start = end;
    }
    if piece_start < unit.range.end {
        out.push(Unit {
            file: unit.file,
            range: piece_start..unit.range.end,
        });
    }
    out
}

/// Rows per piece of a unit when a predicate runs inside the scan.
const PIECE_ROWS: u64 = 256 * 1024;

/// Drop from `local` the row groups whose statistics prove the clear-column conjuncts false —
/// only among row groups **every row of which is in `local`** (live and in scope): their
/// statistics describe rows the session may see, and nothing else. A row group that also
/// holds an out-of-scope or deleted row is never judged by its statistics (they would speak
/// for that row); the row filter decides there. Pruning only skips rows the filter would
/// reject, so answers do not change.
fn prune_groups(
    snap: &Snapshot,
    file: usize,
    mut local: RoaringBitmap,
    pruning: &PruningPredicate,
) -> DfResult<RoaringBitmap> {
    let Some(f) = snap.manifest().files.get(file) else {
        return Ok(local);
    };
    let mut whole: Vec<(usize, std::ops::Range<u32>)> = Vec::new();
    let mut start = 0u64;
    for (g, &len) in f.row_groups.iter().enumerate() {
        let r = start as u32..(start + len) as u32;
        if len > 0 && local.range_cardinality(r.clone()) == len {
            whole.push((g, r));
        }
        start += len;
    }
    if whole.is_empty() {
        return Ok(local);
    }
    let meta = snap.parquet_metadata(file).map_err(ext)?;
    let stats = GroupStats {
        meta: &meta,
        groups: whole.iter().map(|(g, _)| *g).collect(),
    };
    let keep = pruning.prune(&stats)?;
    for ((_, r), keep) in whole.into_iter().zip(keep) {
        if !keep {
            local.remove_range(r);
        }
    }
    Ok(local)
}

/// Row-group statistics of some row groups of one file, for a [`PruningPredicate`].
struct GroupStats<'a> {
    meta: &'a ArrowReaderMetadata,
    groups: Vec<usize>,
}

impl GroupStats<'_> {
    fn converter(&self, column: &Column) -> Option<StatisticsConverter<'_>> {
        StatisticsConverter::try_new(
            &column.name,
            self.meta.schema(),
            self.meta.metadata().file_metadata().schema_descr(),
        )
        .ok()
    }

    fn metas(&self) -> impl Iterator<Item = &RowGroupMetaData> {
        self.groups
            .iter()
            .map(|&g| self.meta.metadata().row_group(g))
    }
}

impl PruningStatistics for GroupStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.converter(column)?.row_group_mins(self.metas()).ok()
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.converter(column)?.row_group_maxes(self.metas()).ok()
    }

    fn num_containers(&self) -> usize {
        self.groups.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let counts = self.converter(column)?.row_group_null_counts(self.metas());
        counts.ok().map(|a| Arc::new(a) as ArrayRef)
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let n: Vec<u64> = self.metas().map(|m| m.num_rows() as u64).collect();
        Some(Arc::new(arrow::array::UInt64Array::from(n)))
    }

    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<arrow::array::BooleanArray> {
        None
    }
}

/// Maximal runs `[lo, hi)` of consecutive values in `b`.
fn runs(b: &RoaringBitmap) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for v in b {
        match out.last_mut() {
            Some((_, hi)) if *hi == v => *hi = v + 1,
            _ => out.push((v, v + 1)),
        }
    }
    out
}

/// The offsets of `local` (live, in scope) whose masked values pass `p`: the predicate's
/// columns are decoded for those rows only and masked as the session sees them.
fn filter_rows(
    inner: &Inner,
    file: usize,
    local: RoaringBitmap,
    p: &Predicate,
) -> DfResult<RoaringBitmap> {
    let cols: Vec<&str> = p
        .columns
        .iter()
        .map(|&i| inner.columns[i].0.as_str())
        .collect();
    let Some(reader) = inner
        .snapshot
        .read_local(file, &local, Some(&cols))
        .map_err(ext)?
    else {
        return Ok(local);
    };
    // Position k of the decoded rows is the k-th offset of `local`: plain arithmetic when the
    // offsets are one run (the usual case), a table otherwise.
    let first = local.min().unwrap_or(0);
    let contiguous = local.max().map(|m| (m - first) as u64 + 1) == Some(local.len());
    let table: Vec<u32> = if contiguous {
        Vec::new()
    } else {
        local.iter().collect()
    };
    let mut passed: Vec<u32> = Vec::new();
    let mut pos = 0usize;
    for b in reader {
        let b = b.map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?;
        let n = b.num_rows();
        let masked: Vec<ArrayRef> = b
            .columns()
            .iter()
            .zip(&p.columns)
            .map(|(c, &i)| masks::apply(inner.columns[i].1, c, &inner.pseudonym_key).map_err(ext))
            .collect::<DfResult<_>>()?;
        let batch = RecordBatch::try_new_with_options(
            p.schema.clone(),
            masked,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        let verdict = p.expr.evaluate(&batch)?.into_array(n)?;
        let verdict = verdict.as_boolean_opt().ok_or_else(|| {
            DataFusionError::Internal("a filter did not evaluate to booleans".into())
        })?;
        // NULL is not true: the row does not pass (as in WHERE).
        let keep = match verdict.nulls() {
            Some(nulls) => verdict.values() & nulls.inner(),
            None => verdict.values().clone(),
        };
        for i in keep.set_indices() {
            let at = pos + i;
            passed.push(if contiguous {
                first + at as u32
            } else {
                table[at]
            });
        }
        pos += n;
    }
    RoaringBitmap::from_sorted_iter(passed)
        .map_err(|e| DataFusionError::Internal(format!("filtered rows out of order: {e}")))
}
