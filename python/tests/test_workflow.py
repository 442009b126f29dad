"""The sharing workflow from Python: the service catalog, an application through the
completeness check and the provider's decision, refusals, objections, reports."""

import datetime

import pytest

import govshare
from govshare import AccessDenied, InvalidInput


@pytest.fixture()
def platform(tmp_path):
    root = tmp_path / "store"
    govshare.init_store(root, admin="root", admin_name="平台管理员", region="430000")
    person, _ = govshare.write_synthetic(tmp_path / "data", 120, 0, seed=5)
    e = govshare.Engine(root)
    for code, name in [("PSB", "省公安厅"), ("TAX", "税务")]:
        e.add_department(code, name, "430000", by="root")
    e.add_user("ops", "运维", "PLAT", ["operator"], by="root")
    e.add_user("appr", "审批", "PSB", ["provider_approver"], by="root")
    e.add_user("tax", "税务员", "TAX", ["consumer"], by="root")
    e.add_user("coord", "协调", "PLAT", ["coordinator"], by="root")
    e.load("person", person, by="ops")
    return e, person


def test_an_application_is_checked_decided_and_reported(platform):
    e, person = platform
    services = {s["dataset"]: s for s in e.service_catalog(by="tax")}
    assert services["person"]["approval_days"] == 3
    items = {i["name"]: i for i in services["person"]["items"]}
    assert items["name"]["share"] == "conditional" and items["name"]["held"] is None

    req = govshare.grant_request("TAX", "person", {"sex_code": None, "name": "name"}, "T1", "纳税核验")
    app = e.apply(req, legal_basis="《税收征收管理法》第六条", by="tax")
    assert app["kind"] == "application" and app["state"] == "submitted"
    assert app["immediate_grant"] is not None  # sex_code, unconditional, at once
    with pytest.raises(AccessDenied, match="platform-admin"):
        e.act({"act": "complete", "application": app["id"]}, by="tax")
    checked = e.act({"act": "complete", "application": app["id"]}, by="root")
    assert checked["state"] == "under_review" and checked["due"]
    with pytest.raises(InvalidInput, match="reason"):
        e.act({"act": "decide", "application": app["id"], "approve": False}, by="appr")
    decision = e.act({"act": "decide", "application": app["id"], "approve": True, "reason": "同意"}, by="appr")
    assert decision["kind"] == "approval" and decision["grant"] is not None
    with e.session("tax", "T1") as s:
        names = s.sql("SELECT name FROM person LIMIT 5").to_arrow()["name"].to_pylist()
    assert names and all(n.endswith("*") for n in names)

    # An objection on data the department holds, answered by the source with a reason.
    import pyarrow.csv

    key = pyarrow.csv.read_csv(person)["citizen_id"][0].as_py()
    today = datetime.date.today().isoformat()
    filed = {"act": "file_objection", "dataset": "person", "key": key, "field": "name",
             "description": "姓名与户籍登记不一致", "discovered_on": today}
    o = e.act(filed, by="tax")
    assert o["kind"] == "objection" and o["state"] == "open" and o["provider"] == "PSB"
    with pytest.raises(InvalidInput, match="reason"):
        e.act({"act": "confirm", "objection": o["id"], "reason": ""}, by="appr")
    answered = e.act({"act": "confirm", "objection": o["id"], "reason": "核实无误"}, by="appr")
    assert answered["state"] == "confirmed"
    rows = e.report_sql("SELECT state FROM applications", by="coord").to_arrow()
    assert rows["state"].to_pylist() == ["approved"]
    with pytest.raises(AccessDenied):
        e.report_sql("SELECT * FROM usage", by="tax")
    page = e.report_html(by="coord")
    assert "<svg" in page and today[:4] in page
    assert e.conflicts(by="coord") == []
