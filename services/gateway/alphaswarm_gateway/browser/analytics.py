"""What the run page draws, computed from a run's backtest record and prediction audit (NumPy).

Every function is pure: arrays in, arrays out. Conventions (docs/metrics.md):

* the audit holds, per (date t, symbol), the prediction formed at t, the label it earned
  (`realized_return`: `close[t+lag+h] / close[t+lag] - 1`), the target and held weights and
  the position's P&L contribution;
* IC / Rank IC per date: Pearson / Spearman correlation across the symbols having both a
  prediction and a label (average ranks for ties); dates with fewer than two such symbols, or a
  constant side, are skipped (NaN);
* IC decay at horizon k: the same correlation against the k-bar forward return compounded from
  the one-bar labels (needs horizon 1);
* decile returns: each date, symbols are split in ten groups by prediction rank; a decile's
  return is the mean label of its symbols (gross). Net subtracts `(fees + slippage) x turnover`
  of the equal-weight decile portfolio rebalanced every bar;
* buy-and-hold of the universe: equal initial amounts in every symbol, never rebalanced;
* long series are downsampled for drawing (`minmax_indices`, `bucket_means`), never for the
  statistics themselves.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "Audit",
    "audit_from_arrays",
    "bucket_means",
    "buy_and_hold",
    "cross_sectional_ic",
    "decile_returns",
    "exposure",
    "forward_returns",
    "minmax_indices",
    "monthly_returns",
    "rolling_sharpe",
    "top_weights",
]

_CHUNK = 512  # rows per block in the row-wise statistics (bounds the temporaries)


@dataclass
class Audit:
    """A run's prediction audit as (dates x symbols) matrices, NaN where absent."""

    dates: list[str]
    symbols: list[str]
    prediction: np.ndarray
    realized: np.ndarray
    target: np.ndarray
    held: np.ndarray
    pnl: np.ndarray

    FIELDS = ("prediction", "realized", "target", "held", "pnl")

    @property
    def nbytes(self) -> int:
        return int(sum(getattr(self, f).nbytes for f in self.FIELDS))


def audit_from_arrays(dates: Sequence[str], symbols: Sequence[str], fields: dict[str, np.ndarray]) -> Audit:
    """The audit as the store gives it back (PersistenceService.StreamPredictionAudit) from the
    (dates x symbols) matrices a run saves: only the cells with a prediction are kept, so the
    dates and symbols without one drop out, the symbols sorted, the values as float32.

    `fields` maps each of `Audit.FIELDS` to its matrix."""
    pred = np.asarray(fields["prediction"], dtype=np.float64)
    present = ~np.isnan(pred)
    rows = np.flatnonzero(present.any(axis=1))
    kept = [i for i in np.flatnonzero(present.any(axis=0)).tolist()]
    kept.sort(key=lambda i: str(symbols[i]))
    cols = np.asarray(kept, dtype=np.int64)
    mask = present[np.ix_(rows, cols)]
    mats = {
        f: np.where(mask, np.asarray(fields[f], dtype=np.float64)[np.ix_(rows, cols)], np.nan).astype(
            np.float32
        )
        for f in Audit.FIELDS
    }
    return Audit(
        dates=[str(dates[i]) for i in rows.tolist()], symbols=[str(symbols[i]) for i in kept], **mats
    )


# ---------------------------------------------------------------------------------- drawing


def minmax_indices(values: np.ndarray, points: int) -> np.ndarray:
    """Indices that keep the shape of a long series in about `points` points: per bucket its first,
    minimum and maximum (so peaks and troughs survive), plus the last point; all when short."""
    n = int(values.shape[0])
    if points <= 0 or n <= points:
        return np.arange(n)
    buckets = max(1, points // 3)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep = [np.array([0, n - 1])]
    filled = np.where(np.isfinite(values), values, np.nan)
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            continue
        seg = filled[lo:hi]
        keep.append(np.array([lo]))
        if np.isfinite(seg).any():
            keep.append(np.array([lo + int(np.nanargmin(seg)), lo + int(np.nanargmax(seg))]))
    return np.unique(np.concatenate(keep))


def bucket_means(values: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """(index of each bucket's last element, NaN-mean of the bucket) for a bar series; the series
    itself when it has at most `points` values."""
    n = int(values.shape[0])
    if points <= 0 or n <= points:
        return np.arange(n), values.astype(np.float64)
    edges = np.linspace(0, n, points + 1).astype(np.int64)
    idx, means = [], []
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            continue
        seg = values[lo:hi]
        idx.append(hi - 1)
        means.append(float(np.nanmean(seg)) if np.isfinite(seg).any() else math.nan)
    return np.asarray(idx), np.asarray(means)


# ---------------------------------------------------------------------------------- returns


def rolling_sharpe(returns: np.ndarray, window: int, periods_per_year: float, rf: float = 0.0) -> np.ndarray:
    """Annualised Sharpe ratio over the trailing `window` bars (NaN before a full window, or when the
    window's standard deviation is 0); empyrical's `roll_sharpe_ratio` convention (ddof=1)."""
    r = pd.Series(np.asarray(returns, dtype=np.float64) - rf / periods_per_year)
    roll = r.rolling(window, min_periods=window)
    std = roll.std(ddof=1)
    out = roll.mean() / std.where(std > 0) * math.sqrt(periods_per_year)
    return out.to_numpy()


def monthly_returns(dates: Sequence[str], returns: np.ndarray) -> list[dict[str, float | int]]:
    """Compounded return of each calendar month: `[{year, month, ret}]` in date order."""
    if not len(dates):
        return []
    s = pd.Series(np.asarray(returns, dtype=np.float64), index=pd.to_datetime(list(dates)))
    grouped = (1.0 + s.fillna(0.0)).groupby([s.index.year, s.index.month]).prod() - 1.0
    return [{"year": int(y), "month": int(m), "ret": float(v)} for (y, m), v in grouped.items()]


def buy_and_hold(asset_returns: np.ndarray) -> np.ndarray:
    """Growth of 1 of equal initial amounts in every column, never rebalanced (NaN return = 0)."""
    r = np.nan_to_num(np.asarray(asset_returns, dtype=np.float64), nan=0.0)
    if r.ndim == 1:
        r = r[:, None]
    growth = np.cumprod(1.0 + r, axis=0)
    return np.asarray(growth.mean(axis=1))


# ---------------------------------------------------------------------------------- predictions


def _row_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of `a` with the same row of `b` over the finite pairs."""
    mask = np.isfinite(a) & np.isfinite(b)
    n = mask.sum(axis=1)
    safe_n = np.maximum(n, 1)
    a0 = np.where(mask, a, 0.0)
    b0 = np.where(mask, b, 0.0)
    da = np.where(mask, a0 - (a0.sum(axis=1) / safe_n)[:, None], 0.0)
    db = np.where(mask, b0 - (b0.sum(axis=1) / safe_n)[:, None], 0.0)
    va = (da * da).sum(axis=1)
    vb = (db * db).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (da * db).sum(axis=1) / np.sqrt(va * vb)
    scale_a = np.maximum(np.abs(a0).max(axis=1, initial=0.0), 1.0) ** 2
    scale_b = np.maximum(np.abs(b0).max(axis=1, initial=0.0), 1.0) ** 2
    constant = (va <= 1e-24 * scale_a * safe_n) | (vb <= 1e-24 * scale_b * safe_n)
    out[(n < 2) | constant] = np.nan
    return np.asarray(out)


def _pair_ranks(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = np.isfinite(a) & np.isfinite(b)
    ra = pd.DataFrame(np.where(mask, a, np.nan)).rank(axis=1, method="average").to_numpy()
    rb = pd.DataFrame(np.where(mask, b, np.nan)).rank(axis=1, method="average").to_numpy()
    return ra, rb


def cross_sectional_ic(prediction: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IC, Rank IC) per date (row): Pearson and Spearman across symbols; NaN on skipped dates."""
    t = prediction.shape[0]
    ic = np.full(t, np.nan)
    rank_ic = np.full(t, np.nan)
    for lo in range(0, t, _CHUNK):
        a = np.asarray(prediction[lo : lo + _CHUNK], dtype=np.float64)
        b = np.asarray(label[lo : lo + _CHUNK], dtype=np.float64)
        ic[lo : lo + a.shape[0]] = _row_corr(a, b)
        ra, rb = _pair_ranks(a, b)
        rank_ic[lo : lo + a.shape[0]] = _row_corr(ra, rb)
    return ic, rank_ic


def forward_returns(one_bar: np.ndarray, k: int) -> np.ndarray:
    """The k-bar return from each row, compounded from one-bar returns (NaN when any is missing
    or the window runs past the end)."""
    r = np.asarray(one_bar, dtype=np.float64)
    if k == 1:
        return r.copy()
    log = np.log1p(r)
    csum = np.vstack([np.zeros((1, r.shape[1])), np.cumsum(np.nan_to_num(log, nan=0.0), axis=0)])
    bad = np.vstack([np.zeros((1, r.shape[1])), np.cumsum(~np.isfinite(log), axis=0)])
    t = r.shape[0]
    out = np.full_like(r, np.nan)
    if t >= k:
        total = csum[k:] - csum[:-k]
        missing = bad[k:] - bad[:-k]
        out[: t - k + 1] = np.where(missing == 0, np.expm1(total), np.nan)
    return out


def _deciles(prediction: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The decile (0..9, -1 for none) of each (date, symbol) by prediction rank among the pairs."""
    mask = np.isfinite(prediction) & np.isfinite(label)
    ranks = pd.DataFrame(np.where(mask, prediction, np.nan)).rank(axis=1, method="first").to_numpy()
    n = mask.sum(axis=1)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        dec = np.floor((ranks - 1.0) * 10.0 / n)
    dec = np.where(mask & (n >= 10), np.clip(dec, 0, 9), -1)
    return dec.astype(np.int8)


def decile_returns(
    prediction: np.ndarray, label: np.ndarray, cost_rate: float
) -> tuple[list[float | None], list[float | None], list[float | None]]:
    """(gross, net, turnover) mean per bar of the ten prediction deciles, lowest first."""
    t = prediction.shape[0]
    gross_sum = np.zeros(10)
    net_sum = np.zeros(10)
    turn_sum = np.zeros(10)
    count = np.zeros(10)
    prev_w: list[np.ndarray | None] = [None] * 10
    for lo in range(0, t, _CHUNK):
        p = np.asarray(prediction[lo : lo + _CHUNK], dtype=np.float64)
        y = np.asarray(label[lo : lo + _CHUNK], dtype=np.float64)
        dec = _deciles(p, y)
        y0 = np.nan_to_num(y, nan=0.0)
        for d in range(10):
            member = dec == d
            size = member.sum(axis=1)
            w = np.where(member, 1.0 / np.maximum(size, 1)[:, None], 0.0)
            last = prev_w[d]
            first = last if last is not None else np.zeros((1, w.shape[1]))
            before = np.vstack([first, w[:-1]])
            turnover = np.abs(w - before).sum(axis=1)
            prev_w[d] = w[-1:]
            ok = size > 0
            g = (w * y0).sum(axis=1)
            gross_sum[d] += g[ok].sum()
            net_sum[d] += (g - cost_rate * turnover)[ok].sum()
            turn_sum[d] += turnover[ok].sum()
            count[d] += ok.sum()

    def mean(x: np.ndarray) -> list[float | None]:
        return [float(v / c) if c else None for v, c in zip(x, count, strict=True)]

    return mean(gross_sum), mean(net_sum), mean(turn_sum)


def exposure(held: np.ndarray) -> dict[str, np.ndarray]:
    """Per date: gross (sum |w|), net, long and short exposure and the number of positions."""
    w = np.nan_to_num(np.asarray(held, dtype=np.float64), nan=0.0)
    return {
        "gross": np.abs(w).sum(axis=1),
        "net": w.sum(axis=1),
        "long": np.where(w > 0, w, 0.0).sum(axis=1),
        "short": np.where(w < 0, w, 0.0).sum(axis=1),
        "n_positions": (np.abs(w) > 1e-12).sum(axis=1).astype(np.float64),
    }


def top_weights(held: np.ndarray, symbols: Sequence[str], k: int) -> list[tuple[str, np.ndarray]]:
    """The `k` symbols with the largest mean |held weight|, with their weight series (0 when absent)."""
    w = np.nan_to_num(np.asarray(held, dtype=np.float64), nan=0.0)
    if not w.size:
        return []
    score = np.abs(w).mean(axis=0)
    order = [int(i) for i in np.argsort(-score, kind="stable")[:k] if score[i] > 0]
    return [(symbols[i], w[:, i]) for i in order]
