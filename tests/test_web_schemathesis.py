"""Fuzz the controller HTTP API from its own OpenAPI document (schemathesis).

A real gunicorn serves the Flask app against a real redis-server; the schema is
loaded from the live ``/api/v1/openapi.json``.  Every operation is driven with
schema-valid (positive) and schema-violating (negative) requests:

* with a valid ``*`` bearer token, the path's dashboard name being mostly the one
  that exists, so publishing (202) and reading state (200) are really reached; POST
  also gets hand-written edge cases (lone surrogates, wrong JSON types, ...);
* without credentials, with unknown tokens and with a logged-in browser session;
* while the address is rate limited after too many unknown tokens (429).

Checks on every response: no 5xx, the status code, content type, headers and body
are what the document declares, and schema-violating input gets a 4xx.  The number
of examples is bounded and generation derandomized, so the run is reproducible and
takes well under a minute on two cores.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config._checks import NegativeDataRejectionConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.bus import ratelimit, registry
from app.bus.accounts import Accounts
from app.bus.keys import Keys
from app.control import encode
from app.passwords import hash_password
from app.web.openapi import openapi_document
from fleet_testing.ports import free_port, wait_port
from fleet_testing.redis import RedisServer
from fleet_testing.web import csrf_token

pytestmark = pytest.mark.xdist_group("schemathesis")

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = "sales"
USER, PASSWORD = "vera", "vera-password"
LOGIN_LIMIT = 10  # FLEET_LOGIN_RATE_LIMIT; the API allows 5x as many failed tokens
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


class WebServer:
    """gunicorn on the test Redis (no nginx): base URL, accounts, a ``*`` token, what the fuzzer saw."""

    def __init__(self, base: str, accounts: Accounts, token: str) -> None:
        self.base, self.accounts, self.token = base, accounts, token
        self.statuses: collections.Counter[tuple[str, str, int]] = collections.Counter()

    def reset_rate_limit(self) -> None:
        ratelimit.reset(self.accounts.client, self.accounts.keys, "api-auth", "127.0.0.1")

    def record(self, phase: str, case, response) -> None:
        self.statuses[(phase, f"{case.method} {case.path}", response.status_code)] += 1


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schemathesis")
    server = RedisServer(tmp / "redis").start()
    client = server.client()
    keys = Keys("fleet")
    registry.create_dashboard(client, keys, DASHBOARD)
    registry.create_dashboard(client, keys, "ops")
    accounts = Accounts(client, keys)
    secret, _ = accounts.create_token("fuzzer", ["*"])
    accounts.add_user(USER, hash_password(PASSWORD), ["viewer"])
    accounts.grant_access(DASHBOARD, users=[USER])
    # a figure, so stream/patch commands of the fuzzer may fold onto something real
    client.xadd(keys.commands(DASHBOARD), dict(encode(
        "replace", name="prices", kind="line", x="t", y=["y"], data={"t": [1.0, 2.0], "y": [3.0, 4.0]})))
    client.xadd(keys.rejected(DASHBOARD), {"op": "stream", "name": "ghost", "_reason": "no figure 'ghost'"})

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update({"FLEET_REDIS_URL": server.url, "FLEET_FLASK_SECRET": "schemathesis-flask-secret",
                "FLEET_SECRET_KEY": "schemathesis-bokeh-secret-0123456789abcdef",
                "FLEET_WEB_PORT": str(port), "FLEET_WEB_WORKERS": "2",
                "FLEET_API_MAX_BODY_BYTES": str(64 * 1024), "FLEET_LOGIN_RATE_LIMIT": str(LOGIN_LIMIT),
                "FLEET_ALLOWED_HOSTS": f"127.0.0.1:{port}",  # straight to gunicorn, no nginx
                "HOME": str(tmp)})
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    log = tmp / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([gunicorn, "-c", "app/web/gunicorn_conf.py", "--no-control-socket"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, 30)
        web_server = WebServer(f"http://127.0.0.1:{port}", accounts, secret)
        yield web_server
        print(f"\nschemathesis: {sum(web_server.statuses.values())} requests (phase, operation, status):")
        for k, n in sorted(web_server.statuses.items()):
            print("  ", k, n)
    finally:
        proc.terminate()
        proc.wait(20)
        client.close()
        server.stop()
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]


@pytest.fixture(scope="module")
def api_schema(web_server):
    schema = schemathesis.openapi.from_url(f"{web_server.base}/api/v1/openapi.json", timeout=10)
    # credentials are ours to give (valid, missing or wrong), not random Bearer strings
    schema.config.generation.update(modes=list(GenerationMode), with_security_parameters=False)
    schema.config.update(base_url=f"{web_server.base}/api/v1")
    # a body over FLEET_API_MAX_BODY_BYTES is refused before it is read: 413 is a rejection too
    rejection = schema.config.checks.negative_data_rejection
    schema.config.checks.negative_data_rejection = NegativeDataRejectionConfig(
        expected_statuses=[*rejection.expected_statuses, "413"])
    return schema


@pytest.fixture(scope="module")
def viewer_session(web_server):
    """A requests session logged in through the real form as a viewer of DASHBOARD."""
    session = requests.Session()
    page = session.get(f"{web_server.base}/auth/login", timeout=10)
    r = session.post(f"{web_server.base}/auth/login", timeout=10, allow_redirects=False,
                     data={"username": USER, "password": PASSWORD, "csrf_token": csrf_token(page.text)})
    assert r.status_code == 302, (r.status_code, r.text[:500])
    return session


VALID_BODIES = [
    {"op": "clear"},
    {"op": "set", "title": "Sales", "id": "fuzz-1", "ts": 1700000000000},
    {"op": "stream", "name": "prices", "data": {"t": [3.0], "y": [5.0]}, "rollover": 50},
    {"commands": [{"op": "replace", "name": "q", "kind": "table", "columns": ["a"], "data": {"a": ["x"]}},
                  {"op": "layout", "rows": [["prices", "q"]]}]},
]
# Edge cases no generator is likely to hit (hypothesis makes no lone surrogates); each
# used to be, or could be, a 5xx.  Published ones are then folded by GET .../state.
EDGE_BODIES = [
    {"op": "set", "title": "\ud800"},
    {"commands": [{"op": "clear", "name": "\udfff"}]},
    {"op": "set", "\ud800": "x"},
    {"op": "set", "name": "prices", "rollover": 5.0, "ts": 1.7e12, "tooltips": True},
    {"op": "set", "title": 5},
    {"op": "clear", "data": None},
    {"op": "stream", "name": "prices", "data": {"t": [1e308, -0.0], "y": [None, 2.5]}},
    {"op": "stream", "name": "prices", "data": {"t": ["a"], "y": [1]}},
    {"op": "patch", "name": "prices", "patches": {"y": [[1_000_000, 1]], "nope": [[0, "x"]]}},
    {"op": "figure", "name": "m", "model": {"doc": {"roots": [{}]}}},
    {"op": "layout", "rows": [["prices", "ghost"]]},
    {"op": "replace", "name": "prices", "kind": "bar", "columns": ["t", "y"]},
]
OPERATIONS = [(method.upper(), path) for path, item in openapi_document()["paths"].items()
              for method in item]


def cases(api_schema, method: str, path: str):
    """Positive and negative cases of one operation.  On a dashboard path most name
    the dashboard that exists (the rest: generated names, 403/404); POST also gets some
    surely valid bodies, so the happy paths are really reached."""
    op = api_schema[path][method]
    if "{name}" not in path:
        return st.one_of(*[op.as_strategy(mode) for mode in GenerationMode])
    pos, neg = (op.as_strategy(mode, path_parameters={"name": DASHBOARD})
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE))
    if method == "POST":  # the body is what matters here; one branch negates the path too
        valid = st.sampled_from(VALID_BODIES).flatmap(
            lambda body: op.as_strategy(path_parameters={"name": DASHBOARD}, body=body,
                                      media_type="application/json"))
        return st.one_of(pos, pos, neg, valid, op.as_strategy(GenerationMode.NEGATIVE))
    return st.one_of(pos, neg, *[op.as_strategy(mode) for mode in GenerationMode])


def send(case, web_server, phase: str, **kw):
    response = case.call_and_validate(timeout=15, checks=CHECKS, **kw)
    web_server.record(phase, case, response)
    return response


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz_with_token(api_schema, web_server, method, path):
    """A valid token: never a 5xx, always as documented; publishing and reading really happen."""
    bearer = {"Authorization": f"Bearer {web_server.token}"}
    op = api_schema[path][method]
    if method == "POST":
        for body in (*VALID_BODIES, *EDGE_BODIES):
            case = op.Case(path_parameters={"name": DASHBOARD}, body=body, media_type="application/json")
            send(case, web_server, "token", headers=bearer)

    @settings(FUZZ, max_examples=200 if method == "POST" else 50)
    @given(case=cases(api_schema, method, path))
    def run(case):
        send(case, web_server, "token", headers=bearer)

    run()
    seen = {status for (phase, label, status) in web_server.statuses
            if (phase, label) == ("token", f"{method} {path}")}
    assert (202 if method == "POST" else 200) in seen, web_server.statuses


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz_without_valid_credentials(api_schema, web_server, viewer_session, method, path):
    """No token, an unknown one, another scheme: a 4xx, never a 5xx.  A viewer's browser
    session may read (GET) but not publish."""
    variants = {"none": {}, "unknown": {"Authorization": "Bearer fleet_not-a-real-token"},
                "basic": {"Authorization": "Basic dXNlcjpwYXNz"}}

    @settings(FUZZ, max_examples=15)
    @given(case=cases(api_schema, method, path))
    def run(case):
        # each case exercises the token check, not just the failed-auth limiter
        web_server.reset_rate_limit()
        for label, headers in variants.items():
            response = send(case, web_server, label, headers=headers)
            assert 400 <= response.status_code < 500, (label, response.status_code)
        response = send(case, web_server, "session", session=viewer_session)
        if method == "POST":
            assert 400 <= response.status_code < 500

    run()


def test_rate_limited_answers_conform(api_schema, web_server):
    """After too many unknown tokens from one address even a valid token gets a
    documented 429 (with Retry-After) - and never a 5xx - until the window ends."""
    bad = {"Authorization": "Bearer fleet_not-a-real-token"}
    web_server.reset_rate_limit()
    try:
        for _ in range(LOGIN_LIMIT * 5):
            assert requests.get(f"{web_server.base}/api/v1/dashboards", headers=bad, timeout=10).status_code == 401
        for method, path in OPERATIONS:

            @settings(FUZZ, max_examples=5)
            @given(case=cases(api_schema, method, path))
            def run(case):
                response = send(case, web_server, "limited", headers={"Authorization": f"Bearer {web_server.token}"})
                assert response.status_code == 429 and response.headers.get("retry-after")  # lower-case keys

            run()
    finally:
        web_server.reset_rate_limit()
