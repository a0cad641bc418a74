"""The viewer side of the web app (issue 16): kiosk and display accounts, theme, the
iframe page and its frame-ancestors, and the login renewal and lifetime setting.
Flask test client against the real Redis (browser behaviour: tests/test_e2e_viewers.py)."""

from __future__ import annotations

import re

from app.bus import registry
from app.passwords import hash_password
from fleet_testing.web import AuthActions

WIKI = "http://wiki.corp:8090"


def _app(make_app, **settings):
    app = make_app(**settings)
    fb = app.extensions["fleet"]
    fb.client.flushdb()
    registry.create_dashboard(fb.client, fb.keys, "sales", title="Sales")
    for user, role in (("alice", "viewer"), ("tv", "display"), ("carol", "controller")):
        fb.accounts.add_user(user, hash_password(f"{user}-password"), [role])
        fb.accounts.grant_access("sales", users=[user])
    return app


def _client(app, user: str | None):
    c = app.test_client()
    if user:
        r = AuthActions(c).login(user, f"{user}-password")
        assert r.status_code == 302, r.data[:300]
    return c


def _csp(resp) -> dict[str, list[str]]:
    csp = resp.headers["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in (x.strip() for x in csp.split(";")) if d}


def test_kiosk_on_request_and_always_for_a_display_account(make_app):
    app = _app(make_app, embed_origins=(WIKI,))
    alice = _client(app, "alice")
    plain = alice.get("/d/sales").get_data(as_text=True)
    assert "<nav>" in plain and 'class="theme-light"' in plain
    kiosk = alice.get("/d/sales?kiosk=1").get_data(as_text=True)
    assert "<nav>" not in kiosk and 'class="kiosk theme-light"' in kiosk
    tv = _client(app, "tv")
    page = tv.get("/d/sales").get_data(as_text=True)
    assert "<nav>" not in page and "kiosk" in page and "embed-hint" not in page
    assert "/static/viewer.js" in page
    # a controller's kiosk page has no embed hint either; the plain page shows both snippets
    carol = _client(app, "carol")
    assert "embed-hint" not in carol.get("/d/sales?kiosk=1").get_data(as_text=True)
    hint = carol.get("/d/sales").get_data(as_text=True)
    assert "/embed/sales.js" in hint and "/frame/sales" in hint


def test_theme_from_the_query_is_remembered_in_a_cookie(make_app):
    c = _client(_app(make_app), "alice")
    r = c.get("/d/sales?theme=dark")
    assert 'class="theme-dark"' in r.get_data(as_text=True)
    cookie = r.headers.get("Set-Cookie", "")
    assert "fleet_theme=dark" in "".join(r.headers.getlist("Set-Cookie")), cookie
    assert 'class="theme-dark"' in c.get("/d/sales").get_data(as_text=True)
    assert 'class="theme-dark"' in c.get("/d/sales?theme=bogus").get_data(as_text=True)  # ignored
    assert 'class="theme-light"' in c.get("/d/sales?theme=light").get_data(as_text=True)


def test_frame_page_may_be_framed_by_the_listed_origins_only(make_app):
    app = _app(make_app, embed_origins=(WIKI, "not an origin"))
    c = _client(app, "alice")
    r = c.get("/frame/sales")
    assert r.status_code == 200
    assert "X-Frame-Options" not in r.headers
    assert _csp(r)["frame-ancestors"] == ["'self'", WIKI]
    body = r.get_data(as_text=True)
    assert "<nav>" not in body and "autoload.js" in body
    # every other page keeps SAMEORIGIN and frame-ancestors 'self'
    d = c.get("/d/sales")
    assert d.headers["X-Frame-Options"] == "SAMEORIGIN" and _csp(d)["frame-ancestors"] == ["'self'"]
    # nothing listed: the frame page is no more framable than the rest
    r = _client(_app(make_app), "alice").get("/frame/sales")
    assert r.headers["X-Frame-Options"] == "SAMEORIGIN" and _csp(r)["frame-ancestors"] == ["'self'"]


def test_frame_page_without_login_links_to_a_login_in_a_new_tab(make_app):
    app = _app(make_app, embed_origins=(WIKI,))
    r = _client(app, None).get("/frame/sales")
    assert r.status_code == 401
    assert _csp(r)["frame-ancestors"] == ["'self'", WIKI]
    body = r.get_data(as_text=True)
    assert re.search(r'href="http://localhost/auth/login\?next=/d/sales" target="_blank"', body), body
    assert 'name="password"' not in body  # the login form itself is never framed
    # a user without access gets the error page, in the frame too; an unknown dashboard 404
    assert _client(app, "alice").get("/frame/nosuch").status_code == 404


def test_login_renewal_and_lifetime_setting(make_app):
    app = _app(make_app, login_lifetime_seconds=600)
    assert app.permanent_session_lifetime.total_seconds() == 600
    anon = _client(app, None).get("/auth/renew")
    assert anon.status_code == 401 and anon.headers["Cache-Control"] == "no-store"
    c = _client(app, "tv")
    r = c.get("/auth/renew")
    assert r.status_code == 200 and r.json == {"user": "tv", "lifetime": 600, "sso": False}
    # the session cookie is sent again with a fresh expiry: that is the renewal
    assert any(h.startswith("fleet_session=") and "Expires=" in h for h in r.headers.getlist("Set-Cookie"))
    page = c.get("/d/sales").get_data(as_text=True)
    assert 'data-renew-url="/auth/renew"' in page and 'data-renew-every="150"' in page
    # the server-side login id lives as long as the lifetime, refreshed by each request
    fb = app.extensions["fleet"]
    ttls = [fb.client.ttl(k) for k in fb.client.scan_iter(match=f"{fb.keys.prefix}:websession:*")]
    assert ttls and all(500 < t <= 600 for t in ttls), ttls


def test_the_remembered_theme_applies_to_every_page(make_app):
    c = _client(_app(make_app), "alice")
    assert 'class="theme-light"' in c.get("/").get_data(as_text=True)
    c.get("/d/sales?theme=dark")
    assert 'class="theme-dark"' in c.get("/").get_data(as_text=True)
