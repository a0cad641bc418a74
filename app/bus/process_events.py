"""supervisord process state changes, kept in one capped Redis stream.

The event listener (:mod:`app.stack.events`) calls :func:`record_many` for its
batches of ``PROCESS_STATE_*`` events; the admin page and ``fleetctl`` read them back with
:func:`recent`.  Fields are plain strings: ``event`` (e.g. ``PROCESS_STATE_EXITED``),
``process`` (``fleet:bokeh_01``), ``group``, ``from_state``, ``pid``, ``expected``,
``host``, ``ts`` (ms since the epoch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis

from app.bus.keys import Keys

MAXLEN = 10_000


def record_many(client: redis.Redis, keys: Keys, batch: Sequence[Mapping[str, str]],
                maxlen: int = MAXLEN) -> None:
    """XADD several events in one round trip (the listener's backlog after an outage)."""
    pipe = client.pipeline(transaction=False)
    for fields in batch:
        pipe.xadd(keys.process_events, dict(fields), maxlen=maxlen, approximate=True)
    pipe.execute()


def _text(v: bytes | str) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def recent(client: redis.Redis, keys: Keys, count: int = 100) -> list[dict[str, str]]:
    """The latest ``count`` events, newest first, each with its stream ``id``."""
    out = []
    for entry_id, fields in client.xrevrange(keys.process_events, count=count):
        row = {_text(k): _text(v) for k, v in fields.items()}
        row["id"] = _text(entry_id)
        out.append(row)
    return out
