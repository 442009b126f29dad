//! Error translation: DataFusion's planning and execution errors become the engine's errors,
//! and a name that resolves to nothing because it was not granted becomes an access denial
//! that says how access is obtained.

use datafusion::error::DataFusionError;

use crate::access::policy::{Decision, how_to_obtain};
use crate::catalog::Catalog;
use crate::error::Error;

use super::surface::Explain;

/// A session's explanations: a name that resolves to nothing because it was not granted
/// becomes an access denial naming dataset, field, share type and the way to obtain it.
/// Messages carry names only, never values.
pub(super) struct Denials<'a> {
    /// The current catalog.
    pub catalog: &'a Catalog,
    /// The decision the query is planned for.
    pub decision: &'a Decision,
}

impl Explain for Denials<'_> {
    fn error(&self, e: DataFusionError) -> Error {
        let (catalog, decision) = (self.catalog, self.decision);
        if let Some(field) = missing_field(&e) {
            for (name, def) in &catalog.datasets {
                if let Some(f) = def.field(&field) {
                    let granted = decision
                        .datasets()
                        .get(name)
                        .is_some_and(|a| a.fields().iter().any(|(n, _)| n == &field));
                    if !granted
                        && decision
                            .withheld()
                            .iter()
                            .any(|(d, n)| d == name && n == &field)
                    {
                        return Error::AccessDenied(format!(
                            "field {name}.{field} ({}) is granted to department '{}' for purpose '{}', but in clear it is sensitive (grade L4): it needs a session whose user the host authenticated with a second factor (003 §11)",
                            f.label,
                            decision.department(),
                            decision.purpose(),
                        ));
                    }
                    if !granted
                        && decision
                            .not_open()
                            .iter()
                            .any(|(d, n)| d == name && n == &field)
                    {
                        return Error::AccessDenied(format!(
                            "field {name}.{field} ({}) is not open to the public (open type: {}): a public account reads only items the catalog opens, conditionally open ones under the provider's approval (001 §18)",
                            f.label,
                            f.open.label(),
                        ));
                    }
                    if !granted {
                        return Error::AccessDenied(format!(
                            "field {name}.{field} ({}) is not granted to department '{}' for purpose '{}'; it is {}",
                            f.label,
                            decision.department(),
                            decision.purpose(),
                            how_to_obtain(f.share)
                        ));
                    }
                }
            }
            return Error::invalid(format!(
                "no column named '{field}' among the granted fields"
            ));
        }
        planning(e)
    }

    fn missing_table(&self, table: &str) -> Error {
        let decision = self.decision;
        match self.catalog.dataset(table) {
            Ok(def) => Error::AccessDenied(format!(
                "dataset {} ({}) is not granted to department '{}' for purpose '{}'; apply to {} through the platform",
                def.name,
                def.label,
                decision.department(),
                decision.purpose(),
                def.provider
            )),
            Err(_) => Error::NotFound(format!("no table '{table}' among the granted datasets")),
        }
    }
}

/// The audit queries' explanations: no grants to explain, a wrong name is a typo.
pub(super) struct Plain;

impl Explain for Plain {
    fn error(&self, e: DataFusionError) -> Error {
        planning(e)
    }

    fn missing_table(&self, table: &str) -> Error {
        Error::NotFound(format!("no table '{table}' (the trail is table audit_log)"))
    }
}

/// A planning error that is not about a missing name: the query is malformed (SQL, plan,
/// schema, a feature DataFusion does not implement), or it failed while being optimised
/// (constant folding can divide by zero) — see [`runtime`].
fn planning(e: DataFusionError) -> Error {
    match e {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => Error::invalid(e.to_string()),
        other => runtime(other),
    }
}

/// A DataFusion error that is not about names or the closed surface: what happened while the
/// query was optimised or ran. Matched on DataFusion's variants (the root cause's), never on
/// message text: a limit is a limit, DataFusion's own internal error is internal, an error of
/// govshare's scan keeps its kind, and the rest (division by zero, failing casts, functions
/// refusing an argument) is the query's own failure.
pub(super) fn runtime(e: DataFusionError) -> Error {
    if let DataFusionError::External(inner) = e {
        return match inner.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Error::Query(other.to_string()),
        };
    }
    let msg = e.to_string();
    match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => Error::LimitExceeded(msg),
        DataFusionError::Internal(_) => Error::Internal(msg),
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => Error::InvalidInput(msg),
        _ => Error::Query(msg),
    }
}

/// The column DataFusion could not resolve (its schema error variant, through context wrappers).
fn missing_field(e: &DataFusionError) -> Option<String> {
    use datafusion::common::SchemaError;
    match e {
        DataFusionError::SchemaError(se, _) => match se.as_ref() {
            SchemaError::FieldNotFound { field, .. } => Some(field.name.clone()),
            _ => None,
        },
        DataFusionError::Context(_, inner) => missing_field(inner),
        DataFusionError::Diagnostic(_, inner) => missing_field(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Errors get their kind from DataFusion's variant (the root cause's), not from text, and
    /// an error of govshare's own scan keeps its kind.
    #[test]
    fn runtime_errors_get_their_true_kind() {
        let kind = |e: DataFusionError| runtime(e).code();
        use crate::error::ErrorCode as C;
        assert_eq!(
            kind(DataFusionError::ResourcesExhausted("memory".into())),
            C::LimitExceeded
        );
        assert_eq!(kind(DataFusionError::Internal("bug".into())), C::Internal);
        assert_eq!(
            kind(DataFusionError::ArrowError(
                Box::new(arrow::error::ArrowError::DivideByZero),
                None
            )),
            C::QueryFailed
        );
        assert_eq!(
            kind(DataFusionError::Execution("cast failed".into())),
            C::QueryFailed
        );
        assert_eq!(
            kind(DataFusionError::Context(
                "while running".into(),
                Box::new(DataFusionError::ResourcesExhausted("memory".into()))
            )),
            C::LimitExceeded
        );
        assert_eq!(
            kind(DataFusionError::External(Box::new(Error::Corrupt(
                "bad file".into()
            )))),
            C::Integrity
        );
    }
}
