"""Redis ACL users of controllers: one per controller, allowed to XADD to its own
dashboards' command streams and to read those dashboards' keys, nothing else.

``fleetctl controllers add|list|remove`` (app/cli/controllers.py) drive this with the
admin user's connection.  Users are named ``ctl-<name>`` (the role users of the
programs come from app/stack/templates/redis.acl.j2) and are persisted with
``ACL SAVE`` (the stack's Redis has an aclfile), else ``CONFIG REWRITE``.

What :class:`app.client.Controller` needs, and what the rules grant:

* ``XADD`` to ``<prefix>:{<dashboard>}:commands`` (publish, in ``MULTI``/``EXEC``);
* reads of ``<prefix>:{<dashboard>}:*`` (``state()``: snapshot + ``XRANGE``;
  ``rejected()``: ``XREVRANGE`` of the rejected stream);
* ``HEXISTS <prefix>:dashboards`` (the registry check before publishing) and
  ``GET <prefix>:epoch``, each as an ACL selector naming that one command, so the
  user cannot read the registry's contents, the users hash or any other key.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from app.bus.keys import Keys, check_dashboard_name

log = logging.getLogger(__name__)

USER_PREFIX = "ctl-"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
#: commands a controller user may run (besides AUTH/HELLO/PING/SELECT & co. of @connection)
COMMANDS = ("xadd", "xrange", "xrevrange", "xread", "xlen", "xinfo|stream", "get",
            "multi", "exec", "discard")


class AclError(ValueError):
    """A controller user cannot be created/removed; the message says why."""


@dataclass(frozen=True)
class ControllerUser:
    name: str               # without the ctl- prefix
    dashboards: tuple[str, ...]
    enabled: bool


def user_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise AclError(f"invalid controller name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
    return USER_PREFIX + name


def controller_rules(keys: Keys, dashboards: list[str], password: str) -> list[str]:
    """``ACL SETUSER`` rules: XADD to the dashboards' streams, read their keys, nothing else."""
    p = keys.prefix
    rules = ["reset", "on", "#" + hashlib.sha256(password.encode()).hexdigest(), "resetchannels",
             "-@all", "+@connection", "-@dangerous", *(f"+{c}" for c in COMMANDS)]
    for d in dashboards:
        check_dashboard_name(d)
        rules += [f"%R~{p}:{{{d}}}:*", f"~{keys.commands(d)}"]
    rules += [f"(%R~{keys.dashboards} +hexists)", f"(%R~{keys.epoch} +get)"]
    return rules


def persist(client: redis.Redis) -> str:
    """Save the ACL so that it survives a Redis restart; returns how ('' = could not)."""
    for how, cmd in (("ACL SAVE", ("ACL", "SAVE")), ("CONFIG REWRITE", ("CONFIG", "REWRITE"))):
        try:
            client.execute_command(*cmd)
            return how
        except redis.ResponseError:
            continue
    return ""


def _exists(client: redis.Redis, user: str) -> bool:
    return client.execute_command("ACL", "GETUSER", user) is not None


def add_controller(client: redis.Redis, keys: Keys, name: str, dashboards: list[str],
                   *, require_existing: bool = True,
                   replicas: Sequence[redis.Redis] = ()) -> tuple[str, str, str]:
    """Create ``ctl-<name>``; returns (user, password, how it was persisted).

    ``replicas`` (:func:`app.bus.connection.replica_clients`): ACL users are not
    replicated, so the same user is set (and saved) on each, to survive a failover."""
    user = user_name(name)
    if not dashboards:
        raise AclError("name at least one dashboard (--dashboard NAME)")
    for d in dashboards:
        check_dashboard_name(d)
        if require_existing and not client.hexists(keys.dashboards, d):
            raise AclError(f"no dashboard {d!r} (create it first: fleetctl dashboard create {d})")
    if _exists(client, user):
        raise AclError(f"controller {name!r} exists: remove it first (fleetctl controllers remove {name})")
    password = secrets.token_urlsafe(32)
    rules = controller_rules(keys, dashboards, password)
    client.execute_command("ACL", "SETUSER", user, *rules)
    how = persist(client)
    _on_replicas(replicas, lambda r: r.execute_command("ACL", "SETUSER", user, *rules))
    return user, password, how


def remove_controller(client: redis.Redis, name: str, *,
                      replicas: Sequence[redis.Redis] = ()) -> str:
    """Delete ``ctl-<name>`` (its open connections are closed by Redis), on the master and
    on each of ``replicas``; returns how it was saved."""
    user = user_name(name)
    if not client.execute_command("ACL", "DELUSER", user):
        raise AclError(f"no controller {name!r} (see fleetctl controllers list)")
    how = persist(client)
    _on_replicas(replicas, lambda r: r.execute_command("ACL", "DELUSER", user))
    return how


def _on_replicas(replicas: Sequence[redis.Redis], change) -> None:
    """Apply an ACL change on each replica and save it there.  A replica that is down
    (e.g. the old master, until it rejoins) is skipped with a warning: it gets the
    change from the aclfile (`fleetctl controllers reload` on it) when it is back."""
    for replica in replicas:
        try:
            change(replica)
            persist(replica)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            kw = replica.connection_pool.connection_kwargs
            log.warning("replica %s:%s not reached (%s): apply the controller ACL change there "
                        "when it is back (fleetctl controllers reload)", kw.get("host"), kw.get("port"), exc)


def list_controllers(client: redis.Redis, keys: Keys) -> list[ControllerUser]:
    """Every ``ctl-`` user with the dashboards whose command stream it may write."""
    out = []
    stream = re.compile(r"^~" + re.escape(keys.prefix) + r":\{(.+)\}:commands$")
    for raw in client.execute_command("ACL", "LIST"):
        line = raw.decode() if isinstance(raw, bytes) else str(raw)
        parts = line.split()
        if len(parts) < 2 or parts[0] != "user" or not parts[1].startswith(USER_PREFIX):
            continue
        dashboards = tuple(m.group(1) for tok in parts if (m := stream.match(tok)))
        out.append(ControllerUser(parts[1][len(USER_PREFIX):], dashboards, "on" in parts[2:]))
    return sorted(out, key=lambda u: u.name)
