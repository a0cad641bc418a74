"""Swagger UI at /api/v1/docs: assets from our origin, no inline script, renders the
OpenAPI 3.1 document in headless Chromium under its strict CSP without violations."""

from __future__ import annotations

import threading

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
def site(make_app):
    from werkzeug.serving import make_server

    from fleet_testing.ports import free_port

    port = free_port()
    app = make_app(allowed_hosts=(f"127.0.0.1:{port}", "127.0.0.1"))
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def test_docs_page_has_no_inline_script(client):
    r = client.get("/api/v1/docs")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert "<script>" not in html and "http" not in html  # nothing inline, nothing off-site
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert client.get("/api/v1/docs/swagger-ui-bundle.js").status_code == 200
    assert client.get("/api/v1/docs/..%2Fapi.py").status_code == 404
    assert client.get("/api/v1/docs/VERSION").status_code == 404


def test_swagger_ui_renders_under_csp(site, browser):
    ctx = browser.new_context()
    page = ctx.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(site + "/api/v1/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20000)
    assert "Bokeh fleet controller API" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector('[data-path="/dashboards/{name}/commands"]', timeout=10000)
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
    ctx.close()
