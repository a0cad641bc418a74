"""The reader's history judgement: has the stream behind a reader lost or rewritten
what the reader already folded?  Pure (no I/O): it compares a :class:`Feed`'s position
with what :class:`app.bus.log.StreamInfo` says about the stream now.

What it catches, and how:

* stream deleted (``info`` None) after we folded entries that no snapshot holds;
* deleted and recreated, or an older copy of it: ``entries-added`` went down, or the
  stream holds only entries newer than ours although nothing was ever removed from
  it (so it never held ours);
* rewound: ``last-generated-id`` is behind our last id;
* entries after our position removed (XDEL: ``max-deleted-entry-id`` ahead of us);
* trimmed past us (XTRIM keeps ``max-deleted-entry-id``, but ``entries-added`` >
  ``length`` and the first entry is after ours): only the snapshot can catch us up;
* (:func:`missing_last_entry`, with one more lookup) our last entry missing under
  newer ones: the tail we folded was lost and new commands landed on the shorter
  history.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.bus.log import StreamInfo, id_tuple
from app.control.state import DashboardState


@dataclass
class Feed:
    """The folded state of one dashboard and the id of the last entry folded."""

    state: DashboardState
    last_id: str = "0-0"
    snapshot_id: str = "0-0"  # id of the snapshot this feed started from
    entries_added: int | None = None  # XINFO entries-added when last checked


class HistoryLost(Exception):
    """Entries after our position are gone; resync from the snapshot."""


class HistoryRewound(HistoryLost):
    """Redis's history ends before (or no longer holds) the entry we applied last."""


def judge(feed: Feed, info: StreamInfo | None) -> None:
    """Raise :class:`HistoryLost` (or :class:`HistoryRewound`) if the stream described by
    ``info`` (None: no such stream) lost what ``feed`` folded; else remember its
    ``entries_added`` for the next judgement."""
    if info is None:
        if feed.last_id != "0-0" and feed.last_id != feed.snapshot_id:
            raise HistoryLost(f"stream gone while at {feed.last_id}")
        return
    if feed.entries_added is not None and info.entries_added < feed.entries_added:
        raise HistoryRewound(f"stream was deleted and recreated or rewound (entries added: "
                             f"{info.entries_added}, we saw {feed.entries_added})")
    feed.entries_added = info.entries_added
    mine = id_tuple(feed.last_id)
    if id_tuple(info.last_generated_id) < mine:
        raise HistoryRewound(f"stream rewound: last generated id {info.last_generated_id} is "
                             f"behind our {feed.last_id}")
    if info.max_deleted_id != "0-0" and id_tuple(info.max_deleted_id) > mine:
        raise HistoryLost(f"entries after {feed.last_id} were deleted (max deleted {info.max_deleted_id})")
    if info.first_id is None or id_tuple(info.first_id) <= mine:
        return
    if info.entries_added > info.length:
        raise HistoryLost(f"stream trimmed past our position {feed.last_id} (first entry now {info.first_id})")
    if feed.last_id not in ("0-0", feed.snapshot_id):
        # nothing was ever removed, yet every entry is newer than ours: not our stream
        raise HistoryRewound(f"stream was recreated: it never held our last entry {feed.last_id} "
                             f"(first entry {info.first_id}, nothing trimmed)")


def missing_last_entry(last_id: str, info: StreamInfo | None, present: bool) -> str | None:
    """Why the stream went backwards behind a reader at ``last_id``, or None.

    ``present``: whether the stream still holds the entry ``last_id``.  An entry may be
    missing legitimately only when it was never there (``0-0``) or the stream was
    trimmed past it (its first entry is after it, or it is empty); otherwise Redis lost
    the tail we applied and possibly took new entries on top of the shorter history.
    """
    if present or last_id == "0-0" or info is None:
        return None
    if info.first_id is None or id_tuple(info.first_id) > id_tuple(last_id):
        return None
    return (f"stream went backwards: our last applied entry {last_id} is gone "
            f"(history now ends at {info.last_generated_id} or was rewritten after it)")
