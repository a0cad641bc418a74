"""Dashboard pages, minted Bokeh tokens, the routing cookie, /embed/X.js and /auth/check."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

from bokeh.util.token import check_session_id_signature, check_token_signature, get_session_id, get_token_payload

from app.bus import registry
from app.passwords import hash_password
from fleet_testing.bokeh import mint_token

SRC_RE = re.compile(r"xhr\.open\('GET',\"([^\"]+)\"")


def autoload_src(body: bytes | str) -> str:
    text = body.decode() if isinstance(body, bytes) else body
    m = SRC_RE.search(text)
    assert m, text[:2000]
    return m.group(1)


def token_of(src: str) -> str:
    return parse_qs(urlsplit(src).query)["bokeh-token"][0]


def _setup(fleet_bus):
    for name in ("sales", "ops"):
        registry.create_dashboard(fleet_bus.client, fleet_bus.keys, name, title=name.title())
    fleet_bus.accounts.grant_access("sales", users=["alice"])


def test_dashboard_page_mints_signed_token_for_that_dashboard(client, auth, fleet_bus, web_settings):
    _setup(fleet_bus)
    auth.login("alice")
    r = client.get("/d/sales")
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "no-store"
    src = autoload_src(r.data)
    parts = urlsplit(src)
    q = parse_qs(parts.query)
    assert src.startswith("http://localhost/bokeh/dashboard/autoload.js?")
    assert q["bokeh-app-path"] == ["/bokeh/dashboard"]
    assert q["bokeh-absolute-url"] == ["http://localhost/bokeh/dashboard"]
    elementid = q["bokeh-autoload-element"][0]
    assert f'<div id="{elementid}"' in r.get_data(as_text=True)
    token = q["bokeh-token"][0]
    secret = web_settings.secret_key
    assert check_token_signature(token, secret_key=secret, signed=True)
    assert not check_token_signature(token, secret_key="another-secret", signed=True)
    sid = get_session_id(token)
    assert check_session_id_signature(sid, secret_key=secret, signed=True)
    payload = get_token_payload(token)
    assert payload["dashboard"] == "sales"
    assert payload["user"] == "alice" and payload["roles"] == ["viewer"]
    now = time.time()
    assert now < payload["session_expiry"] <= now + web_settings.session_token_expiration + 1
    # nothing of the browser is copied into the token: no cookies, no headers
    assert set(payload) == {"dashboard", "user", "roles", "gen", "session_expiry"}
    assert payload["gen"] == fleet_bus.accounts.get_user("alice").gen  # stale after a password change
    session_cookie = client.get_cookie("fleet_session").value
    assert session_cookie not in token
    # every page load is a new session
    token2 = token_of(autoload_src(client.get("/d/sales").data))
    assert get_session_id(token2) != sid


def test_route_cookie(client, auth, fleet_bus):
    _setup(fleet_bus)
    auth.login("alice")
    r = client.get("/d/sales")
    cookie = next(h for h in r.headers.getlist("Set-Cookie") if h.startswith("fleet_route="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    value = client.get_cookie("fleet_route").value
    assert len(value) >= 16
    # kept, not re-rolled, on the next page: the browser stays on its instance
    r = client.get("/d/sales")
    assert not any(h.startswith("fleet_route=") for h in r.headers.getlist("Set-Cookie"))
    assert client.get_cookie("fleet_route").value == value


OWN_PAGE = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "script"}


def test_embed_js(client, auth, fleet_bus, web_settings):
    _setup(fleet_bus)
    r = client.get(headers=OWN_PAGE, path="/embed/sales.js")
    assert r.status_code == 200 and r.mimetype == "application/javascript"
    assert r.headers["X-Fleet-Status"] == "401"
    assert b"Log in" in r.data and b"bokeh-token" not in r.data
    auth.login("alice")
    r = client.get(headers=OWN_PAGE, path="/embed/sales.js")
    assert r.headers["X-Fleet-Status"] == "200"
    payload = get_token_payload(token_of(autoload_src(r.data)))
    assert payload["dashboard"] == "sales" and payload["user"] == "alice"
    assert client.get_cookie("fleet_route") is not None
    r = client.get(headers=OWN_PAGE, path="/embed/ops.js")
    assert r.headers["X-Fleet-Status"] == "403" and b"bokeh-token" not in r.data
    r = client.get(headers=OWN_PAGE, path="/embed/nope.js")
    assert r.headers["X-Fleet-Status"] == "404" and b"bokeh-token" not in r.data


def test_auth_check(client, auth, fleet_bus, web_settings):
    _setup(fleet_bus)
    secret = web_settings.secret_key

    def check(uri=None, **headers):
        if uri is not None:
            headers["X-Original-URI"] = uri
        return client.get("/auth/check", headers=headers)

    def uri_for(token):
        return f"/bokeh/dashboard/autoload.js?bokeh-autoload-element=x&bokeh-token={token}"

    r = check("/bokeh/static/js/bokeh.min.js")
    assert r.status_code == 401 and r.data == b""
    _, sales = mint_token(secret, "sales", user="alice")
    _, ops = mint_token(secret, "ops", user="alice")
    # no session, but a Flask-minted token for a user who may view: cross-origin embeds
    assert check(uri_for(sales)).status_code == 204
    assert check(uri_for(ops)).status_code == 401
    auth.login("alice")
    assert check().status_code == 204
    assert check("/bokeh/static/js/bokeh.min.js").status_code == 204
    assert check(uri_for(sales)).status_code == 204
    assert check(uri_for(ops)).status_code == 401  # logged in, but not allowed on ops
    _, forged = mint_token(secret, "sales", key="not-the-secret")
    assert check(uri_for(forged)).status_code == 401
    _, expired = mint_token(secret, "sales", expiration=-10)
    assert check(uri_for(expired)).status_code == 401
    assert check(uri_for("garbage.x")).status_code == 401
    # the websocket carries its token in the subprotocol header
    assert check("/bokeh/dashboard/ws", **{"Sec-WebSocket-Protocol": f"bokeh, {sales}"}).status_code == 204
    assert check("/bokeh/dashboard/ws", **{"Sec-WebSocket-Protocol": f"bokeh, {ops}"}).status_code == 401
    assert check("/bokeh/dashboard/ws", **{"Sec-WebSocket-Protocol": f"bokeh, {forged}"}).status_code == 401
    auth.logout()
    assert check().status_code == 401


def test_auth_check_token_of_removed_user(client, users, fleet_bus, web_settings):
    _setup(fleet_bus)
    _, sales = mint_token(web_settings.secret_key, "sales", user="alice")
    uri = f"/bokeh/dashboard/autoload.js?bokeh-token={sales}"
    assert client.get("/auth/check", headers={"X-Original-URI": uri}).status_code == 204
    fleet_bus.accounts.remove_user("alice")
    assert client.get("/auth/check", headers={"X-Original-URI": uri}).status_code == 401


def test_auth_check_token_from_before_a_password_change(client, auth, fleet_bus):
    """A token minted before the user's password changed is refused (the instances do
    the same to open sessions), even for the same, still logged-in user."""
    _setup(fleet_bus)
    auth.login("alice")
    token = token_of(autoload_src(client.get("/d/sales").data))
    uri = f"/bokeh/dashboard/autoload.js?bokeh-token={token}"
    assert client.get("/auth/check", headers={"X-Original-URI": uri}).status_code == 204
    fleet_bus.accounts.set_password("alice", hash_password("alice-new-password"))
    assert client.get("/auth/check", headers={"X-Original-URI": uri}).status_code == 401


def test_index_requires_login_and_lists_titles(client, auth, fleet_bus):
    _setup(fleet_bus)
    r = client.get("/d/sales")
    assert r.status_code == 302 and "/auth/login?next=/d/sales" in r.headers["Location"]
    r = auth.login("alice", next="/d/sales")
    assert r.headers["Location"] == "/d/sales"
    page = client.get("/").get_data(as_text=True)
    assert "Sales" in page and "Ops" not in page


def test_index_search_and_last_update(client, auth, fleet_bus):
    """``?q=`` narrows the list by name or title (every word, any case), among the
    dashboards the user may view only; each row says when its dashboard last changed."""
    f = fleet_bus
    for name, title in (("sales", "Sales EMEA"), ("sales-us", "Sales <US>"), ("ops", "Operations"),
                        ("hidden", "Sales secret")):
        registry.create_dashboard(f.client, f.keys, name, title=title)
    for name in ("sales", "sales-us", "ops"):
        f.accounts.grant_access(name, users=["alice"])
    f.client.xadd(f.keys.commands("sales"), {"op": "clear", "name": "p"})
    auth.login("alice")

    def listed(q=None):
        page = client.get("/", query_string={"q": q} if q is not None else None).get_data(as_text=True)
        return re.findall(r'<a href="/d/([^"]+)">', page), page

    assert listed()[0] == ["ops", "sales", "sales-us"]
    assert listed("SALES")[0] == ["sales", "sales-us"]  # not "hidden": alice may not view it
    assert listed("sales us")[0] == ["sales-us"]
    assert listed("operat")[0] == ["ops"]
    names, page = listed("<us>")
    assert names == ["sales-us"] and "Sales &lt;US&gt;" in page and 'value="&lt;us&gt;"' in page
    names, page = listed("nothing-like-it")
    assert names == [] and "No dashboard matches" in page and "show all 3" in page
    names, page = listed()
    rows = dict(re.findall(r'<a href="/d/([^"]+)">.*?<td class="updated">(.*?)</td>', page, re.S))
    assert re.search(r'<time datetime="[^"]+" title="[^"]+">(just now|\d+ s ago)</time>', rows["sales"])
    assert "no data yet" in rows["ops"] and "no data yet" in rows["sales-us"]


def test_scheme_from_trusted_proxy_only(make_app, users, fleet_bus):
    _setup(fleet_bus)
    from fleet_testing.web import AuthActions

    for trusted, scheme in ((("127.0.0.1",), "https"), ((), "http")):
        a = AuthActions(make_app(trusted_proxies=trusted).test_client())
        a.login("alice")
        r = a.client.get("/d/sales", headers={"X-Forwarded-Proto": "https"})
        assert autoload_src(r.data).startswith(f"{scheme}://localhost/bokeh/dashboard/autoload.js?")


def test_embed_hint_only_for_page_builders_where_embedding_works(make_app):
    """The developer-facing embed snippet: not for viewers, and not where no origin may
    embed (FLEET_EMBED_ORIGINS empty: /embed/X.js would refuse every other page)."""
    from fleet_testing.web import PASSWORDS, ROLES, AuthActions

    def page(user: str, origins: tuple[str, ...]) -> str:
        app = make_app(embed_origins=origins)
        fb = app.extensions["fleet"]
        fb.client.flushdb()
        registry.create_dashboard(fb.client, fb.keys, "sales", title="Sales")
        fb.accounts.grant_access("sales", users=[user])
        fb.accounts.add_user(user, hash_password(PASSWORDS[user]), [ROLES[user]])
        c = app.test_client()
        AuthActions(c).login(user)
        r = c.get("/d/sales")
        assert r.status_code == 200
        return r.get_data(as_text=True)

    assert "embed-hint" not in page("alice", ("http://wiki.corp",))   # a viewer
    assert "embed-hint" not in page("carol", ())                      # nobody may embed
    assert "/embed/sales.js" in page("carol", ("http://wiki.corp",))  # a controller, listed origin
