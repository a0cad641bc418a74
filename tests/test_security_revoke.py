"""Issue 10 item 5: revocation bites, on the whole stack (nginx, gunicorn, 2 instances).

* ``fleetctl access revoke``, ``users remove``, ``users roles`` and ``users passwd``
  (and a password change on the site) close the user's live
  websockets on both instances within seconds, and the same token cannot reconnect
  (through nginx or straight to an instance);
* a request pairing an approved URL token with another subprotocol token is refused;
* a copy of the session cookie stops working at logout;
* an API token created with ``--expires`` is refused with a message saying it expired.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
import requests

from fleet_testing.bokeh import BokehClient
from fleet_testing.helpers import until
from fleet_testing.stack import Stack
from fleet_testing.web import csrf_token
from tests.test_web_pages import autoload_src, token_of

pytestmark = pytest.mark.xdist_group("security_revoke")

PASSWORD = "revoke-test-password"
CLOSE_WITHIN = 6.0  # seconds: the instances re-check every 0.5 s here (2 s by default)


@pytest.fixture(scope="module")
def live():
    s = Stack(instances=2, access_recheck_seconds=0.5)
    try:
        s.start_healthy()
        s.fleetctl("dashboard", "create", "sales")
        s.redis_cli("XADD", "fleet:{sales}:commands", "*", "op", "replace", "name", "p", "kind", "line",
                    "data", json.dumps({"x": [0, 1], "y": [1.0, 2.0]}))
        yield s
    finally:
        s.stop()


class Browser:
    """A logged-in HTTP client of the site (cookies, CSRF) that mints dashboard tokens."""

    def __init__(self, live: Stack, user: str) -> None:
        self.live = live
        self.http = requests.Session()
        page = self.http.get(live.url + "/auth/login", timeout=10)
        r = self.http.post(live.url + "/auth/login", timeout=10, allow_redirects=False, data={
            "username": user, "password": PASSWORD, "csrf_token": csrf_token(page.text), "next": ""})
        assert r.status_code == 302, r.text[:500]

    def token(self, dashboard: str = "sales") -> str:
        r = self.http.get(f"{self.live.url}/d/{dashboard}", timeout=10)
        assert r.status_code == 200, r.status_code
        return token_of(autoload_src(r.text))

    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.http.cookies)

    def logout(self) -> None:
        page = self.http.get(self.live.url + "/", timeout=10)
        r = self.http.post(self.live.url + "/auth/logout", data={"csrf_token": csrf_token(page.text)},
                           timeout=10, allow_redirects=False)
        assert r.status_code == 302


def ws_direct(live: Stack, n: int) -> str:
    return f"ws://127.0.0.1:{live.bokeh_port(n)}/bokeh/dashboard/ws"


def ws_site(live: Stack, query: str = "") -> str:
    return f"ws://127.0.0.1:{live.settings.http_port}/bokeh/dashboard/ws" + (f"?{query}" if query else "")


def publish(live: Stack, y: float) -> None:
    live.redis_cli("XADD", "fleet:{sales}:commands", "*", "op", "stream", "name", "p",
                   "data", json.dumps({"x": [2], "y": [y]}))


async def refused(url: str, token: str, headers: dict | None = None) -> bool:
    """Whether a new websocket with ``token`` gets no document (closed or HTTP error)."""
    try:
        c = await BokehClient(url, token, headers=headers).connect(timeout=5)
    except Exception:
        return True
    await c.close()
    return False


def open_clients(live: Stack, who: Browser) -> tuple[list[BokehClient], list[tuple[str, str, dict]]]:
    """Sessions of ``who`` on instance 1, instance 2 and through nginx (its cookies)."""
    conns = [(ws_direct(live, 1), who.token(), {}), (ws_direct(live, 2), who.token(), {}),
             (ws_site(live), who.token(), {"Cookie": who.cookie_header(), "Origin": live.url})]
    return [BokehClient(u, t, headers=h) for u, t, h in conns], conns


async def cut_off(live: Stack, who: Browser, action) -> None:
    clients, conns = open_clients(live, who)
    for c in clients:
        await c.connect()
    before = [c.patches for c in clients]
    publish(live, 7.5)
    await until(lambda: all(c.patches > b for c, b in zip(clients, before, strict=False)), 10, "live updates")
    assert {live.instance_sessions(n, "sales") > 0 for n in (1, 2)} == {True}
    action()
    t = await until(lambda: all(c.closed.is_set() for c in clients), CLOSE_WITHIN,
                       "every websocket closed")
    # Publishing goes on; nothing reaches the cut-off clients any more.
    counts = [c.patches for c in clients]
    publish(live, 8.5)
    await asyncio.sleep(0.3)
    assert [c.patches for c in clients] == counts
    for url, token, headers in conns:  # the same tokens cannot come back, by any route
        assert await refused(url, token, headers), url
    for c in clients:
        await c.close()
    print(f"closed after {t:.2f}s")


def test_access_revoke_closes_live_websockets_on_every_instance(live):
    live.add_user("alice", PASSWORD, "sales")
    alice = Browser(live, "alice")
    asyncio.run(cut_off(live, alice, lambda: live.fleetctl(
        "access", "revoke", "--dashboard", "sales", "--user", "alice")))
    r = alice.http.get(live.url + "/d/sales", timeout=10)
    assert r.status_code == 403  # and no new token either


def test_user_removal_closes_live_websockets(live):
    live.add_user("bob", PASSWORD, "sales")
    bob = Browser(live, "bob")
    asyncio.run(cut_off(live, bob, lambda: live.fleetctl("users", "remove", "bob")))


def test_role_change_closes_live_websockets(live):
    live.add_user("carol", PASSWORD, "sales")
    carol = Browser(live, "carol")
    asyncio.run(cut_off(live, carol, lambda: live.fleetctl("users", "roles", "carol", "--role", "controller")))


def test_password_change_by_an_operator_closes_live_websockets(live):
    live.add_user("frank", PASSWORD, "sales")
    frank = Browser(live, "frank")
    asyncio.run(cut_off(live, frank, lambda: live.fleetctl(
        "users", "passwd", "frank", "--password-stdin", input="frank-new-password\n")))


def test_own_password_change_closes_the_users_other_open_dashboards(live):
    """On the site: the user's open dashboards close (those of this login too: their
    tokens are stale), the copy of the login elsewhere ends, this one goes on."""
    live.add_user("grace", PASSWORD, "sales")
    grace, elsewhere = Browser(live, "grace"), Browser(live, "grace")

    def change() -> None:
        page = grace.http.get(live.url + "/auth/password", timeout=10)
        r = grace.http.post(live.url + "/auth/password", timeout=10, allow_redirects=False, data={
            "csrf_token": csrf_token(page.text), "current": PASSWORD, "new": "grace-new-password",
            "confirm": "grace-new-password"})
        assert r.status_code == 302, r.text[:500]

    asyncio.run(cut_off(live, elsewhere, change))
    r = elsewhere.http.get(live.url + "/d/sales", timeout=10, allow_redirects=False)
    assert r.status_code == 302 and "/auth/login" in r.headers["Location"]

    async def fresh() -> None:  # this login goes on: its new tokens open sessions
        c = await BokehClient(ws_direct(live, 1), grace.token()).connect()
        await c.close()

    asyncio.run(fresh())


def test_paired_tokens_are_refused(live):
    """A revoked user's token in the subprotocol, an approved one in the URL."""
    live.add_user("dave", PASSWORD, "sales")
    live.add_user("mallory", PASSWORD, "sales")
    stale = Browser(live, "mallory").token()
    live.fleetctl("access", "revoke", "--dashboard", "sales", "--user", "mallory")
    good = Browser(live, "dave").token()
    origin = {"Origin": live.url}

    async def main():
        # each alone: the approved one works, the revoked one does not
        ok = await BokehClient(ws_site(live), good, headers=origin).connect()
        await ok.close()
        assert await refused(ws_site(live), stale, origin)
        # paired (no cookies: the check can only go by the tokens)
        assert await refused(ws_site(live, f"bokeh-token={good}"), stale, origin)
        assert await refused(ws_site(live, f"bokeh-token={stale}"), good, origin)  # two tokens, never
        assert await refused(ws_direct(live, 1) + f"?bokeh-token={good}", good)  # the instance too

    asyncio.run(main())


def test_copied_session_cookie_is_refused_after_logout(live):
    live.add_user("erin", PASSWORD, "sales")
    erin = Browser(live, "erin")
    copy = requests.Session()
    copy.cookies.update({c.name: c.value for c in erin.http.cookies})
    assert copy.get(live.url + "/", timeout=10, allow_redirects=False).status_code == 200
    erin.logout()
    r = copy.get(live.url + "/", timeout=10, allow_redirects=False)
    assert r.status_code == 302 and "/auth/login" in r.headers["Location"]
    r = copy.get(live.url + "/d/sales", timeout=10, allow_redirects=False)
    assert r.status_code == 302


def test_expired_api_token_is_refused(live):
    def create(*extra: str) -> str:
        return live.fleetctl("tokens", "create", "--name", f"t{time.monotonic_ns()}",
                             "--dashboard", "sales", *extra).stdout.strip()

    def post(token: str) -> requests.Response:
        return requests.post(live.url + "/api/v1/dashboards/sales/commands", json={"op": "clear", "name": "p"},
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)

    lasting, brief = create("--expires", "30d"), create("--expires", "1s")
    assert post(lasting).status_code == 202
    deadline = time.monotonic() + 10
    while (r := post(brief)).status_code == 202:
        assert time.monotonic() < deadline, "a 1-second token still works after 10 s"
        time.sleep(0.2)
    assert r.status_code == 401
    assert "expired" in r.json()["error"]["message"]
    listing = live.fleetctl("tokens", "list").stdout
    assert re.search(r"expired \d{4}-", listing), listing
    bad = live.fleetctl("tokens", "create", "--name", "x", "--dashboard", "sales", "--expires", "soon",
                        check=False)
    assert bad.returncode != 0 and "--expires" in bad.stderr


# --- the pieces, without the stack ---------------------------------------------------------------
def test_refusal_rules():
    from app.control.roles import refusal

    rules = {"sales": {"users": ["alice"], "roles": []}, "*": {"users": [], "roles": ["controller"]}}
    viewer, ctl = {"roles": ["viewer"]}, {"roles": ["controller"]}
    assert refusal("alice", viewer, ["viewer"], "sales", rules) is None
    assert "may no longer view" in refusal("alice", viewer, ["viewer"], "ops", rules)
    assert refusal("carol", ctl, ["viewer", "controller"], "ops", rules) is None  # via '*'
    assert "roles" in refusal("carol", ctl, ["viewer"], "ops", rules)  # token minted before a change
    assert refusal("root", {"roles": ["admin"]}, ["viewer", "controller", "admin"], "x", {}) is None
    assert "no longer exists" in refusal("ghost", None, ["viewer"], "sales", rules)
    # an SSO name unknown to the store is a plain viewer, as the web app treats it
    assert refusal("sso1", None, ["viewer"], "sales", {"sales": {"roles": ["viewer"]}}, sso=True) is None


def test_auth_check_takes_exactly_one_token(client, auth, fleet_bus, web_settings):
    from app.bus import registry
    from fleet_testing.bokeh import mint_token

    registry.create_dashboard(fleet_bus.client, fleet_bus.keys, "sales")
    fleet_bus.accounts.grant_access("sales", users=["alice", "carol"])
    _, alice = mint_token(web_settings.secret_key, "sales", user="alice")
    _, alice2 = mint_token(web_settings.secret_key, "sales", user="alice")
    auth.login("alice")

    def check(uri="/bokeh/dashboard/ws", protos=()):
        headers = [("X-Original-URI", uri)] + [("Sec-WebSocket-Protocol", p) for p in protos]
        return client.get("/auth/check", headers=headers).status_code

    assert check(protos=[f"bokeh, {alice}"]) == 204
    assert check(f"/bokeh/dashboard/autoload.js?bokeh-token={alice}") == 204
    assert check(f"/bokeh/dashboard/ws?bokeh-token={alice}", [f"bokeh, {alice}"]) == 401  # same one twice
    assert check(f"/bokeh/dashboard/ws?bokeh-token={alice}", [f"bokeh, {alice2}"]) == 401
    assert check(f"/x?bokeh-token={alice}&bokeh-token={alice2}") == 401
    assert check(protos=[f"bokeh, {alice}", f"bokeh, {alice2}"]) == 401
    assert check(protos=[f"bokeh, {alice}, bokeh, {alice2}"]) == 401
    assert check(protos=["chat"]) == 401
    # the token's own user is checked, whoever is logged in
    _, carol = mint_token(web_settings.secret_key, "sales", user="carol", roles=("viewer", "controller"))
    assert check(protos=[f"bokeh, {carol}"]) == 204
    fleet_bus.accounts.revoke_access("sales", users=["carol"])
    assert check(protos=[f"bokeh, {carol}"]) == 401


def test_logout_ends_the_login_server_side(client, auth):
    auth.login("alice")
    cookie = client.get_cookie("fleet_session").value
    assert client.get("/").status_code == 200
    auth.logout()
    client.set_cookie("fleet_session", cookie)  # the copy taken before the logout
    r = client.get("/")
    assert r.status_code == 302 and "/auth/login" in r.headers["Location"]
