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

Evaluation
----------
All K sets run together through the engine's one account loop
(`alphaswarm_backtester.engine.kernels.account_sets`: the loop of
`run_backtest`, compiled, parallel over the sets), whatever the
configuration (open fills, rebalancing, rf, minimum fee, stops, several
symbols); it also books each set's closed-trade PnL as the ledger defines
it. Each set's metrics are `trading_metrics` of its returns, drawdown,
equity and closed trades, as in `run_backtest`, so a trial's numbers are
the numbers of the backtest of that set (`benchmarks/bench_rules.py`
measures the speed).

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

from alphaswarm_backtester.engine.backtest import EQUITY_WIPED_OUT, check_prices
from alphaswarm_backtester.engine.config import EngineConfig
from alphaswarm_backtester.engine.kernels import SET_STATS, account_sets
from alphaswarm_backtester.engine.rules import (
    RULE_STRATEGIES,
    RuleInputs,
    RuleParams,
    is_rule_strategy,
    rule_sides,
    validate_rule_params,
)
from alphaswarm_common.errors import AlphaSwarmError, DataError, InvalidArgument
from alphaswarm_common.metrics import (
    BarStats,
    MetricSet,
    expected_max_sharpe,
    infer_periods_per_year,
    probabilistic_sharpe_ratio,
    trading_metrics,
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


# ============================================================================= evaluation


def _subset(ms: MetricSet, path: str) -> MetricSet:
    values = {k: ms.values[k] for k in TRIAL_METRICS if k in ms.values}
    reasons = {k: ms.reasons[k] for k in values if k in ms.reasons}
    conventions = {**dict(ms.conventions), "evaluation": path}
    return MetricSet(values=values, reasons=reasons, conventions=conventions)


def _check_prices(
    close: np.ndarray, open: np.ndarray | None, high: np.ndarray | None, low: np.ndarray | None
) -> None:
    """`run_backtest`'s checks of the prices (DataError naming the field)."""
    for name, arr in (("close", close), ("open", open), ("high", high), ("low", low)):
        if arr is not None:
            check_prices(arr, name)
    if open is not None and (np.isfinite(open) & np.isnan(close)).any():
        raise DataError("a bar with an open must have a close", field="open")


def kernel_returns(
    sides: np.ndarray, close: np.ndarray, config: EngineConfig, size: float = 1.0
) -> np.ndarray:
    """Per-bar returns `(K, T)` of K target sequences (`size * sides[k]`, decided at t) on one symbol.

    The returns of `account_sets` (for tests and diagnostics): equal to
    `run_backtest(size * sides[k], close, config=config).returns`.
    """
    sides = np.asarray(sides, dtype=np.int8)
    px = np.ascontiguousarray(np.asarray(close, dtype=np.float64).reshape(-1, 1))
    ppy = config.periods_per_year or 252.0
    acc = account_sets(sides[:, :, None], px, config=config, periods_per_year=ppy, size=size)
    return acc.returns


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
    account: the K accounts run together in the compiled kernel
    (`kernels.account_sets`, parallel over the sets, each with its per-bar
    statistics in the same pass), and each set's metrics come from
    `trading_metrics` on those statistics and its closed trades. Returns one `MetricSet`
    (`TRIAL_METRICS`) per set, or the error that made its backtest fail, and
    a note on the path taken.
    """
    sides = np.asarray(sides, dtype=np.int8)
    if sides.ndim == 2:
        sides = sides[:, :, None]
    n_sets, n_bars, n_syms = sides.shape
    px = np.ascontiguousarray(np.asarray(close, dtype=np.float64).reshape(n_bars, n_syms))

    def panel(arr: np.ndarray | None) -> np.ndarray | None:
        return (
            None if arr is None else np.ascontiguousarray(np.asarray(arr, dtype=np.float64).reshape(px.shape))
        )

    opens, highs, lows = panel(open), panel(high), panel(low)
    stamps = np.asarray(dates)
    path = "kernel"
    try:
        _check_prices(px, opens, highs, lows)
        if config.fill_price == "open" and opens is None:
            raise InvalidArgument("fill_price='open' needs open prices", field="open")
    except AlphaSwarmError as exc:
        return [exc] * n_sets, path
    ppy = config.periods_per_year or infer_periods_per_year(stamps)
    size = 1.0 / n_syms
    if config.max_gross_leverage is not None:
        size = min(size, config.max_gross_leverage)
    acc = account_sets(
        sides,
        px,
        config=config,
        periods_per_year=ppy,
        size=size,
        open=opens,
        high=highs,
        low=lows,
        curves=False,
    )
    results: list[MetricSet | AlphaSwarmError] = []
    for k in range(n_sets):
        returns = acc.returns[k]
        if not acc.finite[k]:
            results.append(DataError(EQUITY_WIPED_OUT, field="target_weights"))
            continue
        conventions = {"periods_per_year": ppy, "rf": config.rf, "turnover_penalty": config.turnover_penalty}
        stats = BarStats.from_totals(dict(zip(SET_STATS, acc.stats[k].tolist(), strict=True)), **conventions)
        ms = trading_metrics(
            returns,
            **conventions,
            trade_pnls=acc.pnls[k],
            initial_capital=config.initial_capital,
            bar_stats=stats,  # holds the drawdown and the account's equity
        )
        results.append(_subset(ms, path))
    return results, path


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
    # `deflated_sharpe_ratio` of each trial: the PSR against one SR* (the same for every trial)
    sr0: float | None = None
    sr0_error: str | None = None
    if valid:
        try:
            sr0 = expected_max_sharpe(variance, max(n_trials, 1))
        except InvalidArgument as exc:
            sr0_error = exc.message
    for i, sr in valid:
        skew, kurt = skews[i], kurtoses[i]
        if skew is None or kurt is None:
            reasons[i] = "no skewness / kurtosis"
            continue
        if sr0 is None:
            reasons[i] = sr0_error
            continue
        try:
            dsr = probabilistic_sharpe_ratio(sr, n_obs, skew, kurt, sr0)
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


def build_search(
    strategy_type: str,
    *,
    grid: Mapping[str, Sequence[Any]] | None,
    space: Mapping[str, Any] | None,
    method: str,
    n_samples: int,
    seed: int,
    objective: str = "sharpe",
) -> tuple[list[ParameterSet], list[SkippedSet], str]:
    """The search's valid and skipped sets and the field that names it (`optimize` and its shards share it)."""
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
    return sets, skipped, where


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
    sets, skipped, where = build_search(
        strategy_type,
        grid=grid,
        space=space,
        method=method,
        n_samples=n_samples,
        seed=seed,
        objective=objective,
    )
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
    trials, variance, n_trials = rank_trials(
        [(ps.index, ps.values, ms) for ps, ms in evaluated], objective, ppy, n_bars
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


def rank_trials(
    evaluated: Sequence[tuple[int, Any, MetricSet]], objective: str, ppy: float, n_bars: int
) -> tuple[tuple[Trial, ...], float, int]:
    """`(trials, sharpe variance, n_trials)` of evaluated sets `(index, params, metrics)`: each
    ranked on the objective, with its Deflated-Sharpe p-value over all of them (one place for the
    one-process search and the merge of a sharded one)."""
    objective_values = [ms.get(objective) for _, _, ms in evaluated]
    ranks = rank_values(objective_values)  # type: ignore[arg-type]
    sharpes = [ms.get("sharpe") for _, _, ms in evaluated]
    per_period = [None if s is None else float(s) / math.sqrt(ppy) for s in sharpes]
    p_values, p_reasons, variance, n_trials = deflated_p_values(
        per_period,
        n_bars,
        [ms.get("skewness") for _, _, ms in evaluated],  # type: ignore[misc]
        [ms.get("kurtosis") for _, _, ms in evaluated],  # type: ignore[misc]
    )
    trials = tuple(
        Trial(
            parameter_set=index,
            params=params,
            metrics=ms,
            objective_value=None if value is None else float(value),
            objective_reason=ms.reason(objective) if value is None else None,
            rank=rank,
            p_value=p,
            p_value_reason=why,
        )
        for (index, params, ms), value, rank, p, why in zip(
            evaluated, objective_values, ranks, p_values, p_reasons, strict=True
        )
    )
    return trials, variance, n_trials
