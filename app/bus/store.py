"""Read-side helpers: the current folded state of a dashboard, its rejected commands.

``read_state`` is what ``fleetctl state`` and the HTTP API answer with: the latest
snapshot plus a fold of the stream after it, exactly what a reader would hold.
"""

from __future__ import annotations

from typing import Any

import redis

from app.bus.keys import Keys
from app.bus.log import current_snapshot
from app.bus.registry import require_dashboard
from app.control.protocol import Limits, Rejected, parse
from app.control.state import DashboardState, FoldConfig, step
from app.settings import Settings

BATCH = 1000


def fold_range(entries: list, state: DashboardState, limits: Limits, cfg: FoldConfig) -> DashboardState:
    for _eid, fields in entries:
        try:
            state, _ = step(state, parse(fields, limits), cfg)
        except Rejected:
            pass
    return state


def read_state(client: redis.Redis, keys: Keys, dashboard: str, settings: Settings) -> tuple[DashboardState, str]:
    """(state, last id) of ``dashboard``: snapshot + fold of the entries after it."""
    require_dashboard(client, keys, dashboard)
    pipe = client.pipeline(transaction=False)
    epoch, raw = pipe.get(keys.epoch).get(keys.snapshot(dashboard)).execute()
    s = current_snapshot(raw, epoch.decode() if epoch else None)
    state, last = s.state, s.last_id
    limits, cfg = Limits.from_settings(settings), FoldConfig.from_settings(settings)
    while True:
        entries = client.xrange(keys.commands(dashboard), min="(" + last, count=BATCH)
        if not entries:
            return state, last
        state = fold_range(entries, state, limits, cfg)
        last = entries[-1][0].decode()


def read_rejected(client: redis.Redis, keys: Keys, dashboard: str, count: int = 100) -> list[dict[str, Any]]:
    """Newest first: ``{"id", "reason", "fields"}`` of rejected commands."""
    out = []
    for eid, fields in client.xrevrange(keys.rejected(dashboard), count=count):
        f = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in fields.items()}
        reason = f.pop("_reason", "")
        out.append({"id": eid.decode(), "reason": reason, "fields": f})
    return out
