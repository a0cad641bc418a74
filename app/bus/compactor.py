"""The compactor: snapshots of every dashboard, and trimming of the streams behind them.

Exactly one compactor writes at a time: leadership is a lock with a TTL in the
command log (on Redis ``SET NX PX``), renewed while leading.  The snapshot write and
the trim are one fenced step that first checks the lock still names this compactor
(on Redis one Lua script), so a paused former leader whose lock expired cannot write
a stale snapshot.

A snapshot holds the folded state, the id of the last entry folded and the epoch.
The stream is trimmed (``XTRIM MINID``) only up to the id of the *previous*
snapshot, so an entry is removed only once a snapshot holds it, and readers a little
behind the newest snapshot can still read on without a resync.

The compactor works through the command log seam (:mod:`app.bus.log`): Redis in
production, the in-memory twin in unit tests.  Its status hash is read back by
:func:`read_status` (admin page).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from typing import Any

import redis

from app.bus.connection import CONNECTION_ERRORS
from app.bus.history import Feed
from app.bus.keys import Keys
from app.bus.log import CommandLog, current_snapshot
from app.bus.reader import NullListener, Reader
from app.bus.redis_log import RedisLog
from app.control import snapshot as snap
from app.settings import Settings

log = logging.getLogger("fleet.compactor")


class Compactor:
    def __init__(self, settings: Settings, owner: str | None = None, *, log: CommandLog | None = None) -> None:
        """``log``: the command log (default: a Redis log of its own; its reader then
        gets a Redis connection of its own too)."""
        self.settings = settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader = False
        self.reader: Reader | None = None
        self.snapshots_written = 0
        self.trimmed_entries = 0  # stream entries removed behind snapshots (/metrics)
        self.snapshot_at: dict[str, float] = {}  # wall time of each dashboard's last snapshot written
        # per dashboard: (applied count, last id, time) at the last snapshot, and the
        # id of the snapshot before it (the trim point).
        self._written: dict[str, tuple[int, str, float]] = {}
        self._stopping = False
        self._given_log = log
        self._log: CommandLog | None = log

    async def run(self) -> None:
        if self._log is None:
            self._log = RedisLog(self.settings, client_name="fleet-compactor")
        ttl = self.settings.compactor_lock_ttl_ms
        tick = max(0.05, min(self.settings.snapshot_every_seconds / 2, ttl / 3000))
        try:
            while not self._stopping:
                try:
                    await self._tick(ttl)
                except CONNECTION_ERRORS as exc:
                    log.warning("compactor %s: Redis unavailable (%s); retrying", self.owner, exc)
                    await self._step_down()
                await asyncio.sleep(tick)
        finally:
            await self._step_down(release=True)
            if self._given_log is None:
                await self._log.close()
                self._log = None

    def stop(self) -> None:
        self._stopping = True

    async def _tick(self, ttl: int) -> None:
        lg = self._log
        assert lg is not None
        if self.leader:
            if not await lg.renew(self.owner, ttl):
                log.warning("compactor %s: lost the lock; stepping down", self.owner)
                await self._step_down()
                return
        elif await lg.acquire(self.owner, ttl):
            log.info("compactor %s: leading", self.owner)
            self.leader = True
            self._written.clear()
            self.reader = Reader(self.settings, NullListener(), mark_applied=False, name="compactor",
                                 log=self._given_log)
            self.reader.start()
        else:
            return
        reader = self.reader
        assert reader is not None
        if not reader.caught_up.is_set():
            return
        for name, feed in list(reader.feeds.items()):
            await self._maybe_snapshot(name, feed)
        await lg.set_status({"owner": self.owner, "time": time.time(),
                             "snapshots_written": self.snapshots_written})

    async def _maybe_snapshot(self, name: str, feed: Feed) -> None:
        assert self._log is not None and self.reader is not None
        if name not in self._written:
            # The snapshot already stored (if any) is the trim point of our first write.
            prev_id = current_snapshot(await self._log.snapshot(name), self.reader.epoch or "").last_id
            self._written[name] = (feed.state.applied if prev_id == feed.last_id else -1, prev_id, 0.0)
        applied, prev_id, at = self._written[name]
        if feed.last_id == prev_id:
            return
        due_count = feed.state.applied - applied >= self.settings.snapshot_every_commands
        due_time = time.monotonic() - at >= self.settings.snapshot_every_seconds
        if not (due_count or due_time):
            return
        state, last_id = feed.state, feed.last_id  # consistent: same loop as the reader
        text = snap.dumps(snap.Snapshot(state, last_id, self.reader.epoch or ""))
        trim = prev_id if prev_id != "0-0" else None
        trimmed = await self._log.put_snapshot(self.owner, name, text, trim)
        if trimmed is None:
            log.warning("compactor %s: lock lost before writing %s; stepping down", self.owner, name)
            await self._step_down()
            return
        self.snapshots_written += 1
        self.trimmed_entries += trimmed
        self.snapshot_at[name] = time.time()
        self._written[name] = (state.applied, last_id, time.monotonic())
        await self._log.set_status({f"snapshot:{name}": f"{last_id} {time.time():.3f} {len(text)}"})
        log.info("compactor: %s snapshot at %s (%d bytes), trimmed before %s", name, last_id,
                 len(text), trim or "-")

    async def _step_down(self, release: bool = False) -> None:
        if self.reader is not None:
            await self.reader.stop()
            self.reader = None
        if self.leader and release and self._log is not None:
            try:
                await self._log.release(self.owner)
            except CONNECTION_ERRORS:
                pass
        self.leader = False


def read_status(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """The compactor's status hash (what :class:`Compactor` writes), JSON values decoded
    where they parse: ``owner``, ``time``, ``snapshots_written``, ``snapshot:<name>``."""
    out: dict[str, Any] = {}
    for k, v in sorted(client.hgetall(keys.compactor_status).items()):
        text = v.decode("utf-8", "replace")
        try:
            out[k.decode("utf-8", "replace")] = json.loads(text)
        except ValueError:
            out[k.decode("utf-8", "replace")] = text
    return out
