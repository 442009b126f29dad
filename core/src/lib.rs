//! # govshare-core
//!
//! The engine of govshare, a government data-sharing platform: the person and legal-entity
//! base databases (and any dataset declared in the catalog) stored as versioned, clustered
//! Parquet with roaring-bitmap indexes.
//!
//! ```
//! use govshare_core::{Store, ingest::{LoadOptions, Source}, synth};
//! use govshare_core::access::policy::{Founder, PrincipalStatus, Role, User};
//! let dir = tempfile::tempdir().expect("temp dir");
//! // A store is created with its first platform administrator ...
//! let founder = Founder {
//!     user: "root".into(), name: "平台管理员".into(),
//!     department: "PLAT".into(), department_name: "省大数据中心".into(), region: "430000".into(),
//! };
//! let store = Store::init(dir.path(), &founder)?;
//! // ... who adds the operator that loads data: every act is done by a user with the role.
//! store.writer("root")?.update_policy("staff", |p, _| p.upsert_user(User {
//!     id: "ops".into(), name: "王芳".into(), department: "PLAT".into(),
//!     roles: vec![Role::Operator], status: PrincipalStatus::Active,
//! }))?;
//! let data = synth::Synth::new(42, 1_000, 100);
//! assert!(store.writer("root")?.load("person", Source::Batches(vec![]), &LoadOptions::default()).is_err());
//! let mut w = store.writer("ops")?;
//! let report = w.load("person", Source::Batches(data.persons(500).collect()), &LoadOptions::default())?;
//! assert_eq!(report.manifest.live_rows, 1_000);
//! let snap = store.snapshot("person")?;
//! let in_scope = snap.scope("hukou_region_code", "430000")?; // everyone registered in Hunan
//! assert!(in_scope.len() <= 1_000);
//! # Ok::<(), govshare_core::Error>(())
//! ```
//!
//! The crate is layered; each layer imports only the ones below it (ARCHITECTURE.md, and the
//! `layers` test that checks it):
//!
//! | layer | modules |
//! |---|---|
//! | engine | [`engine`] (engine, sessions, closed SQL surface, result stream, administrative acts, audit queries) |
//! | access | [`access`] ([`access::policy`], [`access::secured`], [`access::masks`]) |
//! | storage | [`store`], [`ingest`], [`index`], [`quality`] |
//! | records | [`audit`] |
//! | base | [`error`], `durable` (crate-private), [`ident`], [`regions`], [`calendar`], [`catalog`], [`validate`], [`synth`] |

pub mod access;
pub mod audit;
pub mod calendar;
pub mod catalog;
pub(crate) mod durable;
pub mod engine;
pub mod error;
pub mod ident;
pub mod index;
pub mod ingest;
pub mod quality;
pub mod regions;
pub mod store;
pub mod synth;
pub mod validate;

pub use engine::{Engine, QueryResult, Session};
pub use error::{Error, ErrorCode, Result};
pub use store::{Snapshot, Store, Writer};

/// The user guide's page for platform teams (`docs/guide/platform.md`): its Rust program runs
/// as a doctest, so the guide cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/platform.md")]
pub struct GuidePlatform;
