"""Page memory under replace: a dashboard page left open while a controller swaps a
figure between line and bar every few seconds.

Starts a real stack (supervisord, Redis, nginx, gunicorn, one Bokeh instance,
compactor), logs a viewer in with Debian's headless Chromium, opens the dashboard and
keeps it open while a controller thread publishes ``replace`` (line, bar, line, ...;
``--rows`` rows each, plus a small ``stream`` in between) every ``--every`` seconds.
Every ``--sample`` seconds, after a forced GC (CDP ``HeapProfiler.collectGarbage``):

* the page's JS heap and array buffers (CDP ``Runtime.getHeapUsage``);
* DOM nodes, documents and JS event listeners (CDP ``Memory.getDOMCounters``);
* the models in ``Bokeh.documents[0]`` and the views under the page's root views
  (what leaks if BokehJS keeps old models or views after a replace).

It prints a verdict (see :func:`verdict`) and the slope of each over the second half of
the run (per hour), and writes JSON + PNG (``--out``, default ``bench/results/replace_memory.json``).

    .venv/bin/python bench/replace_memory.py                  # 3 minutes
    .venv/bin/python bench/replace_memory.py --seconds 3600   # the hour
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np

from fleet_testing.stack import CHROMIUM, CHROMIUM_ARGS, Stack, login, open_dashboard

ROOT = Path(__file__).resolve().parents[1]

USER, PASSWORD = "bench", "bench-replace-memory-password"
DASHBOARD = "swap"
COUNTS_JS = """() => {
  const doc = Bokeh.documents[0];
  let views = 0;
  const seen = new Set();
  const walk = (v) => { if (v == null || seen.has(v)) return; seen.add(v); views += 1;
    const kids = typeof v.children === 'function' ? v.children() : [];
    for (const c of kids) walk(c); };
  for (const root of Bokeh.index) walk(root);
  return {models: doc.all_models.size, views: views, roots: doc.roots().length}; }"""


def controller(stack: Stack, rows: int, every: float, stop: threading.Event, counter: list[int]) -> None:
    """Replace line <-> bar every ``every`` seconds (and stream a few rows in between)."""
    from app.client import Controller

    rng = np.random.default_rng(0)
    with Controller(settings=stack.effective_settings(), timeout=30) as ctl:
        i = 0
        while not stop.is_set():
            x = np.arange(rows, dtype=np.float64)
            ctl.replace(DASHBOARD, "swap", kind="bar" if i % 2 else "line",
                        data={"x": x, "y": rng.normal(size=rows)}, title=f"replace {i}")
            ctl.replace(DASHBOARD, "steady", kind="line", data={"x": x[:50], "y": rng.normal(size=50)})
            counter[0] = i = i + 1
            if stop.wait(every / 2):
                break
            ctl.stream(DASHBOARD, "swap", {"x": [float(rows)], "y": [0.0]})
            stop.wait(every / 2)


def sample(page, cdp, t0: float, replaces: int) -> dict:
    cdp.send("HeapProfiler.collectGarbage")
    u = cdp.send("Runtime.getHeapUsage")
    dom = cdp.send("Memory.getDOMCounters")
    counts = page.evaluate(COUNTS_JS)
    return {"t": round(time.monotonic() - t0, 1), "replaces": replaces,
            "heap_mb": round((u["usedSize"] + u.get("embedderHeapUsedSize", 0)) / 1e6, 3),
            "buffers_mb": round(u.get("backingStorageSize", 0) / 1e6, 3),
            "nodes": dom["nodes"], "listeners": dom["jsEventListeners"], "documents": dom["documents"], **counts}


def slope_per_hour(samples: list[dict], key: str) -> float:
    half = samples[len(samples) // 2:]
    if len(half) < 3:
        return 0.0
    t = np.array([s["t"] for s in half]) / 3600.0
    v = np.array([s[key] for s in half], dtype=float)
    return float(np.polyfit(t, v, 1)[0])


def verdict(samples: list[dict]) -> dict:
    """FLAT: the models and views in the page are the same number at every sample, and
    the peak of heap + array buffers in the last quarter of the run is within 10 % (or
    2 MB) of the peak in the second quarter (the first is warm-up).  BOUNDED: not flat,
    but no higher at the end than in the second quarter (e.g. BokehJS's own 30 s
    sawtooth).  GROWS: higher at the end."""
    q = max(1, len(samples) // 4)
    second, last = samples[q:2 * q] or samples, samples[-q:]
    mem = [s["heap_mb"] + s["buffers_mb"] for s in samples]
    peak2, peak4 = max(mem[q:2 * q] or mem), max(mem[-q:])
    models = {s["models"] for s in samples[1:]}
    views = {s["views"] for s in samples[1:]}
    within = peak4 <= peak2 * 1.1 + 2.0 and max(s["models"] for s in last) <= max(s["models"] for s in second)
    word = "FLAT" if within and len(models) == 1 and len(views) == 1 else "BOUNDED" if within else "GROWS"
    keys = ("heap_mb", "buffers_mb", "models", "views", "nodes", "listeners")
    return {"verdict": word, "mem_peak_q2_mb": round(peak2, 2), "mem_peak_q4_mb": round(peak4, 2),
            "models_seen": sorted(models), "views_seen": sorted(views),
            "slopes_per_hour_second_half": {k: round(slope_per_hour(samples, k), 2) for k in keys},
            "first": samples[0], "last": samples[-1]}


def report(v: dict) -> None:
    print(f"first: {v['first']}\nlast:  {v['last']}")
    print(f"models in the page over the run: {v['models_seen'][:8]}{' ...' if len(v['models_seen']) > 8 else ''}; "
          f"views: {v['views_seen'][:8]}")
    print(f"heap + buffers peak: second quarter {v['mem_peak_q2_mb']} MB, last quarter {v['mem_peak_q4_mb']} MB; "
          f"second-half slopes per hour: {v['slopes_per_hour_second_half']}")
    print(f"verdict: {v['verdict']}")


def plot(samples: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    axes[0].plot(t, [s["heap_mb"] for s in samples], label="JS heap")
    axes[0].plot(t, [s["buffers_mb"] for s in samples], label="array buffers")
    axes[0].set_ylabel("MB after GC")
    axes[0].legend(fontsize=8)
    axes[1].plot(t, [s["models"] for s in samples], label="models in the document")
    axes[1].plot(t, [s["views"] for s in samples], label="views")
    axes[1].legend(fontsize=8)
    axes[2].plot(t, [s["nodes"] for s in samples], label="DOM nodes")
    axes[2].plot(t, [s["listeners"] for s in samples], label="JS event listeners")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("minutes")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--every", type=float, default=3.0, help="seconds between replaces")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--no-prune", action="store_true",
                    help="baseline: the page does not prune unreachable models (series.js opt-out)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "replace_memory.json")
    ap.add_argument("--analyse", type=Path, help="print the verdict of an earlier run's JSON and stop")
    args = ap.parse_args()
    if args.analyse:
        report(verdict(json.loads(args.analyse.read_text())["samples"]))
        return 0

    from playwright.sync_api import sync_playwright

    stack = Stack(instances=1)
    stop = threading.Event()
    counter = [0]
    samples: list[dict] = []
    try:
        stack.start_healthy()
        stack.fleetctl("dashboard", "create", DASHBOARD)
        stack.add_user(USER, PASSWORD, DASHBOARD)
        from app.client import Controller

        with Controller(settings=stack.effective_settings()) as ctl:
            x = np.arange(args.rows, dtype=np.float64)
            last = ctl.replace(DASHBOARD, "swap", kind="line", data={"x": x, "y": x})
            ctl.replace(DASHBOARD, "steady", kind="line", data={"x": x[:50], "y": x[:50]})
            ctl.wait_applied(last, timeout=30)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                ctx, page = login(browser, stack.url, USER, PASSWORD)
                if args.no_prune:
                    page.add_init_script("window.__fleet_prune = false;")
                open_dashboard(page, stack.url, DASHBOARD)
                cdp = ctx.new_cdp_session(page)
                worker = threading.Thread(target=controller, args=(stack, args.rows, args.every, stop, counter),
                                          daemon=True)
                t0 = time.monotonic()
                worker.start()
                while time.monotonic() - t0 < args.seconds:
                    samples.append(s := sample(page, cdp, t0, counter[0]))
                    print(f"{s['t']:7.1f} s  replaces {s['replaces']:5d}  heap {s['heap_mb']:7.2f} MB  "
                          f"buffers {s['buffers_mb']:6.2f} MB  models {s['models']:5d}  views {s['views']:5d}  "
                          f"nodes {s['nodes']:6d}  listeners {s['listeners']:6d}", flush=True)
                    time.sleep(max(0.0, args.sample - (time.monotonic() - t0 - s["t"])))
                stop.set()
                worker.join(30)
            finally:
                browser.close()
    finally:
        stop.set()
        stack.stop()
    v = verdict(samples)
    meta = {"machine": f"{platform.node()} {os.cpu_count()} cores, {platform.platform()}",
            "loadavg_at_end": os.getloadavg(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "seconds": args.seconds, "every": args.every, "rows": args.rows, "prune": not args.no_prune}
    result = {"meta": meta, "replaces": counter[0], **v, "samples": samples}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(samples, args.out.with_suffix(".png"),
         f"page under replace every {args.every:g} s ({counter[0]} replaces in {args.seconds / 60:.0f} min"
         f"{', no pruning' if args.no_prune else ''}): {v['verdict']}")
    print(f"\n{counter[0]} replaces in {args.seconds:.0f} s")
    report(v)
    print(f"load average at the end: {meta['loadavg_at_end']}; wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
