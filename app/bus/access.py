"""The instances' access re-check, readable without the web app's dependencies.

The account store (:mod:`app.bus.accounts`) and the Bokeh instances decide access from
the same two Redis hashes (``Keys.users``, ``Keys.access``) with the same pure policy
(:mod:`app.control.roles`); the instances import only this module.  An instance
re-checks the users of its live sessions with :func:`verdicts` every few seconds and
when a session opens, so revoking access, removing a user or changing their roles
closes their live connections everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from app.bus.keys import Keys
from app.control.roles import refusal


def _json(raw: Any) -> dict | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def verdicts(client: Any, keys: Keys, sessions: Iterable[tuple[str, Any, str]], *,
                   sso: bool = False) -> dict[tuple[str, tuple[str, ...] | None, str], str | None]:
    """For each (user, token roles, dashboard): the refusal reason or None.

    One round trip for any number of sessions (``client`` is a ``redis.asyncio`` client).
    """
    wanted = {(u, tuple(r) if r is not None else None, d) for u, r, d in sessions}
    if not wanted:
        return {}
    names = sorted({u for u, _, _ in wanted})
    dashboards = sorted({d for _, _, d in wanted} | {"*"})
    pipe = client.pipeline(transaction=False)
    pipe.hmget(keys.users, names)
    pipe.hmget(keys.access, dashboards)
    users_raw, rules_raw = await pipe.execute()
    users = {n: _json(r) for n, r in zip(names, users_raw, strict=False)}
    rules = {d: _json(r) for d, r in zip(dashboards, rules_raw, strict=False)}
    return {(u, r, d): refusal(u, users[u], r, d, {d: rules.get(d), "*": rules.get("*")}, sso=sso)
            for u, r, d in wanted}
