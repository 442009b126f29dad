//! Data-quality report on an input file: completeness and validity per field, duplicate keys,
//! and consistency of the citizen ID with `birth_date` and `sex_code` — without loading it.

use chrono::NaiveDate;

use crate::catalog::Catalog;
use crate::error::Result;
use crate::ingest::{Source, raw_batches};
use crate::validate::{QualityStats, Reject, Validator};

/// The report: counts plus the first rejections as examples.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QualityReport {
    /// Dataset checked against.
    pub dataset: String,
    /// Counts.
    pub stats: QualityStats,
    /// Up to 20 example rejections (row, field, reason; never values).
    pub examples: Vec<Reject>,
}

impl std::fmt::Display for QualityReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "quality report for dataset '{}': {} rows, {} with errors",
            self.dataset, s.rows, s.rows_rejected
        )?;
        writeln!(f, "{:<24} {:>12} {:>10}", "field", "complete", "valid")?;
        for name in &s.order {
            writeln!(
                f,
                "{:<24} {:>11.2}% {:>9.2}%",
                name,
                100.0 * s.completeness(name),
                100.0 * s.validity(name)
            )?;
        }
        writeln!(f, "duplicate keys: {}", s.duplicate_keys)?;
        if s.fields.contains_key("citizen_id") {
            writeln!(
                f,
                "citizen ID vs birth_date mismatches: {}",
                s.birth_date_mismatch
            )?;
            writeln!(f, "citizen ID vs sex_code mismatches: {}", s.sex_mismatch)?;
        }
        for r in &self.examples {
            writeln!(f, "  row {}: {}: {}", r.row, r.field, r.reason)?;
        }
        Ok(())
    }
}

/// Validate `source` against `dataset` of `catalog` and report.
pub fn report(
    catalog: &Catalog,
    dataset: &str,
    source: &Source,
    today: NaiveDate,
) -> Result<QualityReport> {
    let def = catalog.dataset(dataset)?;
    let mut v = Validator::new(catalog, def, today, true);
    let mut examples = Vec::new();
    let mut read = 0u64;
    for batch in raw_batches(source)? {
        let batch = batch?;
        let checked = v.check(&batch, read + 1)?;
        read += batch.num_rows() as u64;
        for r in checked.rejects {
            if examples.len() < 20 {
                examples.push(r);
            }
        }
    }
    Ok(QualityReport {
        dataset: dataset.to_string(),
        stats: v.stats,
        examples,
    })
}
