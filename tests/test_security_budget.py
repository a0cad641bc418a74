"""Issue 10 item 6: one token holder cannot exhaust memory.

* the fold enforces a per-dashboard budget of cells (rows x columns over all figures,
  model figures by their leaf values) and the figure count, with a clear reason;
* the HTTP API limits publishing per token (429 + Retry-After), other tokens unaffected;
* the rendered redis.conf caps memory with noeviction, and Redis memory near the cap
  raises an alarm in the instances' /metrics and on the admin page;
* a rejected command is recorded truncated, not stored again in full.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from app.control.protocol import Rejected, parse
from app.control.state import EMPTY, FoldConfig, dashboard_cells, step
from app.settings import Settings
from app.stack import render

CFG = FoldConfig(max_dashboard_cells=1000, max_figures=3)


def cmd(**fields):
    return parse({k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()})


def line(name: str, rows: int, cols: int = 2):
    return cmd(op="replace", name=name, kind="line",
               data={f"c{i}": list(range(rows)) for i in range(cols)})


def stream(name: str, rows: int, cols: int = 2, **kw):
    return cmd(op="stream", name=name, data={f"c{i}": list(range(rows)) for i in range(cols)}, **kw)


# --- the fold -------------------------------------------------------------------------------
def test_budget_counts_rows_times_columns_over_figures():
    s, _ = step(EMPTY, line("a", 100, 2), CFG)
    s, _ = step(s, line("b", 50, 4), CFG)
    assert dashboard_cells(s) == 400


def test_stream_over_budget_is_rejected_with_a_reason_and_state_unchanged():
    s, _ = step(EMPTY, line("a", 400, 2), CFG)  # 800 cells
    with pytest.raises(Rejected) as exc:
        step(s, stream("a", 101), CFG)  # 1002 > 1000
    msg = str(exc.value)
    assert "over budget" in msg and "1,002" in msg and "1,000" in msg and "FLEET_MAX_DASHBOARD_CELLS" in msg
    assert dashboard_cells(s) == 800
    s2, _ = step(s, stream("a", 100), CFG)  # exactly at the budget
    assert dashboard_cells(s2) == 1000


def test_budget_spans_figures_and_rollover_keeps_a_dashboard_within_it():
    s, _ = step(EMPTY, line("a", 300, 2), CFG)
    with pytest.raises(Rejected, match="over budget"):
        step(s, line("b", 201, 2), CFG)  # 600 + 402
    s, _ = step(s, cmd(op="replace", name="b", kind="line", rollover="100",
                       data={"x": [1], "y": [2]}), CFG)
    for _ in range(20):  # rollover caps b at 100 rows: streaming forever stays in budget
        s, _ = step(s, stream_xy("b", 50), CFG)
    assert dashboard_cells(s) == 600 + 200


def stream_xy(name: str, rows: int):
    return cmd(op="stream", name=name, data={"x": list(range(rows)), "y": list(range(rows))})


def test_model_figures_count_their_leaf_values():
    from bokeh.embed import json_item
    from bokeh.plotting import figure

    def model(n):
        p = figure()
        p.line(list(range(n)), [float(i) for i in range(n)])
        return json_item(p)

    s, _ = step(EMPTY, cmd(op="figure", name="m", model=model(10)), CFG)
    assert 20 <= dashboard_cells(s) < 1000
    with pytest.raises(Rejected, match="over budget"):
        step(EMPTY, cmd(op="figure", name="m", model=model(600)), CFG)


def test_shrinking_an_over_budget_dashboard_is_allowed():
    big = FoldConfig(max_dashboard_cells=10_000)
    s, _ = step(EMPTY, line("a", 2000, 2), big)  # 4000 cells, then the budget is lowered
    s2, _ = step(s, cmd(op="clear", name="a"), CFG)
    assert dashboard_cells(s2) == 0
    s3, _ = step(s, cmd(op="set", name="a", title="still there"), CFG)  # no growth: fine
    assert s3.figures["a"].title == "still there"
    with pytest.raises(Rejected, match="over budget"):
        step(s, stream("a", 1), CFG)


def test_figure_count_is_limited():
    s = EMPTY
    for n in "abc":
        s, _ = step(s, line(n, 1), CFG)
    with pytest.raises(Rejected, match="3 figures"):
        step(s, line("d", 1), CFG)


def test_default_budget_is_a_few_million_cells_and_comes_from_settings():
    assert 1_000_000 <= Settings().max_dashboard_cells <= 20_000_000
    assert FoldConfig.from_settings(Settings(max_dashboard_cells=7)).max_dashboard_cells == 7


# --- rejected entries are stored truncated -----------------------------------------------------
def test_rejected_command_is_recorded_truncated(redis_server):
    import asyncio

    from app.bus import registry
    from app.bus.keys import Keys
    from app.bus.reader import MAX_REJECTED_ENTRY, Reader

    settings = Settings(redis_url=redis_server.url, max_dashboard_cells=10)
    client = redis_server.client()
    keys = Keys("fleet")
    registry.create_dashboard(client, keys, "d")
    big = json.dumps({"x": list(range(50_000)), "y": list(range(50_000))})
    client.xadd(keys.commands("d"), {"op": "replace", "name": "p", "kind": "line", "data": big})

    async def main():
        reader = Reader(settings)
        reader.start()
        await reader.wait_caught_up(10)
        await reader.stop()

    asyncio.run(main())
    rejected = client.xrange(keys.rejected("d"))
    assert len(rejected) == 1
    fields = rejected[0][1]
    assert b"over budget" in fields[b"_reason"]
    assert sum(len(k) + len(v) for k, v in fields.items()) < MAX_REJECTED_ENTRY + 1024 < len(big)
    client.close()


# --- per-token publish rate ----------------------------------------------------------------------
def test_api_publish_rate_is_per_token_with_retry_after(make_app, fleet_bus):
    from app.bus import registry

    app = make_app(api_publish_rate=0.1, api_publish_burst=3)  # refills 1 per 10 s
    acc = app.extensions["fleet"].accounts
    registry.create_dashboard(fleet_bus.client, fleet_bus.keys, "sales")
    noisy, _ = acc.create_token("noisy", ["sales"])
    quiet, _ = acc.create_token("quiet", ["sales"])
    client = app.test_client()

    def post(tok):
        return client.post("/api/v1/dashboards/sales/commands", json={"op": "clear"},
                           headers={"Authorization": f"Bearer {tok}"})

    assert [post(noisy).status_code for _ in range(3)] == [202, 202, 202]
    r = post(noisy)
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 10
    assert "noisy" in r.get_json()["error"]["message"]
    assert post(quiet).status_code == 202  # another token has its own bucket
    # A refused publish adds nothing to the stream.
    assert fleet_bus.client.xlen(fleet_bus.keys.commands("sales")) == 4


def test_api_publish_bytes_are_limited_per_token(make_app, fleet_bus):
    from app.bus import registry

    app = make_app(api_publish_rate=0, api_publish_bytes_per_second=1000, api_max_body_bytes=64 * 1024)
    acc = app.extensions["fleet"].accounts
    registry.create_dashboard(fleet_bus.client, fleet_bus.keys, "sales")
    tok, _ = acc.create_token("bulk", ["sales"])
    client = app.test_client()
    body = {"op": "replace", "name": "p", "kind": "line",
            "data": {"x": list(range(2500)), "y": list(range(2500))}}  # ~24 KB

    statuses = [client.post("/api/v1/dashboards/sales/commands", json=body,
                            headers={"Authorization": f"Bearer {tok}"}) for _ in range(4)]
    assert [r.status_code for r in statuses[:2]] == [202, 202]  # the 64 KB burst
    assert statuses[-1].status_code == 429 and "bytes/s" in statuses[-1].get_json()["error"]["message"]
    assert int(statuses[-1].headers["Retry-After"]) >= 1


# --- Redis maxmemory and the alarm ------------------------------------------------------------
SECRETS = {"REDIS_PASSWORD": "x" * 20, "SECRET_KEY": "y" * 40, "FLASK_SECRET": "z" * 40,
           **{f"REDIS_PASSWORD_{r}": r.lower() * 8 for r in ("INSTANCE", "WEB", "COMPACTOR", "EVENTS", "DEMO")}}


def test_redis_conf_caps_memory_with_noeviction(tmp_path):
    root = Path(__file__).resolve().parents[1]
    render.render_site(Settings(redis_maxmemory="512mb"), root=root, venv=Path(sys.prefix), var_dir=tmp_path)
    conf = (tmp_path / "redis/redis.conf").read_text()
    assert re.search(r"^maxmemory 512mb$", conf, re.M)
    assert re.search(r"^maxmemory-policy noeviction$", conf, re.M)
    default = render.build_context(Settings(), SECRETS, root=root, var_dir=tmp_path)
    assert default["redis_maxmemory"] == "2gb"
    with pytest.raises(render.RenderError, match="FLEET_REDIS_MAXMEMORY"):
        render.build_context(Settings(redis_maxmemory="1gb\nrequirepass x"), SECRETS,
                             root=root, var_dir=tmp_path)


def test_memory_alarm_in_metrics_and_admin_page(redis_server, start_instance, auth):
    client = redis_server.client()
    inst = start_instance(access_recheck_seconds="0.2")
    deadline = time.monotonic() + 15
    while inst.metrics().get("fleet_redis_memory_alarm") != 1.0:  # no maxmemory at all: alarm too
        assert time.monotonic() < deadline, inst.get("/metrics")[1][-2000:]
        time.sleep(0.1)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(int(used / 0.85)))  # about 85% full
    try:
        deadline = time.monotonic() + 15
        while not inst.metrics().get("fleet_redis_maxmemory_bytes"):
            assert time.monotonic() < deadline, inst.get("/metrics")[1][-2000:]
            time.sleep(0.1)
        m = inst.metrics()
        assert m["fleet_redis_memory_alarm"] == 1.0
        assert m["fleet_redis_maxmemory_bytes"] > 0 and m["fleet_redis_memory_ratio"] >= 0.8
        auth.login("root")
        page = auth.client.get("/admin/panel").get_data(as_text=True)
        assert "ALARM: Redis memory" in page
        client.config_set("maxmemory", str(used * 100))  # plenty of room: no alarm
        deadline = time.monotonic() + 15
        while inst.metrics().get("fleet_redis_memory_alarm") != 0.0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "ALARM" not in auth.client.get("/admin/panel").get_data(as_text=True)
    finally:
        client.config_set("maxmemory", "0")
        client.close()
