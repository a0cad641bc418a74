"""The Salt tree: every state renders, the single-host state applies (test=True), and
Salt renders the very same supervisord/nginx/redis files as ``fleetctl render``.

Salt runs from its own venv (``salt==3008.3``; newer releases need a certifi the
registry lacks): ``deploy/test`` creates ``var/salt-venv``, and so does this module
if it is missing.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.settings import Settings
from app.stack import render

ROOT = Path(__file__).resolve().parents[1]
SALT_VENV = Path(os.environ.get("FLEET_SALT_VENV", ROOT / "var" / "salt-venv"))
SALT_VERSION = "3008.3"
SECRETS = {"secret_key": "salt-test-secret-key-0123456789abcdef",
           "flask_secret": "salt-test-flask-secret-0123456789abcdef",
           "redis_password": "salt-test-redis-password", "demo_password": "demo-pass",
           **{f"redis_password_{r}": f"salt-test-redis-{r}"
              for r in ("instance", "web", "compactor", "events", "demo")}}


def ensure_salt_venv() -> Path:
    salt_call = SALT_VENV / "bin" / "salt-call"
    if salt_call.exists():
        return salt_call
    SALT_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(SALT_VENV.parent / ".salt-venv.lock", "w") as lock:  # xdist workers wait here
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not salt_call.exists():
            subprocess.run([sys.executable, "-m", "venv", str(SALT_VENV)], check=True)
            subprocess.run([str(SALT_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                            f"salt=={SALT_VERSION}"], check=True)
    return salt_call


class Minion:
    """A masterless minion config in a temp dir, pointed at this repo's salt/ tree."""

    def __init__(self, base: Path, pillar: dict, grains: dict | None = None) -> None:
        self.base = base
        self.salt_call = ensure_salt_venv()
        (base / "pillar").mkdir(parents=True)
        (base / "pillar" / "top.sls").write_text("base:\n  '*': [fleet]\n")
        (base / "pillar" / "fleet.sls").write_text(yaml.safe_dump({"fleet": pillar}))
        config = {
            "file_client": "local", "id": "fleet-test", "root_dir": str(base / "root"),
            "file_roots": {"base": [str(ROOT / "salt")]},
            "pillar_roots": {"base": [str(base / "pillar")]},
            # the templates are written for trim_blocks/lstrip_blocks, as app/stack renders them
            "jinja_env": {"trim_blocks": True, "lstrip_blocks": True},
            "log_level_logfile": "warning",
        }
        if grains:
            config["grains"] = grains
        (base / "minion").write_text(yaml.safe_dump(config))

    def call(self, *args: str) -> dict:
        res = subprocess.run([str(self.salt_call), "--local", "-c", str(self.base), "--out=json", *args],
                             capture_output=True, text=True, timeout=240)
        assert res.returncode == 0, f"salt-call {args} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        return json.loads(res.stdout)["local"]


def _pillar(tmp_path: Path, **kw) -> dict:
    return {"root": str(ROOT), "site": str(tmp_path / "site"), "venv": sys.prefix, "user": "",
            "instances": 3, "http_port": 18080, "secrets": SECRETS,
            "systemd_unit": str(tmp_path / "site" / "fleet-supervisord.service"), **kw}


@pytest.fixture
def minion(tmp_path) -> Minion:
    return Minion(tmp_path / "salt", _pillar(tmp_path), grains={"roles": ["single"]})


def test_every_state_renders(minion):
    states = minion.call("state.show_sls", "app,redis,nginx,supervisor,roles.single")
    ids = set(states)
    assert {"fleet-venv", "fleet-secrets", "fleet-redis-conf", "fleet-nginx-conf", "fleet-nginx-check",
            "fleet-supervisor-programs", "fleet-supervisord-running"} <= ids
    top = minion.call("state.show_top")
    assert top["base"] == ["roles.single"]


@pytest.mark.parametrize("role, present, absent", [
    ("web", {"fleet-nginx-conf", "fleet-supervisor-programs"}, {"fleet-redis-conf"}),
    ("bokeh", {"fleet-supervisor-programs"}, {"fleet-nginx-conf", "fleet-redis-conf"}),
    ("redis", {"fleet-redis-conf"}, {"fleet-nginx-conf"}),
])
def test_role_states_render(tmp_path, role, present, absent):
    m = Minion(tmp_path / "salt", _pillar(tmp_path, roles=[role], redis_host="10.0.0.30", bokeh_hosts=[
        {"id": "fleet-test", "address": "10.0.0.21", "instances": 4},
        {"id": "bokeh2", "address": "10.0.0.22", "instances": 2}]))
    states = m.call("state.show_sls", f"roles.{role}")
    assert present <= set(states) and not (absent & set(states))
    if role == "web":
        ctx = next(a["context"] for a in states["fleet-nginx-conf"]["file"] if isinstance(a, dict) and "context" in a)
        assert ctx["upstream"] == [f"10.0.0.21:{5100 + n}" for n in range(1, 5)] + \
            [f"10.0.0.22:{5100 + n}" for n in range(1, 3)]
        assert ctx["programs"]["bokeh"] is False and ctx["programs"]["nginx"] is True
    if role == "bokeh":
        ctx = next(a["context"] for a in states["fleet-supervisor-programs"]["file"]
                   if isinstance(a, dict) and "context" in a)
        assert ctx["instances"] == 4 and ctx["env"]["FLEET_BOKEH_HOST"] == "10.0.0.21"
        assert ctx["env"]["FLEET_REDIS_URL"] == "redis://admin:salt-test-redis-password@10.0.0.30:6390/0"
        assert ctx["redis_urls"]["bokeh"] == "redis://instance:salt-test-redis-instance@10.0.0.30:6390/0"
        assert ctx["programs"] == {"redis": False, "bokeh": True, "web": False, "compactor": False,
                                   "nginx": False, "demo": False, "events": True}


def test_single_host_state_applies_in_test_mode(minion):
    result = minion.call("state.apply", "roles.single", "test=True")
    bad = {k: v["comment"] for k, v in result.items() if v["result"] is False}
    assert not bad, bad
    assert len(result) >= 20


def test_salt_renders_the_same_files_as_fleetctl_render(minion, tmp_path):
    """Apply for real into a temp site (all but starting supervisord), then compare."""
    result = minion.call("state.apply", "roles.single",
                         'exclude=[{"id": "fleet-supervisord-running"}]')
    bad = {k: v["comment"] for k, v in result.items() if v["result"] is False}
    assert not bad, bad
    nginx_check = next(v for k, v in result.items() if "fleet-nginx-check" in k)
    assert nginx_check["changes"]["retcode"] == 0  # nginx -t on Salt's file
    salt_var = tmp_path / "site" / "var"

    ours = tmp_path / "ours" / "var"
    ours.mkdir(parents=True)
    (ours / "secrets.env").write_text(
        "".join(f"{k.upper()}={v}\n" for k, v in SECRETS.items()))
    render.render_site(Settings(instances=3, http_port=18080, run_user=""), root=ROOT,  # pillar user ''
                       venv=Path(sys.prefix), var_dir=ours)
    for rel in ("nginx/nginx.conf", "supervisor/fleet.conf", "redis/redis.conf", "redis/users.acl"):
        a = (salt_var / rel).read_text().replace(str(salt_var), "VAR").rstrip()
        b = (ours / rel).read_text().replace(str(ours), "VAR").rstrip()
        assert a == b, rel
    assert "numprocs=3" in (salt_var / "supervisor/fleet.conf").read_text()
