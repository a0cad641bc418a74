"""Wire protocol v1: one stream entry of flat string fields -> a validated Command.

A controller in any language writes, for example::

    XADD fleet:{demo}:commands * op stream name prices data '{"t":[1,2],"y":[3,4]}'

:func:`parse` checks everything that does not depend on the dashboard's state (op,
field names and types, JSON, Arrow, equal column lengths, size limits) and decodes
the data once, into the op's own command class: it reads the common fields and
leaves the rest to the op's parser in the registry (:mod:`app.control.ops`; the
built-in ops' parsers are the ``parse_*`` functions below).  Checks that need the
state (known figure, matching columns, patch indices) happen in :mod:`app.control.state`.
Both raise :class:`Rejected` with a reason a person can read.  :func:`encode` is the
inverse, used by the Python client.
See docs/protocol.md.  Pure: no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The wire tables are the client package's, so controllers and readers cannot drift.
from bokeh_fleet import wire  # noqa: E402
from bokeh_fleet.wire import (  # noqa: E402,F401
    AXIS_TYPES,
    COLUMN_RE,
    COMMON_FIELDS,
    KINDS,
    MAX_ID,
    MAX_TEXT,
    NAME_RE,
    OP_FIELDS,
    OPS,
    REQUIRED,
    VERSION,
    Rejected,
)

from app.control import columns as cols
from app.control import models, ops, panelspec
from app.control.columns import ColumnError, Columns
from app.control.ops import Command


@dataclass(frozen=True)
class Limits:
    max_command_bytes: int = 16 * 1024 * 1024
    max_rows_per_command: int = 100_000
    max_columns: int = 64

    @classmethod
    def from_settings(cls, s: Any) -> Limits:
        return cls(s.max_command_bytes, s.max_rows_per_command, s.max_columns)


def _text(fields: Mapping[str, bytes], key: str) -> str | None:
    raw = fields.get(key)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError:
        raise Rejected("not valid UTF-8", key) from None


def _json(fields: Mapping[str, bytes], key: str) -> Any:
    text = _text(fields, key)
    if text is None:
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        msg = str(exc) if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise Rejected(f"not valid JSON ({msg})", key) from None


def _short(fields: Mapping[str, bytes], key: str, limit: int = MAX_TEXT) -> str | None:
    text = _text(fields, key)
    if text is not None and len(text) > limit:
        raise Rejected(f"longer than {limit} characters", key)
    return text


def _name(fields: Mapping[str, bytes], key: str = "name") -> str | None:
    text = _text(fields, key)
    if text is not None and not NAME_RE.match(text):
        raise Rejected(
            f"{text[:80]!r} is not a valid name (1-64 of letters, digits, _ . : -)", key
        )
    return text


def _name_list(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and COLUMN_RE.match(v) for v in value):
        raise Rejected("expected a column name or a JSON list of column names", key)
    return tuple(value)


def _maybe_list(fields: Mapping[str, bytes], key: str) -> tuple[str, ...] | None:
    text = _text(fields, key)
    if text is None:
        return None
    if text.startswith("["):
        return _name_list(_json(fields, key), key)
    return _name_list(text, key)


def _int(fields: Mapping[str, bytes], key: str, lo: int, hi: int) -> int | None:
    text = _text(fields, key)
    if text is None:
        return None
    try:
        val = int(text)
    except ValueError:
        raise Rejected(f"expected an integer, got {text[:40]!r}", key) from None
    if not lo <= val <= hi:
        raise Rejected(f"must be between {lo} and {hi}, got {val}", key)
    return val


def _choice(fields: Mapping[str, bytes], key: str, choices: tuple[str, ...]) -> str | None:
    text = _text(fields, key)
    if text is not None and text not in choices:
        raise Rejected(f"{text[:40]!r} is not one of {', '.join(choices)}", key)
    return text


def _tooltips(fields: Mapping[str, bytes]) -> tuple[tuple[str, str], ...] | None:
    value = _json(fields, "tooltips")
    if value is None:
        return None
    if value is True:
        return (("*", "*"),)  # marker: one tooltip row per column
    if value is False:
        return ()
    if isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) and len(s) <= MAX_TEXT for s in p)
        for p in value
    ):
        return tuple((p[0], p[1]) for p in value)
    raise Rejected('expected true, false or a JSON list of ["label", "column"] pairs', "tooltips")


def _data(fields: Mapping[str, bytes], limits: Limits) -> Columns | None:
    if "data" in fields and "arrow" in fields:
        raise Rejected("give either data (JSON) or arrow (Arrow IPC), not both", "arrow")
    try:
        if "arrow" in fields:
            raw = fields["arrow"]
            data = cols.decode_arrow(raw if isinstance(raw, bytes) else str(raw).encode("latin-1"))
            key = "arrow"
        elif "data" in fields:
            data = cols.decode_json_columns(_json(fields, "data"))
            key = "data"
        else:
            return None
    except ColumnError as exc:
        raise Rejected(str(exc), "arrow" if "arrow" in fields else "data") from None
    if not data:
        raise Rejected("no columns", key)
    if len(data) > limits.max_columns:
        raise Rejected(f"{len(data)} columns, more than the limit of {limits.max_columns}", key)
    for cname in data:
        if not COLUMN_RE.match(cname):
            raise Rejected(f"invalid column name {cname[:40]!r}", key)
    lengths = {c: len(v) for c, v in data.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{c}={n}" for c, n in lengths.items())
        raise Rejected(f"columns have different lengths ({detail})", key)
    rows = next(iter(lengths.values()))
    if rows > limits.max_rows_per_command:
        raise Rejected(f"{rows} rows, more than the limit of {limits.max_rows_per_command}", key)
    return data


def _patches(fields: Mapping[str, bytes], limits: Limits) -> dict[str, list[tuple[int, Any]]]:
    value = _json(fields, "patches")
    shape = 'expected {"column": [[index, value], ...], ...}'
    if not isinstance(value, dict) or not value:
        raise Rejected(shape, "patches")
    out: dict[str, list[tuple[int, Any]]] = {}
    total = 0
    for cname, items in value.items():
        if not isinstance(items, list) or not items:
            raise Rejected(f"column {cname!r}: {shape}", "patches")
        pairs = []
        for item in items:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)
                    and not isinstance(item[0], bool)):
                raise Rejected(f"column {cname!r}: each patch is [index, value]", "patches")
            idx, val = item
            if val is not None and not isinstance(val, (int, float, str, bool)):
                raise Rejected(f"column {cname!r}: value at index {idx} is not a scalar", "patches")
            if isinstance(val, float) and not math.isfinite(val):
                val = None  # NaN/Infinity: a missing number, like null (columns do the same)
            pairs.append((idx, val))
        total += len(pairs)
        out[str(cname)] = pairs
    if total > limits.max_rows_per_command:
        raise Rejected(f"{total} patches, more than the limit of {limits.max_rows_per_command}", "patches")
    return out


#: layout field -> the layout mode it sets (``columns`` is the old name of ``cols``)
LAYOUT_MODES = {"rows": "rows", "cols": "columns", "columns": "columns"}


def _layout(fields: Mapping[str, bytes]) -> tuple[str, tuple[tuple[str, ...], ...]]:
    present = [k for k in LAYOUT_MODES if k in fields]
    if len(present) != 1:
        raise Rejected('give exactly one of rows or cols, e.g. rows \'[["a","b"],["c"]]\'', "rows")
    key = present[0]
    value = _json(fields, key)
    if not isinstance(value, list) or not value:
        raise Rejected("expected a non-empty JSON list of lists of figure names", key)
    groups = []
    seen: set[str] = set()
    for group in value:
        if isinstance(group, str):
            group = [group]
        if not isinstance(group, list) or not group or not all(
            isinstance(n, str) and NAME_RE.match(n) for n in group
        ):
            raise Rejected("expected a non-empty JSON list of lists of figure names", key)
        dup = seen.intersection(group)
        if dup or len(set(group)) != len(group):
            raise Rejected(f"figure {sorted(dup or group)[0]!r} appears more than once", key)
        seen.update(group)
        groups.append(tuple(group))
    return LAYOUT_MODES[key], tuple(groups)


def _model(fields: Mapping[str, bytes]) -> dict:
    """A ``json_item`` whose models are all on the allow list (app.control.models)."""
    value = _json(fields, "model")
    if not isinstance(value, dict):
        raise Rejected("expected the JSON of bokeh.embed.json_item(figure)", "model")
    doc = value.get("doc")
    if not isinstance(doc, dict) or not isinstance(doc.get("roots"), list) or not doc["roots"]:
        raise Rejected("expected the JSON of bokeh.embed.json_item(figure): no doc.roots", "model")
    try:
        models.check(value)
    except models.ModelRefused as exc:
        raise Rejected(str(exc), "model") from None
    return value


def parse(fields: Mapping[Any, Any], limits: Limits = Limits()) -> Command:
    """Validate one stream entry's fields and decode its data.  Raises Rejected.

    The common fields (``op``, ``id``, ``ts``, ``name``) are read here; the op's own
    fields by its registered parser (:mod:`app.control.ops`), and the result is the
    op's own command class.
    """
    f: dict[str, bytes] = {}
    size = 0
    for k, v in fields.items():
        key = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
        val = v if isinstance(v, bytes) else str(v).encode("utf-8")
        f[key] = val
        size += len(key) + len(val)
    if size > limits.max_command_bytes:
        raise Rejected(f"entry is {size} bytes, more than the limit of {limits.max_command_bytes}")
    op = _text(f, "op")
    if op is None:
        raise Rejected("missing (every command needs an op)", "op")
    wire.check_op_fields(op, f, ops.OP_FIELDS, ops.REQUIRED)
    spec = ops.get(op)

    ts = None
    if "ts" in f:
        text = _text(f, "ts")
        try:
            ts = float(text)  # type: ignore[arg-type]  # a str: "ts" in f
        except ValueError:
            raise Rejected(f"expected milliseconds since the epoch, got {text[:40]!r}",  # type: ignore[index]  # same
                           "ts") from None
        if not math.isfinite(ts):
            raise Rejected("must be finite", "ts")
    cmd_id = _short(f, "id", MAX_ID)
    if cmd_id is not None and not cmd_id:
        raise Rejected("must not be empty", "id")
    name = _name(f)
    return spec.command(cmd_id=cmd_id, ts=ts, name=name, **spec.parse(f, limits))


# --- the parsers of the built-in ops (registered in app.control.commands) ---------------
def _props(f: Mapping[str, bytes]) -> dict[str, Any]:
    """The figure properties ``replace`` and ``set`` share."""
    return {"title": _short(f, "title"), "x_label": _short(f, "x_label"), "y_label": _short(f, "y_label"),
            "tooltips": _tooltips(f), "rollover": _int(f, "rollover", 1, 10_000_000),
            "panel": panelspec.parse(f)}


def parse_replace(f: Mapping[str, bytes], limits: Limits) -> dict[str, Any]:
    kw = _props(f)
    kw["kind"] = _choice(f, "kind", KINDS)
    kw["x_axis_type"] = _choice(f, "x_axis_type", AXIS_TYPES)
    x = _text(f, "x")
    kw["x"] = _name_list(x, "x")[0] if x is not None else None
    kw["y"] = _maybe_list(f, "y")
    kw["columns"] = _maybe_list(f, "columns")
    kw["data"] = _data(f, limits)
    _check_replace(kw)
    return kw


def parse_stream(f: Mapping[str, bytes], limits: Limits) -> dict[str, Any]:
    data = _data(f, limits)
    if data is None:
        raise Rejected("required by op stream (give data or arrow)", "data")
    return {"data": data, "rollover": _int(f, "rollover", 1, 10_000_000)}


def parse_patch(f: Mapping[str, bytes], limits: Limits) -> dict[str, Any]:
    return {"patches": _patches(f, limits)}


def parse_nothing(f: Mapping[str, bytes], limits: Limits) -> dict[str, Any]:
    """Ops with no fields of their own (``clear``, ``remove``)."""
    return {}


def parse_layout(f: Mapping[str, bytes], limits: Limits) -> dict[str, Any]:
    mode, groups = _layout(f)
    return {"mode": mode, "groups": groups}


def parse_set(f: Mapping[str, bytes], limits: Limits) -> dict[str, Any]:
    kw = _props(f)
    if "name" not in f:
        extra = [k for k in ("x_label", "y_label", "rollover", "tooltips") if kw[k] is not None]
        extra += sorted(kw["panel"] or ())
        if extra:
            raise Rejected("without name, set changes only the dashboard title", extra[0])
    if not kw["panel"] and all(v is None for k, v in kw.items() if k != "panel"):
        raise Rejected("set needs at least one of title, x_label, y_label, rollover, tooltips, "
                       + ", ".join(wire.PANEL_FIELDS))
    return kw


def parse_figure(f: Mapping[str, bytes], limits: Limits) -> dict[str, Any]:
    return {"title": _short(f, "title"), "model": _model(f)}


def _check_replace(kw: dict[str, Any]) -> None:
    declared = kw["columns"]
    data = kw["data"]
    if declared is not None and len(set(declared)) != len(declared):
        raise Rejected("a column is named twice", "columns")
    if data is not None and declared is not None and set(data) != set(declared):
        raise Rejected(
            f"data has columns {sorted(data)} but columns declares {sorted(declared)}", "columns"
        )
    known = list(declared or (data.keys() if data else ()))
    panelspec.check_kind(kw["kind"] or "line", kw["panel"])
    if kw["kind"] == "text":
        if known:
            raise Rejected("a text panel has no data: give its Markdown in text", "data" if data else "columns")
        return
    if not known:
        raise Rejected("replace needs columns or data", "columns")
    for key in ("x",):
        if kw[key] is not None and kw[key] not in known:
            raise Rejected(f"{kw[key]!r} is not one of the columns {known}", key)
    for y in kw["y"] or ():
        if y not in known:
            raise Rejected(f"{y!r} is not one of the columns {known}", "y")
    if kw["kind"] in panelspec.PANEL_KINDS:
        return
    if kw["kind"] != "table" and len(known) < 2 and not (kw["y"] or kw["x"]):
        raise Rejected("a plot needs at least two columns (x and y)", "columns")


def encode(op: str, **params: Any) -> dict[str, bytes | str]:
    """Build stream fields for ``op`` from Python values (inverse of :func:`parse`).

    The client's encoder (:func:`bokeh_fleet.wire.fields_of`: dicts of lists/arrays,
    DataFrames, Arrow tables), then :func:`parse`, so a bad command (or an op that is
    not registered) fails before it is published.
    """
    fields = wire.fields_of(op, **params)
    parse(fields)  # the op registry's field check, then the op's own parser
    return fields
