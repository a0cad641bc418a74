"""The client alone (no Flask, no Bokeh, no ``app``) against a real Redis + instance + compactor.

Run by tests/test_client_venv.py in a venv holding only ``./client[arrow]``, pandas,
polars and pytest (Python 3.9); FLEET_TEST_REDIS_URL points at the stack, whose
dashboard ``ct`` exists.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import time

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from bokeh_fleet import AsyncController, Controller, Rejected, wire

URL = os.environ["FLEET_TEST_REDIS_URL"]
D = "ct"


def test_no_server_packages():
    for mod in ("flask", "bokeh", "app"):
        with pytest.raises(ImportError):
            __import__(mod)
    assert sys.version_info[:2] == (3, 9)


@pytest.fixture(scope="module")
def ctl():
    c = Controller(URL, strict=True, timeout=10)
    yield c
    c.close()


T0 = dt.datetime(2024, 1, 1, 9, 0)
T0_MS = 1704099600000.0


def _shapes():
    times = pd.date_range(T0, periods=3, freq="min")
    yield "dict_lists", {"x": [1, 2, 3], "y": [1.5, float("nan"), None]}, {"x": [1, 2, 3], "y": [1.5, None, None]}
    yield "numpy", {"x": np.arange(3), "y": np.array([1.0, np.nan, 3.0])}, {"x": [0, 1, 2], "y": [1.0, None, 3.0]}
    yield ("series", {"t": pd.Series(times), "y": pd.Series([1, 2, 3])},
           {"t": [T0_MS, T0_MS + 60e3, T0_MS + 120e3], "y": [1, 2, 3]})
    yield "df_datetime_index", pd.DataFrame({"y": [1.0, 2.0, 3.0]}, index=times), \
        {"index": [T0_MS, T0_MS + 60e3, T0_MS + 120e3], "y": [1, 2, 3]}
    yield ("df_named_index", pd.DataFrame({"y": [4, 5]}, index=pd.Index([10, 20], name="k")),
           {"k": [10, 20], "y": [4, 5]})
    yield ("polars", pl.DataFrame({"x": [1, 2], "s": ["a", "b"], "y": [0.5, None]}),
           {"x": [1, 2], "s": ["a", "b"], "y": [0.5, None]})
    yield "pyarrow", pa.table({"x": [1, 2], "cat": pa.array(["u", "v"]).dictionary_encode(), "y": [1, 2]}), \
        {"x": [1, 2], "cat": ["u", "v"], "y": [1, 2]}
    yield "datetimes", {"t": [T0, dt.datetime(2024, 1, 1, 11, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))],
                        "y": [np.float32(1.5), np.int64(2)]}, {"t": [T0_MS, T0_MS], "y": [1.5, 2]}


@pytest.mark.parametrize("label,data,expected", list(_shapes()), ids=[s[0] for s in _shapes()])
def test_shape_reaches_state(ctl, label, data, expected):
    kind = "table" if label == "polars" or label == "pyarrow" else "line"
    ctl.replace(D, label, kind=kind, data=data)
    state = ctl.state(D)
    fig = next(f for f in state["figures"] if f["name"] == label)
    assert fig["data"] == expected
    if label in ("series", "df_datetime_index", "datetimes"):
        assert fig["x_axis_type"] == "datetime"


def test_frame_has_datetime_x(ctl):
    df = pd.DataFrame({"y": [1.0, 2.0]}, index=pd.date_range(T0, periods=2, freq="h", name="t"))
    ctl.replace(D, "framed", data=df)
    back = ctl.frame(D, "framed")
    assert list(back.columns) == ["t", "y"]
    assert back["t"].tolist() == [pd.Timestamp(T0), pd.Timestamp(T0) + pd.Timedelta(hours=1)]


@pytest.mark.parametrize("data", [
    {"x": [object(), 1]}, 42, "x,y", {"x": "abc"}, {"x": [1, 2], "y": [1]},
    {"x": [2**60, 1]}, {"x": [[1], [2]]}, {"x": np.zeros((2, 2))},
    pa.table({"x": pa.array([[1], [2]])}), {"": [1]},
], ids=["object", "int", "str", "str_column", "lengths", "bigint", "nested", "2d", "arrow_list", "empty_name"])
def test_bad_shape_is_a_sentence(ctl, data):
    with pytest.raises(Rejected) as exc:
        ctl.replace(D, "bad", data=data)
    assert len(str(exc.value)) > 20 and " " in str(exc.value)


def test_strict_typo_raises_within_a_second(ctl):
    ctl.replace(D, "real", data={"x": [1], "y": [2]})
    t0 = time.monotonic()
    with pytest.raises(Rejected, match="reel"):
        ctl.stream(D, "reel", {"x": [2], "y": [3]})
    assert time.monotonic() - t0 < 1.0


def test_wait_applied_without_strict():
    c = Controller(URL)
    try:
        c.replace(D, "later", data={"x": [1], "y": [2]})
        cid = c.stream(D, "later", {"x": [2], "z": [3]})
        with pytest.raises(Rejected, match="columns"):
            c.wait_applied(cid, 5)
        ok = c.stream(D, "later", {"x": [2], "y": [3]})
        c.wait_applied(ok, 5)
    finally:
        c.close()


def test_async_controller():
    async def main():
        async with AsyncController(URL, strict=True) as c:
            await c.replace(D, "async", data={"x": [1, 2], "y": [3, 4]})
            await c.stream(D, "async", {"x": [3], "y": [5]})
            with pytest.raises(Rejected):
                await c.stream(D, "nope", {"x": [3], "y": [5]})
            return await c.frame(D, "async")

    df = asyncio.run(main())
    assert df["y"].tolist() == [3, 4, 5]


def test_send_many_is_checked_first_then_atomic_and_in_order(ctl):
    key = wire.keys("fleet", D)["commands"]
    before = ctl.redis.xlen(key)
    with pytest.raises(Rejected, match="required by op stream"):  # the 2nd is bad: nothing goes out
        ctl.send_many(D, [("replace", dict(name="sm_a", kind="line", data={"x": [1], "y": [2]})),
                          ("stream", dict(name="sm_a"))])
    assert ctl.redis.xlen(key) == before
    ids = ctl.send_many(D, [("replace", dict(name="sm_a", kind="line", data={"x": [1], "y": [2]})),
                            ("replace", dict(name="sm_b", kind="table", data={"k": ["v"]}, id="sm-1")),
                            ("layout", dict(cols=[["sm_b", "sm_a"]]))])
    assert len(ids) == 3 and [r[0].decode() for r in ctl.redis.xrange(key, min=ids[0], max=ids[-1])] == ids
    state = ctl.state(D)
    assert state["layout_mode"] == "columns" and state["layout"][0] == ["sm_b", "sm_a"]
    ctl.layout(D, columns=[["sm_a"], ["sm_b"]])  # the method's ``columns`` is the wire's ``cols``
    assert ctl.state(D)["layout"][:2] == [["sm_a"], ["sm_b"]]
