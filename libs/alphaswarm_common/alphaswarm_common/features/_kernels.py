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


def incomplete_windows(x: np.ndarray, w: int) -> np.ndarray:
    """Boolean `(T, n)`: True where the window of `w` rows ending at `t` is short or holds a NaN."""
    t_rows = x.shape[0]
    bad = np.ones(x.shape, dtype=bool)
    if t_rows < w:
        return bad
    count = np.cumsum(np.isnan(x), axis=0, dtype=np.int32)
    in_window = count[w - 1 :].copy()
    in_window[1:] -= count[: t_rows - w]
    bad[w - 1 :] = in_window > 0
    return bad


def rolling_flat(x: np.ndarray, w: int) -> np.ndarray:
    """Boolean `(T, n)`: True where the `w` values ending at `t` are all equal (exact comparison)."""
    t_rows = x.shape[0]
    flat = np.zeros(x.shape, dtype=bool)
    if t_rows < w:
        return flat
    if w == 1:
        flat[:] = True
        return flat
    changed = np.zeros(x.shape, dtype=np.int32)
    changed[1:] = x[1:] != x[:-1]
    count = np.cumsum(changed, axis=0, dtype=np.int32)
    # changes between consecutive rows inside the window: rows t-w+2 .. t
    in_window = count[w - 1 :].copy()
    in_window -= count[: t_rows - w + 1]
    flat[w - 1 :] = in_window == 0
    return flat


def _blocks(x: np.ndarray, w: int, centre: bool) -> tuple[np.ndarray, np.ndarray]:
    """`x` (NaN -> 0) cut into `ceil(T/w)` blocks of `w` rows, optionally centred on each block's first row.

    Returns `(z, ref)`: `z` of shape `(nb, w, n)` (rows past `T` are 0) and the
    per-block reference `ref` of shape `(nb, n)` (0 when not centring, or when
    the block's first value is missing).
    """
    t_rows, n = x.shape
    nb = -(-t_rows // w)
    z = np.zeros((nb * w, n), dtype=np.float64)
    np.copyto(z[:t_rows], x)
    z[:t_rows][np.isnan(x)] = 0.0
    z3 = z.reshape(nb, w, n)
    if centre:
        ref = z3[:, 0, :].copy()
        z3 -= ref[:, None, :]
        z[t_rows:] = 0.0
    else:
        ref = np.zeros((nb, n), dtype=np.float64)
    return z3, ref


def _head_tail(z3: np.ndarray, t_rows: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row `t >= w-1`: sum of the block rows up to `t` (head) and of the previous block after `t-w` (tail)."""
    nb, _, n = z3.shape
    inclusive = np.cumsum(z3, axis=1)
    after = inclusive[:, -1:, :] - inclusive  # sum of the block's rows after each row
    inclusive = inclusive.reshape(nb * w, n)
    after = after.reshape(nb * w, n)
    head = inclusive[w - 1 : t_rows]
    tail = np.empty_like(head)
    tail[0] = 0.0
    tail[1:] = after[: t_rows - w]
    return head, tail


def rolling_sum(x: np.ndarray, w: int) -> np.ndarray:
    """Trailing sum of `w` rows; NaN where the window is incomplete."""
    t_rows = x.shape[0]
    out = np.full(x.shape, np.nan, dtype=np.float64)
    if t_rows < w:
        return out
    z3, _ = _blocks(x, w, centre=False)
    head, tail = _head_tail(z3, t_rows, w)
    out[w - 1 :] = head + tail
    out[incomplete_windows(x, w)] = np.nan
    return out


class Moments(NamedTuple):
    """Window moments (NaN where the window is incomplete).

    `m2x`, `m2y` are sums of squared deviations from the window mean and
    `cxy` the sum of cross products of deviations (divide by `w - 1` for the
    ddof=1 variance / covariance).
    """

    mean_x: np.ndarray
    m2x: np.ndarray
    mean_y: np.ndarray | None
    m2y: np.ndarray | None
    cxy: np.ndarray | None


def rolling_moments(x: np.ndarray, w: int, y: np.ndarray | None = None, *, m2y: bool = True) -> Moments:
    """Mean and second moments of `x` (and of `y`, and their co-moment) over trailing windows of `w` rows.

    Exactly 0 for `m2x` (and `cxy`) where `x` is constant over the window, and
    for `m2y` (and `cxy`) where `y` is. Incomplete windows (short, or a NaN in
    `x` or `y`) are NaN.
    """
    t_rows, n = x.shape
    nan = np.full(x.shape, np.nan, dtype=np.float64)
    if t_rows < w:
        return Moments(nan, nan.copy(), None if y is None else nan.copy(), None, None)

    rows = np.arange(w - 1, t_rows)
    pos = (rows % w)[:, None]
    n_head = (pos + 1).astype(np.float64)  # rows of the window in the current block
    n_tail = (w - 1 - pos).astype(np.float64)  # rows of the window in the previous block
    n_tail_safe = np.maximum(n_tail, 1.0)
    blk = rows // w
    blk_prev = np.maximum(blk - 1, 0)
    weight = n_tail * n_head / w

    def first_and_second(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        z3, ref = _blocks(a, w, centre=True)
        s_head, s_tail = _head_tail(z3, t_rows, w)
        q_head, q_tail = _head_tail(z3 * z3, t_rows, w)
        m_head = s_head / n_head
        m_tail = s_tail / n_tail_safe
        mean_head = ref[blk] + m_head
        mean_tail = ref[blk_prev] + m_tail
        mean = (mean_head * n_head + mean_tail * n_tail) / w
        delta = mean_head - mean_tail
        m2 = (q_head - s_head * m_head) + (q_tail - s_tail * m_tail) + delta * delta * weight
        np.maximum(m2, 0.0, out=m2)
        return mean, m2, delta, z3, np.stack([s_head, s_tail])

    mean_x, m2x_, dx, zx, sx = first_and_second(x)
    bad = incomplete_windows(x, w)
    flat_x = rolling_flat(x, w)[w - 1 :]
    m2x_[flat_x] = 0.0
    out_mean_x = nan.copy()
    out_mean_x[w - 1 :] = mean_x
    out_m2x = nan.copy()
    out_m2x[w - 1 :] = m2x_

    if y is None:
        out_mean_x[bad] = np.nan
        out_m2x[bad] = np.nan
        return Moments(out_mean_x, out_m2x, None, None, None)

    y = np.broadcast_to(y, x.shape)
    mean_y, m2y_, dy, zy, sy = first_and_second(y)
    flat_y = rolling_flat(y, w)[w - 1 :]
    m2y_[flat_y] = 0.0
    p_head, p_tail = _head_tail(zx * zy, t_rows, w)
    c_head = p_head - sx[0] * sy[0] / n_head
    c_tail = p_tail - sx[1] * sy[1] / n_tail_safe
    cxy = c_head + c_tail + dx * dy * weight
    cxy[flat_x | flat_y] = 0.0

    bad |= incomplete_windows(y, w)
    out_mean_y = nan.copy()
    out_mean_y[w - 1 :] = mean_y
    out_m2y = nan.copy()
    out_m2y[w - 1 :] = m2y_
    out_cxy = nan.copy()
    out_cxy[w - 1 :] = cxy
    for arr in (out_mean_x, out_m2x, out_mean_y, out_m2y, out_cxy):
        arr[bad] = np.nan
    return Moments(out_mean_x, out_m2x, out_mean_y, out_m2y if m2y else None, out_cxy)


def rolling_extreme(
    x: np.ndarray, w: int, kind: Literal["max", "min"], *, with_position: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Trailing max (or min) over `w` rows and, optionally, where it is.

    The position is the offset of the extreme from the oldest row of the
    window (`0 .. w-1`; `w-1` is the current row); on ties, the oldest row
    (numpy's `argmax` rule). Incomplete windows are NaN (position -1).
    Sparse-table doubling: `ceil(log2(w))` whole-matrix steps.
    """
    t_rows = x.shape[0]
    fill = -np.inf if kind == "max" else np.inf
    prefer_older = np.greater_equal if kind == "max" else np.less_equal
    val = np.where(np.isnan(x), fill, x)
    idx = np.broadcast_to(np.arange(t_rows, dtype=np.int64)[:, None], x.shape).copy() if with_position else None

    def combine(span: int) -> None:
        # row t covers [t-span+1, t]; merge with the range ending at t-span (older) -> [t-2span+1, t].
        # Both merged arrays are built from the old values before either is written back.
        older, newer = val[:-span], val[span:]
        take_older = prefer_older(older, newer)
        merged = np.where(take_older, older, newer)
        if idx is not None:
            merged_idx = np.where(take_older, idx[:-span], idx[span:])
            idx[span:] = merged_idx
        val[span:] = merged

    span = 1
    while span * 2 <= w and span < t_rows:
        combine(span)
        span *= 2
    out = np.full(x.shape, np.nan, dtype=np.float64)
    pos_out = np.full(x.shape, -1, dtype=np.int64) if with_position else None
    if t_rows < w:
        return out, pos_out
    if span < w:
        # [t-w+1, t] = [t-w+1, t-w+span] (ends at t-(w-span)) U [t-span+1, t]
        shift = w - span
        older, newer = val[:-shift], val[shift:]
        take_older = prefer_older(older, newer)
        out[shift:] = np.where(take_older, older, newer)
        if idx is not None and pos_out is not None:
            pos_out[shift:] = np.where(take_older, idx[:-shift], idx[shift:])
    else:
        out[:] = val
        if idx is not None and pos_out is not None:
            pos_out[:] = idx
    bad = incomplete_windows(x, w)
    out[bad] = np.nan
    if pos_out is not None:
        pos_out -= np.arange(t_rows, dtype=np.int64)[:, None] - (w - 1)
        pos_out[bad] = -1
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
