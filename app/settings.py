"""Every setting of the fleet, read from the environment in exactly this module.

Each field maps to one ``FLEET_*`` variable (the field name upper-cased with the
``FLEET_`` prefix).  Other modules receive a :class:`Settings` instance (usually from
:func:`load`) and never read ``os.environ`` themselves, so tests can build one with
``Settings(...)`` or ``load(env={...})`` without touching the process environment.

Secrets (``secret_key``, ``flask_secret``) have no defaults: ``deploy/run`` generates
them into ``var/secrets.env`` (never committed) and supervisord passes them on.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

PREFIX = "FLEET_"


class SettingsError(ValueError):
    """A ``FLEET_*`` variable is missing or cannot be parsed; the message names it."""


@dataclass(frozen=True)
class Settings:
    # --- Redis / command log -------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6390/0"
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

    # --- Compactor -----------------------------------------------------------------
    snapshot_every_commands: int = 1000
    snapshot_every_seconds: float = 10.0
    compactor_lock_ttl_ms: int = 10_000

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
    instance_id: str = ""  # defaults to host:port at start-up

    # --- Web (Flask under gunicorn) ------------------------------------------------
    flask_secret: str = ""
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    web_workers: int = 2
    cookie_secure: bool = False
    login_rate_limit: int = 10  # failed logins per user+address per window
    login_rate_window_seconds: int = 300
    sso_header: str = ""  # e.g. X-Remote-User; empty = trusted-header SSO off
    trusted_proxies: tuple[str, ...] = ()
    api_max_body_bytes: int = 16 * 1024 * 1024

    # --- Site / deployment -----------------------------------------------------------
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    var_dir: Path = field(default_factory=lambda: Path("var"))
    redis_port: int = 6390
    demo: bool = False

    @property
    def redis_url_redacted(self) -> str:
        """``redis_url`` with any password replaced by ``***``, for logs and messages."""
        from urllib.parse import urlsplit, urlunsplit

        u = urlsplit(self.redis_url)
        if u.password is None:
            return self.redis_url
        host = u.hostname or ""
        netloc = f"{u.username or ''}:***@{host}" + (f":{u.port}" if u.port else "")
        return urlunsplit(u._replace(netloc=netloc))

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
