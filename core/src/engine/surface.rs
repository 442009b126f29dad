//! The closed SQL surface: one DataFusion context per decision with nothing registered but
//! what the decision allows, a statement allowlist, and the plan checks — shared by sessions
//! and the audit queries, so both refuse the same statements the same way.

use std::collections::HashMap;

use datafusion::config::Dialect;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;

use crate::error::{Error, Result};

/// A DataFusion context with the closed surface: no table functions (generate_series, range,
/// file readers), no CREATE EXTERNAL TABLE factories, URL tables never enabled, and an
/// information_schema that lists only what is registered for this one decision.
pub(super) fn closed_context() -> SessionContext {
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
pub(super) trait Explain {
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
    ctx.execute_logical_plan(plan)
        .await
        .map_err(|e| explain.error(e))
}
