"""Controller HTTP API: token lifecycle, validation, error shapes and status codes."""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest

from app.bus import registry
from app.control import encode
from app.control.columns import encode_arrow

URL = "/api/v1/dashboards/{}/commands"


@pytest.fixture
def setup(fleet_bus):
    for name in ("sales", "ops"):
        registry.create_dashboard(fleet_bus.client, fleet_bus.keys, name)
    secret, tok = fleet_bus.accounts.create_token("feeder", ["sales"])
    return {"secret": secret, "tok": tok, "h": {"Authorization": f"Bearer {secret}"}}


def err(r, status):
    assert r.status_code == status, (r.status_code, r.data)
    body = r.get_json()
    assert set(body) == {"error"} and body["error"]["status"] == status
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


REPLACE = {"op": "replace", "name": "prices", "kind": "line", "x": "t", "y": ["y"],
           "data": {"t": [1, 2, 3], "y": [1.5, 2.5, 3.5]}, "rollover": 100}


def test_publish_one_and_batch_then_state(client, fleet_bus, setup):
    r = client.post(URL.format("sales"), json=REPLACE, headers=setup["h"])
    assert r.status_code == 202, r.data
    ids = r.get_json()["ids"]
    assert len(ids) == 1
    entries = fleet_bus.client.xrange(fleet_bus.keys.commands("sales"))
    assert [e[0].decode() for e in entries] == ids
    fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    # structured values travel as JSON text, scalars as their text: the wire format
    assert json.loads(fields["data"]) == REPLACE["data"]
    assert json.loads(fields["y"]) == ["y"] and fields["rollover"] == "100" and fields["x"] == "t"
    batch = {"commands": [{"op": "stream", "name": "prices", "data": {"t": [4], "y": [4.5]}},
                          {"op": "set", "title": "Sales"}]}
    r = client.post(URL.format("sales"), json=batch, headers=setup["h"])
    assert r.status_code == 202 and len(r.get_json()["ids"]) == 2
    r = client.get("/api/v1/dashboards/sales/state", headers=setup["h"])
    assert r.status_code == 200
    body = r.get_json()
    assert body["last_id"] == r.get_json()["last_id"]
    state = body["state"]
    assert state["title"] == "Sales"
    fig = state["figures"][0]
    assert fig["name"] == "prices" and fig["data"]["y"] == [1.5, 2.5, 3.5, 4.5]


def test_http_fields_equal_wire_fields(client, fleet_bus, setup):
    """A command built by encode() (the Python client) means the same over HTTP."""
    wire = encode("replace", name="p", kind="scatter", x="a", y=["b"], data={"a": [1, 2], "b": [3, 4]},
                  tooltips=[["A", "@a"]])
    r = client.post(URL.format("sales"), json=dict(wire), headers=setup["h"])
    assert r.status_code == 202
    arrow = encode_arrow({"a": np.arange(3.0), "b": np.ones(3)})
    cmd = {"op": "replace", "name": "q", "kind": "line", "x": "a", "y": "b",
           "arrow": base64.b64encode(arrow).decode()}
    r = client.post(URL.format("sales"), json=cmd, headers=setup["h"])
    assert r.status_code == 202, r.data
    stored = fleet_bus.client.xrange(fleet_bus.keys.commands("sales"))[-1][1]
    assert stored[b"arrow"] == arrow
    e = err(client.post(URL.format("sales"), json={**cmd, "arrow": "@@not base64"}, headers=setup["h"]), 400)
    assert e["field"] == "arrow"


def test_validation_errors_name_the_field(client, fleet_bus, setup):
    h = setup["h"]
    e = err(client.post(URL.format("sales"), json={"op": "explode"}, headers=h), 400)
    assert e["field"] == "op" and "unknown op" in e["message"]
    e = err(client.post(URL.format("sales"), json={"name": "x"}, headers=h), 400)
    assert e["field"] == "op"
    e = err(client.post(URL.format("sales"), json={"op": "stream", "name": "p", "data": {"a": [1, 2], "b": [1]}},
                        headers=h), 400)
    assert e["field"] == "data" and "different lengths" in e["message"]
    e = err(client.post(URL.format("sales"), json={"op": "clear", "bogus": 1}, headers=h), 400)
    assert e["field"] == "bogus"
    batch = {"commands": [{"op": "clear", "name": "p"}, {"op": "replace", "name": "p", "kind": "pie",
                                                           "columns": ["a", "b"]}]}
    e = err(client.post(URL.format("sales"), json=batch, headers=h), 400)
    assert e["field"] == "commands[1].kind" and e["index"] == 1
    e = err(client.post(URL.format("sales"), json={"commands": []}, headers=h), 400)
    assert e["field"] == "commands"
    e = err(client.post(URL.format("sales"), json={"commands": ["clear"]}, headers=h), 400)
    assert e["field"] == "commands[0]"
    e = err(client.post(URL.format("sales"), json=[1, 2], headers=h), 400)
    e = err(client.post(URL.format("sales"), data="{not json", content_type="application/json", headers=h), 400)
    e = err(client.post(URL.format("sales"), data="op=clear", headers=h), 400)
    # all or nothing: nothing of a failed batch was published
    assert fleet_bus.client.xlen(fleet_bus.keys.commands("sales")) == 0


def test_body_too_large(client, setup, web_settings):
    big = {"op": "stream", "name": "p", "data": {"a": list(range(web_settings.api_max_body_bytes // 4))}}
    e = err(client.post(URL.format("sales"), json=big, headers=setup["h"]), 413)
    assert "large" in e["message"].lower()


def test_token_lifecycle(client, fleet_bus, setup):
    acc = fleet_bus.accounts
    h = setup["h"]
    # missing / malformed / unknown -> 401 with WWW-Authenticate
    r = client.post(URL.format("sales"), json={"op": "clear"})
    assert err(r, 401) and r.headers["WWW-Authenticate"].startswith("Bearer")
    err(client.post(URL.format("sales"), json={"op": "clear"}, headers={"Authorization": "Basic eDp5"}), 401)
    err(client.post(URL.format("sales"), json={"op": "clear"},
                    headers={"Authorization": "Bearer fleet_not-a-real-token"}), 401)
    # used -> last-used time recorded; the secret itself is never stored
    (t,) = acc.list_tokens()
    assert t.last_used is None
    before = time.time()
    assert client.post(URL.format("sales"), json={"op": "clear"}, headers=h).status_code == 202
    (t,) = acc.list_tokens()
    assert t.last_used is not None and t.last_used >= before
    dump = b"".join(k + v for k, v in fleet_bus.client.hgetall(acc.keys.tokens).items())
    assert setup["secret"].encode() not in dump
    # scoped: another dashboard -> 403; unknown dashboard -> 403 too (not in scope)
    e = err(client.post(URL.format("ops"), json={"op": "clear"}, headers=h), 403)
    assert "ops" in e["message"]
    err(client.get("/api/v1/dashboards/ops/state", headers=h), 403)
    # a '*' token reaches every dashboard, and 404 for unknown ones
    star, _ = acc.create_token("all", ["*"])
    hs = {"Authorization": f"Bearer {star}"}
    assert client.post(URL.format("ops"), json={"op": "clear"}, headers=hs).status_code == 202
    err(client.post(URL.format("nope"), json={"op": "clear"}, headers=hs), 404)
    assert client.get("/api/v1/dashboards", headers=h).get_json() == {"dashboards": ["sales"]}
    # revoked -> 401
    assert [r.name for r in acc.revoke_token("feeder")] == ["feeder"]
    err(client.post(URL.format("sales"), json={"op": "clear"}, headers=h), 401)
    assert client.post(URL.format("sales"), json={"op": "clear"}, headers=hs).status_code == 202
    assert acc.revoke_token(acc.list_tokens()[1].id[:8])
    err(client.post(URL.format("sales"), json={"op": "clear"}, headers=hs), 401)


def test_failed_auth_rate_limited_across_workers(make_app, setup, web_settings):
    c1, c2 = make_app().test_client(), make_app().test_client()
    bad = {"Authorization": "Bearer fleet_wrong"}
    limit = web_settings.login_rate_limit * 5
    for i in range(limit):
        err((c1 if i % 2 else c2).post(URL.format("sales"), json={"op": "clear"}, headers=bad), 401)
    r = c1.post(URL.format("sales"), json={"op": "clear"}, headers=setup["h"])
    err(r, 429)
    assert r.headers["Retry-After"]
    # another client address is not affected
    r = c2.post(URL.format("sales"), json={"op": "clear"}, headers=setup["h"],
                environ_base={"REMOTE_ADDR": "10.3.3.3"})
    assert r.status_code == 202


def test_state_with_browser_session(client, auth, fleet_bus, setup):
    fleet_bus.accounts.grant_access("sales", users=["alice"])
    err(client.get("/api/v1/dashboards/sales/state"), 401)
    auth.login("alice")
    assert client.get("/api/v1/dashboards/sales/state").status_code == 200
    err(client.get("/api/v1/dashboards/ops/state"), 403)
    # a browser session cannot publish: the API takes bearer tokens only
    err(client.post(URL.format("sales"), json={"op": "clear"}), 401)


def test_rejected_listing(client, fleet_bus, setup):
    fleet_bus.client.xadd(fleet_bus.keys.rejected("sales"), {"op": "stream", "_reason": "unknown figure"})
    r = client.get("/api/v1/dashboards/sales/rejected?count=5", headers=setup["h"])
    assert r.status_code == 200
    assert r.get_json()["rejected"][0]["reason"] == "unknown figure"
    err(client.get("/api/v1/dashboards/sales/rejected?count=x", headers=setup["h"]), 400)


def test_openapi_document(client):
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    doc = r.get_json()
    assert doc["openapi"].startswith("3.")
    post = doc["paths"]["/dashboards/{name}/commands"]["post"]
    assert {"202", "400", "401", "403", "404", "413", "429"} <= set(post["responses"])
    assert "/dashboards/{name}/state" in doc["paths"]


def test_redis_down_is_503_json(client, setup, redis_server):
    redis_server.kill()
    e = err(client.post(URL.format("sales"), json={"op": "clear"}, headers=setup["h"]), 503)
    assert "Redis" in e["message"]


def test_bad_json_is_400_not_500(client, fleet_bus, setup):
    """Found while fuzzing the API: these used to be 500s (RecursionError, UnicodeEncodeError)."""
    h = setup["h"]
    deep = "[" * 20_000 + "]" * 20_000
    e = err(client.post(URL.format("sales"), data=deep, content_type="application/json", headers=h), 400)
    assert "nested too deeply" in e["message"]
    e = err(client.post(URL.format("sales"), data="null", content_type="application/json", headers=h), 400)
    assert "JSON object" in e["message"]
    # lone surrogates: valid JSON escapes, but no UTF-8 text; named by field, in batches too
    e = err(client.post(URL.format("sales"), json={"op": "set", "title": "\ud800"}, headers=h), 400)
    assert e["field"] == "title" and "surrogate" in e["message"]
    e = err(client.post(URL.format("sales"), json={"commands": [{"op": "clear", "name": "\udfff"}]}, headers=h), 400)
    assert e["field"] == "commands[0].name" and e["index"] == 0
    e = err(client.post(URL.format("sales"), json={"op": "set", "\ud800": "x"}, headers=h), 400)
    assert e["field"] == "\\ud800"
    e = err(client.post(URL.format("sales"), json={"op": "patch", "name": "p", "patches": {"\ud800": [[0, 1]]}},
                        headers=h), 400)
    assert e["field"] == "patches"
    assert fleet_bus.client.xlen(fleet_bus.keys.commands("sales")) == 0


def test_field_json_types_follow_the_openapi_document(client, fleet_bus, setup):
    h = setup["h"]
    e = err(client.post(URL.format("sales"), json={"op": "set", "title": 5}, headers=h), 400)
    assert e["field"] == "title" and e["message"] == "expected string, got integer"
    e = err(client.post(URL.format("sales"), json={"op": "clear", "name": True}, headers=h), 400)
    assert e["field"] == "name"
    e = err(client.post(URL.format("sales"), json={"op": "set", "name": "p", "rollover": True}, headers=h), 400)
    assert e["field"] == "rollover" and "integer or string" in e["message"]
    e = err(client.post(URL.format("sales"), json={"op": "stream", "name": "p", "data": [[1]]}, headers=h), 400)
    assert e["field"] == "data"
    # null = absent only for a field the op has; otherwise an unknown field, as without null
    e = err(client.post(URL.format("sales"), json={"op": "clear", "data": None}, headers=h), 400)
    assert e["field"] == "data" and "unknown field" in e["message"]
    assert client.post(URL.format("sales"), json={"op": "clear", "name": None}, headers=h).status_code == 202
    # 5.0 is an integer in JSON (Schema): rollover 5.0 travels as "5"; ts takes any number
    r = client.post(URL.format("sales"), json={"op": "set", "name": "p", "rollover": 5.0, "ts": 1.7e12},
                    headers=h)
    assert r.status_code == 202, r.data
    stored = fleet_bus.client.xrange(fleet_bus.keys.commands("sales"))[-1][1]
    assert stored[b"rollover"] == b"5" and float(stored[b"ts"]) == 1.7e12
    # layout's rows/columns are figure-name lists, replace's columns are column names
    assert client.post(URL.format("sales"), json={"op": "layout", "columns": [["p"]]}, headers=h).status_code == 202
    e = err(client.post(URL.format("sales"), json={"op": "layout", "columns": {"p": 1}}, headers=h), 400)
    assert e["field"] == "columns" and "string or array" in e["message"]


def test_rejected_count_out_of_range_is_400(client, setup):
    url = "/api/v1/dashboards/sales/rejected"
    for bad in ("0", "1001", "-1", " 5", "1_0", "5.0", "99999999999999999999"):
        e = err(client.get(url, query_string={"count": bad}, headers=setup["h"]), 400)
        assert e["field"] == "count" and "from 1 to 1000" in e["message"]
    for good in ("1", "1000"):
        assert client.get(url, query_string={"count": good}, headers=setup["h"]).status_code == 200


def test_openapi_commands_match_the_validator(client):
    from app.control.protocol import COMMON_FIELDS, OP_FIELDS, OPS, REQUIRED

    schemas = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in schemas["Command"]["oneOf"]] == \
        [f"{op.capitalize()}Command" for op in OPS]
    for op in OPS:
        s = schemas[f"{op.capitalize()}Command"]
        assert s["additionalProperties"] is False
        assert set(s["properties"]) == OP_FIELDS[op] | COMMON_FIELDS
        assert set(s["required"]) == {"op"} | REQUIRED.get(op, set())


def test_wait_and_timeout_are_checked_even_without_wait(client, fleet_bus, setup):
    """Found by schemathesis: ?timeout=<garbage> without wait=1 was silently ignored and
    the command published. A mistyped parameter is a 400 and publishes nothing."""
    url = URL.format("sales")
    stream = fleet_bus.keys.commands("sales")
    for qs in ({"timeout": "soon"}, {"timeout": "0"}, {"timeout": "11"}, {"wait": "yes"},
               {"wait": "2"}, [("timeout", "1"), ("timeout", "2")], [("wait", "1"), ("wait", "0")]):
        e = err(client.post(url, json=REPLACE, headers=setup["h"], query_string=qs), 400)
        assert e["field"] in ("wait", "timeout"), (qs, e)
    assert fleet_bus.client.xlen(stream) == 0
    assert client.post(url, json=REPLACE, headers=setup["h"],
                       query_string={"wait": "0", "timeout": "2"}).status_code == 202
