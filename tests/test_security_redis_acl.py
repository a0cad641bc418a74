"""Redis ACL users per role (issue 10 item 7), against the stack's own redis-server
run by supervisord with the rendered aclfile.

A controller user from ``fleetctl controllers add --dashboard sales`` can publish
and read its own dashboard through :class:`app.client.Controller` and can touch no
other key; the ``default`` user is off; only web and admin can write the users hash;
a controller survives a Redis restart.  (Each role doing its job is covered by the
stack tests, whose programs now run with these users.)
"""

from __future__ import annotations

import json
import time

import pytest
import redis

from app.bus import registry
from app.bus.keys import Keys
from app.client import Controller
from fleet_testing.stack import Stack

pytestmark = pytest.mark.xdist_group("redis_acl")

K = Keys("fleet")
ONLY_REDIS = {"bokeh": False, "web": False, "compactor": False, "nginx": False,
              "demo": False, "events": False}


@pytest.fixture(scope="module")
def live():
    s = Stack(instances=1, programs=ONLY_REDIS)
    try:
        s.start(wait_for=("fleet:redis",))
        admin = redis.Redis.from_url(s.redis_url)
        deadline = time.monotonic() + 20
        while True:
            try:
                admin.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for d in ("sales", "ops"):
            registry.create_dashboard(admin, K, d)
        admin.set(K.snapshot("ops"), "{}")
        admin.xadd(K.rejected("ops"), {"a": "b"})
        admin.hset("fleet:users", "alice", json.dumps({"roles": ["viewer"]}))
        yield s
    finally:
        s.stop()


def add_controller(live, *args: str) -> str:
    res = live.fleetctl("controllers", "add", *args)
    url = res.stdout.strip()
    assert url.startswith("redis://ctl-"), res
    return url


def nope(fn, *args, **kw) -> bool:
    """True if Redis refuses the call for lack of permission."""
    try:
        fn(*args, **kw)
    except redis.exceptions.NoPermissionError:
        return True
    except redis.ResponseError as exc:
        return "NOPERM" in str(exc)
    return False


def test_controller_user_publishes_with_controller_and_nothing_else(live):
    url = add_controller(live, "--dashboard", "sales", "--name", "sales-feed")
    with Controller(url) as ctl:
        ctl.replace("sales", "revenue", kind="line", data={"t": [1, 2], "eur": [10.0, 12.5]})
        ctl.stream("sales", "revenue", {"t": [3], "eur": [11.0]})
        state = ctl.state_json("sales")
        assert "revenue" in json.dumps(state)
        ctl.rejected("sales")
    c = redis.Redis.from_url(url)
    assert c.xlen(K.commands("sales")) >= 2
    # nothing of the other dashboard, nothing global
    assert nope(c.xadd, K.commands("ops"), {"op": "clear"})
    assert nope(c.xrange, K.commands("ops"))
    assert nope(c.get, K.snapshot("ops"))
    assert nope(c.xrevrange, K.rejected("ops"))
    assert nope(c.hgetall, "fleet:users")
    assert nope(c.hset, "fleet:users", "mallory", json.dumps({"roles": ["admin"]}))
    assert nope(c.hgetall, K.dashboards)
    assert nope(c.hset, K.dashboards, "evil", "{}")
    assert nope(c.xadd, K.registry_events, {"event": "deleted", "dashboard": "sales"})
    assert nope(c.set, K.epoch, "x")
    assert nope(c.keys, "*")
    assert nope(c.flushall)
    assert nope(c.config_get, "*")
    assert nope(c.acl_setuser, "x")
    # its own dashboard: only XADD to the command stream, never delete or overwrite
    assert nope(c.delete, K.commands("sales"))
    assert nope(c.xtrim, K.commands("sales"), maxlen=0)
    assert nope(c.set, K.snapshot("sales"), "{}")
    assert nope(c.xadd, K.rejected("sales"), {"a": "b"})
    assert nope(c.eval, "return redis.call('DEL', KEYS[1])", 1, K.commands("sales"))


def test_controllers_list_remove_and_survive_a_redis_restart(live):
    url = add_controller(live, "--dashboard", "ops", "--name", "ops-feed")
    listed = live.fleetctl("controllers", "list").stdout
    assert any(line.split()[0] == "ops-feed" and "ops" in line for line in listed.splitlines())
    # deploy/run again: render keeps the saved controller in the aclfile, reload applies it
    live.fleetctl("render")
    assert "user ctl-ops-feed " in (live.var / "redis" / "users.acl").read_text()
    live.fleetctl("controllers", "reload")
    live.ctl("restart", "fleet:redis", check=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            assert redis.Redis.from_url(url).xadd(K.commands("ops"), {"op": "clear"})
            break
        except (redis.ConnectionError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    live.fleetctl("controllers", "remove", "ops-feed")
    assert "ops-feed" not in live.fleetctl("controllers", "list").stdout
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url).ping()
    res = live.fleetctl("controllers", "add", "--dashboard", "nosuch", check=False)
    assert res.returncode == 2 and "no dashboard 'nosuch'" in res.stderr


def test_default_user_is_off_and_only_web_and_admin_write_users(live):
    port = live.settings.redis_port
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        redis.Redis(port=port).hset("fleet:users", "mallory", "{}")
    urls = live.ctx["redis_urls"]
    assert set(urls) == {"bokeh", "web", "compactor", "events", "demo"}
    assert len({u for u in urls.values()}) == len(urls)  # one user per program
    for program, url in urls.items():
        c = redis.Redis.from_url(url)
        c.ping()
        mallory = json.dumps({"roles": ["admin"], "gen": "x"})
        if program == "web":
            assert c.hset("fleet:users", "web-may", "{}") == 1
            assert nope(c.config_get, "*") and nope(c.acl_list) and nope(c.flushall)
        else:
            assert nope(c.hset, "fleet:users", "mallory", mallory), program
            if program != "bokeh":  # instances read users/access to cut revoked sessions
                assert nope(c.hget, "fleet:users", "alice"), program
            assert nope(c.hset, "fleet:access", "*", "{}"), program
            assert nope(c.execute_command, "ACL", "SETUSER", "x", "on", "+@all", "~*"), program
    assert redis.Redis.from_url(live.redis_url).hget("fleet:users", "mallory") is None


def test_role_users_reach_their_own_keys(live):
    urls = live.ctx["redis_urls"]
    inst = redis.Redis.from_url(urls["bokeh"])
    assert inst.xrange(K.commands("sales")) is not None and inst.hgetall(K.dashboards)
    inst.set(K.heartbeat("t1"), "{}", px=1000)
    assert nope(inst.xadd, K.commands("sales"), {"op": "clear"})
    assert nope(inst.set, K.snapshot("sales"), "{}")
    comp = redis.Redis.from_url(urls["compactor"])
    comp.set(K.compactor_lock, "me", px=1000)
    comp.set(K.snapshot("sales"), comp.get(K.snapshot("sales")) or "{}")
    comp.xtrim(K.commands("sales"), minid="0-1")  # trims behind its snapshots
    from app.bus.redis_log import WRITE_SNAPSHOT  # the fenced snapshot + trim script

    assert comp.eval(WRITE_SNAPSHOT, 3, K.compactor_lock, K.snapshot("sales"), K.commands("sales"),
                     "me", "{}", "0-1") == 1
    assert nope(comp.hset, "fleet:users", "x", "{}")
    ev = redis.Redis.from_url(urls["events"])
    ev.xadd(K.process_events, {"event": "x"})
    assert nope(ev.xadd, K.commands("sales"), {"op": "clear"})
    demo = redis.Redis.from_url(urls["demo"])
    registry.create_dashboard(demo, K, "demo")
    assert nope(demo.xadd, K.commands("sales"), {"op": "clear"})
    web = redis.Redis.from_url(urls["web"])
    web.xadd(K.commands("sales"), {"op": "clear"})
    assert web.info("server")["redis_version"]
