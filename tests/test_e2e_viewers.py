"""Viewers in headless Chromium through nginx (issue 16): kiosk and login renewal, iframe
from an allowed and a refused origin, dark theme, a phone viewport, stat/gauge/text
panels, CSV download and zoom kept across an instance restart.

Each test saves the screenshot it rendered to docs/figures/viewers-*.png (the pictures
in docs/web.md).
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fleet_testing.ports import free_port
from fleet_testing.stack import Stack, login, open_dashboard

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("e2e_viewers")]

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
DASH = "viewers"
PASSWORD = "viewers-password-1"
LIFETIME = 8  # FLEET_LOGIN_LIFETIME_SECONDS of this stack: renewal must keep pages logged in


class HostPage:
    """A loopback site of another origin whose page frames ``/frame/<DASH>``."""

    def __init__(self, port: int, frame_src: str) -> None:
        body = (f'<!doctype html><title>Intranet page</title><h1 style="font:20px sans-serif">'
                f'Team wiki page</h1><iframe id="dash" src="{frame_src}" '
                'style="width:100%;height:560px;border:1px solid #ccc"></iframe>').encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def live():
    allowed = free_port()
    s = Stack(instances=1, embed_origins=(f"http://127.0.0.1:{allowed}",), login_lifetime_seconds=LIFETIME)
    s.allowed_port = allowed  # type: ignore[attr-defined]
    try:
        s.start_healthy()
        s.fleetctl("dashboard", "create", DASH)
        s.add_user("viewer", PASSWORD, DASH)
        s.add_user("wall", PASSWORD, DASH, role="display")
        xadd = lambda *f: s.redis_cli("XADD", f"fleet:{{{DASH}}}:commands", "*", *f)  # noqa: E731
        xadd("op", "set", "title", "Plant overview")
        xadd("op", "replace", "name", "output", "kind", "line", "title", "Output (t/h)", "height", "260",
             "data", json.dumps({"t": list(range(50)), "y": [10 + (i % 7) * 1.5 + i * 0.2 for i in range(50)]}))
        xadd("op", "replace", "name", "revenue", "kind", "stat", "title", "Revenue today", "unit", "kEUR",
             "data", json.dumps({"v": [118.0, 124.5]}))
        xadd("op", "replace", "name", "load", "kind", "gauge", "title", "Line load", "unit", "%",
             "min", "0", "max", "100", "data", json.dumps({"v": [72.0]}))
        xadd("op", "replace", "name", "notes", "kind", "text", "title", "Shift notes",
             "text", "## Today\n* **Line 2** back at 10:00\n* see [runbook](https://wiki.example/run)\n"
                     "<script>window.__pwned=1</script>")
        xadd("op", "replace", "name", "batches", "kind", "table", "height", "160",
             "data", json.dumps({"batch": ["A-1", "=HYPERLINK(\"x\")", "C-3"], "kg": [12.5, 13.0, 11.75]}))
        xadd("op", "layout", "rows", json.dumps([["revenue", "load", "notes"], ["output"], ["batches"]]))
        yield s
    finally:
        s.stop()


def _shot(page, name: str) -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(FIGURES / f"viewers-{name}.png"))


def _ready(page, figures: int = 5) -> None:
    """The dashboard's Bokeh document is there with all its figures drawn."""
    page.wait_for_function(
        """(n) => { const b = window.Bokeh;
             if (!b || !b.documents.length || !b.documents[0].roots().length) return false;
             let k = 0;  // the figures' sources and Divs (panels, titles) have arrived
             for (const m of b.documents[0].all_models)
               if (String(m.type).endsWith('ColumnDataSource') || String(m.type) === 'Div') k += 1;
             return k >= n; }""", arg=figures, timeout=30000)
    page.wait_for_selector("canvas", state="attached", timeout=20000)
    page.wait_for_timeout(800)  # let BokehJS lay out and paint


def _deep_text(page) -> str:
    """All text of the page, shadow roots included (BokehJS renders into them)."""
    return page.evaluate("""() => { let t = ''; const walk = (root) => {
        for (const el of root.querySelectorAll('*')) { if (el.shadowRoot) walk(el.shadowRoot); }
        for (const el of root.querySelectorAll('.fleet-stat, .fleet-gauge, .fleet-text'))
          t += el.textContent + '\\n'; };
        walk(document); return t; }""")


def test_kiosk_display_account_has_no_chrome_and_stays_logged_in(live, browser):
    ctx, page = login(browser, live.url, "wall", PASSWORD)
    idle_ctx, idle_page = login(browser, live.url, "viewer", PASSWORD)
    try:
        page.set_viewport_size({"width": 1280, "height": 720})
        open_dashboard(page, live.url, DASH)  # a display account gets kiosk without asking
        _ready(page)
        assert page.locator("nav").count() == 0
        assert "kiosk" in page.evaluate("() => document.body.className")
        assert page.locator(".embed-hint").count() == 0
        _shot(page, "kiosk")
        # the open, connected page renews its login; an idle one (no page open) expires
        idle_page.goto("about:blank")
        time.sleep(LIFETIME * 2.5)
        assert int(page.evaluate("() => document.getElementById('fleet-viewer').dataset.renewed")) == 200
        page.goto(f"{live.url}/d/{DASH}")
        assert "/auth/login" not in page.url, "the open kiosk page's login expired"
        idle_page.goto(f"{live.url}/d/{DASH}")
        assert "/auth/login" in idle_page.url, "a login without an open page did not expire"
        # ?kiosk=1 for any user
        ctx2, page2 = login(browser, live.url, "viewer", PASSWORD)
        try:
            page2.goto(f"{live.url}/d/{DASH}?kiosk=1")
            assert page2.locator("nav").count() == 0
            page2.goto(f"{live.url}/d/{DASH}")
            assert page2.locator("nav").count() == 1
        finally:
            ctx2.close()
    finally:
        ctx.close()
        idle_ctx.close()


def test_iframe_from_an_allowed_origin_shows_and_from_another_is_refused(live, browser):
    src = f"{live.url}/frame/{DASH}"
    allowed, refused = HostPage(live.allowed_port, src), HostPage(free_port(), src)
    ctx, page = login(browser, live.url, "viewer", PASSWORD)
    try:
        page.set_viewport_size({"width": 1100, "height": 700})
        page.goto(allowed.url)
        frame = page.frame_locator("#dash")
        frame.locator("canvas").first.wait_for(state="attached", timeout=30000)
        inner = next(f for f in page.frames if f.url.startswith(src))
        inner.wait_for_function("() => window.Bokeh && Bokeh.documents.length"
                                " && Bokeh.documents[0].roots().length", timeout=30000)
        assert inner.evaluate("() => document.querySelectorAll('nav').length") == 0
        page.wait_for_timeout(800)
        _shot(page, "iframe")

        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text))
        page.goto(refused.url)
        page.wait_for_timeout(1500)
        blocked = [f for f in page.frames if f is not page.main_frame]
        assert blocked, "no frame at all"
        assert not any(f.url.startswith(src) and _has_bokeh(f) for f in blocked), "a refused origin framed it"
        assert any("frame-ancestors" in e for e in errors), errors
    finally:
        ctx.close()
        allowed.close()
        refused.close()


def _has_bokeh(frame) -> bool:
    try:
        return bool(frame.evaluate("() => !!window.Bokeh"))
    except Exception:  # the blocked frame is an error page we may not script
        return False


def test_dark_theme_themes_the_page_and_the_bokeh_figures(live, browser):
    ctx, page = login(browser, live.url, "viewer", PASSWORD)
    try:
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(f"{live.url}/d/{DASH}?theme=dark")
        _ready(page)
        colours = """() => { const out = {}; for (const m of Bokeh.documents[0].all_models) {
            if ('border_fill_color' in m.properties && 'outline_line_color' in m.properties)
              out.plot = [m.background_fill_color, m.border_fill_color];
            if ('major_label_text_color' in m.properties) out.axis = m.major_label_text_color; }
            out.body = getComputedStyle(document.body).backgroundColor; return out; }"""
        page.wait_for_function(f"() => ({colours})().axis === '#e3e3e3'", timeout=10000)
        got = page.evaluate(colours)
        assert got["plot"] == ["#1b2027", "#15191e"], got
        assert got["body"] == "rgb(21, 25, 30)", got
        _shot(page, "dark")
        # remembered for this viewer: the next page without ?theme is dark too
        page.goto(f"{live.url}/d/{DASH}")
        assert "theme-dark" in page.evaluate("() => document.body.className")
        page.goto(f"{live.url}/d/{DASH}?theme=light")
        _ready(page)
        page.wait_for_timeout(600)
        assert page.evaluate(colours).get("axis") != "#e3e3e3"
    finally:
        ctx.close()


def test_phone_viewport_has_no_horizontal_scroll_and_rows_wrap(live, browser):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                              device_scale_factor=2)
    try:
        page = ctx.new_page()
        page.goto(live.url + "/auth/login")
        page.fill("input[name=username]", "viewer")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "/auth/login" not in u, timeout=15000)
        page.goto(f"{live.url}/d/{DASH}")
        _ready(page)
        widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"horizontal scroll: {widths}"
        # the first row (stat, gauge, text) wraps: its panels are stacked, not squeezed
        tops = page.evaluate("""() => { const out = []; const walk = (root) => {
            for (const el of root.querySelectorAll('*')) { if (el.shadowRoot) walk(el.shadowRoot); }
            for (const el of root.querySelectorAll('.fleet-stat, .fleet-gauge, .fleet-text')) {
              const r = el.getBoundingClientRect(); out.push([r.top, r.width]); } };
            walk(document); return out; }""")
        assert len(tops) == 3, tops
        assert tops[0][0] < tops[1][0] < tops[2][0], f"panels side by side on a phone: {tops}"
        _shot(page, "phone")
    finally:
        ctx.close()


def test_stat_gauge_and_text_panels_render_and_update(live, browser):
    ctx, page = login(browser, live.url, "viewer", PASSWORD)
    try:
        page.set_viewport_size({"width": 1280, "height": 800})
        open_dashboard(page, live.url, DASH)
        _ready(page)
        text = _deep_text(page)
        assert "124.5" in text and "kEUR" in text and "▲ +6.50 (+5.5%)" in text, text
        assert "72" in text and "Line load" in text
        assert "Line 2" in text and "<script>window.__pwned=1</script>" in text  # shown as text
        assert page.evaluate("() => window.__pwned") is None
        link = page.evaluate("""() => { let a = null; const walk = (root) => {
            for (const el of root.querySelectorAll('*')) { if (el.shadowRoot) walk(el.shadowRoot); }
            for (const el of root.querySelectorAll('.fleet-text a')) a = [el.href, el.target, el.rel]; };
            walk(document); return a; }""")
        assert link == ["https://wiki.example/run", "_blank", "noopener noreferrer"], link
        # values come by stream; set changes the presentation
        live.redis_cli("XADD", f"fleet:{{{DASH}}}:commands", "*", "op", "stream", "name", "revenue",
                       "data", json.dumps({"v": [119.0]}))
        live.redis_cli("XADD", f"fleet:{{{DASH}}}:commands", "*", "op", "set", "name", "load", "unit", "% busy")
        deadline = time.monotonic() + 10
        while not ("119" in (text := _deep_text(page)) and "▼ -5.50 (-4.4%)" in text and "% busy" in text):
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        _shot(page, "panels")
    finally:
        ctx.close()


def test_csv_download_of_a_figure(live, browser):
    ctx, page = login(browser, live.url, "viewer", PASSWORD)
    try:
        open_dashboard(page, live.url, DASH)
        _ready(page)
        page.wait_for_function("() => document.querySelectorAll('#fleet-csv option').length >= 3", timeout=10000)
        with page.expect_download(timeout=10000) as info:
            page.select_option("#fleet-csv", "batches")
        dl = info.value
        assert dl.suggested_filename == f"{DASH}-batches.csv"
        rows = list(csv.reader(io.StringIO(Path(dl.path()).read_text())))
        assert rows[0] == ["batch", "kg"], rows
        assert rows[1:] == [["A-1", "12.5"], ["'=HYPERLINK(\"x\")", "13"], ["C-3", "11.75"]], rows
        line = page.evaluate("() => window.__fleet_csv('output')").splitlines()
        assert line[0] == "t,y" and len(line) == 51, line[:3]
        stat = page.evaluate("() => window.__fleet_csv('revenue')").splitlines()  # a stat's series too
        assert stat[0] == "v" and stat[-1] in ("124.5", "119"), stat
        page.set_viewport_size({"width": 1280, "height": 400})
        page.evaluate("() => window.scrollTo(0, 0)")
        page.click("#fleet-csv")
        _shot(page, "csv")
    finally:
        ctx.close()


PLOT_JS = """() => { for (const m of Bokeh.documents[0].all_models) {
    if ('x_range' in m.properties && m.renderers.some((r) => r.data_source && r.data_source.name === 'output'))
      return m; } return null; }"""
RANGE_JS = f"""() => {{ const m = ({PLOT_JS})();
    return m && [m.x_range.start, m.x_range.end, m.y_range.start, m.y_range.end]; }}"""


def test_zoom_is_kept_across_an_instance_restart(live, browser):
    ctx, page = login(browser, live.url, "viewer", PASSWORD)
    try:
        page.set_viewport_size({"width": 1280, "height": 900})
        open_dashboard(page, live.url, DASH)
        _ready(page)
        before = page.evaluate(RANGE_JS)
        # the viewer pans the line plot (drag: the pan tool is active)
        canvas = page.locator("canvas").nth(0)
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx - 200, cy + 40, steps=8)
        page.mouse.up()
        page.wait_for_timeout(600)
        zoomed = page.evaluate(RANGE_JS)
        assert zoomed[0] > before[0] + 1, (before, zoomed)
        page.evaluate(f"() => {{ window.__old_plot = ({PLOT_JS})(); }}")
        live.ctl("restart", "fleet:bokeh_01", check=True)
        # the page comes back (reconnects, or reloads itself) with new models ...
        page.wait_for_function(f"""() => window.Bokeh && Bokeh.documents.length
            && Bokeh.documents[0].roots().length && ({PLOT_JS})() && ({PLOT_JS})() !== window.__old_plot""",
                               timeout=60000)
        # ... and the viewer's zoom, not the auto-range
        page.wait_for_function(f"""() => {{ const r = ({RANGE_JS})(); return r && Math.abs(r[0] - {zoomed[0]}) < 1e-6
                                   && Math.abs(r[1] - {zoomed[1]}) < 1e-6; }}""", timeout=30000)
        after = page.evaluate(RANGE_JS)
        assert after == pytest.approx(zoomed), (zoomed, after)
        _shot(page, "zoom")
    finally:
        ctx.close()
