"""fleetctl commands of the deployable stack: info, render, secrets, events, health, and the
programs supervisord runs (events-listener, demo-controller)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from app.settings import Settings


def cmd_render(args, cfg: Settings) -> int:
    from app.cli import CliError
    from app.stack import render

    var_dir = Path(args.out) if args.out else None
    if args.check and not (args.grant or args.deployment):
        raise CliError("--check goes with --grant or --deployment")
    if args.deployment and (args.grant or args.out or args.prometheus is not None):
        raise CliError("--deployment renders the whole host: no --grant, --out or --prometheus")
    if args.grant:
        return _render_grant(cfg, args.check)
    if args.prometheus is not None:
        return _render_prometheus(args.prometheus, cfg, var_dir)
    try:
        if args.deployment:
            ctx = render.deployment_context(_read_deployment(args.deployment))
            if args.check:
                return _report_check(render.check_rendered(ctx))
            written = render.render_all(ctx)
        else:
            ctx, written = render.render_site(cfg, var_dir=var_dir)
    except (render.RenderError, OSError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        safe = {k: v for k, v in ctx.items()
                if k not in ("env", "redis_password", "redis_urls", "redis_users", "redis_acl_keep")}
        print(json.dumps({"context": safe, "written": {k: str(v) for k, v in written.items()}}, indent=2))
    else:
        for path in written.values():
            print(path)
        n, base = ctx["instances"], ctx["port_prefix"] * 100
        print(f"{n} Bokeh instance(s)" + (f" on ports {base + 1}..{base + n}" if n else " on this host"),
              file=sys.stderr)
    return 0


def _read_deployment(path: str) -> dict:
    """The deployment description (JSON object) Salt writes from its pillar."""
    from app.cli import CliError

    try:
        desc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"--deployment {path}: {exc}") from None
    if not isinstance(desc, dict):
        raise CliError(f"--deployment {path}: expected a JSON object")
    return desc


def _report_check(problems: list[str]) -> int:
    """``--check``: list what a render would change; exit 1 if anything would."""
    for line in problems:
        print(line)
    return 1 if problems else 0


def _render_prometheus(target: str, cfg: Settings, var_dir: Path | None) -> int:
    """Only the Prometheus file_sd list, from the same context as every other config:
    into ``target`` ('' = var/prometheus/targets.json, '-' = stdout)."""
    from app.cli import CliError
    from app.stack import render

    vd = var_dir or cfg.var_dir
    vd = vd if vd.is_absolute() else render.ROOT / vd
    try:
        ctx = render.build_context(cfg, render.ensure_secrets(vd / "secrets.env"), var_dir=vd)
    except render.RenderError as exc:
        raise CliError(str(exc)) from None
    text = render.prometheus_targets(ctx)
    if target == "-":
        sys.stdout.write(text)
        return 0
    path = Path(target) if target else Path(ctx["var_dir"]) / render.PROMETHEUS_OUTPUT
    try:
        render._write(path, text, 0o644)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(path)
    return 0


def _render_grant(cfg: Settings, check: bool) -> int:
    """Only the programs' user's access (``FLEET_RUN_USER``, as root): POSIX ACLs on the
    checkout, venv, Python and BokehJS this fleetctl runs from, as a full render gives
    them.  ``check``: change nothing, list what is missing, exit 1 if anything is.
    Salt's hosts run this (``--check`` as the state's ``unless``)."""
    import os

    from app.cli import CliError
    from app.stack import render

    if os.geteuid() != 0:
        raise CliError("fleetctl render --grant changes ACLs for FLEET_RUN_USER: run it as root")
    user = render.run_user(cfg)
    if not user:
        raise CliError("FLEET_RUN_USER is empty or root: no user to grant access to")
    venv = Path(sys.prefix).absolute()
    vd = cfg.var_dir if cfg.var_dir.is_absolute() else render.ROOT / cfg.var_dir
    ctx = {"run_as": user, "root": str(render.ROOT), "venv": str(venv), "var_dir": str(vd.absolute()),
           "bokeh_static": str(render._bokeh_static_in(venv))}
    try:
        if not check:
            render.ensure_system_user(user)
        changes = render.grant_run_user(ctx, dry_run=check)
    except (render.RenderError, KeyError) as exc:
        raise CliError(f"cannot grant access to {user!r}: {exc}") from None
    for line in changes:
        print(("missing " if check else "granted ") + line)
    return 1 if check and changes else 0


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
    from app.cli import CliError
    from app.stack import health

    instances = args.instance or None
    found = health.wait_healthy(cfg, args.wait, instances=instances,
                                site=not args.instance, supervisor=not args.instance)
    for line in found:  # the report on stdout; the one-line verdict on stderr
        print(line)
    if found:
        more = f" (+{len(found) - 1} more on stdout)" if len(found) > 1 else ""
        raise CliError(f"not healthy: {found[0]}{more}. Logs in {cfg.var_dir / 'log'}; "
                       "start a stopped stack with ./deploy/run --detach", code=1)
    print("healthy")
    return 0


def cmd_info(args, cfg: Settings) -> int:
    """Where fleetctl's settings came from, and whether Redis answers with them."""
    from app import cli
    from app.bus import registry
    from app.bus.connection import sync_client
    from app.bus.keys import Keys

    env = args.operator_env
    files = ", ".join(map(str, env.files)) if env and env.files else "none"
    print(f"fleetctl  {cli.version()}")
    print(f"site      {env.site if env and env.site else 'none (no var/fleet.env here or above; --site DIR)'}")
    print(f"settings  env files: {files}; FLEET_* environment variables win over them")
    print(f"redis     {cfg.redis_url_redacted} (from {env.source('redis_url') if env else 'the environment'})")
    print(f"var dir   {cfg.var_dir}")
    sys.stdout.flush()
    client = sync_client(cfg)
    count = len(registry.list_dashboards(client, Keys(cfg.key_prefix)))
    print(f"redis ok  {count} dashboard(s) under key prefix {cfg.key_prefix!r}")
    return 0


def cmd_demo_controller(args, cfg: Settings) -> int:
    from app.stack import demo

    return demo.main(cfg, interval=args.interval)


def register(sub) -> None:
    """Add this group's subcommands to sub."""
    from app.cli import add_program_parser

    p = sub.add_parser("info", help="which site and settings file fleetctl uses; checks Redis")
    p.set_defaults(handler=cmd_info)

    p = sub.add_parser("render", help="render supervisord/nginx/redis configs and var/fleet.env "
                       "from FLEET_INSTANCES & co. (environment only), or from --deployment FILE")
    p.add_argument("--out", help="var directory to render into (default: $FLEET_VAR_DIR or var/)")
    p.add_argument("--json", action="store_true", help="print the template context (without secrets)")
    p.add_argument("--prometheus", nargs="?", const="", default=None, metavar="FILE",
                   help="only write the Prometheus file_sd target list (JSON) of every instance "
                   "and the site, into FILE ('-' = stdout; default var/prometheus/targets.json)")
    p.add_argument("--grant", action="store_true",
                   help="as root, only give FLEET_RUN_USER read access (POSIX ACLs) to the checkout, "
                   "venv, Python and BokehJS of this fleetctl (what Salt's hosts run)")
    p.add_argument("--deployment", metavar="FILE",
                   help="render this host of a several-host deployment from FILE (JSON: Salt's pillar "
                   "fleet:, without secrets, plus host and roles; secrets from its var/secrets.env)")
    p.add_argument("--check", action="store_true",
                   help="with --grant or --deployment: change nothing, list what a render would "
                   "change, exit 1 if anything")
    p.set_defaults(handler=cmd_render, reads_site=False)  # it writes the site's env file

    p = sub.add_parser("secrets", help="generate missing secrets into var/secrets.env (mode 0600)")
    p.add_argument("--out", help="var directory (default: $FLEET_VAR_DIR or var/)")
    p.add_argument("--get", metavar="NAME", help="print one secret, e.g. DEMO_PASSWORD")
    p.set_defaults(handler=cmd_secrets, reads_site=False)  # deploy/run: before var/fleet.env exists

    p = add_program_parser(sub, "events-listener",
                           help="supervisord event listener: records process state changes in Redis")
    p.set_defaults(handler=cmd_events_listener)

    p = sub.add_parser("events", help="recent supervisord process state changes recorded in Redis")
    p.add_argument("-n", "--count", type=int, default=30, help="how many, newest last (default 30)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=cmd_events)

    p = sub.add_parser("health", help="check supervisord, every instance's /healthz and the site")
    p.add_argument("--instance", type=int, action="append", metavar="N",
                   help="only instance N (repeat); skips supervisord and the site")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="keep checking up to SECONDS")
    p.set_defaults(handler=cmd_health)

    p = add_program_parser(sub, "demo-controller",
                           help="feed dashboard 'demo' with a live signal (demo mode)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between points (default 0.5)")
    p.set_defaults(handler=cmd_demo_controller)
