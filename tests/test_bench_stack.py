"""bench/stack.py end to end at toy size, so the benchmark cannot rot unnoticed.

A real run through nginx with tokens from Flask: every session must receive every
command, the floors and the Chromium page load must be measured, JSON and PNG written.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fleet_testing.stack import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.xdist_group("bench_stack")]


def test_stack_bench_small_run_delivers_everything(tmp_path):
    out = tmp_path / "stack.json"
    res = subprocess.run(
        [sys.executable, "bench/stack.py", "--instances", "2", "--sessions", "4", "--rate", "10",
         "--no-rate", "--rows", "1,1000", "--detail-sessions", "4", "--seconds", "1",
         "--page-loads", "1", "--targets", "6x5", "--target-instances", "1", "--client-procs", "2", "--naive-ref", "",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads(out.read_text())
    points = data["sessions_series"] + data["rows_series"] + data["targets"]
    assert [(p["sessions"], p["rate"]) for p in data["targets"]] == [(6, 5.0)]
    # the targets' connections held by 2 worker processes, the series' by the bench itself
    assert [(p["client_procs"], len(p["load_generator_procs_cpu_share"])) for p in data["targets"]] == [(2, 3)]
    assert all(p["client_procs"] == 0 for p in data["sessions_series"])
    for p in data["sessions_series"] + data["targets"]:  # the floor measured beside each point
        assert p["floor_us_per_write"] > 0 and p["ratio_to_floor"] > 0
        assert 0 < p["load_generator_cpu_share"] < 1
    assert [p["rows"] for p in data["rows_series"]] == [1, 1000]
    for p in points:
        assert p["expected"] == p["commands"] * p["sessions"] > 0
        assert p["delivered"] == p["expected"], p
        assert 0 < p["p50_ms"] <= p["max_ms"]
        assert sum(p["spread"]) >= p["sessions"]  # the instances report them (closed ones linger)
    assert all(data["floors"][k]["p50_ms"] > 0 for k in ("redis_ping", "websocket_echo", "polling"))
    assert data["page_load"] and data["page_load"][0]["p50_ms"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000
