//! Answers from bitmaps: `SELECT c1, ..., count(*) FROM t GROUP BY c1, ...` over a secured
//! table, where every `ci` is a field the session sees in clear with a value bitmap index, or
//! a region field (or its province / city prefix, `substr(c, 1, 2|4)` or `left(c, 2|4)`) with
//! its region index, is a set of bitmap intersections with the session's scope — never a scan;
//! `SELECT count(*) FROM t` alone is the scope's cardinality.
//!
//! Exact by construction, not by estimate: the scope is the same bitmap the secured scan
//! reads (live rows ∩ the grant's rows), a value index holds every live row with that value
//! (rows without one, NULL, are the scope minus all of them), and masked fields are never
//! answered this way (their groups are masked values, not the indexed raw ones). Anything
//! else — a filter, a LIMIT, DISTINCT, another aggregate, an expression as a group — leaves
//! the plan as it was. The counted rows are all *read* (on the trail) when the answer is
//! computed, at execution, so EXPLAIN has no effect.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{Column, Statistics};
use datafusion::datasource::{TableType, provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::functions_aggregate::count::Count;
use datafusion::logical_expr::{
    Expr, LogicalPlan, Projection, TableProviderFilterPushDown, TableScanBuilder,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

use crate::access::secured::SecuredTable;

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
        if !agg.aggr_expr.iter().all(is_count_star) {
            return Ok(Transformed::no(plan));
        }
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
            aggregates: agg.aggr_expr.len(),
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

/// `count(*)` / `count(1)`: DataFusion's own count of a non-null literal, plain.
fn is_count_star(e: &Expr) -> bool {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let Expr::AggregateFunction(f) = e else {
        return false;
    };
    let p = &f.params;
    (f.func.inner().as_ref() as &dyn Any).is::<Count>()
        && !p.distinct
        && p.filter.is_none()
        && p.order_by.is_empty()
        && matches!(p.args.as_slice(), [Expr::Literal(v, _)] if !v.is_null())
}

/// The groups and counts of one secured table, computed from its bitmaps when executed.
#[derive(Debug)]
struct BitmapCounts {
    table: SecuredTable,
    groups: Vec<(String, Option<usize>)>,
    aggregates: usize,
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
            aggregates: self.aggregates,
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
    aggregates: usize,
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
        )
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
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let ext = |e: crate::error::Error| DataFusionError::External(Box::new(e));
        let groups = self.table.count_groups(&self.groups).map_err(ext)?;
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
                .map(|(_, n)| *n as i64)
                .collect::<Int64Array>(),
        );
        columns.extend(std::iter::repeat_n(counts, self.aggregates));
        let batch = RecordBatch::try_new(self.full_schema.clone(), columns)?;
        let batch = match &self.projection {
            Some(p) => batch.project(p)?,
            None => batch,
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter([Ok(batch)]),
        )))
    }
}
