"""A controller's least-privilege ACL user (``fleetctl controllers add``) can do all that
``bokeh_fleet.Controller(strict=True)`` needs: publish, learn applied/rejected, read back."""

from __future__ import annotations

import time

import pytest
from bokeh_fleet import Controller, Rejected

from app.bus.acl import add_controller
from app.bus.keys import Keys
from app.bus.registry import create_dashboard


def test_controller_user_strict_mode(redis_server, start_instance):
    admin = redis_server.client()
    keys = Keys()
    create_dashboard(admin, keys, "sales")
    create_dashboard(admin, keys, "hr")
    user, password, _how = add_controller(admin, keys, "feeder", ["sales"])
    start_instance()
    url = f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0"
    with Controller(url, strict=True) as ctl:
        ctl.replace("sales", "revenue", data={"t": [1, 2], "eur": [1.0, 2.0]})
        t0 = time.monotonic()
        with pytest.raises(Rejected, match="no figure 'revenu'"):
            ctl.stream("sales", "revenu", {"t": [3], "eur": [3.0]})
        assert time.monotonic() - t0 < 1.0
        assert ctl.rejected("sales")[0]["reason"].startswith("name: no figure 'revenu'")
        with pytest.raises(Exception, match="NOPERM|no permissions"):
            ctl.replace("hr", "salaries", data={"t": [1], "eur": [1.0]})
    assert admin.get(keys.applied("sales")) is not None


def test_strict_mode_on_the_stack_with_role_acls(stack_factory):
    """The instance runs as the ``instance`` ACL role (redis.acl.j2) and may set
    ``fleet:{d}:applied``; a ``fleetctl controllers add`` user may read it."""
    import redis

    s = stack_factory(instances=1, programs={"web": False, "compactor": False, "nginx": False,
                                              "demo": False, "events": False})
    s.start(wait_for=("fleet:redis",))
    s.wait_healthz(1)
    admin = redis.Redis.from_url(s.redis_url)
    create_dashboard(admin, Keys(), "sales")
    url = s.fleetctl("controllers", "add", "--dashboard", "sales", "--name", "feed").stdout.strip()
    with Controller(url, strict=True, timeout=20) as ctl:
        ctl.replace("sales", "revenue", data={"t": [1, 2], "eur": [1.0, 2.0]})
        with pytest.raises(Rejected, match="no figure 'revenu'"):
            ctl.stream("sales", "revenu", {"t": [3], "eur": [3.0]})


def test_applied_covers_commands_folded_into_the_snapshot(redis_server, start_instance):
    """An instance that starts from a snapshot marks its ids applied (no entries after it)."""
    from app.control import snapshot
    from app.control.protocol import parse
    from app.control.state import EMPTY, step

    admin = redis_server.client()
    keys = Keys()
    create_dashboard(admin, keys, "sales")
    admin.set(keys.epoch, "e1")
    fields = {"op": "replace", "name": "f", "kind": "line", "data": '{"t":[1],"y":[2]}'}
    eid = admin.xadd(keys.commands("sales"), fields).decode()
    state, _ = step(EMPTY, parse(fields))
    admin.set(keys.snapshot("sales"), snapshot.dumps(snapshot.Snapshot(state, eid, "e1")))
    start_instance()
    deadline = time.monotonic() + 10
    while admin.get(keys.applied("sales")) != eid.encode():
        assert time.monotonic() < deadline, admin.get(keys.applied("sales"))
        time.sleep(0.02)
    with Controller(redis_server.url) as ctl:
        ctl.wait_applied(eid, 1, dashboard="sales")
