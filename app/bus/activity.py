"""When each dashboard last changed: the time of the newest command in its stream.

A stream's ``last-generated-id`` (``XINFO STREAM``) survives the compactor's trimming,
and an id is ``<ms since the epoch>-<seq>``, so it dates the last accepted command
without reading any entry.  One round trip for any number of dashboards.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from app.bus.keys import Keys


def _text(v: object) -> str:
    return v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)


def last_updates(client: redis.Redis, keys: Keys, dashboards: Iterable[str]) -> dict[str, float | None]:
    """``{dashboard: unix time of its newest command, or None (no command yet)}``."""
    names = list(dashboards)
    if not names:
        return {}
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.xinfo_stream(keys.commands(name))
    out: dict[str, float | None] = {}
    for name, info in zip(names, pipe.execute(raise_on_error=False), strict=True):
        last = info.get("last-generated-id") if isinstance(info, dict) else None
        ms = _text(last).partition("-")[0] if last is not None else ""
        out[name] = int(ms) / 1000 if ms.isdigit() and int(ms) > 0 else None
    return out
