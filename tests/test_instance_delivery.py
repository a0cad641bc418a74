"""The fan-out's delivery rules, in-process: one shared document per dashboard, every
update to every viewer exactly once and in order (across cached snapshots, replays and
refreshes), slow viewers cut without slowing the others.

Viewers are :class:`fleet_testing.pages.Page` objects: in-memory connections whose
bytes are decoded into a client-side Bokeh document, the way BokehJS does it.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from app.control import EMPTY, encode, parse, step
from app.instance import sessions, wire
from app.instance.sessions import Fanout
from fleet_testing.pages import Page


class Feed:
    """The reader's side: the folded state, the last id, and the listener calls."""

    def __init__(self, **kw) -> None:
        self.state = EMPTY
        self.n = 0
        self.fanout = Fanout(lambda d: (self.state, f"{self.n}-0") if d == "d" else None, **kw)

    def publish(self, op: str, **params) -> None:
        self.state, resolved = step(self.state, parse(encode(op, **params)))
        self.n += 1
        if resolved is not None:
            self.fanout.on_command("d", f"{self.n}-0", resolved, self.state)

    def stream(self, seq: int) -> None:
        self.publish("stream", name="p", data={"seq": [seq], "y": [seq * 0.5]}, rollover=10_000)


def seqs_received(page: Page) -> list[int]:
    """The seq column the page shows: a command received twice or missed shows here
    (the streams never roll over in these tests)."""
    return [int(v) for v in page.sync().sources()["p"]["seq"]]


def check_page(page: Page, feed: Feed) -> None:
    page.sync()
    want = [float(v) for v in feed.state.figures["p"].data["seq"]]
    assert page.sources()["p"]["seq"] == want


def test_pages_opened_between_commands_get_each_command_once_in_order():
    feed = Feed(pull_cache_seconds=3600)  # one snapshot, then the replay log grows
    feed.publish("replace", name="p", kind="line", data={"seq": [0], "y": [0.0]})
    pages = []
    for i in range(1, 61):
        feed.stream(i)
        if i % 7 == 0:
            pages.append(Page(feed.fanout).pull())
    for page in pages:
        check_page(page, feed)
        # the reply, the replayed updates, OK to the pull (the page is current), live updates
        assert page.kinds[0] == "PULL-DOC-REPLY" and page.kinds.count("OK") == 1
        assert set(page.kinds[1:]) == {"PATCH-DOC", "OK"}
        got = seqs_received(page)
        assert got == sorted(got) and len(got) == len(set(got))  # in order, none twice
    board = feed.fanout.boards["d"]
    assert feed.fanout.stats["snapshots"] == 0  # no loop: served inline, never re-serialised
    assert len(board.replay) == 60 - 7  # built for the first page; later pages got it + these
    assert wire.stats["serialised"] >= 53  # once per command, not per page


def test_refreshed_snapshot_meets_the_replay_exactly():
    feed = Feed(pull_cache_seconds=0)  # every pull refreshes the snapshot
    feed.publish("replace", name="p", kind="line", data={"seq": [0], "y": [0.0]})
    pages = [Page(feed.fanout).pull()]
    for i in range(1, 30):
        feed.stream(i)
        if i % 3 == 0:
            pages.append(Page(feed.fanout).pull())
    for page in pages:
        check_page(page, feed)
        got = seqs_received(page)
        assert len(got) == len(set(got))
    assert feed.fanout.boards["d"].replay == [] or len(feed.fanout.boards["d"].replay) <= 2


def test_updates_during_a_threaded_refresh_are_held_then_sent_once():
    """The snapshot is serialised in a worker thread; commands arriving meanwhile are
    held and applied after it, so pages opened before, during and after all converge."""

    async def main():
        feed = Feed(pull_cache_seconds=0)
        feed.publish("replace", name="p", kind="line", data={"seq": [0], "y": [0.0]})
        first = Page(feed.fanout)
        first.fanout.pull(first.viewer, "r1")
        board = feed.fanout.boards["d"]
        assert board.refreshing and board.waiting  # no snapshot yet: the pull waits for it
        for i in range(1, 20):
            feed.stream(i)  # held while the thread serialises
        held = len(board.held)
        during = Page(feed.fanout)
        feed.fanout.pull(during.viewer, "r2")
        await feed.fanout.drain_all()
        pages = [first, during]
        for i in range(20, 40):
            feed.stream(i)
            if i % 5 == 0:
                page = Page(feed.fanout)
                feed.fanout.pull(page.viewer, f"r{i}")
                pages.append(page)
            await asyncio.sleep(0)
        await feed.fanout.drain_all()
        for page in pages:
            check_page(page, feed)
            got = seqs_received(page)
            assert len(got) == len(set(got)), Counter(got).most_common(3)
        return held

    held = asyncio.run(main())
    assert held == 19


def test_slow_viewer_is_cut_and_the_others_get_everything():
    feed = Feed(viewer_buffer_bytes=20_000)
    feed.publish("replace", name="p", kind="line", data={"seq": [0], "y": [0.0]})
    fast = [Page(feed.fanout).pull() for _ in range(3)]
    slow = Page(feed.fanout).pull()
    slow.stream.slow = True  # its peer stops reading: writes pile up unsent
    for i in range(1, 200):
        feed.stream(i)
    assert slow.closed and slow.closed[0][0] != 1008  # cut (not revoked); the page reconnects
    assert slow.viewer.closed and feed.fanout.stats["viewers_cut"] == 1
    assert len(slow.stream._write_buffer) <= slow.viewer.limit < 40_000  # it stopped at the bound (+ its reply)
    assert feed.fanout.session_count() == {"d": 3}
    for page in fast:
        check_page(page, feed)
        assert seqs_received(page) == list(range(200))
    # the reconnecting page pulls the current state
    again = Page(feed.fanout).pull()
    check_page(again, feed)


def test_big_reply_is_not_cut_by_the_bound_it_is_exempt_from():
    feed = Feed(viewer_buffer_bytes=1_000)
    feed.publish("replace", name="p", kind="line",
                 data={"seq": list(range(5000)), "y": [0.5] * 5000})  # ~80 KB document
    page = Page(feed.fanout)
    page.stream.slow = True
    page.pull()
    assert not page.closed and len(page.stream._write_buffer) > 1_000
    page.stream.slow = False
    page.stream.drain()
    feed.stream(5000)
    check_page(page, feed)


def test_failed_update_closes_the_viewers_and_the_next_pull_rebuilds(monkeypatch):
    feed = Feed()
    feed.publish("replace", name="p", kind="line", data={"seq": [0], "y": [0.0]})
    pages = [Page(feed.fanout).pull() for _ in range(2)]
    board = feed.fanout.boards["d"]

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(board.dd, "apply", boom)
    feed.stream(1)
    assert all(p.closed for p in pages) and "d" not in feed.fanout.boards
    assert feed.fanout.stats["delivery_errors"] == 1
    monkeypatch.undo()
    feed.stream(2)
    fresh = Page(feed.fanout).pull()
    check_page(fresh, feed)
    assert fresh.sources()["p"]["seq"] == [0.0, 1.0, 2.0]


def test_long_replay_drops_the_snapshot(monkeypatch):
    monkeypatch.setattr(sessions, "MAX_REPLAY", 10)
    feed = Feed(pull_cache_seconds=3600)
    feed.publish("replace", name="p", kind="line", data={"seq": [0], "y": [0.0]})
    Page(feed.fanout).pull()
    for i in range(1, 12):
        feed.stream(i)
    board = feed.fanout.boards["d"]
    assert board.snapshot is None and board.replay == []
    late = Page(feed.fanout).pull()  # a fresh snapshot, no history
    check_page(late, feed)
    assert late.kinds == ["PULL-DOC-REPLY", "OK"]


def test_pings_and_revocation():
    feed = Feed()
    feed.publish("replace", name="p", kind="line", data={"seq": [0], "y": [0.0]})
    a, b = Page(feed.fanout).pull(), Page(feed.fanout, user="bob").pull()
    assert feed.fanout.ping_all() == 2
    assert feed.fanout.revoke(b.viewer, "access revoked") == 1
    assert b.closed == [(1008, "access revoked")] and feed.fanout.session_count() == {"d": 1}
    feed.stream(1)
    check_page(a, feed)
    assert feed.fanout.revoke(b.viewer, "again") == 0


def test_a_document_nobody_watches_is_dropped_after_a_while():
    feed = Feed()
    feed.publish("replace", name="p", kind="line", data={"seq": [0], "y": [0.0]})
    page = Page(feed.fanout).pull()
    assert feed.fanout.sweep(now=0.0) == 0
    feed.fanout.close_viewer(page.viewer)
    assert feed.fanout.sweep(now=1.0) == 0  # idle from now on
    assert feed.fanout.sweep(now=1.0 + sessions.IDLE_BOARD_SECONDS - 1) == 0
    assert feed.fanout.sweep(now=1.0 + sessions.IDLE_BOARD_SECONDS) == 1 and "d" not in feed.fanout.boards
    feed.stream(1)  # no document: nothing to apply it to
    check_page(Page(feed.fanout).pull(), feed)  # the next viewer gets a fresh one


def test_a_stale_snapshot_is_refreshed_right_after_the_next_update():
    """Refreshing holds the board's updates: it starts in the gap after an update, not
    in the middle of a stream of them (or after REFRESH_WAIT when none comes)."""

    async def main():
        feed = Feed(pull_cache_seconds=0)
        feed.publish("replace", name="p", kind="line", data={"seq": [0], "y": [0.0]})
        first = Page(feed.fanout)
        feed.fanout.pull(first.viewer, "r0")
        await feed.fanout.drain_all()
        board = feed.fanout.boards["d"]
        page = Page(feed.fanout)
        feed.fanout.pull(page.viewer, "r1")  # served from the stale snapshot at once
        assert page.viewer.live and board.refresh_wanted and not board.refreshing
        feed.stream(1)
        assert board.refreshing and not board.held  # started just after that update
        await feed.fanout.drain_all()
        other = Page(feed.fanout)
        feed.fanout.pull(other.viewer, "r2")
        await asyncio.sleep(sessions.REFRESH_WAIT + 0.2)  # no update comes: refreshed anyway
        await feed.fanout.drain_all()
        assert feed.fanout.stats["snapshots"] == 3
        for p in (page, other):
            check_page(p, feed)

    asyncio.run(main())
