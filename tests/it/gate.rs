//! The one gate, enumerated: every public entry of `Engine` and `Session`, every function of
//! the C header and every public method of the Python module is listed here with how the gate
//! decides it. Entries that read or act are probed as a user who does not exist: each must be
//! refused *and* leave a record naming that user. A new entry that is not listed fails this
//! test — it must be given a decision (and a probe) before it ships.

use std::collections::BTreeSet;
use std::path::Path;

use govshare_core::Error;
use govshare_core::access::policy::{
    AuthMethod, Department, HostSystem, Login, PrincipalStatus, Treatment, User,
};
use govshare_core::catalog::CatalogFile;
use govshare_core::engine::Engine;
use govshare_core::ingest::{HandoverInfo, LoadOptions, Source};

use crate::access::{approve, request, small_store};

const GHOST: &str = "ghost";

/// How the gate treats one entry.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Gate {
    /// Decided for the named principal and recorded, allowed or refused (probed below).
    Decided,
    /// Not a read or an act: the caller's own session handle, cancellation, plumbing.
    Plumbing,
    /// The host's own handles for code that links the library (`Engine::store`,
    /// `Engine::audit`): no binding may call them (checked below). An embedded library
    /// cannot stop the process that links it (README, threat model).
    HostOnly,
}

/// Every public entry of `Engine` and `Session` (Rust).
const RUST: &[(&str, Gate)] = &[
    ("Engine::open", Gate::Plumbing),
    ("Engine::open_with_clock", Gate::Plumbing),
    ("Engine::now", Gate::Plumbing),
    ("Engine::parameter_digest", Gate::Plumbing),
    ("Engine::act", Gate::Decided),
    ("Engine::service_catalog", Gate::Decided),
    ("Engine::conflicts", Gate::Decided),
    ("Engine::report_sql", Gate::Decided),
    ("Engine::report_html", Gate::Decided),
    ("Engine::audit", Gate::HostOnly),
    ("Engine::store", Gate::HostOnly),
    ("Engine::session", Gate::Decided),
    ("Engine::session_as", Gate::Decided),
    ("Engine::upsert_system", Gate::Decided),
    ("Engine::set_system_status", Gate::Decided),
    ("Engine::writer", Gate::Decided),
    ("Engine::policy", Gate::Decided),
    ("Engine::catalog", Gate::Decided),
    ("Engine::catalog_history", Gate::Decided),
    ("Engine::versions", Gate::Decided),
    ("Engine::lookup", Gate::Decided),
    ("Engine::upsert_department", Gate::Decided),
    ("Engine::set_department_status", Gate::Decided),
    ("Engine::upsert_user", Gate::Decided),
    ("Engine::set_user_status", Gate::Decided),
    ("Engine::request_grant", Gate::Decided),
    ("Engine::decide_request", Gate::Decided),
    ("Engine::revoke_grant", Gate::Decided),
    ("Engine::load_file", Gate::Decided),
    ("Engine::load", Gate::Decided),
    ("Engine::apply_catalog", Gate::Decided),
    ("Engine::compact", Gate::Decided),
    ("Engine::vacuum", Gate::Decided),
    ("Engine::backup", Gate::Decided),
    ("Engine::release_open_data", Gate::Decided),
    ("Engine::verify_audit", Gate::Decided),
    ("Engine::verify_audit_with_progress", Gate::Decided),
    ("Engine::audit_checkpoint", Gate::Decided),
    ("Engine::repair_audit", Gate::Decided),
    ("Engine::archive_audit", Gate::Decided),
    ("Engine::purge_audit", Gate::Decided),
    ("Engine::who_accessed", Gate::Decided),
    ("Engine::audit_sql", Gate::Decided),
    ("Session::user", Gate::Plumbing),
    ("Session::purpose", Gate::Plumbing),
    ("Session::cancel", Gate::Plumbing),
    ("Session::canceller", Gate::Plumbing),
    ("Session::catalog", Gate::Decided),
    ("Session::sql", Gate::Decided),
    ("Session::sql_async", Gate::Decided),
    ("Session::sql_stream", Gate::Decided),
    ("Session::sql_params", Gate::Decided),
    ("Session::sql_params_stream", Gate::Decided),
    ("Session::lookup", Gate::Decided),
    ("Session::lookup_stream", Gate::Decided),
    ("Session::verify", Gate::Decided),
    ("Session::verify_one", Gate::Decided),
    ("Session::export", Gate::Decided),
    ("Session::aggregate", Gate::Decided),
    ("Session::aggregate_stream", Gate::Decided),
    ("Session::changes", Gate::Decided),
    ("Session::ack", Gate::Decided),
];

/// Every function of the C header, with the Rust entry it translates (or plumbing).
const C: &[(&str, &str)] = &[
    ("gs_version", "plumbing"),
    ("gs_status_name", "plumbing"),
    ("gs_last_error", "plumbing"),
    ("gs_string_free", "plumbing"),
    ("gs_store_init", "Store::init (names the founder)"),
    ("gs_engine_open", "Engine::open"),
    ("gs_engine_close", "plumbing"),
    ("gs_engine_errmsg", "plumbing"),
    ("gs_engine_upsert_department", "Engine::upsert_department"),
    (
        "gs_engine_set_department_active",
        "Engine::set_department_status",
    ),
    ("gs_engine_upsert_user", "Engine::upsert_user"),
    ("gs_engine_set_user_active", "Engine::set_user_status"),
    ("gs_engine_request_grant", "Engine::request_grant"),
    ("gs_engine_decide_request", "Engine::decide_request"),
    ("gs_engine_revoke_grant", "Engine::revoke_grant"),
    ("gs_engine_policy", "Engine::policy"),
    ("gs_engine_load", "Engine::load_file"),
    ("gs_engine_release_open_data", "Engine::release_open_data"),
    ("gs_engine_audit_verify", "Engine::verify_audit"),
    ("gs_engine_audit_checkpoint", "Engine::audit_checkpoint"),
    ("gs_engine_who_accessed", "Engine::who_accessed"),
    ("gs_engine_audit_query", "Engine::audit_sql"),
    ("gs_session_open", "Engine::session"),
    ("gs_session_open_as", "Engine::session_as"),
    ("gs_session_lookup", "Session::lookup_stream"),
    ("gs_session_verify", "Session::verify"),
    ("gs_session_export", "Session::export"),
    ("gs_session_aggregate", "Session::aggregate_stream"),
    ("gs_session_changes", "Session::changes"),
    ("gs_session_ack", "Session::ack"),
    ("gs_engine_upsert_system", "Engine::upsert_system"),
    ("gs_engine_set_system_active", "Engine::set_system_status"),
    ("gs_engine_act", "Engine::act"),
    ("gs_engine_service_catalog", "Engine::service_catalog"),
    ("gs_engine_conflicts", "Engine::conflicts"),
    ("gs_engine_report_query", "Engine::report_sql"),
    ("gs_engine_report_html", "Engine::report_html"),
    ("gs_session_close", "plumbing"),
    ("gs_session_errmsg", "plumbing"),
    ("gs_session_query", "Session::sql_stream"),
    ("gs_session_query_params", "Session::sql_params_stream"),
    ("gs_session_catalog", "Session::catalog"),
    ("gs_session_cancel", "Session::cancel"),
];

/// Every public function and method of the Python package, with the Rust entry it translates.
const PYTHON: &[(&str, &str)] = &[
    ("init_store", "Store::init (names the founder)"),
    ("write_synthetic", "plumbing (writes files, reads no store)"),
    ("grant_request", "plumbing (builds a request dict)"),
    ("connect", "Engine::session_as"),
    ("Engine.__init__", "Engine::open"),
    ("Engine.session", "Engine::session_as"),
    ("Engine.add_system", "Engine::upsert_system"),
    ("Engine.set_system_active", "Engine::set_system_status"),
    ("Engine.add_department", "Engine::upsert_department"),
    (
        "Engine.set_department_active",
        "Engine::set_department_status",
    ),
    ("Engine.add_user", "Engine::upsert_user"),
    ("Engine.set_user_active", "Engine::set_user_status"),
    ("Engine.request_grant", "Engine::request_grant"),
    ("Engine.approve", "Engine::decide_request"),
    ("Engine.reject", "Engine::decide_request"),
    ("Engine.revoke", "Engine::revoke_grant"),
    ("Engine.policy", "Engine::policy"),
    ("Engine.load", "Engine::load_file"),
    ("Engine.release_open_data", "Engine::release_open_data"),
    ("Engine.verify_audit", "Engine::verify_audit"),
    ("Engine.checkpoint", "Engine::audit_checkpoint"),
    ("Engine.who_accessed", "Engine::who_accessed"),
    ("Engine.audit_sql", "Engine::audit_sql"),
    ("Engine.act", "Engine::act"),
    ("Engine.apply", "Engine::act"),
    ("Engine.service_catalog", "Engine::service_catalog"),
    ("Engine.conflicts", "Engine::conflicts"),
    ("Engine.report_sql", "Engine::report_sql"),
    ("Engine.report_html", "Engine::report_html"),
    ("Session.__init__", "plumbing"),
    ("Session.__repr__", "plumbing"),
    ("Engine.__repr__", "plumbing"),
    ("Session.user", "Session::user"),
    ("Session.purpose", "Session::purpose"),
    ("Session.closed", "plumbing"),
    // `params=` binds placeholders.
    (
        "Session.sql",
        "Session::sql_stream, Session::sql_params_stream",
    ),
    ("Session.lookup", "Session::lookup_stream"),
    ("Session.verify", "Session::verify"),
    ("Session.export", "Session::export"),
    ("Session.aggregate", "Session::aggregate_stream"),
    ("Session.changes", "Session::changes"),
    ("Session.ack", "Session::ack"),
    ("Session.catalog", "Session::catalog"),
    ("Session.cancel", "Session::cancel"),
    ("Session.close", "plumbing"),
    ("Session.__enter__", "plumbing"),
    ("Session.__exit__", "plumbing"),
];

/// Every method of the ADBC driver (`adbc/src/lib.rs`, the ADBC traits on the driver's types),
/// with the Rust entry it translates; "refused" ones answer "not supported" without reading.
const ADBC: &[(&str, &str)] = &[
    ("GovshareDriver::new_database", "plumbing"),
    ("GovshareDriver::new_database_with_opts", "plumbing"),
    (
        "GovshareDatabase::set_option",
        "plumbing (the store's path)",
    ),
    ("GovshareDatabase::get_option_string", "plumbing"),
    ("GovshareDatabase::get_option_bytes", "plumbing"),
    ("GovshareDatabase::get_option_int", "plumbing"),
    ("GovshareDatabase::get_option_double", "plumbing"),
    ("GovshareDatabase::new_connection", "Engine::session_as"),
    (
        "GovshareDatabase::new_connection_with_opts",
        "Engine::session_as",
    ),
    (
        "GovshareConnection::set_option",
        "plumbing (read-only settings)",
    ),
    (
        "GovshareConnection::get_option_string",
        "Session::user, Session::purpose",
    ),
    ("GovshareConnection::get_option_bytes", "plumbing"),
    ("GovshareConnection::get_option_int", "plumbing"),
    ("GovshareConnection::get_option_double", "plumbing"),
    ("GovshareConnection::new_statement", "plumbing"),
    (
        "GovshareConnection::get_cancel_handle",
        "Session::canceller",
    ),
    ("GovshareConnection::get_info", "refused"),
    ("GovshareConnection::get_objects", "Session::catalog"),
    (
        "GovshareConnection::get_table_schema",
        "Session::sql_stream",
    ),
    (
        "GovshareConnection::get_table_types",
        "plumbing (a constant)",
    ),
    ("GovshareConnection::get_statistic_names", "refused"),
    ("GovshareConnection::get_statistics", "refused"),
    (
        "GovshareConnection::commit",
        "plumbing (read-only: nothing to commit)",
    ),
    ("GovshareConnection::rollback", "plumbing (read-only)"),
    ("GovshareConnection::read_partition", "refused"),
    ("GovshareStatement::set_option", "refused"),
    ("GovshareStatement::get_option_string", "plumbing"),
    ("GovshareStatement::get_option_bytes", "plumbing"),
    ("GovshareStatement::get_option_int", "plumbing"),
    ("GovshareStatement::get_option_double", "plumbing"),
    ("GovshareStatement::bind", "plumbing"),
    ("GovshareStatement::bind_stream", "plumbing"),
    (
        "GovshareStatement::execute",
        "Session::sql_stream, Session::sql_params_stream",
    ),
    ("GovshareStatement::execute_update", "refused"),
    ("GovshareStatement::execute_schema", "refused"),
    ("GovshareStatement::execute_partitions", "refused"),
    ("GovshareStatement::get_parameter_schema", "refused"),
    ("GovshareStatement::prepare", "plumbing"),
    ("GovshareStatement::set_sql_query", "plumbing"),
    ("GovshareStatement::set_substrait_plan", "refused"),
    ("GovshareStatement::get_cancel_handle", "Session::canceller"),
    ("Cancel::try_cancel", "Session::cancel"),
];

/// Methods of trait impls in the ADBC driver, as `Type::method`.
fn adbc_entries() -> BTreeSet<String> {
    let text = read("adbc/src/lib.rs");
    let mut out = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("impl ")
            && let Some((_, ty)) = rest.split_once(" for ")
        {
            current = Some(ty.trim_end_matches(" {").to_string());
        } else if line.starts_with('}') {
            current = None;
        } else if let Some(ty) = &current
            && let Some(rest) = line.strip_prefix("    fn ")
        {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(format!("{ty}::{name}"));
        }
    }
    out
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).expect("source")
}

/// `pub fn` names inside `impl <ty> {` blocks of the engine's sources.
fn rust_entries() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("core/src/engine")).expect("dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        let mut current: Option<&str> = None;
        for line in text.lines() {
            if line.starts_with("impl Engine {") {
                current = Some("Engine");
            } else if line.starts_with("impl Session {") {
                current = Some("Session");
            } else if line.starts_with('}') {
                current = None;
            } else if let Some(ty) = current
                && let Some(rest) = line
                    .trim_start()
                    .strip_prefix("pub fn ")
                    .or_else(|| line.trim_start().strip_prefix("pub async fn "))
            {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.insert(format!("{ty}::{name}"));
            }
        }
    }
    out
}

fn c_entries() -> BTreeSet<String> {
    let header = read("ffi/include/govshare.h");
    let mut out = BTreeSet::new();
    let mut rest = header.as_str();
    while let Some(i) = rest.find("gs_") {
        let tail = &rest[i..];
        let name: String = tail
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let boundary = i == 0 || !rest[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        if boundary && tail[name.len()..].starts_with('(') {
            out.insert(name.clone());
        }
        rest = &tail[name.len()..];
    }
    out
}

/// Module functions, and methods of the classes `Engine` and `Session`, that do not start
/// with an underscore (dunder methods of those classes included).
fn python_entries() -> BTreeSet<String> {
    let text = read("python/govshare/__init__.py");
    let mut out = BTreeSet::new();
    let mut class: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("class ") {
            class = Some(
                rest.split(['(', ':'])
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
            continue;
        }
        if !line.starts_with(' ') && !line.is_empty() && !line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("def ") {
                let name: String = rest.chars().take_while(|c| *c != '(').collect();
                if !name.starts_with('_') {
                    out.insert(name);
                }
            }
            if !line.starts_with("class ") && !line.starts_with('@') && !line.starts_with(')') {
                class = None;
            }
            continue;
        }
        if let (Some(c), Some(rest)) = (&class, line.strip_prefix("    def ")) {
            let name: String = rest.chars().take_while(|c| *c != '(').collect();
            let public = !name.starts_with('_') || (name.starts_with("__") && name.ends_with("__"));
            if public && (c == "Engine" || c == "Session") {
                out.insert(format!("{c}.{name}"));
            }
        }
    }
    out
}

#[test]
fn every_public_entry_is_listed_with_its_decision() {
    let listed = |t: &[&str]| -> BTreeSet<String> { t.iter().map(|s| s.to_string()).collect() };
    let rust = listed(&RUST.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    assert_eq!(
        rust_entries(),
        rust,
        "Engine/Session entries differ from the gate's list: give a new entry its decision here"
    );
    let c = listed(&C.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    assert_eq!(c_entries(), c, "C functions differ from the gate's list");
    let py = listed(&PYTHON.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    assert_eq!(
        python_entries(),
        py,
        "Python entries differ from the gate's list"
    );
    let adbc = listed(&ADBC.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    assert_eq!(
        adbc_entries(),
        adbc,
        "ADBC driver methods differ from the gate's list"
    );
    // Each binding entry translates listed Rust entries (or is plumbing, or refuses).
    for (entry, to) in C.iter().chain(PYTHON).chain(ADBC) {
        let known = to.starts_with("plumbing")
            || *to == "refused"
            || to.starts_with("Store::init")
            || to.split(", ").all(|t| RUST.iter().any(|(n, _)| t == *n));
        assert!(
            known,
            "{entry} translates {to}, which is not a listed Rust entry"
        );
    }
}

/// The bindings never reach around the gate: no unsecured read, no host-only handle.
#[test]
fn the_bindings_only_translate() {
    let forbidden = [
        "SecuredTable",
        ".read(",
        "file_reader",
        ".records()",
        ".store()",
        ".audit()",
        "Store::open",
        ".policy()",
        "snapshot(",
    ];
    for dir in ["ffi/src", "python/src", "src/cli", "adbc/src"] {
        for entry in std::fs::read_dir(root().join(dir)).expect("dir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            // The demo shows the indexes themselves (row ids and bitmap counts, no values).
            let allowed: &[&str] = if path.ends_with("demo.rs") {
                &["snapshot("]
            } else {
                &[]
            };
            for f in forbidden.iter().filter(|f| !allowed.contains(f)) {
                assert!(
                    !text.contains(f),
                    "{} uses {f}: bindings go through Engine and Session only",
                    path.display()
                );
            }
        }
    }
}

/// Every decided entry, called as a user who does not exist, is refused and recorded.
#[test]
fn every_decided_entry_refuses_a_principal_that_does_not_exist_and_records_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    approve(
        &store,
        request("A", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    let engine = Engine::open(dir.path()).expect("engine");
    let session = engine.session("a", "P").expect("session");
    let key = "11010519491231002X";
    type Probe<'a> = Box<dyn Fn() -> govshare_core::Result<()> + 'a>;
    let probes: Vec<(&str, Probe)> = vec![
        (
            "Engine::session",
            Box::new(|| engine.session(GHOST, "P").map(drop)),
        ),
        (
            "Engine::session_as",
            Box::new(|| {
                let login = Login::new(GHOST, "P", AuthMethod::SecondFactor);
                engine.session_as(&login).map(drop)
            }),
        ),
        (
            "Engine::upsert_system",
            Box::new(|| {
                engine.upsert_system(
                    GHOST,
                    HostSystem {
                        id: "hr".into(),
                        name: "人社业务系统".into(),
                        department: "A".into(),
                        status: PrincipalStatus::Active,
                    },
                )
            }),
        ),
        (
            "Engine::set_system_status",
            Box::new(|| engine.set_system_status(GHOST, "hr", PrincipalStatus::Suspended)),
        ),
        (
            "Engine::writer",
            Box::new(|| engine.writer(GHOST)?.compact("person").map(drop)),
        ),
        (
            "Engine::policy",
            Box::new(|| engine.policy(GHOST).map(drop)),
        ),
        (
            "Engine::catalog",
            Box::new(|| engine.catalog(GHOST).map(drop)),
        ),
        (
            "Engine::catalog_history",
            Box::new(|| engine.catalog_history(GHOST).map(drop)),
        ),
        (
            "Engine::versions",
            Box::new(|| engine.versions(GHOST, "person").map(drop)),
        ),
        (
            "Engine::lookup",
            Box::new(|| engine.lookup(GHOST, "why", "person", key).map(drop)),
        ),
        (
            "Engine::upsert_department",
            Box::new(|| {
                engine.upsert_department(
                    GHOST,
                    Department {
                        code: "X".into(),
                        name: "X".into(),
                        region: "430000".into(),
                        status: PrincipalStatus::Active,
                    },
                )
            }),
        ),
        (
            "Engine::set_department_status",
            Box::new(|| engine.set_department_status(GHOST, "A", PrincipalStatus::Suspended)),
        ),
        (
            "Engine::upsert_user",
            Box::new(|| {
                engine.upsert_user(
                    GHOST,
                    User {
                        id: "x".into(),
                        name: "x".into(),
                        department: "A".into(),
                        roles: vec![],
                        status: PrincipalStatus::Active,
                    },
                )
            }),
        ),
        (
            "Engine::set_user_status",
            Box::new(|| engine.set_user_status(GHOST, "a", PrincipalStatus::Suspended)),
        ),
        (
            "Engine::request_grant",
            Box::new(|| {
                engine
                    .request_grant(
                        GHOST,
                        request("A", "person", &[("sex_code", Treatment::Clear)]),
                    )
                    .map(drop)
            }),
        ),
        (
            "Engine::release_open_data",
            Box::new(|| {
                let out = tempfile::tempdir().expect("tmp");
                let spec = govshare_core::engine::ReleaseSpec {
                    dataset: "person".into(),
                    fields: vec!["sex_code".into(), "nationality_code".into()],
                    k: 5,
                    max_suppression: 0.01,
                };
                engine.release_open_data(GHOST, &spec, out.path()).map(drop)
            }),
        ),
        (
            "Engine::decide_request",
            Box::new(|| {
                engine
                    .decide_request(
                        GHOST,
                        request("A", "person", &[("name", Treatment::Clear)]),
                        true,
                        "",
                    )
                    .map(drop)
            }),
        ),
        (
            "Engine::revoke_grant",
            Box::new(|| engine.revoke_grant(GHOST, 1, "why")),
        ),
        (
            "Engine::load_file",
            Box::new(|| {
                let csv = dir.path().join("p.csv");
                std::fs::write(&csv, "citizen_id\n").expect("csv");
                engine
                    .load_file(GHOST, "person", &csv, false, false, HandoverInfo::default())
                    .map(drop)
            }),
        ),
        (
            "Engine::load",
            Box::new(|| {
                engine
                    .load(
                        GHOST,
                        "person",
                        Source::Batches(vec![]),
                        &LoadOptions::default(),
                    )
                    .map(drop)
            }),
        ),
        (
            "Engine::apply_catalog",
            Box::new(|| {
                let mut f = CatalogFile::default();
                f.datasets
                    .push(store.catalog().expect("c").datasets["person"].clone());
                f.datasets[0].label = "人口".into();
                engine.apply_catalog(GHOST, f, "x").map(drop)
            }),
        ),
        (
            "Engine::compact",
            Box::new(|| engine.compact(GHOST, "person").map(drop)),
        ),
        (
            "Engine::vacuum",
            Box::new(|| engine.vacuum(GHOST, "person", 1).map(drop)),
        ),
        (
            "Engine::backup",
            Box::new(|| {
                let out = tempfile::tempdir().expect("tmp");
                engine.backup(GHOST, &out.path().join("b"), None).map(drop)
            }),
        ),
        (
            "Engine::verify_audit",
            Box::new(|| engine.verify_audit(GHOST, None).map(drop)),
        ),
        (
            "Engine::verify_audit_with_progress",
            Box::new(|| {
                engine
                    .verify_audit_with_progress(GHOST, None, &mut |_, _| {})
                    .map(drop)
            }),
        ),
        (
            "Engine::audit_checkpoint",
            Box::new(|| engine.audit_checkpoint(GHOST).map(drop)),
        ),
        (
            "Engine::repair_audit",
            Box::new(|| engine.repair_audit(GHOST).map(drop)),
        ),
        (
            "Engine::archive_audit",
            Box::new(|| engine.archive_audit(GHOST).map(drop)),
        ),
        (
            "Engine::purge_audit",
            Box::new(|| {
                engine
                    .purge_audit(GHOST, govshare_core::audit::Retention::years(3)?)
                    .map(drop)
            }),
        ),
        (
            "Engine::who_accessed",
            Box::new(|| engine.who_accessed(GHOST, key).map(drop)),
        ),
        (
            "Engine::audit_sql",
            Box::new(|| engine.audit_sql(GHOST, "SELECT 1").map(drop)),
        ),
        (
            "Engine::act",
            Box::new(|| {
                engine
                    .act(GHOST, govshare_core::engine::WorkflowAct::Escalate)
                    .map(drop)
            }),
        ),
        (
            "Engine::service_catalog",
            Box::new(|| engine.service_catalog(GHOST).map(drop)),
        ),
        (
            "Engine::conflicts",
            Box::new(|| engine.conflicts(GHOST, None).map(drop)),
        ),
        (
            "Engine::report_sql",
            Box::new(|| engine.report_sql(GHOST, "SELECT 1").map(drop)),
        ),
        (
            "Engine::report_html",
            Box::new(|| engine.report_html(GHOST).map(drop)),
        ),
    ];
    let decided: BTreeSet<&str> = RUST
        .iter()
        .filter(|(n, g)| *g == Gate::Decided && n.starts_with("Engine::"))
        .map(|(n, _)| *n)
        .collect();
    let probed: BTreeSet<&str> = probes.iter().map(|(n, _)| *n).collect();
    assert_eq!(probed, decided, "every decided Engine entry has a probe");
    let by_ghost = || {
        engine
            .audit()
            .records()
            .expect("records")
            .iter()
            .filter(|r| r.actor == GHOST)
            .count()
    };
    for (name, probe) in &probes {
        let before = by_ghost();
        match probe() {
            Err(Error::AccessDenied(m)) => {
                assert!(
                    m.contains(GHOST),
                    "{name}: the refusal names no principal: {m}"
                )
            }
            other => panic!("{name}: a principal that does not exist was not refused: {other:?}"),
        }
        assert!(by_ghost() > before, "{name}: the refusal left no record");
    }
    // Session entries: decided per call against the current policy. Suspend `a` and every
    // decided session entry is refused, and recorded under `a`.
    store
        .writer(govshare_testkit::ROOT)
        .expect("w")
        .update_policy("suspend a", |p, _| {
            p.users.get_mut("a").expect("a").status = PrincipalStatus::Suspended;
            Ok(())
        })
        .expect("suspend");
    let by_a = || {
        engine
            .audit()
            .records()
            .expect("records")
            .iter()
            .filter(|r| r.actor == "a")
            .count()
    };
    let session_probes: Vec<(&str, Probe)> = vec![
        ("Session::catalog", Box::new(|| session.catalog().map(drop))),
        (
            "Session::sql",
            Box::new(|| session.sql("SELECT 1").map(drop)),
        ),
        (
            "Session::sql_stream",
            Box::new(|| session.sql_stream("SELECT 1").map(drop)),
        ),
        (
            "Session::sql_async",
            Box::new(|| futures::executor::block_on(session.sql_async("SELECT 1")).map(drop)),
        ),
        (
            "Session::sql_params",
            Box::new(|| session.sql_params("SELECT $1", &one_param()).map(drop)),
        ),
        (
            "Session::sql_params_stream",
            Box::new(|| {
                session
                    .sql_params_stream("SELECT $1", &one_param())
                    .map(drop)
            }),
        ),
        (
            "Session::lookup",
            Box::new(|| session.lookup("person", &[key]).map(drop)),
        ),
        (
            "Session::lookup_stream",
            Box::new(|| session.lookup_stream("person", &[key]).map(drop)),
        ),
        (
            "Session::verify",
            Box::new(|| {
                let claims = arrow::record_batch::RecordBatch::try_from_iter([
                    (
                        "citizen_id",
                        std::sync::Arc::new(arrow::array::StringArray::from(vec![key]))
                            as arrow::array::ArrayRef,
                    ),
                    (
                        "name",
                        std::sync::Arc::new(arrow::array::StringArray::from(vec!["张三"])),
                    ),
                ])
                .expect("claims");
                session.verify("person", &claims).map(drop)
            }),
        ),
        (
            "Session::verify_one",
            Box::new(|| {
                session
                    .verify_one("person", key, &[("name", "张三")])
                    .map(drop)
            }),
        ),
        (
            "Session::aggregate",
            Box::new(|| session.aggregate("SELECT count(*) FROM person").map(drop)),
        ),
        (
            "Session::changes",
            Box::new(|| session.changes("person").map(drop)),
        ),
        ("Session::ack", Box::new(|| session.ack("person", 1))),
        (
            "Session::aggregate_stream",
            Box::new(|| {
                session
                    .aggregate_stream("SELECT count(*) FROM person")
                    .map(drop)
            }),
        ),
        (
            "Session::export",
            Box::new(|| {
                let out = tempfile::tempdir().expect("tmp");
                session
                    .export(
                        "person",
                        govshare_core::engine::ExportFormat::Parquet,
                        out.path(),
                        &mut |_| {},
                    )
                    .map(drop)
            }),
        ),
    ];
    for (name, probe) in &session_probes {
        let before = by_a();
        assert!(
            matches!(probe(), Err(Error::AccessDenied(_))),
            "{name}: a suspended user was not refused"
        );
        assert!(by_a() > before, "{name}: the refusal left no record");
    }
    let decided: BTreeSet<&str> = RUST
        .iter()
        .filter(|(n, g)| *g == Gate::Decided && n.starts_with("Session::"))
        .map(|(n, _)| *n)
        .collect();
    let probed: BTreeSet<&str> = session_probes.iter().map(|(n, _)| *n).collect();
    assert_eq!(probed, decided, "every decided Session entry has a probe");
}

/// One row with one text parameter.
fn one_param() -> arrow::record_batch::RecordBatch {
    arrow::record_batch::RecordBatch::try_from_iter([(
        "$1",
        std::sync::Arc::new(arrow::array::StringArray::from(vec!["x"])) as arrow::array::ArrayRef,
    )])
    .expect("params")
}

/// The user guide's reference (`docs/guide/reference.md`) names every function of the C header
/// and every connection option of the ADBC driver, so it cannot fall behind them.
#[test]
fn the_reference_names_every_c_function_and_adbc_option() {
    let reference = read("docs/guide/reference.md");
    for f in c_entries() {
        assert!(
            reference.contains(&format!("`{f}`")),
            "{f} is missing from docs/guide/reference.md"
        );
    }
    let adbc = read("adbc/src/lib.rs");
    for line in adbc.lines().filter(|l| l.starts_with("pub const OPTION_")) {
        let option = line.split('"').nth(1).expect("an option string");
        assert!(
            reference.contains(&format!("`{option}`")),
            "{option} is missing from docs/guide/reference.md"
        );
    }
}
