"""The per-process reader: read every dashboard's stream, fold it, tell a listener.

One :class:`Reader` per process and one connection for its reads (never one per
session).  It reads with plain ``XREAD`` from its own last ids (a consumer group would
split entries between readers) through the command log seam (:mod:`app.bus.log`;
Redis in production, the in-memory twin in unit tests), folds each entry into the
dashboard's state once, and calls the listener on the event loop thread, in stream
order.

Robustness:

* an invalid entry is recorded in ``fleet:{d}:rejected`` (XADD with the entry's own
  id, so several readers recording the same rejection write it once) and never
  blocks the entries behind it; an exception in the listener is logged, not raised;
* connection loss: retry with exponential backoff and jitter, resume from the last
  ids, so nothing is lost or applied twice;
* lost history (Redis restarted empty, stream deleted or trimmed past this reader's
  position, history rewound): judged by :mod:`app.bus.history` from the epoch key and
  ``XINFO STREAM``, and answered with a resync from the snapshot plus ``on_reset``;
  ``stats["history_rewinds"]`` counts history that went backwards (/metrics, admin).

When the history is checked (the "when needed" rule).  Every batch is judged before
it is applied, from an epoch + ``XINFO`` probe that Redis runs right after the
``XREAD`` that returned the batch, in the same pipeline (Redis holds a connection's
later commands while its XREAD blocks), so the check costs no round trip of its own:

* on every (re)connect, :meth:`Reader._sync` checks everything before reading on -
  a Redis restarted from an older copy, a promoted replica or a restart without data
  always breaks the connection first; this is also where a rewound tail is found
  (:func:`app.bus.history.missing_last_entry`, one more lookup per dashboard);
* each read probes the streams that had entries in the previous read (under load,
  the ones that will have entries again); a stream with entries that was not probed
  gets a probe of its own before its batch is applied (one extra round trip, when a
  quiet dashboard wakes up).  Checking *less* often than every applied batch is not
  safe: entries of a deleted-and-recreated stream folded onto the old state leave
  nothing a later check could see;
* after an idle read, and at least every ``CHECK_ALL_SECONDS``, the read probes
  every stream: a deleted stream does not wake ``XREAD``, nor does a quiet one while
  others are busy;
* the registry stream is read in the same ``XREAD``: a dashboard deleted (and
  perhaps created again) through the registry is dropped or reloaded before any of
  its new entries is applied.

What the reader writes back (rejections, then the ``applied`` id) rides on the next
read's round trip too, ahead of the ``XREAD``; it is kept and sent again if that
round trip fails (both writes are idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from typing import Any, Protocol

from app.bus.connection import CONNECTION_ERRORS
from app.bus.history import Feed, HistoryLost, HistoryRewound, judge, missing_last_entry
from app.bus.log import CommandLog, Entry, Write, current_snapshot, id_tuple
from app.bus.redis_log import RedisLog
from app.control.protocol import Command, Limits, Rejected, parse
from app.control.state import DashboardState, FoldConfig, step
from app.settings import Settings

log = logging.getLogger("fleet.reader")

BATCH = 1000  # entries per stream per read
# A rejected entry is recorded for operators, truncated: an over-budget or oversized
# command must not be stored again in full (rejected_maxlen entries of it, per dashboard).
MAX_REJECTED_VALUE = 1024
MAX_REJECTED_ENTRY = 4 * 1024
CHECK_ALL_SECONDS = 1.0  # under load, probe every stream at least this often


class Listener(Protocol):
    def on_reset(self, dashboard: str, state: DashboardState | None, last_id: str) -> None: ...

    def on_command(self, dashboard: str, entry_id: str, command: Command, state: DashboardState) -> None: ...

    def on_rejected(self, dashboard: str, entry_id: str, fields: dict[bytes, bytes], reason: str) -> None: ...


class NullListener:
    def on_reset(self, dashboard, state, last_id):  # noqa: D102
        pass

    def on_command(self, dashboard, entry_id, command, state):  # noqa: D102
        pass

    def on_rejected(self, dashboard, entry_id, fields, reason):  # noqa: D102
        pass


def truncated(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The copy of a rejected entry that is recorded (values and total size capped)."""
    copy: dict[bytes, bytes] = {}
    total = 0
    for k, v in fields.items():
        if total + len(k) > MAX_REJECTED_ENTRY:
            copy[b"_truncated"] = b"1"
            break
        if len(v) > MAX_REJECTED_VALUE:
            v = v[:MAX_REJECTED_VALUE]
            copy[b"_truncated"] = b"1"
        copy[k] = v
        total += len(k) + len(v)
    return copy


class Reader:
    def __init__(self, settings: Settings, listener: Listener | None = None, *,
                 record_rejections: bool = True, mark_applied: bool = True,
                 name: str = "reader", log: CommandLog | None = None) -> None:
        """``log``: the command log to read (default: a Redis log of its own, made
        when the reader starts and closed when it stops)."""
        self.settings = settings
        self.listener: Listener = listener or NullListener()
        self.limits = Limits.from_settings(settings)
        self.fold_cfg = FoldConfig.from_settings(settings)
        self.record_rejections = record_rejections
        # fleet:{d}:applied means "an instance folded it": the compactor's reader does not set it
        self.mark_applied = mark_applied
        self.name = name
        self.feeds: dict[str, Feed] = {}
        self.epoch: str | None = None
        self.registry_id = "0-0"
        self.stats: Counter[str] = Counter()
        self.lag_ms = 0.0
        self.last_ok = 0.0
        self.last_error = ""
        self._caught_up: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._log: CommandLog | None = log
        self._own_log = log is None
        self._stopping = False
        self._pending: dict[str, Write] = {}  # writes that ride on the next read
        self._hot: set[str] = set()  # dashboards with entries in the last read
        self._probe_all_at = 0.0  # monotonic time of the last probe of every stream

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> asyncio.Task:
        """Run in the current event loop; returns the task."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name=self.name)
        return self._task

    async def stop(self) -> None:
        self._stopping = True
        self.caught_up.clear()
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._pending and self._log is not None:  # what the last batches owe the log
            writes, self._pending = list(self._pending.values()), {}
            try:
                await asyncio.wait_for(self._log.write(writes), 2.0)
            except (TimeoutError, *CONNECTION_ERRORS) as exc:
                log.warning("%s: stopping without recording the last batch: %s", self.name, exc)
        if self._own_log and self._log is not None:
            await self._log.close()
            self._log = None

    @property
    def caught_up(self) -> asyncio.Event:
        if self._caught_up is None:
            self._caught_up = asyncio.Event()
        return self._caught_up

    async def wait_caught_up(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self.caught_up.wait(), timeout)

    def health(self) -> tuple[bool, str]:
        """(ok, reason): ok once caught up with Redis and reading recently."""
        if not self.caught_up.is_set():
            return False, f"not caught up with Redis yet{': ' + self.last_error if self.last_error else ''}"
        silent = time.monotonic() - self.last_ok
        if silent > self.settings.block_ms / 1000 + 10:
            return False, f"no answer from Redis for {silent:.0f}s: {self.last_error or 'unknown'}"
        return True, "ok"

    @property
    def log(self) -> CommandLog:
        if self._log is None:
            # no silent reconnect-and-retry: every lost connection comes back through
            # _sync, which checks the history before reading on
            self._log = RedisLog(self.settings, client_name=f"fleet-{self.name}", retries=0)
        return self._log

    async def run(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                await self._sync()
                attempt = 0
                while not self._stopping:
                    await self._read_once()
            except asyncio.CancelledError:
                raise
            except CONNECTION_ERRORS as exc:
                self._lost(f"Redis connection: {exc}")
            except Exception as exc:  # a bug must not end the reader
                log.exception("%s: unexpected error; restarting the read loop", self.name)
                self._lost(f"internal error: {exc!r}")
            attempt += 1
            delay = min(5.0, 0.05 * 2 ** min(attempt, 10)) * (0.5 + random.random())
            self.stats["reconnects"] += 1
            await asyncio.sleep(delay)

    def _lost(self, reason: str) -> None:
        if self.last_error != reason:
            log.warning("%s: %s; retrying", self.name, reason)
        self.last_error = reason
        self.caught_up.clear()

    # --- sync: epoch, registry, catch-up -------------------------------------------------
    async def _check_epoch(self) -> bool:
        """Returns True if the epoch changed (history lost) since we last looked."""
        epoch = await self.log.epoch()
        changed = self.epoch is not None and epoch != self.epoch
        if changed:  # Redis lost everything (or another data set): history went backwards
            self.stats["history_rewinds"] += 1
            log.error("%s: Redis epoch changed (%s -> %s): data was lost; resyncing every dashboard",
                      self.name, self.epoch, epoch)
        self.epoch = epoch
        return changed

    async def _sync(self, epoch_changed: bool = False) -> None:
        """Full reconcile after (re)connecting: epoch, registry, history, catch-up."""
        epoch_changed = await self._check_epoch() or epoch_changed
        if epoch_changed:
            self._pending.clear()  # they were meant for a data set that is gone
        self.registry_id = await self.log.registry_head()
        names = await self.log.dashboards()
        for gone in sorted(set(self.feeds) - names):
            self._drop(gone)
        for name in sorted(names):
            if name not in self.feeds or epoch_changed:
                await self._load(name)
            else:
                try:
                    await self._check_history(name)
                except HistoryLost as exc:
                    await self._resync(name, str(exc), isinstance(exc, HistoryRewound))
                else:
                    await self._catch_up(name)
        self._hot.clear()
        self._probe_all_at = time.monotonic()
        self.last_ok = time.monotonic()
        self.last_error = ""
        self.caught_up.set()

    def _drop(self, name: str) -> None:
        self._pending.pop(name, None)
        if self.feeds.pop(name, None) is not None:
            log.info("%s: dashboard %s deleted", self.name, name)
            self._notify("on_reset", name, None, "0-0")

    async def _load(self, name: str) -> None:
        """(Re)build a feed from the snapshot and the stream after it."""
        s = current_snapshot(await self.log.snapshot(name), self.epoch)
        self.feeds[name] = Feed(s.state, s.last_id, s.last_id)
        try:
            await self._check_history(name)
        except HistoryLost as exc:
            self.stats["history_gaps"] += 1
            log.error("%s: dashboard %s: %s and no snapshot covers the gap; continuing from "
                      "what remains (run the compactor to avoid this)", self.name, name, exc)
        await self._catch_up(name, notify=False)
        feed = self.feeds[name]
        if self.mark_applied and feed.last_id != "0-0":  # ids folded into the snapshot count too
            self._record(Write(name, [], feed.last_id))
        log.info("%s: dashboard %s loaded (snapshot %s, now at %s, %d figures)", self.name, name,
                 s.last_id, feed.last_id, len(feed.state.figures))
        self._notify("on_reset", name, feed.state, feed.last_id)

    async def _resync(self, name: str, why: str, rewound: bool = False) -> None:
        self.stats["resyncs"] += 1
        if rewound:
            self.stats["history_rewinds"] += 1
        log.warning("%s: dashboard %s: %s; resyncing from snapshot", self.name, name, why)
        await self._load(name)

    async def _catch_up(self, name: str, notify: bool = True) -> None:
        while True:
            feed = self.feeds.get(name)
            if feed is None:
                return
            entries = await self.log.range(name, feed.last_id, BATCH)
            if not entries:
                return
            self._apply_batch(name, entries, notify)

    async def _check_history(self, name: str) -> None:
        """Raise HistoryLost if entries after our position were deleted or rewound."""
        _, infos = await self.log.probe([name])
        info = infos[name]
        feed = self.feeds[name]
        judge(feed, info)
        if info is not None and feed.last_id != "0-0":
            present = await self.log.holds(name, feed.last_id)
            if why := missing_last_entry(feed.last_id, info, present):
                raise HistoryRewound(why)

    # --- the steady state -------------------------------------------------------------------
    async def _read_once(self) -> None:
        now = time.monotonic()
        probe_all = now - self._probe_all_at >= CHECK_ALL_SECONDS or not self._hot
        probed = list(self.feeds) if probe_all else [n for n in self._hot if n in self.feeds]
        writes, self._pending = self._pending, {}
        try:
            reply = await self.log.read({n: f.last_id for n, f in self.feeds.items()}, self.registry_id,
                                        count=BATCH, block_ms=self.settings.block_ms,
                                        writes=list(writes.values()), probe=probed)
        except BaseException:
            self._pending = writes  # nothing was queued meanwhile; send them again
            raise
        self.last_ok = time.monotonic()
        if probe_all:
            self._probe_all_at = now
        infos = dict(reply.infos)
        unprobed = [n for n in reply.commands if n not in infos]
        epoch = reply.epoch
        if unprobed:  # a quiet dashboard woke up: check it before applying
            epoch2, more = await self.log.probe(unprobed)
            infos.update(more)
            epoch = epoch if epoch != self.epoch else epoch2
        if epoch != self.epoch:
            await self._check_epoch()
            self.stats["resyncs"] += 1
            await self._sync(epoch_changed=True)
            return
        reloaded = await self._registry(reply.registry) if reply.registry else set()
        if reply.idle:
            self.lag_ms = 0.0
        self._hot = set(reply.commands)
        for name, info in infos.items():
            if name not in self.feeds or name in reloaded:
                continue
            try:
                judge(self.feeds[name], info)
            except HistoryLost as exc:
                await self._resync(name, str(exc), isinstance(exc, HistoryRewound))
                reloaded.add(name)
        for name, entries in reply.commands.items():
            if name in self.feeds and name not in reloaded:
                self._apply_batch(name, entries, True)
                self.lag_ms = max(0.0, time.time() * 1000 - id_tuple(entries[-1][0])[0])

    async def _registry(self, entries: list[Entry]) -> set[str]:
        """Follow registry events; returns the dashboards (re)loaded or dropped."""
        touched: set[str] = set()
        for eid, fields in entries:
            self.registry_id = eid
            event = fields.get(b"event", b"").decode()
            name = fields.get(b"dashboard", b"").decode()
            if not name:
                continue
            if event == "created" and name not in self.feeds:
                if await self.log.exists(name):
                    await self._load(name)
                    touched.add(name)
            elif event == "deleted" and name in self.feeds:
                # deleted, and perhaps created again since: nothing we hold is valid
                touched.add(name)
                if await self.log.exists(name):
                    await self._resync(name, "deleted and created again")
                else:
                    self._drop(name)
        return touched

    def _apply_batch(self, name: str, entries: list[Entry], notify: bool) -> None:
        feed = self.feeds[name]
        rejections = []
        for entry_id, fields in entries:
            try:
                cmd = parse(fields, self.limits)
                state, resolved = step(feed.state, cmd, self.fold_cfg)
            except Rejected as exc:
                rejections.append((entry_id, fields, str(exc)))
                feed.last_id = entry_id
                continue
            except Exception as exc:  # a validator bug must not block the stream
                log.exception("%s: %s %s: internal error while validating", self.name, name, entry_id)
                rejections.append((entry_id, fields, f"internal error: {exc!r}"))
                feed.last_id = entry_id
                continue
            feed.state, feed.last_id = state, entry_id
            if resolved is None:
                self.stats["duplicates"] += 1
                continue
            self.stats["applied"] += 1
            if notify:
                self._notify("on_command", name, entry_id, resolved, state)
        for entry_id, fields, reason in rejections:
            self.stats["rejected"] += 1
            log.warning("%s: %s %s rejected: %s", self.name, name, entry_id, reason)
            self._notify("on_rejected", name, entry_id, fields, reason)
        recorded = [(i, truncated(f), r) for i, f, r in rejections] if self.record_rejections else []
        if recorded or (self.mark_applied and entries):
            self._record(Write(name, recorded, entries[-1][0] if self.mark_applied else None))

    def _record(self, write: Write) -> None:
        """Queue rejections, then the last folded id in ``fleet:{d}:applied`` (in that
        order, on one connection: a controller that sees its id applied also sees its
        rejection, if any - see bokeh_fleet's ``wait_applied``).  They go out ahead of
        the next read, in its round trip."""
        old = self._pending.get(write.dashboard)
        self._pending[write.dashboard] = old.merge(write) if old else write

    def _notify(self, method: str, *args: Any) -> None:
        try:
            getattr(self.listener, method)(*args)
        except Exception:
            self.stats["listener_errors"] += 1
            log.exception("%s: listener %s failed for %s", self.name, method, args[0])
