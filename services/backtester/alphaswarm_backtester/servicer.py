"""gRPC adapter of the backtester: proto -> engine -> MLflow run -> catalog rows (through the
persistence service) -> proto.

- `RunBacktest`: signal + prices -> alpha strategy weights -> `run_backtest`; the MLflow child
  run `backtest` under `parent_run_id`; one `mcp_backtest_results` row when `persist`.
- `ValidateStrategy`: an alpha or a rule strategy's parameters (and the backtest section).
- `RunStrategyBacktest`: a rule strategy on a dataset's prices (`PriceSource`).
- `Optimize`: grid / random search over a rule's parameters (`engine.optimize`); persists the
  best set's full backtest and one `mcp_optimization_results` row per evaluated set.
- `WalkForward`: `engine.walkforward`; persists the stitched out-of-sample backtest as the
  parent and one `mcp_walk_forward_tests` row per window.
- `MonteCarlo`, `RunPortfolioBacktest`: `PortfolioRiskMixin` (`servicer_portfolio`).

Prices of the price-driven RPCs (`PriceSource`): the dataset `source.dataset_cfg` is loaded
with `load_panel` (its `start_date` / `end_date` cut it; its segments are not used), the
symbols traded are `source.symbols` (else the dataset's `symbols`, else all of them). The
backtest window is `backtest_cfg.start_date`..`end_date` (default: every loaded bar); the
bars before the window warm the indicators up, the bars after it are never read. Capital is
split equally across the symbols (see `engine.rules`). The catalog's `strategy_type` is the
rule's name and `symbol` the symbol, or `PORTFOLIO` for several. Every backtest row records
in its parameters the `dataset_fingerprint` of the data it ran on (`Panel.fingerprint` of the
dataset as its config names it; for `RunBacktest`, the fingerprint the prices arrive with), so
the catalog can count the trials ever run on the same data.

Idempotency: a request's `request_id` keys every catalog save it makes, suffixed per save
(`<id>:best` / `<id>:sets` for an optimization, `<id>:parent` / `<id>:windows` for a
walk-forward), so a retried request stores each row once and returns the same ids. The
rows' dates are left to the catalog (the time of the first save) so a replay sends the same
rows; a backtest row's id is derived from its key and it records the fingerprint of the
request, so a replay whose only difference is the measured execution time gets the stored id
back, while another request reusing the key is still refused (ALREADY_EXISTS).
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.message import Message

from alphaswarm.backtester.v1 import backtester_service_pb2 as pb
from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_backtester.engine import BacktestOutput, EngineConfig, run_backtest, weights_from_signal
from alphaswarm_backtester.engine.optimize import OptimizationResult, SkippedSet, Trial, optimize
from alphaswarm_backtester.engine.rules import (
    RULE_STRATEGIES,
    RuleParams,
    is_rule_strategy,
    run_rule_backtest,
    validate_rule_params,
)
from alphaswarm_backtester.engine.strategies import ALPHA_STRATEGIES, validate_strategy_params
from alphaswarm_backtester.engine.walkforward import WalkForwardResult, WalkForwardWindow, walk_forward
from alphaswarm_backtester.servicer_portfolio import PortfolioRiskMixin
from alphaswarm_common.config import BacktestConfig, DatasetConfig, StrategyConfig
from alphaswarm_common.data import Panel, load_panel
from alphaswarm_common.errors import AlphaSwarmError, AlreadyExists, DataError, InvalidArgument, NotFound
from alphaswarm_common.grpc_client import call
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
from alphaswarm_common.tracking import Tracker

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["BacktesterService"].full_name

#: namespace of the catalog ids derived from a request_id (UUIDv5).
_ID_NAMESPACE = uuid.UUID("5b0c7a8e-4d4b-4f0e-9d8a-6a1f3c2b7e10")

#: bars per month in the walk-forward catalog rows (`window_size_months = round(bars / 21)`).
BARS_PER_MONTH = 21


def _finite(x: Any) -> float:
    v = float(x)
    return v if math.isfinite(v) else 0.0


def _day(value: Any) -> str:
    return str(np.datetime_as_string(np.datetime64(value, "D"), unit="D"))


def trades_to_proto(out: BacktestOutput) -> list[resources_pb2.Trade]:
    """The ledger as Trade messages (dates as ISO strings)."""
    ledger = out.trades
    if ledger is None or len(ledger) == 0:
        return []
    records = (
        ledger.to_dict("records")
        if hasattr(ledger, "to_dict")
        else [dict(zip(ledger.dtype.names, row, strict=True)) for row in ledger]
    )
    trades = []
    for r in records:
        trades.append(
            resources_pb2.Trade(
                trade_number=int(r["trade_number"]),
                symbol=str(r["symbol"]),
                direction=str(r["direction"]),
                entry_date=str(np.datetime64(r["entry_date"], "D")),
                entry_price=_finite(r["entry_price"]),
                exit_date=str(np.datetime64(r["exit_date"], "D"))
                if r.get("exit_date") is not None
                and not (isinstance(r["exit_date"], float) and math.isnan(r["exit_date"]))
                else "",
                exit_price=_finite(r["exit_price"]) if r.get("exit_price") is not None else 0.0,
                position_size=_finite(r["position_size"]),
                pnl=_finite(r["pnl"]),
                pnl_percent=_finite(r["pnl_percent"]),
                mae=_finite(r["mae"]),
                mfe=_finite(r["mfe"]),
                duration_bars=int(r["duration_bars"]),
                duration_days=int(r["duration_days"]),
                exit_reason=str(r["exit_reason"]),
                fees_paid=_finite(r["fees_paid"]),
                slippage_cost=_finite(r["slippage_cost"]),
            )
        )
    return trades


def _engine_config(cfg: BacktestConfig) -> EngineConfig:
    """The engine config of a backtest section, engine-only risk options included."""
    return EngineConfig.from_backtest_config(
        cfg,
        execution_lag=cfg.execution_lag,
        min_fee=cfg.min_fee,
        max_gross_leverage=cfg.max_gross_leverage,
        stop_loss=cfg.stop_loss,
        take_profit=cfg.take_profit,
    )


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


def _metrics_proto(ms: MetricSet) -> Any:
    return metricset_to_proto(ms.values, ms.reasons, ms.conventions)


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


# ----------------------------------------------------------------------------- prices of a PriceSource


@dataclass(frozen=True)
class _Prices:
    """The loaded panel (rows `[0, stop)`), the backtest window `[start, stop)` and its benchmark."""

    panel: Panel
    start: int
    stop: int
    benchmark: np.ndarray | None
    dataset_fingerprint: str = ""

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


def _load_prices(source: pb.PriceSource, backtest_cfg: BacktestConfig, engine_cfg: EngineConfig) -> _Prices:
    """Load a `PriceSource` (module docstring); errors name `source.*` / `backtest_cfg.*` fields."""
    if not source.HasField("dataset_cfg"):
        raise InvalidArgument("a dataset is required", field="source.dataset_cfg")
    dataset_cfg = config_from_proto(source.dataset_cfg, DatasetConfig, prefix="source.dataset_cfg")
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
    return _Prices(
        panel=panel, start=start, stop=stop, benchmark=benchmark, dataset_fingerprint=named.fingerprint
    )


def _require_rule(strategy_type: str, field: str) -> None:
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


def _struct_arg(request: Any, name: str) -> dict[str, Any] | None:
    if not request.HasField(name):
        return None
    return struct_to_dict(getattr(request, name)) or None


def _trial_proto(trial: Trial, metrics: MetricSet | None = None) -> pb.OptimizationTrial:
    msg = pb.OptimizationTrial(
        parameter_set=trial.parameter_set,
        params=struct_from_dict(trial.params),
        metrics=_metrics_proto(metrics or trial.metrics),
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


class BacktesterServicer(PortfolioRiskMixin):
    """The BacktesterService: thin adapters around the engine (module docstring)."""

    def __init__(
        self, tracker: Tracker, persistence: ppb_grpc.PersistenceServiceStub, *, deadline: float = 60.0
    ) -> None:
        self.tracker = tracker
        self.persistence = persistence
        self.deadline = deadline

    # ----------------------------------------------------------------------------- signals
    def ValidateStrategy(
        self, request: pb.ValidateStrategyRequest, context: Any
    ) -> pb.ValidateStrategyResponse:
        strategy_cfg = config_from_proto(request.strategy_cfg, StrategyConfig, prefix="strategy_cfg")
        backtest_cfg = config_from_proto(request.backtest_cfg, BacktestConfig, prefix="backtest_cfg")
        _engine_config(backtest_cfg)
        if is_rule_strategy(strategy_cfg.type):
            rule = validate_rule_params(strategy_cfg.type, strategy_cfg.params)
            return pb.ValidateStrategyResponse(params_json=rule.model_dump_json(), kind="rule")
        if strategy_cfg.type not in ALPHA_STRATEGIES:
            raise InvalidArgument(
                f"unknown strategy {strategy_cfg.type!r}; alpha strategies: {sorted(ALPHA_STRATEGIES)}, "
                f"rule strategies: {sorted(RULE_STRATEGIES)}",
                field="strategy_cfg.type",
            )
        params = validate_strategy_params(strategy_cfg.type, strategy_cfg.params)
        if request.n_symbols > 0:  # universe-dependent checks (top_k against the symbols) on a probe signal
            probe = np.tile(np.arange(request.n_symbols, dtype=np.float64), (2, 1))
            weights_from_signal(probe, strategy_cfg.type, strategy_cfg.params)
        return pb.ValidateStrategyResponse(params_json=params.model_dump_json(), kind="alpha")

    def RunBacktest(self, request: pb.RunBacktestRequest, context: Any) -> pb.RunBacktestResponse:
        signal, dates, symbols = matrix_from_proto(request.signal, field="signal")
        prices = self._prices(request, dates, symbols)
        strategy_cfg = config_from_proto(request.strategy_cfg, StrategyConfig, prefix="strategy_cfg")
        backtest_cfg = config_from_proto(request.backtest_cfg, BacktestConfig, prefix="backtest_cfg")
        if backtest_cfg.execution_lag is None:
            raise InvalidArgument("execution_lag must be set", field="backtest_cfg.execution_lag")
        if is_rule_strategy(strategy_cfg.type):
            raise InvalidArgument(
                f"{strategy_cfg.type!r} is a rule strategy: it trades on prices, not on a signal; "
                "use RunStrategyBacktest",
                field="strategy_cfg.type",
            )
        engine_cfg = _engine_config(backtest_cfg)

        started = time.perf_counter()
        weights = weights_from_signal(
            np.asarray(signal, dtype=np.float64),
            strategy_cfg.type,
            strategy_cfg.params,
            rebalance_every=backtest_cfg.rebalance_every,
        )
        out = run_backtest(
            weights,
            prices["close"],
            dates=dates,
            symbols=symbols,
            config=engine_cfg,
            open=prices.get("open"),
            high=prices.get("high"),
            low=prices.get("low"),
            benchmark=_benchmark_returns(request, len(dates)),
        )
        elapsed = time.perf_counter() - started
        trades = trades_to_proto(out)
        if request.parent_run_id or request.persist:
            ensure_caller_waiting(context, "the backtest")

        run_id = ""
        if request.parent_run_id:
            run_id = self._log_run(
                experiment_id=request.experiment_id or self.tracker.ensure_experiment("alphaswarm"),
                parent_run_id=request.parent_run_id,
                task_id=request.task_id,
                strategy_type=strategy_cfg.type,
                strategy_params=strategy_cfg.params,
                backtest_cfg=backtest_cfg,
                out=out,
            )
            log_backtest_tearsheet(
                self.tracker,
                run_id,
                out=out,
                trades=trades,
                close=prices["close"],
                signal=signal,
                benchmark_returns=_benchmark_returns(request, len(dates)),
                strategy_type=request.strategy_label or strategy_cfg.type,
                strategy_params=strategy_cfg.params,
                backtest=backtest_cfg.model_dump(mode="json"),
            )

        backtest_id = ""
        if request.persist:
            backtest_id = self._save_backtest(
                out,
                symbol=request.symbol_label or (symbols[0] if len(symbols) == 1 else "PORTFOLIO"),
                strategy_type=request.strategy_label or strategy_cfg.type,
                parameters={
                    "strategy": strategy_cfg.model_dump(mode="json"),
                    "backtest": backtest_cfg.model_dump(mode="json"),
                    "symbols": symbols,
                    "conventions": out.metrics.conventions,
                    **(
                        {"dataset_fingerprint": request.prices.fingerprint}
                        if request.prices.fingerprint
                        else {}
                    ),
                },
                backtest_cfg=backtest_cfg,
                trades=trades,
                elapsed=elapsed,
                request_id=request.request_id,
                request=request,
                notes=request.notes,
            )
        return self._backtest_response(out, trades, elapsed, backtest_id=backtest_id, run_id=run_id)

    # ----------------------------------------------------------------------------- rule strategies
    def RunStrategyBacktest(
        self, request: pb.RunStrategyBacktestRequest, context: Any
    ) -> pb.RunBacktestResponse:
        if not request.strategy_cfg.HasField("type"):
            raise InvalidArgument("a strategy type is required", field="strategy_cfg.type")
        strategy_cfg = config_from_proto(request.strategy_cfg, StrategyConfig, prefix="strategy_cfg")
        backtest_cfg = config_from_proto(request.backtest_cfg, BacktestConfig, prefix="backtest_cfg")
        _require_rule(strategy_cfg.type, "strategy_cfg.type")
        params = validate_rule_params(strategy_cfg.type, strategy_cfg.params)
        engine_cfg = _engine_config(backtest_cfg)
        prices = _load_prices(request.source, backtest_cfg, engine_cfg)

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
        trades = trades_to_proto(out)
        if request.experiment_id or request.persist:
            ensure_caller_waiting(context, "the backtest")
        run_id = ""
        if request.experiment_id:
            run_id = self._log_run(
                experiment_id=request.experiment_id,
                parent_run_id=None,
                task_id=request.task_id,
                strategy_type=strategy_cfg.type,
                strategy_params=params.model_dump(mode="json"),
                backtest_cfg=backtest_cfg,
                out=out,
            )
        backtest_id = ""
        if request.persist:
            backtest_id = self._save_backtest(
                out,
                symbol=prices.symbol_label,
                strategy_type=strategy_cfg.type,
                parameters=self._rule_parameters(strategy_cfg.type, params, backtest_cfg, prices, out),
                backtest_cfg=backtest_cfg,
                trades=trades,
                elapsed=elapsed,
                request_id=request.request_id,
                request=request,
                notes="",
            )
        return self._backtest_response(out, trades, elapsed, backtest_id=backtest_id, run_id=run_id)

    def Optimize(self, request: pb.OptimizeRequest, context: Any) -> pb.OptimizeResponse:
        started = time.perf_counter()
        backtest_cfg = config_from_proto(request.backtest_cfg, BacktestConfig, prefix="backtest_cfg")
        _require_rule(request.strategy_type, "strategy_type")
        engine_cfg = _engine_config(backtest_cfg)
        grid, space = _struct_arg(request, "grid"), _struct_arg(request, "space")
        method = request.method or ("random" if space and not grid else "grid")
        prices = _load_prices(request.source, backtest_cfg, engine_cfg)
        result = optimize(
            request.strategy_type,
            grid=grid,
            space=space,
            method=method,
            n_samples=request.n_samples or 50,
            seed=request.seed,
            objective=request.objective or "sharpe",
            config=engine_cfg,
            start=prices.start,
            stop=prices.stop,
            **prices.arrays(),
        )
        ranked = result.ranked
        chosen = result.best or ranked[0]
        best_out = run_rule_backtest(
            request.strategy_type,
            chosen.params,
            config=engine_cfg,
            start=prices.start,
            stop=prices.stop,
            benchmark=prices.benchmark,
            **prices.arrays(),
        )
        elapsed = time.perf_counter() - started
        backtest_id, optimization_ids = "", list[str]()
        if request.persist:
            ensure_caller_waiting(context, "the optimization")
            backtest_id, optimization_ids = self._save_optimization(
                request, result, chosen, best_out, backtest_cfg, prices, elapsed
            )
        response = pb.OptimizeResponse(
            trials=[_trial_proto(t) for t in ranked] + [_skipped_proto(s) for s in result.skipped],
            is_statistically_significant=bool(result.best and result.best.is_statistically_significant),
            backtest_id=backtest_id,
            optimization_ids=optimization_ids,
            execution_time_seconds=time.perf_counter() - started,
        )
        if result.best is not None:
            response.best.CopyFrom(_trial_proto(result.best, best_out.metrics))
            if result.best.p_value is not None:
                response.p_value = result.best.p_value
        return response

    def WalkForward(self, request: pb.WalkForwardRequest, context: Any) -> pb.WalkForwardResponse:
        started = time.perf_counter()
        backtest_cfg = config_from_proto(request.backtest_cfg, BacktestConfig, prefix="backtest_cfg")
        _require_rule(request.strategy_type, "strategy_type")
        engine_cfg = _engine_config(backtest_cfg)
        grid = _struct_arg(request, "grid")
        if not grid:
            raise InvalidArgument("a grid of parameters to search in sample is required", field="grid")
        prices = _load_prices(request.source, backtest_cfg, engine_cfg)
        result = walk_forward(
            request.strategy_type,
            grid=grid,
            objective=request.objective or "sharpe",
            in_sample_bars=request.in_sample_bars,
            out_of_sample_bars=request.out_of_sample_bars,
            step_bars=request.step_bars or None,
            anchored=request.anchored,
            config=engine_cfg,
            start=prices.start,
            stop=prices.stop,
            **prices.arrays(),
        )
        elapsed = time.perf_counter() - started
        parent_id, window_ids = "", list[str]()
        if request.persist:
            ensure_caller_waiting(context, "the walk-forward test")
            parent_id, window_ids = self._save_walk_forward(
                request, result, backtest_cfg, prices, grid, elapsed
            )
        dates = prices.panel.dates
        return pb.WalkForwardResponse(
            windows=[_window_proto(w, dates) for w in result.windows],
            out_of_sample_metrics=_metrics_proto(result.stitched.metrics),
            parent_backtest_id=parent_id,
            walk_forward_ids=window_ids,
        )

    # ----------------------------------------------------------------------------- helpers
    def _prices(
        self, request: pb.RunBacktestRequest, dates: np.ndarray, symbols: list[str]
    ) -> dict[str, np.ndarray]:
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

    @staticmethod
    def _backtest_response(
        out: BacktestOutput,
        trades: list[resources_pb2.Trade],
        elapsed: float,
        *,
        backtest_id: str,
        run_id: str,
    ) -> pb.RunBacktestResponse:
        return pb.RunBacktestResponse(
            backtest_id=backtest_id,
            run_id=run_id,
            metrics=_metrics_proto(out.metrics),
            dates=dates_to_strings(out.dates),
            returns=array_to_proto(out.returns),
            equity=array_to_proto(out.equity),
            drawdown=array_to_proto(out.drawdown),
            weights_target=matrix_to_proto(out.weights_target, out.dates, list(out.symbols)),
            weights_held=matrix_to_proto(out.weights_held, out.dates, list(out.symbols)),
            trades=trades,
            execution_time_seconds=elapsed,
        )

    @staticmethod
    def _rule_parameters(
        strategy_type: str,
        params: RuleParams | Mapping[str, Any],
        backtest_cfg: BacktestConfig,
        prices: _Prices,
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
        """The MLflow run `backtest` (a child of `parent_run_id` when given): params, metrics, equity curve."""
        dates = dates_to_strings(out.dates)
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
                    "n_bars": len(dates),
                },
            )
            self.tracker.log_metrics(run_id, out.metrics.values)
            self.tracker.log_dict(
                run_id,
                {
                    "dates": dates,
                    "equity": [float(x) for x in out.equity],
                    "drawdown": [float(x) for x in out.drawdown],
                },
                "equity_curve.json",
            )
            self.tracker.end_run(run_id)
        except BaseException:
            self.tracker.end_run(run_id, failed=True)
            raise
        return run_id

    def _save_backtest(
        self,
        out: BacktestOutput,
        *,
        symbol: str,
        strategy_type: str,
        parameters: Mapping[str, Any],
        backtest_cfg: BacktestConfig,
        trades: list[resources_pb2.Trade],
        elapsed: float,
        request_id: str,
        request: Message,
        notes: str,
        metrics: MetricSet | None = None,
    ) -> str:
        """One `mcp_backtest_results` row with its trades, equity and drawdown series.

        With a `request_id` the row's id is derived from it (UUIDv5) and the
        row records the fingerprint of the RPC request that made it: a replay
        of the same request (whose save differs only by its timing) gets the
        stored id back, a different request reusing the key stays an error.
        """
        ms = metrics or out.metrics
        dates = dates_to_strings(out.dates)
        fingerprint = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
        if request_id:
            parameters = {**parameters, "request_fingerprint": fingerprint}
        record = ppb.BacktestRecord(
            symbol=symbol,
            strategy_type=strategy_type,
            start_date=dates[0],
            end_date=dates[-1],
            initial_capital=backtest_cfg.initial_capital,
            fees=backtest_cfg.fees,
            slippage=backtest_cfg.slippage,
            parameters=struct_from_dict(parameters),
            metrics=_metrics_proto(ms),
            dates=dates,
            equity_curve=array_to_proto(np.asarray(out.equity, dtype=np.float64)),
            drawdown_series=array_to_proto(np.asarray(out.drawdown, dtype=np.float64)),
            execution_time_seconds=elapsed,
            data_points=len(dates),
            status="completed",
            notes=notes,
        )
        if request_id:
            record.backtest_id = str(uuid.uuid5(_ID_NAMESPACE, f"backtest_result:{request_id}"))
        try:
            saved = call(
                self.persistence.SaveBacktestResult,
                ppb.SaveBacktestResultRequest(result=record, trades=trades, request_id=request_id),
                timeout=self.deadline,
                target="persistence",
            )
        except AlreadyExists as exc:
            if not request_id or exc.reason != "REQUEST_ID_REUSED":
                raise
            try:
                stored = call(
                    self.persistence.GetBacktestResult,
                    ppb.GetBacktestResultRequest(backtest_id=record.backtest_id),
                    timeout=self.deadline,
                    target="persistence",
                )
            except NotFound:
                raise exc from None
            if struct_to_dict(stored.result.parameters).get("request_fingerprint") != fingerprint:
                raise
            return record.backtest_id
        return str(saved.backtest_id)

    def _save_optimization(
        self,
        request: pb.OptimizeRequest,
        result: OptimizationResult,
        chosen: Trial,
        best_out: BacktestOutput,
        backtest_cfg: BacktestConfig,
        prices: _Prices,
        elapsed: float,
    ) -> tuple[str, list[str]]:
        """The chosen set's backtest, then one row per evaluated set (ids in the response's trial order)."""
        key = request.request_id
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
            symbol=prices.symbol_label,
            strategy_type=result.strategy_type,
            parameters=self._rule_parameters(
                result.strategy_type, chosen.params, backtest_cfg, prices, best_out, optimization=summary
            ),
            backtest_cfg=backtest_cfg,
            trades=trades_to_proto(best_out),
            elapsed=elapsed,
            request_id=f"{key}:best" if key else "",
            request=request,
            notes=f"best of {len(result.trials)} parameter sets by {result.objective} ({result.method} search)"
            if result.best is not None
            else f"no set has a defined {result.objective}: parameter set {chosen.parameter_set} stored",
        )
        records = []
        for t in result.ranked:
            m = t.metrics
            rec = ppb.OptimizationRecord(
                backtest_id=backtest_id,
                parameter_set=t.parameter_set,
                parameters=struct_from_dict(t.params),
                objective_function=result.objective,
                is_statistically_significant=t.is_statistically_significant,
            )
            for field_name, value in (
                ("objective_value", t.objective_value),
                ("total_return", _optional(m.get("total_return"))),
                ("sharpe_ratio", _optional(m.get("sharpe"))),
                ("max_drawdown", _optional(m.get("max_drawdown"))),
                ("win_rate", _optional(m.get("win_rate"))),
                ("profit_factor", _optional(m.get("profit_factor"))),
                ("p_value", t.p_value),
            ):
                if value is not None:
                    setattr(rec, field_name, value)
            trades_n = m.get("total_trades")
            if trades_n is not None:
                rec.total_trades = int(trades_n)
            if t.rank is not None:
                rec.rank = t.rank
            records.append(rec)
        saved = call(
            self.persistence.SaveOptimizationResults,
            ppb.SaveOptimizationResultsRequest(results=records, request_id=f"{key}:sets" if key else ""),
            timeout=self.deadline,
            target="persistence",
        )
        return backtest_id, [str(i) for i in saved.optimization_ids]

    def _save_walk_forward(
        self,
        request: pb.WalkForwardRequest,
        result: WalkForwardResult,
        backtest_cfg: BacktestConfig,
        prices: _Prices,
        grid: Mapping[str, Sequence[Any]],
        elapsed: float,
    ) -> tuple[str, list[str]]:
        """The stitched out-of-sample backtest as the parent, then one row per window."""
        key = request.request_id
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
            symbol=prices.symbol_label,
            strategy_type=result.strategy_type,
            parameters={
                "strategy": {"type": result.strategy_type},
                "walk_forward": {
                    "grid": dict(grid),
                    "objective": result.objective,
                    "in_sample_bars": result.in_sample_bars,
                    "out_of_sample_bars": result.out_of_sample_bars,
                    "step_bars": result.step_bars,
                    "anchored": result.anchored,
                    "windows": windows_doc,
                },
                "backtest": backtest_cfg.model_dump(mode="json"),
                "symbols": prices.symbols,
                "capital_per_symbol": 1.0 / prices.panel.n_symbols,
                "conventions": out.metrics.conventions,
                "dataset_fingerprint": prices.dataset_fingerprint,
            },
            backtest_cfg=backtest_cfg,
            trades=trades_to_proto(out),
            elapsed=elapsed,
            request_id=f"{key}:parent" if key else "",
            request=request,
            notes=f"stitched out-of-sample account of {len(result.windows)} walk-forward windows",
        )
        records = []
        for w in result.windows:
            rec = ppb.WalkForwardRecord(
                parent_backtest_id=parent_id,
                window_size_months=round((w.train_stop - w.train_start) / BARS_PER_MONTH),
                step_size_months=round(result.step_bars / BARS_PER_MONTH),
                training_start=_day(dates[w.train_start]),
                training_end=_day(dates[w.train_stop - 1]),
                test_period_start=_day(dates[w.test_start]),
                test_period_end=_day(dates[w.test_stop - 1]),
            )
            if w.best is not None:
                rec.optimal_parameters.CopyFrom(struct_from_dict(w.best.params))
                if w.best.objective_value is not None:
                    rec.training_performance = w.best.objective_value
            oos = w.out_of_sample.metrics if w.out_of_sample is not None else None
            if oos is not None:
                for field_name, metric in (
                    ("out_of_sample_return", "total_return"),
                    ("out_of_sample_sharpe", "sharpe"),
                    ("out_of_sample_drawdown", "max_drawdown"),
                ):
                    value = oos.get(metric)
                    if value is not None:
                        setattr(rec, field_name, float(value))
                if oos.get("total_trades") is not None:
                    rec.out_of_sample_trades = int(oos["total_trades"])  # type: ignore[arg-type]
                total = oos.get("total_return")
                if total is not None:
                    rec.is_profitable = float(total) > 0
                psr = oos.get("probabilistic_sharpe")
                rec.is_statistically_significant = psr is not None and float(psr) > 0.95
            if w.performance_ratio is not None:
                rec.performance_ratio = w.performance_ratio
            if w.degradation_factor is not None:
                rec.degradation_factor = w.degradation_factor
            records.append(rec)
        saved = call(
            self.persistence.SaveWalkForwardTests,
            ppb.SaveWalkForwardTestsRequest(windows=records, request_id=f"{key}:windows" if key else ""),
            timeout=self.deadline,
            target="persistence",
        )
        return parent_id, [str(i) for i in saved.walk_forward_ids]


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
        msg.in_sample_metrics.CopyFrom(_metrics_proto(w.in_sample.metrics))
    else:
        msg.in_sample_metrics.CopyFrom(
            metricset_to_proto({}, {}, {"no_optimum": w.best_reason or "no in-sample optimum"})
        )
    if w.out_of_sample is not None:
        msg.out_of_sample_metrics.CopyFrom(_metrics_proto(w.out_of_sample.metrics))
    if w.performance_ratio is not None:
        msg.performance_ratio = w.performance_ratio
    if w.degradation_factor is not None:
        msg.degradation_factor = w.degradation_factor
    return msg
