"""Results stream through the Arrow PyCapsule protocol, without copies and without the GIL;
Ctrl-C interrupts a running query."""

import _thread
import signal
import threading
import time

import pyarrow as pa
import pytest

import govshare

# 200 persons joined with themselves: 40 000 rows.
CROSS = "SELECT a.sex_code, b.hukou_region_code FROM person a CROSS JOIN person b"
# 200 x 200 x 200 x 20 = 160 000 000 rows to count: far longer than the second before the
# interrupt below, yet finite, so a broken interrupt fails the test instead of hanging it.
LONG = (
    "SELECT count(*) AS n FROM person a CROSS JOIN person b CROSS JOIN person c "
    "CROSS JOIN (SELECT sex_code FROM person LIMIT 20) d"
)


def test_pycapsule_stream_into_pyarrow_polars_and_duckdb(store):
    with govshare.connect(store["path"], user="analyst", purpose="STATS") as s:
        t = pa.table(s.sql(CROSS))
        assert t.num_rows == 200 * 200
        pl = pytest.importorskip("polars")
        df = pl.from_arrow(pa.RecordBatchReader.from_stream(s.sql(CROSS)))
        assert df.height == 200 * 200
        duckdb = pytest.importorskip("duckdb")
        r = s.sql("SELECT sex_code FROM person")
        n = duckdb.sql("SELECT count(*) FROM r").fetchall()[0][0]
        assert n == 200


def test_a_stream_is_read_once(store):
    with govshare.connect(store["path"], user="analyst", purpose="STATS") as s:
        r = s.sql("SELECT sex_code FROM person")
        assert pa.table(r).num_rows == 200
        with pytest.raises(govshare.GovshareError, match="already been read"):
            pa.table(r)


def test_a_million_rows_stream_through_the_capsule_without_holding_the_gil(store):
    # 1 000 000 rows: 200 x 200 x 25 (a third join on 25 rows of the same table).
    sql = (
        "SELECT a.sex_code FROM person a CROSS JOIN person b "
        "CROSS JOIN (SELECT sex_code FROM person LIMIT 25) c"
    )
    ticks = 0
    done = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    with govshare.connect(store["path"], user="analyst", purpose="STATS") as s:
        r = s.sql(sql)
        t = threading.Thread(target=count)
        t.start()
        started = time.monotonic()
        reader = pa.RecordBatchReader.from_stream(r)
        rows = sum(b.num_rows for b in reader)
        elapsed = time.monotonic() - started
        done.set()
        t.join()
    assert rows == 1_000_000
    # The other Python thread kept running while the rows streamed: the GIL was free. (Not
    # a timing assertion: with the GIL held it could not tick at all during the read.)
    assert ticks > 0 and elapsed > 0


def test_ctrl_c_interrupts_a_running_query_and_it_is_recorded(store):
    e = govshare.Engine(store["path"])
    # Ctrl-C as in an interactive session: a process started in the background (as CI may
    # be) inherits SIGINT ignored, and then Python would not see it at all.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with e.session("analyst", "STATS") as s:
            timer = threading.Timer(1.0, _thread.interrupt_main)
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                s.sql(LONG).to_arrow()
            timer.cancel()
    finally:
        signal.signal(signal.SIGINT, previous)
    rows = e.audit_sql(
        "auditor",
        "SELECT body FROM audit_log WHERE kind = 'query_end' ORDER BY seq DESC LIMIT 1",
    ).to_arrow()
    assert '"outcome":"interrupted"' in rows["body"][0].as_py()


def test_a_running_query_is_cancelled_from_another_thread(store):
    """Session.cancel() from any thread stops the running query (KeyboardInterrupt where it
    is consumed, recorded as cancelled); the session keeps working."""
    slow = "SELECT max(x.sex_code || y.sex_code || z.sex_code) FROM person x, person y, person z"
    with govshare.connect(store["path"], user="analyst", purpose="STATS") as s:
        done = threading.Event()

        def keep_cancelling() -> None:
            # Repeated until the query has stopped: the first may land while it still plans.
            while not done.wait(0.1):
                s.cancel()

        t = threading.Thread(target=keep_cancelling)
        t.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                s.sql(slow).to_arrow()
        finally:
            done.set()
            t.join()
        assert s.sql("SELECT count(*) AS n FROM person").to_arrow()["n"][0].as_py() == 200
    e = govshare.Engine(store["path"])
    ends = e.audit_sql("auditor", "SELECT body FROM audit_log WHERE kind = 'query_end'").to_arrow()
    assert any('"outcome":"cancelled"' in b for b in ends["body"].to_pylist())
