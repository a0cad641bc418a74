"""History that went backwards under a reader is detected and resynced, never silent.

The judgement is unit-tested; then a real redis-server's data directory is rolled
back to an earlier copy while it is down (what a machine crash with ``appendfsync
everysec`` or a promoted replica that lacked the tail leave behind), and new
commands land on the shorter history before the instance reconnects: the open
session must end up equal to the fold Redis holds, and /metrics must count it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import pytest

from app.bus import registry
from app.bus.history import Feed, HistoryRewound, judge, missing_last_entry
from app.bus.keys import Keys
from app.bus.reader import Reader
from app.bus.redis_log import stream_info
from app.bus.store import read_state
from app.settings import Settings
from fleet_testing.bokeh import BokehClient, allow_viewer, mint_token
from fleet_testing.helpers import LINE, until
from fleet_testing.redis import RedisServer

KEYS = Keys("fleet")


def point(i: int) -> dict:
    return {"op": "stream", "name": "p", "data": json.dumps({"t": [i], "y": [i * 2]})}


def info(first: str | None, last_gen: str, length: int = 3, added: int = 3):
    """An ``XINFO STREAM`` reply as redis-py gives it, parsed as the Redis log does."""
    return stream_info({b"length": length, b"entries-added": added, b"last-generated-id": last_gen.encode(),
                        b"max-deleted-entry-id": b"0-0",
                        b"first-entry": (first.encode(), {}) if first else None})


# --- the judgement ------------------------------------------------------------------------
def test_present_last_entry_is_fine():
    assert missing_last_entry("5-0", info("1-0", "9-0"), present=True) is None


def test_nothing_applied_yet_is_fine():
    assert missing_last_entry("0-0", info("1-0", "9-0"), present=False) is None


def test_trimmed_past_us_is_not_a_rewind():
    """The compactor trimmed behind a snapshot: that is the trim check's business."""
    assert missing_last_entry("5-0", info("7-0", "9-0"), present=False) is None
    assert missing_last_entry("5-0", info(None, "9-0", length=0), present=False) is None


def test_missing_last_entry_under_newer_ones_is_a_rewind():
    """Tail lost (crash, older AOF, promoted replica) and new commands added on top:
    last-generated-id is ahead of us again, only the missing entry tells."""
    why = missing_last_entry("5-0", info("1-0", "9-0"), present=False)
    assert why and "5-0" in why and "backwards" in why


def test_stream_ending_before_us_raises_rewound():
    from app.control.state import EMPTY

    with pytest.raises(HistoryRewound):
        judge(Feed(EMPTY, "5-0", "0-0", entries_added=3), info("1-0", "4-0"))


# --- a real redis-server rolled back while down ------------------------------------------
def test_in_process_reader_resyncs_after_crash_rollback(tmp_path):
    """The Reader alone: rollback + newer commands -> resynced, counted once."""
    server = RedisServer(tmp_path / "redis").start()
    backup = tmp_path / "backup"
    try:
        c = server.client()
        registry.create_dashboard(c, KEYS, "d")
        for f in (LINE, point(1), point(2)):
            c.xadd(KEYS.commands("d"), f)
        c.close()

        async def main():
            reader = Reader(Settings(redis_url=server.url, block_ms=200))
            reader.start()
            await reader.wait_caught_up()
            server.stop()
            shutil.copytree(server.workdir, backup)  # the copy the crash will leave
            server.start()
            c = server.client()
            for i in (3, 4, 5):
                c.xadd(KEYS.commands("d"), point(i))
            c.close()
            await until(lambda: reader.feeds["d"].state.figures["p"].length == 6, what="3..5 applied")
            server.kill()
            shutil.rmtree(server.workdir)
            shutil.copytree(backup, server.workdir)
            # more new commands than were lost land on the shorter history before the
            # reader is back: entries-added and last-generated-id look fine again
            other = RedisServer(server.workdir).start()
            oc = other.client()
            for i in (7, 8, 9, 10):
                oc.xadd(KEYS.commands("d"), point(i))
            oc.close()
            other.stop()
            server.start()
            c = server.client()
            fold, _ = read_state(c, KEYS, "d", reader.settings)
            c.close()
            await until(lambda: reader.stats["history_rewinds"] >= 1 and reader.caught_up.is_set(),
                        what="the rewind noticed")
            got = reader.feeds["d"].state.figures["p"].data
            await reader.stop()
            return fold, got, reader.stats["history_rewinds"]

        fold, got, rewinds = asyncio.run(asyncio.wait_for(main(), 90))
        assert list(fold.figures["p"].data["t"]) == [0, 1, 2, 7, 8, 9, 10]
        assert list(got["t"]) == [0, 1, 2, 7, 8, 9, 10], "the reader kept commands Redis no longer has"
        assert rewinds == 1
    finally:
        server.stop()


def test_instance_sessions_equal_the_fold_after_crash_rollback(tmp_path, start_instance, fleet_env,
                                                               redis_server):
    """A real instance with an open session; Redis's data dir rolled back while down."""
    c = redis_server.client()
    registry.create_dashboard(c, KEYS, "d")
    allow_viewer(c, KEYS)  # the user of mint_token's tokens
    for f in (LINE, point(1), point(2)):
        c.xadd(KEYS.commands("d"), f)
    c.close()
    inst = start_instance(block_ms=500)
    backup = tmp_path / "backup"

    async def main():
        page = await BokehClient(inst.ws_url, mint_token(fleet_env["FLEET_SECRET_KEY"], "d")[1]).connect(30)
        await until(lambda: page.data("p").get("t") == [0, 1, 2], what="the page's first state")
        redis_server.stop()
        shutil.copytree(redis_server.workdir, backup)
        redis_server.start()
        c = redis_server.client()
        for i in (3, 4, 5):
            c.xadd(KEYS.commands("d"), point(i))
        await until(lambda: page.data("p").get("t") == [0, 1, 2, 3, 4, 5], what="3..5 on the page")
        c.close()
        redis_server.kill()  # the machine crashes: the newest commands never reached disk
        shutil.rmtree(redis_server.workdir)
        shutil.copytree(backup, redis_server.workdir)
        other = RedisServer(redis_server.workdir).start()  # controllers carry on first
        oc = other.client()
        for i in (7, 8, 9, 10):
            oc.xadd(KEYS.commands("d"), point(i))
        oc.close()
        other.stop()
        redis_server.start()
        c = redis_server.client()
        fold, _ = read_state(c, KEYS, "d", Settings())
        c.close()
        want = [int(v) for v in fold.figures["p"].data["t"]]
        await until(lambda: page.data("p").get("t") == want, what="the page equal to the fold")
        await page.close()
        return want

    want = asyncio.run(asyncio.wait_for(main(), 120))
    assert want == [0, 1, 2, 7, 8, 9, 10]
    deadline = time.monotonic() + 10
    while inst.metrics().get("fleet_history_rewinds_total") != 1:
        assert time.monotonic() < deadline, "fleet_history_rewinds_total is not 1"
        time.sleep(0.1)


def test_admin_page_shows_history_rewinds(client, auth, fleet_bus, web_settings):
    """Instances report their rewinds in the heartbeat; the admin page sums and shows them."""
    from app.bus.connection import async_client
    from app.bus.heartbeat import write_heartbeat

    async def beat():
        c = async_client(web_settings)
        for n, rewinds in (("bokeh_01", 2), ("bokeh_02", 1)):
            await write_heartbeat(c, fleet_bus.keys, n, {"sessions": 0, "history_rewinds": rewinds}, 30)
        await c.aclose()

    auth.login("root")
    assert 'id="history-rewinds"' not in client.get("/admin/panel").get_data(as_text=True)
    asyncio.run(beat())
    assert client.get("/admin/status.json").get_json()["history_rewinds"] == 3
    panel = client.get("/admin/panel").get_data(as_text=True)
    assert 'id="history-rewinds"' in panel and "went backwards 3 time" in panel
