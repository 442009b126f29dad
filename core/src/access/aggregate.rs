//! Aggregate-only grants (scenario service, 场景服务): a query under such a grant may only
//! return aggregates over groups of at least the grant's minimum number of subjects.
//!
//! The check runs on the logical plan DataFusion built from the query, before optimisation:
//!
//! - the query reads exactly one secured table, once (no joins, unions, or subqueries that read
//!   a table again) and aggregates it exactly once, the scan below the aggregation — so no
//!   row leaves except through a group;
//! - the aggregate functions are statistics (`count`, `sum`, `avg`, `min`, `max`, variance,
//!   standard deviation, median, approximate distinct counts and percentiles) — never one that
//!   returns the rows themselves (`array_agg`, `string_agg`, `first_value`, ...);
//! - no window functions and no reference to the dataset's key field anywhere (a key isolates
//!   one subject: `WHERE citizen_id <> '...'` is the classic differencing query);
//! - the plan is rewritten so the aggregation also counts each group's rows and a filter drops
//!   every group with fewer than the minimum — whatever the query's own `HAVING` says. A row
//!   of a dataset version is one subject (keys are unique among live rows), so rows are
//!   distinct subjects.
//!
//! What this does not stop is differencing with other attributes: two queries whose groups
//! differ by one person (`... WHERE county = X` and `... WHERE county = X AND name <> 'Y'`)
//! reveal that person's contribution when both groups are large enough. The grant's daily
//! query budget (counted like verify's quotas, across processes) bounds how many such pairs a
//! department can ask; every query is on the trail for the auditor. Stronger answers — noise
//! from a differential-privacy library, or refusing overlapping groups — are not built.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Aggregate, Distinct, Expr, Filter, LogicalPlan};

use crate::error::{Error, Result};

/// Aggregate functions an aggregate-only query may use: statistics of a group, never its rows.
const ALLOWED: &[&str] = &[
    "count",
    "sum",
    "avg",
    "mean",
    "min",
    "max",
    "median",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "var",
    "var_pop",
    "var_samp",
    "var_population",
    "var_sample",
    "approx_distinct",
    "approx_median",
    "approx_percentile_cont",
];

/// The hidden column that counts each group's subjects.
const GROUP_SIZE: &str = "__govshare_group_size";

fn refuse(why: impl Into<String>) -> Error {
    Error::AccessDenied(format!(
        "an aggregate-only grant answers only aggregates over groups: {}",
        why.into()
    ))
}

/// The one table `plan` reads, if it reads exactly one (subqueries included).
pub fn scanned_table(plan: &LogicalPlan) -> Option<String> {
    let mut names = Vec::new();
    let _ = plan.apply_with_subqueries(|n| {
        if let LogicalPlan::TableScan(t) = n {
            names.push(t.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    match names.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Check `plan` against the rules above for a dataset keyed by `key`, and rewrite it so that
/// every group of fewer than `min_group` subjects is suppressed.
pub fn enforce(plan: LogicalPlan, key: &str, min_group: u32) -> Result<LogicalPlan> {
    // `SELECT DISTINCT` is a grouping by every selected column: planned as one, so its groups
    // are counted and suppressed like any other (what DataFusion's own optimizer does later).
    let plan = plan
        .transform_up(|node| match node {
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let group: Vec<Expr> = input
                    .schema()
                    .columns()
                    .into_iter()
                    .map(Expr::Column)
                    .collect();
                Ok(Transformed::yes(LogicalPlan::Aggregate(
                    Aggregate::try_new(input, group, vec![])?,
                )))
            }
            LogicalPlan::Distinct(Distinct::On(_)) => Err(
                datafusion::error::DataFusionError::Plan("DISTINCT ON returns rows".into()),
            ),
            n => Ok(Transformed::no(n)),
        })
        .map(|t| t.data)
        .map_err(|e| refuse(e.strip_backtrace()))?;
    let mut scans = 0usize;
    let mut aggregates = 0usize;
    let mut problem: Option<Error> = None;
    plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(_) => scans += 1,
            LogicalPlan::Aggregate(a) => {
                aggregates += 1;
                for e in &a.aggr_expr {
                    let inner = match e {
                        Expr::Alias(a) => a.expr.as_ref(),
                        e => e,
                    };
                    match inner {
                        Expr::AggregateFunction(f) if ALLOWED.contains(&f.func.name()) => {}
                        Expr::AggregateFunction(f) => {
                            problem = Some(refuse(format!(
                                "{}() returns a group's values, not a statistic of them",
                                f.func.name()
                            )));
                        }
                        _ => problem = Some(refuse("an aggregate expression it cannot check")),
                    }
                }
                // The scan must be below this aggregation.
                let mut below = 0usize;
                a.input.apply_with_subqueries(|n| {
                    if matches!(n, LogicalPlan::TableScan(_)) {
                        below += 1;
                    }
                    Ok(TreeNodeRecursion::Continue)
                })?;
                if below != 1 {
                    problem = Some(refuse("the table must be read below the aggregation"));
                }
            }
            LogicalPlan::Window(_) => problem = Some(refuse("window functions return rows")),
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => {
                problem = Some(refuse("EXPLAIN is not answered"))
            }
            _ => {}
        }
        node.apply_expressions(|e| {
            e.apply(|x| {
                if let Expr::Column(c) = x
                    && c.name == key
                {
                    problem = Some(refuse(format!(
                        "the key field '{key}' identifies one subject and may not be used"
                    )));
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| Error::internal(e.to_string()))?;
    if let Some(e) = problem {
        return Err(e);
    }
    if scans != 1 || aggregates != 1 {
        return Err(refuse(
            "a query reads one dataset once and aggregates it once (no joins, unions or subqueries)",
        ));
    }
    let min = i64::from(min_group);
    plan.transform_up(|node| {
        let LogicalPlan::Aggregate(a) = node else {
            // Parents above the aggregation: their schemas follow the new input.
            return Ok(Transformed::yes(node.recompute_schema()?));
        };
        let mut aggr = a.aggr_expr.clone();
        aggr.push(datafusion::functions_aggregate::count::count_all().alias(GROUP_SIZE));
        let counted = Aggregate::try_new(a.input.clone(), a.group_expr.clone(), aggr)?;
        let keep = Expr::Column(datafusion::common::Column::from_name(GROUP_SIZE))
            .gt_eq(datafusion::logical_expr::lit(min));
        let filtered = Filter::try_new(keep, Arc::new(LogicalPlan::Aggregate(counted)))?;
        Ok(Transformed::yes(LogicalPlan::Filter(filtered)))
    })
    .map(|t| t.data)
    .map_err(|e| Error::internal(e.to_string()))
}
