"""Nobody can lock everyone out (issue 10, item 3).

Through the real nginx, from several loopback source addresses (nginx sees each as a
different client): failed logins lock out one (account, client address), failures
from one address lock out that address, bad bearer tokens lock out that client,
and nobody else.  Before the fix the app saw every client as 127.0.0.1, so 3 bad
passwords for admin1 from anywhere locked admin1 out everywhere.
"""

from __future__ import annotations

import json
import time

import pytest

from fleet_testing.security import PASSWORDS, SourceClient

pytestmark = pytest.mark.xdist_group("security_stack")


def test_failed_logins_lock_out_one_account_from_one_client_only(security_stack):
    url = security_stack.url
    attacker = SourceClient(url, "127.0.0.2")
    for _ in range(3):  # FLEET_LOGIN_RATE_LIMIT=3 in this stack
        # a client-supplied X-Forwarded-For must not move the failures elsewhere
        status, _, _ = attacker.login("admin1", "wrong-password", headers={"X-Forwarded-For": "127.0.0.3"})
        assert status == 401
    status, hdrs, body = attacker.login("admin1", PASSWORDS["admin1"])
    assert status == 429, body[:300]
    assert 0 < int(hdrs["retry-after"]) <= 300 and b"Too many failed logins" in body
    # the attacked account still logs in from another client ...
    status, hdrs, _ = SourceClient(url, "127.0.0.3").login("admin1", PASSWORDS["admin1"])
    assert status == 302 and "/auth/login" not in hdrs["location"]
    # ... and another user from the attacker's own address
    status, _, _ = SourceClient(url, "127.0.0.2").login("bob", PASSWORDS["bob"])
    assert status == 302


def test_failures_from_one_address_do_not_lock_out_everyone(security_stack):
    url = security_stack.url
    flood = SourceClient(url, "127.0.0.4")
    for i in range(15):  # 5 x the per-account limit, spread over many user names
        status, _, _ = flood.login(f"nobody{i}", "wrong-password")
        assert status == 401
    assert flood.login("carol", PASSWORDS["carol"])[0] == 429  # that address is locked
    for src in ("127.0.0.5", "127.0.0.6"):  # everybody else is not
        status, hdrs, _ = SourceClient(url, src).login("carol", PASSWORDS["carol"])
        assert status == 302, src


def test_bad_bearer_tokens_lock_out_that_client_only(security_stack):
    url = security_stack.url
    token = security_stack.fleetctl("tokens", "create", "--name", "lockout-test", "--dashboard", "sec").stdout.strip()
    good = {"Authorization": f"Bearer {token}"}
    attacker = SourceClient(url, "127.0.0.7")
    for i in range(15):  # login limit x 5
        status, _, _ = attacker.get("/api/v1/dashboards", headers={"Authorization": f"Bearer fleet_bad{i}"})
        assert status == 401
    status, hdrs, _ = attacker.get("/api/v1/dashboards", headers=good)
    assert status == 429 and int(hdrs["retry-after"]) > 0
    t0 = time.monotonic()
    for src in ("127.0.0.8", "127.0.0.10"):  # other controllers keep working
        status, _, body = SourceClient(url, src).get("/api/v1/dashboards", headers=good)
        assert status == 200, (src, body[:300])
        assert json.loads(body)["dashboards"] == ["sec"]
    assert time.monotonic() - t0 < 10


def test_lockouts_back_off_exponentially(fleet_bus):
    """Each new lock-out of the same bucket lasts twice as long (unit, real Redis)."""
    from app.bus import ratelimit

    c, k = fleet_bus.client, fleet_bus.keys

    def fail(**kw):
        return ratelimit.fail(c, k, "login", "x", "10.0.0.1", limit=2, window=10, **kw)

    assert ratelimit.locked_for(c, k, "login", "x", "10.0.0.1") == 0
    assert [fail() for _ in range(2)] == [0, 10]
    assert 9 <= ratelimit.locked_for(c, k, "login", "x", "10.0.0.1") <= 10
    assert ratelimit.locked_for(c, k, "login", "x", "10.0.0.2") == 0  # another client: not locked
    assert [fail() for _ in range(2)] == [0, 20]
    assert [fail(max_lock=30) for _ in range(2)] == [0, 30]
    assert 19 <= ratelimit.locked_for(c, k, "login", "x", "10.0.0.1") <= 30
