"""Delivery: one shared document per dashboard, every update to every viewer, in order.

Viewers are websocket connections, not Bokeh sessions with documents of their own.
For each dashboard that has (or had) a viewer on this instance, a :class:`Board` holds
one server-side Bokeh document (:class:`~app.instance.documents.DashboardDoc`), built
once from the reader's folded state.  :class:`Fanout` is the reader's listener
(``on_reset`` / ``on_command`` / ``on_rejected``, called synchronously on the event
loop thread): each command is applied to the board's document once, its change events
are serialised once into one PATCH-DOC message, and the same frame bytes are written
to every live connection in one synchronous pass (:meth:`Viewer.send`), without a
task, lock or awaited flush per connection.

* **Order, exactly once.**  A connection becomes live when it pulls the document:
  it gets the cached serialisation of version V (PULL-DOC-REPLY) followed by every
  PATCH-DOC made since V (the board's replay log), in one write, and joins the live
  set in the same loop callback; every later update reaches it by the pass above.
  So each connection receives every command once, in stream order, or is closed.
* **Slow viewers never slow the others.**  Writes never wait for a socket to drain:
  what the kernel does not take stays in that connection's buffer, and a connection
  whose unsent bytes pass ``viewer_buffer_bytes`` is closed; its page reconnects and
  pulls the current state.
* **Cheap opens.**  The PULL-DOC serialisation is cached per board and refreshed in
  a worker thread at most every ``pull_cache_seconds`` (while it runs, the board's
  updates are held and applied right after, so the snapshot and the replay log meet
  exactly); an open costs no document build and no serialisation on the loop.
* **Per-viewer view state.**  Nothing a browser sends is applied here (see
  :mod:`app.instance.server`): ranges, legend toggles and selections stay in it.

Producing (the reader) and delivering (this module) are separate: tests drive a
:class:`Fanout` directly with in-memory viewers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bokeh.document import Document
from bokeh.document.events import DocumentPatchedEvent
from bokeh.protocol import Protocol

from app.control.protocol import Command
from app.control.state import DashboardState
from app.instance import bokeh_compat, wire
from app.instance.documents import DashboardDoc

log = logging.getLogger("fleet.instance")

# Fan-out time histogram buckets (seconds).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A replay log longer than this (updates or bytes) drops the cached snapshot: the next
# pull waits for a fresh one instead of receiving a long history.
MAX_REPLAY = 2000
MAX_REPLAY_BYTES = 16 * 1024 * 1024
# A dashboard nobody has watched on this instance for this long loses its document
# (the next viewer builds it again).
IDLE_BOARD_SECONDS = 300.0
# A stale snapshot is refreshed right after the board's next update, or after this
# many seconds if none comes.
REFRESH_WAIT = 0.25


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


def _closed(code: int, reason: str) -> None:
    """A closed viewer's ``close``."""


class Viewer:
    """One websocket connection showing one dashboard.

    ``sink`` is what the bytes go to: a tornado ``IOStream`` in the server (written
    with :func:`app.instance.bokeh_compat.write_now`), or any object with ``write``,
    ``unsent`` and ``closed`` in tests.  ``close`` ends the connection (the page
    reconnects); ``user``/``roles``/``gen`` are the token's, for the access re-check
    (``gen``: the account generation it was minted at; a password change renews it).
    """

    __slots__ = ("sink", "dashboard", "user", "roles", "gen", "sid", "limit", "live", "closed", "close",
                 "__weakref__")

    def __init__(self, sink: Any, dashboard: str, user: str = "", roles: tuple[str, ...] | None = None,
                 limit: int = 4 * 1024 * 1024, close: Callable[[int, str], None] | None = None,
                 gen: str | None = None, sid: str | None = None) -> None:
        self.sink = sink
        self.sid = sid  # the Bokeh session id its token was minted for (app/instance/series.py)
        self.dashboard = dashboard
        self.user = user
        self.roles = roles
        self.gen = gen
        self.limit = limit  # unsent bytes past which the connection is cut
        self.live = False  # pulled the document: receives every update
        self.closed = False
        self.close = close or (lambda code, reason: None)

    def send(self, data: bytes, force: bool = False) -> bool:
        """Queue ``data`` without waiting; False if the connection is gone or too far behind."""
        if self.closed:
            return False
        sink = self.sink
        try:
            if not force and bokeh_compat.unsent_bytes(sink) + len(data) > self.limit:
                return False
            bokeh_compat.write_now(sink, data)
        except Exception:  # closed under us (StreamClosedError, OSError)
            return False
        return True


class Board:
    """One dashboard's shared document on this instance and its live viewers."""

    def __init__(self, fanout: Fanout, dashboard: str, state: DashboardState | None, generation: int) -> None:
        self.fanout = fanout
        self.dashboard = dashboard
        self.doc = Document()
        self.dd = DashboardDoc(self.doc, dashboard, generation)
        self.dd.install(state)
        self.protocol = Protocol()
        self.events: list[Any] = []
        self.doc.on_change(self._collect)
        self.viewers: dict[Viewer, None] = {}  # live viewers, in the order they pulled
        self.snapshot: bytes | None = None  # PULL-DOC-REPLY frames after the header frame
        self.snapshot_at = 0.0
        self.snapshot_buffers = 0  # binary buffers in it (its header must say so)
        self.replay: list[bytes] = []  # PATCH-DOC frames made since the snapshot
        self.replay_bytes = 0
        self._tail: bytes | None = None  # b"".join(replay), until the next update
        self.refreshing = False
        self.held: list[tuple] = []  # updates waiting for the snapshot being serialised
        self.waiting: list[tuple[Viewer, str]] = []  # pulls waiting for a first snapshot
        self.broken = False
        self.idle_since: float | None = None
        self.refresh_wanted = False

    def _collect(self, event: Any) -> None:
        if isinstance(event, DocumentPatchedEvent):
            self.events.append(event)

    # --- updates ------------------------------------------------------------------------
    def update(self, fn: Callable[..., Any], *args: Any, t0: float | None = None, ts: float | None = None) -> None:
        """Run ``fn(*args)`` on the document and send what it changed to every viewer."""
        if self.refreshing:
            self.held.append((fn, args, t0, ts))
            return
        self._run(fn, args, t0, ts)

    def _run(self, fn: Callable[..., Any], args: tuple, t0: float | None, ts: float | None) -> None:
        fan = self.fanout
        try:
            fn(*args)
            events, self.events = self.events, []
            if not events:
                return
            message = self.protocol.create("PATCH-DOC", events)
            data = wire.frames(message)
        except Exception:
            self.events = []
            fan.stats["delivery_errors"] += 1
            log.exception("dashboard %s: update failed; its viewers are closed and resync", self.dashboard)
            fan.drop_board(self)
            return
        wire.stats["serialised"] += 1
        if self.snapshot is not None:
            self.replay.append(data)
            self.replay_bytes += len(data)
            self._tail = None
            if len(self.replay) > MAX_REPLAY or self.replay_bytes > MAX_REPLAY_BYTES:
                self.invalidate()
        sent = self.broadcast(data)
        if self.refresh_wanted:
            self.refresh_now()
        if sent:
            wire.stats["shared"] += sent - 1
            fan.stats["session_updates"] += sent
            if t0 is not None:
                fan.fanout_seconds.observe(time.perf_counter() - t0)
            if ts is not None:
                fan.age_seconds.observe(max(0.0, time.time() - ts / 1000))

    def broadcast(self, data: bytes) -> int:
        """Write ``data`` to every live viewer in one pass; cut those too far behind."""
        cut = None
        for viewer in tuple(self.viewers):
            if not viewer.send(data):
                if cut is None:
                    cut = []
                cut.append(viewer)
        if cut:
            for viewer in cut:
                self.fanout.cut(viewer, "too far behind" if not viewer.closed else "closed")
        return len(self.viewers)

    def invalidate(self) -> None:
        self.snapshot = None
        self.replay = []
        self.replay_bytes = 0
        self._tail = None

    # --- pulls --------------------------------------------------------------------------
    def stale(self, now: float) -> bool:
        return self.snapshot is None or now - self.snapshot_at >= self.fanout.pull_cache_seconds

    def pull(self, viewer: Viewer, reqid: str) -> None:
        """Send ``viewer`` the document and make it live (now, or once a snapshot exists)."""
        if self.snapshot is None:
            self.waiting.append((viewer, reqid))
            if not self.refreshing:
                self.fanout.refresh(self)
            return
        self.serve(viewer, reqid)
        if not self.refreshing and not self.refresh_wanted and self.stale(time.monotonic()):
            # Refresh right after the next update (the gap before the one after is when
            # holding updates delays none), or after REFRESH_WAIT if none comes.
            self.refresh_wanted = True
            self.fanout.later(REFRESH_WAIT, self.refresh_now)

    def refresh_now(self) -> None:
        if self.refresh_wanted and not self.refreshing and not self.broken:
            self.refresh_wanted = False
            self.fanout.refresh(self)

    def serve(self, viewer: Viewer, reqid: str) -> None:
        if viewer.closed or self.broken:
            return
        assert self.snapshot is not None
        if self._tail is None:
            self._tail = b"".join(self.replay)
        # The reply, the updates since the cached copy, and OK to the same request: the
        # client is current once it has read that far (BokehJS ignores the OK).
        data = (wire.reply_header("PULL-DOC-REPLY", reqid, self.snapshot_buffers) + self.snapshot + self._tail
                + wire.simple("OK", reqid))
        viewer.limit = self.fanout.viewer_buffer_bytes + len(data)  # the reply itself may be large
        if not viewer.send(data, force=True):
            self.fanout.cut(viewer, "closed")
            return
        viewer.live = True
        self.viewers[viewer] = None
        self.fanout.stats["pulls_served"] += 1

    def serialise(self) -> tuple[bytes, int]:
        """The PULL-DOC-REPLY frames after the header, and its number of buffers
        (worker thread; the board's updates are held meanwhile)."""
        # "snapshot": a placeholder request id (each pull gets its own header: wire.reply_header)
        message = self.protocol.create("PULL-DOC-REPLY", "snapshot", self.doc)  # type: ignore[call-overload]
        return wire.frames(message)[len(wire.frames_header(message)):], len(bokeh_compat.message_buffers(message))

    def snapshot_ready(self, result: tuple[bytes, int] | None) -> None:
        """Back on the loop: install the snapshot, serve waiting pulls, apply held updates."""
        self.refreshing = False
        if self.broken:
            return
        if result is None:
            self.invalidate()
        else:
            self.snapshot, self.snapshot_buffers = result
            self.snapshot_at = time.monotonic()
            self.replay = []
            self.replay_bytes = 0
            self._tail = None
            waiting, self.waiting = self.waiting, []
            for viewer, reqid in waiting:
                self.serve(viewer, reqid)
        held, self.held = self.held, []
        for fn, args, t0, ts in held:
            self._run(fn, args, t0, ts)
        if result is None:
            for viewer, _ in self.waiting:
                self.fanout.cut(viewer, "document not serialised")
            self.waiting = []


class Fanout:
    """The reader's listener and the registry of viewer connections, per dashboard."""

    def __init__(self, state_of: Callable[[str], tuple[DashboardState, str] | None], *,
                 viewer_buffer_bytes: int = 4 * 1024 * 1024, pull_cache_seconds: float = 10.0) -> None:
        self.state_of = state_of
        self.viewer_buffer_bytes = viewer_buffer_bytes
        self.pull_cache_seconds = pull_cache_seconds
        self.boards: dict[str, Board] = {}
        self.viewers: dict[str, dict[Viewer, None]] = {}  # every open connection, live or not
        self.applied: Counter[str] = Counter()  # commands fanned out, per dashboard
        self.rejected: Counter[str] = Counter()
        self.resets: Counter[str] = Counter()
        self.reset_at: dict[str, float] = {}  # wall time of each dashboard's last reset (/metrics)
        self.stats: Counter[str] = Counter()  # session_updates, sessions_opened/closed, viewers_cut, ...
        self.last_id: dict[str, str] = {}
        self.fanout_seconds = Histogram()  # command arrival -> written to every live viewer
        self.age_seconds = Histogram()  # publish (ts) -> written to every live viewer
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task] = set()

    # --- viewers ------------------------------------------------------------------------
    def open_viewer(self, sink: Any, dashboard: str, user: str = "", roles: tuple[str, ...] | None = None,
                    close: Callable[[int, str], None] | None = None, gen: str | None = None,
                    sid: str | None = None) -> Viewer:
        """Register a connection (admitted, not yet pulled)."""
        if self.state_of(dashboard) is None:
            raise LookupError(f"unknown dashboard {dashboard!r}")
        viewer = Viewer(sink, dashboard, user, roles, self.viewer_buffer_bytes, close, gen, sid)
        self.viewers.setdefault(dashboard, {})[viewer] = None
        self.stats["sessions_opened"] += 1
        log.debug("viewer open: dashboard=%s user=%s (%d on it)", dashboard, user or "-",
                  len(self.viewers[dashboard]))
        return viewer

    def pull(self, viewer: Viewer, reqid: str) -> None:
        """The viewer asked for the document (PULL-DOC-REQ)."""
        if viewer.closed:
            return
        board = self.boards.get(viewer.dashboard)
        if board is None:
            current = self.state_of(viewer.dashboard)
            if current is None:
                self.cut(viewer, "dashboard gone")
                return
            t = time.perf_counter()
            board = Board(self, viewer.dashboard, current[0], self.resets[viewer.dashboard])
            self.boards[viewer.dashboard] = board
            log.info("document built: dashboard=%s at %s (%d figures) in %.0f ms", viewer.dashboard, current[1],
                     len(current[0].figures) if current[0] else 0, (time.perf_counter() - t) * 1000)
        if viewer.live:  # BokehJS pulls once per connection; a second pull resends the document
            board.viewers.pop(viewer, None)
            viewer.live = False
        board.pull(viewer, reqid)

    def close_viewer(self, viewer: Viewer) -> None:
        """The connection ended (either side)."""
        if viewer.closed:
            return
        viewer.closed = True
        viewer.live = False
        viewer.close = _closed  # break the viewer <-> handler cycle: freed without a full gc
        viewer.sink = None
        views = self.viewers.get(viewer.dashboard, {})
        views.pop(viewer, None)
        if not views:
            self.viewers.pop(viewer.dashboard, None)
        board = self.boards.get(viewer.dashboard)
        if board is not None:
            board.viewers.pop(viewer, None)
        self.stats["sessions_closed"] += 1

    def cut(self, viewer: Viewer, why: str) -> None:
        """Close a connection that cannot follow (its page reconnects and resyncs)."""
        if not viewer.closed:
            if why == "too far behind":
                self.stats["viewers_cut"] += 1
                log.info("viewer cut: dashboard=%s user=%s: %s (more than %d bytes unsent)", viewer.dashboard,
                         viewer.user or "-", why, viewer.limit)
            try:
                viewer.close(1013, why)
            except Exception:  # pragma: no cover - already closing
                pass
        self.close_viewer(viewer)

    def revoke(self, viewer: Viewer, reason: str) -> int:
        """Access taken away: close the connection (1008).  Returns 1 if it was open."""
        if viewer.closed:
            return 0
        self.stats["sessions_revoked"] += 1
        log.warning("viewer revoked: dashboard=%s user=%s: %s", viewer.dashboard, viewer.user or "-", reason)
        try:
            viewer.close(1008, "access revoked")
        except Exception:  # pragma: no cover - already closing
            pass
        self.close_viewer(viewer)
        return 1

    def all_viewers(self) -> list[Viewer]:
        return [v for views in self.viewers.values() for v in views]

    def session_count(self) -> dict[str, int]:
        return {d: len(v) for d, v in self.viewers.items()}

    def ping_all(self, frame: bytes = b"\x89\x00") -> int:
        """A websocket ping to every connection (keeps proxies from closing idle ones)."""
        n = 0
        for viewer in self.all_viewers():
            if viewer.send(frame):
                n += 1
            elif not viewer.closed:
                self.cut(viewer, "too far behind")
        return n

    # --- boards -------------------------------------------------------------------------
    def drop_board(self, board: Board) -> None:
        """Forget a board whose document may be wrong; its viewers reconnect and resync."""
        board.broken = True
        if self.boards.get(board.dashboard) is board:
            del self.boards[board.dashboard]
        for viewer in list(board.viewers) + [v for v, _ in board.waiting]:
            self.cut(viewer, "resync")
        board.viewers.clear()
        board.waiting.clear()

    def sweep(self, now: float | None = None) -> int:
        """Forget the documents of dashboards nobody has watched here for
        IDLE_BOARD_SECONDS; returns how many (called every page-status round)."""
        now = time.monotonic() if now is None else now
        dropped = 0
        for dashboard, board in list(self.boards.items()):
            if board.viewers or board.waiting or board.refreshing or self.viewers.get(dashboard):
                board.idle_since = None
            elif board.idle_since is None:
                board.idle_since = now
            elif now - board.idle_since >= IDLE_BOARD_SECONDS:
                del self.boards[dashboard]
                board.broken = True
                dropped += 1
                log.info("document dropped: dashboard=%s (no viewer for %.0f s)", dashboard, now - board.idle_since)
        return dropped

    def later(self, seconds: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` on the loop in ``seconds`` (no loop, in unit tests: now)."""
        try:
            asyncio.get_running_loop().call_later(seconds, fn)
        except RuntimeError:
            fn()

    def refresh(self, board: Board) -> None:
        """Serialise the board's document for pulls in a worker thread, updates held."""
        board.refreshing = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (unit tests): serialise right here
            board.snapshot_ready(self._serialise(board))
            return
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fleet-pull-doc")
        task = loop.create_task(self._refresh(board, loop))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, board: Board, loop: asyncio.AbstractEventLoop) -> None:
        t = time.perf_counter()
        result = await loop.run_in_executor(self._executor, self._serialise, board)
        self.stats["snapshots"] += 1
        board.snapshot_ready(result)
        log.debug("snapshot: dashboard=%s %d bytes in %.1f ms", board.dashboard, len(result[0]) if result else 0,
                  (time.perf_counter() - t) * 1000)

    def _serialise(self, board: Board) -> tuple[bytes, int] | None:
        try:
            return board.serialise()
        except Exception:
            log.exception("dashboard %s: document not serialised", board.dashboard)
            return None

    # --- listener (called by the reader on the loop thread) ---------------------------
    def on_command(self, dashboard: str, entry_id: str, cmd: Command, state: DashboardState) -> None:
        self.applied[dashboard] += 1
        self.last_id[dashboard] = entry_id
        board = self.boards.get(dashboard)
        if board is None:
            return
        board.update(board.dd.apply, cmd, state, t0=time.perf_counter(), ts=cmd.ts)

    def on_reset(self, dashboard: str, state: DashboardState | None, last_id: str) -> None:
        self.resets[dashboard] += 1
        self.reset_at[dashboard] = time.time()
        self.last_id[dashboard] = last_id
        board = self.boards.get(dashboard)
        log.info("resync: dashboard=%s %s at %s; %d viewers", dashboard,
                 "deleted" if state is None else "reloaded", last_id, len(self.viewers.get(dashboard, ())))
        if board is not None:
            board.update(board.dd.rebuild, state, self.resets[dashboard])

    def on_rejected(self, dashboard: str, entry_id: str, fields: Any, reason: str) -> None:
        self.rejected[dashboard] += 1
        op = fields.get(b"op", fields.get("op", b"?")) if hasattr(fields, "get") else b"?"
        op = op.decode("utf-8", "replace") if isinstance(op, bytes) else str(op)
        log.warning("rejected: dashboard=%s entry=%s op=%s: %s", dashboard, entry_id, op[:40], reason)

    async def drain_all(self, timeout: float = 10.0) -> None:
        """Wait until no snapshot is being serialised (tests and orderly shutdown)."""
        deadline = time.monotonic() + timeout
        while any(b.refreshing for b in self.boards.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("snapshots did not finish")
            await asyncio.sleep(0.005)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
