"""bench/chaos.py at test size: every fault type once, on a fixed schedule, then the
full verification (fold in Redis, every session on every instance).

Real stack (supervisord, Redis with AOF, gunicorn, nginx, two Bokeh instances, the
compactor); about 75 s of wall time on 2 cores.  The longer random runs and their
figures are in docs/reliability.md.
"""

from __future__ import annotations

import pytest

from bench import chaos

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


@pytest.mark.timeout(300)
def test_chaos_sentinel_master_killed_nothing_acked_lost():
    """SIGKILL of the Redis master with Sentinel (replica durability): failover, every
    acknowledged command in the fold exactly once, every session equal to the fold."""
    cfg = chaos.Config(seconds=30, instances=1, dashboards=1, sessions=2, controllers=1, rate=10,
                       other_rate=2, seed=3, schedule=("kill_redis_master",), fresh=1, settle=90,
                       redis_mode="sentinel", durability="replica")
    lines: list[str] = []
    report = chaos.run(cfg, log=lines.append)
    summary = report.summary()
    print("\n".join(lines) + "\n\n" + summary)
    assert report.fault_counts == {"kill_redis_master": 1}, summary
    assert "new master" in report.faults[0]["detail"], report.faults
    assert report.retries > 0, "the publishers never saw the failover"
    fold = report.fold["chaos0"]
    assert fold["missing"] == fold["duplicates"] == fold["lost_in_crash"] == 0, summary
    assert report.ok, summary


@pytest.mark.timeout(300)
def test_chaos_machine_crash_of_lone_redis_loses_only_the_newest_never_diverges():
    """The data dir of the lone Redis rolled back while it is down: acknowledged commands
    of the last ~1.5 s may be lost, nothing older; no duplicates; sessions equal the fold."""
    cfg = chaos.Config(seconds=24, instances=1, dashboards=1, sessions=2, controllers=1, rate=10,
                       other_rate=2, seed=4, schedule=("crash_redis",), fresh=1, settle=90, crash=True)
    lines: list[str] = []
    report = chaos.run(cfg, log=lines.append)
    summary = report.summary()
    print("\n".join(lines) + "\n\n" + summary)
    assert report.fault_counts == {"crash_redis": 1}, summary
    fold = report.fold["chaos0"]
    assert fold["missing"] == fold["duplicates"] == 0, summary
    assert fold["lost_in_crash"] > 0, "the rollback lost nothing: the crash was not simulated"
    assert report.instance_stats and any(st.get("history_rewinds", 0) >= 1
                                         for st in report.instance_stats.values()), summary
    assert report.ok, summary
