"""Small helpers the tests and the benches share."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

# One ``replace`` of a line figure ``p``: the smallest valid command, as a stream entry.
LINE = {"op": "replace", "name": "p", "kind": "line", "data": '{"t":[0],"y":[0]}'}


async def until(pred: Callable[[], object], timeout: float = 30.0, what: str = "condition",
                interval: float = 0.02) -> float:
    """Poll ``pred`` on the running loop until it is true; the seconds that took.

    Raises AssertionError naming ``what`` after ``timeout`` seconds.
    """
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - t0


def point(i: int) -> dict:
    """One ``stream`` entry of figure ``p`` (t=i, y=2i), as a controller would XADD it."""
    return {"op": "stream", "name": "p", "data": json.dumps({"t": [i], "y": [i * 2]})}


class Recorder:
    """A reader listener that records what the reader told it."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, str]] = []
        self.resets: list[tuple[str, object]] = []
        self.rejected: list[tuple[str, str]] = []

    def on_reset(self, dashboard, state, last_id):
        self.resets.append((dashboard, state))

    def on_command(self, dashboard, entry_id, command, state):
        self.commands.append((dashboard, entry_id))

    def on_rejected(self, dashboard, entry_id, fields, reason):
        self.rejected.append((entry_id, reason))
