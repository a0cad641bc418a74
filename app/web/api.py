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
403, 404, 413, 429 or 503.  Failed authentications are rate limited per client address.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import BadRequest

from app.bus import publisher, registry, store
from app.bus.accounts import Token
from app.bus.keys import DASHBOARD_RE
from app.control.protocol import COMMON_FIELDS, OP_FIELDS, Limits, Rejected, parse
from app.control.snapshot import view
from app.web import fleet
from app.web.auth import client_addr
from app.web.openapi import json_types, openapi_document

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_BATCH = 10_000
MAX_REJECTED = 1000
COUNT_RE = re.compile(r"[0-9]{1,7}\Z")
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
    wait = f.accounts.locked_for("api-auth", addr)
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
        f.accounts.fail("api-auth", addr, limit=s.login_rate_limit * AUTH_FAIL_FACTOR,
                        window=s.login_rate_window_seconds, max_lock=s.login_max_lock_seconds)
        raise ApiError(401, "invalid or revoked token",
                       headers={"WWW-Authenticate": 'Bearer realm="fleet", error="invalid_token"'})
    return tok


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
    if not request.is_json:
        raise ApiError(400, "send a JSON body with Content-Type: application/json")
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
    try:
        ids = publisher.publish_many(f.client, f.keys, name, batch, limits,
                                     durability=f.settings.redis_durability, wait_ms=f.settings.redis_wait_ms)
    except publisher.NotDurable as exc:  # written, but not confirmed by a replica: retry with the same ids
        raise ApiError(503, str(exc)) from None
    except registry.UnknownDashboard:
        raise ApiError(404, f"no dashboard {name!r}") from None
    except Rejected as exc:  # cannot happen after the loop above, but never a 500
        raise ApiError(400, exc.reason, exc.field) from None
    return jsonify({"dashboard": name, "ids": ids}), 202


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
    return jsonify({"dashboard": name, "last_id": last_id, "state": view(state)})


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
