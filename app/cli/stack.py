"""fleetctl commands of the deployable stack: render, secrets, events-listener, demo-controller."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from app.settings import Settings


def cmd_render(args, cfg: Settings) -> int:
    from app.cli import CliError
    from app.stack import render

    var_dir = Path(args.out) if args.out else None
    try:
        ctx, written = render.render_site(cfg, var_dir=var_dir)
    except render.RenderError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        safe = {k: v for k, v in ctx.items()
                if k not in ("env", "redis_password", "redis_urls", "redis_users", "redis_acl_keep")}
        print(json.dumps({"context": safe, "written": {k: str(v) for k, v in written.items()}}, indent=2))
    else:
        for path in written.values():
            print(path)
        print(f"{ctx['instances']} Bokeh instance(s) on ports "
              f"{ctx['upstream'][0].rsplit(':', 1)[1]}..{ctx['upstream'][-1].rsplit(':', 1)[1]}",
              file=sys.stderr)
    return 0


def cmd_secrets(args, cfg: Settings) -> int:
    from app.stack.secrets import ensure_secrets

    var = Path(args.out) if args.out else cfg.var_dir
    values = ensure_secrets(var / "secrets.env")
    if args.get:
        print(values[args.get])
    else:
        print(var / "secrets.env")
    return 0


def cmd_events_listener(args, cfg: Settings) -> int:
    from app.stack import events

    return events.main(cfg)


def cmd_events(args, cfg: Settings) -> int:
    from app.bus import process_events
    from app.bus.connection import sync_client
    from app.bus.keys import Keys

    rows = process_events.recent(sync_client(cfg), Keys(cfg.key_prefix), args.count)
    for row in reversed(rows):
        print(json.dumps(row) if args.json else
              f"{row['id']}  {row.get('process', ''):<20} {row.get('from_state', '')} -> "
              f"{row.get('event', '').removeprefix('PROCESS_STATE_')}  pid={row.get('pid', '-')}")
    return 0


def cmd_health(args, cfg: Settings) -> int:
    from app.stack import health

    instances = args.instance or None
    found = health.wait_healthy(cfg, args.wait, instances=instances,
                                site=not args.instance, supervisor=not args.instance)
    for line in found:
        print(line, file=sys.stderr)
    if not found:
        print("healthy")
    return 1 if found else 0


def cmd_demo_controller(args, cfg: Settings) -> int:
    from app.stack import demo

    return demo.main(cfg, interval=args.interval)


def register(sub) -> None:
    """Add this group's subcommands to sub."""
    p = sub.add_parser("render", help="render supervisord/nginx/redis configs from FLEET_INSTANCES & co.")
    p.add_argument("--out", help="var directory to render into (default: $FLEET_VAR_DIR or var/)")
    p.add_argument("--json", action="store_true", help="print the template context (without secrets)")
    p.set_defaults(handler=cmd_render)

    p = sub.add_parser("secrets", help="generate missing secrets into var/secrets.env (mode 0600)")
    p.add_argument("--out", help="var directory (default: $FLEET_VAR_DIR or var/)")
    p.add_argument("--get", metavar="NAME", help="print one secret, e.g. DEMO_PASSWORD")
    p.set_defaults(handler=cmd_secrets)

    p = sub.add_parser("events-listener", help="supervisord event listener (run by supervisord only)")
    p.set_defaults(handler=cmd_events_listener)

    p = sub.add_parser("events", help="recent supervisord process state changes recorded in Redis")
    p.add_argument("-n", "--count", type=int, default=30)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_events)

    p = sub.add_parser("health", help="check supervisord, every instance's /healthz and the site")
    p.add_argument("--instance", type=int, action="append", help="only this instance (repeat)")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="keep checking up to SECONDS")
    p.set_defaults(handler=cmd_health)

    p = sub.add_parser("demo-controller", help="feed dashboard 'demo' with a live signal (demo mode)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between points (default 0.5)")
    p.set_defaults(handler=cmd_demo_controller)
