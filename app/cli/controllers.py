"""fleetctl controllers add|list|remove: Redis ACL users for controllers.

``add`` prints a Redis URL (shown once; Redis keeps only a hash of the password)
whose user may only XADD to the named dashboards' command streams and read those
dashboards' keys: enough for :class:`app.client.Controller` and ``redis-cli XADD``.
Run with the admin Redis URL (the stack's var/fleet.env).
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from app.bus import acl
from app.bus.connection import replica_clients, sync_client
from app.bus.keys import Keys
from app.settings import Settings


def _run(fn, args, cfg: Settings) -> int:
    from app.cli import CliError

    # Unreachable Redis, a wrong password and NOPERM are worded by fleetctl's central
    # handler (app/cli/__init__.py), like every other command's.
    try:
        return fn(args, cfg, sync_client(cfg), Keys(cfg.key_prefix))
    except (acl.AclError, ValueError) as exc:
        raise CliError(str(exc)) from None


def _url_for(cfg: Settings, user: str, password: str) -> str:
    u = urlsplit(cfg.redis_url)
    host = u.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, netloc, u.path or "/0", "", ""))


def _saved(how: str) -> str:
    return f"saved with {how}" if how else "NOT persisted (no aclfile, CONFIG REWRITE refused)"


def _add(args, cfg, client, keys) -> int:
    name = args.name or args.dashboard[0]
    user, password, how = acl.add_controller(client, keys, name, args.dashboard,
                                             require_existing=not args.allow_missing,
                                             replicas=replica_clients(cfg))
    import sys

    print(f"controller {name}: Redis user {user} may XADD to {', '.join(args.dashboard)} "
          f"({_saved(how)}); its URL (shown once):", file=sys.stderr)
    if cfg.redis_sentinels:
        print("Sentinel: the URL names today's master; a controller that follows a failover "
              f"sets FLEET_REDIS_SENTINELS={','.join(cfg.redis_sentinels)} and "
              f"FLEET_REDIS_MASTER={cfg.redis_master} (app.client.Controller reads them)",
              file=sys.stderr)
    print(_url_for(cfg, user, password))
    return 0


def _list(args, cfg, client, keys) -> int:
    for u in acl.list_controllers(client, keys):
        print(f"{u.name:<24} {'on ' if u.enabled else 'off'} {','.join(u.dashboards)}")
    return 0


def _remove(args, cfg, client, keys) -> int:
    how = acl.remove_controller(client, args.name, replicas=replica_clients(cfg))
    print(f"controller {args.name} removed ({_saved(how)})")
    return 0


def _reload(args, cfg, client, keys) -> int:
    client.execute_command("ACL", "LOAD")
    print("Redis ACL users reloaded from the aclfile")
    return 0


def register(sub) -> None:
    """Add ``controllers add|list|remove`` to fleetctl."""
    p = sub.add_parser("controllers", help="Redis ACL users for controllers (add prints a Redis URL)")
    csub = p.add_subparsers(dest="controllers_command", metavar="ACTION", required=True)
    a = csub.add_parser("add", help="create a controller user that may only XADD to DASHBOARD")
    a.add_argument("--dashboard", action="append", required=True, metavar="NAME",
                   help="dashboard it may publish to (repeat for several)")
    a.add_argument("--name", help="controller name (user ctl-NAME; default: the first dashboard)")
    a.add_argument("--allow-missing", action="store_true",
                   help="do not require the dashboards to exist yet")
    a.set_defaults(handler=lambda args, cfg: _run(_add, args, cfg))
    ls = csub.add_parser("list", help="controller users and their dashboards")
    ls.set_defaults(handler=lambda args, cfg: _run(_list, args, cfg))
    r = csub.add_parser("remove", help="delete a controller user (its connections are closed)")
    r.add_argument("name", help="controller name as 'controllers list' shows it")
    r.set_defaults(handler=lambda args, cfg: _run(_remove, args, cfg))
    ld = csub.add_parser("reload", help="ACL LOAD: apply a re-rendered aclfile (deploy/run does)")
    ld.set_defaults(handler=lambda args, cfg: _run(_reload, args, cfg))
