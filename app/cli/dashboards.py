"""fleetctl commands for dashboards and commands: dashboard, publish, state, rejected, tail."""

from __future__ import annotations

import argparse
import json
import sys
import time

from app.bus import registry
from app.bus.connection import sync_client
from app.bus.keys import Keys
from app.bus.publisher import publish
from app.bus.registry import UnknownDashboard
from app.bus.store import read_rejected, read_state
from app.control import snapshot
from app.control.protocol import OP_FIELDS, OPS, Limits
from app.settings import Settings

PUBLISH_EPILOG = """\
fields are KEY=VALUE pairs, exactly the stream entry's fields (see docs/protocol.md):
  fleetctl publish demo replace name=prices kind=line data='{"t":[1,2],"y":[3,4]}'
  fleetctl publish demo stream name=prices data='{"t":[3],"y":[5]}'
  fleetctl publish demo layout rows='[["prices","volume"]]'
  KEY=@FILE reads the value from a file (e.g. arrow=@frame.arrow).
fields per op:
""" + "\n".join(f"  {op}: {', '.join(sorted(OP_FIELDS[op]))} (+ id, ts)" for op in OPS)


def _client(cfg: Settings):
    return sync_client(cfg), Keys(cfg.key_prefix)


def _errors(fn):
    """Invalid dashboard names (ValueError) as one-line messages; Redis errors, unknown
    dashboards and rejected commands are app.cli.main's."""
    from app.cli import CliError

    def wrapped(args, cfg):
        try:
            return fn(args, cfg)
        except ValueError as exc:
            raise CliError(str(exc)) from None

    return wrapped


@_errors
def cmd_create(args, cfg):
    client, keys = _client(cfg)
    created = registry.create_dashboard(client, keys, args.name, args.title or "")
    print(f"dashboard {args.name} {'created' if created else 'already exists'}")
    return 0


@_errors
def cmd_list(args, cfg):
    client, keys = _client(cfg)
    boards = registry.list_dashboards(client, keys)
    if args.json:
        print(json.dumps(boards, indent=2))
    elif not boards:
        print("no dashboards (create one with: fleetctl dashboard create NAME)")
    else:
        for name, meta in boards.items():
            length = client.xlen(keys.commands(name))
            print(f"{name}\t{meta.get('title', '')}\t{length} entries in stream")
    return 0


@_errors
def cmd_delete(args, cfg):
    from app.cli import CliError

    client, keys = _client(cfg)
    if not args.yes:
        raise CliError(f"deleting {args.name} drops its command log and snapshot; add --yes to confirm")
    if not registry.delete_dashboard(client, keys, args.name):
        raise UnknownDashboard(args.name)
    print(f"dashboard {args.name} deleted")
    return 0


def _parse_fields(pairs: list[str]) -> dict[str, bytes | str]:
    from app.cli import CliError

    fields: dict[str, bytes | str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"field {pair!r} is not KEY=VALUE")
        if value.startswith("@"):
            try:
                with open(value[1:], "rb") as fh:
                    fields[key] = fh.read()
            except OSError as exc:
                raise CliError(f"field {key}: {exc}") from None
        else:
            fields[key] = value
    return fields


@_errors
def cmd_publish(args, cfg):
    client, keys = _client(cfg)
    fields = {"op": args.op, **_parse_fields(args.fields)}
    fields.setdefault("ts", f"{time.time() * 1000:.3f}")
    entry_id = publish(client, keys, args.dashboard, fields, Limits.from_settings(cfg),
                       durability=cfg.redis_durability, wait_ms=cfg.redis_wait_ms)
    print(entry_id)
    return 0


@_errors
def cmd_state(args, cfg):
    client, keys = _client(cfg)
    state, last_id = read_state(client, keys, args.dashboard, cfg)
    view = snapshot.view(state)
    view["last_id"] = last_id
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    print(f"dashboard {args.dashboard} at {last_id}: {state.applied} commands applied, digest {view['digest'][:16]}")
    if state.title:
        print(f"title: {state.title}")
    print(f"layout ({state.layout_mode}): {json.dumps([list(g) for g in state.layout])}")
    for fig in state.figures.values():
        cols = ", ".join(fig.data) if fig.kind != "model" else "bokeh model"
        print(f"  {fig.name}: {fig.kind}, {fig.length} rows [{cols}] {fig.title!r}")
    return 0


@_errors
def cmd_rejected(args, cfg):
    client, keys = _client(cfg)
    registry.require_dashboard(client, keys, args.dashboard)
    items = read_rejected(client, keys, args.dashboard, args.count)
    if args.json:
        print(json.dumps(items, indent=2))
    elif not items:
        print(f"no rejected commands on {args.dashboard}")
    for item in [] if args.json else items:
        fields = " ".join(f"{k}={v[:60]!s}" for k, v in item["fields"].items())
        print(f"{item['id']}  {item['reason']}\n    {fields}")
    return 0


@_errors
def cmd_tail(args, cfg):
    client, keys = _client(cfg)
    registry.require_dashboard(client, keys, args.dashboard)
    key = keys.commands(args.dashboard)
    last = "$"
    if args.last:
        entries = list(reversed(client.xrevrange(key, count=args.last)))
        for eid, fields in entries:
            _print_entry(eid, fields)
        if entries:
            last = entries[-1][0]
    try:
        while True:
            reply = client.xread({key: last}, block=cfg.block_ms, count=100)
            for _k, entries in reply or []:
                for eid, fields in entries:
                    _print_entry(eid, fields)
                    last = eid
            if args.once:
                return 0
    except KeyboardInterrupt:
        return 0


def _print_entry(eid: bytes, fields: dict) -> None:
    text = " ".join(f"{k.decode('utf-8', 'replace')}={v[:120].decode('utf-8', 'replace')}" for k, v in fields.items())
    print(f"{eid.decode()}  {text}", flush=True)
    sys.stdout.flush()


def register(sub) -> None:
    """Add dashboard, publish, state, rejected, tail."""
    d = sub.add_parser("dashboard", help="create, list or delete dashboards")
    dsub = d.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = dsub.add_parser("create", help="register a dashboard (instances pick it up within a second)")
    p.add_argument("name", help="1-64 letters, digits, '_', '.', '-'")
    p.add_argument("--title", help="title shown in the index (default: the name)")
    p.set_defaults(handler=cmd_create)
    p = dsub.add_parser("list", help="list dashboards and their stream lengths")
    p.add_argument("--json", action="store_true", help="name -> metadata as JSON")
    p.set_defaults(handler=cmd_list)
    p = dsub.add_parser("delete", help="delete a dashboard, its command log and snapshot")
    p.add_argument("name", help="the dashboard")
    p.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(handler=cmd_delete)

    p = sub.add_parser("publish", help="validate and publish one command",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=PUBLISH_EPILOG)
    p.add_argument("dashboard", help="an existing dashboard")
    p.add_argument("op", choices=OPS, help="the command's op (see below)")
    p.add_argument("fields", nargs="*", metavar="KEY=VALUE", help="the entry's fields (see below)")
    p.set_defaults(handler=cmd_publish)

    p = sub.add_parser("state", help="the current folded state of a dashboard")
    p.add_argument("dashboard", help="an existing dashboard")
    p.add_argument("--json", action="store_true", help="full state as JSON (columns as lists)")
    p.set_defaults(handler=cmd_state)

    p = sub.add_parser("rejected", help="rejected commands of a dashboard, newest first, with reasons")
    p.add_argument("dashboard", help="an existing dashboard")
    p.add_argument("-n", "--count", type=int, default=20, help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="as a JSON list")
    p.set_defaults(handler=cmd_rejected)

    p = sub.add_parser("tail", help="follow a dashboard's command stream")
    p.add_argument("dashboard", help="an existing dashboard")
    p.add_argument("-n", "--last", type=int, default=0, help="print the last N entries first")
    p.add_argument("--once", action="store_true", help="stop after the first wait")
    p.set_defaults(handler=cmd_tail)
