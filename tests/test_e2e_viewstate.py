"""Per-viewer view state with one shared document (headless Chromium, whole stack).

Two pages of the same dashboard on the same instance are two connections to one
server-side document.  A legend click (which BokehJS sends to the server as a
PATCH-DOC setting the renderers' ``visible``) and a zoom (range start/end) in one page
must change nothing in the other page, nor in a page opened afterwards, while both
keep receiving every update.  The page script does what the legend's click handler
and the zoom tools do: set those properties on the page's own models.
"""

from __future__ import annotations

import json

import pytest

from fleet_testing.stack import Stack, login, open_dashboard, wait_marker

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("e2e_viewstate")]

PASSWORD = "viewstate-password"

VIEW = """() => {
  const d = Bokeh.documents[0];
  const out = {hidden: 0, renderers: 0, start: null, end: null};
  for (const m of d.all_models) {
    const t = String(m.type).split('.').pop();
    if (t === 'GlyphRenderer') { out.renderers += 1; if (!m.visible) out.hidden += 1; }
    if (t === 'Figure' || t === 'Plot') { out.start = m.x_range.start; out.end = m.x_range.end; }
  }
  return out;
}"""

LEGEND_CLICK_AND_ZOOM = """() => {
  const d = Bokeh.documents[0];
  for (const m of d.all_models) {
    const t = String(m.type).split('.').pop();
    if (t === 'Legend') { for (const r of m.items[0].renderers) r.visible = false; }
    if (t === 'Figure' || t === 'Plot') { m.x_range.setv({start: 1.25, end: 1.75}); }
  }
}"""


@pytest.fixture(scope="module")
def live():
    s = Stack(instances=1)
    try:
        s.start_healthy()
        s.fleetctl("dashboard", "create", "vs")
        s.add_user("viewer", PASSWORD, "vs")
        s.redis_cli("XADD", "fleet:{vs}:commands", "*", "op", "replace", "name", "p", "kind", "line",
                    "data", json.dumps({"x": [1, 2, 3], "a": [1.0, 4.0, 2.0], "b": [2.0, 1.0, 3.0]}))
        yield s
    finally:
        s.stop()


def test_legend_click_and_zoom_in_one_page_do_not_change_another(live, browser):
    contexts = []
    try:
        pages = []
        for _ in range(2):
            ctx, page = login(browser, live.url, "viewer", PASSWORD)
            contexts.append(ctx)
            open_dashboard(page, live.url, "vs")
            pages.append(page)
        a, b = pages
        assert live.instance_sessions(1, "vs") == 2  # two connections to the one document
        before = b.evaluate(VIEW)
        assert before["renderers"] >= 2 and before["hidden"] == 0

        a.evaluate(LEGEND_CLICK_AND_ZOOM)
        live.redis_cli("XADD", "fleet:{vs}:commands", "*", "op", "stream", "name", "p",
                       "data", json.dumps({"x": [4], "a": [777.5], "b": [0.0]}))
        wait_marker(pages, 777.5, timeout=10)  # both pages still get every update

        seen_a, seen_b = a.evaluate(VIEW), b.evaluate(VIEW)
        assert seen_a["hidden"] >= 1 and (seen_a["start"], seen_a["end"]) == (1.25, 1.75)
        assert seen_b["hidden"] == 0 and (seen_b["start"], seen_b["end"]) != (1.25, 1.75)

        ctx, late = login(browser, live.url, "viewer", PASSWORD)
        contexts.append(ctx)
        open_dashboard(late, live.url, "vs")
        wait_marker([late], 777.5, timeout=10)
        seen_late = late.evaluate(VIEW)
        assert seen_late["hidden"] == 0 and (seen_late["start"], seen_late["end"]) != (1.25, 1.75)
    finally:
        for c in contexts:
            c.close()
