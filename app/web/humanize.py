"""Times and durations for people, as Jinja filters (registered by :func:`install`).

Pages show ``3 min ago`` with the exact local time in a tooltip, and ``2 h 5 min``
instead of seconds; Redis stream ids (``<ms>-<seq>``) and the event listener's ``ts``
(ms since the epoch) are turned into times too.  Pure, apart from reading the clock.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from jinja2 import Undefined
from markupsafe import Markup

_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def _number(value: Any) -> float | None:
    if isinstance(value, (bool, Undefined)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def duration(seconds: Any) -> str:
    """``3 d 4 h``, ``2 h 5 min``, ``4 min 10 s``, ``12 s``, ``0.25 s`` (two units at most)."""
    s = _number(seconds)
    if s is None:
        return "-"
    if s < 0:
        return "-" + duration(-s)
    if s < 10 and s != int(s):
        return f"{s:.2g} s"
    s = int(round(s))
    parts: list[str] = []
    for unit, size in _UNITS:
        if s >= size or (unit == "s" and not parts):
            parts.append(f"{s // size} {unit}")
            s %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def when(ts: Any) -> str:
    """Unix time as local ``YYYY-MM-DD HH:MM:SS TZ`` (``-`` for nothing)."""
    t = _number(ts)
    if not t:
        return "-"
    try:
        return dt.datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    except (OverflowError, OSError, ValueError):
        return "-"


def ago(ts: Any, now: float | None = None) -> str:
    """``5 s ago``, ``3 min ago``, ``in 2 h`` (a time ahead), ``just now``."""
    t = _number(ts)
    if not t:
        return "never"
    delta = (time.time() if now is None else now) - t
    if abs(delta) < 1:
        return "just now"
    return f"{duration(delta)} ago" if delta > 0 else f"in {duration(-delta)}"


def ms_time(ms: Any) -> float | None:
    """Unix time of milliseconds since the epoch (the event listener's ``ts``)."""
    t = _number(ms)
    return t / 1000 if t else None


def id_time(stream_id: Any) -> float | None:
    """Unix time of a Redis stream id ``<ms>-<seq>`` (None if it is not one)."""
    if isinstance(stream_id, bytes):
        stream_id = stream_id.decode("ascii", "replace")
    if not isinstance(stream_id, str):
        return None
    ms, _, _seq = stream_id.partition("-")
    return ms_time(ms) if ms.isdigit() and ms != "0" else None


def time_tag(ts: Any) -> Markup:
    """``<time>`` showing "3 min ago", the exact time as its tooltip."""
    t = _number(ts)
    if not t:
        return Markup("<span>never</span>")
    iso = dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso, when(t), ago(t))


def size(n: Any) -> str:
    """Bytes as ``812 B``, ``4.2 KiB``, ``1.5 MiB``."""
    v = _number(n)
    if v is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return "-"  # pragma: no cover


FILTERS = {"duration": duration, "when": when, "ago": ago, "ms_time": ms_time, "id_time": id_time,
           "time_tag": time_tag, "size": size}


def install(app: Any) -> None:
    """Register the filters on a Flask app's Jinja environment."""
    app.jinja_env.filters.update(FILTERS)
