"""Publishing commands: validate with the instances' own parser, then XADD.

Validation before XADD means a Python or HTTP controller learns about a bad command
at once; the readers validate again anyway, because ``redis-cli XADD`` is a
first-class controller too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis
import redis.asyncio as aioredis

from app.bus.keys import Keys
from app.bus.registry import UnknownDashboard, require_dashboard
from app.control.protocol import Limits, parse

Fields = Mapping[str, bytes | str]


def publish(client: redis.Redis, keys: Keys, dashboard: str, fields: Fields,
            limits: Limits = Limits()) -> str:
    """Validate and XADD one command; returns its stream id.  Raises Rejected/UnknownDashboard."""
    return publish_many(client, keys, dashboard, [fields], limits)[0]


def publish_many(client: redis.Redis, keys: Keys, dashboard: str, batch: Iterable[Fields],
                 limits: Limits = Limits()) -> list[str]:
    """Validate every command first (all or nothing), then XADD them in one round trip."""
    batch = list(batch)
    for fields in batch:
        parse(fields, limits)
    require_dashboard(client, keys, dashboard)
    pipe = client.pipeline(transaction=True)
    for fields in batch:
        pipe.xadd(keys.commands(dashboard), dict(fields))
    return [i.decode() for i in pipe.execute()]


async def apublish(client: aioredis.Redis, keys: Keys, dashboard: str, fields: Fields,
                   limits: Limits = Limits()) -> str:
    """Async twin of :func:`publish`."""
    parse(fields, limits)
    if not await client.hexists(keys.dashboards, dashboard):
        raise UnknownDashboard(dashboard)
    return (await client.xadd(keys.commands(dashboard), dict(fields))).decode()
