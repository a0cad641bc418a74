"""Large series on a real instance: the shared document holds a reduced view, the
``/bokeh/series`` endpoint gives detail to a token holder only; and in headless
Chromium behind nginx, a zoom puts the exact rows into that page's data source."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from app.bus.connection import sync_client
from app.bus.keys import Keys
from app.bus.publisher import publish_many
from app.bus.registry import create_dashboard
from app.control import encode
from app.instance import series
from fleet_testing.bokeh import BokehClient, allow_viewer, mint_token

ROWS = 150_000  # above series.REDUCE_ABOVE_ROWS
SPIKE = 123_457  # a row whose value only an extremes-keeping reduction keeps


def _columns(start: int, n: int) -> dict:
    x = np.arange(start, start + n, dtype=np.float64)
    y = np.sin(x / 500.0)
    if start <= SPIKE < start + n:
        y[SPIKE - start] = 99.0
    return {"x": x, "y": y}


def _publish_big(client, keys, dashboard: str = "big") -> None:
    cmds = [encode("replace", name="s", kind="line", data=_columns(0, 50_000))]
    cmds += [encode("stream", name="s", data=_columns(s, 50_000)) for s in range(50_000, ROWS, 50_000)]
    for c in cmds:  # one by one: several 1.6 MB entries at once need not fit one pipeline
        publish_many(client, keys, dashboard, [c])


@pytest.fixture
def big(fleet_settings):
    client = sync_client(fleet_settings)
    keys = Keys(fleet_settings.key_prefix)
    for d in ("big", "other"):
        create_dashboard(client, keys, d)
    allow_viewer(client, keys, dashboard="big")
    _publish_big(client, keys)
    publish_many(client, keys, "other", [encode("replace", name="o", kind="line", data=_columns(0, 10))])
    yield client, keys
    client.close()


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"X-Fleet-Token": token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"{}")
        except ValueError:  # nginx's own error page
            return exc.code, {"html": raw.decode("utf-8", "replace")}


async def _wait(pred, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_session_gets_a_reduced_view_and_streams_keep_it_small(big, fleet_settings, start_instance):
    inst = start_instance()
    client, keys = big

    async def main() -> None:
        _, token = mint_token(fleet_settings.secret_key, "big")
        c = await BokehClient(inst.ws_url, token).connect(timeout=30)
        try:
            src = c.source("s")
            assert src is not None and series.TAG in src.tags
            x = np.asarray(src.data["x"])
            assert 1000 < len(x) <= 4 * series.OVERVIEW_BUCKETS  # not 150,000 rows
            assert x[0] == 0 and x[-1] == ROWS - 1 and SPIKE in x  # ends and the spike kept
            # rows streamed in: appended to the reduced view, or re-reduced; never all rows
            for k in range(4):
                publish_many(client, keys, "big", [encode("stream", name="s", data=_columns(ROWS + k * 1000, 1000))])
            last = ROWS + 4000 - 1
            await _wait(lambda: c.source("s").data["x"][-1] == last, what="the last streamed row")
            time.sleep(series.REDUCE_INTERVAL_S + 0.1)
            publish_many(client, keys, "big", [encode("stream", name="s", data=_columns(last + 1, 10))])
            await _wait(lambda: c.source("s").data["x"][-1] == last + 10, what="a re-reduction")
            assert len(c.source("s").data["x"]) <= 4 * series.OVERVIEW_BUCKETS + 4000
        finally:
            await c.close()

    asyncio.run(main())


def test_series_endpoint_detail_and_refusals(big, fleet_settings, start_instance):
    inst = start_instance()
    secret = fleet_settings.secret_key
    url = inst.url("/bokeh/series")
    _, token = mint_token(secret, "big")
    # detail: every row of a narrow window (plus one on each side), at a plot's width
    status, body = _get(url + "?figure=s&x0=1000&x1=1199.5&px=800", token)
    assert status == 200, body
    assert body["exact"] and body["columns"]["x"] == list(range(999, 1201))
    assert body["rows"] == ROWS and body["x_min"] == 0 and body["x_max"] == ROWS - 1
    # a wide window is reduced to the pixel width, the spike kept
    status, body = _get(url + "?figure=s&px=500", token)
    assert status == 200 and not body["exact"] and len(body["columns"]["x"]) <= 4 * 500
    assert SPIKE in body["columns"]["x"] and 99.0 in body["columns"]["y"]
    status, body = _get(url + "?figure=s&px=300&method=lttb&x0=0&x1=20000", token)
    assert status == 200 and len(body["columns"]["x"]) <= 600 and body["columns"]["x"][0] == 0
    # refusals
    assert _get(url + "?figure=s")[0] == 401  # no token
    assert _get(url + "?figure=s", mint_token(secret, "big", key="another-secret")[1])[0] == 403
    assert _get(url + "?figure=s", mint_token(secret, "big", user="mallory")[1])[0] == 403  # no access
    assert _get(url + "?figure=s", mint_token(secret, "big", expiration=-10)[1])[0] == 403  # expired, no session
    assert _get(url + "?figure=o", token)[0] == 404  # another dashboard's figure: not via this token
    for bad in ("px=0", "px=99999", "px=abc", "x0=nan", "x1=zz", "method=x"):
        assert _get(url + "?figure=s&" + bad, token)[0] == 400, bad


def test_expired_token_works_while_its_session_lives(big, fleet_settings, start_instance):
    inst = start_instance(unused_session_lifetime_ms=1000, check_unused_sessions_ms=500)
    url = inst.url("/bokeh/series") + "?figure=s&x0=10&x1=20"

    async def main() -> None:
        _, token = mint_token(fleet_settings.secret_key, "big", expiration=3)
        c = await BokehClient(inst.ws_url, token).connect(timeout=30)
        try:
            await asyncio.sleep(3.5)  # the token has expired; its session has not
            status, body = await asyncio.to_thread(_get, url, token)
            assert status == 200 and body["columns"]["x"][1] == 10
        finally:
            await c.close()
        await asyncio.sleep(1.0)
        # the session closed: it is refused now
        for _ in range(100):
            status, _ = await asyncio.to_thread(_get, url, token)
            if status == 403:
                break
            await asyncio.sleep(0.2)
        assert status == 403

    asyncio.run(main())


# --- through nginx, in headless Chromium ---------------------------------------------------
PLOT_JS = """() => {
  for (const m of Bokeh.documents[0].all_models) {
    if (m.x_range != null && Array.isArray(m.renderers) && m.renderers.some(r => r.data_source
        && r.data_source.name === 's')) return m;
  }
  return null;
}"""
SOURCE_X = """() => { for (const m of Bokeh.documents[0].all_models)
  if (String(m.type).endsWith('ColumnDataSource') && m.name === 's') return Array.from(m.data.x ?? m.data.get('x'));
  return null; }"""


@pytest.mark.browser
def test_page_zoom_gets_full_detail_through_nginx(stack_factory, browser):
    from app.client import Controller
    from fleet_testing.stack import login, open_dashboard

    stack = stack_factory(instances=1)
    stack.start_healthy()
    stack.fleetctl("dashboard", "create", "big")
    stack.add_user("viewer", "big-viewer-password", "big")
    with Controller(settings=stack.effective_settings()) as ctl:
        _publish_big(ctl.redis, ctl.keys)
    ctx, page = login(browser, stack.url, "viewer", "big-viewer-password")
    try:
        open_dashboard(page, stack.url, "big")
        page.wait_for_function(f"() => ({SOURCE_X})() !== null && ({SOURCE_X})().length > 1000", timeout=30000)
        x = page.evaluate(SOURCE_X)
        assert len(x) <= 4 * series.OVERVIEW_BUCKETS and x[-1] == ROWS - 1  # the shared, reduced view
        page.wait_for_function("() => window.__fleet_series && __fleet_series.hooked === 1", timeout=10000)
        # zoom as the box/wheel zoom tools do: new range, marked as the viewer's own
        page.evaluate(f"""() => {{ const p = ({PLOT_JS})();
            p.x_range.have_updated_interactively = true; p.x_range.setv({{start: 5000, end: 5300}}); }}""")
        page.wait_for_function("() => __fleet_series.applied >= 1", timeout=10000)
        x = page.evaluate(SOURCE_X)
        assert x == list(range(4999, 5302))  # every row of the window, in this page only
        assert page.evaluate("() => __fleet_series.last.exact") is True
        # reset: the page goes back to the whole series, reduced
        page.evaluate(f"""() => {{ const p = ({PLOT_JS})();
            p.x_range.have_updated_interactively = false; p.x_range.setv({{start: 0, end: {ROWS}}}); }}""")
        page.wait_for_function("() => __fleet_series.applied >= 2", timeout=10000)
        x = page.evaluate(SOURCE_X)
        assert x[0] == 0 and x[-1] == ROWS - 1 and len(x) < 20_000
        assert page.evaluate("() => __fleet_series.errors") == 0
    finally:
        ctx.close()
    # without the page's token, nginx lets a logged-out client nowhere near it
    status, _ = _get(stack.url + "/bokeh/series?figure=s")
    assert status == 401
