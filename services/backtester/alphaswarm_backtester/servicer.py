"""gRPC adapter of the backtester: each method parses its request, calls one use case of
`alphaswarm_backtester.core.Backtester` and converts the result (`from_proto` -> use case ->
`to_proto`).

- `ValidateStrategy`: an alpha or a rule strategy's parameters (and the backtest section).
- `RunBacktest`: signal + prices -> alpha strategy weights -> the account; the MLflow child
  run `backtest` under `parent_run_id`; one `mcp_backtest_results` row when `persist`.
- `RunStrategyBacktest`: a rule strategy on a dataset's prices (`PriceSource`).
- `Optimize`: grid / random search over a rule's parameters; persists the best set's full
  backtest and one `mcp_optimization_results` row per evaluated set.
- `WalkForward`: persists the stitched out-of-sample backtest as the parent and one
  `mcp_walk_forward_tests` row per window.
- `MonteCarlo`, `RunPortfolioBacktest`: `servicer_portfolio.PortfolioRiskMixin`.

Prices, idempotency (`request_id`, request fingerprints) and the catalog's domain rules are
documented in `core`; the catalog records in `catalog_mapping`. Domain errors propagate and
the shared interceptor (`alphaswarm_common.grpc_server`) turns them into status codes naming
the offending field. Before anything is written, a caller that has gone away is refused
(`ensure_caller_waiting`): nothing is saved that nobody would read.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import numpy as np

from alphaswarm.backtester.v1 import backtester_service_pb2 as pb
from alphaswarm_backtester.catalog import CatalogWriter
from alphaswarm_backtester.catalog_mapping import metrics_proto, trades_to_proto
from alphaswarm_backtester.core import (
    Backtester,
    BacktestRun,
    EvaluateInput,
    OptimizeInput,
    OptimizeRun,
    PriceSource,
    Recording,
    RuleBacktestInput,
    RunTracker,
    SignalBacktestInput,
    WalkForwardInput,
    WalkForwardRun,
    WindowSelector,
)
from alphaswarm_backtester.engine import SkippedSet, Trial, WalkForwardWindow
from alphaswarm_backtester.servicer_portfolio import PortfolioRiskMixin
from alphaswarm_backtester.sharding_proto import chunk_from_proto, chunk_to_proto
from alphaswarm_backtester.tearsheets import BackgroundTearsheets
from alphaswarm_common.config import BacktestConfig, DatasetConfig, StrategyConfig
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.grpc_server import ensure_caller_waiting
from alphaswarm_common.metrics import MetricSet
from alphaswarm_common.protoconv import (
    array_from_proto,
    array_to_proto,
    config_from_proto,
    dates_from_strings,
    dates_to_strings,
    matrix_from_proto,
    matrix_to_proto,
    metricset_to_proto,
    struct_from_dict,
    struct_to_dict,
)
from alphaswarm_common.reporting import log_backtest_tearsheet

__all__ = ["SERVICE_NAME", "BacktesterServicer", "trades_to_proto"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["BacktesterService"].full_name


log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- from_proto


def recording_of(request: Any) -> Recording:
    """`persist`, `request_id` and the request's fingerprint (a hash of its deterministic bytes)."""
    fingerprint = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
    return Recording(persist=request.persist, request_id=request.request_id, fingerprint=fingerprint)


def _configs(request: Any) -> tuple[StrategyConfig, BacktestConfig]:
    strategy_cfg = config_from_proto(request.strategy_cfg, StrategyConfig, prefix="strategy_cfg")
    return strategy_cfg, config_from_proto(request.backtest_cfg, BacktestConfig, prefix="backtest_cfg")


def _backtest_cfg(request: Any) -> BacktestConfig:
    return config_from_proto(request.backtest_cfg, BacktestConfig, prefix="backtest_cfg")


def _source(source: pb.PriceSource) -> PriceSource:
    dataset_cfg = (
        config_from_proto(source.dataset_cfg, DatasetConfig, prefix="source.dataset_cfg")
        if source.HasField("dataset_cfg")
        else None
    )
    return PriceSource(dataset_cfg=dataset_cfg, symbols=list(source.symbols))


def _struct_arg(request: Any, name: str) -> dict[str, Any] | None:
    if not request.HasField(name):
        return None
    return struct_to_dict(getattr(request, name)) or None


def _benchmark_returns(request: pb.RunBacktestRequest, n_bars: int) -> np.ndarray | None:
    """Close-to-close returns of the benchmark's closes (0 on the first bar), or None."""
    if not request.HasField("benchmark_close") or not request.benchmark_close.data:
        return None
    close = array_from_proto(request.benchmark_close, field="benchmark_close").astype(np.float64).ravel()
    if close.shape[0] != n_bars:
        raise InvalidArgument(f"has {close.shape[0]} values for {n_bars} dates", field="benchmark_close")
    if not np.isfinite(close).all() or (close <= 0).any():
        raise InvalidArgument("must be positive finite closes on every date", field="benchmark_close")
    out = np.zeros(n_bars)
    out[1:] = close[1:] / close[:-1] - 1.0
    return out


def _prices(request: pb.RunBacktestRequest, dates: np.ndarray, symbols: list[str]) -> dict[str, np.ndarray]:
    panel = request.prices
    if "close" not in panel.fields:
        raise InvalidArgument("prices must include a close field", field="prices.fields")
    p_dates = dates_from_strings(panel.dates, field="prices.dates")
    if len(p_dates) != len(dates) or not np.array_equal(p_dates, dates):
        raise InvalidArgument("prices.dates must equal signal.dates", field="prices.dates")
    if list(panel.symbols) != symbols:
        raise InvalidArgument("prices.symbols must equal signal.symbols", field="prices.symbols")
    out = {}
    for name, arr in panel.fields.items():
        values = array_from_proto(arr, field=f"prices.fields.{name}").astype(np.float64, copy=False)
        if values.shape != (len(dates), len(symbols)):
            raise InvalidArgument(
                f"prices field {name} has shape {values.shape}", field=f"prices.fields.{name}"
            )
        out[name] = values
    return out


def signal_backtest_from_proto(request: pb.RunBacktestRequest) -> SignalBacktestInput:
    signal, dates, symbols = matrix_from_proto(request.signal, field="signal")
    prices = _prices(request, dates, symbols)
    strategy_cfg, backtest_cfg = _configs(request)
    return SignalBacktestInput(
        signal=signal,
        dates=dates,
        symbols=symbols,
        prices=prices,
        strategy_cfg=strategy_cfg,
        backtest_cfg=backtest_cfg,
        benchmark=_benchmark_returns(request, len(dates)),
        dataset_fingerprint=request.prices.fingerprint,
        recording=recording_of(request),
        experiment_id=request.experiment_id,
        parent_run_id=request.parent_run_id,
        task_id=request.task_id,
        symbol_label=request.symbol_label,
        strategy_label=request.strategy_label,
        notes=request.notes,
    )


def rule_backtest_from_proto(request: pb.RunStrategyBacktestRequest) -> RuleBacktestInput:
    if not request.strategy_cfg.HasField("type"):
        raise InvalidArgument("a strategy type is required", field="strategy_cfg.type")
    strategy_cfg, backtest_cfg = _configs(request)
    return RuleBacktestInput(
        strategy_cfg=strategy_cfg,
        backtest_cfg=backtest_cfg,
        source=_source(request.source),
        recording=recording_of(request),
        experiment_id=request.experiment_id,
        task_id=request.task_id,
    )


def optimize_from_proto(request: pb.OptimizeRequest) -> OptimizeInput:
    return OptimizeInput(
        strategy_type=request.strategy_type,
        backtest_cfg=_backtest_cfg(request),
        source=_source(request.source),
        grid=_struct_arg(request, "grid"),
        space=_struct_arg(request, "space"),
        method=request.method,
        n_samples=request.n_samples,
        seed=request.seed,
        objective=request.objective,
        recording=recording_of(request),
        chunks=tuple(chunk_from_proto(c, field=f"chunks[{i}]") for i, c in enumerate(request.chunks)),
    )


def evaluate_from_proto(request: pb.EvaluateParameterSetsRequest) -> EvaluateInput:
    search = OptimizeInput(
        strategy_type=request.strategy_type,
        backtest_cfg=_backtest_cfg(request),
        source=_source(request.source),
        grid=_struct_arg(request, "grid"),
        space=_struct_arg(request, "space"),
        method=request.method,
        n_samples=request.n_samples,
        seed=request.seed,
    )
    window = None
    if request.HasField("window"):
        w = request.window
        window = WindowSelector(w.in_sample_bars, w.out_of_sample_bars, w.step_bars, w.anchored, w.index)
    return EvaluateInput(search, request.first, request.last, window)


def walk_forward_from_proto(request: pb.WalkForwardRequest) -> WalkForwardInput:
    return WalkForwardInput(
        strategy_type=request.strategy_type,
        backtest_cfg=_backtest_cfg(request),
        source=_source(request.source),
        grid=_struct_arg(request, "grid") or {},
        objective=request.objective,
        in_sample_bars=request.in_sample_bars,
        out_of_sample_bars=request.out_of_sample_bars,
        step_bars=request.step_bars,
        anchored=request.anchored,
        recording=recording_of(request),
        window_searches=tuple(
            chunk_from_proto(c, field=f"window_searches[{i}]") for i, c in enumerate(request.window_searches)
        ),
    )


# ----------------------------------------------------------------------------- to_proto


def backtest_to_proto(run: BacktestRun) -> pb.RunBacktestResponse:
    out = run.out
    return pb.RunBacktestResponse(
        backtest_id=run.backtest_id,
        run_id=run.run_id,
        metrics=metrics_proto(out.metrics),
        dates=dates_to_strings(out.dates),
        returns=array_to_proto(out.returns),
        equity=array_to_proto(out.equity),
        drawdown=array_to_proto(out.drawdown),
        weights_target=matrix_to_proto(out.weights_target, out.dates, list(out.symbols)),
        weights_held=matrix_to_proto(out.weights_held, out.dates, list(out.symbols)),
        trades=trades_to_proto(out),
        execution_time_seconds=run.elapsed,
    )


def _trial_proto(trial: Trial, metrics: MetricSet | None = None) -> pb.OptimizationTrial:
    msg = pb.OptimizationTrial(
        parameter_set=trial.parameter_set,
        params=struct_from_dict(trial.params),
        metrics=metrics_proto(metrics or trial.metrics),
    )
    if trial.objective_value is not None:
        msg.objective_value = trial.objective_value
    if trial.rank is not None:
        msg.rank = trial.rank
    return msg


def _skipped_proto(skipped: SkippedSet) -> pb.OptimizationTrial:
    """A set that was not evaluated: no metrics, no objective, no rank; why, in `skipped`."""
    return pb.OptimizationTrial(
        parameter_set=skipped.index,
        params=struct_from_dict(skipped.params),
        skipped=pb.SkippedSet(field=skipped.field or "", reason=skipped.message),
    )


def optimize_to_proto(run: OptimizeRun) -> pb.OptimizeResponse:
    result = run.result
    response = pb.OptimizeResponse(
        trials=[_trial_proto(t) for t in result.ranked] + [_skipped_proto(s) for s in result.skipped],
        is_statistically_significant=bool(result.best and result.best.is_statistically_significant),
        backtest_id=run.backtest_id,
        optimization_ids=run.optimization_ids,
        execution_time_seconds=run.elapsed,
    )
    if result.best is not None:
        response.best.CopyFrom(_trial_proto(result.best, run.best_out.metrics))
        if result.best.p_value is not None:
            response.p_value = result.best.p_value
    return response


def _day(value: Any) -> str:
    return str(np.datetime_as_string(np.datetime64(value, "D"), unit="D"))


def _window_proto(w: WalkForwardWindow, dates: np.ndarray) -> pb.WalkForwardWindow:
    msg = pb.WalkForwardWindow(
        train_start=_day(dates[w.train_start]),
        train_end=_day(dates[w.train_stop - 1]),
        test_start=_day(dates[w.test_start]),
        test_end=_day(dates[w.test_stop - 1]),
    )
    if w.best is not None:
        msg.best_params.CopyFrom(struct_from_dict(w.best.params))
    if w.in_sample is not None:
        msg.in_sample_metrics.CopyFrom(metrics_proto(w.in_sample.metrics))
    else:
        msg.in_sample_metrics.CopyFrom(
            metricset_to_proto({}, {}, {"no_optimum": w.best_reason or "no in-sample optimum"})
        )
    if w.out_of_sample is not None:
        msg.out_of_sample_metrics.CopyFrom(metrics_proto(w.out_of_sample.metrics))
    if w.performance_ratio is not None:
        msg.performance_ratio = w.performance_ratio
    if w.degradation_factor is not None:
        msg.degradation_factor = w.degradation_factor
    return msg


def walk_forward_to_proto(run: WalkForwardRun) -> pb.WalkForwardResponse:
    return pb.WalkForwardResponse(
        windows=[_window_proto(w, run.dates) for w in run.result.windows],
        out_of_sample_metrics=metrics_proto(run.result.stitched.metrics),
        parent_backtest_id=run.parent_backtest_id,
        walk_forward_ids=run.walk_forward_ids,
    )


def tearsheet_logger(tracker: RunTracker) -> Any:
    """The use cases' tearsheet logger: the ledger as Trade messages, then the tearsheet on the run."""

    def log(run_id: str, out: Any, **kwargs: Any) -> None:
        log_backtest_tearsheet(tracker, run_id, out=out, trades=trades_to_proto(out), **kwargs)

    return log


def waiting(context: Any) -> Any:
    """The use cases' `wait`: refuse to write for a caller that has gone away."""
    return lambda what: ensure_caller_waiting(context, what)


# ----------------------------------------------------------------------------- the servicer


class BacktesterServicer(PortfolioRiskMixin):
    """The BacktesterService: `from_proto` -> `Backtester` use case -> `to_proto`."""

    def __init__(
        self, tracker: RunTracker, catalog: CatalogWriter, *, backtester: Backtester | None = None
    ) -> None:
        # A large panel's tearsheet is logged after the call returns (`tearsheets` module docstring).
        self.tearsheets = BackgroundTearsheets(tearsheet_logger(tracker)) if backtester is None else None
        self.backtester = backtester or Backtester(tracker, catalog, tearsheet=self.tearsheets)

    def ValidateStrategy(
        self, request: pb.ValidateStrategyRequest, context: Any
    ) -> pb.ValidateStrategyResponse:
        strategy_cfg, backtest_cfg = _configs(request)
        kind, params_json = self.backtester.validate_strategy(
            strategy_cfg, backtest_cfg, n_symbols=request.n_symbols
        )
        return pb.ValidateStrategyResponse(params_json=params_json, kind=kind)

    def RunBacktest(self, request: pb.RunBacktestRequest, context: Any) -> pb.RunBacktestResponse:
        run = self.backtester.run_backtest(signal_backtest_from_proto(request), waiting(context))
        return backtest_to_proto(run)

    def RunStrategyBacktest(
        self, request: pb.RunStrategyBacktestRequest, context: Any
    ) -> pb.RunBacktestResponse:
        run = self.backtester.run_rule_backtest(rule_backtest_from_proto(request), waiting(context))
        return backtest_to_proto(run)

    def Optimize(self, request: pb.OptimizeRequest, context: Any) -> pb.OptimizeResponse:
        return optimize_to_proto(self.backtester.optimize(optimize_from_proto(request), waiting(context)))

    def EvaluateParameterSets(
        self, request: pb.EvaluateParameterSetsRequest, context: Any
    ) -> pb.EvaluateParameterSetsResponse:
        started = time.perf_counter()
        chunk = self.backtester.evaluate_parameter_sets(evaluate_from_proto(request))
        log.info(
            "evaluated parameter sets [%d, %d) (%d valid) for %s",
            chunk.first,
            chunk.last,
            len(chunk.sets),
            request.strategy_type,
        )
        return chunk_to_proto(chunk, time.perf_counter() - started)

    def WalkForward(self, request: pb.WalkForwardRequest, context: Any) -> pb.WalkForwardResponse:
        run = self.backtester.walk_forward(walk_forward_from_proto(request), waiting(context))
        return walk_forward_to_proto(run)
