"""fleetctl instance: run one Bokeh server instance (one process per port under supervisord)."""

from __future__ import annotations

import argparse

from app.settings import Settings


def register(sub) -> None:
    """Add the ``instance`` subcommand."""
    from app.cli import add_program_parser

    p = add_program_parser(
        sub, "instance",
        help="run one Bokeh instance (sessions, fan-out from Redis, /healthz, /metrics)",
        description="Run one Bokeh server instance: app at <prefix>/dashboard, session ids "
        "external-signed with FLEET_SECRET_KEY, one Redis reader feeding every session. "
        "Stops cleanly on SIGTERM.",
    )
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on (instance N: 5100+N)")
    p.add_argument("--host", default=None, help="address to bind (default: $FLEET_BOKEH_HOST or 127.0.0.1)")
    p.set_defaults(handler=run_instance)


def run_instance(args: argparse.Namespace, settings: Settings) -> int:
    from app.instance.server import run

    return run(settings, args.port, args.host or settings.bokeh_host)
