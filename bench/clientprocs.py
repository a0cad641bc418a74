"""The load generator over several processes: viewer connections split across worker
processes, each its own asyncio loop taking its share of the messages off its sockets.

One Python process reading 10,000 sockets in turn adds its own queue to every command's
burst; the workers spread that over the cores.  Each worker keeps (receipt time,
message) as :class:`LightClient` does with ``raw`` and, when asked, decodes them into
(seq, receipt time) pairs for the parent, which alone knows when each seq was sent.
Receipt and send times are both ``time.perf_counter()``: CLOCK_MONOTONIC on Linux, one
clock for every process on the machine, so latencies across processes are exact.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time

import numpy as np

from bench.wsclient import LightClient, WebUser, cpu_seconds, receipts


async def _serve(conn, base_url: str, cookies: dict[str, str], concurrency: int, marker: bool) -> None:
    """A worker's loop: open/take/close commands from the parent pipe, one at a time."""
    import secrets

    loop = asyncio.get_running_loop()
    web = WebUser(base_url)
    web.cookies = dict(cookies)
    raw: list = []
    clients: list[LightClient] = []
    while True:
        cmd, *rest = await loop.run_in_executor(None, conn.recv)
        if cmd == "open":
            dashboard, count = rest
            sem = asyncio.Semaphore(concurrency)

            async def one(dashboard: str = dashboard, sem: asyncio.Semaphore = sem) -> None:
                route = secrets.token_urlsafe(9)
                async with sem:
                    token = await web.token(dashboard, route)
                    c = LightClient(web.ws_url, token, {}, [], web.ws_headers(route), raw, marker=marker)
                    await c.connect(timeout=120)
                clients.append(c)

            t0 = time.perf_counter()
            try:
                await asyncio.gather(*(one() for _ in range(count)))
                conn.send(("ok", time.perf_counter() - t0))
            except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
                conn.send(("error", f"{type(e).__name__}: {e}"))
        elif cmd == "take":
            seqs, times = receipts(raw)
            closed = sum(c.closed.is_set() for c in clients)
            conn.send(("ok", (np.array(seqs, dtype=np.int64), np.array(times)), closed))
        elif cmd == "close":
            for c in clients:
                c.close()
            clients.clear()
            conn.send(("ok",))
        elif cmd == "exit":
            return


def _worker(conn, base_url: str, cookies: dict[str, str], concurrency: int, marker: bool, loop: str) -> None:
    factory = None
    if loop == "uvloop":  # libuv's loop: less CPU per socket read than asyncio's own
        import uvloop

        factory = uvloop.new_event_loop
    asyncio.run(_serve(conn, base_url, cookies, concurrency, marker), loop_factory=factory)


class ClientPool:
    """``procs`` worker processes holding the viewer connections, opened evenly among them;
    ``loop`` is their event loop ("uvloop" or "asyncio").

    ``len(pool)`` is the number of open connections; :meth:`take` returns the
    (seq, receipt time) pairs received since the last call, from every worker."""

    def __init__(self, procs: int, web: WebUser, marker: bool = True, open_concurrency: int = 16,
                 loop: str = "uvloop") -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with a running event loop
        self.pipes, self.procs = [], []
        per = max(2, open_concurrency // procs)
        for _ in range(procs):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, web.base, web.cookies, per, marker, loop), daemon=True)
            p.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(p)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu(self) -> list[float]:
        """CPU seconds of each worker so far."""
        return [cpu_seconds(pid) for pid in self.pids]

    async def _ask(self, msgs: list[tuple]) -> list[tuple]:
        loop = asyncio.get_running_loop()
        for pipe, msg in zip(self.pipes, msgs, strict=True):
            pipe.send(msg)
        replies = await asyncio.gather(*(loop.run_in_executor(None, pipe.recv) for pipe in self.pipes))
        errors = [r[1] for r in replies if r[0] == "error"]
        if errors:
            raise ConnectionError("; ".join(errors))
        return replies

    async def open(self, dashboard: str, count: int) -> float:
        """Open ``count`` more connections, spread evenly; seconds until all are current."""
        n = len(self.pipes)
        shares = [count // n + (1 if i < count % n else 0) for i in range(n)]
        t0 = time.perf_counter()
        await self._ask([("open", dashboard, s) for s in shares])
        self.count += count
        return time.perf_counter() - t0

    async def take(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(seqs, receipt times, connections closed) from every worker since the last call."""
        replies = await self._ask([("take",)] * len(self.pipes))
        seqs = np.concatenate([r[1][0] for r in replies])
        times = np.concatenate([r[1][1] for r in replies])
        return seqs, times, sum(r[2] for r in replies)

    async def close(self) -> None:
        await self._ask([("close",)] * len(self.pipes))
        self.count = 0

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("exit",))
            except OSError:
                pass
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
