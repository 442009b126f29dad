"""Misuse raises exceptions; nothing crashes the interpreter."""

import pytest

import govshare
from govshare import GovshareError, NotFound


def test_closed_session_raises(store):
    s = govshare.connect(store["path"], user="analyst", purpose="STATS")
    s.close()
    s.close()  # harmless
    assert s.closed
    with pytest.raises(GovshareError, match="closed"):
        s.sql("SELECT sex_code FROM person")
    with pytest.raises(GovshareError, match="closed"):
        s.catalog()


def test_wrong_types_and_none_raise_type_error(store):
    with govshare.connect(store["path"], user="analyst", purpose="STATS") as s:
        with pytest.raises(TypeError):
            s.sql(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            s.sql(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            s._raw.sql(b"SELECT 1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        govshare.connect(None, user="analyst", purpose="STATS")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        govshare.connect(store["path"], user=None, purpose="STATS")  # type: ignore[arg-type]
    e = govshare.Engine(store["path"])
    with pytest.raises(TypeError):
        e.add_user("x", "x", "STAT", "consumer", by="root")
    with pytest.raises(TypeError):
        e.revoke("1", by="admin", reason="r")  # type: ignore[arg-type]


def test_bad_values_raise_value_error_or_invalid_input(store):
    e = govshare.Engine(store["path"])
    with pytest.raises(ValueError, match="user"):
        e.add_user("x", "x", "STAT", ["no-such-role"], by="root")
    with pytest.raises(ValueError, match="checkpoint"):
        e._raw.audit_verify("auditor", "{not json")
    with govshare.connect(store["path"], user="analyst", purpose="STATS") as s:
        with pytest.raises(govshare.InvalidInput):
            s.sql("SELEC sex_code FROM person")
        with pytest.raises(govshare.InvalidInput):
            s.sql("SELECT 1 / 0 FROM person").to_arrow()


def test_missing_store_and_files_raise_not_found(store, tmp_path):
    with pytest.raises(NotFound):
        govshare.Engine(tmp_path / "nope")
    e = govshare.Engine(store["path"])
    with pytest.raises(NotFound):
        e.load("person", tmp_path / "missing.csv", by="ops")


def test_closing_a_result_early_and_reading_after_close(store):
    with govshare.connect(store["path"], user="analyst", purpose="STATS") as s:
        r = s.sql("SELECT sex_code FROM person")
        r.close()
        with pytest.raises(GovshareError):
            r.to_arrow()
        with govshare.Result(s._raw.sql("SELECT sex_code FROM person")) as r2:
            next(iter(r2))


def test_every_error_code_has_its_own_class():
    """The engine's error codes map one to one onto exception classes (C uses the same
    numbers for its statuses), and a query that fails as it runs is a QueryFailed."""
    from govshare import _internal

    classes = _internal.ERROR_CLASSES
    assert sorted(classes) == [3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14]
    assert len(set(classes.values())) == len(classes)
    for code, cls in classes.items():
        if code == 12:
            assert cls is KeyboardInterrupt
        else:
            assert issubclass(cls, GovshareError), code
            assert getattr(govshare, cls.__name__) is cls
    assert classes[4] is govshare.AccessDenied
    assert classes[13] is govshare.QueryFailed and issubclass(govshare.QueryFailed, govshare.InvalidInput)
