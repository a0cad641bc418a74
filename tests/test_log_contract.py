"""One contract, two command logs: the Redis log against a real redis-server and the
in-memory twin must behave alike, so what the reader and compactor are unit-tested
against (app/bus/memory_log.py) is what production runs on (app/bus/redis_log.py).

A new broker joins by adding a ``Broker`` class here (docs/architecture.md, "How to
add a broker"): every test below then runs against it too.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from app.bus import registry
from app.bus.compactor import read_status
from app.bus.connection import CONNECTION_ERRORS
from app.bus.keys import Keys
from app.bus.log import CommandLog, Write, id_tuple
from app.bus.memory_log import MemoryLog
from app.bus.redis_log import RedisLog
from app.settings import Settings

KEYS = Keys("fleet")


class MemoryBroker:
    """The in-memory twin and its fault switches."""

    def __init__(self, request) -> None:
        self.log = MemoryLog()

    def open(self) -> CommandLog:
        return self.log

    def create(self, name: str) -> None:
        self.log.create_dashboard(name)

    def delete(self, name: str) -> None:
        self.log.delete_dashboard(name)

    def delete_stream(self, name: str) -> None:
        self.log.delete_stream(name)

    def xdel(self, name: str, entry_id: str) -> None:
        self.log.xdel(name, entry_id)

    def trim(self, name: str, minid: str) -> None:
        self.log.trim(name, minid)

    def restart_empty(self) -> None:
        self.log.flush()

    def applied(self, name: str) -> str | None:
        return self.log.applied(name)

    def rejected(self, name: str) -> list[tuple[str, dict]]:
        return self.log.rejected(name)

    def steal_lock(self, owner: str, ttl_ms: int) -> None:
        self.log.steal_lock(owner, ttl_ms)

    def status(self) -> dict:
        return dict(self.log.data.status)


class RedisBroker:
    """The Redis log on a real redis-server (fleet_testing), faults done with redis-py."""

    def __init__(self, request) -> None:
        self.server = request.getfixturevalue("redis_server")
        self.client = self.server.client()
        self.settings = Settings(redis_url=self.server.url, block_ms=1000)

    def open(self) -> CommandLog:
        return RedisLog(self.settings, retries=0)  # as the reader's: a broken connection surfaces

    def create(self, name: str) -> None:
        registry.create_dashboard(self.client, KEYS, name)

    def delete(self, name: str) -> None:
        registry.delete_dashboard(self.client, KEYS, name)

    def delete_stream(self, name: str) -> None:
        self.client.delete(KEYS.commands(name))

    def xdel(self, name: str, entry_id: str) -> None:
        self.client.xdel(KEYS.commands(name), entry_id)

    def trim(self, name: str, minid: str) -> None:
        self.client.xtrim(KEYS.commands(name), minid=minid, approximate=False)

    def restart_empty(self) -> None:
        self.client.close()
        self.server.restart_empty()
        self.client = self.server.client()

    def applied(self, name: str) -> str | None:
        raw = self.client.get(KEYS.applied(name))
        return raw.decode() if raw else None

    def rejected(self, name: str) -> list[tuple[str, dict]]:
        return [(i.decode(), f) for i, f in self.client.xrange(KEYS.rejected(name))]

    def steal_lock(self, owner: str, ttl_ms: int) -> None:
        self.client.set(KEYS.compactor_lock, owner, px=ttl_ms)

    def status(self) -> dict:
        return {k: str(v) for k, v in read_status(self.client, KEYS).items()}


BROKERS = {"memory": MemoryBroker, "redis": RedisBroker}


@pytest.fixture(params=sorted(BROKERS))
def broker(request):
    return BROKERS[request.param](request)


def run(broker, body):
    """Run ``body(log)`` on a fresh event loop with a log opened in it."""
    async def main():
        log = broker.open()
        try:
            return await body(log)
        finally:
            await log.close()
    return asyncio.run(asyncio.wait_for(main(), 30))


async def again_once(call):
    """A restarted broker breaks the connection: the first call may fail, the next works."""
    try:
        return await call()
    except CONNECTION_ERRORS:
        return await call()


# --- streams ----------------------------------------------------------------------------------
def test_append_and_range_in_order(broker):
    async def body(log):
        ids = [await log.append("d", {"op": "x", "n": str(i)}) for i in range(5)]
        assert [id_tuple(i) for i in ids] == sorted(id_tuple(i) for i in ids) and len(set(ids)) == 5
        got = await log.range("d", "0-0", 100)
        assert [e[0] for e in got] == ids
        assert got[0][1] == {b"op": b"x", b"n": b"0"}, "fields come back as bytes"
        assert [e[0] for e in await log.range("d", ids[1], 2)] == ids[2:4]
        assert await log.range("d", ids[-1], 10) == []
        assert await log.range("nothing", "0-0", 10) == []
        with pytest.raises(Exception, match="equal or smaller"):
            await log.append("d", {"op": "x"}, entry_id=ids[0])
        assert await log.append("d", {"op": "x"}, entry_id="99999999999999-7") == "99999999999999-7"
    run(broker, body)


def test_holds(broker):
    async def body(log):
        a = await log.append("d", {"op": "x"})
        b = await log.append("d", {"op": "x"})
        assert await log.holds("d", a) and await log.holds("d", b)
        broker.xdel("d", a)
        assert not await log.holds("d", a)
        assert not await log.holds("d", "1-1")
        assert not await log.holds("nothing", a)
    run(broker, body)


def test_stream_info_follows_appends_trims_deletes_and_recreation(broker):
    async def body(log):
        epoch = await log.epoch()
        assert await log.probe(["d"]) == (epoch, {"d": None})
        ids = [await log.append("d", {"op": "x"}) for _ in range(4)]
        _, infos = await log.probe(["d"])
        info = infos["d"]
        assert (info.length, info.entries_added, info.last_generated_id, info.max_deleted_id,
                info.first_id) == (4, 4, ids[-1], "0-0", ids[0])
        broker.trim("d", ids[2])  # XTRIM MINID: entries-added stays, max-deleted does not move
        info = (await log.probe(["d"]))[1]["d"]
        assert (info.length, info.entries_added, info.max_deleted_id, info.first_id) == (2, 4, "0-0", ids[2])
        broker.xdel("d", ids[3])  # XDEL moves max-deleted-entry-id
        info = (await log.probe(["d"]))[1]["d"]
        assert (info.length, info.max_deleted_id, info.last_generated_id) == (1, ids[3], ids[3])
        broker.trim("d", "99999999999999-0")  # trimmed empty: the stream stays, without entries
        info = (await log.probe(["d"]))[1]["d"]
        assert (info.length, info.first_id, info.entries_added) == (0, None, 4)
        broker.delete_stream("d")
        assert (await log.probe(["d"]))[1] == {"d": None}
        new = await log.append("d", {"op": "x"})  # recreated: counting starts again
        info = (await log.probe(["d"]))[1]["d"]
        assert (info.length, info.entries_added, info.first_id) == (1, 1, new)
    run(broker, body)


# --- the blocking read ---------------------------------------------------------------------
def test_read_times_out_idle_and_wakes_on_append(broker):
    async def body(log):
        broker.create("d")
        epoch = await log.epoch()
        head = await log.registry_head()
        first = await log.append("d", {"op": "x"})
        t0 = time.monotonic()
        reply = await log.read({"d": first}, head, count=10, block_ms=200)
        assert reply.idle and reply.commands == {} and reply.registry == []
        assert 0.15 < time.monotonic() - t0 < 2

        async def later():
            await asyncio.sleep(0.1)
            return await other.append("d", {"op": "y"})

        other = broker.open() if isinstance(broker, RedisBroker) else log
        try:
            t0 = time.monotonic()
            task = asyncio.create_task(later())
            reply = await log.read({"d": first}, head, count=10, block_ms=5000, probe=["d"])
            new = await task
        finally:
            if other is not log:
                await other.close()
        assert time.monotonic() - t0 < 2, "the read woke on the append"
        assert [e[0] for e in reply.commands["d"]] == [new]
        assert reply.commands["d"][0][1] == {b"op": b"y"}
        # the probe describes the stream after the read: it holds what was returned
        assert reply.epoch == epoch
        assert reply.infos["d"].last_generated_id == new and reply.infos["d"].length == 2
    run(broker, body)


def test_read_returns_registry_events_and_only_entries_after_positions(broker):
    async def body(log):
        broker.create("a")
        head = await log.registry_head()
        ids = [await log.append("a", {"n": str(i)}) for i in range(5)]
        broker.create("b")
        b1 = await log.append("b", {"n": "b"})
        reply = await log.read({"a": ids[2], "b": "0-0"}, head, count=10, block_ms=100,
                               probe=["a", "b", "c"])
        assert [e[0] for e in reply.commands["a"]] == ids[3:]
        assert [e[0] for e in reply.commands["b"]] == [b1]
        assert [f[b"event"] + b" " + f[b"dashboard"] for _, f in reply.registry] == [b"created b"]
        assert reply.infos["c"] is None and reply.infos["a"].length == 5
        assert [e[0] for e in (await log.read({"a": "0-0"}, head, count=2, block_ms=100)).commands["a"]] == ids[:2]
        assert await log.dashboards() == {"a", "b"} and await log.exists("b")
        broker.delete("b")
        assert not await log.exists("b") and await log.dashboards() == {"a"}
        last = (await log.read({}, head, count=10, block_ms=100)).registry[-1]
        assert (last[0], last[1][b"event"]) == (await log.registry_head(), b"deleted")
    run(broker, body)


def test_writes_record_rejections_once_then_the_applied_id(broker):
    async def body(log):
        broker.create("d")
        a = await log.append("d", {"op": "bad"})
        b = await log.append("d", {"op": "x"})
        w = Write("d", [(a, {b"op": b"bad"}, "unknown op")], applied=b)
        await log.write([w])
        await log.read({"d": b}, await log.registry_head(), count=10, block_ms=50, writes=[w])  # again: once
        assert broker.applied("d") == b
        got = broker.rejected("d")
        assert [(i, f[b"_reason"], f[b"op"]) for i, f in got] == [(a, b"unknown op", b"bad")]
    run(broker, body)


# --- epoch, snapshots and the lock ------------------------------------------------------------
def test_epoch_is_stable_and_changes_when_the_data_is_lost(broker):
    async def body(log):
        first = await log.epoch()
        assert await log.epoch() == first and (await log.probe([]))[0] == first
        broker.restart_empty()
        assert (await again_once(lambda: log.probe([])))[0] is None, "no epoch in an empty data set"
        second = await log.epoch()
        assert second != first and await log.epoch() == second
    run(broker, body)


def test_lock_fences_the_snapshot_write_and_trim(broker):
    async def body(log):
        ids = [await log.append("d", {"n": str(i)}) for i in range(4)]
        assert await log.acquire("A", 5000)
        assert not await log.acquire("B", 5000)
        assert await log.renew("A", 5000) and not await log.renew("B", 5000)
        assert await log.put_snapshot("B", "d", '{"who":"B"}', ids[2]) is None
        assert await log.snapshot("d") is None and len(await log.range("d", "0-0", 10)) == 4
        assert await log.put_snapshot("A", "d", '{"who":"A"}', ids[2]) == 2, "two entries trimmed"
        assert await log.snapshot("d") == b'{"who":"A"}'
        assert [e[0] for e in await log.range("d", "0-0", 10)] == ids[2:], "trimmed before ids[2]"
        assert await log.put_snapshot("A", "d", '{"who":"A2"}', None) == 0
        assert len(await log.range("d", "0-0", 10)) == 2, "no trim point, no trim"
        await log.release("B")  # not B's: nothing happens
        assert not await log.acquire("B", 5000)
        broker.steal_lock("C", 5000)  # A's lock expired while it was paused; C won it
        assert await log.put_snapshot("A", "d", '{"who":"stale"}', ids[3]) is None
        assert await log.snapshot("d") == b'{"who":"A2"}'
        await log.release("C")
        assert await log.acquire("B", 150)
        await asyncio.sleep(0.3)  # B's lock expires by its TTL
        assert await log.acquire("A", 5000)
        await log.set_status({"owner": "A", "snapshots_written": 2})
        assert broker.status() == {"owner": "A", "snapshots_written": "2"}
    run(broker, body)


# --- the seam itself ------------------------------------------------------------------------
def _methods(cls) -> dict[str, list[str]]:
    import inspect

    return {n: list(inspect.signature(f).parameters) for n, f in vars(cls).items()
            if not n.startswith("_") and inspect.iscoroutinefunction(f)}


def test_every_log_has_the_whole_interface_and_the_docs_name_it():
    """The walkthrough in docs/architecture.md ("How to add a broker") holds: both logs
    implement every CommandLog method with its parameters, the contract above lists every
    broker, and the docs' contract names every method."""
    from pathlib import Path

    wanted = _methods(CommandLog)
    assert len(wanted) >= 15
    for impl in (RedisLog, MemoryLog):
        have = _methods(impl)
        for name, params in wanted.items():
            assert have.get(name) == params, f"{impl.__name__}.{name}{tuple(params)}"
    doc = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text()
    section = doc.split("## How to add a broker", 1)[1].split("\n## ", 1)[0]
    assert "tests/test_log_contract.py" in section and "BROKERS" in section
    contract = doc.split("* `app.bus.log.CommandLog`", 1)[1].split("\n* `app.bus.reader", 1)[0]
    assert [n for n in wanted if f"`{n}(" not in contract and f"{n}/" not in contract
            and f"/{n}" not in contract] == [], "a CommandLog method missing from the docs"
    assert set(BROKERS) == {"memory", "redis"}
