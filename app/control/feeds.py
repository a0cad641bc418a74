"""The seam between a Bokeh instance and its command feed, as types only.

:class:`app.bus.reader.Reader` is the implementation; :class:`app.instance.server.Instance`
holds one through :class:`FeedReader` (and takes a factory of them), so neither package
needs the other's classes to agree on what is read: the folded state of every
dashboard, the reader's counters and lag, its health.  Pure (typing only).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from app.control.state import DashboardState


class FeedView(Protocol):
    """One dashboard's folded state and the id of the last entry folded into it."""

    @property
    def state(self) -> DashboardState: ...

    @property
    def last_id(self) -> str: ...


class FeedReader(Protocol):
    """What an instance reads: started on its loop, stopped with it."""

    @property
    def feeds(self) -> Mapping[str, FeedView]: ...

    @property
    def stats(self) -> Mapping[str, int]: ...

    @property
    def lag_ms(self) -> float: ...

    def health(self) -> tuple[bool, str]: ...

    def start(self) -> asyncio.Task[Any]: ...

    async def stop(self) -> None: ...
