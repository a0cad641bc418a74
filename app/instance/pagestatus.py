"""How fresh each page's data is, told to the page over its own websocket.

An open websocket says nothing about the data behind it: the instance's reader may
have lost Redis, or the controller may have stopped publishing.  Every
``FLEET_PAGE_STATUS_SECONDS`` the instance works out, per dashboard, whether it is
caught up with Redis and how old the newest command it applied is, and sets that
(JSON text) as the ``tags`` of a hidden model in each dashboard's document
(:func:`model`); ``static/status.js`` turns it into "live · updated 3 s ago",
"quiet" (no update for ``FLEET_PAGE_QUIET_SECONDS``: the controller is silent) or
"stale" (this instance is not caught up, or has stopped talking to the page).

A dashboard's shared document (:mod:`app.instance.sessions`) gets a new value only
when what its pages show would otherwise be wrong: the status changed, newer data
arrived than the extrapolated age says, or KEEPALIVE seconds passed (the page calls a
server that said nothing for three keepalives stale).  A new value is one PATCH-DOC,
written to every viewer of the dashboard like any other update.  The text carries
no host names or error details, only what a viewer needs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

from bokeh.models.widgets.markups import Div  # bokeh.models' stubs lack the widgets

from app.instance import bokeh_compat

if TYPE_CHECKING:
    from app.instance.server import Instance

log = logging.getLogger("fleet.instance.pagestatus")

NAME = "fleet-status-data"
KEEPALIVE = 10.0  # seconds between values even when nothing changed
LAG_STALE_SECONDS = 5.0  # a reader this far behind Redis makes its pages stale
AGE_SLACK = 1.5  # seconds a page's extrapolated age may be off before it gets a new value


def model(dashboard: str) -> Div:
    """The hidden model that carries the status into a document (its ``tags[0]``).

    It has a fixed id per dashboard (the page's status.js finds it by name).
    """
    status = Div(visible=False, name=NAME, tags=[""])
    bokeh_compat.set_model_id(status, f"fleet:{dashboard}:status")  # before it joins a document
    return status


def _set(status: Div, text: str) -> None:
    status.tags = [text]


def _id_seconds(entry_id: str) -> float | None:
    try:
        ms = int(str(entry_id).split("-", 1)[0])
    except ValueError:
        return None
    return ms / 1000.0 if ms > 0 else None


class PageStatus:
    """Pushes each dashboard's freshness to the status model of its shared document."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.settings = instance.settings
        self.round = 0  # in every value, so that a page sees a keepalive as news

    def current(self, dashboard: str) -> tuple[bool, str, float | None]:
        """(caught up, reason shown when not, age in seconds of the newest applied command)."""
        ok, _detail = self.instance.health()  # details stay in the instance's log
        reason = "" if ok else "server not connected to the data feed"
        reader = self.instance.reader
        lag = (reader.lag_ms if reader is not None else 0.0) / 1000.0
        if ok and lag > LAG_STALE_SECONDS:
            ok, reason = False, f"server {lag:.0f} s behind the data feed"
        age = None
        cur = self.instance.state_of(dashboard)
        if cur is not None and (t := _id_seconds(cur[1])) is not None:
            age = max(0.0, time.time() - t)
        return ok, reason, age

    @staticmethod
    def due(sent: tuple | None, ok: bool, reason: str, age: float | None, now: float) -> bool:
        if sent is None:
            return True
        s_ok, s_reason, s_age, s_at = sent
        if (ok, reason) != (s_ok, s_reason) or now - s_at >= KEEPALIVE or (age is None) != (s_age is None):
            return True
        return age is not None and abs(s_age + (now - s_at) - age) >= AGE_SLACK

    async def push(self) -> int:
        """One round over every dashboard document with viewers; returns how many
        documents got a new value (each one PATCH-DOC to all of its viewers)."""
        now = time.monotonic()
        self.round += 1
        sent = 0
        for dashboard, board in list(self.instance.fanout.boards.items()):
            if not board.viewers:
                continue
            ok, reason, age = self.current(dashboard)
            if not self.due(board.dd.status_sent, ok, reason, age, now):
                continue
            text = json.dumps({"ok": ok, "reason": reason, "age": None if age is None else round(age, 2),
                               "quiet": self.settings.page_quiet_seconds, "keepalive": KEEPALIVE,
                               "n": self.round})
            board.dd.status_sent = (ok, reason, age, now)
            board.update(_set, board.dd.status, text)
            sent += 1
        return sent

    async def run(self) -> None:
        interval = max(0.2, float(self.settings.page_status_seconds))
        while True:
            await asyncio.sleep(interval)
            try:
                self.instance.fanout.sweep()
                await self.push()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the status end the instance's loop
                log.exception("page status round failed")
