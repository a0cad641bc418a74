"""Column data: decoding from JSON or Arrow IPC, typing, and exact (de)serialisation.

A column is a 1-d numpy array, one of three kinds:

* ``float64`` for numbers (JSON ints and floats; ``null``, ``NaN`` and ``Infinity`` ->
  NaN, so that every number a column holds can be written back as JSON) and datetimes
  (milliseconds since the epoch, which is what Bokeh's datetime axes use);
* ``bool``;
* ``object`` holding ``str`` for text.

Numeric columns therefore cross the websocket as binary frames.  Decoding happens
once per command in the reader (never per session).  Pure: no I/O.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

Columns = dict[str, np.ndarray]

KINDS = ("number", "bool", "text")


class ColumnError(ValueError):
    """Bad column data; the message names the column and the problem."""


def kind_of(arr: np.ndarray) -> str:
    if arr.dtype == np.bool_:
        return "bool"
    if arr.dtype == object:
        return "text"
    return "number"


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


def empty(kind: str = "number") -> np.ndarray:
    return _frozen(np.empty(0, dtype={"number": np.float64, "bool": np.bool_, "text": object}[kind]))


def from_values(name: str, values: Any) -> np.ndarray:
    """Type a JSON list (or numpy array) as one column kind, or raise ColumnError."""
    if isinstance(values, np.ndarray):
        return _from_numpy(name, values)
    if not isinstance(values, list):
        raise ColumnError(f"column {name!r}: expected a list of values, got {type(values).__name__}")
    if not values:
        return empty()
    kinds = set()
    for v in values:
        if v is None:
            continue
        if isinstance(v, bool):
            kinds.add("bool")
        elif isinstance(v, (int, float)):
            kinds.add("number")
        elif isinstance(v, str):
            kinds.add("text")
        else:
            raise ColumnError(
                f"column {name!r}: values must be numbers, strings, booleans or null; "
                f"got {type(v).__name__}"
            )
    if len(kinds) > 1:
        raise ColumnError(f"column {name!r}: mixes {' and '.join(sorted(kinds))} values")
    kind = kinds.pop() if kinds else "number"
    if kind == "number":
        try:
            arr = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        except OverflowError:
            raise ColumnError(f"column {name!r}: number out of range") from None
        return _frozen(_finite(arr))
    if kind == "bool":
        if any(v is None for v in values):
            raise ColumnError(f"column {name!r}: null in a boolean column")
        return _frozen(np.array(values, dtype=np.bool_))
    return _frozen(np.array(["" if v is None else v for v in values], dtype=object))


def _finite(arr: np.ndarray) -> np.ndarray:
    """``arr`` (float64, writeable) with +-Infinity replaced by NaN: a missing value,
    ``null`` in JSON.  ``Infinity`` is not JSON, and a column must round-trip."""
    inf = np.isinf(arr)
    if inf.any():
        arr[inf] = math.nan
    return arr


def _from_numpy(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 1:
        raise ColumnError(f"column {name!r}: expected a 1-d array, got {arr.ndim}-d")
    if arr.dtype == np.bool_:
        return _frozen(arr.copy())
    if np.issubdtype(arr.dtype, np.datetime64):
        ms = arr.astype("datetime64[ms]").astype(np.int64).astype(np.float64)
        ms[np.isnat(arr)] = math.nan
        return _frozen(ms)
    if np.issubdtype(arr.dtype, np.number):
        return _frozen(_finite(arr.astype(np.float64)))
    if arr.dtype == object or arr.dtype.kind == "U":
        return from_values(name, [None if v is None else v for v in arr.tolist()])
    raise ColumnError(f"column {name!r}: unsupported dtype {arr.dtype}")


def decode_json_columns(obj: Any) -> Columns:
    """``{"x": [...], "y": [...]}`` -> typed columns (lengths checked by the caller)."""
    if not isinstance(obj, Mapping):
        raise ColumnError(f"data must be a JSON object of columns, got {type(obj).__name__}")
    return {str(k): from_values(str(k), v) for k, v in obj.items()}


def decode_arrow(payload: bytes) -> Columns:
    """Apache Arrow IPC (stream or file format) -> typed columns."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    try:
        try:
            table = ipc.open_stream(pa.py_buffer(payload)).read_all()
        except pa.ArrowInvalid:
            table = ipc.open_file(pa.py_buffer(payload)).read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ColumnError(f"not a readable Arrow IPC payload ({exc})") from None
    out: Columns = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        typ = col.type
        try:
            if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
                arr = col.cast(pa.timestamp("ms")).to_numpy(zero_copy_only=False)
            elif pa.types.is_dictionary(typ):
                arr = col.cast(typ.value_type).to_numpy(zero_copy_only=False)
            else:
                arr = col.to_numpy(zero_copy_only=False)
        except (pa.ArrowException, ValueError) as exc:
            raise ColumnError(f"arrow column {name!r}: {exc}") from None
        if arr.dtype == object and (pa.types.is_integer(typ) or pa.types.is_floating(typ)):
            arr = np.array([math.nan if v is None else v for v in arr], dtype=np.float64)
        out[str(name)] = from_values(str(name), arr)
    return out


def warm_up() -> None:
    """Import and exercise the Arrow decoder once, so the first real command does not
    pay for the imports (about a second, pandas included, on a small machine)."""
    decode_arrow(encode_arrow({"t": np.arange(2, dtype=np.float64), "s": ["a", "b"]}))


def encode_arrow(columns: Mapping[str, Any]) -> bytes:
    """Columns (lists, numpy arrays or a pandas DataFrame) -> Arrow IPC stream bytes."""
    import pyarrow as pa

    if hasattr(columns, "to_dict") and hasattr(columns, "columns"):  # pandas DataFrame
        table = pa.Table.from_pandas(columns, preserve_index=False)
    else:
        table = pa.table({k: pa.array(np.asarray(v) if not isinstance(v, list) else v) for k, v in columns.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def concat(old: np.ndarray, new: np.ndarray, limit: int | None) -> np.ndarray:
    """Append ``new`` to ``old``, keeping at most the last ``limit`` values."""
    if len(old) == 0:
        out = new if limit is None or len(new) <= limit else new[-limit:]
        return _frozen(out.copy()) if out.flags.writeable else out
    if limit is not None and len(new) >= limit:
        return _frozen(new[-limit:].copy())
    keep = old if limit is None else old[max(0, len(old) + len(new) - limit) :]
    return _frozen(np.concatenate([keep, new]))


def patched(arr: np.ndarray, patches: list[tuple[int, Any]]) -> np.ndarray:
    out = arr.copy()
    for idx, value in patches:
        out[idx] = value
    return _frozen(out)


def datetime_ms(name: str, arr: np.ndarray) -> np.ndarray:
    """A text column of ISO-8601 datetimes -> float64 milliseconds since the epoch."""
    if kind_of(arr) != "text":
        return arr
    try:
        dt = np.array(arr.tolist(), dtype="datetime64[ms]")
    except ValueError as exc:
        raise ColumnError(f"column {name!r}: not an ISO-8601 datetime ({exc})") from None
    ms = dt.astype(np.int64).astype(np.float64)
    ms[np.isnat(dt)] = math.nan
    return _frozen(ms)


def to_jsonable(arr: np.ndarray) -> list:
    """Column -> plain JSON list (NaN -> null), for people and HTTP answers."""
    if kind_of(arr) == "number":
        return [None if not math.isfinite(v) else (int(v) if v.is_integer() and abs(v) < 2**53 else v)
                for v in arr.tolist()]
    return arr.tolist()


def dump(arr: np.ndarray) -> dict:
    """Exact, compact serialisation for snapshots (numbers as base64 float64)."""
    kind = kind_of(arr)
    if kind == "text":
        return {"kind": "text", "values": arr.tolist()}
    raw = np.ascontiguousarray(arr, dtype=np.float64 if kind == "number" else np.bool_).tobytes()
    return {"kind": kind, "b64": base64.b64encode(raw).decode("ascii")}


def load(obj: Mapping) -> np.ndarray:
    kind = obj["kind"]
    if kind == "text":
        return _frozen(np.array(obj["values"], dtype=object)) if obj["values"] else empty("text")
    dtype = np.float64 if kind == "number" else np.bool_
    return _frozen(np.frombuffer(base64.b64decode(obj["b64"]), dtype=dtype).copy())
