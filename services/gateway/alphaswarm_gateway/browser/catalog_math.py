"""The numbers behind the Strategy Browser's catalog charts (pure NumPy, no I/O).

Every function here takes plain arrays or dicts already read from the
catalog and returns JSON-ready values (NaN and inf become None); the routes
of `browser.catalog` fetch, call one of these, and answer.

- `keep_indices(n, points)`: the rows a long series keeps when downsampled
  to at most `points` values: evenly strided, always the first and the last.
  The kept values are exact (no averaging); extremes between kept rows may
  fall out of the chart, never out of the metrics, which the catalog computed
  on the full series.
- `align_equity(series, points)`: several backtests' equity curves on the
  union of their dates (a backtest without a bar on a date has null there),
  each also rebased to 1 on its first value (`growth`) so curves of different
  capital overlay; downsampled on the common dates.
- `optimization_grid(rows, x, y)`: optimization rows as a grid over two
  parameters; each cell holds the row with the best Sharpe among the rows
  with those two values (the other parameters may vary), its Deflated-Sharpe
  p-value as the backtester stored it, and how many sets fell in the cell.
- `walk_forward_bars(windows)`: each window's in-sample vs out-of-sample
  Sharpe (the in-sample Sharpe is recovered from the stored
  `degradation_factor = 1 - OOS sharpe / IS sharpe`), performance ratio and
  degradation, and their summary.
- `fan(returns, ...)`: percentiles per step of block-bootstrap equity paths,
  drawn exactly as the backtester's Monte Carlo draws them (the stationary
  or circular bootstrap and random stream documented in
  `alphaswarm_backtester.engine.montecarlo`), so the last step's percentiles
  are the Monte Carlo job's `total_return` percentiles plus one.
- `weights_view(dates, symbols, weights, points)`: weights over time,
  downsampled, with per-date concentration (Herfindahl index of the absolute
  weights normalised to 1, its inverse the effective number of holdings) and
  gross / net exposure.
- `leaderboard(entries, trials)`: each entry's Sharpe next to its Deflated
  Sharpe given every trial run on the same data (Bailey & López de Prado
  2014): `SR*` from `alphaswarm_common.metrics.expected_max_sharpe`, then the
  PSR formula of `alphaswarm_common.metrics.probabilistic_sharpe_ratio` over
  arrays (tests hold it equal to `deflated_sharpe_ratio`, entry by entry).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import norm

from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.metrics import expected_max_sharpe

__all__ = [
    "MAX_FAN_SIMULATIONS",
    "Entry",
    "align_equity",
    "fan",
    "json_values",
    "keep_indices",
    "leaderboard",
    "optimization_grid",
    "walk_forward_bars",
    "weights_view",
]

MAX_FAN_SIMULATIONS = 20_000
"""At most this many paths per fan (the paths are drawn in chunks; only the kept steps are held)."""

_CHUNK_CELLS = 1 << 20


def json_values(values: Any) -> list[Any]:
    """An array as nested lists with NaN / inf as None."""
    data = np.asarray(values, dtype=np.float64)
    out = data.astype(object)
    out[~np.isfinite(data)] = None
    return list(out.tolist())


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def keep_indices(n: int, points: int) -> np.ndarray:
    """Indices of the rows kept when `n` rows are shown as at most `points` (>= 2) values.

    All rows when `n <= points`; else `points` rows evenly spread over
    `[0, n - 1]`, the first and the last always among them.
    """
    if points < 2:
        raise InvalidArgument(f"must be at least 2, got {points}", field="points")
    if n <= points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, points)).astype(np.int64))


# ----------------------------------------------------------------------------- compare


def align_equity(series: Sequence[tuple[Sequence[str], np.ndarray]], points: int) -> dict[str, Any]:
    """Equity curves `(dates, equity)` on the union of their dates, downsampled to `points` dates.

    Answers `{"dates", "equity": [[...] per series], "growth": [[...] per series]}`;
    `growth` is the equity divided by the series' first finite value.
    """
    union = sorted({d for dates, _ in series for d in dates})
    index = {d: i for i, d in enumerate(union)}
    matrix = np.full((len(series), len(union)), np.nan)
    for k, (dates, equity) in enumerate(series):
        values = np.asarray(equity, dtype=np.float64).reshape(-1)
        if values.size != len(dates):
            raise InvalidArgument(
                f"series {k} has {values.size} values for {len(dates)} dates", field="backtest_id"
            )
        matrix[k, [index[d] for d in dates]] = values
    growth = np.full_like(matrix, np.nan)
    for k in range(len(series)):
        finite = np.flatnonzero(np.isfinite(matrix[k]) & (matrix[k] != 0))
        if finite.size:
            growth[k] = matrix[k] / matrix[k, finite[0]]
    keep = keep_indices(len(union), points)
    return {
        "dates": [union[i] for i in keep],
        "equity": [json_values(row[keep]) for row in matrix],
        "growth": [json_values(row[keep]) for row in growth],
        "n_dates": len(union),
    }


# ----------------------------------------------------------------------------- optimization heatmap


def _key(value: Any) -> tuple[int, Any]:
    """A sort key that orders numbers numerically, then everything else by its text."""
    if isinstance(value, bool):
        return (1, str(value))
    if isinstance(value, int | float):
        return (0, float(value))
    return (1, str(value))


def _cell_value(value: Any) -> Any:
    """A parameter value as JSON shows it (an integral float as an int: 10.0 -> 10)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def optimization_grid(rows: Sequence[Mapping[str, Any]], x: str | None, y: str | None) -> dict[str, Any]:
    """Optimization rows (`parameters`, `sharpe_ratio`, `p_value`, ...) as a grid over `x` and `y`.

    `x` / `y` default to the first two parameters (by name) that take more
    than one value. `cells[j][i]` is the cell of `y_values[j]` and
    `x_values[i]`, or None when no set had those values.
    """
    if not rows:
        return {
            "parameters": {},
            "x": None,
            "y": None,
            "x_values": [],
            "y_values": [],
            "cells": [],
            "n_sets": 0,
        }
    values: dict[str, list[Any]] = {}
    for row in rows:
        for name, value in (row.get("parameters") or {}).items():
            seen = values.setdefault(name, [])
            v = _cell_value(value)
            if v not in seen:
                seen.append(v)
    for name in values:
        values[name].sort(key=_key)
    varying = [n for n in sorted(values) if len(values[n]) > 1]
    names = varying + [n for n in sorted(values) if n not in varying]
    for given, fieldname in ((x, "x"), (y, "y")):
        if given is not None and given not in values:
            raise InvalidArgument(
                f"{given!r} is not a parameter of this optimization (one of {', '.join(sorted(values))})",
                field=fieldname,
            )
    x = x if x is not None else (names[0] if names else None)
    if y is None:
        y = next((n for n in names if n != x), None)
    if x is not None and x == y:
        raise InvalidArgument("must differ from x", field="y")
    x_values = values.get(x, [None]) if x is not None else [None]
    y_values = values.get(y, [None]) if y is not None else [None]
    xi = {repr(v): i for i, v in enumerate(x_values)}
    yi = {repr(v): j for j, v in enumerate(y_values)}
    cells: list[list[dict[str, Any] | None]] = [[None] * len(x_values) for _ in y_values]
    for row in rows:
        params = row.get("parameters") or {}
        i = xi[repr(_cell_value(params.get(x)))] if x is not None else 0
        j = yi[repr(_cell_value(params.get(y)))] if y is not None else 0
        sharpe = _num(row.get("sharpe_ratio"))
        current = cells[j][i]
        count = 1 + (current["n_sets"] if current else 0)
        better = current is None or (
            sharpe is not None and (current["sharpe_ratio"] is None or sharpe > current["sharpe_ratio"])
        )
        if better:
            cells[j][i] = {
                "optimization_id": row.get("optimization_id"),
                "parameter_set": row.get("parameter_set"),
                "parameters": params,
                "sharpe_ratio": sharpe,
                "p_value": _num(row.get("p_value")),
                "objective_value": _num(row.get("objective_value")),
                "total_return": _num(row.get("total_return")),
                "max_drawdown": _num(row.get("max_drawdown")),
                "total_trades": row.get("total_trades"),
                "rank": row.get("rank"),
                "is_statistically_significant": bool(row.get("is_statistically_significant")),
                "n_sets": count,
            }
        else:
            current["n_sets"] = count  # type: ignore[index]
    return {
        "parameters": values,
        "x": x,
        "y": y,
        "x_values": x_values,
        "y_values": y_values,
        "cells": cells,
        "n_sets": len(rows),
    }


# ----------------------------------------------------------------------------- walk-forward


def walk_forward_bars(windows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per window: in-sample and out-of-sample Sharpe, performance ratio, degradation; and a summary.

    The in-sample Sharpe is `OOS sharpe / (1 - degradation_factor)` (null when
    either is null or the degradation is 1). The summary: mean performance
    ratio and mean degradation over the windows that have them, the share of
    profitable windows, and the walk-forward efficiency (mean OOS Sharpe /
    mean IS Sharpe over the windows that have both).
    """
    out: list[dict[str, Any]] = []
    for w in windows:
        oos = _num(w.get("out_of_sample_sharpe"))
        deg = _num(w.get("degradation_factor"))
        is_sharpe = None
        if oos is not None and deg is not None and abs(1.0 - deg) > 1e-12:
            is_sharpe = oos / (1.0 - deg)
        out.append(
            {
                "walk_forward_id": w.get("walk_forward_id"),
                "training_start": w.get("training_start"),
                "training_end": w.get("training_end"),
                "test_period_start": w.get("test_period_start"),
                "test_period_end": w.get("test_period_end"),
                "optimal_parameters": w.get("optimal_parameters"),
                "in_sample_objective": _num(w.get("training_performance")),
                "in_sample_sharpe": is_sharpe,
                "out_of_sample_sharpe": oos,
                "out_of_sample_return": _num(w.get("out_of_sample_return")),
                "out_of_sample_drawdown": _num(w.get("out_of_sample_drawdown")),
                "out_of_sample_trades": w.get("out_of_sample_trades"),
                "performance_ratio": _num(w.get("performance_ratio")),
                "degradation_factor": deg,
                "is_profitable": w.get("is_profitable"),
                "is_statistically_significant": bool(w.get("is_statistically_significant")),
            }
        )

    def mean(key: str) -> float | None:
        vals = [r[key] for r in out if r[key] is not None]
        return float(np.mean(vals)) if vals else None

    both = [r for r in out if r["in_sample_sharpe"] is not None and r["out_of_sample_sharpe"] is not None]
    is_mean = float(np.mean([r["in_sample_sharpe"] for r in both])) if both else None
    oos_mean = float(np.mean([r["out_of_sample_sharpe"] for r in both])) if both else None
    profitable = [r["is_profitable"] for r in out if r["is_profitable"] is not None]
    return {
        "windows": out,
        "summary": {
            "n_windows": len(out),
            "mean_performance_ratio": mean("performance_ratio"),
            "mean_degradation_factor": mean("degradation_factor"),
            "mean_in_sample_sharpe": is_mean,
            "mean_out_of_sample_sharpe": oos_mean,
            "walk_forward_efficiency": (
                oos_mean / is_mean if is_mean is not None and oos_mean is not None and is_mean != 0 else None
            ),
            "profitable_share": (sum(bool(p) for p in profitable) / len(profitable)) if profitable else None,
        },
    }


# ----------------------------------------------------------------------------- Monte Carlo fan


def _index_chunks(
    n: int, sims: int, block: int, method: str, seed: int | None, chunk: int
) -> Iterator[np.ndarray]:
    """`(m, n)` bar indices of consecutive paths: the backtester's documented random stream."""
    starts_seq, breaks_seq = np.random.SeedSequence(seed).spawn(2)
    starts_rng, breaks_rng = np.random.default_rng(starts_seq), np.random.default_rng(breaks_seq)
    offsets = np.arange(n, dtype=np.int32)
    n_blocks = -(-n // block)
    for first in range(0, sims, chunk):
        m = min(chunk, sims - first)
        if method == "circular":
            starts = starts_rng.integers(0, n, size=(m, n_blocks), dtype=np.int32)
            idx = starts[:, offsets // block] + offsets % block
        else:
            starts = starts_rng.integers(0, n, size=(m, n), dtype=np.int32)
            new = breaks_rng.random((m, n)) < 1.0 / block
            new[:, 0] = True
            began = np.where(new, offsets, np.int32(0))
            np.maximum.accumulate(began, axis=1, out=began)
            idx = np.take_along_axis(starts, began, axis=1) + offsets - began
        yield np.remainder(idx, n)


def fan(
    returns: np.ndarray,
    *,
    n_simulations: int = 1000,
    block_length: int = 21,
    method: str = "stationary",
    seed: int = 0,
    percentiles: Sequence[float] = (5.0, 25.0, 50.0, 75.0, 95.0),
    points: int = 500,
) -> dict[str, Any]:
    """Percentiles per step of the growth of `n_simulations` bootstrap paths of `returns`.

    Step 0 is the start (growth 1); step s is `prod(1 + r*[:s])`. Answers
    `{"steps", "percentiles", "bands": [[value per kept step] per percentile],
    "actual": [growth of the real returns per kept step], "n_simulations", ...}`
    with at most `points` kept steps (the last always kept).
    """
    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    n = int(r.size)
    if n < 2 or not np.isfinite(r).all() or (r < -1).any():
        raise InvalidArgument("needs at least 2 finite returns >= -1", field="backtest_id")
    if not 2 <= n_simulations <= MAX_FAN_SIMULATIONS:
        raise InvalidArgument(f"must be in [2, {MAX_FAN_SIMULATIONS}]", field="n_simulations")
    if not 1 <= block_length <= n:
        raise InvalidArgument(f"must be in [1, {n}] (the number of returns)", field="block_length")
    if method not in ("stationary", "circular"):
        raise InvalidArgument("must be stationary or circular", field="method")
    if seed < 0:
        raise InvalidArgument("must be >= 0", field="seed")
    pct = [float(p) for p in percentiles]
    for i, p in enumerate(pct):
        if not 0.0 <= p <= 100.0:
            raise InvalidArgument(f"must be in [0, 100], got {p}", field=f"percentiles[{i}]")
    steps = keep_indices(n + 1, points)  # step 0 .. n
    cols = steps[steps > 0] - 1  # the bar after which each kept step is read
    kept = np.empty((n_simulations, cols.size))
    chunk = max(1, _CHUNK_CELLS // n)
    row = 0
    for idx in _index_chunks(n, n_simulations, block_length, method, seed, chunk):
        paths = np.cumprod(1.0 + r[idx], axis=1)
        kept[row : row + idx.shape[0]] = paths[:, cols]
        row += idx.shape[0]
    bands = np.percentile(kept, pct, axis=0) if cols.size else np.empty((len(pct), 0))
    has_start = steps.size and steps[0] == 0
    actual = np.cumprod(1.0 + r)[cols]
    if has_start:
        bands = np.concatenate([np.ones((len(pct), 1)), bands], axis=1)
        actual = np.concatenate([[1.0], actual])
    final = kept[:, -1] - 1.0
    return {
        "steps": [int(s) for s in steps],
        "percentiles": pct,
        "bands": [json_values(b) for b in bands],
        "actual": json_values(actual),
        "n_simulations": n_simulations,
        "n_steps": n,
        "block_length": block_length,
        "method": method,
        "seed": seed,
        "probability_of_loss": float(np.mean(final < 0.0)),
    }


# ----------------------------------------------------------------------------- portfolio weights


def weights_view(
    dates: Sequence[str], symbols: Sequence[str], weights: np.ndarray, points: int
) -> dict[str, Any]:
    """Weights per date downsampled, with concentration and exposure per kept date.

    `hhi` = sum of squared shares of the absolute weights (1 for one holding,
    1/n for n equal ones); `effective_n` = 1 / hhi; `gross` = sum |w|;
    `net` = sum w. A date with no position has null concentration.
    """
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if w.shape != (len(dates), len(symbols)):
        raise InvalidArgument(
            f"weights are {w.shape[0]}x{w.shape[1]} for {len(dates)} dates and {len(symbols)} symbols",
            field="portfolio_backtest_id",
        )
    keep = keep_indices(len(dates), points)
    sub = np.nan_to_num(w[keep], nan=0.0)
    gross = np.abs(sub).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.abs(sub) / gross[:, None]
        hhi = np.where(gross > 0, (shares**2).sum(axis=1), np.nan)
        eff = 1.0 / hhi
    return {
        "dates": [dates[i] for i in keep],
        "symbols": list(symbols),
        "values": json_values(w[keep]),
        "gross_exposure": json_values(gross),
        "net_exposure": json_values(sub.sum(axis=1)),
        "hhi": json_values(hhi),
        "effective_n": json_values(eff),
        "n_dates": len(dates),
    }


# ----------------------------------------------------------------------------- leaderboard


@dataclass
class Entry:
    """One backtest on a dataset: its Sharpe and the moments its Deflated Sharpe needs."""

    key: str
    label: str
    kind: str
    sharpe: float | None
    periods_per_year: float
    n_obs: int | None
    skewness: float | None
    kurtosis: float | None
    trials: int = 1
    detail: dict[str, Any] = field(default_factory=dict)


def _deflated(entries: Sequence[Entry], sr_star: float) -> tuple[list[float | None], list[str | None]]:
    """`PSR(SR_k; SR*)` of every entry at once, the formula of
    `alphaswarm_common.metrics.probabilistic_sharpe_ratio` (so `deflated_sharpe_ratio` with the
    shared `SR*`) over arrays: one `norm.cdf` call instead of one per entry, which matters at
    thousands of entries. Entries it cannot score get None and the reason."""
    n = len(entries)
    out: list[float | None] = [None] * n
    reasons: list[str | None] = [None] * n
    ok: list[int] = []
    for k, e in enumerate(entries):
        if e.sharpe is None:
            reasons[k] = "no Sharpe ratio"
        elif e.n_obs is None or e.n_obs < 2:
            reasons[k] = "fewer than 2 returns"
        elif e.skewness is None or e.kurtosis is None:
            reasons[k] = "no skewness / kurtosis"
        else:
            ok.append(k)
    if not ok:
        return out, reasons
    sel = [entries[k] for k in ok]
    sr = np.array([e.sharpe / math.sqrt(e.periods_per_year) for e in sel])  # type: ignore[operator]
    nobs = np.array([e.n_obs for e in sel], dtype=np.float64)
    g3 = np.array([e.skewness for e in sel], dtype=np.float64)
    g4 = np.array([e.kurtosis for e in sel], dtype=np.float64)
    radicand = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (sr - sr_star) * np.sqrt(nobs - 1.0) / np.sqrt(radicand)
    p = norm.cdf(z)
    for i, k in enumerate(ok):
        if not radicand[i] > 0.0:
            reasons[k] = (
                f"1 - skew*SR + (kurtosis-1)/4*SR² = {radicand[i]:.6g} is not positive: the Sharpe "
                "estimator's variance is undefined for these moments"
            )
        else:
            out[k] = float(p[i])
    return out, reasons


def leaderboard(entries: Sequence[Entry], trial_sharpes: Sequence[float | None]) -> dict[str, Any]:
    """Each entry's Deflated Sharpe given all the trials run on its data.

    `trial_sharpes` are the annualised Sharpes of every trial run on the data
    (None for a trial whose Sharpe is undefined or was not kept). `N`, the
    number of trials, counts them all; `V` is the sample variance (ddof=1) of
    the per-period Sharpes (`sharpe / sqrt(periods_per_year)`) of those that
    have one. Entry k's `deflated_sharpe = PSR(SR_k; SR* = E[max of N null
    Sharpes with variance V], n_obs_k, skew_k, kurt_k)` and its `p_value = 1 -
    deflated_sharpe`; null, with the reason, when its Sharpe, moments or
    length are missing or inconsistent.
    """
    ppy = entries[0].periods_per_year if entries else 252.0
    n_trials = len(trial_sharpes)
    known = np.array([s / math.sqrt(ppy) for s in trial_sharpes if s is not None], dtype=np.float64)
    variance = float(np.var(known, ddof=1)) if known.size >= 2 else 0.0
    sr_star = expected_max_sharpe(variance, max(n_trials, 1))
    dsrs, reasons = _deflated(entries, sr_star)
    rows = []
    for e, dsr, reason in zip(entries, dsrs, reasons, strict=True):
        rows.append(
            {
                "key": e.key,
                "label": e.label,
                "kind": e.kind,
                "sharpe": e.sharpe,
                "deflated_sharpe": dsr,
                "p_value": None if dsr is None else 1.0 - dsr,
                "reason": reason,
                "n_obs": e.n_obs,
                "skewness": e.skewness,
                "kurtosis": e.kurtosis,
                "trials": e.trials,
                **e.detail,
            }
        )
    rows.sort(key=lambda r: (r["deflated_sharpe"] is None, -(r["deflated_sharpe"] or 0.0), r["key"]))
    return {
        "n_trials": n_trials,
        "n_trials_with_sharpe": int(known.size),
        "sharpe_trials_variance": variance,
        "expected_max_sharpe": sr_star * math.sqrt(ppy),
        "periods_per_year": ppy,
        "entries": rows,
    }
