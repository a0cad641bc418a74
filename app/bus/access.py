"""Who may view which dashboard, readable without the web app's dependencies.

The account store (:mod:`app.bus.accounts`, which hashes passwords with werkzeug) and
the Bokeh instances both decide access from the same two Redis hashes; the instances
import only this module.  An instance re-checks the users of its live sessions with
:func:`verdicts` every few seconds and when a session opens, so revoking access,
removing a user or changing their roles closes their live connections everywhere.
:func:`memory_status` turns ``INFO memory`` into the Redis memory alarm that the same
instance loop and the admin page show.

Key names (under ``Keys.prefix``): ``{p}:users`` (username -> JSON with ``roles``)
and ``{p}:access`` (dashboard or ``*`` -> JSON ``{users, roles}``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from app.bus.keys import Keys

ROLES = ("viewer", "controller", "admin")
SSO_ROLES = ("viewer",)  # an SSO user unknown to the store is a plain viewer (see auth.sso_user)


def users_key(keys: Keys) -> str:
    return f"{keys.prefix}:users"


def access_key(keys: Keys) -> str:
    return f"{keys.prefix}:access"


def effective_roles(roles: Any) -> tuple[str, ...]:
    """Roles with the implied lower ones added, in ROLES order."""
    top = max((ROLES.index(r) for r in roles or () if r in ROLES), default=-1)
    return ROLES[: top + 1]


def _json(raw: Any) -> dict | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def refusal(name: str, user_rec: Mapping | None, token_roles: Any, dashboard: str,
            rules: Mapping[str, Mapping | None], *, sso: bool = False) -> str | None:
    """Why the holder of a session token for (``name``, ``token_roles``) may no longer
    view ``dashboard`` (None: still allowed).  Pure.

    ``user_rec`` is the user's stored record (None: no such user; a plain viewer when
    ``sso`` is on, as the web app treats SSO names it does not know); ``rules`` maps
    ``dashboard`` and ``*`` to their access rules.  A token minted before the user's
    roles changed is refused, whatever the new roles allow: the page re-authenticates.
    """
    if user_rec is None:
        if not sso:
            return f"user {name!r} no longer exists"
        roles = SSO_ROLES
    else:
        roles = effective_roles(user_rec.get("roles", ()))
    if token_roles is not None and effective_roles(token_roles) != roles:
        return f"the roles of user {name!r} changed"
    if "admin" in roles:
        return None
    have = set(roles)
    for key in (dashboard, "*"):
        rule = rules.get(key)
        if rule and (name in rule.get("users", ()) or have.intersection(rule.get("roles", ()))):
            return None
    return f"user {name!r} may no longer view dashboard {dashboard!r}"


async def verdicts(client: Any, keys: Keys, sessions: Iterable[tuple[str, Any, str]], *,
                   sso: bool = False) -> dict[tuple[str, tuple[str, ...], str], str | None]:
    """For each (user, token roles, dashboard): the refusal reason or None.

    One round trip for any number of sessions (``client`` is a ``redis.asyncio`` client).
    """
    wanted = {(u, tuple(r) if r is not None else None, d) for u, r, d in sessions}
    if not wanted:
        return {}
    names = sorted({u for u, _, _ in wanted})
    dashboards = sorted({d for _, _, d in wanted} | {"*"})
    pipe = client.pipeline(transaction=False)
    pipe.hmget(users_key(keys), names)
    pipe.hmget(access_key(keys), dashboards)
    users_raw, rules_raw = await pipe.execute()
    users = {n: _json(r) for n, r in zip(names, users_raw)}
    rules = {d: _json(r) for d, r in zip(dashboards, rules_raw)}
    return {(u, r, d): refusal(u, users[u], r, d, {d: rules.get(d), "*": rules.get("*")}, sso=sso)
            for u, r, d in wanted}


def memory_status(info: Mapping[str, Any], alarm_ratio: float) -> dict[str, Any]:
    """``used_memory`` / ``maxmemory`` from ``INFO memory`` and whether to alarm."""
    used = int(info.get("used_memory", 0) or 0)
    cap = int(info.get("maxmemory", 0) or 0)
    ratio = used / cap if cap else 0.0
    return {"used_memory": used, "maxmemory": cap, "ratio": ratio,
            "policy": info.get("maxmemory_policy", ""),
            "alarm": bool(cap) and ratio >= alarm_ratio, "no_limit": not cap}
