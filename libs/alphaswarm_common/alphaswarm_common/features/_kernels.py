"""Vectorised window and cross-sectional kernels on `(T, n)` float matrices.

Every kernel works on whole matrices (rows are dates, columns symbols) with
NumPy, except the block prefix sums, a compiled loop (`_compiled`). The loops left run
over the `w` offsets of a window (prefix sums inside blocks of `w` rows,
`ts_rank`) or over `log2(w)` doubling steps (`rolling_extreme`), each step a
whole-matrix operation.

Window conventions, shared by every `rolling_*` kernel:

- The window at row `t` is rows `t-w+1 .. t` (trailing, inclusive): a value at
  row `t` depends on rows `<= t` only, and so does its arithmetic, so the
  value is bit-for-bit unchanged when later rows change.
- A window is complete only with `w` rows and no NaN in them (pandas'
  `min_periods=w`); incomplete windows give NaN.

Numerics: window sums use prefix sums restarted every `w` rows, so a window
is the head of one block plus the tail of the previous one and every partial
sum holds at most `w` terms (the error does not grow with `T`, unlike a global
`cumsum`, and no sum mixes distant price levels). For second moments each
block is centred on its first value and the tail's sums are moved to the
head block's reference, a value inside the window, so `Q - S^2 / w` only
cancels deviations of the size of the window's range, not of the price level
(on prices this is more accurate than pandas' rolling var). A window whose
values are all identical has a variance and covariance of exactly 0.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

__all__ = [
    "Moments",
    "Trend",
    "cs_rank",
    "lag",
    "rolling_extreme",
    "rolling_flat",
    "rolling_moments",
    "rolling_sum",
    "rolling_trend",
    "ts_rank",
    "valid_windows",
]

_FLAT_TOL = 1e-10  # relative size under which a second moment is checked for an exactly flat window


_SCAN_WINDOW = 64  # rolling max/min windows up to this long are scanned (O(w) per cell), longer ones doubled


def _writable(x: np.ndarray) -> np.ndarray:
    """`x` as a writable, C-ordered float64 array (the one array type the compiled loops take)."""
    if x.dtype == np.float64 and x.flags.c_contiguous and x.flags.writeable:
        return x
    return np.array(x, dtype=np.float64, order="C")


def lag(x: np.ndarray, k: int) -> np.ndarray:
    """`x` shifted down by `k >= 1` rows (row `t` holds `x[t-k]`), NaN in the first `k` rows."""
    out = np.full(x.shape, np.nan, dtype=np.float64)
    if k < x.shape[0]:
        out[k:] = x[: x.shape[0] - k]
    return out


def _window_sums(z: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of `z` (no NaN) over the head and the tail of every complete window.

    Rows are cut into blocks of `w` (`t // w`). The window `t-w+1 .. t` of a
    row `t >= w-1` is the head of `t`'s block (block start .. `t`) plus the
    tail of the previous block (`t-w+1` .. its end; empty when `t` ends a
    block). Returns `(head, tail)` of shape `(T-w+1, n)`, row `i` for
    `t = w-1+i`. The prefix sums run in one compiled pass
    (`_compiled.window_sums`), the same additions in the same order as `w`
    whole-matrix steps over every block.
    """
    from alphaswarm_common.features import _compiled  # numba: imported on first use

    t_rows = z.shape[0]
    upto, buf = _compiled.window_sums(_writable(z), w)
    return upto[w - 1 : t_rows], buf[: t_rows - w + 1]


def valid_windows(missing: np.ndarray, w: int) -> np.ndarray:
    """Boolean `(T, n)`: True where the `w` rows ending at `t` exist and none is `missing`.

    Columns whose values form one run (missing only before the first and
    after the last value: not yet listed, delisted) are settled by comparing
    row numbers; only columns with interior gaps need a window count.
    """
    t_rows, n = missing.shape
    ok = np.zeros((t_rows, n), dtype=bool)
    if t_rows < w:
        return ok
    present = ~missing
    any_present = present.any(axis=0)
    first = np.argmax(present, axis=0)
    last = t_rows - 1 - np.argmax(present[::-1], axis=0)
    one_run = any_present & (present.sum(axis=0) == last - first + 1)
    rows = np.arange(t_rows)[:, None]
    np.logical_and((rows >= first + (w - 1)) & (rows <= last), one_run, out=ok)
    gaps = np.flatnonzero(any_present & ~one_run)
    if gaps.size:
        head, tail = _window_sums(missing[:, gaps].astype(np.float64), w)
        sub = np.zeros((t_rows, gaps.size), dtype=bool)
        sub[w - 1 :] = (head + tail) == 0
        ok[:, gaps] = sub
    return ok


def rolling_sum(x: np.ndarray, w: int) -> np.ndarray:
    """Trailing sum of `w` rows; NaN where the window is short or holds a NaN."""
    t_rows = x.shape[0]
    out = np.full(x.shape, np.nan, dtype=np.float64)
    if t_rows < w:
        return out
    missing = np.isnan(x)
    has_missing = bool(missing.any())
    head, tail = _window_sums(np.where(missing, 0.0, x) if has_missing else x, w)
    np.add(head, tail, out=out[w - 1 :])
    if has_missing:
        out[~valid_windows(missing, w)] = np.nan
    return out


def rolling_flat(x: np.ndarray, w: int) -> np.ndarray:
    """Boolean `(T, n)`: True where the `w` values ending at `t` are all equal (exact comparison)."""
    t_rows = x.shape[0]
    flat = np.zeros(x.shape, dtype=bool)
    if t_rows < w:
        return flat
    if w == 1:
        flat[:] = ~np.isnan(x)
        return flat
    changed = np.zeros(x.shape, dtype=np.float64)
    changed[1:] = x[1:] != x[:-1]  # NaN counts as a change
    # the w-1 changes between consecutive rows of the window ending at t
    flat[:] = rolling_sum(changed, w - 1) == 0
    flat[: w - 1] = False
    return flat


class _Centred(NamedTuple):
    z: np.ndarray  # the series minus its block's first value, 0 where missing
    s_tail: np.ndarray  # tail sum of z (block k-1 reference)
    d: np.ndarray  # reference of the tail's block minus the head's
    sum_dev: np.ndarray  # sum over the window of (x - head reference)
    mean: np.ndarray
    m2: np.ndarray
    ok: np.ndarray | None  # complete windows (None: all rows t >= w-1)


def _centred(a: np.ndarray, w: int, n_tail: np.ndarray) -> _Centred:
    """Window mean and sum of squared deviations of `a` for rows `t >= w-1` (NaN where incomplete).

    Each block is centred on its first value; the tail's sums are moved to
    the head block's reference (a value inside the window), so the final
    `Q - S^2 / w` only cancels deviations of the size of the window's range.
    """
    t_rows = a.shape[0]
    missing = np.isnan(a)
    has_missing = bool(missing.any())
    ref = a[::w].copy()
    ref[np.isnan(ref)] = 0.0
    per_row = np.repeat(ref, w, axis=0)[:t_rows]
    ref_head = per_row[w - 1 :]
    d = np.empty_like(ref_head)
    d[0] = 0.0
    np.subtract(per_row[: t_rows - w], per_row[w:], out=d[1:])
    z = a - per_row
    if has_missing:
        z[missing] = 0.0
    s_head, s_tail = _window_sums(z, w)
    q_head, q_tail = _window_sums(z * z, w)
    nd = n_tail * d
    sum_dev = s_head + s_tail + nd
    m2 = q_head + q_tail + d * (2.0 * s_tail + nd) - sum_dev * sum_dev / w
    np.maximum(m2, 0.0, out=m2)
    mean = ref_head + sum_dev / w
    ok = valid_windows(missing, w)[w - 1 :] if has_missing else None
    # A flat window has m2 == 0 in exact arithmetic; moving the tail to the head's reference can
    # leave a rounding residue of order eps * q_tail. Windows under a much larger tolerance are
    # checked exactly, on their columns only, and set to 0.
    candidate = m2 <= _FLAT_TOL * q_tail
    if ok is not None:
        candidate &= ok
    cols = np.flatnonzero(candidate.any(axis=0))
    if cols.size:
        flat = rolling_flat(a[:, cols], w)[w - 1 :] & candidate[:, cols]
        sub = m2[:, cols]
        sub[flat] = 0.0
        m2[:, cols] = sub
    if ok is not None:
        mean[~ok] = np.nan
        m2[~ok] = np.nan
    return _Centred(z, s_tail, d, sum_dev, mean, m2, ok)


def _full(part: np.ndarray, t_rows: int, w: int) -> np.ndarray:
    out = np.full((t_rows, part.shape[1]), np.nan, dtype=np.float64)
    out[w - 1 :] = part
    return out


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


def _n_tail(t_rows: int, w: int) -> np.ndarray:
    """Rows of each window (`t >= w-1`) that lie in the previous block, as a `(T-w+1, 1)` column."""
    return ((w - 1) - (np.arange(w - 1, t_rows) % w))[:, None].astype(np.float64)


def rolling_moments(x: np.ndarray, w: int, y: np.ndarray | None = None) -> Moments:
    """Mean and second moments of `x` (and of `y`, and their co-moment) over trailing windows of `w` rows.

    `m2x` (and `cxy`) is exactly 0 where `x` is constant over the window,
    likewise for `y`.
    """
    t_rows = x.shape[0]
    if t_rows < w:
        nan = np.full(x.shape, np.nan, dtype=np.float64)
        return Moments(nan, nan.copy(), *((None,) * 3 if y is None else (nan.copy(), nan.copy(), nan.copy())))
    n_tail = _n_tail(t_rows, w)
    cx = _centred(x, w, n_tail)
    if y is None:
        return Moments(_full(cx.mean, t_rows, w), _full(cx.m2, t_rows, w), None, None, None)
    cy = _centred(np.broadcast_to(y, x.shape), w, n_tail)
    p_head, p_tail = _window_sums(cx.z * cy.z, w)
    # sum over the window of (x - x_head_ref)(y - y_head_ref), the tail moved to the head references
    cross = p_head + p_tail + cx.d * cy.s_tail + cy.d * (cx.s_tail + n_tail * cx.d)
    cxy = cross - cx.sum_dev * cy.sum_dev / w
    cxy[(cx.m2 == 0) | (cy.m2 == 0)] = 0.0
    for c in (cx, cy):
        if c.ok is not None:
            cxy[~c.ok] = np.nan
    return Moments(
        _full(cx.mean, t_rows, w),
        _full(cx.m2, t_rows, w),
        _full(cy.mean, t_rows, w),
        _full(cy.m2, t_rows, w),
        _full(cxy, t_rows, w),
    )


class Trend(NamedTuple):
    """Least-squares line of `x` on the bar index over each window (NaN where incomplete).

    `slope` is per bar; `fitted` is the line's value at the window's last bar;
    `rsqr` is the R^2 of the fit (NaN on a flat window, where it is 0 / 0).
    """

    slope: np.ndarray
    fitted: np.ndarray
    rsqr: np.ndarray
    m2x: np.ndarray


def rolling_trend(x: np.ndarray, w: int) -> Trend:
    """OLS of `x[t-w+1 .. t]` on `0 .. w-1` for every row, as `numpy.polyfit(arange(w), window, 1)`.

    The bar index needs no data: its sums are closed forms, so one window sum
    (of `x` times the position in its block) gives the co-moment.
    """
    t_rows = x.shape[0]
    nan = np.full(x.shape, np.nan, dtype=np.float64)
    if t_rows < w or w < 2:
        return Trend(nan, nan.copy(), nan.copy(), nan.copy())
    n_tail = _n_tail(t_rows, w)
    cx = _centred(x, w, n_tail)
    position = (np.arange(t_rows) % w)[:, None].astype(np.float64)
    p_head, p_tail = _window_sums(cx.z * position, w)
    p = (w - 1.0) - n_tail  # position of t in its block
    # bar offsets from the head block's start: head rows 0..p, tail rows (p+1..w-1) - w
    tail_positions = (w - 1.0) * w / 2.0 - p * (p + 1.0) / 2.0
    s_offset = w * (p - (w - 1.0) / 2.0)
    cross = p_head + p_tail - w * cx.s_tail + cx.d * (tail_positions - w * n_tail)
    cxt = cross - cx.sum_dev * s_offset / w
    flat = cx.m2 == 0
    cxt[flat] = 0.0
    if cx.ok is not None:
        cxt[~cx.ok] = np.nan
    stt = w * (w * w - 1.0) / 12.0  # sum of squared deviations of 0..w-1
    slope = cxt / stt
    fitted = cx.mean + slope * ((w - 1.0) / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rsqr = np.where(flat, np.nan, np.minimum(cxt * cxt / (stt * cx.m2), 1.0))
    return Trend(
        _full(slope, t_rows, w), _full(fitted, t_rows, w), _full(rsqr, t_rows, w), _full(cx.m2, t_rows, w)
    )


def rolling_extreme(
    x: np.ndarray, w: int, kind: Literal["max", "min"], *, with_position: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Trailing max (or min) over `w` rows and, optionally, where it is.

    The position is the offset of the extreme from the oldest row of the
    window (`0 .. w-1`; `w-1` is the current row); on ties, the oldest row
    (numpy's `argmax` rule). Windows that are short or hold a NaN are NaN
    (position -1). Windows up to `_SCAN_WINDOW` rows are scanned by a compiled
    loop (`_compiled.rolling_extreme`), longer ones by sparse-table doubling:
    `ceil(log2(w))` whole-matrix steps; both compare only, so give the same values
    (a zero extreme of a window holding both -0.0 and 0.0 may come out with either sign).
    """
    t_rows = x.shape[0]
    if w <= _SCAN_WINDOW:
        from alphaswarm_common.features import _compiled

        src = _writable(x)
        out = np.empty(src.shape, dtype=np.float64)
        pos = np.empty(src.shape, dtype=np.int64)
        _compiled.rolling_extreme(src, w, kind == "max", out, pos)
        return out, (pos if with_position else None)
    pick = np.maximum if kind == "max" else np.minimum  # propagates NaN
    prefer_older = np.greater_equal if kind == "max" else np.less_equal
    val = np.array(x, dtype=np.float64, copy=True)
    idx = (
        np.broadcast_to(np.arange(t_rows, dtype=np.int64)[:, None], x.shape).copy() if with_position else None
    )

    def merge(
        older: np.ndarray, newer: np.ndarray, i_older: np.ndarray | None, i_newer: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        merged = pick(older, newer)
        if i_older is None or i_newer is None:
            return merged, None
        return merged, np.where(prefer_older(older, newer), i_older, i_newer)

    span = 1
    while span * 2 <= w and span < t_rows:
        # row t covers [t-span+1, t]; merge with the range ending at t-span -> [t-2span+1, t]
        merged, merged_idx = merge(
            val[:-span], val[span:], None if idx is None else idx[:-span], None if idx is None else idx[span:]
        )
        val[span:] = merged
        if idx is not None and merged_idx is not None:
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
            val[:-shift],
            val[shift:],
            None if idx is None else idx[:-shift],
            None if idx is None else idx[shift:],
        )
        out[shift:] = merged
        if pos_out is not None and merged_idx is not None:
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
    means `x[t]` is the strict maximum of the window. A compiled loop
    (`_compiled.ts_rank`): `w - 1` comparisons per cell.
    """
    from alphaswarm_common.features import _compiled

    out = np.empty(x.shape, dtype=np.float64)
    _compiled.ts_rank(_writable(x), w, out)
    return out


def cs_rank(x: np.ndarray) -> np.ndarray:
    """Cross-sectional percentile rank of every row of a 2-D array, in `[0, 1]`.

    Per row: average ranks for ties (scipy `rankdata(method="average")`) over
    the finite values, scaled as `(rank - 1) / (n - 1)` so the smallest value
    maps to 0 and the largest to 1; a row with one finite value gives 0.5.
    Non-finite cells (NaN, +-inf) are missing and stay NaN. Returns float64.
    One `argsort` per row; tie groups are resolved only in rows that have ties.
    """
    if x.ndim != 2:
        raise ValueError(f"cs_rank expects a 2-D array, got shape {x.shape}")
    rows, n = x.shape
    out = np.full(x.shape, np.nan, dtype=np.float64)
    if x.size == 0:
        return out
    valid = np.isfinite(x)
    count = valid.sum(axis=1)
    keyed = np.where(valid, x, np.inf)  # missing values sort last, after every finite value
    order = np.argsort(keyed, axis=1)
    flat_order = (order + (np.arange(rows, dtype=np.intp) * n)[:, None]).ravel()
    ordered = keyed.ravel()[flat_order].reshape(rows, n)
    # position (0-based) of each sorted cell; ties get the average position of their group
    position = np.broadcast_to(np.arange(n, dtype=np.float64), (rows, n))
    tie = (ordered[:, 1:] == ordered[:, :-1]) & np.isfinite(ordered[:, 1:])  # missing cells never tie
    tied_rows = np.flatnonzero(tie.any(axis=1))
    if tied_rows.size:
        position = position.copy()
        sub = ordered[tied_rows]
        m = tied_rows.size
        new_group = np.empty((m, n), dtype=bool)
        new_group[:, 0] = True
        np.not_equal(sub[:, 1:], sub[:, :-1], out=new_group[:, 1:])
        flat_new = new_group.ravel()
        starts = np.flatnonzero(flat_new)
        sizes = np.diff(starts, append=flat_new.size)
        avg = (starts % n) + (sizes - 1) * 0.5
        position[tied_rows] = avg[np.cumsum(flat_new) - 1].reshape(m, n)
    denom = np.where(count > 1, count - 1, 1).astype(np.float64)
    pct = position / denom[:, None]
    if (count == 1).any():
        pct = np.where((count == 1)[:, None], 0.5, pct)
    out.ravel()[flat_order] = pct.ravel()
    out[~valid] = np.nan
    return out
