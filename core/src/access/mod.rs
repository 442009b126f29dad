//! The access layer: who may see what, decided once per query, and the scan that enforces it.
//!
//! - [`policy`]: principals, roles, grants and the one decision point, [`policy::Policy::decide`];
//! - [`secured`]: the secured table and its leaf scan (row-scope barrier, masks applied inside);
//! - [`masks`]: the masked values themselves;
//! - [`counts`]: grouped counts answered from the bitmaps of a secured table's scope;
//! - [`verify`]: match / no-match answers to claimed values under a verify decision;
//! - [`quota`]: the per-grant verify counters, shared by every process on a store;
//! - [`aggregate`]: the rules and rewrite of queries under aggregate-only grants;
//! - [`anonymize`]: k-anonymous generalisation for open-data releases.
//!
//! Everything here may import storage and the base modules; nothing below imports it.

pub mod aggregate;
pub mod anonymize;
pub mod counts;
pub mod masks;
pub mod policy;
pub mod quota;
pub mod secured;
pub mod verify;
