"""The built-in ops of wire protocol v1: one typed command each, and its registration.

Each op's row below names its command class, its wire fields (the client's
:mod:`bokeh_fleet.wire` tables, the wire format's one source), its parser
(:mod:`app.control.protocol`) and its fold (:mod:`app.control.state`); the instance
layer attaches the document hooks (``app/instance/documents.py``).  Unset optional
fields are ``None``.  Imported by ``app/control/__init__.py``, so the ops are
registered before anything in :mod:`app.control` parses or folds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from bokeh_fleet import wire

from app.control import protocol, state
from app.control.columns import Columns
from app.control.ops import Command, OpSpec, register


@dataclass(frozen=True, eq=False, kw_only=True)
class Replace(Command):
    """Create or replace figure ``name`` from a declarative spec."""

    op: ClassVar[str] = "replace"
    kind: str | None = None
    title: str | None = None
    x_label: str | None = None
    y_label: str | None = None
    x_axis_type: str | None = None
    x: str | None = None
    y: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None  # column names (declares empty columns)
    data: Columns | None = None
    rollover: int | None = None
    tooltips: tuple[tuple[str, str], ...] | None = None
    # text/unit/min/max/height of replace and set (app/control/panelspec.py)
    panel: dict | None = None


@dataclass(frozen=True, eq=False, kw_only=True)
class Stream(Command):
    """Append rows to figure ``name`` (resolved: ``rollover`` is the limit in force)."""

    op: ClassVar[str] = "stream"
    data: Columns | None = None
    rollover: int | None = None


@dataclass(frozen=True, eq=False, kw_only=True)
class Patch(Command):
    """Change values at indices: column -> ``[(index, value), ...]``."""

    op: ClassVar[str] = "patch"
    patches: dict[str, list[tuple[int, Any]]] | None = None


@dataclass(frozen=True, eq=False, kw_only=True)
class Clear(Command):
    """Empty figure ``name``'s data; without a name, remove every figure."""

    op: ClassVar[str] = "clear"


@dataclass(frozen=True, eq=False, kw_only=True)
class Remove(Command):
    """Remove figure ``name``."""

    op: ClassVar[str] = "remove"


@dataclass(frozen=True, eq=False, kw_only=True)
class Layout(Command):
    """Arrange figures: ``groups`` are rows (``mode`` "rows") or columns ("columns")."""

    op: ClassVar[str] = "layout"
    mode: str = "rows"
    groups: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True, eq=False, kw_only=True)
class SetProps(Command):
    """Change properties of figure ``name``; without a name, the dashboard title."""

    op: ClassVar[str] = "set"
    title: str | None = None
    x_label: str | None = None
    y_label: str | None = None
    rollover: int | None = None
    tooltips: tuple[tuple[str, str], ...] | None = None
    # text/unit/min/max/height of replace and set (app/control/panelspec.py)
    panel: dict | None = None


@dataclass(frozen=True, eq=False, kw_only=True)
class FigureModel(Command):
    """A whole Bokeh model tree (``bokeh.embed.json_item`` JSON, allow-listed)."""

    op: ClassVar[str] = "figure"
    title: str | None = None
    model: dict | None = field(default=None, repr=False)


def _spec(command: type[Command], parse: Any, fold: Any, **kw: Any) -> OpSpec:
    name = command.op
    return OpSpec(name, command, frozenset(wire.OP_FIELDS[name]), frozenset(wire.REQUIRED.get(name, ())),
                  parse, fold, **kw)


for _s in (
    _spec(Replace, protocol.parse_replace, state.fold_replace),
    _spec(Stream, protocol.parse_stream, state.fold_stream),
    _spec(Patch, protocol.parse_patch, state.fold_patch),
    _spec(Clear, protocol.parse_nothing, state.fold_clear),
    _spec(Remove, protocol.parse_nothing, state.fold_remove),
    _spec(Layout, protocol.parse_layout, state.fold_layout),
    _spec(SetProps, protocol.parse_set, state.fold_set),
    _spec(FigureModel, protocol.parse_figure, state.fold_figure),
):
    register(_s)
