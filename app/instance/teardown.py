"""Session teardown without a full garbage collection per session.

Bokeh 3.10's ``Document.destroy`` ends with ``gc.collect()``: a full collection for
every closed session, which blocks the event loop (and so every other session's
updates) for tens of milliseconds once an instance holds a hundred sessions.
Here that call collects the young generations, and a full collection at most every
``min_interval`` seconds; objects loaded at start-up are frozen out of collections
(``gc.freeze``) so the full ones stay short.  Memory still comes back: the session
churn test measures it.
"""

from __future__ import annotations

import gc
import time

from app.instance import bokeh_compat


class ThrottledGC:
    """Stands in for the ``gc`` module inside ``bokeh.document.document``."""

    def __init__(self, min_interval: float = 10.0) -> None:
        self.min_interval = min_interval
        self.last_full = 0.0
        self.full = 0
        self.young = 0

    def collect(self, generation: int = 2) -> int:
        now = time.monotonic()
        if generation < 2 or now - self.last_full < self.min_interval:
            self.young += 1
            return gc.collect(min(generation, 1))
        self.last_full = now
        self.full += 1
        return gc.collect()

    def __getattr__(self, name: str):
        return getattr(gc, name)


policy = ThrottledGC()


def install() -> None:
    bokeh_compat.replace_document_gc(policy)
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
