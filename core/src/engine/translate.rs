//! Error translation: DataFusion's planning and execution errors become the engine's errors,
//! and a name that resolves to nothing because it was not granted becomes an access denial
//! that says how access is obtained.

use datafusion::error::DataFusionError;

use crate::access::policy::{Decision, how_to_obtain};
use crate::catalog::Catalog;
use crate::error::Error;

/// Turn a DataFusion planning error into the error a user can act on. A name that resolves to
/// nothing because it was not granted becomes an access denial naming dataset, field, share
/// type and the way to obtain it. Messages carry names only, never values.
pub(super) fn translate(e: DataFusionError, catalog: &Catalog, decision: &Decision) -> Error {
    let msg = e.to_string();
    if let Some(field) = missing_field(&e) {
        for (name, def) in &catalog.datasets {
            if let Some(f) = def.field(&field) {
                let granted = decision
                    .datasets
                    .get(name)
                    .is_some_and(|a| a.fields.iter().any(|(n, _)| n == &field));
                if !granted {
                    return Error::AccessDenied(format!(
                        "field {name}.{field} ({}) is not granted to department '{}' for purpose '{}'; it is {}",
                        f.label,
                        decision.department,
                        decision.purpose,
                        how_to_obtain(f.share)
                    ));
                }
            }
        }
        return Error::invalid(format!(
            "no column named '{field}' among the granted fields"
        ));
    }
    if let Some(table) = missing_table(&msg) {
        if let Ok(def) = catalog.dataset(&table) {
            return Error::AccessDenied(format!(
                "dataset {} ({}) is not granted to department '{}' for purpose '{}'; apply to {} through the platform",
                def.name, def.label, decision.department, decision.purpose, def.provider
            ));
        }
        return Error::NotFound(format!("no table '{table}' among the granted datasets"));
    }
    // SQLOptions' refusals of DDL, DML (COPY included) and statements (SET, PREPARE...).
    for kind in [
        "DDL not supported",
        "DML not supported",
        "Statement not supported",
    ] {
        if msg.contains(kind) {
            return Error::AccessDenied(format!("only queries are allowed ({kind})"));
        }
    }
    match e {
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            Error::invalid(msg)
        }
        DataFusionError::NotImplemented(m) => {
            if m.contains("DDL")
                || m.contains("DML")
                || m.contains("Statement")
                || m.to_lowercase().contains("not supported")
            {
                Error::AccessDenied(format!("only queries are allowed: {m}"))
            } else {
                Error::invalid(m)
            }
        }
        other => Error::invalid(other.to_string()),
    }
}

pub(super) fn missing_field(e: &DataFusionError) -> Option<String> {
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

pub(super) fn missing_table(msg: &str) -> Option<String> {
    // "table 'govshare.public.person' not found"
    let start = msg.find("table '")? + 7;
    let rest = &msg[start..];
    let end = rest.find('\'')?;
    if !rest[end..].starts_with("' not found") {
        return None;
    }
    Some(
        rest[..end]
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_string(),
    )
}
