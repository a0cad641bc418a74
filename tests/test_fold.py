"""The pure fold: op semantics, idempotency, and snapshot + tail == whole log."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.control import snapshot as snap
from app.control.protocol import Rejected, parse
from app.control.state import EMPTY, FoldConfig, apply, step


def fold(cmds, state=EMPTY, cfg=FoldConfig()):
    for fields in cmds:
        try:
            state = apply(state, parse(fields), cfg)
        except Rejected:
            pass
    return state


LINE = {"op": "replace", "name": "p", "kind": "line", "data": '{"t":[1,2],"y":[10,20]}'}


def test_stream_with_rollover_keeps_the_tail():
    s = fold([LINE, {"op": "stream", "name": "p", "data": '{"t":[3,4,5],"y":[30,40,50]}', "rollover": "3"}])
    assert list(s.figures["p"].data["t"]) == [3, 4, 5]


def test_figure_rollover_applies_to_later_streams():
    s = fold([{**LINE, "rollover": "2"}, {"op": "stream", "name": "p", "data": '{"t":[3],"y":[30]}'}])
    assert list(s.figures["p"].data["y"]) == [20, 30]


def test_patch_clear_remove_layout_set():
    s = fold([LINE, {**LINE, "name": "q"},
              {"op": "patch", "name": "p", "patches": '{"y":[[0, 11], [-1, 21]]}'},
              {"op": "layout", "columns": '[["q","p"]]'},
              {"op": "set", "name": "q", "title": "Q!", "y_label": "units"},
              {"op": "set", "title": "Board"},
              {"op": "clear", "name": "q"}])
    assert list(s.figures["p"].data["y"]) == [11, 21]
    assert s.layout_mode == "columns" and s.layout == (("q", "p"),)
    assert s.figures["q"].title == "Q!" and s.figures["q"].length == 0 and s.title == "Board"
    s = fold([{"op": "remove", "name": "q"}], s)
    assert list(s.figures) == ["p"] and s.layout == (("p",),)


def test_state_dependent_rejections():
    s = fold([LINE])
    for fields, words in [
        ({"op": "stream", "name": "nope", "data": '{"t":[1]}'}, "no figure 'nope'"),
        ({"op": "stream", "name": "p", "data": '{"t":[1]}'}, "do not match"),
        ({"op": "stream", "name": "p", "data": '{"t":[1],"y":["x"]}'}, "holds number"),
        ({"op": "patch", "name": "p", "patches": '{"y":[[5, 1]]}'}, "outside"),
        ({"op": "patch", "name": "p", "patches": '{"y":[[0, "x"]]}'}, "holds number"),
        ({"op": "layout", "rows": '[["p","zz"]]'}, "no figure 'zz'"),
    ]:
        with pytest.raises(Rejected) as info:
            step(s, parse(fields))
        assert words in info.value.reason


def test_datetime_text_becomes_milliseconds():
    s = fold([{"op": "replace", "name": "d", "kind": "line", "x_axis_type": "datetime",
               "data": '{"t":["2026-01-01T00:00:00"],"y":[1]}'},
              {"op": "stream", "name": "d", "data": '{"t":["2026-01-01T00:00:01"],"y":[2]}'}])
    assert list(s.figures["d"].data["t"]) == [1767225600000.0, 1767225601000.0]


def test_same_id_applied_once():
    cmd = {"op": "stream", "name": "p", "data": '{"t":[3],"y":[30]}', "id": "abc"}
    s1 = fold([LINE, cmd])
    s2, resolved = step(s1, parse(cmd))
    assert s2 is s1 and resolved is None
    assert s1.figures["p"].length == 3


def test_idempotency_window_is_bounded():
    cfg = FoldConfig(idempotency_window=3)
    s = fold([LINE] + [{"op": "stream", "name": "p", "data": '{"t":[1],"y":[1]}', "id": str(i)}
                       for i in range(10)], cfg=cfg)
    assert s.seen == ("7", "8", "9")


def test_figure_limit():
    cfg = FoldConfig(max_figures=2)
    s = fold([LINE, {**LINE, "name": "q"}], cfg=cfg)
    with pytest.raises(Rejected, match="limit"):
        step(s, parse({**LINE, "name": "r"}), cfg)


# --- property: snapshot + tail == whole log -----------------------------------------------
names = st.sampled_from(["a", "b", "c"])
nums = st.lists(st.one_of(st.integers(-5, 5), st.floats(-1e6, 1e6, allow_nan=False)), min_size=0, max_size=4)


@st.composite
def commands(draw):
    op = draw(st.sampled_from(["replace", "stream", "stream", "stream", "patch", "clear", "remove",
                               "layout", "set", "garbage"]))
    name = draw(names)
    cid = draw(st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3", "k4"])))
    base = {"op": op, "name": name}
    if cid:
        base["id"] = cid
    if op == "replace":
        n = draw(st.integers(0, 3))
        kind = draw(st.sampled_from(["line", "scatter", "bar", "table"]))
        roll = draw(st.one_of(st.none(), st.integers(1, 5)))
        base.update(kind=kind, data=json.dumps({"x": list(range(n)), "y": [float(i) for i in range(n)]}))
        if roll:
            base["rollover"] = str(roll)
    elif op == "stream":
        ys = draw(nums)
        base["data"] = json.dumps({"x": [1.0] * len(ys), "y": ys} if draw(st.booleans()) else {"x": ys})
        if draw(st.booleans()):
            base["rollover"] = str(draw(st.integers(1, 6)))
    elif op == "patch":
        base["patches"] = json.dumps({"y": [[draw(st.integers(-3, 6)), draw(st.integers(0, 9))]]})
    elif op == "layout":
        del base["name"]
        base["rows"] = json.dumps([draw(st.lists(names, min_size=1, max_size=3, unique=True))])
    elif op == "set":
        base["title"] = draw(st.text(max_size=5))
    elif op == "garbage":
        base = {"op": "stream", "name": name, "data": draw(st.text(max_size=10))}
    elif op == "clear" and draw(st.booleans()):
        del base["name"]
    return base


@settings(max_examples=300, deadline=None)
@given(st.lists(commands(), max_size=40), st.data())
def test_fold_of_snapshot_plus_tail_equals_fold_of_log(log, data):
    cut = data.draw(st.integers(0, len(log)))
    cfg = FoldConfig(idempotency_window=2, max_figure_rows=8)
    whole = fold(log, cfg=cfg)
    head = fold(log[:cut], cfg=cfg)
    restored = snap.loads(snap.dumps(snap.Snapshot(head, "1-0", "e"))).state
    assert snap.digest(restored) == snap.digest(head)
    assert snap.digest(fold(log[cut:], restored, cfg)) == snap.digest(whole)


def test_view_is_plain_json():
    s = fold([LINE, {"op": "stream", "name": "p", "data": '{"t":[3],"y":[null]}'}])
    view = snap.view(s)
    json.dumps(view, allow_nan=False)
    assert view["figures"][0]["data"] == {"t": [1, 2, 3], "y": [10, 20, None]}
    assert isinstance(s.figures["p"].data["t"], np.ndarray)
