"""app.control.reduce: what the reducers keep, how many rows, NaN."""

from __future__ import annotations

import numpy as np
import pytest

from app.control import reduce


def _series(n: int = 200_000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.arange(n, dtype=np.float64) * 0.5
    return x, np.cumsum(rng.normal(size=n))


def test_minmax_keeps_every_bucket_extreme_and_the_ends() -> None:
    x, y = _series()
    y[12_345], y[150_000] = 1e6, -1e6  # spikes the reduction must not lose
    idx = reduce.minmax(x, [y], 500)
    assert idx[0] == 0 and idx[-1] == len(x) - 1
    assert 12_345 in idx and 150_000 in idx
    assert np.all(np.diff(idx) > 0)
    # every bucket's min and max are among the kept rows
    b = np.minimum((x * 500 / x[-1]).astype(int), 499)
    for k in (0, 17, 250, 499):
        rows = np.flatnonzero(b == k)
        kept = idx[(idx >= rows[0]) & (idx <= rows[-1])]
        assert y[kept].min() == y[rows].min() and y[kept].max() == y[rows].max()


def test_minmax_output_bound() -> None:
    x, y = _series()
    y2 = -y
    for buckets in (1, 10, 333, 2000):
        assert len(reduce.minmax(x, [y], buckets)) <= 4 * buckets
        assert len(reduce.minmax(x, [y, y2], buckets)) <= 6 * buckets


def test_minmax_window_and_small_input() -> None:
    x, y = _series(1000)
    lo, hi = reduce.window(x, 100.0, 200.0)
    assert x[lo] < 100.0 <= x[lo + 1] and x[hi - 1] > 200.0 >= x[hi - 2]
    idx = reduce.minmax(x, [y], 1000, lo, hi)  # fewer rows than 2 x buckets: all of them
    assert idx.tolist() == list(range(lo, hi))
    assert reduce.window(x, None, None) == (0, 1000)
    assert reduce.minmax(x[:0], [y[:0]], 10).tolist() == []
    with pytest.raises(ValueError):
        reduce.minmax(x, [y], 0)


def test_minmax_nan() -> None:
    x, y = _series(100_000)
    y[40_000:60_000] = np.nan  # a gap: the line must still break there
    x[5] = np.nan  # a row without a place on the axis is never chosen
    idx = reduce.minmax(x, [y], 100)
    assert 5 not in idx
    gap = idx[(idx >= 40_000) & (idx < 60_000)]
    assert len(gap) and np.isnan(y[gap]).all()
    assert np.isfinite(y[idx[(idx < 40_000) | (idx >= 60_000)]]).all()
    assert reduce.minmax(x, [np.full(len(x), np.nan)], 10).size > 0  # all NaN: still the ends
    assert reduce.minmax(np.full(10_000, np.nan), [y[:10_000]], 10).size == 0


def test_lttb_keeps_first_and_last_and_size() -> None:
    x, y = _series()
    for n in (3, 100, 4000):
        idx = reduce.lttb(x, y, n)
        assert idx[0] == 0 and idx[-1] == len(x) - 1
        assert len(idx) <= n and np.all(np.diff(idx) > 0)
    y[777] = 1e9
    assert 777 in reduce.lttb(x, y, 1000)  # a spike is the largest triangle of its bucket
    with pytest.raises(ValueError):
        reduce.lttb(x, y, 2)


def test_lttb_nan_and_short() -> None:
    x, y = _series(10_000)
    y[0] = np.nan
    y[-1] = np.nan
    idx = reduce.lttb(x, y, 50)
    assert idx[0] == 1 and idx[-1] == len(x) - 2  # first/last finite rows
    assert np.isfinite(y[idx]).all()
    assert reduce.lttb(x[:10], y[:10], 50).tolist() == list(range(1, 10))


def test_window_with_nan_x() -> None:
    x = np.arange(100, dtype=np.float64)
    x[[3, 50, 51, 97]] = np.nan  # rows without a place on the axis: searchsorted would be wrong
    assert reduce.window(x, 40.0, 60.0, pad=0) == (40, 61)
    assert reduce.window(x, 40.0, 60.0) == (39, 62)
    assert reduce.window(x, None, 5.0, pad=0) == (0, 6)
    assert reduce.window(x, 200.0, 300.0, pad=0) == (100, 100)


def test_is_sorted() -> None:
    assert reduce.is_sorted(np.array([1.0, 1.0, np.nan, 2.0]))
    assert not reduce.is_sorted(np.array([1.0, 3.0, 2.0]))
    assert reduce.is_sorted(np.array([]))


def test_minmax_speed_5m_rows() -> None:
    """The zoom budget: a 5-million-row column reduces in well under 300 ms."""
    import time

    x, y = _series(5_000_000)
    t0 = time.perf_counter()
    idx = reduce.minmax(x, [y], 1500)
    took = time.perf_counter() - t0
    assert len(idx) <= 6000
    assert took < 0.5, took  # loaded 2-core machine; typically 0.02-0.05 s
