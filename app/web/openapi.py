"""The OpenAPI 3.1 document of the controller HTTP API (served at /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any

from app.control.protocol import AXIS_TYPES, KINDS, OPS


def _error(desc: str) -> dict[str, Any]:
    return {"description": desc,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_document() -> dict[str, Any]:
    name_param = {"name": "name", "in": "path", "required": True,
                  "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}}
    command = {
        "type": "object",
        "description": (
            "One command: the same fields as a Redis stream entry (see docs/protocol.md). "
            "String values are used as is; numbers, booleans, lists and objects are sent "
            "as their JSON text, so {\"data\": {\"x\": [1]}} equals the wire field "
            "data='{\"x\":[1]}'. null means the field is absent. arrow is base64 of an "
            "Arrow IPC stream."),
        "required": ["op"],
        "properties": {
            "op": {"type": "string", "enum": list(OPS)},
            "id": {"type": "string", "description": "idempotency id (duplicates are ignored)"},
            "ts": {"type": ["number", "string"], "description": "milliseconds since the epoch"},
            "name": {"type": "string", "description": "figure name"},
            "kind": {"type": "string", "enum": list(KINDS)},
            "title": {"type": "string"}, "x_label": {"type": "string"}, "y_label": {"type": "string"},
            "x_axis_type": {"type": "string", "enum": list(AXIS_TYPES)},
            "x": {"type": "string"},
            "y": {"type": ["string", "array"], "items": {"type": "string"}},
            "columns": {"type": ["string", "array"]},
            "rows": {"type": ["string", "array"]},
            "data": {"type": ["object", "string"], "description": "{column: [values...]}"},
            "arrow": {"type": "string", "contentEncoding": "base64"},
            "rollover": {"type": ["integer", "string"]},
            "tooltips": {"type": ["boolean", "array", "string"]},
            "patches": {"type": ["object", "string"]},
            "model": {"type": ["object", "string"], "description": "bokeh.embed.json_item JSON"},
        },
        "additionalProperties": True,
    }
    bearer = [{"bearer": []}]
    common_errors = {
        "401": _error("missing, invalid or revoked token"),
        "403": _error("the token is not scoped to this dashboard"),
        "404": _error("no such dashboard"),
        "429": _error("too many failed authentications from this address"),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bokeh fleet controller API", "version": "1",
                 "description": "Publish commands to live Bokeh dashboards and read their state. "
                                "Tokens: fleetctl tokens create --dashboard NAME --name LABEL."},
        "servers": [{"url": "/api/v1"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Command": command,
                "Batch": {"type": "object", "required": ["commands"],
                          "properties": {"commands": {"type": "array", "minItems": 1,
                                                      "items": {"$ref": "#/components/schemas/Command"}}}},
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["status", "message"],
                    "properties": {
                        "status": {"type": "integer"},
                        "message": {"type": "string"},
                        "field": {"type": "string",
                                  "description": "path of the offending field, e.g. commands[2].data"},
                        "index": {"type": "integer", "description": "index of the command in a batch"},
                    }}}},
            },
        },
        "security": bearer,
        "paths": {
            "/dashboards": {"get": {
                "summary": "Dashboards the token may use",
                "responses": {"200": {"description": "names",
                                      "content": {"application/json": {"schema": {
                                          "type": "object",
                                          "properties": {"dashboards": {"type": "array",
                                                                        "items": {"type": "string"}}}}}}},
                              "401": common_errors["401"], "429": common_errors["429"]}}},
            "/dashboards/{name}/commands": {"post": {
                "summary": "Publish one command or a batch (validated, all or nothing)",
                "parameters": [name_param],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [{"$ref": "#/components/schemas/Command"},
                              {"$ref": "#/components/schemas/Batch"}]}}}},
                "responses": {
                    "202": {"description": "published; the stream ids in order",
                            "content": {"application/json": {"schema": {
                                "type": "object",
                                "properties": {"dashboard": {"type": "string"},
                                               "ids": {"type": "array", "items": {"type": "string"}}}}}}},
                    "400": _error("invalid JSON or a command the validator rejects (see field)"),
                    "413": _error("body larger than FLEET_API_MAX_BODY_BYTES"),
                    **common_errors,
                }}},
            "/dashboards/{name}/state": {"get": {
                "summary": "Current folded state (snapshot + log tail) as plain JSON",
                "parameters": [name_param],
                "responses": {"200": {"description": "state with last_id"}, **common_errors}}},
            "/dashboards/{name}/rejected": {"get": {
                "summary": "Newest rejected commands with their reasons",
                "parameters": [name_param, {"name": "count", "in": "query",
                                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                "responses": {"200": {"description": "rejected entries, newest first"},
                              **common_errors}}},
        },
    }
