//! # govshare-core
//!
//! The engine of govshare, a government data-sharing platform: the person and legal-entity
//! base databases (and any dataset declared in the catalog) stored as versioned, clustered
//! Parquet with roaring-bitmap indexes.
//!
//! ```
//! use govshare_core::{Store, ingest::{LoadOptions, Source}, synth};
//! let dir = tempfile::tempdir().expect("temp dir");
//! let store = Store::init(dir.path())?;
//! let data = synth::Synth::new(42, 1_000, 100);
//! let mut w = store.writer()?;
//! let report = w.load("person", Source::Batches(data.persons(500).collect()), &LoadOptions::default())?;
//! assert_eq!(report.manifest.live_rows, 1_000);
//! let snap = store.snapshot("person")?;
//! let in_scope = snap.scope("hukou_region_code", "430000")?; // everyone registered in Hunan
//! assert!(in_scope.len() <= 1_000);
//! # Ok::<(), govshare_core::Error>(())
//! ```
//!
//! Modules: [`ident`] validates identifiers, [`catalog`] describes datasets, [`validate`]
//! checks rows, [`ingest`] loads, [`store`] versions and reads, [`index`] holds key and bitmap
//! indexes, [`synth`] generates test data, [`quality`] reports on a file.

pub mod admin;
pub mod audit;
pub mod catalog;
pub mod engine;
pub mod error;
pub mod ident;
pub mod index;
pub mod ingest;
pub mod masks;
pub mod policy;
pub mod quality;
pub mod regions;
pub mod secured;
pub mod store;
pub mod synth;
pub mod validate;

pub use engine::{Engine, QueryResult, Session};
pub use error::{Error, Result};
pub use store::{Snapshot, Store, Writer};
