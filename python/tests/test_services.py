"""Lookup by key and verify through Python: the engine's decisions, Arrow in and Arrow out."""

import pyarrow as pa
import pytest

import govshare
from govshare import AccessDenied, LimitExceeded

UNKNOWN = "11010519491231002X"


def test_lookup_returns_what_the_sql_would_for_the_keys_given(store):
    with govshare.connect(store["path"], user="civil", purpose="FULL", auth="second_factor") as s:
        keys = s.sql("SELECT citizen_id FROM person ORDER BY citizen_id LIMIT 3").to_arrow()
        keys = keys["citizen_id"].to_pylist()
        got = s.lookup("person", keys + [UNKNOWN]).to_arrow()
        listed = ", ".join(f"'{k}'" for k in keys)
        want = s.sql(f"SELECT * FROM person WHERE citizen_id IN ({listed})").to_arrow()
        with pytest.raises(TypeError):
            s.lookup("person", keys[0])
    assert got.schema == want.schema
    order = lambda t: sorted(t.to_pylist(), key=lambda r: r["citizen_id"])  # noqa: E731
    assert order(got) == order(want)
    # Masked as granted: under CHECK the name comes back masked, never in clear.
    with govshare.connect(store["path"], user="civil", purpose="CHECK", auth="second_factor") as s:
        masked = s.lookup("person", keys).to_arrow()
    assert all("*" in n for n in masked["name"].to_pylist())


def test_verify_answers_yes_or_no_only_and_stops_at_the_subject_limit(store):
    with govshare.connect(store["path"], user="civil", purpose="FULL", auth="second_factor") as s:
        row = s.sql("SELECT citizen_id, name FROM person ORDER BY citizen_id DESC LIMIT 1").to_arrow()
    key, name = row["citizen_id"][0].as_py(), row["name"][0].as_py()
    with govshare.connect(store["path"], user="civil", purpose="VERIFY") as v:
        # The verify grant gives no query: the name cannot be read, only checked.
        with pytest.raises(AccessDenied):
            v.sql("SELECT name FROM person")
        claims = {
            "citizen_id": [key, key, UNKNOWN],
            "name": [" ".join(name), "某某某", "张三"],
            # The birth date written the ID's way (YYYYMMDD) reads as the same day.
            "birth_date": [key[6:14], None, "1949-12-31"],
        }
        ans = v.verify("person", claims)
        assert ans.column_names == ["found", "name", "birth_date"]
        assert all(pa.types.is_boolean(f.type) for f in ans.schema)
        assert ans["found"].to_pylist() == [True, True, False]
        assert ans["name"].to_pylist() == [True, False, None]
        assert ans["birth_date"].to_pylist() == [True, None, None]
        # A field outside the verify grant is refused, and nothing is charged for it.
        with pytest.raises(AccessDenied, match="mobile_phone"):
            v.verify("person", pa.table({"citizen_id": [key], "mobile_phone": ["13800138000"]}))
        # Two checks of this subject today already: the third is refused.
        with pytest.raises(LimitExceeded, match="one subject"):
            v.verify("person", {"citizen_id": [key], "name": [name]})


def test_export_writes_the_granted_rows_masked_with_a_manifest_that_verifies(store, tmp_path):
    import pyarrow.parquet as pq

    with govshare.connect(store["path"], user="civil", purpose="EXPORT") as s:
        m = s.export("person", tmp_path / "out")
        with pytest.raises(govshare.InvalidInput):
            s.export("person", tmp_path / "out")  # never overwrites
        csv = s.export("person", tmp_path / "out", format="csv-gbk")
        with pytest.raises(AccessDenied):
            s.sql("SELECT name FROM person")  # an export grant does not query
    t = pq.read_table(tmp_path / "out" / "person.parquet")
    assert t.column_names == ["name", "sex_code", "hukou_region_code"]
    assert t.num_rows == m["rows"] > 0
    assert all("*" in n for n in t["name"].to_pylist())
    assert all(c.startswith(store["province"]) for c in t["hukou_region_code"].to_pylist())
    assert m["files"][0]["name"] == "person.parquet" and len(m["files"][0]["blake3"]) == 64
    assert (tmp_path / "out" / "person.parquet.manifest.json").exists()
    text = (tmp_path / "out" / "person.csv").read_bytes().decode("gbk")
    assert text.splitlines()[0] == "name,sex_code,hukou_region_code"
    assert len(text.splitlines()) == csv["rows"] + 1


def test_aggregate_answers_only_groups_of_the_minimum_size(store):
    q = "SELECT substr(hukou_region_code, 1, 4) AS city, count(*) AS n FROM person GROUP BY 1"
    with govshare.connect(store["path"], user="civil", purpose="AGG") as s:
        t = s.aggregate(q).to_arrow()
        with pytest.raises(AccessDenied, match="aggregate-only"):
            s.aggregate("SELECT sex_code FROM person")
        with pytest.raises(AccessDenied):
            s.sql("SELECT count(*) FROM person")  # an aggregate grant does not query
    with govshare.connect(store["path"], user="analyst", purpose="STATS") as s:
        full = s.sql(q).to_arrow()
    assert all(n >= 5 for n in t["n"].to_pylist())
    want = sorted((c, n) for c, n in zip(full["city"].to_pylist(), full["n"].to_pylist()) if n >= 5)
    assert sorted(zip(t["city"].to_pylist(), t["n"].to_pylist())) == want
    assert len(want) < full.num_rows, "some groups are too small and left out"


def test_changes_come_until_acknowledged(store):
    with govshare.connect(store["path"], user="civil", purpose="PUSH", auth="second_factor") as s:
        first, token = s.changes("person")
        again, same = s.changes("person")
        assert first.num_rows > 0 and set(first["_op"].to_pylist()) == {"insert"}
        assert first.column_names == ["_op", "citizen_id", "sex_code"]
        assert (again.num_rows, same) == (first.num_rows, token)
        s.ack("person", token)
        after, _ = s.changes("person")
        assert after.num_rows == 0
        with pytest.raises(TypeError):
            s.ack("person", "1")


def test_an_open_data_release_is_k_anonymous_and_holds_only_open_items(store, tmp_path):
    """The provider's approver releases region, birth date and sex, generalised: the file,
    read back with pyarrow, holds only those columns, every combination at least k times, and
    as many rows as the manifest says were released; a not-open item and a consumer are
    refused, with nothing written."""
    import collections

    import pyarrow.parquet as pq

    engine = govshare.Engine(store["path"])
    out = tmp_path / "open"
    fields = ["hukou_region_code", "birth_date", "sex_code"]
    with pytest.raises(AccessDenied, match="not open"):
        engine.release_open_data("person", ["citizen_id", "sex_code"], out, by="appr", k=5)
    with pytest.raises(AccessDenied, match="provider-approver"):
        engine.release_open_data("person", ["sex_code"], out, by="analyst", k=5)
    with pytest.raises(TypeError):
        engine.release_open_data("person", [42], out, by="appr")
    assert not out.exists()
    m = engine.release_open_data("person", fields, out, by="appr", k=5, max_suppression=0.05)
    assert m["released"] + m["suppressed"] == m["rows"]
    table = pq.read_table(out / m["files"][0]["name"])
    assert table.column_names == fields
    assert table.num_rows == m["released"]
    groups = collections.Counter(zip(*(table[f].to_pylist() for f in fields)))
    assert min(groups.values()) >= 5
    assert min(groups.values()) == m["smallest_group"]
