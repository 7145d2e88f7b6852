"""Catalog entries (`alphaswarm_backtester.catalog`) as the persistence service's records.

Pure conversions, no calls: `backtest_record`, `optimization_record`,
`walk_forward_record`, `portfolio_record`, and `trades_to_proto` (the
engine's ledger as `Trade` messages, also part of the RPC responses). An
optional value left as None stays unset in the record (the catalog stores
NULL).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_backtester.catalog import BacktestEntry, OptimizationEntry, PortfolioEntry, WalkForwardEntry
from alphaswarm_backtester.engine import BacktestOutput
from alphaswarm_common.metrics import MetricSet
from alphaswarm_common.protoconv import (
    array_to_proto,
    dates_to_strings,
    metricset_to_proto,
    struct_from_dict,
    timestamp_from_datetime,
)

__all__ = [
    "backtest_record",
    "metrics_proto",
    "optimization_record",
    "portfolio_record",
    "trades_to_proto",
    "walk_forward_record",
]


def _finite(x: Any) -> float:
    v = float(x)
    return v if math.isfinite(v) else 0.0


def metrics_proto(ms: MetricSet) -> Any:
    return metricset_to_proto(ms.values, ms.reasons, ms.conventions)


def _set_optional(msg: Any, **values: Any) -> None:
    for name, value in values.items():
        if value is not None:
            setattr(msg, name, value)


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
        exit_date = r.get("exit_date")
        open_trade = exit_date is None or (isinstance(exit_date, float) and math.isnan(exit_date))
        trades.append(
            resources_pb2.Trade(
                trade_number=int(r["trade_number"]),
                symbol=str(r["symbol"]),
                direction=str(r["direction"]),
                entry_date=str(np.datetime64(r["entry_date"], "D")),
                entry_price=_finite(r["entry_price"]),
                exit_date="" if open_trade else str(np.datetime64(exit_date, "D")),
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


def backtest_record(entry: BacktestEntry) -> ppb.BacktestRecord:
    out = entry.output
    cfg = entry.backtest_cfg
    dates = dates_to_strings(out.dates)
    return ppb.BacktestRecord(
        backtest_id=entry.backtest_id,
        symbol=entry.symbol,
        strategy_type=entry.strategy_type,
        start_date=dates[0],
        end_date=dates[-1],
        initial_capital=cfg.initial_capital,
        fees=cfg.fees,
        slippage=cfg.slippage,
        parameters=struct_from_dict(dict(entry.parameters)),
        metrics=metrics_proto(entry.metric_set),
        dates=dates,
        equity_curve=array_to_proto(np.asarray(out.equity, dtype=np.float64)),
        drawdown_series=array_to_proto(np.asarray(out.drawdown, dtype=np.float64)),
        execution_time_seconds=entry.elapsed,
        data_points=len(dates),
        status="completed",
        notes=entry.notes,
    )


def optimization_record(row: OptimizationEntry) -> ppb.OptimizationRecord:
    rec = ppb.OptimizationRecord(
        backtest_id=row.backtest_id,
        parameter_set=row.parameter_set,
        parameters=struct_from_dict(dict(row.params)),
        objective_function=row.objective_function,
        is_statistically_significant=row.is_statistically_significant,
    )
    _set_optional(
        rec,
        objective_value=row.objective_value,
        total_return=row.total_return,
        sharpe_ratio=row.sharpe_ratio,
        max_drawdown=row.max_drawdown,
        win_rate=row.win_rate,
        profit_factor=row.profit_factor,
        p_value=row.p_value,
        total_trades=row.total_trades,
        rank=row.rank,
    )
    return rec


def walk_forward_record(row: WalkForwardEntry) -> ppb.WalkForwardRecord:
    rec = ppb.WalkForwardRecord(
        parent_backtest_id=row.parent_backtest_id,
        window_size_months=row.window_size_months,
        step_size_months=row.step_size_months,
        training_start=row.training_start,
        training_end=row.training_end,
        test_period_start=row.test_period_start,
        test_period_end=row.test_period_end,
        is_statistically_significant=row.is_statistically_significant,
    )
    if row.optimal_parameters is not None:
        rec.optimal_parameters.CopyFrom(struct_from_dict(dict(row.optimal_parameters)))
    _set_optional(
        rec,
        training_performance=row.training_performance,
        out_of_sample_return=row.out_of_sample_return,
        out_of_sample_sharpe=row.out_of_sample_sharpe,
        out_of_sample_drawdown=row.out_of_sample_drawdown,
        out_of_sample_trades=row.out_of_sample_trades,
        is_profitable=row.is_profitable,
        performance_ratio=row.performance_ratio,
        degradation_factor=row.degradation_factor,
    )
    return rec


def portfolio_record(entry: PortfolioEntry) -> ppb.PortfolioRecord:
    record = ppb.PortfolioRecord(
        portfolio_name=entry.portfolio_name,
        description=entry.description,
        start_date=entry.start_date,
        end_date=entry.end_date,
        symbols=list(entry.symbols),
        weights=struct_from_dict(dict(entry.allocation)),
        rebalance_frequency=entry.rebalance_frequency,
        initial_capital=entry.initial_capital,
        position_sizing_method=entry.position_sizing_method,
        metrics=metrics_proto(entry.metrics),
        dates=list(entry.dates),
        equity_curve=array_to_proto(np.asarray(entry.equity, dtype=np.float64)),
        weights_history=array_to_proto(np.asarray(entry.weights_history, dtype=np.float64)),
        status="completed",
    )
    _set_optional(record, max_positions=entry.max_positions)
    record.backtest_date.CopyFrom(timestamp_from_datetime(entry.backtest_date))
    return record
