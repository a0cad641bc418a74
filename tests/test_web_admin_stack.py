"""The admin page on the whole stack (supervisord, nginx, gunicorn, 2 instances, the
event listener): a real viewer in Chromium shows up under "who is viewing what", an
admin restarts an instance from the page (in Chromium, through the page's own form),
and the event history the page shows is what the event listener recorded in Redis."""

from __future__ import annotations

import json
import re
import time

import pytest
import redis
import requests

from app.bus import process_events
from app.bus.keys import Keys
from fleet_testing.stack import Stack, login, open_dashboard
from fleet_testing.web import csrf_token

pytestmark = pytest.mark.xdist_group("web_admin_stack")

PASSWORD = "admin-stack-password"


@pytest.fixture(scope="module")
def live():
    s = Stack(instances=2, heartbeat_seconds=0.5)
    try:
        s.start_healthy()
        s.fleetctl("dashboard", "create", "sales")
        s.redis_cli("XADD", "fleet:{sales}:commands", "*", "op", "replace", "name", "p", "kind", "line",
                    "data", json.dumps({"x": [0, 1], "y": [1.0, 2.0]}))
        s.add_user("alice", PASSWORD, "sales")
        s.add_user("boss", PASSWORD, role="admin")
        yield s
    finally:
        s.stop()


def admin_session(live: Stack) -> requests.Session:
    http = requests.Session()
    page = http.get(live.url + "/auth/login", timeout=10)
    r = http.post(live.url + "/auth/login", timeout=10, allow_redirects=False, data={
        "username": "boss", "password": PASSWORD, "csrf_token": csrf_token(page.text), "next": ""})
    assert r.status_code == 302
    return http


def wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        time.sleep(0.2)


def test_a_real_viewer_is_listed(live, browser):
    ctx, page = login(browser, live.url, "alice", PASSWORD)
    try:
        open_dashboard(page, live.url, "sales")
        admin = admin_session(live)

        def viewers():
            return admin.get(live.url + "/admin/status.json", timeout=10).json()["viewers"].get("sales")

        seen = wait(lambda: (v := viewers()) and "alice" in v["users"] and v, 15, "alice among the viewers")
        assert seen["users"]["alice"] == 1 and len(seen["instances"]) == 1
        panel = admin.get(live.url + "/admin/panel", timeout=10).text
        section = panel[panel.index('id="viewers"'):panel.index('id="processes"')]
        assert "<code>sales</code>" in section and re.search(r'class="kv viewer">alice<', section)
    finally:
        ctx.close()


def test_restart_from_the_page_and_the_recorded_event_history(live, browser):
    before = live.pid("fleet:bokeh_02")
    ctx, page = login(browser, live.url, "boss", PASSWORD)
    try:
        page.goto(live.url + "/admin/")
        page.locator('form:has(input[name=name][value="fleet:bokeh_02"]) button').click()
        page.wait_for_url(re.compile(r"/admin/#processes$"), timeout=60000)
        assert "fleet:bokeh_02 restarted (RUNNING)." in page.inner_text(".flash")
    finally:
        ctx.close()
    after = live.pid("fleet:bokeh_02")
    assert after and after != before
    # what the page shows is what the event listener (fleet_events) recorded in Redis
    rds = redis.Redis.from_url(live.redis_url)
    recorded = wait(lambda: (rows := process_events.recent(rds, Keys("fleet"), 30)) and any(
        r["event"] == "PROCESS_STATE_RUNNING" and r["process"] == "fleet:bokeh_02" and r.get("pid") == str(after)
        for r in rows) and rows, 20, "the listener's record of the new bokeh_02")
    admin = admin_session(live)
    shown = admin.get(live.url + "/admin/status.json", timeout=10).json()["events"]
    ids = {r["id"] for r in recorded}
    listener = [e for e in shown if e["event"].startswith("PROCESS_STATE_") and e["process"] == "fleet:bokeh_02"]
    assert {e["event"] for e in listener} >= {"PROCESS_STATE_STOPPING", "PROCESS_STATE_STOPPED",
                                             "PROCESS_STATE_STARTING", "PROCESS_STATE_RUNNING"}
    assert all(e["id"] in ids for e in listener)
    admin_restart = next(e for e in shown if e["event"] == "ADMIN_RESTART")
    assert admin_restart["process"] == "fleet:bokeh_02" and admin_restart["reason"] == "by boss"
    panel = admin.get(live.url + "/admin/panel", timeout=10).text
    events = panel[panel.index('id="events"'):panel.index('id="compactor"')]
    assert f"<td>{after}</td>" in events and "from STARTING" in events and "ADMIN_RESTART" in events
    live.wait_healthz(2)
    # the action's audit line is in the web log (gunicorn leaves the root logger bare)
    assert "fleet.audit admin=boss addr=127.0.0.1 action=process.restart process='fleet:bokeh_02'" in (
        live.var / "log" / "web.log").read_text()
