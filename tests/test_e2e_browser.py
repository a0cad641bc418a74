"""End to end through nginx with headless Chromium: the whole stack under supervisord.

Login, the demo dashboard, fan-out of a ``redis-cli XADD`` to pages on two instances,
line -> bar replace, and what an unauthenticated client is refused.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request

import pytest

from fleet_testing.stack import Stack, login, open_dashboard, probe, wait_marker

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("e2e_browser")]

PASSWORD = "e2e-viewer-password"


@pytest.fixture(scope="module")
def live():
    s = Stack(instances=2, demo=True)
    try:
        s.start_healthy()
        s.fleetctl("dashboard", "create", "e2e")
        s.add_user("viewer", PASSWORD, "demo", "e2e")
        yield s
    finally:
        s.stop()


def test_login_and_demo_dashboard_renders_a_live_plot(live, browser):
    ctx, page = login(browser, live.url, "viewer", PASSWORD)
    try:
        open_dashboard(page, live.url, "demo")
        page.wait_for_selector("canvas", state="attached", timeout=15000)
        assert "Line" in probe(page)["glyphs"]
        # the demo controller keeps streaming: the page's data grows by itself
        count = ("() => { let n = 0; for (const m of Bokeh.documents[0].all_models) "
                 "if (String(m.type).endsWith('ColumnDataSource')) n = Math.max(n, m.get_length() || 0); "
                 "return n; }")
        first = page.evaluate(count)
        page.wait_for_function(f"() => ({count})() > {first}", timeout=10000)
    finally:
        ctx.close()


def test_redis_cli_xadd_reaches_three_pages_on_two_instances_within_a_second(live, browser):
    live.redis_cli("XADD", "fleet:{e2e}:commands", "*", "op", "replace", "name", "probe", "kind", "line",
                   "data", json.dumps({"x": [1, 2, 3], "y": [1.0, 4.0, 2.0]}))
    contexts, pages = [], []
    try:
        # open pages until at least two instances serve them (the route cookie picks one)
        for _ in range(10):
            ctx, page = login(browser, live.url, "viewer", PASSWORD)
            open_dashboard(page, live.url, "e2e")
            contexts.append(ctx)
            pages.append(page)
            on = [n for n in (1, 2) if live.instance_sessions(n, "e2e") > 0]
            if len(pages) >= 3 and len(on) == 2:
                break
        assert [n for n in (1, 2) if live.instance_sessions(n, "e2e") > 0] == [1, 2], \
            "pages never spread over both instances"
        for p in pages:
            assert "Line" in probe(p)["glyphs"]

        for marker in (4242.125, 4343.25):  # the second one measures a warm path
            live.redis_cli("XADD", "fleet:{e2e}:commands", "*", "op", "stream", "name", "probe",
                           "data", json.dumps({"x": [10], "y": [marker]}))
            elapsed = wait_marker(pages, marker, timeout=5)
        assert elapsed < 1.0, f"fan-out took {elapsed:.3f}s"

        # replace the line by bars: every page gets the bar glyph
        live.redis_cli("XADD", "fleet:{e2e}:commands", "*", "op", "replace", "name", "probe", "kind", "bar",
                       "data", json.dumps({"x": ["a", "b", "c"], "y": [3.0, 1.0, 2.0]}))
        deadline = time.monotonic() + 5
        for p in pages:
            while True:
                glyphs = probe(p)["glyphs"]
                if "VBar" in glyphs:
                    break
                assert time.monotonic() < deadline, f"still {glyphs}"
                time.sleep(0.05)
    finally:
        for c in contexts:
            c.close()


def _status(url: str, headers: dict | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


def test_unauthenticated_requests_are_refused(live):
    base = live.url
    assert _status(base + "/") in (302, 303, 401)
    assert _status(base + "/d/demo") in (302, 303, 401, 403)
    assert _status(base + "/bokeh/dashboard") == 401
    assert _status(base + "/bokeh/dashboard/autoload.js?bokeh-autoload-element=x") == 401
    assert _status(base + "/api/v1/dashboards") in (401, 403)
    req = urllib.request.Request(base + "/api/v1/dashboards/demo/commands", method="POST",
                                 data=b'{"op":"clear"}', headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5)
        code = 200
    except urllib.error.HTTPError as exc:
        code = exc.code
    assert code in (401, 403)
    # the websocket upgrade is checked by nginx's auth_request as well
    conn = http.client.HTTPConnection("127.0.0.1", live.settings.http_port, timeout=5)
    conn.request("GET", "/bokeh/dashboard/ws", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": base,
        "Sec-WebSocket-Protocol": "bokeh, eyJmYWtlIjoidG9rZW4ifQ"})
    assert conn.getresponse().status == 401
    conn.close()
    # nothing of the demo data leaked into an error page
    assert live.redis_cli("XLEN", "fleet:{demo}:commands") != "0"


def test_static_bokehjs_is_public_cached_and_gzipped(live):
    req = urllib.request.Request(live.url + "/bokeh/static/js/bokeh.min.js",
                                 headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Encoding"] == "gzip"
        assert "max-age=" in r.headers["Cache-Control"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_access_log_has_no_query_strings(live, browser):
    ctx, page = login(browser, live.url, "viewer", PASSWORD)
    try:
        open_dashboard(page, live.url, "demo")
        page.goto(live.url + "/d/demo?secret-token=abc123")
    finally:
        ctx.close()
    log = (live.var / "log" / "nginx.log").read_text()
    assert "/bokeh/dashboard" in log
    assert "abc123" not in log and "bokeh-token" not in log and "?" not in "".join(
        line.split('"')[1] for line in log.splitlines() if line.count('"') >= 2)
