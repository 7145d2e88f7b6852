"""Vectorised window and cross-sectional kernels on `(T, n)` float matrices.

Every kernel works on whole matrices (rows are dates, columns symbols) with
NumPy only: no loop over symbols, and no loop over dates. The loops left are
over `log2(w)` doubling steps (`rolling_extreme`) or the `w` offsets of one
window (`ts_rank`), each a whole-matrix operation.

Window conventions, shared by every `rolling_*` kernel:

- The window at row `t` is rows `t-w+1 .. t` (trailing, inclusive): a value at
  row `t` depends on rows `<= t` only. No kernel reads a later row, and the
  arithmetic for row `t` does not depend on later rows either (bit-for-bit).
- A window is complete only with `w` rows and no NaN in them (pandas'
  `min_periods=w`); incomplete windows give NaN.

Numerics: rolling sums use prefix sums restarted every `w` rows (a window is
the tail of one block plus the head of the next), so every partial sum holds
at most `w` terms and the error does not grow with `T`, unlike a global
`cumsum`. Second moments are combined from the two blocks with Chan's
parallel formula on block-centred data, so a variance does not suffer the
`E[x^2] - E[x]^2` cancellation on price levels. A window whose values are all
identical has a variance (and covariance) of exactly 0.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

__all__ = [
    "Moments",
    "cs_rank",
    "incomplete_windows",
    "lag",
    "rolling_extreme",
    "rolling_flat",
    "rolling_moments",
    "rolling_sum",
    "ts_rank",
]


def lag(x: np.ndarray, k: int) -> np.ndarray:
    """`x` shifted down by `k >= 1` rows (row `t` holds `x[t-k]`), NaN in the first `k` rows."""
    out = np.full_like(x, np.nan, dtype=np.float64)
    if k < x.shape[0]:
        out[k:] = x[: x.shape[0] - k]
    return out


def _head_tail(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Split each trailing window of `w` rows at a block boundary and sum both parts.

    Rows are cut into blocks of `w` (`t // w`). For every row `t >= w-1`, its
    window `t-w+1 .. t` is the head of `t`'s block (block start .. `t`) plus
    the tail of the previous block (`t-w+1` .. its end; empty when `t` ends a
    block). Returns `(head, tail)` of shape `(T-w+1, n)`, row `i` for `t =
    w-1+i`. Both sums propagate NaN, so a window sum is NaN exactly when the
    window holds a NaN. The prefix sums run as `w` vectorised steps, each over
    every block and column at once (NumPy's `cumsum` along time is a scalar
    loop and several times slower); each partial sum holds at most `w` terms.
    """
    t_rows, n = x.shape
    nb = -(-t_rows // w)
    z = np.zeros((nb * w, n), dtype=np.float64)
    z[:t_rows] = x
    z3 = z.reshape(nb, w, n)
    upto = np.empty_like(z3)  # sum of the block's rows 0..p
    upto[:, 0] = z3[:, 0]
    for p in range(1, w):
        np.add(upto[:, p - 1], z3[:, p], out=upto[:, p])
    after = np.empty_like(z3)  # sum of the block's rows p+1..w-1
    after[:, w - 1] = 0.0
    for p in range(w - 2, -1, -1):
        np.add(after[:, p + 1], z3[:, p + 1], out=after[:, p])
    head = upto.reshape(nb * w, n)[w - 1 : t_rows]
    tail = np.empty_like(head)
    tail[0] = 0.0
    tail[1:] = after.reshape(nb * w, n)[: t_rows - w]
    return head, tail


def rolling_sum(x: np.ndarray, w: int) -> np.ndarray:
    """Trailing sum of `w` rows; NaN where the window is short or holds a NaN."""
    t_rows = x.shape[0]
    out = np.full(x.shape, np.nan, dtype=np.float64)
    if t_rows >= w:
        head, tail = _head_tail(x, w)
        np.add(head, tail, out=out[w - 1 :])
    return out


def incomplete_windows(x: np.ndarray, w: int) -> np.ndarray:
    """Boolean `(T, n)`: True where the window of `w` rows ending at `t` is short or holds a NaN."""
    count = rolling_sum(np.isnan(x).astype(np.float64), w)
    return ~(count == 0)


def rolling_flat(x: np.ndarray, w: int) -> np.ndarray:
    """Boolean `(T, n)`: True where the `w` values ending at `t` are all equal (exact comparison)."""
    t_rows = x.shape[0]
    flat = np.zeros(x.shape, dtype=bool)
    if t_rows < w:
        return flat
    if w == 1:
        flat[:] = True
        return flat
    changed = np.zeros(x.shape, dtype=np.float64)
    changed[1:] = x[1:] != x[:-1]  # NaN counts as a change
    # the w-1 changes between consecutive rows of the window end at t
    flat[:] = rolling_sum(changed, w - 1) == 0
    flat[: w - 1] = False
    return flat


class Moments(NamedTuple):
    """Window moments, NaN where the window is short or holds a NaN (of that series).

    `m2x`, `m2y` are sums of squared deviations from the window mean and
    `cxy` the sum of cross products of deviations (divide by `w - 1` for the
    ddof=1 variance / covariance); `cxy` is NaN where either series is.
    """

    mean_x: np.ndarray
    m2x: np.ndarray
    mean_y: np.ndarray | None
    m2y: np.ndarray | None
    cxy: np.ndarray | None


class _Centred(NamedTuple):
    z: np.ndarray  # series minus its block's reference
    s: tuple[np.ndarray, np.ndarray]  # (head, tail) sums of z
    mean_head: np.ndarray
    mean_tail: np.ndarray
    mean: np.ndarray
    m2: np.ndarray


def rolling_moments(x: np.ndarray, w: int, y: np.ndarray | None = None, *, m2y: bool = True) -> Moments:
    """Mean and second moments of `x` (and of `y`, and their co-moment) over trailing windows of `w` rows.

    Each series is centred on the first value of its block of `w` rows; the
    head and tail of a window (see `_head_tail`) are reduced separately and
    merged with Chan et al.'s pairwise update, so no sum mixes price levels
    with deviations. `m2x` (and `cxy`) is exactly 0 where `x` is constant over
    the window, likewise for `y`.
    """
    t_rows = x.shape[0]
    nan = np.full(x.shape, np.nan, dtype=np.float64)
    if t_rows < w:
        return Moments(nan, nan.copy(), None if y is None else nan.copy(), None, None)

    pos = (np.arange(w - 1, t_rows) % w)[:, None]
    n_head = pos + 1.0
    n_tail = (w - 1.0) - pos
    n_tail_safe = np.maximum(n_tail, 1.0)
    weight = n_head * n_tail / w

    def centred(a: np.ndarray) -> _Centred:
        ref = a[::w].copy()
        ref[np.isnan(ref)] = 0.0
        per_row = np.repeat(ref, w, axis=0)[:t_rows]
        ref_head = per_row[w - 1 :]
        ref_tail = np.empty_like(ref_head)
        ref_tail[0] = per_row[0]
        ref_tail[1:] = per_row[: t_rows - w]
        z = a - per_row
        s_head, s_tail = _head_tail(z, w)
        q_head, q_tail = _head_tail(z * z, w)
        m_head = s_head / n_head
        m_tail = s_tail / n_tail_safe
        mean_head = ref_head + m_head
        mean_tail = ref_tail + m_tail
        mean = (mean_head * n_head + mean_tail * n_tail) / w
        delta = mean_head - mean_tail
        m2 = (q_head - s_head * m_head) + (q_tail - s_tail * m_tail) + delta * delta * weight
        np.maximum(m2, 0.0, out=m2)
        return _Centred(z, (s_head, s_tail), mean_head, mean_tail, mean, m2)

    def full(part: np.ndarray) -> np.ndarray:
        out = nan.copy()
        out[w - 1 :] = part
        return out

    cx = centred(x)
    flat_x = rolling_flat(x, w)[w - 1 :]
    cx.m2[flat_x] = 0.0
    if y is None:
        return Moments(full(cx.mean), full(cx.m2), None, None, None)

    y = np.broadcast_to(y, x.shape)
    cy = centred(y)
    flat_y = rolling_flat(y, w)[w - 1 :]
    cy.m2[flat_y] = 0.0
    p_head, p_tail = _head_tail(cx.z * cy.z, w)
    c_head = p_head - cx.s[0] * cy.s[0] / n_head
    c_tail = p_tail - cx.s[1] * cy.s[1] / n_tail_safe
    cxy = c_head + c_tail + (cx.mean_head - cx.mean_tail) * (cy.mean_head - cy.mean_tail) * weight
    cxy[(flat_x | flat_y) & ~np.isnan(cxy)] = 0.0
    return Moments(full(cx.mean), full(cx.m2), full(cy.mean), full(cy.m2) if m2y else None, full(cxy))


def rolling_extreme(
    x: np.ndarray, w: int, kind: Literal["max", "min"], *, with_position: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Trailing max (or min) over `w` rows and, optionally, where it is.

    The position is the offset of the extreme from the oldest row of the
    window (`0 .. w-1`; `w-1` is the current row); on ties, the oldest row
    (numpy's `argmax` rule). Windows that are short or hold a NaN are NaN
    (position -1). Sparse-table doubling: `ceil(log2(w))` whole-matrix steps.
    """
    t_rows = x.shape[0]
    pick = np.maximum if kind == "max" else np.minimum  # propagates NaN
    prefer_older = np.greater_equal if kind == "max" else np.less_equal
    val = np.array(x, dtype=np.float64, copy=True)
    idx = np.broadcast_to(np.arange(t_rows, dtype=np.int64)[:, None], x.shape).copy() if with_position else None

    def merge(older: np.ndarray, newer: np.ndarray, i_older: np.ndarray | None, i_newer: np.ndarray | None):
        merged = pick(older, newer)
        merged_idx = None if i_older is None else np.where(prefer_older(older, newer), i_older, i_newer)
        return merged, merged_idx

    span = 1
    while span * 2 <= w and span < t_rows:
        # row t covers [t-span+1, t]; merge with the range ending at t-span -> [t-2span+1, t]
        merged, merged_idx = merge(
            val[:-span], val[span:], None if idx is None else idx[:-span], None if idx is None else idx[span:]
        )
        val[span:] = merged
        if idx is not None:
            idx[span:] = merged_idx
        span *= 2
    out = np.full(x.shape, np.nan, dtype=np.float64)
    pos_out = np.full(x.shape, -1, dtype=np.int64) if with_position else None
    if t_rows < w:
        return out, pos_out
    if span < w:
        # [t-w+1, t] = [t-w+1, t-w+span] (the range ending at t-(w-span)) U [t-span+1, t]
        shift = w - span
        merged, merged_idx = merge(
            val[:-shift], val[shift:], None if idx is None else idx[:-shift], None if idx is None else idx[shift:]
        )
        out[shift:] = merged
        if pos_out is not None:
            pos_out[shift:] = merged_idx
    else:
        out[:] = val
        if pos_out is not None and idx is not None:
            pos_out[:] = idx
    out[: w - 1] = np.nan
    if pos_out is not None:
        pos_out -= np.arange(t_rows, dtype=np.int64)[:, None] - (w - 1)
        pos_out[np.isnan(out)] = -1
    return out, pos_out


def ts_rank(x: np.ndarray, w: int) -> np.ndarray:
    """Percentile rank of `x[t]` within its trailing window of `w` rows, as pandas `rolling(w).rank(pct=True)`.

    Average rank for ties divided by `w`, so the value is in `[1/w, 1]`; `1`
    means `x[t]` is the strict maximum of the window. Costs `w` whole-matrix
    comparisons.
    """
    t_rows = x.shape[0]
    out = np.full(x.shape, np.nan, dtype=np.float64)
    if t_rows < w:
        return out
    cur = x[w - 1 :]
    below = np.zeros(cur.shape, dtype=np.float64)
    equal = np.zeros(cur.shape, dtype=np.float64)
    for k in range(1, w):
        prev = x[w - 1 - k : t_rows - k]
        below += prev < cur
        equal += prev == cur
    out[w - 1 :] = (below + 1.0 + equal * 0.5) / w
    out[incomplete_windows(x, w)] = np.nan
    return out


def cs_rank(x: np.ndarray) -> np.ndarray:
    """Cross-sectional percentile rank of every row of a 2-D array, in `[0, 1]`.

    Per row: average ranks for ties (scipy `rankdata(method="average")`) over
    the finite values, scaled as `(rank - 1) / (n - 1)` so the smallest value
    maps to 0 and the largest to 1; a row with one finite value gives 0.5.
    Non-finite cells (NaN, +-inf) are missing and stay NaN. Returns float64.
    """
    if x.ndim != 2:
        raise ValueError(f"cs_rank expects a 2-D array, got shape {x.shape}")
    rows, n = x.shape
    out = np.full(x.shape, np.nan, dtype=np.float64)
    if x.size == 0:
        return out
    valid = np.isfinite(x)
    keyed = np.where(valid, x, np.inf)  # missing values sort last
    order = np.argsort(keyed, axis=1)
    ordered = np.take_along_axis(keyed, order, axis=1)
    new_group = np.empty(x.shape, dtype=bool)
    new_group[:, 0] = True
    np.not_equal(ordered[:, 1:], ordered[:, :-1], out=new_group[:, 1:])
    flat_new = new_group.ravel()
    starts = np.flatnonzero(flat_new)
    sizes = np.diff(starts, append=flat_new.size)
    # 0-based average position of each tie group within its row
    avg_pos = (starts % n) + (sizes - 1) * 0.5
    group = np.cumsum(flat_new) - 1
    count = valid.sum(axis=1)
    denom = np.where(count > 1, count - 1, 1).astype(np.float64)
    pct_sorted = avg_pos[group].reshape(rows, n) / denom[:, None]
    pct_sorted[count == 1] = 0.5
    out_flat = out.ravel()
    target = (order + (np.arange(rows, dtype=np.int64) * n)[:, None]).ravel()
    out_flat[target] = pct_sorted.ravel()
    out[~valid] = np.nan
    return out
