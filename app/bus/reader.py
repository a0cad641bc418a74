"""The per-process reader: XREAD every dashboard's stream, fold it, tell a listener.

One :class:`Reader` per process and one Redis connection for its reads (never one
per session).  It uses plain ``XREAD`` from its own last ids (a consumer group would
split entries between readers), folds each entry into the dashboard's state once,
and calls the listener on the event loop thread, in stream order.

Robustness:

* an invalid entry is recorded in ``fleet:{d}:rejected`` (XADD with the entry's own
  id, so several readers recording the same rejection write it once) and never
  blocks the entries behind it; an exception in the listener is logged, not raised;
* connection loss: retry with exponential backoff and jitter, resume from the last
  ids, so nothing is lost or applied twice;
* lost history (Redis restarted empty, stream deleted or trimmed past this
  reader's position): detected via the epoch key and ``XINFO STREAM`` after every
  read, and answered with a resync from the snapshot plus ``on_reset``;
* history that went backwards (an older AOF/RDB restored, a promoted replica that
  lacked the tail, a machine crash with ``appendfsync everysec``): on every resume the
  stream must still hold the entry this reader applied last.  It is gone when the
  stream now ends before it (``last-generated-id``) or - once new commands were
  added on top of the shorter history - when it is simply missing although the
  stream was not trimmed past it.  Either way every session is resynced from the
  fold Redis now holds, and ``stats["history_rewinds"]`` counts it (/metrics, admin).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aredis

from app.bus.connection import CONNECTION_ERRORS, ResponseError, async_client
from app.bus.keys import Keys
from app.bus.store import BATCH, exclusive, id_ms, id_tuple
from app.control import snapshot as snap
from app.control.protocol import Command, Limits, Rejected, parse
from app.control.state import EMPTY, DashboardState, FoldConfig, step
from app.settings import Settings

log = logging.getLogger("fleet.reader")

# A rejected entry is recorded for operators, truncated: an over-budget or oversized
# command must not be stored again in full (rejected_maxlen entries of it, per dashboard).
MAX_REJECTED_VALUE = 1024
MAX_REJECTED_ENTRY = 4 * 1024


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


@dataclass
class Feed:
    """The folded state of one dashboard and the id of the last entry folded."""

    state: DashboardState
    last_id: str = "0-0"
    snapshot_id: str = "0-0"  # id of the snapshot this feed started from
    entries_added: int | None = None  # XINFO entries-added when last checked


class HistoryLost(Exception):
    """Entries after our position are gone; resync from the snapshot."""


class HistoryRewound(HistoryLost):
    """Redis's history ends before (or no longer holds) the entry we applied last."""


def missing_last_entry(last_id: str, info: dict | None, present: bool) -> str | None:
    """Why the stream went backwards behind a reader at ``last_id``, or None.

    ``present``: whether the stream still holds the entry ``last_id``.  An entry may be
    missing legitimately only when it was never there (``0-0``) or the stream was
    trimmed past it (its first entry is after it, or it is empty); otherwise Redis lost
    the tail we applied and possibly took new entries on top of the shorter history.
    """
    if present or last_id == "0-0" or info is None:
        return None
    info = {(k.decode() if isinstance(k, bytes) else k): v for k, v in info.items()}
    first = _first_id(info)
    if first is None or first > id_tuple(last_id):
        return None
    return (f"stream went backwards: our last applied entry {last_id} is gone "
            f"(history now ends at {_info_id(info, 'last-generated-id')} or was rewritten after it)")


class Reader:
    def __init__(self, settings: Settings, listener: Listener | None = None, *,
                 record_rejections: bool = True, mark_applied: bool = True,
                 name: str = "reader") -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
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
        self._client: aredis.Redis | None = None
        self._stopping = False

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
        if self._client is not None:
            await self._client.aclose()
            self._client = None

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

    async def run(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                if self._client is None:
                    # no silent reconnect-and-retry: every lost connection comes back
                    # through _sync, which checks the history before reading on
                    self._client = async_client(self.settings, client_name=f"fleet-{self.name}",
                                                retries=0)
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
        c = self._client
        raw = await c.get(self.keys.epoch)
        if raw is None:
            await c.set(self.keys.epoch, uuid.uuid4().hex, nx=True)
            raw = await c.get(self.keys.epoch)
        epoch = raw.decode()
        changed = self.epoch is not None and epoch != self.epoch
        if changed:  # Redis lost everything (or another data set): history went backwards
            self.stats["history_rewinds"] += 1
            log.error("%s: Redis epoch changed (%s -> %s): data was lost; resyncing every dashboard",
                      self.name, self.epoch, epoch)
        self.epoch = epoch
        return changed

    async def _sync(self, epoch_changed: bool = False) -> None:
        """Full reconcile after (re)connecting: epoch, registry, history, catch-up."""
        c = self._client
        epoch_changed = await self._check_epoch() or epoch_changed
        last_reg = await c.xrevrange(self.keys.registry_events, count=1)
        self.registry_id = last_reg[0][0].decode() if last_reg else "0-0"
        names = set((await c.hgetall(self.keys.dashboards)).keys())
        names = {n.decode() for n in names}
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
        self.last_ok = time.monotonic()
        self.last_error = ""
        self.caught_up.set()

    def _drop(self, name: str) -> None:
        if self.feeds.pop(name, None) is not None:
            log.info("%s: dashboard %s deleted", self.name, name)
            self._notify("on_reset", name, None, "0-0")

    async def _load(self, name: str) -> None:
        """(Re)build a feed from the snapshot and the stream after it."""
        raw = await self._client.get(self.keys.snapshot(name))
        s = snap.loads(raw) if raw else None
        if s is None or s.epoch != self.epoch:
            s = snap.Snapshot(EMPTY, "0-0", self.epoch or "")
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
            await self._record(name, [], feed.last_id.encode())
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
        key = self.keys.commands(name)
        while True:
            feed = self.feeds.get(name)
            if feed is None:
                return
            entries = await self._client.xrange(key, min=exclusive(feed.last_id), count=BATCH)
            if not entries:
                return
            await self._apply_batch(name, entries, notify)

    async def _check_history(self, name: str) -> None:
        """Raise HistoryLost if entries after our position were deleted or rewound."""
        key = self.keys.commands(name)
        try:
            info = await self._client.xinfo_stream(key)
        except ResponseError:  # no such key
            info = None
        self._judge(name, info)
        last_id = self.feeds[name].last_id
        if info is not None and last_id != "0-0":
            present = bool(await self._client.xrange(key, min=last_id, max=last_id, count=1))
            if why := missing_last_entry(last_id, info, present):
                raise HistoryRewound(why)

    def _judge(self, name: str, info: dict | None) -> None:
        """Compare ``XINFO STREAM`` (None: no such stream) with our position."""
        feed = self.feeds[name]
        if info is None:
            if feed.last_id != "0-0" and feed.last_id != feed.snapshot_id:
                raise HistoryLost(f"stream gone while at {feed.last_id}")
            return
        info = {(k.decode() if isinstance(k, bytes) else k): v for k, v in info.items()}
        added = info.get("entries-added")
        if added is not None:
            if feed.entries_added is not None and int(added) < feed.entries_added:
                # deleted and recreated, or an older copy of it (a rewind): history went back
                raise HistoryRewound(f"stream was deleted and recreated or rewound (entries added: "
                                     f"{int(added)}, we saw {feed.entries_added})")
            feed.entries_added = int(added)
        mine = id_tuple(feed.last_id)
        last_gen = _info_id(info, "last-generated-id")
        if last_gen is not None and last_gen < mine:
            raise HistoryRewound(f"stream rewound: last generated id {last_gen} is behind our {feed.last_id}")
        deleted = _info_id(info, "max-deleted-entry-id")  # XDEL
        if deleted is not None and deleted > mine:
            raise HistoryLost(f"entries after {feed.last_id} were deleted (max deleted {deleted})")
        first = _first_id(info)  # XTRIM does not move max-deleted-entry-id
        if first is not None and first > mine and int(info.get("entries-added", 0)) > int(info.get("length", 0)):
            raise HistoryLost(f"stream trimmed past our position {feed.last_id} (first entry now {first})")

    # --- the steady state -------------------------------------------------------------------
    async def _read_once(self) -> None:
        c = self._client
        streams = {self.keys.commands(n): f.last_id for n, f in self.feeds.items()}
        streams[self.keys.registry_events] = self.registry_id
        # RESP2 reply [(stream key, [(id, fields), ...]), ...]; redis-py types it as any reply
        reply: Any = await c.xread(streams, count=BATCH, block=self.settings.block_ms)
        self.last_ok = time.monotonic()
        batches: dict[str, list[Any]] = {}
        registry_entries: list[Any] = []
        for key, entries in reply or []:
            key = key.decode()
            if key == self.keys.registry_events:
                registry_entries = entries
            elif (name := self.keys.dashboard_from_commands(key)) in self.feeds:
                batches[name] = entries
        # One round trip checks the epoch and the history of what we are about to apply
        # (or, when idle, of every stream: a deleted stream does not wake XREAD).
        names = list(batches) if reply else list(self.feeds)
        pipe = c.pipeline(transaction=False)
        pipe.get(self.keys.epoch)
        for name in names:
            pipe.xinfo_stream(self.keys.commands(name))
        epoch, *infos = await pipe.execute(raise_on_error=False)
        if epoch is None or epoch.decode() != self.epoch:
            await self._check_epoch()
            self.stats["resyncs"] += 1
            await self._sync(epoch_changed=True)
            return
        if registry_entries:
            await self._registry(registry_entries)
        if not reply:
            self.lag_ms = 0.0
        for name, info in zip(names, infos, strict=True):
            if name not in self.feeds:
                continue
            if isinstance(info, Exception) and not isinstance(info, ResponseError):
                raise info
            try:
                self._judge(name, None if isinstance(info, Exception) else info)
            except HistoryLost as exc:
                await self._resync(name, str(exc), isinstance(exc, HistoryRewound))
                continue
            if name in batches:
                entries = batches[name]
                await self._apply_batch(name, entries, True)
                self.lag_ms = max(0.0, time.time() * 1000 - id_ms(entries[-1][0]))

    async def _registry(self, entries: list) -> None:
        for eid, fields in entries:
            self.registry_id = eid.decode()
            event = fields.get(b"event", b"").decode()
            name = fields.get(b"dashboard", b"").decode()
            if event == "created" and name and name not in self.feeds:
                if await self._client.hexists(self.keys.dashboards, name):
                    await self._load(name)
            elif event == "deleted" and name:
                if not await self._client.hexists(self.keys.dashboards, name):
                    self._drop(name)

    async def _apply_batch(self, name: str, entries: list, notify: bool) -> None:
        feed = self.feeds[name]
        rejections = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
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
        if (rejections and self.record_rejections) or (self.mark_applied and entries):
            await self._record(name, rejections if self.record_rejections else [],
                               entries[-1][0] if self.mark_applied else None)

    async def _record(self, name: str, rejections: list, last_id: bytes | None) -> None:
        """Record rejections, then the last folded id in ``fleet:{d}:applied`` (in that
        order, on one connection: a controller that sees its id applied also sees its
        rejection, if any - see bokeh_fleet's ``wait_applied``)."""
        pipe = self._client.pipeline(transaction=False)
        for entry_id, fields, reason in rejections:
            copy: dict[Any, Any] = {}
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
            copy[b"_reason"] = reason.encode()
            pipe.xadd(self.keys.rejected(name), copy, id=entry_id,
                      maxlen=self.settings.rejected_maxlen, approximate=True)
        if last_id is not None:
            pipe.set(self.keys.applied(name), last_id)
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, Exception) and "equal or smaller" not in str(result):
                log.warning("%s: could not record a rejection of %s: %s", self.name, name, result)

    def _notify(self, method: str, *args: Any) -> None:
        try:
            getattr(self.listener, method)(*args)
        except Exception:
            self.stats["listener_errors"] += 1
            log.exception("%s: listener %s failed for %s", self.name, method, args[0])


def _first_id(info: dict) -> tuple[int, int] | None:
    first = info.get("first-entry")
    if not first:
        return None
    eid = first[0]
    return id_tuple(eid.decode() if isinstance(eid, bytes) else str(eid))


def _info_id(info: dict, key: str) -> tuple[int, int] | None:
    raw = info.get(key)
    if raw is None:
        return None
    raw = raw.decode() if isinstance(raw, bytes) else str(raw)
    if raw in ("0-0", ""):
        return None if key == "max-deleted-entry-id" else (0, 0)
    return id_tuple(raw)
