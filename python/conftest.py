"""Shared fixtures: one small store with the principals the tests and doctests use.

Principals (departments in brackets):
- admin [PLAT] platform admin; appr [PSB] approver of the person dataset's provider;
- analyst [STAT]: purpose STATS, unconditional fields sex_code and hukou_region_code;
- civil [CIVIL]: FULL (identity in clear), CHECK (name and phone masked), PROV (FULL's fields,
  rows of one province only);
- other [CIVIL] shares the CIVIL grants (grants are per department); auditor [PLAT].
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

import govshare

PERSONS = 200


def _build(root: pathlib.Path) -> dict:
    store = root / "store"
    govshare.init_store(store)
    person_csv, entity_csv = govshare.write_synthetic(root / "data", PERSONS, 20, seed=7)
    e = govshare.Engine(store)
    e.load("person", person_csv)
    e.load("legal_entity", entity_csv)
    for code, name in [("PLAT", "省大数据中心"), ("PSB", "省公安厅"), ("STAT", "省统计局"), ("CIVIL", "省民政厅")]:
        e.add_department(code, name, "430000", by="root")
    for uid, dept, role in [
        ("admin", "PLAT", "platform_admin"),
        ("appr", "PSB", "provider_approver"),
        ("analyst", "STAT", "consumer"),
        ("civil", "CIVIL", "consumer"),
        ("other", "CIVIL", "consumer"),
        ("auditor", "PLAT", "auditor"),
    ]:
        e.add_user(uid, f"{uid} 实名", dept, [role], by="root")
    e.request_grant(
        govshare.grant_request("STAT", "person", ["sex_code", "hukou_region_code"], "STATS", "人口统计"),
        by="admin",
    )
    identity = ["citizen_id", "name", "sex_code", "hukou_region_code"]
    e.approve(govshare.grant_request("CIVIL", "person", identity, "FULL", "身份核验"), by="appr")
    e.approve(
        govshare.grant_request(
            "CIVIL",
            "person",
            {"citizen_id": None, "name": "name", "mobile_phone": "phone"},
            "CHECK",
            "联系核验",
        ),
        by="appr",
    )
    with e.session("civil", "FULL") as s:
        t = s.sql(
            "SELECT substr(hukou_region_code, 1, 2) AS p, count(*) AS n FROM person "
            "GROUP BY p ORDER BY n DESC, p LIMIT 1"
        ).to_arrow()
    province = t["p"][0].as_py()
    e.approve(
        govshare.grant_request("CIVIL", "person", identity, "PROV", "本省业务", regions=[province + "0000"]),
        by="appr",
    )
    return {"path": store, "province": province, "data": root / "data"}


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
    exe = os.environ.get("GOVSHARE_BIN") or str(
        pathlib.Path(__file__).resolve().parent.parent / "target" / "debug" / "govshare"
    )
    if not (shutil.which(exe) or os.access(exe, os.X_OK)):
        pytest.fail(f"govshare CLI not found at {exe}; run `cargo build` or set GOVSHARE_BIN")
    return exe


def run_cli(cli: str, store: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI against a store; returns the completed process (stdout/stderr as text)."""
    return subprocess.run([cli, "--store", str(store), *args], capture_output=True, text=True)
