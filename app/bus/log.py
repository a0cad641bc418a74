"""The command log seam: what the reader and the compactor need from a broker.

A small interface (as Centrifuge has ``broker_memory.go`` beside ``broker_redis.go``):
per-dashboard command streams (append, range, blocking read, stream info), the
dashboards registry, the epoch, snapshots, and the compactor's lock.  Two
implementations sit side by side: :class:`app.bus.redis_log.RedisLog` (production)
and :class:`app.bus.memory_log.MemoryLog` (the in-memory twin the reader's history
judgement and the compactor are unit-tested against, without a redis-server).
``tests/test_log_contract.py`` runs one contract suite against both.

Ids are stream ids as text (``"<ms>-<seq>"``); entry fields stay bytes, because a
command may carry Arrow IPC.  This module is pure: it imports no Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.control import snapshot as snap
from app.control.state import EMPTY

Entry = tuple[str, dict[bytes, bytes]]
"""One stream entry: (id, fields)."""


def id_tuple(entry_id: str) -> tuple[int, int]:
    """``"5-1"`` -> ``(5, 1)``, for comparing ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class StreamInfo:
    """What ``XINFO STREAM`` says about one stream, in the terms the reader judges.

    ``entries_added`` counts every entry ever added (trimmed and deleted ones too),
    ``max_deleted_id`` is the newest id removed by XDEL (``"0-0"``: none; XTRIM does
    not move it), ``first_id`` the oldest entry still held (None: empty).
    """

    length: int
    entries_added: int
    last_generated_id: str
    max_deleted_id: str = "0-0"
    first_id: str | None = None


@dataclass
class Write:
    """What a reader writes back for one dashboard after folding a batch: rejected
    entries (id, fields, reason) into the rejected stream, then the last folded id
    into the ``applied`` key - in that order (see app/bus/applied.py)."""

    dashboard: str
    rejections: list[tuple[str, dict[bytes, bytes], str]] = field(default_factory=list)
    applied: str | None = None

    def merge(self, newer: Write) -> Write:
        return Write(self.dashboard, self.rejections + newer.rejections, newer.applied or self.applied)


@dataclass
class Reply:
    """One blocking read: new entries per dashboard and of the registry (both empty when
    the block window passed idle), then - read right after, in the same round trip -
    the epoch and the info of the streams that were asked to be probed."""

    commands: dict[str, list[Entry]] = field(default_factory=dict)
    registry: list[Entry] = field(default_factory=list)
    epoch: str | None = None
    infos: dict[str, StreamInfo | None] = field(default_factory=dict)

    @property
    def idle(self) -> bool:
        return not self.commands and not self.registry


class CommandLog(Protocol):
    """The broker seam.  Every method is a coroutine; errors that mean "the broker is
    away for now" are ``ConnectionError``/``OSError`` or redis-py's connection errors
    (app.bus.connection.CONNECTION_ERRORS), which callers retry after a backoff."""

    # --- epoch and registry ----------------------------------------------------------
    async def epoch(self) -> str:
        """The data set's epoch, created if missing (a new epoch = history lost)."""

    async def dashboards(self) -> set[str]:
        """Names of the registered dashboards."""

    async def exists(self, dashboard: str) -> bool: ...

    async def registry_head(self) -> str:
        """Id of the newest registry event (``"0-0"``: none): where to read on from."""

    # --- streams ------------------------------------------------------------------------
    async def append(self, dashboard: str, fields: Mapping[str, bytes | str], entry_id: str = "*") -> str:
        """Add one entry to ``dashboard``'s stream (not validated: tests and twins)."""

    async def range(self, dashboard: str, after: str, count: int) -> list[Entry]:
        """Up to ``count`` entries with ids after ``after``, oldest first."""

    async def holds(self, dashboard: str, entry_id: str) -> bool:
        """Whether the stream still holds the entry ``entry_id``."""

    async def probe(self, dashboards: Iterable[str]) -> tuple[str | None, dict[str, StreamInfo | None]]:
        """(epoch or None when missing, info per stream or None when no such stream),
        in one round trip."""

    async def read(self, positions: Mapping[str, str], registry_after: str, *, count: int,
                   block_ms: int, writes: Sequence[Write] = (), probe: Iterable[str] = ()) -> Reply:
        """Send ``writes`` first, then wait up to ``block_ms`` for entries after
        ``positions`` (dashboard -> id) or after ``registry_after`` in the registry;
        right after the read, the epoch and the info of ``probe`` streams.  One round
        trip."""

    async def write(self, writes: Sequence[Write]) -> None:
        """Send ``writes`` now (see :class:`Write`)."""

    # --- snapshots and the compactor -----------------------------------------------------
    async def snapshot(self, dashboard: str) -> bytes | None:
        """The stored snapshot (``app.control.snapshot.dumps`` text) or None."""

    async def acquire(self, owner: str, ttl_ms: int) -> bool:
        """Take the compactor lock if free (it expires after ``ttl_ms``)."""

    async def renew(self, owner: str, ttl_ms: int) -> bool:
        """Extend the lock if ``owner`` still holds it."""

    async def release(self, owner: str) -> None: ...

    async def put_snapshot(self, owner: str, dashboard: str, data: str, trim_before: str | None) -> int | None:
        """Fenced: only while ``owner`` holds the lock, store the snapshot and drop the
        entries older than ``trim_before``: the number of entries dropped; None (nothing
        written) when ``owner`` does not hold the lock."""

    async def set_status(self, mapping: Mapping[str, str | int | float]) -> None:
        """Fields of the compactor's status (read by app.bus.compactor.read_status)."""

    async def close(self) -> None: ...


def current_snapshot(raw: bytes | str | None, epoch: str | None) -> snap.Snapshot:
    """The stored snapshot ``raw`` if it belongs to ``epoch`` (None: any), else an empty
    one at ``0-0``: a snapshot of an older data set says nothing about this one.

    The one place that decides it, for the reader, the compactor and ``read_state``."""
    if raw:
        s = snap.loads(raw)
        if epoch is None or s.epoch == epoch:
            return s
    return snap.Snapshot(EMPTY, "0-0", epoch or "")
