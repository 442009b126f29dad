//! The catalog commands: list, show, history, apply.

use govshare_core::catalog::{CatalogFile, ShareType};
use std::path::Path;

use govshare_core::{Engine, Error};

use super::args::*;

pub(super) fn share_label(s: ShareType) -> &'static str {
    match s {
        ShareType::Unconditional => "unconditional",
        ShareType::Conditional => "conditional",
        ShareType::NotShared => "not shared",
    }
}

pub(super) fn run(path: &Path, action: CatalogCmd) -> Result<(), Error> {
    // The catalog is published to every department (it is what they apply against); changing
    // it is an act of the platform administrator, or of the coordinator for reclassification.
    let engine = Engine::open(path)?;
    match action {
        CatalogCmd::List { by } => {
            let v = engine.catalog(&by)?;
            let c = v.catalog;
            out!("catalog version {}", v.version);
            out!(
                "{:<16} {:<18} {:>6} {:>14} {:>12} {:>11}  provider",
                "dataset",
                "label",
                "fields",
                "unconditional",
                "conditional",
                "not shared"
            );
            for d in c.datasets.values() {
                let count = |s| d.fields.iter().filter(|f| f.share == s).count();
                out!(
                    "{:<16} {:<14} {:>6} {:>14} {:>12} {:>11}  {}",
                    d.name,
                    d.label,
                    d.fields.len(),
                    count(ShareType::Unconditional),
                    count(ShareType::Conditional),
                    count(ShareType::NotShared),
                    d.provider
                );
            }
        }
        CatalogCmd::Show {
            dataset,
            version,
            by,
        } => {
            let c = match version {
                Some(v) => {
                    engine
                        .catalog_history(&by)?
                        .into_iter()
                        .find(|c| c.version == v)
                        .ok_or_else(|| Error::NotFound(format!("catalog version {v}")))?
                        .catalog
                }
                None => engine.catalog(&by)?.catalog,
            };
            let d = c.dataset(&dataset)?;
            out!(
                "{} {} — key {}, clustered by {}, provider {}",
                d.name,
                d.label,
                d.key,
                d.cluster_field.as_deref().unwrap_or("-"),
                d.provider
            );
            out!(
                "{:<22} {:<16} {:<14} {:<20} {:<14} {:<5} {:<12} index",
                "field",
                "label",
                "type",
                "standard",
                "share",
                "grade",
                "mask"
            );
            for f in &d.fields {
                out!(
                    "{:<22} {:<12} {:<14} {:<20} {:<14} {:<5} {:<12} {:?}",
                    f.name,
                    f.label,
                    f.data_type.to_string(),
                    f.standard.to_string(),
                    share_label(f.share),
                    format!("{:?}", f.grade),
                    format!("{:?}", f.mask),
                    f.index
                );
            }
        }
        CatalogCmd::History { by } => {
            for v in engine.catalog_history(&by)? {
                out!(
                    "version {} by {} at {}: {}",
                    v.version,
                    v.author,
                    v.created_at.format("%Y-%m-%d %H:%M:%S"),
                    v.note
                );
                for c in &v.changes {
                    out!("    {c}");
                }
            }
        }
        CatalogCmd::Apply { file, by, note } => {
            let f = CatalogFile::read(&file)?;
            let v = engine.apply_catalog(&by, f, &note)?;
            out!("catalog version {}", v.version);
            for c in &v.changes {
                out!("    {c}");
            }
        }
    }
    Ok(())
}
