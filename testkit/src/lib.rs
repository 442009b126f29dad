//! Test fixtures of govshare, in one place: generated stores, the principals and grants the
//! tests use, and the security suite's fixture with its raw reference. The integration tests,
//! the security suite, the benches, the examples and the C test set-up all build their stores
//! here instead of keeping near-copies.
//!
//! Everything here is for tests: it panics (with a message) instead of returning errors.
#![allow(clippy::unwrap_used)]

mod bindings;
mod security;

pub use bindings::{BindingsStore, bindings_store};
pub use security::{Fixture, fixture};

use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{Duration, Utc};
use govshare_core::access::policy::{
    Department, FieldGrant, Founder, GrantRequest, Mode, Policy, PrincipalStatus, Role, RowScope,
    Treatment, User,
};
use govshare_core::catalog::MaskKind;
use govshare_core::ingest::{LoadOptions, Source};
use govshare_core::synth::Synth;
use govshare_core::{Result, Store};

/// The fixtures' first platform administrator (the founder named at `init`).
pub const ROOT: &str = "root";
/// The fixtures' operator: loads, compacts, vacuums.
pub const OPS: &str = "ops";
/// The fixtures' coordinator: reclassifies items.
pub const COORD: &str = "coord";
/// The fixtures' platform department.
pub const PLATFORM: &str = "PLAT";

/// The fixtures' founder: `root`, platform administrator of `PLAT` (省大数据中心, Hunan).
pub fn founder() -> Founder {
    Founder {
        user: ROOT.into(),
        name: "平台管理员".into(),
        department: PLATFORM.into(),
        department_name: "省大数据中心".into(),
        region: "430000".into(),
    }
}

/// A new store at `dir` founded by [`ROOT`], who adds the platform staff: [`OPS`] (operator)
/// and [`COORD`] (coordinator), both of [`PLATFORM`].
pub fn init_store(dir: &Path) -> Store {
    let store = Store::init(dir, &founder()).expect("init");
    store
        .writer(ROOT)
        .expect("writer")
        .update_policy("platform staff", |p, _| {
            add_principals(
                p,
                "430000",
                &[],
                &[
                    (OPS, PLATFORM, Role::Operator),
                    (COORD, PLATFORM, Role::Coordinator),
                ],
            )
        })
        .expect("staff");
    store
}

/// A new store at `dir` with `persons` generated persons and `entities` legal entities (from
/// `seed`) loaded by [`OPS`] as version 1 of each, in row groups of `row_group_size`.
pub fn generated_store(
    dir: &Path,
    seed: u64,
    persons: usize,
    entities: usize,
    row_group_size: usize,
) -> Store {
    let store = init_store(dir);
    let synth = Synth::new(seed, persons, entities);
    let opts = LoadOptions {
        row_group_size,
        ..Default::default()
    };
    store
        .writer(OPS)
        .expect("writer")
        .load(
            "person",
            Source::Batches(synth.persons(64 * 1024).collect()),
            &opts,
        )
        .expect("load persons");
    if entities > 0 {
        store
            .writer(OPS)
            .expect("writer")
            .load(
                "legal_entity",
                Source::Batches(synth.entities(64 * 1024).collect()),
                &opts,
            )
            .expect("load entities");
    }
    store
}

/// The county (6-digit region code) with the most persons: the scope the tests and benches
/// grant when they need a county.
pub fn largest_county(store: &Store) -> String {
    let idx = store
        .snapshot("person")
        .expect("snapshot")
        .bitmap_index("hukou_region_code")
        .expect("region index");
    idx.bitmaps
        .iter()
        .filter(|(k, _)| k.len() == 6)
        .max_by_key(|(_, b)| b.len())
        .map(|(k, _)| k.clone())
        .expect("a county")
}

/// Add active departments `(code, name)` of `region` and active real-name users
/// `(id, department, role)` to a policy being edited.
pub fn add_principals(
    p: &mut Policy,
    region: &str,
    departments: &[(&str, &str)],
    users: &[(&str, &str, Role)],
) -> Result<()> {
    for (code, name) in departments {
        p.upsert_department(Department {
            code: (*code).into(),
            name: (*name).into(),
            region: region.into(),
            status: PrincipalStatus::Active,
        })?;
    }
    for (id, dept, role) in users {
        p.upsert_user(User {
            id: (*id).into(),
            name: format!("{id} 实名"),
            department: (*dept).into(),
            roles: vec![*role],
            status: PrincipalStatus::Active,
        })?;
    }
    Ok(())
}

/// Add departments and users (see [`add_principals`]) as [`ROOT`], one policy version.
pub fn principals(
    store: &Store,
    region: &str,
    departments: &[(&str, &str)],
    users: &[(&str, &str, Role)],
) {
    store
        .writer(ROOT)
        .expect("writer")
        .update_policy("test principals", |p, _| {
            add_principals(p, region, departments, users)
        })
        .expect("principals");
}

/// Approve `requests` as `approver` (a provider-approver of the datasets' provider), one
/// policy version; the ids of the grants made, in order.
pub fn approve(store: &Store, approver: &str, requests: Vec<GrantRequest>) -> Vec<u64> {
    store
        .writer(approver)
        .expect("writer")
        .update_policy("test approvals", |p, c| {
            let now = Utc::now();
            requests
                .into_iter()
                .map(|r| {
                    let a = p.decide_request(c, r, approver, true, "", now)?;
                    a.grant
                        .ok_or_else(|| govshare_core::Error::internal("no grant"))
                })
                .collect::<Result<Vec<u64>>>()
        })
        .expect("approvals")
}

/// Field grants: `clear` fields in clear, then `masked` fields with their masks.
pub fn fields(clear: &[&str], masked: &[(&str, MaskKind)]) -> Vec<FieldGrant> {
    clear
        .iter()
        .map(|f| FieldGrant {
            field: f.to_string(),
            treatment: Treatment::Clear,
        })
        .chain(masked.iter().map(|(f, m)| FieldGrant {
            field: f.to_string(),
            treatment: Treatment::Masked(*m),
        }))
        .collect()
}

/// A query-mode grant request of `dept` for `purpose` (purpose text `"<purpose> 测试用途"`),
/// valid from a day ago for a year.
pub fn request(
    dept: &str,
    dataset: &str,
    purpose: &str,
    fields: Vec<FieldGrant>,
    scope: RowScope,
) -> GrantRequest {
    let now = Utc::now();
    GrantRequest {
        consumer_dept: dept.into(),
        users: vec![],
        dataset: dataset.into(),
        fields,
        purpose_code: purpose.into(),
        purpose_text: format!("{purpose} 测试用途"),
        scope,
        modes: vec![Mode::Query],
        verify: None,
        export: None,
        aggregate: None,
        valid_from: now - Duration::days(1),
        valid_until: now + Duration::days(365),
    }
}

/// A row scope of these region codes.
pub fn regions(codes: &[&str]) -> RowScope {
    RowScope {
        regions: Some(codes.iter().map(|s| s.to_string()).collect()),
        subjects: None,
    }
}

/// All values of a text column (by position) over some batches.
pub fn strings(b: &[RecordBatch], col: usize) -> Vec<String> {
    b.iter()
        .flat_map(|b| {
            let c = b.column(col).as_string::<i32>();
            (0..c.len())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Rows as text, cells joined by `" | "`, NULL as `NULL`, sorted: how the security suite and
/// the tests compare results.
pub fn render(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = render_cells(batches)
        .into_iter()
        .map(|r| r.join(" | "))
        .collect::<Vec<_>>();
    rows.sort();
    rows
}

/// Rows as cells of text (NULL as `NULL`), in result order.
pub fn render_cells(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let fmts: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).expect("fmt"))
            .collect();
        for i in 0..b.num_rows() {
            rows.push(fmts.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    rows
}
