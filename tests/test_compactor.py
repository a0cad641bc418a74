"""The compactor against a real redis-server: one writer, snapshots, safe trimming."""

from __future__ import annotations

import asyncio
import json

from app.bus import registry
from app.bus.compactor import Compactor
from app.bus.keys import Keys
from app.bus.reader import Reader
from app.control import snapshot as snap
from app.control.protocol import parse
from app.control.state import EMPTY, apply
from app.settings import Settings
from fleet_testing.helpers import LINE, until

KEYS = Keys("fleet")


def point(i: int) -> dict:
    return {"op": "stream", "name": "p", "data": json.dumps({"t": [i], "y": [i]})}


def cfg(url: str) -> Settings:
    return Settings(redis_url=url, block_ms=100, snapshot_every_commands=50, snapshot_every_seconds=0.2,
                    compactor_lock_ttl_ms=600)


def expected_digest(n: int) -> str:
    state = apply(EMPTY, parse(LINE))
    for i in range(n):
        state = apply(state, parse(point(i)))
    return snap.digest(state)


def test_two_compactors_one_writer_and_trimming_keeps_every_entry_in_a_snapshot(redis_server):
    r = redis_server.client()
    registry.create_dashboard(r, KEYS, "d")
    r.xadd(KEYS.commands("d"), LINE)
    n = 600
    snapshots: list[snap.Snapshot] = []

    async def main():
        a, b = Compactor(cfg(redis_server.url), "A"), Compactor(cfg(redis_server.url), "B")
        tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        leaders = set()
        for i in range(n):
            r.xadd(KEYS.commands("d"), point(i))
            if i % 20 == 0:
                await asyncio.sleep(0.02)
                both = a.leader and b.leader
                assert not both, "two leaders at once"
                leaders.update(c.owner for c in (a, b) if c.leader)
                pipe = r.pipeline(transaction=True)  # one atomic view of snapshot + stream
                pipe.get(KEYS.snapshot("d")).xrange(KEYS.commands("d"), count=1)
                raw, head = pipe.execute()
                if raw:
                    snapshots.append(snap.loads(raw))
                    # every entry the stream no longer holds is in the snapshot
                    assert _id(head[0][0].decode()) <= _id(snapshots[-1].last_id)
        await until(lambda: (s := r.get(KEYS.snapshot("d"))) and snap.loads(s).state.applied == n + 1,
                    what="final snapshot")
        writer = a if a.leader else b
        a.stop(), b.stop()
        await asyncio.gather(*tasks)
        return leaders, writer

    leaders, writer = asyncio.run(main())
    assert len(leaders) == 1
    assert writer.snapshots_written >= 3
    assert r.xlen(KEYS.commands("d")) < n, "the stream was trimmed"
    final = snap.loads(r.get(KEYS.snapshot("d")))
    assert snap.digest(final.state) == expected_digest(n)

    async def fresh_reader():
        reader = Reader(cfg(redis_server.url))
        reader.start()
        await reader.wait_caught_up()
        d = snap.digest(reader.feeds["d"].state)
        await reader.stop()
        return d

    assert asyncio.run(fresh_reader()) == expected_digest(n)
    assert r.get(KEYS.compactor_lock) is None, "the lock is released on a clean stop"


def _id(eid: str) -> tuple[int, int]:
    ms, seq = eid.split("-")
    return int(ms), int(seq)


def test_standby_takes_over_when_the_leader_dies(redis_server):
    r = redis_server.client()
    registry.create_dashboard(r, KEYS, "d")
    r.xadd(KEYS.commands("d"), LINE)

    async def main():
        a, b = Compactor(cfg(redis_server.url), "A"), Compactor(cfg(redis_server.url), "B")
        ta = asyncio.create_task(a.run())
        await until(lambda: a.leader, what="A leads")
        tb = asyncio.create_task(b.run())
        await asyncio.sleep(0.3)
        assert not b.leader
        ta.cancel()  # a crash: no release, the lock expires by its TTL
        try:
            await ta
        except asyncio.CancelledError:
            pass
        r.set(KEYS.compactor_lock, "A", xx=True, px=600)  # as if A still held it until the TTL
        await until(lambda: b.leader, timeout=5, what="B takes over")
        for i in range(10):
            r.xadd(KEYS.commands("d"), point(i))
        await until(lambda: (s := r.get(KEYS.snapshot("d"))) and snap.loads(s).state.applied == 11)
        b.stop()
        await tb

    asyncio.run(main())


def test_a_compactor_that_lost_its_lock_cannot_write(redis_server):
    r = redis_server.client()
    registry.create_dashboard(r, KEYS, "d")
    r.xadd(KEYS.commands("d"), LINE)

    async def main():
        a = Compactor(cfg(redis_server.url), "A")
        ta = asyncio.create_task(a.run())
        await until(lambda: r.get(KEYS.snapshot("d")) is not None, what="first snapshot")
        r.set(KEYS.compactor_lock, "intruder", px=60_000)  # A's lock expired and someone else won
        before = r.get(KEYS.snapshot("d"))
        for i in range(100):
            r.xadd(KEYS.commands("d"), point(i))
        await until(lambda: not a.leader, what="A steps down")
        await asyncio.sleep(0.5)
        assert r.get(KEYS.snapshot("d")) == before
        a.stop()
        await ta

    asyncio.run(main())
    assert r.get(KEYS.compactor_lock) == b"intruder"
