"""The pure fold: ``apply(state, command) -> state``.

Every instance (and the compactor) folds the same command log into the same
:class:`DashboardState`; a new browser session is built from it.  :func:`step` also
returns the command *resolved against the state* (datetimes converted, rollover
filled in, columns checked), which is what the Bokeh side applies to live sessions,
so that work happens once per command, not once per session.

States are immutable values: a step returns a new state sharing the unchanged
figures.  No I/O, no Redis, no Bokeh.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from app.control import columns as cols
from app.control import ops, panelspec
from app.control.columns import ColumnError, Columns
from app.control.ops import Command
from app.control.protocol import Rejected

if TYPE_CHECKING:
    from app.control.commands import Clear, FigureModel, Layout, Patch, Remove, Replace, SetProps, Stream


@dataclass(frozen=True, eq=False)
class Figure:
    """One figure of a dashboard: a declarative spec plus its data, or a Bokeh model."""

    name: str
    kind: str  # line|scatter|bar|area|step|table|stat|gauge|text, or "model" for an op=figure tree
    title: str = ""
    x_label: str = ""
    y_label: str = ""
    x_axis_type: str = "number"
    x: str = ""
    y: tuple[str, ...] = ()
    data: Mapping[str, np.ndarray] = field(default_factory=dict)
    rollover: int | None = None
    tooltips: tuple[tuple[str, str], ...] = ()
    model: dict | None = None
    # text/unit/min/max/height (app/control/panelspec.py); empty for most figures
    panel: Mapping[str, Any] = field(default_factory=dict)
    # Set by every replace/figure to the dashboard's applied count at that moment:
    # unique per incarnation of a figure, identical on every instance and session
    # (the Bokeh side derives model ids from it).
    version: int = 0

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.data)

    @property
    def length(self) -> int:
        return len(next(iter(self.data.values()))) if self.data else 0


@dataclass(frozen=True, eq=False)
class DashboardState:
    title: str = ""
    figures: Mapping[str, Figure] = field(default_factory=dict)
    layout_mode: str = "rows"  # "rows" or "columns"
    layout: tuple[tuple[str, ...], ...] = ()
    seen: tuple[str, ...] = ()  # recent idempotency ids, oldest first
    applied: int = 0  # commands applied (duplicates and rejections not counted)

    def figure(self, name: str | None, op: str) -> Figure:
        if name is None:
            raise Rejected(f"required by op {op}", "name")
        fig = self.figures.get(name)
        if fig is None:
            known = ", ".join(self.figures) or "none yet"
            raise Rejected(f"no figure {name!r} on this dashboard (figures: {known})", "name")
        return fig


EMPTY = DashboardState()


def evolve(obj, **changes):
    """A copy of a frozen value (state, figure, command) with ``changes``: what
    ``dataclasses.replace`` does, without re-running __init__ (the fold is on the hot
    path: one call per command)."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    new.__dict__.update(changes)
    return new


@dataclass(frozen=True)
class FoldConfig:
    max_figures: int = 64
    max_figure_rows: int = 1_000_000
    idempotency_window: int = 1000
    # Budget of cells (rows x columns over all figures) one dashboard may hold; 0 = none.
    max_dashboard_cells: int = 5_000_000

    @classmethod
    def from_settings(cls, s: Any) -> FoldConfig:
        return cls(s.max_figures, s.max_figure_rows, s.idempotency_window,
                   max_dashboard_cells=s.max_dashboard_cells)


# --- budgets -------------------------------------------------------------------------
# Leaf counts of model figures, computed once per Figure value (they are immutable).
_MODEL_CELLS: weakref.WeakKeyDictionary[Figure, int] = weakref.WeakKeyDictionary()


def _leaves(tree: Any) -> int:
    """Scalar values in a JSON tree (iterative: model trees may be deep)."""
    n, stack = 0, [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
        else:
            n += 1
    return n


def figure_cells(fig: Figure) -> int:
    """Cells a figure holds: rows x columns, or the leaf values of a model tree."""
    if fig.kind == "model":
        n = _MODEL_CELLS.get(fig)
        if n is None:
            n = _MODEL_CELLS[fig] = _leaves(fig.model)
        return n
    return fig.length * len(fig.data)


def dashboard_cells(state: DashboardState) -> int:
    """Cells held by the whole dashboard (what ``max_dashboard_cells`` budgets)."""
    return sum(figure_cells(f) for f in state.figures.values())


def _check_budget(state: DashboardState, figures: Mapping[str, Figure], cfg: FoldConfig) -> None:
    """Reject a command that takes the dashboard over its cell budget.  A command that
    does not grow an over-budget dashboard (after the budget was lowered) still passes."""
    budget = cfg.max_dashboard_cells
    if budget <= 0:
        return
    new = sum(figure_cells(f) for f in figures.values())
    if new > budget and new > dashboard_cells(state):
        raise Rejected(
            f"over budget: the dashboard would hold {new:,} cells (rows x columns over all "
            f"figures), more than its budget of {budget:,} (FLEET_MAX_DASHBOARD_CELLS); "
            "use rollover, send fewer rows or remove figures", "data")


def _with_figure(state: DashboardState, fig: Figure) -> dict[str, Figure]:
    figs = dict(state.figures)
    figs[fig.name] = fig
    return figs


def _layout_without(layout: tuple[tuple[str, ...], ...], name: str) -> tuple[tuple[str, ...], ...]:
    return tuple(g for g in (tuple(n for n in grp if n != name) for grp in layout) if g)


def _typed(fig: Figure | None, data: Columns, x_axis_type: str, x: str) -> Columns:
    """Convert datetime text, and check kinds against the figure's existing columns."""
    out: Columns = {}
    for cname, arr in data.items():
        if x_axis_type == "datetime" and cname == x:
            try:
                arr = cols.datetime_ms(cname, arr)
            except ColumnError as exc:
                raise Rejected(str(exc), "data") from None
        if fig is not None and fig.length > 0:
            have, got = cols.kind_of(fig.data[cname]), cols.kind_of(arr)
            if have != got and len(arr):
                raise Rejected(f"column {cname!r} holds {have} values; got {got}", "data")
        out[cname] = arr
    return out


def fold_replace(state: DashboardState, cmd: Replace, cfg: FoldConfig) -> tuple[dict, Replace]:
    old = state.figures.get(cmd.name)  # type: ignore[arg-type]
    if old is None and len(state.figures) >= cfg.max_figures:
        raise Rejected(f"dashboard already has {cfg.max_figures} figures (the limit)", "name")
    names = list(cmd.columns or cmd.data or ())
    kind = cmd.kind or "line"
    if kind in panelspec.PANEL_KINDS:
        x, y = panelspec.columns_of(kind, cmd.x, cmd.y, names)
    else:
        x = cmd.x or (names[0] if kind != "table" else "")
        y = cmd.y or tuple(n for n in names if n != x)
    axis = cmd.x_axis_type or ("categorical" if kind == "bar" and cmd.data and
                               cols.kind_of(cmd.data[x]) == "text" else "number")
    limit = min(cmd.rollover or cfg.max_figure_rows, cfg.max_figure_rows)
    data = cmd.data or {n: cols.empty() for n in names}
    data = _typed(None, data, axis, x)
    data = {n: cols.concat(cols.empty(cols.kind_of(a)), a, limit) for n, a in data.items()}
    if kind not in ("table", *panelspec.PANEL_KINDS) and axis != "categorical" and x:
        if cols.kind_of(data[x]) == "text" and len(data[x]):
            raise Rejected(f"x column {x!r} holds text; use x_axis_type categorical or datetime", "x")
    fig = Figure(
        name=cmd.name, kind=kind, title=cmd.title or "", x_label=cmd.x_label or "",  # type: ignore[arg-type]  # named op: parse() set name
        y_label=cmd.y_label or "", x_axis_type=axis, x=x, y=tuple(y), data=MappingProxyType(data),
        rollover=cmd.rollover, tooltips=cmd.tooltips if cmd.tooltips is not None else (("*", "*"),),
        panel=MappingProxyType(dict(cmd.panel or {})), version=state.applied + 1,
    )
    resolved = evolve(cmd, kind=kind, x=x, y=tuple(y), x_axis_type=axis, data=data)
    return {"figures": _with_figure(state, fig), "layout": _place(state.layout, fig.name)}, resolved


def _place(layout: tuple[tuple[str, ...], ...], name: str) -> tuple[tuple[str, ...], ...]:
    if any(name in g for g in layout):
        return layout
    return layout + ((name,),)


def fold_stream(state: DashboardState, cmd: Stream, cfg: FoldConfig) -> tuple[dict, Stream]:
    fig = state.figure(cmd.name, cmd.op)
    if fig.kind == "model":
        raise Rejected(f"figure {fig.name!r} is a Bokeh model tree; stream works on spec figures", "name")
    assert cmd.data is not None
    if set(cmd.data) != set(fig.data):
        raise Rejected(f"columns {sorted(cmd.data)} do not match the figure's {sorted(fig.data)}", "data")
    data = _typed(fig, cmd.data, fig.x_axis_type, fig.x)
    limit = min(cmd.rollover or fig.rollover or cfg.max_figure_rows, cfg.max_figure_rows)
    new = {n: cols.concat(fig.data[n], data[n], limit) for n in fig.data}
    figs = _with_figure(state, evolve(fig, data=MappingProxyType(new)))
    return {"figures": figs}, evolve(cmd, data=data, rollover=limit)


def fold_patch(state: DashboardState, cmd: Patch, cfg: FoldConfig) -> tuple[dict, Patch]:
    fig = state.figure(cmd.name, cmd.op)
    if fig.kind == "model":
        raise Rejected(f"figure {fig.name!r} is a Bokeh model tree; patch works on spec figures", "name")
    assert cmd.patches is not None
    new = dict(fig.data)
    resolved: dict[str, list[tuple[int, Any]]] = {}
    for cname, pairs in cmd.patches.items():
        if cname not in fig.data:
            raise Rejected(f"no column {cname!r} in figure {fig.name!r}", "patches")
        arr = fig.data[cname]
        kind = cols.kind_of(arr)
        fixed = []
        for idx, val in pairs:
            if not -len(arr) <= idx < len(arr):
                raise Rejected(f"column {cname!r}: index {idx} outside 0..{len(arr) - 1}", "patches")
            idx = idx % len(arr)
            if kind == "number" and fig.x_axis_type == "datetime" and cname == fig.x and isinstance(val, str):
                try:
                    val = float(cols.datetime_ms(cname, np.array([val], dtype=object))[0])
                except ColumnError as exc:
                    raise Rejected(str(exc), "patches") from None
            ok = (
                (kind == "number" and (val is None or (isinstance(val, (int, float)) and not isinstance(val, bool))))
                or (kind == "bool" and isinstance(val, bool))
                or (kind == "text" and isinstance(val, str))
            )
            if not ok:
                raise Rejected(f"column {cname!r} holds {kind} values; got {val!r}"[:200], "patches")
            fixed.append((idx, float("nan") if val is None else val))
        new[cname] = cols.patched(arr, fixed)
        resolved[cname] = fixed
    figs = _with_figure(state, evolve(fig, data=MappingProxyType(new)))
    return {"figures": figs}, evolve(cmd, patches=resolved)


def fold_clear(state: DashboardState, cmd: Clear, cfg: FoldConfig) -> tuple[dict, Clear]:
    if cmd.name is None:
        return {"figures": {}, "layout": ()}, cmd
    fig = state.figure(cmd.name, cmd.op)
    if fig.kind == "model":
        raise Rejected(f"figure {fig.name!r} is a Bokeh model tree; use remove", "name")
    empty = {n: cols.empty(cols.kind_of(a)) for n, a in fig.data.items()}
    return {"figures": _with_figure(state, evolve(fig, data=MappingProxyType(empty)))}, cmd


def fold_remove(state: DashboardState, cmd: Remove, cfg: FoldConfig) -> tuple[dict, Remove]:
    state.figure(cmd.name, cmd.op)
    figs = dict(state.figures)
    del figs[cmd.name]  # type: ignore[arg-type]
    return {"figures": figs, "layout": _layout_without(state.layout, cmd.name)}, cmd  # type: ignore[arg-type]


def fold_layout(state: DashboardState, cmd: Layout, cfg: FoldConfig) -> tuple[dict, Layout]:
    named = {n for g in cmd.groups for n in g}
    missing = sorted(named - set(state.figures))
    if missing:
        raise Rejected(f"no figure {missing[0]!r} on this dashboard", "rows" if cmd.mode == "rows" else "cols")
    rest = tuple((n,) for n in state.figures if n not in named)
    return {"layout_mode": cmd.mode, "layout": cmd.groups + rest}, cmd


def fold_set(state: DashboardState, cmd: SetProps, cfg: FoldConfig) -> tuple[dict, SetProps]:
    if cmd.name is None:
        return {"title": cmd.title}, cmd
    fig = state.figure(cmd.name, cmd.op)
    changes = {k: getattr(cmd, k) for k in ("title", "x_label", "y_label", "rollover", "tooltips")
               if getattr(cmd, k) is not None}
    if fig.kind == "model" and (set(changes) - {"title"} or cmd.panel):
        raise Rejected(f"figure {fig.name!r} is a Bokeh model tree; only its title can be set", "name")
    if cmd.panel:
        changes["panel"] = MappingProxyType(panelspec.merged(fig.kind, fig.panel, cmd.panel))
    return {"figures": _with_figure(state, evolve(fig, **changes))}, cmd


def fold_figure(state: DashboardState, cmd: FigureModel, cfg: FoldConfig) -> tuple[dict, FigureModel]:
    old = state.figures.get(cmd.name)  # type: ignore[arg-type]
    if old is None and len(state.figures) >= cfg.max_figures:
        raise Rejected(f"dashboard already has {cfg.max_figures} figures (the limit)", "name")
    fig = Figure(name=cmd.name, kind="model", title=cmd.title or "", model=cmd.model,  # type: ignore[arg-type]  # named op: parse() set name
                 version=state.applied + 1)
    return {"figures": _with_figure(state, fig), "layout": _place(state.layout, fig.name)}, cmd


def step(state: DashboardState, cmd: Command,
         cfg: FoldConfig = FoldConfig()) -> tuple[DashboardState, Command | None]:
    """Fold one command.  Returns ``(new_state, resolved_command)``.

    A command whose ``id`` was already applied returns ``(state, None)`` unchanged.
    Raises :class:`Rejected` when the command does not fit the state; the state is
    then unchanged (the caller keeps the old one).
    """
    if cmd.cmd_id is not None and cmd.cmd_id in state.seen:
        return state, None
    changes, resolved = ops.get(cmd.op).fold(state, cmd, cfg)
    if "figures" in changes:
        _check_budget(state, changes["figures"], cfg)
    if cmd.cmd_id is not None:
        seen = state.seen + (cmd.cmd_id,)
        changes["seen"] = seen[-cfg.idempotency_window :] if cfg.idempotency_window > 0 else ()
    changes["applied"] = state.applied + 1
    return evolve(state, **changes), resolved


def apply(state: DashboardState, cmd: Command, cfg: FoldConfig = FoldConfig()) -> DashboardState:
    """The fold: the state after ``cmd``.  Raises :class:`Rejected`."""
    return step(state, cmd, cfg)[0]
