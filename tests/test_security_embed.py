"""``/embed/<name>.js`` hands tokens only to listed origins (issue 10, item 4).

A page on another port of the same host is same-site: the browser sends the viewer's
session cookie with its ``<script src=".../embed/sec.js">``, and the script runs in
that page, which could read the token out of it.  Now only an origin listed in
``FLEET_EMBED_ORIGINS`` gets a token (the dashboard renders there in headless
Chromium); any other page gets a message and no token; and a token minted for one
origin is refused from another.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.web.embed import page_origin
from fleet_testing.ports import free_port
from fleet_testing.security import PASSWORDS, SourceClient
from fleet_testing.stack import login

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("security_stack")]


def _page_server(port: int, html: str) -> ThreadingHTTPServer:
    """Another intranet page, on its own loopback port (its own origin)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def embed_pages(security_stack):
    security_stack.redis_cli(
        "XADD", "fleet:{sec}:commands", "*", "op", "replace", "name", "p", "kind", "line",
        "data", json.dumps({"x": [1, 2, 3], "y": [1.0, 4.0, 2.0]}))
    html = ("<!doctype html><html><body><h1>Intranet wiki</h1>"
            f'<script src="{security_stack.url}/embed/sec.js"></script></body></html>')
    listed = _page_server(security_stack.embed_port, html)
    other = _page_server(free_port(), html)
    yield {"listed": f"http://127.0.0.1:{listed.server_address[1]}",
           "other": f"http://127.0.0.1:{other.server_address[1]}"}
    for s in (listed, other):
        s.shutdown()
        s.server_close()


def _watch(page) -> dict:
    """Every request URL and embed.js body the page sees."""
    seen: dict = {"requests": [], "embed": []}
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("response", lambda r: seen["embed"].append(r.body().decode())
            if "/embed/" in r.url else None)
    return seen


def test_embed_from_a_listed_origin_renders_and_others_get_no_token(security_stack, embed_pages, browser):
    ctx, page = login(browser, security_stack.url, "bob", PASSWORDS["bob"])
    try:
        # not listed: a same-site page on another port gets a message, never a token
        other = ctx.new_page()
        seen = _watch(other)
        other.goto(embed_pages["other"])
        other.wait_for_selector(".fleet-dashboard-message", timeout=15000)
        assert "may not embed" in other.inner_text(".fleet-dashboard-message")
        assert seen["embed"] and not any("bokeh-token" in b for b in seen["embed"])
        assert not any("bokeh-token" in u for u in seen["requests"])
        other.close()

        # listed: the dashboard renders in the other page
        seen = _watch(page)
        page.goto(embed_pages["listed"])
        page.wait_for_function(
            "() => window.Bokeh && Bokeh.documents && Bokeh.documents.length > 0"
            " && Bokeh.documents[0].roots().length > 0", timeout=30000)
        page.wait_for_selector("canvas", state="attached", timeout=15000)
        token = next(u for u in seen["requests"] if "bokeh-token=" in u).split("bokeh-token=")[1].split("&")[0]
    finally:
        ctx.close()

    # the token is bound to the listed origin: from anywhere else nginx refuses it
    src = f"/bokeh/dashboard/autoload.js?bokeh-autoload-element=x&bokeh-token={token}"
    c = SourceClient(security_stack.url)
    assert c.get(src, headers={"Origin": embed_pages["listed"]})[0] == 200
    assert c.get(src, headers={"Origin": embed_pages["other"]})[0] == 401
    assert c.get(src)[0] == 401  # not an origin of ours either


def test_page_origin_rules():
    """Which ``<script src>`` loads get a token (pure function, browser headers)."""
    own, listed = "http://site:8080", frozenset({"http://wiki"})
    script = {"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "script"}
    ok = [({**script, "Sec-Fetch-Site": "same-origin"}, own),
          ({**script, "Sec-Fetch-Site": "cross-site", "Referer": "http://wiki/page?x=1"}, "http://wiki"),
          ({"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "script", "Sec-Fetch-Site": "cross-site",
            "Origin": "http://WIKI:80"}, "http://wiki"),
          ({"Referer": "http://site:8080/x"}, own)]  # an old browser, our own page
    for headers, want in ok:
        assert page_origin(headers, own, listed) == (want, ""), headers
    refused = [{**script, "Sec-Fetch-Site": "same-site", "Referer": "http://site:9999/"},
               {**script, "Sec-Fetch-Site": "same-site"},  # referrerpolicy=no-referrer
               {**script, "Sec-Fetch-Site": "cross-site", "Referer": "http://site:8080/"},
               {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Dest": "document"},
               {}, {"Origin": "null"}]
    for headers in refused:
        assert page_origin(headers, own, listed)[0] is None, headers


def test_embed_cors_only_for_listed_origins(make_app, users, fleet_bus):
    """``<script crossorigin="use-credentials">``: CORS answers name the listed origin only."""
    from app.bus import registry
    from fleet_testing.web import AuthActions

    registry.create_dashboard(fleet_bus.client, fleet_bus.keys, "sales")
    fleet_bus.accounts.grant_access("sales", users=["alice"])
    a = AuthActions(make_app(embed_origins=("http://wiki.corp:8000",)).test_client())
    a.login("alice")
    cors = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "script", "Sec-Fetch-Site": "cross-site"}
    r = a.client.get("/embed/sales.js", headers={**cors, "Origin": "http://wiki.corp:8000"})
    assert r.headers["X-Fleet-Status"] == "200" and b"bokeh-token" in r.data
    assert r.headers["Access-Control-Allow-Origin"] == "http://wiki.corp:8000"
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    r = a.client.get("/embed/sales.js", headers={**cors, "Origin": "http://evil.corp:8000"})
    assert r.headers["X-Fleet-Status"] == "403" and b"bokeh-token" not in r.data
    assert "Access-Control-Allow-Origin" not in r.headers
