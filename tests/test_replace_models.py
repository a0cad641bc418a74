"""A page left open while a controller replaces a figure line <-> bar keeps a constant
number of models: BokehJS 3.10 forgets unreachable models only every 30 s on its
own; app/web/static/series.js prunes them right after the patch that replaced them.
(bench/replace_memory.py measures heap, DOM nodes and listeners over minutes.)"""

from __future__ import annotations

import numpy as np
import pytest

from fleet_testing.stack import login, open_dashboard

pytestmark = [pytest.mark.browser]

# The page shows replace ``i`` (its title), has pruned after it, and holds ``expected``
# models (null: any); returns the count.
SHOWS = """([title, i, expected]) => {
  const doc = Bokeh.documents[0];
  let shown = false;
  for (const m of doc.all_models) if (String(m.type).endsWith('Title') && m.text === title) shown = true;
  const pruned = (window.__fleet_series && __fleet_series.pruned) || 0;
  const n = doc.all_models.size;
  return shown && pruned >= i && (expected === null || n === expected) ? n : false; }"""


def test_model_count_stays_constant_under_replace(stack_factory, browser):
    from app.client import Controller

    stack = stack_factory(instances=1)
    stack.start_healthy()
    stack.fleetctl("dashboard", "create", "swap")
    stack.add_user("viewer", "swap-viewer-password", "swap")
    x = np.arange(200, dtype=np.float64)
    with Controller(settings=stack.effective_settings()) as ctl:
        ctl.wait_applied(ctl.replace("swap", "f", kind="line", data={"x": x, "y": x}, title="r0"), timeout=30)
        ctx, page = login(browser, stack.url, "viewer", "swap-viewer-password")
        try:
            open_dashboard(page, stack.url, "swap")
            counts: dict[str, int] = {}
            for i in range(1, 25):
                kind = "bar" if i % 2 else "line"
                ctl.replace("swap", "f", kind=kind, data={"x": x, "y": x * i}, title=f"r{i}")
                expected = counts.get(kind) if i > 2 else None
                # every model of the replaced figure is gone once the new one shows
                got = page.wait_for_function(SHOWS, arg=[f"r{i}", i, expected], timeout=8000).json_value()
                counts.setdefault(kind, got)
            assert counts["bar"] > 30 and counts["line"] > 30  # really counted a plot's models
        finally:
            ctx.close()
