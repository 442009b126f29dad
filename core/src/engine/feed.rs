//! The change feed (push, 推送): per subscription — a grant in push mode — the inserts, updates
//! and deletes of its dataset between the version the subscriber last acknowledged and the
//! current one, as the grant shows them (its fields, masks and scope, applied to both
//! versions: a subject that leaves the scope is delivered as a delete).
//!
//! Delivery is exactly once per subscriber with the subscriber's help, the way Kafka consumers
//! commit offsets: a read returns the changes up to a version *token* and moves nothing; the
//! subscriber applies them and then acknowledges the token, which is recorded on the trail and
//! then written durably as the subscription's cursor. A subscriber that dies between reading
//! and acknowledging reads the same changes again (the same token) — nothing it applied twice
//! if it applies a token once, nothing lost either way; an engine that dies before the cursor
//! is written leaves the cursor where it was.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A subscription's cursor: the last version its subscriber acknowledged (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Cursor {
    pub(super) acked: u64,
}

fn path(root: &Path, grant: u64) -> PathBuf {
    root.join("feeds").join(format!("grant-{grant}.json"))
}

/// The cursor of grant `grant`'s subscription.
pub(super) fn cursor(root: &Path, grant: u64) -> Result<Cursor> {
    let p = path(root, grant);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Cursor::default()),
        Err(e) => Err(Error::Io { path: p, source: e }),
    }
}

/// Move grant `grant`'s cursor to `acked`, durably.
pub(super) fn set_cursor(root: &Path, grant: u64, acked: u64) -> Result<()> {
    let p = path(root, grant);
    if let Some(dir) = p.parent() {
        crate::durable::create_private_dir(dir)?;
    }
    let bytes = serde_json::to_vec(&Cursor { acked }).map_err(|e| Error::Serde {
        what: "feed cursor".into(),
        message: e.to_string(),
    })?;
    crate::durable::write_durable(&p, &bytes)
}

/// The rows that can differ between two versions of a dataset, as (row ids in `old`, row ids
/// in `new`). Data files are immutable and shared between versions by path, and a version only
/// ever adds files and deletes rows: a row of a file both versions hold, live in both, is the
/// same row. So the candidates are the rows of files only `old` holds and the rows `new`
/// deleted from shared files (old side), and the rows of files only `new` holds (new side) —
/// a catch-up costs what changed, not the table. (After a compaction every file is new and
/// the comparison covers everything, with the same result.)
pub(super) fn changed_rows(
    old: &crate::store::Snapshot,
    new: &crate::store::Snapshot,
) -> Result<(roaring::RoaringBitmap, roaring::RoaringBitmap)> {
    use roaring::RoaringBitmap;
    let in_new: std::collections::HashMap<&str, usize> = new
        .manifest()
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.path.as_str(), i))
        .collect();
    let in_old: std::collections::HashSet<&str> = old
        .manifest()
        .files
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    let mut old_rows = RoaringBitmap::new();
    for (i, f) in old.manifest().files.iter().enumerate() {
        let live = old.file_rows(i, None)?;
        let gone = match in_new.get(f.path.as_str()) {
            None => live,
            Some(&j) => live - new.file_rows(j, None)?,
        };
        old_rows.extend(gone.iter().map(|o| o + f.row_base));
    }
    let mut new_rows = RoaringBitmap::new();
    for (j, f) in new.manifest().files.iter().enumerate() {
        if !in_old.contains(f.path.as_str()) {
            let live = new.file_rows(j, None)?;
            new_rows.extend(live.iter().map(|o| o + f.row_base));
        }
    }
    Ok((old_rows, new_rows))
}

/// The SQL that lists the changes from table `old` to table `new` keyed by `key`, over the
/// granted `fields` (both tables have exactly these columns): `_op` then the fields — new
/// values for inserts and updates, the last delivered values for deletes.
pub(super) fn changes_sql(key: &str, fields: &[String]) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let k = q(key);
    let changed = fields
        .iter()
        .filter(|f| f.as_str() != key)
        .map(|f| format!("(n.{0} IS DISTINCT FROM o.{0})", q(f)))
        .collect::<Vec<_>>();
    let changed = if changed.is_empty() {
        "FALSE".to_string()
    } else {
        changed.join(" OR ")
    };
    format!(
        "SELECT 'insert' AS _op, n.* FROM new n WHERE NOT EXISTS (SELECT 1 FROM old o WHERE o.{k} = n.{k}) \
         UNION ALL \
         SELECT 'update' AS _op, n.* FROM new n JOIN old o ON n.{k} = o.{k} WHERE {changed} \
         UNION ALL \
         SELECT 'delete' AS _op, o.* FROM old o WHERE NOT EXISTS (SELECT 1 FROM new n WHERE n.{k} = o.{k})"
    )
}
