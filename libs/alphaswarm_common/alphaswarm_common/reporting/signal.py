"""Per-date IC, RankIC, IC decay and quantiles of a signal in one pass: the signal is sorted once.

`signal_ics(signal, close, execution_lag=..., horizons=...)` gives what
`metrics.ic_series(signal, forward_returns(close, h, lag), "spearman")` gives
for every horizon h (and the Pearson `IC_t` at h = 1), value for value:
the same average ranks (ties averaged, `scipy.stats.spearmanr`), the same
centring and the same row sums (`metrics.ml._row_corr`), the same skipped
dates (fewer than 2 pairs, a constant side).

What is shared: the signal's per-date order. The masked-in cells of a date
differ by horizon (a forward return is missing near the end and where a
close is missing), but their ranks follow from the one argsort of the
signal: walking the signal's sorted order, the rank of a masked-in cell is
the running count of masked-in cells (`cumsum`), and a run of tied values
shares the mean of the first and last count of the run. Only the forward
returns are sorted per horizon (the same way, their cells outside the mask
counted as missing). With `quantiles`, the same order gives each date's
`pandas.qcut` buckets of the (signal, 1-bar return) pairs as
`evaluation.qcut_buckets` computes them (the masked-in values, ascending,
are read off the sorted row; the edges come from the same `numpy.quantile`
call). Rows are processed in chunks (bounded temporaries, a small thread
pool as in `ic_series`), and each chunk takes its forward returns from its
own rows of `close`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.evaluation import _qcut_levels, forward_returns
from alphaswarm_common.metrics.ml import (
    _chunk_correlations,
    _map_row_chunks,
    _row_corr,
)

__all__ = ["SignalPass", "masked_ranks_from_order", "signal_ics"]


def _matrix(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InvalidArgument(f"{name} must be a (dates, symbols) matrix, got shape {arr.shape}", field=name)
    if np.isinf(arr).any():
        raise DataError("contains ±inf; use NaN for a missing value", field=name)
    return arr


class _SortedRows:
    """One argsort of a chunk of rows (missing values last) and its runs of tied values.

    `flat` holds the sorted positions as indices into the raveled chunk
    (`row * n_cols + column`): gathers and scatters through it are plain
    one-dimensional indexing, several times faster than `take_along_axis`.
    """

    def __init__(self, x: np.ndarray) -> None:
        present = ~np.isnan(x)
        keyed = np.where(present, x, np.inf)
        n_cols = x.shape[1]
        self.flat = np.argsort(keyed, axis=1)
        self.flat += (np.arange(x.shape[0]) * n_cols)[:, None]
        ordered = keyed.ravel()[self.flat]
        self.ordered = ordered
        pos = np.arange(n_cols)
        same_as_prev = ordered[:, 1:] == ordered[:, :-1]
        # Only ties between present values matter (missing cells sort last and are never masked in).
        self.ties = bool((same_as_prev & (pos[1:] < present.sum(axis=1)[:, None])).any())
        self.first: np.ndarray | None = None
        self.last: np.ndarray | None = None
        if self.ties:
            starts = np.ones(ordered.shape, dtype=bool)
            starts[:, 1:] = ~same_as_prev
            ends = np.ones(ordered.shape, dtype=bool)
            ends[:, :-1] = starts[:, 1:]
            self.first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
            self.last = np.minimum.accumulate(np.where(ends, pos, n_cols - 1)[:, ::-1], axis=1)[:, ::-1]


def masked_ranks_from_order(sorted_rows: _SortedRows, mask: np.ndarray) -> np.ndarray:
    """1-based average ranks of each row's masked-in cells among themselves (masked-out cells: garbage),
    from the rows' order: the ranks `_masked_average_ranks(x, mask, ...)` gives, without sorting again."""
    return _ranks(sorted_rows, mask)[0]


def _ranks(
    sorted_rows: _SortedRows, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(ranks, mask in sorted order, running count of masked-in cells in sorted order); `mask=None`:
    every present cell is masked in (they sort first: the count is the position + 1)."""
    flat = sorted_rows.flat
    m: np.ndarray | None = None
    count: np.ndarray | None = None
    if mask is None:
        pos1 = np.arange(1.0, flat.shape[1] + 1.0)
        if sorted_rows.ties:
            assert sorted_rows.first is not None and sorted_rows.last is not None
            sorted_ranks = (sorted_rows.first + sorted_rows.last) * 0.5 + 1.0
        else:
            sorted_ranks = np.broadcast_to(pos1, flat.shape)
    else:
        m = np.ascontiguousarray(mask).ravel()[flat]
        count = np.cumsum(m, axis=1, dtype=np.float64)  # exact: counts stay far below 2**53
        if sorted_rows.ties:
            assert sorted_rows.first is not None and sorted_rows.last is not None
            # Masked-in cells before the run, plus 1, and up to the end of the run: the run's mean rank.
            before = np.take_along_axis(count - m, sorted_rows.first, axis=1)
            through = np.take_along_axis(count, sorted_rows.last, axis=1)
            sorted_ranks = (before + through + 1.0) * 0.5
        else:
            sorted_ranks = count
    ranks = np.empty(flat.shape, dtype=np.float64)
    ranks.ravel()[flat] = sorted_ranks
    return ranks, m, count


def _buckets_from_order(
    sorted_rows: _SortedRows, m: np.ndarray, count: np.ndarray, quantiles: int
) -> np.ndarray:
    """0-based `pandas.qcut` buckets of each row's masked-in cells (-1 elsewhere and on rows whose edges are
    not unique), int8: `evaluation.qcut_buckets(x, quantiles, mask=mask) - 1`, from the rows' order.

    The masked-in values of a row, ascending, are gathered from the sorted
    row (the running count is each one's place); the edges are
    `numpy.quantile(..., method="linear")` of the rows with as many values,
    as `qcut_buckets` computes them, and a value's bucket is the number of
    edges below it, less one, at least 0.
    """
    n_rows, n_cols = m.shape
    levels = _qcut_levels(quantiles)
    counts = count[:, -1].astype(np.intp) if n_cols else np.zeros(n_rows, dtype=np.intp)
    row_start = (np.arange(n_rows) * n_cols)[:, None]
    place = (row_start + count.astype(np.intp) - 1)[m]  # flat place of each masked-in value in `compact`
    compact = np.full(m.shape, np.inf)
    compact.ravel()[place] = sorted_rows.ordered[m]
    bucket = np.full(m.shape, -1, dtype=np.int8)
    for n in np.unique(counts):
        if n == 0:
            continue
        group = np.flatnonzero(counts == n)
        values = compact[group, :n]
        edges = np.quantile(values, levels, axis=1, method="linear").T  # (g, q+1)
        unique = (np.diff(edges, axis=1) > 0).all(axis=1)
        if not unique.any():
            continue
        values, edges = values[unique], edges[unique]
        below = np.zeros(values.shape, dtype=np.int8)
        for k in range(levels.size):
            below += values > edges[:, k : k + 1]
        bucket[group[unique], :n] = np.maximum(below - 1, 0)
    out = np.full(m.shape, -1, dtype=np.int8)
    out.ravel()[sorted_rows.flat[m]] = bucket.ravel()[place]
    return out


@dataclass(frozen=True)
class SignalPass:
    """What `signal_ics` computes in its pass over the rows."""

    ic: np.ndarray  # (T,) IC_t against the 1-bar forward return
    rank_ic: dict[int, np.ndarray]  # h -> (T,) RankIC_t against the h-bar forward return
    buckets: np.ndarray | None  # (T, N) int8 0-based signal quantile of the 1-bar pairs, -1 outside


def signal_ics(
    signal: Any,
    close: Any,
    *,
    execution_lag: int,
    horizons: Sequence[int],
    quantiles: int = 0,
    min_symbols: int = 2,
    n_threads: int | None = None,
) -> SignalPass:
    """`IC_t` against the 1-bar forward return, `RankIC_t` against each horizon's, and with `quantiles`
    the per-date signal quantile of each (signal, 1-bar return) pair.

    Each series is `(T,)`, NaN on skipped dates, equal to `ic_series` on
    `forward_returns(close, h, execution_lag)` (module docstring); the
    quantiles equal `qcut_buckets(signal, quantiles, mask=both present) - 1`.
    """
    sig = _matrix(signal, "signal")
    px = _matrix(close, "close")
    if sig.shape != px.shape:
        raise InvalidArgument(f"signal has shape {sig.shape}, close {px.shape}", field="signal")
    hs = sorted({int(h) for h in horizons} | {1})
    lag = int(execution_lag)
    n_rows = sig.shape[0]
    ic = np.full(n_rows, np.nan)
    rank_ic = {h: np.full(n_rows, np.nan) for h in hs}
    buckets = np.full(sig.shape, -1, dtype=np.int8) if quantiles else None

    def work(a: int, b: int) -> None:
        xs = sig[a:b]
        present = ~np.isnan(xs)
        rows = _SortedRows(xs)
        for h in hs:
            # forward_returns is cell by cell: a chunk's rows need only close[a : b + lag + h].
            ys = forward_returns(px[a : b + lag + h], h, lag)[: b - a]
            if np.isinf(ys).any():
                raise DataError("a forward return is ±inf (a close of 0)", field="close")
            mask = present & ~np.isnan(ys)
            counts = mask.sum(axis=1)
            ok = counts >= min_symbols
            mean_rank = ((counts + 1.0) * 0.5)[:, None]
            x_ranks, m, count = _ranks(rows, mask)
            rx = np.where(mask, x_ranks - mean_rank, 0.0)
            # The forward returns' own sort, with the cells outside the mask missing.
            ry = np.where(mask, _ranks(_SortedRows(np.where(mask, ys, np.nan)), None)[0] - mean_rank, 0.0)
            rank_ic[h][a:b] = _row_corr(rx, ry, ok)
            if h == 1:
                ic[a:b] = _chunk_correlations(xs, ys, mask, min_symbols, ("pearson",))["pearson"]
                if buckets is not None:
                    assert m is not None and count is not None
                    buckets[a:b] = _buckets_from_order(rows, m, count, quantiles)

    if sig.size:
        _map_row_chunks(sig.shape, work, n_threads)
    return SignalPass(ic, rank_ic, buckets)
