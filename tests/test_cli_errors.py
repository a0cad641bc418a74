"""fleetctl as an operator meets it: it finds the stack's settings by itself, and every
operator command fails with one line on stderr (no traceback) when Redis is down, the
password is wrong or the dashboard/user/token does not exist.

Runs the venv's real ``fleetctl`` in subprocesses, with no FLEET_* variables, from a
site directory holding ``var/fleet.env`` like ``fleetctl render`` writes it.  The
commands run in parallel once per module (one xdist group); tests check the results.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.cli import build_parser
from fleet_testing.ports import free_port
from fleet_testing.redis import RedisServer

pytestmark = pytest.mark.xdist_group("cli_errors")

FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))
PASSWORD = "right-horse-battery"
STDIN = "a-password-long-enough\n"

#: argv of each operator command in the failure runs (Redis down / wrong password).
#: Commands missing here (e.g. added later) get an argv made from their parser.
CASES: dict[tuple[str, ...], list[str]] = {
    ("dashboard", "create"): ["dashboard", "create", "d1"],
    ("dashboard", "list"): ["dashboard", "list"],
    ("dashboard", "delete"): ["dashboard", "delete", "d1", "--yes"],
    ("publish",): ["publish", "d1", "clear"],
    ("state",): ["state", "d1"],
    ("rejected",): ["rejected", "d1"],
    ("tail",): ["tail", "d1", "--once"],
    ("users", "add"): ["users", "add", "bob", "--password-stdin"],
    ("users", "passwd"): ["users", "passwd", "bob", "--password-stdin"],
    ("users", "roles"): ["users", "roles", "bob", "--role", "admin"],
    ("users", "remove"): ["users", "remove", "bob"],
    ("users", "list"): ["users", "list"],
    ("tokens", "create"): ["tokens", "create", "--dashboard", "d1", "--name", "feeder"],
    ("tokens", "list"): ["tokens", "list"],
    ("tokens", "revoke"): ["tokens", "revoke", "feeder"],
    ("access", "grant"): ["access", "grant", "--dashboard", "d1", "--user", "bob"],
    ("access", "revoke"): ["access", "revoke", "--dashboard", "d1", "--user", "bob"],
    ("access", "list"): ["access", "list"],
    ("events",): ["events"],
    ("info",): ["info"],
    ("health",): ["health"],
}
#: setup commands that do not talk to Redis (deploy/run runs them); supervisord's
#: programs (instance, compactor, ...) are left out by their parser default ``program``
NOT_REDIS = {("render",), ("secrets",)}

#: a missing dashboard / user / token on a reachable Redis: argv -> text the line names
MISSING = {
    ("state", "nope"): "no dashboard 'nope'",
    ("rejected", "nope"): "no dashboard 'nope'",
    ("tail", "nope", "--once"): "no dashboard 'nope'",
    ("publish", "nope", "clear"): "no dashboard 'nope'",
    ("dashboard", "delete", "nope", "--yes"): "no dashboard 'nope'",
    ("users", "passwd", "nope", "--password-stdin"): "no user 'nope'",
    ("users", "roles", "nope", "--role", "admin"): "no user 'nope'",
    ("users", "remove", "nope"): "no user 'nope'",
    ("tokens", "revoke", "nope-token"): "no active token",
}


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, leaf parser) of every subcommand, nested ones included."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, p in subs[0].choices.items():
        yield from _leaves(p, (*path, name))


def _argv_for(path: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    """A plausible argv for a command nobody listed in CASES: 'x' or the first choice."""
    argv = list(path)
    for a in parser._actions:
        value = str(next(iter(a.choices))) if a.choices else "x"
        if not a.option_strings and a.nargs not in ("*", "?"):
            argv.append(value)
        elif a.option_strings and a.required:
            argv += [a.option_strings[-1], value]
    return argv


def operator_commands() -> dict[tuple[str, ...], list[str]]:
    out = {}
    for path, p in _leaves(build_parser()):
        if p.get_default("program") or path in NOT_REDIS:
            continue
        out[path] = CASES.get(path) or _argv_for(path, p)
    return out


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    return {**env, **extra}


def fleetctl(argv, cwd: Path, env: dict | None = None, stdin: str = STDIN, timeout: float = 60):
    """Run the venv's fleetctl; a hang comes back as returncode None (one failed case)."""
    try:
        return subprocess.run([FLEETCTL, *argv], cwd=cwd, env=env or clean_env(), input=stdin,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(argv, None, exc.stdout or "", f"timed out after {timeout}s")


def make_site(root: Path, redis_url: str) -> Path:
    """A site as ``fleetctl render`` leaves it: var/fleet.env (shell-quoted values)."""
    (root / "var").mkdir(parents=True)
    (root / "checkout" / "sub").mkdir(parents=True)
    lines = [
        "# Rendered by fleetctl render: the environment of every fleet program.",
        f"FLEET_REDIS_URL='{redis_url}'",
        f"FLEET_VAR_DIR={root / 'var'}",
        "FLEET_INSTANCES=1",
        f"FLEET_BOKEH_PORT_BASE={free_port() - 1}",  # nothing listens: health fails fast
        f"FLEET_HTTP_PORT={free_port()}",
        "FLEET_KEY_PREFIX=fleet",
    ]
    (root / "var" / "fleet.env").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def redis_live(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    server.client().config_set("requirepass", PASSWORD)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sites(tmp_path_factory, redis_live):
    base = tmp_path_factory.mktemp("sites")
    dead = free_port()  # Redis stopped: nothing listens there
    return {
        "down": make_site(base / "down", f"redis://default:{PASSWORD}@127.0.0.1:{dead}/0"),
        "wrong-password": make_site(base / "wrong", f"redis://default:nope@127.0.0.1:{redis_live.port}/0"),
        "live": make_site(base / "live", f"redis://default:{PASSWORD}@127.0.0.1:{redis_live.port}/0"),
    }


@pytest.fixture(scope="module")
def results(sites):
    """Every failure case, run in parallel from inside each site: key -> CompletedProcess."""
    jobs = {}
    for scenario in ("down", "wrong-password"):
        for path, argv in operator_commands().items():
            jobs[(scenario, path)] = (argv, sites[scenario])
    for argv in MISSING:
        jobs[("missing", argv)] = (list(argv), sites["live"])
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = {k: pool.submit(fleetctl, argv, site) for k, (argv, site) in jobs.items()}
        return {k: f.result() for k, f in futures.items()}


def assert_one_line_error(p, argv):
    lines = p.stderr.splitlines()
    assert p.returncode not in (0, None), (argv, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, (argv, p.stderr)
    assert len(lines) == 1 and lines[0].startswith("fleetctl: error: "), (argv, p.stderr)


@pytest.mark.parametrize("path", sorted(operator_commands()), ids=" ".join)
def test_redis_down_one_line(results, path):
    p = results[("down", path)]
    assert_one_line_error(p, path)
    if path != ("health",):  # health checks the stack's processes, not Redis
        assert "cannot reach Redis" in p.stderr and "./deploy/run" in p.stderr
        assert PASSWORD not in p.stderr


@pytest.mark.parametrize("path", sorted(operator_commands()), ids=" ".join)
def test_wrong_password_one_line(results, path):
    p = results[("wrong-password", path)]
    assert_one_line_error(p, path)
    if path != ("health",):
        assert "refused the credentials" in p.stderr and ":nope@" not in p.stderr


@pytest.mark.parametrize("argv", sorted(MISSING), ids=" ".join)
def test_missing_things_one_line(results, argv):
    p = results[("missing", argv)]
    assert_one_line_error(p, argv)
    assert MISSING[argv] in p.stderr


def test_finds_the_site_from_its_directory_and_with_site(sites, tmp_path, redis_live):
    """No FLEET_* variables at all: the site's var/fleet.env is found from a
    subdirectory, with --site DIR and with FLEET_SITE_DIR; the environment wins."""
    live = sites["live"]
    p = fleetctl(["users", "add", "bob", "--password-stdin"], cwd=live / "checkout" / "sub")
    assert p.returncode == 0, p.stderr
    assert "user bob added" in p.stdout
    p = fleetctl(["--site", str(live), "users", "list"], cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.startswith("bob\t"), p.stderr
    p = fleetctl(["users", "list"], cwd=tmp_path, env=clean_env(FLEET_SITE_DIR=str(live)))
    assert p.returncode == 0 and p.stdout.startswith("bob\t"), p.stderr
    p = fleetctl(["info"], cwd=live)
    assert p.returncode == 0, p.stderr
    assert str(live / "var" / "fleet.env") in p.stdout and PASSWORD not in p.stdout
    # an explicit variable wins over the file
    dead = f"redis://127.0.0.1:{free_port()}/0"
    p = fleetctl(["users", "list"], cwd=live, env=clean_env(FLEET_REDIS_URL=dead))
    assert p.returncode == 2 and "cannot reach Redis" in p.stderr and "$FLEET_REDIS_URL" in p.stderr


def test_site_errors_and_debug(sites, tmp_path):
    p = fleetctl(["--site", str(tmp_path), "users", "list"], cwd=tmp_path)
    assert_one_line_error(p, "--site")
    assert "var/fleet.env" in p.stderr
    for argv, env in ((["--debug", "users", "list"], None),
                      (["users", "list"], clean_env(FLEET_DEBUG="1"))):
        p = fleetctl(argv, cwd=sites["down"], env=env)
        assert p.returncode == 2 and "Traceback" in p.stderr
        assert p.stderr.splitlines()[-1].startswith("fleetctl: error: cannot reach Redis")


def test_version(tmp_path):
    from importlib.metadata import version

    p = fleetctl(["--version"], cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == f"fleetctl {version('bokeh-fleet')}"


def test_help_every_option_and_programs_apart():
    """Every option and command has help; supervisord's programs are listed apart."""
    parser = build_parser()
    for path, p in [((), parser), *_leaves(parser)]:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                continue
            assert a.help, (path, a.dest)
    text = parser.format_help()
    operators, _, programs = text.partition("commands run by supervisord")
    for name in ("instance", "compactor", "events-listener", "demo-controller"):
        assert f"\n  {name} " in programs and f"    {name} " not in operators
    for name in ("users", "tokens", "access", "dashboard", "events", "health", "info"):
        assert f"    {name} " in operators


# --- the lookup itself (pure, in-process) ------------------------------------------------
def test_env_file_round_trip_and_lookup(tmp_path, monkeypatch):
    """var/fleet.env as render writes it (shell-quoted) reads back; the nearest site
    above the current directory is found; FLEET_SITE_DIR and the environment win."""
    from app import settings
    from app.stack.render import shell_env

    values = {"FLEET_REDIS_URL": "redis://default:a'b c$d@127.0.0.1:6390/0",
              "FLEET_ALLOWED_ORIGINS": "h:1,h:2", "FLEET_TITLE": ""}
    site = tmp_path / "site"
    (site / "var").mkdir(parents=True)
    (site / "var" / "fleet.env").write_text(shell_env(values))
    assert settings.read_env_file(site / "var" / "fleet.env") == values
    deep = site / "a" / "b"
    deep.mkdir(parents=True)
    assert settings.find_site(deep, env={}) == site.resolve()
    assert settings.find_site(tmp_path, env={}) is None
    assert settings.find_site(tmp_path, env={"FLEET_SITE_DIR": str(site)}) == site.resolve()
    with pytest.raises(settings.SettingsError, match="no .*var/fleet.env"):
        settings.find_site(site, env={"FLEET_SITE_DIR": str(tmp_path)})
    env = settings.operator_environ(site, env={"FLEET_INSTANCES": "3"})
    cfg = settings.load(env=env.environ)
    assert cfg.redis_url == values["FLEET_REDIS_URL"] and cfg.instances == 3
    assert env.source("redis_url") == str(site / "var" / "fleet.env")
    assert env.source("instances") == "$FLEET_INSTANCES"
    assert env.source("web_port") == "the default"


def test_render_ignores_the_site_env(tmp_path, monkeypatch, capsys):
    """render writes var/fleet.env from FLEET_* alone; an old file never feeds back."""
    import json

    from app.cli import main

    site = make_site(tmp_path / "site", "redis://127.0.0.1:1/0")  # FLEET_INSTANCES=1 there
    for k in [k for k in os.environ if k.startswith("FLEET_")]:
        monkeypatch.delenv(k)
    monkeypatch.chdir(site)
    assert main(["render", "--json", "--out", str(tmp_path / "out")]) == 0
    ctx = json.loads(capsys.readouterr().out)["context"]
    assert ctx["instances"] == 2  # the default, not the site file's 1
    assert main(["--site", str(site), "render", "--out", str(tmp_path / "out")]) == 2
    assert "--site does not apply to 'render'" in capsys.readouterr().err
