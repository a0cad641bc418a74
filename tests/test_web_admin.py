"""Admin page: heartbeats, compactor status, rejected commands, supervisord states
(a real supervisord on its unix socket), Redis health; and its actions (users, access,
API tokens, restarting an instance): POST with CSRF, admin only, 4xx with a message on
bad input, one audit line each."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.bus import registry
from app.bus.connection import async_client
from app.bus.heartbeat import write_heartbeat
from app.web.supervisor import process_states
from fleet_testing.web import csrf_token

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
[program:bokeh_01]
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


# --- actions: POST + CSRF, admin only, 4xx with a message, one audit line each ----------------
def admin_token(client) -> str:
    return csrf_token(client.get("/admin/").data)


def post(client, path: str, token: str | None, **data):
    if token is not None:
        data["csrf_token"] = token
    return client.post(path, data=data)


ACTIONS = [
    ("/admin/users/add", {"name": "dave", "role": "viewer", "password": "dave-password"}),
    ("/admin/users/alice/roles", {"role": "controller"}),
    ("/admin/users/alice/password", {"password": "alice-new-password"}),
    ("/admin/users/alice/remove", {}),
    ("/admin/access/grant", {"dashboard": "sales", "user": "alice"}),
    ("/admin/access/revoke", {"dashboard": "sales", "role": "viewer"}),
    ("/admin/tokens/create", {"name": "feed", "dashboards": "sales", "expires": "never"}),
    ("/admin/tokens/{tok}/revoke", {}),
    ("/admin/processes/restart", {"name": "bokeh_01"}),
]


def test_admin_actions_need_the_csrf_token_and_the_admin_role(client, auth, fleet_bus, audit_lines):
    acc = fleet_bus.accounts
    registry.create_dashboard(fleet_bus.client, fleet_bus.keys, "sales")
    acc.grant_access("sales", roles=["viewer"])
    _, tok = acc.create_token("existing", ["sales"])
    before = (acc.list_users(), acc.access_rules(), acc.list_tokens())
    auth.login("root")
    for path, data in ACTIONS:
        r = post(client, path.format(tok=tok.id), None, **data)
        assert r.status_code == 400 and b"CSRF" in r.data, (path, r.status_code)
    auth.logout()
    auth.login("alice")  # a viewer, with a valid CSRF token of her own
    token = csrf_token(client.get("/").data)
    for path, data in ACTIONS:
        r = post(client, path.format(tok=tok.id), token, **data)
        assert r.status_code == 403 and b"needs the admin role" in r.data, (path, r.status_code)
    auth.logout()
    auth.login("carol")  # a controller is no admin either
    token = csrf_token(client.get("/").data)
    assert post(client, "/admin/users/alice/remove", token).status_code == 403
    assert (acc.list_users(), acc.access_rules(), acc.list_tokens()) == before
    assert audit_lines() == []
    # and no action is reachable with GET
    auth.login("root")
    for path, _ in ACTIONS:
        assert client.get(path.format(tok=tok.id)).status_code == 405


def test_admin_manages_users(client, auth, fleet_bus, audit_lines):
    from app import passwords

    acc = fleet_bus.accounts
    auth.login("root")
    token = admin_token(client)
    r = post(client, "/admin/users/add", token, name="dave", role="controller", password="dave-password")
    assert r.status_code == 303 and r.headers["Location"].endswith("/admin/#users")
    assert acc.get_user("dave").roles == ("controller",)
    assert passwords.authenticate(acc, "dave", "dave-password") is not None
    page = client.get("/admin/").get_data(as_text=True)
    assert "User dave added (controller)." in page and 'action="/admin/users/dave/remove"' in page
    # bad input: 4xx with a message, nothing changed
    for data, message in (({"name": "dave", "role": "viewer", "password": "dave-password"}, "exists"),
                          ({"name": "<b>x", "role": "viewer", "password": "long-enough"}, "invalid user name"),
                          ({"name": "eve", "role": "root", "password": "long-enough"}, "unknown role"),
                          ({"name": "eve", "role": "viewer", "password": "short"}, "at least 8"),
                          ({"role": "viewer", "password": "long-enough"}, "missing field")):
        r = post(client, "/admin/users/add", token, **data)
        assert r.status_code == 400 and message in r.get_data(as_text=True), (data, r.data[:300])
    assert "&lt;b&gt;x" in post(client, "/admin/users/add", token, name="<b>x", role="viewer",
                                password="long-enough").get_data(as_text=True)
    assert acc.get_user("eve") is None
    # roles, password, removal
    assert post(client, "/admin/users/dave/roles", token, role="viewer").status_code == 303
    assert acc.get_user("dave").roles == ("viewer",)
    assert post(client, "/admin/users/dave/password", token, password="dave-second-pw").status_code == 303
    assert passwords.authenticate(acc, "dave", "dave-password") is None
    assert passwords.authenticate(acc, "dave", "dave-second-pw") is not None
    assert post(client, "/admin/users/nobody/password", token, password="whatever-pw").status_code == 404
    assert post(client, "/admin/users/root/remove", token).status_code == 400  # not yourself
    assert post(client, "/admin/users/root/roles", token, role="viewer").status_code == 400
    assert post(client, "/admin/users/dave/remove", token).status_code == 303
    assert acc.get_user("dave") is None
    # the admin's own password from here keeps this login
    assert post(client, "/admin/users/root/password", token, password="root-new-password").status_code == 303
    assert client.get("/admin/").status_code == 200
    lines = audit_lines()
    assert [line.split("action=")[1].split()[0] for line in lines] == [
        "user.add", "user.roles", "user.password", "user.remove", "user.password"]
    assert all(line.startswith("admin=root addr=") for line in lines)
    assert "user='dave' role='controller'" in lines[0]
    assert "dave-password" not in " ".join(lines)  # never a password


def test_admin_manages_access(client, auth, fleet_bus, audit_lines):
    acc = fleet_bus.accounts
    registry.create_dashboard(fleet_bus.client, fleet_bus.keys, "sales")
    auth.login("root")
    token = admin_token(client)
    assert post(client, "/admin/access/grant", token, dashboard="sales", user="alice").status_code == 303
    assert post(client, "/admin/access/grant", token, dashboard="*", role="controller").status_code == 303
    assert acc.access_rules()["sales"].users == ("alice",) and acc.access_rules()["*"].roles == ("controller",)
    page = client.get("/admin/").get_data(as_text=True)
    assert 'name="user" value="alice"' in page  # the revoke button
    for data, message in (({"dashboard": "sales"}, "name a user or a role"),
                          ({"dashboard": "../x", "user": "alice"}, "invalid dashboard"),
                          ({"dashboard": "sales", "user": "a b"}, "invalid user name"),
                          ({"dashboard": "sales", "role": "boss"}, "unknown role")):
        r = post(client, "/admin/access/grant", token, **data)
        assert r.status_code == 400 and message in r.get_data(as_text=True), (data, r.data[:300])
    assert post(client, "/admin/access/revoke", token, dashboard="sales", user="alice").status_code == 303
    assert "sales" not in acc.access_rules()
    actions = [line.split("action=")[1].split()[0] for line in audit_lines()]
    assert actions == ["access.grant", "access.grant", "access.revoke"]


def test_admin_manages_api_tokens(client, auth, fleet_bus, audit_lines):
    acc = fleet_bus.accounts
    auth.login("root")
    token = admin_token(client)
    r = post(client, "/admin/tokens/create", token, name="<script>feed</script>", dashboards="sales, ops",
             expires="30 days")
    assert r.status_code == 201 and r.headers["Cache-Control"] == "no-store"
    body = r.get_data(as_text=True)
    secret = re.search(r'id="token-secret">([^<]+)<', body).group(1)
    tok = acc.verify_token(secret, touch=False)
    assert tok is not None and tok.dashboards == ("sales", "ops")
    assert 29 * 86400 < tok.expires - time.time() <= 30 * 86400
    assert "<script>feed" not in body and "&lt;script&gt;feed" in body
    page = client.get("/admin/").get_data(as_text=True)
    assert secret not in page  # shown once only
    assert "&lt;script&gt;feed&lt;/script&gt;" in page and "<script>feed" not in page
    for data, message in (({"name": "x", "dashboards": "../etc", "expires": "never"}, "invalid dashboard"),
                          ({"name": "x", "dashboards": "sales", "expires": "forever"}, "unknown lifetime"),
                          ({"name": "", "dashboards": "sales"}, "missing field")):
        r = post(client, "/admin/tokens/create", token, **data)
        assert r.status_code == 400 and message in r.get_data(as_text=True), (data, r.data[:300])
    assert post(client, "/admin/tokens/nothex/revoke", token).status_code == 400
    assert post(client, "/admin/tokens/0123456789ab/revoke", token).status_code == 404
    bystander_secret, _ = acc.create_token(tok.id, "sales")  # named like the revoked token's id
    assert post(client, f"/admin/tokens/{tok.id}/revoke", token).status_code == 303
    assert acc.verify_token(secret) is None
    assert acc.verify_token(bystander_secret, touch=False) is not None  # the button revokes that id only
    assert post(client, f"/admin/tokens/{tok.id}/revoke", token).status_code == 404  # once
    actions = [line.split("action=")[1].split()[0] for line in audit_lines()]
    assert actions == ["token.create", "token.revoke"]
    assert secret not in " ".join(audit_lines())


def test_admin_restarts_an_instance(client, auth, fleet_bus, supervisord, audit_lines):
    """Through the real supervisord: the instance's pid changes, the restart is in the
    event history with who did it; other programs are not restarted from here."""
    def pid(name):
        return {p["name"]: p["pid"] for p in process_states(supervisord)["processes"]}[name]

    auth.login("root")
    token = admin_token(client)
    page = client.get("/admin/").get_data(as_text=True)
    assert 'name="name" value="bokeh_01"' in page and 'name="name" value="sleeper"' not in page
    old = pid("bokeh_01")
    r = post(client, "/admin/processes/restart", token, name="bokeh_01")
    assert r.status_code == 303, r.data[:500]
    assert pid("bokeh_01") not in (old, 0)
    assert post(client, "/admin/processes/restart", token, name="sleeper").status_code == 400
    r = post(client, "/admin/processes/restart", token, name="bokeh_09")
    assert r.status_code == 404 and "no process" in r.get_data(as_text=True)
    s = client.get("/admin/status.json").get_json()
    ev = s["events"][0]
    assert ev["event"] == "ADMIN_RESTART" and ev["process"] == "bokeh_01" and ev["reason"] == "by root"
    assert ev["result"] == "restarted (RUNNING)"
    panel = client.get("/admin/panel").get_data(as_text=True)
    assert "ADMIN_RESTART" in panel and "by root" in panel
    assert [line.split("action=")[1] for line in audit_lines()] == ["process.restart process='bokeh_01'"]


def test_admin_page_is_for_people(client, auth, fleet_bus, web_settings, supervisord):
    """Times as "5 s ago" (exact time in a tooltip) and durations, not epoch floats or
    k=v dumps; viewers per dashboard from the instances' heartbeats, escaped."""
    f = fleet_bus
    registry.create_dashboard(f.client, f.keys, "sales")
    f.client.xadd(f.keys.commands("sales"), {"op": "clear", "name": "p"})
    f.client.hset(f.keys.compactor_status, mapping={"owner": "host:1", "time": time.time() - 30,
                                                    "snapshots_written": 2,
                                                    "snapshot:sales": f"1-0 {time.time() - 90:.3f} 2048"})
    viewers = {"sales": {"users": {"alice": 2, "<b>eve</b>": 1}, "more_users": 0}}

    async def beat():
        c = async_client(web_settings)
        for n in (1, 2):
            await write_heartbeat(c, f.keys, f"h:510{n}", {"sessions": 3, "healthy": True, "reason": "",
                                                          "last_ids": {"sales": "1-0"}, "viewers": viewers}, 30)
        await c.aclose()

    asyncio.run(beat())
    auth.login("root")
    s = client.get("/admin/status.json").get_json()
    assert s["viewers"]["sales"]["users"] == {"<b>eve</b>": 2, "alice": 4}
    assert s["viewers"]["sales"]["instances"] == ["h:5101", "h:5102"]
    panel = client.get("/admin/panel").get_data(as_text=True)
    assert re.search(r"alice</span>|alice ×4", panel) and "&lt;b&gt;eve&lt;/b&gt;" in panel
    assert "<b>eve" not in panel
    assert re.search(r"up \d+ (s|min)", panel)  # the sleeper's uptime
    assert "1 min 30 s ago" in panel or "1 min 31 s ago" in panel  # the snapshot's time
    assert "2.0 KiB" in panel and re.search(r'<time datetime="[0-9T:+-]+" title="[0-9: -]+[A-Z]*">', panel)
    assert not re.search(r"\b1[0-9]{9}\.[0-9]+", panel)  # no epoch floats
    assert "=<b>" not in panel and "sessions_by_dashboard" not in panel  # no k=v dumps
