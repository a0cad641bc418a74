"""Full-stack benchmark: the stack as supervisord runs it, measured through nginx.

For each instance count it starts a real stack (supervisord, redis, nginx, gunicorn,
N Bokeh instances, compactor) in a temp directory, logs a user in through Flask's
form, and opens sessions the way a browser does: ``GET /d/<dashboard>`` for a fresh
signed token, then the Bokeh websocket through nginx (``auth_request``, sticky
``fleet_route`` cookie, one random value per session).  A publisher XADDs ``stream``
commands; every session records when each command's rows arrive.

Series (each point: warm-up, then ``--seconds`` of publishing):
  sessions   every instance count x 10..1000 sessions, 20 commands/s x 10 rows
  rate       one instance count (--detail-instances) x 100 sessions, 1..100 commands/s
  rows       same, 5 commands/s x 1..10,000 rows per command
  page load  headless Chromium: login cookie, /d/<dashboard> to first canvas painted

Figures per point: latency XADD -> receipt in the session (p50, p99, max over every
(command, session) pair), delivered/expected, session-updates per CPU second of the
instances (and with nginx's workers), RSS per session.  The targets' connections are held by
``--client-procs`` worker processes (bench/clientprocs.py; one per core plus one by default):
one process reading 10,000 sockets in turn queues every burst behind itself.  Send and
receipt times are ``time.perf_counter()`` (CLOCK_MONOTONIC, one clock for every process
on the machine); the load generator's CPU share is the sum over its processes.  Floors measured in the same
run: Redis PING round trip, a bare websocket echo on loopback, and the 1-second
polling baseline (what ``AjaxDataSource(polling_interval=1000)`` gives).

Output: a table on stdout, JSON and a PNG (latency against sessions) under
``bench/results/`` (or --out).

    ./deploy/bench                                  # installs what it needs, runs this
    .venv/bin/python bench/stack.py --quick         # about 2 minutes
    .venv/bin/python bench/stack.py --instances 2 --sessions 10,100 --no-rate --no-rows
    .venv/bin/python bench/stack.py --instances '' --naive-ref '' --page-loads 0 \
        --targets 10000x1 --target-instances 4 --client-procs 2     # one target, alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from app.bus.connection import async_client, sync_client
from app.bus.keys import Keys
from app.control import columns, encode
from bench.clientprocs import ClientPool
from bench.wsclient import (
    LightClient,
    WebUser,
    children,
    cpu_seconds,
    floor,
    pct,
    publish_for,
    rss_bytes,
    settle,
    stream_fields,
)
from fleet_testing.ports import free_port, wait_port
from fleet_testing.stack import CHROMIUM, CHROMIUM_ARGS, Stack, login

ROOT = Path(__file__).resolve().parents[1]

USER, PASSWORD = "bench", "bench-" + secrets.token_hex(8)
OPEN_CONCURRENCY = 16


def own_cpu() -> float:
    """CPU seconds of this process (the load generator)."""
    t = os.times()
    return t.user + t.system


def machine_busy() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> int:
    """Soft open-files limit up to the hard one (inherited by supervisord and its programs)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def widen_nginx(stack: Stack, connections: int, fds: int) -> None:
    """The bench stack's own nginx.conf (rendered, not started yet): enough worker
    connections for ``connections`` websockets (each is two: client and upstream)."""
    conf = next(stack.var.rglob("nginx.conf"))
    text = conf.read_text()
    want = max(4096, min(fds - 100, 2 * connections + 1000))
    text = text.replace("worker_connections 4096;", f"worker_connections {want};")
    text = text.replace("daemon off;", f"daemon off;\nworker_rlimit_nofile {fds};", 1)
    conf.write_text(text)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def pairs(text: str) -> list[tuple[int, float]]:
    """'1000x20,10000x1' -> [(1000, 20.0), (10000, 1.0)]."""
    out = []
    for item in text.split(","):
        if item:
            count, rate = item.split("x")
            out.append((int(count), float(rate)))
    return out


class Bench:
    """One running stack and the sessions open on it."""

    def __init__(self, stack: Stack, args) -> None:
        self.stack, self.args = stack, args
        self.settings = stack.effective_settings()
        self.web = WebUser(stack.url)
        self.redis = async_client(self.settings)
        self.sent: dict[int, float] = {}
        self.lat: list[float] = []
        self.raw: list = []  # PATCH-DOCs received, decoded into lat by settle()
        self.marker = True  # False for a stack of the revision before issue 13 (no OK after the replay)
        self.seq = 0
        self.pool: ClientPool | None = None  # the connections in worker processes (--client-procs)

    async def collect(self) -> None:
        """Receipts so far into ``lat``: from this process's clients or from the pool's workers."""
        if self.pool is None:
            settle(self.raw, self.sent, self.lat)
            return
        seqs, times, _ = await self.pool.take()
        for s, t in zip(seqs.tolist(), times.tolist(), strict=True):
            t0 = self.sent.get(s)
            if t0 is not None:
                self.lat.append(t - t0)

    def generator_cpu(self) -> list[float]:
        """CPU seconds of the load generator: this process, then each worker of the pool."""
        return [own_cpu()] + (self.pool.cpu() if self.pool is not None else [])

    # --- processes ------------------------------------------------------------------
    def instance_pids(self) -> list[int]:
        st = self.stack.status()
        return [pid for name, (state, pid) in st.items() if "bokeh" in name and pid]

    def nginx_pids(self) -> list[int]:
        st = self.stack.status()
        master = [pid for name, (state, pid) in st.items() if "nginx" in name and pid]
        return [p for m in master for p in children(m)]

    def cpu(self) -> tuple[float, float]:
        inst = sum(cpu_seconds(p) for p in self.instance_pids())
        return inst, inst + sum(cpu_seconds(p) for p in self.nginx_pids())

    def rss(self) -> int:
        return sum(rss_bytes(p) for p in self.instance_pids())

    def spread(self, dashboard: str) -> list[int]:
        return [self.stack.instance_sessions(n, dashboard) for n in range(1, self.stack.settings.instances + 1)]

    # --- sessions ---------------------------------------------------------------------
    async def open(self, dashboard: str, count: int, into: list[LightClient]) -> float:
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def one() -> None:
            route = secrets.token_urlsafe(9)
            async with sem:
                token = await self.web.token(dashboard, route)
                c = LightClient(self.web.ws_url, token, self.sent, self.lat, self.web.ws_headers(route), self.raw,
                                marker=self.marker)
                await c.connect(timeout=120)
            into.append(c)

        await asyncio.gather(*(one() for _ in range(count)))
        return time.perf_counter() - t0

    async def measure(self, dashboard: str, sessions, rate: float, rows: int) -> dict:
        key = Keys(self.settings.key_prefix).commands(dashboard)
        # warm-up: caches, the first Arrow decode, the compactor's first snapshot
        self.seq = await publish_for(self.redis, key, rate, rows, max(1.0, 3 / rate), self.sent, self.seq, 0.5)
        await self.collect()
        self.lat.clear()
        self.sent.clear()
        seconds = max(self.args.seconds, 10 / rate)  # at least 10 commands per point
        cpu0, rss = self.cpu(), self.rss()
        me0, machine0, t0 = self.generator_cpu(), machine_busy(), time.perf_counter()
        self.seq = await publish_for(self.redis, key, rate, rows, seconds, self.sent, self.seq, 0.0)
        expected = len(self.sent) * len(sessions)
        deadline = time.perf_counter() + self.args.drain
        await self.collect()
        while len(self.lat) < expected and time.perf_counter() < deadline:
            await asyncio.sleep(0.05 if self.pool is None else 0.25)
            await self.collect()
        cpu1 = self.cpu()
        wall = time.perf_counter() - t0
        me = [b - a for a, b in zip(me0, self.generator_cpu(), strict=True)]
        busy = machine_busy() - machine0
        lat = list(self.lat)
        inst_cpu, all_cpu = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        cores = os.cpu_count() or 1
        return {
            "load_generator_cpu_share": sum(me) / (wall * cores), "machine_busy_share": busy / (wall * cores),
            "load_generator_procs_cpu_share": [x / (wall * cores) for x in me],
            "client_procs": len(me) - 1,
            "instance_cpu_share": inst_cpu / (wall * cores),
            "cpu_us_per_update": inst_cpu / max(1, len(lat)) * 1e6,
            "sessions": len(sessions), "rate": rate, "rows": rows, "commands": len(self.sent),
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat) * 1000 if lat else float("nan"),
            "delivered": len(lat), "expected": expected,
            "updates_per_cpu_s": len(lat) / inst_cpu if inst_cpu else float("nan"),
            "updates_per_cpu_s_with_nginx": len(lat) / all_cpu if all_cpu else float("nan"),
            "cpu_ms_per_update": inst_cpu / max(1, len(lat)) * 1000,
            "instance_rss_mb": rss / 2**20,
            "spread": self.spread(dashboard),
        }

    def replace(self, dashboard: str, rollover: int) -> None:
        self.stack.fleetctl("dashboard", "create", dashboard)
        self.stack.fleetctl("access", "grant", "--dashboard", dashboard, "--user", USER)
        client = sync_client(self.settings)
        key = Keys(self.settings.key_prefix).commands(dashboard)
        client.xadd(key, encode("replace", name="p", kind="line", x="seq", y=["y"], columns=["seq", "y"],
                                rollover=rollover))
        client.xadd(key, stream_fields(0, 1))
        client.close()


async def close_all(b: Bench, sessions: list[LightClient], dashboard: str, timeout: float = 90) -> None:
    """Close every session and wait until the instances have destroyed them (Bokeh
    does that after the unused-session lifetime), so that the teardown of hundreds of
    sessions does not land in the next point's measurement."""
    for c in sessions:
        c.close()
    sessions.clear()
    deadline = time.perf_counter() + timeout
    while sum(b.spread(dashboard)) > 0 and time.perf_counter() < deadline:
        await asyncio.sleep(1.0)
    await asyncio.sleep(2.0)


def line(tag: str, r: dict) -> str:
    return (f"{tag:<28} p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms  max {r['max_ms']:8.0f} ms | "
            f"{r['delivered']}/{r['expected']} delivered | {r['updates_per_cpu_s']:6.0f} upd/CPU-s "
            f"({r['updates_per_cpu_s_with_nginx']:.0f} with nginx) | "
            f"{r.get('rss_mb_per_session', float('nan')):.2f} MB/session | spread {r['spread']}"
            + (f" | {r['cpu_us_per_update']:.1f} us/update, floor {r['floor_us_per_write']:.1f} us "
               f"(x{r['ratio_to_floor']:.2f})" if "floor_us_per_write" in r else ""))


async def with_floor(r: dict, args) -> None:
    """The floor beside a point: one pre-built frame to as many plain tornado websockets
    (at most 2,000: the per-write cost does not depend on the count, file descriptors do)."""
    if not args.floor:
        return
    n = min(r["sessions"], 2000)
    f = await floor(n, args.floor_bytes, r["rate"], min(args.seconds, 5.0))
    r["floor_us_per_write"], r["floor_connections"] = f["us_per_write"], n
    r["ratio_to_floor"] = r["cpu_us_per_update"] / f["us_per_write"] if f["us_per_write"] else float("nan")


async def run_targets(stack: Stack, args, n: int, out: dict) -> None:
    """The issue-13 targets: (connections, commands/s) points, e.g. 1,000 at 20/s and
    10,000 at 1/s, every connection opened through Flask and nginx."""
    b = Bench(stack, args)
    await b.web.login(USER, PASSWORD)
    b.replace("targets", 1000)
    await asyncio.sleep(3.0)
    sessions: list[LightClient] = []
    if args.client_procs:
        b.pool = ClientPool(args.client_procs, b.web, b.marker, OPEN_CONCURRENCY, args.client_loop)
    try:
        for count, rate in args.targets:
            conns = b.pool if b.pool is not None else sessions
            have = len(conns)
            open_s = 0.0
            if count > have:
                open_s = (await b.pool.open("targets", count - have) if b.pool is not None
                          else await b.open("targets", count - have, sessions))
            await asyncio.sleep(2.0)
            r = await b.measure("targets", conns, rate, args.row_count)
            r.update(instances=n, open_s=open_s, code="fleet", load_avg=os.getloadavg(),
                     client_loop=args.client_loop if b.pool is not None else "asyncio")
            await with_floor(r, args)
            out["targets"].append(r)
            procs = " + ".join(f"{x:.0%}" for x in r["load_generator_procs_cpu_share"])
            print(line(f"target {count} x {rate:g}/s", r), f"| load generator {r['load_generator_cpu_share']:.0%} "
                  f"of the CPU ({procs}), instances {r['instance_cpu_share']:.0%}, machine busy "
                  f"{r['machine_busy_share']:.0%} | opened in {open_s:.0f} s | load average "
                  f"{r['load_avg'][0]:.1f}", flush=True)
        if b.pool is not None:
            await b.pool.close()
        for c in sessions:  # the stack stops next: no need to wait for the instances to drop them
            c.close()
    finally:
        if b.pool is not None:
            b.pool.stop()
    await b.redis.aclose()


async def run_instances(stack: Stack, args, n: int, out: dict, label: str = "fleet") -> None:
    b = Bench(stack, args)
    b.marker = label != "baseline"
    await b.web.login(USER, PASSWORD)
    b.replace("scale", 1000)
    await asyncio.sleep(5.0)  # the stack's own start-up (compactor, first heartbeats) settles
    sessions: list[LightClient] = []
    rss0 = b.rss()
    for m in args.sessions:
        open_s = await b.open("scale", m - len(sessions), sessions)
        await asyncio.sleep(1.0)
        rss_added = b.rss() - rss0
        r = await b.measure("scale", sessions, args.rate, args.row_count)
        r.update(instances=n, open_s=open_s, rss_mb_per_session=rss_added / m / 2**20, code=label)
        await with_floor(r, args)
        out["sessions_series"].append(r)
        print(line(f"[{label}] {n} inst x {m}", r), f"| opened in {open_s:.1f} s", flush=True)
    if n != args.detail_instances or label != "fleet":
        await close_all(b, sessions, "scale")
        return
    await close_all(b, sessions, "scale")
    if args.rates:
        await b.open("scale", args.detail_sessions, sessions)
        for rate in args.rates:
            r = await b.measure("scale", sessions, rate, args.row_count)
            r.update(instances=n)
            out["rate_series"].append(r)
            print(line(f"{n} inst, {rate:g} cmd/s", r), flush=True)
        await close_all(b, sessions, "scale")
    if args.rows:
        b.replace("rows", 2 * max(args.rows))
        await b.open("rows", args.detail_sessions, sessions)
        for rows in args.rows:
            r = await b.measure("rows", sessions, args.rows_rate, rows)
            r.update(instances=n)
            out["rows_series"].append(r)
            print(line(f"{n} inst, {rows} rows/cmd", r), flush=True)
        await close_all(b, sessions, "rows")
    await b.redis.aclose()


def page_loads(stack: Stack, n: int, count: int) -> dict:
    """Milliseconds from navigation start to the first painted Bokeh canvas."""
    from playwright.sync_api import sync_playwright

    first_canvas = """() => {
      const walk = (root) => {
        for (const el of root.querySelectorAll('*')) {
          if (el.tagName === 'CANVAS' && el.width > 0) return true;
          if (el.shadowRoot && walk(el.shadowRoot)) return true;
        }
        return false;
      };
      return walk(document) ? performance.now() : 0;
    }"""
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        ctx, page = login(browser, stack.url, USER, PASSWORD)
        for i in range(count + 1):
            page.goto(f"{stack.url}/d/scale")
            t = page.wait_for_function(first_canvas, polling="raf", timeout=30000).json_value()
            if i:  # the first load fills the browser cache: report warm loads
                times.append(t / 1000)
        ctx.close()
        browser.close()
    r = {"instances": n, "loads": count, "p50_ms": pct(times, 50), "max_ms": max(times) * 1000}
    print(f"{n} inst: page load to first plot (Chromium, warm cache, {count} loads): "
          f"p50 {r['p50_ms']:.0f} ms  max {r['max_ms']:.0f} ms", flush=True)
    return r


# --- floors -----------------------------------------------------------------------------
def redis_floor(stack: Stack, n: int = 3000) -> dict:
    client = sync_client(stack.effective_settings())
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        client.ping()
        samples.append(time.perf_counter() - t)
    client.close()
    return {"p50_ms": pct(samples, 50), "p99_ms": pct(samples, 99)}


ECHO_SERVER = """
import sys, tornado.web, tornado.websocket, asyncio
class Echo(tornado.websocket.WebSocketHandler):
    def on_message(self, m):
        self.write_message(m, binary=isinstance(m, bytes))
async def main():
    tornado.web.Application([(r"/ws", Echo)]).listen(int(sys.argv[1]), "127.0.0.1")
    await asyncio.Event().wait()
asyncio.run(main())
"""


def websocket_floor(n: int = 3000) -> dict:
    """Round trip of a 100-byte message to a bare tornado websocket echo server."""
    from websockets.sync.client import connect

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port)])
    try:
        wait_port(port, 10)
        samples = []
        with connect(f"ws://127.0.0.1:{port}/ws", compression=None) as ws:
            msg = "x" * 100
            for _ in range(n):
                t = time.perf_counter()
                ws.send(msg)
                ws.recv()
                samples.append(time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait(5)
    return {"p50_ms": pct(samples, 50), "p99_ms": pct(samples, 99)}


def polling_floor(rate: float) -> dict:
    from bench.fanout import polling_baseline

    return asyncio.run(polling_baseline(SimpleNamespace(rate=rate, seconds=8.0, baseline_pages=10)))


# --- output -----------------------------------------------------------------------------
def machine() -> dict:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import bokeh
    import redis

    return {"cpus": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "bokeh": bokeh.__version__, "redis_py": redis.__version__,
            "redis_server": subprocess.run(["redis-server", "--version"], capture_output=True,
                                           text=True).stdout.strip(),
            "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()}


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    series = out["sessions_series"]
    for code, style in (("fleet", "-"), ("baseline", "--")):
        name = "shared document" if code == "fleet" else "naive per-session"
        for i, n in enumerate(sorted({r["instances"] for r in series if r.get("code", "fleet") == code})):
            pts = [r for r in series if r["instances"] == n and r.get("code", "fleet") == code]
            xs, color = [r["sessions"] for r in pts], f"C{i + (3 if code == 'baseline' else 0)}"
            ax.plot(xs, [r["p50_ms"] for r in pts], "o" + style, color=color, label=f"{name} {n} inst p50")
            ax.plot(xs, [r["p99_ms"] for r in pts], "s" + style, color=color, label=f"{name} {n} inst p99")
            ax2.plot(xs, [r["cpu_us_per_update"] for r in pts], "o" + style, color=color, label=f"{name} {n} inst")
    fl = [r for r in series + out.get("targets", []) if "floor_us_per_write" in r and r.get("code") == "fleet"]
    if fl:
        fl.sort(key=lambda r: r["sessions"])
        ax2.plot([r["sessions"] for r in fl], [r["floor_us_per_write"] for r in fl], "k:", label="floor (same run)")
        ax2.plot([r["sessions"] for r in fl], [2 * r["floor_us_per_write"] for r in fl], "r:", label="2x floor")
    for r in out.get("targets", []):
        ax.plot([r["sessions"]], [r["p99_ms"]], "k*", ms=10)
        ax.annotate(f"target {r['rate']:g}/s p99", (r["sessions"], r["p99_ms"]), fontsize=7)
        ax2.plot([r["sessions"]], [r["cpu_us_per_update"]], "k*", ms=10)
        ax2.annotate(f"target {r['rate']:g}/s", (r["sessions"], r["cpu_us_per_update"]), fontsize=7)
    f = out["floors"]
    if "polling" in f:
        ax.axhline(f["polling"]["p50_ms"], color="grey", ls=":", label="1 s polling p50")
    if "websocket_echo" in f:
        ax.axhline(f["websocket_echo"]["p50_ms"], color="black", ls=":", label="websocket echo p50")
    ax.set(xscale="log", yscale="log", xlabel="sessions", ylabel="ms, XADD to receipt in the session",
           title=f"latency at {out['params']['rate']:g} cmd/s x {out['params']['row_count']} rows")
    ax.legend(fontsize=7)
    ax2.set(xscale="log", yscale="log", xlabel="viewer connections",
            ylabel="instance CPU us per connection-update", title="cost")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    doc_head, doc_rest = __doc__.split("\n\n", 1)
    ap = argparse.ArgumentParser(description=doc_head, epilog=doc_rest,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=ints, default=[1, 2, 4],
                    help="instance counts for the sessions series (default 1,2,4; '' for none)")
    ap.add_argument("--sessions", type=ints, default=[10, 100, 300, 1000],
                    help="session counts, increasing (default 10,100,300,1000)")
    ap.add_argument("--rate", type=float, default=20, help="commands/s for the sessions series (default 20)")
    ap.add_argument("--row-count", type=int, default=10, help="rows per command for the sessions and rate series")
    ap.add_argument("--detail-instances", type=int, default=2,
                    help="instance count that also runs the rate and rows series (default 2)")
    ap.add_argument("--detail-sessions", type=int, default=100, help="sessions in the rate and rows series")
    ap.add_argument("--rates", type=ints, default=[1, 10, 100], help="rate series, commands/s (default 1,10,100)")
    ap.add_argument("--rows", type=ints, default=[1, 100, 1000, 10000], help="rows series (default 1,100,1000,10000)")
    ap.add_argument("--rows-rate", type=float, default=5, help="commands/s in the rows series (default 5)")
    ap.add_argument("--no-rate", dest="rates", action="store_const", const=[], help="skip the rate series")
    ap.add_argument("--no-rows", dest="rows", action="store_const", const=[], help="skip the rows series")
    ap.add_argument("--seconds", type=float, default=6, help="publishing time per point (default 6)")
    ap.add_argument("--drain", type=float, default=30, help="max wait for late updates after a point (default 30)")
    ap.add_argument("--page-loads", type=int, default=5, help="Chromium page loads per instance count (0: none)")
    ap.add_argument("--quick", action="store_true",
                    help="a short run: 1,2 instances x 10,100 sessions, rates 1,100, rows 1,10000, 3 s points")
    ap.add_argument("--targets", type=pairs, default=[(1000, 20.0), (10000, 1.0)],
                    help="(connections x commands/s) points on --target-instances (default 1000x20,10000x1; "
                         "'' for none)")
    ap.add_argument("--target-instances", type=int, default=2, help="instances for the targets (default 2)")
    ap.add_argument("--client-procs", type=int, default=(os.cpu_count() or 1) + 1,
                    help="worker processes holding the targets' connections (default: one per core plus one; "
                         "0: every connection in this process)")
    ap.add_argument("--client-loop", choices=("uvloop", "asyncio"), default="uvloop",
                    help="event loop of the client processes (default uvloop; this process always runs asyncio's)")
    ap.add_argument("--naive-ref", default="808e0c5",
                    help="git revision run as the naive per-session-document baseline over the sessions series "
                         "on --detail-instances (default 808e0c5, before issue 13; '' to skip)")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="skip the floor (pre-built frame to as many plain tornado websockets) beside each point")
    ap.add_argument("--floor-bytes", type=int, default=560, help="frame size for the floor (default 560)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stack.json",
                    help="JSON output; the PNG goes next to it (default bench/results/stack.json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.instances, args.sessions, args.seconds = [1, 2], [10, 100], 3
        args.targets = [(t, r) for t, r in args.targets if t <= 1000]
        args.rates = args.rates and [1, 100]
        args.rows = args.rows and [1, 10000]
        args.page_loads = min(args.page_loads, 3)
    if args.instances and args.detail_instances not in args.instances:
        args.detail_instances = args.instances[-1]
    args.out.parent.mkdir(parents=True, exist_ok=True)

    columns.warm_up()  # the publisher encodes Arrow: pay its imports before measuring
    out: dict = {"machine": machine(), "params": {k: (str(v) if isinstance(v, Path) else v)
                                                  for k, v in vars(args).items()},
                 "floors": {}, "sessions_series": [], "rate_series": [], "rows_series": [], "page_load": [],
                 "targets": []}
    fds = raise_fd_limit()
    biggest = max([t for t, _ in args.targets] + args.sessions)
    t_start = time.perf_counter()
    print(f"bench/stack.py on {out['machine']['cpus']} CPUs ({out['machine']['cpu']}), "
          f"bokeh {out['machine']['bokeh']}", flush=True)
    print(f"load average at start: {os.getloadavg()} (other work on the machine shows in every CPU figure: "
          "compare the ratios to the floor, measured in the same run)", flush=True)
    runs = [(n, "fleet", None) for n in args.instances]
    if args.targets:
        runs.append((args.target_instances, "targets", None))
    if args.naive_ref:
        from bench.fanout import checkout

        where = Path(tempfile.mkdtemp())
        os.chmod(where, 0o755)  # the stack's programs may run as another user (FLEET_RUN_USER)
        runs.append((args.detail_instances, "baseline", checkout(args.naive_ref, where)))
    for n, label, old_root in runs:
        saved = os.environ.get("PYTHONPATH")
        if old_root is not None:  # every program of this stack runs the old revision
            os.environ["PYTHONPATH"] = str(old_root)
        try:
            stack = Stack(instances=n)
        finally:
            if old_root is not None:
                os.environ.pop("PYTHONPATH") if saved is None else os.environ.update(PYTHONPATH=saved)
        if biggest > 1500:
            widen_nginx(stack, biggest, fds)
        try:
            stack.start_healthy()
            stack.add_user(USER, PASSWORD)
            if not out["floors"]:
                out["floors"]["redis_ping"] = redis_floor(stack)
            if label == "targets":
                asyncio.run(run_targets(stack, args, n, out))
                continue
            asyncio.run(run_instances(stack, args, n, out, label))
            if args.page_loads and label == "fleet":
                out["page_load"].append(page_loads(stack, n, args.page_loads))
        finally:
            stack.stop()
    if args.targets:
        print("targets (issue 13):", flush=True)
        for r in out["targets"]:
            print(f"  {r['sessions']} connections x {r['rate']:g} cmd/s on {r['instances']} instances: "
                  f"{r['delivered']}/{r['expected']} delivered, p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms; "
                  f"{r['cpu_us_per_update']:.1f} us CPU per update, floor "
                  f"{r.get('floor_us_per_write', float('nan')):.1f} us (x{r.get('ratio_to_floor', float('nan')):.2f}); "
                  f"load generator ({r['client_procs']} client processes) "
                  f"{r['load_generator_cpu_share']:.0%} of the machine's CPU; load average {r['load_avg'][0]:.1f}",
                  flush=True)
    out["floors"]["websocket_echo"] = websocket_floor()
    out["floors"]["polling"] = polling_floor(args.rate)
    f = out["floors"]
    print(f"floors: Redis PING p50 {f['redis_ping']['p50_ms']:.2f} ms p99 {f['redis_ping']['p99_ms']:.2f} ms | "
          f"websocket echo p50 {f['websocket_echo']['p50_ms']:.2f} ms p99 {f['websocket_echo']['p99_ms']:.2f} ms | "
          f"1 s polling p50 {f['polling']['p50_ms']:.0f} ms p99 {f['polling']['p99_ms']:.0f} ms")
    out["wall_s"] = time.perf_counter() - t_start
    out["load_avg_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(out, indent=1, default=float))
    png = args.out.with_suffix(".png")
    plot(out, png)
    print(f"wrote {args.out} and {png} ({out['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
