"""Queries from Python return what Rust returns, in every form an analyst uses."""

import io

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

import govshare
from conftest import run_cli

QUERIES = [
    ("civil", "FULL", "SELECT citizen_id, name, sex_code FROM person ORDER BY citizen_id"),
    ("civil", "CHECK", "SELECT citizen_id, name, mobile_phone FROM person ORDER BY citizen_id"),
    ("civil", "PROV", "SELECT hukou_region_code, count(*) AS n FROM person GROUP BY 1 ORDER BY 1"),
    ("analyst", "STATS", "SELECT sex_code, count(*) AS n FROM person GROUP BY 1 ORDER BY 1"),
]


@pytest.mark.parametrize("user,purpose,sql", QUERIES)
def test_results_equal_the_rust_results(store, govshare_cli, user, purpose, sql):
    # Second-factor logins on both sides: the identity grants hold the citizen ID in clear.
    with govshare.connect(store["path"], user=user, purpose=purpose, auth="second_factor") as s:
        got = s.sql(sql).to_arrow()
    out = run_cli(
        govshare_cli, store["path"], "sql", "--user", user, "--purpose", purpose,
        "--auth", "second-factor", "--csv", sql,
    )
    assert out.returncode == 0, out.stderr
    want = pacsv.read_csv(
        io.BytesIO(out.stdout.encode()),
        convert_options=pacsv.ConvertOptions(column_types=got.schema, strings_can_be_null=False),
    )
    assert got.num_rows > 0
    assert got.equals(want.cast(got.schema)), (got, want)


def test_to_pandas_and_to_polars(store):
    pl = pytest.importorskip("polars")
    pytest.importorskip("pandas")
    with govshare.connect(store["path"], user="analyst", purpose="STATS") as s:
        sql = "SELECT sex_code, count(*) AS n FROM person GROUP BY 1 ORDER BY 1"
        df = s.sql(sql).to_pandas()
        pf = s.sql(sql).to_polars()
    assert list(df.columns) == ["sex_code", "n"]
    assert int(df["n"].sum()) == 200
    assert isinstance(pf, pl.DataFrame)
    assert pf["n"].sum() == 200
    assert df["sex_code"].tolist() == pf["sex_code"].to_list()


def test_batches_iterate_and_schema_is_known_before_reading(store):
    with govshare.connect(store["path"], user="civil", purpose="FULL", auth="second_factor") as s:
        r = s.sql("SELECT citizen_id FROM person")
        assert r.schema.names == ["citizen_id"]
        batches = list(r)
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert sum(b.num_rows for b in batches) == 200


def test_empty_result_keeps_its_schema(store):
    with govshare.connect(store["path"], user="civil", purpose="FULL", auth="second_factor") as s:
        t = s.sql("SELECT citizen_id, name FROM person WHERE 1 = 0").to_arrow()
    assert t.num_rows == 0
    assert t.schema.names == ["citizen_id", "name"]


def test_catalog_lists_only_granted_fields_with_masked_types(store):
    with govshare.connect(store["path"], user="civil", purpose="CHECK", auth="second_factor") as s:
        (person,) = s.catalog()
    assert person["dataset"] == "person"
    names = [f["name"] for f in person["fields"]]
    assert names == ["citizen_id", "name", "mobile_phone"]
    assert all(f["nullable"] for f in person["fields"] if f["name"] != "citizen_id")
