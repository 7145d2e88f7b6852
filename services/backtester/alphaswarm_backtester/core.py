"""The backtester's service layer: one method per use case over a `CatalogWriter` and a `RunTracker`.

`Backtester` runs a signal backtest (`run_backtest`), a rule backtest on a
dataset's prices (`run_rule_backtest`), a parameter search (`optimize`), a
walk-forward test (`walk_forward`), a Monte Carlo resampling
(`monte_carlo`) and a portfolio backtest (`run_portfolio`); `validate_strategy`
checks a strategy section. The inputs are plain dataclasses the gRPC
servicer parses from its requests; the outputs are the engine's results
with the ids the catalog and the tracking server gave them. Nothing here
imports a proto, a channel or MLflow: the catalog is a `CatalogWriter`
(`alphaswarm_backtester.catalog`), the tracking server a `RunTracker`.

Before a use case writes anything it calls `wait(what)` (the servicer checks
there that its caller has not gone away: nothing is half-written for a
caller that has left).

Prices of the price-driven use cases (`PriceSource`): the dataset
`dataset_cfg` is loaded with `load_panel` (its `start_date` / `end_date`
cut it; its segments are not used), the symbols traded are `symbols` (else
the dataset's `symbols`, else all of them). The backtest window is
`backtest_cfg.start_date`..`end_date` (default: every loaded bar); the bars
before the window warm the indicators up, the bars after it are never read.
Capital is split equally across the symbols (see `engine.rules`). The
catalog's `strategy_type` is the rule's name and `symbol` the symbol, or
`PORTFOLIO` for several.

Idempotency: a request's `request_id` keys every catalog save it makes,
suffixed per save (`<id>:best` / `<id>:sets` for an optimization,
`<id>:parent` / `<id>:windows` for a walk-forward), so a retried request
stores each row once and returns the same ids. The rows' dates are left to
the catalog (the time of the first save) so a replay sends the same rows; a
backtest row's id is derived from its key (UUIDv5) and it records the
fingerprint of the request, so a replay whose only difference is the
measured execution time gets the stored id back, while another request
reusing the key is still refused (ALREADY_EXISTS).

Domain rules of the catalog rows: a walk-forward window is statistically
significant when its out-of-sample probabilistic Sharpe ratio exceeds
`SIGNIFICANT_PSR` (0.95) and profitable when its out-of-sample total return
is positive; window and step sizes are recorded in months of
`BARS_PER_MONTH` (21) bars.

The tracking run of a backtest (`backtest`, a child of the pipeline's
parent run when given) holds the parameters, the defined metrics and the
series as data (`alphaswarm_backtester.series`: `series.parquet` and
`equity.png`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from alphaswarm_backtester.catalog import (
    BacktestEntry,
    CatalogWriter,
    OptimizationEntry,
    PortfolioEntry,
    WalkForwardEntry,
)
from alphaswarm_backtester.engine import (
    ALPHA_STRATEGIES,
    RULE_STRATEGIES,
    BacktestOutput,
    EngineConfig,
    OptimizationResult,
    RuleParams,
    Trial,
    WalkForwardResult,
    is_rule_strategy,
    optimize,
    run_backtest,
    run_rule_backtest,
    validate_rule_params,
    validate_strategy_params,
    walk_forward,
    weights_from_signal,
)
from alphaswarm_backtester.engine.montecarlo import (
    DEFAULT_BLOCK_LENGTH,
    DEFAULT_N_SIMULATIONS,
    MonteCarloResult,
    monte_carlo,
)
from alphaswarm_backtester.engine.portfolio import (
    LegWeights,
    PortfolioBacktest,
    PortfolioLeg,
    run_portfolio_backtest,
)
from alphaswarm_backtester.engine.walkforward import window_bounds
from alphaswarm_backtester.series import draw_series_png, series_artifacts
from alphaswarm_backtester.sharding import (
    ChunkEvaluation,
    build_search,
    evaluate_parameter_sets,
    merge_evaluations,
    search_size,
)
from alphaswarm_common.config import BacktestConfig, DatasetConfig, StrategyConfig
from alphaswarm_common.data import Panel, load_panel
from alphaswarm_common.errors import AlphaSwarmError, DataError, InvalidArgument
from alphaswarm_common.metrics import MetricSet

__all__ = [
    "BARS_PER_MONTH",
    "SIGNIFICANT_PSR",
    "BacktestRun",
    "Backtester",
    "EvaluateInput",
    "MonteCarloInput",
    "OptimizeInput",
    "OptimizeRun",
    "PortfolioInput",
    "PortfolioRun",
    "PriceSource",
    "Prices",
    "RuleBacktestInput",
    "RunTracker",
    "SignalBacktestInput",
    "WalkForwardInput",
    "WalkForwardRun",
    "engine_config",
    "is_significant_window",
]

#: namespace of the catalog ids derived from a request_id (UUIDv5).
_ID_NAMESPACE = uuid.UUID("5b0c7a8e-4d4b-4f0e-9d8a-6a1f3c2b7e10")

#: bars per month in the walk-forward catalog rows (`window_size_months = round(bars / 21)`).
BARS_PER_MONTH = 21

#: a walk-forward window whose out-of-sample probabilistic Sharpe ratio exceeds this is significant.
SIGNIFICANT_PSR = 0.95

DEFAULT_PERIODS_PER_YEAR = 252.0
_NAME_LENGTH = 100  # mcp_backtest_portfolios.portfolio_name is VARCHAR(100)

Wait = Callable[[str], None]


def _no_wait(_what: str) -> None:
    return None


class RunTracker(Protocol):
    """The tracking server as the use cases see it (`alphaswarm_common.tracking.Tracker` is one)."""

    def ensure_experiment(self, name: str) -> str: ...

    def create_run(
        self,
        experiment_id: str,
        run_name: str,
        *,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str: ...

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, run_id: str, metrics: Mapping[str, float | None], *, step: int = 0) -> None: ...

    def log_files(self, run_id: str, files: Mapping[str, bytes]) -> None: ...

    def end_run(self, run_id: str, *, failed: bool = False) -> None: ...


class TearsheetLogger(Protocol):
    """Logs a signal backtest's tearsheet on its MLflow run (a view of the result, never part of it)."""

    def __call__(
        self,
        run_id: str,
        out: BacktestOutput,
        *,
        close: np.ndarray,
        signal: np.ndarray,
        benchmark_returns: np.ndarray | None,
        strategy_type: str,
        strategy_params: Mapping[str, Any],
        backtest: Mapping[str, Any],
    ) -> None: ...


def engine_config(cfg: BacktestConfig) -> EngineConfig:
    """The engine config of a backtest section, engine-only risk options included."""
    return EngineConfig.from_backtest_config(
        cfg,
        execution_lag=cfg.execution_lag,
        min_fee=cfg.min_fee,
        max_gross_leverage=cfg.max_gross_leverage,
        stop_loss=cfg.stop_loss,
        take_profit=cfg.take_profit,
    )


def is_significant_window(out_of_sample: MetricSet | None) -> bool:
    """The catalog's significance of a walk-forward window (module docstring)."""
    psr = out_of_sample.get("probabilistic_sharpe") if out_of_sample is not None else None
    return psr is not None and float(psr) > SIGNIFICANT_PSR


def _day(value: Any) -> str:
    return str(np.datetime_as_string(np.datetime64(value, "D"), unit="D"))


def _days(dates: np.ndarray) -> list[str]:
    return [str(d) for d in np.asarray(dates).astype("datetime64[D]")]


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def _key(request_id: str, suffix: str) -> str:
    return f"{request_id}:{suffix}" if request_id else ""


def require_rule(strategy_type: str, field: str) -> None:
    """InvalidArgument naming `field` unless `strategy_type` is a rule strategy."""
    if is_rule_strategy(strategy_type):
        return
    if strategy_type in ALPHA_STRATEGIES:
        raise InvalidArgument(
            f"{strategy_type!r} is an alpha strategy: it turns a signal (predictions) into weights and "
            "needs one; use RunBacktest with the signal, or a rule strategy here "
            f"({', '.join(sorted(RULE_STRATEGIES))})",
            field=field,
        )
    raise InvalidArgument(
        f"unknown strategy {strategy_type!r}; rule strategies: {sorted(RULE_STRATEGIES)}", field=field
    )


# ----------------------------------------------------------------------------- prices of a PriceSource


@dataclass(frozen=True)
class PriceSource:
    """A dataset (required; None is refused naming `source.dataset_cfg`) and the symbols to trade
    in it (empty: the dataset's own list)."""

    dataset_cfg: DatasetConfig | None
    symbols: Sequence[str] = ()


@dataclass(frozen=True)
class Prices:
    """The loaded panel (rows `[0, stop)`), the backtest window `[start, stop)` and its benchmark."""

    panel: Panel
    start: int
    stop: int
    benchmark: np.ndarray | None
    dataset_fingerprint: str = ""  # of the data as the dataset config names it

    @property
    def symbols(self) -> list[str]:
        return list(self.panel.symbols)

    @property
    def symbol_label(self) -> str:
        return self.panel.symbols[0] if self.panel.n_symbols == 1 else "PORTFOLIO"

    def arrays(self) -> dict[str, Any]:
        p = self.panel
        return {
            "close": p.close,
            "open": p.open,
            "high": p.high,
            "low": p.low,
            "volume": p.volume,
            "dates": p.dates,
            "symbols": self.symbols,
        }


def load_prices(source: PriceSource, backtest_cfg: BacktestConfig, engine_cfg: EngineConfig) -> Prices:
    """Load a `PriceSource` (module docstring); errors name `source.*` / `backtest_cfg.*` fields."""
    dataset_cfg = source.dataset_cfg
    if dataset_cfg is None:
        raise InvalidArgument("a dataset is required", field="source.dataset_cfg")
    wanted = list(source.symbols)
    if len(set(wanted)) != len(wanted):
        raise InvalidArgument("symbols must be unique", field="source.symbols")
    try:
        full = load_panel(dataset_cfg.model_copy(update={"symbols": None}))
    except AlphaSwarmError as exc:
        if exc.field and exc.field.startswith("dataset_cfg"):
            exc.field = f"source.{exc.field}"
        raise
    allowed = dataset_cfg.symbols
    for i, symbol in enumerate(wanted):
        if symbol not in full.symbols:
            raise DataError(
                f"{symbol!r} is not a symbol of dataset {dataset_cfg.source!r}", field=f"source.symbols[{i}]"
            )
        if allowed is not None and symbol not in allowed:
            raise InvalidArgument(
                f"{symbol!r} is not one of source.dataset_cfg.symbols", field=f"source.symbols[{i}]"
            )
    symbols = wanted or list(allowed or full.symbols)
    for i, symbol in enumerate(symbols):
        if symbol not in full.symbols:
            raise DataError(
                f"{symbol!r} is not a symbol of dataset {dataset_cfg.source!r}",
                field=f"source.dataset_cfg.symbols[{i}]",
            )
    bench_symbol = backtest_cfg.benchmark
    if bench_symbol and bench_symbol not in full.symbols:
        raise InvalidArgument(
            f"{bench_symbol!r} is not a symbol of dataset {dataset_cfg.source!r}",
            field="backtest_cfg.benchmark",
        )
    panel = full.select(symbols)
    dates = panel.dates
    rows = np.ones(dates.size, dtype=bool)
    if backtest_cfg.start_date is not None:
        rows &= dates >= np.datetime64(backtest_cfg.start_date, "D")
    if backtest_cfg.end_date is not None:
        rows &= dates <= np.datetime64(backtest_cfg.end_date, "D")
    if rows.sum() < 2:
        field = "backtest_cfg.start_date" if backtest_cfg.start_date else "backtest_cfg.end_date"
        if not (backtest_cfg.start_date or backtest_cfg.end_date):
            field = "source.dataset_cfg.start_date"
        raise DataError(f"the backtest window has {int(rows.sum())} bar(s); it needs at least 2", field=field)
    start, stop = int(np.argmax(rows)), int(rows.size - np.argmax(rows[::-1]))
    if stop < panel.n_dates:
        panel = panel.rows(slice(0, stop))
    if engine_cfg.fill_price == "open" and panel.open is None:
        raise InvalidArgument(
            f"dataset {dataset_cfg.source!r} has no open prices", field="backtest_cfg.fill_price"
        )
    benchmark = None
    if bench_symbol:
        bench_close = full.close[:stop, full.symbol_index(bench_symbol)]
        benchmark = np.zeros(stop - start)
        with np.errstate(divide="ignore", invalid="ignore"):
            benchmark[1:] = bench_close[start + 1 : stop] / bench_close[start : stop - 1] - 1.0
        if not np.isfinite(benchmark).all():
            raise DataError(
                f"the benchmark {bench_symbol!r} misses a close in the backtest window",
                field="backtest_cfg.benchmark",
            )
    # The data as the dataset config names it (the trainer's and the alpha workflow's fingerprint).
    named = full if allowed is None else full.select(list(allowed))
    return Prices(
        panel=panel, start=start, stop=stop, benchmark=benchmark, dataset_fingerprint=named.fingerprint
    )


def _rule_parameters(
    strategy_type: str,
    params: RuleParams | Mapping[str, Any],
    backtest_cfg: BacktestConfig,
    prices: Prices,
    out: BacktestOutput,
    **extra: Any,
) -> dict[str, Any]:
    values = params.model_dump(mode="json") if isinstance(params, RuleParams) else dict(params)
    return {
        "strategy": {"type": strategy_type, "params": values},
        "backtest": backtest_cfg.model_dump(mode="json"),
        "symbols": prices.symbols,
        "capital_per_symbol": 1.0 / prices.panel.n_symbols,
        "warmup_bars": prices.start,
        "conventions": out.metrics.conventions,
        "dataset_fingerprint": prices.dataset_fingerprint,
        **extra,
    }


# ----------------------------------------------------------------------------- inputs and outputs


@dataclass(frozen=True)
class Recording:
    """Where a use case records its result: the catalog (`persist`) under `request_id`.

    `fingerprint` identifies the request (a hash of its bytes): a replay of
    the same request under the same key gets the stored ids back.
    """

    persist: bool = False
    request_id: str = ""
    fingerprint: str = ""


@dataclass(frozen=True)
class SignalBacktestInput:
    """A signal `(T, N)` on `dates` x `symbols`, its prices (`close`, optional `open`/`high`/`low`)."""

    signal: np.ndarray
    dates: np.ndarray
    symbols: Sequence[str]
    prices: Mapping[str, np.ndarray]
    strategy_cfg: StrategyConfig
    backtest_cfg: BacktestConfig
    benchmark: np.ndarray | None = None
    dataset_fingerprint: str = ""  # of the prices as they arrive (the alpha workflow's dataset)
    recording: Recording = field(default_factory=Recording)
    experiment_id: str = ""
    parent_run_id: str = ""
    task_id: str = ""
    symbol_label: str = ""
    strategy_label: str = ""
    notes: str = ""


@dataclass(frozen=True)
class RuleBacktestInput:
    strategy_cfg: StrategyConfig
    backtest_cfg: BacktestConfig
    source: PriceSource
    recording: Recording = field(default_factory=Recording)
    experiment_id: str = ""
    task_id: str = ""


@dataclass(frozen=True)
class BacktestRun:
    """A backtest's output, its engine time, and its catalog and tracking ids ("" when not recorded)."""

    out: BacktestOutput
    elapsed: float
    backtest_id: str = ""
    run_id: str = ""


@dataclass(frozen=True)
class OptimizeInput:
    strategy_type: str
    backtest_cfg: BacktestConfig
    source: PriceSource
    grid: Mapping[str, Any] | None = None
    space: Mapping[str, Any] | None = None
    method: str = ""
    n_samples: int = 0
    seed: int = 0
    objective: str = ""
    recording: Recording = field(default_factory=Recording)
    #: the search evaluated in chunks (`sharding`); empty: evaluated here in one process.
    chunks: Sequence[ChunkEvaluation] = ()


@dataclass(frozen=True)
class EvaluateInput:
    """The chunk `[first, last)` of the search of an `OptimizeInput` (nothing recorded)."""

    search: OptimizeInput
    first: int
    last: int
    #: the sets evaluated on the in-sample rows of one window of a walk-forward test.
    window: WindowSelector | None = None


@dataclass(frozen=True)
class WindowSelector:
    """One window of a walk-forward test (its parameters and index)."""

    in_sample_bars: int
    out_of_sample_bars: int
    step_bars: int = 0
    anchored: bool = False
    index: int = 0


@dataclass(frozen=True)
class OptimizeRun:
    """Every set ranked (`result`), the set stored (`chosen`, the best or the first ranked) and its backtest."""

    result: OptimizationResult
    chosen: Trial
    best_out: BacktestOutput
    elapsed: float
    backtest_id: str = ""
    optimization_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WalkForwardInput:
    strategy_type: str
    backtest_cfg: BacktestConfig
    source: PriceSource
    grid: Mapping[str, Sequence[Any]]
    objective: str = ""
    in_sample_bars: int = 0
    out_of_sample_bars: int = 0
    step_bars: int = 0
    anchored: bool = False
    recording: Recording = field(default_factory=Recording)
    #: the windows' in-sample searches evaluated in chunks; empty: searched here in one process.
    window_searches: Sequence[ChunkEvaluation] = ()


@dataclass(frozen=True)
class WalkForwardRun:
    result: WalkForwardResult
    dates: np.ndarray
    parent_backtest_id: str = ""
    walk_forward_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MonteCarloInput:
    """Resample `returns`, or the per-bar returns of the stored backtest `backtest_id`.

    Zero means the default (1000 paths, 21-bar blocks, 252 bars a year; for a
    stored backtest, its metrics' `periods_per_year`, and its `rf`).
    """

    returns: np.ndarray | None = None
    backtest_id: str = ""
    n_simulations: int = 0
    block_length: int = 0
    seed: int = 0
    percentiles: Sequence[float] = ()
    periods_per_year: float = 0.0


@dataclass(frozen=True)
class PortfolioInput:
    legs: Sequence[PortfolioLeg]
    dataset_cfg: DatasetConfig
    backtest_cfg: BacktestConfig
    rebalance_frequency: str
    position_sizing_method: str
    max_positions: int | None = None
    portfolio_name: str = ""
    description: str = ""
    recording: Recording = field(default_factory=Recording)


@dataclass(frozen=True)
class PortfolioRun:
    result: PortfolioBacktest
    portfolio_backtest_id: str = ""


def returns_from_equity(equity: np.ndarray, initial_capital: float, backtest_id: str) -> np.ndarray:
    """Per-bar returns `equity[s] / equity[s-1] - 1` with `equity[-1] = initial_capital`."""
    curve = np.asarray(equity, dtype=np.float64).reshape(-1)
    if curve.size < 2 or not np.isfinite(curve).all() or (curve <= 0).any():
        raise DataError(
            f"backtest {backtest_id} has no usable equity curve (needs >= 2 positive finite values)",
            field="backtest_id",
        )
    if not (math.isfinite(initial_capital) and initial_capital > 0):
        raise DataError(f"backtest {backtest_id} has no initial capital", field="backtest_id")
    previous = np.concatenate(([initial_capital], curve[:-1]))
    return curve / previous - 1.0


# ----------------------------------------------------------------------------- the use cases


class Backtester:
    """The use cases (module docstring). `leg_weights` replaces the rule strategies of portfolio legs."""

    def __init__(
        self,
        tracker: RunTracker,
        catalog: CatalogWriter,
        *,
        leg_weights: LegWeights | None = None,
        tearsheet: TearsheetLogger | None = None,
    ) -> None:
        self.tracker = tracker
        self.catalog = catalog
        self.leg_weights = leg_weights
        self.tearsheet = tearsheet

    # ------------------------------------------------------------------ validation
    def validate_strategy(
        self, strategy_cfg: StrategyConfig, backtest_cfg: BacktestConfig, *, n_symbols: int = 0
    ) -> tuple[str, str]:
        """`(kind, params as JSON)` of a valid strategy section; `n_symbols` > 0 adds the universe checks."""
        engine_config(backtest_cfg)
        if is_rule_strategy(strategy_cfg.type):
            return "rule", validate_rule_params(strategy_cfg.type, strategy_cfg.params).model_dump_json()
        if strategy_cfg.type not in ALPHA_STRATEGIES:
            raise InvalidArgument(
                f"unknown strategy {strategy_cfg.type!r}; alpha strategies: {sorted(ALPHA_STRATEGIES)}, "
                f"rule strategies: {sorted(RULE_STRATEGIES)}",
                field="strategy_cfg.type",
            )
        params = validate_strategy_params(strategy_cfg.type, strategy_cfg.params)
        if n_symbols > 0:  # universe-dependent checks (top_k against the symbols) on a probe signal
            probe = np.tile(np.arange(n_symbols, dtype=np.float64), (2, 1))
            weights_from_signal(probe, strategy_cfg.type, strategy_cfg.params)
        return "alpha", params.model_dump_json()

    # ------------------------------------------------------------------ backtests
    def run_backtest(self, req: SignalBacktestInput, wait: Wait = _no_wait) -> BacktestRun:
        """A signal -> an alpha strategy's weights -> the account; logged and stored when asked."""
        strategy_cfg, backtest_cfg = req.strategy_cfg, req.backtest_cfg
        if backtest_cfg.execution_lag is None:
            raise InvalidArgument("execution_lag must be set", field="backtest_cfg.execution_lag")
        if is_rule_strategy(strategy_cfg.type):
            raise InvalidArgument(
                f"{strategy_cfg.type!r} is a rule strategy: it trades on prices, not on a signal; "
                "use RunStrategyBacktest",
                field="strategy_cfg.type",
            )
        engine_cfg = engine_config(backtest_cfg)
        started = time.perf_counter()
        weights = weights_from_signal(
            np.asarray(req.signal, dtype=np.float64),
            strategy_cfg.type,
            strategy_cfg.params,
            rebalance_every=backtest_cfg.rebalance_every,
        )
        out = run_backtest(
            weights,
            req.prices["close"],
            dates=req.dates,
            symbols=list(req.symbols),
            config=engine_cfg,
            open=req.prices.get("open"),
            high=req.prices.get("high"),
            low=req.prices.get("low"),
            benchmark=req.benchmark,
        )
        elapsed = time.perf_counter() - started
        if req.parent_run_id or req.recording.persist:
            wait("the backtest")
        run_id = ""
        if req.parent_run_id:
            run_id = self._log_run(
                experiment_id=req.experiment_id or self.tracker.ensure_experiment("alphaswarm"),
                parent_run_id=req.parent_run_id,
                task_id=req.task_id,
                strategy_type=strategy_cfg.type,
                strategy_params=strategy_cfg.params,
                backtest_cfg=backtest_cfg,
                out=out,
            )
            if self.tearsheet is not None:
                self.tearsheet(
                    run_id,
                    out,
                    close=req.prices["close"],
                    signal=np.asarray(req.signal),
                    benchmark_returns=req.benchmark,
                    strategy_type=req.strategy_label or strategy_cfg.type,
                    strategy_params=strategy_cfg.params,
                    backtest=backtest_cfg.model_dump(mode="json"),
                )
        backtest_id = ""
        if req.recording.persist:
            symbols = list(req.symbols)
            backtest_id = self._save_backtest(
                out,
                req.recording,
                symbol=req.symbol_label or (symbols[0] if len(symbols) == 1 else "PORTFOLIO"),
                strategy_type=req.strategy_label or strategy_cfg.type,
                parameters={
                    "strategy": strategy_cfg.model_dump(mode="json"),
                    "backtest": backtest_cfg.model_dump(mode="json"),
                    "symbols": symbols,
                    "conventions": out.metrics.conventions,
                    **({"dataset_fingerprint": req.dataset_fingerprint} if req.dataset_fingerprint else {}),
                },
                backtest_cfg=backtest_cfg,
                elapsed=elapsed,
                notes=req.notes,
            )
        return BacktestRun(out, elapsed, backtest_id=backtest_id, run_id=run_id)

    def run_rule_backtest(self, req: RuleBacktestInput, wait: Wait = _no_wait) -> BacktestRun:
        """A rule strategy on a dataset's prices; logged (`experiment_id`) and stored when asked."""
        strategy_cfg, backtest_cfg = req.strategy_cfg, req.backtest_cfg
        require_rule(strategy_cfg.type, "strategy_cfg.type")
        params = validate_rule_params(strategy_cfg.type, strategy_cfg.params)
        engine_cfg = engine_config(backtest_cfg)
        prices = load_prices(req.source, backtest_cfg, engine_cfg)
        started = time.perf_counter()
        out = run_rule_backtest(
            strategy_cfg.type,
            params,
            config=engine_cfg,
            start=prices.start,
            stop=prices.stop,
            benchmark=prices.benchmark,
            **prices.arrays(),
        )
        elapsed = time.perf_counter() - started
        if req.experiment_id or req.recording.persist:
            wait("the backtest")
        run_id = ""
        if req.experiment_id:
            run_id = self._log_run(
                experiment_id=req.experiment_id,
                parent_run_id=None,
                task_id=req.task_id,
                strategy_type=strategy_cfg.type,
                strategy_params=params.model_dump(mode="json"),
                backtest_cfg=backtest_cfg,
                out=out,
            )
        backtest_id = ""
        if req.recording.persist:
            backtest_id = self._save_backtest(
                out,
                req.recording,
                symbol=prices.symbol_label,
                strategy_type=strategy_cfg.type,
                parameters=_rule_parameters(strategy_cfg.type, params, backtest_cfg, prices, out),
                backtest_cfg=backtest_cfg,
                elapsed=elapsed,
            )
        return BacktestRun(out, elapsed, backtest_id=backtest_id, run_id=run_id)

    # ------------------------------------------------------------------ searches
    def optimize(self, req: OptimizeInput, wait: Wait = _no_wait) -> OptimizeRun:
        """Grid / random search; the best set's (else the first ranked set's) full backtest."""
        started = time.perf_counter()
        require_rule(req.strategy_type, "strategy_type")
        engine_cfg = engine_config(req.backtest_cfg)
        method = req.method or ("random" if req.space and not req.grid else "grid")
        prices = load_prices(req.source, req.backtest_cfg, engine_cfg)
        if req.chunks:
            window = prices.stop - prices.start
            for i, chunk in enumerate(req.chunks):
                if chunk.n_bars != window:
                    raise InvalidArgument(
                        f"the chunk [{chunk.first}, {chunk.last}) was evaluated on {chunk.n_bars} bars, "
                        f"the backtest window has {window}",
                        field=f"chunks[{i}].n_bars",
                    )
            result = self._merge_chunks(req, method, started)
        else:
            result = optimize(
                req.strategy_type,
                grid=dict(req.grid) if req.grid else None,
                space=dict(req.space) if req.space else None,
                method=method,
                n_samples=req.n_samples or 50,
                seed=req.seed,
                objective=req.objective or "sharpe",
                config=engine_cfg,
                start=prices.start,
                stop=prices.stop,
                **prices.arrays(),
            )
        chosen = result.best or result.ranked[0]
        best_out = run_rule_backtest(
            req.strategy_type,
            chosen.params,
            config=engine_cfg,
            start=prices.start,
            stop=prices.stop,
            benchmark=prices.benchmark,
            **prices.arrays(),
        )
        elapsed = time.perf_counter() - started
        if not req.recording.persist:
            return OptimizeRun(result, chosen, best_out, elapsed)
        wait("the optimization")
        backtest_id, ids = self._save_optimization(req, result, chosen, best_out, prices, elapsed)
        return OptimizeRun(result, chosen, best_out, time.perf_counter() - started, backtest_id, ids)

    def _merge_chunks(self, req: OptimizeInput, method: str, started: float) -> OptimizationResult:
        """The whole search from its chunks: ranks and p-values over every set (`sharding`)."""
        grid = dict(req.grid) if req.grid else None
        n_samples = req.n_samples or 50
        sets, skipped, where = build_search(
            req.strategy_type,
            grid=grid,
            space=dict(req.space) if req.space else None,
            method=method,
            n_samples=n_samples,
            seed=req.seed,
            objective=req.objective or "sharpe",
        )
        return merge_evaluations(
            req.strategy_type,
            req.chunks,
            skipped=skipped,
            n_sets=search_size(method, grid, n_samples),
            objective=req.objective or "sharpe",
            method=method,
            where=where,
            sets=sets,
            started=started,
        )

    def evaluate_parameter_sets(self, req: EvaluateInput) -> ChunkEvaluation:
        """One chunk of a search: per-set trial metrics, nothing ranked, nothing saved. With a
        window, the sets are evaluated on that walk-forward window's in-sample rows."""
        search = req.search
        require_rule(search.strategy_type, "strategy_type")
        engine_cfg = engine_config(search.backtest_cfg)
        method = search.method or ("random" if search.space and not search.grid else "grid")
        prices = load_prices(search.source, search.backtest_cfg, engine_cfg)
        start, stop, index, n_windows = prices.start, prices.stop, 0, 0
        if req.window is not None:
            w = req.window
            bounds = window_bounds(
                prices.stop,
                w.in_sample_bars,
                w.out_of_sample_bars,
                w.step_bars or None,
                w.anchored,
                start=prices.start,
                stop=prices.stop,
            )
            if not 0 <= w.index < len(bounds):
                raise InvalidArgument(
                    f"window {w.index} does not exist; the walk-forward has {len(bounds)} windows",
                    field="window.index",
                )
            start, stop = bounds[w.index][0], bounds[w.index][1]
            index, n_windows = w.index, len(bounds)
        chunk = evaluate_parameter_sets(
            search.strategy_type,
            first=req.first,
            last=req.last,
            grid=dict(search.grid) if search.grid else None,
            space=dict(search.space) if search.space else None,
            method=method,
            n_samples=search.n_samples or 50,
            seed=search.seed,
            config=engine_cfg,
            start=start,
            stop=stop,
            **prices.arrays(),
        )
        return dataclasses.replace(chunk, window_index=index, n_windows=n_windows)

    def _merge_window_searches(self, req: WalkForwardInput) -> dict[int, OptimizationResult]:
        """Each window's in-sample search from its chunks (ranks and p-values over the window's sets)."""
        sets, skipped, where = build_search(
            req.strategy_type,
            grid=dict(req.grid),
            space=None,
            method="grid",
            n_samples=0,
            seed=0,
            objective=req.objective or "sharpe",
        )
        by_window: dict[int, list[ChunkEvaluation]] = {}
        for chunk in req.window_searches:
            by_window.setdefault(chunk.window_index, []).append(chunk)
        n_windows = {c.n_windows for c in req.window_searches}
        if len(n_windows) != 1 or set(by_window) != set(range(next(iter(n_windows)))):
            raise InvalidArgument(
                f"the window searches cover windows {sorted(by_window)} of {sorted(n_windows)}; "
                "every window needs its search",
                field="window_searches",
            )
        return {
            i: merge_evaluations(
                req.strategy_type,
                chunks,
                skipped=skipped,
                n_sets=search_size("grid", dict(req.grid), 0),
                objective=req.objective or "sharpe",
                method="grid",
                where=where,
                sets=sets,
            )
            for i, chunks in sorted(by_window.items())
        }

    def walk_forward(self, req: WalkForwardInput, wait: Wait = _no_wait) -> WalkForwardRun:
        """In-sample search and out-of-sample test per window; the stitched out-of-sample account."""
        started = time.perf_counter()
        require_rule(req.strategy_type, "strategy_type")
        engine_cfg = engine_config(req.backtest_cfg)
        if not req.grid:
            raise InvalidArgument("a grid of parameters to search in sample is required", field="grid")
        prices = load_prices(req.source, req.backtest_cfg, engine_cfg)
        searches = self._merge_window_searches(req) if req.window_searches else None
        result = walk_forward(
            req.strategy_type,
            grid=dict(req.grid),
            objective=req.objective or "sharpe",
            in_sample_bars=req.in_sample_bars,
            out_of_sample_bars=req.out_of_sample_bars,
            step_bars=req.step_bars or None,
            anchored=req.anchored,
            config=engine_cfg,
            start=prices.start,
            stop=prices.stop,
            searches=searches,
            **prices.arrays(),
        )
        elapsed = time.perf_counter() - started
        dates = prices.panel.dates
        if not req.recording.persist:
            return WalkForwardRun(result, dates)
        wait("the walk-forward test")
        parent_id, window_ids = self._save_walk_forward(req, result, prices, elapsed)
        return WalkForwardRun(result, dates, parent_id, window_ids)

    # ------------------------------------------------------------------ risk and portfolios
    def monte_carlo(self, req: MonteCarloInput) -> MonteCarloResult:
        """Stationary-bootstrap paths of the returns (module docstring of `servicer_portfolio`)."""
        stored: dict[str, float] = {}
        if req.returns is not None:
            returns = np.asarray(req.returns, dtype=np.float64)
        else:
            record = self.catalog.stored_equity(req.backtest_id)
            if record.equity is None:
                raise DataError(f"backtest {req.backtest_id} has no equity curve", field="backtest_id")
            returns = returns_from_equity(record.equity, record.initial_capital, req.backtest_id)
            stored = {
                key: float(record.conventions[key])
                for key in ("periods_per_year", "rf")
                if isinstance(record.conventions.get(key), int | float)
                and math.isfinite(float(record.conventions[key]))
            }
        return monte_carlo(
            returns,
            n_simulations=req.n_simulations or DEFAULT_N_SIMULATIONS,
            block_length=req.block_length or DEFAULT_BLOCK_LENGTH,
            method="stationary",
            seed=req.seed,
            percentiles=list(req.percentiles) or None,
            periods_per_year=req.periods_per_year
            or stored.get("periods_per_year")
            or DEFAULT_PERIODS_PER_YEAR,
            rf=float(stored.get("rf") or 0.0),
        )

    def run_portfolio(self, req: PortfolioInput, wait: Wait = _no_wait) -> PortfolioRun:
        """The legs' strategies combined by the sizing method; stored when asked."""
        dataset_cfg, backtest_cfg = req.dataset_cfg, req.backtest_cfg
        engine_cfg = engine_config(backtest_cfg)
        panel = _portfolio_panel(dataset_cfg, backtest_cfg, req.legs)
        segments = dataset_cfg.segments
        start = backtest_cfg.start_date or (segments.test.start if segments else None)
        end = backtest_cfg.end_date or (segments.test.end if segments else None)
        window = np.ones(panel.n_dates, dtype=bool)
        if start is not None:
            window &= panel.dates >= np.datetime64(start, "D")
        if end is not None:
            window &= panel.dates <= np.datetime64(end, "D")
        if window.sum() < 2:
            if backtest_cfg.start_date or backtest_cfg.end_date:
                field = "backtest_cfg.start_date" if backtest_cfg.start_date else "backtest_cfg.end_date"
            else:
                field = "dataset_cfg.segments.test" if segments else "dataset_cfg.start_date"
            raise DataError(
                f"the backtest window {start or 'start'}..{end or 'end'} has {int(window.sum())} bar(s) "
                "of the dataset; it needs at least 2",
                field=field,
            )
        if engine_cfg.fill_price == "open" and panel.open is None:
            raise InvalidArgument(
                f"dataset {dataset_cfg.source!r} has no open prices", field="backtest_cfg.fill_price"
            )
        benchmark = None
        if backtest_cfg.benchmark:
            bench_close = panel.close[:, panel.symbol_index(backtest_cfg.benchmark)]
            benchmark = np.zeros(panel.n_dates)
            with np.errstate(divide="ignore", invalid="ignore"):
                benchmark[1:] = bench_close[1:] / bench_close[:-1] - 1.0
            if not np.isfinite(benchmark[window]).all():
                raise DataError(
                    f"the benchmark {backtest_cfg.benchmark!r} misses a close in the backtest window",
                    field="backtest_cfg.benchmark",
                )
        result = run_portfolio_backtest(
            list(req.legs),
            panel.close,
            dates=panel.dates,
            symbols=panel.symbols,
            open=panel.open,
            high=panel.high,
            low=panel.low,
            volume=panel.volume,
            rebalance_frequency=req.rebalance_frequency,
            position_sizing_method=req.position_sizing_method,
            max_positions=req.max_positions,
            config=engine_cfg,
            start=start,
            end=end,
            benchmark=benchmark,
            leg_weights=self.leg_weights,
        )
        if not req.recording.persist:
            return PortfolioRun(result)
        wait("the portfolio backtest")
        out = result.backtest
        sizing, frequency = req.position_sizing_method, req.rebalance_frequency
        name = req.portfolio_name or f"{sizing} {frequency}: {'+'.join(result.symbols)}"
        entry = PortfolioEntry(
            portfolio_name=name[:_NAME_LENGTH],
            description=req.description,
            symbols=list(result.symbols),
            allocation=result.allocation_by_symbol(),
            rebalance_frequency=frequency,
            initial_capital=engine_cfg.initial_capital,
            position_sizing_method=sizing,
            metrics=result.metrics,
            dates=_days(out.dates),
            equity=np.asarray(out.equity, dtype=np.float64),
            weights_history=np.asarray(out.weights_held, dtype=np.float64),
            backtest_date=dt.datetime.now(dt.UTC),
            max_positions=req.max_positions,
        )
        return PortfolioRun(result, self.catalog.save_portfolio(entry, request_id=req.recording.request_id))

    # ------------------------------------------------------------------ recording
    def _log_run(
        self,
        *,
        experiment_id: str,
        parent_run_id: str | None,
        task_id: str,
        strategy_type: str,
        strategy_params: Mapping[str, Any],
        backtest_cfg: BacktestConfig,
        out: BacktestOutput,
    ) -> str:
        """The tracking run `backtest`: params, defined metrics, `series.parquet` and `equity.png`."""
        png = draw_series_png(out)  # drawn while the run is created and filled
        dates = _days(out.dates[[0, -1]]) if len(out.dates) else ["", ""]
        run_id = self.tracker.create_run(
            experiment_id,
            "backtest",
            parent_run_id=parent_run_id,
            tags={"alphaswarm.task_id": task_id, "alphaswarm.stage": "backtest"},
        )
        try:
            self.tracker.log_params(
                run_id,
                {
                    "strategy_type": strategy_type,
                    **{f"strategy.{k}": v for k, v in strategy_params.items()},
                    **{
                        f"backtest.{k}": v
                        for k, v in backtest_cfg.model_dump(mode="json").items()
                        if v is not None
                    },
                    "start_date": dates[0],
                    "end_date": dates[-1],
                    "n_bars": len(out.dates),
                },
            )
            self.tracker.log_metrics(run_id, out.metrics.values)
            self.tracker.log_files(run_id, series_artifacts(out, png))
            self.tracker.end_run(run_id)
        except BaseException:
            self.tracker.end_run(run_id, failed=True)
            raise
        return run_id

    def _save_backtest(
        self,
        out: BacktestOutput,
        recording: Recording,
        *,
        symbol: str,
        strategy_type: str,
        parameters: Mapping[str, Any],
        backtest_cfg: BacktestConfig,
        elapsed: float,
        notes: str = "",
        request_id: str | None = None,
    ) -> str:
        """One backtest row; with a key its id derives from it and it records the request's fingerprint."""
        key = recording.request_id if request_id is None else request_id
        if key:
            parameters = {**parameters, "request_fingerprint": recording.fingerprint}
        return self.catalog.save_backtest(
            BacktestEntry(
                output=out,
                symbol=symbol,
                strategy_type=strategy_type,
                backtest_cfg=backtest_cfg,
                parameters=parameters,
                elapsed=elapsed,
                notes=notes,
                request_id=key,
                fingerprint=recording.fingerprint,
                backtest_id=str(uuid.uuid5(_ID_NAMESPACE, f"backtest_result:{key}")) if key else "",
            )
        )

    def _save_optimization(
        self,
        req: OptimizeInput,
        result: OptimizationResult,
        chosen: Trial,
        best_out: BacktestOutput,
        prices: Prices,
        elapsed: float,
    ) -> tuple[str, list[str]]:
        """The chosen set's backtest, then one row per evaluated set (ids in the ranked order)."""
        key = req.recording.request_id
        summary = {
            "objective": result.objective,
            "method": result.method,
            "parameter_set": chosen.parameter_set,
            "n_trials": result.n_trials,
            "n_skipped": len(result.skipped),
            "sharpe_trials_variance": result.sharpe_variance,
            "evaluation": result.evaluation,
            "best_defined": result.best is not None,
        }
        backtest_id = self._save_backtest(
            best_out,
            req.recording,
            request_id=_key(key, "best"),
            symbol=prices.symbol_label,
            strategy_type=result.strategy_type,
            parameters=_rule_parameters(
                result.strategy_type, chosen.params, req.backtest_cfg, prices, best_out, optimization=summary
            ),
            backtest_cfg=req.backtest_cfg,
            elapsed=elapsed,
            notes=f"best of {len(result.trials)} parameter sets by {result.objective} ({result.method} search)"
            if result.best is not None
            else f"no set has a defined {result.objective}: parameter set {chosen.parameter_set} stored",
        )
        rows = []
        for t in result.ranked:
            m = t.metrics
            trades_n = m.get("total_trades")
            rows.append(
                OptimizationEntry(
                    backtest_id=backtest_id,
                    parameter_set=t.parameter_set,
                    params=t.params,
                    objective_function=result.objective,
                    is_statistically_significant=t.is_statistically_significant,
                    objective_value=t.objective_value,
                    total_return=_optional(m.get("total_return")),
                    sharpe_ratio=_optional(m.get("sharpe")),
                    max_drawdown=_optional(m.get("max_drawdown")),
                    win_rate=_optional(m.get("win_rate")),
                    profit_factor=_optional(m.get("profit_factor")),
                    total_trades=None if trades_n is None else int(trades_n),
                    p_value=t.p_value,
                    rank=t.rank,
                )
            )
        return backtest_id, self.catalog.save_optimizations(rows, request_id=_key(key, "sets"))

    def _save_walk_forward(
        self, req: WalkForwardInput, result: WalkForwardResult, prices: Prices, elapsed: float
    ) -> tuple[str, list[str]]:
        """The stitched out-of-sample backtest as the parent, then one row per window."""
        key = req.recording.request_id
        dates = prices.panel.dates
        out = result.stitched
        windows_doc = [
            {
                "train": [_day(dates[w.train_start]), _day(dates[w.train_stop - 1])],
                "test": [_day(dates[w.test_start]), _day(dates[w.test_stop - 1])],
                "params": w.best_params,
            }
            for w in result.windows
        ]
        parent_id = self._save_backtest(
            out,
            req.recording,
            request_id=_key(key, "parent"),
            symbol=prices.symbol_label,
            strategy_type=result.strategy_type,
            parameters={
                "strategy": {"type": result.strategy_type},
                "walk_forward": {
                    "grid": dict(req.grid),
                    "objective": result.objective,
                    "in_sample_bars": result.in_sample_bars,
                    "out_of_sample_bars": result.out_of_sample_bars,
                    "step_bars": result.step_bars,
                    "anchored": result.anchored,
                    "windows": windows_doc,
                },
                "backtest": req.backtest_cfg.model_dump(mode="json"),
                "symbols": prices.symbols,
                "capital_per_symbol": 1.0 / prices.panel.n_symbols,
                "conventions": out.metrics.conventions,
                "dataset_fingerprint": prices.dataset_fingerprint,
            },
            backtest_cfg=req.backtest_cfg,
            elapsed=elapsed,
            notes=f"stitched out-of-sample account of {len(result.windows)} walk-forward windows",
        )
        rows = []
        for w in result.windows:
            oos = w.out_of_sample.metrics if w.out_of_sample is not None else None
            total = oos.get("total_return") if oos is not None else None
            trades_n = oos.get("total_trades") if oos is not None else None
            rows.append(
                WalkForwardEntry(
                    parent_backtest_id=parent_id,
                    window_size_months=round((w.train_stop - w.train_start) / BARS_PER_MONTH),
                    step_size_months=round(result.step_bars / BARS_PER_MONTH),
                    training_start=_day(dates[w.train_start]),
                    training_end=_day(dates[w.train_stop - 1]),
                    test_period_start=_day(dates[w.test_start]),
                    test_period_end=_day(dates[w.test_stop - 1]),
                    optimal_parameters=w.best.params if w.best is not None else None,
                    training_performance=w.best.objective_value if w.best is not None else None,
                    out_of_sample_return=_optional(total),
                    out_of_sample_sharpe=_optional(oos.get("sharpe")) if oos is not None else None,
                    out_of_sample_drawdown=_optional(oos.get("max_drawdown")) if oos is not None else None,
                    out_of_sample_trades=None if trades_n is None else int(trades_n),
                    is_profitable=None if total is None else float(total) > 0,
                    is_statistically_significant=is_significant_window(oos),
                    performance_ratio=w.performance_ratio,
                    degradation_factor=w.degradation_factor,
                )
            )
        return parent_id, self.catalog.save_walk_forward(rows, request_id=_key(key, "windows"))


def _portfolio_panel(
    dataset_cfg: DatasetConfig, backtest_cfg: BacktestConfig, legs: Sequence[PortfolioLeg]
) -> Panel:
    """The panel of the legs' symbols (and the benchmark's), each leg's symbol checked against the data."""
    full = load_panel(dataset_cfg.model_copy(update={"symbols": None}))
    allowed = set(dataset_cfg.symbols) if dataset_cfg.symbols else None
    for i, leg in enumerate(legs):
        if leg.symbol not in full.symbols:
            raise InvalidArgument(
                f"{leg.symbol!r} is not a symbol of dataset {dataset_cfg.source!r}", field=f"legs[{i}].symbol"
            )
        if allowed is not None and leg.symbol not in allowed:
            raise InvalidArgument(
                f"{leg.symbol!r} is not one of dataset_cfg.symbols", field=f"legs[{i}].symbol"
            )
    needed = [leg.symbol for leg in legs]
    if backtest_cfg.benchmark:
        if backtest_cfg.benchmark not in full.symbols:
            raise InvalidArgument(
                f"{backtest_cfg.benchmark!r} is not a symbol of dataset {dataset_cfg.source!r}",
                field="backtest_cfg.benchmark",
            )
        needed.append(backtest_cfg.benchmark)
    return full.select(list(dict.fromkeys(needed)))
