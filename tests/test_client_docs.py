"""Checked-in client docs and the one-source wire format (fast, no servers)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import bokeh_fleet.wire as wire
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from app.control import protocol
from app.web.openapi import openapi_document

ROOT = Path(__file__).resolve().parents[1]


def test_client_api_reference_is_current():
    r = subprocess.run([sys.executable, str(ROOT / "client" / "apidoc.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_every_public_method_has_a_docstring():
    text = (ROOT / "docs" / "client-api.md").read_text()
    assert "(undocumented)" not in text


def test_checked_in_openapi_equals_the_live_one():
    doc = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert doc == json.loads(json.dumps(openapi_document())), (
        "docs/openapi.json is stale: regenerate it from app.web.openapi.openapi_document()")


def test_server_uses_the_client_wire_tables():
    for name in ("OPS", "OP_FIELDS", "REQUIRED", "COMMON_FIELDS", "NAME_RE", "COLUMN_RE", "Rejected"):
        assert getattr(protocol, name) is getattr(wire, name), name


@pytest.mark.parametrize("data,expected", [
    ({"x": [1, 2], "y": [float("nan"), None]}, {"x": [1, 2], "y": [None, None]}),
    ({"t": [dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))], "y": [np.int32(3)]},
     {"t": [1704063600000], "y": [3]}),
    (pd.DataFrame({"y": [1.5]}, index=pd.DatetimeIndex(["2024-01-01"], name="t")), {"t": [1704067200000], "y": [1.5]}),
    (pa.table({"s": pa.array(["a", "b"]).dictionary_encode(), "n": pa.array([1, 2], pa.int64())}),
     {"s": ["a", "b"], "n": [1, 2]}),
    ({"d": [__import__("decimal").Decimal("1.5")], "y": [2]}, {"d": [1.5], "y": [2]}),
    (pa.table({"d": pa.array([__import__("decimal").Decimal("2.25")], pa.decimal128(10, 2)), "y": [1]}),
     {"d": [2.25], "y": [1]}),
])
def test_client_encoding_is_what_the_server_decodes(data, expected):
    from app.control.columns import to_jsonable

    cmd = protocol.parse(wire.encode("stream", name="f", data=data))
    assert {k: to_jsonable(v) for k, v in cmd.data.items()} == expected


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("array,expected", [
    (pa.array([2**53 + 1], pa.int64()), [float(2**53)]),             # rounded to float64
    (pa.array(["a", "b"]).dictionary_encode(), ["a", "b"]),
    (pa.array(["a", None], pa.large_string()), ["a", ""]),
    (pa.array([dt.datetime(2024, 1, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=2)))],
              pa.timestamp("us", tz="+02:00")), [1704092400000]),     # 07:00 UTC
    (pa.array([dt.datetime(2024, 1, 1, 9)], pa.timestamp("ns")), [1704099600000]),  # as written
    (pa.array([dt.date(2024, 1, 1)], pa.date32()), [1704067200000]),
    (pa.array([None], pa.null()), [None]),
    (pa.array([__import__("decimal").Decimal("1.25")], pa.decimal128(5, 2)), "rejected"),
    (pa.array([dt.time(9)], pa.time64("us")), "rejected"),
    (pa.array([True, None]), "rejected"),
    (pa.array([[1]]), "rejected"),
])
def test_documented_arrow_types_on_the_server(array, expected):
    """The table 'Arrow types' of docs/protocol.md, as the instances' parser reads them."""
    from app.control.columns import to_jsonable

    fields = {"op": "stream", "name": "f", "arrow": _ipc(pa.table({"c": array}))}
    if expected == "rejected":
        with pytest.raises(protocol.Rejected):
            protocol.parse(fields)
    else:
        assert to_jsonable(protocol.parse(fields).data["c"]) == expected


def test_documented_time_zone_rule_for_iso_text():
    from app.control.state import EMPTY, step

    state = EMPTY
    for f in ({"op": "replace", "name": "f", "kind": "line", "x_axis_type": "datetime",
               "data": '{"t":["2024-01-01T09:00","2024-01-01T09:00+02:00"],"y":[1,2]}'},):
        state, _ = step(state, protocol.parse(f))
    assert list(state.figures["f"].data["t"]) == [1704099600000.0, 1704092400000.0]


def test_layout_columns_keep_their_groups():
    fields = wire.encode("layout", cols=[["b", "a"], ["c"]])
    assert json.loads(fields["cols"]) == [["b", "a"], ["c"]]
    cmd = protocol.parse(fields)
    assert (cmd.mode, cmd.groups) == ("columns", (("b", "a"), ("c",)))
    # the old name of the field, as controllers in other languages still send it
    old = protocol.parse({"op": "layout", "columns": '[["b","a"]]'})
    assert (old.mode, old.groups) == ("columns", (("b", "a"),))
    with pytest.raises(protocol.Rejected, match="exactly one of rows or cols"):
        protocol.parse({"op": "layout", "cols": '[["a"]]', "columns": '[["b"]]'})


def test_async_controller_has_the_same_methods():
    import inspect

    from bokeh_fleet import AsyncController, Controller

    def public(cls):
        return {n: inspect.signature(getattr(cls, n)) for n in dir(cls)
                if not n.startswith("_") and callable(getattr(cls, n))}

    sync, aio = public(Controller), public(AsyncController)
    assert set(sync) == set(aio)
    for name, sig in sync.items():
        assert list(sig.parameters) == list(aio[name].parameters), name
        if name not in ("http", "close"):
            assert inspect.iscoroutinefunction(getattr(AsyncController, name)), name
