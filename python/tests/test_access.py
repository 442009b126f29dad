"""Access control through Python is the engine's: denials, masks and scopes hold."""

import pytest

import govshare
from govshare import AccessDenied, GovshareError


def test_denied_field_raises_access_denied_with_how_to_obtain_it(store):
    with govshare.connect(store["path"], user="analyst", purpose="STATS") as s:
        with pytest.raises(AccessDenied) as e:
            s.sql("SELECT name FROM person")
    msg = str(e.value)
    assert "person.name" in msg and "STAT" in msg and "STATS" in msg
    assert "apply" in msg or "approver" in msg
    assert isinstance(e.value, GovshareError)


def test_not_shared_field_and_ungranted_dataset_are_denied(store):
    with govshare.connect(store["path"], user="civil", purpose="FULL", auth="second_factor") as s:
        with pytest.raises(AccessDenied, match="marital_status_code"):
            s.sql("SELECT marital_status_code FROM person")
        with pytest.raises(AccessDenied, match="legal_entity"):
            s.sql("SELECT * FROM legal_entity")
        with pytest.raises(AccessDenied):
            s.sql("COPY (SELECT citizen_id FROM person) TO '/tmp/govshare-leak.csv'")


def test_no_session_without_a_grant_for_the_purpose(store):
    with pytest.raises(AccessDenied):
        govshare.connect(store["path"], user="analyst", purpose="FULL")
    with pytest.raises(AccessDenied):
        govshare.connect(store["path"], user="nobody", purpose="FULL")
    with pytest.raises(AccessDenied):
        govshare.connect(store["path"], user="civil", purpose="NOT-A-PURPOSE")


def test_masks_hold_and_masked_values_are_no_oracle(store):
    with govshare.connect(store["path"], user="civil", purpose="FULL", auth="second_factor") as s:
        clear = s.sql("SELECT citizen_id, name FROM person ORDER BY citizen_id").to_arrow()
    with govshare.connect(store["path"], user="civil", purpose="CHECK", auth="second_factor") as s:
        masked = s.sql("SELECT citizen_id, name, mobile_phone FROM person ORDER BY citizen_id").to_arrow()
        real_name = clear["name"][0].as_py()
        # Filtering on a masked field compares masked values: the real name matches nothing.
        n = s.sql(f"SELECT count(*) AS n FROM person WHERE name = '{real_name}'").to_arrow()
    assert masked["citizen_id"].to_pylist() == clear["citizen_id"].to_pylist()
    for real, shown in zip(clear["name"].to_pylist(), masked["name"].to_pylist()):
        assert shown != real and shown[0] == real[0] and "*" in shown
    assert all(p is None or "****" in p for p in masked["mobile_phone"].to_pylist())
    assert n["n"][0].as_py() == 0


def test_row_scope_holds_even_against_a_division_by_zero_oracle(store):
    prov = store["province"]
    with govshare.connect(store["path"], user="civil", purpose="PROV", auth="second_factor") as s:
        codes = s.sql("SELECT DISTINCT substr(hukou_region_code, 1, 2) AS p FROM person").to_arrow()
        # A row outside the scope would make this divide by zero; none reaches the expression.
        n = s.sql(
            f"SELECT count(*) AS n FROM person WHERE 1 / (CASE WHEN hukou_region_code LIKE '{prov}%' THEN 1 ELSE 0 END) = 1"
        ).to_arrow()
        scoped = s.sql("SELECT count(*) AS n FROM person").to_arrow()
    assert codes["p"].to_pylist() == [prov]
    assert n["n"][0].as_py() == scoped["n"][0].as_py() < 200


def test_revocation_takes_effect_in_an_open_session(tmp_path):
    root = tmp_path / "s"
    govshare.init_store(root, admin="root", admin_name="平台管理员", region="430000")
    csv, _ = govshare.write_synthetic(tmp_path / "d", 50, 5)
    e = govshare.Engine(root)
    e.add_user("ops", "运维", "PLAT", ["operator"], by="root")
    e.load("person", csv, by="ops")
    e.add_department("STAT", "统计", "430000", by="root")
    e.add_user("admin", "管理员", "PLAT", ["platform_admin"], by="root")
    e.add_user("a", "分析员", "STAT", ["consumer"], by="root")
    g = e.request_grant(govshare.grant_request("STAT", "person", ["sex_code"], "P", "统计"), by="admin")
    with e.session("a", "P") as s:
        assert s.sql("SELECT count(*) AS n FROM person").to_arrow()["n"][0].as_py() == 50
        e.revoke(g, by="admin", reason="done")
        with pytest.raises(AccessDenied):
            s.sql("SELECT count(*) FROM person")


def test_sensitive_items_in_clear_need_a_second_factor_and_systems_are_principals(store, tmp_path):
    """The host says how it authenticated the user: with a password the citizen ID in clear
    (grade L4) is withheld, with a second factor it is there. Sessions through a host system
    need the system registered and active."""
    with govshare.connect(store["path"], user="civil", purpose="FULL") as s:
        with pytest.raises(AccessDenied, match="second factor"):
            s.sql("SELECT citizen_id FROM person LIMIT 1")
        assert "citizen_id" not in [f["name"] for d in s.catalog() for f in d["fields"]]
        s.sql("SELECT name FROM person LIMIT 1").to_arrow()
    with govshare.connect(store["path"], user="civil", purpose="FULL", auth="second_factor") as s:
        assert s.sql("SELECT citizen_id FROM person LIMIT 1").to_arrow().num_rows == 1
    with pytest.raises(AccessDenied, match="not registered"):
        govshare.connect(store["path"], user="civil", purpose="FULL", system="civil-app")
