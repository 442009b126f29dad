//! The writer's acts and the hook through which they are authorised.
//!
//! Storage does not know who may do what — that is the policy's business, one layer up — but
//! it does know every act that changes a store. So a [`Writer`](super::Writer) is opened *for
//! a named actor* together with an [`Authorizer`], and asks it before each act; a refusal is
//! recorded on the trail and nothing is written. The public way to open a writer
//! (`Store::writer`, written in `access::policy`) passes the policy's authoriser, so no code
//! outside this crate can hold a writer that skips the policy.

use super::Store;
use crate::error::Result;

/// A change a writer makes to a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act<'a> {
    /// A load (full or incremental) of a dataset.
    Load {
        /// Dataset.
        dataset: &'a str,
    },
    /// Compaction of a dataset into a new version.
    Compact {
        /// Dataset.
        dataset: &'a str,
    },
    /// Removal of old versions of a dataset.
    Vacuum {
        /// Dataset.
        dataset: &'a str,
    },
    /// A catalog change that keeps every item's share type.
    ChangeCatalog {
        /// Datasets added or changed.
        datasets: &'a [String],
    },
    /// A change of the store's settings (query limits).
    ChangeSettings,
    /// Years added to (or corrected in) the working-day calendar.
    ChangeCalendar {
        /// The years.
        years: &'a [i32],
    },
    /// A catalog change that moves items between share types (`dataset.field`).
    Reclassify {
        /// The items reclassified.
        items: &'a [String],
    },
    /// A backup: a copy of the whole store (data, keys, trail) into another directory.
    Backup,
    /// A restore of a backup into a new store directory (authorised by the restored policy).
    Restore,
}

impl std::fmt::Display for Act<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Act::Load { dataset } => write!(f, "load {dataset}"),
            Act::Compact { dataset } => write!(f, "compact {dataset}"),
            Act::Vacuum { dataset } => write!(f, "vacuum {dataset}"),
            Act::ChangeCatalog { datasets } => {
                write!(f, "change catalog ({})", datasets.join(", "))
            }
            Act::Reclassify { items } => write!(f, "reclassify {}", items.join(", ")),
            Act::ChangeSettings => write!(f, "change the store's settings"),
            Act::Backup => write!(f, "back up the store"),
            Act::Restore => write!(f, "restore a backup of the store"),
            Act::ChangeCalendar { years } => write!(
                f,
                "change the working-day calendar ({})",
                years
                    .iter()
                    .map(|y| y.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Decides whether `actor` may do `act` on `store`; implemented by the policy.
pub trait Authorizer: Send + Sync {
    /// `Ok` when the act is allowed; otherwise an access denial naming the missing role or the
    /// rule that forbids it.
    fn authorize(&self, store: &Store, actor: &str, act: &Act<'_>) -> Result<()>;
}

/// Allows nothing: the writer a store uses for its own initialisation, whose only act (the
/// built-in catalog) is committed without asking.
pub(crate) struct Nobody;

impl Authorizer for Nobody {
    fn authorize(&self, _: &Store, actor: &str, act: &Act<'_>) -> Result<()> {
        Err(crate::error::Error::AccessDenied(format!(
            "'{actor}' may not {act}: this writer is the store's own, for initialisation only"
        )))
    }
}
