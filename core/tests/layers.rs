//! The architecture, checked: every module of govshare-core belongs to one room of one layer
//! (ARCHITECTURE.md), a room imports only rooms of its own layer or below, and the rooms'
//! imports form no circle. Run it alone with `cargo test -p govshare-core --test layers`.
//!
//! It reads the sources: every `crate::room` path outside comments is an import of that room
//! (`use` lines and paths written inline alike; unit tests count too, so a test cannot reach
//! upward either).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the bottom; rooms in each. `access::*` rooms are named with their folder.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "base",
        &[
            "error", "durable", "ident", "regions", "calendar", "catalog", "validate", "synth",
        ],
    ),
    ("records", &["audit"]),
    ("storage", &["index", "store", "ingest", "quality"]),
    (
        "access",
        &[
            "access::aggregate",
            "access::anonymize",
            "access::counts",
            "access::masks",
            "access::policy",
            "access::quota",
            "access::secured",
            "access::verify",
        ],
    ),
    ("engine", &["engine"]),
];

fn layer_of(room: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, rooms)| rooms.contains(&room))
}

/// The room a source file belongs to: its path under `src/` up to the room's name.
fn room_of(rel: &Path) -> Option<String> {
    let parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [lib] if lib == "lib" => None,
        // `access/mod.rs` only declares the access rooms.
        [a, m] if a == "access" && m == "mod" => None,
        [a, b, ..] if a == "access" && b != "mod" => Some(format!("access::{b}")),
        [a, ..] => Some(a.clone()),
        [] => None,
    }
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Rooms a piece of code names as `crate::...`, comments stripped.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or_default();
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                continue;
            }
            let room = if name == "access" {
                let after = &rest["access::".len().min(rest.len())..];
                let sub: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                format!("access::{sub}")
            } else {
                name
            };
            out.insert(room);
        }
        // `use crate::{a, b}` groups.
        if let Some(i) = line.find("crate::{") {
            for part in line[i + 8..].split(['}', ',']) {
                let n = part.trim().split("::").next().unwrap_or_default().trim();
                if !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    out.insert(n.to_string());
                }
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        let Some(room) = room_of(rel) else { continue };
        let code = std::fs::read_to_string(&f).expect("read");
        let deps = g.entry(room.clone()).or_default();
        for d in imports(&code) {
            if d != room {
                deps.insert(d);
            }
        }
    }
    g
}

#[test]
fn every_module_is_in_a_room_of_a_layer() {
    for room in graph().keys() {
        assert!(
            layer_of(room).is_some(),
            "module `{room}` is in no layer: add it to ARCHITECTURE.md and to LAYERS here"
        );
    }
}

#[test]
fn nothing_imports_upward() {
    for (room, deps) in graph() {
        let Some(own) = layer_of(&room) else { continue };
        for d in deps {
            let theirs = layer_of(&d).unwrap_or_else(|| panic!("`{room}` imports unknown `{d}`"));
            assert!(
                theirs <= own,
                "`{room}` ({}) imports `{d}` ({}), a layer above it",
                LAYERS[own].0,
                LAYERS[theirs].0
            );
        }
    }
}

#[test]
fn rooms_import_each_other_in_no_circle() {
    let g = graph();
    // Depth-first search; a room met again on the current path closes a circle.
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        room: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(i) = path.iter().position(|r| r == room) {
            panic!("import circle: {} -> {room}", path[i..].join(" -> "));
        }
        if done.contains(room) {
            return;
        }
        path.push(room.to_string());
        for d in g.get(room).into_iter().flatten() {
            visit(g, d, path, done);
        }
        path.pop();
        done.insert(room.to_string());
    }
    let mut done = BTreeSet::new();
    for room in g.keys() {
        visit(&g, room, &mut Vec::new(), &mut done);
    }
}

/// The checker itself: it sees inline paths, grouped `use` lines and access rooms, and not
/// comments — so the tests above cannot pass by seeing nothing.
#[test]
fn the_checker_sees_imports() {
    let code = "use crate::{error::Result, store};\nlet x = crate::access::policy::Policy::default();\n// crate::engine is only mentioned here\n";
    let got: Vec<String> = imports(code).into_iter().collect();
    assert_eq!(got, ["access::policy", "error", "store"]);
    assert_eq!(
        room_of(Path::new("access/secured.rs")).as_deref(),
        Some("access::secured")
    );
    assert_eq!(
        room_of(Path::new("engine/session.rs")).as_deref(),
        Some("engine")
    );
    assert!(graph()["engine"].contains("access::policy"));
}
