"""Instance heartbeats: each instance writes a JSON record with a TTL; the admin
page lists the live ones.  An instance that stops writing disappears after the TTL."""

from __future__ import annotations

import json
import time
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
