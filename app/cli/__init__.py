"""``fleetctl``: the operator's and controller's command line.

Each command group lives in its own module exposing ``register(subparsers)``; a
command's handler receives the parsed args and the :class:`app.settings.Settings`
and returns a process exit code.

Operator commands find the stack's settings by themselves (the site's
``var/fleet.env`` under the environment, see :func:`app.settings.find_site`);
commands that only supervisord runs (:func:`add_program_parser`) take their
environment as given.  :func:`main` turns every expected failure - Redis away or
refusing the password, a missing dashboard/user/token, bad settings - into one line
on stderr and a non-zero exit code; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from app import settings as settings_mod

GROUPS = (
    "app.cli.dashboards",  # dashboard create|list|delete, publish, state, rejected, tail
    "app.cli.compactor",   # compactor
    "app.cli.instance",    # instance
    "app.cli.accounts",    # users, tokens, access
    "app.cli.stack",       # info, render, secrets, events, health, supervisor event listener, demo
    "app.cli.controllers", # controllers add|list|remove|reload (Redis ACL users)
)

log = logging.getLogger("fleet.cli")

SETTINGS_EPILOG = """\
settings: FLEET_* environment variables, over the site's var/fleet.env (written by
'fleetctl render' / ./deploy/run). The site is --site DIR, else $FLEET_SITE_DIR, else
the current directory or its nearest parent holding var/fleet.env; without one, the
environment alone. 'fleetctl info' shows which file was read (-v logs it too).
exit codes: 0 done, 1 unhealthy (health), 2 an error (one line on stderr; --debug adds
the traceback). Run 'fleetctl COMMAND --help' for a command's options."""


class CliError(Exception):
    """An error for a person: printed as ``fleetctl: error: ...``; exit ``code`` (2)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("bokeh-fleet")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown"


def add_program_parser(sub, name: str, help: str, **kw) -> argparse.ArgumentParser:  # noqa: A002
    """Register a command that only supervisord runs (``instance``, ``compactor``, ...).

    It is listed apart from the operator's commands in ``fleetctl --help`` and reads
    ``FLEET_*`` from its environment only (supervisord passes the complete one).
    """
    kw.setdefault("description", help)
    p = sub.add_parser(name, **kw)  # no help=: not in the operator's list
    p.set_defaults(program=help, reads_site=False)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetctl",
        description="Operate a Bokeh fleet: dashboards, commands, users, tokens, access, health.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                        help="print fleetctl's version and exit")
    parser.add_argument("--site", metavar="DIR",
                        help="the stack's checkout (site) whose var/fleet.env to read "
                        "(default: $FLEET_SITE_DIR, else the current directory or a parent)")
    parser.add_argument("--redis-url", metavar="URL",
                        help="Redis URL (overrides $FLEET_REDIS_URL and the site's)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging (also: which settings file was read)")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback behind an error message (or FLEET_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                title="commands")
    for name in GROUPS:
        importlib.import_module(name).register(sub)
    programs = [(n, p.get_default("program")) for n, p in sub.choices.items()
                if p.get_default("program")]
    width = max((len(n) for n, _ in programs), default=0) + 2
    parser.epilog = "".join(
        ["commands run by supervisord, not by hand (FLEET_* from their environment only):\n"]
        + [f"  {n:<{width}}{h}\n" for n, h in programs]
        + ["\n", SETTINGS_EPILOG]
    ) if programs else SETTINGS_EPILOG
    return parser


def _explain(exc: BaseException, env: settings_mod.OperatorEnv | None, url: str,
             url_source: str) -> str | None:
    """The one line for an expected failure: what is wrong and what to do; None for a bug."""
    from app.bus.accounts import AccountError
    from app.bus.connection import UNREACHABLE_ERRORS, AuthenticationError, NoPermissionError, RedisError
    from app.bus.registry import UnknownDashboard
    from app.control.protocol import Rejected

    no_site = env is not None and env.site is None and url_source == "the default"
    find = ("No var/fleet.env in this directory or above: run fleetctl in the stack's "
            "checkout, or pass --site DIR or --redis-url")
    if isinstance(exc, (CliError, settings_mod.SettingsError, UnknownDashboard, AccountError, OSError)):
        return str(exc)
    if isinstance(exc, AuthenticationError):
        if no_site:
            fix = find
        elif url_source.startswith("$"):
            fix = "Fix FLEET_REDIS_URL, or unset it to use the site's var/fleet.env."
        elif url_source == "--redis-url":
            fix = "Fix the password in --redis-url."
        else:
            fix = "If the stack's password changed, render that file again: ./deploy/run."
        return f"Redis at {url} refused the credentials from {url_source} ({exc}) {fix}"
    if isinstance(exc, UNREACHABLE_ERRORS):
        fix = find if no_site else "Is the stack running? Start it with ./deploy/run --detach"
        return f"cannot reach Redis at {url} (from {url_source}): {exc} {fix}"
    if isinstance(exc, NoPermissionError):
        return (f"the Redis user of {url} (from {url_source}) may not do this ({exc}): "
                "use the stack's admin Redis URL")
    if isinstance(exc, RedisError):
        return f"Redis at {url} answered with an error: {exc}"
    if isinstance(exc, Rejected):
        return f"command rejected: {exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    debug = args.debug
    env: settings_mod.OperatorEnv | None = None
    url, url_source = "(unknown)", "the default"
    try:
        if getattr(args, "reads_site", True):
            env = settings_mod.operator_environ(settings_mod.find_site(site=args.site))
            log.debug("settings: %s, then the environment",
                      ", ".join(map(str, env.files)) or "no site env file")
        elif args.site is not None:
            raise CliError(f"--site does not apply to '{args.command}': it reads FLEET_* "
                           "variables from its environment only")
        overrides = {"redis_url": args.redis_url} if args.redis_url else {}
        cfg = settings_mod.load(env=env.environ if env else None, **overrides)
        if not getattr(args, "reads_site", True):  # a program under supervisord: FLEET_LOG_FORMAT
            from app import logsetup

            logsetup.configure(cfg.log_format, logging.DEBUG if args.verbose else logging.INFO)
        debug = debug or cfg.debug
        url = cfg.redis_url_redacted
        url_source = "--redis-url" if args.redis_url else (
            env.source("redis_url") if env else "$FLEET_REDIS_URL")
        args.operator_env = env
        return int(args.handler(args, cfg) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = _explain(exc, env, url, url_source)
        if message is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"fleetctl: error: {message}", file=sys.stderr)
        return exc.code if isinstance(exc, CliError) else 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
