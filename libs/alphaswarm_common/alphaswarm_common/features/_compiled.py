"""Compiled loops of `compute_features`: the same arithmetic as the NumPy kernels, fused into one pass.

Each function here replaces a sequence of whole-matrix NumPy steps whose
temporaries (and strided copies) cost more than the arithmetic, and gives
the same bits: the floating-point operations are the same, in the same
order (no `fastmath`), only the loops are fused.

- `window_sums`: the block prefix sums of `_kernels._window_sums`.
- `scatter_columns`: the staged copy of a block's columns into the
  `(T, N, F)` output (`values[t, c0+i, f0+j] = part[j, t, i]`), with
  non-finite values stored as NaN; `pack_rows` the same into a buffer of a
  few dates laid out like the output (written to a spilled output with one
  `pwrite` per date instead of page faults).
- `rank_keys` / `rank_from_sorted`: the cross-sectional percentile ranks of
  float32 columns (`_kernels.cs_rank`: average ranks for ties over the
  finite values, `(rank - 1) / (n - 1)`, 0.5 for a lone value). Each
  (date, column) row becomes 64-bit keys `(order-preserving bits of the
  value) << 32 | symbol`; NumPy's vectorised `np.sort` orders them; a
  linear pass reads the tie groups off the sorted keys and writes the ranks
  straight into the output.

All are `njit(cache=True, nogil=True)`: they run on `compute_features`'
thread pool without the GIL, and `warm_up()` (called by `alphaswarm
warmup`) compiles every signature into numba's cache.
"""

from __future__ import annotations

import time
from typing import Any

import numba
import numpy as np

__all__ = ["pack_rows", "rank_from_sorted", "rank_keys", "scatter_columns", "warm_up", "window_sums"]


@numba.njit(cache=True, nogil=True)
def window_sums(z: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """`(upto, buf)` of `_kernels._window_sums`: `upto` the prefix sums inside blocks of `w` rows
    (`nb * w` rows, zero-padded past `T`), `buf` a zero row then the block totals minus `upto`."""
    t_rows, n = z.shape
    nb = -(-t_rows // w)
    upto = np.empty((nb * w, n), dtype=np.float64)
    buf = np.empty((nb * w + 1, n), dtype=np.float64)
    for i in range(n):
        buf[0, i] = 0.0
    for b in range(nb):
        r0 = b * w
        for p in range(w):
            r = r0 + p
            if p == 0:
                if r < t_rows:
                    for i in range(n):
                        upto[r, i] = z[r, i]
                else:
                    for i in range(n):
                        upto[r, i] = 0.0
            elif r < t_rows:
                for i in range(n):
                    upto[r, i] = upto[r - 1, i] + z[r, i]
            else:
                for i in range(n):
                    upto[r, i] = upto[r - 1, i] + 0.0
        last = r0 + w - 1
        for p in range(w):
            r = r0 + p
            for i in range(n):
                buf[1 + r, i] = upto[last, i] - upto[r, i]
    return upto, buf


@numba.njit(cache=True, nogil=True)
def scatter_columns(part: np.ndarray, values: np.ndarray, c0: int, f0: int) -> None:  # pragma: no cover
    """`values[:, c0:c0+n, f0:f0+k] = part.transpose(1, 2, 0)`, non-finite values stored as NaN."""
    k, t_rows, n = part.shape
    for t in range(t_rows):
        for i in range(n):
            for j in range(k):
                v = part[j, t, i]
                values[t, c0 + i, f0 + j] = v if np.isfinite(v) else np.nan


@numba.njit(cache=True, nogil=True)
def pack_rows(part: np.ndarray, t0: int, t1: int, rows: np.ndarray) -> None:  # pragma: no cover
    """`rows[t - t0, i, j] = part[j, t, i]` for `t0 <= t < t1`, non-finite values stored as NaN (the
    block's cells of dates `t0:t1`, laid out as in the `(T, N, F)` output, for one write per date)."""
    k, _, n = part.shape
    for t in range(t0, t1):
        for i in range(n):
            for j in range(k):
                v = part[j, t, i]
                rows[t - t0, i, j] = v if np.isfinite(v) else np.nan


@numba.njit(cache=True, nogil=True)
def rank_keys(
    values: np.ndarray, bits: np.ndarray, d0: int, d1: int, src: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Sort keys of the float32 columns `src` of `values[d0:d1]` (`bits` is `values.view(np.uint32)`):
    row `(d - d0) * R + r` holds, per symbol `i`, `order(values[d, i, src[r]]) << 32 | i`, where
    `order` maps the float's bits to integers in the floats' order (-0.0 as 0.0) and a non-finite
    value to `0xFFFFFFFF` (after every finite one); and the count of finite values of each row."""
    n_sym = values.shape[1]
    n_rank = src.size
    rows = (d1 - d0) * n_rank
    keys = np.empty((rows, n_sym), dtype=np.uint64)
    count = np.zeros(rows, dtype=np.int64)
    sign = np.uint64(0x80000000)
    low = np.uint64(0xFFFFFFFF)
    shift = np.uint64(32)
    for d in range(d0, d1):
        for r in range(n_rank):
            row = (d - d0) * n_rank + r
            f = src[r]
            c = 0
            for i in range(n_sym):
                v = values[d, i, f]
                if np.isfinite(v):
                    b = np.uint64(0) if v == 0 else np.uint64(bits[d, i, f])
                    key = (b ^ low) if (b & sign) else (b | sign)
                    c += 1
                else:
                    key = low
                keys[row, i] = (key << shift) | np.uint64(i)
            count[row] = c
    return keys, count


@numba.njit(cache=True, nogil=True)
def rank_from_sorted(
    keys: np.ndarray, count: np.ndarray, values: np.ndarray, d0: int, n_rank: int, f0: int
) -> None:  # pragma: no cover - compiled
    """Write the percentile ranks of the sorted `keys` rows into `values[d0 + row // R, :, f0 + row % R]`
    (NaN for the non-finite cells)."""
    rows, n_sym = keys.shape
    for row in range(rows):
        d = d0 + row // n_rank
        f = f0 + row % n_rank
        c = count[row]
        denom = np.float64(c - 1) if c > 1 else 1.0
        j = 0
        while j < c:
            high = keys[row, j] >> np.uint64(32)
            e = j + 1
            while e < c and (keys[row, e] >> np.uint64(32)) == high:
                e += 1
            if c == 1:
                pct = 0.5
            elif e - j > 1:
                pct = (np.float64(j) + np.float64(e - j - 1) * 0.5) / denom
            else:
                pct = np.float64(j) / denom
            for q in range(j, e):
                values[d, np.intp(keys[row, q] & np.uint64(0xFFFFFFFF)), f] = pct
            j = e
        for q in range(c, n_sym):
            values[d, np.intp(keys[row, q] & np.uint64(0xFFFFFFFF)), f] = np.nan


def warm_up() -> dict[str, Any]:
    """Compile (or load from numba's cache) every signature `compute_features` calls."""
    started = time.perf_counter()
    runs = 0
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 3))
    for arr in (z, np.isnan(z).astype(np.float64)):
        window_sums(arr, 3)
        runs += 1
    for dtype in (np.float32, np.float64):
        values = np.zeros((7, 3, 4), dtype=dtype)
        scatter_columns(np.ones((2, 7, 3), dtype=dtype), values, 0, 0)
        pack_rows(np.ones((4, 7, 3), dtype=dtype), 0, 2, values[:2])
        runs += 2
    values32 = rng.normal(size=(7, 3, 4)).astype(np.float32)
    src = np.array([0, 1], dtype=np.intp)
    keys, count = rank_keys(values32, values32.view(np.uint32), 0, 7, src)
    keys.sort(axis=1)
    rank_from_sorted(keys, count, values32, 0, 2, 2)
    runs += 2
    return {"runs": runs, "seconds": time.perf_counter() - started}
