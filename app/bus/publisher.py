"""Publishing commands: validate with the instances' own parser, then XADD.

Validation before XADD means a Python or HTTP controller learns about a bad command
at once; the readers validate again anyway, because ``redis-cli XADD`` is a
first-class controller too.

What the returned ids (the acknowledgement) guarantee depends on
``FLEET_REDIS_DURABILITY``: ``everysec`` - the commands are in the master's memory
and reach its disk within about a second (a machine crash may lose that second);
``always`` - Redis runs ``appendfsync always``, so they were on its disk before the
reply; ``replica`` - the XADDs are followed by ``WAIT 1 <FLEET_REDIS_WAIT_MS>`` on the
same connection, and the publish succeeds only once at least one replica has them
(else :class:`NotDurable`: the commands may or may not survive a failover, and
sending them again with the same ``id=`` is safe).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis

from app.bus.keys import Keys
from app.bus.registry import require_dashboard
from app.control.protocol import Limits, parse

Fields = Mapping[str, bytes | str]


class NotDurable(Exception):
    """Written to the master, but no replica confirmed it within the wait window."""

    def __init__(self, ids: list[str], wait_ms: int) -> None:
        self.ids = ids
        super().__init__(
            f"commands {', '.join(ids)} were written to the Redis master but no replica "
            f"confirmed them within {wait_ms} ms (FLEET_REDIS_DURABILITY=replica): they may "
            "be lost on a failover; sending them again with the same id= is safe")


def publish(client: redis.Redis, keys: Keys, dashboard: str, fields: Fields,
            limits: Limits = Limits(), *, durability: str = "everysec", wait_ms: int = 1000) -> str:
    """Validate and XADD one command; returns its stream id.
    Raises Rejected/UnknownDashboard, NotDurable (``replica`` durability)."""
    return publish_many(client, keys, dashboard, [fields], limits,
                        durability=durability, wait_ms=wait_ms)[0]


def publish_many(client: redis.Redis, keys: Keys, dashboard: str, batch: Iterable[Fields],
                 limits: Limits = Limits(), *, durability: str = "everysec",
                 wait_ms: int = 1000) -> list[str]:
    """Validate every command first (all or nothing), then XADD them in one round trip
    (MULTI/EXEC; with ``replica`` durability a WAIT follows on the same connection)."""
    batch = list(batch)
    for fields in batch:
        parse(fields, limits)
    require_dashboard(client, keys, dashboard)
    # A plain pipeline holding MULTI ... EXEC (+ WAIT): WAIT must run on the connection
    # that wrote, and outside MULTI (inside it Redis answers at once, without waiting).
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("MULTI")
    for fields in batch:
        pipe.xadd(keys.commands(dashboard), dict(fields))
    pipe.execute_command("EXEC")
    if durability == "replica":
        pipe.execute_command("WAIT", 1, wait_ms)
    replies = pipe.execute()
    ids = [i.decode() for i in replies[len(batch) + 1]]
    if durability == "replica" and int(replies[-1]) < 1:
        raise NotDurable(ids, wait_ms)
    return ids
