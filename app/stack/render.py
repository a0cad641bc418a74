"""Render every config that depends on the instance count, from one source.

:func:`build_context` turns :class:`app.settings.Settings` (``FLEET_INSTANCES`` & co.)
plus the site's secrets into a plain dict; the Jinja templates in
``app/stack/templates/`` (supervisord programs, redis) and ``nginx/`` (nginx) are
rendered from it.  Salt renders the same template files from its pillar (the salt
tree links to them), so the variable names here are a contract with ``salt/``:

``root`` (code checkout), ``venv``, ``var_dir``, ``log_dir``, ``instances``,
``port_prefix`` (instance n listens on ``<port_prefix><nn>``), ``bokeh_host``,
``upstream`` (list of ``host:port``), ``programs`` (which programs this host runs),
``env`` (the ``FLEET_*`` environment every program gets), ``redis_*``, ``http_*``,
``web_*``, ``nginx_*``, ``bokeh_static``.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import shutil
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jinja2

from app.settings import PREFIX, Settings
from app.stack.secrets import ensure_secrets

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIRS = (Path(__file__).resolve().parent / "templates", ROOT / "nginx")

#: template name -> path of the rendered file, relative to var_dir
OUTPUTS = {
    "supervisor.conf.j2": "supervisor/fleet.conf",
    "nginx.conf.j2": "nginx/nginx.conf",
    "redis.conf.j2": "redis/redis.conf",
}
NGINX_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class RenderError(ValueError):
    """The settings cannot be turned into a working stack; the message says why."""


def bokeh_static_dir() -> Path:
    """Directory that Bokeh's server serves as ``<prefix>/static/`` (BokehJS)."""
    from bokeh.util.paths import bokehjs_path  # no documents touched: just a path

    return Path(bokehjs_path())


def redis_is_managed(settings: Settings) -> bool:
    """True when the stack runs its own redis-server (FLEET_REDIS_URL not elsewhere)."""
    if settings.redis_url == Settings.redis_url:
        return True
    u = urlsplit(settings.redis_url)
    return u.scheme == "redis" and u.hostname in ("127.0.0.1", "localhost") and (
        u.port == settings.redis_port
    )


def _managed_redis_url(settings: Settings, password: str) -> str:
    u = urlsplit(settings.redis_url)
    db = u.path if u.path not in ("", "/") else "/0"
    return urlunsplit(("redis", f"default:{password}@127.0.0.1:{settings.redis_port}", db, "", ""))


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


#: settings always written into the programs' environment (even at their defaults)
ALWAYS = ("redis_url", "instances", "bokeh_port_base", "bokeh_host", "http_host", "http_port",
          "web_host", "web_port", "var_dir", "demo", "secret_key", "flask_secret",
          "allowed_origins", "key_prefix")


def effective_settings(settings: Settings, secrets: dict[str, str], var_dir: Path) -> Settings:
    """The settings the programs will run with: absolute var_dir, secrets, Redis URL."""
    changes: dict[str, Any] = {"var_dir": var_dir}
    if not settings.secret_key:
        changes["secret_key"] = secrets["SECRET_KEY"]
    if not settings.flask_secret:
        changes["flask_secret"] = secrets["FLASK_SECRET"]
    if redis_is_managed(settings) and urlsplit(settings.redis_url).password is None:
        changes["redis_url"] = _managed_redis_url(settings, secrets["REDIS_PASSWORD"])
    if settings.allowed_origins == Settings.allowed_origins:
        hosts = dict.fromkeys([settings.http_host, "127.0.0.1", "localhost"])
        changes["allowed_origins"] = tuple(
            f"{h}:{settings.http_port}" for h in hosts if h not in ("0.0.0.0", "::")
        )
    return dataclasses.replace(settings, **changes)


def program_env(s: Settings) -> dict[str, str]:
    """``FLEET_*`` variables for every program: ALWAYS + every non-default setting."""
    env: dict[str, str] = {}
    for f in dataclasses.fields(Settings):
        value = getattr(s, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if f.name in ALWAYS or value != default:
            env[PREFIX + f.name.upper()] = _env_value(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _nginx_user() -> str:
    """Worker user when nginx starts as root (Debian's www-data), else '' (no directive)."""
    if os.geteuid() != 0:
        return ""
    for name in ("www-data", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return "root"


def _maxmemory(value: str) -> str:
    """FLEET_REDIS_MAXMEMORY as redis.conf takes it (bytes, or with a kb/mb/gb unit)."""
    if not re.fullmatch(r"[0-9]{1,15}(?:[kmg]b?|b)?", value.strip().lower()):
        raise RenderError(f"FLEET_REDIS_MAXMEMORY={value!r}: use bytes or a size like 512mb or 2gb")
    return value.strip().lower()


def build_context(
    settings: Settings,
    secrets: dict[str, str],
    *,
    root: Path = ROOT,
    venv: Path | None = None,
    var_dir: Path | None = None,
) -> dict[str, Any]:
    """The template context for a single host running the whole stack."""
    n = settings.instances
    if not 1 <= n <= 99:
        raise RenderError(f"FLEET_INSTANCES={n}: use 1 to 99 Bokeh instances")
    if settings.bokeh_port_base % 100 or not 1000 <= settings.bokeh_port_base <= 65400:
        raise RenderError(
            f"FLEET_BOKEH_PORT_BASE={settings.bokeh_port_base}: must be a multiple of 100 "
            "(instance n listens on base + n, supervisord writes it as <base/100><nn>)"
        )
    var_dir = (var_dir or settings.var_dir)
    var_dir = (var_dir if var_dir.is_absolute() else (root / var_dir)).resolve()
    venv = (venv or Path(sys.prefix)).absolute()
    s = effective_settings(settings, secrets, var_dir)
    managed = redis_is_managed(settings)
    return {
        "root": str(root),
        "venv": str(venv),
        "var_dir": str(var_dir),
        "log_dir": str(var_dir / "log"),
        "run_as": "",
        "instances": n,
        "port_prefix": s.bokeh_port_base // 100,
        "bokeh_host": s.bokeh_host,
        "upstream": [f"{s.bokeh_host}:{s.bokeh_port(i)}" for i in range(1, n + 1)],
        "programs": {
            "redis": managed, "bokeh": True, "web": True, "compactor": True,
            "nginx": True, "demo": s.demo, "events": True,
        },
        "env": program_env(s),
        "redis_bin": shutil.which("redis-server") or "/usr/bin/redis-server",
        "redis_port": s.redis_port,
        "redis_bind": "127.0.0.1 -::1",
        "redis_password": secrets["REDIS_PASSWORD"] if managed else "",
        "redis_maxmemory": _maxmemory(s.redis_maxmemory),
        "http_host": s.http_host,
        "http_port": s.http_port,
        "web_host": s.web_host,
        "web_port": s.web_port,
        "nginx_bin": shutil.which("nginx") or "/usr/sbin/nginx",
        "nginx_user": _nginx_user(),
        "nginx_mime_types": "/etc/nginx/mime.types",
        "bokeh_static": str(bokeh_static_dir()),
        "bokeh_prefix": s.bokeh_prefix.rstrip("/"),
        "proxy_read_timeout": max(120, 3 * s.keep_alive_ms // 1000),
        "client_max_body_size": s.api_max_body_bytes,
        "log_maxbytes": "20MB",
        "log_backups": 5,
    }


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in TEMPLATE_DIRS]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_text(template: str, ctx: dict[str, Any]) -> str:
    return environment().get_template(template).render(**ctx)


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def shell_env(env: dict[str, str]) -> str:
    """``env`` as a sourceable file (``set -a; . var/fleet.env; set +a``)."""
    import shlex

    lines = ["# Rendered by fleetctl render: the environment of every fleet program."]
    lines += [f"{k}={shlex.quote(v)}" for k, v in env.items()]
    return "\n".join(lines) + "\n"


def prepare_dirs(ctx: dict[str, Any]) -> None:
    """Create var/ sub-directories; nginx temp dirs belong to its worker user."""
    var = Path(ctx["var_dir"])
    var.mkdir(parents=True, exist_ok=True)
    os.chmod(var, 0o711)  # workers may traverse to their temp dirs, not list secrets
    for sub in ("log", "run", "redis/data", "supervisor", "nginx"):
        (var / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(var / "run", 0o700)
    os.chmod(var / "redis", 0o700)
    user = ctx["nginx_user"]
    for name in NGINX_TEMP_DIRS:
        d = var / "nginx" / "tmp" / name
        d.mkdir(parents=True, exist_ok=True)
        if user and os.geteuid() == 0:
            pw = pwd.getpwnam(user)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chown(d.parent, pw.pw_uid, pw.pw_gid)


def render_all(ctx: dict[str, Any]) -> dict[str, Path]:
    """Render every template into ``ctx['var_dir']``; return template -> written path."""
    prepare_dirs(ctx)
    var = Path(ctx["var_dir"])
    written: dict[str, Path] = {}
    for template, rel in OUTPUTS.items():
        if template == "redis.conf.j2" and not ctx["programs"]["redis"]:
            continue
        path = var / rel
        # supervisor and redis configs carry secrets: owner only
        _write(path, render_text(template, ctx), 0o600 if template != "nginx.conf.j2" else 0o644)
        written[template] = path
    env_path = var / "fleet.env"
    _write(env_path, shell_env(ctx["env"]), 0o600)
    written["fleet.env"] = env_path
    return written


def render_site(
    settings: Settings,
    *,
    root: Path = ROOT,
    venv: Path | None = None,
    var_dir: Path | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Generate secrets if needed and render every config of a single-host stack."""
    vd = var_dir or settings.var_dir
    vd = vd if vd.is_absolute() else root / vd
    secrets = ensure_secrets(vd / "secrets.env")
    ctx = build_context(settings, secrets, root=root, venv=venv, var_dir=vd)
    return ctx, render_all(ctx)
