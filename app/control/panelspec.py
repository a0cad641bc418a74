"""Panel fields of ``replace``/``set``: stat, gauge and text panels, and figure heights.

A panel is a figure kind (``stat``, ``gauge``, ``text``) that says what a plot cannot:

* ``stat``: the latest value of a one-column series, with its change from the value
  before it; ``unit`` is shown after the number.
* ``gauge``: the latest value on a dial from ``min`` to ``max`` (default 0-100).
* ``text``: ``text`` is Markdown, rendered to safe HTML by the instances
  (app/instance/panels.py: raw HTML off, link schemes restricted, no images).

Values come as data, like plots: ``replace`` with ``data`` (or ``columns``), then
``stream`` appends rows (``rollover`` keeps the last ones); ``set`` changes ``text``,
``unit``, ``min``, ``max``, ``height`` and ``title``.  ``height`` (pixels) works on every
kind but ``model``.  The parsed fields travel in :attr:`Command.panel` and
:attr:`Figure.panel` as one small dict, so the op tables stay as they were.  Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bokeh_fleet.wire import MAX_TEXT, PANEL_FIELDS, Rejected

PANEL_KINDS = ("stat", "gauge", "text")
MAX_MARKDOWN = 20_000  # characters of a text panel
MAX_UNIT = MAX_TEXT  # like titles
HEIGHT_RANGE = (60, 3000)
#: which kinds take which panel field (height: all but model, checked apart)
FOR_KINDS = {"text": ("text",), "unit": ("stat", "gauge"), "min": ("gauge",), "max": ("gauge",)}
GAUGE_DEFAULT = (0.0, 100.0)


def _text(raw: Any, key: str) -> str:
    try:
        return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError:
        raise Rejected("not valid UTF-8", key) from None


def parse(fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """The panel fields present in one entry's fields, checked and typed (None: none)."""
    out: dict[str, Any] = {}
    for key in PANEL_FIELDS:
        if key not in fields:
            continue
        text = _text(fields[key], key)
        if key == "text":
            if len(text) > MAX_MARKDOWN:
                raise Rejected(f"longer than {MAX_MARKDOWN} characters", key)
            out[key] = text
        elif key == "unit":
            if len(text) > MAX_UNIT:
                raise Rejected(f"longer than {MAX_UNIT} characters", key)
            out[key] = text
        elif key == "height":
            lo, hi = HEIGHT_RANGE
            try:
                val = int(text)
            except ValueError:
                raise Rejected(f"expected an integer number of pixels, got {text[:40]!r}", key) from None
            if not lo <= val <= hi:
                raise Rejected(f"must be between {lo} and {hi} pixels, got {val}", key)
            out[key] = val
        else:  # min, max
            try:
                num = float(text)
            except ValueError:
                raise Rejected(f"expected a number, got {text[:40]!r}", key) from None
            if not math.isfinite(num):
                raise Rejected("must be finite", key)
            out[key] = num
    return out or None


def check_kind(kind: str, panel: Mapping[str, Any] | None) -> None:
    """Every panel field fits ``kind`` (Rejected naming the first that does not)."""
    for key in sorted(panel or ()):
        if key == "height":
            if kind == "model":
                raise Rejected("a Bokeh model tree keeps its own size; height works on the other kinds", key)
            continue
        kinds = FOR_KINDS[key]
        if kind not in kinds:
            raise Rejected(f"only for kind {' or '.join(kinds)}, not {kind}", key)
    lo, hi = gauge_range(panel)
    if kind == "gauge" and not lo < hi:
        raise Rejected(f"the gauge's min ({lo:g}) must be below its max ({hi:g})", "max")


def merged(kind: str, old: Mapping[str, Any], new: Mapping[str, Any] | None) -> dict[str, Any]:
    """``set``: the figure's panel fields with ``new`` laid over them (checked)."""
    out = {**old, **(new or {})}
    check_kind(kind, out)
    return out


def gauge_range(panel: Mapping[str, Any] | None) -> tuple[float, float]:
    p = panel or {}
    return float(p.get("min", GAUGE_DEFAULT[0])), float(p.get("max", GAUGE_DEFAULT[1]))


def columns_of(kind: str, x: str | None, y: tuple[str, ...] | None, names: list[str]) -> tuple[str, tuple[str, ...]]:
    """(x, y) of a panel: a text panel has none; a stat or gauge shows its ``y`` column
    (default: the first column that is not ``x``)."""
    if kind == "text":
        return "", ()
    value = y or tuple(n for n in names if n != x)[:1]
    if not value:
        raise Rejected(f"a {kind} panel needs a value column (data or columns)", "columns")
    return x or "", tuple(value[:1])
