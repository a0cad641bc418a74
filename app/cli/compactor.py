"""fleetctl compactor: the snapshot writer and stream trimmer (run one or more;
a Redis lock makes exactly one of them write)."""

from __future__ import annotations

import asyncio
import logging
import signal


def cmd_compactor(args, cfg):
    from app.bus.compactor import Compactor

    overrides = {}
    if args.every_commands:
        overrides["snapshot_every_commands"] = args.every_commands
    if args.every_seconds:
        overrides["snapshot_every_seconds"] = args.every_seconds
    if overrides:
        import dataclasses

        cfg = dataclasses.replace(cfg, **overrides)
    compactor = Compactor(cfg)
    logging.getLogger("fleet").info(
        "compactor %s: snapshots every %d commands or %.1fs, Redis %s", compactor.owner,
        cfg.snapshot_every_commands, cfg.snapshot_every_seconds, cfg.redis_url_redacted)

    async def main() -> None:
        from app.metrics.compactor import serve

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, compactor.stop)
        port = cfg.compactor_metrics_port_effective
        server = serve(compactor, cfg.web_host, port, cfg.metrics_allow)  # a port in use: exit, say why
        logging.getLogger("fleet").info("compactor metrics on http://%s:%d/metrics", cfg.web_host, port)
        try:
            await compactor.run()
        finally:
            server.stop()

    asyncio.run(main())
    return 0


def register(sub) -> None:
    """Add the compactor command."""
    from app.cli import add_program_parser

    p = add_program_parser(sub, "compactor",
                           help="write snapshots and trim command streams (leader-elected)")
    p.add_argument("--every-commands", type=int,
                   help="snapshot after this many commands (default from FLEET_SNAPSHOT_EVERY_COMMANDS, 1000)")
    p.add_argument("--every-seconds", type=float, help="snapshot at least this often when there are new commands "
                   "(default from FLEET_SNAPSHOT_EVERY_SECONDS, 10)")
    p.set_defaults(handler=cmd_compactor)
