"""The command log in memory: the twin of :class:`app.bus.redis_log.RedisLog`.

It keeps what Redis keeps (stream entries, ``entries-added``, ``last-generated-id``,
``max-deleted-entry-id``, the registry, the epoch, snapshots, the compactor lock) with
Redis's rules for them, so the reader's history judgement and the compactor can be
unit-tested without a redis-server; ``tests/test_log_contract.py`` holds both
implementations to the same behaviour.  One event loop only (not thread-safe).

Besides the :class:`app.bus.log.CommandLog` methods it has the faults tests need:
:meth:`delete_stream`, :meth:`xdel`, :meth:`trim`, :meth:`flush` (a Redis restarted
empty), :meth:`image` / :meth:`restart` (a Redis restarted from an older copy: every
connection breaks once), and :meth:`create_dashboard` / :meth:`delete_dashboard` (as
app/bus/registry.py does them).
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from app.bus.log import Entry, Reply, StreamInfo, Write, id_tuple


class Disconnected(ConnectionError):
    """The twin's "connection" broke (after :meth:`MemoryLog.restart`)."""


@dataclass
class _Stream:
    entries: list[Entry] = field(default_factory=list)
    added: int = 0
    last_gen: tuple[int, int] = (0, 0)
    max_deleted: tuple[int, int] = (0, 0)

    def info(self) -> StreamInfo:
        return StreamInfo(length=len(self.entries), entries_added=self.added,
                          last_generated_id=_id(self.last_gen), max_deleted_id=_id(self.max_deleted),
                          first_id=self.entries[0][0] if self.entries else None)

    def add(self, fields: Mapping, entry_id: str = "*") -> str:
        if entry_id == "*":
            ms = max(int(time.time() * 1000), self.last_gen[0])
            new = (ms, self.last_gen[1] + 1 if ms == self.last_gen[0] else 0)
        else:
            new = id_tuple(entry_id)
            if new <= self.last_gen:
                raise ValueError("The ID specified in XADD is equal or smaller than the target "
                                 "stream top item")
        self.last_gen = new
        self.added += 1
        eid = _id(new)
        self.entries.append((eid, {_b(k): _b(v) for k, v in fields.items()}))
        return eid

    def after(self, after: str, count: int) -> list[Entry]:
        mine = id_tuple(after)
        return [e for e in self.entries if id_tuple(e[0]) > mine][:count]


def _id(t: tuple[int, int]) -> str:
    return f"{t[0]}-{t[1]}"


def _b(v: bytes | str | int | float) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


@dataclass
class _Data:
    """Everything a Redis data set holds for the fleet."""

    streams: dict[str, _Stream] = field(default_factory=dict)
    rejected: dict[str, _Stream] = field(default_factory=dict)
    applied: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, bytes] = field(default_factory=dict)
    dashboards: set[str] = field(default_factory=set)
    registry: _Stream = field(default_factory=_Stream)
    epoch: str | None = None
    lock: tuple[str, float] | None = None  # owner, monotonic expiry
    status: dict[str, str] = field(default_factory=dict)


class MemoryLog:
    """:class:`app.bus.log.CommandLog` in memory (see the module docstring)."""

    def __init__(self, rejected_maxlen: int = 10_000) -> None:
        self.data = _Data()
        self.rejected_maxlen = rejected_maxlen
        self._changed = asyncio.Event()
        self._broken = False
        self.round_trips = 0  # calls that would be one round trip each on Redis

    # --- the twin's own controls (faults) ------------------------------------------------
    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _call(self) -> _Data:
        self.round_trips += 1
        if self._broken:
            self._broken = False
            raise Disconnected("connection lost (the log restarted)")
        return self.data

    def image(self) -> _Data:
        """A copy of the data set, for :meth:`restart` (an older AOF/RDB)."""
        return copy.deepcopy(self.data)

    def restart(self, image: _Data | None = None) -> None:
        """Restart with ``image`` (None: the same data): the next call fails once, as a
        connection to a restarted Redis does, and a blocked read is woken to fail."""
        if image is not None:
            self.data = copy.deepcopy(image)
        self.data.lock = None
        self._broken = True
        self._wake()

    def flush(self) -> None:
        """Lose everything (a Redis restarted without data): a new epoch follows."""
        self.restart(_Data())

    def delete_stream(self, dashboard: str) -> None:
        """``DEL`` of the command stream, as an operator might (does not wake readers)."""
        self.data.streams.pop(dashboard, None)

    def xdel(self, dashboard: str, entry_id: str) -> None:
        s = self.data.streams[dashboard]
        before = len(s.entries)
        s.entries = [e for e in s.entries if e[0] != entry_id]
        if len(s.entries) < before:
            s.max_deleted = max(s.max_deleted, id_tuple(entry_id))

    def trim(self, dashboard: str, minid: str) -> int:
        """``XTRIM MINID``: drop entries older than ``minid`` (max-deleted stays); how many."""
        s = self.data.streams.get(dashboard)
        if s is None:
            return 0
        before = len(s.entries)
        s.entries = [e for e in s.entries if id_tuple(e[0]) >= id_tuple(minid)]
        return before - len(s.entries)

    def create_dashboard(self, name: str) -> bool:
        if name in self.data.dashboards:
            return False
        self.data.dashboards.add(name)
        self.data.registry.add({"event": "created", "dashboard": name})
        self._wake()
        return True

    def delete_dashboard(self, name: str) -> bool:
        if name not in self.data.dashboards:
            return False
        self.data.dashboards.discard(name)
        for store in (self.data.streams, self.data.rejected, self.data.applied, self.data.snapshots):
            store.pop(name, None)
        self.data.registry.add({"event": "deleted", "dashboard": name})
        self._wake()
        return True

    def applied(self, dashboard: str) -> str | None:
        return self.data.applied.get(dashboard)

    def rejected(self, dashboard: str) -> list[Entry]:
        s = self.data.rejected.get(dashboard)
        return list(s.entries) if s else []

    # --- epoch and registry ------------------------------------------------------------
    async def epoch(self) -> str:
        d = self._call()
        if d.epoch is None:
            d.epoch = uuid.uuid4().hex
        return d.epoch

    async def dashboards(self) -> set[str]:
        return set(self._call().dashboards)

    async def exists(self, dashboard: str) -> bool:
        return dashboard in self._call().dashboards

    async def registry_head(self) -> str:
        entries = self._call().registry.entries
        return entries[-1][0] if entries else "0-0"

    # --- streams ---------------------------------------------------------------------------
    async def append(self, dashboard: str, fields: Mapping[str, bytes | str], entry_id: str = "*") -> str:
        eid = self._call().streams.setdefault(dashboard, _Stream()).add(fields, entry_id)
        self._wake()
        return eid

    async def range(self, dashboard: str, after: str, count: int) -> list[Entry]:
        s = self._call().streams.get(dashboard)
        return s.after(after, count) if s else []

    async def holds(self, dashboard: str, entry_id: str) -> bool:
        s = self._call().streams.get(dashboard)
        return s is not None and any(e[0] == entry_id for e in s.entries)

    def _probe(self, names: list[str]) -> tuple[str | None, dict[str, StreamInfo | None]]:
        d = self.data
        return d.epoch, {n: (d.streams[n].info() if n in d.streams else None) for n in names}

    async def probe(self, dashboards: Iterable[str]) -> tuple[str | None, dict[str, StreamInfo | None]]:
        self._call()
        return self._probe(list(dashboards))

    def _collect(self, positions: Mapping[str, str], registry_after: str, count: int) -> Reply:
        reply = Reply()
        for name, pos in positions.items():
            s = self.data.streams.get(name)
            if s is not None and (got := s.after(pos, count)):
                reply.commands[name] = got
        reply.registry = self.data.registry.after(registry_after, count)
        return reply

    async def read(self, positions: Mapping[str, str], registry_after: str, *, count: int,
                   block_ms: int, writes: Sequence[Write] = (), probe: Iterable[str] = ()) -> Reply:
        self._call()
        self._write(writes)
        deadline = time.monotonic() + block_ms / 1000
        while True:
            reply = self._collect(positions, registry_after, count)
            left = deadline - time.monotonic()
            if not reply.idle or left <= 0:
                break
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), left)
            except TimeoutError:
                pass
            if self._broken:
                self._broken = False
                raise Disconnected("connection lost while blocked (the log restarted)")
        reply.epoch, reply.infos = self._probe(list(probe))
        return reply

    def _write(self, writes: Sequence[Write]) -> None:
        d = self.data
        for w in writes:
            for entry_id, fields, reason in w.rejections:
                s = d.rejected.setdefault(w.dashboard, _Stream())
                try:
                    s.add({**fields, b"_reason": reason.encode()}, entry_id)
                except ValueError:  # recorded already (by another reader)
                    continue
                del s.entries[:-self.rejected_maxlen]
            if w.applied is not None:
                d.applied[w.dashboard] = w.applied

    async def write(self, writes: Sequence[Write]) -> None:
        self._call()
        self._write(writes)

    # --- snapshots and the compactor -------------------------------------------------------
    async def snapshot(self, dashboard: str) -> bytes | None:
        return self._call().snapshots.get(dashboard)

    def _holder(self) -> str | None:
        lock = self.data.lock
        if lock is None or lock[1] <= time.monotonic():
            self.data.lock = None
            return None
        return lock[0]

    async def acquire(self, owner: str, ttl_ms: int) -> bool:
        self._call()
        if self._holder() is not None:
            return False
        self.data.lock = (owner, time.monotonic() + ttl_ms / 1000)
        return True

    async def renew(self, owner: str, ttl_ms: int) -> bool:
        self._call()
        if self._holder() != owner:
            return False
        self.data.lock = (owner, time.monotonic() + ttl_ms / 1000)
        return True

    async def release(self, owner: str) -> None:
        self._call()
        if self._holder() == owner:
            self.data.lock = None

    def steal_lock(self, owner: str, ttl_ms: int) -> None:
        """Someone else holds the lock now (as if ours expired while we were paused)."""
        self.data.lock = (owner, time.monotonic() + ttl_ms / 1000)

    async def put_snapshot(self, owner: str, dashboard: str, data: str, trim_before: str | None) -> int | None:
        self._call()
        if self._holder() != owner:
            return None
        self.data.snapshots[dashboard] = data.encode()
        return self.trim(dashboard, trim_before) if trim_before else 0

    async def set_status(self, mapping: Mapping[str, str | int | float]) -> None:
        self._call().status.update({k: str(v) for k, v in mapping.items()})

    async def close(self) -> None:
        pass
