"""The page's status mark tells live data from a silent controller and a stale instance.

Whole stack under supervisord, headless Chromium through nginx: the demo controller
feeds the page ("live · updated N s ago"); stopped, the page turns "quiet" and its
age keeps counting; Redis stopped, the instance is not caught up and the page says
"stale" within 5 s; both started again, it is live again.
"""

from __future__ import annotations

import re
import time

import pytest

from fleet_testing.stack import Stack, login, open_dashboard

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("page_stale")]

PASSWORD = "stale-viewer-password"
QUIET = 4  # FLEET_PAGE_QUIET_SECONDS for this stack

MARK_JS = """() => {
  const el = document.getElementById('fleet-status');
  return el ? {state: el.dataset.state || '', text: el.textContent, children: el.children.length} : null;
}"""


@pytest.fixture(scope="module")
def live():
    s = Stack(instances=1, demo=True, page_quiet_seconds=QUIET)
    try:
        s.start_healthy()
        s.add_user("viewer", PASSWORD, "demo")
        yield s
    finally:
        s.stop()


def wait_mark(page, state: str, timeout: float, pattern: str = "") -> tuple[float, dict]:
    """Seconds until the mark is in ``state`` (and its text matches ``pattern``)."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        last = page.evaluate(MARK_JS)
        if last and last["state"] == state and re.search(pattern, last["text"]):
            return time.monotonic() - t0, last
        time.sleep(0.1)
    raise AssertionError(f"mark not {state!r} /{pattern}/ within {timeout}s: {last}")


def test_mark_shows_age_quiet_and_stale(live, browser):
    ctx, page = login(browser, live.url, "viewer", PASSWORD)
    try:
        open_dashboard(page, live.url, "demo")
        _, mark = wait_mark(page, "live", 15, r"^live · updated \d+ s ago$")
        assert mark["children"] == 0  # text only

        # The controller stops: the instance is fine, the data just gets older.
        live.ctl("stop", "fleet:demo", check=True)
        _, mark = wait_mark(page, "quiet", QUIET + 10, r"^quiet · updated \d+ s ago$")
        first = int(re.search(r"(\d+) s ago", mark["text"]).group(1))
        wait_mark(page, "quiet", 5, rf"updated (?!{first} s)\d+ s ago")  # counts by itself

        # Redis goes away: the instance is no longer caught up -> stale within 5 s.
        live.ctl("stop", "fleet:redis", check=True)
        elapsed, mark = wait_mark(page, "stale", 5, r"^stale · server not connected to the data feed · updated")
        assert elapsed < 5

        # Both back: live again.
        live.ctl("start", "fleet:redis", check=True)
        live.ctl("start", "fleet:demo", check=True)
        wait_mark(page, "live", 30, r"^live · updated \d+ s ago$")
    finally:
        ctx.close()
