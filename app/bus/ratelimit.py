"""Fixed-window failure counting with exponential lock-out, shared by every web worker.

Used for failed logins (app/web/auth.py) and failed API-token checks (app/web/api.py).
A bucket is what the caller names (e.g. ``"login"`` + user + client address); the
parts are hashed, so user input never becomes a key name as is.  Keys: ``Keys.
ratelimit(bucket)`` counts failures in the window (TTL = window), ``...:lock`` exists
while the bucket is locked (TTL = lock-out left) and ``...:strikes`` counts lock-outs
for the backoff.  Token buckets for request rates live in :mod:`app.bus.buckets`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from app.bus.keys import Keys


def _key(keys: Keys, kind: str, parts: tuple[str, ...]) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[:32]
    return keys.ratelimit(f"{kind}:{digest}")


def reset(client: Any, keys: Keys, kind: str, *parts: str) -> None:
    """Forget this bucket: its failures, lock-out and backoff (e.g. after a success)."""
    base = _key(keys, kind, parts)
    client.delete(base, base + ":lock", base + ":strikes")


def locked_for(client: Any, keys: Keys, kind: str, *parts: str) -> int:
    """Seconds left of this bucket's lock-out (0 = not locked); see :func:`fail`."""
    ms = client.pttl(_key(keys, kind, parts) + ":lock")
    return 0 if ms is None or ms <= 0 else max(1, -(-int(ms) // 1000))


def fail(client: Any, keys: Keys, kind: str, *parts: str, limit: int, window: int,
         max_lock: int = 86400) -> int:
    """Record one failure for this bucket (e.g. user+client address); returns the
    seconds of lock-out it started, 0 if none.

    ``limit`` failures within ``window`` seconds lock the bucket for ``window``
    seconds, the next lock-out within ``max_lock`` for twice that, then four
    times... (exponential backoff, capped at ``max_lock``).  Buckets are what the
    caller names, so one client's failures never lock anyone else out.
    """
    base = _key(keys, kind, parts)
    pipe = client.pipeline(transaction=True)
    pipe.incr(base)
    pipe.expire(base, int(window), nx=True)
    count, _ = pipe.execute()
    # only the request that clears the counter starts the lock (workers race here)
    if int(count) < limit or not client.delete(base):
        return 0
    pipe = client.pipeline(transaction=True)
    pipe.incr(base + ":strikes")
    pipe.expire(base + ":strikes", int(max_lock))
    strikes, _ = pipe.execute()
    lock = int(min(max_lock, window * 2 ** min(int(strikes) - 1, 30)))
    client.set(base + ":lock", "1", ex=max(1, lock))
    return lock
