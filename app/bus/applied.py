"""Has a published command been folded by the instances, and was it rejected?

Readers record each rejection in ``fleet:{d}:rejected`` under the command's own id and
then set ``fleet:{d}:applied`` to the last id they folded (app/bus/reader.py), so
"applied id >= mine and no rejected entry with my id" means applied.  Both keys are
readable by a controller's ACL user; bokeh_fleet's ``wait_applied`` does the same.
"""

from __future__ import annotations

import time

import redis
from bokeh_fleet.wire import id_tuple

from app.bus.keys import Keys


def status(client: redis.Redis, keys: Keys, dashboard: str, entry_id: str) -> tuple[str, str]:
    """``("applied" | "rejected" | "pending", reason)`` of one command."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.applied(dashboard))
    pipe.xrange(keys.rejected(dashboard), min=entry_id, max=entry_id, count=1)
    last, rejected = pipe.execute()
    if last is None or id_tuple(last) < id_tuple(entry_id):
        return "pending", ""
    if rejected:
        fields = rejected[0][1]
        return "rejected", fields.get(b"_reason", b"").decode("utf-8", "replace")
    return "applied", ""


def wait(client: redis.Redis, keys: Keys, dashboard: str, entry_ids: list[str],
         timeout: float) -> tuple[str, str, str]:
    """Poll until every id is folded: ``(status, reason, id)`` of the first rejected
    one, else ``("applied", "", last id)``; ``"pending"`` when ``timeout`` ran out."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    todo = list(entry_ids)
    while True:
        while todo:
            st, reason = status(client, keys, dashboard, todo[0])
            if st == "rejected":
                return st, reason, todo[0]
            if st == "pending":
                break
            todo.pop(0)
        if not todo:
            return "applied", "", entry_ids[-1] if entry_ids else ""
        if time.monotonic() >= deadline:
            return "pending", "", todo[0]
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
