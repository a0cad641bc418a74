"""Instance heartbeats: each instance writes a JSON record with a TTL; the admin
page lists the live ones.  An instance that stops writing disappears after the TTL.

Besides counters, a record says who is viewing what (:func:`viewers`: per dashboard,
the users of the instance's live sessions, bounded so a record stays small), and
:func:`who_views` merges that over all instances for the admin page.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio as aioredis

from app.bus.keys import Keys


async def write_heartbeat(client: aioredis.Redis, keys: Keys, instance_id: str,
                          payload: dict[str, Any], ttl: float) -> None:
    record = {"id": instance_id, "time": time.time(), **payload}
    await client.set(keys.heartbeat(instance_id), json.dumps(record), px=int(ttl * 1000))


async def clear_heartbeat(client: aioredis.Redis, keys: Keys, instance_id: str) -> None:
    await client.delete(keys.heartbeat(instance_id))


def read_heartbeats(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    names = sorted(client.scan_iter(match=keys.heartbeat_pattern, count=500))
    if not names:
        return []
    out = []
    for raw in client.mget(names):
        if raw:
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
    return sorted(out, key=lambda r: str(r.get("id")))


VIEWERS_PER_DASHBOARD = 50  # user names per dashboard in one heartbeat; the rest are counted


def viewers(sessions: Iterable[tuple[str, str]],
            limit: int = VIEWERS_PER_DASHBOARD) -> dict[str, dict[str, Any]]:
    """``{dashboard: {"users": {user: sessions}, "more_users": n}}`` from (dashboard,
    user) pairs of live sessions: the ``limit`` users with most sessions (then by name),
    and how many other users there are."""
    per: dict[str, Counter] = {}
    for dashboard, user in sessions:
        per.setdefault(str(dashboard), Counter())[str(user or "-")[:100]] += 1
    out = {}
    for dashboard, counts in sorted(per.items()):
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        out[dashboard] = {"users": dict(top[:limit]), "more_users": max(0, len(top) - limit)}
    return out


def who_views(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ``viewers`` of several heartbeats merged: ``{dashboard: {"users": {user:
    sessions}, "more_users": n, "instances": [ids]}}`` (user names sorted)."""
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        seen = rec.get("viewers")
        if not isinstance(seen, dict):
            continue
        for dashboard, entry in seen.items():
            if not isinstance(entry, dict):
                continue
            agg = out.setdefault(str(dashboard), {"users": Counter(), "more_users": 0, "instances": []})
            for user, n in (entry.get("users") or {}).items():
                agg["users"][str(user)] += int(n) if isinstance(n, int) else 0
            agg["more_users"] += int(entry.get("more_users") or 0)
            agg["instances"].append(str(rec.get("id", "")))
    for agg in out.values():
        agg["users"] = dict(sorted(agg["users"].items()))
    return dict(sorted(out.items()))
