"""The pytest fixtures (``tests/conftest.py`` registers this module as a plugin).

Everything else in :mod:`fleet_testing` is plain Python that the benches import too;
only this module needs pytest.  One name, one meaning, in every test module:

* ``redis_server`` / ``redis_url``: a real redis-server (AOF) on a free port;
  ``sentinel_set``: a master, a replica and three sentinels.
* ``fleet_env`` / ``fleet_settings``: a fleet's FLEET_* environment (and settings) on
  that Redis; ``start_instance``: a factory of ``fleetctl instance`` processes.
* ``app`` / ``client`` / ``fleet_bus`` / ``users`` / ``auth``: the Flask app
  (flaskr-style) on that Redis; ``make_app`` builds it with settings overridden.
* ``browser``: headless Chromium (Playwright, Debian's binary), one per module.
* ``stack_factory``: builds whole stacks (:class:`~fleet_testing.stack.Stack`), stops them all.
* ``security_stack``: the whole stack with trusted-header SSO, one per session.
* ``live`` (defined by the modules that need one): that module's running
  :class:`~fleet_testing.stack.Stack`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

from app.passwords import hash_password
from app.settings import Settings, load
from fleet_testing.bokeh import InstanceProc, fleet_environment
from fleet_testing.ports import free_port
from fleet_testing.redis import RedisServer, SentinelSet
from fleet_testing.security import PASSWORDS as SECURITY_PASSWORDS
from fleet_testing.security import SSO_PROXY_ADDR, SecurityStack
from fleet_testing.stack import CHROMIUM, CHROMIUM_ARGS, Stack
from fleet_testing.web import PASSWORDS, ROLES, AuthActions


# --- Redis --------------------------------------------------------------------------------
@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture
def sentinel_set(tmp_path):
    ss = SentinelSet(tmp_path / "ha").start()
    yield ss
    ss.stop()


# --- Bokeh instances ----------------------------------------------------------------------
@pytest.fixture
def fleet_env(redis_url) -> dict[str, str]:
    return fleet_environment(redis_url)


@pytest.fixture
def fleet_settings(fleet_env) -> Settings:
    return load(env=fleet_env)


@pytest.fixture
def start_instance(fleet_env, tmp_path):
    """Factory: ``start_instance(**FLEET_overrides) -> InstanceProc`` (stopped at teardown)."""
    started: list[InstanceProc] = []

    def start(**overrides: str) -> InstanceProc:
        env = dict(fleet_env)
        env.update({("FLEET_" + k.upper()): str(v) for k, v in overrides.items()})
        port = free_port()
        inst = InstanceProc(env, port, tmp_path / f"instance-{port}.log")
        started.append(inst)
        return inst.start()

    yield start
    for inst in started:
        inst.stop()


# --- the Flask app (flaskr-style), against the real Redis of ``redis_server`` -------------
@pytest.fixture
def web_settings(redis_url, tmp_path) -> Settings:
    return Settings(
        redis_url=redis_url, key_prefix="fleet", flask_secret="test-flask-secret-0123456789",
        secret_key="test-bokeh-secret-0123456789abcdef0123", var_dir=tmp_path / "var",
        login_rate_limit=3, login_rate_window_seconds=60, api_max_body_bytes=64 * 1024,
        allowed_hosts=("localhost",),  # the Flask test client's Host
    )


@pytest.fixture
def make_app(web_settings):
    from app.web import create_app

    def make(**overrides):
        s = dataclasses.replace(web_settings, **overrides) if overrides else web_settings
        return create_app({"TESTING": True, "FLEET_SETTINGS": s})

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def fleet_bus(app):
    return app.extensions["fleet"]


@pytest.fixture
def users(fleet_bus):
    for name, role in ROLES.items():
        fleet_bus.accounts.add_user(name, hash_password(PASSWORDS[name]), [role])
    return dict(PASSWORDS)


@pytest.fixture
def auth(client, users) -> AuthActions:
    return AuthActions(client)


@pytest.fixture
def audit_lines(caplog):
    """The ``fleet.audit`` lines logged during the test (that logger does not propagate)."""
    logger = logging.getLogger("fleet.audit")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="fleet.audit")
    yield lambda: [r.getMessage() for r in caplog.records if r.name == "fleet.audit"]
    logger.removeHandler(caplog.handler)


# --- headless Chromium and whole stacks ---------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: run ./deploy/test (it installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def stack_factory():
    """Build (and always tear down) stacks: ``stack_factory(instances=2, demo=True)``."""
    made: list[Stack] = []

    def make(**kw: Any) -> Stack:
        s = Stack(**kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture(scope="session")
def security_stack():
    embed_port = free_port()
    s = SecurityStack(embed_port, instances=1, sso_header="X-Remote-User", sso_proxies=(SSO_PROXY_ADDR,),
                      login_rate_limit=3, login_rate_window_seconds=300)
    try:
        s.start_healthy()
        s.fleetctl("dashboard", "create", "sec")
        s.add_user("admin1", SECURITY_PASSWORDS["admin1"], role="admin")
        s.add_user("bob", SECURITY_PASSWORDS["bob"], "sec")
        s.add_user("carol", SECURITY_PASSWORDS["carol"], "sec")
        yield s
    finally:
        s.stop()
