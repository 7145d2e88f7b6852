"""Compiled loops of `compute_features`: the same arithmetic as the NumPy kernels, fused into one pass.

Each function here replaces a sequence of whole-matrix NumPy steps whose
temporaries (and strided copies) cost more than the arithmetic, and gives
the same bits: the floating-point operations are the same, in the same
order (no `fastmath`), only the loops are fused.

- `window_sums`: the block prefix sums of `_kernels._window_sums`.
- `rolling_extreme`, `ts_rank`: a scan of each window instead of the
  doubling steps / `w` whole-matrix comparisons of `_kernels` (comparisons
  and counts of 0/1 only, so the same values).
- `scatter_columns`: the staged copy of a block's columns into the
  `(T, N, F)` output (`values[t, c0+i, f0+j] = part[j, t, i]`), with
  non-finite values stored as NaN; `pack_rows` the same into a buffer of a
  few dates laid out like the output (written to a spilled output with one
  `pwrite` per date instead of page faults).
- `rank_rows`: the cross-sectional percentile ranks of float32 columns
  (`_kernels.cs_rank`), from a radix sort of order-preserving 32-bit keys,
  written straight into the output.

All are `njit(cache=True, nogil=True)`: they run on `compute_features`'
thread pool without the GIL, and `warm_up()` (called by `alphaswarm
warmup`) compiles every signature into numba's cache.
"""

from __future__ import annotations

import time
from typing import Any

import numba
import numpy as np

__all__ = [
    "pack_rows",
    "rank_rows",
    "rolling_extreme",
    "scatter_columns",
    "ts_rank",
    "warm_up",
    "window_sums",
]


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
def rolling_extreme(
    x: np.ndarray, w: int, is_max: bool, out: np.ndarray, pos: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Trailing max (`is_max`) or min of `w` rows into `out` and the offset of the oldest extreme
    from the window's first row into `pos` (`_kernels.rolling_extreme`); NaN / -1 where the window is
    short or holds a NaN. Comparisons only, so the values are those of the doubling steps."""
    t_rows, n = x.shape
    for i in range(n):
        for t in range(min(w - 1, t_rows)):
            out[t, i] = np.nan
            pos[t, i] = -1
        for t in range(w - 1, t_rows):
            lo = t - w + 1
            best = x[lo, i]
            at = 0
            bad = np.isnan(best)
            for k in range(1, w):
                v = x[lo + k, i]
                if np.isnan(v):
                    bad = True
                    break
                if (v > best) if is_max else (v < best):
                    best = v
                    at = k
            if bad:
                out[t, i] = np.nan
                pos[t, i] = -1
            else:
                out[t, i] = best
                pos[t, i] = at


@numba.njit(cache=True, nogil=True)
def ts_rank(x: np.ndarray, w: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """`(below + 1 + equal / 2) / w` of `x[t]` among the `w - 1` rows before it (`_kernels.ts_rank`,
    the same sums of 0/1 in float64), for rows `t >= w-1`; NaN elsewhere and where the window holds
    a NaN."""
    t_rows, n = x.shape
    for i in range(n):
        for t in range(min(w - 1, t_rows)):
            out[t, i] = np.nan
        for t in range(w - 1, t_rows):
            cur = x[t, i]
            bad = np.isnan(cur)
            below = 0.0
            equal = 0.0
            for k in range(1, w):
                prev = x[t - k, i]
                if np.isnan(prev):
                    bad = True
                    break
                if prev < cur:
                    below += 1.0
                elif prev == cur:
                    equal += 1.0
            out[t, i] = np.nan if bad else (below + 1.0 + equal * 0.5) / w


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
def rank_rows(
    values: np.ndarray, bits: np.ndarray, d0: int, d1: int, src: np.ndarray, f0: int
) -> None:  # pragma: no cover - compiled
    """`values[d, :, f0 + r] = ` the percentile ranks of `values[d, :, src[r]]` for `d0 <= d < d1`:
    `_kernels.cs_rank` (average ranks of ties over the finite values, `(rank - 1) / (n - 1)`, 0.5
    for a lone value, NaN for a non-finite cell). Each value becomes a 32-bit key ordered like the
    floats (-0.0 as 0.0; `0xFFFFFFFF`, after every finite value, when non-finite), sorted with its
    symbol by a stable least-significant-digit radix sort (four passes of 8 bits); ties are the
    runs of equal keys. Each date's columns are gathered into contiguous rows first and its ranks
    written back in one pass."""
    n_sym = values.shape[1]
    n_rank = src.size
    sign = np.uint32(0x80000000)
    low = np.uint32(0xFFFFFFFF)
    keys = np.empty((n_rank, n_sym), dtype=np.uint32)
    count = np.zeros(n_rank, dtype=np.int64)
    ranks = np.empty((n_rank, n_sym), dtype=values.dtype)
    idx = np.empty(n_sym, dtype=np.int64)
    key2 = np.empty(n_sym, dtype=np.uint32)
    idx2 = np.empty(n_sym, dtype=np.int64)
    key1 = np.empty(n_sym, dtype=np.uint32)
    hist = np.empty((4, 257), dtype=np.int64)
    for d in range(d0, d1):
        count[:] = 0
        for i in range(n_sym):
            for r in range(n_rank):
                f = src[r]
                v = values[d, i, f]
                if np.isfinite(v):
                    b = np.uint32(0) if v == 0 else bits[d, i, f]
                    keys[r, i] = (b ^ low) if (b & sign) else (b | sign)
                    count[r] += 1
                else:
                    keys[r, i] = low
        for r in range(n_rank):
            c = count[r]
            hist[:] = 0
            for i in range(n_sym):
                k = keys[r, i]
                key1[i] = k
                idx[i] = i
                for p in range(4):
                    hist[p, ((k >> np.uint32(8 * p)) & np.uint32(0xFF)) + 1] += 1
            a_key, a_idx, b_key, b_idx = key1, idx, key2, idx2
            for p in range(4):
                if hist[p, 1:].max() == n_sym:  # one digit value: this pass moves nothing
                    continue
                for q in range(1, 257):
                    hist[p, q] += hist[p, q - 1]
                shift = np.uint32(8 * p)
                for i in range(n_sym):
                    digit = (a_key[i] >> shift) & np.uint32(0xFF)
                    at = hist[p, digit]
                    hist[p, digit] = at + 1
                    b_key[at] = a_key[i]
                    b_idx[at] = a_idx[i]
                a_key, a_idx, b_key, b_idx = b_key, b_idx, a_key, a_idx
            denom = np.float64(c - 1) if c > 1 else 1.0
            j = 0
            while j < c:
                e = j + 1
                while e < c and a_key[e] == a_key[j]:
                    e += 1
                if c == 1:
                    pct = 0.5
                elif e - j > 1:
                    pct = (np.float64(j) + np.float64(e - j - 1) * 0.5) / denom
                else:
                    pct = np.float64(j) / denom
                for q in range(j, e):
                    ranks[r, a_idx[q]] = pct
                j = e
            for q in range(c, n_sym):
                ranks[r, a_idx[q]] = np.nan
        for i in range(n_sym):
            for r in range(n_rank):
                values[d, i, f0 + r] = ranks[r, i]


def warm_up() -> dict[str, Any]:
    """Compile (or load from numba's cache) every signature `compute_features` calls."""
    started = time.perf_counter()
    runs = 0
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 3))
    for arr in (z, np.isnan(z).astype(np.float64)):
        window_sums(arr, 3)
        runs += 1
    out, pos = np.empty_like(z), np.empty(z.shape, dtype=np.int64)
    for is_max in (True, False):
        rolling_extreme(z, 3, is_max, out, pos)
    ts_rank(z, 3, out)
    runs += 3
    for dtype in (np.float32, np.float64):
        values = np.zeros((7, 3, 4), dtype=dtype)
        scatter_columns(np.ones((2, 7, 3), dtype=dtype), values, 0, 0)
        pack_rows(np.ones((4, 7, 3), dtype=dtype), 0, 2, values[:2])
        runs += 2
    values32 = rng.normal(size=(7, 3, 4)).astype(np.float32)
    rank_rows(values32, values32.view(np.uint32), 0, 7, np.array([0, 1], dtype=np.intp), 2)
    runs += 1
    return {"runs": runs, "seconds": time.perf_counter() - started}
