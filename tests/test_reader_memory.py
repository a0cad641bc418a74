"""The reader's history judgement and the compactor against the in-memory command log:
no redis-server.  (The same code runs on Redis in test_reader.py, test_compactor.py,
test_history_rewind.py; tests/test_log_contract.py holds the twin to Redis's rules.)
"""

from __future__ import annotations

import asyncio
import time

import pytest

from app.bus.compactor import Compactor
from app.bus.history import Feed, HistoryLost, HistoryRewound, judge
from app.bus.log import StreamInfo, current_snapshot
from app.bus.memory_log import MemoryLog
from app.bus.reader import Reader
from app.control import snapshot as snap
from app.control.protocol import Rejected, parse
from app.control.state import EMPTY, DashboardState, step
from app.settings import Settings
from fleet_testing.helpers import Recorder, point

LINE = {"op": "replace", "name": "p", "kind": "line", "data": '{"t":[0],"y":[0]}'}
CFG = Settings(block_ms=50)


async def until(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def fold(log: MemoryLog, name: str) -> DashboardState:
    """What the log holds for ``name``: its snapshot + the stream after it (read_state)."""
    s = current_snapshot(await log.snapshot(name), await log.epoch())
    state = s.state
    for _eid, fields in await log.range(name, s.last_id, 100_000):
        try:
            state, _ = step(state, parse(fields))
        except Rejected:
            pass
    return state


def ts(state: DashboardState) -> list[int]:
    return [int(v) for v in state.figures["p"].data["t"]] if "p" in state.figures else []


async def started(log: MemoryLog, rec: Recorder | None = None, **kw) -> Reader:
    reader = Reader(CFG, rec, log=log, **kw)
    reader.start()
    await reader.wait_caught_up()
    return reader


# --- the judgement (pure) ---------------------------------------------------------------------
def info(first, last_gen, length=3, added=3, deleted="0-0") -> StreamInfo:
    return StreamInfo(length, added, last_gen, deleted, first)


@pytest.mark.parametrize("feed, stream, verdict", [
    (Feed(EMPTY, "5-0", "0-0", 3), info("1-0", "9-0", 5, 5), None),
    (Feed(EMPTY, "5-0", "0-0", 3), None, HistoryLost),  # deleted; no snapshot holds it
    (Feed(EMPTY, "5-0", "5-0", 3), None, None),  # deleted, but we are at the snapshot
    (Feed(EMPTY, "5-0", "0-0", 9), info("1-0", "9-0", 5, 5), HistoryRewound),  # added went down
    (Feed(EMPTY, "5-0", "0-0", 3), info("1-0", "4-0"), HistoryRewound),  # ends before us
    (Feed(EMPTY, "5-0", "0-0", 3), info("1-0", "9-0", 2, 4, deleted="7-0"), HistoryLost),  # XDEL
    (Feed(EMPTY, "5-0", "0-0", 3), info("1-0", "9-0", 2, 4, deleted="3-0"), None),  # XDEL behind us
    (Feed(EMPTY, "5-0", "0-0", 3), info("7-0", "9-0", 2, 9), HistoryLost),  # trimmed past us
    (Feed(EMPTY, "5-0", "0-0", 3), info("5-0", "9-0", 4, 9), None),  # trimmed up to our entry
    # recreated with more entries than we saw: only "everything newer, nothing removed" tells
    (Feed(EMPTY, "5-0", "0-0", 3), info("7-0", "9-0", 8, 8), HistoryRewound),
    (Feed(EMPTY, "5-0", "5-0", 3), info("7-0", "9-0", 8, 8), None),  # at the snapshot: fold = ours
    (Feed(EMPTY, "0-0", "0-0", None), info("7-0", "9-0", 8, 8), None),  # nothing folded yet
])
def test_judge(feed, stream, verdict):
    if verdict is None:
        judge(feed, stream)
        if stream is not None:
            assert feed.entries_added == stream.entries_added
    else:
        with pytest.raises(verdict) as exc:
            judge(feed, stream)
        assert exc.type is verdict


# --- the reader on the twin -----------------------------------------------------------------
def test_reader_folds_records_and_costs_one_round_trip_per_read():
    log = MemoryLog()
    log.create_dashboard("d")
    rec = Recorder()

    async def main():
        await log.append("d", LINE)
        reader = await started(log, rec)
        bad = await log.append("d", {"op": "nope"})
        await until(lambda: rec.rejected)
        before = log.round_trips
        for i in range(50):  # one command per read: the reader's steady state
            await log.append("d", point(i))
            await until(lambda i=i: len(rec.commands) == i + 1)
        per_read = (log.round_trips - before - 50) / 50  # minus the 50 appends
        last = reader.feeds["d"].last_id
        await until(lambda: log.applied("d") == last, what="applied id written")
        state = reader.feeds["d"].state
        await reader.stop()
        return bad, per_read, state

    bad, per_read, state = run(main())
    assert ts(state) == [0, *range(50)]
    assert [r[0] for r in rec.rejected] == [bad]
    assert [(i, f[b"_reason"].decode()[:10]) for i, f in log.rejected("d")] == [(bad, rec.rejected[0][1][:10])]
    # read + its history probe + the writes of the batch before: one round trip
    assert per_read <= 1.1, f"{per_read:.2f} round trips per read"


def test_deleted_stream_resyncs_and_recreated_stream_is_not_folded_onto_the_old_state():
    log = MemoryLog()
    log.create_dashboard("d")
    rec = Recorder()

    async def main():
        reader = await started(log, rec)
        for f in (LINE, point(1), point(2)):
            await log.append("d", f)
        await until(lambda: len(rec.commands) == 3)
        log.delete_stream("d")  # an operator's DEL; no snapshot holds it
        await until(lambda: reader.stats["resyncs"] == 1, what="resync after DEL")
        assert reader.feeds["d"].state.figures == {}
        # DEL and recreate under way: more commands than there were, all at once
        for f in (LINE, point(3), point(4), point(5)):
            await log.append("d", f)
        await until(lambda: ts(reader.feeds["d"].state) == [0, 3, 4, 5])
        log.delete_stream("d")
        for f in (LINE, point(7), point(8), point(9), point(10), point(11)):
            await log.append("d", f)
        await until(lambda: reader.stats["resyncs"] == 2, what="resync after DEL + re-create")
        await until(lambda: ts(reader.feeds["d"].state) == [0, 7, 8, 9, 10, 11])
        want = ts(await fold(log, "d"))
        await reader.stop()
        return want

    assert run(main()) == [0, 7, 8, 9, 10, 11]


def test_rewound_history_under_new_commands_resyncs_to_the_fold():
    """Redis restarted from an older copy (crash with appendfsync everysec, a promoted
    replica that lacked the tail), and new commands landed on the shorter history."""
    log = MemoryLog()
    log.create_dashboard("d")
    rec = Recorder()

    async def main():
        for f in (LINE, point(1), point(2)):
            await log.append("d", f)
        reader = await started(log, rec)
        older = log.image()
        for i in (3, 4, 5):
            await log.append("d", point(i))
        await until(lambda: ts(reader.feeds["d"].state) == [0, 1, 2, 3, 4, 5])
        log.restart(older)
        # controllers carry on first (written past the reader's broken connection): ids
        # after ours, so entries-added and the last id look fine again
        for i in (7, 8, 9, 10):
            log.data.streams["d"].add(point(i))
        await until(lambda: reader.stats["history_rewinds"] == 1 and reader.caught_up.is_set())
        got = ts(reader.feeds["d"].state)
        want = ts(await fold(log, "d"))
        await reader.stop()
        return got, want

    got, want = run(main())
    assert want == [0, 1, 2, 7, 8, 9, 10]
    assert got == want, "the reader kept commands the log no longer has"
    assert ("d", None) not in rec.resets


def test_data_lost_changes_the_epoch_and_drops_every_dashboard():
    log = MemoryLog()
    log.create_dashboard("d")
    rec = Recorder()

    async def main():
        await log.append("d", LINE)
        reader = await started(log, rec)
        old = reader.epoch
        log.flush()
        await until(lambda: "d" not in reader.feeds, what="dropped after data loss")
        log.create_dashboard("d")
        await log.append("d", LINE)
        await until(lambda: "d" in reader.feeds and "p" in reader.feeds["d"].state.figures)
        new = reader.epoch
        await reader.stop()
        return old, new

    old, new = run(main())
    assert old != new and ("d", None) in rec.resets


def test_reader_behind_the_trimmed_part_resyncs_from_the_snapshot():
    log = MemoryLog()
    log.create_dashboard("d")

    async def main():
        await log.append("d", LINE)
        reader = await started(log)
        await reader.stop()  # falls behind ...
        for i in range(30):
            await log.append("d", point(i))
        state = await fold(log, "d")  # ... a snapshot is written and the log trimmed
        last = (await log.range("d", "0-0", 1000))[-1][0]
        assert await log.acquire("me", 10_000)
        text = snap.dumps(snap.Snapshot(state, last, await log.epoch()))
        assert await log.put_snapshot("me", "d", text, last) is not None
        for i in range(30, 35):
            await log.append("d", point(i))
        reader._stopping = False
        reader.start()
        await reader.wait_caught_up()
        got, stats = ts(reader.feeds["d"].state), dict(reader.stats)
        await reader.stop()
        return got, stats

    got, stats = run(main())
    assert stats["resyncs"] == 1
    assert got == [0, *range(35)]


def test_dashboard_deleted_and_created_again_between_two_reads_is_reloaded():
    log = MemoryLog()
    log.create_dashboard("d")
    rec = Recorder()

    async def main():
        for f in (LINE, point(1), point(2)):
            await log.append("d", f)
        reader = await started(log, rec)
        # all within one read: the registry events come with the new stream's entries
        log.delete_dashboard("d")
        log.create_dashboard("d")
        for f in (LINE, point(8), point(9), point(10), point(11)):
            await log.append("d", f)  # (no await inside the twin yields: still one read)
        await until(lambda: ts(reader.feeds["d"].state) == [0, 8, 9, 10, 11])
        await reader.stop()

    run(main())
    assert [r[0] for r in rec.resets] == ["d", "d"], "loaded, then reloaded (never dropped)"


# --- the compactor on the twin ----------------------------------------------------------------
def ccfg(**kw) -> Settings:
    return Settings(block_ms=50, snapshot_every_commands=50, snapshot_every_seconds=0.1,
                    compactor_lock_ttl_ms=300, **kw)


def expected(n: int) -> str:
    state = step(EMPTY, parse(LINE))[0]
    for i in range(n):
        state = step(state, parse(point(i)))[0]
    return snap.digest(state)


def test_two_compactors_one_writer_and_every_trimmed_entry_is_in_a_snapshot():
    log = MemoryLog()
    log.create_dashboard("d")
    n = 400

    async def main():
        await log.append("d", LINE)
        a, b = Compactor(ccfg(), "A", log=log), Compactor(ccfg(), "B", log=log)
        tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        leaders, checked = set(), 0
        for i in range(n):
            await log.append("d", point(i))
            if i % 10 == 0:
                await asyncio.sleep(0.01)
                assert not (a.leader and b.leader), "two leaders at once"
                leaders.update(c.owner for c in (a, b) if c.leader)
                raw, head = await log.snapshot("d"), log.data.streams["d"].entries[0][0]
                if raw:  # every entry the stream no longer holds is in the snapshot
                    assert _id(head) <= _id(snap.loads(raw).last_id)
                    checked += 1
        await until(lambda: (s := log.data.snapshots.get("d")) and snap.loads(s).state.applied == n + 1,
                    what="final snapshot")
        writer = a if a.leader else b
        a.stop(), b.stop()
        await asyncio.gather(*tasks)
        fresh = await started(log)
        digest = snap.digest(fresh.feeds["d"].state)
        await fresh.stop()
        return leaders, writer, checked, digest

    leaders, writer, checked, digest = run(main())
    assert len(leaders) == 1 and writer.snapshots_written >= 3 and checked > 0
    assert len(log.data.streams["d"].entries) < n, "the stream was trimmed"
    assert snap.digest(snap.loads(log.data.snapshots["d"]).state) == expected(n) == digest
    assert log.data.lock is None, "the lock is released on a clean stop"
    assert log.data.status["owner"] == writer.owner


def test_a_compactor_that_lost_its_lock_cannot_write_and_a_standby_takes_over():
    log = MemoryLog()
    log.create_dashboard("d")

    async def main():
        await log.append("d", LINE)
        a, b = Compactor(ccfg(), "A", log=log), Compactor(ccfg(), "B", log=log)
        ta = asyncio.create_task(a.run())
        await until(lambda: log.data.snapshots.get("d") is not None, what="first snapshot")
        log.steal_lock("intruder", 60_000)  # A's lock expired and someone else won it
        before = log.data.snapshots["d"]
        for i in range(100):
            await log.append("d", point(i))
        await until(lambda: not a.leader, what="A steps down")
        await asyncio.sleep(0.3)
        assert log.data.snapshots["d"] == before
        a.stop()
        await ta
        tb = asyncio.create_task(b.run())
        await asyncio.sleep(0.2)
        assert not b.leader
        log.steal_lock("intruder", 200)  # the intruder dies: its lock expires by the TTL
        await until(lambda: b.leader, what="B takes over")
        await until(lambda: snap.loads(log.data.snapshots["d"]).state.applied == 101, what="B's snapshot")
        b.stop()
        await tb

    run(main())


def _id(eid: str) -> tuple[int, int]:
    ms, seq = eid.split("-")
    return int(ms), int(seq)
