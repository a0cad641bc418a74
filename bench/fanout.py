"""Fan-out benchmark: N instances x M sessions, K commands/s of R rows.

Starts its own redis-server and ``fleetctl instance`` processes on free ports, opens
M headless Bokeh sessions (real websocket, Bokeh protocol, signed tokens) spread over
the instances, publishes ``stream`` commands with XADD at K/s and measures, for every
(command, session) pair, the time from just before XADD to receipt of the PATCH-DOC
by the client.  Prints latency p50/p99/max, instance CPU seconds per delivered
session-update (from /proc) and RSS per session.  Sessions are added incrementally
(10 -> 100 -> 300) on the same instances.

Baseline: the old recipe, a JSON endpoint polled every second by each page (what
``AjaxDataSource(polling_interval=1000)`` does), fed by the same publisher; prints
its latency and the ratio.

    .venv/bin/python bench/fanout.py                 # the full series (a few minutes)
    .venv/bin/python bench/fanout.py --instances 1 --sessions 10 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import uvloop
from tornado.httpclient import AsyncHTTPClient

from app.bus.connection import async_client, sync_client
from app.bus.keys import Keys
from app.bus.publisher import publish
from app.bus.registry import create_dashboard
from app.control import columns, encode
from app.settings import load
from bench import wsclient
from bench.wsclient import LightClient, pct
from fleet_testing.bokeh import InstanceProc, allow_viewer, fleet_environment, mint_token
from fleet_testing.ports import free_port
from fleet_testing.redis import RedisServer

ROOT = Path(__file__).resolve().parents[1]


async def publish_for(settings, keys, dashboard, rate, rows, seconds, sent, start_seq):
    """``bench.wsclient.publish_for`` on a client of its own."""
    client = async_client(settings)
    try:
        return await wsclient.publish_for(client, keys.commands(dashboard), rate, rows, seconds, sent, start_seq)
    finally:
        await client.aclose()


async def run_series(args, settings, env, workdir) -> list[dict]:
    keys = Keys(settings.key_prefix)
    sync = sync_client(settings)
    results = []
    seq = 0
    for n_inst in args.instances:
        create_dashboard(sync, keys, f"bench{n_inst}")
        allow_viewer(sync, keys)  # instances admit only tokens of users who may view
        dash = f"bench{n_inst}"
        publish(sync, keys, dash, encode("replace", name="p", kind="line", x="seq", y=["y"],
                                         columns=["seq", "y"], rollover=1000))
        insts = [InstanceProc(env, free_port(), workdir / f"inst-{n_inst}-{i}.log").start() for i in range(n_inst)]
        rss0 = sum(i.rss_bytes() for i in insts)
        clients: list[LightClient] = []
        lat: list[float] = []
        sent: dict[int, float] = {}
        for m in args.sessions:
            t_open = time.perf_counter()
            while len(clients) < m:
                batch = []
                for _ in range(min(20, m - len(clients))):
                    inst = insts[len(clients) % n_inst]
                    c = LightClient(inst.ws_url, mint_token(settings.secret_key, dash)[1], sent, lat)
                    clients.append(c)
                    batch.append(c.connect())
                await asyncio.gather(*batch)
            open_s = time.perf_counter() - t_open
            await asyncio.sleep(1.0)
            rss = sum(i.rss_bytes() for i in insts)
            # warm-up: the first commands after start-up pay for imports and caches
            seq = await publish_for(settings, keys, dash, args.rate, args.rows, 2.0, sent, seq)
            lat.clear()
            sent.clear()
            cpu0 = sum(i.cpu_seconds() for i in insts)
            seq = await publish_for(settings, keys, dash, args.rate, args.rows, args.seconds, sent, seq)
            cpu = sum(i.cpu_seconds() for i in insts) - cpu0
            expected = len(sent) * m
            r = {"instances": n_inst, "sessions": m, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                 "max_ms": max(lat) * 1000 if lat else float("nan"), "delivered": len(lat), "expected": expected,
                 "cpu_ms_per_update": cpu / max(1, len(lat)) * 1000,
                 "rss_mb_per_session": (rss - rss0) / m / 2**20, "open_s": open_s}
            results.append(r)
            print(f"{n_inst} inst x {m:4d} sessions: latency p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                  f"max {r['max_ms']:7.1f} ms | delivered {len(lat)}/{expected} | CPU {r['cpu_ms_per_update']:.3f} ms "
                  f"per session-update | RSS {r['rss_mb_per_session']:.2f} MB/session | opened in {open_s:.0f} s",
                  flush=True)
        for i in insts:
            for name in ("fleet_fanout_seconds", "fleet_command_age_seconds"):
                fan = {k: v for k, v in i.metrics().items() if k.startswith(name)}
                print(f"   instance {name}:", {k.split("le=")[-1].strip('"}'): int(v) for k, v in fan.items()
                                               if "bucket" in k})
        for c in clients:
            c.close()
        for i in insts:
            i.stop()
    sync.close()
    return results


async def polling_baseline(args) -> dict:
    """Pages polling a JSON endpoint every second (AjaxDataSource), fed at the same rate."""
    from tornado.web import Application, RequestHandler

    latest = {"seq": 0}

    class Data(RequestHandler):
        def get(self):
            self.write(json.dumps({"seq": [latest["seq"]], "y": [0.0]}))

    port = free_port()
    app = Application([(r"/data", Data)])
    server = app.listen(port, "127.0.0.1")
    http = AsyncHTTPClient()
    sent: dict[int, float] = {}
    lat: list[float] = []
    stop = asyncio.Event()

    async def page():
        seen = 0
        await asyncio.sleep(random.random())  # pages load at random phases
        while not stop.is_set():
            r = await http.fetch(f"http://127.0.0.1:{port}/data")
            now = time.perf_counter()
            s = json.loads(r.body)["seq"][-1]
            for k in range(seen + 1, s + 1):  # everything published since the last poll
                if k in sent:
                    lat.append(now - sent[k])
            seen = max(seen, s)
            await asyncio.sleep(1.0)

    pages = [asyncio.create_task(page()) for _ in range(args.baseline_pages)]

    async def publisher():
        period, t_next = 1.0 / args.rate, time.perf_counter()
        for seq in range(1, int(args.rate * args.seconds) + 1):
            sent[seq] = time.perf_counter()
            latest["seq"] = seq
            t_next += period
            await asyncio.sleep(max(0.0, t_next - time.perf_counter()))
        await asyncio.sleep(1.2)
        stop.set()

    await publisher()
    for p in pages:
        p.cancel()
    server.stop()
    return {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat) * 1000}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--instances", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                    help="instance counts to run, comma-separated (default 1,2)")
    ap.add_argument("--sessions", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100, 300],
                    help="session counts, increasing, comma-separated (default 10,100,300)")
    ap.add_argument("--rate", type=float, default=20.0, help="commands per second (default 20)")
    ap.add_argument("--rows", type=int, default=10, help="rows per command (default 10)")
    ap.add_argument("--seconds", type=float, default=8.0, help="publishing time per point (default 8)")
    ap.add_argument("--baseline-pages", type=int, default=10, help="polling pages in the baseline (default 10)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the AjaxDataSource polling baseline")
    args = ap.parse_args(argv)

    columns.warm_up()  # the publisher encodes Arrow: pay its imports before measuring
    encode("stream", name="p", data={"seq": np.arange(2), "y": np.zeros(2)})
    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    redis = RedisServer(workdir / "redis").start()
    env = fleet_environment(redis.url, FLEET_UNUSED_SESSION_LIFETIME_MS="60000")
    settings = load(env=env)
    print(f"bench: rate {args.rate:g} commands/s x {args.rows} rows, {args.seconds:g} s per point; "
          f"redis {redis.url}; logs in {workdir}", flush=True)
    try:
        results = asyncio.run(run_series(args, settings, env, workdir))
        if not args.no_baseline:
            base = uvloop.run(polling_baseline(args))
            print(f"baseline AjaxDataSource-style polling every 1 s ({args.baseline_pages} pages): "
                  f"p50 {base['p50_ms']:.0f} ms  p99 {base['p99_ms']:.0f} ms  max {base['max_ms']:.0f} ms")
            for r in results:
                print(f"  ratio polling/fleet at {r['instances']} inst x {r['sessions']} sessions: "
                      f"p50 {base['p50_ms'] / r['p50_ms']:.0f}x  p99 {base['p99_ms'] / r['p99_ms']:.0f}x")
    finally:
        redis.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
