"""Pure helpers of the admin page and index: times for people, and the bounded
"who is viewing what" instances put in their heartbeats."""

from __future__ import annotations

import pytest

from app.bus.heartbeat import viewers, who_views
from app.web import humanize


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (0.25, "0.25 s"), (12.3, "12 s"), (65, "1 min 5 s"), (3600, "1 h"), (3700, "1 h 1 min"),
    (90000, "1 d 1 h"), (None, "-"), ("x", "-"), (True, "-"),
])
def test_duration(seconds, text):
    assert humanize.duration(seconds) == text


def test_ago_and_times():
    assert humanize.ago(1000, now=1000.4) == "just now"
    assert humanize.ago(1000, now=1200) == "3 min 20 s ago"
    assert humanize.ago(5000, now=1000) == "in 1 h 6 min"
    assert humanize.ago(None) == "never" and humanize.when(None) == "-"
    assert humanize.id_time("1700000000123-4") == 1700000000.123
    assert humanize.id_time("0-1") is None and humanize.id_time("garbage") is None
    assert humanize.ms_time("1700000000000") == 1700000000.0
    tag = str(humanize.time_tag(1700000000))
    assert tag.startswith('<time datetime="2023-11-14T22:13:20+00:00" title="2023-11-14 ') and "ago</time>" in tag
    assert humanize.size(812) == "812 B" and humanize.size(5000) == "4.9 KiB"


def test_viewers_are_bounded_and_merged():
    pairs = [("sales", "alice")] * 3 + [("sales", f"u{i:03d}") for i in range(60)] + [("ops", "bob")]
    v = viewers(pairs, limit=10)
    assert list(v) == ["ops", "sales"]
    assert v["sales"]["users"]["alice"] == 3 and len(v["sales"]["users"]) == 10
    assert v["sales"]["more_users"] == 51 and v["ops"] == {"users": {"bob": 1}, "more_users": 0}
    merged = who_views([{"id": "a", "viewers": v}, {"id": "b", "viewers": {"sales": {"users": {"alice": 1}}}},
                        {"id": "c"}, {"id": "d", "viewers": "junk"}])
    assert merged["sales"]["users"]["alice"] == 4 and merged["sales"]["instances"] == ["a", "b"]
    assert merged["sales"]["more_users"] == 51 and merged["ops"]["instances"] == ["a"]
