"""What opening one session costs an instance: building the Bokeh document of a
dashboard (one line figure, 1,000 rows) and serialising it for PULL-DOC-REPLY.

Both run on the instance's event loop, so while a session opens no update goes out
to the other sessions of that instance: this is the latency spike that session churn
adds (see bench/soak.py and docs/performance.md).  In-process, no servers.

    .venv/bin/python bench/session_open.py [--sessions 50] [--rows 1000]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from bokeh.document import Document
from bokeh.protocol import Protocol

from app.control import encode, parse
from app.control.state import EMPTY, apply
from app.instance.documents import DashboardDoc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=50, help="documents to build (default 50)")
    ap.add_argument("--rows", type=int, default=1000, help="rows in the figure (default 1000)")
    args = ap.parse_args(argv)
    state = apply(EMPTY, parse(encode("replace", name="p", kind="line", x="seq", y=["y"], columns=["seq", "y"],
                                      rollover=max(1000, args.rows))))
    state = apply(state, parse(encode("stream", name="p", data={"seq": np.arange(args.rows),
                                                                "y": np.random.random(args.rows)})))
    proto = Protocol()
    build, ser = [], []
    for i in range(args.sessions + 5):
        t0 = time.perf_counter()
        doc = Document()
        DashboardDoc(doc, "bench").install(state)
        t1 = time.perf_counter()
        proto.create("PULL-DOC-REPLY", "x", doc)
        t2 = time.perf_counter()
        if i >= 5:  # the first builds pay for imports and caches
            build.append((t1 - t0) * 1000)
            ser.append((t2 - t1) * 1000)
    for name, xs in (("build document", build), ("serialise PULL-DOC-REPLY", ser)):
        print(f"{name:<26} p50 {np.percentile(xs, 50):6.1f} ms  p99 {np.percentile(xs, 99):6.1f} ms "
              f"({len(xs)} sessions, {args.rows} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
