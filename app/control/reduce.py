"""Reducing a long series to what a plot of a given pixel width can show.

Both reducers return *row indexes* (sorted, unique) into the figure's columns, so
every column (other y columns, tooltip columns, text) stays aligned with x:

* :func:`minmax` (M4): the x range is cut into ``buckets`` equal-width slices (one
  per pixel column); each keeps its first and last row and, for every y column, the
  rows of its minimum and maximum.  A line drawn through those rows covers exactly
  the pixels the full line covers, so no spike is lost.  At most ``2 + 2 * len(ys)``
  rows per bucket.
* :func:`lttb` (largest triangle three buckets): ``n`` rows that keep the visual
  shape of one y column; always keeps the first and the last row.

NaN: rows whose x is NaN are never chosen.  A y NaN is a gap in a line: every
bucket keeps its first and last rows, so a gap wider than a bucket stays a gap; the
extremes of a bucket are those of its finite values.  x must be
non-decreasing (:func:`is_sorted`); the caller decides what to do otherwise.
Pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def is_sorted(x: np.ndarray) -> bool:
    """Whether the finite values of ``x`` are non-decreasing (NaN rows are ignored)."""
    if len(x) < 2:
        return True
    finite = x[np.isfinite(x)] if not np.isfinite(x).all() else x
    return bool(np.all(finite[1:] >= finite[:-1]))


def window(x: np.ndarray, x0: float | None, x1: float | None, pad: int = 1,
           has_nan: bool | None = None) -> tuple[int, int]:
    """Row range ``[lo, hi)`` of sorted ``x`` inside ``[x0, x1]``, widened by ``pad`` rows
    on each side (a line then runs on to the plot's edges).  None = open end.  NaN rows
    (ignored by :func:`is_sorted`) make a binary search unreliable: then it scans."""
    n = len(x)
    if has_nan is None:
        has_nan = bool(np.isnan(x).any())
    if has_nan:
        lo = 0 if x0 is None else int(np.argmax(x >= x0)) if (x >= x0).any() else n
        after = np.flatnonzero(x > x1) if x1 is not None else np.empty(0, dtype=np.intp)
        hi = n if x1 is None or len(after) == 0 else int(after[0])
    else:
        lo = 0 if x0 is None else int(np.searchsorted(x, x0, side="left"))
        hi = n if x1 is None else int(np.searchsorted(x, x1, side="right"))
    return max(0, lo - pad), min(n, max(hi, lo) + pad)


def _first_per_bucket(starts: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """The first hit row of every bucket that has one (buckets start at ``starts``)."""
    rows = np.flatnonzero(hits)
    if len(rows) == 0:
        return rows
    bucket = np.searchsorted(starts, rows, side="right")
    keep = np.r_[True, bucket[1:] != bucket[:-1]]
    return rows[keep]


def minmax(x: np.ndarray, ys: Sequence[np.ndarray], buckets: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """Rows of ``[lo, hi)`` to draw at ``buckets`` pixel columns (M4, see the module doc)."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    hi = len(x) if hi is None else hi
    xs = x[lo:hi]
    finite_x = np.isfinite(xs)
    pos = None if finite_x.all() else np.flatnonzero(finite_x)  # None: every row
    xv = xs if pos is None else xs[pos]
    if len(xv) == 0:
        return np.empty(0, dtype=np.int64)
    if len(xv) <= 2 * buckets:  # few enough already: every row with a place on the x axis
        return lo + (np.arange(len(xv)) if pos is None else pos)
    x0, x1 = float(xv[0]), float(xv[-1])
    edges = x0 + (x1 - x0) * (np.arange(1, buckets) / buckets)
    starts = np.unique(np.r_[0, np.searchsorted(xv, edges, side="left")])  # x sorted: buckets are runs
    starts = starts[starts < len(xv)]
    counts = np.diff(np.r_[starts, len(xv)])
    chosen = [starts, starts + counts - 1]
    for y in ys:
        yv = np.asarray(y[lo:hi], dtype=np.float64)
        if pos is not None:
            yv = yv[pos]
        with np.errstate(invalid="ignore"):
            lows = np.fmin.reduceat(yv, starts)
            highs = np.fmax.reduceat(yv, starts)
        chosen.append(_first_per_bucket(starts, yv == np.repeat(lows, counts)))
        chosen.append(_first_per_bucket(starts, yv == np.repeat(highs, counts)))
    out = np.unique(np.concatenate(chosen))
    return lo + (out if pos is None else pos[out])


def lttb(x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows (at least 3) that keep the shape of ``y`` over ``x`` (Steinarsson's
    largest-triangle-three-buckets); the first and last finite rows are always kept."""
    if n < 3:
        raise ValueError("lttb needs n >= 3")
    y = np.asarray(y, dtype=np.float64)
    rows = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if len(rows) <= n:
        return rows
    xv, yv = x[rows], y[rows]
    edges = np.linspace(1, len(rows) - 1, n - 1).astype(np.int64)  # n-2 inner buckets
    out = np.empty(n, dtype=np.int64)
    out[0], out[-1] = 0, len(rows) - 1
    a = 0
    for i in range(n - 2):
        s, e = edges[i], max(edges[i + 1], edges[i] + 1)
        ns, ne = edges[i + 1], (edges[i + 2] if i + 2 < len(edges) else len(rows))
        cx, cy = xv[ns:ne].mean(), yv[ns:ne].mean()  # next bucket's centroid
        bx, by = xv[s:e], yv[s:e]
        area = np.abs((xv[a] - cx) * (by - yv[a]) - (xv[a] - bx) * (cy - yv[a]))
        a = s + int(np.argmax(area))
        out[i + 1] = a
    return rows[np.unique(out)]
