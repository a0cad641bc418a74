"""The compactor: snapshots of every dashboard, and trimming of the streams behind them.

Exactly one compactor writes at a time: leadership is a Redis lock with a TTL
(``SET NX PX``), renewed while leading.  The snapshot write and the trim run in one
Lua script that first checks the lock still names this compactor, so a paused
former leader whose lock expired cannot write a stale snapshot (fencing).

A snapshot holds the folded state, the id of the last entry folded and the epoch.
The stream is trimmed (``XTRIM MINID``) only up to the id of the *previous*
snapshot, so an entry is removed only once a snapshot holds it, and readers a little
behind the newest snapshot can still read on without a resync.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid

import redis.asyncio as aredis

from app.bus.connection import CONNECTION_ERRORS, async_client
from app.bus.keys import Keys
from app.bus.reader import NullListener, Reader
from app.control import snapshot as snap
from app.settings import Settings

log = logging.getLogger("fleet.compactor")

# KEYS: lock, snapshot, stream.  ARGV: owner, snapshot JSON, trim MINID ('' = none).
WRITE_SNAPSHOT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then redis.call('XTRIM', KEYS[3], 'MINID', ARGV[3]) end
return 1
"""
# KEYS: lock.  ARGV: owner, ttl ms.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Compactor:
    def __init__(self, settings: Settings, owner: str | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader = False
        self.reader: Reader | None = None
        self.snapshots_written = 0
        # per dashboard: (applied count, last id, time) at the last snapshot, and the
        # id of the snapshot before it (the trim point).
        self._written: dict[str, tuple[int, str, float]] = {}
        self._stopping = False
        self._client: aredis.Redis | None = None

    async def run(self) -> None:
        self._client = async_client(self.settings, client_name="fleet-compactor")
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
            await self._client.aclose()

    def stop(self) -> None:
        self._stopping = True

    async def _tick(self, ttl: int) -> None:
        c = self._client
        if self.leader:
            if not await c.eval(RENEW, 1, self.keys.compactor_lock, self.owner, ttl):
                log.warning("compactor %s: lost the lock; stepping down", self.owner)
                await self._step_down()
                return
        elif await c.set(self.keys.compactor_lock, self.owner, nx=True, px=ttl):
            log.info("compactor %s: leading", self.owner)
            self.leader = True
            self._written.clear()
            self.reader = Reader(self.settings, NullListener(), mark_applied=False, name="compactor")
            self.reader.start()
        else:
            return
        reader = self.reader
        assert reader is not None
        if not reader.caught_up.is_set():
            return
        for name, feed in list(reader.feeds.items()):
            await self._maybe_snapshot(name, feed)
        await c.hset(self.keys.compactor_status, mapping={
            "owner": self.owner, "time": time.time(), "snapshots_written": self.snapshots_written,
        })

    async def _maybe_snapshot(self, name: str, feed) -> None:
        if name not in self._written:
            # The snapshot already stored (if any) is the trim point of our first write.
            raw = await self._client.get(self.keys.snapshot(name))
            prev = snap.loads(raw) if raw else None
            prev_id = prev.last_id if prev and prev.epoch == self.reader.epoch else "0-0"
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
        trim = prev_id if prev_id != "0-0" else ""
        ok = await self._client.eval(WRITE_SNAPSHOT, 3, self.keys.compactor_lock, self.keys.snapshot(name),
                                     self.keys.commands(name), self.owner, text, trim)
        if not ok:
            log.warning("compactor %s: lock lost before writing %s; stepping down", self.owner, name)
            await self._step_down()
            return
        self.snapshots_written += 1
        self._written[name] = (state.applied, last_id, time.monotonic())
        await self._client.hset(self.keys.compactor_status, f"snapshot:{name}",
                                f"{last_id} {time.time():.3f} {len(text)}")
        log.info("compactor: %s snapshot at %s (%d bytes), trimmed before %s", name, last_id,
                 len(text), trim or "-")

    async def _step_down(self, release: bool = False) -> None:
        if self.reader is not None:
            await self.reader.stop()
            self.reader = None
        if self.leader and release:
            try:
                await self._client.eval(RELEASE, 1, self.keys.compactor_lock, self.owner)
            except CONNECTION_ERRORS:
                pass
        self.leader = False
