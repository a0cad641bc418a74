"""bench/chaos.py at test size: every fault type once, on a fixed schedule, then the
full verification (fold in Redis, every session on every instance).

Real stack (supervisord, Redis with AOF, gunicorn, nginx, two Bokeh instances, the
compactor); about 75 s of wall time on 2 cores.  The longer random runs and their
figures are in docs/reliability.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import chaos  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("chaos")]


@pytest.mark.timeout(240)
def test_chaos_every_fault_once_nothing_lost_nothing_doubled():
    cfg = chaos.Config(seconds=42, instances=2, dashboards=1, sessions=4, controllers=2, rate=12,
                       other_rate=3, seed=5, schedule=chaos.FAULTS, fresh=1, settle=60)
    lines: list[str] = []
    report = chaos.run(cfg, log=lines.append)
    summary = report.summary()
    print("\n".join(lines) + "\n\n" + summary)
    assert report.fault_counts == {kind: 1 for kind in chaos.FAULTS}, summary
    assert not any(f["detail"].startswith(("injection error", "skipped")) for f in report.faults), report.faults
    assert report.acked["chaos0"] > 300, summary
    fold = report.fold["chaos0"]
    assert fold["present"] >= report.acked["chaos0"] and fold["missing"] == fold["duplicates"] == 0, summary
    kinds = {(s["kind"], s["instance"]) for s in report.sessions}
    assert {("fresh-direct", "bokeh_01"), ("fresh-direct", "bokeh_02"),
            ("fresh-nginx", "bokeh_01"), ("fresh-nginx", "bokeh_02")} <= kinds, summary
    assert report.ok, summary
