"""Administration and the audit trail from Python."""

import pytest

import govshare
from govshare import AccessDenied, IntegrityError


@pytest.fixture()
def fresh(tmp_path):
    root = tmp_path / "store"
    govshare.init_store(root, admin="root", admin_name="平台管理员", region="430000")
    person, entity = govshare.write_synthetic(tmp_path / "data", 120, 12, seed=3)
    e = govshare.Engine(root)
    for code, name in [("PSB", "省公安厅"), ("AMR", "省市场监督管理局"), ("TAX", "税务")]:
        e.add_department(code, name, "430000", by="root")
    e.add_user("ops", "运维", "PLAT", ["operator"], by="root")
    e.add_user("admin", "管理员", "PLAT", ["platform_admin"], by="root")
    e.add_user("appr", "审批", "PSB", ["provider_approver"], by="root")
    e.add_user("tax", "税务员", "TAX", ["consumer"], by="root")
    e.add_user("aud", "审计", "PLAT", ["auditor"], by="root")
    return e, root, person, entity


def test_load_grant_query_and_who_accessed(fresh):
    e, root, person, entity = fresh
    summary = e.load(
        "person", person, by="ops", handover={"handover_person": "李明", "receiver": "王芳"}
    )
    assert summary["version"] == 1 and summary["live_rows"] == 120
    assert summary["handover"]["handover_person"] == "李明"
    e.load("legal_entity", entity, by="ops")
    req = govshare.grant_request("TAX", "person", {"citizen_id": None, "name": "name"}, "T1", "纳税核验")
    with pytest.raises(AccessDenied):
        e.request_grant(req, by="admin")  # conditional fields need the provider's approval
    e.reject(req, by="appr", reason="范围过宽")
    grant = e.approve(req, by="appr")
    assert grant > 0
    policy = e.policy(by="admin")
    assert str(grant) in policy["grants"] or grant in policy["grants"]
    with e.session("tax", "T1", auth="second_factor") as s:
        t = s.sql("SELECT citizen_id FROM person ORDER BY citizen_id LIMIT 1").to_arrow()
    key = t["citizen_id"][0].as_py()
    with pytest.raises(AccessDenied):
        e.who_accessed(key, by="tax")  # auditors ask who accessed whom
    hits = e.who_accessed(key, by="aud")
    assert [h["user"] for h in hits] == ["tax"]
    assert hits[0]["purpose"] == "T1" and hits[0]["department"] == "TAX"


def test_suspension_and_audit_views(fresh):
    e, root, person, _ = fresh
    e.load("person", person, by="ops")
    e.request_grant(govshare.grant_request("TAX", "person", ["sex_code"], "T2", "统计"), by="admin")
    s = e.session("tax", "T2")
    e.set_user_active("tax", False, by="admin")
    with pytest.raises(AccessDenied):
        s.sql("SELECT sex_code FROM person")
    e.set_user_active("tax", True, by="admin")
    e.set_department_active("TAX", False, by="admin")
    with pytest.raises(AccessDenied):
        s.sql("SELECT sex_code FROM person")
    e.set_department_active("TAX", True, by="admin")
    assert s.sql("SELECT count(*) AS n FROM person").to_arrow()["n"][0].as_py() == 120
    s.close()
    everything = e.audit_sql("aud", "SELECT kind, actor FROM audit_log").to_arrow()
    own = e.audit_sql("tax", "SELECT kind, actor FROM audit_log").to_arrow()
    assert 0 < own.num_rows < everything.num_rows
    bodies = e.audit_sql("aud", "SELECT body FROM audit_log WHERE kind = 'query'").to_arrow()
    assert any('"outcome":"denied"' in b for b in bodies["body"].to_pylist())


def test_verify_and_checkpoint_detect_tampering(fresh):
    e, root, person, _ = fresh
    e.load("person", person, by="ops")
    cp = e.checkpoint(by="aud")
    v = e.verify_audit(cp, by="aud")
    assert v["verdict"] == "intact" and v["records"] >= cp["seq"]
    seg = sorted((root / "audit").glob("seg-*.log"))[0]
    data = bytearray(seg.read_bytes())
    data[70] ^= 1
    seg.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="record 1"):
        e.verify_audit(by="aud")


def test_nobody_acts_beyond_their_role(fresh):
    e, root, person, _ = fresh
    # The administrator does not load (the operator does); a consumer does not add approvers.
    with pytest.raises(AccessDenied, match="operator"):
        e.load("person", person, by="admin")
    with pytest.raises(AccessDenied, match="platform-admin"):
        e.add_user("evil", "E", "PSB", ["provider_approver"], by="tax")
    with pytest.raises(AccessDenied, match="unknown user 'ghost'"):
        e.add_department("X", "某局", "430000", by="ghost")
    with pytest.raises(AccessDenied):
        e.policy(by="ghost")
    # An approver does not approve for their own department.
    e.add_user("psbuser", "公安用户", "PSB", ["consumer"], by="root")
    req = govshare.grant_request("PSB", "person", {"citizen_id": None}, "SELF", "自用")
    with pytest.raises(AccessDenied, match="own department"):
        e.approve(req, by="appr")
