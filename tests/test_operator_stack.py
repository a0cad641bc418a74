"""The operator's parts on a real stack (supervisord, nginx, gunicorn, 2 instances,
compactor, Redis), with FLEET_LOG_FORMAT=json:

* ``supervisorctl fleet status | lag | rolling-restart`` (the ctlplugin in supervisord.conf);
* every process's ``/metrics`` parsed with ``prometheus_client.parser`` and held to the
  naming conventions (base units, ``_total`` on counters, HELP texts, bounded labels);
* every expression of docs/grafana-dashboard.json names metrics a real scrape has;
* one page load's request id in nginx's, gunicorn's and the instance's logs.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet_testing.bokeh import BokehClient
from fleet_testing.helpers import until
from fleet_testing.security import SourceClient
from fleet_testing.stack import Stack
from tests.test_web_pages import autoload_src, token_of

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "viewer-password-1"


@pytest.fixture(scope="module")
def ops_stack():
    s = Stack(instances=2, log_format="json")
    try:
        s.start_healthy()
        s.fleetctl("dashboard", "create", "ops")
        s.add_user("viewer", PASSWORD, "ops")
        s.fleetctl("publish", "ops", "replace", "name=prices", "kind=line", 'data={"t":[1,2],"y":[3,4]}')
        s.fleetctl("publish", "ops", "stream", "name=prices", 'data={"t":[3],"y":[5]}')
        token = s.fleetctl("tokens", "create", "--name", "feeder", "--dashboard", "ops").stdout.strip()
        body = json.dumps({"op": "stream", "name": "prices", "data": {"t": [4], "y": [6]}}).encode()
        status, _, reply = SourceClient(s.url).request(
            "POST", "/api/v1/dashboards/ops/commands", body,
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert status == 202, reply
        yield s
    finally:
        s.stop()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        return r.read().decode()


def endpoints(stack: Stack) -> dict[str, str]:
    s = stack.settings
    out = {f"bokeh_{n:02d}": f"http://127.0.0.1:{s.bokeh_port(n)}/metrics" for n in range(1, s.instances + 1)}
    out["web"] = f"http://127.0.0.1:{s.web_port}/metrics"
    out["compactor"] = f"http://127.0.0.1:{s.compactor_metrics_port_effective}/metrics"
    return out


def page_load(stack: Stack) -> tuple[SourceClient, str]:
    c = SourceClient(stack.url)
    status, _, _ = c.login("viewer", PASSWORD)
    assert status == 302
    status, _, page = c.get("/d/ops")
    assert status == 200, page[:300]
    src = autoload_src(page)
    return c, src[src.index("/bokeh/"):]


# --- supervisorctl fleet ------------------------------------------------------------------------
def test_supervisorctl_fleet_status(ops_stack):
    c, autoload = page_load(ops_stack)
    assert c.get(autoload)[0] == 200
    # a viewer connection through nginx, as the page's BokehJS makes (autoload.js alone opens none)
    url = f"ws://127.0.0.1:{ops_stack.settings.http_port}/bokeh/dashboard/ws"
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in c.cookies.items()), "Origin": ops_stack.url}

    async def watched() -> None:
        viewer = await BokehClient(url, token_of(autoload), headers=headers).connect(timeout=20)
        try:  # the heartbeat carries the count within 2 s
            await until(lambda: _sessions_shown(ops_stack) >= 1, timeout=10, what="a session in fleet status",
                        interval=0.5)
        finally:
            await viewer.close()

    asyncio.run(watched())
    res = ops_stack.ctl("fleet", "status")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "PID", "UPTIME", "SESSIONS", "LAG", "LAST", "RESYNC", "HEALTH"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"fleet:bokeh_01", "fleet:bokeh_02"}
    pids = {name: ops_stack.pid(name) for name in rows}
    for name, row in rows.items():
        assert row[1] == "RUNNING" and int(row[2]) == pids[name]
        assert re.fullmatch(r"\d+\.\d{3}s", row[5]) and row[-1] == "ok"
        assert row[6] == "-" or row[7] == "ago"  # "12s ago": when the dashboard was loaded


def _sessions_shown(stack: Stack) -> int:
    lines = stack.ctl("fleet", "status").stdout.splitlines()[1:]
    return sum(int(line.split()[4]) for line in lines if line.startswith("fleet:bokeh_"))


def test_supervisorctl_fleet_status_reports_a_stopped_instance(ops_stack):
    ops_stack.ctl("stop", "fleet:bokeh_02", check=True)
    try:
        res = ops_stack.ctl("fleet", "status")
        assert res.returncode != 0
        row = next(line for line in res.stdout.splitlines() if line.startswith("fleet:bokeh_02"))
        assert "STOPPED" in row and "down" in row
    finally:
        ops_stack.ctl("start", "fleet:bokeh_02", check=True)
        ops_stack.wait_healthz(2)


def test_supervisorctl_fleet_lag_and_rolling_restart(ops_stack):
    deadline = time.monotonic() + 20
    while True:  # an instance restarted before writes its heartbeat (and its last_ids) every 2 s
        res = ops_stack.ctl("fleet", "lag")
        assert res.returncode == 0, res.stdout + res.stderr
        ops_rows = [r for r in (line.split() for line in res.stdout.splitlines()[1:]) if r[1] == "ops"]
        caught_up = len(ops_rows) == 2 and all(r[2] == r[3] and r[4] == "0" for r in ops_rows)
        if caught_up or time.monotonic() > deadline:  # heartbeats carry last_ids every 2 s
            break
        time.sleep(0.5)
    assert len(ops_rows) == 2 and all(r[2] == r[3] and r[4] == "0" for r in ops_rows), res.stdout
    before = {n: ops_stack.pid(n) for n in ("fleet:bokeh_01", "fleet:bokeh_02")}
    res = ops_stack.ctl("fleet", "rolling-restart", "--pause", "0.5", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.index("fleet:bokeh_01: healthy") < res.stdout.index("fleet:bokeh_02: restarting")
    after = {n: ops_stack.pid(n) for n in before}
    assert all(after[n] and after[n] != before[n] for n in before)
    assert ops_stack.ctl("fleet", "nonsense").returncode != 0


# --- metrics -----------------------------------------------------------------------------------
UNITS = ("seconds", "bytes", "ratio", "total", "info", "count", "sum", "bucket")
NOT_BASE_UNITS = re.compile(r"_(milliseconds|ms|microseconds|minutes|hours|kilobytes|megabytes|kb|mb|percent)(_|$)")
#: label -> the values it may take (bounded); labels not listed must have few values
BOUNDED = {"reason": {"token", "dashboard", "access", "request"},
           "outcome": {"success", "failure", "locked", "invalid"},
           "status": {"1xx", "2xx", "3xx", "4xx", "5xx"},
           "method": {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}}


def check_conventions(process: str, text: str) -> list[str]:
    problems = []
    families = list(text_string_to_metric_families(text))
    assert families, process
    names = {f.name for f in families}
    assert "fleet_build_info" in names, process
    assert "process_resident_memory_bytes" in names and "process_cpu_seconds" in names, (process, names)
    assert "fleet_process_resident_memory_bytes" not in names
    for fam in families:
        where = f"{process}: {fam.name}"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", fam.name):
            problems.append(f"{where}: not snake_case")
        if not (fam.name.startswith("fleet_") or fam.name.startswith(("process_", "python_"))):
            problems.append(f"{where}: not in the fleet_ namespace")
        if not fam.documentation or fam.documentation.strip() == fam.name:
            problems.append(f"{where}: no HELP text")
        if NOT_BASE_UNITS.search(fam.name):
            problems.append(f"{where}: not in a base unit (seconds, bytes)")
        if fam.type == "counter":
            if any(not s.name.endswith("_total") for s in fam.samples):
                problems.append(f"{where}: counter samples must end in _total")
        elif fam.type in ("gauge", "untyped") and fam.name.endswith("_total"):
            problems.append(f"{where}: a {fam.type} named _total")
        if fam.type == "histogram" and not fam.name.endswith("_seconds") and not fam.name.endswith("_bytes"):
            problems.append(f"{where}: histogram without a unit")
        if fam.type == "gauge" and re.search(r"(_time|_age|_lag|_duration)$", fam.name):
            problems.append(f"{where}: a time without _seconds")
        for s in fam.samples:
            for label, value in s.labels.items():
                if label in BOUNDED and label != "le" and value not in BOUNDED[label]:
                    problems.append(f"{where}: label {label}={value!r} outside its bounded set")
    return problems


def test_every_process_metrics_follow_the_conventions(ops_stack):
    c, autoload = page_load(ops_stack)
    c.get(autoload)
    SourceClient(ops_stack.url).login("viewer", "a-wrong-password")
    problems = []
    texts = {}
    for process, url in endpoints(ops_stack).items():
        texts[process] = scrape(url)
        problems += check_conventions(process, texts[process])
    assert not problems, "\n".join(problems)
    web = {s.name + json.dumps(s.labels, sort_keys=True): s.value
           for f in text_string_to_metric_families(texts["web"]) for s in f.samples}
    assert web['fleet_web_logins_total{"outcome": "failure"}'] >= 1
    assert web['fleet_web_logins_total{"outcome": "success"}'] >= 1
    assert web['fleet_api_publishes_total{"token": "feeder"}'] == 1
    assert web['fleet_api_commands_published_total{"token": "feeder"}'] == 1
    assert any(k.startswith("fleet_web_request_duration_seconds_count") and '"auth.check"' in k for k in web)
    compactor = {f.name for f in text_string_to_metric_families(texts["compactor"])}
    assert {"fleet_compactor_leader", "fleet_compactor_trimmed_entries", "fleet_compactor_snapshot_age_seconds"} \
        <= compactor
    assert any(line.startswith("fleet_compactor_leader 1") for line in texts["compactor"].splitlines())
    # the site does not serve the web app's metrics
    assert SourceClient(ops_stack.url).get("/metrics")[0] == 404
    assert SourceClient(ops_stack.url).get("//metrics")[0] == 404


def dashboard_metric_names(path: Path) -> set[str]:
    """Metric names in the PromQL of every panel (identifiers that are not functions,
    keywords or label names)."""
    doc = json.loads(path.read_text())
    words = set()
    skip = {"sum", "by", "rate", "increase", "histogram_quantile", "max", "min", "count", "on", "group_left",
            "le", "instance", "job", "dashboard", "reason", "outcome", "token", "endpoint", "status", "version",
            "bokeh", "python", "program"}
    for panel in doc["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r"\{[^}]*\}", "", target["expr"])  # label matchers
            expr = re.sub(r"\[[^]]*\]", "", expr)  # ranges
            for word in re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", expr):
                if word not in skip:
                    words.add(word)
    return words


def test_grafana_dashboard_names_only_metrics_a_real_scrape_has(ops_stack):
    scraped: set[str] = set()
    for url in endpoints(ops_stack).values():
        for fam in text_string_to_metric_families(scrape(url)):
            scraped |= {s.name for s in fam.samples}
    wanted = dashboard_metric_names(ROOT / "docs" / "grafana-dashboard.json")
    assert len(wanted) >= 20
    assert wanted <= scraped, sorted(wanted - scraped)


# --- request ids -----------------------------------------------------------------------------
def _json_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_one_page_loads_request_id_in_nginx_gunicorn_and_instance_logs(ops_stack):
    c, autoload = page_load(ops_stack)
    forged = "forged-" + secrets.token_hex(4)
    status, headers, _ = c.get(autoload, headers={"X-Request-ID": forged})
    assert status == 200
    rid = headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid) and rid != forged  # nginx's, never the client's
    logs = ops_stack.var / "log"
    deadline = time.monotonic() + 15
    while True:
        found = {name: [r for r in _json_lines(logs / f"{name}.log") if r.get("request_id") == rid]
                 for name in ("nginx", "web", "bokeh_01", "bokeh_02")}
        if found["nginx"] and found["web"] and (found["bokeh_01"] or found["bokeh_02"]):
            break
        assert time.monotonic() < deadline, {k: len(v) for k, v in found.items()}
        time.sleep(0.3)
    assert any("/bokeh/dashboard/autoload.js" in r["message"] for r in found["nginx"])
    assert any("/auth/check" in r["message"] for r in found["web"])  # nginx's auth_request, same id
    assert any("autoload.js" in r["message"] for r in found["bokeh_01"] + found["bokeh_02"])
    for name in ("web", "bokeh_01", "bokeh_02", "compactor"):  # every line of the programs is JSON
        for line in (logs / f"{name}.log").read_text(errors="replace").splitlines():
            if line.strip():
                rec = json.loads(line)
                assert {"time", "level", "logger", "message"} <= set(rec), (name, rec)
    for rec in found["nginx"] + found["web"]:
        assert forged not in json.dumps(rec)
