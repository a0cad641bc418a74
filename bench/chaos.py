#!/usr/bin/env python
"""Chaos run: publish continuously while processes die, then prove nothing was lost.

Builds a real stack (``fleet_testing.stack.Stack``: supervisord, Redis with AOF,
gunicorn, nginx, N Bokeh instances, the compactor) on free ports, creates
dashboards and a user, and opens headless Bokeh sessions *through nginx* with
signed tokens (spread over the instances by the ``fleet_route`` cookie).  Then, for
``--seconds``:

* controllers (threads, ``app.client.Controller``) publish ``stream`` commands with
  a unique ``seq`` and an idempotency ``id`` each, retrying the *same* command until
  Redis acknowledges the XADD; one more controller per dashboard mixes in
  ``replace``/``stream``/``patch`` of a second figure;
* a fault thread, from a seeded RNG, injects at random times: SIGKILL of an
  instance, a graceful ``supervisorctl restart`` of Redis, SIGKILL of the compactor,
  ``CLIENT KILL TYPE normal|pubsub``, an nginx reload (SIGHUP or
  ``nginx -s reload``), SIGKILL of a gunicorn worker, SIGSTOP of the compactor
  (past its lock's TTL, then SIGCONT); with ``--redis-mode sentinel`` SIGKILL of
  the Redis master (kept down until the sentinels promoted the replica); with
  ``--crash`` a simulated machine crash of the lone Redis (its data directory rolled
  back to a copy taken ~1.5 s earlier while it is down: commands acknowledged in
  that window may be lost with ``everysec``, nothing else, and no session diverges);
* sessions whose websocket drops reconnect like a BokehJS page reload (a new
  session with a fresh token).

Afterwards (faults stopped, every program RUNNING and healthy, readers caught up):

(a) the folded state in Redis (snapshot + tail, ``app.bus.store.read_state``) holds
    every acknowledged ``seq`` exactly once and nothing else;
(b) every session - the long-lived ones and fresh ones opened on every instance,
    directly and through nginx - holds exactly the folded data (a SHA-256 of every
    figure's columns), so no command is missing or applied twice anywhere.

Exit status 0 only when every check passed.  ``run(Config(...)) -> Report`` is what
``tests/test_chaos.py`` calls.

    .venv/bin/python bench/chaos.py --seconds 180
    .venv/bin/python bench/chaos.py --seconds 60 --seed 7 --json /tmp/chaos.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.bus.connection import CONNECTION_ERRORS, ResponseError, sync_client
from app.bus.keys import Keys
from app.bus.publisher import NotDurable
from app.bus.store import read_state
from app.client import Controller
from app.control.state import DashboardState
from app.stack.names import GROUP, instance_name, instance_process, process_key, sentinel_name
from fleet_testing.bokeh import BokehClient, mint_token
from fleet_testing.redis import free_ha_base
from fleet_testing.stack import Stack

ROOT = Path(__file__).resolve().parents[1]

FAULTS = ("kill_instance", "restart_redis", "kill_compactor", "client_kill_normal",
          "client_kill_pubsub", "nginx_reload", "kill_web_worker", "stop_compactor")
HA_FAULTS = ("kill_redis_master",)  # --redis-mode sentinel only
CRASH_FAULTS = ("crash_redis",)  # --crash only: loses the newest acknowledged commands
ALL_FAULTS = FAULTS + HA_FAULTS + CRASH_FAULTS
USER, PASSWORD = "chaos", "chaos-password-1"
# Redis replies a publisher retries with the same id: no replica yet (replica durability),
# a demoted master, a master the sentinels consider down
RETRYABLE_REPLIES = ("NOREPLICAS", "READONLY", "MASTERDOWN", "LOADING")
ROLLOVER = 1_000_000  # no seq ever rolls out: the final state must hold every acked seq


@dataclass
class Config:
    seconds: float = 180.0
    instances: int = 2
    dashboards: int = 2
    sessions: int = 6  # long-lived sessions per dashboard, through nginx
    controllers: int = 2  # seq publishers per dashboard
    rate: float = 15.0  # commands/s per seq publisher
    other_rate: float = 2.5  # replace/stream/patch of figure q per second and dashboard
    fault_every: float = 6.0  # mean seconds between faults
    seed: int = 1
    schedule: tuple[str, ...] | None = None  # fixed fault order, spread evenly (tests)
    fresh: int = 2  # fresh sessions per instance and dashboard after the chaos
    settle: float = 90.0  # seconds allowed for recovery and catch-up
    keep_logs: Path | None = None
    snapshot_every_commands: int = 300  # compact and trim often during the run
    snapshot_every_seconds: float = 3.0
    redis_mode: str = "single"  # "sentinel": master + replica + 3 sentinels (HA_FAULTS)
    durability: str = "everysec"  # FLEET_REDIS_DURABILITY of the stack and the controllers
    crash: bool = False  # add CRASH_FAULTS to the random faults
    compactor_lock_ttl_ms: int = 4000  # stop_compactor holds it stopped past this

    @property
    def kinds(self) -> tuple[str, ...]:
        return FAULTS + (HA_FAULTS if self.redis_mode == "sentinel" else ()) + (
            CRASH_FAULTS if self.crash else ())


@dataclass
class Report:
    config: dict
    wall_seconds: float = 0.0
    faults: list[dict] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)
    other_acked: dict[str, int] = field(default_factory=dict)
    retries: int = 0  # publish attempts that failed and were retried (same id)
    in_doubt: dict[str, list[int]] = field(default_factory=dict)  # never acked
    fold: dict[str, dict] = field(default_factory=dict)
    sessions: list[dict] = field(default_factory=list)
    reconnects: int = 0
    long_lived_by_instance: dict[str, int] = field(default_factory=dict)  # fleet_sessions at the end
    nginx_workers: dict[str, int] = field(default_factory=dict)  # worker processes by title, at the end
    instance_stats: dict[str, dict] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def fault_counts(self) -> dict[str, int]:
        """Faults actually injected, by type (skipped or failed injections not counted)."""
        return dict(Counter(f["type"] for f in self.faults if not _not_injected(f)))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ok"], d["fault_counts"] = self.ok, self.fault_counts
        return d

    def summary(self) -> str:
        lines = [f"chaos run: {self.wall_seconds:.0f} s wall, seed {self.config['seed']}, "
                 f"{self.config['instances']} instances, {os.cpu_count()} cores", "",
                 "faults injected:"]
        for t in [k for k in ALL_FAULTS if k in FAULTS or self.fault_counts.get(k)]:
            lines.append(f"  {t:<20} {self.fault_counts.get(t, 0):>5}")
        lines.append(f"  {'total':<20} {sum(self.fault_counts.values()):>5}")
        not_injected = [f for f in self.faults if _not_injected(f)]
        if not_injected:
            lines.append(f"  (+{len(not_injected)} skipped or failed: "
                         + "; ".join(f"{f['type']}: {f['detail']}" for f in not_injected[:5]) + ")")
        lost = sum(f.get("lost_in_crash", 0) for f in self.fold.values())
        if lost:
            lines.append(f"acknowledged commands lost in simulated machine crashes (allowed): {lost}")
        lines += ["", f"{'dashboard':<10} {'acked':>7} {'other':>6} {'in fold':>8} {'missing':>8} "
                  f"{'dup':>5} {'extra':>6} {'in doubt':>9}  fold digest"]
        for d, f in self.fold.items():
            lines.append(f"{d:<10} {self.acked.get(d, 0):>7} {self.other_acked.get(d, 0):>6} "
                         f"{f['present']:>8} {f['missing']:>8} {f['duplicates']:>5} {f['extra']:>6} "
                         f"{len(self.in_doubt.get(d, [])):>9}  {f['digest'][:16]}")
        lines.append(f"publish attempts retried (same id): {self.retries}")
        lines += ["", f"{'sessions checked':<26} {'equal':>6} {'unequal':>8}"]
        groups: dict[str, list[bool]] = {}
        for s in self.sessions:
            groups.setdefault(f"{s['kind']} @ {s['instance']}", []).append(s["equal"])
        for g in sorted(groups):
            lines.append(f"  {g:<24} {sum(groups[g]):>6} {len(groups[g]) - sum(groups[g]):>8}")
        lines.append(f"long-lived sessions per instance at the end (fleet_sessions): "
                     f"{self.long_lived_by_instance}")
        lines.append(f"session reconnects (websocket dropped -> new session): {self.reconnects}")
        if self.nginx_workers:
            lines.append(f"nginx worker processes at the end: {self.nginx_workers}")
        if self.instance_stats:
            lines += ["", "instance reader counters: " + "; ".join(
                f"{n}: " + ", ".join(f"{k}={v:g}" for k, v in st.items()) for n, st in self.instance_stats.items())]
        lines += ["", "RESULT: " + ("OK" if self.ok else f"FAILED ({len(self.failures)} problems)")]
        lines += [f"  - {f}" for f in self.failures[:40]]
        return "\n".join(lines)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _sigcont(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def _not_injected(fault: dict) -> bool:
    return fault["detail"].startswith(("skipped", "injection error"))


# --- digests -----------------------------------------------------------------------------
def _col_bytes(values: Any) -> bytes:
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return np.asarray(arr, dtype=np.float64).tobytes()
    return json.dumps([str(v) for v in arr.tolist()]).encode()


def data_digest(figures: dict[str, dict[str, Any]]) -> str:
    """SHA-256 over every figure's title and columns (name, column, values in order)."""
    h = hashlib.sha256()
    for name in sorted(figures):
        h.update(f"fig:{name}\0".encode())
        for col in sorted(figures[name]):
            h.update(f"col:{col}\0".encode())
            h.update(_col_bytes(figures[name][col]))
    return h.hexdigest()


TITLE = "@title"  # pseudo column holding a figure's shown title


def state_data(state: DashboardState) -> dict[str, dict[str, Any]]:
    return {name: {**fig.data, TITLE: [fig.title or fig.name]} for name, fig in state.figures.items()}


def client_data(client: BokehClient, names=None) -> dict[str, dict[str, Any]]:
    """Every named data source of the session's document (all of them, so a figure the
    fold no longer has shows up too), with the title of the plot drawing it."""
    from bokeh.models import ColumnDataSource, GlyphRenderer, Plot

    assert client.doc is not None
    titles = {}
    for m in client.doc.models:
        if isinstance(m, Plot):
            for r in m.renderers:
                if isinstance(r, GlyphRenderer) and r.data_source.name:
                    titles[r.data_source.name] = m.title.text if m.title is not None else ""
    out = {}
    for m in client.doc.models:
        if isinstance(m, ColumnDataSource) and m.name:
            out[m.name] = {k: list(v) for k, v in m.data.items()}
            out[m.name][TITLE] = [titles.get(m.name, "")]
    return out


# --- sessions ------------------------------------------------------------------------------
class RoutedClient(BokehClient):
    """A BokehClient that sends the sticky ``fleet_route`` cookie (nginx hashes it)."""

    def __init__(self, ws_url: str, token: str, route: str | None = None) -> None:
        super().__init__(ws_url, token, headers={"Cookie": f"fleet_route={route}"} if route else None,
                         max_message_size=256 * 1024 * 1024)
        self.route = route
        self.trace: list[str] = []  # recent change events, to explain a divergence
        self.on_patch = self._trace

    def _trace(self, client, msg, now) -> None:
        for ev in msg.content.get("events", []):
            model = ev.get("model") or ev.get("column_source") or {}
            mid = model.get("id", "") if isinstance(model, dict) else str(model)
            self.trace.append(f"{ev.get('kind')} {mid} {ev.get('attr', '')} {str(ev.get('new', ''))[:80]}")
        del self.trace[:-60]


@dataclass
class Session:
    dashboard: str
    route: str
    client: RoutedClient | None = None
    connects: int = 0
    failures: int = 0
    last_error: str = ""


class Chaos:
    def __init__(self, cfg: Config, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.log_fn = log
        self.rng = random.Random(cfg.seed)
        self.t0 = time.monotonic()
        self.report = Report(config={k: (str(v) if isinstance(v, Path) else v)
                                     for k, v in dataclasses.asdict(cfg).items()})
        self.names = [f"chaos{i}" for i in range(cfg.dashboards)]
        self.stack: Stack | None = None
        self.lock = threading.Lock()
        self.acked: dict[str, list[int]] = {d: [] for d in self.names}
        self.ack_time: dict[str, dict[int, float]] = {d: {} for d in self.names}
        # (start, end) monotonic windows whose acknowledged commands a crash may have lost
        self.loss_windows: list[tuple[float, float]] = []
        self.in_doubt: dict[str, list[int]] = {d: [] for d in self.names}
        self.other_acked: Counter[str] = Counter()
        self.stop_publishing = threading.Event()
        self.stop_faults = threading.Event()
        self.sessions: list[Session] = []
        self.secret = ""
        self.fold_data: dict[str, dict] = {}

    def log(self, msg: str) -> None:
        self.log_fn(f"[{time.monotonic() - self.t0:7.2f}s] {msg}")

    # --- set-up ---------------------------------------------------------------------------
    def build(self) -> None:
        cfg = self.cfg
        self.stack = Stack(instances=cfg.instances,
                           snapshot_every_commands=cfg.snapshot_every_commands,
                           snapshot_every_seconds=cfg.snapshot_every_seconds,
                           redis_mode=cfg.redis_mode, redis_durability=cfg.durability,
                           redis_port=free_ha_base() if cfg.redis_mode == "sentinel" else None,
                           compactor_lock_ttl_ms=cfg.compactor_lock_ttl_ms)
        self.log(f"starting stack in {self.stack.dir} (http {self.stack.settings.http_port}, "
                 f"redis {self.stack.settings.redis_port}, bokeh {self.stack.bokeh_port(1)}..)")
        self.stack.start_healthy()
        self.settings = self.stack.effective_settings()
        self.secret = self.settings.secret_key
        for d in self.names:
            self.stack.fleetctl("dashboard", "create", d)
        self.stack.add_user(USER, PASSWORD, *self.names)
        with Controller(settings=self.settings) as ctl:
            for d in self.names:
                ctl.replace(d, "p", kind="line", data={"seq": [], "y": []}, columns=["seq", "y"],
                            rollover=ROLLOVER, id=f"{d}-init-p")
                ctl.replace(d, "q", kind="scatter", data={"x": [0.0], "v": [0.0]}, id=f"{d}-init-q")
        self.log(f"stack up: {cfg.instances} instances, dashboards {', '.join(self.names)}")

    def token(self, dashboard: str) -> str:
        return mint_token(self.secret, dashboard, user=USER, roles=("viewer",))[1]

    @property
    def nginx_ws(self) -> str:
        return f"ws://127.0.0.1:{self.stack.settings.http_port}/bokeh/dashboard/ws"

    def direct_ws(self, n: int) -> str:
        return f"ws://127.0.0.1:{self.stack.bokeh_port(n)}/bokeh/dashboard/ws"

    # --- controllers ------------------------------------------------------------------------
    def _until_acked(self, fn: Callable[[], str]) -> bool:
        """Run one publish (same command, same id, every time) until Redis acknowledges
        it.  Gives up (the command is then "in doubt") only ``settle`` seconds after the
        chaos phase ended."""
        delay, give_up = 0.05, None
        while True:
            try:
                fn()
                return True
            except (*CONNECTION_ERRORS, NotDurable, ResponseError) as exc:
                if isinstance(exc, ResponseError) and not any(r in str(exc) for r in RETRYABLE_REPLIES):
                    raise
                with self.lock:
                    self.report.retries += 1
                if give_up is None and self.stop_publishing.is_set():
                    give_up = time.monotonic() + self.cfg.settle
                if give_up is not None and time.monotonic() > give_up:
                    self.log(f"giving up on a command after {exc!r}")
                    return False
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    def seq_publisher(self, dashboard: str, k: int) -> None:
        seqs = iter(range(k, 10**12, self.cfg.controllers))  # unique per dashboard
        period = 1.0 / self.cfg.rate
        with Controller(settings=self.settings) as ctl:
            nxt = time.monotonic()
            while not self.stop_publishing.is_set():
                seq = next(seqs)
                cid = f"{dashboard}-s{seq}"
                ok = self._until_acked(lambda: ctl.stream(
                    dashboard, "p", {"seq": [float(seq)], "y": [seq * 0.5]}, id=cid))
                with self.lock:
                    (self.acked if ok else self.in_doubt)[dashboard].append(seq)
                    self.ack_time[dashboard][seq] = time.monotonic()
                nxt += period
                time.sleep(max(0.0, nxt - time.monotonic()))
                if time.monotonic() - nxt > 1.0:
                    nxt = time.monotonic()  # behind after an outage: no burst

    def other_publisher(self, dashboard: str) -> None:
        """Every other op on figure q (and the layout), with ids: dedup applies to all of
        them, and ops that send whole models (replace, clear, remove, layout, set) land
        between streams, where a lagging session applies them in one batch.  Some may be
        rejected by the fold (a patch of an empty or removed q): the fold and every
        session must still agree."""
        rng = random.Random(f"{self.cfg.seed}-{dashboard}")
        ops = ("stream", "stream", "stream", "patch", "patch", "replace", "clear", "set", "layout", "remove")
        n = 0
        with Controller(settings=self.settings) as ctl:
            while not self.stop_publishing.is_set():
                n += 1
                cid, op = f"{dashboard}-o{n}", rng.choice(ops)
                value = rng.random()  # drawn once: a retry sends the very same command
                if op == "stream":
                    fn = lambda: ctl.stream(dashboard, "q", {"x": [float(n)], "v": [value]}, id=cid)  # noqa: E731
                elif op == "patch":
                    fn = lambda: ctl.patch(dashboard, "q", {"v": [[-1, float(n)]]}, id=cid)  # noqa: E731
                elif op == "clear":
                    fn = lambda: ctl.clear(dashboard, "q", id=cid)  # noqa: E731
                elif op == "set":
                    fn = lambda: ctl.set(dashboard, "q", title=f"q {n}", id=cid)  # noqa: E731
                elif op == "layout":
                    rows = [["p", "q"]] if value < 0.5 else [["q"], ["p"]]
                    fn = lambda: ctl.layout(dashboard, rows, id=cid)  # noqa: E731
                elif op == "remove":
                    fn = lambda: ctl.remove(dashboard, "q", id=cid)  # noqa: E731
                else:
                    fn = lambda: ctl.replace(dashboard, "q", kind="scatter",  # noqa: E731
                                             data={"x": [0.0, float(n)], "v": [1.0, 2.0]}, id=cid)
                if self._until_acked(fn):
                    with self.lock:
                        self.other_acked[dashboard] += 1
                if op == "remove":  # bring q back soon, so most commands apply
                    rcid = f"{dashboard}-o{n}r"
                    if self._until_acked(lambda: ctl.replace(dashboard, "q", kind="scatter", id=rcid,
                                                             data={"x": [0.0], "v": [float(n)]})):
                        with self.lock:
                            self.other_acked[dashboard] += 1
                time.sleep(rng.uniform(0.5, 1.5) / self.cfg.other_rate)

    # --- faults -----------------------------------------------------------------------------
    def inject(self, kind: str) -> str:
        s = self.stack
        if kind == "kill_instance":
            n = self.rng.randint(1, self.cfg.instances)
            pid = s.pid(instance_process(n))
            if not pid:
                return f"skipped: {instance_name(n)} not running"
            os.kill(pid, signal.SIGKILL)
            return f"SIGKILL {instance_name(n)} pid {pid}"
        if kind == "restart_redis":
            res = s.ctl("restart", "fleet:redis", timeout=120)
            if res.returncode != 0:
                raise RuntimeError(f"supervisorctl restart: {res.stdout} {res.stderr}")
            return f"supervisorctl restart fleet:redis -> {res.stdout.strip().replace(chr(10), '; ')}"
        if kind == "kill_compactor":
            pid = s.pid("fleet:compactor")
            if not pid:
                return "skipped: compactor not running"
            os.kill(pid, signal.SIGKILL)
            return f"SIGKILL compactor pid {pid}"
        if kind.startswith("client_kill_"):
            typ = kind.rsplit("_", 1)[1]
            c = sync_client(self.settings)
            try:
                n = c.execute_command("CLIENT", "KILL", "TYPE", typ, "SKIPME", "yes")
            finally:
                c.close()
            return f"CLIENT KILL TYPE {typ} -> {n} clients"
        if kind == "nginx_reload":
            if self.rng.random() < 0.5:
                pid = s.pid("fleet:nginx")
                if not pid:
                    return "skipped: nginx not running"
                os.kill(pid, signal.SIGHUP)
                return f"SIGHUP nginx master pid {pid}"
            conf = s.var / "nginx" / "nginx.conf"
            res = subprocess.run([s.ctx["nginx_bin"], "-e", "stderr", "-p", f"{s.var}/nginx/", "-c", str(conf),
                                  "-s", "reload"], capture_output=True, text=True, timeout=30)
            return f"nginx -s reload -> rc {res.returncode} {res.stderr.strip()[:120]}"
        if kind == "kill_web_worker":
            pid = s.pid("fleet:web")
            workers = _children(pid) if pid else []
            if not workers:
                return "skipped: no gunicorn worker running"
            victim = self.rng.choice(workers)
            os.kill(victim, signal.SIGKILL)
            return f"SIGKILL gunicorn worker pid {victim} (master {pid})"
        if kind == "stop_compactor":
            pid = s.pid("fleet:compactor")
            if not pid:
                return "skipped: compactor not running"
            c = sync_client(self.settings)
            try:
                held = c.get(Keys(self.settings.key_prefix).compactor_lock) is not None
            finally:
                c.close()
            pause = self.cfg.compactor_lock_ttl_ms / 1000 + 2
            os.kill(pid, signal.SIGSTOP)
            timer = threading.Timer(pause, _sigcont, (pid,))
            timer.daemon = True
            timer.start()
            return f"SIGSTOP compactor pid {pid} for {pause:.1f}s (lock held: {held})"
        if kind == "kill_redis_master":
            return self._kill_redis_master()
        if kind == "crash_redis":
            return self._crash_redis()
        raise ValueError(kind)

    def _kill_redis_master(self) -> str:
        """SIGKILL the master and keep it down until the sentinels promoted the replica."""
        s = self.stack
        ha = s.ctx.get("redis_ha")
        if not ha:
            return "skipped: not a sentinel stack"
        c = sync_client(self.settings)
        try:
            _, port = c.connection_pool.get_master_address()
            program = "fleet:redis" if port == ha["master_port"] else "fleet:redis_replica"
            pid = s.pid(program)
            if not pid:
                return f"skipped: {program} not running"
            os.kill(pid, signal.SIGKILL)
            s.ctl("stop", program, timeout=60)  # no restart by supervisord meanwhile
            deadline = time.monotonic() + 60
            new = port
            while new == port and time.monotonic() < deadline:
                time.sleep(0.2)
                try:
                    new = c.connection_pool.get_master_address()[1]
                except CONNECTION_ERRORS:
                    pass
            took = 60 - (deadline - time.monotonic())
        finally:
            c.close()
        s.ctl("start", program, timeout=60)  # rejoins as a replica of the new master
        if new == port:
            raise RuntimeError(f"no failover within 60 s after SIGKILL of {program}")
        return f"SIGKILL {program} (master :{port}) pid {pid}; new master :{new} after {took:.1f}s"

    def _crash_redis(self) -> str:
        """A machine crash of the lone Redis: the data dir goes back to an earlier copy."""
        s = self.stack
        if s.ctx.get("redis_ha"):
            return "skipped: a sentinel stack"
        data = s.var / "redis" / "data"
        backup = s.var / "redis" / "crash-copy"
        shutil.rmtree(backup, ignore_errors=True)
        start = time.monotonic()
        subprocess.run(["cp", "-a", str(data), str(backup)], check=True)  # keeps the owner
        time.sleep(1.5)  # what fsync everysec (and the page cache) had not yet made durable
        res = s.ctl("stop", "fleet:redis", timeout=60)
        end = time.monotonic()
        self.loss_windows.append((start, end))
        shutil.rmtree(data)
        subprocess.run(["cp", "-a", str(backup), str(data)], check=True)
        shutil.rmtree(backup, ignore_errors=True)
        res2 = s.ctl("start", "fleet:redis", timeout=60)
        if res2.returncode != 0:
            raise RuntimeError(f"supervisorctl start fleet:redis: {res2.stdout} {res2.stderr}")
        return (f"data dir rolled back by {end - start:.1f}s while down "
                f"({res.stdout.strip()}; {res2.stdout.strip()})")

    def fault_loop(self, until: float) -> None:
        plan: list[tuple[float, str]] = []
        if self.cfg.schedule:
            span = until - time.monotonic()
            step = span / (len(self.cfg.schedule) + 1)
            plan = [(time.monotonic() + step * (i + 1), k) for i, k in enumerate(self.cfg.schedule)]
        while not self.stop_faults.is_set():
            if plan:
                at, kind = plan.pop(0)
            elif self.cfg.schedule:
                return
            else:
                at = time.monotonic() + min(self.rng.expovariate(1.0 / self.cfg.fault_every),
                                            3 * self.cfg.fault_every)
                kind = self.rng.choice(self.cfg.kinds)
            if at >= until or self.stop_faults.wait(max(0.0, at - time.monotonic())):
                return
            t = time.monotonic() - self.t0
            try:
                detail = self.inject(kind)
            except Exception as exc:  # an injection failing is itself worth knowing
                detail = f"injection error: {exc!r}"
            self.report.faults.append({"t": round(t, 2), "type": kind, "detail": detail})
            self.log(f"FAULT {kind}: {detail}")

    # --- sessions ---------------------------------------------------------------------------
    async def open_client(self, url: str, dashboard: str, route: str | None) -> RoutedClient:
        c = RoutedClient(url, self.token(dashboard), route)
        return await c.connect(timeout=10)

    async def keep_session(self, s: Session, done: asyncio.Event) -> None:
        """Hold a session open; when its websocket drops, open a new one (page reload)."""
        delay = 0.25
        while not done.is_set():
            try:
                s.client = await self.open_client(self.nginx_ws, s.dashboard, s.route)
                s.connects += 1
                delay = 0.25
            except Exception as exc:
                s.failures += 1
                s.last_error = repr(exc)[:200]
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
                continue
            closed = asyncio.ensure_future(s.client.closed.wait())
            stop = asyncio.ensure_future(done.wait())
            await asyncio.wait({closed, stop}, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            stop.cancel()
            if done.is_set():
                return
            s.client = None  # dropped: the page reloads itself
            await asyncio.sleep(0.2 * (0.5 + random.random()))

    def sessions_by_instance(self) -> dict[int, dict[str, int]]:
        return {n: {d: self.stack.instance_sessions(n, d) for d in self.names}
                for n in range(1, self.cfg.instances + 1)}

    # --- verification -----------------------------------------------------------------------
    def wait_recovered(self) -> None:
        from app.stack import health

        programs = ["fleet:redis", "fleet:compactor", "fleet:nginx", "fleet:web"] + [
            instance_process(n) for n in range(1, self.cfg.instances + 1)]
        if self.stack.ctx.get("redis_ha"):
            sentinels = len(self.stack.ctx["redis_ha"]["sentinel_ports"])
            programs += ["fleet:redis_replica"] + [
                process_key(GROUP, sentinel_name(n)) for n in range(1, sentinels + 1)]
        self.stack.wait_running(*programs, timeout=self.cfg.settle)
        problems = health.wait_healthy(self.settings, self.cfg.settle)
        if problems:
            self.report.failures.append(f"stack not healthy after the chaos: {problems}")
        for n in range(1, self.cfg.instances + 1):
            self.stack.wait_healthz(n, timeout=self.cfg.settle)

    def check_fold(self) -> dict[str, str]:
        """(a): the fold in Redis holds every acked seq once and nothing else."""
        digests = {}
        client = sync_client(self.settings)
        try:
            for d in self.names:
                state, last_id = read_state(client, Keys(self.settings.key_prefix), d, self.settings)
                seqs = [int(v) for v in state.figures["p"].data["seq"]]
                counts = Counter(seqs)
                acked, doubt = set(self.acked[d]), set(self.in_doubt[d])
                dups = sorted(s for s, c in counts.items() if c > 1)
                missing = sorted(acked - set(counts))
                # a simulated machine crash may lose what was acknowledged in its window
                lost = [q for q in missing if any(a <= self.ack_time[d].get(q, -1) <= b
                                                   for a, b in self.loss_windows)]
                missing = [q for q in missing if q not in set(lost)]
                extra = sorted(set(counts) - acked - doubt)
                ys = state.figures["p"].data["y"]
                bad_y = sum(1 for s, y in zip(seqs, ys, strict=True) if y != s * 0.5)
                digests[d] = data_digest(state_data(state))
                self.fold_data[d] = state_data(state)
                self.report.fold[d] = {"present": len(seqs), "missing": len(missing), "duplicates": len(dups),
                                       "lost_in_crash": len(lost),
                                       "extra": len(extra), "bad_y": bad_y, "last_id": last_id,
                                       "applied": state.applied, "digest": digests[d],
                                       "figures": sorted(state.figures)}
                if len(acked) != len(self.acked[d]):
                    self.report.failures.append(f"{d}: the controllers acked a seq twice (test bug)")
                if missing:
                    self.report.failures.append(f"{d}: {len(missing)} acked seqs missing from the fold, "
                                                f"e.g. {missing[:10]}")
                if dups:
                    self.report.failures.append(f"{d}: {len(dups)} seqs applied twice, e.g. {dups[:10]}")
                if extra:
                    self.report.failures.append(f"{d}: {len(extra)} seqs never published, e.g. {extra[:10]}")
                if bad_y:
                    self.report.failures.append(f"{d}: {bad_y} rows with y != seq/2")
        finally:
            client.close()
        return digests

    async def converge(self, want: dict[str, str], names: dict[str, list[str]], timeout: float) -> None:
        """Wait until every long-lived session shows the fold (or the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.client is not None and s.client.doc is not None
                   and data_digest(client_data(s.client, names[s.dashboard])) == want[s.dashboard]
                   for s in self.sessions):
                return
            await asyncio.sleep(0.5)

    def record_session(self, kind: str, instance: str, dashboard: str, client: RoutedClient | None,
                       want: str, names: list[str], note: str = "") -> bool:
        got = data_digest(client_data(client, names)) if client is not None and client.doc else "no session"
        equal = got == want
        row = {"kind": kind, "instance": instance, "dashboard": dashboard, "equal": equal,
               "digest": got[:16], "note": note}
        if client is not None and client.doc is not None and not equal:
            p = client_data(client).get("p", {})
            seqs = [int(v) for v in p.get("seq", [])]
            cnt = Counter(seqs)
            acked = set(self.acked[dashboard])
            row.update(rows=len(seqs), dup=sum(1 for c in cnt.values() if c > 1),
                       missing=len(acked - set(cnt)), diff=self.explain(dashboard, client, names),
                       trace=client.trace[-30:])
        self.report.sessions.append(row)
        if not equal:
            brief = {k: v for k, v in row.items() if k not in ("kind", "trace")}
            self.report.failures.append(f"{kind} session on {instance} of {dashboard} differs from the fold: "
                                        f"{json.dumps(brief)}")
        return equal

    def explain(self, dashboard: str, client: RoutedClient, names: list[str]) -> list[str]:
        """Which figure/column of a session differs from the fold, and where."""
        want = self.fold_data.get(dashboard, {})
        got = client_data(client, names)
        out = []
        for name in sorted(set(want) | set(got)):
            w, g = want.get(name, {}), got.get(name, {})
            if set(w) != set(g):
                out.append(f"{name}: columns {sorted(g)} != {sorted(w)}")
                continue
            for col in sorted(w):
                if col == TITLE:
                    if w[col] != g[col]:
                        out.append(f"{name}: title {g[col]} != {w[col]}")
                    continue
                a, b = np.asarray(w[col], dtype=float), np.asarray(g[col], dtype=float)
                if a.shape != b.shape:
                    out.append(f"{name}.{col}: {len(b)} rows, fold {len(a)}; tail {b[-3:].tolist()} "
                               f"vs {a[-3:].tolist()}")
                elif not np.array_equal(a, b, equal_nan=True):
                    i = int(np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))[0])
                    out.append(f"{name}.{col}[{i}] = {b[i]!r}, fold {a[i]!r} (len {len(a)})")
        return out

    async def fresh_sessions(self, want: dict[str, str], names: dict[str, list[str]]) -> None:
        """(b) for new sessions: on every instance directly, and through nginx with
        route cookies until every instance served at least one."""
        n_inst = self.cfg.instances
        for d in self.names:
            for n in range(1, n_inst + 1):
                for _ in range(self.cfg.fresh):
                    try:
                        c = await self.open_client(self.direct_ws(n), d, None)
                    except Exception as exc:
                        self.report.failures.append(f"fresh direct session on {instance_name(n)} of {d}: {exc!r}")
                        continue
                    self.record_session("fresh-direct", instance_name(n), d, c, want[d], names[d])
                    await c.close()
            served: Counter[int] = Counter()
            for i in range(20 * n_inst):
                if len(served) == n_inst and min(served.values()) >= self.cfg.fresh:
                    break
                before = {n: self.stack.instance_sessions(n, d) for n in range(1, n_inst + 1)}
                try:
                    c = await self.open_client(self.nginx_ws, d, f"fresh-{d}-{i}")
                except Exception as exc:
                    self.report.failures.append(f"fresh nginx session of {d}: {exc!r}")
                    continue
                after = {n: self.stack.instance_sessions(n, d) for n in range(1, n_inst + 1)}
                up = [n for n in after if after[n] > before[n]]
                where = instance_name(up[0]) if len(up) == 1 else "unknown"
                if len(up) == 1:
                    served[up[0]] += 1
                self.record_session("fresh-nginx", where, d, c, want[d], names[d])
                await c.close()
            for n in range(1, n_inst + 1):
                if served[n] == 0:
                    self.report.failures.append(f"no fresh session through nginx landed on {instance_name(n)} ({d})")

    def count_nginx_workers(self) -> None:
        """Old nginx workers stay 'shutting down' after a reload while they still hold
        websockets: count them (informative, not a failure)."""
        master = self.stack.pid("fleet:nginx")
        counts: Counter[str] = Counter()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid != master:
                    continue
                title = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except (OSError, ValueError, IndexError):
                continue
            counts["shutting down" if "shutting down" in title else "running"] += 1
        self.report.nginx_workers = dict(counts)

    def instance_counters(self) -> None:
        """Each instance's own counters (since its last start): reader reconnects, ids
        skipped as duplicates, dashboard resyncs, failed session updates."""
        wanted = {"fleet_reader_reconnects_total": "reader_reconnects",
                  "fleet_reader_duplicates_total": "duplicate_ids_skipped",
                  "fleet_resyncs_total": "resyncs", "fleet_delivery_errors_total": "delivery_errors",
                  "fleet_reader_listener_errors_total": "listener_errors",
                  "fleet_history_rewinds_total": "history_rewinds"}
        for n in range(1, self.cfg.instances + 1):
            text = ""
            try:
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{self.stack.bokeh_port(n)}/metrics",
                                            timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                pass
            st: dict[str, float] = {}
            for line in text.splitlines():
                metric = line.split("{", 1)[0].split(" ", 1)[0]
                if metric in wanted:
                    st[wanted[metric]] = st.get(wanted[metric], 0.0) + float(line.split()[-1])
            if st.get("delivery_errors") or st.get("listener_errors"):
                self.report.failures.append(f"{instance_name(n)}: session update errors {st}")
            self.report.instance_stats[instance_name(n)] = st

    # --- the run ------------------------------------------------------------------------------
    async def main(self) -> None:
        cfg = self.cfg
        done = asyncio.Event()
        routes = [f"r{i}" for i in range(cfg.sessions)]
        for d in self.names:
            self.sessions += [Session(d, f"{d}-{r}") for r in routes]
        tasks = [asyncio.create_task(self.keep_session(s, done)) for s in self.sessions]
        t_open = time.monotonic()
        while not all(s.client for s in self.sessions):
            if time.monotonic() - t_open > 60:
                raise RuntimeError("sessions did not open: "
                                   + "; ".join(s.last_error for s in self.sessions if not s.client))
            await asyncio.sleep(0.1)
        self.log(f"{len(self.sessions)} sessions open through nginx; per instance {self.sessions_by_instance()}")

        threads = [threading.Thread(target=self.seq_publisher, args=(d, k), daemon=True, name=f"pub-{d}-{k}")
                   for d in self.names for k in range(cfg.controllers)]
        threads += [threading.Thread(target=self.other_publisher, args=(d,), daemon=True, name=f"other-{d}")
                    for d in self.names]
        for t in threads:
            t.start()
        until = time.monotonic() + cfg.seconds
        faults = threading.Thread(target=self.fault_loop, args=(until,), daemon=True, name="faults")
        faults.start()
        self.log(f"chaos for {cfg.seconds:.0f} s: {len(threads)} publishers, faults every ~{cfg.fault_every} s")
        while time.monotonic() < until:
            await asyncio.sleep(min(5.0, max(0.05, until - time.monotonic())))
            with self.lock:
                n = sum(len(v) for v in self.acked.values())
            errors = sorted({s.last_error for s in self.sessions if not s.client and s.last_error})
            self.log(f"acked {n}, faults {len(self.report.faults)}, "
                     f"sessions connected {sum(1 for s in self.sessions if s.client)}/{len(self.sessions)}"
                     + (f"; reconnecting after {errors[:3]}" if errors else ""))
        self.stop_faults.set()
        await asyncio.to_thread(faults.join)
        self.stop_publishing.set()
        for t in threads:
            await asyncio.to_thread(t.join, cfg.settle + 30)
            if t.is_alive():
                self.report.failures.append(f"publisher {t.name} did not stop (a publish never returned)")
        self.log("chaos over: publishers stopped; waiting for the stack to recover")

        await asyncio.to_thread(self.wait_recovered)
        self.report.acked = {d: len(v) for d, v in self.acked.items()}
        self.report.other_acked = dict(self.other_acked)
        self.report.in_doubt = {d: sorted(v) for d, v in self.in_doubt.items() if v}
        want = await asyncio.to_thread(self.check_fold)
        names = {d: self.report.fold[d]["figures"] for d in self.names}
        t_conv = time.monotonic()
        await self.converge(want, names, cfg.settle)
        self.log(f"sessions converged after {time.monotonic() - t_conv:.1f} s (or timed out); checking")
        self.report.reconnects = sum(max(0, s.connects - 1) for s in self.sessions)
        per_inst = self.sessions_by_instance()
        self.report.long_lived_by_instance = {instance_name(n): sum(v.values()) for n, v in per_inst.items()}
        self.log(f"long-lived sessions per instance (fleet_sessions): {per_inst}")
        for s in self.sessions:
            self.record_session("long-lived", "via nginx", s.dashboard, s.client, want[s.dashboard],
                                names[s.dashboard], note=f"connects={s.connects}")
        await self.fresh_sessions(want, names)
        want_after = await asyncio.to_thread(self.check_fold_digests)
        if want_after != want:
            self.report.failures.append("the fold changed during verification (a publisher still running?)")
        self.instance_counters()
        self.count_nginx_workers()
        done.set()
        for s in self.sessions:
            if s.client is not None:
                await s.client.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def check_fold_digests(self) -> dict[str, str]:
        client = sync_client(self.settings)
        try:
            return {d: data_digest(state_data(read_state(client, Keys(self.settings.key_prefix), d,
                                                         self.settings)[0])) for d in self.names}
        finally:
            client.close()

    def run(self) -> Report:
        try:
            self.build()
            asyncio.run(self.main())
        except Exception as exc:  # reported, never hidden: the run failed
            import traceback

            traceback.print_exc()
            self.report.failures.append(f"run aborted: {exc!r}")
        finally:
            self.report.wall_seconds = time.monotonic() - self.t0
            if self.stack is not None:
                if self.cfg.keep_logs:
                    shutil.copytree(self.stack.var / "log", self.cfg.keep_logs, dirs_exist_ok=True)
                self.stack.stop()
        return self.report


def run(cfg: Config, log: Callable[[str], None] = print) -> Report:
    """Build a stack, run the chaos, verify; the stack is always torn down."""
    return Chaos(cfg, log).run()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " See docs/reliability.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = Config()
    ap.add_argument("--seconds", type=float, default=d.seconds, help="length of the chaos phase")
    ap.add_argument("--instances", type=int, default=d.instances, help="Bokeh instances in the stack")
    ap.add_argument("--dashboards", type=int, default=d.dashboards, help="dashboards published to")
    ap.add_argument("--sessions", type=int, default=d.sessions,
                    help="long-lived sessions per dashboard, through nginx (each its own route cookie)")
    ap.add_argument("--controllers", type=int, default=d.controllers, help="seq publishers per dashboard")
    ap.add_argument("--rate", type=float, default=d.rate, help="commands/s per seq publisher")
    ap.add_argument("--other-rate", type=float, default=d.other_rate,
                    help="replace/stream/patch commands of a second figure per second and dashboard")
    ap.add_argument("--fault-every", type=float, default=d.fault_every, help="mean seconds between faults")
    ap.add_argument("--faults", default=None,
                    help=f"fixed comma-separated fault order, spread evenly over the run, instead of random "
                         f"(types: {', '.join(ALL_FAULTS)}; 'all' = each of the mode's once)")
    ap.add_argument("--redis-mode", choices=("single", "sentinel"), default=d.redis_mode,
                    help="sentinel: master + replica + 3 sentinels, adds the kill_redis_master fault")
    ap.add_argument("--durability", choices=("everysec", "always", "replica"), default=d.durability,
                    help="FLEET_REDIS_DURABILITY of the stack and the controllers")
    ap.add_argument("--crash", action="store_true",
                    help="add crash_redis (data dir rolled back; loses the newest acked commands)")
    ap.add_argument("--seed", type=int, default=d.seed, help="RNG seed for the fault schedule")
    ap.add_argument("--fresh", type=int, default=d.fresh,
                    help="fresh sessions per instance and dashboard opened after the chaos")
    ap.add_argument("--settle", type=float, default=d.settle, help="seconds allowed for recovery and catch-up")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the report as JSON")
    ap.add_argument("--keep-logs", type=Path, default=None, metavar="DIR", help="copy the stack's logs here")
    a = ap.parse_args(argv)
    schedule = None
    if a.faults:
        kinds = Config(redis_mode=a.redis_mode, crash=a.crash).kinds
        schedule = kinds if a.faults == "all" else tuple(x.strip() for x in a.faults.split(",") if x.strip())
        unknown = set(schedule) - set(ALL_FAULTS)
        if unknown:
            ap.error(f"unknown fault types: {sorted(unknown)}")
    cfg = Config(seconds=a.seconds, instances=a.instances, dashboards=a.dashboards, sessions=a.sessions,
                 controllers=a.controllers, rate=a.rate, other_rate=a.other_rate, fault_every=a.fault_every,
                 seed=a.seed,
                 schedule=schedule, fresh=a.fresh, settle=a.settle, keep_logs=a.keep_logs,
                 redis_mode=a.redis_mode, durability=a.durability, crash=a.crash)
    report = run(cfg)
    print()
    print(report.summary())
    if a.json:
        a.json.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
