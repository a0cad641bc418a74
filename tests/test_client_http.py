"""HTTP API for controllers that cannot reach Redis: ``?wait=1``, Arrow IPC bodies,
``GET .../commands/<id>``, and ``bokeh_fleet.Controller.http`` against a real HTTP
server (werkzeug) with a real Redis and Bokeh instance."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pyarrow as pa
import pytest
from bokeh_fleet import Controller, Rejected
from bokeh_fleet.data import encode_data

from app.bus import registry

URL = "/api/v1/dashboards/{}/commands"
ARROW = "application/vnd.apache.arrow.stream"
REPLACE = {"op": "replace", "name": "prices", "kind": "line", "data": {"t": [1, 2], "y": [1.5, 2.5]}}


@pytest.fixture
def setup(fleet_bus, start_instance):
    registry.create_dashboard(fleet_bus.client, fleet_bus.keys, "sales")
    secret, _tok = fleet_bus.accounts.create_token("feeder", ["sales"])
    start_instance()
    return {"secret": secret, "h": {"Authorization": f"Bearer {secret}"}}


def test_wait_answers_applied_or_the_readers_reason(client, setup):
    r = client.post(URL.format("sales") + "?wait=1", json=REPLACE, headers=setup["h"])
    assert r.status_code == 200, r.data
    assert r.get_json()["applied"] is True
    t0 = time.monotonic()
    typo = {"op": "stream", "name": "pricse", "data": {"t": [3], "y": [1.0]}}
    r = client.post(URL.format("sales") + "?wait=1", json=typo, headers=setup["h"])
    assert r.status_code == 422, r.data
    assert "no figure 'pricse'" in r.get_json()["error"]["message"]
    assert time.monotonic() - t0 < 1.0
    r = client.post(URL.format("sales") + "?wait=1&timeout=99", json=REPLACE, headers=setup["h"])
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "timeout"


def test_command_status(client, setup):
    ok = client.post(URL.format("sales") + "?wait=1", json=REPLACE, headers=setup["h"]).get_json()["ids"][0]
    bad = client.post(URL.format("sales"), json={"op": "remove", "name": "nothing"},
                      headers=setup["h"]).get_json()["ids"][0]
    deadline = time.monotonic() + 10
    while True:
        st = client.get(f"/api/v1/dashboards/sales/commands/{bad}", headers=setup["h"]).get_json()
        if st["status"] != "pending" or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert st["status"] == "rejected" and "no figure 'nothing'" in st["reason"]
    st = client.get(f"/api/v1/dashboards/sales/commands/{ok}", headers=setup["h"]).get_json()
    assert st == {"dashboard": "sales", "id": ok, "status": "applied", "reason": ""}
    r = client.get("/api/v1/dashboards/sales/commands/nope", headers=setup["h"])
    assert r.status_code == 400


def test_arrow_body(client, setup):
    client.post(URL.format("sales") + "?wait=1", json=REPLACE, headers=setup["h"])
    body = encode_data(pa.table({"t": [3.0, 4.0], "y": [3.5, 4.5]})).payload
    r = client.post(URL.format("sales") + "?op=stream&name=prices&wait=1", data=body,
                    headers={**setup["h"], "Content-Type": ARROW})
    assert r.status_code == 200, r.data
    state = client.get("/api/v1/dashboards/sales/state", headers=setup["h"]).get_json()["state"]
    assert state["figures"][0]["data"] == {"t": [1, 2, 3, 4], "y": [1.5, 2.5, 3.5, 4.5]}
    r = client.post(URL.format("sales"), data=body, headers={**setup["h"], "Content-Type": ARROW})
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "op"
    r = client.post(URL.format("sales") + "?op=stream&name=prices", data=b"not arrow",
                    headers={**setup["h"], "Content-Type": ARROW})
    assert r.status_code == 400 and "Arrow" in r.get_json()["error"]["message"]


@pytest.fixture
def http_server(make_app):
    from werkzeug.serving import make_server

    from fleet_testing.ports import free_port

    port = free_port()
    app = make_app(allowed_hosts=(f"127.0.0.1:{port}", "127.0.0.1"))
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()


def test_controller_http_mode(http_server, setup):
    url, _app = http_server
    ctl = Controller.http(url, setup["secret"], strict=True)
    df = pd.DataFrame({"y": [1.0, 2.0]}, index=pd.date_range("2024-01-01", periods=2, name="t"))
    ctl.replace("sales", "revenue", data=df)
    ctl.stream("sales", "revenue", pd.DataFrame({"y": [3.0]}, index=pd.DatetimeIndex(["2024-01-03"], name="t")))
    back = ctl.frame("sales", "revenue")
    assert back["y"].tolist() == [1.0, 2.0, 3.0]
    assert back["t"].tolist() == list(pd.date_range("2024-01-01", periods=3))
    with pytest.raises(Rejected, match="revenu'"):
        ctl.stream("sales", "revenu", {"t": [1], "y": [1]})
    loose = Controller.http(url, setup["secret"])
    cid = loose.stream("sales", "revenue", {"t": ["x"], "y": [1]})
    with pytest.raises(Rejected, match="ISO-8601"):
        loose.wait_applied(cid, 5)
    assert loose.dashboards() == ["sales"]
    with pytest.raises(Rejected, match="not valid for dashboard"):
        loose.stream("other", "revenue", {"t": [1], "y": [1]})
