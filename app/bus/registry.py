"""The dashboards registry: which dashboards exist (sync helpers).

A hash ``fleet:dashboards`` maps name -> JSON metadata; every change is also XADDed
to ``fleet:registry`` so running readers, which XREAD that stream beside the command
streams, pick a new dashboard up at once, without restart or polling.
"""

from __future__ import annotations

import json
import time

import redis

from app.bus.keys import Keys, check_dashboard_name


class UnknownDashboard(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no dashboard {name!r} (create it with: fleetctl dashboard create {name})")
        self.name = name


def create_dashboard(client: redis.Redis, keys: Keys, name: str, title: str = "") -> bool:
    """Register ``name``; returns False if it already existed (metadata untouched)."""
    check_dashboard_name(name)
    meta = json.dumps({"title": title or name, "created": time.time()})
    if not client.hsetnx(keys.dashboards, name, meta):
        return False
    client.xadd(keys.registry_events, {"event": "created", "dashboard": name}, maxlen=1000, approximate=True)
    return True


def delete_dashboard(client: redis.Redis, keys: Keys, name: str) -> bool:
    """Unregister ``name`` and delete its streams and snapshot."""
    if not client.hdel(keys.dashboards, name):
        return False
    client.delete(keys.commands(name), keys.snapshot(name), keys.rejected(name), keys.applied(name))
    client.xadd(keys.registry_events, {"event": "deleted", "dashboard": name}, maxlen=1000, approximate=True)
    return True


def list_dashboards(client: redis.Redis, keys: Keys) -> dict[str, dict]:
    raw = client.hgetall(keys.dashboards)
    return {k.decode(): json.loads(v) for k, v in sorted(raw.items())}


def dashboard_exists(client: redis.Redis, keys: Keys, name: str) -> bool:
    return bool(client.hexists(keys.dashboards, name))


def require_dashboard(client: redis.Redis, keys: Keys, name: str) -> None:
    if not dashboard_exists(client, keys, name):
        raise UnknownDashboard(name)
