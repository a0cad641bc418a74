"""Turning the data people have into the wire's ``data`` (JSON) or ``arrow`` (Arrow IPC) field.

Accepted: a mapping of column name -> list / tuple / numpy array / pandas Series; a
pandas DataFrame (a named index or a DatetimeIndex becomes the first column); any
object with ``__arrow_c_stream__`` (pyarrow tables, polars and DuckDB results).
Values: numbers (numpy scalars too), booleans, strings, ``None``/NaN (null = NaN),
``datetime``/``date``/``numpy.datetime64``/``pandas.Timestamp``.

Datetimes travel as instants: an aware datetime is converted to UTC; a naive one is
taken as UTC, so it is shown as written (Bokeh datetime axes show UTC).  Anything
else raises :class:`~bokeh_fleet.wire.Rejected` with a sentence.  Pure: no I/O.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import math
from dataclasses import dataclass
from typing import Any, List, Mapping, Tuple, Union

import numpy as np

from bokeh_fleet.wire import COLUMN_RE, Rejected

#: integers beyond this cannot be held exactly by the float64 columns of the readers
MAX_EXACT_INT = 2**53
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


@dataclass(frozen=True)
class Encoded:
    """One encoded data payload: the field (``data`` or ``arrow``), its value, and what it holds."""

    field: str
    payload: Union[str, bytes]
    columns: Tuple[str, ...]
    datetime_columns: Tuple[str, ...]


def _have_arrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _is_pandas_frame(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and hasattr(obj, "columns") and hasattr(obj, "index")


def _is_series(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == "Series"


def _datetime_ms(v: _dt.datetime) -> float:
    if v.tzinfo is None or v.tzinfo.utcoffset(v) is None:
        v = v.replace(tzinfo=_dt.timezone.utc)  # naive: taken as UTC, shown as written
    return (v - _EPOCH) / _dt.timedelta(milliseconds=1)


def json_default(v: Any) -> Any:
    """``json.dumps`` hook: numpy scalars and datetimes as plain JSON values."""
    out = _value(v, "value")
    if out is v:
        raise TypeError(f"{type(v).__name__} is not JSON serializable")
    return out


def _value(v: Any, column: str) -> Any:
    """One cell -> None / bool / int / float / str (datetimes -> ms since the epoch, UTC)."""
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, int):
        if abs(v) > MAX_EXACT_INT:
            raise Rejected(f"column {column!r}: integer {v} is beyond 2**53 and would be rounded "
                           "(columns are float64); send it as text or float", "data")
        return v
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if math.isinf(v):
            raise Rejected(f"column {column!r}: infinite values cannot be sent as JSON; use None", "data")
        return v
    if type(v).__name__ in ("NaTType", "NAType"):
        return None
    if isinstance(v, np.generic):
        if isinstance(v, np.datetime64):
            return None if np.isnat(v) else float(v.astype("datetime64[ms]").astype(np.int64))
        return _value(v.item(), column)
    if isinstance(v, _dt.datetime):
        return _datetime_ms(v)
    if isinstance(v, _dt.date):
        return _datetime_ms(_dt.datetime(v.year, v.month, v.day))
    if isinstance(v, decimal.Decimal):
        return _value(float(v), column)
    raise Rejected(f"column {column!r}: a {type(v).__name__} value cannot be sent; use numbers, "
                   "strings, booleans, datetimes or None", "data")


def _is_datetime_value(v: Any) -> bool:
    return isinstance(v, (_dt.date, np.datetime64)) and type(v).__name__ != "NaTType"


def _column_list(name: str, values: Any) -> Tuple[List[Any], bool]:
    """A column as a JSON-ready list and whether it holds datetimes."""
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__"):
        raise Rejected(f"column {name!r}: expected a list, tuple, numpy array or pandas Series of "
                       f"values, got {type(values).__name__}", "data")
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise Rejected(f"column {name!r}: expected a 1-d array, got {values.ndim}-d", "data")
        if np.issubdtype(values.dtype, np.datetime64):
            ms = values.astype("datetime64[ms]")
            return [None if np.isnat(v) else float(v.astype(np.int64)) for v in ms], True
    if _is_series(values):
        if str(values.dtype).startswith("datetime64"):
            import pandas as pd

            utc = values.dt.tz_convert("UTC").dt.tz_localize(None) if values.dt.tz is not None else values
            return [None if pd.isna(v) else _datetime_ms(v.to_pydatetime()) for v in utc], True
        values = values.tolist()
    elif isinstance(values, np.ndarray):
        values = values.tolist()
    items = list(values)
    is_dt = any(_is_datetime_value(v) for v in items)
    return [_value(v, name) for v in items], is_dt


def _check_names(names: List[str]) -> None:
    for n in names:
        if not isinstance(n, str) or not COLUMN_RE.match(n):
            raise Rejected(f"column name {n!r} is not valid (1-128 characters, no control characters)",
                           "data")
    if not names:
        raise Rejected("data has no columns", "data")


def _frame_to_mapping(df: Any) -> Any:
    """A pandas DataFrame with a meaningful index gets it as its first column."""
    import pandas as pd

    idx = df.index
    if idx.name is not None or isinstance(idx, pd.DatetimeIndex) or any(n is not None for n in idx.names):
        if isinstance(idx, pd.MultiIndex):
            raise Rejected("a DataFrame with a MultiIndex cannot be sent; reset_index() first", "data")
        name = idx.name if idx.name is not None else "index"
        if name in df.columns:
            raise Rejected(f"the index {name!r} has the name of a column; rename one of them", "data")
        df = df.reset_index().rename(columns={"index": name} if idx.name is None else {})
    names = [c if isinstance(c, str) else str(c) for c in df.columns]
    if len(set(names)) != len(names):
        raise Rejected("a column is named twice", "data")
    df.columns = names
    return df


def encode_data(value: Any, *, prefer_arrow: bool = True) -> Encoded:
    """Encode ``value`` (see the module doc) as the ``data`` or ``arrow`` field.

    Numpy arrays, pandas and Arrow-capable objects travel as Arrow IPC when pyarrow
    is installed (typed, compact); plain lists as JSON.  Raises :class:`Rejected`.
    """
    if _is_pandas_frame(value):
        value = _frame_to_mapping(value.copy(deep=False))
        if prefer_arrow and _have_arrow():
            import pyarrow as pa

            try:
                table = pa.Table.from_pandas(value, preserve_index=False)
            except (pa.ArrowException, TypeError, ValueError) as exc:
                raise Rejected(f"this DataFrame cannot be converted to Arrow ({exc})", "data") from None
            return _arrow(table)
        value = {c: value[c] for c in value.columns}
    elif hasattr(value, "__arrow_c_stream__") or (hasattr(value, "to_arrow") and not isinstance(value, Mapping)):
        if not _have_arrow():
            raise Rejected(f"sending a {type(value).__name__} needs pyarrow: pip install pyarrow "
                           "(or bokeh-fleet-client[arrow])", "data")
        import pyarrow as pa

        try:
            table = pa.table(value) if hasattr(value, "__arrow_c_stream__") else value.to_arrow()
            if isinstance(table, pa.RecordBatchReader):
                table = table.read_all()
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise Rejected(f"cannot read this {type(value).__name__} as an Arrow table ({exc})", "data") from None
        return _arrow(table)
    if not isinstance(value, Mapping):
        raise Rejected(f"data must be a dict of columns, a pandas DataFrame or an Arrow-capable "
                       f"table (polars, pyarrow, DuckDB); got {type(value).__name__}", "data")
    names = [str(k) if not isinstance(k, str) else k for k in value]
    _check_names(names)
    if prefer_arrow and _have_arrow() and any(isinstance(v, np.ndarray) or _is_series(v) for v in value.values()):
        return _arrow(_mapping_table(value))
    out = {}
    dts = []
    length = None
    for name, col in zip(names, value.values()):
        out[name], is_dt = _column_list(name, col)
        if is_dt:
            dts.append(name)
        if length is not None and len(out[name]) != length:
            raise Rejected(f"columns have different lengths ({name!r} has {len(out[name])}, "
                           f"{names[0]!r} has {length})", "data")
        length = len(out[name])
    text = json.dumps(out, allow_nan=False, separators=(",", ":"))
    return Encoded("data", text, tuple(names), tuple(dts))


def _mapping_table(value: Mapping) -> Any:
    import pyarrow as pa

    arrays = {}
    for name, col in value.items():
        name = str(name)
        try:
            if _is_series(col) and col.dtype != object:
                arrays[name] = pa.Array.from_pandas(col)
            elif isinstance(col, np.ndarray) and col.dtype != object and col.dtype.kind in "biufcMm":
                if col.ndim != 1:
                    raise Rejected(f"column {name!r}: expected a 1-d array, got {col.ndim}-d", "data")
                arrays[name] = pa.array(col)
            else:
                vals, is_dt = _column_list(name, col)
                arrays[name] = pa.array(vals, type=pa.timestamp("ms", tz="UTC")) if is_dt else pa.array(
                    [None if v is None else v for v in vals])
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise Rejected(f"column {name!r}: cannot be converted to Arrow ({exc})", "data") from None
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) > 1:
        raise Rejected(f"columns have different lengths ({sorted(lengths)})", "data")
    return pa.table(arrays)


def _arrow(table: Any) -> Encoded:
    """Check an Arrow table's column names and types, and write it as an IPC stream."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = [str(n) for n in table.column_names]
    _check_names(names)
    if len(set(names)) != len(names):
        raise Rejected("a column is named twice", "data")
    cols = []
    dts = []
    for name, col in zip(names, table.columns):
        typ = col.type
        if pa.types.is_dictionary(typ):
            typ = typ.value_type
            col = col.cast(typ)
        if pa.types.is_decimal(typ):
            col, typ = col.cast(pa.float64()), pa.float64()
        if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
            dts.append(name)
        elif pa.types.is_integer(typ):
            big = pc.max(pc.abs(col.cast(pa.float64()))).as_py() if len(col) else None
            if big is not None and big > MAX_EXACT_INT:
                raise Rejected(f"column {name!r}: integers beyond 2**53 would be rounded "
                               "(columns are float64); send them as text or float", "data")
        elif pa.types.is_large_string(typ):
            col, typ = col.cast(pa.string()), pa.string()
        elif pa.types.is_string_view(typ) if hasattr(pa.types, "is_string_view") else False:
            col, typ = col.cast(pa.string()), pa.string()
        elif not (pa.types.is_floating(typ) or pa.types.is_boolean(typ) or pa.types.is_string(typ)
                  or pa.types.is_null(typ)):
            raise Rejected(f"column {name!r}: Arrow type {typ} is not supported; use numbers, "
                           "booleans, strings or timestamps", "data")
        cols.append(col)
    table = pa.table(dict(zip(names, cols)))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return Encoded("arrow", sink.getvalue().to_pybytes(), tuple(names), tuple(dts))
