"""Unit tests of wire protocol v1 parsing (pure, no Redis)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.control import columns as cols
from app.control.protocol import Limits, Rejected, encode, parse


def rejected(fields, limits=Limits()):
    with pytest.raises(Rejected) as info:
        parse(fields, limits)
    return info.value


def test_stream_json_columns_are_typed_once():
    cmd = parse({b"op": b"stream", b"name": b"p", b"data": b'{"t":[1,2],"y":[1.5,null],"s":["a","b"]}'})
    assert cmd.op == "stream" and cmd.name == "p" and cmd.rows == 2
    assert cmd.data["t"].dtype == np.float64
    assert np.isnan(cmd.data["y"][1])
    assert cmd.data["s"].dtype == object and list(cmd.data["s"]) == ["a", "b"]


def test_arrow_payload_decodes_like_json():
    import pandas as pd

    df = pd.DataFrame({"t": pd.to_datetime(["2026-01-01", "2026-01-02"]), "y": [1, 2], "name": ["a", "b"]})
    fields = encode("stream", name="p", data=df)
    assert "arrow" in fields and "data" not in fields
    cmd = parse(fields)
    assert list(cmd.data["t"]) == [1767225600000.0, 1767312000000.0]
    assert list(cmd.data["y"]) == [1.0, 2.0]
    assert list(cmd.data["name"]) == ["a", "b"]


@pytest.mark.parametrize(
    "fields, field, words",
    [
        ({}, "op", "missing"),
        ({"op": "explode"}, "op", "unknown op"),
        ({"op": "stream", "name": "p"}, "data", "required"),
        ({"op": "stream", "name": "p", "data": "{nope"}, "data", "not valid JSON"),
        ({"op": "stream", "name": "p", "data": '{"a":[1],"b":[1,2]}'}, "data", "different lengths"),
        ({"op": "stream", "name": "p", "data": '{"a":[1,"x"]}'}, "data", "mixes"),
        ({"op": "stream", "name": "p", "data": '{"a":[[1]]}'}, "data", "got list"),
        ({"op": "stream", "name": "p", "data": "[1,2]"}, "data", "JSON object"),
        ({"op": "stream", "name": "p", "arrow": b"\x00garbage"}, "arrow", "Arrow"),
        ({"op": "stream", "name": "p", "data": "{}", "colour": "red"}, "colour", "unknown field"),
        ({"op": "stream", "name": "bad name!", "data": '{"a":[1]}'}, "name", "not a valid name"),
        ({"op": "stream", "name": "p", "data": '{"a":[1]}', "ts": "soon"}, "ts", "milliseconds"),
        ({"op": "stream", "name": "p", "data": '{"a":[1]}', "rollover": "-1"}, "rollover", "between"),
        ({"op": "replace", "name": "p", "kind": "pie", "data": '{"a":[1],"b":[2]}'}, "kind", "not one of"),
        ({"op": "replace", "name": "p", "kind": "line", "data": '{"a":[1],"b":[2]}', "x": "c"}, "x", "not one of"),
        ({"op": "replace", "name": "p", "kind": "line"}, "columns", "needs columns"),
        ({"op": "patch", "name": "p", "patches": '{"y": [[0]]}'}, "patches", "[index, value]"),
        ({"op": "patch", "name": "p", "patches": '{"y": [[0, {"a":1}]]}'}, "patches", "scalar"),
        ({"op": "layout", "rows": '[["a","a"]]'}, "rows", "more than once"),
        ({"op": "layout"}, "rows", "exactly one"),
        ({"op": "set", "name": "p"}, None, "at least one"),
        ({"op": "figure", "name": "p", "model": '{"doc":{}}'}, "model", "roots"),
        ({"op": b"\xff\xfe"}, "op", "UTF-8"),
    ],
)
def test_garbage_is_rejected_with_a_reason(fields, field, words):
    exc = rejected(fields)
    assert exc.field == field
    assert words in exc.reason


def test_size_limits():
    big = json.dumps({"y": list(range(200))})
    assert "more than the limit of 100" in rejected(
        {"op": "stream", "name": "p", "data": big}, Limits(max_rows_per_command=100)).reason
    assert "bytes" in rejected({"op": "stream", "name": "p", "data": big}, Limits(max_command_bytes=100)).reason
    many = json.dumps({f"c{i}": [1] for i in range(70)})
    assert "columns" in rejected({"op": "stream", "name": "p", "data": many}).reason


def _model_json(with_script: bool) -> str:
    from bokeh.embed import json_item
    from bokeh.models import CustomJS
    from bokeh.plotting import figure

    fig = figure()
    fig.line([1, 2], [3, 4])
    if with_script:
        fig.js_on_event("tap", CustomJS(code="alert(1)"))
    return json.dumps(json_item(fig))


def test_figure_with_script_refused():
    exc = rejected({"op": "figure", "name": "p", "model": _model_json(True)})
    assert "CustomJS" in exc.reason or "js_event_callbacks" in exc.reason  # no escape hatch any more
    assert parse({"op": "figure", "name": "p", "model": _model_json(False)}).op == "figure"


def test_encode_round_trips_through_parse():
    fields = encode("replace", name="p", kind="bar", data={"c": ["a", "b"], "v": [1, 2]},
                    tooltips=[["value", "@v"]], cmd_id="k1")
    cmd = parse(fields)
    assert cmd.kind == "bar" and cmd.cmd_id == "k1" and cmd.tooltips == (("value", "@v"),)
    with pytest.raises(Rejected):
        encode("stream", name="p")


def test_snapshot_column_serialisation_is_exact():
    arr = cols.from_values("y", [1.5, None, -0.0, 1e308])
    back = cols.load(cols.dump(arr))
    assert back.tobytes() == arr.tobytes()


@pytest.mark.parametrize("fields, field", [
    ({"op": "clear", "name": "prices\n"}, "name"),
    ({"op": "stream", "name": "p", "data": json.dumps({"y\n": [1.0]})}, "data"),
])
def test_trailing_newline_is_not_a_valid_name(fields, field):
    with pytest.raises(Rejected) as exc:
        parse(fields)
    assert exc.value.field == field


def test_trailing_newline_is_not_a_valid_dashboard_or_user_name():
    from app.bus.accounts import USERNAME_RE
    from app.bus.keys import check_dashboard_name

    with pytest.raises(ValueError):
        check_dashboard_name("prices\n")
    assert not USERNAME_RE.match("alice\n")
