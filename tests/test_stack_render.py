"""Configs rendered from one instance count: supervisord programs, nginx, redis, secrets."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from app.settings import Settings, load
from app.stack import names, render
from app.stack.secrets import read_env_file

ROOT = Path(__file__).resolve().parents[1]
NGINX = "/usr/sbin/nginx"


def _render(tmp_path: Path, **kw) -> tuple[dict, dict]:
    s = Settings(var_dir=tmp_path / "var", **kw)
    return render.render_site(s, root=ROOT, var_dir=tmp_path / "var")


def _supervisor_options(tmp_path: Path) -> ServerOptions:
    """Parse the top-level supervisord.conf (+ include) exactly as supervisord does."""
    conf = tmp_path / "supervisord.conf"
    conf.write_text((ROOT / "supervisord.conf").read_text())
    opts = ServerOptions()
    opts.realize(args=["-c", str(conf)])
    return opts


def _processes(opts: ServerOptions) -> dict[str, object]:
    out = {}
    for group in opts.process_group_configs:
        for p in group.process_configs:
            out[f"{group.name}:{p.name}" if group.name != p.name else p.name] = p
    return out


@pytest.mark.parametrize("instances", [1, 2, 5])
def test_instance_count_drives_supervisor_and_nginx(tmp_path, instances):
    ctx, written = _render(tmp_path, instances=instances)
    opts = _supervisor_options(tmp_path)
    procs = _processes(opts)
    bokeh = sorted(n for n in procs if n.startswith("fleet:bokeh_"))
    assert bokeh == [names.instance_process(i) for i in range(1, instances + 1)]
    for i in range(1, instances + 1):
        p = procs[names.instance_process(i)]
        assert p.command.endswith(f"fleetctl instance --port {5100 + i}")
        assert p.stopasgroup and p.killasgroup and p.autorestart
        assert p.environment["FLEET_INSTANCES"] == str(instances)
        assert p.stdout_logfile.endswith(f"log/{names.instance_name(i)}.log")
    assert {"fleet:redis", "fleet:web", "fleet:compactor", "fleet:nginx", "fleet_events"} <= set(procs)
    assert "fleet:demo" not in procs
    web = procs["fleet:web"]
    assert "--no-control-socket" in web.command and "app/web/gunicorn_conf.py" in web.command
    nginx = (tmp_path / "var/nginx/nginx.conf").read_text()
    for i in range(1, instances + 1):
        assert f"server 127.0.0.1:{5100 + i} " in nginx
    assert nginx.count("max_fails=1") == instances
    assert "hash $cookie_fleet_route consistent;" in nginx
    assert "daemon off;" in nginx


def test_supervisord_conf_socket_logs_and_group(tmp_path):
    _render(tmp_path, demo=True)
    opts = _supervisor_options(tmp_path)
    unix = opts.server_configs[0]
    assert unix["family"] == __import__("socket").AF_UNIX
    # as root the programs' user (FLEET_RUN_USER) gets the socket through its group
    assert unix["chmod"] == (0o770 if os.geteuid() == 0 else 0o700)
    assert opts.umask == 0o027  # log files are not world-readable
    assert unix["file"] == str(tmp_path / "var/supervisor.sock")
    assert opts.logfile == str(tmp_path / "var/log/supervisord.log")
    procs = _processes(opts)
    assert "fleet:demo" in procs
    for name, p in procs.items():
        log = p.stdout_logfile if name != "fleet_events" else p.stderr_logfile
        assert log.startswith(str(tmp_path / "var/log/")), name
        if name != "fleet_events":
            assert p.stdout_logfile_maxbytes > 0 and p.stdout_logfile_backups > 0
    assert procs["fleet:redis"].priority < procs["fleet:bokeh_01"].priority < procs["fleet:nginx"].priority


def test_nginx_config_is_valid(tmp_path):
    ctx, written = _render(tmp_path, instances=3)
    conf = written["nginx.conf.j2"]
    res = subprocess.run([NGINX, "-t", "-e", "stderr", "-p", str(conf.parent) + "/", "-c", str(conf)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = conf.read_text()
    # websocket upgrade, auth for /bokeh/, static from the installed bokeh, next upstream
    assert "map $http_upgrade $connection_upgrade" in text
    assert "auth_request /_fleet_auth;" in text
    assert "proxy_pass http://fleet_web/auth/check;" in text
    assert f"alias {render.bokeh_static_dir()}/;" in text
    assert (render.bokeh_static_dir() / "js" / "bokeh.min.js").exists()
    assert "proxy_next_upstream error timeout" in text
    assert "large_client_header_buffers" in text
    assert "X-Content-Type-Options" in text and "Referrer-Policy" in text
    # the access log never records query strings (tokens)
    fmt = text[text.index("log_format"):text.index("access_log")]
    assert "$request " not in fmt and "$request_uri" not in fmt and "$args" not in fmt
    assert "$uri" in fmt and "$http_referer" not in fmt


def test_secrets_generated_once_and_private(tmp_path):
    _render(tmp_path)
    path = tmp_path / "var/secrets.env"
    first = read_env_file(path)
    assert set(first) >= {"SECRET_KEY", "FLASK_SECRET", "REDIS_PASSWORD", "DEMO_PASSWORD"}
    assert all(len(v) >= 12 for v in first.values())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    _render(tmp_path)
    assert read_env_file(path) == first  # stable: sessions and passwords survive re-runs
    for rel in ("supervisor/fleet.conf", "redis/redis.conf", "fleet.env"):
        assert stat.S_IMODE((tmp_path / "var" / rel).stat().st_mode) == 0o600, rel
    assert first["SECRET_KEY"] in (tmp_path / "var/supervisor/fleet.conf").read_text()
    assert "aclfile " in (tmp_path / "var/redis/redis.conf").read_text()
    acl = (tmp_path / "var/redis/users.acl").read_text()
    assert first["REDIS_PASSWORD"] not in acl and "user default off" in acl
    assert stat.S_IMODE((tmp_path / "var/redis/users.acl").stat().st_mode) == 0o600


def test_program_env_round_trips_through_settings(tmp_path):
    ctx, _ = _render(tmp_path, instances=4, http_port=9090, demo=True)
    s = load(env=ctx["env"])
    assert s.instances == 4 and s.http_port == 9090 and s.demo is True
    assert s.var_dir == tmp_path / "var"
    assert s.redis_url.startswith("redis://admin:") and s.redis_url.endswith("@127.0.0.1:6390/0")
    assert s.secret_key and s.flask_secret
    assert "127.0.0.1:9090" in s.allowed_origins
    env_file = read_env_file(tmp_path / "var/fleet.env")
    assert env_file["FLEET_INSTANCES"] == "4"


def test_external_redis_means_no_redis_program(tmp_path):
    ctx, written = _render(tmp_path, redis_url="redis://redis.internal:6379/2")
    assert "redis.conf.j2" not in written
    assert ctx["env"]["FLEET_REDIS_URL"] == "redis://redis.internal:6379/2"
    procs = _processes(_supervisor_options(tmp_path))
    assert "fleet:redis" not in procs and "fleet:bokeh_01" in procs


@pytest.mark.parametrize("kw", [{"instances": 0}, {"instances": 100}, {"bokeh_port_base": 5150}])
def test_bad_settings_are_refused(tmp_path, kw):
    with pytest.raises(render.RenderError):
        _render(tmp_path, **kw)


def test_fleetctl_render_cli(tmp_path):
    env = {**os.environ, "FLEET_INSTANCES": "3", "FLEET_VAR_DIR": str(tmp_path / "v")}
    res = subprocess.run([sys.prefix + "/bin/fleetctl", "render"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "bokeh_%(process_num)02d" in (tmp_path / "v/supervisor/fleet.conf").read_text()
    assert "numprocs=3" in (tmp_path / "v/supervisor/fleet.conf").read_text()
    env["FLEET_INSTANCES"] = "0"
    res = subprocess.run([sys.prefix + "/bin/fleetctl", "render"], env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "FLEET_INSTANCES" in res.stderr


def test_all_interfaces_allow_the_machine_names(tmp_path):
    """FLEET_HTTP_HOST=0.0.0.0: deploy/run prints http://$(hostname -f):port, so that
    name must be an allowed origin (and so an allowed Host), not a 400."""
    import socket

    from app.settings import Settings
    from app.stack.render import effective_settings

    s = effective_settings(Settings(http_host="0.0.0.0", http_port=8123), {
        "SECRET_KEY": "k", "FLASK_SECRET": "f", "REDIS_PASSWORD": "p"}, tmp_path)
    assert f"{socket.getfqdn()}:8123" in s.allowed_origins
    assert f"{socket.gethostname()}:8123" in s.allowed_origins
    assert "127.0.0.1:8123" in s.allowed_origins
    assert not any(o.startswith("0.0.0.0") for o in s.allowed_origins)
