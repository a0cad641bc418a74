"""Read-only views of Redis itself for the admin page and the instances' memory alarm.

:func:`memory_status` turns ``INFO memory`` into the Redis memory alarm that the
instance loop (app/instance/server.py) and the admin page show; :func:`redis_health`
is the admin page's ping + INFO summary.  (The compactor's status is read beside its
writer: :func:`app.bus.compactor.read_status`.)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import redis


def memory_status(info: Mapping[str, Any], alarm_ratio: float) -> dict[str, Any]:
    """``used_memory`` / ``maxmemory`` from ``INFO memory`` and whether to alarm."""
    used = int(info.get("used_memory", 0) or 0)
    cap = int(info.get("maxmemory", 0) or 0)
    ratio = used / cap if cap else 0.0
    return {"used_memory": used, "maxmemory": cap, "ratio": ratio,
            "policy": info.get("maxmemory_policy", ""),
            "alarm": bool(cap) and ratio >= alarm_ratio, "no_limit": not cap}


def redis_health(client: redis.Redis, alarm_ratio: float = 0.8) -> dict[str, Any]:
    """Ping time and a few INFO fields; ``ok`` False with the error when Redis is away.

    ``memory``: used/max memory and ``alarm`` when the ratio reaches ``alarm_ratio``
    (with noeviction, a full Redis refuses publishes).
    """
    try:
        t0 = time.perf_counter()
        client.ping()
        ping_ms = (time.perf_counter() - t0) * 1000
        info = client.info()
    except (redis.RedisError, OSError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    keep = ("redis_version", "uptime_in_seconds", "connected_clients", "used_memory_human",
            "maxmemory_human", "role", "aof_enabled", "aof_last_write_status",
            "rdb_last_bgsave_status", "loading", "evicted_keys", "instantaneous_ops_per_sec")
    return {"ok": True, "ping_ms": round(ping_ms, 3), **{k: info.get(k) for k in keep if k in info},
            "memory": memory_status(info, alarm_ratio)}
