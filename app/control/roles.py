"""Role and dashboard-access policy: who may view what.  Pure (no Redis, no web).

Roles: ``viewer`` < ``controller`` < ``admin``; a higher role implies the lower ones.
``display`` stands apart, below them all: an account for a wall display (a TV in
kiosk mode) that may only view: it sees dashboards without chrome, no embed hint and
no controller tools, and implies no other role (with another role, it is ignored).
An admin may view every dashboard; anyone else needs an access rule naming them or one
of their roles, for that dashboard or ``*``.  The account store (app/bus/accounts.py),
the instances' revocation check (app/bus/access.py) and the web app all decide with
these functions, so the policy exists once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HIERARCHY = ("viewer", "controller", "admin")
DISPLAY = "display"
ROLES = (DISPLAY, *HIERARCHY)  # every valid role name
SSO_ROLES: tuple[str, ...] = ("viewer",)  # an SSO user unknown to the store is a plain viewer (see auth.sso_user)


def effective_roles(roles: Any) -> tuple[str, ...]:
    """Roles with the implied lower ones added, in HIERARCHY order; ``("display",)`` for
    an account whose only known role is display."""
    roles = tuple(roles or ())
    top = max((HIERARCHY.index(r) for r in roles if r in HIERARCHY), default=-1)
    if top < 0:
        return (DISPLAY,) if DISPLAY in roles else ()
    return HIERARCHY[: top + 1]


def view_only(roles: Any) -> bool:
    """Whether ``roles`` make a display account (kiosk only, no tools)."""
    return effective_roles(roles) == (DISPLAY,)


def rule_allows(name: str, roles: Any, rule: Mapping[str, Any] | None) -> bool:
    """Whether access ``rule`` ({users, roles}) names user ``name`` or one of ``roles``
    (already effective)."""
    if not rule:
        return False
    return name in rule.get("users", ()) or bool(set(roles).intersection(rule.get("roles", ())))


def may_view(name: str, roles: Any, dashboard: str, rules: Mapping[str, Mapping[str, Any] | None]) -> bool:
    """Whether ``name`` with effective ``roles`` may view ``dashboard``; ``rules`` maps
    ``dashboard`` and/or ``*`` to their access rules (missing = no rule)."""
    if "admin" in roles:
        return True
    return any(rule_allows(name, roles, rules.get(key)) for key in (dashboard, "*"))


def refusal(name: str, user_rec: Mapping | None, token_roles: Any, dashboard: str,
            rules: Mapping[str, Mapping | None], *, sso: bool = False) -> str | None:
    """Why the holder of a session token for (``name``, ``token_roles``) may no longer
    view ``dashboard`` (None: still allowed).

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
    if may_view(name, roles, dashboard, rules):
        return None
    return f"user {name!r} may no longer view dashboard {dashboard!r}"
