//! One source per field (一数一源): a load delivered by a department that is not a field's
//! authoritative source does not overwrite that field's value in force when it disagrees — it
//! keeps the authoritative value and records a [`Conflict`] (key, field, both departments,
//! never either value) for the authoritative source to resolve.
//!
//! What counts as disagreeing: the subject exists in the version in force, its value there is
//! not null, and the delivered value differs (a delivered null included). A new subject, or a
//! value filling a null, is no disagreement and is written.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, make_comparator};
use arrow::compute::SortOptions;
use arrow::compute::kernels::{cast::cast, concat::concat_batches, interleave::interleave};
use arrow::datatypes::DataType;
use roaring::RoaringBitmap;

use crate::catalog::DatasetDef;
use crate::error::{Error, Result};
use crate::index::KeyIndex;
use crate::store::{Conflict, Snapshot};

/// Keeps the authoritative values of one load's batches against the version in force.
pub(super) struct Authority<'a> {
    def: &'a DatasetDef,
    prev: &'a Snapshot,
    keys: Arc<KeyIndex>,
    source: String,
    /// Fields this load's source is not authoritative for.
    fields: Vec<String>,
    /// What was kept, in load order.
    pub conflicts: Vec<Conflict>,
}

impl<'a> Authority<'a> {
    /// `None` when the load's source is authoritative for every field it may write.
    pub(super) fn new(
        def: &'a DatasetDef,
        prev: &'a Snapshot,
        source: &str,
    ) -> Result<Option<Self>> {
        let fields: Vec<String> = def
            .fields
            .iter()
            .filter(|f| f.name != def.key && def.source_of(f) != source)
            .map(|f| f.name.clone())
            .collect();
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(Authority {
            def,
            prev,
            keys: prev.key_index()?,
            source: source.to_string(),
            fields,
            conflicts: Vec::new(),
        }))
    }

    /// `batch` (validated rows in the dataset's schema) with the authoritative value kept
    /// wherever this load's value disagrees with it.
    pub(super) fn keep(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let keys = cast(
            batch
                .column_by_name(&self.def.key)
                .ok_or_else(|| Error::internal("validated rows without their key"))?,
            &DataType::Utf8,
        )?;
        let keys = keys
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::internal("key cast to text"))?;
        let mut found: Vec<(usize, u32)> = Vec::new();
        for i in 0..keys.len() {
            if keys.is_valid(i)
                && let Some(id) = self.keys.get(keys.value(i))
            {
                found.push((i, id));
            }
        }
        if found.is_empty() {
            return Ok(batch.clone());
        }
        let ids: RoaringBitmap = found.iter().map(|(_, id)| *id).collect();
        let cols: Vec<&str> = self.fields.iter().map(String::as_str).collect();
        let read = self.prev.read(Some(&ids), Some(&cols))?;
        let Some(first) = read.first() else {
            return Ok(batch.clone());
        };
        let prev = concat_batches(&first.schema(), &read)?;
        // The read returns rows in row-id order.
        let at: HashMap<u32, usize> = ids.iter().enumerate().map(|(j, id)| (id, j)).collect();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for name in &self.fields {
            let (Some(ci), Some(old)) = (
                batch.schema().index_of(name).ok(),
                prev.column_by_name(name).cloned(),
            ) else {
                continue;
            };
            let new = batch.column(ci).clone();
            let cmp = make_comparator(new.as_ref(), old.as_ref(), SortOptions::default())?;
            let mut pick: Vec<(usize, usize)> = (0..batch.num_rows()).map(|i| (0, i)).collect();
            let mut kept = false;
            for (i, id) in &found {
                let Some(&j) = at.get(id) else { continue };
                let differs =
                    old.is_valid(j) && (new.is_null(*i) || cmp(*i, j) != std::cmp::Ordering::Equal);
                if differs {
                    pick[*i] = (1, j);
                    kept = true;
                    self.conflicts.push(Conflict {
                        key: keys.value(*i).to_string(),
                        field: name.clone(),
                        authority: self
                            .def
                            .source_of(self.def.require_field(name)?)
                            .to_string(),
                        source: self.source.clone(),
                    });
                }
            }
            if kept {
                columns[ci] = interleave(&[new.as_ref(), old.as_ref()], &pick)?;
            }
        }
        Ok(RecordBatch::try_new(batch.schema(), columns)?)
    }
}
