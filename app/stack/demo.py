"""The demo controller: creates dashboard ``demo`` and keeps feeding it.

Run by supervisord in demo mode (``FLEET_DEMO=true``, the default of ``deploy/run``)
as ``fleetctl demo-controller``.  It is an ordinary controller built on
:class:`app.client.Controller`: one ``replace`` that (re)defines the figures, then a
continuous ``stream`` of new points with a rollover window.  If Redis is away it waits
and starts over, so supervisord never has to restart it.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
import time

from app.settings import Settings

log = logging.getLogger(__name__)

DASHBOARD = "demo"
ROLLOVER = 600


def _point(t: float) -> dict[str, list[float]]:
    value = math.sin(t / 5.0) * 10 + random.gauss(0, 0.8)
    return {"t": [round(t * 1000.0, 1)], "value": [round(value, 3)]}


def run(settings: Settings, *, interval: float = 0.5, stop: threading.Event | None = None,
        dashboard: str = DASHBOARD) -> None:
    """Publish until ``stop`` is set (or forever); survives Redis restarts."""
    from app.bus.connection import CONNECTION_ERRORS
    from app.client import Controller

    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            with Controller(settings=settings, stamp=True) as ctl:
                ctl.create(dashboard, "Demo: a live signal")
                now = time.time()
                history = [_point(now - (60 - i) * interval) for i in range(60)]
                ctl.replace(
                    dashboard, "signal", kind="line", x="t", y=["value"], x_axis_type="datetime",
                    title="Live signal (demo controller)", x_label="time", y_label="value",
                    rollover=ROLLOVER,
                    data={"t": [p["t"][0] for p in history], "value": [p["value"][0] for p in history]},
                )
                log.info("demo: dashboard %r defined; streaming a point every %.2fs", dashboard, interval)
                while not stop.wait(interval):
                    ctl.stream(dashboard, "signal", _point(time.time()), rollover=ROLLOVER)
        except CONNECTION_ERRORS as exc:
            log.warning("demo: Redis unavailable (%s); retrying in 1s", exc)
            stop.wait(1.0)


def main(settings: Settings, interval: float = 0.5) -> int:  # pragma: no cover - supervised
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(settings, interval=interval, stop=stop)
    return 0
