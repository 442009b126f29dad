//! Reports for the coordinator and auditors (000 §28, 001 §17): usage per department and
//! purpose, applications and objections pending and overdue, agreements due for renewal,
//! providers late against their
//! declared update frequency, denied attempts per user, unusual volumes per user.
//!
//! Reports are tables, queried through the same closed SQL surface as everything else
//! ([`Engine::report_sql`]) and recorded like every read; [`Engine::report_html`] renders the
//! standard set as one self-contained page with charts. Every number is computed from the
//! audit trail and the policy document — nothing is counted on the side, so a report can be
//! checked against the trail it claims to summarise.
//!
//! Who sees what: coordinators the whole platform; auditors the whole platform except their
//! own acts (an auditor does not audit themselves). Nobody else reads reports.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    Array as _, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::{DateTime, Duration, Utc};

use crate::access::policy::{AppState, Role};
use crate::audit::Record;
use crate::calendar::beijing_date;
use crate::engine::{Engine, QueryResult};
use crate::error::Result;
use crate::store::Operation;

/// The report tables, with what each row is.
pub const REPORTS: [(&str, &str); 7] = [
    (
        "usage",
        "per department and purpose: queries allowed and denied, rows returned",
    ),
    (
        "applications",
        "every application: state, provider, deadline, overdue and by how many working days",
    ),
    (
        "objections",
        "every objection (no subject keys): state, source, deadline, overdue, filed late",
    ),
    (
        "agreements",
        "every agreement: term end, working days left, renewal due (within the renewal window)",
    ),
    (
        "late_providers",
        "per dataset: declared update frequency, last delivery, when the next was due, late",
    ),
    (
        "denials",
        "per user and kind of record: refused attempts (queries, sessions, acts, reads)",
    ),
    (
        "volumes",
        "per user and Beijing day: queries and rows returned, and whether that is unusual",
    ),
];

/// An agreement's renewal is due when its term ends within this many working days.
pub const RENEWAL_WINDOW_DAYS: u32 = 10;

/// A user-day's rows are unusual above this many times the median user-day …
pub const UNUSUAL_FACTOR: u64 = 5;
/// … and above this floor (small platforms have small medians).
pub const UNUSUAL_FLOOR: u64 = 1_000;

/// The days after a delivery by which the next is due, for the frequencies the catalog
/// spells; other spellings are not judged.
fn period(frequency: &str) -> Option<Duration> {
    let days = match frequency.trim().to_lowercase().as_str() {
        "real-time" | "realtime" | "实时" | "daily" | "每日" => 1,
        "weekly" | "每周" => 7,
        "monthly" | "每月" => 31,
        "quarterly" | "每季度" => 92,
        "yearly" | "annually" | "每年" => 366,
        _ => return None,
    };
    Some(Duration::days(days))
}

/// One row of `late_providers`: dataset, provider, frequency, last delivery, next due, late,
/// days late.
type LateRow = (
    String,
    String,
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    bool,
    Option<i64>,
);

/// Columns of one report table, built row by row.
#[derive(Default)]
struct Table {
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
}

impl Table {
    fn text(mut self, name: &str, v: Vec<Option<String>>) -> Self {
        self.fields.push(Field::new(name, DataType::Utf8, true));
        self.columns.push(Arc::new(StringArray::from(v)));
        self
    }

    fn int(mut self, name: &str, v: Vec<Option<i64>>) -> Self {
        self.fields.push(Field::new(name, DataType::Int64, true));
        self.columns.push(Arc::new(Int64Array::from(v)));
        self
    }

    fn count(mut self, name: &str, v: Vec<u64>) -> Self {
        self.fields.push(Field::new(name, DataType::UInt64, false));
        self.columns.push(Arc::new(UInt64Array::from(v)));
        self
    }

    fn flag(mut self, name: &str, v: Vec<bool>) -> Self {
        self.fields.push(Field::new(name, DataType::Boolean, false));
        self.columns.push(Arc::new(BooleanArray::from(v)));
        self
    }

    fn batch(self) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(self.fields)),
            self.columns,
        )?)
    }
}

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// An instant as Beijing time, to the second.
fn beijing_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&crate::calendar::beijing())
        .format("%Y-%m-%d %H:%M:%S%:z")
        .to_string()
}

impl Engine {
    /// Who `by` is for reports: `Ok(true)` for an auditor (their own acts left out),
    /// `Ok(false)` for a coordinator; a denial for anyone else.
    fn report_reader(&self, by: &str) -> Result<bool> {
        let policy = self.store().policy()?;
        let (u, _) = policy.active(by)?;
        if u.roles.contains(&Role::Coordinator) {
            return Ok(false);
        }
        if u.roles.contains(&Role::Auditor) {
            return Ok(true);
        }
        policy
            .require(
                by,
                Role::Coordinator,
                "read reports (coordinators and auditors do)",
            )
            .map(|_| false)
    }

    /// Build every report table as `by` may see it.
    fn report_tables(&self, by: &str, auditor: bool) -> Result<Vec<(&'static str, RecordBatch)>> {
        let store = self.store();
        let policy = store.policy()?;
        let catalog = store.catalog()?;
        let calendar = store.calendar()?;
        let now = self.now();
        let today = beijing_date(now);
        let records: Vec<Record> = self
            .audit()
            .records()?
            .into_iter()
            .filter(|r| !(auditor && r.actor == by))
            .collect();
        let dept_of = |user: &str| {
            policy
                .users
                .get(user)
                .map(|u| u.department.clone())
                .unwrap_or_default()
        };
        let text = |r: &Record, k: &str| {
            r.body
                .get(k)
                .and_then(|v| v.as_str())
                .map(String::from)
                .unwrap_or_default()
        };
        let rows_of: BTreeMap<u64, u64> = records
            .iter()
            .filter(|r| r.kind == "query_end")
            .filter_map(|r| Some((r.body["query"].as_u64()?, r.body["rows"].as_u64()?)))
            .collect();
        let queries: Vec<&Record> = records.iter().filter(|r| r.kind == "query").collect();
        let dept_of_query = |r: &Record| {
            let d = text(r, "department");
            if d.is_empty() { dept_of(&r.actor) } else { d }
        };

        // usage
        let mut usage: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
        for r in &queries {
            let e = usage
                .entry((dept_of_query(r), text(r, "purpose")))
                .or_default();
            match text(r, "outcome").as_str() {
                "allowed" => {
                    e.0 += 1;
                    e.2 += rows_of.get(&r.seq).copied().unwrap_or(0);
                }
                "denied" => e.1 += 1,
                _ => {}
            }
        }
        let usage = Table::default()
            .text("department", usage.keys().map(|k| s(&k.0)).collect())
            .text("purpose", usage.keys().map(|k| s(&k.1)).collect())
            .count("queries", usage.values().map(|v| v.0).collect())
            .count("denied", usage.values().map(|v| v.1).collect())
            .count("rows", usage.values().map(|v| v.2).collect())
            .batch()?;

        // applications
        let late_by = |due: Option<chrono::NaiveDate>, open: bool| -> (bool, Option<i64>) {
            match due {
                Some(d) if open && today > d => (
                    true,
                    calendar.working_days_between(d, today).ok().map(i64::from),
                ),
                _ => (false, None),
            }
        };
        let apps: Vec<_> = policy.applications.values().collect();
        let app_late: Vec<(bool, Option<i64>)> = apps
            .iter()
            .map(|a| late_by(a.due, a.state == AppState::UnderReview))
            .collect();
        let provider = |ds: &str| {
            catalog
                .dataset(ds)
                .map(|d| d.provider.clone())
                .unwrap_or_default()
        };
        let applications = Table::default()
            .int("id", apps.iter().map(|a| Some(a.id as i64)).collect())
            .text(
                "dataset",
                apps.iter().map(|a| s(&a.request.dataset)).collect(),
            )
            .text(
                "consumer_dept",
                apps.iter().map(|a| s(&a.request.consumer_dept)).collect(),
            )
            .text(
                "provider",
                apps.iter()
                    .map(|a| s(provider(&a.request.dataset)))
                    .collect(),
            )
            .text("applicant", apps.iter().map(|a| s(&a.applicant)).collect())
            .text("state", apps.iter().map(|a| s(a.state.label())).collect())
            .flag("pending", apps.iter().map(|a| a.state.is_open()).collect())
            .text("received", apps.iter().map(|a| s(a.received)).collect())
            .text(
                "due",
                apps.iter().map(|a| a.due.map(|d| d.to_string())).collect(),
            )
            .flag("overdue", app_late.iter().map(|l| l.0).collect())
            .int("working_days_late", app_late.iter().map(|l| l.1).collect())
            .batch()?;

        // objections
        let objs: Vec<_> = policy.objections.values().collect();
        let obj_late: Vec<(bool, Option<i64>)> = objs
            .iter()
            .map(|o| late_by(Some(o.due), o.state.is_open()))
            .collect();
        let objections = Table::default()
            .int("id", objs.iter().map(|o| Some(o.id as i64)).collect())
            .text("dataset", objs.iter().map(|o| s(&o.dataset)).collect())
            .text("field", objs.iter().map(|o| s(&o.field)).collect())
            .text(
                "department",
                objs.iter().map(|o| s(&o.department)).collect(),
            )
            .text("provider", objs.iter().map(|o| s(&o.provider)).collect())
            .text("state", objs.iter().map(|o| s(o.state.label())).collect())
            .flag("pending", objs.iter().map(|o| o.state.is_open()).collect())
            .text("filed_on", objs.iter().map(|o| s(o.filed_on)).collect())
            .flag("filed_late", objs.iter().map(|o| o.filed_late).collect())
            .text("due", objs.iter().map(|o| s(o.due)).collect())
            .flag("overdue", obj_late.iter().map(|l| l.0).collect())
            .int("working_days_late", obj_late.iter().map(|l| l.1).collect())
            .batch()?;

        // agreements: working days left in the term, renewal due inside the window
        let ags: Vec<_> = policy.agreements.values().collect();
        let left: Vec<Option<i64>> = ags
            .iter()
            .map(|a| {
                calendar
                    .working_days_between(today, beijing_date(a.until))
                    .ok()
                    .map(i64::from)
            })
            .collect();
        let agreements = Table::default()
            .int("id", ags.iter().map(|a| Some(a.id as i64)).collect())
            .text("provider", ags.iter().map(|a| s(&a.provider)).collect())
            .text(
                "consumer_dept",
                ags.iter().map(|a| s(&a.consumer_dept)).collect(),
            )
            .text("title", ags.iter().map(|a| s(&a.title)).collect())
            .count(
                "grants",
                ags.iter().map(|a| a.grants.len() as u64).collect(),
            )
            .text(
                "until",
                ags.iter().map(|a| s(beijing_time(a.until))).collect(),
            )
            .count(
                "renewals",
                ags.iter().map(|a| a.renewals.len() as u64).collect(),
            )
            .flag("revoked", ags.iter().map(|a| a.revoked.is_some()).collect())
            .flag(
                "expired",
                ags.iter()
                    .map(|a| a.revoked.is_none() && now >= a.until)
                    .collect(),
            )
            .int("working_days_left", left.clone())
            .flag(
                "renewal_due",
                ags.iter()
                    .zip(&left)
                    .map(|(a, l)| {
                        a.revoked.is_none()
                            && now < a.until
                            && l.is_some_and(|l| l <= i64::from(RENEWAL_WINDOW_DAYS))
                    })
                    .collect(),
            )
            .batch()?;

        // late providers
        let mut lp: Vec<LateRow> = Vec::new();
        for def in catalog.datasets.values() {
            let last = store
                .versions(&def.name)?
                .into_iter()
                .filter(|m| m.operation != Operation::Compaction)
                .map(|m| m.handover.completed_at)
                .max();
            let next = match (last, period(&def.update_frequency)) {
                (Some(l), Some(p)) => Some(l + p),
                _ => None,
            };
            let late = match (last, next) {
                (None, _) => true,
                (_, Some(n)) => now > n,
                _ => false,
            };
            let days = next.filter(|_| late).map(|n| (now - n).num_days());
            lp.push((
                def.name.clone(),
                def.provider.clone(),
                def.update_frequency.clone(),
                last,
                next,
                late,
                days,
            ));
        }
        let late_providers = Table::default()
            .text("dataset", lp.iter().map(|l| s(&l.0)).collect())
            .text("provider", lp.iter().map(|l| s(&l.1)).collect())
            .text("update_frequency", lp.iter().map(|l| s(&l.2)).collect())
            .text(
                "last_delivery",
                lp.iter().map(|l| l.3.map(|t| t.to_rfc3339())).collect(),
            )
            .text(
                "next_due",
                lp.iter().map(|l| l.4.map(|t| t.to_rfc3339())).collect(),
            )
            .flag("late", lp.iter().map(|l| l.5).collect())
            .int("days_late", lp.iter().map(|l| l.6).collect())
            .batch()?;

        // denials
        let mut den: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in &records {
            let refused = text(r, "outcome") == "denied"
                || matches!(r.kind.as_str(), "policy_denied" | "act_denied");
            if refused {
                *den.entry((r.actor.clone(), r.kind.clone())).or_default() += 1;
            }
        }
        let denials = Table::default()
            .text("user", den.keys().map(|k| s(&k.0)).collect())
            .text("department", den.keys().map(|k| s(dept_of(&k.0))).collect())
            .text("kind", den.keys().map(|k| s(&k.1)).collect())
            .count("attempts", den.values().copied().collect())
            .batch()?;

        // volumes
        let mut vol: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for r in queries.iter().filter(|r| text(r, "outcome") == "allowed") {
            let e = vol
                .entry((r.actor.clone(), beijing_date(r.time).to_string()))
                .or_default();
            e.0 += 1;
            e.1 += rows_of.get(&r.seq).copied().unwrap_or(0);
        }
        let mut sizes: Vec<u64> = vol.values().map(|v| v.1).collect();
        sizes.sort_unstable();
        let median = sizes.get(sizes.len() / 2).copied().unwrap_or(0);
        let threshold = (median * UNUSUAL_FACTOR).max(UNUSUAL_FLOOR);
        let volumes = Table::default()
            .text("user", vol.keys().map(|k| s(&k.0)).collect())
            .text("department", vol.keys().map(|k| s(dept_of(&k.0))).collect())
            .text("day", vol.keys().map(|k| s(&k.1)).collect())
            .count("queries", vol.values().map(|v| v.0).collect())
            .count("rows", vol.values().map(|v| v.1).collect())
            .flag("unusual", vol.values().map(|v| v.1 > threshold).collect())
            .batch()?;

        Ok(vec![
            ("usage", usage),
            ("applications", applications),
            ("objections", objections),
            ("agreements", agreements),
            ("late_providers", late_providers),
            ("denials", denials),
            ("volumes", volumes),
        ])
    }

    /// Query the reports with SQL, as a coordinator or auditor: the tables of [`REPORTS`]
    /// (`usage`, `applications`, `objections`, `agreements`, `late_providers`, `denials`,
    /// `volumes`)
    /// through the closed surface; the query and its outcome are recorded.
    pub fn report_sql(&self, by: &str, sql: &str) -> Result<QueryResult> {
        let result = self
            .report_reader(by)
            .and_then(|auditor| self.report_tables(by, auditor))
            .and_then(|t| self.query_tables(&t, sql, "report query"));
        let body =
            serde_json::json!({ "sql": sql, "rows": result.as_ref().map(|r| r.num_rows()).ok() });
        self.record_read("report_query", by, body, result.as_ref())?;
        result
    }

    /// The standard reports as one self-contained HTML page with bar charts (inline SVG, no
    /// external resources), for a coordinator to open in a browser; recorded like a query.
    pub fn report_html(&self, by: &str) -> Result<String> {
        let result = self.report_reader(by).and_then(|auditor| {
            let tables = self.report_tables(by, auditor)?;
            let q = |sql: &str| self.query_tables(&tables, sql, "report query");
            render_html(self, &q)
        });
        self.record_read("report_html", by, serde_json::json!({}), result.as_ref())?;
        result
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Cells of a result as text, with its column names.
fn cells(r: &QueryResult) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let names = r.schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut rows = Vec::new();
    for b in &r.batches {
        let cols: Vec<ArrayRef> = b
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()?;
        for i in 0..b.num_rows() {
            rows.push(
                cols.iter()
                    .map(|c| {
                        let c = c.as_any().downcast_ref::<StringArray>();
                        c.filter(|c| c.is_valid(i))
                            .map(|c| c.value(i).to_string())
                            .unwrap_or_default()
                    })
                    .collect(),
            );
        }
    }
    Ok((names, rows))
}

fn table_html(out: &mut String, r: &QueryResult) -> Result<()> {
    let (names, rows) = cells(r)?;
    out.push_str("<table><thead><tr>");
    for n in &names {
        let _ = write!(out, "<th>{}</th>", esc(n));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(out, "<tr><td colspan=\"{}\">none</td></tr>", names.len());
    }
    for row in rows {
        out.push_str("<tr>");
        for c in row {
            let _ = write!(out, "<td>{}</td>", esc(&c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    Ok(())
}

/// A horizontal bar chart of (label, value) rows: the first column labels, the second the
/// value.
fn chart_html(out: &mut String, title: &str, r: &QueryResult) -> Result<()> {
    let (_, rows) = cells(r)?;
    let bars: Vec<(String, f64)> = rows
        .iter()
        .filter_map(|row| Some((row.first()?.clone(), row.get(1)?.parse::<f64>().ok()?)))
        .collect();
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0);
    let h = 24 * bars.len().max(1) + 8;
    let _ = write!(
        out,
        "<figure><figcaption>{}</figcaption><svg class=\"chart\" width=\"640\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = 4 + 24 * i;
        let w = (v / max * 400.0).max(1.0);
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{}\" class=\"label\">{}</text><rect class=\"bar\" x=\"200\" y=\"{y}\" width=\"{w:.1}\" height=\"18\" data-value=\"{v}\"></rect><text x=\"{:.1}\" y=\"{}\">{v}</text>",
            y + 14,
            esc(label),
            206.0 + w,
            y + 14
        );
    }
    if bars.is_empty() {
        out.push_str("<text x=\"0\" y=\"18\">no data</text>");
    }
    out.push_str("</svg></figure>");
    Ok(())
}

fn render_html(engine: &Engine, q: &dyn Fn(&str) -> Result<QueryResult>) -> Result<String> {
    let now = engine.now();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>govshare 共享运行报告</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ccc; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }} th, td {{ border: 1px solid #ccc; padding: 2px 8px; text-align: left; }}
th {{ background: #f2f2f2; }} rect.bar {{ fill: #2f6fb0; }} .label {{ font-size: 12px; }}
figure {{ margin: 0.5em 0; }} figcaption {{ font-weight: bold; font-size: 0.9em; }}
</style></head><body>
<h1>govshare 共享运行报告 · sharing report</h1>
<p>Generated {} (Beijing date {}). Every number is computed from the audit trail and the policy document.</p>
"#,
        esc(&beijing_time(now)),
        beijing_date(now)
    );
    out.push_str("<h2>Usage per department and purpose</h2>");
    chart_html(
        &mut out,
        "Queries per department",
        &q(
            "SELECT department, sum(queries) AS queries FROM usage GROUP BY department ORDER BY department",
        )?,
    )?;
    table_html(
        &mut out,
        &q("SELECT * FROM usage ORDER BY department, purpose")?,
    )?;
    out.push_str("<h2>Applications pending and overdue</h2>");
    chart_html(
        &mut out,
        "Applications by state",
        &q("SELECT state, count(*) AS n FROM applications GROUP BY state ORDER BY state")?,
    )?;
    table_html(
        &mut out,
        &q(
            "SELECT id, dataset, consumer_dept, provider, state, due, overdue, working_days_late FROM applications WHERE pending ORDER BY overdue DESC, due",
        )?,
    )?;
    out.push_str("<h2>Objections pending and overdue</h2>");
    table_html(
        &mut out,
        &q(
            "SELECT id, dataset, field, department, provider, state, due, overdue, filed_late FROM objections WHERE pending ORDER BY overdue DESC, due",
        )?,
    )?;
    out.push_str("<h2>Agreements ending soon</h2>");
    table_html(
        &mut out,
        &q(
            "SELECT id, provider, consumer_dept, title, until, working_days_left, renewal_due FROM agreements WHERE NOT revoked AND NOT expired ORDER BY working_days_left",
        )?,
    )?;
    out.push_str("<h2>Providers late against their declared update frequency</h2>");
    table_html(
        &mut out,
        &q("SELECT * FROM late_providers ORDER BY late DESC, dataset")?,
    )?;
    out.push_str("<h2>Denied attempts per user</h2>");
    chart_html(
        &mut out,
        "Denied attempts per user",
        &q(
            "SELECT user, sum(attempts) AS attempts FROM denials GROUP BY user ORDER BY attempts DESC, user",
        )?,
    )?;
    table_html(
        &mut out,
        &q("SELECT * FROM denials ORDER BY attempts DESC, user, kind")?,
    )?;
    out.push_str("<h2>Unusual volumes per user</h2>");
    let _ = write!(
        out,
        "<p>A user-day is unusual when its rows exceed {UNUSUAL_FACTOR} times the median user-day and {UNUSUAL_FLOOR} rows.</p>"
    );
    chart_html(
        &mut out,
        "Rows returned per user",
        &q("SELECT user, sum(rows) AS rows FROM volumes GROUP BY user ORDER BY rows DESC, user")?,
    )?;
    table_html(
        &mut out,
        &q("SELECT * FROM volumes WHERE unusual ORDER BY rows DESC")?,
    )?;
    // After layout, the page states how many bars it drew with a width: what a headless
    // browser test reads back.
    out.push_str(
        r#"<script>
(function () {
  var bars = document.querySelectorAll('svg.chart rect.bar');
  var drawn = 0;
  bars.forEach(function (b) { if (b.getBBox().width > 0) { drawn += 1; } });
  document.body.setAttribute('data-bars-drawn', String(drawn));
  document.body.setAttribute('data-bars', String(bars.length));
})();
</script>
</body></html>
"#,
    );
    Ok(out)
}
