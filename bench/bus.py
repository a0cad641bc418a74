"""Benchmark of the control plane: publish-to-fold latency and fold throughput.

Starts its own redis-server on a free loopback port, then measures in one run:

* the floor: Redis round trip (PING) p50/p99 from Python;
* publish-to-fold latency (XADD by a publisher -> folded by every reader) p50/p99/max
  with 1, 4 and 16 reader processes, each a real :class:`app.bus.reader.Reader`;
* how many commands per second one reader folds (catch-up of a preloaded stream).

Usage: .venv/bin/python bench/bus.py [--rate 200] [--seconds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis  # (bench harness only; the product's Redis code is in app/bus)

from app.bus import registry
from app.bus.keys import Keys
from app.bus.reader import Reader
from app.settings import Settings
from fleet_testing.helpers import LINE

KEYS = Keys("fleet")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(tmp: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
                             "--bind", "127.0.0.1", "--dir", tmp, "--save", "", "--appendonly", "yes"],
                            stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not start")


def pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max())}


class Timing:
    def __init__(self) -> None:
        self.latencies: list[float] = []

    def on_reset(self, *a):
        pass

    def on_rejected(self, *a):
        pass

    def on_command(self, dashboard, entry_id, cmd, state):
        if cmd.ts is not None:
            self.latencies.append(time.time() * 1000 - cmd.ts)


def reader_proc(url: str, ready, done, out) -> None:
    async def main():
        timing = Timing()
        reader = Reader(Settings(redis_url=url, block_ms=1000), timing)
        reader.start()
        await reader.wait_caught_up(30)
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        await reader.stop()
        out.put(timing.latencies)

    asyncio.run(main())


def latency_run(url: str, readers: int, rate: float, seconds: float) -> dict:
    ctx = mp.get_context("fork")
    done = ctx.Event()
    out = ctx.Queue()
    readies = [ctx.Event() for _ in range(readers)]
    procs = [ctx.Process(target=reader_proc, args=(url, readies[i], done, out)) for i in range(readers)]
    for p in procs:
        p.start()
    for ev in readies:
        ev.wait(60)
    client = redis.Redis.from_url(url)
    n = int(rate * seconds)
    t0 = time.perf_counter()
    for i in range(n):
        target = t0 + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        client.xadd(KEYS.commands("lat"), {"op": "stream", "name": "p", "ts": f"{time.time() * 1000:.3f}",
                                           "data": json.dumps({"t": [i], "y": [i]})})
    done.set()
    lat: list[float] = []
    for _ in procs:
        lat.extend(out.get(timeout=60))
    for p in procs:
        p.join(10)
    res = pct(lat)
    res["expected"] = n * readers
    return res


def fold_throughput(url: str, n: int) -> dict:
    client = redis.Redis.from_url(url)
    registry.create_dashboard(client, KEYS, "thr")
    pipe = client.pipeline(transaction=False)
    pipe.xadd(KEYS.commands("thr"), LINE)
    for i in range(n):
        pipe.xadd(KEYS.commands("thr"), {"op": "stream", "name": "p", "data": json.dumps({"t": [i], "y": [i]})})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()

    async def main():
        reader = Reader(Settings(redis_url=url, block_ms=1000, max_figure_rows=10_000))
        t = time.perf_counter()
        reader.start()
        await reader.wait_caught_up(300)
        elapsed = time.perf_counter() - t
        await reader.stop()
        return elapsed

    elapsed = asyncio.run(main())
    registry.delete_dashboard(client, KEYS, "thr")
    return {"commands": n, "seconds": elapsed, "commands_per_s": n / elapsed}


def rtt(url: str, n: int = 5000) -> dict:
    client = redis.Redis.from_url(url)
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        client.ping()
        samples.append((time.perf_counter() - t) * 1000)
    return pct(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200, help="commands per second for the latency runs")
    ap.add_argument("--seconds", type=float, default=5, help="duration of each latency run")
    ap.add_argument("--readers", default="1,4,16", help="comma-separated reader-process counts")
    ap.add_argument("--fold-commands", type=int, default=20_000, help="size of the throughput run")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="fleet-bench-")
    proc, port = start_redis(tmp)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        registry.create_dashboard(client, KEYS, "lat")
        client.xadd(KEYS.commands("lat"), LINE)
        results = {"machine": {"cores": os.cpu_count()}, "redis_rtt_ms": rtt(url)}
        print(f"Redis round trip (PING)     p50 {results['redis_rtt_ms']['p50']:.3f} ms  "
              f"p99 {results['redis_rtt_ms']['p99']:.3f} ms")
        results["latency_ms"] = {}
        for n in [int(x) for x in args.readers.split(",")]:
            res = latency_run(url, n, args.rate, args.seconds)
            results["latency_ms"][n] = res
            print(f"publish->fold, {n:2d} readers  p50 {res['p50']:.3f} ms  p99 {res['p99']:.3f} ms  "
                  f"max {res['max']:.2f} ms  ({res['n']}/{res['expected']} deliveries, {args.rate:.0f} cmd/s)")
        thr = fold_throughput(url, args.fold_commands)
        results["fold"] = thr
        print(f"one reader folds            {thr['commands_per_s']:.0f} commands/s "
              f"({thr['commands']} 1-row stream commands in {thr['seconds']:.2f} s)")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
