"""Per-date IC, RankIC and the IC decay of a signal in one pass: the signal is sorted once.

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
returns are sorted per horizon. Rows are processed in chunks (bounded
temporaries, a small thread pool as in `ic_series`), and each chunk takes
its forward returns from its own rows of `close`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.evaluation import forward_returns
from alphaswarm_common.metrics.ml import (
    _chunk_correlations,
    _map_row_chunks,
    _masked_average_ranks,
    _row_corr,
)

__all__ = ["masked_ranks_from_order", "signal_ics"]


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
    """One argsort of a chunk of signal rows (missing values last) and its runs of tied values."""

    def __init__(self, x: np.ndarray) -> None:
        present = ~np.isnan(x)
        keyed = np.where(present, x, np.inf)
        self.order = np.argsort(keyed, axis=1)
        ordered = np.take_along_axis(keyed, self.order, axis=1)
        n_cols = x.shape[1]
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
    order = sorted_rows.order
    m = np.take_along_axis(mask, order, axis=1)
    count = np.cumsum(m, axis=1, dtype=np.int64)
    if sorted_rows.ties:
        assert sorted_rows.first is not None and sorted_rows.last is not None
        # Masked-in cells before the run, plus 1, and up to the end of the run: the run's mean rank.
        before = np.take_along_axis(count - m, sorted_rows.first, axis=1)
        through = np.take_along_axis(count, sorted_rows.last, axis=1)
        sorted_ranks = (before + through + 1) * 0.5
    else:
        sorted_ranks = count.astype(np.float64)
    ranks = np.empty(mask.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, sorted_ranks, axis=1)
    return ranks


def signal_ics(
    signal: Any,
    close: Any,
    *,
    execution_lag: int,
    horizons: Sequence[int],
    min_symbols: int = 2,
    n_threads: int | None = None,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(`IC_t` against the 1-bar forward return, `{h: RankIC_t against the h-bar forward return}`).

    Each series is `(T,)`, NaN on skipped dates, equal to `ic_series` on
    `forward_returns(close, h, execution_lag)` (module docstring).
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
            rx = np.where(mask, masked_ranks_from_order(rows, mask) - mean_rank, 0.0)
            ry = np.where(mask, _masked_average_ranks(ys, mask, counts) - mean_rank, 0.0)
            rank_ic[h][a:b] = _row_corr(rx, ry, ok)
            if h == 1:
                ic[a:b] = _chunk_correlations(xs, ys, mask, min_symbols, ("pearson",))["pearson"]

    if sig.size:
        _map_row_chunks(sig.shape, work, n_threads)
    return ic, rank_ic
