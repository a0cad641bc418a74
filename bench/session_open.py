"""What opening a viewer costs an instance, beside what a per-session document cost.

A dashboard (one line figure, ``--rows`` rows) is built once per instance into a
shared document; its PULL-DOC serialisation is cached (refreshed in a worker thread,
not on the loop).  Opening a viewer then costs registering the connection and one write
of the cached reply plus the updates since (``--replay`` stream commands).  The naive
baseline is what every session cost before issue 13: a document of its own built
and serialised for PULL-DOC-REPLY on the loop.  In-process, no servers (the token
check and the websocket handshake are measured by bench/fanout.py, end to end).

    .venv/bin/python bench/session_open.py [--viewers 200] [--rows 1000] [--replay 100]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from bokeh.document import Document
from bokeh.protocol import Protocol

from app.control import encode, parse
from app.control.state import EMPTY, apply, step
from app.instance.documents import DashboardDoc
from app.instance.sessions import Fanout
from fleet_testing.pages import Stream


def stats(xs: list[float]) -> str:
    return f"p50 {np.percentile(xs, 50):7.3f} ms  p99 {np.percentile(xs, 99):7.3f} ms"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--viewers", type=int, default=200, help="viewers to open (default 200)")
    ap.add_argument("--naive", type=int, default=30, help="naive per-session documents to build (default 30)")
    ap.add_argument("--rows", type=int, default=1000, help="rows in the figure (default 1000)")
    ap.add_argument("--replay", type=int, default=100, help="stream commands since the cached snapshot (default 100)")
    args = ap.parse_args(argv)
    state = apply(EMPTY, parse(encode("replace", name="p", kind="line", x="seq", y=["y"], columns=["seq", "y"],
                                      rollover=max(1000, args.rows))))
    state = apply(state, parse(encode("stream", name="p", data={"seq": np.arange(args.rows),
                                                                "y": np.random.random(args.rows)})))
    holder = {"state": state}
    fanout = Fanout(lambda d: (holder["state"], "1-0"), pull_cache_seconds=3600)

    t0 = time.perf_counter()
    first = fanout.open_viewer(Stream(), "bench")
    fanout.pull(first, "r0")  # builds the shared document and its snapshot (inline: no loop here)
    board = fanout.boards["bench"]
    build_and_snapshot = (time.perf_counter() - t0) * 1000
    snaps = []
    for _ in range(5):
        t = time.perf_counter()
        board.serialise()
        snaps.append((time.perf_counter() - t) * 1000)
    for i in range(args.replay):
        holder["state"], cmd = step(holder["state"], parse(encode("stream", name="p", data={
            "seq": [args.rows + i], "y": [0.5]})))
        fanout.on_command("bench", f"{i + 2}-0", cmd, holder["state"])

    opens = []
    for i in range(args.viewers):
        t = time.perf_counter()
        v = fanout.open_viewer(Stream(), "bench")
        fanout.pull(v, f"r{i + 1}")
        opens.append((time.perf_counter() - t) * 1000)

    proto, naive = Protocol(), []
    for i in range(args.naive + 3):
        t = time.perf_counter()
        doc = Document()
        DashboardDoc(doc, "bench").install(state)
        proto.create("PULL-DOC-REPLY", "x", doc)
        if i >= 3:  # the first builds pay for imports and caches
            naive.append((time.perf_counter() - t) * 1000)

    print(f"shared document: build + first snapshot once per dashboard per instance: {build_and_snapshot:.1f} ms")
    print(f"snapshot refresh (worker thread, at most every FLEET_PULL_CACHE_SECONDS): {stats(snaps)}")
    print(f"open a viewer (cached reply + {args.replay} replayed updates, on the loop): {stats(opens)} "
          f"({len(board.snapshot or b'') / 1024:.0f} KB + {board.replay_bytes / 1024:.0f} KB per reply)")
    print(f"naive: a per-session document built + serialised on the loop: {stats(naive)}")
    print(f"open cost ratio naive / shared: {np.percentile(naive, 50) / np.percentile(opens, 50):.0f}x (p50)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
