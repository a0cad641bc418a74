"""Token buckets in Redis: one atomic script per take, shared by every web worker.

Used for the per-API-token publish rate (``FLEET_API_PUBLISH_RATE`` requests per
second, bursts up to ``FLEET_API_PUBLISH_BURST``).  The bucket is a small hash
(``tokens``, ``ts``) that expires once it would be full again, so idle tokens cost
nothing.  Time comes from Redis (``TIME``), so workers on several hosts agree.
"""

from __future__ import annotations

import math
from typing import Any

# KEYS: bucket.  ARGV: rate (per second), burst, cost.  Returns {allowed, wait seconds}.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1]) or burst
local ts = tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


def take(client: Any, key: str, rate: float, burst: int, cost: int = 1) -> float:
    """Take ``cost`` from the bucket at ``key``: 0.0 if allowed, else the seconds until
    it would be (nothing is taken then).  ``rate`` <= 0 means no limit."""
    if rate <= 0:
        return 0.0
    allowed, wait = client.eval(_TAKE, 1, key, repr(float(rate)), str(max(1, int(burst))), str(int(cost)))
    if int(allowed):
        return 0.0
    return max(float(wait), 0.001)


def retry_after(wait: float) -> str:
    """A Retry-After header value (whole seconds, at least 1)."""
    return str(max(1, math.ceil(wait)))
