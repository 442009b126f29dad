//! Answers from bitmaps: `SELECT c1, ..., count(*) FROM t GROUP BY c1, ...` over a secured
//! table, where every `ci` is a field the session sees in clear with a value bitmap index, or
//! a region field (or its province / city prefix, `substr(c, 1, 2|4)` or `left(c, 2|4)`) with
//! its region index, is a set of bitmap intersections with the session's scope — never a scan;
//! `SELECT count(*) FROM t` alone is the scope's cardinality.
//!
//! `min(v)` and `max(v)` of a field `v` the session sees in clear may stand beside the counts:
//! then only `v` is decoded, for the rows in scope, and each group's rows are picked out of it
//! by their bitmap — the group columns are never decoded, and DataFusion's own min / max
//! accumulators compute the values, so they are what the scan's aggregate would return.
//! That work runs on a blocking thread (and on as many as the session's target partitions, a
//! data file each), never on the async workers.
//!
//! Exact by construction, not by estimate: the scope is the same bitmap the secured scan
//! reads (live rows ∩ the grant's rows), a value index holds every live row with that value
//! (rows without one, NULL, are the scope minus all of them), and masked fields are never
//! answered this way (their groups and values are masked, not the indexed or stored raw
//! ones). Anything else — a filter, a LIMIT, DISTINCT, another aggregate, an expression as a
//! group or an argument — leaves the plan as it was. The rows in scope are all *read* (on the
//! trail) when the answer is computed, at execution, so EXPLAIN has no effect.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue, Statistics};
use datafusion::datasource::{TableType, provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::functions_aggregate::count::Count;
use datafusion::functions_aggregate::min_max::{Max, MaxAccumulator, Min, MinAccumulator};
use datafusion::logical_expr::{
    Accumulator, Expr, LogicalPlan, Projection, TableProviderFilterPushDown, TableScanBuilder,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

use roaring::RoaringBitmap;

use crate::access::secured::SecuredTable;
use crate::error::Error;
use crate::store::Snapshot;

/// The optimizer rule: a grouped `count(*)` over a secured table becomes a scan of
/// its bitmap counts (`BitmapCountsExec`) when the bitmaps answer it exactly.
#[derive(Debug, Default)]
pub struct CountsFromBitmaps;

/// The qualifier of the replacement scan (never visible: a projection restores the names).
const QUALIFIER: &str = "__bitmap_counts";

impl OptimizerRule for CountsFromBitmaps {
    fn name(&self) -> &str {
        "govshare_counts_from_bitmaps"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(agg) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let LogicalPlan::TableScan(scan) = agg.input.as_ref() else {
            return Ok(Transformed::no(plan));
        };
        // No groups is one group, the whole scope: `count(*)` alone is its cardinality (one
        // row, 0 when the scope is empty, as SQL answers an ungrouped count).
        if !scan.filters.is_empty() || scan.fetch.is_some() {
            return Ok(Transformed::no(plan));
        }
        let provider = source_as_provider(&scan.source)?;
        let Some(table) = (provider.as_ref() as &dyn Any).downcast_ref::<SecuredTable>() else {
            return Ok(Transformed::no(plan));
        };
        let mut groups = Vec::new();
        for g in &agg.group_expr {
            match grouping(g) {
                Some((field, prefix)) if table.counts_by_bitmap(&field, prefix) => {
                    groups.push((field, prefix))
                }
                _ => return Ok(Transformed::no(plan)),
            }
        }
        let Some(aggregates) = agg
            .aggr_expr
            .iter()
            .map(|e| aggregate(e, table))
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(Transformed::no(plan));
        };
        // Same names, types and nullability as the aggregate's output, positionally named.
        let fields: Vec<Field> = agg
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| f.as_ref().clone().with_name(format!("c{i}")))
            .collect();
        let counts = Arc::new(BitmapCounts {
            table: table.clone_handle(),
            groups,
            aggregates,
            schema: Arc::new(Schema::new(fields)),
        });
        let scan = TableScanBuilder::new(QUALIFIER, provider_as_source(counts)).build()?;
        let exprs: Vec<Expr> = agg
            .schema
            .iter()
            .enumerate()
            .map(|(i, (qualifier, f))| {
                Expr::Column(Column::new(Some(QUALIFIER), format!("c{i}")))
                    .alias_qualified(qualifier.cloned(), f.name())
            })
            .collect();
        let projection = Projection::try_new(exprs, Arc::new(LogicalPlan::TableScan(scan)))?;
        Ok(Transformed::new(
            LogicalPlan::Projection(projection),
            true,
            TreeNodeRecursion::Jump,
        ))
    }
}

/// A group expression as (field, prefix length): a column, or its leading characters as
/// `substr(c, 1, n)` / `substring(c, 1, n)` / `left(c, n)` with literal positions. Whether
/// the bitmaps hold that grouping is the table's to say.
fn grouping(e: &Expr) -> Option<(String, Option<usize>)> {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let int = |e: &Expr| match e {
        Expr::Literal(v, _) => v
            .cast_to(&arrow::datatypes::DataType::Int64)
            .ok()
            .and_then(|v| match v {
                datafusion::common::ScalarValue::Int64(Some(n)) => usize::try_from(n).ok(),
                _ => None,
            }),
        _ => None,
    };
    match e {
        Expr::Column(c) => Some((c.name.clone(), None)),
        Expr::ScalarFunction(f) => {
            let (column, length) = match (f.name(), f.args.as_slice()) {
                ("substr" | "substring", [c, start, n]) if int(start) == Some(1) => (c, n),
                ("left", [c, n]) => (c, n),
                _ => return None,
            };
            let Expr::Column(c) = column else {
                return None;
            };
            Some((c.name.clone(), Some(int(length)?)))
        }
        _ => None,
    }
}

/// An aggregate the bitmaps (and one decoded field) answer exactly.
#[derive(Debug, Clone, PartialEq)]
enum Aggregate {
    /// `count(*)` / `count(1)`: the group's rows.
    Count,
    /// `min(field)` over a field seen in clear.
    Min(String),
    /// `max(field)` over a field seen in clear.
    Max(String),
}

impl Aggregate {
    fn field(&self) -> Option<&str> {
        match self {
            Aggregate::Count => None,
            Aggregate::Min(f) | Aggregate::Max(f) => Some(f),
        }
    }

    /// DataFusion's own accumulator for this aggregate over values of type `t`.
    fn accumulator(&self, t: &arrow::datatypes::DataType) -> DfResult<Box<dyn Accumulator>> {
        Ok(match self {
            Aggregate::Min(_) => Box::new(MinAccumulator::try_new(t)?),
            Aggregate::Max(_) => Box::new(MaxAccumulator::try_new(t)?),
            Aggregate::Count => {
                return Err(DataFusionError::Internal(
                    "a count has no accumulator here".into(),
                ));
            }
        })
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Aggregate::Count => write!(f, "count(*)"),
            Aggregate::Min(c) => write!(f, "min({c})"),
            Aggregate::Max(c) => write!(f, "max({c})"),
        }
    }
}

/// DataFusion's own `count(*)` / `count(1)` (a non-null literal), or its `min` / `max` of a
/// plain column the session sees in clear, with a type those accumulators take — plain:
/// no DISTINCT, FILTER or ORDER BY.
fn aggregate(e: &Expr, table: &SecuredTable) -> Option<Aggregate> {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let Expr::AggregateFunction(f) = e else {
        return None;
    };
    let p = &f.params;
    if p.distinct || p.filter.is_some() || !p.order_by.is_empty() {
        return None;
    }
    let func = f.func.inner().as_ref() as &dyn Any;
    if func.is::<Count>() {
        return matches!(p.args.as_slice(), [Expr::Literal(v, _)] if !v.is_null())
            .then_some(Aggregate::Count);
    }
    let [Expr::Column(c)] = p.args.as_slice() else {
        return None;
    };
    if !table.sees_in_clear(&c.name) {
        return None;
    }
    let schema = table.schema();
    let t = schema.field_with_name(&c.name).ok()?.data_type();
    let a = if func.is::<Min>() {
        Aggregate::Min(c.name.clone())
    } else if func.is::<Max>() {
        Aggregate::Max(c.name.clone())
    } else {
        return None;
    };
    a.accumulator(t).ok().map(|_| a)
}

/// The groups and counts of one secured table, computed from its bitmaps when executed.
#[derive(Debug)]
struct BitmapCounts {
    table: SecuredTable,
    groups: Vec<(String, Option<usize>)>,
    aggregates: Vec<Aggregate>,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for BitmapCounts {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projection = projection.cloned();
        let schema = match &projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Arc::new(BitmapCountsExec {
            table: self.table.clone_handle(),
            groups: self.groups.clone(),
            aggregates: self.aggregates.clone(),
            full_schema: self.schema.clone(),
            projection,
            schema,
            props: Arc::new(props),
        }))
    }
}

/// Computes the groups and counts from bitmaps when executed (so EXPLAIN reads nothing).
#[derive(Debug)]
pub struct BitmapCountsExec {
    table: SecuredTable,
    groups: Vec<(String, Option<usize>)>,
    aggregates: Vec<Aggregate>,
    full_schema: SchemaRef,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
}

impl DisplayAs for BitmapCountsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        // Like the secured scan's line: dataset and fields, nothing about the scope.
        write!(
            f,
            "BitmapCounts: dataset={} groups=[{}]",
            self.table.snapshot().dataset().name,
            self.groups
                .iter()
                .map(|(f, prefix)| match prefix {
                    Some(n) => format!("left({f}, {n})"),
                    None => f.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        // Counts alone print as before; values name their aggregates.
        if self.aggregates.iter().any(|a| a.field().is_some()) {
            let all: Vec<String> = self.aggregates.iter().map(|a| a.to_string()).collect();
            write!(f, " aggregates=[{}]", all.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for BitmapCountsExec {
    fn name(&self) -> &str {
        "BitmapCountsExec"
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
        crate::access::secured::leaf(self, children)
    }

    fn partition_statistics(&self, _partition: Option<usize>) -> DfResult<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.schema)))
    }

    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let work = Work {
            table: self.table.clone_handle(),
            groups: self.groups.clone(),
            aggregates: self.aggregates.clone(),
            schema: self.full_schema.clone(),
            threads: context.session_config().target_partitions().max(1),
        };
        let projection = self.projection.clone();
        let project = move |batch: RecordBatch| match &projection {
            Some(p) => Ok(batch.project(p)?),
            None => Ok(batch),
        };
        let answer = async move {
            // Decoding a field is work for a blocking thread, not for an async worker; counts
            // alone are a few bitmap operations.
            let batch = match tokio::runtime::Handle::try_current() {
                Ok(rt) if work.decodes() => rt
                    .spawn_blocking(move || work.run())
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))??,
                _ => work.run()?,
            };
            project(batch)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(answer),
        )))
    }
}

/// What one execution computes: the groups from bitmaps, then each aggregate per group.
struct Work {
    table: SecuredTable,
    groups: Vec<(String, Option<usize>)>,
    aggregates: Vec<Aggregate>,
    schema: SchemaRef,
    threads: usize,
}

impl Work {
    fn decodes(&self) -> bool {
        self.aggregates.iter().any(|a| a.field().is_some())
    }

    fn run(self) -> DfResult<RecordBatch> {
        let ext = |e: Error| DataFusionError::External(Box::new(e));
        let groups = self.table.group_rows(&self.groups).map_err(ext)?;
        let values = if self.decodes() {
            self.values(&groups)?
        } else {
            Vec::new()
        };
        let mut columns: Vec<ArrayRef> = (0..self.groups.len())
            .map(|i| {
                Arc::new(
                    groups
                        .iter()
                        .map(|(values, _)| values[i].as_deref())
                        .collect::<StringArray>(),
                ) as ArrayRef
            })
            .collect();
        let counts: ArrayRef = Arc::new(
            groups
                .iter()
                .map(|(_, rows)| rows.len() as i64)
                .collect::<Int64Array>(),
        );
        let mut next_value = values.into_iter();
        for a in &self.aggregates {
            match a {
                Aggregate::Count => columns.push(counts.clone()),
                _ => columns.push(next_value.next().ok_or_else(|| {
                    DataFusionError::Internal("an aggregate without its values".into())
                })?),
            }
        }
        // The aggregate's own output types (min / max keep their argument's type).
        let columns = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| match c.data_type() == f.data_type() {
                true => Ok(c),
                false => Ok(arrow::compute::cast(&c, f.data_type())?),
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// One column per value aggregate (in order), one value per group: the field decoded
    /// for the rows in scope, a data file per thread on up to `threads` threads, a batch at
    /// a time; each group's rows taken out by their bitmap and fed to DataFusion's
    /// accumulator.
    fn values(&self, groups: &[(Vec<Option<String>>, RoaringBitmap)]) -> DfResult<Vec<ArrayRef>> {
        let snap = self.table.snapshot();
        let schema = self.table.schema();
        let valued: Vec<(&Aggregate, &str)> = self
            .aggregates
            .iter()
            .filter_map(|a| a.field().map(|f| (a, f)))
            .collect();
        let mut fields: Vec<&str> = valued.iter().map(|(_, f)| *f).collect();
        fields.sort_unstable();
        fields.dedup();
        let types = valued
            .iter()
            .map(|(_, f)| Ok(schema.field_with_name(f)?.data_type().clone()))
            .collect::<DfResult<Vec<_>>>()?;
        let files = snap.manifest().files.len();
        let threads = self.threads.min(files).max(1);
        let scope = self.table.scope();
        // Each thread: its files' partial values, per group and aggregate.
        let part = |t: usize| -> DfResult<Vec<Vec<ScalarValue>>> {
            let mut acc = groups
                .iter()
                .map(|_| {
                    valued
                        .iter()
                        .zip(&types)
                        .map(|((a, _), t)| a.accumulator(t))
                        .collect::<DfResult<Vec<_>>>()
                })
                .collect::<DfResult<Vec<_>>>()?;
            for file in (t..files).step_by(threads) {
                file_values(snap, file, scope, groups, &fields, &valued, &mut acc)?;
            }
            acc.iter_mut()
                .map(|g| g.iter_mut().map(|a| a.evaluate()).collect())
                .collect()
        };
        let parts: Vec<Vec<Vec<ScalarValue>>> = if threads == 1 {
            vec![part(0)?]
        } else {
            std::thread::scope(|s| {
                let running: Vec<_> = (0..threads).map(|t| s.spawn(move || part(t))).collect();
                running
                    .into_iter()
                    .map(|h| {
                        h.join().map_err(|_| {
                            DataFusionError::Internal("an aggregate thread panicked".into())
                        })?
                    })
                    .collect::<DfResult<Vec<_>>>()
            })?
        };
        // Each group's partials (NULL where a thread saw none of its rows) through the same
        // accumulator again: the result is the aggregate over all of the group's rows.
        valued
            .iter()
            .zip(&types)
            .enumerate()
            .map(|(i, ((a, _), t))| {
                let finals = (0..groups.len())
                    .map(|g| {
                        let mut acc = a.accumulator(t)?;
                        let partials = parts.iter().map(|p| p[g][i].clone());
                        acc.update_batch(&[ScalarValue::iter_to_array(partials)?])?;
                        acc.evaluate()
                    })
                    .collect::<DfResult<Vec<_>>>()?;
                match finals.is_empty() {
                    true => Ok(arrow::array::new_empty_array(t)),
                    false => ScalarValue::iter_to_array(finals),
                }
            })
            .collect()
    }
}

/// Feed one data file's rows in scope to each group's accumulators: `fields` decoded for the
/// file's rows in scope, a batch at a time (memory: a batch, never a file's column), each
/// group's rows in the batch taken out by position.
fn file_values(
    snap: &Snapshot,
    file: usize,
    scope: &RoaringBitmap,
    groups: &[(Vec<Option<String>>, RoaringBitmap)],
    fields: &[&str],
    valued: &[(&Aggregate, &str)],
    acc: &mut [Vec<Box<dyn Accumulator>>],
) -> DfResult<()> {
    let ext = |e: Error| DataFusionError::External(Box::new(e));
    let local = snap.file_rows(file, Some(scope)).map_err(ext)?;
    let Some(reader) = snap.read_local(file, &local, Some(fields)).map_err(ext)? else {
        return Ok(());
    };
    let base = snap.manifest().files[file].row_base;
    let at: Vec<usize> = valued
        .iter()
        .map(|(_, f)| fields.iter().position(|x| x == f).unwrap_or(0))
        .collect();
    // Batches hold the rows of `local` in order: the next batch's rows are the next offsets.
    // A run from the file's first row (a whole file in scope) needs no walk through them.
    let read = local.len();
    let whole = local.min() == Some(0) && local.max().map(u64::from) == Some(read - 1);
    let mut ahead = local.iter();
    let mut taken_so_far = 0u32;
    let mut offsets: Vec<u32> = Vec::new();
    let mut marks: Vec<u32> = Vec::new();
    // Every group row is a row in scope, so it was read; checked all the same, since a wrong
    // position would be another subject's value.
    let mismatch = || DataFusionError::Internal("a group row outside the rows read".into());
    for batch in reader {
        let batch = batch?;
        let n = batch.num_rows();
        if n == 0 {
            continue;
        }
        // This batch's file offsets lie in lo..=hi; `marks` holds each one's position in the
        // batch unless they are a run.
        let (lo, hi, run) = if whole {
            let lo = taken_so_far;
            (lo, lo + n as u32 - 1, true)
        } else {
            offsets.clear();
            offsets.extend(ahead.by_ref().take(n));
            let (Some(&lo), Some(&hi)) = (offsets.first(), offsets.last()) else {
                return Err(mismatch());
            };
            if offsets.len() != n {
                return Err(mismatch());
            }
            let run = (hi - lo) as usize + 1 == n;
            if !run {
                marks.clear();
                marks.resize((hi - lo) as usize + 1, u32::MAX);
                for (i, o) in offsets.iter().enumerate() {
                    marks[(o - lo) as usize] = i as u32;
                }
            }
            (lo, hi, run)
        };
        taken_so_far += n as u32;
        if u64::from(taken_so_far) > read {
            return Err(mismatch());
        }
        let span = base + lo..=base + hi;
        for ((_, rows), acc) in groups.iter().zip(acc.iter_mut()) {
            let k = rows.range_cardinality(span.clone());
            if k == 0 {
                continue;
            }
            let taken: Vec<ArrayRef> = if k == n as u64 {
                at.iter().map(|i| batch.column(*i).clone()).collect()
            } else {
                let mut idx: Vec<u32> = Vec::with_capacity(k as usize);
                if run {
                    idx.extend(rows.range(span.clone()).map(|r| r - base - lo));
                } else {
                    for r in rows.range(span.clone()) {
                        match marks[(r - base - lo) as usize] {
                            u32::MAX => return Err(mismatch()),
                            i => idx.push(i),
                        }
                    }
                }
                let idx = UInt32Array::from(idx);
                at.iter()
                    .map(|i| arrow::compute::take(batch.column(*i).as_ref(), &idx, None))
                    .collect::<Result<_, _>>()?
            };
            for (a, values) in acc.iter_mut().zip(&taken) {
                a.update_batch(std::slice::from_ref(values))?;
            }
        }
    }
    if u64::from(taken_so_far) != read {
        return Err(mismatch());
    }
    Ok(())
}
