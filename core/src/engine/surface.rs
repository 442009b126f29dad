//! The closed SQL surface: one DataFusion context per decision with nothing registered but
//! what the decision allows, a statement allowlist, and the plan checks — shared by sessions
//! and the audit queries, so both refuse the same statements the same way.

use std::collections::HashMap;

use std::sync::Arc;

use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider,
};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::Dialect;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{
    SendableRecordBatchStream, SessionState, SessionStateBuilder, TaskContext,
};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;

use crate::error::{Error, Result};
use crate::store::QueryLimits;

/// The closed surface's DataFusion state, built once per engine: no table functions
/// (generate_series, range, file readers), no CREATE EXTERNAL TABLE factories, URL tables never
/// enabled, an information_schema that lists only what a query's own catalog holds, and the
/// rule that answers grouped counts from bitmaps (it only ever matches a secured table).
///
/// Building this state registers every built-in function, most of what a fresh context per
/// query used to cost; a query instead gets a copy ([`Surface::context`]) with a **catalog
/// list of its own** — the one part of a state that copies share — so what one decision
/// registers is never seen by another.
pub(super) struct Surface {
    template: SessionState,
}

impl Surface {
    /// Build the template state.
    pub(super) fn new() -> Result<Surface> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(2)
            .with_default_catalog_and_schema(CATALOG, SCHEMA);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(no_spill_runtime(usize::MAX)?)
            .with_default_features()
            .with_table_functions(HashMap::new())
            .with_table_factories(HashMap::new())
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.add_optimizer_rule(Arc::new(crate::access::counts::CountsFromBitmaps));
        Ok(Surface {
            template: ctx.state(),
        })
    }

    /// A context for one query: the template with a fresh catalog list holding only the
    /// empty default schema; register the decision's tables in it.
    pub(super) fn context(&self) -> SessionContext {
        let ctx = SessionContext::new_with_state(self.template.clone());
        let catalog = MemoryCatalogProvider::new();
        // Registering into a new, empty catalog cannot fail or replace anything.
        let _ = catalog.register_schema(SCHEMA, Arc::new(MemorySchemaProvider::new()));
        let list = MemoryCatalogProviderList::new();
        list.register_catalog(CATALOG.to_string(), Arc::new(catalog));
        ctx.register_catalog_list(Arc::new(list));
        ctx
    }
}

/// The default catalog and schema a query's tables are registered in.
const CATALOG: &str = "govshare";
const SCHEMA: &str = "public";

/// The context that executes one query's plan: the query's memory limit as its memory pool,
/// with no spilling — spill files would put query data (masked, but still personal data) in
/// the host's temporary directory, outside the store's private files; the limit is the limit.
/// An operator that would reserve more fails with `ResourcesExhausted`, which the engine
/// reports as [`Error::LimitExceeded`].
pub(super) fn task_context(ctx: &SessionContext, limits: &QueryLimits) -> Result<Arc<TaskContext>> {
    let runtime = no_spill_runtime(usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX))?;
    let state = ctx.state_ref();
    let state = state.read();
    // The plan is already built, and executing it never looks a function up by name (a task
    // context's registry serves plan deserialisation), so none is copied in: copying the
    // names of the hundreds of built-in functions — with a copy of the whole session state
    // to get them — was a tenth of a small query's planning.
    Ok(Arc::new(TaskContext::new(
        None,
        state.session_id().to_string(),
        state.config().clone(),
        HashMap::new(),
        HashMap::new(),
        HashMap::new(),
        HashMap::new(),
        runtime,
    )))
}

fn no_spill_runtime(
    memory_bytes: usize,
) -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    let no_spill = DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled);
    RuntimeEnvBuilder::new()
        .with_disk_manager_builder(no_spill)
        .with_memory_limit(memory_bytes, 1.0)
        .build_arc()
        .map_err(|e| Error::internal(e.to_string()))
}

/// The physical plan of `df`, bounded: every recursive CTE's recursive term counts its
/// iterations and fails past `limits.recursion_depth` (DataFusion itself has no such bound).
pub(super) async fn physical(
    df: DataFrame,
    limits: &QueryLimits,
    explain: &dyn Explain,
) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = df
        .create_physical_plan()
        .await
        .map_err(|e| explain.error(e))?;
    let depth = limits.recursion_depth;
    plan.transform_up(|node| {
        if !node.is::<RecursiveQueryExec>() {
            return Ok(Transformed::no(node));
        }
        let mut children: Vec<Arc<dyn ExecutionPlan>> =
            node.children().into_iter().cloned().collect();
        if let Some(term) = children.get_mut(1) {
            *term = Arc::new(DepthLimitExec::new(term.clone(), depth));
        }
        // The wrapper keeps its input's properties.
        let keep = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep);
        node.replace_children(children, keep).map(Transformed::yes)
    })
    .map(|t| t.data)
    .map_err(|e| explain.error(e))
}

/// Wraps the recursive term of a recursive CTE: DataFusion executes it once per iteration, so
/// counting executions counts iterations. The counter is shared by the copies DataFusion makes
/// when it resets the term between iterations.
#[derive(Debug)]
struct DepthLimitExec {
    input: Arc<dyn ExecutionPlan>,
    max: u32,
    runs: Arc<std::sync::atomic::AtomicU32>,
}

impl DepthLimitExec {
    fn new(input: Arc<dyn ExecutionPlan>, max: u32) -> DepthLimitExec {
        DepthLimitExec {
            input,
            max,
            runs: Arc::default(),
        }
    }
}

impl DisplayAs for DepthLimitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "RecursionLimit: max_depth={}", self.max)
    }
}

impl ExecutionPlan for DepthLimitExec {
    fn name(&self) -> &str {
        "RecursionLimitExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let input = children.pop().ok_or_else(|| {
            DataFusionError::Internal("RecursionLimitExec needs its input".into())
        })?;
        Ok(Arc::new(DepthLimitExec {
            input,
            max: self.max,
            runs: self.runs.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        let runs = self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if runs > self.max {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the recursive query passed the recursion depth limit of {} iterations",
                self.max
            )));
        }
        self.input.execute(partition, context)
    }
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

/// How a door turns planning problems into the engine's errors: sessions explain a missing
/// grant, the audit queries only say what is wrong.
pub(super) trait Explain: Sync {
    /// A DataFusion error met while planning.
    fn error(&self, e: DataFusionError) -> Error;
    /// A table the query names that is not registered for this decision.
    fn missing_table(&self, table: &str) -> Error;
}

/// Parse, check and plan `sql` in `ctx` — the one pipeline every SQL door uses: the statement
/// allowlist on the parsed statement; every table it names resolved against what this
/// decision registered (a missing one is explained by the door, from the table's name, not
/// from DataFusion's message); the plan built and checked by DataFusion's SQL options (no DDL,
/// DML or statements) as a second line and by [`refuse_plan`] as a third.
pub(super) async fn plan(
    ctx: &SessionContext,
    sql: &str,
    params: Option<&arrow::array::RecordBatch>,
    explain: &dyn Explain,
) -> Result<DataFrame> {
    let state = ctx.state();
    let stmt = state
        .sql_to_statement(sql, &Dialect::Generic)
        .map_err(|e| explain.error(e))?;
    only_queries(&stmt)?;
    for table in state
        .resolve_table_references(&stmt)
        .map_err(|e| explain.error(e))?
    {
        if !ctx
            .table_exist(table.clone())
            .map_err(|e| explain.error(e))?
        {
            return Err(explain.missing_table(table.table()));
        }
    }
    let plan = state
        .statement_to_plan(stmt)
        .await
        .map_err(|e| explain.error(e))?;
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|_| {
            Error::AccessDenied("only queries are allowed: no DDL, DML, COPY or SET".into())
        })?;
    refuse_plan(&plan)?;
    let plan = bind(plan, params, explain)?;
    // What `execute_logical_plan` does for a query (every other statement was refused above),
    // on the state already copied rather than another copy of it.
    Ok(DataFrame::new(state, plan))
}

/// Bind the placeholders `$1` ... `$n` of a checked plan to `params` — one column per
/// placeholder, in order; one row per execution. The values become literals of the plan tree
/// (after parsing and every check above, so no value is ever read as SQL), each converted to
/// the type its place in the query asks for. Several rows make one plan: the union of the
/// query bound to each row. A query without placeholders takes no parameters.
fn bind(
    plan: LogicalPlan,
    params: Option<&arrow::array::RecordBatch>,
    explain: &dyn Explain,
) -> Result<LogicalPlan> {
    use datafusion::common::ScalarValue;
    let df = |e: DataFusionError| explain.error(e);
    let types = plan.get_parameter_types().map_err(df)?;
    let n = types.len();
    for i in 1..=n {
        if !types.contains_key(&format!("${i}")) {
            return Err(Error::invalid(format!(
                "placeholders are numbered $1 to ${n} without gaps (named ones are not \
                 supported); ${i} is missing"
            )));
        }
    }
    let params = match params {
        Some(p) if p.num_columns() > 0 || n > 0 => p,
        _ if n == 0 => return Ok(plan),
        _ => {
            return Err(Error::invalid(format!(
                "the query has {n} placeholder(s) ($1 ...): bind one value for each"
            )));
        }
    };
    if params.num_columns() != n {
        return Err(Error::invalid(format!(
            "the query has {n} placeholder(s) but {} parameter column(s) were bound",
            params.num_columns()
        )));
    }
    if params.num_rows() == 0 {
        return Err(Error::invalid(
            "no parameter rows were bound: one row of values per execution",
        ));
    }
    let mut bound = Vec::with_capacity(params.num_rows());
    for row in 0..params.num_rows() {
        let mut values = Vec::with_capacity(n);
        for (i, col) in params.columns().iter().enumerate() {
            let value = ScalarValue::try_from_array(col, row).map_err(df)?;
            let wanted = types.get(&format!("${}", i + 1)).cloned().flatten();
            let value = match wanted {
                Some(t) if value.data_type() != t => value.cast_to(&t).map_err(|_| {
                    // The message names the types, never the value.
                    Error::invalid(format!(
                        "parameter ${} must be {t}; the {} bound does not convert",
                        i + 1,
                        value.data_type()
                    ))
                })?,
                _ => value,
            };
            values.push(value);
        }
        bound.push(plan.clone().with_param_values(values).map_err(df)?);
    }
    let mut rows = bound.into_iter();
    let Some(first) = rows.next() else {
        return Err(Error::internal("no bound plan"));
    };
    let mut union = datafusion::logical_expr::LogicalPlanBuilder::from(first);
    for next in rows {
        union = union.union(next).map_err(df)?;
    }
    union.build().map_err(df)
}

impl super::Engine {
    /// Run `sql` over in-memory `tables` (the audit trail, the reports) through the closed
    /// surface under the store's query limits: the same statement allowlist and plan checks as
    /// a session's queries. `what` names the query in a time-limit error.
    pub(super) fn query_tables(
        &self,
        tables: &[(&str, arrow::array::RecordBatch)],
        sql: &str,
        what: &str,
    ) -> Result<super::QueryResult> {
        use super::translate::Plain;
        let limits = self.store().settings()?.query;
        let ctx = self.inner.surface.context();
        for (name, batch) in tables {
            let t = datafusion::datasource::MemTable::try_new(
                batch.schema(),
                vec![vec![batch.clone()]],
            )
            .map_err(|e| Error::internal(e.to_string()))?;
            ctx.register_table(*name, Arc::new(t))
                .map_err(|e| Error::internal(e.to_string()))?;
        }
        self.inner.runtime.block_on(async {
            let df = plan(&ctx, sql, None, &Plain).await?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let plan = physical(df, &limits, &Plain).await?;
            let run = datafusion::physical_plan::collect(plan, task_context(&ctx, &limits)?);
            let limit = std::time::Duration::from_millis(limits.time_limit_ms);
            let batches = tokio::time::timeout(limit, run)
                .await
                .map_err(|_| {
                    Error::LimitExceeded(format!(
                        "the {what} ran past the time limit of {:.1} s (store settings)",
                        limit.as_secs_f64()
                    ))
                })?
                .map_err(super::translate::runtime)?;
            Ok(super::QueryResult { schema, batches })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Contexts are copies of one template: a table one query's context registers is not in
    /// the next one's catalog, nor in its information_schema.
    #[test]
    fn a_table_registered_for_one_query_is_invisible_to_the_next() {
        let surface = Surface::new().expect("surface");
        let first = surface.context();
        let batch = arrow::array::RecordBatch::try_from_iter([(
            "x",
            Arc::new(arrow::array::Int64Array::from(vec![1])) as arrow::array::ArrayRef,
        )])
        .expect("batch");
        let table = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])
            .expect("table");
        first
            .register_table("secret", Arc::new(table))
            .expect("register");
        assert!(first.table_exist("secret").expect("exists"));
        let next = surface.context();
        assert!(!next.table_exist("secret").expect("exists"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let listed = rt.block_on(async {
            next.sql(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run")
        });
        assert_eq!(listed.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    }
}
