"""gRPC adapter of the backtester: signal + prices -> engine -> MLflow child run
`backtest` -> catalog row (through the persistence service) -> proto."""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

import numpy as np

from alphaswarm.backtester.v1 import backtester_service_pb2 as pb
from alphaswarm.backtester.v1 import backtester_service_pb2_grpc as pb_grpc
from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_backtester.engine import BacktestOutput, EngineConfig, run_backtest, weights_from_signal
from alphaswarm_backtester.engine.strategies import validate_strategy_params
from alphaswarm_common.config import BacktestConfig, StrategyConfig
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.grpc_client import call
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
    timestamp_from_datetime,
)
from alphaswarm_common.tracking import Tracker

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["BacktesterService"].full_name


def _finite(x: Any) -> float:
    v = float(x)
    return v if math.isfinite(v) else 0.0


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


class BacktesterServicer(pb_grpc.BacktesterServiceServicer):
    def __init__(
        self, tracker: Tracker, persistence: ppb_grpc.PersistenceServiceStub, *, deadline: float = 60.0
    ) -> None:
        self.tracker = tracker
        self.persistence = persistence
        self.deadline = deadline

    def ValidateStrategy(
        self, request: pb.ValidateStrategyRequest, context: Any
    ) -> pb.ValidateStrategyResponse:
        strategy_cfg = config_from_proto(request.strategy_cfg, StrategyConfig, prefix="strategy_cfg")
        backtest_cfg = config_from_proto(request.backtest_cfg, BacktestConfig, prefix="backtest_cfg")
        params = validate_strategy_params(strategy_cfg.type, strategy_cfg.params)
        _engine_config(backtest_cfg)
        if request.n_symbols > 0:  # universe-dependent checks (top_k against the symbols) on a probe signal
            probe = np.tile(np.arange(request.n_symbols, dtype=np.float64), (2, 1))
            weights_from_signal(probe, strategy_cfg.type, strategy_cfg.params)
        return pb.ValidateStrategyResponse(params_json=params.model_dump_json())

    def RunBacktest(self, request: pb.RunBacktestRequest, context: Any) -> pb.RunBacktestResponse:
        signal, dates, symbols = matrix_from_proto(request.signal, field="signal")
        prices = self._prices(request, dates, symbols)
        strategy_cfg = config_from_proto(request.strategy_cfg, StrategyConfig, prefix="strategy_cfg")
        backtest_cfg = config_from_proto(request.backtest_cfg, BacktestConfig, prefix="backtest_cfg")
        if backtest_cfg.execution_lag is None:
            raise InvalidArgument("execution_lag must be set", field="backtest_cfg.execution_lag")
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
        metrics = out.metrics
        trades = trades_to_proto(out)

        run_id = ""
        if request.parent_run_id:
            run_id = self._log_run(request, strategy_cfg, backtest_cfg, out, dates)

        backtest_id = ""
        if request.persist:
            backtest_id = self._persist(
                request, strategy_cfg, backtest_cfg, out, dates, symbols, trades, elapsed
            )

        return pb.RunBacktestResponse(
            backtest_id=backtest_id,
            run_id=run_id,
            metrics=metricset_to_proto(metrics.values, metrics.reasons, metrics.conventions),
            dates=dates_to_strings(dates),
            returns=array_to_proto(out.returns),
            equity=array_to_proto(out.equity),
            drawdown=array_to_proto(out.drawdown),
            weights_target=matrix_to_proto(out.weights_target, dates, symbols),
            weights_held=matrix_to_proto(out.weights_held, dates, symbols),
            trades=trades,
            execution_time_seconds=elapsed,
        )

    # -----------------------------------------------------------------------------------------
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

    def _log_run(
        self,
        request: pb.RunBacktestRequest,
        strategy_cfg: StrategyConfig,
        backtest_cfg: BacktestConfig,
        out: BacktestOutput,
        dates: np.ndarray,
    ) -> str:
        experiment_id = request.experiment_id or self.tracker.ensure_experiment("alphaswarm")
        run_id = self.tracker.create_run(
            experiment_id,
            "backtest",
            parent_run_id=request.parent_run_id,
            tags={"alphaswarm.task_id": request.task_id, "alphaswarm.stage": "backtest"},
        )
        try:
            self.tracker.log_params(
                run_id,
                {
                    "strategy_type": strategy_cfg.type,
                    **{f"strategy.{k}": v for k, v in strategy_cfg.params.items()},
                    **{
                        f"backtest.{k}": v
                        for k, v in backtest_cfg.model_dump(mode="json").items()
                        if v is not None
                    },
                    "start_date": str(dates[0]),
                    "end_date": str(dates[-1]),
                    "n_bars": len(dates),
                },
            )
            self.tracker.log_metrics(run_id, out.metrics.values)
            self.tracker.log_dict(
                run_id,
                {
                    "dates": dates_to_strings(dates),
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

    def _persist(
        self,
        request: pb.RunBacktestRequest,
        strategy_cfg: StrategyConfig,
        backtest_cfg: BacktestConfig,
        out: BacktestOutput,
        dates: np.ndarray,
        symbols: list[str],
        trades: list[resources_pb2.Trade],
        elapsed: float,
    ) -> str:
        metrics = out.metrics
        record = ppb.BacktestRecord(
            symbol=request.symbol_label or (symbols[0] if len(symbols) == 1 else "PORTFOLIO"),
            strategy_type=request.strategy_label or strategy_cfg.type,
            start_date=str(dates[0]),
            end_date=str(dates[-1]),
            initial_capital=backtest_cfg.initial_capital,
            fees=backtest_cfg.fees,
            slippage=backtest_cfg.slippage,
            parameters=struct_from_dict(
                {
                    "strategy": strategy_cfg.model_dump(mode="json"),
                    "backtest": backtest_cfg.model_dump(mode="json"),
                    "symbols": symbols,
                    "conventions": metrics.conventions,
                }
            ),
            metrics=metricset_to_proto(metrics.values, metrics.reasons, metrics.conventions),
            dates=dates_to_strings(dates),
            equity_curve=array_to_proto(np.asarray(out.equity, dtype=np.float64)),
            drawdown_series=array_to_proto(np.asarray(out.drawdown, dtype=np.float64)),
            execution_time_seconds=elapsed,
            data_points=len(dates),
            status="completed",
            notes=request.notes,
        )
        record.backtest_date.CopyFrom(timestamp_from_datetime(dt.datetime.now(dt.UTC)))
        saved = call(
            self.persistence.SaveBacktestResult,
            ppb.SaveBacktestResultRequest(result=record, trades=trades, request_id=request.request_id),
            timeout=self.deadline,
            target="persistence",
        )
        return saved.backtest_id
