"""Render every config that depends on the instance count, from one source.

:func:`build_context` turns :class:`app.settings.Settings` (``FLEET_INSTANCES`` & co.)
plus the site's secrets into a plain dict; the Jinja templates in
``app/stack/templates/`` (supervisord programs, redis) and ``nginx/`` (nginx) are
rendered from it.  Salt runs this module too (``fleetctl render --deployment``): its
pillar becomes settings plus a :class:`app.stack.topology.Topology` (this host's roles,
the other hosts' addresses), so every value is computed here, for one host or many.
The variable names are a contract with the templates:

``root`` (code checkout), ``venv``, ``var_dir``, ``log_dir``, ``instances``,
``port_prefix`` (instance n listens on ``<port_prefix><nn>``), ``bokeh_host``,
``upstream`` (list of ``host:port``), ``programs`` (which programs this host runs),
``env`` (the ``FLEET_*`` environment every program gets), ``redis_*``, ``http_*``,
``web_*``, ``nginx_*``, ``bokeh_static``, ``run_as`` (unprivileged user of the
programs and nginx workers, '' = supervisord's own user), ``key_prefix``,
``redis_users`` (ACL user -> sha256 of its password), ``redis_urls`` (program ->
its own Redis URL), ``redis_acl_keep`` (runtime ACL lines kept: controllers),
``web_address`` (where other hosts reach nginx: the site's address in the
Prometheus target list).  Bind addresses are never assumed: ``bokeh_host``,
``web_host``, ``http_host`` and ``redis_bind`` are what the processes listen on, and
every URL a program gets names the address it must connect to;
``compactor_metrics_port`` (its /metrics, on ``web_host``), ``log_format``
(FLEET_LOG_FORMAT: text|json, nginx's access log too),
``redis_ha`` (FLEET_REDIS_MODE=sentinel on the stack's own Redis, see :func:`_ha_context`;
absent or empty = one Redis) and ``redis_appendfsync``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jinja2

from app.settings import PREFIX, Settings
from app.stack.secrets import ensure_secrets, read_env_file
from app.stack.topology import DeploymentError, Topology, load_deployment

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIRS = (Path(__file__).resolve().parent / "templates", ROOT / "nginx")

#: template name -> path of the rendered file, relative to var_dir
OUTPUTS = {
    "supervisor.conf.j2": "supervisor/fleet.conf",
    "nginx.conf.j2": "nginx/nginx.conf",
    "redis.conf.j2": "redis/redis.conf",
    "redis.acl.j2": "redis/users.acl",
}
#: the Prometheus file_sd target list (``fleetctl render --prometheus``), relative to var_dir
PROMETHEUS_TEMPLATE = "prometheus.json.j2"
PROMETHEUS_OUTPUT = "prometheus/targets.json"
#: program -> its Redis ACL user (managed Redis only; rules in templates/redis.acl.j2)
REDIS_ROLES = {"bokeh": "instance", "web": "web", "compactor": "compactor",
               "events": "events", "demo": "demo"}
#: ACL users created at run time (``fleetctl controllers add``), kept across renders
RUNTIME_ACL_PREFIX = "ctl-"
REDIS_ADMIN_USER = "admin"
#: ACL users of the data nodes that only FLEET_REDIS_MODE=sentinel needs (replication, sentinels)
REDIS_HA_USERS = ("replica", "sentinel")
#: FLEET_REDIS_MODE=sentinel: ports relative to FLEET_REDIS_PORT
REPLICA_PORT_OFFSET = 1
SENTINEL_PORT_OFFSET = 20000
SENTINELS = 3
NGINX_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
WILDCARDS = ("", "0.0.0.0", "::")
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class RenderError(ValueError):
    """The settings cannot be turned into a working stack; the message says why."""


def bokeh_static_dir() -> Path:
    """Directory that Bokeh's server serves as ``<prefix>/static/`` (BokehJS)."""
    from bokeh.util.paths import bokehjs_path  # no documents touched: just a path

    return Path(bokehjs_path())


def _bokeh_static_in(venv: Path) -> Path:
    """BokehJS of ``venv`` (the programs' venv may be another copy than the renderer's)."""
    static = bokeh_static_dir()
    try:
        return venv / static.relative_to(Path(sys.prefix))
    except ValueError:
        return static


def redis_is_managed(settings: Settings) -> bool:
    """True when the stack runs its own redis-server (FLEET_REDIS_URL not elsewhere)."""
    if settings.redis_url == Settings.redis_url:
        return True
    u = urlsplit(settings.redis_url)
    return u.scheme == "redis" and u.hostname in ("127.0.0.1", "localhost") and (
        u.port == settings.redis_port
    )


def _managed_redis_url(settings: Settings, password: str, user: str = REDIS_ADMIN_USER,
                       host: str = "127.0.0.1") -> str:
    u = urlsplit(settings.redis_url)
    db = u.path if u.path not in ("", "/") else "/0"
    return urlunsplit(("redis", f"{user}:{password}@{host}:{settings.redis_port}", db, "", ""))


def _managed(settings: Settings, t: Topology | None) -> bool:
    return redis_is_managed(settings) if t is None else t.redis_managed


def _redis_host(t: Topology | None) -> str:
    """Where the programs reach the stack's own Redis: loopback on one host."""
    return "127.0.0.1" if t is None or t.single else t.redis_host


def secret(secrets: dict[str, str], name: str) -> str:
    """``secrets[name]``, or a clear error when the site's secrets.env lacks it."""
    value = secrets.get(name, "")
    if not value:
        raise RenderError(f"secret {name} is empty: set it in var/secrets.env "
                          f"(Salt: pillar fleet:secrets:{name.lower()})")
    return value


def sentinel_ports(settings: Settings) -> list[int]:
    """Loopback ports of the local sentinels (FLEET_REDIS_MODE=sentinel)."""
    return [settings.redis_port + SENTINEL_PORT_OFFSET + i for i in range(SENTINELS)]


def _ha_context(settings: Settings, secrets: dict[str, str]) -> dict[str, Any]:
    """Master + replica + sentinels on loopback for the stack's own Redis (or {})."""
    if settings.redis_mode != "sentinel" or not redis_is_managed(settings):
        return {}
    return {
        "master_name": settings.redis_master,
        "master_host": "127.0.0.1",
        "master_port": settings.redis_port,
        "replica_port": settings.redis_port + REPLICA_PORT_OFFSET,
        "sentinel_ports": sentinel_ports(settings),
        "quorum": 2,
        "down_after_ms": 5000,
        "failover_timeout_ms": 60000,
        "replica_password": secrets["REDIS_PASSWORD_REPLICA"],
        "sentinel_user_password": secrets["REDIS_PASSWORD_SENTINEL"],
        "sentinel_password": secrets["SENTINEL_PASSWORD"],
        # FLEET_REDIS_DURABILITY=replica: the master refuses writes without a live replica
        "min_replicas": 1 if settings.redis_durability == "replica" else 0,
    }


def _deployed_ha_context(settings: Settings, secrets: dict[str, str], t: Topology) -> dict[str, Any]:
    """Sentinel over several hosts (the pillar's redis_ha): this host is the master, a
    replica or a sentinel (``t.redis_node``), on ``t.sentinel_port``."""
    ha = dict(t.redis_ha)
    return {
        **ha,
        "sentinel_ports": [t.sentinel_port],
        "replica_password": secret(secrets, "REDIS_PASSWORD_REPLICA"),
        "sentinel_user_password": secret(secrets, "REDIS_PASSWORD_SENTINEL"),
        "sentinel_password": secret(secrets, "SENTINEL_PASSWORD"),
        "min_replicas": 1 if settings.redis_durability == "replica" else 0,
    }


def role_password_name(role: str) -> str:
    """secrets.env name of a Redis ACL user's password (``admin`` -> REDIS_PASSWORD)."""
    return "REDIS_PASSWORD" if role == REDIS_ADMIN_USER else f"REDIS_PASSWORD_{role.upper()}"


def acl_hash(password: str) -> str:
    """What a Redis ACL file stores instead of the password (``#<sha256 hex>``)."""
    return hashlib.sha256(password.encode()).hexdigest()


def kept_acl_lines(aclfile: Path) -> list[str]:
    """The ``user ctl-...`` lines of an existing ACL file (controllers added at run time)."""
    try:
        text = aclfile.read_text()
    except OSError:
        return []
    return [line.strip() for line in text.splitlines()
            if line.startswith(f"user {RUNTIME_ACL_PREFIX}")]


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


#: settings only `fleetctl render` uses (not the programs' business)
DEPLOY_ONLY = ("run_user",)


def effective_settings(settings: Settings, secrets: dict[str, str], var_dir: Path,
                       topology: Topology | None = None) -> Settings:
    """The settings the programs will run with: absolute var_dir, secrets, Redis URL
    (on ``topology``'s Redis host), sentinels, allowed origins and trusted proxies."""
    t = topology
    changes: dict[str, Any] = {"var_dir": var_dir}
    if not settings.secret_key:
        changes["secret_key"] = secret(secrets, "SECRET_KEY")
    if not settings.flask_secret:
        changes["flask_secret"] = secret(secrets, "FLASK_SECRET")
    managed = _managed(settings, t)
    if managed and urlsplit(settings.redis_url).password is None:
        changes["redis_url"] = _managed_redis_url(settings, secret(secrets, "REDIS_PASSWORD"),
                                                  host=_redis_host(t))
    if t is not None and t.redis_ha:
        changes["redis_sentinels"] = tuple(t.redis_ha["sentinels"])
        changes["redis_master"] = t.redis_ha["master_name"]
        changes["redis_sentinel_password"] = secret(secrets, "SENTINEL_PASSWORD")
    elif managed and settings.redis_mode == "sentinel":
        changes["redis_sentinels"] = tuple(f"127.0.0.1:{p}" for p in sentinel_ports(settings))
        changes["redis_sentinel_password"] = secret(secrets, "SENTINEL_PASSWORD")
    if settings.trusted_proxies == Settings.trusted_proxies and settings.web_host not in (
            *LOOPBACK_HOSTS, *WILDCARDS):
        # gunicorn binds an address nginx (on this host) connects from: believe it
        changes["trusted_proxies"] = (settings.web_host, "127.0.0.1", "::1")
    if settings.allowed_origins == Settings.allowed_origins:
        names = [t.web_address if t is not None and t.web_address else settings.http_host,
                 "127.0.0.1", "localhost"]
        if names[0] in ("0.0.0.0", "::"):
            # reachable by the machine's own names too: deploy/run prints `hostname -f`
            import socket

            names += [socket.getfqdn(), socket.gethostname()]
        hosts = dict.fromkeys(n for n in names if n)
        changes["allowed_origins"] = tuple(
            f"{h}:{settings.http_port}" for h in hosts if h not in ("0.0.0.0", "::")
        )
    return dataclasses.replace(settings, **changes)


def program_env(s: Settings) -> dict[str, str]:
    """``FLEET_*`` variables for every program: ALWAYS + every non-default setting."""
    env: dict[str, str] = {}
    for f in dataclasses.fields(Settings):
        value = getattr(s, f.name)
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:  # every Settings field has a default (Settings() is valid)
            raise TypeError(f"Settings.{f.name} has no default")
        if f.name in DEPLOY_ONLY:
            continue
        if f.name in ALWAYS or value != default:
            env[PREFIX + f.name.upper()] = _env_value(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_user(settings: Settings) -> str:
    """The user the programs run as: FLEET_RUN_USER when started as root, else '' (as is)."""
    if os.geteuid() != 0 or settings.run_user in ("", "root"):
        return ""
    return settings.run_user


def _nginx_user(run_as: str = "") -> str:
    """Worker user when nginx starts as root (the programs' user, else Debian's www-data),
    else '' (no directive: the workers run as whoever started nginx)."""
    if os.geteuid() != 0:
        return ""
    if run_as:
        return run_as
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
    topology: Topology | None = None,
) -> dict[str, Any]:
    """The template context of one host: the whole stack, or (``topology``, Salt's
    pillar) this host's roles, with the other hosts' addresses."""
    t = topology
    n = settings.instances
    bokeh = t is None or t.runs("bokeh")
    if not (1 <= n <= 99 if bokeh else n == 0):
        raise RenderError(f"FLEET_INSTANCES={n}: use 1 to 99 Bokeh instances"
                          + ("" if bokeh else " (0 on a host without the bokeh role)"))
    if settings.bokeh_port_base % 100 or not 1000 <= settings.bokeh_port_base <= 65400:
        raise RenderError(
            f"FLEET_BOKEH_PORT_BASE={settings.bokeh_port_base}: must be a multiple of 100 "
            "(instance n listens on base + n, supervisord writes it as <base/100><nn>)"
        )
    var_dir = (var_dir or settings.var_dir)
    var_dir = (var_dir if var_dir.is_absolute() else (root / var_dir)).resolve()
    venv = (venv or Path(sys.prefix)).absolute()
    s = effective_settings(settings, secrets, var_dir, t)
    managed = _managed(settings, t)
    ha = _deployed_ha_context(settings, secrets, t) if t is not None and t.redis_ha else \
        _ha_context(settings, secrets)
    run_as = run_user(settings)
    redis_users: dict[str, str] = {}
    redis_urls: dict[str, str] = {}
    if managed:
        for role in (REDIS_ADMIN_USER, *REDIS_ROLES.values()):
            redis_users[role] = acl_hash(secret(secrets, role_password_name(role)))
        if ha:
            for role in REDIS_HA_USERS:
                redis_users[role] = acl_hash(secret(secrets, role_password_name(role)))
        for program, role in REDIS_ROLES.items():
            redis_urls[program] = _managed_redis_url(settings, secret(secrets, role_password_name(role)),
                                                     role, _redis_host(t))
    extra: dict[str, Any] = {}
    if t is None:
        programs = {"redis": managed, "bokeh": True, "web": True, "compactor": True, "nginx": True,
                    "demo": s.demo, "events": True, "redis_replica": bool(ha), "sentinel": bool(ha)}
    else:
        node = t.redis_node if ha else "master"
        web = t.runs("web")
        programs = {"redis": t.runs("redis") and managed and node != "sentinel", "bokeh": bokeh,
                    "web": web, "compactor": web, "nginx": web, "demo": web and s.demo, "events": True,
                    "redis_replica": False, "sentinel": t.runs("redis") and bool(ha) and node == "sentinel"}
        if programs["redis"] and node == "replica":
            extra["redis_replicaof"] = f"{ha['master_host']} {ha['master_port']}"
    if t is None or t.single:
        upstream = [f"{s.bokeh_host}:{s.bokeh_port(i)}" for i in range(1, n + 1)]
    else:  # every Bokeh host's instances (nginx, Prometheus)
        upstream = [f"{h.address}:{s.bokeh_port(i)}" for h in t.bokeh_hosts for i in range(1, h.instances + 1)]
    return {
        "root": str(root),
        "venv": str(venv),
        "var_dir": str(var_dir),
        "log_dir": str(var_dir / "log"),
        "run_as": run_as,
        "instances": n,
        "port_prefix": s.bokeh_port_base // 100,
        "bokeh_host": s.bokeh_host,
        "upstream": upstream,
        "programs": programs,
        "redis_ha": ha,
        "redis_appendfsync": "always" if s.redis_durability == "always" else "everysec",
        "env": program_env(s),
        "redis_bin": shutil.which("redis-server") or "/usr/bin/redis-server",
        "redis_port": s.redis_port,
        "redis_bind": "127.0.0.1 -::1" if t is None else t.redis_bind,
        "redis_password": secret(secrets, "REDIS_PASSWORD") if managed else "",
        "key_prefix": s.key_prefix,
        "redis_users": redis_users,
        "redis_urls": redis_urls,
        "redis_acl_keep": kept_acl_lines(var_dir / "redis" / "users.acl"),
        "redis_maxmemory": _maxmemory(s.redis_maxmemory),
        "http_host": s.http_host,
        "http_port": s.http_port,
        "web_host": s.web_host,
        "web_port": s.web_port,
        "compactor_metrics_port": s.compactor_metrics_port_effective,
        "nginx_bin": shutil.which("nginx") or "/usr/sbin/nginx",
        "nginx_user": _nginx_user(run_as),
        "nginx_mime_types": "/etc/nginx/mime.types",
        "bokeh_static": str(_bokeh_static_in(venv)),
        "bokeh_prefix": s.bokeh_prefix.rstrip("/"),
        "proxy_read_timeout": max(120, 3 * s.keep_alive_ms // 1000),
        "client_max_body_size": s.api_max_body_bytes,
        "log_format": s.log_format,
        "log_maxbytes": "20MB",
        "log_backups": 5,
        "web_address": t.web_address if t is not None and t.web_address else _web_address(s),
        **_proxy_context(s),
        **extra,
    }


def _web_address(s: Settings) -> str:
    """Where other hosts (Prometheus, browsers) reach nginx: its bind address, or the
    machine's name when nginx listens on every address."""
    if s.http_host not in WILDCARDS:
        return s.http_host
    import socket

    return socket.getfqdn()


def prometheus_targets(ctx: dict[str, Any]) -> str:
    """The Prometheus file_sd target list (JSON) of every Bokeh instance in ``ctx``'s
    upstream (scrape ``/metrics``) and of the site (``fleet_role="web"``: for a
    blackbox probe, it has no /metrics).  Salt renders the same template."""
    return render_text(PROMETHEUS_TEMPLATE, ctx)


def _proxy_context(s: Settings) -> dict[str, Any]:
    """nginx's SSO header and front-proxy addresses (see app/web/proxy.py)."""
    from app.web.proxy import nginx_header_var, nginx_networks

    try:
        return {
            "sso_header": s.sso_header,
            "sso_header_var": nginx_header_var(s.sso_header) if s.sso_header else "",
            "sso_proxies": nginx_networks(s.sso_proxies),
            "real_ip_from": nginx_networks(s.front_proxies, s.sso_proxies),
        }
    except ValueError as exc:
        raise RenderError(f"FLEET_SSO_HEADER/FLEET_SSO_PROXIES/FLEET_FRONT_PROXIES: {exc}") from None


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


def ensure_system_user(name: str) -> None:
    """Create system user ``name`` (nologin, no home) unless it exists; needs root."""
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    try:
        subprocess.run([useradd, "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        raise RenderError(f"cannot create the system user {name!r} (FLEET_RUN_USER): {detail}") from None


def _as_user_ok(user: str, *test: str) -> bool:
    """``test <args>`` run as ``user`` (what that user can really do, ACLs included)."""
    return subprocess.run(["test", *test], user=user, group=pwd.getpwnam(user).pw_gid,
                          extra_groups=[], check=False).returncode == 0


def _setfacl(*args: str) -> None:
    exe = shutil.which("setfacl")
    if not exe:
        raise RenderError("setfacl not found: install the Debian package 'acl' (deploy/run does)")
    res = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if res.returncode:
        raise RenderError(f"setfacl {' '.join(args)}: {res.stderr.strip()}")


def grant_access(user: str, trees: list[Path], skip: tuple[Path, ...] = (),
                 traverse: tuple[Path, ...] = (), *, dry_run: bool = False) -> list[str]:
    """Let ``user`` reach and read ``trees`` (checkout, venv, the Python prefix, BokehJS).

    Only what it lacks, as POSIX ACL entries, never by opening modes to everyone:
    ``u:USER:x`` on each ancestor directory it cannot traverse (e.g. /root, 0700) and,
    when a tree itself is unreadable to it, ``u:USER:rX`` on that tree (``skip``: the
    site's var/, whose secrets stay with their owner; ``traverse``: directories it
    only needs to reach).  Returns what was changed (``dry_run``: what would be;
    Salt's ``unless`` check, so a second apply changes nothing).
    """
    setfacl = (lambda *a: None) if dry_run else _setfacl
    changed: list[str] = []
    for tree in [*trees, *traverse]:
        tree = tree.absolute()
        for d in [*reversed(tree.parents), tree]:
            if d.is_dir() and not _as_user_ok(user, "-x", str(d)):
                setfacl("-m", f"u:{user}:x", str(d))
                changed.append(f"u:{user}:x {d}")
        if tree in traverse:
            continue
        probe = tree if not tree.is_dir() else next(
            (c for c in sorted(tree.iterdir()) if c.is_file()), tree)
        if _as_user_ok(user, "-r", str(probe)) and _as_user_ok(user, "-r", str(tree)):
            continue
        tops = [tree] if not tree.is_dir() else [c for c in tree.iterdir()
                                                  if c.resolve() not in skip and c.name != ".git"]
        setfacl("-m", f"u:{user}:rX", str(tree))
        for top in tops:
            setfacl("-R", "-m", f"u:{user}:rX", str(top))
        changed.append(f"u:{user}:rX -R {tree}")
    return changed


def prepare_dirs(ctx: dict[str, Any]) -> None:
    """Create var/ sub-directories; nginx temp dirs belong to its worker user, Redis's
    data to the programs' user (``run_as``), who is created and given access when
    the stack is started as root."""
    var = Path(ctx["var_dir"])
    var.mkdir(parents=True, exist_ok=True)
    os.chmod(var, 0o711)  # workers may traverse to their temp dirs, not list secrets
    for sub in ("log", "run", "redis/data", "supervisor", "nginx"):
        (var / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(var / "run", 0o700)
    os.chmod(var / "redis", 0o700)
    os.chmod(var / "log", 0o750)  # logs: supervisord (root) writes them 0640 (umask 027)
    # supervisord opens its own log before applying its umask: create it private, and
    # take world access away from logs that earlier versions wrote 0644
    fd = os.open(var / "log" / "supervisord.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.close(fd)
    for f in (var / "log").iterdir():
        if f.is_file() and not f.is_symlink():
            os.chmod(f, stat.S_IMODE(f.stat().st_mode) & 0o770)
    user = ctx["nginx_user"]
    root = os.geteuid() == 0
    if root and ctx["run_as"]:
        ensure_system_user(ctx["run_as"])
    for name in NGINX_TEMP_DIRS:
        d = var / "nginx" / "tmp" / name
        d.mkdir(parents=True, exist_ok=True)
        if user and root:
            pw = pwd.getpwnam(user)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chown(d.parent, pw.pw_uid, pw.pw_gid)
    # the web app's prometheus_client multiprocess files (gunicorn empties it at start)
    (var / "web-metrics").mkdir(mode=0o700, exist_ok=True)
    if root and ctx["run_as"]:
        pw = pwd.getpwnam(ctx["run_as"])
        os.chown(var / "web-metrics", pw.pw_uid, pw.pw_gid)
        for d in (var / "redis", var / "redis" / "data", *(var / "redis" / "data").rglob("*")):
            os.chown(d, pw.pw_uid, pw.pw_gid)


def grant_run_user(ctx: dict[str, Any], *, dry_run: bool = False) -> list[str]:
    """As root: give ``run_as`` (and nginx's workers) the access the programs need
    (``fleetctl render --grant`` does only this, for Salt's hosts)."""
    if os.geteuid() != 0 or not ctx["run_as"]:
        return []
    trees = [Path(ctx["root"]), Path(ctx["venv"]), Path(sys.base_prefix), Path(ctx["bokeh_static"])]
    var = Path(ctx["var_dir"])
    # var/ itself is 0711 (traverse only), but its ancestors may not be traversable
    return grant_access(ctx["run_as"], trees, skip=(var.resolve(),), traverse=(var.absolute(),),
                        dry_run=dry_run)


@dataclasses.dataclass(frozen=True)
class Planned:
    """One file a render writes: ``overwrite`` False = only when missing (a sentinel
    rewrites its own config); ``run_as_owns``: redis-server (as ``run_as``) owns it."""

    key: str
    path: Path
    text: str
    mode: int
    overwrite: bool = True
    run_as_owns: bool = False


def planned_files(ctx: dict[str, Any]) -> list[Planned]:
    """Every file this host's context renders into ``ctx['var_dir']``, in memory."""
    var = Path(ctx["var_dir"])
    out: list[Planned] = []
    for template, rel in OUTPUTS.items():
        if template.startswith("redis.") and not ctx["programs"]["redis"]:
            continue
        if template == "nginx.conf.j2" and not ctx["programs"]["nginx"]:
            continue
        text = render_text(template, ctx)
        if template == "redis.acl.j2":
            text += "".join(line + "\n" for line in ctx["redis_acl_keep"])
        # supervisor and redis configs carry secrets: owner only
        out.append(Planned(template, var / rel, text, 0o600 if template != "nginx.conf.j2" else 0o644,
                           run_as_owns=template.startswith("redis.")))
    ha: dict[str, Any] = ctx.get("redis_ha") or {}
    if ctx["programs"].get("redis_replica"):
        replica_ctx = dict(ctx, redis_port=ha["replica_port"], redis_data_dir=str(var / "redis" / "replica-data"),
                           redis_replicaof=f"127.0.0.1 {ha['master_port']}")
        out.append(Planned("redis-replica.conf", var / "redis" / "redis-replica.conf",
                           render_text("redis.conf.j2", replica_ctx), 0o600, run_as_owns=True))
    if ctx["programs"].get("sentinel"):
        for i, port in enumerate(ha["sentinel_ports"], 1):
            d = var / "redis" / f"sentinel-{i}"
            text = render_text("sentinel.conf.j2", dict(ctx, sentinel_port=port, sentinel_dir=str(d)))
            out.append(Planned(f"sentinel-{i}/sentinel.conf", d / "sentinel.conf", text, 0o600,
                               overwrite=False, run_as_owns=True))
    if ctx["programs"]["nginx"]:  # Prometheus file_sd: every instance of every Bokeh host
        out.append(Planned("prometheus", var / PROMETHEUS_OUTPUT, prometheus_targets(ctx), 0o644))
    out.append(Planned("fleet.env", var / "fleet.env", shell_env(ctx["env"]), 0o600))
    return out


def _run_as_pw(ctx: dict[str, Any]) -> pwd.struct_passwd | None:
    return pwd.getpwnam(ctx["run_as"]) if ctx["run_as"] and os.geteuid() == 0 else None


def render_all(ctx: dict[str, Any]) -> dict[str, Path]:
    """Render every template into ``ctx['var_dir']``; return template -> written path.

    A sentinel rewrites its own file (who is master now, the others it met): it is
    written only when missing, so a render after a failover does not undo it."""
    prepare_dirs(ctx)
    pw = _run_as_pw(ctx)
    written: dict[str, Path] = {}
    for f in planned_files(ctx):
        f.path.parent.mkdir(parents=True, exist_ok=True)
        if f.overwrite or not f.path.exists():
            _write(f.path, f.text, f.mode)
        if f.run_as_owns and pw:
            for p in (f.path, f.path.parent):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        written[f.key] = f.path
    if ctx["programs"].get("redis_replica"):
        d = Path(ctx["var_dir"]) / "redis" / "replica-data"
        d.mkdir(parents=True, exist_ok=True)
        if pw:
            os.chown(d, pw.pw_uid, pw.pw_gid)
    grant_run_user(ctx)
    return written


def check_rendered(ctx: dict[str, Any]) -> list[str]:
    """What a :func:`render_all` of ``ctx`` would change (nothing: ``[]``): files
    missing or different, modes, owners, directories, the programs' user's access.
    Salt's ``unless``, so a second apply changes nothing."""
    problems: list[str] = []
    pw = _run_as_pw(ctx)
    for f in planned_files(ctx):
        try:
            st = f.path.stat()
            text = f.path.read_text()
        except OSError:
            problems.append(f"missing {f.path}")
            continue
        if f.overwrite and text != f.text:
            problems.append(f"differs {f.path}")
        if stat.S_IMODE(st.st_mode) != f.mode and f.overwrite:
            problems.append(f"mode {stat.S_IMODE(st.st_mode):o} {f.path}")
        if f.run_as_owns and pw and st.st_uid != pw.pw_uid:
            problems.append(f"owner {f.path}")
    var = Path(ctx["var_dir"])
    dirs = ["log", "run", "redis/data", "supervisor", "web-metrics",
            *(f"nginx/tmp/{d}" for d in NGINX_TEMP_DIRS)]
    problems += [f"missing {var / d}/" for d in dirs if not (var / d).is_dir()]
    if ctx["run_as"] and os.geteuid() == 0:
        try:
            pwd.getpwnam(ctx["run_as"])
        except KeyError:
            return [*problems, f"missing user {ctx['run_as']}"]
    return problems + grant_run_user(ctx, dry_run=True)


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


def deployment_context(desc: dict[str, Any], *, root: Path = ROOT, venv: Path | None = None) -> dict[str, Any]:
    """The context of the host that a deployment description (Salt's pillar, see
    app/stack/topology.py) names; its secrets come from its var/secrets.env as they
    are (Salt writes them from the pillar: nothing is generated)."""
    try:
        settings, topology, var_dir = load_deployment(desc)
    except DeploymentError as exc:
        raise RenderError(f"deployment: {exc}") from None
    secrets = read_env_file(var_dir / "secrets.env")
    return build_context(settings, secrets, root=root, venv=venv, var_dir=var_dir, topology=topology)
