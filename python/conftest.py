"""Shared fixtures: one small store with the principals the tests and doctests use, built by
``govshare-fixture bindings`` — the Rust test kit's fixture (``testkit/src/lib.rs``,
``bindings_store``), so every test suite of the project builds its stores in one place.

Principals (departments in brackets):
- admin [PLAT] platform admin; appr [PSB] approver of the person dataset's provider;
- analyst [STAT]: purpose STATS, unconditional fields sex_code and hukou_region_code;
- civil [CIVIL]: FULL (identity in clear), CHECK (name and phone masked), PROV (FULL's fields,
  rows of one province only);
- other [CIVIL] shares the CIVIL grants (grants are per department); auditor [PLAT].
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _tool(env: str, name: str) -> str:
    """A binary of the cargo test build (or the path in ``env``)."""
    exe = os.environ.get(env) or str(ROOT / "target" / "debug" / name)
    if not (shutil.which(exe) or os.access(exe, os.X_OK)):
        pytest.fail(f"{name} not found at {exe}; run `cargo test --workspace --no-run` or set {env}")
    return exe


def _build(root: pathlib.Path) -> dict:
    out = subprocess.run(
        [_tool("GOVSHARE_FIXTURE", "govshare-fixture"), "bindings", str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    return {"path": pathlib.Path(info["path"]), "province": info["province"], "data": pathlib.Path(info["data"])}


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The shared store: {"path", "province", "data"}. Tests must not change its policy."""
    return _build(tmp_path_factory.mktemp("govshare"))


@pytest.fixture(autouse=True)
def _doctest_store(doctest_namespace: dict, store: dict) -> None:
    doctest_namespace["demo_store"] = str(store["path"])


@pytest.fixture(scope="session")
def govshare_cli() -> str:
    """The govshare command-line tool built by cargo (for comparisons with Rust)."""
    return _tool("GOVSHARE_BIN", "govshare")


def run_cli(cli: str, store: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI against a store; returns the completed process (stdout/stderr as text)."""
    return subprocess.run([cli, "--store", str(store), *args], capture_output=True, text=True)
