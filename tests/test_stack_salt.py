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


def _deployment(states: dict) -> dict:
    """The deployment description Salt writes to var/deployment.json (state fleet-deployment)."""
    state = states["fleet-deployment"]["file"]
    return next(a["dataset"] for a in state if isinstance(a, dict) and "dataset" in a)


def _context(tmp_path: Path, desc: dict, secrets: dict = SECRETS) -> dict:
    """What `fleetctl render --deployment` computes from ``desc`` (secrets as Salt writes them)."""
    var = Path(desc["site"]) / "var"
    var.mkdir(parents=True, exist_ok=True)
    (var / "secrets.env").write_text("".join(f"{k.upper()}={v}\n" for k, v in secrets.items()))
    return render.deployment_context(desc)


def test_every_state_renders(minion):
    states = minion.call("state.show_sls", "app,redis,nginx,supervisor,roles.single")
    ids = set(states)
    assert {"fleet-venv", "fleet-secrets", "fleet-deployment", "fleet-render", "redis-package",
            "nginx-package", "fleet-nginx-check", "fleet-supervisord-running"} <= ids
    top = minion.call("state.show_top")
    assert top["base"] == ["roles.single"]


def test_salt_passes_the_pillar_on_without_secrets(minion):
    """map.jinja derives nothing: the description is the pillar minus secrets and
    Salt-only keys, plus the minion's id and roles."""
    desc = _deployment(minion.call("state.show_sls", "app"))
    assert desc["host"] == "fleet-test" and desc["roles"] == ["single"] and desc["instances"] == 3
    assert not {"secrets", "root", "venv", "systemd_unit"} & set(desc)
    assert SECRETS["redis_password"] not in json.dumps(desc)


ROLE_PILLAR = {"redis_host": "10.0.0.30", "bokeh_hosts": [
    {"id": "fleet-test", "address": "10.0.0.21", "instances": 4},
    {"id": "bokeh2", "address": "10.0.0.22", "instances": 2}]}


@pytest.mark.parametrize("role, present, absent", [
    ("web", {"nginx-package", "fleet-nginx-check", "fleet-render"}, {"redis-package"}),
    ("bokeh", {"fleet-render", "fleet-supervisord-running"}, {"nginx-package", "redis-package"}),
    ("redis", {"redis-package", "fleet-render"}, {"nginx-package"}),
])
def test_role_states_render(tmp_path, role, present, absent):
    m = Minion(tmp_path / "salt", _pillar(tmp_path, roles=[role], **ROLE_PILLAR))
    states = m.call("state.show_sls", f"roles.{role}")
    assert present <= set(states) and not (absent & set(states))
    ctx = _context(tmp_path, _deployment(states))
    if role == "web":
        assert ctx["upstream"] == [f"10.0.0.21:{5100 + n}" for n in range(1, 5)] + \
            [f"10.0.0.22:{5100 + n}" for n in range(1, 3)]
        assert ctx["programs"]["bokeh"] is False and ctx["programs"]["nginx"] is True
        assert ctx["instances"] == 0 and ctx["env"]["FLEET_INSTANCES"] == "0"
    if role == "bokeh":
        assert ctx["instances"] == 4 and ctx["env"]["FLEET_BOKEH_HOST"] == "10.0.0.21"
        assert ctx["env"]["FLEET_REDIS_URL"] == "redis://admin:salt-test-redis-password@10.0.0.30:6390/0"
        assert ctx["redis_urls"]["bokeh"] == "redis://instance:salt-test-redis-instance@10.0.0.30:6390/0"
        assert ctx["programs"] == {"redis": False, "bokeh": True, "web": False, "compactor": False,
                                   "nginx": False, "demo": False, "events": True,
                                   "redis_replica": False, "sentinel": False}
    if role == "redis":
        assert ctx["redis_bind"] == "10.0.0.30" and ctx["programs"]["redis"] is True
        assert ctx["instances"] == 0 and not ctx["programs"]["bokeh"]


def test_deployment_binds_and_trusts_the_addresses_it_names(tmp_path):
    ctx = _context(tmp_path, {"host": "w", "roles": ["web"], "site": str(tmp_path / "site"), "user": "",
                              "web_host": "10.0.0.20", "http_host": "0.0.0.0", "web_address": "dash.example",
                              "redis_host": "10.0.0.30", "redis_bind": "0.0.0.0",
                              "extra_env": {"FLEET_LOGIN_LIFETIME_SECONDS": "600"}})
    env = ctx["env"]
    assert env["FLEET_TRUSTED_PROXIES"] == "10.0.0.20,127.0.0.1,::1"  # nginx -> gunicorn
    assert env["FLEET_ALLOWED_ORIGINS"].split(",")[0] == "dash.example:8080"
    assert ctx["web_address"] == "dash.example" and env["FLEET_LOGIN_LIFETIME_SECONDS"] == "600"
    assert ctx["redis_bind"] == "0.0.0.0"


def test_deployment_with_an_external_redis_runs_none(tmp_path):
    """Pillar redis_url: every program uses it as given; no redis-server, no ACL users."""
    url = "redis://app:pw@redis.internal:6379/2"
    ctx = _context(tmp_path, {"host": "r", "roles": ["redis", "web"], "site": str(tmp_path / "site"),
                              "user": "", "redis_url": url})
    assert ctx["programs"]["redis"] is False and ctx["programs"]["web"] is True
    assert ctx["env"]["FLEET_REDIS_URL"] == url and ctx["redis_urls"] == {} and ctx["redis_users"] == {}
    written = render.render_all(ctx)
    assert "redis.conf.j2" not in written and "nginx.conf.j2" in written


@pytest.mark.parametrize("change, message", [
    ({"redis_hots": "x"}, "unknown deployment key"),
    ({"roles": ["db"]}, "roles="),
    ({"redis_node": "arbiter"}, "redis_node="),
    ({"site": ""}, "site"),
    ({"extra_env": {"PATH": "/x"}}, "not a FLEET_"),
    ({"http_port": "eighty"}, "FLEET_HTTP_PORT"),
    ({"bokeh_hosts": [{"id": "b"}]}, "bokeh_hosts"),
    ({"bokeh_hosts": [{"id": "other", "address": "10.0.0.9"}]}, "no bokeh_hosts entry"),
])
def test_bad_deployment_is_a_clear_error(tmp_path, change, message):
    desc = {"host": "b", "roles": ["bokeh"], "site": str(tmp_path / "site"), "user": "",
            "bokeh_hosts": [{"id": "b", "address": "10.0.0.21"}], **change}
    with pytest.raises(render.RenderError, match=message):
        _context(tmp_path, desc)


def test_missing_secret_is_a_clear_error(tmp_path):
    secrets = {k: v for k, v in SECRETS.items() if k != "redis_password_web"}
    with pytest.raises(render.RenderError, match="REDIS_PASSWORD_WEB is empty.*fleet:secrets:redis_password_web"):
        _context(tmp_path, {"host": "s", "site": str(tmp_path / "site"), "user": ""}, secrets)


def test_fleetctl_render_deployment_check(tmp_path):
    """--check: 1 and what would change before a render, 0 after, 1 again when a file is edited."""
    site = tmp_path / "site"
    desc = {"host": "s", "roles": ["single"], "site": str(site), "user": "", "instances": 2}
    _context(tmp_path, desc)
    (tmp_path / "deployment.json").write_text(json.dumps(desc))
    fleetctl = [str(Path(sys.prefix) / "bin" / "fleetctl"), "render", "--deployment", str(tmp_path / "deployment.json")]

    def run(*extra):
        return subprocess.run([*fleetctl, *extra], capture_output=True, text=True, cwd=tmp_path,
                              env={k: v for k, v in os.environ.items() if not k.startswith("FLEET_")})

    first = run("--check")
    assert first.returncode == 1 and f"missing {site}/var/supervisor/fleet.conf" in first.stdout
    res = run("--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["context"]["upstream"] == ["127.0.0.1:5101", "127.0.0.1:5102"]
    assert run("--check").returncode == 0
    nginx = site / "var" / "nginx" / "nginx.conf"
    nginx.write_text(nginx.read_text() + "# edited\n")
    res = run("--check")
    assert res.returncode == 1 and res.stdout.strip() == f"differs {nginx}"
    desc["instances"] = 3
    (tmp_path / "deployment.json").write_text(json.dumps(desc))
    assert run("--check").returncode == 1
    assert run().returncode == 0 and run("--check").returncode == 0
    assert "numprocs=3" in (site / "var" / "supervisor" / "fleet.conf").read_text()


def test_single_host_state_applies_in_test_mode(minion):
    result = minion.call("state.apply", "roles.single", "test=True")
    bad = {k: v["comment"] for k, v in result.items() if v["result"] is False}
    assert not bad, bad
    assert len(result) >= 10


def test_salt_renders_the_same_files_as_fleetctl_render(minion, tmp_path):
    """Apply for real into a temp site (all but starting supervisord), compare with
    `fleetctl render` of the same settings, then apply again: nothing changes."""
    exclude = 'exclude=[{"id": "fleet-supervisord-running"}]'
    result = minion.call("state.apply", "roles.single", exclude)
    bad = {k: v["comment"] for k, v in result.items() if v["result"] is False}
    assert not bad, bad
    nginx_check = next(v for k, v in result.items() if "fleet-nginx-check" in k)
    assert nginx_check["changes"]["retcode"] == 0  # nginx -t on the rendered file
    salt_var = tmp_path / "site" / "var"

    ours = tmp_path / "ours" / "var"
    ours.mkdir(parents=True)
    (ours / "secrets.env").write_text(
        "".join(f"{k.upper()}={v}\n" for k, v in SECRETS.items()))
    render.render_site(Settings(instances=3, http_port=18080, run_user=""), root=ROOT,  # pillar user ''
                       venv=Path(sys.prefix), var_dir=ours)
    for rel in ("nginx/nginx.conf", "supervisor/fleet.conf", "redis/redis.conf", "redis/users.acl",
                "prometheus/targets.json", "fleet.env"):
        a = (salt_var / rel).read_text().replace(str(salt_var), "VAR").rstrip()
        b = (ours / rel).read_text().replace(str(ours), "VAR").rstrip()
        assert a == b, rel
    assert "numprocs=3" in (salt_var / "supervisor/fleet.conf").read_text()
    again = minion.call("state.apply", "roles.single", exclude)
    changed = {k: v["changes"] for k, v in again.items() if v.get("changes")}
    assert not changed, changed
