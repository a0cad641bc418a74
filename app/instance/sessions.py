"""Delivery: every resolved command to every live session of its dashboard, in order.

:class:`Fanout` is the reader's listener (``on_reset`` / ``on_command`` /
``on_rejected``, called synchronously on the event loop thread).  It does the work
common to all sessions once per command (the reader has already parsed, decoded and
folded it) and appends the command to each session's own ordered queue.  One drain
task per session empties that queue under the session's document lock; when a
session has fallen behind, consecutive ``stream`` commands of one figure are merged
into a single ``source.stream`` call.

A session is built from ``state_of(dashboard)`` at the moment it is opened (on the
loop thread, so no command interleaves); every command notified afterwards goes to
its queue, so it misses none and applies none twice.  Producing (the reader) and
delivering (this module) are separate: tests drive a :class:`Fanout` directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bokeh.document import Document

from app.control import ops
from app.control.protocol import Command
from app.control.state import DashboardState
from app.instance import bokeh_compat, wire
from app.instance.documents import DashboardDoc

log = logging.getLogger("fleet.instance")

# Fan-out time histogram buckets (seconds).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1


class Delivery:
    """One command on its way to ``remaining`` sessions (for the fan-out timers)."""

    __slots__ = ("t0", "remaining", "fanout", "ts")

    def __init__(self, fanout: Fanout, remaining: int, ts: float | None = None) -> None:
        self.t0 = time.perf_counter()
        self.remaining = remaining
        self.fanout = fanout
        self.ts = ts  # publish time (ms since the epoch) when the controller set one

    def done(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.fanout.fanout_seconds.observe(time.perf_counter() - self.t0)
            if self.ts is not None:
                self.fanout.age_seconds.observe(max(0.0, time.time() - self.ts / 1000))


@dataclass
class Item:
    kind: str  # "cmd" | "reset"
    entry_id: str
    cmd: Command | None
    state: DashboardState | None
    delivery: Delivery | None = None
    generation: int = 0  # for resets: the reset count it brings the session to


@dataclass
class SessionView:
    """One live session: its document models and its queue of pending commands."""

    session_id: str
    dashboard: str
    user: str
    dd: DashboardDoc
    context: Any  # bokeh BokehSessionContext (holds the ServerSession once created)
    built_from: str
    queue: deque = field(default_factory=deque)
    draining: bool = False
    closed: bool = False
    applied_id: str = ""

    @property
    def session(self):
        return bokeh_compat.context_session(self.context)


def _new_models(item: Item) -> bool:
    """Whether applying ``item`` sends whole models or whole columns (a reset, or any op
    not registered as ``delta``, as ``stream``/``patch`` are: they send only their delta)."""
    return item.kind == "reset" or item.cmd is None or not ops.sends_delta(item.cmd)


class Fanout:
    """The reader's listener and the registry of live sessions, per dashboard."""

    def __init__(self, state_of: Callable[[str], tuple[DashboardState, str] | None]) -> None:
        self.state_of = state_of
        self.views: dict[str, dict[str, SessionView]] = {}
        self.applied: Counter[str] = Counter()  # commands fanned out, per dashboard
        self.rejected: Counter[str] = Counter()
        self.resets: Counter[str] = Counter()
        self.reset_at: dict[str, float] = {}  # wall time of each dashboard's last reset (/metrics)
        self.stats: Counter[str] = Counter()  # session_updates, coalesced, opened, closed, ...
        self.last_id: dict[str, str] = {}
        self.fanout_seconds = Histogram()
        self.age_seconds = Histogram()  # publish (ts) -> applied in every session
        self._tasks: set[asyncio.Task] = set()

    # --- sessions -----------------------------------------------------------------------
    def open_session(self, session_id: str, dashboard: str, doc: Document, context: Any = None,
                     user: str = "") -> SessionView:
        """Build a session's document from the current state and start delivering to it."""
        current = self.state_of(dashboard)
        if current is None:
            raise LookupError(f"unknown dashboard {dashboard!r}")
        state, last_id = current
        dd = DashboardDoc(doc, dashboard, self.resets[dashboard])
        dd.install(state)
        view = SessionView(session_id, dashboard, user, dd, context, built_from=last_id, applied_id=last_id)
        self.views.setdefault(dashboard, {})[session_id] = view
        self.stats["sessions_opened"] += 1
        log.info("session open: %s dashboard=%s user=%s built at %s (%d figures, %d sessions on it)",
                 session_id[:12], dashboard, user or "-", last_id, len(state.figures),
                 len(self.views[dashboard]))
        return view

    def close_session(self, session_id: str, dashboard: str) -> None:
        views = self.views.get(dashboard, {})
        view = views.pop(session_id, None)
        if not views:
            self.views.pop(dashboard, None)
        if view is None:
            return
        view.closed = True
        for item in view.queue:
            if item.delivery:
                item.delivery.done()
        view.queue.clear()
        self.stats["sessions_closed"] += 1
        log.info("session close: %s dashboard=%s user=%s (%d sessions left on it)",
                 session_id[:12], dashboard, view.user or "-", len(views))

    def revoke_session(self, view: SessionView, reason: str) -> int:
        """Access taken away: close the session's websockets (1008) and stop delivering
        to it.  Returns 1 if it was live.  The token is refused on reconnect."""
        if view.closed:
            return 0
        session = view.session
        for conn in list(getattr(session, "_subscribed_connections", ()) or ()):
            socket = getattr(conn, "_socket", None)
            try:
                socket.close(1008, "access revoked")  # type: ignore[union-attr]  # None raises: caught below
            except Exception:  # pragma: no cover - already closing
                pass
        self.stats["sessions_revoked"] += 1
        log.warning("session revoked: %s dashboard=%s user=%s: %s", view.session_id[:12], view.dashboard,
                    view.user or "-", reason)
        self.close_session(view.session_id, view.dashboard)
        return 1

    def session_count(self) -> dict[str, int]:
        return {d: len(v) for d, v in self.views.items()}

    # --- listener (called by the reader on the loop thread) ---------------------------
    def on_command(self, dashboard: str, entry_id: str, cmd: Command, state: DashboardState) -> None:
        self.applied[dashboard] += 1
        self.last_id[dashboard] = entry_id
        views = self.views.get(dashboard)
        if not views:
            return
        delivery = Delivery(self, len(views), cmd.ts)
        for view in views.values():
            view.queue.append(Item("cmd", entry_id, cmd, state, delivery))
            self._kick(view)

    def on_reset(self, dashboard: str, state: DashboardState | None, last_id: str) -> None:
        self.resets[dashboard] += 1
        self.reset_at[dashboard] = time.time()
        self.last_id[dashboard] = last_id
        views = self.views.get(dashboard, {})
        log.info("resync: dashboard=%s %s at %s; rebuilding %d sessions", dashboard,
                 "deleted" if state is None else "reloaded", last_id, len(views))
        for view in views.values():
            for item in view.queue:  # superseded by the reset
                if item.delivery:
                    item.delivery.done()
            view.queue.clear()
            view.queue.append(Item("reset", last_id, None, state, generation=self.resets[dashboard]))
            self._kick(view)

    def on_rejected(self, dashboard: str, entry_id: str, fields: Any, reason: str) -> None:
        self.rejected[dashboard] += 1
        op = fields.get(b"op", fields.get("op", b"?")) if hasattr(fields, "get") else b"?"
        op = op.decode("utf-8", "replace") if isinstance(op, bytes) else str(op)
        log.warning("rejected: dashboard=%s entry=%s op=%s: %s", dashboard, entry_id, op[:40], reason)

    # --- delivery ---------------------------------------------------------------------
    def _kick(self, view: SessionView) -> None:
        if view.draining or view.closed:
            return
        session = view.session
        if session is None:
            # The Bokeh session does not exist yet: nobody else can see or touch this
            # document, so apply right here on the loop thread.
            self._apply_items(view)
            return
        view.draining = True
        task = asyncio.get_running_loop().create_task(self._drain(view))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, view: SessionView) -> None:
        try:
            while view.queue and not view.closed:
                session = view.session
                if session is None:
                    self._apply_items(view)
                    continue
                if session.destroyed:
                    self.close_session(view.session_id, view.dashboard)
                    return
                await wire.locked_on_loop(session, self._apply_items, view)
        except Exception:
            log.exception("session %s dashboard=%s: delivery failed; rebuilding it", view.session_id[:12],
                          view.dashboard)
            self.stats["delivery_errors"] += 1
            self._recover(view)
        finally:
            view.draining = False
        if view.queue and not view.closed:
            self._kick(view)

    def _apply_items(self, view: SessionView) -> None:
        """Apply everything queued so far, in order, coalescing runs of streams."""
        items = list(view.queue)
        view.queue.clear()
        session = view.session
        i = 0
        while i < len(items):
            item = items[i]
            try:
                start = wire.pending_count(session)
                if item.kind == "reset":
                    view.dd.rebuild(item.state, item.generation)
                    j = i + 1
                elif (key := ops.run_key(item.cmd)) is not None:  # e.g. streams of one figure
                    j = i + 1
                    while j < len(items) and items[j].kind == "cmd" and ops.run_key(items[j].cmd) == key:
                        j += 1
                    view.dd.apply_run([it.cmd for it in items[i:j]], items[j - 1].state)
                    self.stats["coalesced"] += j - i - 1
                else:
                    view.dd.apply(item.cmd, item.state)
                    j = i + 1
            except Exception:
                for it in items[i:]:
                    if it.delivery:
                        it.delivery.done()
                raise
            if session is not None and item.kind == "cmd":
                wire.tag_pending(session, start, (items[i].entry_id, items[j - 1].entry_id))
            for it in items[i:j]:
                if it.delivery:
                    it.delivery.done()
            self.stats["session_updates"] += 1
            view.applied_id = items[j - 1].entry_id
            i = j
            if session is not None and i < len(items) and _new_models(item):
                # End this locked round here.  Change events are serialised only when the
                # round's writes are sent, so a model added or a source reset now would go
                # out already holding the rows a later ``stream`` appends in place, and the
                # ColumnsStreamed event would add them a second time on the client.
                view.queue.extendleft(reversed(items[i:]))
                self.stats["rounds_split"] += 1
                return

    def _recover(self, view: SessionView) -> None:
        """A command failed on this document: rebuild it from the current state."""
        current = self.state_of(view.dashboard)
        view.queue.clear()
        if current is not None and not view.closed:
            view.queue.append(Item("reset", current[1], None, current[0],
                                   generation=self.resets[view.dashboard]))

    async def drain_all(self, timeout: float = 10.0) -> None:
        """Wait until every queue is empty (tests and orderly shutdown)."""
        deadline = time.monotonic() + timeout
        while any(v.queue or v.draining for vs in self.views.values() for v in vs.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("session queues did not drain")
            await asyncio.sleep(0.005)
