"""``fleetctl``: the operator's and controller's command line.

Each command group lives in its own module exposing ``register(subparsers)``; a
command's handler receives the parsed args and the :class:`app.settings.Settings`
and returns a process exit code.  Errors meant for a person are raised as
:class:`CliError` and printed without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from app import settings as settings_mod

GROUPS = (
    "app.cli.dashboards",  # dashboard create|list|delete, publish, state, rejected, tail
    "app.cli.compactor",   # compactor
    "app.cli.instance",    # instance
    "app.cli.accounts",    # users, tokens, access
    "app.cli.stack",       # render (configs from the instance count), supervisor event listener
    "app.cli.controllers", # controllers add|list|remove (Redis ACL users)
)


class CliError(Exception):
    """An error for a person: printed as ``fleetctl: error: ...`` with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetctl",
        description="Operate a Bokeh fleet: dashboards, commands, instances, users.",
        epilog="Settings come from FLEET_* environment variables (see README.md). "
        "Run 'fleetctl COMMAND --help' for a command's options.",
    )
    parser.add_argument("--redis-url", help="Redis URL (default: $FLEET_REDIS_URL or redis://127.0.0.1:6390/0)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in GROUPS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        overrides = {"redis_url": args.redis_url} if args.redis_url else {}
        cfg = settings_mod.load(**overrides)
        return int(args.handler(args, cfg) or 0)
    except (CliError, settings_mod.SettingsError) as exc:
        print(f"fleetctl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
