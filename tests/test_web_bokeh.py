"""Tokens minted by the web app against a real Bokeh instance (``fleetctl instance``).

The instance accepts the session the dashboard page mints (autoload.js with the exact
URL the page builds, then the websocket), shows that dashboard only, and refuses
forged, expired and other-dashboard tokens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.error
import urllib.request

import pytest
from bokeh.util.token import generate_jwt_token, get_session_id

from app.bus import registry
from app.bus.connection import sync_client
from app.bus.keys import Keys
from app.bus.publisher import publish
from app.control import encode
from app.passwords import hash_password
from app.web import create_app
from fleet_testing.bokeh import BokehClient, Refused, mint_token
from fleet_testing.web import PASSWORDS, AuthActions
from tests.test_web_pages import autoload_src, token_of

FIG = {"demo": "p", "other": "q"}


@pytest.fixture
def fleet_web(fleet_settings):
    client = sync_client(fleet_settings)
    keys = Keys(fleet_settings.key_prefix)
    for dash, fig in FIG.items():
        registry.create_dashboard(client, keys, dash)
        publish(client, keys, dash, encode("replace", name=fig, kind="line", data={"x": [0, 1], "y": [1.0, 2.0]}))

    def make(**overrides):
        # Host is 127.0.0.1:<instance port> here: any host
        s = dataclasses.replace(fleet_settings, flask_secret="web-test-secret-123456",
                                **{"allowed_hosts": ("*",), **overrides})
        return create_app({"TESTING": True, "FLEET_SETTINGS": s})

    app = make()
    acc = app.extensions["fleet"].accounts
    acc.add_user("alice", hash_password(PASSWORDS["alice"]), ["viewer"])
    acc.grant_access("demo", users=["alice"])
    yield make
    client.close()


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def page_token(make_app, inst, dashboard="demo", **overrides) -> tuple[str, str]:
    base = f"http://127.0.0.1:{inst.port}"  # the page as nginx would serve it, here the instance itself
    a = AuthActions(make_app(**overrides).test_client())
    assert a.login("alice", base_url=base).status_code == 302
    r = a.client.get(f"/d/{dashboard}", base_url=base)
    assert r.status_code == 200, r.status_code
    src = autoload_src(r.data)
    assert src.startswith(base + "/bokeh/dashboard/autoload.js?")
    return src, token_of(src)


def test_instance_accepts_minted_and_refuses_the_rest(fleet_web, fleet_settings, start_instance):
    inst = start_instance()
    src, token = page_token(fleet_web, inst)
    status, body = http_get(src)
    assert status == 200 and b"Bokeh" in body

    async def main():
        c = await BokehClient(inst.ws_url, token).connect()
        assert c.source("p") is not None and c.source("q") is None  # demo, and only demo
        await c.close()
        # forged: right payload, wrong key
        _, forged = mint_token(fleet_settings.secret_key, "demo", key="not-the-secret")
        with pytest.raises((Refused, asyncio.TimeoutError, OSError)):
            await BokehClient(inst.ws_url, forged).connect(timeout=5)
        # other dashboard on the same (web-minted) session id: refused
        sid = get_session_id(token)
        other = generate_jwt_token(sid, secret_key=fleet_settings.secret_key, signed=True,
                                   extra_payload={"dashboard": "other", "user": "alice", "roles": ["viewer"]})
        with pytest.raises((Refused, asyncio.TimeoutError, OSError)):
            await BokehClient(inst.ws_url, other).connect(timeout=5)

    asyncio.run(main())
    assert "another dashboard" in inst.log()
    assert http_get(src.replace(token, mint_token(fleet_settings.secret_key, "demo", key="nope")[1]))[0] == 403


def test_expired_minted_token_is_refused(fleet_web, start_instance):
    inst = start_instance()
    src, token = page_token(fleet_web, inst, session_token_expiration=1)
    time.sleep(2.2)
    assert http_get(src)[0] == 403

    async def main():
        with pytest.raises((Refused, asyncio.TimeoutError, OSError)):
            await BokehClient(inst.ws_url, token).connect(timeout=5)

    asyncio.run(main())


def test_web_never_mints_for_a_dashboard_the_user_may_not_view(fleet_web, start_instance):
    inst = start_instance()
    base = f"http://127.0.0.1:{inst.port}"
    a = AuthActions(fleet_web().test_client())
    a.login("alice", base_url=base)
    assert a.client.get("/d/other", base_url=base).status_code == 403
    r = a.client.get("/embed/other.js", base_url=base)
    assert b"bokeh-token" not in r.data
