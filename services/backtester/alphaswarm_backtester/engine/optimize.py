"""Parameter search over a rule strategy: grid or seeded random, every set ranked, deflated p-values.

`optimize(strategy_type, close=..., dates=..., symbols=..., grid=... | space=..., objective=...)`
builds the parameter sets, evaluates each one with the same accounting as
`run_backtest` (rule positions split equally across the symbols, see
`alphaswarm_backtester.engine.rules`), ranks them by the objective and
attaches a Deflated-Sharpe p-value to every set.

Search spaces
-------------
- Grid: `{name: [values, ...]}`; every combination, in the order of
  `itertools.product` over the names taken in the order the strategy's
  params model declares them (the first varies slowest), not in the order
  given: a mapping from JSON / a protobuf `Struct` has no reliable order,
  and the numbering must not depend on it. The parameter sets are numbered
  from 0 in that order (`parameter_set`).
- Random: `{name: [values, ...]}` (uniform over the list) or `{name: {"low",
  "high", "type": "int" | "float", "log": bool}}` (uniform, or log-uniform
  with `log`, on `[low, high]`; ints inclusive; `type` defaults to the
  parameter's own type). `n_samples` draws from
  `numpy.random.default_rng(seed)`, one vector per name in the params
  model's order (as for the grid): the same seed gives the same sets.
- Names must be parameters of the strategy (`InvalidArgument` naming
  `grid.<name>` / `space.<name>`); parameters not searched keep their
  defaults. Every set is validated by the strategy's params model: an
  invalid one (e.g. `fast_period >= slow_period`) is skipped and reported
  (`SkippedSet`, with the field and the message), never evaluated; a set
  equal to an earlier one is skipped as a duplicate (it is not another
  trial). At most `MAX_SETS` sets.

Objectives and ranking
----------------------
`sharpe`, `sortino`, `calmar`, `total_return`, `max_drawdown`, `win_rate`,
`profit_factor`, with METRICS.md's definitions. Larger is better for every
one of them; `max_drawdown` is a fraction <= 0, so larger means a smaller
loss (ranking by `max_drawdown` descending). Ranks are 1..m over the sets
whose objective is defined, ties broken by `parameter_set` (the earlier set
ranks first); a set whose objective is undefined (no closed trade for
`win_rate`, no drawdown for `calmar`, ...) has no rank and sorts last.

Deflated Sharpe p-values (Bailey & López de Prado 2014)
------------------------------------------------------
Every evaluated set with a defined Sharpe is a trial. With `SR_k` the
per-period Sharpe of set k (`sharpe / sqrt(periods_per_year)`), `V` the
sample variance (ddof=1) of the `SR_k` over the trials and `N` the number of
trials, each set's `p_value = 1 - DSR_k = 1 - PSR(SR_k; SR* = E[max of N
null Sharpes with variance V], n_obs, skew_k, kurtosis_k)`
(`alphaswarm_common.metrics.deflated_sharpe_ratio`): the probability of a
Sharpe at least that large if the best of N skill-less trials had been
picked. Each row is deflated against the same benchmark `SR*`, so the row
of the selected (best) set carries the p-value of the selection; the other
rows say how each set would fare had it been the one chosen.
`is_statistically_significant = p_value < 0.05`. A set without a Sharpe
(no variance) has no p-value.

Evaluation: the batch kernel
----------------------------
One symbol, close fills, `rebalance_every = 1`, `rf = 0`, no stops, no
`min_fee` and no missing close in the window (the common case of a rule
optimization) run through a batch kernel that evaluates all K sets together
without a per-bar Python loop; any other configuration, and any set the
kernel cannot certify, runs `run_backtest` per set. Both paths give the same
numbers (tested against `run_backtest` to ~1e-12).

The kernel rests on a closed form of `run_backtest`'s accounting for one
symbol. With `V_s` the account value at the close of fill bar s before its
order, `w_s` the target in force, `h_s` the weight the position has drifted
to and `c = fees + slippage`, the fill costs `k_s V_s` with `k_s = c |w_s -
h_s|`, and

    G_{s-1} = V_s / V_{s-1} = (1 - w_{s-1} - k_{s-1}) + w_{s-1} a_s,   a_s = P_s / P_{s-1}
    h_s     = w_{s-1} a_s / G_{s-1}
    r_s     = G_{s-1} (1 - k_s) / (1 - k_{s-1}) - 1                    (the bar's return)

a scalar recursion in `k` whose dependence on the previous bar is
`|dk_s/dk_{s-1}| <= c |w| a_s / G^2` (about 0.002 at the default costs). So
inside a run of constant target `v`, `k` forgets its start geometrically and
equals the run-independent "stationary" sequence `k*(v)` (one per target
value, solved once for all bars by fixed-point iteration) to below 1e-18
after `D` bars, `D` derived from that bound (5-7 at the default costs). The
kernel computes the first `D` bars of every run of constant target exactly
(all runs advanced together, one depth per step), and takes every later bar
from `k*(v)`: sums of returns, squares, cubes, fourth powers, downside
squares and log growth come from prefix sums of the centred stationary
values (a range sum keeps ~1e-15 absolute accuracy), the maximum drawdown
from range max / min / max-drawdown queries on the stationary log-equity (a
disjoint sparse table), composed run by run. A closed trade's PnL follows
from the account values at its entry and exit bars alone: `pnl = V_x (1 -
s_x k_x) - V_b (1 - (1 - s_b) k_b)`, `s_b` / `s_x` the shares of a flipping
order's cost that belong to the trade, as the ledger splits them. The work
is proportional to the number of runs times `D` plus `T log T` per target
value, not to `T * K`: 100 SMA pairs on 100,000 bars take ~0.27 s where
vectorbt takes ~2.5 s (`benchmarks/bench_rules.py`).

`kernel_backtest` (`alphaswarm_backtester.engine.single`) solves the same
closed form for one target sequence directly (Jacobi sweeps instead of the
stationary sequences) and returns a full `BacktestOutput`: every per-bar
array, the ledger and the metrics, equal to `run_backtest`'s to rounding.
`run_rule_backtest` uses it for one symbol.

Each trial's `MetricSet` holds `TRIAL_METRICS` (the same names on both
paths): returns, risk, drawdown, distribution, probabilistic Sharpe and
closed-trade statistics; the per-bar turnover figures and the drawdown
duration are left to the full backtest of the chosen set.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.stats import norm

from alphaswarm_backtester.engine.backtest import run_backtest
from alphaswarm_backtester.engine.config import EngineConfig
from alphaswarm_backtester.engine.rules import (
    RULE_STRATEGIES,
    RuleInputs,
    RuleParams,
    is_rule_strategy,
    rule_sides,
    validate_rule_params,
)
from alphaswarm_backtester.engine.single import kernel_applies, kernel_backtest
from alphaswarm_common.errors import AlphaSwarmError, DataError, InvalidArgument
from alphaswarm_common.metrics import (
    MetricSet,
    deflated_sharpe_ratio,
    infer_periods_per_year,
)

__all__ = [
    "MAX_SETS",
    "OBJECTIVES",
    "TRIAL_METRICS",
    "OptimizationResult",
    "ParameterSet",
    "SkippedSet",
    "Trial",
    "deflated_p_values",
    "evaluate_sides",
    "grid_parameter_sets",
    "kernel_backtest",
    "kernel_returns",
    "optimize",
    "random_parameter_sets",
    "rank_values",
]

Objective = Literal[
    "sharpe", "sortino", "calmar", "total_return", "max_drawdown", "win_rate", "profit_factor"
]
OBJECTIVES: tuple[str, ...] = (
    "sharpe",
    "sortino",
    "calmar",
    "total_return",
    "max_drawdown",
    "win_rate",
    "profit_factor",
)
MAX_SETS = 100_000

#: The metrics every trial reports (both evaluation paths).
TRIAL_METRICS: tuple[str, ...] = (
    "n_periods",
    "total_return",
    "annualized_return",
    "volatility",
    "downside_volatility",
    "max_drawdown",
    "sharpe",
    "sortino",
    "calmar",
    "skewness",
    "kurtosis",
    "probabilistic_sharpe",
    "total_trades",
    "winning_trades",
    "losing_trades",
    "win_rate",
    "profit_factor",
    "average_win",
    "average_loss",
    "largest_win",
    "largest_loss",
    "final_value",
    "peak_value",
)

_DEPTH_CAP = 2048  # longest chain of un-settled bars the kernel follows before handing a set to run_backtest
_TOL_K = 1e-18


# ============================================================================= parameter sets


@dataclass(frozen=True)
class ParameterSet:
    """One validated set: its index in the search and the full parameters (defaults filled in)."""

    index: int
    params: RuleParams

    @property
    def values(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json")


@dataclass(frozen=True)
class SkippedSet:
    """A set that was not evaluated: invalid parameters, a duplicate, or a backtest that failed."""

    index: int
    params: dict[str, Any]
    field: str | None
    message: str


def _check_names(strategy_type: str, names: Sequence[str], where: str) -> type[RuleParams]:
    if not is_rule_strategy(strategy_type):
        raise InvalidArgument(
            f"{strategy_type!r} is not a rule strategy; known: {sorted(RULE_STRATEGIES)} "
            "(alpha strategies need a signal: use RunBacktest)",
            field="strategy_type",
        )
    model = RULE_STRATEGIES[strategy_type]
    for name in names:
        if name not in model.model_fields:
            raise InvalidArgument(
                f"{strategy_type} has no parameter {name!r}; parameters: {sorted(model.model_fields)}",
                field=f"{where}.{name}",
            )
    return model


def _build_sets(
    strategy_type: str, raw_sets: Sequence[dict[str, Any]]
) -> tuple[list[ParameterSet], list[SkippedSet]]:
    sets: list[ParameterSet] = []
    skipped: list[SkippedSet] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_sets):
        try:
            p = validate_rule_params(strategy_type, raw)
        except InvalidArgument as exc:
            skipped.append(SkippedSet(i, dict(raw), exc.field, exc.message))
            continue
        key = p.model_dump_json()
        if key in seen:
            skipped.append(SkippedSet(i, dict(raw), None, f"duplicate of parameter set {seen[key]}"))
            continue
        seen[key] = i
        sets.append(ParameterSet(i, p))
    return sets, skipped


def _plain(value: Any) -> Any:
    """A JSON number that is integral becomes an int (protobuf Struct numbers are doubles)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def grid_parameter_sets(
    strategy_type: str, grid: Mapping[str, Sequence[Any]]
) -> tuple[list[ParameterSet], list[SkippedSet]]:
    """Every combination of `grid` (see the module docstring); `(valid sets, skipped sets)`."""
    if not isinstance(grid, Mapping) or not grid:
        raise InvalidArgument("grid must map parameter names to lists of values", field="grid")
    model = _check_names(strategy_type, list(grid), "grid")
    names = [name for name in model.model_fields if name in grid]
    lists = []
    for name in names:
        values = grid[name]
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or len(values) == 0:
            raise InvalidArgument("must be a non-empty list of values", field=f"grid.{name}")
        lists.append([_plain(v) for v in values])
    total = math.prod(len(v) for v in lists)
    if total > MAX_SETS:
        raise InvalidArgument(f"the grid has {total} combinations, more than {MAX_SETS}", field="grid")
    raw = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*lists)]
    return _build_sets(strategy_type, raw)


def _sample_spec(name: str, spec: Any, annotation: Any, n: int, rng: np.random.Generator) -> list[Any]:
    path = f"space.{name}"
    if isinstance(spec, Sequence) and not isinstance(spec, str | bytes):
        if len(spec) == 0:
            raise InvalidArgument("must not be empty", field=path)
        idx = rng.integers(0, len(spec), size=n)
        return [_plain(spec[i]) for i in idx]
    if not isinstance(spec, Mapping):
        raise InvalidArgument("must be a list of values or {low, high, type, log}", field=path)
    unknown = set(spec) - {"low", "high", "type", "log"}
    if unknown:
        raise InvalidArgument(f"unknown key(s) {sorted(unknown)}", field=f"{path}.{sorted(unknown)[0]}")
    for key in ("low", "high"):
        if key not in spec:
            raise InvalidArgument("is required", field=f"{path}.{key}")
        v = spec[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InvalidArgument(f"must be a finite number, got {v!r}", field=f"{path}.{key}")
    low, high = float(spec["low"]), float(spec["high"])
    if high < low:
        raise InvalidArgument(f"high ({high}) is below low ({low})", field=f"{path}.high")
    default_type = "int" if annotation is int else "float"
    kind = spec.get("type", default_type)
    if kind not in ("int", "float"):
        raise InvalidArgument(f"must be 'int' or 'float', got {kind!r}", field=f"{path}.type")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise InvalidArgument("must be a boolean", field=f"{path}.log")
    if log and low <= 0:
        raise InvalidArgument("log sampling needs low > 0", field=f"{path}.low")
    if kind == "int":
        lo, hi = math.ceil(low), math.floor(high)
        if hi < lo:
            raise InvalidArgument(f"[{low}, {high}] holds no integer", field=f"{path}.high")
        if log:
            draws = np.floor(np.exp(rng.uniform(math.log(lo), math.log(hi + 1), size=n)))
            return [int(min(max(v, lo), hi)) for v in draws]
        return [int(v) for v in rng.integers(lo, hi + 1, size=n)]
    if log:
        return [float(v) for v in np.exp(rng.uniform(math.log(low), math.log(high), size=n))]
    return [float(v) for v in rng.uniform(low, high, size=n)]


def random_parameter_sets(
    strategy_type: str, space: Mapping[str, Any], n_samples: int, seed: int = 0
) -> tuple[list[ParameterSet], list[SkippedSet]]:
    """`n_samples` seeded draws from `space` (see the module docstring); `(valid sets, skipped sets)`."""
    if not isinstance(space, Mapping) or not space:
        raise InvalidArgument("space must map parameter names to a list or a range", field="space")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or not 1 <= n_samples <= MAX_SETS:
        raise InvalidArgument(f"must be an integer in [1, {MAX_SETS}], got {n_samples!r}", field="n_samples")
    model = _check_names(strategy_type, list(space), "space")
    rng = np.random.default_rng(seed)
    columns = {
        name: _sample_spec(name, space[name], field.annotation, n_samples, rng)
        for name, field in model.model_fields.items()
        if name in space
    }
    raw = [{name: columns[name][i] for name in columns} for i in range(n_samples)]
    return _build_sets(strategy_type, raw)


# ============================================================================= metric helpers


def _conventions(ppy: float, path: str) -> dict[str, Any]:
    return {
        "periods_per_year": ppy,
        "rf": 0.0,
        "rf_per_period": 0.0,
        "rf_application": "rf / periods_per_year per bar, simple",
        "ddof": 1,
        "compounding": "geometric",
        "drawdown_initial_peak": True,
        "downside_mean_over": "all periods",
        "moments": "population skewness, non-excess kurtosis",
        "psr_benchmark_sharpe": 0.0,
        "trade_basis": "pnl",
        "evaluation": path,
    }


class _Values:
    def __init__(self) -> None:
        self.values: dict[str, float | int | None] = {}
        self.reasons: dict[str, str] = {}

    def put(self, name: str, value: float | int | None, reason: str | None = None) -> None:
        if value is not None and not isinstance(value, int):
            value = float(value)
            if not math.isfinite(value):
                value, reason = None, "not finite (numerical overflow)"
        self.values[name] = value
        if value is None:
            self.reasons[name] = reason or "undefined"


def _trade_values(b: _Values, pnls: np.ndarray) -> None:
    n = int(pnls.size)
    wins, losses = pnls[pnls > 0.0], pnls[pnls < 0.0]
    b.put("total_trades", n)
    b.put("winning_trades", int(wins.size))
    b.put("losing_trades", int(losses.size))
    if n == 0:
        for name in (
            "win_rate",
            "profit_factor",
            "average_win",
            "average_loss",
            "largest_win",
            "largest_loss",
        ):
            b.put(name, None, "no closed trades")
        return
    b.put("win_rate", wins.size / n)
    if losses.size:
        b.put("profit_factor", float(wins.sum()) / abs(float(losses.sum())))
        b.put("average_loss", float(losses.mean()))
        b.put("largest_loss", float(losses.min()))
    else:
        for name in ("profit_factor", "average_loss", "largest_loss"):
            b.put(name, None, "no losing trades")
    if wins.size:
        b.put("average_win", float(wins.mean()))
        b.put("largest_win", float(wins.max()))
    else:
        b.put("average_win", None, "no winning trades")
        b.put("largest_win", None, "no winning trades")


def _subset(ms: MetricSet, path: str) -> MetricSet:
    values = {k: ms.values[k] for k in TRIAL_METRICS if k in ms.values}
    reasons = {k: ms.reasons[k] for k in values if k in ms.reasons}
    conventions = {**dict(ms.conventions), "evaluation": path}
    return MetricSet(values=values, reasons=reasons, conventions=conventions)


# ============================================================================= the batch kernel


class _Unsupported(Exception):
    """The kernel cannot certify this input: evaluate with run_backtest instead."""


def _stationary(a: np.ndarray, v: float, c: float) -> np.ndarray:
    """`k*(v)`: the fill-cost fraction of a target `v` held forever, for every bar (fixed point).

    "Forever" starts before bar 0, which therefore trades nothing (`k*_0 = 0`);
    only bars at least `D` bars into a run read the sequence, so its start is
    immaterial. For `v = 1` (all in, no cash) the fixed point is exactly 0.
    """
    n = a.size
    k = np.zeros(n)
    if c == 0.0 or v == 0.0:
        return k
    va = v * a
    for _ in range(400):
        g = (1.0 - v - k[:-1]) + va[1:]
        if not (g > 0).all():
            raise _Unsupported("the account value reaches 0 holding the target")
        new = np.empty(n)
        new[0] = 0.0
        new[1:] = c * np.abs(v - va[1:] / g)
        if np.max(np.abs(new - k)) <= _TOL_K:
            return new
        k = new
    raise _Unsupported("the stationary cost sequence did not converge")


def _depth(a: np.ndarray, v: float, c: float) -> int:
    """Bars after which a run's cost sequence equals the stationary one to below `_TOL_K`."""
    if c == 0.0 or v == 0.0:
        return 1
    g_lo = float(np.min(1.0 - v + v * a[1:])) - 4.0 * c * (abs(v) + 1.0) if a.size > 1 else 1.0
    if not g_lo > 0.05:
        raise _Unsupported("a bar's move could wipe out the account: no contraction bound")
    a_hi = float(np.max(a[1:])) if a.size > 1 else 1.0
    rho = c * abs(v) * a_hi / (g_lo * g_lo)
    if rho >= 0.5:
        raise _Unsupported("costs too large for the contraction bound")
    k_max = c * (abs(v) + abs(v) * a_hi / g_lo)
    if rho == 0.0 or k_max <= _TOL_K:
        return 1
    return max(1, math.ceil(math.log(_TOL_K / k_max) / math.log(rho)) + 1)


def _range_stats(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max, min and max drawdown (`min_{lo<=u<=s<=hi} x_s - x_u`) of `x` over inclusive ranges.

    A disjoint sparse table built only for the levels the queries need: for
    a range that straddles the midpoint of a block of size `2^j`, the left
    part's suffix statistics and the right part's prefix statistics
    combine as `mdd = min(mdd_L, mdd_R, min_R - max_L)`.
    """
    mx = x[lo].copy()
    mn = mx.copy()
    md = np.zeros(lo.size)
    q = np.flatnonzero(hi > lo)
    if q.size == 0:
        return mx, mn, md
    a, b = lo[q], hi[q]
    level = np.frexp((a ^ b).astype(np.float64))[1]
    n = x.size
    for j in np.unique(level):
        j = int(j)
        half = 1 << (j - 1)
        size = 2 * half
        m = -(-n // size) * size
        xp = np.empty(m)
        xp[:n] = x
        xp[n:] = x[-1]
        blocks = xp.reshape(-1, 2, half)
        left = blocks[:, 0, :]
        right = blocks[:, 1, :]
        rev = left[:, ::-1]
        smax = np.maximum.accumulate(rev, axis=1)[:, ::-1]
        smin = np.minimum.accumulate(rev, axis=1)[:, ::-1]
        smdd = np.minimum.accumulate((smin - left)[:, ::-1], axis=1)[:, ::-1]
        pmax = np.maximum.accumulate(right, axis=1)
        pmin = np.minimum.accumulate(right, axis=1)
        pmdd = np.minimum.accumulate(right - pmax, axis=1)
        sel = np.flatnonzero(level == j)
        ia, ib = a[sel], b[sel]
        blk = ia >> j
        la = ia - blk * size
        lb = ib - blk * size - half
        lmax, lmin, lmdd = smax[blk, la], smin[blk, la], smdd[blk, la]
        rmax, rmin, rmdd = pmax[blk, lb], pmin[blk, lb], pmdd[blk, lb]
        out = q[sel]
        mx[out] = np.maximum(lmax, rmax)
        mn[out] = np.minimum(lmin, rmin)
        md[out] = np.minimum(np.minimum(lmdd, rmdd), rmin - lmax)
    return mx, mn, md


class _Stationary:
    """Per target value: `k*`, the stationary returns, and (computed on first use) the prefix
    sums of their powers and their log level (index s+1 = through bar s)."""

    def __init__(self, k: np.ndarray, ret: np.ndarray) -> None:
        self.k = k
        self.ret = ret
        self._sums: dict[str, np.ndarray] | None = None
        self._means: dict[str, float] = {}
        self._level: np.ndarray | None = None

    def _build(self) -> dict[str, np.ndarray]:
        ret = self.ret
        logr = np.log1p(ret)
        r2 = ret * ret
        sums = {}
        for name, values in (
            ("r1", ret),
            ("r2", r2),
            ("r3", r2 * ret),
            ("r4", r2 * r2),
            ("neg2", np.where(ret < 0.0, r2, 0.0)),
            ("log", logr),
        ):
            # prefix sums of the centred values: they wander like a random walk instead of
            # growing with T, so a range sum keeps ~1e-15 absolute accuracy.
            mu = float(values.mean())
            p = np.zeros(ret.size + 1)
            np.cumsum(values - mu, out=p[1:])
            sums[name] = p
            self._means[name] = mu
        self._level = np.cumsum(logr)
        self._sums = sums
        return sums

    @property
    def log_level(self) -> np.ndarray:
        if self._level is None:
            self._build()
        assert self._level is not None
        return self._level

    def range_sum(self, name: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Sums of the stationary `name` values over the inclusive bar ranges `[lo, hi]`."""
        sums = self._sums if self._sums is not None else self._build()
        return sums[name][hi + 1] - sums[name][lo] + self._means[name] * (hi - lo + 1)


_POWERS = ("r1", "r2", "r3", "r4", "neg2", "log")


class _Kernel:
    """The batch evaluation of K target sequences on one symbol (see the module docstring)."""

    def __init__(self, close: np.ndarray, config: EngineConfig, size: float) -> None:
        if not np.isfinite(close).all():
            raise _Unsupported("the window has missing closes")
        self.n_bars = int(close.size)
        self.lag = config.execution_lag
        self.c = config.cost_rate
        self.size = size
        self.capital = config.initial_capital
        a = np.ones(self.n_bars)
        a[1:] = close[1:] / close[:-1]
        self.a = a
        self._stat: dict[int, _Stationary] = {}
        self._depth: dict[int, int] = {}

    def depth(self, side: int) -> int:
        """Bars of a run of target `side * size` computed exactly before the stationary sequence takes over."""
        if side == 0:
            return 1
        got = self._depth.get(side)
        if got is None:
            got = _depth(self.a, side * self.size, self.c)
            self._depth[side] = got
        return got

    def stationary(self, side: int) -> _Stationary:
        got = self._stat.get(side)
        if got is not None:
            return got
        v = side * self.size
        a = self.a
        k = _stationary(a, v, self.c)
        ret = np.zeros(self.n_bars)
        g = (1.0 - v - k[:-1]) + v * a[1:]
        ret[1:] = g * (1.0 - k[1:]) / (1.0 - k[:-1]) - 1.0
        got = _Stationary(k=k, ret=ret)
        self._stat[side] = got
        return got

    # --------------------------------------------------------------------- structure

    def plan(self, sides: np.ndarray) -> _Plan:
        return _Plan(self, sides)


class _Plan:
    """Runs of constant target, their exact heads and stationary tails, for K sequences at once."""

    def __init__(self, kernel: _Kernel, sides: np.ndarray) -> None:
        self.kernel = kernel
        n_sets, n_bars = sides.shape
        self.n_sets = n_sets
        lag = kernel.lag
        width = n_bars - lag
        self.width = width
        self.empty = width <= 0
        if self.empty:
            return
        u = sides[:, :width]
        self.u = u
        starts = np.ones((n_sets, width), dtype=bool)
        starts[:, 1:] = u[:, 1:] != u[:, :-1]
        seg_col, seg_rel = np.nonzero(starts)
        n_seg = seg_col.size
        seg_val = u[seg_col, seg_rel].astype(np.int8)
        last_in_col = np.ones(n_seg, dtype=bool)
        last_in_col[:-1] = seg_col[1:] != seg_col[:-1]
        first_in_col = np.ones(n_seg, dtype=bool)
        first_in_col[1:] = seg_col[1:] != seg_col[:-1]
        seg_end = np.empty(n_seg, dtype=np.int64)
        seg_end[:-1] = seg_rel[1:] - 1
        seg_end[last_in_col] = width - 1
        length = seg_end - seg_rel + 1
        depth = np.ones(n_seg, dtype=np.int64)
        for side in (-1, 1):
            m = seg_val == side
            if m.any():
                depth[m] = kernel.depth(side)
        head = np.minimum(length, depth)
        tail = length > head
        run_start = first_in_col.copy()
        run_start[1:] |= tail[:-1]
        run_id = np.cumsum(run_start) - 1
        run_first_seg = np.flatnonzero(run_start)
        n_runs = run_first_seg.size
        run_last_seg = np.empty(n_runs, dtype=np.int64)
        run_last_seg[:-1] = run_first_seg[1:] - 1
        run_last_seg[-1] = n_seg - 1
        run_len = np.bincount(run_id, weights=head, minlength=n_runs).astype(np.int64)
        run_off = np.zeros(n_runs + 1, dtype=np.int64)
        np.cumsum(run_len, out=run_off[1:])
        self.seg_col, self.seg_rel, self.seg_val = seg_col, seg_rel, seg_val
        self.seg_end, self.seg_head, self.seg_tail = seg_end, head, tail
        self.first_in_col, self.last_in_col = first_in_col, last_in_col
        self.run_id, self.run_first_seg, self.run_last_seg = run_id, run_first_seg, run_last_seg
        self.run_len, self.run_off = run_len, run_off
        self.run_col = seg_col[run_first_seg]
        self.run_rel = seg_rel[run_first_seg]
        self.seg_cell = run_off[run_id] + (seg_rel - self.run_rel[run_id])
        too_long = run_len > _DEPTH_CAP
        self.bad_cols = np.unique(self.run_col[too_long])
        self._cells()

    def _cells(self) -> None:
        """The exact bars: all runs advanced one depth per step (Gauss-Seidel along each run).

        Cells are laid out run by run, each run's cells being the heads of its
        segments in bar order, so per-cell side and bar come from `np.repeat`
        over the segments; only the cost recursion itself walks the depths.
        """
        kern = self.kernel
        lag, c, size, a = kern.lag, kern.c, kern.size, kern.a
        n_cells = int(self.run_off[-1])
        n_runs = self.run_len.size
        head = self.seg_head
        seg_first_cell = np.zeros(self.seg_val.size, dtype=np.int64)
        np.cumsum(head[:-1], out=seg_first_cell[1:])
        within = np.arange(n_cells, dtype=np.int64) - np.repeat(seg_first_cell, head)
        cell_bar = np.repeat(self.seg_rel + lag, head) + within
        cell_v = np.repeat(self.seg_val.astype(np.float64) * size, head)
        cell_a = a[cell_bar]
        # the target held into each cell: the previous cell's, or the previous segment's for a run's first
        cell_vp = np.empty(n_cells)
        cell_vp[1:] = cell_v[:-1]
        run_first_cell = self.run_off[:-1]
        prev_side = np.zeros(n_runs, dtype=np.int8)
        has_prev = self.run_rel > 0
        kp0 = np.zeros(n_runs)
        if has_prev.any():
            idx = np.flatnonzero(has_prev)
            ps = self.seg_val[self.run_first_seg[idx] - 1]
            prev_side[idx] = ps
            for side in (-1, 1):
                m = ps == side
                if m.any():
                    kp0[idx[m]] = kern.stationary(side).k[self.run_rel[idx[m]] - 1 + lag]
        cell_vp[run_first_cell] = prev_side.astype(np.float64) * size
        kk = np.zeros(n_cells)
        kp_out = np.zeros(n_cells)
        active = np.flatnonzero(self.run_len <= _DEPTH_CAP)
        kp = kp0[active]
        d = 0
        while active.size:
            cell = run_first_cell[active] + d
            vp = cell_vp[cell]
            ab = cell_a[cell]
            g = (1.0 - vp - kp) + vp * ab
            k = c * np.abs(cell_v[cell] - vp * ab / np.where(g > 0, g, 1.0))
            kk[cell] = k
            kp_out[cell] = kp
            d += 1
            keep = self.run_len[active] > d
            active, kp = active[keep], k[keep]
        gp = (1.0 - cell_vp - kp_out) + cell_vp * cell_a
        wiped_cells = gp <= 0
        gp[wiped_cells] = 1.0
        hh = cell_vp * cell_a / gp
        ret = gp * (1.0 - kk) / (1.0 - kp_out) - 1.0
        cell_run = np.repeat(np.arange(n_runs), self.run_len)
        ret[wiped_cells] = 0.0
        logr = np.log1p(ret)
        # log levels within each run and their running max / min / max drawdown, one depth at a time
        lvl_before = np.zeros(n_cells)
        level = np.zeros(n_runs)
        peak = np.full(n_runs, -np.inf)
        low = np.full(n_runs, np.inf)
        mdd = np.zeros(n_runs)
        active = np.arange(n_runs)
        d = 0
        while active.size:
            cell = run_first_cell[active] + d
            before = level[active]
            lvl_before[cell] = before
            lv = before + logr[cell]
            top = np.maximum(peak[active], lv)
            level[active] = lv
            peak[active] = top
            low[active] = np.minimum(low[active], lv)
            mdd[active] = np.minimum(mdd[active], lv - top)
            d += 1
            active = active[self.run_len[active] > d]
        self.run_delta, self.run_max, self.run_min, self.run_mdd = level, peak, low, mdd
        self.cell_ret, self.cell_k, self.cell_g, self.cell_kp = ret, kk, gp, kp_out
        self.cell_h, self.cell_lvl, self.cell_log = hh, lvl_before, logr
        self.cell_run = cell_run
        bad = set(self.bad_cols.tolist()) | set(np.unique(self.run_col[cell_run[wiped_cells]]).tolist())
        # a tail must start where the head has settled on the stationary sequence.
        tail_runs = np.flatnonzero(self.seg_tail[self.run_last_seg] & (self.run_len <= _DEPTH_CAP))
        if tail_runs.size:
            last_cell = self.run_off[tail_runs + 1] - 1
            seg = self.run_last_seg[tail_runs]
            tail_side = self.seg_val[seg]
            bar = self.seg_rel[seg] + self.seg_head[seg] - 1 + lag
            for target in (-1, 1):
                m = tail_side == target
                if m.any():
                    ref = kern.stationary(target).k[bar[m]]
                    off = np.abs(kk[last_cell[m]] - ref) > 1e-16
                    bad |= set(np.unique(self.run_col[tail_runs[m][off]]).tolist())
        self.bad_cols = np.array(sorted(bad), dtype=np.int64)

    # --------------------------------------------------------------------- tails

    def tails(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per run: `(has_tail, first bar, last bar, side)` of its last segment's stationary tail."""
        seg = self.run_last_seg
        has = self.seg_tail[seg]
        lag = self.kernel.lag
        first = self.seg_rel[seg] + self.seg_head[seg] + lag
        last = self.seg_end[seg] + lag
        return has, first, last, self.seg_val[seg], seg


def _column_slices(keys: np.ndarray, n_sets: int) -> np.ndarray:
    """`bounds[i]:bounds[i+1]` are the positions of `keys == i` in the sorted `keys`."""
    return np.searchsorted(keys, np.arange(n_sets + 1))


def _dense(plan: _Plan, kern: _Kernel) -> tuple[np.ndarray, np.ndarray]:
    """Per-bar returns and fill-cost fractions `(K, T)` of a certified plan."""
    ret = np.zeros((plan.n_sets, kern.n_bars))
    cost = np.zeros((plan.n_sets, kern.n_bars))
    if plan.empty:
        return ret, cost
    depth = np.arange(plan.cell_ret.size) - plan.run_off[plan.cell_run]
    cols = plan.run_col[plan.cell_run]
    bars = plan.run_rel[plan.cell_run] + depth + kern.lag
    ret[cols, bars] = plan.cell_ret
    cost[cols, bars] = plan.cell_k
    has, first, last, side, _ = plan.tails()
    for s in (-1, 1):
        m = has & (side == s)
        if not m.any():
            continue
        st = kern.stationary(s)
        lengths = last[m] - first[m] + 1
        tcols = np.repeat(plan.run_col[m], lengths)
        offs = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        tbars = np.repeat(first[m], lengths) + offs
        ret[tcols, tbars] = st.ret[tbars]
        cost[tcols, tbars] = st.k[tbars]
    return ret, cost


def kernel_returns(
    sides: np.ndarray, close: np.ndarray, config: EngineConfig, size: float = 1.0
) -> np.ndarray:
    """Per-bar returns `(K, T)` of K target sequences (`size * sides[k]`, decided at t) on one symbol.

    The dense output of the batch kernel, for tests and diagnostics: equal
    to `run_backtest(size * sides[k], close, config=config).returns` to
    rounding. Raises `InvalidArgument` when the kernel does not apply.
    """
    try:
        kern = _Kernel(np.asarray(close, dtype=np.float64).ravel(), config, size)
        plan = kern.plan(np.asarray(sides, dtype=np.int8))
    except _Unsupported as exc:
        raise InvalidArgument(str(exc), field="sides") from None
    if not plan.empty and plan.bad_cols.size:
        raise InvalidArgument(f"the kernel cannot certify sets {plan.bad_cols.tolist()}", field="sides")
    return _dense(plan, kern)[0]


def _kernel_metrics(
    kern: _Kernel, sides: np.ndarray, ppy: float
) -> tuple[list[MetricSet | None], np.ndarray]:
    """Trial metrics of every sequence the kernel certifies (None for the others) and the bad columns."""
    plan = kern.plan(sides)
    n_sets, n_bars = plan.n_sets, kern.n_bars
    conventions = _conventions(ppy, "batch kernel")
    conventions["initial_capital"] = kern.capital
    sums = {name: np.zeros(n_sets) for name in _POWERS}
    out: list[MetricSet | None] = [None] * n_sets
    if plan.empty:
        for i in range(n_sets):
            out[i] = _flat_metrics(n_bars, ppy, kern.capital, conventions)
        return out, np.zeros(0, dtype=np.int64)
    # -- sums over the exact cells
    cell_col = plan.run_col[plan.cell_run]
    r = plan.cell_ret
    r2 = r * r
    for name, values in (
        ("r1", r),
        ("r2", r2),
        ("r3", r2 * r),
        ("r4", r2 * r2),
        ("neg2", np.where(r < 0.0, r2, 0.0)),
        ("log", plan.cell_log),
    ):
        sums[name] += np.bincount(cell_col, weights=values, minlength=n_sets)
    # -- stationary tails: prefix sums and range statistics of the log level
    n_runs = plan.run_len.size
    has, first, last, side, _ = plan.tails()
    tail_delta = np.zeros(n_runs)
    tail_max = np.zeros(n_runs)
    tail_min = np.zeros(n_runs)
    tail_mdd = np.zeros(n_runs)
    for s in (-1, 1):
        m = np.flatnonzero(has & (side == s))
        if m.size == 0:
            continue
        st = kern.stationary(s)
        lo, hi = first[m], last[m]
        cols = plan.run_col[m]
        for name in _POWERS:
            sums[name] += np.bincount(cols, weights=st.range_sum(name, lo, hi), minlength=n_sets)
        lvl = st.log_level
        base = lvl[lo - 1]
        mx, mn, md = _range_stats(lvl, lo, hi)
        tail_delta[m] = st.range_sum("log", lo, hi)
        tail_max[m] = mx - base
        tail_min[m] = mn - base
        tail_mdd[m] = md
    # -- compose the pieces of each column: run head, its tail, next run head, ...
    run_bounds = _column_slices(plan.run_col, n_sets)
    run_base = np.zeros(n_runs)
    mdd_log = np.zeros(n_sets)
    peak_log = np.zeros(n_sets)
    for col in range(n_sets):
        r0, r1 = run_bounds[col], run_bounds[col + 1]
        if r1 == r0:
            continue
        k = r1 - r0
        delta = np.zeros(2 * k)
        pmax = np.zeros(2 * k)
        pmin = np.zeros(2 * k)
        pmdd = np.zeros(2 * k)
        delta[0::2], pmax[0::2], pmin[0::2], pmdd[0::2] = (
            plan.run_delta[r0:r1],
            plan.run_max[r0:r1],
            plan.run_min[r0:r1],
            plan.run_mdd[r0:r1],
        )
        delta[1::2], pmax[1::2], pmin[1::2], pmdd[1::2] = (
            tail_delta[r0:r1],
            tail_max[r0:r1],
            tail_min[r0:r1],
            tail_mdd[r0:r1],
        )
        present = np.ones(2 * k, dtype=bool)
        present[1::2] = has[r0:r1]
        idx = np.flatnonzero(present)
        dl, mxp, mnp, mdp = delta[idx], pmax[idx], pmin[idx], pmdd[idx]
        base = np.zeros(idx.size)
        np.cumsum(dl[:-1], out=base[1:])
        top = base + mxp
        peak_before = np.zeros(idx.size)
        if idx.size > 1:
            np.maximum.accumulate(top[:-1], out=peak_before[1:])
        np.maximum(peak_before, 0.0, out=peak_before)
        mdd_log[col] = min(0.0, float(np.min(base + mnp - peak_before)), float(np.min(mdp)))
        peak_log[col] = max(0.0, float(np.max(top)))
        run_base[r0:r1] = base[(idx % 2) == 0]
    # -- closed trades: PnL from the account values at the entry and exit bars
    seg_nz = plan.seg_val != 0
    closed = seg_nz & ~plan.last_in_col
    j = np.flatnonzero(closed)
    pnl = np.zeros(0)
    pnl_col = plan.seg_col[j]
    if j.size:
        b = plan.seg_cell[j]
        x = plan.seg_cell[j + 1]
        lvl_b = run_base[plan.run_id[j]] + plan.cell_lvl[b]
        lvl_x = run_base[plan.run_id[j + 1]] + plan.cell_lvl[x]
        # the exit cell's level sits in its own run; a tail between entry and exit is in the bases.
        g_b = plan.cell_g[b] / (1.0 - plan.cell_kp[b])
        g_x = np.exp(lvl_x - lvl_b) * plan.cell_g[x] / (1.0 - plan.cell_kp[x])
        w_b = plan.seg_val[j].astype(np.float64) * kern.size
        h_b = plan.cell_h[b]
        flip_in = ~plan.first_in_col[j] & (plan.seg_val[np.maximum(j - 1, 0)] != 0)
        share_open = np.where(flip_in, np.abs(w_b) / (np.abs(h_b) + np.abs(w_b)), 1.0)
        w_x = plan.seg_val[j + 1].astype(np.float64) * kern.size
        h_x = plan.cell_h[x]
        flip_out = w_x != 0
        with np.errstate(invalid="ignore", divide="ignore"):
            share_close = np.where(flip_out, np.abs(h_x) / (np.abs(h_x) + np.abs(w_x)), 1.0)
        equity_before = kern.capital * np.exp(lvl_b)
        pnl = equity_before * (
            g_x * (1.0 - share_close * plan.cell_k[x]) - g_b * (1.0 - (1.0 - share_open) * plan.cell_k[b])
        )
    trade_bounds = _column_slices(pnl_col, n_sets)
    has_position = np.bincount(plan.seg_col[seg_nz], minlength=n_sets) > 0
    bad = set(plan.bad_cols.tolist())
    for col in range(n_sets):
        if col in bad:
            continue
        if not has_position[col]:
            out[col] = _flat_metrics(n_bars, ppy, kern.capital, conventions)
            continue
        col_sums = {name: float(sums[name][col]) for name in _POWERS}
        out[col] = _metrics_from_sums(
            n_bars,
            ppy,
            col_sums,
            float(mdd_log[col]),
            float(peak_log[col]),
            pnl[trade_bounds[col] : trade_bounds[col + 1]],
            kern.capital,
            conventions,
        )
    return out, plan.bad_cols


def _flat_metrics(n: int, ppy: float, capital: float, conventions: dict[str, Any]) -> MetricSet:
    """The metrics of an account that never trades (every return 0)."""
    b = _Values()
    b.put("n_periods", n)
    b.put("total_return", 0.0)
    b.put("annualized_return", 0.0)
    b.put("volatility", 0.0 if n >= 2 else None, None if n >= 2 else "fewer than 2 periods")
    b.put("downside_volatility", 0.0)
    b.put("max_drawdown", 0.0)
    reason = "zero variance" if n >= 2 else "fewer than 2 periods"
    b.put("sharpe", None, reason)
    b.put("sortino", None, "no downside deviation (no period below the risk-free rate)" if n >= 2 else reason)
    b.put("calmar", None, "no drawdown")
    for name in ("skewness", "kurtosis", "probabilistic_sharpe"):
        b.put(name, None, reason)
    _trade_values(b, np.zeros(0))
    b.put("final_value", capital)
    b.put("peak_value", capital)
    return MetricSet(values=b.values, reasons=b.reasons, conventions=conventions)


def _metrics_from_sums(
    n: int,
    ppy: float,
    s: dict[str, float],
    mdd_log: float,
    peak_log: float,
    pnls: np.ndarray,
    capital: float,
    conventions: dict[str, Any],
) -> MetricSet:
    b = _Values()
    b.put("n_periods", n)
    growth = math.exp(s["log"])
    b.put("total_return", math.expm1(s["log"]))
    b.put("annualized_return", math.expm1(s["log"] * ppy / n))
    mean = s["r1"] / n
    var = (s["r2"] - s["r1"] * mean) / (n - 1) if n >= 2 else 0.0
    std = math.sqrt(var) if var > 0 else 0.0
    if n >= 2:
        b.put("volatility", std * math.sqrt(ppy))
    else:
        b.put("volatility", None, "fewer than 2 periods")
    downside = math.sqrt(s["neg2"] / n) * math.sqrt(ppy)
    b.put("downside_volatility", downside)
    max_dd = math.expm1(mdd_log)
    b.put("max_drawdown", max_dd)
    sharpe: float | None = None
    if n < 2:
        b.put("sharpe", None, "fewer than 2 periods")
    elif std <= 0:
        b.put("sharpe", None, "zero variance")
    else:
        sharpe = mean / std * math.sqrt(ppy)
        b.put("sharpe", sharpe)
    if n < 2:
        b.put("sortino", None, "fewer than 2 periods")
    elif downside == 0.0:
        b.put("sortino", None, "no downside deviation (no period below the risk-free rate)")
    else:
        b.put("sortino", mean * ppy / downside)
    ann = b.values["annualized_return"]
    if max_dd == 0.0:
        b.put("calmar", None, "no drawdown")
    elif ann is None:
        b.put("calmar", None, b.reasons.get("annualized_return", "undefined"))
    else:
        b.put("calmar", float(ann) / abs(max_dd))
    m2 = s["r2"] / n - mean * mean
    if n < 2 or std <= 0 or m2 <= 0:
        reason = "fewer than 2 periods" if n < 2 else "zero variance"
        for name in ("skewness", "kurtosis", "probabilistic_sharpe"):
            b.put(name, None, reason)
    else:
        m3 = s["r3"] / n - 3 * mean * s["r2"] / n + 2 * mean**3
        m4 = s["r4"] / n - 4 * mean * s["r3"] / n + 6 * mean * mean * s["r2"] / n - 3 * mean**4
        skew, kurt = m3 / m2**1.5, m4 / (m2 * m2)
        b.put("skewness", skew)
        b.put("kurtosis", kurt)
        assert sharpe is not None
        sr = sharpe / math.sqrt(ppy)
        radicand = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
        if radicand > 0:
            b.put("probabilistic_sharpe", float(norm.cdf(sr * math.sqrt(n - 1) / math.sqrt(radicand))))
        else:
            b.put(
                "probabilistic_sharpe",
                None,
                "degenerate return distribution (zero Sharpe estimator variance)",
            )
    _trade_values(b, pnls)
    b.put("final_value", capital * growth)
    b.put("peak_value", capital * max(1.0, math.exp(peak_log)))
    return MetricSet(values=b.values, reasons=b.reasons, conventions=conventions)


# ============================================================================= evaluation


def evaluate_sides(
    sides: np.ndarray,
    close: np.ndarray,
    *,
    dates: Any,
    symbols: Sequence[str],
    config: EngineConfig,
    open: np.ndarray | None = None,
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
) -> tuple[list[MetricSet | AlphaSwarmError], str]:
    """Trial metrics of K rule position sequences `sides` `(K, T, N)` in {-1, 0, +1} on one window.

    Set k trades `sides[k] / N` (equal capital per symbol) with `run_backtest`'s
    accounting; the batch kernel runs where it applies, `run_backtest` per
    set elsewhere. Returns one `MetricSet` (`TRIAL_METRICS`) per set, or the
    error that made its backtest fail, and a note on the path taken.
    """
    sides = np.asarray(sides, dtype=np.int8)
    if sides.ndim == 2:
        sides = sides[:, :, None]
    n_sets, n_bars, n_syms = sides.shape
    px = np.asarray(close, dtype=np.float64).reshape(n_bars, n_syms)
    stamps = np.asarray(dates)
    ppy = config.periods_per_year or infer_periods_per_year(stamps)
    results: list[MetricSet | AlphaSwarmError | None] = [None] * n_sets
    size = 1.0 / n_syms
    if config.max_gross_leverage is not None:
        size = min(size, config.max_gross_leverage)
    why = kernel_applies(config, n_syms)
    pending = list(range(n_sets))
    if why is None and n_bars >= 2:
        try:
            kern = _Kernel(px[:, 0], config, size)
            metrics, bad = _kernel_metrics(kern, sides[:, :, 0], ppy)
            for i, ms in enumerate(metrics):
                results[i] = ms
            pending = [int(i) for i in bad]
            why = f"{len(pending)} set(s) not certified by the kernel" if pending else None
        except _Unsupported as exc:
            why = str(exc)
    for i in pending:
        try:
            out = run_backtest(
                sides[i].astype(np.float64) / n_syms,
                px,
                dates=stamps,
                symbols=symbols,
                config=config,
                open=open,
                high=high,
                low=low,
            )
            results[i] = _subset(out.metrics, "run_backtest")
        except AlphaSwarmError as exc:
            results[i] = exc
    path = "batch kernel" if not pending else f"run_backtest per set ({why})"
    if pending and len(pending) < n_sets:
        path = f"batch kernel, run_backtest for {len(pending)} set(s) ({why})"
    assert all(r is not None for r in results)
    return results, path  # type: ignore[return-value]


# ============================================================================= ranking and p-values


def rank_values(values: Sequence[float | None]) -> list[int | None]:
    """Ranks 1..m of the defined values, larger first, ties by position; None stays unranked."""
    order = sorted((i for i, v in enumerate(values) if v is not None), key=lambda i: (-float(values[i]), i))  # type: ignore[arg-type]
    ranks: list[int | None] = [None] * len(values)
    for r, i in enumerate(order, start=1):
        ranks[i] = r
    return ranks


def deflated_p_values(
    sharpes_per_period: Sequence[float | None],
    n_obs: int,
    skews: Sequence[float | None],
    kurtoses: Sequence[float | None],
) -> tuple[list[float | None], list[str | None], float, int]:
    """Per trial `1 - DSR` (module docstring); `(p_values, reasons, sharpe variance, n_trials)`."""
    valid = [(i, float(s)) for i, s in enumerate(sharpes_per_period) if s is not None]
    n_trials = len(valid)
    srs = np.array([s for _, s in valid])
    variance = float(np.var(srs, ddof=1)) if n_trials >= 2 else 0.0
    p_values: list[float | None] = [None] * len(sharpes_per_period)
    reasons: list[str | None] = ["no Sharpe ratio"] * len(sharpes_per_period)
    for i, sr in valid:
        skew, kurt = skews[i], kurtoses[i]
        if skew is None or kurt is None:
            reasons[i] = "no skewness / kurtosis"
            continue
        try:
            dsr = deflated_sharpe_ratio(sr, variance, max(n_trials, 1), n_obs, skew, kurt)
        except InvalidArgument as exc:
            reasons[i] = exc.message
            continue
        p_values[i] = 1.0 - dsr
        reasons[i] = None
    return p_values, reasons, variance, n_trials


# ============================================================================= the search


@dataclass(frozen=True)
class Trial:
    """One evaluated parameter set."""

    parameter_set: int
    params: dict[str, Any]
    metrics: MetricSet
    objective_value: float | None
    objective_reason: str | None
    rank: int | None
    p_value: float | None
    p_value_reason: str | None

    @property
    def is_statistically_significant(self) -> bool:
        return self.p_value is not None and self.p_value < 0.05


@dataclass(frozen=True)
class OptimizationResult:
    """Every evaluated set (in `parameter_set` order), the skipped ones, and how they were evaluated."""

    strategy_type: str
    objective: str
    method: str
    trials: tuple[Trial, ...]
    skipped: tuple[SkippedSet, ...]
    n_trials: int
    sharpe_variance: float
    periods_per_year: float
    n_bars: int
    evaluation: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ranked(self) -> list[Trial]:
        """The trials best first; unranked ones last, by `parameter_set`."""
        return sorted(self.trials, key=lambda t: (t.rank is None, t.rank or 0, t.parameter_set))

    @property
    def best(self) -> Trial | None:
        """The rank-1 trial (None when no set has a defined objective)."""
        top = [t for t in self.trials if t.rank == 1]
        return top[0] if top else None


def optimize(
    strategy_type: str,
    *,
    close: Any,
    dates: Any,
    symbols: Sequence[str],
    grid: Mapping[str, Sequence[Any]] | None = None,
    space: Mapping[str, Any] | None = None,
    method: str = "grid",
    n_samples: int = 50,
    seed: int = 0,
    objective: str = "sharpe",
    config: EngineConfig | None = None,
    open: Any = None,
    high: Any = None,
    low: Any = None,
    volume: Any = None,
    start: int = 0,
    stop: int | None = None,
) -> OptimizationResult:
    """Search `strategy_type`'s parameters on the rows `[start, stop)` (module docstring).

    Positions are computed from the rows `[0, stop)` (the indicators warm up
    on the history before `start`), and each set's account starts flat at
    `start`. `method="random"` samples `space` (or, without one, the lists of
    `grid`). Raises `InvalidArgument` naming `strategy_type`, `objective`,
    `method`, `grid.<name>` / `space.<name>` or `n_samples`; a search with
    no valid set is an error naming `grid` / `space`.
    """
    started = time.perf_counter()
    cfg = config if config is not None else EngineConfig()
    if objective not in OBJECTIVES:
        raise InvalidArgument(
            f"unknown objective {objective!r}; one of {list(OBJECTIVES)}", field="objective"
        )
    if method == "grid":
        if not grid:
            raise InvalidArgument("method 'grid' needs a grid", field="grid")
        sets, skipped = grid_parameter_sets(strategy_type, grid)
        where = "grid"
    elif method == "random":
        if space:
            sets, skipped = random_parameter_sets(strategy_type, space, n_samples, seed)
            where = "space"
        elif grid:
            _check_names(strategy_type, list(grid), "grid")
            sets, skipped = random_parameter_sets(strategy_type, dict(grid), n_samples, seed)
            where = "grid"
        else:
            raise InvalidArgument("method 'random' needs a space (or a grid)", field="space")
    else:
        raise InvalidArgument(f"unknown method {method!r}; 'grid' or 'random'", field="method")
    if not sets:
        first = skipped[0] if skipped else None
        detail = f": {first.field}: {first.message}" if first else ""
        raise InvalidArgument(f"no valid parameter set in the search{detail}", field=where)
    inputs = RuleInputs(close, open=open, high=high, low=low, volume=volume)
    n_total = inputs.shape[0]
    stop = n_total if stop is None else stop
    if not 0 <= start < stop <= n_total:
        raise InvalidArgument(f"window [{start}, {stop}) is outside the {n_total} bars", field="start")
    if stop < n_total:
        inputs = RuleInputs(
            inputs.close_raw[:stop],
            open=None if inputs.open is None else inputs.open[:stop],
            high=None if inputs.high is None else inputs.high[:stop],
            low=None if inputs.low is None else inputs.low[:stop],
            volume=None if inputs.volume is None else inputs.volume[:stop],
        )
    rows = slice(start, stop)
    stamps = np.asarray(dates)[rows]
    n_bars = stop - start
    sides = np.empty((len(sets), n_bars, inputs.shape[1]), dtype=np.int8)
    for i, ps in enumerate(sets):
        sides[i] = rule_sides(strategy_type, ps.params, inputs)[rows]
    ppy = cfg.periods_per_year or (infer_periods_per_year(stamps) if n_bars >= 2 else 252.0)
    results, path = evaluate_sides(
        sides,
        inputs.close_raw[rows],
        dates=stamps,
        symbols=symbols,
        config=cfg,
        open=None if inputs.open is None else inputs.open[rows],
        high=None if inputs.high is None else inputs.high[rows],
        low=None if inputs.low is None else inputs.low[rows],
    )
    evaluated: list[tuple[ParameterSet, MetricSet]] = []
    skipped = list(skipped)
    for ps, res in zip(sets, results, strict=True):
        if isinstance(res, MetricSet):
            evaluated.append((ps, res))
        else:
            skipped.append(SkippedSet(ps.index, ps.values, res.field, f"backtest failed: {res.message}"))
    skipped.sort(key=lambda s: s.index)
    objective_values = [ms.get(objective) for _, ms in evaluated]
    ranks = rank_values(objective_values)  # type: ignore[arg-type]
    sharpes = [ms.get("sharpe") for _, ms in evaluated]
    per_period = [None if s is None else float(s) / math.sqrt(ppy) for s in sharpes]
    p_values, p_reasons, variance, n_trials = deflated_p_values(
        per_period,
        n_bars,
        [ms.get("skewness") for _, ms in evaluated],  # type: ignore[misc]
        [ms.get("kurtosis") for _, ms in evaluated],  # type: ignore[misc]
    )
    trials = tuple(
        Trial(
            parameter_set=ps.index,
            params=ps.values,
            metrics=ms,
            objective_value=None if value is None else float(value),
            objective_reason=ms.reason(objective) if value is None else None,
            rank=rank,
            p_value=p,
            p_value_reason=why,
        )
        for (ps, ms), value, rank, p, why in zip(
            evaluated, objective_values, ranks, p_values, p_reasons, strict=True
        )
    )
    if not trials:
        first = skipped[0]
        raise DataError(f"no parameter set could be backtested: {first.message}", field=first.field or where)
    return OptimizationResult(
        strategy_type=strategy_type,
        objective=objective,
        method=method,
        trials=trials,
        skipped=tuple(skipped),
        n_trials=n_trials,
        sharpe_variance=variance,
        periods_per_year=float(ppy),
        n_bars=n_bars,
        evaluation=path,
        seconds=time.perf_counter() - started,
    )
