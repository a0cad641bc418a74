"""fleetctl commands: ``users``, ``tokens`` and ``access`` (the web app's accounts).

Passwords come from a prompt (twice, not echoed) or, with ``--password-stdin``, from
the first line of standard input - never from argv, where ``ps`` and shell history
would keep them.  ``tokens create`` prints the new token once; only its hash is kept.
"""

from __future__ import annotations

import datetime as dt
import getpass
import re
import sys

from app.bus.accounts import AccountError, Accounts
from app.bus.connection import sync_client
from app.bus.keys import Keys
from app.cli import CliError
from app.control.roles import ROLES
from app.passwords import hash_password


def _accounts(cfg) -> Accounts:
    return Accounts(sync_client(cfg), Keys(cfg.key_prefix))


def _read_password(args) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        pw = line.rstrip("\r\n")
        if not pw:
            raise CliError("no password on standard input")
        return pw
    if not sys.stdin.isatty():
        raise CliError("standard input is not a terminal: use --password-stdin")
    pw = getpass.getpass("Password: ")
    if pw != getpass.getpass("Password (again): "):
        raise CliError("passwords differ")
    return pw


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


# --- users -----------------------------------------------------------------------------
def users_add(args, cfg) -> int:
    pw = _read_password(args)
    try:
        user = _accounts(cfg).add_user(args.name, hash_password(pw), args.role or ["viewer"])
    except AccountError as exc:
        raise CliError(str(exc)) from None
    print(f"user {user.name} added ({', '.join(user.roles)})")
    return 0


def users_passwd(args, cfg) -> int:
    acc = _accounts(cfg)
    if acc.get_user(args.name) is None:
        raise CliError(f"no user {args.name!r} ('fleetctl users list' shows them)")
    pw = _read_password(args)
    try:
        acc.set_password(args.name, hash_password(pw))
    except AccountError as exc:
        raise CliError(str(exc)) from None
    print(f"password of {args.name} changed; their sessions ended")
    return 0


def users_roles(args, cfg) -> int:
    try:
        user = _accounts(cfg).set_roles(args.name, args.role)
    except AccountError as exc:
        raise CliError(str(exc)) from None
    print(f"user {user.name}: {', '.join(user.roles)}; their sessions ended")
    return 0


def users_remove(args, cfg) -> int:
    if not _accounts(cfg).remove_user(args.name):
        raise CliError(f"no user {args.name!r} ('fleetctl users list' shows them)")
    print(f"user {args.name} removed")
    return 0


def users_list(args, cfg) -> int:
    for u in _accounts(cfg).list_users():
        print(f"{u.name}\t{','.join(u.roles)}\t{_when(u.created)}")
    return 0


# --- tokens ----------------------------------------------------------------------------
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_lifetime(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*([0-9]{1,9})\s*([smhdw]?)\s*", text or "")
    if not m or int(m.group(1)) <= 0:
        raise CliError(f"--expires {text!r}: use a positive lifetime like 30d, 12h, 90m or 3600 (seconds)")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def tokens_create(args, cfg) -> int:
    lifetime = parse_lifetime(args.expires) if args.expires else None
    try:
        secret, tok = _accounts(cfg).create_token(args.name, args.dashboard, expires_in=lifetime)
    except (AccountError, ValueError) as exc:
        raise CliError(str(exc)) from None
    until = f", expires {_when(tok.expires)}" if tok.expires else ""
    print(f"token {tok.id} ({tok.name}) for {', '.join(tok.dashboards)}{until}; shown only now:",
          file=sys.stderr)
    print(secret)
    return 0


def tokens_list(args, cfg) -> int:
    print("id\tname\tdashboards\tcreated\tlast used\tstatus")
    for t in _accounts(cfg).list_tokens():
        status = (f"revoked {_when(t.revoked)}" if t.revoked else
                  f"expired {_when(t.expires)}" if t.expired else
                  f"active until {_when(t.expires)}" if t.expires else "active")
        if t.revoked and not args.all:
            continue
        print(f"{t.id}\t{t.name}\t{','.join(t.dashboards)}\t{_when(t.created)}\t"
              f"{_when(t.last_used)}\t{status}")
    return 0


def tokens_revoke(args, cfg) -> int:
    revoked = _accounts(cfg).revoke_token(args.token)
    if not revoked:
        raise CliError(f"no active token with id or name {args.token!r} ('fleetctl tokens list' shows them)")
    for t in revoked:
        print(f"revoked {t.id} ({t.name})")
    return 0


# --- access ----------------------------------------------------------------------------
def access_grant(args, cfg) -> int:
    try:
        rule = _accounts(cfg).grant_access(args.dashboard, args.user or (), args.role or ())
    except (AccountError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"{args.dashboard}: users {', '.join(rule.users) or '-'}; roles {', '.join(rule.roles) or '-'}")
    return 0


def access_revoke(args, cfg) -> int:
    try:
        rule = _accounts(cfg).revoke_access(args.dashboard, args.user or (), args.role or ())
    except (AccountError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"{args.dashboard}: users {', '.join(rule.users) or '-'}; roles {', '.join(rule.roles) or '-'}")
    return 0


def access_list(args, cfg) -> int:
    for name, rule in _accounts(cfg).access_rules().items():
        print(f"{name}\tusers={','.join(rule.users) or '-'}\troles={','.join(rule.roles) or '-'}")
    return 0


def register(sub) -> None:
    """Add ``users``, ``tokens`` and ``access`` to fleetctl."""
    # users
    p = sub.add_parser("users", help="web users and their roles",
                       description=f"Users of the web app. Roles: {', '.join(ROLES)} "
                                   "(viewer < controller < admin: each implies the ones before it; display "
                                   "stands alone: a wall display that may only view, always in kiosk mode).")
    us = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def pw_opt(q) -> None:
        q.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of stdin (else: prompt)")

    q = us.add_parser("add", help="add a user (password from a prompt or --password-stdin)")
    q.add_argument("name", help="user name (letters, digits, '_.@+-')")
    q.add_argument("--role", action="append", choices=ROLES,
                   help="viewer (default), controller, admin, display (repeat)")
    pw_opt(q)
    q.set_defaults(handler=users_add)
    q = us.add_parser("passwd", help="set a new password (ends the user's sessions)")
    q.add_argument("name", help="an existing user")
    pw_opt(q)
    q.set_defaults(handler=users_passwd)
    q = us.add_parser("roles", help="replace a user's roles")
    q.add_argument("name", help="an existing user")
    q.add_argument("--role", action="append", choices=ROLES, required=True, help="new role (repeat)")
    q.set_defaults(handler=users_roles)
    q = us.add_parser("remove", help="remove a user")
    q.add_argument("name", help="an existing user")
    q.set_defaults(handler=users_remove)
    q = us.add_parser("list", help="list users")
    q.set_defaults(handler=users_list)

    # tokens
    p = sub.add_parser("tokens", help="API tokens for HTTP controllers")
    ts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = ts.add_parser("create", help="create a token; prints it once")
    q.add_argument("--dashboard", action="append", required=True,
                   help="dashboard the token may publish to (repeat; '*' = all)")
    q.add_argument("--name", required=True, help="a label, e.g. the controller's name")
    q.add_argument("--expires", metavar="LIFETIME",
                   help="stop working after this long: 30d, 12h, 90m, 3600 (seconds); default never")
    q.set_defaults(handler=tokens_create)
    q = ts.add_parser("list", help="list tokens (never the secrets)")
    q.add_argument("--all", action="store_true", help="include revoked tokens")
    q.set_defaults(handler=tokens_list)
    q = ts.add_parser("revoke", help="revoke tokens by id (prefix of 6+) or name")
    q.add_argument("token", help="token id (6+ characters of it) or name")
    q.set_defaults(handler=tokens_revoke)

    # access
    p = sub.add_parser("access", help="who may view which dashboard")
    acs = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, handler, helptext in (("grant", access_grant, "let users/roles view a dashboard"),
                                      ("revoke", access_revoke, "take access away")):
        q = acs.add_parser(action, help=helptext)
        q.add_argument("--dashboard", required=True, help="dashboard name, or '*' for all")
        q.add_argument("--user", action="append", help="user name (repeat)")
        q.add_argument("--role", action="append", choices=ROLES, help="role (repeat)")
        q.set_defaults(handler=handler)
    q = acs.add_parser("list", help="list access rules")
    q.set_defaults(handler=access_list)
