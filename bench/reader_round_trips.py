"""Round trips the reader makes per read, and publish-to-fold latency, on a real Redis.

Starts its own redis-server on a free loopback port and one in-process
:class:`app.bus.reader.Reader`; a publisher XADDs ``--commands`` commands one at a
time, each after the previous one was folded (the reader's steady state: one entry
per read).  Round trips are counted where every asyncio redis-py request goes out
(``Connection.send_packed_command``, one call per command or pipeline).

Usage: .venv/bin/python bench/reader_round_trips.py [--commands 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import redis
import redis.asyncio.connection as aconn

from app.bus import registry
from app.bus.keys import Keys
from app.bus.reader import Reader
from app.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Timing:
    def __init__(self) -> None:
        self.folded = 0

    def on_reset(self, *a) -> None:
        pass

    def on_command(self, *a) -> None:
        self.folded += 1

    def on_rejected(self, *a) -> None:
        pass


async def measure(url: str, n: int) -> dict:
    sent = 0
    original = aconn.AbstractConnection.send_packed_command

    async def counted(self, command, check_health=True):
        nonlocal sent
        sent += 1
        return await original(self, command, check_health)

    aconn.AbstractConnection.send_packed_command = counted
    keys = Keys("fleet")
    r = redis.Redis.from_url(url)
    registry.create_dashboard(r, keys, "d")
    r.xadd(keys.commands("d"), {"op": "replace", "name": "p", "kind": "line", "data": '{"t":[0],"y":[0]}'})
    timing = Timing()
    reader = Reader(Settings(redis_url=url, block_ms=1000), timing)
    reader.start()
    await reader.wait_caught_up(30)
    await asyncio.sleep(0.2)
    before, lat = sent, []
    for i in range(n):
        t0 = time.perf_counter()
        r.xadd(keys.commands("d"), {"op": "stream", "name": "p", "data": json.dumps({"t": [i], "y": [i]})})
        while timing.folded < i + 1:
            await asyncio.sleep(0)
        lat.append((time.perf_counter() - t0) * 1000)
    trips = sent - before
    await reader.stop()
    r.close()
    lat.sort()
    return {"commands": n, "reader_round_trips_per_command": round(trips / n, 2),
            "publish_to_fold_ms_p50": round(statistics.median(lat), 3),
            "publish_to_fold_ms_p99": round(lat[int(0.99 * (n - 1))], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commands", type=int, default=2000)
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="fleet-rt-")
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        print(json.dumps(asyncio.run(measure(f"redis://127.0.0.1:{port}/0", args.commands))))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
