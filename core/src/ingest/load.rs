//! Loads and compaction as writer transactions: validate, cluster, index, commit the
//! manifest with its handover record.

use std::collections::BTreeMap;

use chrono::Utc;
use roaring::RoaringBitmap;

use crate::catalog::{DatasetDef, IndexKind};
use crate::durable::{failpoint, read_bitmap, write_bitmap};
use crate::error::{Error, Result};
use crate::index::KeyIndex;
use crate::store::{Act, Conflict, Handover, Manifest, Operation, Writer};
use crate::validate::{Reject, Validator};

use arrow::array::RecordBatch;

use super::cluster::{ClusteredWriter, Written, write_rejects};
use super::source::open_source;
use super::sources::Authority;
use super::{LoadMode, LoadOptions, LoadReport, Source};

impl Writer<'_> {
    /// Load `source` into `dataset` as a new version.
    ///
    /// Invalid rows are listed (row, field, reason) in a rejects file under `<store>/rejects/`.
    /// In strict mode any invalid row makes the load commit nothing ([`Error::Rejected`]);
    /// otherwise the valid rows are committed. Either way the previous version is untouched.
    pub fn load(
        &mut self,
        dataset: &str,
        source: Source,
        opts: &LoadOptions<'_>,
    ) -> Result<LoadReport> {
        crate::catalog::check_dataset_name(dataset)?;
        self.authorize(&Act::Load { dataset })?;
        let started_at = Utc::now();
        let store = self.store;
        let catalog_version = store.catalog_version()?;
        let catalog = store.catalog()?;
        let def = catalog.dataset(dataset)?.clone();
        let current = store.current_version(dataset)?;
        let prev = if current > 0 {
            Some(store.snapshot_at(dataset, current)?)
        } else {
            None
        };
        if opts.mode == LoadMode::Incremental && prev.is_none() {
            return Err(Error::invalid(format!(
                "dataset '{dataset}' has no data yet: its first load must be a full load"
            )));
        }
        let version = current + 1;
        let today = opts
            .today
            .unwrap_or_else(|| chrono::Local::now().date_naive());
        let mut validator =
            Validator::new(&catalog, &def, today, opts.mode == LoadMode::Incremental);
        let (batches, hasher) = open_source(&source, self.chain_hash())?;
        let dir = store.dataset_dir(dataset)?;
        let base = prev.as_ref().map_or(0, |p| p.manifest().total_rows());
        let cw = ClusteredWriter::new(&def, &dir, version, opts.row_group_size)?;
        let mut rejects = Vec::new();
        let mut deletes = Vec::new();
        let mut read = 0u64;
        let source_dept = if opts.handover.provider_dept.is_empty() {
            def.provider.clone()
        } else {
            opts.handover.provider_dept.clone()
        };
        // 一数一源: a source that is not authoritative for a field keeps the value in force.
        let mut authority = match &prev {
            Some(p) => Authority::new(&def, p, &source_dept)?,
            None => None,
        };
        let cw = pipeline(batches, cw, ClusteredWriter::push, |batch| {
            let checked = validator.check(&batch, read + 1)?;
            read += batch.num_rows() as u64;
            let rows = match authority.as_mut() {
                Some(a) => a.keep(&checked.rows)?,
                None => checked.rows,
            };
            rejects.extend(checked.rejects);
            deletes.extend(checked.deletes);
            if let Some(p) = opts.progress {
                p(read);
            }
            Ok(rows)
        })?;
        // The key fingerprints (half a gigabyte at 10M keys) are not needed past validation.
        let stats = std::mem::take(&mut validator.stats);
        drop(validator);
        // Incremental: which existing rows the upserts replace and the deletes remove.
        let mut removed = RoaringBitmap::new();
        let mut rows_deleted = 0u64;
        if let Some(prev) = prev.as_ref().filter(|_| opts.mode == LoadMode::Incremental) {
            let kidx = prev.key_index()?;
            for (row, key) in &deletes {
                if source_dept != def.provider {
                    rejects.push(Reject {
                        row: *row,
                        field: def.key.clone(),
                        reason: format!(
                            "delete: only the dataset's provider '{}' removes subjects",
                            def.provider
                        ),
                    });
                    continue;
                }
                match kidx.get(key) {
                    Some(id) => {
                        removed.insert(id);
                        rows_deleted += 1;
                    }
                    None => rejects.push(Reject {
                        row: *row,
                        field: def.key.clone(),
                        reason: "delete: no row with this key in the current version".into(),
                    }),
                }
            }
            rejects.sort_by_key(|r| r.row);
        }
        let rejected_rows = {
            let mut rows: Vec<u64> = rejects.iter().map(|r| r.row).collect();
            rows.dedup();
            rows.len() as u64
        };
        let rejects_file = if rejects.is_empty() {
            None
        } else {
            let p = store.root().join("rejects").join(format!(
                "{dataset}-v{version}-{}.csv",
                started_at.format("%Y%m%dT%H%M%S%.3fZ")
            ));
            write_rejects(&p, &rejects)?;
            Some(p)
        };
        if opts.strict && rejected_rows > 0 {
            let _ = std::fs::remove_dir_all(&cw.staging_dir);
            return Err(Error::Rejected {
                rejected: rejected_rows,
                total: read,
                rejects_file: rejects_file.unwrap_or_default(),
            });
        }
        if opts.mode == LoadMode::Full && read == rejected_rows && !opts.allow_empty {
            let _ = std::fs::remove_dir_all(&cw.staging_dir);
            return Err(Error::invalid(format!(
                "a full load of {read} rows of which none is valid would leave dataset \
                 '{dataset}' empty; nothing was committed (an empty dataset must be asked for: \
                 allow_empty, `--allow-empty` on the command line)"
            )));
        }
        let tag = if opts.mode == LoadMode::Full {
            "full"
        } else {
            "delta"
        };
        let written = cw.finish(if opts.mode == LoadMode::Full { 0 } else { base }, tag)?;
        let (input_digest, input_sm3) = hasher
            .lock()
            .map_err(|_| Error::internal("hasher poisoned"))?
            .finalize();
        let mut handover = Handover {
            provider_dept: source_dept.clone(),
            handover_person: opts.handover.handover_person.clone(),
            receiver: opts.handover.receiver.clone(),
            method: opts.handover.method.clone(),
            source: source.describe(),
            input_digest,
            input_sm3,
            started_at,
            completed_at: started_at,
            rows_read: read,
            rows_accepted: written.rows,
            rows_rejected: rejected_rows,
            rows_deleted,
            corrects: opts.handover.corrects.clone(),
        };
        let (operation, prev_for_merge) = match opts.mode {
            LoadMode::Full => (Operation::Full, None),
            LoadMode::Incremental => (Operation::Incremental, prev.as_ref()),
        };
        let manifest = self.assemble(
            &def,
            version,
            catalog_version,
            operation,
            written,
            prev_for_merge,
            removed,
            &mut handover,
            authority.map(|a| a.conflicts).unwrap_or_default(),
        )?;
        Ok(LoadReport {
            manifest,
            rejects_file,
            stats,
        })
    }

    /// Rewrite the live rows of the current version into clustered files without deletion
    /// vectors, as a new version with the same content.
    pub fn compact(&mut self, dataset: &str) -> Result<Manifest> {
        crate::catalog::check_dataset_name(dataset)?;
        self.authorize(&Act::Compact { dataset })?;
        let started_at = Utc::now();
        let store = self.store;
        let snap = store.snapshot(dataset)?;
        let def = snap.dataset().clone();
        let version = snap.version() + 1;
        let mut cw = ClusteredWriter::new(&def, &store.dataset_dir(dataset)?, version, 32 * 1024)?;
        for b in snap.read(None, None)? {
            cw.push(&b)?;
        }
        let written = cw.finish(0, "compact")?;
        let mut handover = Handover {
            provider_dept: snap.manifest().handover.provider_dept.clone(),
            handover_person: "govshare".into(),
            receiver: "govshare".into(),
            method: "compaction".into(),
            source: format!("{dataset} version {}", snap.version()),
            input_digest: String::new(),
            input_sm3: None,
            started_at,
            completed_at: started_at,
            rows_read: snap.manifest().live_rows,
            rows_accepted: written.rows,
            rows_rejected: 0,
            rows_deleted: 0,
            corrects: Vec::new(),
        };
        let catalog_version = snap.manifest().catalog_version;
        self.assemble(
            &def,
            version,
            catalog_version,
            Operation::Compaction,
            written,
            None,
            RoaringBitmap::new(),
            &mut handover,
            Vec::new(),
        )
    }

    /// Write indexes and deletion vectors for a new version and commit its manifest.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        &mut self,
        def: &DatasetDef,
        version: u64,
        catalog_version: u64,
        operation: Operation,
        written: Written,
        prev: Option<&crate::store::Snapshot>,
        removed: RoaringBitmap,
        handover: &mut Handover,
        conflicts: Vec<Conflict>,
    ) -> Result<Manifest> {
        let dir = self.store.dataset_dir(&def.name)?;
        let idx_dir = dir.join("index").join(format!("v{version}"));
        crate::durable::create_private_dir(&idx_dir)?;
        let mut files = Vec::new();
        let mut keys = written.keys;
        let mut bitmaps = written.bitmaps;
        let mut removed_all = removed.clone();
        if let Some(prev) = prev {
            // Upserted keys replace their old rows: those old rows are removed too.
            let old_keys = prev.key_index()?;
            for (k, _) in keys.iter() {
                if let Some(id) = old_keys.get(k) {
                    removed_all.insert(id);
                }
            }
            for (i, f) in prev.manifest().files.iter().enumerate() {
                let end = f.row_base as u64 + f.rows;
                let local: RoaringBitmap = removed_all
                    .range(f.row_base..end as u32)
                    .map(|id| id - f.row_base)
                    .collect();
                let mut nf = f.clone();
                if !local.is_empty() {
                    let mut dv = match &f.deletes {
                        Some(rel) => read_bitmap(&dir.join(rel))?,
                        None => RoaringBitmap::new(),
                    };
                    dv |= local;
                    let rel = format!("deletes/v{version}-f{i}.dv");
                    write_bitmap(&dir.join(&rel), &dv)?;
                    nf.deleted = dv.len();
                    nf.deletes = Some(rel);
                }
                files.push(nf);
            }
            for (k, id) in old_keys.iter().filter(|(_, id)| !removed_all.contains(*id)) {
                keys.push(k, id);
            }
            for field in prev.manifest().bitmap_indexes.keys() {
                let old = prev.bitmap_index(field)?;
                let new = bitmaps.entry(field.clone()).or_default();
                for (v, bm) in &old.bitmaps {
                    let kept = bm - &removed_all;
                    if !kept.is_empty() {
                        *new.bitmaps.entry(v.clone()).or_default() |= kept;
                    }
                }
            }
        }
        files.extend(written.files);
        let key_rel = format!("index/v{version}/key.idx");
        KeyIndex::build(keys)?.write(&dir.join(&key_rel))?;
        let mut bitmap_indexes = BTreeMap::new();
        for f in def.fields.iter().filter(|f| f.index != IndexKind::None) {
            let rel = format!("index/v{version}/{}.bm", f.name);
            bitmaps
                .remove(&f.name)
                .unwrap_or_default()
                .write(&dir.join(&rel))?;
            bitmap_indexes.insert(f.name.clone(), rel);
        }
        failpoint("after-data-files");
        let live_rows = files.iter().map(|f| f.rows - f.deleted).sum();
        handover.completed_at = Utc::now();
        let manifest = Manifest {
            format: crate::store::FORMAT_VERSION,
            dataset: def.clone(),
            version,
            parent: (version > 1).then(|| version - 1),
            catalog_version,
            created_at: handover.completed_at,
            operation,
            files,
            key_index: key_rel,
            bitmap_indexes,
            live_rows,
            handover: handover.clone(),
            committed_by: self.actor().to_string(),
            anchor: Some(self.anchor()?),
            conflicts,
        };
        self.commit_manifest(&manifest)?;
        Ok(manifest)
    }
}

/// Runs a load's three stages on their own threads, each a batch or two ahead of the next:
/// decoding `batches`, `check` (on the calling thread; validation itself uses both cores, by
/// column), and `stage` into `sink`. Each alone keeps one core busy at most; together they
/// keep both busy. Every stage is joined before this returns, and a stage that fails or
/// panics makes the whole an error: a reader that died mid-stream must not look like the end
/// of the input.
pub(super) fn pipeline<S: Send>(
    batches: impl Iterator<Item = Result<RecordBatch>> + Send,
    sink: S,
    mut stage: impl FnMut(&mut S, &RecordBatch) -> Result<()> + Send,
    mut check: impl FnMut(RecordBatch) -> Result<RecordBatch>,
) -> Result<S> {
    std::thread::scope(|s| {
        let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel(2);
        let reader = s.spawn(move || {
            for batch in batches {
                // A closed channel means the load stopped: stop reading.
                if raw_tx.send(batch).is_err() {
                    return;
                }
            }
        });
        let (ok_tx, ok_rx) = std::sync::mpsc::sync_channel::<RecordBatch>(2);
        let stager = s.spawn(move || {
            let mut sink = sink;
            for rows in ok_rx {
                stage(&mut sink, &rows)?;
            }
            Ok(sink)
        });
        let checked = (|| {
            // Both channel ends are moved in, and dropped when this returns: the reader and
            // the stager then stop.
            let ok_tx = ok_tx;
            for batch in raw_rx {
                if ok_tx.send(check(batch?)?).is_err() {
                    break; // the stager failed: its error is returned below
                }
            }
            Ok::<_, Error>(())
        })();
        let read = reader
            .join()
            .map_err(|_| Error::internal("the source reader panicked"));
        let staged = stager
            .join()
            .map_err(|_| Error::internal("the staging thread panicked"))
            .and_then(|r| r);
        checked?;
        read?;
        staged
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Int32Array, RecordBatch};

    fn batch(v: i32) -> Result<RecordBatch> {
        Ok(RecordBatch::try_from_iter([(
            "v",
            Arc::new(Int32Array::from(vec![v])) as _,
        )])?)
    }

    fn staged(
        batches: impl Iterator<Item = Result<RecordBatch>> + Send,
        stage_fails_at: Option<i32>,
        check_fails_at: Option<i32>,
    ) -> Result<Vec<i32>> {
        let value = |b: &RecordBatch| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int32Array>()
                .map_or(-1, |a| a.value(0))
        };
        pipeline(
            batches,
            Vec::new(),
            |sink: &mut Vec<i32>, b| {
                if Some(value(b)) == stage_fails_at {
                    return Err(Error::invalid("stage failed"));
                }
                sink.push(value(b));
                Ok(())
            },
            |b| {
                if Some(value(&b)) == check_fails_at {
                    return Err(Error::invalid("check failed"));
                }
                Ok(b)
            },
        )
    }

    /// Every batch reaches the sink in order; a failing check, a failing stage, a source
    /// error and a source that panics mid-stream each make the whole load an error — never
    /// a shorter input taken for the whole.
    #[test]
    fn the_pipeline_stages_everything_in_order_or_fails() {
        assert_eq!(
            staged((0..50).map(batch), None, None).expect("all"),
            (0..50).collect::<Vec<_>>()
        );
        assert!(staged((0..50).map(batch), None, Some(20)).is_err());
        assert!(staged((0..50).map(batch), Some(20), None).is_err());
        let erring = (0..50).map(|v| {
            if v == 20 {
                Err(Error::invalid("bad input"))
            } else {
                batch(v)
            }
        });
        assert!(staged(erring, None, None).is_err());
        let panicking = (0..50).map(|v| {
            if v == 20 {
                panic!("a decoder bug");
            }
            batch(v)
        });
        assert!(staged(panicking, None, None).is_err());
    }
}
