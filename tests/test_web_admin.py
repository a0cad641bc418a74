"""Admin page: heartbeats, compactor status, rejected commands, supervisord states
(a real supervisord on its unix socket), Redis health."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.bus import registry
from app.bus.connection import async_client
from app.bus.heartbeat import write_heartbeat
from app.web.supervisor import process_states

SUPERVISORD = str(Path(sys.executable).with_name("supervisord"))

CONF = """
[unix_http_server]
file={var}/supervisor.sock
[supervisord]
nodaemon=true
logfile={var}/supervisord.log
pidfile={var}/supervisord.pid
childlogdir={var}
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[program:sleeper]
command=sleep 600
startsecs=0
[program:broken]
command=/bin/false
startsecs=1
startretries=0
"""


@pytest.fixture
def supervisord(web_settings):
    var = web_settings.var_dir
    var.mkdir(parents=True, exist_ok=True)
    conf = var / "supervisord.conf"
    conf.write_text(CONF.format(var=var))
    proc = subprocess.Popen([SUPERVISORD, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = var / "supervisor.sock"
    deadline = time.monotonic() + 20
    while True:
        st = process_states(sock)
        states = {p["name"]: p["state"] for p in st.get("processes", [])}
        if states.get("sleeper") == "RUNNING" and states.get("broken") in ("FATAL", "BACKOFF", "EXITED"):
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.1)
    yield sock
    proc.terminate()
    proc.wait(20)


def test_admin_status(client, auth, fleet_bus, web_settings, supervisord):
    f = fleet_bus
    registry.create_dashboard(f.client, f.keys, "sales")
    f.client.xadd(f.keys.rejected("sales"), {"op": "stream", "name": "p", "_id": "1-0",
                                             "_reason": "no figure 'p'"})
    f.client.hset(f.keys.compactor_status, mapping={"owner": "host:123",
                                                    "sales": json.dumps({"last_id": "5-0"})})

    async def beat():
        c = async_client(web_settings)
        await write_heartbeat(c, f.keys, "bokeh_01", {"id": "bokeh_01", "sessions": 7, "lag_ms": 1.5,
                                                      "last_ids": {"sales": "5-0"}}, 30)
        await c.aclose()

    asyncio.run(beat())
    auth.login("root")
    s = client.get("/admin/status.json").get_json()
    assert s["redis"]["ok"] and s["redis"]["ping_ms"] >= 0 and s["redis"]["aof_enabled"] == 1
    assert s["instances"][0]["sessions"] == 7
    assert s["compactor"]["owner"] == "host:123" and s["compactor"]["sales"] == {"last_id": "5-0"}
    assert s["dashboards"][0]["rejected"][0]["reason"] == "no figure 'p'"
    procs = {p["name"]: p["state"] for p in s["supervisor"]["processes"]}
    assert s["supervisor"]["ok"] and procs["sleeper"] == "RUNNING" and procs["broken"] != "RUNNING"
    page = client.get("/admin/").get_data(as_text=True)
    assert "bokeh_01" in page and "sleeper" in page and "no figure &#39;p&#39;" in page
    assert 'data-src="/admin/panel"' in page  # refreshes itself
    panel = client.get("/admin/panel")
    assert panel.status_code == 200 and b"sleeper" in panel.data and b"<html" not in panel.data


def test_admin_when_things_are_down(client, auth, redis_server):
    auth.login("root")
    s = client.get("/admin/status.json").get_json()
    assert s["supervisor"]["ok"] is False and "supervisor.sock" in s["supervisor"]["socket"]
    assert client.get("/admin/").status_code == 200
    redis_server.kill()
    # identity lives in Redis: without it the page cannot authenticate and says why (503)
    r = client.get("/admin/")
    assert r.status_code == 503


def test_admin_panel_shows_controller_text_as_text(client, auth, fleet_bus):
    """Rejected commands carry whatever a controller sent (and the reason quotes it):
    the admin panel, swapped in with innerHTML, must show it escaped."""
    f = fleet_bus
    registry.create_dashboard(f.client, f.keys, "sales", title="<b>Sales</b>")
    payload = "<img src=x onerror=alert(1)>"
    f.client.xadd(f.keys.rejected("sales"), {"op": "stream", "name": payload, "_id": "1-0",
                                             "_reason": f"no figure {payload!r}"})
    auth.login("root")
    panel = client.get("/admin/panel")
    assert panel.status_code == 200
    body = panel.get_data(as_text=True)
    assert "no figure" in body and "onerror" in body  # shown ...
    assert "<img" not in body and "<b>Sales" not in body  # ... as text
