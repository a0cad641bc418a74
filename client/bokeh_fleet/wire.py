"""Wire protocol v1: op and field names, name patterns, and value encoding.

The one source of these tables: the server's validator (``app.control.protocol``)
imports them from here, so a controller built on this package and the readers
cannot disagree on which ops and fields exist.  A command is one Redis stream
entry of flat string fields (structured values are JSON text, ``arrow`` is Arrow
IPC bytes); see docs/protocol.md.  Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, Iterable, Mapping, Optional, Union

VERSION = 1
OPS = ("replace", "stream", "patch", "clear", "remove", "layout", "set", "figure")
KINDS = ("line", "scatter", "bar", "area", "step", "table", "stat", "gauge", "text")
#: fields of replace/set for panels (stat, gauge, text) and figure heights
PANEL_FIELDS = ("text", "unit", "min", "max", "height")
AXIS_TYPES = ("number", "datetime", "categorical")
#: figure names (``name``, layout entries)
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}\Z")
#: column names: 1-128 characters, no control characters
COLUMN_RE = re.compile(r"^[^\x00-\x1f]{1,128}\Z")
#: dashboard names (the ``{d}`` of the Redis keys)
DASHBOARD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
MAX_TEXT = 500
MAX_ID = 200

COMMON_FIELDS = {"op", "id", "ts"}
OP_FIELDS: Dict[str, set] = {
    "replace": {"name", "kind", "title", "x_label", "y_label", "x_axis_type", "x", "y",
                "columns", "data", "arrow", "rollover", "tooltips", *PANEL_FIELDS},
    "stream": {"name", "data", "arrow", "rollover"},
    "patch": {"name", "patches"},
    "clear": {"name"},
    "remove": {"name"},
    # ``cols``: a column layout; ``columns`` is its old name, still read (docs/protocol.md)
    "layout": {"rows", "cols", "columns"},
    "set": {"name", "title", "x_label", "y_label", "rollover", "tooltips", *PANEL_FIELDS},
    "figure": {"name", "model", "title"},
}
REQUIRED: Dict[str, set] = {
    "replace": {"name", "kind"},
    "stream": {"name"},
    "patch": {"name", "patches"},
    "remove": {"name"},
    "figure": {"name", "model"},
}
#: the fields of op layout that hold a JSON list of lists of figure names
LAYOUT_FIELDS = ("rows", "cols", "columns")
#: fields that hold a column name or a JSON list of column names
NAME_LIST_FIELDS = ("y", "columns")
#: fields that hold other JSON values
JSON_FIELDS = ("patches", "tooltips", "model")
#: fields of a rejected entry besides the command's own fields (``fleet:{d}:rejected``)
REJECTED_FIELDS = ("_reason", "_truncated")

Fields = Dict[str, Union[str, bytes]]


class Rejected(Exception):
    """A command that cannot be published or applied; ``reason`` is a sentence for a person.

    ``field`` names the offending field (or column) when there is one.
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


def keys(prefix: str, dashboard: str) -> dict[str, str]:
    """Redis key names of one dashboard (hash-tagged: ``fleet:{sales}:commands``)."""
    return {k: f"{prefix}:{{{dashboard}}}:{k}" for k in ("commands", "rejected", "snapshot", "applied")}


def check_dashboard(name: Any) -> str:
    """``name`` if it is a valid dashboard name, else :class:`Rejected`."""
    if not isinstance(name, str) or not DASHBOARD_RE.match(name):
        raise Rejected(f"{name!r} is not a valid dashboard name (1-64 letters, digits, _ . -, "
                       "starting with a letter or digit)", "dashboard")
    return name


def id_tuple(entry_id: str | bytes) -> tuple[int, int]:
    """A stream id as a comparable ``(ms, seq)``."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _scalar(v: Any) -> str:
    if isinstance(v, str):
        return v
    if hasattr(v, "item") and callable(v.item) and not isinstance(v, (list, dict)):
        v = v.item()  # numpy scalar
    return json.dumps(v)


def _jsonable(value: Any, where: str) -> Any:
    """Plain JSON value of tooltips/patches/model parameters (numpy scalars unwrapped)."""
    from bokeh_fleet import data as _data

    try:
        return json.loads(json.dumps(value, allow_nan=False, default=_data.json_default))
    except (TypeError, ValueError) as exc:
        raise Rejected(f"cannot be sent as JSON ({exc})", where) from None


def fields_of(op: str, **params: Any) -> Fields:
    """Stream-entry fields for ``op`` from Python values (``None`` = absent), unchecked.

    ``data`` may be any shape :func:`bokeh_fleet.data.encode_data` accepts; ``cmd_id``
    becomes the ``id`` field.  Field names map one to one; values are encoded by field
    (op layout's ``rows``/``cols`` as lists of lists of figure names).
    """
    from bokeh_fleet import data as _data

    fields: Fields = {"op": op}
    for key, value in params.items():
        if value is None:
            continue
        if key == "data":
            enc = value if isinstance(value, _data.Encoded) else _data.encode_data(value)
            fields[enc.field] = enc.payload
        elif key == "cmd_id":
            fields["id"] = str(value)
        elif key in JSON_FIELDS:
            fields[key] = json.dumps(_jsonable(value, key), allow_nan=False)
        elif isinstance(value, str):
            fields[key] = value
        elif op == "layout" and key in LAYOUT_FIELDS:
            fields[key] = json.dumps([[str(n) for n in g] for g in value])
        elif key in NAME_LIST_FIELDS:
            fields[key] = json.dumps([str(v) for v in value])
        else:
            fields[key] = _scalar(value)
    return fields


def encode(op: str, **params: Any) -> Fields:
    """:func:`fields_of`, checked: op, field names, names and required fields (the
    readers check the rest and the state); raises :class:`Rejected` with a sentence."""
    if op not in OPS:
        raise Rejected(f"unknown op {str(op)[:40]!r}; expected one of {', '.join(OPS)}", "op")
    fields = fields_of(op, **params)
    check(fields)
    return fields


def check_op_fields(op: Any, names: Iterable[str], op_fields: Optional[Mapping[str, set]] = None,
                    required: Optional[Mapping[str, set]] = None) -> None:
    """The op is known, every field name is allowed for it, the required ones are there
    (the server's parser runs the same check on its op registry's tables, which hold
    these plus any op it registers: one wording for both)."""
    op_fields = OP_FIELDS if op_fields is None else op_fields
    required = REQUIRED if required is None else required
    if op not in op_fields:
        raise Rejected(f"unknown op {str(op)[:40]!r}; expected one of {', '.join(op_fields)}", "op")
    names = set(names)
    allowed = op_fields[op] | COMMON_FIELDS
    unknown = sorted(names - allowed)
    if unknown:
        raise Rejected(f"unknown field for op {op}; allowed: {', '.join(sorted(allowed))}", unknown[0])
    for req in sorted(required.get(op, ())):
        if req not in names:
            raise Rejected(f"required by op {op}", req)


def check(fields: Mapping[str, Any]) -> None:
    """The state-independent checks a client can make cheaply (op, fields, names)."""
    op = fields.get("op")
    check_op_fields(op, fields)
    name = fields.get("name")
    if isinstance(name, str) and not NAME_RE.match(name):
        raise Rejected(f"{name[:80]!r} is not a valid name (1-64 of letters, digits, _ . : -)", "name")
    if op == "stream" and "data" not in fields and "arrow" not in fields:
        raise Rejected("required by op stream (give data or arrow)", "data")
    for key in ("title", "x_label", "y_label"):
        v = fields.get(key)
        if isinstance(v, str) and len(v) > MAX_TEXT:
            raise Rejected(f"longer than {MAX_TEXT} characters", key)
    cid = fields.get("id")
    if isinstance(cid, str) and (not cid or len(cid) > MAX_ID):
        raise Rejected(f"must be 1-{MAX_ID} characters", "id")


def is_finite(v: float) -> bool:
    return not (math.isnan(v) or math.isinf(v))
