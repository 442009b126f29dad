//! `govshare-fixture` builds the bindings' store and says where it is. Being an integration
//! test of this crate also makes `cargo test --workspace` build the tool in the test build the
//! Python suite then uses.

use std::process::Command;

#[test]
fn builds_the_bindings_store_and_prints_where() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_govshare-fixture"))
        .args(["bindings", &dir.path().display().to_string()])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.contains("\"province\": \""), "{text}");
    let engine = govshare_core::Engine::open(dir.path().join("store")).expect("engine");
    let r = engine
        .session("civil", "PROV")
        .and_then(|s| s.sql("SELECT DISTINCT substr(hukou_region_code, 1, 2) FROM person"))
        .expect("query");
    assert_eq!(r.num_rows(), 1, "PROV sees one province");
    assert!(engine.session("analyst", "STATS").is_ok());
    assert!(engine.session("other", "FULL").is_ok());
}
