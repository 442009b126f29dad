//! Integration tests of govshare: one binary, one module per topic.

// Shared helpers: small generated stores and CSV files.
mod common;
// Full and incremental loads, encodings, lenient/strict, rejects, handover records.
mod ingest;
// Atomic commits: a load killed at any point leaves the previous version readable.
mod crash;
// Roaring-bitmap scopes equal a full scan with the same predicate (property test).
mod index;
// Catalog files, versions, history; datasets declared at run time are first-class.
mod catalog;
// The command-line tool end to end.
mod cli;
// Lifecycle attacks the .slt files cannot express: changes between queries of one session.
mod access;
// The audit trail: records per decision, fail closed, crash safety, who-accessed.
mod audit;
// Authority: roles for every act, policy edits checked by effect, separation of duties,
// grants only tighten, administrative reads decided and recorded.
mod authority;
// Bounded queries: memory, recursion and time limits, cancellation, EXPLAIN.
mod limits;
// The one gate, enumerated over Rust, C and Python entries.
mod gate;
// The working-day calendar against the State Council notices; deadline arithmetic.
mod calendar;
// Sharing workflows: applications, objections, agreements, one source per field, reports.
mod workflow;
// Reports: tables against the trail, role scoping, the page in headless Chromium.
mod reports;
// Verify mode: match / no match under a verify grant, its quotas against enumeration.
mod verify;
// Bulk export: formats, masks and scope, manifests on the trail, row and daily limits.
mod export;
// Aggregate-only grants: minimum group sizes, refusals, the daily budget.
mod aggregate;
// Open data: public accounts read open items only; k-anonymous releases on the trail.
mod opendata;
// The change feed: changes through the grant, delivered until acknowledged, exactly once.
mod feed;
// Bound parameters: values bound into the checked plan, never SQL; digests on the trail.
mod params;
// Backup and restore: every byte verified, operators only, incremental backups.
mod backup;
