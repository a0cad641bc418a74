"""The OpenAPI 3.1 document of the controller HTTP API (served at /api/v1/openapi.json).

The command schemas are derived from the validator's own tables (``OP_FIELDS``,
``REQUIRED``, ``COMMON_FIELDS``), and :data:`FIELD_SCHEMAS` is also what
:func:`app.web.api.to_fields` checks JSON value types against, so the document and
the server cannot drift apart on which fields exist or which JSON types they take.
"""

from __future__ import annotations

from typing import Any

from app.control.protocol import AXIS_TYPES, COMMON_FIELDS, KINDS, MAX_ID, MAX_TEXT, OP_FIELDS, OPS, REQUIRED

NAME_PATTERN = "^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$"  # bokeh_fleet.wire.NAME_RE
DASHBOARD_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # app.bus.keys.DASHBOARD_RE
ENTRY_ID_PATTERN = "^[0-9]{1,20}-[0-9]{1,20}$"
MAX_ROLLOVER = 10_000_000

_text = {"type": "string", "maxLength": MAX_TEXT}
_name_list = {"type": ["string", "array"], "minLength": 1, "minItems": 1,
              "items": {"type": "string", "minLength": 1, "maxLength": 128},
              "description": "a column name, or a list of them (or its JSON text)"}
_layout = {"type": ["string", "array"], "minItems": 1,
           "items": {"type": ["string", "array"], "minItems": 1,
                     "items": {"type": "string", "pattern": NAME_PATTERN}},
           "description": "figure names, one list per row (or column), e.g. [[\"a\", \"b\"], [\"c\"]]"}

# field -> JSON schema of its value over HTTP.  "string" is always allowed: it is the
# wire text itself.  Other JSON types listed here are sent on as their JSON text; any
# other JSON type is a 400 (app.web.api.to_fields).
FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "id": {"type": "string", "minLength": 1, "maxLength": MAX_ID,
           "description": "idempotency id (duplicates are ignored)"},
    "ts": {"type": ["number", "string"], "description": "milliseconds since the epoch"},
    "name": {"type": "string", "pattern": NAME_PATTERN, "description": "figure name"},
    "kind": {"type": "string", "enum": list(KINDS)},
    "title": _text, "x_label": _text, "y_label": _text,
    "x_axis_type": {"type": "string", "enum": list(AXIS_TYPES)},
    "x": {"type": "string", "minLength": 1, "maxLength": 128, "description": "the x column"},
    "y": _name_list,
    "columns": _name_list,  # replace: column names; layout: see LAYOUT_FIELDS
    "rows": _layout,
    "data": {"type": ["object", "string"], "minProperties": 1,
             "additionalProperties": {"type": "array"},
             "description": "{column: [values...]} (numbers, strings, booleans, null)"},
    "arrow": {"type": "string", "contentEncoding": "base64",
              "description": "base64 of an Arrow IPC stream (instead of data)"},
    "rollover": {"type": ["integer", "string"], "minimum": 1, "maximum": MAX_ROLLOVER},
    "tooltips": {"type": ["boolean", "array", "string"],
                 "items": {"type": "array", "minItems": 2, "maxItems": 2,
                           "items": {"type": "string", "maxLength": MAX_TEXT}},
                 "description": "true (one row per column), false, or [[label, column], ...]"},
    "patches": {"type": ["object", "string"], "minProperties": 1,
                "additionalProperties": {"type": "array", "minItems": 1,
                                         "items": {"type": "array", "minItems": 2, "maxItems": 2}},
                "description": "{column: [[index, value], ...]}"},
    "model": {"type": ["object", "string"], "description": "bokeh.embed.json_item JSON"},
    # panels and heights (app/control/panelspec.py)
    "text": {"type": "string", "maxLength": 20_000, "description": "Markdown of a text panel"},
    "unit": {**_text, "description": "shown after a stat's or gauge's value"},
    "min": {"type": ["number", "string"], "description": "a gauge's lowest value (default 0)"},
    "max": {"type": ["number", "string"], "description": "a gauge's highest value (default 100)"},
    "height": {"type": ["integer", "string"], "minimum": 60, "maximum": 3000,
               "description": "the figure's height in pixels"},
}
LAYOUT_FIELDS = {"rows": _layout, "cols": _layout,
                 "columns": {**_layout, "deprecated": True, "description": "the old name of cols (still read)"}}


def field_schema(key: str, op: str | None = None) -> dict[str, Any] | None:
    """The schema of field ``key`` in a command of ``op`` (None: no such field)."""
    return (LAYOUT_FIELDS.get(key) if op == "layout" else None) or FIELD_SCHEMAS.get(key)


def json_types(key: str, op: str | None = None) -> list[str]:
    """The JSON types the HTTP API takes for field ``key`` (of ``op``), "null" excluded."""
    schema = field_schema(key, op)
    if schema is None:
        return []
    t = schema["type"]
    return [t] if isinstance(t, str) else list(t)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    t = schema["type"]
    types = [t] if isinstance(t, str) else list(t)
    out = {**schema, "type": [*types, "null"]}
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def command_schema(op: str) -> dict[str, Any]:
    """One op's command object: its fields, those it requires, nothing else."""
    required = sorted(REQUIRED.get(op, ()))
    props: dict[str, Any] = {"op": {"const": op}}
    for key in sorted((OP_FIELDS[op] | COMMON_FIELDS) - {"op"}):
        schema = field_schema(key, op)
        assert schema is not None, key
        props[key] = schema if key in required else _nullable(schema)
    return {"type": "object", "title": f"{op} command", "required": ["op", *required],
            "properties": props, "additionalProperties": False}


def _error(desc: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": desc,
                           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if headers:
        out["headers"] = headers
    return out


def _json(schema: dict[str, Any], desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def openapi_document() -> dict[str, Any]:
    name_param = {"name": "name", "in": "path", "required": True,
                  "schema": {"type": "string", "pattern": DASHBOARD_PATTERN}}
    command = {
        "description": (
            "One command: the same fields as a Redis stream entry (see docs/protocol.md), "
            "only those of its op. String values are used as is; the other JSON types a "
            "field allows are sent as their JSON text, so {\"data\": {\"x\": [1]}} equals "
            "the wire field data='{\"x\":[1]}'. null means the field is absent. arrow is "
            "base64 of an Arrow IPC stream."),
        "oneOf": [{"$ref": f"#/components/schemas/{op.capitalize()}Command"} for op in OPS],
    }
    bearer: dict[str, list[str]] = {"bearer": []}
    session: dict[str, list[str]] = {"session": []}
    retry_after = {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"},
                                   "description": "seconds"}}
    www_auth = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}
    common_errors = {
        "401": _error("missing, invalid, revoked or expired token", www_auth),
        "403": _error("the token (or the logged-in user) may not use this dashboard"),
        "404": _error("no such dashboard"),
        "429": _error("too many failed authentications from this address, or the token's publish "
                      "rate (FLEET_API_PUBLISH_RATE) exceeded", retry_after),
        "503": _error("the command bus (Redis) is not reachable, or full at its maxmemory; retry",
                      retry_after),
    }
    figure = {"type": "object", "required": ["name", "kind", "data"],
              "properties": {"name": {"type": "string"},
                             "kind": {"type": "string", "enum": [*KINDS, "model"]},
                             "data": {"type": "object", "additionalProperties": {"type": "array"}}}}
    state = {"type": "object", "required": ["title", "figures", "layout_mode", "layout", "applied"],
             "properties": {"title": {"type": "string"},
                            "figures": {"type": "array", "items": figure},
                            "layout_mode": {"type": "string", "enum": ["rows", "columns"]},
                            "layout": {"type": "array", "items": {"type": "array",
                                                                  "items": {"type": "string"}}},
                            "applied": {"type": "integer", "minimum": 0},
                            "digest": {"type": "string"}}}
    rejected_entry = {"type": "object", "required": ["id", "reason", "fields"],
                      "properties": {"id": {"type": "string", "pattern": ENTRY_ID_PATTERN},
                                     "reason": {"type": "string"},
                                     "fields": {"type": "object",
                                                "additionalProperties": {"type": "string"}}}}
    schemas: dict[str, Any] = {
        "Command": command,
        **{f"{op.capitalize()}Command": command_schema(op) for op in OPS},
        "Batch": {"type": "object", "required": ["commands"], "additionalProperties": False,
                  "properties": {"commands": {"type": "array", "minItems": 1, "maxItems": 10_000,
                                              "items": {"$ref": "#/components/schemas/Command"}}}},
        "Error": {"type": "object", "required": ["error"], "additionalProperties": False,
                  "properties": {"error": {
                      "type": "object", "required": ["status", "message"], "additionalProperties": False,
                      "properties": {
                          "status": {"type": "integer", "minimum": 400, "maximum": 599},
                          "message": {"type": "string", "minLength": 1},
                          "field": {"type": "string",
                                    "description": "path of the offending field, e.g. commands[2].data"},
                          "index": {"type": "integer", "minimum": 0,
                                    "description": "index of the command in a batch"},
                      }}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bokeh fleet controller API", "version": "1",
                 "description": "Publish commands to live Bokeh dashboards and read their state. "
                                "Tokens: fleetctl tokens create --dashboard NAME --name LABEL. "
                                "GETs also accept the browser session of a user who may view "
                                "the dashboard; POST takes bearer tokens only."},
        "servers": [{"url": "/api/v1"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "session": {"type": "apiKey", "in": "cookie", "name": "fleet_session"}},
            "schemas": schemas,
        },
        "security": [bearer],
        "paths": {
            "/dashboards": {"get": {
                "summary": "Dashboards the token (or user) may use",
                "security": [bearer, session],
                "responses": {
                    "200": _json({"type": "object", "required": ["dashboards"], "additionalProperties": False,
                                  "properties": {"dashboards": {"type": "array", "items": {
                                      "type": "string", "pattern": DASHBOARD_PATTERN}}}}, "names"),
                    **{k: v for k, v in common_errors.items() if k in ("401", "429", "503")}}}},
            "/dashboards/{name}/commands": {"post": {
                "summary": "Publish one command or a batch (validated, all or nothing)",
                "description": (
                    "With ?wait=1 the answer comes once the instances have folded every command: "
                    "200 if applied, 422 with the readers' reason if one was rejected, 202 with "
                    "applied false and the first pending id if not folded within timeout seconds "
                    "(it stays published). "
                    "An Arrow IPC stream body (Content-Type application/vnd.apache.arrow.stream) "
                    "is the data of one command whose other fields are query parameters, e.g. "
                    "?op=stream&name=revenue."),
                "parameters": [name_param,
                               {"name": "wait", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]},
                                "description": "1: answer once the instances applied or rejected the commands"},
                               {"name": "timeout", "in": "query",
                                "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 10,
                                           "default": 5},
                                "description": "seconds to wait with wait=1"}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {
                        "oneOf": [{"$ref": "#/components/schemas/Command"},
                                  {"$ref": "#/components/schemas/Batch"}]}},
                    "application/vnd.apache.arrow.stream": {"schema": {
                        "type": "string", "contentMediaType": "application/vnd.apache.arrow.stream"}}}},
                "responses": {
                    "200": _json({"type": "object", "required": ["dashboard", "ids", "applied"],
                                  "additionalProperties": False,
                                  "properties": {"dashboard": {"type": "string"},
                                                 "applied": {"const": True},
                                                 "ids": {"type": "array", "minItems": 1, "items": {
                                                     "type": "string", "pattern": ENTRY_ID_PATTERN}}}},
                                 "wait=1: published and applied by the instances"),
                    "422": _error("wait=1: the instances rejected a command (message has their reason)"),
                    "202": _json({"type": "object", "required": ["dashboard", "ids"],
                                  "additionalProperties": False,
                                  "properties": {"dashboard": {"type": "string"},
                                                 "applied": {"const": False},
                                                 "pending": {"type": "string", "pattern": ENTRY_ID_PATTERN},
                                                 "ids": {"type": "array", "minItems": 1, "items": {
                                                     "type": "string", "pattern": ENTRY_ID_PATTERN}}}},
                                 "published (durable as FLEET_REDIS_DURABILITY says); the stream ids in order "
                                 "(with wait=1: not all folded "
                                 "within timeout, pending = the first one not folded)"),
                    "400": _error("not JSON, a bad shape, or a command the validator rejects (see field)"),
                    "413": _error("body larger than FLEET_API_MAX_BODY_BYTES"),
                    **common_errors,
                }}},
            "/dashboards/{name}/commands/{id}": {"get": {
                "summary": "Whether the instances applied, rejected (with the reason) or not yet "
                           "folded a published command",
                "security": [bearer, session],
                "parameters": [name_param, {"name": "id", "in": "path", "required": True,
                                            "schema": {"type": "string", "pattern": ENTRY_ID_PATTERN}}],
                "responses": {
                    "200": _json({"type": "object", "required": ["dashboard", "id", "status", "reason"],
                                  "additionalProperties": False,
                                  "properties": {"dashboard": {"type": "string"},
                                                 "id": {"type": "string", "pattern": ENTRY_ID_PATTERN},
                                                 "status": {"type": "string",
                                                            "enum": ["applied", "rejected", "pending"]},
                                                 "reason": {"type": "string"}}},
                                 "the command's status"),
                    "400": _error("not a stream id"),
                    **common_errors}}},
            "/dashboards/{name}/state": {"get": {
                "summary": "Current folded state (snapshot + log tail) as plain JSON",
                "security": [bearer, session],
                "parameters": [name_param],
                "responses": {
                    "200": _json({"type": "object", "required": ["dashboard", "last_id", "state"],
                                  "additionalProperties": False,
                                  "properties": {"dashboard": {"type": "string"},
                                                 "last_id": {"type": "string", "pattern": ENTRY_ID_PATTERN},
                                                 "state": state}},
                                 "state with the id of the last entry folded in"),
                    **common_errors}}},
            "/dashboards/{name}/rejected": {"get": {
                "summary": "Newest rejected commands with their reasons",
                "security": [bearer, session],
                "parameters": [name_param, {"name": "count", "in": "query",
                                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                                       "default": 100}}],
                "responses": {
                    "200": _json({"type": "object", "required": ["dashboard", "rejected"],
                                  "additionalProperties": False,
                                  "properties": {"dashboard": {"type": "string"},
                                                 "rejected": {"type": "array", "items": rejected_entry}}},
                                 "rejected entries, newest first"),
                    "400": _error("count is not an integer from 1 to 1000"),
                    **common_errors}}},
        },
    }
