"""Small helpers the tests and the benches share."""

from __future__ import annotations

import asyncio
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
