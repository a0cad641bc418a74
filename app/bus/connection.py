"""Redis clients configured for the fleet (redis-py 8 pitfalls handled here).

redis-py 8 defaults ``socket_timeout`` to 5 s, which makes a longer ``XREAD BLOCK``
raise; the timeout here is always the block window plus a margin.  Clients speak
bytes (``decode_responses=False``) because command fields may carry Arrow IPC.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from app.settings import Settings

# Errors the callers treat as "Redis is away for now": retry with backoff.
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


def sync_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.02), 3),
        **_timeouts(settings),
    )


def async_client(settings: Settings, **kw) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        settings.redis_url,
        retry=AsyncRetry(ExponentialWithJitterBackoff(cap=1.0, base=0.02), 2),
        **{**_timeouts(settings), **kw},
    )
