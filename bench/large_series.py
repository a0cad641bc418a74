"""Large series benchmark: a multi-million-row line figure in headless Chromium.

For each mode it starts a real stack (supervisord, Redis, nginx, gunicorn, one Bokeh
instance, compactor) with ``FLEET_MAX_FIGURE_ROWS=rows`` and
``FLEET_MAX_DASHBOARD_CELLS=2*rows``, publishes ``--rows`` rows of one x/y line
figure in 100,000-row ``stream`` commands (Arrow), waits until the instance has
folded them and the compactor has written their snapshot, then, in Debian's headless
Chromium logged in through the form:

* **open**: ``GET /d/<dashboard>`` until the figure's data is in the page and two
  animation frames have passed (``--opens`` fresh pages; wall time and the page's own
  ``performance.now()``), with the bytes the websocket delivered;
* **zoom**: the x range set as the zoom tools set it, at 10 %, 1 %, 0.1 % and a
  ~100-row window of the series, then pans; time until the redraw with full detail
  (reduced mode: the ``/bokeh/series`` answer applied by ``series.js``, debounce
  included, then two frames; naive mode: two frames, every row is in the page);
* **memory**: the page's JS heap and array buffers (typed arrays live outside the
  heap) after a forced GC (CDP ``HeapProfiler.collectGarbage`` + ``Runtime.getHeapUsage``),
  and the RSS of all renderer processes (CDP ``SystemInfo.getProcessInfo`` pids,
  ``/proc``; includes Chromium's spare renderers), after opening and after the zooms.

Modes: ``reduced`` (the default threshold) and ``naive`` (``FLEET_REDUCE_ABOVE_ROWS=0``:
every row streams to the page, the baseline).  Output: a table, JSON and a PNG
(``--out``, default ``bench/results/large_series.json``).

    .venv/bin/python bench/large_series.py                      # 5,000,000 rows, both modes (~5 min)
    .venv/bin/python bench/large_series.py --rows 1000000 --modes reduced
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from fleet_testing.stack import CHROMIUM, CHROMIUM_ARGS, Stack, login

ROOT = Path(__file__).resolve().parents[1]

USER, PASSWORD = "bench", "bench-large-series-password"
DASHBOARD, FIGURE = "large", "series"
CHUNK = 100_000

FIND_PLOT = """() => {
  for (const m of Bokeh.documents[0].all_models)
    if (m.x_range != null && Array.isArray(m.renderers) && m.renderers.some(r => r.data_source
        && r.data_source.name === '@FIG@')) return m;
  return null; }""".replace("@FIG@", FIGURE)
READY = """() => { if (!window.Bokeh || !Bokeh.documents || !Bokeh.documents.length) return false;
  for (const m of Bokeh.documents[0].all_models)
    if (String(m.type).endsWith('ColumnDataSource') && m.name === '@FIG@' && m.get_length() > 0) return true;
  return false; }""".replace("@FIG@", FIGURE)
FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(performance.now()))))"
ZOOM = """async ([start, end, detail]) => {
  const p = (@PLOT@)();
  const before = window.__fleet_series ? __fleet_series.applied : 0;
  const t0 = performance.now();
  p.x_range.have_updated_interactively = true;
  p.x_range.setv({start: start, end: end});
  if (detail) {
    await new Promise((res, rej) => { const t = performance.now();
      const chk = () => { if (__fleet_series.applied > before) res();
        else if (performance.now() - t > 20000) rej(new Error('no detail within 20 s'));
        else setTimeout(chk, 2); }; chk(); });
  }
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const src = p.renderers.find(r => r.data_source && r.data_source.name === '@FIG@').data_source;
  return {ms: performance.now() - t0, rows: src.get_length(),
          last: window.__fleet_series ? __fleet_series.last : null}; }""".replace("@PLOT@", FIND_PLOT).replace(
    "@FIG@", FIGURE)


def series_columns(start: int, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.arange(start, start + n, dtype=np.float64)
    return {"x": x, "y": np.sin(x / 50_000.0) * 100 + rng.normal(size=n).cumsum() * 0.05}


def publish(stack: Stack, rows: int) -> float:
    from app.client import Controller

    t0 = time.perf_counter()
    with Controller(settings=stack.effective_settings(), timeout=600) as ctl:
        ctl.create(DASHBOARD, "Large series")
        last = ctl.replace(DASHBOARD, FIGURE, kind="line", data=series_columns(0, min(CHUNK, rows), 0),
                           title=f"{rows:,} rows")
        for i, start in enumerate(range(CHUNK, rows, CHUNK)):
            last = ctl.stream(DASHBOARD, FIGURE, series_columns(start, min(CHUNK, rows - start), i + 1))
        ctl.wait_applied(last, timeout=600)
        took = time.perf_counter() - t0
        settle(ctl.redis, ctl.keys, last)
    return took


def settle(client, keys, last_id: str, timeout: float = 300.0) -> None:
    """Wait until the compactor has snapshotted the last command and Redis is not
    rewriting its AOF: writing the snapshot of a multi-million-row state (JSON, base64
    columns: ~107 MB for 5M x/y rows) blocks Redis for a second or two, which would
    land in the middle of the measurements."""
    deadline = time.monotonic() + timeout
    field = f"snapshot:{DASHBOARD}"
    while time.monotonic() < deadline:
        raw = client.hget(keys.compactor_status, field)
        done = raw is not None and raw.decode().split()[0] == last_id
        busy = client.info("persistence")
        if done and not busy.get("aof_rewrite_in_progress") and not busy.get("rdb_bgsave_in_progress"):
            time.sleep(3.0)
            return
        time.sleep(0.5)
    print(f"warning: the compactor did not snapshot {last_id} within {timeout:.0f} s", flush=True)


def renderer_rss(browser) -> int:
    cdp = browser.new_browser_cdp_session()
    try:
        procs = cdp.send("SystemInfo.getProcessInfo")["processInfo"]
    finally:
        cdp.detach()
    total = 0
    for p in procs:
        if p.get("type") != "renderer":
            continue
        try:
            for line in Path(f"/proc/{p['id']}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def page_memory(cdp) -> dict[str, float]:
    """The page's memory after a forced GC, MB: V8's heap, and the array buffers
    (typed arrays: Bokeh's columns) that live outside it (CDP ``Runtime.getHeapUsage``)."""
    cdp.send("HeapProfiler.collectGarbage")
    u = cdp.send("Runtime.getHeapUsage")
    heap = u["usedSize"] + u.get("embedderHeapUsedSize", 0)
    buffers = u.get("backingStorageSize", 0)
    return {"js_heap_mb": round(heap / 1e6, 1), "array_buffers_mb": round(buffers / 1e6, 1),
            "page_mb": round((heap + buffers) / 1e6, 1)}


def run_mode(mode: str, args, browser) -> dict:
    rows = args.rows
    overrides = {"max_figure_rows": max(rows, 1_000_000), "max_dashboard_cells": max(2 * rows, 5_000_000),
                 "reduce_above_rows": 0 if mode == "naive" else 50_000}
    stack = Stack(instances=1, **overrides)
    out: dict = {"mode": mode, "rows": rows, "settings": overrides}
    try:
        stack.start_healthy()
        stack.add_user(USER, PASSWORD)
        out["publish_s"] = round(publish(stack, rows), 2)
        stack.fleetctl("access", "grant", "--dashboard", DASHBOARD, "--user", USER)
        print(f"[{mode}] {rows:,} rows published and folded in {out['publish_s']} s", flush=True)
        ctx, page = login(browser, stack.url, USER, PASSWORD)
        state = ctx.storage_state()
        ctx.close()
        opens, page_ms, ws_bytes = [], [], []
        ctx = page = None
        for i in range(args.opens):
            if ctx is not None:
                ctx.close()
            ctx = browser.new_context(storage_state=state)
            page = ctx.new_page()
            got = [0]
            page.on("websocket", lambda ws, got=got: ws.on(
                "framereceived", lambda payload, got=got: got.__setitem__(0, got[0] + len(payload))))
            t0 = time.perf_counter()
            page.goto(f"{stack.url}/d/{DASHBOARD}")
            page.wait_for_function(READY, timeout=args.open_timeout * 1000, polling=10)
            t_page = page.evaluate(FRAMES)
            opens.append(time.perf_counter() - t0)
            page_ms.append(t_page)
            ws_bytes.append(got[0])
            print(f"[{mode}] open {i + 1}: {opens[-1]:.2f} s (page {t_page:.0f} ms), "
                  f"websocket {got[0] / 1e6:.1f} MB", flush=True)
        cdp = ctx.new_cdp_session(page)
        out["memory_after_open"] = page_memory(cdp)
        out["renderer_rss_after_open_mb"] = round(renderer_rss(browser) / 1e6, 1)
        if mode == "reduced":
            page.wait_for_function("() => window.__fleet_series && __fleet_series.hooked >= 1", timeout=10000)
        zooms = []
        mid = rows / 2
        windows = [rows * f for f in (0.1, 0.01, 0.001)] + [100.0]
        for width in windows:
            zooms.append(("zoom", width, mid - width / 2, mid + width / 2))
        for k in range(1, args.pans + 1):
            width = rows * 0.001
            zooms.append(("pan", width, mid + k * width / 2 - width / 2, mid + k * width / 2 + width / 2))
        results = []
        for what, width, start, end in zooms:
            r = page.evaluate(ZOOM, [start, end, mode == "reduced"])
            last = r.get("last") or {}
            results.append({"what": what, "window_rows": int(width), "ms": round(r["ms"], 1),
                            "rows_in_page": r["rows"], "exact": last.get("exact"),
                            "fetch_ms": round(last["fetch_ms"], 1) if last.get("fetch_ms") is not None else None})
            print(f"[{mode}] {what} to {int(width):>9,} rows: {r['ms']:7.1f} ms, {r['rows']:,} rows in the page"
                  + (f" (fetch {last.get('fetch_ms', 0):.0f} ms, exact={last.get('exact')})" if last else ""),
                  flush=True)
            time.sleep(0.3)
        out["memory_after_zooms"] = mem = page_memory(cdp)
        out["page_mb_after_zooms"] = mem["page_mb"]
        out["renderer_rss_after_zooms_mb"] = round(renderer_rss(browser) / 1e6, 1)
        ctx.close()
        out.update({
            "open_s": [round(v, 3) for v in opens], "open_s_median": round(statistics.median(opens), 3),
            "open_page_ms": [round(v) for v in page_ms], "websocket_mb": round(statistics.median(ws_bytes) / 1e6, 2),
            "zooms": results,
            "zoom_ms_median": round(statistics.median(z["ms"] for z in results), 1),
            "zoom_ms_max": round(max(z["ms"] for z in results), 1),
        })
    finally:
        stack.stop()
    return out


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    modes = [r["mode"] for r in results]
    colors = ["#1f77b4" if m == "reduced" else "#d62728" for m in modes]
    panels = [("open (s, median)", "open_s_median", 2.0), ("zoom redraw (ms, max)", "zoom_ms_max", 300),
              ("page memory after zooms (MB: JS heap + array buffers)", "page_mb_after_zooms", None),
              ("renderer RSS after zooms (MB)", "renderer_rss_after_zooms_mb", None)]
    for ax, (title, key, target) in zip(axes, panels, strict=True):
        vals = [r.get(key, 0) or 0 for r in results]
        ax.bar(modes, vals, color=colors)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:g}", ha="center", va="bottom", fontsize=9)
        if target:
            ax.axhline(target, color="gray", ls="--", lw=1)
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"{results[0]['rows']:,}-row line figure in headless Chromium (dashed: target)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--modes", default="reduced,naive")
    ap.add_argument("--opens", type=int, default=3)
    ap.add_argument("--pans", type=int, default=4)
    ap.add_argument("--open-timeout", type=float, default=180.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "large_series.json")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            for mode in args.modes.split(","):
                try:
                    results.append(run_mode(mode, args, browser))
                except Exception as exc:  # the naive baseline may not open at all: say so
                    print(f"[{mode}] failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
                    results.append({"mode": mode, "rows": args.rows, "error": f"{type(exc).__name__}: {exc}"[:500]})
        finally:
            browser.close()
    meta = {"machine": f"{platform.node()} {os.cpu_count()} cores, {platform.platform()}",
            "loadavg_at_end": os.getloadavg(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    ok = [r for r in results if "error" not in r]
    if ok:
        plot(ok, args.out.with_suffix(".png"))
    print("\nmode      open s (median)  websocket MB  zoom ms median/max  page MB (heap+buffers)  renderer RSS MB")
    for r in results:
        if "error" in r:
            print(f"{r['mode']:<9} {r['error'][:100]}")
            continue
        print(f"{r['mode']:<9} {r['open_s_median']:>15}  {r['websocket_mb']:>12}  "
              f"{r['zoom_ms_median']:>9} / {r['zoom_ms_max']:<7}  {r['page_mb_after_zooms']:>22}  "
              f"{r['renderer_rss_after_zooms_mb']:>15}")
    print(f"load average at the end: {meta['loadavg_at_end']}; wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
