"""Bokeh model trees sent by controllers (``op=figure``): an allow list.

A controller's command is data: it may reach viewers' browsers only as text or as
Bokeh models that cannot run script, load a URL or insert HTML.  :func:`check`
walks the serialised tree (``bokeh.embed.json_item``) and accepts it only if every
object is one of :data:`ALLOWED` (by its serialised name, exactly: a qualified
name such as ``bokeh.models.dom.HTML`` is a different model from any short name
here) and passes the property rules:

* on every model: no ``js_event_callbacks``/``js_property_callbacks``, no
  ``html_attributes``, ``html_id``, ``styles``, ``stylesheets`` (event handlers,
  raw CSS and ``url()`` loads), no tool ``icon`` (a URL) and no ``context_menu``;
* per model (:data:`RULES`): ``Div`` only with ``render_as_text`` true;
  ``HoverTool`` tooltips only as ``[label, value]`` pairs whose values hold no
  HTML (``<``) and no ``{safe}`` format (BokehJS parses those values as HTML);
  ``TapTool`` without a callback; ``HelpTool`` without a ``redirect``.

Everything else (``CustomJS*``, ``OpenURL``, ``HTMLTemplateFormatter``, ``ImageURL``,
tile sources, DOM/HTML/MathML models, widgets with callbacks, stylesheets...) is
rejected with a reason naming the model.  Pure: no I/O, no Bokeh import.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

# Serialised model names a dashboard needs.  Grouped as in bokeh.models.
ALLOWED: frozenset[str] = frozenset({
    # documents and layouts
    "DocumentConfig", "Notifications", "Figure", "Plot", "GridPlot", "GridBox", "Row", "Column",
    "Spacer", "Tabs", "TabPanel", "ToolProxy",
    # ranges, scales, coordinates
    "Range1d", "DataRange1d", "FactorRange", "LinearScale", "LogScale", "CategoricalScale",
    # axes, tickers, tick formatters (none with code or HTML)
    "LinearAxis", "LogAxis", "DatetimeAxis", "CategoricalAxis", "MercatorAxis",
    "BasicTicker", "AdaptiveTicker", "CompositeTicker", "DatetimeTicker", "DaysTicker",
    "MonthsTicker", "YearsTicker", "SingleIntervalTicker", "FixedTicker", "LogTicker",
    "CategoricalTicker", "MercatorTicker", "BinnedTicker",
    "BasicTickFormatter", "DatetimeTickFormatter", "NumeralTickFormatter", "PrintfTickFormatter",
    "CategoricalTickFormatter", "LogTickFormatter", "MercatorTickFormatter",
    "AllLabels", "NoOverlap",
    # annotations drawn on the canvas
    "Grid", "Title", "Legend", "LegendItem", "ColorBar", "Span", "Band", "Whisker",
    "BoxAnnotation", "PolyAnnotation", "BoxInteractionHandles", "AreaVisuals", "Label", "LabelSet",
    "Arrow", "NormalHead", "OpenHead", "TeeHead", "VeeHead",
    # glyphs and renderers
    "GlyphRenderer", "Line", "MultiLine", "Scatter", "Circle", "VBar", "HBar", "Quad", "Rect",
    "Block", "VArea", "HArea", "VAreaStep", "HAreaStep", "Patch", "Patches", "Step", "Segment",
    "Ray", "Wedge", "AnnularWedge", "Annulus", "Ellipse", "Bezier", "Quadratic", "Text",
    "Image", "ImageRGBA", "HSpan", "VSpan", "HStrip", "VStrip",
    # data
    "ColumnDataSource", "CDSView", "Selection", "UnionRenderers", "IntersectRenderers",
    "AllIndices", "IndexFilter", "BooleanFilter", "GroupFilter", "IntersectionFilter",
    "UnionFilter", "DifferenceFilter", "SymmetricDifferenceFilter", "InversionFilter",
    # transforms and color mappers
    "Dodge", "Jitter", "Stack", "CumSum", "LinearColorMapper", "LogColorMapper",
    "CategoricalColorMapper", "CategoricalMarkerMapper", "CategoricalPatternMapper",
    "EqHistColorMapper", "LinearInterpolator", "StepInterpolator",
    # tools without URL or script actions
    "Toolbar", "PanTool", "WheelZoomTool", "WheelPanTool", "BoxZoomTool", "ZoomInTool",
    "ZoomOutTool", "ResetTool", "SaveTool", "HoverTool", "CrosshairTool", "TapTool",
    "BoxSelectTool", "LassoSelectTool", "PolySelectTool", "HelpTool", "UndoTool", "RedoTool",
    # tables with safe cell formatters, and text
    "DataTable", "TableColumn", "StringFormatter", "NumberFormatter", "DateFormatter",
    "BooleanFormatter", "ScientificFormatter", "StringEditor", "NumberEditor", "IntEditor",
    "CheckboxEditor", "DateEditor", "PercentEditor", "TextEditor",
    "Paragraph", "PreText", "Div",
})

# Properties refused on every model (a non-empty value is refused; null/empty is fine).
FORBIDDEN_PROPS: dict[str, str] = {
    "js_event_callbacks": "runs JavaScript",
    "js_property_callbacks": "runs JavaScript",
    "html_attributes": "sets raw HTML attributes (event handlers)",
    "html_id": "sets a page element id",
    "styles": "sets raw CSS (may load URLs)",
    "stylesheets": "adds raw CSS (may load URLs)",
    "icon": "loads an image URL",
    "context_menu": "adds menu actions",
}

SAFE_FORMAT_RE = re.compile(r"\{\s*safe\s*\}")


class ModelRefused(ValueError):
    """A model tree that may not reach viewers; the message says which model and why."""


def _empty(value: Any) -> bool:
    if value is None or value == [] or value == {} or value == "":
        return True
    if isinstance(value, dict) and value.get("type") == "map":
        return not value.get("entries")
    return False


def _hover(attrs: dict) -> str | None:
    tips = attrs.get("tooltips", None)
    if "tooltips" not in attrs or tips is None:
        return None
    if isinstance(tips, str):
        return "tooltips given as one string are an HTML template in BokehJS; give [label, value] pairs"
    if not isinstance(tips, list):
        return "tooltips must be a list of [label, value] pairs"
    for pair in tips:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            return "tooltips must be a list of [label, value] pairs of strings"
        if "<" in pair[1] or SAFE_FORMAT_RE.search(pair[1]):
            return (f"tooltip value {pair[1][:60]!r} holds HTML or a {{safe}} format "
                    "(tooltip values are parsed as HTML by BokehJS)")
    return None


def _div(attrs: dict) -> str | None:
    if attrs.get("render_as_text") is not True:
        return "Div is allowed only with render_as_text=True (its text is HTML otherwise)"
    return None


def _no(prop: str, why: str) -> Callable[[dict], str | None]:
    def rule(attrs: dict) -> str | None:
        return None if _empty(attrs.get(prop)) else f"{prop} {why}"
    return rule


RULES: dict[str, Callable[[dict], str | None]] = {
    "HoverTool": _hover,
    "Div": _div,
    "TapTool": _no("callback", "must be empty (OpenURL/CustomJS actions are not allowed)"),
    "HelpTool": _no("redirect", "must not be set (a link target)"),
}


def check(item: Any) -> None:
    """Raise :class:`ModelRefused` unless every model in ``item`` is allowed.

    Also refuses bare non-finite numbers (``NaN``/``Infinity`` are not JSON; Bokeh
    itself encodes them as ``{"type": "number", "value": "nan"}``).
    """
    stack = [item]  # the walk is bounded by the entry size limit (FLEET_MAX_COMMAND_BYTES)
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            if cur.get("type") == "object" and "name" in cur:
                _check_object(cur)
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)
        elif isinstance(cur, float) and not math.isfinite(cur):
            raise ModelRefused("holds NaN or Infinity, which is not JSON "
                               '(Bokeh encodes them as {"type": "number", "value": "nan"})')


def _check_object(obj: dict) -> None:
    name = obj.get("name")
    if not isinstance(name, str) or name not in ALLOWED:
        shown = name[:80] if isinstance(name, str) else repr(name)[:80]
        raise ModelRefused(
            f"model type {shown} is not on the allow list of dashboard models "
            "(no script, URL actions or raw HTML reach viewers; see docs/protocol.md)")
    attrs = obj.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise ModelRefused(f"model {name}: attributes must be an object")
    for prop, why in FORBIDDEN_PROPS.items():
        if prop in attrs and not _empty(attrs[prop]):
            raise ModelRefused(f"model {name}: {prop} {why}; not allowed")
    rule = RULES.get(name)
    if rule is not None:
        reason = rule(attrs)
        if reason:
            raise ModelRefused(f"model {name}: {reason}")


def _new_id(mapping: dict[str, str], prefix: str, old: str) -> str:
    new = mapping.get(old)
    if new is None:
        new = mapping[old] = f"{prefix}{len(mapping)}"
    return new


def reidentified(item: dict, prefix: str) -> dict:
    """A copy of a ``json_item`` whose model ids are ``prefix`` + a counter.

    A controller's ``json_item`` carries ids from its own process (``p1001``...),
    which collide with the instance's own models and with other controllers' trees
    in the same document; BokehJS then resolves a reference to the wrong model
    (e.g. a plot's ``x_range`` to a ``Title``) and the whole document fails to
    render.  The new ids are deterministic (the same in every session).
    """
    mapping: dict[str, str] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items() if k != "id"}
            # definitions ({"type": "object", "id"...}) and references ({"id"} or
            # {"type": "ref", "id"}), as bokeh.core.serialization.Deserializer reads them
            if "id" in node and isinstance(node["id"], str) and node.get("type", "ref") in ("object", "ref"):
                out["id"] = _new_id(mapping, prefix, node["id"])
            elif "id" in node:
                out["id"] = node["id"]
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out = walk(item)
    if isinstance(item.get("root_id"), str):
        out["root_id"] = _new_id(mapping, prefix, item["root_id"])
    return out
