"""Soak: memory and latency over time on the whole stack, sessions opening and closing.

Starts a real stack under supervisord (like bench/stack.py), keeps ``--sessions``
sessions open through nginx, first for ``--steady-minutes`` without churn (the p99 to
compare with), then in a loop closes ``--churn`` of them, opens as many
new ones (fresh signed token from Flask each time) and waits a second, while a controller streams
``--rate`` commands/s of ``--rows`` rows.  Every ``--sample`` seconds it prints one row:
RSS of each instance, nginx, gunicorn and Redis, live sessions the instances report,
and latency XADD -> receipt (p50/p99/max) over that window.

At the end it fits a line through the samples after the first quarter (warm-up) and
prints the drift per 10 minutes of instance RSS and of latency p99, and says FLAT
when both stay under ``--max-rss-drift`` MB and ``--max-p99-drift`` ms per 10 minutes.
JSON and a PNG go under bench/results/ (or --out).  Exit status 1 when not flat.

    .venv/bin/python bench/soak.py                   # 10 minutes
    .venv/bin/python bench/soak.py --minutes 2 --sample 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from app.bus.connection import async_client
from app.bus.keys import Keys
from app.control import columns
from bench.stack import PASSWORD, USER, Bench, machine
from bench.wsclient import LightClient, children, pct, rss_bytes, settle, stream_fields
from fleet_testing.stack import Stack

ROOT = Path(__file__).resolve().parents[1]


def rss_by_program(stack: Stack) -> dict[str, float]:
    """MB per supervisord program (nginx and gunicorn with their workers)."""
    out: dict[str, float] = {}
    for name, (_state, pid) in stack.status().items():
        if not pid:
            continue
        try:
            total = rss_bytes(pid) + sum(rss_bytes(c) for c in children(pid))
        except OSError:
            continue
        out[name.split(":")[-1]] = total / 2**20
    return out


def drift(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope, per 10 minutes."""
    if len(ts) < 2:
        return float("nan")
    return float(np.polyfit(ts, ys, 1)[0]) * 600


async def soak(stack: Stack, args) -> list[dict]:
    b = Bench(stack, args)
    await b.web.login(USER, PASSWORD)
    b.replace("soak", 1000)
    await asyncio.sleep(1.0)
    sessions: list[LightClient] = []
    await b.open("soak", args.sessions, sessions)
    key = Keys(b.settings.key_prefix).commands("soak")
    redis = async_client(b.settings)
    stop = asyncio.Event()
    counts = {"opened": 0, "closed": 0, "failed": 0}

    async def publisher() -> None:
        period, t_next, seq = 1.0 / args.rate, time.perf_counter(), 0
        while not stop.is_set():
            seq += 1
            fields = stream_fields(seq, args.rows)
            b.sent[seq] = time.perf_counter()
            await redis.xadd(key, fields)
            b.sent.pop(seq - int(args.rate * 60), None)  # keep a minute of send times
            t_next += period
            await asyncio.sleep(max(0.0, t_next - time.perf_counter()))

    async def churn() -> None:
        while not stop.is_set():
            await asyncio.sleep(1.0)
            for c in random.sample(sessions, min(args.churn, len(sessions))):
                sessions.remove(c)
                c.close()
                counts["closed"] += 1
            try:
                new: list[LightClient] = []
                await b.open("soak", args.churn, new)
                sessions.extend(new)
                counts["opened"] += len(new)
            except Exception as exc:  # a refused session is a finding, not a crash of the soak
                counts["failed"] += 1
                print(f"   open failed: {exc!r}", flush=True)

    tasks = [asyncio.create_task(publisher())]
    samples: list[dict] = []
    t0 = time.perf_counter()
    steady_s = args.steady_minutes * 60
    churning = False
    print(f"{'t/s':>5} {'inst RSS MB':>20} {'nginx':>6} {'web':>6} {'redis':>6} {'live':>10} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'opened':>7} {'closed':>7}", flush=True)
    settle(b.raw, b.sent, b.lat)
    b.lat.clear()
    while time.perf_counter() - t0 < args.minutes * 60 + steady_s:
        if not churning and time.perf_counter() - t0 >= steady_s:  # the same load, now with churn
            churning = True
            tasks.append(asyncio.create_task(churn()))
        await asyncio.sleep(args.sample)
        settle(b.raw, b.sent, b.lat)
        window = b.lat[:]
        b.lat.clear()
        mem = rss_by_program(stack)
        inst = [v for k, v in sorted(mem.items()) if k.startswith("bokeh")]
        live = b.spread("soak")
        s = {"t": time.perf_counter() - t0, "phase": "churn" if churning else "steady",
             "instance_rss_mb": inst, "nginx_rss_mb": mem.get("nginx", 0.0),
             "web_rss_mb": mem.get("web", 0.0), "redis_rss_mb": mem.get("redis", 0.0), "live_sessions": live,
             "client_sessions": len(sessions), "p50_ms": pct(window, 50), "p99_ms": pct(window, 99),
             "max_ms": max(window) * 1000 if window else float("nan"), "updates": len(window), **counts}
        samples.append(s)
        print(f"{s['t']:5.0f} {' '.join(f'{v:6.1f}' for v in inst):>20} {s['nginx_rss_mb']:6.1f} "
              f"{s['web_rss_mb']:6.1f} {s['redis_rss_mb']:6.1f} {str(live):>10} {s['p50_ms']:7.1f} "
              f"{s['p99_ms']:7.1f} {s['max_ms']:7.0f} {counts['opened']:7d} {counts['closed']:7d}", flush=True)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in sessions:
        c.close()
    await redis.aclose()
    await b.redis.aclose()
    return samples


def verdict(samples: list[dict], args) -> dict:
    quiet = [s["p99_ms"] for s in samples if s.get("phase") == "steady"][1:]  # the first one warms up
    samples = [s for s in samples if s.get("phase", "churn") == "churn"]
    steady = samples[len(samples) // 4:]
    ts = [s["t"] for s in steady]
    rss = [sum(s["instance_rss_mb"]) for s in steady]
    p99 = [s["p99_ms"] for s in steady]
    out = {"rss_drift_mb_per_10min": drift(ts, rss), "p99_drift_ms_per_10min": drift(ts, p99),
           "rss_mb_first": rss[0] if rss else float("nan"), "rss_mb_last": rss[-1] if rss else float("nan"),
           "p99_ms_median": float(np.median(p99)) if p99 else float("nan"),
           "p99_ms_median_without_churn": float(np.median(quiet)) if quiet else float("nan")}
    out["p99_ratio_churn_to_steady"] = out["p99_ms_median"] / out["p99_ms_median_without_churn"]
    out["flat"] = bool(abs(out["rss_drift_mb_per_10min"]) <= args.max_rss_drift
                       and out["p99_drift_ms_per_10min"] <= args.max_p99_drift)
    return out


def plot(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i in range(len(samples[0]["instance_rss_mb"])):
        ax.plot(t, [s["instance_rss_mb"][i] if i < len(s["instance_rss_mb"]) else np.nan for s in samples],
                label=f"instance {i + 1}")
    ax.plot(t, [s["nginx_rss_mb"] for s in samples], label="nginx")
    ax.set(xlabel="minutes", ylabel="RSS MB", title="memory", ylim=(0, None))
    ax.legend(fontsize=7)
    ax2.plot(t, [s["p50_ms"] for s in samples], label="p50")
    ax2.plot(t, [s["p99_ms"] for s in samples], label="p99")
    ax2.set(xlabel="minutes", ylabel="ms, XADD to receipt", title="latency", ylim=(0, None))
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    doc_head, doc_rest = __doc__.split("\n\n", 1)
    ap = argparse.ArgumentParser(description=doc_head, epilog=doc_rest,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10, help="duration (default 10)")
    ap.add_argument("--instances", type=int, default=2, help="Bokeh instances (default 2)")
    ap.add_argument("--sessions", type=int, default=100, help="sessions kept open (default 100)")
    ap.add_argument("--churn", type=int, default=5,
                    help="sessions closed and reopened per round; a round is the opens plus 1 s (default 5)")
    ap.add_argument("--rate", type=float, default=10, help="commands/s (default 10)")
    ap.add_argument("--steady-minutes", type=float, default=1.5,
                    help="the same load without churn first, for the p99 ratio (default 1.5)")
    ap.add_argument("--rows", type=int, default=10, help="rows per command (default 10)")
    ap.add_argument("--sample", type=float, default=30, help="seconds per sample row (default 30)")
    ap.add_argument("--max-rss-drift", type=float, default=20,
                    help="MB per 10 min of total instance RSS still called flat (default 20)")
    ap.add_argument("--max-p99-drift", type=float, default=25,
                    help="ms per 10 min of p99 latency still called flat (default 25)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json",
                    help="JSON output; the PNG goes next to it (default bench/results/soak.json)")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    columns.warm_up()
    stack = Stack(instances=args.instances)
    print(f"soak: {args.minutes:g} min, {args.instances} instances, {args.sessions} sessions, churn "
          f"{args.churn}/s, {args.rate:g} cmd/s x {args.rows} rows", flush=True)
    try:
        stack.start_healthy()
        stack.add_user(USER, PASSWORD)
        samples = asyncio.run(soak(stack, args))
    finally:
        stack.stop()
    v = verdict(samples, args)
    print(f"instance RSS {v['rss_mb_first']:.0f} -> {v['rss_mb_last']:.0f} MB, drift "
          f"{v['rss_drift_mb_per_10min']:+.1f} MB/10 min; p99 median {v['p99_ms_median']:.1f} ms, drift "
          f"{v['p99_drift_ms_per_10min']:+.1f} ms/10 min (after the first quarter) -> "
          f"{'FLAT' if v['flat'] else 'NOT FLAT'}; p99 median with churn {v['p99_ms_median']:.1f} ms vs "
          f"{v['p99_ms_median_without_churn']:.1f} ms without (x{v['p99_ratio_churn_to_steady']:.2f}; "
          f"load average {os.getloadavg()[0]:.1f})")
    args.out.write_text(json.dumps({"machine": machine(), "params": {k: str(x) if isinstance(x, Path) else x
                                                                     for k, x in vars(args).items()},
                                    "samples": samples, "verdict": v}, indent=1, default=float))
    plot(samples, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0 if v["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
