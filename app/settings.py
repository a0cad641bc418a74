"""Every setting of the fleet, read from the environment in exactly this module.

Each field maps to one ``FLEET_*`` variable (the field name upper-cased with the
``FLEET_`` prefix).  Other modules receive a :class:`Settings` instance (usually from
:func:`load`) and never read ``os.environ`` themselves, so tests can build one with
``Settings(...)`` or ``load(env={...})`` without touching the process environment.

Secrets (``secret_key``, ``flask_secret``) have no defaults: ``deploy/run`` generates
them into ``var/secrets.env`` (never committed) and supervisord passes them on.

``fleetctl`` in an operator's shell has no such environment: :func:`operator_environ`
finds the *site* (``--site DIR``, ``FLEET_SITE_DIR``, or the current directory or a
parent holding ``var/fleet.env``) and lays the environment over the site's env files.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

PREFIX = "FLEET_"
#: fleetctl's site directory (holds var/fleet.env); deploy/lib.sh reads the same variable
SITE_DIR_VAR = "FLEET_SITE_DIR"
#: the file ``fleetctl render`` (and Salt) writes with every program's FLEET_* environment
SITE_ENV_FILE = Path("var") / "fleet.env"


class SettingsError(ValueError):
    """A ``FLEET_*`` variable is missing or cannot be parsed; the message names it."""


#: FLEET_REDIS_DURABILITY values, weakest first
DURABILITY_MODES = ("everysec", "always", "replica")


@dataclass(frozen=True)
class Settings:
    # --- Redis / command log -------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6390/0"
    # Redis HA: with sentinels set (host:port,...), every client asks them for the
    # master named redis_master (the user/password/db still come from redis_url, its
    # host:port is ignored) and follows a failover by itself.
    redis_sentinels: tuple[str, ...] = ()
    redis_master: str = "fleet"
    redis_sentinel_password: str = ""  # the sentinels' own requirepass ('' = none)
    # What an acknowledged publish guarantees: "everysec" (in Redis's memory, on disk
    # within ~1 s), "always" (Redis runs appendfsync always: on disk before the reply),
    # "replica" (WAIT: on at least one replica before the reply, else the publish fails).
    redis_durability: str = "everysec"
    redis_wait_ms: int = 1000  # how long a "replica" publish waits for a replica's ack
    # deploy/run: "single" (one redis-server) or "sentinel" (master + replica + 3
    # sentinels on loopback: ports redis_port, redis_port+1, redis_port+20000..20002).
    redis_mode: str = "single"
    key_prefix: str = "fleet"
    # XREAD BLOCK window; the socket timeout is derived from it (redis-py 8 pitfall).
    block_ms: int = 1000
    # Limits on one command entry (validation).
    max_command_bytes: int = 16 * 1024 * 1024
    max_rows_per_command: int = 100_000
    max_figure_rows: int = 1_000_000
    max_figures: int = 64
    max_columns: int = 64
    # Idempotency: how many recent command ids each dashboard remembers.
    idempotency_window: int = 10_000
    # Rejected-commands stream keeps about this many entries per dashboard.
    rejected_maxlen: int = 10_000
    # Per-dashboard budget enforced by the fold: cells held (rows x columns summed over
    # every figure; a model figure counts its leaf values).  5M float cells ~ 40 MB per
    # copy (each instance and the compactor hold one).  0 = no budget.
    max_dashboard_cells: int = 5_000_000
    # Line/step/area/scatter figures longer than this are shown reduced (min-max to the
    # plot's pixels; zoom detail per viewer over HTTP: app/instance/series.py); 0 = never.
    reduce_above_rows: int = 50_000

    # --- Compactor -----------------------------------------------------------------
    snapshot_every_commands: int = 1000
    snapshot_every_seconds: float = 10.0
    compactor_lock_ttl_ms: int = 10_000
    # The compactor's /metrics port, on web_host (the compactor runs beside the web app;
    # FLEET_METRICS_ALLOW applies); 0 = bokeh_port_base (5100: the number below
    # instance 01, which no instance uses).
    compactor_metrics_port: int = 0

    # --- Bokeh instances -----------------------------------------------------------
    instances: int = 2
    bokeh_host: str = "127.0.0.1"
    bokeh_port_base: int = 5100  # instance N listens on bokeh_port_base + N (51%02d)
    bokeh_prefix: str = "/bokeh"
    secret_key: str = ""  # Bokeh session signing secret, shared with Flask
    session_token_expiration: int = 300
    unused_session_lifetime_ms: int = 15_000
    check_unused_sessions_ms: int = 5_000
    keep_alive_ms: int = 37_000
    allowed_origins: tuple[str, ...] = ("127.0.0.1:8080", "localhost:8080")
    heartbeat_seconds: float = 2.0
    # Peers (addresses/CIDRs) besides loopback and the instance's own host that may read
    # an instance's /metrics and /healthz: the Prometheus server(s) on another host.
    # Empty = local peers only; others get 403.  Checked on the TCP peer, never headers.
    metrics_allow: tuple[str, ...] = ()
    instance_id: str = ""  # defaults to host:port at start-up
    # Page status mark: each instance tells its pages how fresh their data is, checking
    # every page_status_seconds; data older than page_quiet_seconds shows as "quiet"
    # (amber: the controller said nothing lately), an instance not caught up as "stale".
    page_status_seconds: float = 1.0
    page_quiet_seconds: float = 60.0
    # Viewer connections (app/instance/sessions.py): one whose unsent bytes pass
    # viewer_buffer_bytes is closed (its page reconnects and pulls the current state),
    # so a slow viewer never slows the others.  PULL-DOC replies are served from a
    # serialisation of the dashboard's document at most pull_cache_seconds old
    # (refreshed in a worker thread), followed by the updates made since.
    viewer_buffer_bytes: int = 4 * 1024 * 1024
    pull_cache_seconds: float = 10.0
    # The event listener restarts a RUNNING instance whose /healthz has failed for this
    # many seconds (0 = never), at most once per instance per backoff window.
    health_restart_seconds: float = 30.0
    health_restart_backoff_seconds: float = 600.0

    # --- Web (Flask under gunicorn) ------------------------------------------------
    flask_secret: str = ""
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    web_workers: int = 2
    cookie_secure: bool = False
    login_rate_limit: int = 10  # failed logins per user+address per window
    login_rate_window_seconds: int = 300
    login_max_lock_seconds: int = 24 * 3600  # backoff doubles each lock-out, up to this
    sso_header: str = ""  # e.g. X-Remote-User; empty = trusted-header SSO off
    # Addresses/CIDRs of the authenticating (SSO) proxy in front of nginx: nginx passes
    # the SSO header on only from these peers and strips every client-supplied copy.
    sso_proxies: tuple[str, ...] = ()
    # Other proxies in front of nginx (load balancers) whose X-Forwarded-For nginx
    # believes for the client address (the SSO proxies are believed too).
    front_proxies: tuple[str, ...] = ()
    # TCP peers of gunicorn whose X-Forwarded-For/-Proto and SSO header the web app
    # believes: nginx, which reaches gunicorn over loopback (gunicorn binds loopback).
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    # Host headers the web app answers (host or host:port); empty = the hosts of
    # allowed_origins.  Anything else gets 400, so no foreign host reaches a URL.
    allowed_hosts: tuple[str, ...] = ()
    # Origins (scheme://host[:port]) whose pages may embed dashboards with
    # /embed/<name>.js, or frame /frame/<name> in an iframe (CSP frame-ancestors);
    # empty = no cross-origin embedding.
    embed_origins: tuple[str, ...] = ()
    # A web login ends after this long without a request from the browser; an open
    # dashboard page renews it while its websocket is connected (wall displays stay
    # logged in for weeks).  Also the lifetime of the session cookie.
    login_lifetime_seconds: int = 12 * 3600
    api_max_body_bytes: int = 16 * 1024 * 1024
    # Publish requests (POST .../commands) per second per API token (token bucket in
    # Redis, shared by every worker), and the burst allowed; 0 = no limit.
    api_publish_rate: float = 20.0
    api_publish_burst: int = 40
    # Bytes of publish bodies per second per token (bursts up to FLEET_API_MAX_BODY_BYTES):
    # what a token can add to the command streams before the compactor trims them.
    api_publish_bytes_per_second: int = 4 * 1024 * 1024
    # Seconds between each instance's re-check of the users of its live sessions against
    # the account store (revoked access, removed user, changed roles close the session).
    access_recheck_seconds: float = 2.0

    # --- Site / deployment -----------------------------------------------------------
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    var_dir: Path = field(default_factory=lambda: Path("var"))
    redis_port: int = 6390
    # maxmemory of the managed redis-server (policy noeviction: writes fail loudly when
    # full, nothing is evicted); the admin page and /metrics alarm above the ratio.
    redis_maxmemory: str = "2gb"
    redis_memory_alarm_ratio: float = 0.8
    demo: bool = False
    # Unprivileged user the programs (and nginx workers) run as when the stack is
    # started as root; created (system, nologin) if missing.  Unused when not root.
    run_user: str = "fleet"

    # --- Logs ------------------------------------------------------------------------
    # "text" (one readable line) or "json" (one JSON object per line: time, level,
    # logger, message, request_id when known), for every program and nginx.
    log_format: str = "text"

    # --- fleetctl --------------------------------------------------------------------
    # Print the traceback behind an error message (like ``fleetctl --debug``).
    debug: bool = False

    def __post_init__(self) -> None:
        if self.redis_durability not in DURABILITY_MODES:
            raise SettingsError(f"FLEET_REDIS_DURABILITY={self.redis_durability!r}: use one of "
                                f"{', '.join(DURABILITY_MODES)}")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"FLEET_LOG_FORMAT={self.log_format!r}: use text or json")
        if self.redis_mode not in ("single", "sentinel"):
            raise SettingsError(f"FLEET_REDIS_MODE={self.redis_mode!r}: use single or sentinel")
        for hp in self.redis_sentinels:
            host, _, port = hp.rpartition(":")
            if not host or not port.isdigit():
                raise SettingsError(f"FLEET_REDIS_SENTINELS: {hp!r} is not host:port")

    @property
    def redis_url_redacted(self) -> str:
        """``redis_url`` with any password replaced by ``***``, for logs and messages."""
        from urllib.parse import urlsplit, urlunsplit

        u = urlsplit(self.redis_url)
        via = (f" (master {self.redis_master!r} via sentinels {','.join(self.redis_sentinels)})"
               if self.redis_sentinels else "")
        if u.password is None:
            return self.redis_url + via
        host = u.hostname or ""
        netloc = f"{u.username or ''}:***@{host}" + (f":{u.port}" if u.port else "")
        return urlunsplit(u._replace(netloc=netloc)) + via

    @property
    def compactor_metrics_port_effective(self) -> int:
        """Where the compactor serves /metrics (FLEET_COMPACTOR_METRICS_PORT, else bokeh_port_base)."""
        return self.compactor_metrics_port or self.bokeh_port_base

    def bokeh_port(self, n: int) -> int:
        """Port of instance number ``n`` (1-based, as supervisord numbers them)."""
        return self.bokeh_port_base + n

    def require_secrets(self, *names: str) -> None:
        """Fail with a clear message if any of the named secret fields is empty."""
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            vars_ = ", ".join(PREFIX + n.upper() for n in missing)
            raise SettingsError(
                f"{vars_} not set: run ./deploy/run once (it generates var/secrets.env) "
                f"or export the variable(s)"
            )


def _parse(name: str, raw: str, typ: Any) -> Any:
    env = PREFIX + name.upper()
    try:
        if typ is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        if typ is int:
            return int(raw)
        if typ is float:
            return float(raw)
        if typ is Path:
            return Path(raw)
        if typ == tuple[str, ...]:
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        return raw
    except ValueError as exc:
        raise SettingsError(f"{env}: {exc}") from None


def load(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from ``env`` (default ``os.environ``), then apply ``overrides``."""
    env = os.environ if env is None else env
    hints = get_type_hints(Settings)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = env.get(PREFIX + f.name.upper())
        if raw is not None:
            values[f.name] = _parse(f.name, raw, hints[f.name])
    values.update(overrides)
    return Settings(**values)


# --- fleetctl: the site's settings --------------------------------------------------------
def site_env_files(site: Path) -> list[Path]:
    """The env files fleetctl's operator commands read at ``site``; later files win.

    The one place to plug in other credentials, e.g. an admin Redis URL kept in a
    separate ``var/admin.env`` (then: ``[site / SITE_ENV_FILE, site / "var/admin.env"]``).
    """
    return [site / SITE_ENV_FILE]


def find_site(start: Path | None = None, env: Mapping[str, str] | None = None,
              site: str | Path | None = None) -> Path | None:
    """The site fleetctl works on: ``site`` (``--site``), else ``$FLEET_SITE_DIR``, else
    ``start`` (default: the current directory) or its nearest parent holding
    ``var/fleet.env``; None when there is none (settings from the environment only)."""
    env = os.environ if env is None else env
    chosen = site if site is not None else env.get(SITE_DIR_VAR) or None
    if chosen is not None:
        path = Path(chosen).expanduser().resolve()
        if not (path / SITE_ENV_FILE).is_file():
            how = "--site" if site is not None else SITE_DIR_VAR
            raise SettingsError(f"{how} {chosen}: no {path / SITE_ENV_FILE} there "
                                "(run ./deploy/run in that checkout first, or fix the path)")
        return path
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / SITE_ENV_FILE).is_file():
            return d
    return None


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines, values shell-quoted as ``fleetctl render`` writes them."""
    try:
        text = path.read_text()
    except OSError as exc:
        why = exc.strerror or str(exc)
        hint = ": run fleetctl as the user who started the stack" if isinstance(exc, PermissionError) else ""
        raise SettingsError(f"cannot read {path}: {why}{hint}") from None
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, raw = line.removeprefix("export ").partition("=")
        try:
            if not sep or not name.strip().isidentifier():
                raise ValueError("not NAME=value")
            out[name.strip()] = " ".join(shlex.split(raw))
        except ValueError as exc:
            raise SettingsError(f"{path}, line {n}: {exc}") from None
    return out


@dataclass(frozen=True)
class OperatorEnv:
    """fleetctl's environment: what :func:`load` gets, and where each value came from."""

    site: Path | None
    files: tuple[Path, ...]  # env files read, in order (later won over earlier)
    environ: dict[str, str]
    origin: dict[str, str]  # FLEET_* name -> "$FLEET_..." (environment) or the file that set it

    def source(self, name: str) -> str:
        """Where setting ``name`` (a field, e.g. ``redis_url``) came from, for messages:
        ``$FLEET_...``, a file's path or ``the default``."""
        return self.origin.get(PREFIX + name.upper(), "the default")


def operator_environ(site: Path | None, env: Mapping[str, str] | None = None) -> OperatorEnv:
    """``env`` (default ``os.environ``) laid over the site's env files: explicit
    variables win.  ``site`` None: the environment alone."""
    env = os.environ if env is None else env
    merged: dict[str, str] = {}
    origin: dict[str, str] = {}
    files = [p for p in site_env_files(site) if p.is_file()] if site is not None else []
    for path in files:
        values = read_env_file(path)
        merged.update(values)
        origin.update(dict.fromkeys(values, str(path)))
    merged.update(env)
    origin.update({k: f"${k}" for k in env if k.startswith(PREFIX)})
    return OperatorEnv(site, tuple(files), merged, origin)
