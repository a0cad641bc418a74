"""Redis clients configured for the fleet (redis-py 8 pitfalls handled here).

redis-py 8 defaults ``socket_timeout`` to 5 s, which makes a longer ``XREAD BLOCK``
raise; the timeout here is always the block window plus a margin.  Clients speak
bytes (``decode_responses=False``) because command fields may carry Arrow IPC.

Every Redis client of the fleet is built here.  With ``FLEET_REDIS_SENTINELS`` set
the client asks the sentinels for the master ``FLEET_REDIS_MASTER`` on every new
connection: after a failover the next (re)connection - the callers' retry rules
below - lands on the new master, and a connection still open to a demoted master
fails on its first write (READONLY) and is dropped.  The ACL user, password and db
still come from ``FLEET_REDIS_URL``; its host and port are then ignored.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from app.settings import Settings

# Errors the callers treat as "Redis is away for now": retry with backoff.
# (MasterNotFoundError - no sentinel knows a master yet - is a ConnectionError.)
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)
ResponseError = redis.ResponseError
# For callers that report errors without importing redis (fleetctl's error handler):
RedisError = redis.RedisError  # base of every error below
UNREACHABLE_ERRORS = (redis.ConnectionError, redis.TimeoutError)  # includes auth failures
AuthenticationError = redis.AuthenticationError  # wrong password / unknown ACL user (NOAUTH, WRONGPASS)
NoPermissionError = redis.exceptions.NoPermissionError  # ACL user lacks a command or key (NOPERM)


def _timeouts(settings: Settings) -> dict:
    return {
        "socket_timeout": settings.block_ms / 1000 + 5,
        "socket_connect_timeout": 5,
        "health_check_interval": 30,
        "socket_keepalive": True,
    }


def sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    """``FLEET_REDIS_SENTINELS`` as (host, port) pairs (empty: no Sentinel)."""
    out = []
    for hp in settings.redis_sentinels:
        host, _, port = hp.rpartition(":")
        out.append((host.strip("[]"), int(port)))
    return out


def _url_auth(url: str) -> dict[str, Any]:
    """User, password and db of a redis:// URL (what a Sentinel-found master needs)."""
    u = urlsplit(url)
    out: dict[str, Any] = {"db": int(u.path.strip("/") or 0)}
    if u.username:
        out["username"] = unquote(u.username)
    if u.password is not None:
        out["password"] = unquote(u.password)
    return out


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    kw: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
    if settings.redis_sentinel_password:
        kw["password"] = settings.redis_sentinel_password
    return kw


def sync_client(settings: Settings) -> redis.Redis:
    retry = Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.02), 3)
    if settings.redis_sentinels:
        sentinel = redis.sentinel.Sentinel(sentinel_addresses(settings),
                                           sentinel_kwargs=_sentinel_kwargs(settings))
        return sentinel.master_for(settings.redis_master, retry=retry,
                                   **_url_auth(settings.redis_url), **_timeouts(settings))
    return redis.Redis.from_url(settings.redis_url, retry=retry, **_timeouts(settings))


def async_client(settings: Settings, *, retries: int = 2, **kw) -> aioredis.Redis:
    """``retries``: silent reconnect-and-retry attempts per command; the reader uses 0,
    because it must re-check its history on every new connection (a Redis restarted
    from an older copy, a promoted replica) before it reads on."""
    retry = AsyncRetry(ExponentialWithJitterBackoff(cap=1.0, base=0.02), retries)
    if settings.redis_sentinels:
        sentinel = aiosentinel.Sentinel(sentinel_addresses(settings),
                                        sentinel_kwargs=_sentinel_kwargs(settings))
        return sentinel.master_for(settings.redis_master, retry=retry,
                                   **{**_url_auth(settings.redis_url), **_timeouts(settings), **kw})
    return aioredis.Redis.from_url(settings.redis_url, retry=retry, **{**_timeouts(settings), **kw})


def replica_client(settings: Settings, host: str, port: int) -> redis.Redis:
    """A client of one given node (e.g. a replica), with the fleet's user and password."""
    return redis.Redis(host=host, port=port, **_url_auth(settings.redis_url), **_timeouts(settings))


def replica_clients(settings: Settings) -> list[redis.Redis]:
    """Clients of every replica the sentinels know (empty without Sentinel).

    For what Redis does not replicate: ``ACL SETUSER``/``DELUSER`` apply to one node
    only, so a controller's user must be created on the replicas too or it is gone
    after a failover."""
    if not settings.redis_sentinels:
        return []
    sentinel = redis.sentinel.Sentinel(sentinel_addresses(settings),
                                       sentinel_kwargs=_sentinel_kwargs(settings))
    return [replica_client(settings, host, port)
            for host, port in sentinel.discover_slaves(settings.redis_master)]
