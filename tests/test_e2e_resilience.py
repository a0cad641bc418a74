"""Pages stay live through failures and operations: kill -9 of an instance,
``supervisorctl restart fleet:*`` and ``deploy/rolling-restart``-style restarts.

"Live" = a command published after the event reaches every open page, with no
manual reload (BokehJS reconnects; nginx skips a dead instance; the new session is
built from the state every instance holds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from fleet_testing.stack import ROOT, Stack, login, open_dashboard, probe, wait_marker

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("e2e_resilience")]

PASSWORD = "e2e-ops-password"
_marker = [1000.5]


@pytest.fixture(scope="module")
def live():
    s = Stack(instances=2)
    try:
        s.start_healthy()
        s.fleetctl("dashboard", "create", "ops")
        s.add_user("viewer", PASSWORD, "ops")
        s.redis_cli("XADD", "fleet:{ops}:commands", "*", "op", "replace", "name", "p", "kind", "line",
                    "data", json.dumps({"x": [1, 2], "y": [1.0, 2.0]}))
        yield s
    finally:
        s.stop()


@pytest.fixture
def pages(live, browser):
    """Pages until both instances serve at least one."""
    contexts, out = [], []
    for _ in range(10):
        ctx, page = login(browser, live.url, "viewer", PASSWORD)
        open_dashboard(page, live.url, "ops")
        contexts.append(ctx)
        out.append(page)
        if len(out) >= 2 and all(live.instance_sessions(n, "ops") > 0 for n in (1, 2)):
            break
    assert all(live.instance_sessions(n, "ops") > 0 for n in (1, 2))
    yield out
    for c in contexts:
        c.close()


def publish_and_wait(live, pages, timeout: float) -> float:
    _marker[0] += 1
    live.redis_cli("XADD", "fleet:{ops}:commands", "*", "op", "stream", "name", "p",
                   "data", json.dumps({"x": [3], "y": [_marker[0]]}))
    return wait_marker(pages, _marker[0], timeout)


def test_kill_9_of_an_instance_pages_recover_without_reload(live, pages):
    publish_and_wait(live, pages, 5)
    urls = [p.url for p in pages]
    old = live.pid("fleet:bokeh_01")
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while live.pid("fleet:bokeh_01") in (None, old) or live.status()["fleet:bokeh_01"][0] != "RUNNING":
        assert time.monotonic() < deadline, live.status()
        time.sleep(0.2)
    live.wait_healthz(1)
    publish_and_wait(live, pages, 30)
    assert [p.url for p in pages] == urls  # same pages, nobody navigated


def test_supervisorctl_restart_fleet_all_pages_recover(live, pages):
    publish_and_wait(live, pages, 5)
    res = live.ctl("restart", "fleet:*", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    for n in (1, 2):
        live.wait_healthz(n, timeout=90)
    publish_and_wait(live, pages, 45)
    assert all("Line" in probe(p)["glyphs"] for p in pages)


def test_rolling_restart_keeps_every_page_live(live, pages):
    """deploy/rolling-restart against this stack: a command published while it runs,
    and one after, reach every page."""
    env = {**live.proc_env, "FLEET_ROLLING_PAUSE": "2", "FLEET_SITE_DIR": str(live.dir)}
    proc = subprocess.Popen([str(ROOT / "deploy" / "rolling-restart")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worst = 0.0
    try:
        while proc.poll() is None:
            worst = max(worst, publish_and_wait(live, pages, 30))
            time.sleep(0.5)
    finally:
        out = proc.communicate(timeout=180)[0]
    assert proc.returncode == 0, out
    assert "fleet: 2 instances restarted" in out
    publish_and_wait(live, pages, 10)
