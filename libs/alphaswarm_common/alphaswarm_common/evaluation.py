"""Evaluation of a prediction matrix beyond the headline ML metrics: IC decay, quantile returns,
a long-short curve, feature importances and plots.

Pure computation (NumPy, pandas-free, SciPy-free; matplotlib with the Agg
backend, imported only to draw): no MLflow, no gRPC. The trainer logs what
these functions return on its MLflow run `train`.

Timing (METRICS.md): predictions are formed at the close of t; the return a
decision at t earns over `h` bars is `close[t+lag+h] / close[t+lag] - 1`
(`forward_returns`). Every function takes the predictions of some rows of a
panel (`rows` index the panel's dates) and the panel's full `close`, so
forward returns of the last rows can reach past the evaluated segment when
the data has the bars (their labels are NaN otherwise, as in training).

- **IC decay** (`ic_decay`): for each horizon `h` in `IC_DECAY_HORIZONS`
  (1, 5, 10, 20 bars), the mean per-date Spearman IC (`RankIC_t` of
  `docs/metrics.md`: average ranks, dates with fewer than 2 pairs or a
  constant side skipped) of the prediction against the h-bar forward return.
  How fast it decays says how long a prediction stays useful.
- **Quantile returns** (`quantile_returns`), as alphalens computes them:
  per date, the symbols with both a prediction and a forward return are cut
  into `quantiles` equal-count buckets exactly as `pandas.qcut(x, q,
  labels=False) + 1` (linear-interpolated quantile edges, right-closed bins,
  the lowest value included in bucket 1); a date whose edges are not unique
  (`qcut` would raise: heavy ties, too few names) is skipped and counted.
  With `demeaned=True` (alphalens' default) each forward return first loses
  its date's mean over those symbols. The mean per bucket pools every
  (date, symbol) of the bucket (alphalens' `mean_return_by_quantile(...,
  by_date=False)`), and `top_minus_bottom` is bucket q minus bucket 1
  (`compute_mean_returns_spread`). Returns are h-bar returns, not rescaled
  to one bar.
- **Long-short curve** (`long_short_curve`): per date, long the top and
  short the bottom bucket of `quantiles=5` (top quintile), equally weighted,
  half of the equity per side (gross exposure 1, dollar neutral), earning
  the 1-bar return of the decision (`close[t+lag+1] / close[t+lag] - 1`),
  rebalanced every bar, gross of costs. `equity = cumprod(1 + r)` (starting
  at 1), `drawdown = equity / running max - 1` (the initial 1 counts as a
  peak); its metrics are `trading_metrics` (empyrical conventions,
  `periods_per_year` 252) of `r`. This is a diagnostic of the ranking, not
  the backtest (which trades `strategy_cfg` with costs).
- **Feature importances** (`feature_importance`): a linear model's `coef_`
  (after the pipeline's `StandardScaler`, so per one training standard
  deviation of the feature), a tree ensemble's `feature_importances_` (mean
  decrease in impurity), otherwise permutation importance on the given rows
  (the valid segment): the mean increase of the mean squared error when one
  column is shuffled, over `n_repeats` shuffles, on at most `max_rows` rows
  sampled without replacement, all drawn from `numpy.random.default_rng(seed)`.
- **Plots** (`render_plots`): PNG bytes of the cumulative RankIC, the
  RankIC histogram, the quantile mean returns and the long-short equity curve
  with its drawdown. The two return charts say "gross of costs" in their
  title: they are diagnostics of the ranking, not the traded result. Each
  PNG carries its titles in its `Title` text chunk. Drawn on
  `matplotlib.figure.Figure` with the Agg canvas
  (no pyplot state: safe in threads and servers).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.labels import make_labels
from alphaswarm_common.metrics import MetricSet, ic_series, trading_metrics

__all__ = [
    "IC_DECAY_HORIZONS",
    "EvaluationReport",
    "LongShortCurve",
    "QuantileReturns",
    "evaluate_predictions",
    "feature_importance",
    "forward_returns",
    "ic_decay",
    "json_safe",
    "long_short_curve",
    "qcut_buckets",
    "quantile_returns",
    "render_plots",
]

IC_DECAY_HORIZONS: tuple[int, ...] = (1, 5, 10, 20)
_BUCKET_CELLS = 1 << 22  # (rows x symbols x edges) comparisons per step of qcut_buckets


# --------------------------------------------------------------------------- inputs


def _matrix(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InvalidArgument(f"{name} must be a (dates, symbols) matrix, got shape {arr.shape}", field=name)
    return arr


def _rows(rows: Any, n_rows: int, n_pred: int) -> np.ndarray:
    idx = np.arange(n_rows) if rows is None else np.asarray(rows, dtype=np.intp)
    if idx.ndim != 1 or idx.size != n_pred:
        raise InvalidArgument(
            f"rows must index the {n_pred} prediction rows, got shape {idx.shape}", field="rows"
        )
    if idx.size and (idx.min() < 0 or idx.max() >= n_rows):
        raise InvalidArgument(f"rows must lie in 0..{n_rows - 1}", field="rows")
    return idx


def forward_returns(close: Any, horizon: int, execution_lag: int = 1) -> np.ndarray:
    """`close[t+lag+h] / close[t+lag] - 1` for every row t (NaN where a bar is missing); see METRICS.md."""
    return make_labels(_matrix(close, "close"), horizon, execution_lag, "raw")


# --------------------------------------------------------------------------- IC decay


def ic_decay(
    predictions: Any,
    close: Any,
    *,
    rows: Any = None,
    execution_lag: int = 1,
    horizons: Sequence[int] = IC_DECAY_HORIZONS,
) -> dict[int, tuple[float | None, int]]:
    """`{h: (mean RankIC against the h-bar forward return, dates with an IC)}`; None when no date has one.

    `predictions` is `(R, N)` for the panel rows `rows` (default: all rows
    of `close`, `(T, N)`).
    """
    pred = _matrix(predictions, "predictions")
    px = _matrix(close, "close")
    idx = _rows(rows, px.shape[0], pred.shape[0])
    out: dict[int, tuple[float | None, int]] = {}
    for h in horizons:
        fwd = forward_returns(px, int(h), execution_lag)[idx]
        series = ic_series(pred, fwd, "spearman")
        valid = series[~np.isnan(series)]
        out[int(h)] = (float(valid.mean()) if valid.size else None, int(valid.size))
    return out


# --------------------------------------------------------------------------- quantiles


def _qcut_levels(quantiles: int) -> np.ndarray:
    """pandas' `qcut` levels: `linspace(0, 1, q+1)`, rounded up where not representable in base 2."""
    levels = np.linspace(0.0, 1.0, quantiles + 1)
    np.putmask(levels, quantiles * levels != np.arange(quantiles + 1), np.nextafter(levels, 1))
    return levels


def qcut_buckets(values: Any, quantiles: int = 10, *, mask: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-row equal-count buckets `1..quantiles` (NaN outside `mask`), as `pandas.qcut(row, q, labels=False) + 1`.

    Returns `(buckets, skipped)`: `buckets` is float `(R, N)`; `skipped[r]`
    is True for a row with values whose quantile edges are not unique (where
    `pandas.qcut` raises), whose buckets are all NaN. Rows are grouped by
    their number of values so that each group's edges come from one
    `numpy.quantile(..., method="linear")` call, the arithmetic of pandas.
    """
    if isinstance(quantiles, bool) or not isinstance(quantiles, int | np.integer) or quantiles < 1:
        raise InvalidArgument(f"quantiles must be an integer >= 1, got {quantiles!r}", field="quantiles")
    x = _matrix(values, "values")
    ok = np.isfinite(x) if mask is None else (np.asarray(mask, dtype=bool) & np.isfinite(x))
    counts = ok.sum(axis=1)
    buckets = np.full(x.shape, np.nan)
    skipped = np.zeros(x.shape[0], dtype=bool)
    levels = _qcut_levels(int(quantiles))
    keyed = np.where(ok, x, np.inf)
    for n in np.unique(counts):
        if n == 0:
            continue
        group = np.flatnonzero(counts == n)
        ordered = np.sort(keyed[group], axis=1)[:, :n]  # the n values of each row, ascending
        edges = np.quantile(ordered, levels, axis=1, method="linear").T  # (g, q+1)
        unique = (np.diff(edges, axis=1) > 0).all(axis=1)
        skipped[group[~unique]] = True
        good = group[unique]
        if not good.size:
            continue
        step = max(1, _BUCKET_CELLS // max(1, x.shape[1] * (quantiles + 1)))
        for a in range(0, good.size, step):
            rows = good[a : a + step]
            e = edges[unique][a : a + step]
            sub = x[rows]
            below = (e[:, None, :] < sub[:, :, None]).sum(axis=2)  # searchsorted(edges, x, side="left")
            b = np.maximum(below - 1, 0) + 1.0  # right-closed bins, the lowest value in bucket 1
            b[~ok[rows]] = np.nan
            buckets[rows] = b
    return buckets, skipped


@dataclass(frozen=True)
class QuantileReturns:
    """Mean forward return per prediction bucket (alphalens' `mean_return_by_quantile`, pooled)."""

    quantiles: int
    mean: np.ndarray  # (q,) NaN for an empty bucket
    count: np.ndarray  # (q,) (date, symbol) pairs per bucket
    top_minus_bottom: float | None
    demeaned: bool
    horizon: int
    n_dates: int
    n_dates_skipped: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantiles": self.quantiles,
            "mean_return": [None if not math.isfinite(v) else float(v) for v in self.mean],
            "count": [int(c) for c in self.count],
            "top_minus_bottom": self.top_minus_bottom,
            "demeaned": self.demeaned,
            "horizon": self.horizon,
            "n_dates": self.n_dates,
            "n_dates_skipped": self.n_dates_skipped,
        }


def quantile_returns(
    predictions: Any, forward: Any, *, quantiles: int = 10, demeaned: bool = True, horizon: int = 1
) -> QuantileReturns:
    """Bucket means of `forward` by per-date prediction quantile (see the module docstring).

    `predictions` and `forward` are `(R, N)` and aligned; only pairs with
    both values take part (alphalens drops the others before quantizing).
    `horizon` is recorded, not used.
    """
    pred = _matrix(predictions, "predictions")
    fwd = _matrix(forward, "forward")
    if pred.shape != fwd.shape:
        raise InvalidArgument(f"forward has shape {fwd.shape}, predictions {pred.shape}", field="forward")
    both = np.isfinite(pred) & np.isfinite(fwd)
    buckets, skipped = qcut_buckets(pred, quantiles, mask=both)
    ret = np.where(both, fwd, np.nan)
    if demeaned:
        n = both.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            ret = ret - np.where(
                n > 0, np.nansum(np.where(both, ret, 0.0), axis=1, keepdims=True) / n, np.nan
            )
    used = ~np.isnan(buckets)
    ids = buckets[used].astype(np.intp) - 1
    vals = ret[used]
    count = np.bincount(ids, minlength=quantiles).astype(np.int64)
    total = np.bincount(ids, weights=vals, minlength=quantiles)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    spread = float(mean[-1] - mean[0]) if count[0] and count[-1] else None
    n_dates = int(used.any(axis=1).sum())
    return QuantileReturns(
        int(quantiles), mean, count, spread, bool(demeaned), int(horizon), n_dates, int(skipped.sum())
    )


# --------------------------------------------------------------------------- long-short curve


@dataclass(frozen=True)
class LongShortCurve:
    """Per-date returns, equity and drawdown of the top-minus-bottom quantile portfolio."""

    dates: np.ndarray
    returns: np.ndarray  # NaN-free: a date without both sides earns 0 (flat)
    equity: np.ndarray
    drawdown: np.ndarray
    metrics: MetricSet
    quantiles: int


def long_short_curve(
    predictions: Any,
    forward_1: Any,
    dates: Any,
    *,
    quantiles: int = 5,
    periods_per_year: float = 252.0,
) -> LongShortCurve:
    """Long the top, short the bottom `quantiles` bucket per date (gross 1), on the 1-bar forward return.

    A date where either side is empty, or whose buckets are skipped, is flat (return 0).
    """
    pred = _matrix(predictions, "predictions")
    fwd = _matrix(forward_1, "forward_1")
    if pred.shape != fwd.shape:
        raise InvalidArgument(f"forward_1 has shape {fwd.shape}, predictions {pred.shape}", field="forward_1")
    both = np.isfinite(pred) & np.isfinite(fwd)
    buckets, _ = qcut_buckets(pred, quantiles, mask=both)
    top = buckets == quantiles
    bottom = buckets == 1
    n_top, n_bottom = top.sum(axis=1), bottom.sum(axis=1)
    f0 = np.where(both, fwd, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        long_leg = (f0 * top).sum(axis=1) / np.maximum(n_top, 1)
        short_leg = (f0 * bottom).sum(axis=1) / np.maximum(n_bottom, 1)
    active = (n_top > 0) & (n_bottom > 0)
    returns = np.where(active, 0.5 * (long_leg - short_leg), 0.0)
    equity = np.cumprod(1.0 + returns)
    peak = np.maximum.accumulate(np.maximum(equity, 1.0))
    drawdown = equity / peak - 1.0
    metrics = trading_metrics(returns, periods_per_year=periods_per_year) if returns.size else MetricSet({})
    return LongShortCurve(np.asarray(dates), returns, equity, drawdown, metrics, int(quantiles))


# --------------------------------------------------------------------------- feature importance


def _final_estimator(model: Any) -> tuple[Any, bool]:
    steps = getattr(model, "steps", None)
    if steps:
        scaled = any(type(step).__name__ == "StandardScaler" for _, step in steps[:-1])
        return steps[-1][1], scaled
    return model, False


def feature_importance(
    model: Any,
    feature_names: Sequence[str],
    x: Any = None,
    y: Any = None,
    *,
    seed: int = 0,
    max_rows: int = 20_000,
    n_repeats: int = 5,
) -> dict[str, Any]:
    """Importances of a fitted model: `{"method", "importances": {name: value}, "std"?, "conventions"}`.

    `method` is `"coef"` (linear: `coef_`, signed), `"impurity"` (trees:
    `feature_importances_`, summing to 1), `"permutation"` (anything else,
    on `x`, `y`: the valid rows), or `"none"` when permutation is needed but
    no rows were given (with a `reason`). Names are ordered by decreasing
    absolute importance.
    """
    names = [str(n) for n in feature_names]
    est, scaled = _final_estimator(model)
    conventions: dict[str, Any] = {}
    std: np.ndarray | None = None
    coef = getattr(est, "coef_", None)
    impurity = getattr(est, "feature_importances_", None) if coef is None else None
    if coef is not None:
        values = np.asarray(coef, dtype=np.float64).ravel()
        method = "coef"
        conventions["scale"] = "per training standard deviation" if scaled else "per unit of the feature"
    elif impurity is not None:
        values = np.asarray(impurity, dtype=np.float64).ravel()
        method = "impurity"
        conventions["scale"] = "mean decrease in impurity, normalised to sum 1"
    else:
        if x is None or y is None or len(y) == 0:
            return {
                "method": "none",
                "importances": {},
                "reason": "the model has neither coef_ nor feature_importances_ and no rows were given",
                "conventions": {},
            }
        values, std, n_used = _permutation(model, np.asarray(x), np.asarray(y), seed, max_rows, n_repeats)
        method = "permutation"
        conventions.update(
            {"score": "mean squared error increase", "seed": seed, "n_repeats": n_repeats, "n_rows": n_used}
        )
    if values.size != len(names):
        raise InvalidArgument(
            f"the model has {values.size} importances for {len(names)} features", field="feature_names"
        )
    order = np.argsort(-np.abs(values), kind="stable")
    out: dict[str, Any] = {
        "method": method,
        "importances": {names[i]: float(values[i]) for i in order},
        "conventions": conventions,
    }
    if std is not None:
        out["std"] = {names[i]: float(std[i]) for i in order}
    return out


def _permutation(
    model: Any, x: np.ndarray, y: np.ndarray, seed: int, max_rows: int, n_repeats: int
) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(y) > max_rows:
        pick = np.sort(rng.choice(len(y), size=max_rows, replace=False))
        x, y = x[pick], y[pick]
    n, f = x.shape
    base = float(np.mean((np.asarray(model.predict(x)) - y) ** 2))
    mean = np.empty(f)
    std = np.empty(f)
    stacked = np.tile(x, (n_repeats, 1))
    y_rep = np.tile(y, n_repeats)
    for j in range(f):
        perms = np.concatenate([rng.permutation(n) for _ in range(n_repeats)])
        col = stacked[:, j].copy()
        stacked[:, j] = x[perms, j]
        err = (np.asarray(model.predict(stacked)) - y_rep) ** 2
        scores = err.reshape(n_repeats, n).mean(axis=1) - base
        mean[j], std[j] = scores.mean(), scores.std()
        stacked[:, j] = col
    return mean, std, n


# --------------------------------------------------------------------------- the report


@dataclass
class EvaluationReport:
    """Everything `evaluate_predictions` found on one segment."""

    dates: np.ndarray
    rank_ic: np.ndarray  # per-date RankIC against the label horizon's forward return (NaN = skipped)
    ic_decay: dict[int, tuple[float | None, int]]
    quantiles: QuantileReturns
    long_short: LongShortCurve
    execution_lag: int
    horizon: int
    conventions: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, float | None]:
        """Flat scalar metrics: `ic_decay_<h>`, `top_minus_bottom`, `q<k>_mean_return`, `ls_*`."""
        out: dict[str, float | None] = {f"ic_decay_{h}": v for h, (v, _) in self.ic_decay.items()}
        out["top_minus_bottom"] = self.quantiles.top_minus_bottom
        for k, v in enumerate(self.quantiles.mean, start=1):
            out[f"q{k:02d}_mean_return"] = float(v) if math.isfinite(v) else None
        for name in ("sharpe", "annualized_return", "max_drawdown", "volatility"):
            out[f"ls_{name}"] = self.long_short.metrics.get(name)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A strict-JSON summary (no per-date series)."""
        valid = self.rank_ic[~np.isnan(self.rank_ic)]
        ic_std = float(valid.std(ddof=1)) if valid.size > 1 else None
        return {
            "execution_lag": self.execution_lag,
            "horizon": self.horizon,
            "n_dates": int(self.dates.size),
            "first_date": str(self.dates[0]) if self.dates.size else None,
            "last_date": str(self.dates[-1]) if self.dates.size else None,
            "rank_ic": {
                "mean": float(valid.mean()) if valid.size else None,
                "std": ic_std,
                "n_dates": int(valid.size),
                "t_stat": float(valid.mean() / ic_std * math.sqrt(valid.size)) if ic_std else None,
                "positive_share": float((valid > 0).mean()) if valid.size else None,
            },
            "ic_decay": {str(h): {"rank_ic": v, "n_dates": n} for h, (v, n) in sorted(self.ic_decay.items())},
            "quantile_returns": self.quantiles.to_dict(),
            "long_short": {
                "quantiles": self.long_short.quantiles,
                "final_equity": float(self.long_short.equity[-1]) if self.long_short.equity.size else None,
                "metrics": self.long_short.metrics.to_dict(),
            },
            "conventions": self.conventions,
        }


def evaluate_predictions(
    predictions: Any,
    close: Any,
    *,
    rows: Any = None,
    dates: Any = None,
    execution_lag: int = 1,
    horizon: int = 1,
    horizons: Sequence[int] = IC_DECAY_HORIZONS,
    quantiles: int = 10,
    long_short_quantiles: int = 5,
    demeaned: bool = True,
    periods_per_year: float = 252.0,
) -> EvaluationReport:
    """IC decay, quantile returns and the long-short curve of `predictions` (`(R, N)`, panel rows `rows`).

    `close` is the panel's full `(T, N)` close; `dates` the `(T,)` panel
    dates (for the curve and the report; default `0..T-1`). Quantile returns
    use the label horizon `horizon`; the curve uses 1-bar returns.
    """
    pred = _matrix(predictions, "predictions")
    px = _matrix(close, "close")
    if pred.shape[1] != px.shape[1]:
        raise InvalidArgument(
            f"predictions have {pred.shape[1]} symbols, close has {px.shape[1]}", field="predictions"
        )
    idx = _rows(rows, px.shape[0], pred.shape[0])
    all_dates = np.arange(px.shape[0]) if dates is None else np.asarray(dates)
    seg_dates = all_dates[idx]
    fwd_h = forward_returns(px, horizon, execution_lag)[idx]
    fwd_1 = fwd_h if horizon == 1 else forward_returns(px, 1, execution_lag)[idx]
    decay = ic_decay(pred, px, rows=idx, execution_lag=execution_lag, horizons=horizons)
    rank_ic = ic_series(pred, fwd_h, "spearman")
    qr = quantile_returns(pred, fwd_h, quantiles=quantiles, demeaned=demeaned, horizon=horizon)
    ls = long_short_curve(
        pred, fwd_1, seg_dates, quantiles=long_short_quantiles, periods_per_year=periods_per_year
    )
    conventions = {
        "ic": "per-date Spearman (average ranks), mean over dates with >= 2 pairs and non-constant sides",
        "ic_decay_horizons": [int(h) for h in horizons],
        "forward_return": "close[t+lag+h] / close[t+lag] - 1",
        "quantile_method": "pandas.qcut per date over pairs with both values, labels 1..q",
        "quantile_mean": "pooled over (date, symbol) pairs of the bucket (alphalens, by_date=False)",
        "demeaned": demeaned,
        "long_short": f"top minus bottom of {long_short_quantiles} buckets, equal weight, gross 1, "
        "1-bar forward return, daily rebalance, no costs",
        "periods_per_year": periods_per_year,
    }
    return EvaluationReport(seg_dates, rank_ic, decay, qr, ls, int(execution_lag), int(horizon), conventions)


# --------------------------------------------------------------------------- plots


def _figure(width: float, height: float, rows: int = 1, **grid: Any) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=rows > 1, **grid)
    return fig, axes


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    titles = [ax.get_title() for ax in fig.get_axes() if ax.get_title()]
    fig.savefig(buf, format="png", metadata={"Title": " | ".join(titles)})
    return buf.getvalue()


def _plot_dates(dates: np.ndarray) -> np.ndarray:
    return dates.astype("datetime64[D]") if np.issubdtype(dates.dtype, np.datetime64) else dates


def render_plots(report: EvaluationReport, *, title: str = "") -> dict[str, bytes]:
    """`{"cumulative_ic.png", "ic_histogram.png", "quantile_returns.png", "long_short_equity.png"}` -> PNG bytes."""
    prefix = f"{title}: " if title else ""
    x = _plot_dates(report.dates)
    ic = report.rank_ic
    out: dict[str, bytes] = {}

    fig, ax = _figure(7, 3)
    ax.plot(x, np.cumsum(np.nan_to_num(ic)), lw=1.2)
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_title(f"{prefix}cumulative RankIC (h={report.horizon})")
    ax.set_ylabel("sum of RankIC_t")
    out["cumulative_ic.png"] = _png(fig)

    fig, ax = _figure(5, 3)
    valid = ic[~np.isnan(ic)]
    if valid.size:
        ax.hist(valid, bins=min(50, max(10, valid.size // 10)), color="tab:blue", alpha=0.8)
        ax.axvline(float(valid.mean()), color="tab:red", lw=1.2, label=f"mean {valid.mean():.4f}")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{prefix}RankIC_t distribution")
    out["ic_histogram.png"] = _png(fig)

    fig, ax = _figure(5, 3)
    q = report.quantiles
    ax.bar(np.arange(1, q.quantiles + 1), np.nan_to_num(q.mean) * 1e4, color="tab:green")
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_xticks(np.arange(1, q.quantiles + 1))
    ax.set_xlabel("prediction quantile (1 = lowest)")
    ax.set_ylabel(f"mean {q.horizon}-bar return (bp{', demeaned' if q.demeaned else ''})")
    ax.set_title(f"{prefix}quantile returns, gross of costs\n(the backtest trades the strategy net of costs)")
    out["quantile_returns.png"] = _png(fig)

    fig, axes = _figure(7, 4, rows=2, height_ratios=[3, 1])
    ls = report.long_short
    axes[0].plot(x, ls.equity, lw=1.2)
    axes[0].set_title(
        f"{prefix}long-short top/bottom {ls.quantiles}-quantile, gross of costs\n"
        "(a diagnostic of the ranking, not the backtest: no fees, no slippage)"
    )
    axes[0].set_ylabel("equity")
    axes[1].fill_between(x, ls.drawdown, 0.0, color="tab:red", alpha=0.5)
    axes[1].set_ylabel("drawdown")
    out["long_short_equity.png"] = _png(fig)
    return out


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats replaced by None (for JSON artifacts)."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value
