"""The supervisord event listener protocol and the demo controller, against real Redis."""

from __future__ import annotations

import io
import threading
import time

from app.bus import process_events
from app.bus.keys import Keys
from app.settings import Settings
from app.stack import demo
from app.stack.events import Listener, event_fields, parse_tokens


def _event(name: str, payload: str) -> bytes:
    body = payload.encode()
    header = (f"ver:3.0 server:fleet serial:1 pool:fleet_events poolserial:1 "
              f"eventname:{name} len:{len(body)}\n").encode()
    return header + body


def test_event_fields_from_supervisor_payload():
    headers = parse_tokens("ver:3.0 server:fleet eventname:PROCESS_STATE_EXITED len:71")
    f = event_fields(headers, "processname:bokeh_01 groupname:fleet from_state:RUNNING expected:0 pid:4242",
                     host="h1")
    assert f["event"] == "PROCESS_STATE_EXITED"
    assert f["process"] == "fleet:bokeh_01"
    assert f["from_state"] == "RUNNING" and f["pid"] == "4242" and f["expected"] == "0"
    assert f["host"] == "h1" and int(f["ts"]) > 0


def test_listener_speaks_the_protocol_and_records(redis_server):
    client = redis_server.client()
    keys = Keys("fleet")
    stdin = io.BytesIO(
        _event("PROCESS_STATE_STARTING", "processname:web groupname:fleet from_state:STOPPED tries:0")
        + _event("PROCESS_STATE_RUNNING", "processname:web groupname:fleet from_state:STARTING pid:7")
    )
    stdout = io.BytesIO()
    Listener(lambda batch: process_events.record_many(client, keys, batch)).run(stdin, stdout)
    assert stdout.getvalue() == b"READY\nRESULT 2\nOKREADY\nRESULT 2\nOKREADY\n"
    rows = process_events.recent(client, keys, 10)
    assert [r["event"] for r in rows] == ["PROCESS_STATE_RUNNING", "PROCESS_STATE_STARTING"]
    assert rows[0]["process"] == "fleet:web" and rows[0]["pid"] == "7"


def test_listener_keeps_events_while_redis_is_away():
    stored: list[dict] = []
    up = {"ok": False}

    def sink(batch):
        if not up["ok"]:
            raise ConnectionError("redis down")
        stored.extend(batch)

    lst = Listener(sink)
    out = io.BytesIO()
    lst.run(io.BytesIO(_event("PROCESS_STATE_EXITED", "processname:redis groupname:fleet from_state:RUNNING")), out)
    assert out.getvalue().count(b"RESULT 2\nOK") == 1 and not stored  # always acknowledged
    up["ok"] = True
    lst.run(io.BytesIO(_event("PROCESS_STATE_RUNNING", "processname:redis groupname:fleet from_state:STARTING")), out)
    assert [e["event"] for e in stored] == ["PROCESS_STATE_EXITED", "PROCESS_STATE_RUNNING"]


def test_demo_controller_creates_and_feeds_the_dashboard(redis_server):
    from app.client import Controller

    settings = Settings(redis_url=redis_server.url)
    stop = threading.Event()
    t = threading.Thread(target=demo.run, args=(settings,), kwargs={"interval": 0.05, "stop": stop})
    t.start()
    try:
        with Controller(settings=settings) as ctl:
            deadline = time.monotonic() + 10
            rows = 0
            while time.monotonic() < deadline:
                if "demo" in ctl.dashboards():
                    state = ctl.state("demo")
                    if "signal" in state.figures:
                        rows = len(state.figures["signal"].data["t"])
                        if rows > 65:
                            break
                time.sleep(0.05)
            fig = ctl.state("demo").figures["signal"]
            assert fig.kind == "line" and rows > 65  # 60 rows of history, then a stream
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()
