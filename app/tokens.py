"""The Bokeh session token contract: minted by the web app, checked by nginx's
``/auth/check`` (app/web/auth.py) and by every instance (app/instance/server.py).

A token is Bokeh's signed JWT-like token for a signed session id, with our payload:
``dashboard`` (the only one it opens), ``user`` and ``roles`` (re-checked against the
account store while the session lives), ``gen`` (the user's account generation when it
was minted: a password change makes it stale, so the user's open pages are closed),
optionally ``origin`` (the embedding page it was minted for), and Bokeh's
``session_expiry`` (unix seconds).  Pure: signing and
checking only, no I/O; both checkers use :func:`check`, so they agree on what is
valid and when a token expires (expired from ``session_expiry`` on).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bokeh.util.token import check_token_signature, generate_jwt_token, generate_session_id, get_session_id
from bokeh.util.token import get_token_payload as _payload

from app.bus.keys import DASHBOARD_RE


@dataclass(frozen=True)
class Minted:
    session_id: str
    token: str


def _key(secret: str | bytes) -> bytes:
    """The signing key as Bokeh's token functions take it (the web app holds a str, the
    instance Bokeh's own bytes)."""
    return secret.encode() if isinstance(secret, str) else secret


def mint(secret: str | bytes, dashboard: str | None, user: str, roles: Any, *, origin: str | None = None,
         gen: str | None = None, expiration: int = 300, signed: bool = True,
         extra: dict | None = None) -> Minted:
    """A fresh signed session id and a token for it, valid ``expiration`` seconds.

    ``dashboard`` None and ``extra`` exist for tests that need a token the checkers
    refuse; the web app always names a dashboard.
    """
    payload: dict[str, Any] = {"user": user, "roles": list(roles)}
    if dashboard is not None:
        payload = {"dashboard": dashboard, **payload}
    if gen:
        payload["gen"] = gen
    if origin is not None:
        payload["origin"] = origin
    payload.update(extra or {})
    session_id = generate_session_id(secret_key=_key(secret), signed=signed)
    token = generate_jwt_token(session_id, secret_key=_key(secret), signed=signed, extra_payload=payload,
                               expiration=expiration)
    return Minted(session_id, token)


def read(token: str) -> dict | None:
    """The payload of ``token`` WITHOUT checking it (None if unreadable): only for
    decisions that :func:`check` also gates."""
    try:
        payload = _payload(token)
    except Exception:  # malformed base64/JSON/zlib
        return None
    return payload if isinstance(payload, dict) else None


def expired(payload: dict, now: float | None = None) -> bool:
    """Whether a token with ``payload`` is past its ``session_expiry`` (or has none)."""
    expiry = payload.get("session_expiry")
    now = time.time() if now is None else now
    return not isinstance(expiry, (int, float)) or isinstance(expiry, bool) or now >= expiry


def check(token: str | None, secret: str | bytes, now: float | None = None,
          session_id: str | None = None) -> dict | str:
    """The payload of a valid token, else the reason (a str) it is refused.

    Valid: signed with ``secret``, readable, for ``session_id`` (when given), not
    expired at ``now`` (default: the current time), naming a well-formed dashboard
    and a user.  Whether the user may view the dashboard is not decided here.
    """
    if not token:
        return "no token (sessions are minted by the web app)"
    try:
        if not check_token_signature(token, secret_key=_key(secret), signed=True):
            return "bad token signature"
        payload = _payload(token)
        sid = get_session_id(token)
    except Exception:
        return "unreadable token"
    if not isinstance(payload, dict):
        return "unreadable token"
    if session_id is not None and sid != session_id:
        return "token is for another session"
    if expired(payload, now):
        return "token expired"
    dashboard = payload.get("dashboard")
    if not isinstance(dashboard, str):
        return "token names no dashboard"
    if not DASHBOARD_RE.match(dashboard):
        return "token names an invalid dashboard"
    user = payload.get("user")
    if not isinstance(user, str) or not user:
        return "token names no user"
    return payload
