#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# One debug build serves Rust, C and Python; benches are compiled, not run.
#
# Needs: the Rust toolchain, a C compiler (cc), python3 >= 3.11 with venv; valgrind is used
# for the C test program when installed. Debian's chromium (the report rendering test) is
# installed with apt-get when missing. Python packages (maturin, pytest, pyarrow, pandas,
# polars, duckdb, adbc-driver-manager) are installed into .venv by this script.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "formatting"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "headless Chromium for the report rendering test (Debian's chromium)"
if [ -z "${GOVSHARE_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi

step "tests: Rust unit, integration, doc; C example and C test program (ffi/tests/c_api.rs)"
# The Python extension is built by maturin below: as a cargo test target it would have to
# link libpython, which an extension module must not.
cargo test --workspace --exclude govshare-python --locked

step "benches and examples compile"
# Built in the test profile with the same package selection as the test build above, so they
# reuse its artifacts (another selection resolves other features for some crates and would
# compile DataFusion a second time).
cargo test --workspace --exclude govshare-python --benches --examples --no-run --locked

step "Python: virtual environment and the extension (maturin develop, same debug build)"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  "maturin>=1.9.4,<2" "pytest>=8" "pyarrow>=15" "pandas>=2" "polars>=1" "duckdb>=1.1" \
  "adbc-driver-manager>=1.5"
VIRTUAL_ENV="$PWD/.venv" .venv/bin/maturin develop --quiet --manifest-path python/Cargo.toml

step "ADBC driver (libgovshare_adbc.so, loaded by the Python tests through adbc-driver-manager)"
cargo build -p govshare-adbc --locked

step "Python: pytest (python/tests) and doctests (python/govshare)"
GOVSHARE_BIN="$PWD/target/debug/govshare" .venv/bin/python -m pytest -q python/tests python/govshare
.venv/bin/python python/examples/analytics.py > /dev/null

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "all green"
