"""Bokeh models from dashboard state, and resolved commands applied to them.

:class:`DashboardDoc` owns the models of one session's document: one root column
(title + body), one :class:`FigureView` per figure, and the row/column containers
of the layout.  It is built from a :class:`~app.control.state.DashboardState` and
then moved forward by resolved commands (from :func:`app.control.state.step`), so a
session shows exactly what the fold says.  Only the fan-out calls it, always on the
event loop thread and under the session's document lock (or before the session
exists).

Columns are the state's own read-only numpy arrays, shared by every session until a
``stream`` or ``patch`` replaces them; numeric columns cross the websocket as binary
frames.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from bokeh.document import Document
from bokeh.document.events import ColumnsStreamedEvent
from bokeh.models import (
    Column,
    ColumnDataSource,
    FactorRange,
    HoverTool,
    LayoutDOM,
    Range,
    Row,
)

# from their modules: bokeh.models re-exports the widgets with a star import its stubs lack
from bokeh.models.widgets.markups import Div
from bokeh.models.widgets.tables import DataTable, DateFormatter, TableColumn
from bokeh.palettes import Category10_10
from bokeh.plotting import figure as bk_figure
from bokeh.transform import dodge

from app.control import models, ops, panelspec
from app.control.commands import Clear, FigureModel, Layout, Patch, Remove, Replace, SetProps, Stream
from app.control.protocol import Command
from app.control.state import DashboardState, Figure
from app.instance import bokeh_compat, pagestatus, panels, series

log = logging.getLogger("fleet.instance.documents")

PLOT_HEIGHT = 320
TABLE_HEIGHT = 280
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
# Rows wrap on narrow screens: each figure keeps at least 320 px (or the whole width),
# so a phone shows a row's figures one below the other, never a sideways scroll.
ROW_CSS = ":host{flex-wrap:wrap} :host > *{min-width:min(320px,100%)}"


# --- figures -----------------------------------------------------------------------------
def _bar_width(x: np.ndarray) -> float:
    vals = np.unique(x[np.isfinite(x)]) if len(x) else x
    if len(vals) < 2:
        return 0.8
    return float(np.min(np.diff(vals))) * 0.8


def _factors(x: np.ndarray) -> list[str]:
    seen: dict[str, None] = {}
    for v in x.tolist():
        seen.setdefault(str(v), None)
    return list(seen)


def _tooltips(fig: Figure) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    pairs = fig.tooltips
    if pairs == (("*", "*"),):
        pairs = tuple((c, c) for c in fig.data)
    out, formatters = [], {}
    for label, column in pairs:
        if column in fig.data:
            # BokehJS escapes the values it substitutes; braces would start a format
            field = "@{" + column.replace("}", "").replace("{", "") + "}"
            if fig.x_axis_type == "datetime" and column == fig.x:
                formatters[field] = "datetime"
                out.append((label, field + "{%F %T}"))
            else:
                out.append((label, field))
        else:
            # A literal.  BokehJS parses a tooltip value as HTML (labels are text), so
            # escape it, and neutralise "@"/"$", which would be read as placeholders.
            out.append((label, html.escape(column.replace("@", "＠").replace("$", "＄"))))
    return out, formatters


class FigureView:
    """The models of one figure in one document."""

    def __init__(self, fig: Figure, id_prefix: str = "") -> None:
        # Data sources get the same id in every session that shows this incarnation of
        # the figure (see app/instance/wire.py: one message serves them all).
        self.id_prefix = id_prefix
        self.name = fig.name
        self.kind = fig.kind
        self.version = fig.version
        self.source: ColumnDataSource | None = None
        self.plot: Any = None  # bokeh figure, when kind is a plot
        self.hover: HoverTool | None = None
        self.title_div: Div | None = None
        self.factors: list[str] | None = None
        self.panel: panels.PanelView | None = None  # stat, gauge, text (app/instance/panels.py)
        self.table: DataTable | None = None
        self.reduced = False  # the source holds a reduced view of a long series (app/instance/series.py)
        self.reduce_key = (id_prefix, fig.name, fig.version)
        if fig.kind in panelspec.PANEL_KINDS:
            # a stat's or gauge's series rides along as a named source (the page's CSV)
            self.source = self._source(fig) if fig.kind != "text" else None
            self.panel = panels.PanelView(fig, self.source)
            self.root: LayoutDOM = self.panel.div
        elif fig.kind == "model":
            self.root = _model_root(fig, f"{id_prefix or 'fleet'}:{fig.name}:{fig.version}:m")
        elif fig.kind == "table":
            self.root = self._table(fig)
        else:
            self.root = self._plot(fig)

    # --- builders ---------------------------------------------------------------------
    def _source(self, fig: Figure) -> ColumnDataSource:
        view = series.overview(fig)
        self.reduced = view is not None
        source = ColumnDataSource(data=dict(fig.data if view is None else view), name=fig.name,
                                  tags=[series.TAG] if self.reduced else [])
        if self.id_prefix:  # before it joins a document; Bokeh has no public way to pick an id
            bokeh_compat.set_model_id(source, f"{self.id_prefix}:{fig.name}:{fig.version}:src")
        return source

    def _table(self, fig: Figure) -> LayoutDOM:
        self.source = self._source(fig)
        columns = []
        for c in fig.data:
            fmt: dict[str, Any] = {}  # Bokeh's stubs type each keyword; a dict of them is Any
            if fig.x_axis_type == "datetime" and c == fig.x:
                fmt["formatter"] = DateFormatter(format="%Y-%m-%d %H:%M:%S")
            columns.append(TableColumn(field=c, title=c, **fmt))
        table = self.table = DataTable(source=self.source, columns=columns, sizing_mode="stretch_width",
                                       height=fig.panel.get("height") or TABLE_HEIGHT, index_position=None)
        self.title_div = Div(text=_title_html(fig.title or fig.name, "h3"))
        return Column(children=[self.title_div, table], sizing_mode="stretch_width")

    def _plot(self, fig: Figure) -> LayoutDOM:
        self.source = self._source(fig)
        kw: dict = {}
        if fig.x_axis_type == "datetime":
            kw["x_axis_type"] = "datetime"
        elif fig.x_axis_type == "categorical":
            self.factors = _factors(fig.data[fig.x]) if fig.x in fig.data else []
            kw["x_range"] = FactorRange(factors=self.factors)
        p = bk_figure(title=fig.title or fig.name, sizing_mode="stretch_width",
                      height=fig.panel.get("height") or PLOT_HEIGHT,
                      tools=TOOLS, toolbar_location="above", **kw)
        # Auto-ranges would echo every change back from each browser: not synced.
        p.x_range.syncable = False
        p.y_range.syncable = False
        p.xaxis.axis_label = fig.x_label or fig.x
        p.yaxis.axis_label = fig.y_label or (fig.y[0] if len(fig.y) == 1 else "")
        several = len(fig.y) > 1
        renderers: list[Any] = []
        width = 0.8
        if fig.kind == "bar" and fig.x_axis_type != "categorical" and fig.x in fig.data:
            width = _bar_width(fig.data[fig.x])
        for i, y in enumerate(fig.y):
            color = Category10_10[i % 10]
            legend: dict[str, Any] = {"legend_label": y} if several else {}
            r: Any
            if fig.kind == "line":
                r = p.line(fig.x, y, source=self.source, color=color, line_width=2, **legend)
            elif fig.kind == "scatter":
                r = p.scatter(fig.x, y, source=self.source, color=color, size=7, alpha=0.8, **legend)
            elif fig.kind == "step":
                r = p.step(fig.x, y, source=self.source, color=color, line_width=2, mode="after", **legend)
            elif fig.kind == "area":
                p.varea(x=fig.x, y1=0, y2=y, source=self.source, color=color, alpha=0.25, **legend)
                r = p.line(fig.x, y, source=self.source, color=color, line_width=2, **legend)
            else:  # bar
                w = width / len(fig.y) if several else width
                off = (i - (len(fig.y) - 1) / 2) * w
                xs = dodge(fig.x, off, range=p.x_range) if several else fig.x
                r = p.vbar(x=xs, top=y, width=w * 0.95, source=self.source, color=color, **legend)
            renderers.append(r)
        tips, formatters = _tooltips(fig)
        if tips:
            mode: Literal["vline", "mouse"] = "vline" if fig.kind in ("line", "step", "area") else "mouse"
            self.hover = HoverTool(tooltips=tips, formatters=formatters, renderers=renderers, mode=mode)
            p.add_tools(self.hover)
        if several:
            p.legend.location = "top_left"
            p.legend.click_policy = "hide"
        self.plot = p
        return p

    # --- updates ----------------------------------------------------------------------
    def stream(self, data: Mapping[str, np.ndarray], rollover: int | None, after: Figure) -> None:
        """Append rows: the source takes the state's own (already rolled-over) columns and
        the session gets the usual ``ColumnsStreamed`` patch with just the new rows.

        ``ColumnDataSource.stream`` would validate, concatenate and compare whole columns
        again in every session (most of an instance's CPU at 100 sessions); the fold has
        done all of that once, so only the event is raised here.
        """
        source = self.source
        assert source is not None
        if (self.reduced or series.reducible(after)) and self._stream_reduced(data, after):
            return
        doc = source.document
        if doc is None:  # not attached yet: nobody to notify
            source.stream(dict(data), rollover)
        else:
            columns = source.data
            for name, arr in after.data.items():
                dict.__setitem__(columns, name, arr)
            doc.callbacks.trigger_on_change(ColumnsStreamedEvent(doc, source, "data", dict(data), rollover))
        self._sync_factors(after)

    def _stream_reduced(self, data: Mapping[str, np.ndarray], after: Figure) -> bool:
        """A stream into a long series: append the new rows to the reduced view, or
        re-reduce (see :func:`app.instance.series.reduce_now`).  False: not reduced,
        stream as usual."""
        source = self.source
        assert source is not None
        if self.reduced and not series.reduce_now(self.reduce_key, after):
            doc = source.document
            if doc is None:
                source.stream(dict(data))
            else:
                columns = source.data
                for name, arr in data.items():
                    dict.__setitem__(columns, name, np.concatenate([columns[name], arr]))
                doc.callbacks.trigger_on_change(ColumnsStreamedEvent(doc, source, "data", dict(data), None))
            return True
        view = series.overview(after)
        if view is None and not self.reduced:
            return False
        self._set_data(after, view)
        return True

    def _set_data(self, after: Figure, view: Mapping[str, np.ndarray] | None) -> None:
        """All of the source's data: the reduced ``view`` when there is one, else every row."""
        assert self.source is not None
        self.reduced = view is not None
        self.source.data = dict(after.data if view is None else view)
        tags = [series.TAG] if self.reduced else []
        if list(self.source.tags) != tags:
            self.source.tags = tags

    def patch(self, patches: Mapping[str, list], after: Figure) -> None:
        assert self.source is not None
        if self.reduced:
            self._set_data(after, series.overview(after))
            return
        raw = self.source.data
        for c in patches:  # shared arrays are read-only: patch a private copy
            arr = raw[c]
            if isinstance(arr, np.ndarray) and not arr.flags.writeable:
                dict.__setitem__(raw, c, arr.copy())
        self.source.patch({c: list(p) for c, p in patches.items()})
        self._sync_factors(after)

    def reset_data(self, after: Figure) -> None:
        self._set_data(after, series.overview(after))
        self._sync_factors(after)

    def set_props(self, after: Figure) -> None:
        if self.panel is not None:
            self.panel.update(after)
            return
        if self.table is not None:
            self.table.height = after.panel.get("height") or TABLE_HEIGHT
        if self.plot is not None:
            self.plot.height = after.panel.get("height") or PLOT_HEIGHT
        if self.kind == "model":
            root: Any = self.root  # any allowed model tree; only some have a title
            if after.title and getattr(root, "title", None) is not None and hasattr(root.title, "text"):
                root.title.text = after.title
            return
        if self.title_div is not None:
            self.title_div.text = _title_html(after.title or after.name, "h3")
        if self.plot is not None:
            self.plot.title.text = after.title or after.name
            self.plot.xaxis.axis_label = after.x_label or after.x
            self.plot.yaxis.axis_label = after.y_label or (after.y[0] if len(after.y) == 1 else "")
            tips, formatters = _tooltips(after)
            if self.hover is not None:
                self.hover.tooltips = tips or None
                self.hover.formatters = formatters

    def _sync_factors(self, after: Figure) -> None:
        if self.panel is not None:  # every data change of a panel re-renders it
            self.panel.update(after)
        if self.factors is None or self.plot is None:
            return
        factors = _factors(after.data[after.x])
        if factors != self.factors:
            self.factors = factors
            self.plot.x_range.factors = factors


def _model_root(fig: Figure, id_prefix: str) -> LayoutDOM:
    """Rebuild an ``op=figure`` model tree from its ``json_item`` JSON.

    The controller's model ids are replaced by ids under ``id_prefix``: its own
    (``p1001``...) collide with this document's other models, and BokehJS would then
    resolve references to the wrong models and render nothing at all.
    """
    item = fig.model or {}
    try:
        models.check(item)  # parse() did; a snapshot from an older version may hold anything
        item = models.reidentified(item, id_prefix + ":")
        tmp = Document.from_json(item["doc"])
        root = tmp.get_model_by_id(item["root_id"]) if item.get("root_id") else None
        root = root or tmp.roots[0]
        if not isinstance(root, LayoutDOM):
            raise ValueError(f"its root is a {type(root).__name__}, not a plot or a layout")
        tmp.remove_root(root)
        for m in root.references():  # as for spec figures: a viewer's zoom stays in its browser
            if isinstance(m, Range):
                m.syncable = False
        return root
    except Exception as exc:  # parse() checked the shape; Bokeh may still refuse it
        log.warning("figure %s: cannot rebuild the Bokeh model: %s", fig.name, exc)
        return Div(text=_title_html(f"{fig.name}: this figure could not be rebuilt ({exc})"[:300], "p"))


def _title_html(text: str, tag: str) -> str:
    return f'<{tag} class="fleet-title" style="margin:4px 0">{html.escape(text)}</{tag}>'


# --- a dashboard document ----------------------------------------------------------------
class DashboardDoc:
    """All models of one session's document for one dashboard."""

    def __init__(self, doc: Document, dashboard: str, generation: int = 0) -> None:
        self.doc = doc
        self.dashboard = dashboard
        self.generation = generation  # the fan-out's reset count for this dashboard
        self.views: dict[str, FigureView] = {}
        self.containers: dict[str, Row | Column] = {}  # figure name -> its container
        self.header = Div(text="", sizing_mode="stretch_width")
        self.body = Column(children=[], sizing_mode="stretch_width")
        self.status = pagestatus.model(dashboard)  # data freshness for the status mark (app/instance/pagestatus.py)
        self.status_sent: tuple | None = None
        self.root = Column(children=[self.header, self.body, self.status], sizing_mode="stretch_width",
                           name="fleet-root")
        self.state: DashboardState | None = None

    def install(self, state: DashboardState | None) -> None:
        """First build: add the root."""
        # The page's status mark (app/web/static/status.js, a page script: no CustomJS,
        # which would need 'unsafe-eval' in the pages' CSP) replaces Bokeh's own.
        self.doc.config.notify_connection_status = False
        self.rebuild(state)
        self.doc.add_root(self.root)

    def rebuild(self, state: DashboardState | None, generation: int | None = None) -> None:
        """Build every figure from ``state`` (first build, or after a resync)."""
        if generation is not None:
            self.generation = generation
        self.views = {}
        self.state = state
        if state is None:
            self.header.text = _title_html(f"{self.dashboard}: this dashboard was deleted", "h1")
            self.doc.title = self.dashboard
            self.body.children = []
            self.containers = {}
            return
        for name, fig in state.figures.items():
            self.views[name] = FigureView(fig, self.id_prefix)
        self._set_title(state)
        self._arrange(state)

    @property
    def id_prefix(self) -> str:
        return f"fleet:{self.dashboard}:{self.generation}"

    # --- commands ---------------------------------------------------------------------
    def apply(self, cmd: Command, after: DashboardState) -> None:
        """Apply one resolved command (its op's document hook); ``after`` is the state it produced."""
        hook = ops.get(cmd.op).apply
        if hook is None:
            raise LookupError(f"op {cmd.op} has no document hook (app.control.ops.attach)")
        hook(self, cmd, after)
        self.state = after

    # --- helpers ----------------------------------------------------------------------
    def _set_title(self, state: DashboardState) -> None:
        # The page's one visible title (the web page template shows none of its own).
        self.header.text = _title_html(state.title or self.dashboard, "h1")
        self.doc.title = state.title or self.dashboard

    def _swap(self, fig: Figure, after: DashboardState) -> None:
        old = self.views.get(fig.name)
        view = FigureView(fig, self.id_prefix)
        self.views[fig.name] = view
        box = self.containers.get(fig.name)
        if old is not None and box is not None:
            box.children = [view.root if c is old.root else c for c in box.children]
        else:
            self._arrange(after)

    def _arrange(self, state: DashboardState) -> None:
        """(Re)build the row/column containers around the existing figure models."""
        self.containers = {}
        groups: list[Any] = []
        for group in state.layout:
            members: list[Any] = [self.views[n].root for n in group if n in self.views]
            if not members:
                continue
            box: Column | Row
            if state.layout_mode == "columns":
                box = Column(children=members, sizing_mode="stretch_width")
            else:
                box = Row(children=members, sizing_mode="stretch_width", stylesheets=[ROW_CSS])
            for n in group:
                self.containers[n] = box
            groups.append(box)
        if state.layout_mode == "columns":
            self.body.children = [Row(children=groups, sizing_mode="stretch_width")] if groups else []
        else:
            self.body.children = groups


# --- the built-in ops' document hooks (app.control.ops: the registry dispatches on them) ---
def _named(cmd: Command) -> str:
    """The figure a figure op names (parse() refuses these ops without a name)."""
    assert cmd.name is not None
    return cmd.name


def _apply_stream(dd: DashboardDoc, cmd: Stream, after: DashboardState) -> None:
    assert cmd.data is not None  # parse_stream requires data
    dd.views[_named(cmd)].stream(cmd.data, cmd.rollover, after.figures[_named(cmd)])


def _apply_patch(dd: DashboardDoc, cmd: Patch, after: DashboardState) -> None:
    assert cmd.patches is not None  # parse_patch requires patches
    dd.views[_named(cmd)].patch(cmd.patches, after.figures[_named(cmd)])


def _apply_swap(dd: DashboardDoc, cmd: Replace | FigureModel, after: DashboardState) -> None:
    dd._swap(after.figures[_named(cmd)], after)


def _apply_clear(dd: DashboardDoc, cmd: Clear, after: DashboardState) -> None:
    if cmd.name is None:
        dd.views = {}
        dd._arrange(after)
    else:
        dd.views[cmd.name].reset_data(after.figures[cmd.name])


def _apply_remove(dd: DashboardDoc, cmd: Remove, after: DashboardState) -> None:
    dd.views.pop(_named(cmd), None)
    dd._arrange(after)


def _apply_layout(dd: DashboardDoc, cmd: Layout, after: DashboardState) -> None:
    dd._arrange(after)


def _apply_set(dd: DashboardDoc, cmd: SetProps, after: DashboardState) -> None:
    if cmd.name is None:
        dd._set_title(after)
    else:
        dd.views[cmd.name].set_props(after.figures[cmd.name])


ops.attach("stream", _apply_stream)
ops.attach("patch", _apply_patch)
ops.attach("replace", _apply_swap)
ops.attach("figure", _apply_swap)
ops.attach("clear", _apply_clear)
ops.attach("remove", _apply_remove)
ops.attach("layout", _apply_layout)
ops.attach("set", _apply_set)
