"""The web app under a real gunicorn with its config file: serves, logs no query strings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from fleet_testing.ports import free_port, wait_port

ROOT = Path(__file__).resolve().parents[1]


def test_gunicorn_serves_and_logs_no_query(redis_url, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update({"FLEET_REDIS_URL": redis_url, "FLEET_FLASK_SECRET": "gunicorn-test-secret",
                "FLEET_SECRET_KEY": "gunicorn-test-bokeh-secret-0123456789", "FLEET_WEB_PORT": str(port),
                "FLEET_WEB_WORKERS": "2", "HOME": str(tmp_path),
                "FLEET_ALLOWED_HOSTS": f"127.0.0.1:{port}"})  # straight to gunicorn, no nginx
    log = tmp_path / "gunicorn.log"
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    with open(log, "wb") as out:
        proc = subprocess.Popen([gunicorn, "-c", "app/web/gunicorn_conf.py", "--no-control-socket"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_port(port, 30)
            url = f"http://127.0.0.1:{port}/auth/login?next=/d/x%3Fbokeh-token%3Dsecret-in-query"
            with urllib.request.urlopen(url, timeout=10) as r:
                assert r.status == 200 and b"csrf_token" in r.read()
            time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(20)
    text = log.read_text()
    assert '"GET /auth/login" 200' in text, text
    assert "secret-in-query" not in text
    assert not (tmp_path / ".gunicorn").exists()  # no control socket
