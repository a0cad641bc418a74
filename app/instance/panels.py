"""Bokeh models of the panel kinds (stat, gauge, text; spec in app/control/panelspec.py).

Each panel is one Bokeh ``Div`` whose HTML is built here from the figure's state:
every controller text (title, unit, Markdown, text values) is escaped or rendered by
markdown-it-py with raw HTML off, images off and links limited to http(s)/mailto, so
nothing a controller sends becomes markup of its own.  The colours use
``currentColor`` where they can, so the page's dark theme reaches them without a
change on the (shared) server-side document.  Called by
:class:`app.instance.documents.FigureView`.
"""

from __future__ import annotations

import html
import math
from functools import lru_cache
from typing import Any

import numpy as np
from bokeh.models import ColumnDataSource
from bokeh.models.widgets.markups import Div  # bokeh.models' stubs lack the widgets
from markdown_it import MarkdownIt

from app.control import panelspec
from app.control.state import Figure

DEFAULT_HEIGHT = {"stat": 130, "gauge": 200}
LINK_SCHEMES = ("http:", "https:", "mailto:")
UP, DOWN = "#2e7d32", "#c62828"
ACCENT = "#1f77b4"


# --- Markdown --------------------------------------------------------------------------
def _valid_link(url: str) -> bool:
    """Only absolute http(s) and mailto links (no javascript:, data:, relative paths)."""
    return url.strip().lower().startswith(LINK_SCHEMES)


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.disable("image")  # no remote fetches from a viewer's browser
    md.validateLink = _valid_link  # type: ignore[method-assign]

    def link_open(renderer, tokens, idx, options, env):
        tokens[idx].attrSet("target", "_blank")
        tokens[idx].attrSet("rel", "noopener noreferrer")
        return renderer.renderToken(tokens, idx, options, env)

    md.add_render_rule("link_open", link_open)
    return md


def markdown_html(text: str) -> str:
    """Markdown as safe HTML: raw HTML shown as text, links http(s)/mailto only."""
    return _markdown().render(text)


# --- numbers -----------------------------------------------------------------------------
def fmt(v: Any) -> str:
    """A value as a person reads it on a wall: thousands separators, few decimals."""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, str):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(f):
        return "–"
    if f.is_integer() and abs(f) < 1e15:
        return f"{int(f):,}"
    a = abs(f)
    if a >= 100:
        return f"{f:,.1f}"
    if a >= 1:
        return f"{f:,.2f}"
    return f"{f:.3g}"


def _latest(fig: Figure) -> tuple[Any, Any]:
    """(last value, the one before it) of the panel's value column (None: none)."""
    col = fig.data.get(fig.y[0]) if fig.y else None
    if col is None or len(col) == 0:
        return None, None
    last = col[-1].item() if hasattr(col[-1], "item") else col[-1]
    prev = None
    if len(col) > 1:
        prev = col[-2].item() if hasattr(col[-2], "item") else col[-2]
    return last, prev


def _number(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
        return float(v)
    return None


def _title(fig: Figure) -> str:
    return (f'<div class="fleet-panel-title" style="font-weight:600;opacity:.8;margin-bottom:4px">'
            f'{html.escape(fig.title or fig.name)}</div>')


def stat_html(fig: Figure) -> str:
    last, prev = _latest(fig)
    unit = html.escape(str(fig.panel.get("unit", "")))
    value = "–" if last is None else html.escape(fmt(last))
    change = ""
    a, b = _number(last), _number(prev)
    if a is not None and b is not None:
        d = a - b
        arrow, color = ("▲", UP) if d > 0 else ("▼", DOWN) if d < 0 else ("■", "currentColor")
        pct = f" ({d / abs(b) * 100:+.1f}%)" if b != 0 else ""
        sign = "+" if d > 0 else ""
        change = (f'<div class="fleet-stat-change" style="color:{color};font-size:15px">'
                  f'{arrow} {html.escape(sign + fmt(d))}{html.escape(pct)}</div>')
    return (f'<div class="fleet-stat" style="padding:8px 12px">{_title(fig)}'
            f'<div class="fleet-stat-value" style="font-size:40px;font-weight:700;line-height:1.1">'
            f'{value}<span class="fleet-stat-unit" style="font-size:18px;font-weight:400;margin-left:6px">'
            f'{unit}</span></div>{change}</div>')


def gauge_html(fig: Figure) -> str:
    last, _ = _latest(fig)
    lo, hi = panelspec.gauge_range(fig.panel)
    v = _number(last)
    frac = 0.0 if v is None else min(1.0, max(0.0, (v - lo) / (hi - lo)))
    theta = math.pi * (1 - frac)
    x, y = 100 + 80 * math.cos(theta), 100 - 80 * math.sin(theta)
    arc = (f'<path d="M 20 100 A 80 80 0 0 1 {x:.2f} {y:.2f}" stroke="{ACCENT}" stroke-width="16" '
           'fill="none" stroke-linecap="butt"/>' if frac > 0 else "")
    # only numbers inside the SVG; every controller text is HTML text around it
    shown = "–" if v is None else fmt(v)
    unit = html.escape(str(fig.panel.get("unit", "")))
    return (f'<div class="fleet-gauge" style="padding:8px 12px;text-align:center">{_title(fig)}'
            '<svg viewBox="0 0 200 110" style="width:100%;max-width:260px;display:block;margin:0 auto" '
            'role="img"><path d="M 20 100 A 80 80 0 0 1 180 100" stroke="currentColor" stroke-opacity=".15" '
            f'stroke-width="16" fill="none"/>{arc}'
            f'<text x="100" y="96" text-anchor="middle" font-size="26" font-weight="700" '
            f'fill="currentColor">{html.escape(shown)}</text>'
            f'<text x="20" y="110" text-anchor="middle" font-size="9" fill="currentColor">'
            f'{html.escape(fmt(lo))}</text>'
            f'<text x="180" y="110" text-anchor="middle" font-size="9" fill="currentColor">'
            f'{html.escape(fmt(hi))}</text>'
            f'</svg><div class="fleet-gauge-unit" style="opacity:.8">{unit}</div></div>')


def text_html(fig: Figure) -> str:
    title = _title(fig) if fig.title else ""
    return f'<div class="fleet-text" style="padding:4px 12px">{title}{markdown_html(fig.panel.get("text", ""))}</div>'


RENDER = {"stat": stat_html, "gauge": gauge_html, "text": text_html}


class PanelView:
    """The Div of one panel; :meth:`update` re-renders it from the figure's new state."""

    def __init__(self, fig: Figure, source: ColumnDataSource | None = None) -> None:
        height = fig.panel.get("height") or DEFAULT_HEIGHT.get(fig.kind)
        kw: dict[str, Any] = {"height": height} if height else {}
        if height and fig.kind == "text":
            kw["styles"] = {"overflow": "auto"}
        if source is not None:  # not drawn: in the document so that the page can offer it as CSV
            kw["tags"] = [source]
        self.div = Div(text=RENDER[fig.kind](fig), sizing_mode="stretch_width", disable_math=True,
                       render_as_text=False, **kw)
        self.height = height

    def update(self, after: Figure) -> None:
        self.div.text = RENDER[after.kind](after)
        height = after.panel.get("height") or DEFAULT_HEIGHT.get(after.kind)
        if height != self.height:
            self.height = height
            self.div.height = height
