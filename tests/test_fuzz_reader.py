"""Fuzz the wire format through the real reader and a real Redis.

Thousands of malformed entries (random fields, random bytes, mutated valid
commands) interleaved with valid ones: the reader never crashes or stalls, every
bad entry is rejected with a reason (and recorded), every valid one is applied.
"""

from __future__ import annotations

import asyncio
import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.bus import registry
from app.bus.keys import Keys
from app.bus.reader import Reader
from app.control import snapshot as snap
from app.control.protocol import OP_FIELDS, OPS, Rejected, parse
from app.control.state import EMPTY, step
from app.settings import Settings

KEYS = Keys("fleet")
LINE = {b"op": b"replace", b"name": b"p", b"kind": b"line", b"data": b'{"t":[0],"y":[0]}'}

field_names = st.one_of(
    st.sampled_from(sorted({f for fs in OP_FIELDS.values() for f in fs} | {"op", "id", "ts"})),
    st.text(min_size=1, max_size=8),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=12,
)
values = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20).map(str.encode),
    st.sampled_from(OPS).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.just(b"[" * 2000 + b"]" * 2000),
    st.just(b'{"t":[1e999],"y":[1]}'),
)


@st.composite
def malformed(draw):
    kind = draw(st.integers(0, 2))
    if kind == 0:  # random fields
        return draw(st.dictionaries(field_names.map(str.encode), values, min_size=1, max_size=6))
    base = {b"op": b"stream", b"name": b"p", b"data": b'{"t":[1],"y":[2]}'}
    if kind == 1:  # one field of a valid command replaced by garbage
        key = draw(st.sampled_from(sorted(base)))
        base[key] = draw(values)
        return base
    op = draw(st.sampled_from(OPS))  # a valid-looking op with random fields of that op
    fields = {b"op": op.encode()}
    for name in draw(st.lists(st.sampled_from(sorted(OP_FIELDS[op])), max_size=4)):
        fields[name.encode()] = draw(values)
    return fields


def valid(i: int) -> dict:
    return {b"op": b"stream", b"name": b"p", b"data": json.dumps({"t": [i], "y": [i]}).encode()}


async def _read_all(url: str, expected_last: str):
    reasons: dict[str, str] = {}

    class L:
        def on_reset(self, *a):
            pass

        def on_command(self, *a):
            pass

        def on_rejected(self, dashboard, entry_id, fields, reason):
            reasons[entry_id] = reason

    reader = Reader(Settings(redis_url=url, block_ms=100), L())
    reader.start()
    await reader.wait_caught_up(60)
    deadline = time.monotonic() + 60
    while reader.feeds["d"].last_id != expected_last:
        assert time.monotonic() < deadline, "reader stalled"
        await asyncio.sleep(0.02)
    state, stats = reader.feeds["d"].state, dict(reader.stats)
    await reader.stop()
    return state, stats, reasons


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                 HealthCheck.large_base_example])
@given(st.lists(malformed(), min_size=200, max_size=400))
def test_fuzzed_entries_never_crash_or_block_the_reader(redis_server, garbage):
    r = redis_server.client()
    r.flushall()
    registry.create_dashboard(r, KEYS, "d")
    key = KEYS.commands("d")
    r.xadd(key, LINE)
    expected = EMPTY
    expected, _ = step(expected, parse(LINE))
    bad_ids, good = [], 0
    pipe = r.pipeline(transaction=False)
    for i, fields in enumerate(garbage):
        pipe.xadd(key, fields)
        pipe.xadd(key, valid(i) if i % 20 else LINE)  # LINE re-creates p if garbage removed it
    ids = [x.decode() for x in pipe.execute()]
    for i, fields in enumerate(garbage):
        try:  # a fuzzed entry may be valid by chance: the oracle is the pure fold
            expected, _ = step(expected, parse(fields))
        except Rejected:
            bad_ids.append(ids[2 * i])
        try:  # a fuzzed entry may have removed or changed figure p
            expected, _ = step(expected, parse(valid(i) if i % 20 else LINE))
            good += 1
        except Rejected:
            bad_ids.append(ids[2 * i + 1])
    state, stats, reasons = asyncio.run(_read_all(redis_server.url, ids[-1]))
    assert stats.get("listener_errors", 0) == 0
    assert sorted(reasons) == sorted(bad_ids)
    assert all(reasons.values()) and not any(v.startswith("internal error") for v in reasons.values())
    assert state.applied == expected.applied
    assert snap.digest(state) == snap.digest(expected), "the reader folds exactly what the pure fold does"
    assert good >= len(garbage) // 20, "valid commands behind the garbage were applied"
    assert r.xlen(KEYS.rejected("d")) == len(bad_ids)
