"""JSON schemas and views of the backtest catalog routes (`routes.backtests`)."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.protoconv import struct_to_dict
from alphaswarm_gateway.deps import ProtoText
from alphaswarm_gateway.routes.common import View, array, metrics_view, opt, text, ts, values

__all__ = [
    "Backtest",
    "BacktestDetail",
    "BacktestPage",
    "BacktestSeries",
    "CompareBody",
    "Comparison",
    "MetricComparison",
    "PerformanceGroup",
    "PerformanceSummary",
    "Trade",
    "TradePage",
    "backtest_view",
    "group_view",
    "trade_view",
]


class BacktestSeries(View):
    """The equity curve and drawdown series of a backtest, aligned on `dates`."""

    dates: list[str] = Field(description="ISO dates (YYYY-MM-DD).")
    equity: list[float | None] | None = Field(description="Equity per date; null for a missing value.")
    drawdown: list[float | None] | None = Field(description="Drawdown per date (a fraction <= 0).")


class Backtest(View):
    """A backtest result (a row of mcp_backtest_results)."""

    backtest_id: str
    symbol: str = Field(description='The symbol, or "PORTFOLIO" for several.')
    strategy_type: str
    backtest_date: str | None = Field(description="When the backtest ran (ISO-8601 UTC).")
    start_date: str
    end_date: str
    initial_capital: float
    fees: float
    slippage: float
    parameters: dict[str, Any] | None
    metrics: dict[str, float | None] = Field(description="Trading metrics by name; null when undefined.")
    metric_reasons: dict[str, str] = Field(description="Why each null metric is null.")
    conventions: dict[str, Any] = Field(description="The conventions the metrics were computed under.")
    execution_time_seconds: float | None
    data_points: int | None
    status: str
    error_message: str | None
    notes: str | None
    created_at: str | None
    updated_at: str | None


class BacktestDetail(Backtest):
    """A backtest result with its series."""

    series: BacktestSeries | None


class BacktestPage(View):
    """A page of backtest results (without series)."""

    items: list[Backtest]
    next_page_token: str | None


class Trade(View):
    """One trade of a backtest."""

    trade_number: int
    symbol: str | None
    direction: str = Field(description="long or short.")
    entry_date: str
    entry_price: float
    exit_date: str | None = Field(description="Null while the trade was still open at the end.")
    exit_price: float | None
    position_size: float
    pnl: float
    pnl_percent: float
    mae: float = Field(description="Maximum adverse excursion, a fraction.")
    mfe: float = Field(description="Maximum favourable excursion, a fraction.")
    duration_bars: int
    duration_days: int
    exit_reason: str | None
    fees_paid: float
    slippage_cost: float


class TradePage(View):
    """A page of the trades of a backtest, by trade number."""

    items: list[Trade]
    next_page_token: str | None
    total_size: int = Field(description="Trades of the backtest in all pages.")


class CompareBody(View):
    """What to compare."""

    backtest_ids: list[uuid.UUID] = Field(min_length=2, max_length=50, description="2 to 50 backtest ids.")
    metrics: list[ProtoText] = Field(
        default_factory=list,
        max_length=64,
        description="Metric columns to compare (e.g. sharpe_ratio, max_drawdown); a default set when empty.",
    )


class MetricComparison(View):
    """One metric of one backtest in a comparison."""

    metric: str
    backtest_id: str
    value: float | None
    rank: int | None = Field(
        description="1 for the best; ties share the better rank; null when the value is."
    )
    higher_is_better: bool


class Comparison(View):
    """A metric-by-metric comparison of backtests."""

    results: list[Backtest] = Field(description="The compared backtests, in request order.")
    metrics: list[str] = Field(description="The compared metric columns, in order.")
    comparisons: list[MetricComparison] = Field(description="One entry per (metric, backtest), metric-major.")


class PerformanceGroup(View):
    """Aggregates of a group of backtests."""

    key: str | None = Field(description="The symbol or strategy type; null for the overall group.")
    count: int
    avg_total_return: float | None
    avg_sharpe_ratio: float | None
    best_sharpe_ratio: float | None
    avg_max_drawdown: float | None
    avg_win_rate: float | None
    total_trades: int


class PerformanceSummary(View):
    """The backtests of the last `days` days, overall, by symbol and by strategy type."""

    days: int
    overall: PerformanceGroup
    by_symbol: list[PerformanceGroup]
    by_strategy: list[PerformanceGroup]


def backtest_view(msg: ppb.BacktestRecord, *, series: bool = False) -> dict[str, Any]:
    """The JSON of a BacktestRecord; with `series` the equity and drawdown series too."""
    doc: dict[str, Any] = {
        "backtest_id": msg.backtest_id,
        "symbol": msg.symbol,
        "strategy_type": msg.strategy_type,
        "backtest_date": ts(msg, "backtest_date"),
        "start_date": msg.start_date,
        "end_date": msg.end_date,
        "initial_capital": msg.initial_capital,
        "fees": msg.fees,
        "slippage": msg.slippage,
        "parameters": struct_to_dict(msg.parameters) if msg.HasField("parameters") else None,
        **metrics_view(msg),
        "execution_time_seconds": msg.execution_time_seconds or None,
        "data_points": msg.data_points or None,
        "status": msg.status,
        "error_message": text(msg.error_message),
        "notes": text(msg.notes),
        "created_at": ts(msg, "created_at"),
        "updated_at": ts(msg, "updated_at"),
    }
    if series:
        equity = array(msg, "equity_curve", "result.equity_curve")
        drawdown = array(msg, "drawdown_series", "result.drawdown_series")
        doc["series"] = (
            None
            if equity is None and drawdown is None
            else {
                "dates": list(msg.dates),
                "equity": None if equity is None else values(equity),
                "drawdown": None if drawdown is None else values(drawdown),
            }
        )
    return doc


def trade_view(msg: resources_pb2.Trade) -> dict[str, Any]:
    is_open = not msg.exit_date
    return {
        "trade_number": msg.trade_number,
        "symbol": text(msg.symbol),
        "direction": msg.direction,
        "entry_date": msg.entry_date,
        "entry_price": msg.entry_price,
        "exit_date": None if is_open else msg.exit_date,
        "exit_price": None if is_open else msg.exit_price,
        "position_size": msg.position_size,
        "pnl": msg.pnl,
        "pnl_percent": msg.pnl_percent,
        "mae": msg.mae,
        "mfe": msg.mfe,
        "duration_bars": msg.duration_bars,
        "duration_days": msg.duration_days,
        "exit_reason": text(msg.exit_reason),
        "fees_paid": msg.fees_paid,
        "slippage_cost": msg.slippage_cost,
    }


def group_view(msg: ppb.PerformanceGroup, *, overall: bool = False) -> dict[str, Any]:
    return {
        "key": None if overall else msg.key,
        "count": msg.count,
        **{
            name: opt(msg, name)
            for name in (
                "avg_total_return",
                "avg_sharpe_ratio",
                "best_sharpe_ratio",
                "avg_max_drawdown",
                "avg_win_rate",
            )
        },
        "total_trades": msg.total_trades,
    }
