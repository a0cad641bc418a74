"""In-process delivery tests: the fan-out and the documents, without Redis or a server.

Commands go through the real pure core (``parse`` + ``step``) and are handed to the
:class:`~app.instance.sessions.Fanout` exactly as the reader would hand them over.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.models import ColumnDataSource, DataTable, DatetimeAxis, FactorRange, HoverTool, Legend

from app.control import EMPTY, encode, parse, step
from app.instance.sessions import Fanout


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


def test_live_session_and_late_session_show_the_folded_state():
    feed = Feed()
    early = Document()
    feed.fanout.open_session("s-early", "d", early)
    script(feed)
    late = Document()
    feed.fanout.open_session("s-late", "d", late)
    want = state_data(feed.state)
    assert same(sources(early), want)
    assert same(sources(late), want)
    assert sources(early)["orders"]["id"] == [2.0, 3.0]  # rollover
    assert sources(early)["counts"]["n"] == [10.0, 2.0, 3.0]  # patch then stream


def test_specs_look_careful():
    feed = Feed()
    script(feed)
    doc = Document()
    view = feed.fanout.open_session("s", "d", doc)
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
    doc = Document()
    view = feed.fanout.open_session("s", "d", doc)
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
    doc = Document()
    view = feed.fanout.open_session("s", "d", doc)
    root = view.dd.views["m"].root
    assert root.title.text == "custom" and root.document is doc
    feed.publish("set", name="m", title="renamed")
    assert view.dd.views["m"].root.title.text == "renamed"


class FakeSession:
    """Stands in for a ServerSession: the parts of its document-lock bookkeeping that
    app.instance.wire.locked_on_loop uses (the lock is an asyncio.Lock)."""

    def __init__(self) -> None:
        self.destroyed = False
        self._lock = asyncio.Lock()
        self._pending_writes = None
        self.calls = 0
        self.expiry_blocks = 0

    def block_expiration(self) -> None:
        self.calls += 1
        self.expiry_blocks += 1

    def unblock_expiration(self) -> None:
        self.expiry_blocks -= 1

    async def _send_pending_patches(self, pending) -> None:
        pass


class FakeContext:
    def __init__(self) -> None:
        self._session = FakeSession()


def test_lagging_session_coalesces_streams_in_order():
    async def main():
        feed = Feed()
        feed.publish("replace", name="p", kind="line", data={"x": [0], "y": [0]})
        ctx = FakeContext()
        doc = Document()
        feed.fanout.open_session("s", "d", doc, context=ctx)
        events = []
        doc.on_change(lambda ev: events.append(type(ev).__name__))
        for i in range(1, 51):  # no await in between: the session falls behind
            feed.publish("stream", name="p", data={"x": [i], "y": [i * i]}, rollover=1000)
        feed.publish("patch", name="p", patches={"y": [[0, -1]]})
        for i in range(51, 61):
            feed.publish("stream", name="p", data={"x": [i], "y": [i * i]}, rollover=1000)
        await feed.fanout.drain_all()
        assert sources(doc) == state_data(feed.state)
        assert sources(doc)["p"]["x"] == [float(i) for i in range(61)]
        assert events == ["ColumnsStreamedEvent", "ColumnsPatchedEvent", "ColumnsStreamedEvent"]
        assert feed.fanout.stats["coalesced"] == 49 + 9
        assert ctx._session.calls == 1
        assert feed.fanout.fanout_seconds.total == 61  # every command counted once

    asyncio.run(main())


def test_destroyed_session_is_dropped_and_others_continue():
    async def main():
        feed = Feed()
        feed.publish("replace", name="p", kind="line", data={"x": [0], "y": [0]})
        a, b = FakeContext(), FakeContext()
        da, db = Document(), Document()
        feed.fanout.open_session("a", "d", da, context=a)
        feed.fanout.open_session("b", "d", db, context=b)
        a._session.destroyed = True
        feed.publish("stream", name="p", data={"x": [1], "y": [1]})
        await feed.fanout.drain_all()
        assert feed.fanout.session_count() == {"d": 1}
        assert sources(db)["p"]["x"] == [0.0, 1.0]

    asyncio.run(main())


def test_reset_rebuilds_sessions_and_unknown_dashboard_refused():
    feed = Feed()
    feed.publish("replace", name="p", kind="line", data={"x": [0], "y": [0]})
    doc = Document()
    view = feed.fanout.open_session("s", "d", doc)
    feed.fanout.on_reset("d", EMPTY, "0-0")
    assert sources(doc) == {} and view.dd.views == {}
    feed.fanout.on_reset("d", None, "0-0")
    assert "deleted" in view.dd.header.text
    with pytest.raises(LookupError):
        feed.fanout.open_session("x", "other", Document())
