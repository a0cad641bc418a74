"""Panels (stat, gauge, text) and figure heights: parse, fold, snapshot, Bokeh models, and
the Markdown renderer's safety (issue 16).  Pure: no Redis, no browser."""

from __future__ import annotations

import json

import pytest

from app.control import protocol, snapshot, state
from app.control.protocol import Rejected
from app.control.roles import effective_roles, may_view, view_only
from app.instance import panels
from app.instance.documents import PLOT_HEIGHT, FigureView


def fold(*entries: dict) -> state.DashboardState:
    s = state.EMPTY
    for e in entries:
        s = state.apply(s, protocol.parse(e))
    return s


def test_stat_shows_the_latest_value_and_its_change_and_stream_updates_it():
    s = fold({"op": "replace", "name": "rev", "kind": "stat", "unit": "kEUR", "data": json.dumps({"v": [118, 124.5]})})
    fig = s.figures["rev"]
    assert fig.y == ("v",) and dict(fig.panel) == {"unit": "kEUR"}
    view = FigureView(fig)
    assert view.root.tags[0] is view.source and view.source.name == "rev"  # in the document, for CSV
    assert "124.5" in view.root.text and "kEUR" in view.root.text and "▲ +6.50 (+5.5%)" in view.root.text
    s2 = state.apply(s, protocol.parse({"op": "stream", "name": "rev", "data": json.dumps({"v": [100]})}))
    view.stream({"v": s2.figures["rev"].data["v"][-1:]}, None, s2.figures["rev"])
    assert "▼ -24.50 (-19.7%)" in view.root.text
    assert list(view.source.data["v"]) == [118, 124.5, 100]


def test_gauge_range_and_set_change_the_presentation():
    s = fold({"op": "replace", "name": "g", "kind": "gauge", "min": "0", "max": "200", "data": json.dumps({"v": [50]})},
             {"op": "set", "name": "g", "unit": "rpm", "height": "240"})
    fig = s.figures["g"]
    assert dict(fig.panel) == {"min": 0.0, "max": 200.0, "unit": "rpm", "height": 240}
    view = FigureView(fig)
    assert view.root.height == 240 and "rpm" in view.root.text and ">50<" in view.root.text
    with pytest.raises(Rejected, match="min .* must be below its max"):
        state.apply(s, protocol.parse({"op": "set", "name": "g", "max": "-1"}))


@pytest.mark.parametrize("entry, field", [
    ({"op": "replace", "name": "t", "kind": "line", "text": "x", "data": '{"x":[1],"y":[2]}'}, "text"),
    ({"op": "replace", "name": "t", "kind": "text", "data": '{"x":[1]}'}, "data"),
    ({"op": "replace", "name": "t", "kind": "stat"}, "columns"),
    ({"op": "replace", "name": "t", "kind": "table", "unit": "x", "data": '{"x":[1]}'}, "unit"),
    ({"op": "replace", "name": "t", "kind": "line", "height": "5", "data": '{"x":[1],"y":[2]}'}, "height"),
    ({"op": "replace", "name": "t", "kind": "gauge", "min": "nan", "data": '{"x":[1]}'}, "min"),
    ({"op": "replace", "name": "t", "kind": "text", "text": "x" * 20_001}, "text"),
    ({"op": "set", "height": "100"}, "height"),
])
def test_bad_panel_fields_are_rejected_naming_the_field(entry, field):
    with pytest.raises(Rejected) as exc:
        fold(entry)
    assert exc.value.field == field, exc.value


def test_height_of_plots_and_tables_and_the_snapshot_round_trip():
    s = fold({"op": "replace", "name": "p", "kind": "line", "height": "180", "data": '{"x":[1,2],"y":[2,3]}'},
             {"op": "replace", "name": "q", "kind": "line", "data": '{"x":[1,2],"y":[2,3]}'},
             {"op": "replace", "name": "n", "kind": "text", "text": "# hi"})
    assert FigureView(s.figures["p"]).plot.height == 180
    assert FigureView(s.figures["q"]).plot.height == PLOT_HEIGHT
    back = snapshot.loads(snapshot.dumps(snapshot.Snapshot(s))).state
    assert snapshot.digest(back) == snapshot.digest(s)
    assert dict(back.figures["n"].panel) == {"text": "# hi"}
    # a figure without panel fields serialises exactly as before (digests unchanged)
    assert "panel" not in snapshot.dump_state(s)["figures"][1]


@pytest.mark.parametrize("md, bad", [
    ("<script>alert(1)</script>", "<script"),
    ('<img src=x onerror="alert(1)">', "<img"),
    ("[x](javascript:alert(1))", 'href="javascript'),
    ("[x](JaVaScRiPt:alert(1))", "href=\"javascript"),
    ("[x](data:text/html,<script>alert(1)</script>)", 'href="data'),
    ("[x](vbscript:msgbox)", 'href="vbscript'),
    ("[x](/auth/logout)", 'href="/'),
    ("![i](http://canary/x.png)", "<img"),
    ('<a href="javascript:x">a</a>', "<a href"),
    ("<svg onload=alert(1)>", "<svg"),
    ('[x](http://a.b "t\\" onmouseover=\\"alert(1)")', '" onmouseover'),
])
def test_markdown_is_safe_html(md, bad):
    out = panels.markdown_html(md)
    assert bad.lower() not in out.lower(), out


def test_markdown_keeps_what_a_note_needs():
    out = panels.markdown_html("## Today\n* **bold** and `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
                               "[runbook](https://wiki.example/run) <mailto:ops@example.org>")
    assert "<h2>Today</h2>" in out and "<strong>bold</strong>" in out and "<code>code</code>" in out
    assert "<table>" in out
    assert '<a href="https://wiki.example/run" target="_blank" rel="noopener noreferrer">runbook</a>' in out
    assert 'href="mailto:ops@example.org"' in out


def test_display_role_stands_alone_and_may_only_view():
    assert effective_roles(["display"]) == ("display",) and view_only(["display"])
    assert effective_roles(["viewer"]) == ("viewer",) and not view_only(["viewer"])
    assert effective_roles(["display", "viewer"]) == ("viewer",)  # with another role, ignored
    rules = {"wall": {"users": [], "roles": ["display"]}}
    assert may_view("tv", ("display",), "wall", rules)
    assert not may_view("alice", ("viewer",), "wall", rules)  # display implies nothing and is implied by nothing
