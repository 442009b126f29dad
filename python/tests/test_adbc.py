"""The ADBC driver (adbc/, ``libgovshare_adbc.so``) through the stock ``adbc-driver-manager``:
its DB-API 2.0 layer, Arrow results, pandas over the DB-API connection, bound parameters, and
the gate deciding every statement and listing."""

import os
import pathlib

import pytest

import govshare

dbapi = pytest.importorskip("adbc_driver_manager.dbapi")
import adbc_driver_manager  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
DRIVER = os.environ.get("GOVSHARE_ADBC") or str(ROOT / "target" / "debug" / "libgovshare_adbc.so")
INJECTION = "' OR '1'='1"


def _connect(store, user, purpose, auth="password"):
    if not os.path.exists(DRIVER):
        pytest.fail(f"the ADBC driver is not built at {DRIVER}: cargo build -p govshare-adbc")
    return dbapi.connect(
        driver=DRIVER,
        entrypoint="AdbcGovshareAdbcInit",
        db_kwargs={"uri": str(store["path"])},
        conn_kwargs={"govshare.user": user, "govshare.purpose": purpose, "govshare.auth": auth},
    )


def test_a_cursor_returns_what_the_session_returns(store):
    sql = "SELECT sex_code, count(*) AS n FROM person GROUP BY sex_code ORDER BY sex_code"
    with _connect(store, "analyst", "STATS") as conn, conn.cursor() as cur:
        cur.execute(sql)
        got = cur.fetch_arrow_table()
        cur.execute(sql)
        assert [d[0] for d in cur.description] == ["sex_code", "n"]
        assert cur.fetchall() == [tuple(r.values()) for r in got.to_pylist()]
    with govshare.connect(store["path"], user="analyst", purpose="STATS") as s:
        want = s.sql(sql).to_arrow()
    assert got.equals(want)


def test_pandas_reads_through_the_dbapi_connection(store):
    pd = pytest.importorskip("pandas")
    with _connect(store, "analyst", "STATS") as conn:
        df = pd.read_sql("SELECT hukou_region_code FROM person", conn)
    assert list(df.columns) == ["hukou_region_code"]
    assert len(df) == 200


def test_bound_parameters_are_values_never_sql(store):
    by_id = "SELECT count(*) AS n FROM person WHERE citizen_id = ?"
    with govshare.connect(store["path"], user="civil", purpose="FULL", auth="second_factor") as s:
        key = s.sql("SELECT citizen_id FROM person LIMIT 1").to_arrow()["citizen_id"][0].as_py()
    with _connect(store, "civil", "FULL", auth="second_factor") as conn, conn.cursor() as cur:
        # DB-API's qmark style is the driver's $1: placeholders are numbered in the SQL.
        cur.execute(by_id.replace("?", "$1"), parameters=[key])
        assert cur.fetchone() == (1,)
        cur.execute(by_id.replace("?", "$1"), parameters=[INJECTION])
        assert cur.fetchone() == (0,)


def test_refusals_carry_the_gate_s_message_and_a_stable_code(store):
    with _connect(store, "analyst", "STATS") as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as caught:
            cur.execute("SELECT name FROM person")
        assert "person.name" in str(caught.value)
        # govshare's stable code for AccessDenied (the C status's number) and the SQLSTATE.
        assert dict(caught.value.details)[b"govshare.error_code"] == b"4"
        assert caught.value.sqlstate == "42501"
        with pytest.raises(adbc_driver_manager.Error, match="read-only|only queries"):
            cur.execute("DELETE FROM person")
    with pytest.raises(adbc_driver_manager.Error, match="ghost"):
        _connect(store, "ghost", "STATS")


def test_listings_show_only_what_the_session_may_see(store):
    with _connect(store, "analyst", "STATS") as conn:
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        tables = objects[0]["catalog_db_schemas"][0]["db_schema_tables"]
        assert [t["table_name"] for t in tables] == ["person"]
        columns = [c["column_name"] for c in tables[0]["table_columns"]]
        assert columns == ["sex_code", "hukou_region_code"]
        schema = conn.adbc_get_table_schema("person")
        assert schema.names == ["sex_code", "hukou_region_code"]
        with pytest.raises(adbc_driver_manager.Error):
            conn.adbc_get_table_schema("entity")
        assert conn.adbc_get_table_types() == ["TABLE"]
