"""Users, roles, dashboard access, API tokens and web login sessions, kept in Redis.

The web app (every gunicorn worker) and ``fleetctl`` share this one store, so an
operator's ``fleetctl users passwd`` or ``fleetctl tokens revoke`` takes effect on the
next request everywhere.  Key names (all in :class:`app.bus.keys.Keys`):

* ``{p}:users``              hash: username -> JSON {password (hash made by app/passwords.py),
                             roles, gen, created}; ``gen`` changes on passwd/remove so
                             existing Flask sessions of that user stop being valid.
* ``{p}:access``             hash: dashboard (or ``*`` = every dashboard) -> JSON
                             {users: [...], roles: [...]}: who may view it.
* ``{p}:tokens``             hash: sha256(token) hex -> JSON {id, name, dashboards,
                             created, revoked, expires}; the token itself is never stored.
* ``{p}:websession:{h}``     string (user name) with the login's lifetime as TTL, ``h`` =
                             sha256 of the id a login keeps in its Flask session; logout
                             deletes it, so a copied session cookie dies with the logout.
* ``{p}:tokens:used``        hash: sha256(token) hex -> last-used unix time.

The store keeps password hashes only: hashing and checking passwords is
app/passwords.py's job (the bus does not import werkzeug).  Who may view what is the
pure policy of :mod:`app.control.roles`.  Login lock-outs: :mod:`app.bus.ratelimit`;
Redis health: :mod:`app.bus.health`; the compactor's status:
:func:`app.bus.compactor.read_status`.  Sync, like the rest of the web side.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from app.bus.keys import Keys, check_dashboard_name
from app.control.roles import ROLES, effective_roles, may_view

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}\Z")
TOKEN_PREFIX = "fleet_"


class AccountError(ValueError):
    """Bad input for an account operation; the message is meant for a person."""


def check_username(name: str) -> str:
    if not isinstance(name, str) or not USERNAME_RE.match(name):
        raise AccountError(
            f"invalid user name {name!r}: 1-100 of letters, digits, _ . @ + -, "
            "starting with a letter or digit"
        )
    return name


def check_roles(roles: Any) -> tuple[str, ...]:
    roles = tuple(dict.fromkeys(roles))
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise AccountError(f"invalid role(s) {bad or '(none)'}: use {', '.join(ROLES)}")
    return roles


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class User:
    name: str
    roles: tuple[str, ...]
    gen: str = ""
    created: float = 0.0

    @property
    def effective_roles(self) -> tuple[str, ...]:
        return effective_roles(self.roles)

    def has_role(self, role: str) -> bool:
        return role in self.effective_roles


@dataclass(frozen=True)
class Token:
    id: str
    name: str
    dashboards: tuple[str, ...]
    created: float
    revoked: float | None = None
    last_used: float | None = None
    expires: float | None = None  # unix time; None = never

    @property
    def expired(self) -> bool:
        return self.expires is not None and time.time() >= self.expires

    def allows(self, dashboard: str) -> bool:
        return "*" in self.dashboards or dashboard in self.dashboards


@dataclass(frozen=True)
class Rule:
    users: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()


@dataclass
class Accounts:
    """The account store over one sync Redis client (bytes in, bytes out)."""

    client: redis.Redis
    keys: Keys = field(default_factory=Keys)

    # --- users ---------------------------------------------------------------------
    def _load_user(self, name: str) -> dict | None:
        raw = self.client.hget(self.keys.users, name)
        return json.loads(raw) if raw else None

    def add_user(self, name: str, password_hash: str, roles: Any = ("viewer",)) -> User:
        """A new user with ``password_hash`` (from :func:`app.passwords.hash_password`)."""
        check_username(name)
        roles = check_roles(roles)
        rec = {"password": _check_hash(password_hash),
               "roles": list(roles), "gen": secrets.token_hex(8), "created": time.time()}
        if not self.client.hsetnx(self.keys.users, name, json.dumps(rec)):
            raise AccountError(f"user {name!r} exists (use passwd or remove it first)")
        return User(name, roles, rec["gen"], rec["created"])

    def get_user(self, name: str) -> User | None:
        rec = self._load_user(name) if isinstance(name, str) and name else None
        if rec is None:
            return None
        return User(name, tuple(rec["roles"]), rec.get("gen", ""), rec.get("created", 0.0))

    def _update(self, name: str, **changes: Any) -> User:
        # WATCH/MULTI so two operators editing the same user cannot lose an update.
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self.keys.users)
                    raw = pipe.hget(self.keys.users, name)
                    if not raw:
                        raise AccountError(f"no user {name!r}")
                    rec = json.loads(raw)
                    rec.update(changes)
                    rec["gen"] = secrets.token_hex(8)
                    pipe.multi()
                    pipe.hset(self.keys.users, name, json.dumps(rec))
                    pipe.execute()
                    return User(name, tuple(rec["roles"]), rec["gen"], rec.get("created", 0.0))
                except redis.WatchError:
                    continue

    def set_password(self, name: str, password_hash: str) -> User:
        """New password (its hash); every existing login session of the user ends."""
        return self._update(name, password=_check_hash(password_hash))

    def set_roles(self, name: str, roles: Any) -> User:
        return self._update(name, roles=list(check_roles(roles)))

    def remove_user(self, name: str) -> bool:
        removed = bool(self.client.hdel(self.keys.users, name))
        if removed:  # drop the user from access rules too, so a re-created name starts clean
            for dashboard, rule in self.access_rules().items():
                if name in rule.users:
                    self.revoke_access(dashboard, users=[name])
        return removed

    def list_users(self) -> list[User]:
        out = []
        for k, v in sorted(self.client.hgetall(self.keys.users).items()):
            rec = json.loads(v)
            out.append(User(k.decode(), tuple(rec["roles"]), rec.get("gen", ""), rec.get("created", 0.0)))
        return out

    def credentials(self, name: str) -> tuple[User, str] | None:
        """The user and their stored password hash (None: no such user), for
        :func:`app.passwords.authenticate`."""
        rec = self._load_user(name) if isinstance(name, str) and name else None
        if rec is None:
            return None
        user = User(name, tuple(rec["roles"]), rec.get("gen", ""), rec.get("created", 0.0))
        return user, rec.get("password") or ""

    # --- dashboard access ----------------------------------------------------------
    def access_rules(self) -> dict[str, Rule]:
        out = {}
        for k, v in sorted(self.client.hgetall(self.keys.access).items()):
            rec = json.loads(v)
            out[k.decode()] = Rule(tuple(rec.get("users", ())), tuple(rec.get("roles", ())))
        return out

    def _edit_rule(self, dashboard: str, users: Any, roles: Any, add: bool) -> Rule:
        if dashboard != "*":
            check_dashboard_name(dashboard)
        users = [check_username(u) for u in users or ()]
        roles = list(check_roles(roles)) if roles else []
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self.keys.access)
                    raw = pipe.hget(self.keys.access, dashboard)
                    rec = json.loads(raw) if raw else {"users": [], "roles": []}
                    for key, vals in (("users", users), ("roles", roles)):
                        cur = list(rec.get(key, []))
                        if add:
                            cur += [v for v in vals if v not in cur]
                        else:
                            cur = [v for v in cur if v not in vals]
                        rec[key] = cur
                    pipe.multi()
                    if rec["users"] or rec["roles"]:
                        pipe.hset(self.keys.access, dashboard, json.dumps(rec))
                    else:
                        pipe.hdel(self.keys.access, dashboard)
                    pipe.execute()
                    return Rule(tuple(rec["users"]), tuple(rec["roles"]))
                except redis.WatchError:
                    continue

    def grant_access(self, dashboard: str, users: Any = (), roles: Any = ()) -> Rule:
        """Let ``users`` and holders of ``roles`` view ``dashboard`` (``*`` = all)."""
        if not users and not roles:
            raise AccountError("name at least one user or role")
        return self._edit_rule(dashboard, users, roles, add=True)

    def revoke_access(self, dashboard: str, users: Any = (), roles: Any = ()) -> Rule:
        return self._edit_rule(dashboard, users, roles, add=False)

    def can_view(self, user: User | None, dashboard: str) -> bool:
        if user is None:
            return False
        if user.has_role("admin"):
            return True
        raws = self.client.hmget(self.keys.access, [dashboard, "*"])
        rules = {key: json.loads(raw) for key, raw in zip((dashboard, "*"), raws, strict=False) if raw}
        return may_view(user.name, user.effective_roles, dashboard, rules)

    def viewable(self, user: User | None, dashboards: Any) -> list[str]:
        """The subset of ``dashboards`` that ``user`` may view (one round trip)."""
        if user is None:
            return []
        names = list(dashboards)
        if user.has_role("admin"):
            return names
        rules = {k: {"users": r.users, "roles": r.roles} for k, r in self.access_rules().items()}
        roles = user.effective_roles
        if may_view(user.name, roles, "*", rules):
            return names
        return [n for n in names if may_view(user.name, roles, n, rules)]

    # --- API tokens ------------------------------------------------------------------
    def create_token(self, name: str, dashboards: Any,
                     expires_in: float | None = None) -> tuple[str, Token]:
        """A new token for ``dashboards`` (``*`` = all): returns (secret, record).

        ``expires_in`` seconds from now it stops working (None: never).  Only the SHA-256
        of the secret is stored; the caller shows the secret once.
        """
        if expires_in is not None and not expires_in > 0:
            raise AccountError("a token's lifetime must be positive")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise AccountError("token name: 1-100 characters")
        dashboards = tuple(dict.fromkeys(dashboards))
        if not dashboards:
            raise AccountError("a token needs at least one dashboard (or '*')")
        for d in dashboards:
            if d != "*":
                check_dashboard_name(d)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hash_token(secret)
        now = time.time()
        expires = now + expires_in if expires_in is not None else None
        tok = Token(id=digest[:12], name=name, dashboards=dashboards, created=now, expires=expires)
        rec = {"id": tok.id, "name": name, "dashboards": list(dashboards), "created": tok.created,
               "revoked": None, "expires": expires}
        self.client.hset(self.keys.tokens, digest, json.dumps(rec))
        return secret, tok

    def _token(self, digest: str, raw: bytes, used: bytes | None) -> Token:
        rec = json.loads(raw)
        return Token(rec["id"], rec["name"], tuple(rec["dashboards"]), rec["created"],
                     rec.get("revoked"), float(used) if used else None, rec.get("expires"))

    def verify_token(self, secret: str, touch: bool = True) -> Token | None:
        """The live token record for ``secret`` (None if unknown, revoked or expired;
        :meth:`token_refusal` says which).  ``touch`` records the last-used time.
        """
        if not isinstance(secret, str) or not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        digest = hash_token(secret)
        raw = self.client.hget(self.keys.tokens, digest)
        if not raw:
            return None
        tok = self._token(digest, raw, None)
        if tok.revoked or tok.expired:
            return None
        if touch:
            now = time.time()
            self.client.hset(self.keys.tokens_used, digest, repr(now))
            tok = Token(tok.id, tok.name, tok.dashboards, tok.created, None, now, tok.expires)
        return tok

    def token_refusal(self, secret: str) -> str:
        """Why :meth:`verify_token` refused ``secret``, for the 401 message."""
        raw = None
        if isinstance(secret, str) and secret.startswith(TOKEN_PREFIX) and len(secret) <= 200:
            raw = self.client.hget(self.keys.tokens, hash_token(secret))
        if not raw:
            return "invalid or revoked token"
        tok = self._token("", raw, None)
        if tok.revoked:
            return "invalid or revoked token"
        if tok.expired:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(tok.expires or 0))
            return f"token {tok.name!r} expired at {when}; create a new one (fleetctl tokens create)"
        return "invalid or revoked token"

    def list_tokens(self) -> list[Token]:
        raw = self.client.hgetall(self.keys.tokens)
        used = self.client.hgetall(self.keys.tokens_used)
        toks = [self._token(k.decode(), v, used.get(k)) for k, v in raw.items()]
        return sorted(toks, key=lambda t: t.created)

    def revoke_token(self, ident: str, *, exact_id: bool = False) -> list[Token]:
        """Revoke tokens whose id (or id prefix of 6+ chars) or name is ``ident``; with
        ``exact_id`` only the token whose whole id is ``ident`` (the admin page's button)."""
        out = []
        for k, v in self.client.hgetall(self.keys.tokens).items():
            rec = json.loads(v)
            if rec.get("revoked"):
                continue
            if exact_id:
                hit = rec["id"] == ident
            else:
                hit = rec["name"] == ident or (len(ident) >= 6 and rec["id"].startswith(ident))
            if hit:
                rec["revoked"] = time.time()
                self.client.hset(self.keys.tokens, k, json.dumps(rec))
                out.append(self._token(k.decode(), json.dumps(rec).encode(), None))
        return out

    # --- web login sessions (server side) ---------------------------------------------
    def _websession_key(self, sid: str) -> str:
        return self.keys.websession(hash_token(sid))

    def open_web_session(self, user: str, ttl: int) -> str:
        """A new server-side login session for ``user``; returns its id (kept in the
        signed Flask cookie, only its hash in Redis)."""
        sid = secrets.token_urlsafe(24)
        self.client.set(self._websession_key(sid), user, ex=max(1, int(ttl)))
        return sid

    def web_session_live(self, sid: Any, user: str, ttl: int | None = None) -> bool:
        """Whether login session ``sid`` of ``user`` is still open (not logged out);
        ``ttl`` extends its lifetime (the cookie's lifetime slides with use)."""
        if not isinstance(sid, str) or not sid or len(sid) > 100:
            return False
        key = self._websession_key(sid)
        raw = self.client.getex(key, ex=max(1, int(ttl))) if ttl else self.client.get(key)
        return raw is not None and raw.decode("utf-8", "replace") == user

    def close_web_session(self, sid: Any) -> None:
        """Logout: the session id (and any copy of the cookie holding it) stops working."""
        if isinstance(sid, str) and sid and len(sid) <= 100:
            self.client.delete(self._websession_key(sid))


def _check_hash(password_hash: Any) -> str:
    # a hash, never a password: werkzeug's format is "method$salt$hash"
    if not isinstance(password_hash, str) or password_hash.count("$") < 2:
        raise AccountError("internal: the account store takes a password hash (app.passwords.hash_password)")
    return password_hash
