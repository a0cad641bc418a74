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
import os
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
from bench.wsclient import LightClient, pct, settle
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


class OldInstance(InstanceProc):
    """An instance of another revision of the code (``git archive`` of it in ``root``)."""

    def __init__(self, env, port, log_path, root: Path) -> None:
        super().__init__({**env, "PYTHONPATH": str(root)}, port, log_path)
        self.root = root

    def start(self, timeout: float = 30.0):
        import subprocess

        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "instance", "--port", str(self.port)],
                                     cwd=self.root, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        from fleet_testing.ports import wait_port

        wait_port(self.port, timeout)
        deadline = time.monotonic() + timeout
        while self.healthz()[0] != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"old instance not healthy: {self.log()[-2000:]}")
            time.sleep(0.05)
        return self


def checkout(ref: str, workdir: Path) -> Path:
    """``app/`` of git revision ``ref`` in a directory of its own (the naive baseline)."""
    import subprocess

    root = workdir / f"rev-{ref}"
    root.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "app"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root


def lag_over(metrics: dict, seconds: float = 0.005, name: str = "fleet_loop_lag_seconds") -> tuple[int, int]:
    """(samples, samples over ``seconds``) of a loop histogram from an instance's /metrics."""
    total = int(metrics.get(f"{name}_count", 0))
    under = int(metrics.get(f'{name}_bucket{{le="{seconds:g}"}}', total))
    return total, total - under


def stalls(insts) -> tuple[int, int, int]:
    """(samples, timer late > 5 ms, loop busy > 5 ms) summed over the instances."""
    ms = [i.metrics() for i in insts]
    lag = [lag_over(m) for m in ms]
    busy = [lag_over(m, name="fleet_loop_stall_seconds") for m in ms]
    return sum(a for a, _ in lag), sum(b for _, b in lag), sum(b for _, b in busy)


async def run_series(args, settings, env, workdir, old_root: Path | None = None) -> list[dict]:
    keys = Keys(settings.key_prefix)
    sync = sync_client(settings)
    results = []
    seq = 0
    label = "baseline" if old_root else "fleet"
    for n_inst in args.instances:
        dash = f"bench{n_inst}{label}"
        create_dashboard(sync, keys, dash)
        allow_viewer(sync, keys)  # instances admit only tokens of users who may view
        publish(sync, keys, dash, encode("replace", name="p", kind="line", x="seq", y=["y"],
                                         columns=["seq", "y"], rollover=1000))
        if old_root:
            insts = [OldInstance(env, free_port(), workdir / f"old-{n_inst}-{i}.log", old_root).start()
                     for i in range(n_inst)]
        else:
            insts = [InstanceProc(env, free_port(), workdir / f"inst-{n_inst}-{i}.log").start()
                     for i in range(n_inst)]
        rss0 = sum(i.rss_bytes() for i in insts)
        clients: list[LightClient] = []
        lat: list[float] = []
        sent: dict[int, float] = {}
        raw: list = []  # PATCH-DOCs received, decoded into lat by settle() after each point
        for m in args.sessions:
            t_open = time.perf_counter()
            cpu_open0 = sum(i.cpu_seconds() for i in insts)
            added = m - len(clients)
            while len(clients) < m:
                batch = []
                for _ in range(min(20, m - len(clients))):
                    inst = insts[len(clients) % n_inst]
                    c = LightClient(inst.ws_url, mint_token(settings.secret_key, dash)[1], sent, lat, raw=raw,
                                    marker=old_root is None)
                    clients.append(c)
                    batch.append(c.connect())
                await asyncio.gather(*batch)
            open_s = time.perf_counter() - t_open
            open_cpu = sum(i.cpu_seconds() for i in insts) - cpu_open0
            await asyncio.sleep(1.0)
            rss = sum(i.rss_bytes() for i in insts)
            # warm-up: the first commands after start-up pay for imports and caches
            seq = await publish_for(settings, keys, dash, args.rate, args.rows, 2.0, sent, seq)
            raw.clear()
            lat.clear()
            sent.clear()
            cpu0 = sum(i.cpu_seconds() for i in insts)
            seq = await publish_for(settings, keys, dash, args.rate, args.rows, args.seconds, sent, seq)
            cpu = sum(i.cpu_seconds() for i in insts) - cpu0
            settle(raw, sent, lat)
            expected = len(sent) * m
            r = {"code": label, "instances": n_inst, "sessions": m, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                 "max_ms": max(lat) * 1000 if lat else float("nan"), "delivered": len(lat), "expected": expected,
                 "cpu_ms_per_update": cpu / max(1, len(lat)) * 1000,
                 "cpu_us_per_update": cpu / max(1, len(lat)) * 1e6,
                 "rss_mb_per_session": (rss - rss0) / m / 2**20, "rss_kb_per_session": (rss - rss0) / m / 1024,
                 "open_s": open_s, "open_cpu_ms_per_session": open_cpu / max(1, added) * 1000}
            if args.floor:
                f = await wsclient.floor(m, args.floor_bytes, args.rate, min(args.seconds, 5.0))
                r["floor_us_per_write"] = f["us_per_write"]
                r["ratio_to_floor"] = r["cpu_us_per_update"] / f["us_per_write"] if f["us_per_write"] else float("nan")
            results.append(r)
            print(f"[{label}] {n_inst} inst x {m:4d}: latency p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                  f"max {r['max_ms']:7.1f} ms | delivered {len(lat)}/{expected} | CPU {r['cpu_us_per_update']:.1f} us "
                  f"per connection-update" + (f" (floor {r['floor_us_per_write']:.1f} us, ratio "
                                              f"{r['ratio_to_floor']:.2f})" if args.floor else "")
                  + f" | RSS {r['rss_kb_per_session']:.0f} KB/connection | open {r['open_cpu_ms_per_session']:.2f} "
                  f"ms CPU each ({open_s:.1f} s)", flush=True)
        if args.churn and not old_root:
            r = await churn_point(args, settings, keys, dash, insts, clients, sent, lat, seq, raw)
            seq = r.pop("seq")
            r.update(code=label, instances=n_inst)
            results.append(r)
        for c in clients:
            c.close()
        for i in insts:
            i.stop()
    sync.close()
    return results


async def churn_point(args, settings, keys, dash, insts, clients, sent, lat, seq, raw) -> dict:
    """The same load with viewers opening (and as many closing) at ``--churn`` per second:
    latency beside the same load without churn, loop stalls, server CPU per open."""
    n_inst = len(insts)
    out = {"sessions": len(clients), "churn_per_s": args.churn}
    for phase in ("steady", "churn"):
        raw.clear()
        lat.clear()
        sent.clear()
        before = stalls(insts)
        opened = 0
        stop = asyncio.Event()

        async def churner(stop: asyncio.Event = stop) -> None:
            nonlocal opened
            period, t_next, k = 1.0 / args.churn, time.perf_counter(), 0
            while not stop.is_set():
                inst = insts[k % n_inst]
                k += 1
                c = LightClient(inst.ws_url, mint_token(settings.secret_key, dash)[1], {}, [], marker=True)
                await c.connect()
                opened += 1
                old = clients.pop(0)
                old.close()
                clients.append(c)  # receives from now on but its latencies are not counted
                t_next += period
                await asyncio.sleep(max(0.0, t_next - time.perf_counter()))

        cpu0 = sum(i.cpu_seconds() for i in insts)
        task = asyncio.create_task(churner()) if phase == "churn" else None
        seq = await publish_for(settings, keys, dash, args.rate, args.rows, args.seconds, sent, seq)
        stop.set()
        if task:
            await task
        cpu = sum(i.cpu_seconds() for i in insts) - cpu0
        settle(raw, sent, lat)
        after = stalls(insts)
        out[phase] = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "cpu_s": cpu, "opened": opened,
                      "loop_samples": after[0] - before[0], "timer_late_over_5ms": after[1] - before[1],
                      "loop_busy_over_5ms": after[2] - before[2],
                      "loop_stall_max_ms": max(i.metrics().get("fleet_loop_stall_max_seconds", 0)
                                               for i in insts) * 1000}
    s, c = out["steady"], out["churn"]
    out["p99_ratio_churn_to_steady"] = c["p99_ms"] / s["p99_ms"] if s["p99_ms"] else float("nan")
    # CPU of the opens: what the churn phase cost beyond the same load without it
    out["open_cpu_ms_per_session"] = (c["cpu_s"] - s["cpu_s"]) / max(1, c["opened"]) * 1000
    print(f"churn {args.churn:g}/s at {len(clients)} connections: p99 {c['p99_ms']:.1f} ms vs {s['p99_ms']:.1f} ms "
          f"without (x{out['p99_ratio_churn_to_steady']:.2f}); of {c['loop_samples']} loop samples, loop busy "
          f"> 5 ms: {c['loop_busy_over_5ms']} (steady: {s['loop_busy_over_5ms']}), timer late > 5 ms: "
          f"{c['timer_late_over_5ms']} (steady: {s['timer_late_over_5ms']}: the machine's other load); server "
          f"CPU per open {out['open_cpu_ms_per_session']:.2f} ms", flush=True)
    out["seq"] = seq
    return out


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
    ap.add_argument("--naive-ref", default="808e0c5",
                    help="git revision whose per-session-document instances run the same points as the naive "
                         "baseline (default 808e0c5, before issue 13; '' to skip)")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="skip the floor (a pre-built frame to as many plain tornado websockets) beside each point")
    ap.add_argument("--floor-bytes", type=int, default=560,
                    help="frame size for the floor (default 560: a 10-row two-column stream message)")
    ap.add_argument("--churn", type=float, default=10.0,
                    help="viewers opened and closed per second in the churn point at the largest count (0: none)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fanout.json",
                    help="JSON output; the PNG goes next to it (default bench/results/fanout.json)")
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
        results = uvloop.run(run_series(args, settings, env, workdir))
        if args.naive_ref:
            results += uvloop.run(run_series(args, settings, env, workdir, checkout(args.naive_ref, workdir)))
            for r in results:
                base = next((b for b in results if b["code"] == "baseline" and "cpu_us_per_update" in b
                             and (b["instances"], b["sessions"]) == (r.get("instances"), r.get("sessions"))), None)
                if r["code"] == "fleet" and base and "cpu_us_per_update" in r:
                    r["naive"] = {k: base[k] for k in ("cpu_us_per_update", "p99_ms", "rss_kb_per_session",
                                                       "open_cpu_ms_per_session")}
                    speedup = base["cpu_us_per_update"] / r["cpu_us_per_update"]
                    print(f"  {r['instances']} inst x {r['sessions']}: {r['cpu_us_per_update']:.1f} us per update vs "
                          f"{base['cpu_us_per_update']:.1f} us naive ({speedup:.1f}x); p99 {r['p99_ms']:.1f} vs "
                          f"{base['p99_ms']:.1f} ms; RSS {r['rss_kb_per_session']:.0f} vs "
                          f"{base['rss_kb_per_session']:.0f} KB per connection; open "
                          f"{r['open_cpu_ms_per_session']:.2f} vs {base['open_cpu_ms_per_session']:.2f} ms CPU",
                          flush=True)
        if not args.no_baseline:
            base = uvloop.run(polling_baseline(args))
            print(f"baseline AjaxDataSource-style polling every 1 s ({args.baseline_pages} pages): "
                  f"p50 {base['p50_ms']:.0f} ms  p99 {base['p99_ms']:.0f} ms  max {base['max_ms']:.0f} ms")
            for r in results:
                if "p50_ms" not in r or r["code"] != "fleet":
                    continue
                print(f"  ratio polling/fleet at {r['instances']} inst x {r['sessions']} sessions: "
                      f"p50 {base['p50_ms'] / r['p50_ms']:.0f}x  p99 {base['p99_ms'] / r['p99_ms']:.0f}x")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        from bench.stack import machine

        params = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.out.write_text(json.dumps({"machine": machine(), "load_avg_at_end": os.getloadavg(),
                                        "params": params, "results": results}, indent=1, default=float))
        plot(results, args.out.with_suffix(".png"))
        print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    finally:
        redis.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    pts = [r for r in results if "cpu_us_per_update" in r]
    for code, marker in (("fleet", "o-"), ("baseline", "s--")):
        for n in sorted({r["instances"] for r in pts if r["code"] == code}):
            xs = [r for r in pts if r["code"] == code and r["instances"] == n]
            name = "shared document" if code == "fleet" else "naive per-session documents"
            ax.plot([r["sessions"] for r in xs], [r["cpu_us_per_update"] for r in xs], marker,
                    label=f"{name}, {n} inst")
            ax2.plot([r["sessions"] for r in xs], [r["p99_ms"] for r in xs], marker, label=f"{name}, {n} inst")
    fl = [r for r in pts if r["code"] == "fleet" and "floor_us_per_write" in r]
    fl = sorted((r for r in fl if r["instances"] == fl[0]["instances"]), key=lambda r: r["sessions"]) if fl else []
    if fl:
        ax.plot([r["sessions"] for r in fl], [r["floor_us_per_write"] for r in fl], "k:", label="floor (same run)")
        ax.plot([r["sessions"] for r in fl], [2 * r["floor_us_per_write"] for r in fl], "r:", label="2x floor")
    ax.set(xscale="log", yscale="log", xlabel="viewer connections", ylabel="instance CPU us per connection-update",
           title="cost per delivered update")
    ax2.set(xscale="log", yscale="log", xlabel="viewer connections", ylabel="ms, XADD to receipt (p99)",
            title="latency p99")
    ax.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
