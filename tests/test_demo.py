"""The demo controller shows what the system can do, and a dashboard page has one title.

Real Redis and a real instance process: the demo controller's two dashboards reach a
headless Bokeh session with every figure kind of the protocol, live; ``set title``
changes the page's one heading (the web page shows none of its own).
"""

from __future__ import annotations

import asyncio
import re
import threading

import pytest
from bokeh.models import ColumnDataSource, DataTable, Div, GlyphRenderer

from app.bus import registry
from app.bus.connection import sync_client
from app.bus.keys import Keys
from app.client import Controller
from app.stack import demo
from fleet_testing.bokeh import BokehClient, allow_viewer, mint_token
from fleet_testing.helpers import until

pytestmark = pytest.mark.xdist_group("demo")


@pytest.fixture
def demo_running(fleet_settings):
    client = sync_client(fleet_settings)
    allow_viewer(client, Keys(fleet_settings.key_prefix))  # the user of mint_token's tokens
    client.close()
    stop = threading.Event()
    t = threading.Thread(target=demo.run, args=(fleet_settings,), kwargs={"interval": 0.05, "stop": stop})
    t.start()
    yield
    stop.set()
    t.join(10)
    assert not t.is_alive()


def glyphs(doc) -> set[str]:
    return {type(m.glyph).__name__ for m in doc.models if isinstance(m, GlyphRenderer)}


def source_rows(doc, name: str) -> int:
    for m in doc.models:
        if isinstance(m, ColumnDataSource) and m.name == name:
            return len(next(iter(m.data.values()), []))
    return -1


def headings(doc) -> list[str]:
    """Texts of the document's <h1> title(s)."""
    out = []
    for m in doc.models:
        if isinstance(m, Div) and (hit := re.search(r"<h1[^>]*>(.*?)</h1>", m.text or "")):
            out.append(hit.group(1))
    return out


def test_demo_dashboards_show_every_figure_kind_live_and_one_title(fleet_settings, demo_running, start_instance):
    inst = start_instance()

    async def main():
        with Controller(settings=fleet_settings) as ctl:
            await until(lambda: {"demo", "demo-ops"} <= set(ctl.dashboards())
                        and "orders" in ctl.state("demo").figures and ctl.state("demo").layout, 20, "demo defined")
        await until(lambda: inst.healthz()[0] == 200, 20, "instance healthy")
        secret = fleet_settings.secret_key
        c = await BokehClient(inst.ws_url, mint_token(secret, "demo")[1]).connect(timeout=20)
        ops = await BokehClient(inst.ws_url, mint_token(secret, "demo-ops")[1]).connect(timeout=20)
        try:
            doc = c.doc
            # line (+ area's outline), area, bars, scatter, step, and a live table, in a 2x3 grid
            assert {"Line", "VArea", "VBar", "Scatter", "Step"} <= glyphs(doc)
            assert any(isinstance(m, DataTable) for m in doc.models)
            with Controller(settings=fleet_settings) as ctl:
                assert ctl.state("demo").layout == tuple(tuple(g) for g in demo.GRID)
            # everything keeps moving: the line rolls, the table fills up to its window
            first = source_rows(doc, "signal")
            await until(lambda: source_rows(doc, "signal") > first, 10, "the line to grow")
            await until(lambda: source_rows(doc, "latency") > 3, 10, "scatter points")
            await until(lambda: source_rows(doc, "orders") == demo.TABLE_ROWS, 20, "a full live table")
            bars = list(c.data("requests")["requests"])
            await until(lambda: list(c.data("requests")["requests"]) != bars, 10, "bars patched in place")
            assert "VBar" in glyphs(ops.doc) and any(isinstance(m, DataTable) for m in ops.doc.models)

            # one heading, the dashboard's own; `set title` changes it
            assert headings(doc) == [demo.TITLE]
            with Controller(settings=fleet_settings) as ctl:
                ctl.set("demo", title="Renamed <by set title>")
            await until(lambda: headings(doc) == ["Renamed &lt;by set title&gt;"], 10, "the new title")
        finally:
            await c.close()
            await ops.close()

    asyncio.run(main())


def test_dashboard_page_has_no_title_of_its_own(client, auth, fleet_bus):
    """The page around the Bokeh document shows no second (and soon outdated) title."""
    registry.create_dashboard(fleet_bus.client, fleet_bus.keys, "sales", title="Sales Title")
    fleet_bus.accounts.grant_access("sales", users=["alice"])
    auth.login("alice")
    r = client.get("/d/sales")
    assert r.status_code == 200
    body = r.get_data(as_text=True)
    assert "<h1" not in body
    assert "<title>Sales Title" in body or "Sales Title</title>" in body  # the tab still names it
