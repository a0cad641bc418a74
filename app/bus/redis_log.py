"""The command log on Redis: streams, the registry hash + stream, the epoch key,
snapshots and the compactor's fenced lock (see :mod:`app.bus.log` for the contract).

One asyncio client (app/bus/connection.py) per log.  The reader's log is made with
``retries=0``: a lost connection must surface, so the reader re-checks its history
before reading on (a Redis restarted from an older copy, a promoted replica).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from app.bus.connection import ResponseError, async_client
from app.bus.keys import Keys
from app.bus.log import Entry, Reply, StreamInfo, Write
from app.settings import Settings

log = logging.getLogger("fleet.log")

# KEYS: lock, snapshot, stream.  ARGV: owner, snapshot JSON, trim MINID ('' = none).
WRITE_SNAPSHOT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
local trimmed = 0
if ARGV[3] ~= '' then trimmed = redis.call('XTRIM', KEYS[3], 'MINID', ARGV[3]) end
return 1 + trimmed
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


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def stream_info(raw: Mapping) -> StreamInfo:
    """``XINFO STREAM``'s reply (bytes or str keys) as a :class:`StreamInfo`."""
    info = {_text(k): v for k, v in raw.items()}
    first = info.get("first-entry")
    return StreamInfo(
        length=int(info.get("length", 0)),
        entries_added=int(info.get("entries-added", info.get("length", 0))),
        last_generated_id=_text(info.get("last-generated-id") or "0-0"),
        max_deleted_id=_text(info.get("max-deleted-entry-id") or "0-0"),
        first_id=_text(first[0]) if first else None,
    )


def _entries(raw: list) -> list[Entry]:
    return [(_text(eid), fields) for eid, fields in raw]


class RedisLog:
    """:class:`app.bus.log.CommandLog` over one asyncio Redis client."""

    def __init__(self, settings: Settings, *, client_name: str = "fleet-log", retries: int = 2,
                 client: Any = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.client = client if client is not None else async_client(
            settings, client_name=client_name, retries=retries)

    # --- epoch and registry ------------------------------------------------------------
    async def epoch(self) -> str:
        raw = await self.client.get(self.keys.epoch)
        if raw is None:
            await self.client.set(self.keys.epoch, uuid.uuid4().hex, nx=True)
            raw = await self.client.get(self.keys.epoch)
        return raw.decode()

    async def dashboards(self) -> set[str]:
        return {n.decode() for n in await self.client.hkeys(self.keys.dashboards)}

    async def exists(self, dashboard: str) -> bool:
        return bool(await self.client.hexists(self.keys.dashboards, dashboard))

    async def registry_head(self) -> str:
        last = await self.client.xrevrange(self.keys.registry_events, count=1)
        return last[0][0].decode() if last else "0-0"

    # --- streams ---------------------------------------------------------------------------
    async def append(self, dashboard: str, fields: Mapping[str, bytes | str], entry_id: str = "*") -> str:
        return (await self.client.xadd(self.keys.commands(dashboard), dict(fields), id=entry_id)).decode()

    async def range(self, dashboard: str, after: str, count: int) -> list[Entry]:
        return _entries(await self.client.xrange(self.keys.commands(dashboard), min="(" + after, count=count))

    async def holds(self, dashboard: str, entry_id: str) -> bool:
        key = self.keys.commands(dashboard)
        return bool(await self.client.xrange(key, min=entry_id, max=entry_id, count=1))

    def _queue_probe(self, pipe: Any, names: list[str]) -> None:
        pipe.get(self.keys.epoch)
        for name in names:
            pipe.xinfo_stream(self.keys.commands(name))

    @staticmethod
    def _probed(names: list[str], results: list) -> tuple[str | None, dict[str, StreamInfo | None]]:
        epoch, *infos = results
        if isinstance(epoch, Exception):
            raise epoch
        out: dict[str, StreamInfo | None] = {}
        for name, info in zip(names, infos, strict=True):
            if isinstance(info, ResponseError):  # no such key
                out[name] = None
            elif isinstance(info, Exception):
                raise info
            else:
                out[name] = stream_info(info)
        return (epoch.decode() if epoch is not None else None), out

    async def probe(self, dashboards: Iterable[str]) -> tuple[str | None, dict[str, StreamInfo | None]]:
        names = list(dashboards)
        pipe = self.client.pipeline(transaction=False)
        self._queue_probe(pipe, names)
        return self._probed(names, await pipe.execute(raise_on_error=False))

    async def read(self, positions: Mapping[str, str], registry_after: str, *, count: int,
                   block_ms: int, writes: Sequence[Write] = (), probe: Iterable[str] = ()) -> Reply:
        # One pipeline: the writes, the blocking XREAD, then GET epoch + XINFO.  Redis runs
        # a connection's commands in order and holds the rest of the pipeline while XREAD
        # blocks, so the probe describes the streams right after the read returned.
        names = list(probe)
        pipe = self.client.pipeline(transaction=False)
        n_writes = self._queue_writes(pipe, writes)
        streams = {self.keys.commands(n): p for n, p in positions.items()}
        streams[self.keys.registry_events] = registry_after
        pipe.xread(streams, count=count, block=block_ms)
        self._queue_probe(pipe, names)
        results = await pipe.execute(raise_on_error=False)
        self._check_writes(results[:n_writes])
        raw = results[n_writes]
        if isinstance(raw, Exception):
            raise raw
        reply = Reply()
        for key, entries in raw or []:
            key = key.decode()
            if key == self.keys.registry_events:
                reply.registry = _entries(entries)
            elif (name := self.keys.dashboard_from_commands(key)) is not None and name in positions:
                reply.commands[name] = _entries(entries)
        reply.epoch, reply.infos = self._probed(names, results[n_writes + 1:])
        return reply

    def _queue_writes(self, pipe: Any, writes: Sequence[Write]) -> int:
        n = 0
        for w in writes:
            for entry_id, fields, reason in w.rejections:
                pipe.xadd(self.keys.rejected(w.dashboard), {**fields, b"_reason": reason.encode()},
                          id=entry_id, maxlen=self.settings.rejected_maxlen, approximate=True)
                n += 1
            if w.applied is not None:
                pipe.set(self.keys.applied(w.dashboard), w.applied)
                n += 1
        return n

    @staticmethod
    def _check_writes(results: list) -> None:
        for result in results:
            # "equal or smaller": another reader recorded the same rejection first
            if isinstance(result, Exception) and "equal or smaller" not in str(result):
                log.warning("could not record a rejection or the applied id: %s", result)

    async def write(self, writes: Sequence[Write]) -> None:
        pipe = self.client.pipeline(transaction=False)
        if self._queue_writes(pipe, writes):
            self._check_writes(await pipe.execute(raise_on_error=False))

    # --- snapshots and the compactor -------------------------------------------------------
    async def snapshot(self, dashboard: str) -> bytes | None:
        raw = await self.client.get(self.keys.snapshot(dashboard))
        return raw if isinstance(raw, bytes) else None  # bytes: our clients never decode

    async def acquire(self, owner: str, ttl_ms: int) -> bool:
        return bool(await self.client.set(self.keys.compactor_lock, owner, nx=True, px=ttl_ms))

    async def renew(self, owner: str, ttl_ms: int) -> bool:
        return bool(await self.client.eval(RENEW, 1, self.keys.compactor_lock, owner, ttl_ms))

    async def release(self, owner: str) -> None:
        await self.client.eval(RELEASE, 1, self.keys.compactor_lock, owner)

    async def put_snapshot(self, owner: str, dashboard: str, data: str, trim_before: str | None) -> int | None:
        done = int(await self.client.eval(
            WRITE_SNAPSHOT, 3, self.keys.compactor_lock, self.keys.snapshot(dashboard),
            self.keys.commands(dashboard), owner, data, trim_before or ""))
        return done - 1 if done else None

    async def set_status(self, mapping: Mapping[str, str | int | float]) -> None:
        await self.client.hset(self.keys.compactor_status, mapping=dict(mapping))

    async def close(self) -> None:
        await self.client.aclose()
