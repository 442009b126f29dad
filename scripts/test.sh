#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# One debug build serves every step; benches are compiled, not run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "formatting"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (unit, integration, doc)"
cargo test --workspace --locked

step "benches and examples compile"
# Built in the test profile, so they reuse the artifacts of the test build above.
cargo test --benches --examples --no-run --locked

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "all green"
