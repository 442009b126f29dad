//! The audit queries: who accessed a subject, and the trail itself as table `audit_log`
//! through the closed SQL surface. They live with the engine, not with the trail, because they
//! need the store (key → row id per version) and the query pipeline.

use std::sync::Arc;

use arrow::array::RecordBatch;
use chrono::Utc;

use crate::access::policy::Role;
use crate::error::{Error, Result};
use crate::store::Store;

use super::{Engine, QueryResult};

/// One access to a subject, from the audit trail.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Access {
    /// Sequence number of the query's opening record.
    pub query_seq: u64,
    /// When the query completed.
    pub time: chrono::DateTime<Utc>,
    /// Real-name user.
    pub user: String,
    /// Department.
    pub department: String,
    /// Declared purpose.
    pub purpose: String,
    /// Dataset read.
    pub dataset: String,
    /// Data version read.
    pub version: u64,
    /// The query text.
    pub sql: String,
    /// Whether the query completed (its completion record names the rows it read). `false`:
    /// the process died first, and every subject its scope covered is counted as possibly
    /// read — the opening record, durable before the first batch, names the grant and data
    /// version that fix that scope.
    pub finished: bool,
}

impl Engine {
    /// Who accessed this subject (a citizen ID or USCC), asked by auditor `by` (the question is
    /// recorded, without the key): every completed query whose secured scan emitted the
    /// subject's row — after the row scope and deletions, before any of the query's own filters
    /// (which all run above the scan) — and every administrative lookup of it. That is the
    /// documented meaning of "read": a row that left the barrier was read, whether or not it
    /// reached the result. An auditor's own acts are not in the answer: another auditor audits
    /// them.
    pub fn who_accessed(&self, by: &str, key: &str) -> Result<Vec<Access>> {
        let outcome = self
            .store()
            .policy()
            .and_then(|p| {
                p.require(by, Role::Auditor, "ask who accessed a subject")
                    .map(drop)
            })
            .and_then(|()| self.accesses(key))
            .map(|mut hits| {
                hits.retain(|a| a.user != by);
                hits
            });
        self.record_read(
            "who_accessed",
            by,
            serde_json::json!({}),
            outcome.as_ref().map(Vec::len),
        )?;
        outcome
    }

    fn accesses(&self, key: &str) -> Result<Vec<Access>> {
        let store = self.store();
        let records = self.inner.audit.records()?;
        let opened: std::collections::HashMap<u64, &crate::audit::Record> = records
            .iter()
            .filter(|r| r.kind == "query")
            .map(|r| (r.seq, r))
            .collect();
        let mut rows_by_version: std::collections::HashMap<(String, u64), Option<u32>> =
            Default::default();
        let mut out = Vec::new();
        for r in records.iter().filter(|r| r.kind == "admin_lookup") {
            let (Some(dataset), Some(version), Some(row)) = (
                r.body.get("dataset").and_then(|v| v.as_str()),
                r.body.get("version").and_then(|v| v.as_u64()),
                r.body.get("row").and_then(|v| v.as_u64()),
            ) else {
                continue;
            };
            let here = match store.snapshot_at(dataset, version) {
                Ok(snap) => snap.lookup(key)?,
                Err(Error::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            if here.map(u64::from) == Some(row) {
                let text = |k: &str| {
                    r.body
                        .get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_string()
                };
                out.push(Access {
                    query_seq: r.seq,
                    time: r.time,
                    user: r.actor.clone(),
                    department: text("department"),
                    purpose: format!("administrative lookup: {}", text("reason")),
                    dataset: dataset.to_string(),
                    version,
                    sql: String::new(),
                    finished: true,
                });
            }
        }
        for r in records.iter().filter(|r| r.kind == "query_end") {
            let Some(subjects) = r.body.get("subjects").and_then(|s| s.as_object()) else {
                continue;
            };
            for (dataset, info) in subjects {
                let version = info.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
                let row = match rows_by_version.entry((dataset.clone(), version)) {
                    std::collections::hash_map::Entry::Occupied(e) => *e.get(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let id = match store.snapshot_at(dataset, version) {
                            Ok(snap) => snap.lookup(key)?,
                            // A vacuumed version can no longer map keys to rows.
                            Err(Error::NotFound(_)) => None,
                            Err(e) => return Err(e),
                        };
                        *v.insert(id)
                    }
                };
                let Some(row) = row else { continue };
                let read = subjects_read(store, info, row, r.seq)?;
                if read {
                    let q = r
                        .body
                        .get("query")
                        .and_then(|q| q.as_u64())
                        .and_then(|q| opened.get(&q));
                    let field = |k: &str| {
                        q.and_then(|q| q.body.get(k))
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_string()
                    };
                    out.push(Access {
                        query_seq: q.map_or(0, |q| q.seq),
                        time: r.time,
                        user: r.actor.clone(),
                        department: field("department"),
                        purpose: field("purpose"),
                        dataset: dataset.clone(),
                        version,
                        sql: q.map_or_else(String::new, |q| request_text(&q.body)),
                        finished: true,
                    });
                }
            }
        }
        self.unfinished(key, &records, &mut out)?;
        Ok(out)
    }

    /// Queries opened and allowed but never completed (a killed process): the subject counts
    /// as read when it lies in the scope of the grant the opening record names, at the data
    /// version it names.
    fn unfinished(
        &self,
        key: &str,
        records: &[crate::audit::Record],
        out: &mut Vec<Access>,
    ) -> Result<()> {
        let ended: std::collections::HashSet<u64> = records
            .iter()
            .filter(|r| r.kind == "query_end")
            .filter_map(|r| r.body.get("query").and_then(|q| q.as_u64()))
            .collect();
        let open = records
            .iter()
            .filter(|r| r.kind == "query" && r.body["outcome"] == "allowed")
            .filter(|r| !ended.contains(&r.seq));
        let mut policy = None;
        for r in open {
            let Some(datasets) = r.body.get("datasets").and_then(|d| d.as_object()) else {
                continue;
            };
            for (dataset, info) in datasets {
                let (Some(grant), Some(version)) =
                    (info["grant"].as_u64(), info["version"].as_u64())
                else {
                    continue;
                };
                let snap = match self.store().snapshot_at(dataset, version) {
                    Ok(s) => s,
                    Err(Error::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                let Some(row) = snap.lookup(key)? else {
                    continue;
                };
                if policy.is_none() {
                    policy = Some(self.store().policy()?);
                }
                let Some(g) = policy.as_ref().and_then(|p| p.grants.get(&grant)) else {
                    continue;
                };
                if !crate::access::secured::scope_rows(&snap, &g.request.scope)?.contains(row) {
                    continue;
                }
                let text = |k: &str| r.body[k].as_str().unwrap_or_default().to_string();
                out.push(Access {
                    query_seq: r.seq,
                    time: r.time,
                    user: r.actor.clone(),
                    department: text("department"),
                    purpose: text("purpose"),
                    dataset: dataset.clone(),
                    version,
                    sql: request_text(&r.body),
                    finished: false,
                });
            }
        }
        Ok(())
    }

    /// Query the audit trail with SQL as table `audit_log` (seq, time, kind, actor,
    /// department, purpose, sql, outcome, body). An auditor sees every record but their own
    /// acts (an auditor does not audit themselves); any other active user only the records of
    /// their own department. The same closed surface applies, and the query itself is
    /// recorded.
    pub fn audit_sql(&self, user: &str, sql: &str) -> Result<QueryResult> {
        use arrow::array::{StringArray, UInt64Array};
        let policy = self.store().policy()?;
        let u = policy.users.get(user);
        let active = u.is_some_and(|u| {
            u.status == crate::access::policy::PrincipalStatus::Active
                && policy
                    .departments
                    .get(&u.department)
                    .is_some_and(|d| d.status == crate::access::policy::PrincipalStatus::Active)
        });
        let Some(u) = u.filter(|_| active) else {
            let e = Error::AccessDenied(format!(
                "user '{user}' is unknown, or they or their department are suspended"
            ));
            self.inner.audit.append(
                "audit_query",
                user,
                serde_json::json!({ "sql": sql, "outcome": "denied", "reason": e.to_string() }),
            )?;
            return Err(e);
        };
        let auditor = u.roles.contains(&crate::access::policy::Role::Auditor);
        let dept_of = |actor: &str| {
            policy
                .users
                .get(actor)
                .map(|x| x.department.clone())
                .unwrap_or_default()
        };
        let records = self.inner.audit.records()?;
        let rows: Vec<_> = records
            .iter()
            .map(|r| {
                let dept = r
                    .body
                    .get("department")
                    .and_then(|d| d.as_str())
                    .map(String::from)
                    .unwrap_or_else(|| dept_of(&r.actor));
                (r, dept)
            })
            .filter(|(r, d)| {
                if auditor {
                    r.actor != user
                } else {
                    d == &u.department
                }
            })
            .collect();
        let text = |f: &dyn Fn(&crate::audit::Record, &String) -> Option<String>| -> StringArray {
            rows.iter().map(|(r, d)| f(r, d)).collect()
        };
        let field = |k: &'static str| {
            move |r: &crate::audit::Record, _: &String| {
                r.body.get(k).and_then(|v| v.as_str()).map(String::from)
            }
        };
        let schema = Arc::new(arrow::datatypes::Schema::new(
            [
                "seq",
                "time",
                "kind",
                "actor",
                "department",
                "purpose",
                "sql",
                "outcome",
                "body",
            ]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                arrow::datatypes::Field::new(
                    *n,
                    if i == 0 {
                        arrow::datatypes::DataType::UInt64
                    } else {
                        arrow::datatypes::DataType::Utf8
                    },
                    true,
                )
            })
            .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(rows.iter().map(|(r, _)| r.seq).collect::<UInt64Array>()),
                Arc::new(text(&|r, _| Some(r.time.to_rfc3339()))),
                Arc::new(text(&|r, _| Some(r.kind.clone()))),
                Arc::new(text(&|r, _| Some(r.actor.clone()))),
                Arc::new(text(&|_, d| Some(d.clone()))),
                Arc::new(text(&field("purpose"))),
                Arc::new(text(&field("sql"))),
                Arc::new(text(&field("outcome"))),
                Arc::new(text(&|r, _| Some(r.body.to_string()))),
            ],
        )?;
        let result = self.query_tables(&[("audit_log", batch)], sql, "audit query");
        let body = match &result {
            Ok(r) => {
                serde_json::json!({ "sql": sql, "outcome": "allowed", "scope": if auditor { "all" } else { "own department" }, "rows": r.num_rows() })
            }
            Err(e) => {
                serde_json::json!({ "sql": sql, "outcome": "denied", "reason": e.to_string() })
            }
        };
        self.inner.audit.append("audit_query", user, body)?;
        result
    }
}

/// Whether row `row` is among the rows a completion record (`info`, one dataset's entry of
/// `subjects`) says were read: a range, a list of ids, or a bitmap file checked against the
/// digest on the chain.
fn subjects_read(store: &Store, info: &serde_json::Value, row: u32, seq: u64) -> Result<bool> {
    if let Some(range) = info.get("row_range").and_then(|r| r.as_array()) {
        let bound = |i: usize| range.get(i).and_then(|v| v.as_u64());
        let (Some(lo), Some(hi)) = (bound(0), bound(1)) else {
            return Err(Error::Corrupt(format!(
                "audit record {seq}: malformed row range"
            )));
        };
        return Ok((lo..hi).contains(&(row as u64)));
    }
    if let Some(ids) = info.get("row_ids").and_then(|r| r.as_array()) {
        return Ok(ids.iter().any(|v| v.as_u64() == Some(row as u64)));
    }
    let file = info
        .get("bitmap")
        .and_then(|b| b.as_str())
        .unwrap_or_default();
    let path = store.root().join("audit").join("subjects").join(file);
    let bytes = std::fs::read(&path).map_err(|e| Error::Io {
        path: path.clone(),
        source: e,
    })?;
    let want = info
        .get("bitmap_blake3")
        .and_then(|d| d.as_str())
        .unwrap_or_default();
    if blake3::hash(&bytes).to_hex().as_str() != want {
        return Err(Error::Corrupt(format!(
            "subject bitmap {} does not match its audit record {seq}",
            path.display(),
        )));
    }
    let bm = roaring::RoaringBitmap::deserialize_from(&bytes[..])
        .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
    Ok(bm.contains(row))
}

/// What an opening record says was asked: its SQL, or for a lookup by key how many keys (the
/// trail holds the rows read, not the keys asked).
fn request_text(body: &serde_json::Value) -> String {
    if let Some(v) = body.get("verify") {
        let fields: Vec<&str> = v["fields"]
            .as_array()
            .map(|f| f.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        return format!(
            "verify {} in {} ({} checks)",
            fields.join(", "),
            v["dataset"].as_str().unwrap_or_default(),
            v["checks"].as_u64().unwrap_or(0)
        );
    }
    if let Some(c) = body.get("changes") {
        return format!(
            "changes of {} (version {} to {})",
            c["dataset"].as_str().unwrap_or_default(),
            c["from"].as_u64().unwrap_or(0),
            c["to"].as_u64().unwrap_or(0)
        );
    }
    if let Some(a) = body.get("aggregate") {
        return format!("aggregate: {}", a.as_str().unwrap_or_default());
    }
    if let Some(x) = body.get("export") {
        return format!(
            "export of {} ({})",
            x["dataset"].as_str().unwrap_or_default(),
            x["format"].as_str().unwrap_or_default()
        );
    }
    match body.get("lookup") {
        Some(l) => format!(
            "lookup by key in {} ({} keys)",
            l["dataset"].as_str().unwrap_or_default(),
            l["keys"].as_u64().unwrap_or(0)
        ),
        None => body["sql"].as_str().unwrap_or_default().to_string(),
    }
}
