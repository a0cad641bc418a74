"""Controller HTTP API, v1: publish commands and read state over HTTP with a bearer token.

``POST /api/v1/dashboards/<name>/commands`` takes one command object or
``{"commands": [...]}``.  Each object holds the same fields as a stream entry; values
may be JSON-typed (numbers, lists, objects) and are turned into the wire strings
first (structured values -> JSON text, ``arrow`` -> base64-decoded bytes), so they
mean exactly what the same fields mean in ``redis-cli XADD``.  Every command is
validated by :func:`app.control.protocol.parse` - the instances' own validator -
before any is published (all or nothing).

202 means what ``FLEET_REDIS_DURABILITY`` promises (app/bus/publisher.py): in Redis's
memory and on disk within ~1 s (``everysec``), on disk (``always``), or on at least
one replica (``replica``; when no replica confirms in time the answer is 503 - the
commands may or may not survive a failover: send them again with the same ``id``).

Errors are ``{"error": {"status", "message", "field"?, "index"?}}`` with 400, 401,
403, 404, 413, 429 or 503.  Failed authentications are rate limited per client address;
publishing is rate limited per token (a token bucket in Redis: 429 with Retry-After).
A Redis that reached its ``maxmemory`` refuses publishes: 503, never a silent drop;
so does a publish that no replica confirmed with ``FLEET_REDIS_DURABILITY=replica``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from typing import Any

from flask import Blueprint, Response, g, jsonify, request, send_from_directory
from werkzeug.exceptions import BadRequest

from app.bus import applied, buckets, publisher, ratelimit, registry, store
from app.bus.accounts import Token
from app.bus.connection import ResponseError
from app.bus.keys import DASHBOARD_RE
from app.control.protocol import COMMON_FIELDS, OP_FIELDS, Limits, Rejected, parse
from app.control.snapshot import view
from app.metrics.web import API_COMMANDS, API_PUBLISHES
from app.web import fleet
from app.web.auth import client_addr
from app.web.openapi import json_types, openapi_document

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_BATCH = 10_000
MAX_REJECTED = 1000
COUNT_RE = re.compile(r"[0-9]{1,7}\Z")
ARROW_STREAM = "application/vnd.apache.arrow.stream"
ENTRY_ID_RE = re.compile(r"[0-9]{1,20}-[0-9]{1,20}\Z")
WAIT_DEFAULT = 5.0
WAIT_MAX = 10.0
AUTH_FAIL_FACTOR = 5  # failed bearer attempts per address and window = login limit x this


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None,
                 index: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.index = status, message, field, index
        self.headers = headers or {}


@bp.errorhandler(ApiError)
def api_error(exc: ApiError) -> Response:
    err: dict[str, Any] = {"status": exc.status, "message": exc.message}
    if exc.field is not None:
        err["field"] = exc.field
    if exc.index is not None:
        err["index"] = exc.index
    resp = jsonify({"error": err})
    resp.status_code = exc.status
    resp.headers.update(exc.headers)
    return resp


def _bearer() -> Token:
    """The request's live API token, or 401 (429 after too many failures)."""
    f = fleet()
    s = f.settings
    addr = client_addr()  # the real client (nginx's X-Forwarded-For): never global
    wait = ratelimit.locked_for(f.client, f.keys, "api-auth", addr)
    if wait:
        raise ApiError(429, "too many failed authentications from this address; retry later",
                       headers={"Retry-After": str(wait)})
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    www = {"WWW-Authenticate": 'Bearer realm="fleet"'}
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)", headers=www)
    tok = f.accounts.verify_token(secret.strip())
    if tok is None:
        ratelimit.fail(f.client, f.keys, "api-auth", addr, limit=s.login_rate_limit * AUTH_FAIL_FACTOR,
                       window=s.login_rate_window_seconds, max_lock=s.login_max_lock_seconds)
        raise ApiError(401, f.accounts.token_refusal(secret.strip()),
                       headers={"WWW-Authenticate": 'Bearer realm="fleet", error="invalid_token"'})
    return tok


def _redis_full(exc: Exception) -> Exception:
    """Redis at its maxmemory (noeviction) refuses writes: say so (503), loudly."""
    if "OOM" not in str(exc):
        return exc
    return ApiError(503, "Redis is full (it reached its maxmemory): publishes are refused until "
                         "memory is freed; nothing was published", headers={"Retry-After": "30"})


def _publish_rate(tok: Token) -> None:
    """429 with Retry-After when this token publishes faster than FLEET_API_PUBLISH_RATE
    (bursts up to FLEET_API_PUBLISH_BURST) or more than FLEET_API_PUBLISH_BYTES_PER_SECOND
    of bodies (bursts up to FLEET_API_MAX_BODY_BYTES); other tokens have buckets of their own."""
    f = fleet()
    s = f.settings
    key = f.keys.ratelimit(f"publish:{tok.id}")
    kib = (request.content_length or 0) // 1024 + 1
    try:
        wait = buckets.take(f.client, key, s.api_publish_rate, s.api_publish_burst)
        if not wait and s.api_publish_bytes_per_second > 0:
            wait = buckets.take(f.client, key + ":kib", s.api_publish_bytes_per_second / 1024,
                                s.api_max_body_bytes // 1024 + 1, cost=kib)
            if wait:
                raise ApiError(429, f"token {tok.name!r} publishes more than "
                                    f"{s.api_publish_bytes_per_second} bytes/s; retry after {wait:.1f} s",
                               headers={"Retry-After": buckets.retry_after(wait)})
    except ResponseError as exc:
        raise _redis_full(exc) from None
    if wait:
        raise ApiError(429, f"token {tok.name!r} publishes faster than {s.api_publish_rate:g} requests/s "
                            f"(burst {s.api_publish_burst}); retry after {wait:.1f} s",
                       headers={"Retry-After": buckets.retry_after(wait)})


def _dashboard(name: str, tok: Token | None) -> None:
    """403 unless the token (or else the logged-in user) covers ``name``; 404 if unknown."""
    f = fleet()
    if tok is not None:
        if not tok.allows(name):
            raise ApiError(403, f"token {tok.name!r} is not valid for dashboard {name!r}")
    elif not f.accounts.can_view(g.user, name):
        raise ApiError(403, f"you may not view dashboard {name!r}")
    if not DASHBOARD_RE.match(name) or not registry.dashboard_exists(f.client, f.keys, name):
        raise ApiError(404, f"no dashboard {name!r}")


_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
               (list, "array"), (dict, "object"))


def _json_type(value: Any) -> str:
    return next(name for cls, name in _JSON_TYPES if isinstance(value, cls))


def _check_text(text: str, where: str) -> None:
    """Lone surrogates (``"\\ud800"`` in JSON) cannot be stored as UTF-8: a 400, not a 500."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "not valid Unicode text (a lone surrogate such as \\ud800)",
                       where.encode("utf-8", "backslashreplace").decode()) from None


def to_fields(obj: Any, path: str) -> dict[str, str | bytes]:
    """One JSON command object -> stream-entry fields with wire-format string values.

    A field's value must be a string (the wire text itself) or one of the other JSON
    types the OpenAPI document lists for it (``FIELD_SCHEMAS``), which is sent as its
    JSON text; ``null`` means absent, for a field the command's op has.  Unknown
    fields are left to the validator, which names them.  Text that cannot be UTF-8
    (lone surrogates) is a 400.
    """
    if not isinstance(obj, dict):
        raise ApiError(400, "a command is a JSON object of fields, e.g. {\"op\": \"clear\"}", path or None)
    op = obj.get("op") if isinstance(obj.get("op"), str) else None
    out: dict[str, str | bytes] = {}
    for key, value in obj.items():
        where = f"{path}.{key}" if path else key
        _check_text(key, where)
        if value is None:
            if op in OP_FIELDS and key not in OP_FIELDS[op] | COMMON_FIELDS:
                raise ApiError(400, f"unknown field for op {op}; allowed: "
                                    f"{', '.join(sorted(OP_FIELDS[op] | COMMON_FIELDS))}", where)
            continue
        types = json_types(key, op)
        kind = _json_type(value)
        if kind == "integer" and "integer" not in types and "number" in types:
            kind = "number"
        elif kind == "number" and "integer" in types and float(value).is_integer():
            value, kind = int(value), "integer"  # 5.0 is an integer in JSON Schema
        if types and kind not in types:
            raise ApiError(400, f"expected {' or '.join(types)}, got {kind}", where)
        if key == "arrow":
            if not isinstance(value, str):
                raise ApiError(400, "arrow is base64 of an Arrow IPC stream", where)
            try:
                out[key] = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, "arrow is not valid base64", where) from None
        elif isinstance(value, str):
            _check_text(value, where)
            out[key] = value
        else:
            try:
                text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            except (TypeError, ValueError, RecursionError) as exc:
                raise ApiError(400, f"cannot encode as JSON: {exc}", where) from None
            _check_text(text, where)
            out[key] = text
    return out


def _commands(body: Any) -> tuple[list[dict[str, str | bytes]], bool]:
    if isinstance(body, dict) and "commands" in body and "op" not in body:
        items = body["commands"]
        if set(body) != {"commands"}:
            extra = sorted(set(body) - {"commands"})[0]
            raise ApiError(400, "a batch body has only the key commands", extra)
        if not isinstance(items, list) or not items:
            raise ApiError(400, "commands must be a non-empty list of command objects", "commands")
        if len(items) > MAX_BATCH:
            raise ApiError(400, f"{len(items)} commands, more than {MAX_BATCH} in one batch", "commands")
        batch = []
        for i, c in enumerate(items):
            try:
                batch.append(to_fields(c, f"commands[{i}]"))
            except ApiError as exc:
                exc.index = i
                raise
        return batch, True
    return [to_fields(body, "")], False


@bp.post("/dashboards/<name>/commands")
def post_commands(name: str) -> tuple[Response, int]:
    tok = _bearer()
    _dashboard(name, tok)
    f = fleet()
    wait = _wait_seconds()
    if request.mimetype == ARROW_STREAM:
        batch, is_batch = [_arrow_command()], False
    else:
        if not request.is_json:
            raise ApiError(400, "send a JSON body with Content-Type: application/json "
                                f"(or an Arrow IPC stream as {ARROW_STREAM})")
        try:
            body = request.get_json()  # raises 413 first if the body is too large
        except BadRequest:
            raise ApiError(400, "body is not valid JSON") from None
        except RecursionError:
            raise ApiError(400, "body is not valid JSON: nested too deeply") from None
        batch, is_batch = _commands(body)
    limits = Limits.from_settings(f.settings)
    for i, fields in enumerate(batch):
        try:
            parse(fields, limits)
        except Rejected as exc:
            prefix = f"commands[{i}]" if is_batch else ""
            field = f"{prefix}.{exc.field}" if prefix and exc.field else (exc.field or prefix or None)
            raise ApiError(400, exc.reason, field, i if is_batch else None) from None
    _publish_rate(tok)  # counts what would be published; a 400 costs no stream memory
    try:
        ids = publisher.publish_many(f.client, f.keys, name, batch, limits,
                                     durability=f.settings.redis_durability, wait_ms=f.settings.redis_wait_ms)
    except publisher.NotDurable as exc:  # written, but not confirmed by a replica: retry with the same ids
        raise ApiError(503, str(exc)) from None
    except registry.UnknownDashboard:
        raise ApiError(404, f"no dashboard {name!r}") from None
    except Rejected as exc:  # cannot happen after the loop above, but never a 500
        raise ApiError(400, exc.reason, exc.field) from None
    except ResponseError as exc:
        raise _redis_full(exc) from None
    API_PUBLISHES.labels(tok.name or tok.id).inc()
    API_COMMANDS.labels(tok.name or tok.id).inc(len(ids))
    if wait is None:
        return jsonify({"dashboard": name, "ids": ids}), 202
    status, reason, entry_id = applied.wait(f.client, f.keys, name, ids, wait)
    if status == "rejected":
        raise ApiError(422, f"the instances rejected command {entry_id}: {reason}",
                       index=ids.index(entry_id) if is_batch else None)
    if status == "pending":  # published, not folded yet: accepted, as without wait
        return jsonify({"dashboard": name, "ids": ids, "applied": False,
                        "pending": entry_id}), 202
    return jsonify({"dashboard": name, "ids": ids, "applied": True}), 200


def _wait_seconds() -> float | None:
    """``?wait=1`` (with ``&timeout=S``, default 5, at most 10): wait until applied."""
    # Both are checked whenever they are given (once each), also without wait=1: a
    # mistyped parameter is an error, not silently ignored.
    for name in ("wait", "timeout"):
        if len(request.args.getlist(name)) > 1:
            raise ApiError(400, f"give {name} at most once", name)
    wait = request.args.get("wait", "0")
    if wait not in ("0", "1"):
        raise ApiError(400, f"wait must be 0 or 1, got {wait[:40]!r}", "wait")
    raw = request.args.get("timeout", str(WAIT_DEFAULT))
    try:
        t = float(raw)
    except ValueError:
        t = -1.0
    if not 0 < t <= WAIT_MAX:
        raise ApiError(400, f"timeout must be a number of seconds from 0 to {WAIT_MAX}, got {raw[:40]!r}",
                       "timeout")
    return t if wait == "1" else None


def _arrow_command() -> dict[str, str | bytes]:
    """An Arrow IPC stream body: the data of one command whose other fields are the
    query parameters (``?op=stream&name=revenue``)."""
    fields: dict[str, str | bytes] = {k: v for k, v in request.args.items() if k not in ("wait", "timeout")}
    for k, v in fields.items():
        _check_text(str(k), k)
        _check_text(str(v), k)
    if "op" not in fields:
        raise ApiError(400, "with an Arrow body, give the op and other fields as query parameters "
                            "(?op=stream&name=...)", "op")
    fields["arrow"] = request.get_data(cache=False)
    return fields


@bp.get("/dashboards/<name>/commands/<entry_id>")
def get_command(name: str, entry_id: str) -> Response:
    """Whether the instances folded a published command: applied, rejected (with the
    reason) or pending."""
    tok = _optional_bearer()
    _dashboard(name, tok)
    if not ENTRY_ID_RE.match(entry_id) or max(map(int, entry_id.split("-"))) >= 2**64:
        raise ApiError(400, "not a stream id (like 1700000000000-0)", "id")
    f = fleet()
    status, reason = applied.status(f.client, f.keys, name, entry_id)
    return jsonify({"dashboard": name, "id": entry_id, "status": status, "reason": reason})


def _optional_bearer() -> Token | None:
    if request.headers.get("Authorization") or g.user is None:
        return _bearer()
    return None


@bp.get("/dashboards/<name>/state")
def get_state(name: str) -> Response:
    """The folded state (snapshot + log tail), as plain JSON."""
    tok = _optional_bearer()
    _dashboard(name, tok)
    f = fleet()
    try:
        state, last_id = store.read_state(f.client, f.keys, name, f.settings)
    except registry.UnknownDashboard:
        raise ApiError(404, f"no dashboard {name!r}") from None
    # allow_nan=False: the answer is JSON or an error, never NaN/Infinity (columns map
    # those to null when a command is decoded; model trees holding them are rejected)
    body = json.dumps({"dashboard": name, "last_id": last_id, "state": view(state)}, allow_nan=False)
    return Response(body, mimetype="application/json")


@bp.get("/dashboards/<name>/rejected")
def get_rejected(name: str) -> Response:
    """The newest rejected commands of the dashboard with their reasons."""
    tok = _optional_bearer()
    _dashboard(name, tok)
    raw = request.args.get("count", "100")
    if not COUNT_RE.match(raw) or not 1 <= int(raw) <= MAX_REJECTED:
        raise ApiError(400, f"count must be an integer from 1 to {MAX_REJECTED}, got {raw[:40]!r}",
                       "count")
    count = int(raw)
    f = fleet()
    return jsonify({"dashboard": name, "rejected": store.read_rejected(f.client, f.keys, name, count)})


@bp.get("/dashboards")
def list_dashboards() -> Response:
    """Dashboards this token (or logged-in user) may use."""
    tok = _optional_bearer()
    f = fleet()
    names = list(registry.list_dashboards(f.client, f.keys))
    if tok is not None:
        names = [n for n in names if tok.allows(n)]
    else:
        names = f.accounts.viewable(g.user, names)
    return jsonify({"dashboards": names})


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


# --- Swagger UI at /api/v1/docs: the assets of the flask-swagger-ui package, served from our
# origin (no CDN), started by our own static/swagger-init.js (no inline script), so the page
# works under a strict CSP.
DOCS_ASSETS = {"swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css",
               "index.css", "favicon-32x32.png"}
# the one <style> element Swagger UI 5 inserts (by hash; tests/test_client_swagger.py notices a change)
SWAGGER_STYLE_HASH = "'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='"
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' " + SWAGGER_STYLE_HASH + "; "
            "img-src 'self' data:; "
            "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")
DOCS_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Bokeh fleet controller API</title>
<link rel="stylesheet" href="{base}/docs/swagger-ui.css">
<link rel="stylesheet" href="{base}/docs/index.css">
<link rel="icon" type="image/png" href="{base}/docs/favicon-32x32.png"></head>
<body><div id="swagger-ui" data-spec="{base}/openapi.json"></div>
<script src="{base}/docs/swagger-ui-bundle.js"></script>
<script src="{base}/docs/swagger-ui-standalone-preset.js"></script>
<script src="{base}/docs/swagger-init.js"></script>
</body></html>
"""


def _swagger_dist() -> str:
    import flask_swagger_ui

    return os.path.join(os.path.dirname(flask_swagger_ui.__file__), "dist")


@bp.get("/docs")
def docs_page() -> Response:
    """Swagger UI of this API (try it out with a bearer token)."""
    resp = Response(DOCS_PAGE.format(base=request.script_root + (bp.url_prefix or "")), mimetype="text/html")
    resp.headers["Content-Security-Policy"] = DOCS_CSP
    return resp


@bp.get("/docs/<asset>")
def docs_asset(asset: str) -> Response:
    if asset == "swagger-init.js":
        resp = send_from_directory(os.path.join(os.path.dirname(__file__), "static"), asset)
    elif asset in DOCS_ASSETS:
        resp = send_from_directory(_swagger_dist(), asset)
    else:
        raise ApiError(404, f"no such file {asset[:60]!r}")
    resp.headers["Content-Security-Policy"] = DOCS_CSP
    return resp
