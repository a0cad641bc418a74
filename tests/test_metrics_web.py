"""The web app's /metrics under a real gunicorn (multiprocess mode: counts of every
worker add up, a dead worker's counts stay), JSON logs with nginx's request id, and
who may scrape (the TCP peer, never a header)."""

from __future__ import annotations

import http.cookiejar
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from app.metrics.web import MetricsEndpoint
from fleet_testing.ports import free_port, wait_port
from fleet_testing.web import csrf_token

ROOT = Path(__file__).resolve().parents[1]


def samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}"
                            if s.labels else "")
            out[key] = s.value
    return out


def start_gunicorn(redis_url: str, tmp_path: Path, port: int, **extra: str) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "PROMETHEUS_"))}
    env.update({"FLEET_REDIS_URL": redis_url, "FLEET_FLASK_SECRET": "gunicorn-test-secret",
                "FLEET_SECRET_KEY": "gunicorn-test-bokeh-secret-0123456789", "FLEET_WEB_PORT": str(port),
                "FLEET_WEB_WORKERS": "2", "HOME": str(tmp_path), "FLEET_VAR_DIR": str(tmp_path / "var"),
                "FLEET_ALLOWED_HOSTS": f"127.0.0.1:{port}", **extra})
    log = tmp_path / "gunicorn.log"
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    with open(log, "wb") as out:
        proc = subprocess.Popen([gunicorn, "-c", "app/web/gunicorn_conf.py", "--no-control-socket"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_port(port, 30)
    return proc, log


def get(url: str, headers: dict | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_gunicorn_metrics_add_up_over_workers_and_json_logs(redis_url, tmp_path):
    port = free_port()
    stale = tmp_path / "var" / "web-metrics"
    stale.mkdir(parents=True)
    (stale / "counter_999999.db").write_bytes(b"old run")  # wiped at start
    proc, log = start_gunicorn(redis_url, tmp_path, port, FLEET_LOG_FORMAT="json")
    base = f"http://127.0.0.1:{port}"
    try:
        assert not (stale / "counter_999999.db").exists()
        for i in range(20):
            assert get(f"{base}/auth/login", {"X-Request-ID": f"rid-{i:04d}"})[0] == 200
        # one failed login (with its CSRF token), counted once whichever worker had it
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        html = opener.open(f"{base}/auth/login", timeout=10).read()
        form = urllib.parse.urlencode({"username": "nobody", "password": "wrong-password",
                                       "csrf_token": csrf_token(html)}).encode()
        try:
            opener.open(urllib.request.Request(f"{base}/auth/login", data=form), timeout=10)
        except urllib.error.HTTPError as e:
            assert e.code == 401
        status, text = get(f"{base}/metrics")
        assert status == 200
        m = samples(text)
        count = sum(v for k, v in m.items()
                    if k.startswith("fleet_web_request_duration_seconds_count") and 'endpoint="auth.login"' in k)
        assert count == 22, count  # 20 + the page and the POST of the failed login
        assert m['fleet_web_logins_total{outcome="failure"}'] == 1
        assert m['fleet_web_logins_total{outcome="success"}'] == 0
        assert m["fleet_web_workers"] == 2
        assert m["process_resident_memory_bytes"] > 10 * 2**20  # master + 2 workers
        assert any(k.startswith("fleet_build_info{") and 'program="web"' in k for k in m)
        # a worker that dies: its counts stay in the totals (child_exit merges them)
        workers = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        os.kill(workers[0], 9)
        time.sleep(2)
        after = samples(get(f"{base}/metrics")[1])
        assert sum(v for k, v in after.items() if k.startswith("fleet_web_request_duration_seconds_count")
                   and 'endpoint="auth.login"' in k) == 22
        assert after['fleet_web_logins_total{outcome="failure"}'] == 1
    finally:
        proc.terminate()
        proc.wait(20)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(rec) for rec in lines)
    access = [rec for rec in lines if rec["logger"] == "gunicorn.access"]
    assert {rec.get("request_id") for rec in access} >= {f"rid-{i:04d}" for i in range(20)}
    assert any('"GET /auth/login" 200' in rec["message"] for rec in access)


def test_metrics_peer_is_checked_on_the_socket_not_headers():
    def app(environ, start_response):  # noqa: ANN001
        start_response("200 OK", [])
        return [b"app"]

    mw = MetricsEndpoint(app, ("192.0.2.0/24",))
    seen = {}

    def start_response(status, headers):  # noqa: ANN001
        seen["status"] = status

    env = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "REMOTE_ADDR": "198.51.100.7",
           "HTTP_X_FORWARDED_FOR": "127.0.0.1", "HTTP_X_REAL_IP": "127.0.0.1"}
    assert b"forbidden" in b"".join(mw(env, start_response)) and seen["status"].startswith("403")
    mw(dict(env, REMOTE_ADDR="192.0.2.9"), start_response)
    assert seen["status"].startswith("200")
    mw(dict(env, REMOTE_ADDR="127.0.0.1", REQUEST_METHOD="POST"), start_response)
    assert seen["status"].startswith("405")
    assert mw(dict(env, PATH_INFO="/other"), start_response) == [b"app"]
