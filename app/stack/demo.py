"""The demo controller: dashboards ``demo`` and ``demo-ops``, kept live.

Run by supervisord in demo mode (``FLEET_DEMO=true``, the default of ``deploy/run``)
as ``fleetctl demo-controller``.  It is an ordinary controller built on
:class:`app.client.Controller`, and shows in the first minute what a controller can
do with the protocol's figure kinds and layout:

* ``demo`` - a grid of six figures: a line with a rolling window (``stream`` with
  ``rollover``), an area, bars whose values change in place (``patch``), a scatter,
  a step line and a live table, arranged two by three with one ``layout`` command.
* ``demo-ops`` - a second dashboard (per-host load bars and a host table) for the
  access demo: ``deploy/run`` grants ``demo`` to the user ``demo`` and ``demo-ops``
  only to the ``controller`` role, so the viewer ``demo`` cannot open it.

Each tick publishes one atomic batch per dashboard.  If Redis is away it waits and
starts over (the figures are defined again), so supervisord never has to restart it.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
import time
from typing import Any

from app.settings import Settings

log = logging.getLogger(__name__)

DASHBOARD = "demo"
OPS_DASHBOARD = "demo-ops"
TITLE = "Demo: what a controller can show"
OPS_TITLE = "Demo operations (restricted)"
ROLLOVER = 600  # rows of the rolling line/area/step (5 minutes at the default interval)
SCATTER_ROLLOVER = 300
TABLE_ROWS = 10  # as many as the table shows without scrolling
REGIONS = ["north", "south", "east", "west", "central"]
HOSTS = ["web-1", "web-2", "db-1", "cache-1"]
ITEMS = ["widget", "gadget", "gizmo", "doohickey", "sprocket"]
GRID = [["signal", "load"], ["requests", "latency"], ["queue", "orders"]]


def _ms(t: float) -> float:
    return round(t * 1000.0, 1)


def _signal(t: float) -> float:
    return round(math.sin(t / 5.0) * 10 + random.gauss(0, 0.8), 3)


def _load(t: float) -> float:
    return round(max(0.0, 50 + 30 * math.sin(t / 23.0) + random.gauss(0, 4)), 2)


def _queue(t: float) -> int:
    return max(0, int(20 + 15 * math.sin(t / 11.0) + random.gauss(0, 3)))


def _order(t: float) -> dict[str, list]:
    qty = random.randint(1, 9)
    return {"time": [_ms(t)], "item": [random.choice(ITEMS)], "qty": [qty],
            "total": [round(qty * random.uniform(2.0, 30.0), 2)]}


def define(ctl: Any, interval: float, dashboard: str = DASHBOARD, ops_dashboard: str = OPS_DASHBOARD) -> None:
    """(Re)define both demo dashboards: figures with some history, then the layout."""
    now = time.time()
    ts = [now - (60 - i) * interval for i in range(60)]
    ctl.create(dashboard, TITLE)
    ctl.send_many(dashboard, [
        ("set", dict(title=TITLE)),  # the page's heading is the dashboard's own title
        ("replace", dict(name="signal", kind="line", x="t", y=["value"], x_axis_type="datetime",
                         title="Line, rolling window (stream + rollover)", x_label="time", y_label="value",
                         rollover=ROLLOVER, data={"t": [_ms(t) for t in ts], "value": [_signal(t) for t in ts]})),
        ("replace", dict(name="load", kind="area", x="t", y=["cpu"], x_axis_type="datetime",
                         title="Area: CPU load %", x_label="time", y_label="%", rollover=ROLLOVER,
                         data={"t": [_ms(t) for t in ts], "cpu": [_load(t) for t in ts]})),
        ("replace", dict(name="requests", kind="bar", x="region", y=["requests"], x_axis_type="categorical",
                         title="Bars updated in place (patch)", x_label="region", y_label="requests/s",
                         data={"region": REGIONS, "requests": [random.randint(20, 100) for _ in REGIONS]})),
        ("replace", dict(name="latency", kind="scatter", x="size", y=["latency"],
                         title="Scatter: latency against response size", x_label="size (kB)",
                         y_label="latency (ms)", rollover=SCATTER_ROLLOVER, tooltips=[["size", "size"],
                                                                                       ["latency", "latency"]],
                         data={"size": [], "latency": []})),
        ("replace", dict(name="queue", kind="step", x="t", y=["depth"], x_axis_type="datetime",
                         title="Step: queue depth", x_label="time", y_label="jobs", rollover=ROLLOVER,
                         data={"t": [_ms(t) for t in ts], "depth": [_queue(t) for t in ts]})),
        ("replace", dict(name="orders", kind="table", x="time", x_axis_type="datetime",
                         title=f"Live table: the last {TABLE_ROWS} orders", rollover=TABLE_ROWS,
                         data={"time": [], "item": [], "qty": [], "total": []})),
        ("layout", dict(rows=GRID)),
    ])
    ctl.create(ops_dashboard, OPS_TITLE)
    ctl.send_many(ops_dashboard, [
        ("set", dict(title=OPS_TITLE)),
        ("replace", dict(name="hosts_load", kind="bar", x="host", y=["cpu", "memory"], x_axis_type="categorical",
                         title="Per-host load %", x_label="host", y_label="%",
                         data={"host": HOSTS, "cpu": [_load(now + i) for i in range(len(HOSTS))],
                               "memory": [round(random.uniform(30, 80), 1) for _ in HOSTS]})),
        ("replace", dict(name="hosts", kind="table",
                         title="Hosts", data={"host": HOSTS, "status": ["up"] * len(HOSTS),
                                              "sessions": [0] * len(HOSTS)})),
        ("layout", dict(rows=[["hosts_load", "hosts"]])),
    ])


def tick(ctl: Any, n: int, dashboard: str = DASHBOARD, ops_dashboard: str = OPS_DASHBOARD) -> None:
    """One round of updates (``n`` counts rounds: some figures change every other one)."""
    t = time.time()
    size = random.uniform(1, 500)
    batch: list[tuple[str, dict]] = [
        ("stream", dict(name="signal", data={"t": [_ms(t)], "value": [_signal(t)]}, rollover=ROLLOVER)),
        ("stream", dict(name="load", data={"t": [_ms(t)], "cpu": [_load(t)]}, rollover=ROLLOVER)),
        ("stream", dict(name="queue", data={"t": [_ms(t)], "depth": [_queue(t)]}, rollover=ROLLOVER)),
        ("stream", dict(name="latency", data={"size": [round(size, 1)],
                                              "latency": [round(5 + size * 0.2 + random.expovariate(0.1), 1)]},
                        rollover=SCATTER_ROLLOVER)),
    ]
    if n % 2 == 0:
        i = random.randrange(len(REGIONS))
        batch.append(("patch", dict(name="requests", patches={"requests": [[i, random.randint(20, 100)]]})))
        batch.append(("stream", dict(name="orders", data=_order(t), rollover=TABLE_ROWS)))
    ctl.send_many(dashboard, batch)
    if n % 4 == 0:
        i = random.randrange(len(HOSTS))
        ctl.send_many(ops_dashboard, [
            ("patch", dict(name="hosts_load", patches={"cpu": [[i, _load(t + i)]]})),
            ("patch", dict(name="hosts", patches={"sessions": [[i, random.randint(0, 40)]],
                                                  "status": [[i, random.choice(["up", "up", "up", "slow"])]]})),
        ])


def run(settings: Settings, *, interval: float = 0.5, stop: threading.Event | None = None,
        dashboard: str = DASHBOARD, ops_dashboard: str = OPS_DASHBOARD) -> None:
    """Publish until ``stop`` is set (or forever); survives Redis restarts."""
    from app.bus.connection import CONNECTION_ERRORS
    from app.client import Controller

    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            with Controller(settings=settings, stamp=True) as ctl:
                define(ctl, interval, dashboard, ops_dashboard)
                log.info("demo: dashboards %r and %r defined; updating every %.2fs", dashboard, ops_dashboard,
                         interval)
                n = 0
                while not stop.wait(interval):
                    n += 1
                    tick(ctl, n, dashboard, ops_dashboard)
        except CONNECTION_ERRORS as exc:
            log.warning("demo: Redis unavailable (%s); retrying in 1s", exc)
            stop.wait(1.0)


def main(settings: Settings, interval: float = 0.5) -> int:  # pragma: no cover - supervised
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(settings, interval=interval, stop=stop)
    return 0
