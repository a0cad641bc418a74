"""A hung instance is restarted by the event listener's watchdog, once, and recorded.

supervisord restarts a process that exits, not one that stops answering.  The unit
tests drive :class:`app.stack.events.HealthWatch` with a fake clock and supervisord;
the stack test SIGSTOPs a real instance under a real supervisord.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from app.settings import Settings
from app.stack.events import HealthWatch, Listener
from fleet_testing.stack import Stack, login

pytestmark = pytest.mark.xdist_group("stack_hung")


# --- the watchdog's rules, with a fake supervisord --------------------------------------
class FakeSupervisor:
    def __init__(self) -> None:
        self.now = 1000.0
        self.procs = {"bokeh_01": {"name": "bokeh_01", "group": "fleet", "statename": "RUNNING", "pid": 11,
                                   "start": 900, "now": 1000},
                      "web": {"name": "web", "group": "fleet", "statename": "RUNNING", "pid": 12,
                              "start": 900, "now": 1000}}
        self.calls: list[tuple] = []
        self.supervisor = self

    def __call__(self, timeout: float = 2.0) -> FakeSupervisor:
        return self

    def getAllProcessInfo(self) -> list[dict]:
        return [dict(p, now=int(self.now)) for p in self.procs.values()]

    def signalProcess(self, name: str, sig: str) -> bool:
        self.calls.append(("signal", name, sig))
        return True

    def stopProcess(self, name: str, wait: bool) -> bool:
        self.calls.append(("stop", name))
        return True

    def startProcess(self, name: str, wait: bool) -> bool:
        self.calls.append(("start", name))
        p = self.procs[name.split(":")[-1]]
        p["pid"] += 100
        p["start"] = int(self.now)
        return True


def _watch(after: float = 30, backoff: float = 600, healthy=lambda n: False, failure="timed out",
           redis_ok=lambda: True):
    sup = FakeSupervisor()
    events: list[dict] = []
    s = Settings(health_restart_seconds=after, health_restart_backoff_seconds=backoff)
    w = HealthWatch(s, events.append, probe=lambda n: 200 if healthy(n) else failure, rpc=sup,
                    redis_ok=redis_ok, clock=lambda: sup.now)
    return w, sup, events


def test_watchdog_restarts_after_the_threshold_then_backs_off():
    w, sup, events = _watch(after=30, backoff=600)
    for _ in range(6):  # 25 s of failures: not yet
        w.tick()
        sup.now += 5
    assert sup.calls == []
    w.tick()
    sup.now += 5
    assert [c[0] for c in sup.calls] == ["signal", "stop", "start"] and sup.calls[1][1] == "fleet:bokeh_01"
    assert len(events) == 1 and events[0]["event"] == "HEALTH_RESTART" and events[0]["result"] == "restarted"
    assert events[0]["process"] == "fleet:bokeh_01" and events[0]["pid"] == "11"
    assert "/healthz failing for 30s" in events[0]["reason"]
    for _ in range(100):  # still failing for 500 s: no restart loop inside the backoff window
        w.tick()
        sup.now += 5
    assert len(events) == 1
    for _ in range(30):  # after the window: once more
        w.tick()
        sup.now += 5
    assert len(events) == 2


def test_watchdog_waits_for_a_fresh_process_and_forgets_recovered_ones():
    state = {"up": False}
    w, sup, events = _watch(after=30, backoff=0, healthy=lambda n: state["up"])
    sup.procs["bokeh_01"]["start"] = int(sup.now) - 2  # just started: gets the full threshold
    for _ in range(5):
        w.tick()
        sup.now += 5
    assert events == []
    state["up"] = True  # recovered: its failure clock starts over
    w.tick()
    state["up"] = False
    for _ in range(5):
        sup.now += 5
        w.tick()
    assert events == []


def test_watchdog_leaves_stopped_instances_and_can_be_disabled():
    w, sup, events = _watch(after=30)
    sup.procs["bokeh_01"]["statename"] = "STOPPED"  # the operator stopped it
    for _ in range(20):
        w.tick()
        sup.now += 5
    w2, sup2, events2 = _watch(after=0)
    for _ in range(20):
        w2.tick()
        sup2.now += 5
    assert events == events2 == [] and sup.calls == sup2.calls == []


def test_watchdog_leaves_instances_waiting_for_a_dead_redis():
    redis = {"up": False}
    w, sup, events = _watch(after=30, failure=503, redis_ok=lambda: redis["up"])
    for _ in range(20):  # 503 "not caught up" while Redis is down: not hung
        w.tick()
        sup.now += 5
    assert events == []
    redis["up"] = True  # Redis is back but the instance still answers 503: that one is stuck
    for _ in range(7):
        w.tick()
        sup.now += 5
    assert len(events) == 1 and "(503)" in events[0]["reason"]


def test_listener_runs_the_watchdog_on_ticks_and_records_nothing_for_them():
    import io

    ticks, stored = [], []
    lst = Listener(stored.extend, on_tick=lambda: ticks.append(1))
    body = b"when:1700000000"
    stdin = io.BytesIO(b"ver:3.0 server:fleet serial:1 pool:fleet_events poolserial:1 eventname:TICK_5 len:%d\n"
                       % len(body) + body)
    out = io.BytesIO()
    lst.run(stdin, out)
    assert ticks == [1] and stored == [] and out.getvalue().count(b"RESULT 2\nOK") == 1


# --- the real thing ----------------------------------------------------------------------
def test_sigstopped_instance_is_restarted_once_and_the_event_is_shown(browser):
    s = Stack(instances=1, demo=False, health_restart_seconds=4, health_restart_backoff_seconds=600)
    try:
        s.start_healthy()
        s.add_user("ops", "ops-password-1", role="admin")
        old = s.pid("fleet:bokeh_01")
        assert old
        os.kill(old, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 60
            while True:
                st, pid = s.status().get("fleet:bokeh_01", ("", None))
                if st == "RUNNING" and pid not in (None, old):
                    break
                assert time.monotonic() < deadline, f"not restarted: {st} pid {pid}\n{s.logs()}"
                time.sleep(0.3)
        finally:
            try:
                os.kill(old, signal.SIGCONT)
            except ProcessLookupError:
                pass
        s.wait_healthz(1, timeout=60)
        out = s.fleetctl("events", "--json", "-n", "200").stdout
        restarts = [line for line in out.splitlines() if "HEALTH_RESTART" in line]
        assert len(restarts) == 1, out
        assert '"result": "restarted"' in restarts[0] and f'"pid": "{old}"' in restarts[0]
        # healthy again, and within the backoff window: no second restart
        new = s.pid("fleet:bokeh_01")
        time.sleep(6)
        assert s.pid("fleet:bokeh_01") == new

        ctx, page = login(browser, s.url, "ops", "ops-password-1")
        try:
            page.goto(s.url + "/admin/")
            text = page.inner_text("body")
            assert "HEALTH_RESTART" in text and "/healthz failing" in text
        finally:
            ctx.close()
    finally:
        s.stop()
