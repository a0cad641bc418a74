"""The per-process reader against a real redis-server: order, rejections, faults."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import redis

from app.bus import registry
from app.bus.keys import Keys
from app.bus.reader import Reader
from app.bus.store import read_rejected, read_state
from app.control import snapshot as snap
from app.control.protocol import encode
from app.settings import Settings
from fleet_testing.helpers import LINE, Recorder, point, until

KEYS = Keys("fleet")


def settings_for(url: str, **kw) -> Settings:
    return Settings(redis_url=url, block_ms=200, **kw)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture
def r(redis_server):
    client = redis_server.client()
    registry.create_dashboard(client, KEYS, "d")
    yield client
    client.close()


def entry_ids(client, dashboard="d"):
    return [e[0].decode() for e in client.xrange(KEYS.commands(dashboard))]


def test_garbage_is_rejected_and_never_blocks_what_follows(redis_server, r):
    key = KEYS.commands("d")
    r.xadd(key, LINE)
    garbage = [
        {"op": "explode"},
        {"nop": "x"},
        {"op": "stream", "name": "p", "data": "{not json"},
        {"op": "stream", "name": "p", "arrow": b"\x00\x01\x02"},
        {"op": "stream", "name": "zz", "data": '{"t":[1],"y":[1]}'},
        {"op": "stream", "name": "p", "data": json.dumps({"t": list(range(200_001)), "y": list(range(200_001))})},
        {"op": b"\xff"},
    ]
    bad_ids = [r.xadd(key, g).decode() for g in garbage]
    r.xadd(key, point(1))
    rec = Recorder()

    async def main():
        reader = Reader(settings_for(redis_server.url), rec)
        reader.start()
        await reader.wait_caught_up()
        await until(lambda: len(rec.rejected) == len(garbage), what="rejections")
        r.xadd(key, point(2))
        await until(lambda: len(rec.commands) == 1, what="live command")
        state = reader.feeds["d"].state
        await reader.stop()
        return state

    state = run(main())
    assert list(state.figures["p"].data["t"]) == [0, 1, 2]
    assert [i for i, _ in rec.rejected] == bad_ids
    stored = read_rejected(r, KEYS, "d", 100)
    assert sorted(x["id"] for x in stored) == sorted(bad_ids)
    reasons = {x["id"]: x["reason"] for x in stored}
    assert "unknown op" in reasons[bad_ids[0]]
    assert "no figure 'zz'" in reasons[bad_ids[4]]
    assert "more than the limit" in reasons[bad_ids[5]]
    assert any(x["fields"].get("_truncated") == "1" for x in stored)
    assert snap.digest(state) == snap.digest(read_state(r, KEYS, "d", settings_for(redis_server.url))[0])


def test_two_readers_record_each_rejection_once(redis_server, r):
    r.xadd(KEYS.commands("d"), {"op": "nope"})

    async def main():
        readers = [Reader(settings_for(redis_server.url), Recorder(), name=f"r{i}") for i in range(2)]
        for rd in readers:
            rd.start()
        for rd in readers:
            await rd.wait_caught_up()
        for rd in readers:
            await rd.stop()

    run(main())
    assert r.xlen(KEYS.rejected("d")) == 1


def _publisher(url: str, n: int, stop_after: threading.Event) -> threading.Thread:
    def work():
        c = redis.Redis.from_url(url)
        i = 0
        while i < n:
            try:
                c.xadd(KEYS.commands("d"), point(i))
                i += 1
            except redis.ConnectionError:
                time.sleep(0.02)
            time.sleep(0.001)
        stop_after.set()

    t = threading.Thread(target=work, daemon=True)
    t.start()
    return t


def test_reader_survives_client_kill_without_loss_or_duplicates(redis_server, r):
    r.xadd(KEYS.commands("d"), LINE)
    rec = Recorder()

    async def main():
        reader = Reader(settings_for(redis_server.url), rec)
        reader.start()
        await reader.wait_caught_up()
        done = threading.Event()
        _publisher(redis_server.url, 400, done)
        kills = 0
        while not done.is_set():
            await asyncio.sleep(0.03)
            kills += r.client_kill_filter(_type="normal", skipme=True)
        await until(lambda: reader.feeds["d"].last_id == entry_ids(r)[-1], what="catch-up")
        await reader.stop()
        return kills, reader

    kills, reader = run(main())
    assert kills >= 3
    ids = [e for _, e in rec.commands]
    assert ids == entry_ids(r)[1:], "every command exactly once, in order"
    folded = read_state(r, KEYS, "d", settings_for(redis_server.url))[0]
    assert snap.digest(reader.feeds["d"].state) == snap.digest(folded)


def test_reader_survives_redis_restart_with_aof(redis_server, r):
    r.xadd(KEYS.commands("d"), LINE)
    rec = Recorder()

    async def main():
        reader = Reader(settings_for(redis_server.url), rec)
        reader.start()
        await reader.wait_caught_up()
        for i in range(50):
            r.xadd(KEYS.commands("d"), point(i))
        await until(lambda: len(rec.commands) == 50)
        redis_server.kill()  # SIGKILL; appendfsync always keeps every acknowledged entry
        await asyncio.sleep(0.3)
        redis_server.start()
        c = redis_server.client()
        for i in range(50, 100):
            c.xadd(KEYS.commands("d"), point(i))
        await until(lambda: len(rec.commands) == 100, what="all 100 commands")
        await asyncio.sleep(0.3)
        await reader.stop()
        c.close()
        return reader

    reader = run(main())
    assert [e for _, e in rec.commands] == entry_ids(redis_server.client())[1:]
    assert reader.stats["resyncs"] == 0
    assert len(rec.resets) == 1  # only the initial load: nothing was lost, nothing resynced


def test_redis_restarted_empty_is_detected_and_resynced(redis_server, r):
    r.xadd(KEYS.commands("d"), LINE)
    rec = Recorder()

    async def main():
        reader = Reader(settings_for(redis_server.url), rec)
        reader.start()
        await reader.wait_caught_up()
        for i in range(20):
            r.xadd(KEYS.commands("d"), point(i))
        await until(lambda: len(rec.commands) == 20)
        old_epoch = reader.epoch
        redis_server.restart_empty()
        await until(lambda: "d" not in reader.feeds, what="dashboard dropped after data loss")
        c = redis_server.client()
        registry.create_dashboard(c, KEYS, "d")
        c.xadd(KEYS.commands("d"), LINE)
        await until(lambda: "d" in reader.feeds and "p" in reader.feeds["d"].state.figures)
        state = reader.feeds["d"].state
        new_epoch = reader.epoch
        await reader.stop()
        c.close()
        return old_epoch, new_epoch, state

    old_epoch, new_epoch, state = run(main())
    assert old_epoch != new_epoch
    assert ("d", None) in rec.resets, "sessions were told the dashboard's history is gone"
    assert state.figures["p"].length == 1, "nothing of the lost history survives in memory"


def test_reader_behind_the_trimmed_part_resyncs_from_snapshot(redis_server, r):
    cfg = settings_for(redis_server.url)
    r.xadd(KEYS.commands("d"), LINE)
    rec = Recorder()

    async def main():
        reader = Reader(cfg, rec)
        reader.start()
        await reader.wait_caught_up()
        await reader.stop()  # the reader falls behind ...
        for i in range(30):
            r.xadd(KEYS.commands("d"), point(i))
        state, last = read_state(r, KEYS, "d", cfg)  # ... a snapshot is written and the log trimmed
        epoch = r.get(KEYS.epoch).decode()
        r.set(KEYS.snapshot("d"), snap.dumps(snap.Snapshot(state, last, epoch)))
        r.xtrim(KEYS.commands("d"), minid=last, approximate=False)
        for i in range(30, 35):
            r.xadd(KEYS.commands("d"), point(i))
        reader._stopping = False
        reader.start()
        await reader.wait_caught_up()
        final = reader.feeds["d"].state
        stats = dict(reader.stats)
        await reader.stop()
        return final, stats

    final, stats = run(main())
    assert stats["resyncs"] == 1
    assert list(final.figures["p"].data["t"]) == [0] + list(range(35))


def test_deleted_stream_is_detected(redis_server, r):
    cfg = settings_for(redis_server.url)
    rec = Recorder()

    async def main():
        reader = Reader(cfg, rec)
        reader.start()
        await reader.wait_caught_up()
        r.xadd(KEYS.commands("d"), LINE)
        r.xadd(KEYS.commands("d"), point(1))
        await until(lambda: len(rec.commands) == 2)
        r.delete(KEYS.commands("d"))  # an operator's mistake; no snapshot holds it
        await until(lambda: reader.stats["resyncs"] == 1, what="resync after DEL")
        state = reader.feeds["d"].state
        await reader.stop()
        return state

    state = run(main())
    assert state.figures == {}
    assert rec.resets[-1][0] == "d"


def test_new_dashboard_is_picked_up_within_a_second(redis_server, r):
    rec = Recorder()

    async def main():
        reader = Reader(Settings(redis_url=redis_server.url, block_ms=5000), rec)
        reader.start()
        await reader.wait_caught_up()
        t0 = time.monotonic()
        registry.create_dashboard(r, KEYS, "fresh")
        r.xadd(KEYS.commands("fresh"), encode("replace", name="p", kind="line", data={"t": [1], "y": [1]}))
        await until(lambda: "fresh" in reader.feeds and reader.feeds["fresh"].state.figures, timeout=1.0)
        elapsed = time.monotonic() - t0
        registry.delete_dashboard(r, KEYS, "fresh")
        await until(lambda: "fresh" not in reader.feeds, timeout=1.0)
        await reader.stop()
        return elapsed

    assert run(main()) < 1.0
    assert ("fresh", None) in rec.resets


def test_health_reports_a_reason_while_redis_is_down(redis_server, r):
    async def main():
        reader = Reader(settings_for(redis_server.url), Recorder())
        assert reader.health()[0] is False
        reader.start()
        await reader.wait_caught_up()
        assert reader.health() == (True, "ok")
        redis_server.kill()
        await until(lambda: not reader.health()[0], what="unhealthy")
        ok, reason = reader.health()
        redis_server.start()
        await reader.wait_caught_up(15)
        await reader.stop()
        return reason

    assert "Redis" in run(main())
