"""Bound parameters and the Python surface: values bound into the planned query (never pasted
into SQL), exceptions under the package's own name, reprs that say what an object is."""

import traceback

import pyarrow as pa
import pytest

import govshare
from govshare import AccessDenied, InvalidInput

INJECTION = "' OR '1'='1"


def _ids(store, n):
    with govshare.connect(store["path"], user="civil", purpose="FULL", auth="second_factor") as s:
        t = s.sql(f"SELECT citizen_id FROM person ORDER BY citizen_id LIMIT {n}").to_arrow()
    return t["citizen_id"].to_pylist()


def test_a_bound_value_is_a_value_never_sql(store):
    key = _ids(store, 1)[0]
    by_id = "SELECT count(*) AS n FROM person WHERE citizen_id = $1"
    with govshare.connect(store["path"], user="civil", purpose="FULL", auth="second_factor") as s:
        assert s.sql(by_id, params=[key]).to_arrow()["n"].to_pylist() == [1]
        assert s.sql(by_id, params=[INJECTION]).to_arrow()["n"].to_pylist() == [0]
        # What pasting the same text into the SQL would have done.
        spliced = s.sql(f"SELECT count(*) AS n FROM person WHERE citizen_id = '{INJECTION}'")
        assert spliced.to_arrow()["n"][0].as_py() > 1


def test_rows_of_parameters_run_as_one_statement_and_values_take_their_place_s_type(store):
    keys = _ids(store, 3)
    with govshare.connect(store["path"], user="civil", purpose="FULL", auth="second_factor") as s:
        rows = s.sql(
            "SELECT citizen_id FROM person WHERE citizen_id = $1",
            params=pa.table({"key": keys[:2] + ["11010519491231002X"]}),
        ).to_arrow()
        assert sorted(rows["citizen_id"].to_pylist()) == keys[:2]
        # A Python int is converted to what its place asks for (a sex code is text).
        n = s.sql(
            "SELECT count(*) AS n FROM person WHERE sex_code = $1 AND citizen_id <> $2",
            params=[1, INJECTION],
        ).to_arrow()["n"][0].as_py()
        assert n > 0
        with pytest.raises(InvalidInput, match=r"\$1"):
            s.sql("SELECT count(*) FROM person WHERE citizen_id = $1")
        with pytest.raises(InvalidInput, match="2 parameter column"):
            s.sql("SELECT count(*) FROM person WHERE citizen_id = $1", params=["a", "b"])
    # The gate decides on the fields as without parameters.
    with govshare.connect(store["path"], user="analyst", purpose="STATS") as s:
        with pytest.raises(AccessDenied, match="person.name"):
            s.sql("SELECT count(*) FROM person WHERE name = $1", params=["张三"])


def test_exceptions_carry_the_package_name_in_tracebacks(store):
    with govshare.connect(store["path"], user="analyst", purpose="STATS") as s:
        with pytest.raises(AccessDenied) as caught:
            s.sql("SELECT name FROM person")
    assert AccessDenied.__module__ == "govshare"
    shown = "".join(traceback.format_exception_only(caught.type, caught.value))
    assert shown.startswith("govshare.AccessDenied: "), shown
    assert "_internal" not in shown
    for name in govshare.exceptions.__all__:
        assert getattr(govshare, name).__module__ == "govshare", name


def test_reprs_say_what_an_object_is(store):
    engine = govshare.Engine(store["path"])
    assert repr(engine) == f"<govshare.Engine store={str(store['path'])!r}>"
    s = engine.session("analyst", "STATS")
    assert repr(s) == "<govshare.Session user='analyst' purpose='STATS' open>"
    r = s.sql("SELECT sex_code FROM person")
    assert repr(r) == "<govshare.Result sex_code: string (unread; .to_arrow(), .to_pandas(), iterate)>"
    r.close()
    s.close()
    assert repr(s).endswith("closed>")
