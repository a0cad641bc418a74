"""Redis key names of the fleet, in one place.

Per-dashboard keys carry the dashboard in a hash tag (``fleet:{sales}:commands``) so
that a Redis Cluster keeps all keys of one dashboard in one slot and per-dashboard
ACLs can be written as key patterns.  This module is pure: it imports no Redis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DASHBOARD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def check_dashboard_name(name: str) -> str:
    """Return ``name`` if it is a valid dashboard name, else raise ``ValueError``."""
    if not isinstance(name, str) or not DASHBOARD_RE.match(name):
        raise ValueError(
            f"invalid dashboard name {name!r}: use 1-64 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class Keys:
    prefix: str = "fleet"

    # --- per dashboard ---------------------------------------------------------------
    def commands(self, dashboard: str) -> str:
        """The command stream controllers XADD to."""
        return f"{self.prefix}:{{{dashboard}}}:commands"

    def rejected(self, dashboard: str) -> str:
        """Stream of rejected entries: original fields + ``_id`` + ``_reason``."""
        return f"{self.prefix}:{{{dashboard}}}:rejected"

    def applied(self, dashboard: str) -> str:
        """String: the last command id an instance's reader folded (rejected or not)."""
        return f"{self.prefix}:{{{dashboard}}}:applied"

    def snapshot(self, dashboard: str) -> str:
        """JSON snapshot written by the compactor: state, last id, epoch."""
        return f"{self.prefix}:{{{dashboard}}}:snapshot"

    def dashboard_from_commands(self, key: str) -> str | None:
        head = f"{self.prefix}:{{"
        tail = "}:commands"
        if key.startswith(head) and key.endswith(tail):
            return key[len(head) : -len(tail)]
        return None

    # --- global ------------------------------------------------------------------------
    @property
    def dashboards(self) -> str:
        """Hash: dashboard name -> JSON metadata (title, created)."""
        return f"{self.prefix}:dashboards"

    @property
    def registry_events(self) -> str:
        """Stream that wakes readers when a dashboard is created or deleted."""
        return f"{self.prefix}:registry"

    @property
    def epoch(self) -> str:
        """Random string set once per Redis data set; a change means history was lost."""
        return f"{self.prefix}:epoch"

    @property
    def compactor_lock(self) -> str:
        return f"{self.prefix}:compactor:lock"

    @property
    def compactor_status(self) -> str:
        """Hash the leading compactor updates (owner, last snapshot per dashboard)."""
        return f"{self.prefix}:compactor:status"

    def heartbeat(self, instance_id: str) -> str:
        """Instance heartbeat (JSON string with TTL)."""
        return f"{self.prefix}:instance:{instance_id}"

    @property
    def heartbeat_pattern(self) -> str:
        return f"{self.prefix}:instance:*"

    # --- accounts (app/bus/accounts.py, app/bus/access.py, app/bus/ratelimit.py) --------
    @property
    def users(self) -> str:
        """Hash: username -> JSON {password (hash), roles, gen, created}."""
        return f"{self.prefix}:users"

    @property
    def access(self) -> str:
        """Hash: dashboard (or ``*``) -> JSON {users, roles}: who may view it."""
        return f"{self.prefix}:access"

    @property
    def tokens(self) -> str:
        """Hash: sha256(API token) hex -> JSON record (the token itself is never stored)."""
        return f"{self.prefix}:tokens"

    @property
    def tokens_used(self) -> str:
        """Hash: sha256(API token) hex -> last-used unix time."""
        return f"{self.prefix}:tokens:used"

    def websession(self, digest: str) -> str:
        """String (user name) with the login's lifetime as TTL; ``digest`` = sha256 of the id."""
        return f"{self.prefix}:websession:{digest}"

    def ratelimit(self, bucket: str) -> str:
        """Fixed-window counter; ``...:lock`` and ``...:strikes`` beside it."""
        return f"{self.prefix}:ratelimit:{bucket}"

    @property
    def process_events(self) -> str:
        """Stream of supervisord process state changes (event listener)."""
        return f"{self.prefix}:supervisor:events"
