"""Controller input that used to break viewers or readers (issue 10, items 1 and 8).

* ``NaN``/``Infinity`` in HTTP API data were accepted and ``GET .../state`` then
  answered invalid JSON: they are missing numbers now (``null``, as documented).
* A ``figure`` op with explicit ``x_range``/``y_range`` blanked the dashboard for
  every viewer: the controller's model ids (``p1001``...) collided with the
  instance's own models in the same document.
* The allow list of Bokeh models (app.control.models), unit-tested here; the browser
  side is tests/test_security_xss.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.embed import json_item
from bokeh.models import ColumnDataSource, DataTable, Div, HoverTool, Range1d, TableColumn
from bokeh.plotting import figure

from app.bus import registry
from app.control import models
from app.control.protocol import Rejected, parse
from app.control.snapshot import view
from app.control.state import EMPTY, step
from app.instance.documents import DashboardDoc

URL = "/api/v1/dashboards/{}/commands"


def _no_constants(name: str):
    raise AssertionError(f"the answer holds {name}, which is not JSON")


@pytest.fixture
def token(fleet_bus):
    registry.create_dashboard(fleet_bus.client, fleet_bus.keys, "sales")
    secret, _ = fleet_bus.accounts.create_token("feeder", ["sales"])
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


def test_nan_and_infinity_in_api_data_are_null_and_state_stays_json(client, token):
    # Python's json (and Flask's request parser) accept these non-JSON literals
    body = ('{"op": "replace", "name": "p", "kind": "line", "x": "t", "y": ["y"],'
            ' "data": {"t": [1, 2, 3, 4], "y": [NaN, Infinity, -Infinity, 1e999]}}')
    assert client.post(URL.format("sales"), data=body, headers=token).status_code == 202
    body = '{"op": "stream", "name": "p", "data": {"t": [5, 6], "y": [Infinity, 2.5]}}'
    assert client.post(URL.format("sales"), data=body, headers=token).status_code == 202
    r = client.get("/api/v1/dashboards/sales/state", headers=token)
    assert r.status_code == 200
    state = json.loads(r.data, parse_constant=_no_constants)["state"]
    assert state["figures"][0]["data"]["y"] == [None, None, None, None, None, 2.5]
    # patches: the same (null means NaN there too)
    body = '{"op": "patch", "name": "p", "patches": {"y": [[0, -Infinity], [1, 7]]}}'
    assert client.post(URL.format("sales"), data=body, headers=token).status_code == 202
    r = client.get("/api/v1/dashboards/sales/state", headers=token)
    state = json.loads(r.data, parse_constant=_no_constants)["state"]
    assert state["figures"][0]["data"]["y"] == [None, 7, None, None, None, 2.5]


def test_nan_in_a_model_tree_is_a_400_naming_the_field(client, token):
    item = json.dumps(json_item(figure())).replace('"id"', '"bad": NaN, "id"', 1)
    r = client.post(URL.format("sales"), data='{"op": "figure", "name": "m", "model": ' + item + "}",
                    headers=token)
    assert r.status_code == 400, r.data
    err = r.get_json()["error"]
    assert err["field"] == "model" and "NaN" in err["message"]


def test_wire_nan_and_infinity_fold_to_missing_values():
    cmd = parse({"op": "replace", "name": "p", "kind": "line",
                 "data": '{"x": [1, 2, 3], "y": [Infinity, NaN, -Infinity]}'})
    state, _ = step(EMPTY, cmd)
    assert np.isnan(state.figures["p"].data["y"]).all()
    json.dumps(view(state), allow_nan=False)


# --- figure op with explicit ranges ------------------------------------------------------
def _ranged_item() -> dict:
    p = figure(x_range=(0, 10), y_range=(0, 5), title="ranged")
    p.line([1, 2, 3], [1, 2, 3])
    return json_item(p)


def _with_ids_of(item: dict, doc: Document) -> dict:
    """``item`` as a controller process whose id counter matches the instance's would
    send it: its model ids are the ids of models already in ``doc``."""
    taken = iter(sorted(m.id for m in doc.models))
    mapping: dict[str, str] = {}
    text = json.dumps(item)
    for old in sorted(set(_ids(item))):
        mapping[old] = next(taken, old)
    for old, new in mapping.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    return json.loads(text)


def _ids(node):
    if isinstance(node, dict):
        if isinstance(node.get("id"), str):
            yield node["id"]
        for v in node.values():
            yield from _ids(v)
    elif isinstance(node, list):
        for v in node:
            yield from _ids(v)


def test_figure_with_explicit_ranges_does_not_break_the_document():
    state, _ = step(EMPTY, parse({"op": "replace", "name": "spec", "kind": "line",
                                  "data": json.dumps({"x": [1, 2, 3], "y": [1.0, 2.0, 3.0]})}))
    doc = Document()
    dd = DashboardDoc(doc, "d")
    dd.install(state)
    assert len(list(doc.models)) > 30  # plenty of the instance's own models to collide with
    cmd = parse({"op": "figure", "name": "ranged", "model": json.dumps(_with_ids_of(_ranged_item(), doc))})
    after, resolved = step(state, cmd)
    dd.apply(resolved, after)

    # what a browser gets: every id defined once, and the plots' references intact
    wire = doc.to_json().content
    ids = [n["id"] for n in _objects(wire)]
    assert len(ids) == len(set(ids)), "two models share an id in the document"
    copy = Document.from_json(wire)
    plots = {p.title.text: p for p in copy.select({"type": figure})}
    assert set(plots) == {"spec", "ranged"}
    assert isinstance(plots["ranged"].x_range, Range1d) and plots["ranged"].x_range.end == 10
    assert isinstance(plots["ranged"].y_range, Range1d) and plots["ranged"].y_range.end == 5
    assert not isinstance(plots["spec"].x_range, Range1d)


def _objects(node):
    if isinstance(node, dict):
        if node.get("type") == "object" and "id" in node:
            yield node
        for v in node.values():
            yield from _objects(v)
    elif isinstance(node, list):
        for v in node:
            yield from _objects(v)


def test_a_figure_whose_root_is_not_a_layout_shows_a_message_not_a_blank_dashboard():
    item = json_item(ColumnDataSource({"x": [1]}))  # json_item takes any model
    state, _ = step(EMPTY, parse({"op": "figure", "name": "odd", "model": json.dumps(item)}))
    doc = Document()
    DashboardDoc(doc, "d").install(state)
    texts = [d.text for d in doc.select({"type": Div})]
    assert any("could not be rebuilt" in t and "not a plot or a layout" in t for t in texts), texts


# --- the allow list ------------------------------------------------------------------------
def test_allow_list_names_real_bokeh_models():
    import bokeh.models  # noqa: F401  (registers every model)
    from bokeh.model import Model

    assert not [n for n in models.ALLOWED if n not in Model.model_class_reverse_map]


def test_ordinary_figures_and_tables_pass_the_allow_list():
    p = figure(title="t", x_axis_type="datetime", tools="pan,wheel_zoom,box_zoom,reset,save,hover,tap")
    p.line([1, 2], [3, 4], legend_label="a")
    p.vbar(x=[1, 2], top=[1, 2], width=0.5)
    p.add_tools(HoverTool(tooltips=[("y", "@y{0.00}"), ("when", "@x{%F}")], formatters={"@x": "datetime"}))
    models.check(json_item(p))
    src = ColumnDataSource({"a": ["x"]})
    models.check(json_item(DataTable(source=src, columns=[TableColumn(field="a", title="A")])))
    models.check(json_item(Div(text="<b>shown as text</b>", render_as_text=True)))


@pytest.mark.parametrize("obj, word", [
    (Div(text="<img src=x onerror=alert(1)>"), "render_as_text"),
    (figure(html_attributes={"onmouseover": "alert(1)"}), "html_attributes"),
    (figure(tools=[HoverTool(tooltips="<img src=x onerror=alert(1)>")]), "one string"),
    (figure(tools=[HoverTool(tooltips=[("a", "<b>@x</b>")])]), "HTML"),
    (figure(tools=[HoverTool(tooltips=[("a", "@x{safe}")])]), "safe"),
])
def test_script_carrying_models_are_refused(obj, word):
    with pytest.raises(Rejected) as exc:
        parse({"op": "figure", "name": "m", "model": json.dumps(json_item(obj))})
    assert exc.value.field == "model" and word in exc.value.reason


def test_qualified_dom_names_are_not_short_names():
    item = json_item(figure())
    item["doc"]["roots"][0]["attributes"]["extra"] = {"type": "object", "name": "bokeh.models.dom.HTML",
                                                      "id": "x1", "attributes": {}}
    with pytest.raises(models.ModelRefused, match="bokeh.models.dom.HTML"):
        models.check(item)


def test_reidentified_ids_are_deterministic_and_consistent():
    item = _ranged_item()
    a, b = models.reidentified(item, "pre:"), models.reidentified(item, "pre:")
    assert a == b
    ids = set(_ids(a["doc"]["roots"]))
    assert ids and all(i.startswith("pre:") for i in ids)
    assert a["root_id"] in ids
    Document.from_json(a["doc"])  # references still resolve
