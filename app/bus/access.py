"""The instances' access re-check, readable without the web app's dependencies.

The account store (:mod:`app.bus.accounts`) and the Bokeh instances decide access from
the same two Redis hashes (``Keys.users``, ``Keys.access``) with the same pure policy
(:mod:`app.control.roles`); the instances import only this module.  An instance
re-checks the users of its live sessions with :func:`verdicts` every few seconds and
when a session opens, so revoking access, removing a user, changing their roles or
their password closes their live connections everywhere.  The password part: a
token carries the user's account generation (``gen``, renewed by every password or
role change, see :mod:`app.bus.accounts`); a token whose ``gen`` is no longer the
user's is refused.
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


def stale_gen(name: str, user_rec: dict | None, token_gen: Any) -> str | None:
    """Why a token minted at account generation ``token_gen`` is stale (None: it is not).

    Tokens without a ``gen`` (SSO users unknown to the store) are not compared."""
    if token_gen is None or user_rec is None:
        return None
    if user_rec.get("gen", "") != token_gen:
        return f"the password or roles of user {name!r} changed"
    return None


async def verdicts(client: Any, keys: Keys, sessions: Iterable[tuple], *,
                   sso: bool = False) -> dict[tuple, str | None]:
    """For each (user, token roles, dashboard[, token gen]): the refusal reason or None.

    The result is keyed by the same tuples (roles as a tuple).  One round trip for any
    number of sessions (``client`` is a ``redis.asyncio`` client).
    """
    wanted = {(s[0], tuple(s[1]) if s[1] is not None else None, *s[2:]) for s in sessions}
    if not wanted:
        return {}
    names = sorted({s[0] for s in wanted})
    dashboards = sorted({s[2] for s in wanted} | {"*"})
    pipe = client.pipeline(transaction=False)
    pipe.hmget(keys.users, names)
    pipe.hmget(keys.access, dashboards)
    users_raw, rules_raw = await pipe.execute()
    users = {n: _json(r) for n, r in zip(names, users_raw, strict=False)}
    rules = {d: _json(r) for d, r in zip(dashboards, rules_raw, strict=False)}
    out: dict[tuple, str | None] = {}
    for s in wanted:
        u, r, d = s[:3]
        out[s] = (refusal(u, users[u], r, d, {d: rules.get(d), "*": rules.get("*")}, sso=sso)
                  or stale_gen(u, users[u], s[3] if len(s) > 3 else None))
    return out
