"""Integration: real Redis, real ``fleetctl instance`` processes, headless Bokeh clients."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse

import numpy as np
import pytest

from app.bus.connection import sync_client
from app.bus.keys import Keys
from app.bus.publisher import publish_many
from app.bus.registry import create_dashboard
from app.control import encode
from app.control.protocol import parse
from app.control.state import EMPTY, step
from fleet_testing.bokeh import BokehClient, Refused, allow_viewer, mint_token
from fleet_testing.helpers import until as wait_for


@pytest.fixture
def bus(fleet_settings):
    client = sync_client(fleet_settings)
    keys = Keys(fleet_settings.key_prefix)
    create_dashboard(client, keys, "demo")
    create_dashboard(client, keys, "other")
    allow_viewer(client, keys)  # the user of mint_token's tokens
    yield client, keys
    client.close()


def publish(bus, dashboard, *commands):
    client, keys = bus
    return publish_many(client, keys, dashboard, list(commands))


def fold(commands):
    state = EMPTY
    for fields in commands:
        state = step(state, parse(fields))[0]
    return state


async def open_clients(inst, secret, n, dashboard="demo", batch=25):
    clients = []
    for i in range(0, n, batch):
        toks = [mint_token(secret, dashboard)[1] for _ in range(min(batch, n - i))]
        clients += await asyncio.gather(*(BokehClient(inst.ws_url, t).connect(timeout=30) for t in toks))
    return clients


REPLACE = encode("replace", name="p", kind="line", data={"seq": [0], "y": [0.0]})


def stream(i):
    return encode("stream", name="p", data={"seq": [i], "y": [float(i) * 0.5]})


def test_two_instances_every_session_gets_every_command_in_order(bus, fleet_settings, start_instance):
    publish(bus, "demo", REPLACE)
    a, b = start_instance(), start_instance()

    async def main():
        clients = (await open_clients(a, fleet_settings.secret_key, 5)
                   + await open_clients(b, fleet_settings.secret_key, 5))
        seen = {id(c): [] for c in clients}

        def on_patch(client, msg, now):
            for ev in msg.content["events"]:
                if ev["kind"] == "ColumnsStreamed":
                    seen[id(client)].append(len(client.data("p")["seq"]))
        for c in clients:
            c.on_patch = on_patch
        n = 200
        for i in range(1, n + 1):
            publish(bus, "demo", stream(i))
            if i % 20 == 0:
                await asyncio.sleep(0.01)
        await wait_for(lambda: all(len(c.data("p")["seq"]) == n + 1 for c in clients), what="all sessions")
        for c in clients:
            assert c.data("p")["seq"] == [float(i) for i in range(n + 1)]  # every command, in order, once
            assert seen[id(c)] == sorted(seen[id(c)])
        for c in clients:
            await c.close()

    asyncio.run(main())
    for inst in (a, b):
        m = inst.metrics()
        assert m['fleet_commands_applied_total{dashboard="demo"}'] == 200
        assert m["fleet_fanout_seconds_count"] >= 200


def test_session_opened_after_1000_commands_shows_the_folded_state(bus, fleet_settings, start_instance):
    inst = start_instance()
    commands = [REPLACE, encode("replace", name="t", kind="table", data={"k": ["a"], "v": [1]})]
    commands += [stream(i) for i in range(1, 1000)]
    commands += [encode("patch", name="p", patches={"y": [[3, -1.0], [-1, 42.0]]}),
                 encode("stream", name="t", data={"k": ["b", "c"], "v": [2, None]}, rollover=2)]
    for i in range(0, len(commands), 200):
        publish(bus, "demo", *commands[i:i + 200])
    want = fold(commands)

    async def main():
        await wait_for(lambda: inst.metrics().get('fleet_commands_applied_total{dashboard="demo"}') == len(commands),
                       what="instance caught up")
        (c,) = await open_clients(inst, fleet_settings.secret_key, 1)
        for name, fig in want.figures.items():
            got = c.data(name)
            assert set(got) == set(fig.data)
            for col, arr in fig.data.items():
                np.testing.assert_array_equal(np.asarray(got[col], dtype=arr.dtype), arr)
        assert len(c.data("p")["seq"]) == 1000
        await c.close()

    asyncio.run(main())


def test_hundred_sessions_on_one_instance_converge(bus, fleet_settings, start_instance):
    publish(bus, "demo", REPLACE)
    inst = start_instance()

    async def main():
        clients = await open_clients(inst, fleet_settings.secret_key, 100)
        assert inst.metrics()['fleet_sessions{dashboard="demo"}'] == 100
        for i in range(1, 101):
            publish(bus, "demo", stream(i))
            await asyncio.sleep(0.005)
        want = [float(i) for i in range(101)]
        await wait_for(lambda: all(c.data("p")["seq"] == want for c in clients), timeout=30, what="convergence")
        m = inst.metrics()  # one serialisation per command served (nearly) every session
        assert m["fleet_messages_shared_total"] >= 50 * m["fleet_messages_serialised_total"] > 0
        await asyncio.gather(*(c.close() for c in clients))

    asyncio.run(main())
    hb = [json.loads(v) for v in bus[0].mget(bus[0].keys("fleet:instance:*")) if v]
    assert any(h["port"] == inst.port and h["last_ids"].get("demo") for h in hb)


def test_bad_tokens_are_refused(bus, fleet_settings, start_instance):
    publish(bus, "demo", REPLACE)
    inst = start_instance()
    secret = fleet_settings.secret_key
    bad = {
        "unsigned": mint_token(secret, "demo", signed=False)[1],
        "wrong key": mint_token(secret, "demo", key="not-the-secret")[1],
        "expired": mint_token(secret, "demo", expiration=-5)[1],
        "no dashboard": mint_token(secret, None)[1],
        "unknown dashboard": mint_token(secret, "nosuch")[1],
    }

    async def main():
        for why, token in bad.items():
            with pytest.raises((Refused, asyncio.TimeoutError, OSError)):
                await BokehClient(inst.ws_url, token).connect(timeout=5)
            q = urllib.parse.urlencode({"bokeh-token": token, "bokeh-autoload-element": "x",
                                        "bokeh-app-path": "/bokeh/dashboard",
                                        "bokeh-absolute-url": inst.url("/bokeh/dashboard")})
            status, _ = inst.get(f"/bokeh/dashboard/autoload.js?{q}")
            assert status == 403, why
        # a session id alone (no token) gets nothing either
        status, _ = inst.get("/bokeh/dashboard/autoload.js?bokeh-session-id=abc&bokeh-autoload-element=x")
        assert status == 403
        # a token for "other" shows "other", never "demo"
        c = await BokehClient(inst.ws_url, mint_token(secret, "other")[1]).connect()
        assert c.source("p") is None
        await c.close()
        ok = await BokehClient(inst.ws_url, mint_token(secret, "demo")[1]).connect()
        assert ok.source("p") is not None
        await ok.close()

    asyncio.run(main())
    assert sum(v for k, v in inst.metrics().items()
               if k.startswith("fleet_sessions_refused_total")) >= len(bad) * 2 + 1
    assert inst.metrics()['fleet_sessions_refused_total{reason="token"}'] >= 1  # a bounded reason label
    assert "session refused: token expired" in inst.log()


def test_garbage_in_the_stream_disturbs_no_session(bus, fleet_settings, start_instance):
    publish(bus, "demo", REPLACE)
    inst = start_instance()
    client, keys = bus

    async def main():
        clients = await open_clients(inst, fleet_settings.secret_key, 3)
        garbage = [
            {"op": "explode"}, {"nonsense": "1"}, {"op": "stream", "name": "p", "data": "{not json"},
            {"op": "stream", "name": "nosuch", "data": '{"seq":[1],"y":[1]}'},
            {"op": "stream", "name": "p", "data": '{"seq":[1]}'},
            {"op": "stream", "name": "p", "data": '{"seq":["text"],"y":[1]}'},
            {"op": "patch", "name": "p", "patches": '{"y":[[99,1]]}'},
            {"op": "stream", "name": "p", "arrow": b"\x00\xff garbage"},
            {"op": "figure", "name": "x", "model": '{"doc":{"roots":[{"type":"object","name":"CustomJS"}]}}'},
        ]
        for i, g in enumerate(garbage):
            client.xadd(keys.commands("demo"), g)  # straight XADD, like redis-cli
            publish(bus, "demo", stream(i + 1))
        n = len(garbage)
        await wait_for(lambda: all(len(c.data("p")["seq"]) == n + 1 for c in clients), what="good commands")
        for c in clients:
            assert c.data("p")["seq"] == [float(i) for i in range(n + 1)]
            assert not c.closed.is_set()
        await asyncio.gather(*(c.close() for c in clients))

    asyncio.run(main())
    m = inst.metrics()
    assert m['fleet_commands_rejected_total{dashboard="demo"}'] == 9
    assert m["fleet_delivery_errors_total"] == 0
    assert inst.log().count("rejected: dashboard=demo") == 9


def test_healthz_and_metrics(bus, fleet_settings, start_instance):
    inst = start_instance()
    assert inst.healthz() == (200, "ok\n")
    assert inst.get("/bokeh/healthz")[0] == 200
    status, text = inst.get("/metrics")
    assert status == 200
    for name in ("fleet_sessions", "fleet_commands_applied_total", "fleet_commands_rejected_total",
                 "fleet_reader_lag_seconds", "fleet_fanout_seconds_bucket", "process_resident_memory_bytes",
                 "fleet_sessions_refused_total", "fleet_build_info"):
        assert f"# TYPE {name.removesuffix('_bucket')}" in text


def test_healthz_503_while_redis_is_down(bus, redis_server, start_instance):
    inst = start_instance()
    redis_server.kill()
    deadline = time.monotonic() + 20
    while inst.healthz()[0] != 503:
        assert time.monotonic() < deadline, "healthz never reported the lost Redis"
        time.sleep(0.1)
    assert "redis" in inst.healthz()[1].lower() or "caught up" in inst.healthz()[1]
    redis_server.start()
    deadline = time.monotonic() + 20
    while inst.healthz()[0] != 200:
        assert time.monotonic() < deadline, "healthz never recovered"
        time.sleep(0.1)


@pytest.mark.slow  # ~0.2 s of server CPU per session open+close on 2 cores: minutes for 500
def test_session_churn_memory(bus, fleet_settings, start_instance):
    publish(bus, "demo", REPLACE, *[stream(i) for i in range(1, 100)])
    inst = start_instance(unused_session_lifetime_ms=300, check_unused_sessions_ms=200)

    async def main():
        warm = await open_clients(inst, fleet_settings.secret_key, 20)
        await asyncio.gather(*(c.close() for c in warm))
        await wait_for(lambda: inst.metrics()['fleet_sessions{dashboard="demo"}'] == 0, what="warm-up discarded")
        before = inst.rss_bytes()
        for _ in range(10):
            clients = await open_clients(inst, fleet_settings.secret_key, 50)
            await asyncio.gather(*(c.close() for c in clients))
        peak = inst.rss_bytes()
        await wait_for(lambda: inst.metrics()['fleet_sessions{dashboard="demo"}'] == 0, timeout=180,
                       what="sessions discarded")
        await asyncio.sleep(0.5)
        return before, peak, inst.rss_bytes()

    before, peak, after = asyncio.run(main())
    m = inst.metrics()
    assert m["fleet_sessions_opened_total"] == 520 and m["fleet_sessions_closed_total"] == 520
    print(f"\nchurn 500 sessions: RSS before {before / 2**20:.1f} MB, peak {peak / 2**20:.1f} MB, "
          f"after {after / 2**20:.1f} MB, growth {(after - before) / 2**20:.1f} MB "
          f"({(after - before) / 500 / 1024:.1f} KB per session)")
    assert after - before < 100 * 2**20  # generous: a leak of a whole document per session would exceed it


def test_stream_right_after_replace_in_one_batch_is_applied_once(bus, fleet_settings, start_instance):
    """A ``replace`` (or ``clear``, or a resync) and a ``stream`` of the same figure that a
    session applies in one locked round: the new models' serialisation must not pick up
    the streamed rows as well (found by bench/chaos.py: sessions that lagged behind
    showed a row twice)."""
    publish(bus, "demo", REPLACE)
    inst = start_instance()

    async def main():
        clients = await open_clients(inst, fleet_settings.secret_key, 3)
        # One XADD batch: the reader notifies all of them before any session drains.
        batch = [encode("replace", name="p", kind="line", data={"seq": [10], "y": [1.0]}),
                 stream(11), stream(12),
                 encode("clear", name="p"), stream(13),
                 encode("patch", name="p", patches={"y": [[0, 7.0]]}), stream(14)]
        publish(bus, "demo", *batch)
        want = fold([REPLACE, *batch]).figures["p"].data
        await wait_for(lambda: all(c.data("p").get("seq") == [13.0, 14.0] for c in clients) or
                       any(len(c.data("p").get("seq", [])) > 2 for c in clients), what="the batch")
        await asyncio.sleep(0.3)
        for c in clients:
            got = c.data("p")
            assert got["seq"] == list(want["seq"]) and got["y"] == list(want["y"]), got
        for c in clients:
            await c.close()

    asyncio.run(main())


def test_what_a_viewer_sends_back_is_acknowledged_and_never_reaches_another_viewer(bus, fleet_settings,
                                                                                   start_instance):
    """A legend toggle, a range change and a table selection made in one page travel to
    the server as PATCH-DOC: each gets OK, none is applied to the shared document, so
    neither a viewer open at the time nor one opened afterwards sees it."""
    publish(bus, "demo", encode("replace", name="p", kind="line", data={"seq": [0, 1], "a": [0.0, 1.0],
                                                                       "b": [1.0, 0.0]}),
            encode("replace", name="t", kind="table", data={"k": ["x", "y"]}))
    inst = start_instance()

    async def main():
        from bokeh.models import ColumnDataSource, GlyphRenderer, Plot

        one, two = await open_clients(inst, fleet_settings.secret_key, 2)

        def renderers(c):
            return sorted((m for m in c.doc.models if isinstance(m, GlyphRenderer)), key=lambda m: m.id)

        def plot(c):
            return next(m for m in c.doc.models if isinstance(m, Plot))

        # what BokehJS does: the page's own change -> PATCH-DOC to the server
        def send_patch(c, changes):
            events = []
            c.doc.on_change(events.append)
            changes()
            return c.protocol.create("PATCH-DOC", [e for e in events if hasattr(e, "to_serializable")])

        from fleet_testing.bokeh import _Conn

        for change in (lambda: setattr(renderers(one)[0], "visible", False),  # legend click
                       lambda: setattr(plot(one).x_range, "start", 0.25),  # zoom
                       lambda: setattr(next(m for m in one.doc.models if isinstance(m, ColumnDataSource)
                                            and m.name == "t").selected, "indices", [1])):  # table row
            msg = send_patch(one, change)
            await msg.send(_Conn(one.ws))
        publish(bus, "demo", encode("stream", name="p", data={"seq": [2], "a": [2.0], "b": [2.0]}))
        await wait_for(lambda: len(two.data("p").get("seq", [])) == 3 and len(one.data("p").get("seq", [])) == 3,
                       what="the next update on both")
        assert all(r.visible for r in renderers(two)) and plot(two).x_range.start != 0.25
        (three,) = await open_clients(inst, fleet_settings.secret_key, 1)
        assert all(r.visible for r in renderers(three)) and plot(three).x_range.start != 0.25
        assert not [m for m in three.doc.models if isinstance(m, ColumnDataSource) and m.selected.indices]
        assert not one.closed.is_set()  # acknowledged, not refused
        for c in (one, two, three):
            await c.close()

    asyncio.run(main())
    m = inst.metrics()
    assert m["fleet_sessions_opened_total"] == 3 and m["fleet_delivery_errors_total"] == 0
    assert "protocol error" not in inst.log()
