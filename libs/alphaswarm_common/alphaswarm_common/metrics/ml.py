"""ML metrics of a prediction matrix against the labels it predicts (METRICS.md, "ML metrics").

Inputs are two `(T, N)` float arrays, dates by symbols, aligned cell by cell:
`predictions[t, i]` is the prediction formed at date t for symbol i and
`labels[t, i]` the return that decision earns (see METRICS.md, "Time and
causality"). NaN marks a missing value; a pair counts only when both sides
are present. ±inf is rejected (DataError): it is never a valid prediction
or return. A 1-D input is read as one symbol, `(T,)` -> `(T, 1)`.

Conventions (all recorded in `MetricSet.conventions`):

- **Cross-sectional mode** (two or more symbols with data): per date t with at
  least `min_symbols` pairs, `IC_t` is the Pearson and `RankIC_t` the
  Spearman correlation across symbols; Spearman uses average ranks for ties
  (as `scipy.stats.spearmanr`, alphalens and Qlib do). A date where either
  side is constant across its pairs is skipped (the correlation is undefined),
  never counted as 0. `ic_pearson` = mean of `IC_t`, `ic_spearman` = mean of
  `RankIC_t`, `icir` = mean(`RankIC_t`) / std(`RankIC_t`, ddof=1), not
  annualised, `ic_tstat` = `icir * sqrt(n_dates)`. With overlapping labels
  (horizon h > 1) successive `RankIC_t` are autocorrelated and `ic_tstat`
  overstates significance; it is reported as defined, not corrected.
- **Time-series mode** (a one-symbol universe: a single column, or a single
  column with any data): there is no cross-section, so `ic_pearson` and
  `ic_spearman` are the correlations over all dates with a pair, and `icir`
  is mean / std (ddof=1) of the Spearman IC of non-overlapping blocks of
  `ts_block` bars (default 21, about a month of daily bars). Blocks are
  aligned on the first date; a trailing partial block is dropped; a block
  needs `min_symbols` pairs and non-constant sides, like a date does in
  cross-sectional mode. `ic_tstat` = `icir * sqrt(n_blocks)`; `n_dates`
  counts the dates with a pair and `n_blocks` the blocks with a valid IC.
- `mae`, `rmse`: over all (date, symbol) pairs with both values.
- `hit_rate`: among pairs where both values are non-zero, the share where
  sign(prediction) == sign(label). Pairs with a zero on either side carry no
  direction and are excluded (alphalens-style "hit rate" counts them as
  misses; we do not).

Undefined values are None with a reason (no pair at all, no valid date,
fewer than 2 valid dates for `icir`, zero dispersion of the IC series, ...).

`ic_series` is vectorised across dates: rows are ranked all at once with a
row-wise argsort under a NaN mask (ties averaged from the sorted order), and
correlations are row-wise sums. Large inputs are cut into row chunks that
are processed by a small thread pool (NumPy releases the GIL in sorting and
ufuncs), which keeps a 5040 x 3000 panel well under a second.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.metrics._types import MetricSet, _Builder

__all__ = ["ICMethod", "ic_series", "ml_metrics"]

ICMethod = Literal["spearman", "pearson"]
_METHODS: tuple[ICMethod, ...] = ("spearman", "pearson")

# Work is cut into row chunks of about this many cells: big enough to amortise
# the per-call overhead, small enough to stay in cache and bound temporaries.
_CHUNK_CELLS = 1 << 19
# Below this many cells a thread pool costs more than it saves.
_PARALLEL_MIN_CELLS = 1 << 21

Array = NDArray[np.float64]
T_ = TypeVar("T_")


def _as_matrix(data: ArrayLike, field: str) -> Array:
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, np.newaxis]
    if arr.ndim != 2:
        raise InvalidArgument(f"expected a (dates, symbols) array, got shape {arr.shape}", field=field)
    if np.isinf(arr).any():
        raise DataError("contains ±inf; use NaN for a missing value", field=field)
    return arr


def _check_int(value: int, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgument(f"must be an integer >= {minimum}, got {value!r}", field=field)
    return int(value)


def _default_threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _masked_average_ranks(x: Array, mask: NDArray[np.bool_], counts: NDArray[np.int64]) -> Array:
    """1-based ranks of each row's masked-in values, ties averaged; masked-out cells are garbage."""
    n_cols = x.shape[1]
    keyed = np.where(mask, x, np.inf)  # masked-out cells sort last
    order = np.argsort(keyed, axis=1)
    ordered = np.take_along_axis(keyed, order, axis=1)
    pos = np.arange(n_cols)
    same_as_prev = ordered[:, 1:] == ordered[:, :-1]
    # Ties that matter are between two masked-in cells: positions < count.
    if (same_as_prev & (pos[np.newaxis, 1:] < counts[:, np.newaxis])).any():
        starts_group = np.ones(ordered.shape, dtype=bool)
        starts_group[:, 1:] = ~same_as_prev
        ends_group = np.ones(ordered.shape, dtype=bool)
        ends_group[:, :-1] = starts_group[:, 1:]
        first = np.maximum.accumulate(np.where(starts_group, pos, 0), axis=1)
        last = np.minimum.accumulate(np.where(ends_group, pos, n_cols - 1)[:, ::-1], axis=1)[:, ::-1]
        sorted_ranks = (first + last) * 0.5 + 1.0
    else:
        sorted_ranks = np.broadcast_to(pos + 1.0, ordered.shape)
    ranks = np.empty_like(x)
    np.put_along_axis(ranks, order, sorted_ranks, axis=1)
    return ranks


def _row_corr(xc: Array, yc: Array, ok: NDArray[np.bool_]) -> Array:
    """Row-wise correlation of already centred, zero-masked rows; NaN where not `ok`."""
    cov = np.einsum("ij,ij->i", xc, yc)
    vx = np.einsum("ij,ij->i", xc, xc)
    vy = np.einsum("ij,ij->i", yc, yc)
    ok = ok & (vx > 0) & (vy > 0)
    out = np.full(xc.shape[0], np.nan)
    # sqrt(vx * vy), not sqrt(vx) * sqrt(vy): identical sides then correlate
    # exactly 1 (the square root of a rounded square is exact).
    out[ok] = np.clip(cov[ok] / np.sqrt(vx[ok] * vy[ok]), -1.0, 1.0)
    return out


def _scale_rows(c: Array) -> Array:
    """Divide each centred row by its largest magnitude (correlation is scale-free; no over/underflow)."""
    peak = np.abs(c).max(axis=1, keepdims=True)
    return c / np.where(peak > 0, peak, 1.0)


def _chunk_correlations(
    x: Array, y: Array, mask: NDArray[np.bool_], min_count: int, methods: tuple[ICMethod, ...]
) -> dict[ICMethod, Array]:
    counts = mask.sum(axis=1)
    ok = counts >= min_count
    out: dict[ICMethod, Array] = {}
    safe_counts = np.maximum(counts, 1)[:, np.newaxis]
    if "pearson" in methods:
        # A constant side is detected exactly (max == min), not by a variance
        # threshold: the float residue of a centred constant is not dispersion.
        p_ok = (
            ok
            & (np.where(mask, x, -np.inf).max(axis=1) > np.where(mask, x, np.inf).min(axis=1))
            & (np.where(mask, y, -np.inf).max(axis=1) > np.where(mask, y, np.inf).min(axis=1))
        )
        x0 = np.where(mask, x, 0.0)
        y0 = np.where(mask, y, 0.0)
        xc = _scale_rows(np.where(mask, x0 - x0.sum(axis=1, keepdims=True) / safe_counts, 0.0))
        yc = _scale_rows(np.where(mask, y0 - y0.sum(axis=1, keepdims=True) / safe_counts, 0.0))
        out["pearson"] = _row_corr(xc, yc, p_ok)
    if "spearman" in methods:
        # Average ranks keep the sum n(n+1)/2, so the mean rank is exact; a
        # constant side has every rank equal to it, hence exactly zero
        # dispersion, which `_row_corr` skips.
        mean_rank = (counts[:, np.newaxis] + 1.0) * 0.5
        rx = np.where(mask, _masked_average_ranks(x, mask, counts) - mean_rank, 0.0)
        ry = np.where(mask, _masked_average_ranks(y, mask, counts) - mean_rank, 0.0)
        out["spearman"] = _row_corr(rx, ry, ok)
    return out


def _map_row_chunks(
    shape: tuple[int, int], work: Callable[[int, int], T_], n_threads: int | None
) -> list[T_]:
    """`work(a, b)` over row chunks `[a, b)` of a `shape` matrix, in order; threaded when large."""
    n_rows, n_cols = shape
    step = max(1, _CHUNK_CELLS // max(n_cols, 1))
    bounds = [(a, min(a + step, n_rows)) for a in range(0, n_rows, step)]
    threads = _default_threads() if n_threads is None else _check_int(n_threads, "n_threads", 1)
    if threads > 1 and len(bounds) > 1 and n_rows * n_cols >= _PARALLEL_MIN_CELLS:
        with ThreadPoolExecutor(max_workers=min(threads, len(bounds))) as pool:
            return list(pool.map(lambda bound: work(*bound), bounds))
    return [work(a, b) for a, b in bounds]


def _row_correlations(
    x: Array,
    y: Array,
    *,
    min_count: int,
    methods: Iterable[ICMethod],
    n_threads: int | None = None,
) -> dict[ICMethod, Array]:
    """Per-row Pearson/Spearman correlations of two equally shaped matrices (NaN = missing)."""
    methods = tuple(dict.fromkeys(methods))
    out = {m: np.full(x.shape[0], np.nan) for m in methods}
    if x.size == 0:
        return out

    def work(a: int, b: int) -> None:
        xs, ys = x[a:b], y[a:b]
        mask = ~(np.isnan(xs) | np.isnan(ys))
        for method, values in _chunk_correlations(xs, ys, mask, min_count, methods).items():
            out[method][a:b] = values

    _map_row_chunks(x.shape, work, n_threads)
    return out


@dataclass
class _PairStats:
    """Sums over the (date, symbol) pairs with both values, accumulated chunk by chunk."""

    columns_with_data: NDArray[np.bool_]
    n_pairs: int = 0
    sum_abs: float = 0.0
    sum_sq: float = 0.0
    n_directional: int = 0
    n_hits: int = 0

    def add(self, other: _PairStats) -> None:
        self.columns_with_data = self.columns_with_data | other.columns_with_data
        self.n_pairs += other.n_pairs
        self.sum_abs += other.sum_abs
        self.sum_sq += other.sum_sq
        self.n_directional += other.n_directional
        self.n_hits += other.n_hits


def _panel_pass(
    x: Array, y: Array, *, min_count: int, methods: tuple[ICMethod, ...], n_threads: int | None
) -> tuple[_PairStats, dict[ICMethod, Array]]:
    """Pair statistics and per-row correlations (`methods`, possibly none) in one chunked pass."""
    series = {m: np.full(x.shape[0], np.nan) for m in methods}

    def work(a: int, b: int) -> _PairStats:
        xs, ys = x[a:b], y[a:b]
        mask = ~(np.isnan(xs) | np.isnan(ys))
        if methods:
            for method, values in _chunk_correlations(xs, ys, mask, min_count, methods).items():
                series[method][a:b] = values
        diff = np.where(mask, xs - ys, 0.0)
        directional = mask & (xs != 0) & (ys != 0)
        with np.errstate(over="ignore"):  # an overflowing sum reports rmse as undefined
            sum_sq = float(np.einsum("ij,ij->", diff, diff))
        return _PairStats(
            columns_with_data=np.asarray(mask.any(axis=0), dtype=bool),
            n_pairs=int(mask.sum()),
            sum_abs=float(np.abs(diff).sum()),
            sum_sq=sum_sq,
            n_directional=int(directional.sum()),
            n_hits=int((directional & ((xs > 0) == (ys > 0))).sum()),
        )

    total = _PairStats(columns_with_data=np.zeros(x.shape[1], dtype=bool))
    if x.size:
        for part in _map_row_chunks(x.shape, work, n_threads):
            total.add(part)
    return total, series


def ic_series(
    predictions: ArrayLike,
    labels: ArrayLike,
    method: ICMethod = "spearman",
    *,
    min_symbols: int = 2,
    n_threads: int | None = None,
) -> Array:
    """Per-date cross-sectional IC, shape `(T,)`, NaN on skipped dates.

    `method="spearman"` gives `RankIC_t` (Pearson correlation of average
    ranks, as `scipy.stats.spearmanr`), `"pearson"` gives `IC_t`. A date is
    skipped (NaN) when fewer than `min_symbols` symbols have both a prediction
    and a label, or when either side is constant across those symbols.
    `n_threads` caps the worker threads for large panels (default: the CPUs
    available, at most 8).
    """
    if method not in _METHODS:
        raise InvalidArgument(f"must be one of {list(_METHODS)}, got {method!r}", field="method")
    x = _as_matrix(predictions, "predictions")
    y = _as_matrix(labels, "labels")
    if x.shape != y.shape:
        raise InvalidArgument(f"shape {y.shape} differs from predictions {x.shape}", field="labels")
    min_symbols = _check_int(min_symbols, "min_symbols", 2)
    return _row_correlations(x, y, min_count=min_symbols, methods=(method,), n_threads=n_threads)[method]


def _ic_mean(series: Array, name: str, b: _Builder, undefined_reason: str) -> int:
    """Mean of an IC series (NaN = skipped) into `name`; returns how many entries were defined."""
    valid = series[~np.isnan(series)]
    if valid.size:
        b.put(name, float(valid.mean()))
    else:
        b.put(name, None, undefined_reason)
    return int(valid.size)


def _icir(series: Array, what: str, b: _Builder) -> None:
    valid = series[~np.isnan(series)]
    if valid.size < 2:
        reason = f"fewer than 2 {what}s with a defined IC"
        b.put("icir", None, reason)
        b.put("ic_tstat", None, reason)
        return
    if valid.max() == valid.min():
        b.put("icir", None, f"zero variance of the {what} rank IC")
        b.put("ic_tstat", None, f"zero variance of the {what} rank IC")
        return
    icir = float(valid.mean() / valid.std(ddof=1))
    b.put("icir", icir)
    b.put("ic_tstat", icir * float(np.sqrt(valid.size)))


def ml_metrics(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    min_symbols: int = 2,
    ts_block: int = 21,
    n_threads: int | None = None,
) -> MetricSet:
    """IC, ICIR, error and hit-rate metrics of `predictions` against `labels` (both `(T, N)`, NaN = missing).

    Values: `ic_spearman`, `ic_pearson`, `icir`, `ic_tstat`, `mae`, `rmse`,
    `hit_rate`, `n_dates`, `n_pairs` (and `n_blocks` in time-series mode).
    See the module docstring for the exact conventions; `conventions["ic_mode"]`
    is `"cross_sectional"` or `"time_series"`.
    """
    x = _as_matrix(predictions, "predictions")
    y = _as_matrix(labels, "labels")
    if x.shape != y.shape:
        raise InvalidArgument(f"shape {y.shape} differs from predictions {x.shape}", field="labels")
    min_symbols = _check_int(min_symbols, "min_symbols", 2)
    ts_block = _check_int(ts_block, "ts_block", 2)
    n_dates_total, n_symbols = x.shape

    # One pass computes the pair statistics and, for a multi-symbol panel, the
    # per-date ICs (wasted only when a single column turns out to hold data).
    stats, series = _panel_pass(
        x, y, min_count=min_symbols, methods=_METHODS if n_symbols > 1 else (), n_threads=n_threads
    )
    n_pairs = stats.n_pairs
    b = _Builder()

    symbols_with_data = np.flatnonzero(stats.columns_with_data)
    ic_mode = "time_series" if n_symbols == 1 or symbols_with_data.size == 1 else "cross_sectional"
    if ic_mode == "cross_sectional":
        why = (
            f"no date with at least {min_symbols} symbols having both values "
            "and non-constant predictions and labels"
        )
        n_dates = _ic_mean(series["spearman"], "ic_spearman", b, why)
        _ic_mean(series["pearson"], "ic_pearson", b, why)
        _icir(series["spearman"], "date", b)
        b.put("n_dates", n_dates)
    else:
        col = int(symbols_with_data[0]) if symbols_with_data.size else 0
        xs, ys = x[:, col], y[:, col]
        whole = _row_correlations(
            xs[np.newaxis, :], ys[np.newaxis, :], min_count=min_symbols, methods=_METHODS, n_threads=1
        )
        why = f"fewer than {min_symbols} dates with both values, or constant predictions or labels"
        _ic_mean(whole["spearman"], "ic_spearman", b, why)
        _ic_mean(whole["pearson"], "ic_pearson", b, why)
        n_blocks_total = n_dates_total // ts_block
        span = n_blocks_total * ts_block
        blocks = _row_correlations(
            xs[:span].reshape(n_blocks_total, ts_block),
            ys[:span].reshape(n_blocks_total, ts_block),
            min_count=min_symbols,
            methods=("spearman",),
            n_threads=1,
        )["spearman"]
        _icir(blocks, f"{ts_block}-bar block", b)
        b.put("n_dates", int((~(np.isnan(xs) | np.isnan(ys))).sum()))
        b.put("n_blocks", int((~np.isnan(blocks)).sum()))

    if n_pairs:
        with np.errstate(over="ignore"):
            b.put("mae", stats.sum_abs / n_pairs)
            b.put("rmse", float(np.sqrt(np.float64(stats.sum_sq) / n_pairs)))
    else:
        b.put("mae", None, "no (date, symbol) pair with both a prediction and a label")
        b.put("rmse", None, "no (date, symbol) pair with both a prediction and a label")

    if stats.n_directional:
        b.put("hit_rate", stats.n_hits / stats.n_directional)
    else:
        b.put("hit_rate", None, "no pair with both prediction and label non-zero")
    b.put("n_pairs", n_pairs)

    conventions: dict[str, Any] = {
        "ic_mode": ic_mode,
        "min_symbols": min_symbols,
        "ts_block": ts_block,
        "rank_ties": "average",
        "icir_ddof": 1,
        "icir_annualized": False,
        "hit_rate_excludes_zeros": True,
        "n_symbols": n_symbols,
        "n_dates_total": n_dates_total,
    }
    return b.build(conventions)
