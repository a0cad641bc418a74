"""In-process document tests: the fan-out's shared documents, without Redis or a server.

Commands go through the real pure core (``parse`` + ``step``) and are handed to the
:class:`~app.instance.sessions.Fanout` exactly as the reader would hand them over.
"""

from __future__ import annotations

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.models import ColumnDataSource, DataTable, DatetimeAxis, FactorRange, HoverTool, Legend

from app.control import EMPTY, encode, parse, step
from app.instance.sessions import Fanout
from fleet_testing.pages import Page


class Feed:
    """What the reader holds: the folded state and the last id, plus the listener calls."""

    def __init__(self) -> None:
        self.state = EMPTY
        self.n = 0
        self.fanout = Fanout(lambda d: (self.state, f"{self.n}-0") if d == "d" else None)

    def publish(self, op: str, **params) -> None:
        self.state, resolved = step(self.state, parse(encode(op, **params)))
        self.n += 1
        if resolved is not None:
            self.fanout.on_command("d", f"{self.n}-0", resolved, self.state)


def board(feed: Feed):
    """The dashboard's shared document, built for a first viewer."""
    Page(feed.fanout).pull()
    return feed.fanout.boards["d"]


def sources(doc: Document) -> dict[str, dict[str, list]]:
    return {m.name: {k: list(v) for k, v in m.data.items()} for m in doc.models
            if isinstance(m, ColumnDataSource) and m.name}


def state_data(state) -> dict[str, dict[str, list]]:
    return {n: {k: list(v) for k, v in f.data.items()} for n, f in state.figures.items() if f.kind != "model"}


def same(a: dict, b: dict) -> bool:
    """Equal data, NaN equal to NaN."""
    if a.keys() != b.keys():
        return False
    for name in a:
        if a[name].keys() != b[name].keys():
            return False
        for col in a[name]:
            x, y = a[name][col], b[name][col]
            if len(x) != len(y):
                return False
            for u, v in zip(x, y, strict=True):
                if not (u == v or (isinstance(u, float) and isinstance(v, float) and np.isnan(u) and np.isnan(v))):
                    return False
    return True


def script(feed: Feed) -> None:
    feed.publish("replace", name="prices", kind="line", x_axis_type="datetime",
                 data={"t": ["2024-01-01T00:00:00", "2024-01-01T00:00:01"], "bid": [1, 2], "ask": [2, 3]})
    feed.publish("replace", name="counts", kind="bar", data={"cat": ["a", "b"], "n": [1, 2]})
    feed.publish("replace", name="orders", kind="table", data={"id": [1, 2], "side": ["buy", "sell"]})
    for i in range(5):
        feed.publish("stream", name="prices", data={"t": [f"2024-01-01T00:00:{2 + i:02d}"], "bid": [i], "ask": [None]})
    feed.publish("patch", name="counts", patches={"n": [[0, 10]]})
    feed.publish("stream", name="counts", data={"cat": ["c"], "n": [3]})
    feed.publish("stream", name="orders", data={"id": [3], "side": ["buy"]}, rollover=2)
    feed.publish("set", name="prices", title="Prices")
    feed.publish("layout", rows=[["prices", "counts"], ["orders"]])
    feed.publish("replace", name="scatter", kind="scatter", data={"x": [1, 2], "y": [3, 4]})
    feed.publish("clear", name="scatter")
    feed.publish("remove", name="scatter")
    feed.publish("stream", name="prices", data={"t": ["2024-01-01T00:01:00"], "bid": [9], "ask": [9]})


def test_live_viewer_and_late_viewer_show_the_folded_state():
    feed = Feed()
    early = Page(feed.fanout).pull()
    script(feed)
    late = Page(feed.fanout).pull()
    early.sync()
    want = state_data(feed.state)
    assert same(early.sources(), want)
    assert same(late.sources(), want)
    assert early.sources()["orders"]["id"] == [2.0, 3.0]  # rollover
    assert early.sources()["counts"]["n"] == [10.0, 2.0, 3.0]  # patch then stream
    # the server's one document shows the same
    assert same(sources(feed.fanout.boards["d"].doc), want)


def test_specs_look_careful():
    feed = Feed()
    script(feed)
    view = board(feed)
    doc = view.doc
    prices = view.dd.views["prices"].plot
    assert prices.sizing_mode == "stretch_width"
    assert any(isinstance(a, DatetimeAxis) for a in prices.below)
    hover = [t for t in prices.tools if isinstance(t, HoverTool)][0]
    assert [label for label, _ in hover.tooltips] == ["t", "bid", "ask"]  # ("*","*"): one row per column
    assert hover.formatters == {"@{t}": "datetime"}
    assert any(isinstance(r, Legend) for r in prices.center) and len(prices.legend[0].items) == 2
    assert prices.title.text == "Prices"
    counts = view.dd.views["counts"].plot
    assert isinstance(counts.x_range, FactorRange) and list(counts.x_range.factors) == ["a", "b", "c"]
    assert not counts.legend  # one series: no legend
    assert any(isinstance(m, DataTable) for m in doc.models)


def test_replace_swaps_only_that_figure_and_layout_keeps_models():
    feed = Feed()
    view = board(feed)
    doc = view.doc
    feed.publish("replace", name="a", kind="line", data={"x": [1], "y": [1]})
    feed.publish("replace", name="b", kind="line", data={"x": [1], "y": [1]})
    a_plot, b_plot = view.dd.views["a"].plot, view.dd.views["b"].plot
    b_source = view.dd.views["b"].source
    feed.publish("replace", name="a", kind="scatter", data={"x": [5], "y": [6]})
    assert view.dd.views["a"].plot is not a_plot
    assert view.dd.views["b"].plot is b_plot and view.dd.views["b"].source is b_source
    feed.publish("layout", columns=[["b", "a"]])
    assert view.dd.views["b"].plot is b_plot and view.dd.views["b"].source is b_source
    assert b_plot.document is doc and view.dd.views["a"].plot.document is doc
    assert a_plot.document is None  # the old figure left the document


def test_model_figure_is_rebuilt_from_json_item():
    from bokeh.embed import json_item
    from bokeh.plotting import figure

    p = figure(title="custom")
    p.scatter([1, 2, 3], [4, 5, 6], size=12)
    feed = Feed()
    feed.publish("figure", name="m", model=json_item(p))
    view = board(feed)
    doc = view.doc
    root = view.dd.views["m"].root
    assert root.title.text == "custom" and root.document is doc
    feed.publish("set", name="m", title="renamed")
    assert view.dd.views["m"].root.title.text == "renamed"


def test_reset_rebuilds_the_document_in_place_and_unknown_dashboard_refused():
    feed = Feed()
    feed.publish("replace", name="p", kind="line", data={"x": [0], "y": [0]})
    page = Page(feed.fanout).pull()
    view = feed.fanout.boards["d"]
    feed.fanout.on_reset("d", EMPTY, "0-0")
    assert sources(view.doc) == {} and view.dd.views == {}
    assert page.sync().sources() == {} and not page.closed
    feed.fanout.on_reset("d", None, "0-0")
    assert "deleted" in view.dd.header.text
    with pytest.raises(LookupError):
        feed.fanout.open_viewer(None, "other")
