"""REST reads of the backtest catalog: backtests, optimizations, walk-forward tests, portfolio backtests.

Four routers (`backtests`, `optimizations`, `walk_forward_tests`,
`portfolio_backtests`; all of them in `ROUTERS`) that `rest.create_app`
includes. Every route is a thin adapter: parse the query, make one call to
`PersistenceService` over the gateway's asyncio channel (with the default
deadline), turn the reply into JSON. Failures are the domain errors of
`alphaswarm_common.grpc_client.aio_call`, which the app's exception handler
renders as `{"error": {"code", "reason", "message", "details"}}`:

* an unknown id is 404 (`NOT_FOUND`);
* a malformed query parameter, path id or body is 422 naming the field (the
  request schema says what is expected: UUIDs, ISO dates, bounds);
* a value the catalog refuses (an unknown metric or order column, a page
  token used with other filters) is 400 with `details.field` naming it.

JSON conventions: metric values are numbers or null (`metrics`), with the
reason of every null in `metric_reasons` and the conventions the metrics
were computed under in `conventions`; series are arrays aligned on `dates`
with null for a missing value; timestamps are ISO-8601 UTC; an absent
optional value is null. Lists answer `{"items": [...], "next_page_token"}`
with a null token on the last page; tokens are opaque and stable while rows
are added (keyset pagination in the catalog). A backtest's trades are
paginated here, over the trades of one backtest by `trade_number`: a
backtest's trades are written once with it and never change, so the cursor
(the last trade number) is stable.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import uuid
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Path, Query, Response
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field

from alphaswarm.common.v1 import arrays_pb2, resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.errors import InvalidArgument, NotFound
from alphaswarm_common.grpc_client import aio_call
from alphaswarm_common.protoconv import (
    array_from_proto,
    metricset_from_proto,
    struct_to_dict,
    timestamp_to_datetime,
)
from alphaswarm_common.protoranges import INT32_MAX
from alphaswarm_gateway import auth
from alphaswarm_gateway.core import Gateway
from alphaswarm_gateway.deps import GatewayDep, PageSize, ProtoText

__all__ = [
    "ROUTERS",
    "backtests",
    "optimizations",
    "portfolio_backtests",
    "walk_forward_tests",
]


# --------------------------------------------------------------------------- dependencies and calls


_PageToken = Annotated[
    str, Query(description="The `next_page_token` of the previous page; empty for the first page.")
]


async def _persistence(gw: Gateway, method: str, request: Message) -> Any:
    """One unary call to PersistenceService with the default deadline; failures raise domain errors."""
    return await aio_call(
        getattr(gw.clients.persistence, method),
        request,
        timeout=gw.settings.deadline_default_seconds,
        target="persistence",
    )


# --------------------------------------------------------------------------- response schemas


class ErrorDetail(BaseModel):
    """The error of a failed request."""

    code: str = Field(description="The gRPC status name (NOT_FOUND, INVALID_ARGUMENT, ...).")
    reason: str = Field(description="A stable UPPER_SNAKE reason.")
    message: str = Field(description="What went wrong, prefixed with the offending field when there is one.")
    details: dict[str, Any] = Field(description="`field` names the offending input; `violations` lists all.")


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The catalog refused a value; `details.field` names it."},
    404: {"model": ErrorBody, "description": "No such resource."},
    422: {"model": ErrorBody, "description": "A malformed parameter or body; `details.field` names it."},
}


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BacktestSeries(_View):
    """The equity curve and drawdown series of a backtest, aligned on `dates`."""

    dates: list[str] = Field(description="ISO dates (YYYY-MM-DD).")
    equity: list[float | None] | None = Field(description="Equity per date; null for a missing value.")
    drawdown: list[float | None] | None = Field(description="Drawdown per date (a fraction <= 0).")


class Backtest(_View):
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


class BacktestPage(_View):
    """A page of backtest results (without series)."""

    items: list[Backtest]
    next_page_token: str | None


class Trade(_View):
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


class TradePage(_View):
    """A page of the trades of a backtest, by trade number."""

    items: list[Trade]
    next_page_token: str | None
    total_size: int = Field(description="Trades of the backtest in all pages.")


class CompareBody(_View):
    """What to compare."""

    backtest_ids: list[uuid.UUID] = Field(min_length=2, max_length=50, description="2 to 50 backtest ids.")
    metrics: list[ProtoText] = Field(
        default_factory=list,
        max_length=64,
        description="Metric columns to compare (e.g. sharpe_ratio, max_drawdown); a default set when empty.",
    )


class MetricComparison(_View):
    """One metric of one backtest in a comparison."""

    metric: str
    backtest_id: str
    value: float | None
    rank: int | None = Field(
        description="1 for the best; ties share the better rank; null when the value is."
    )
    higher_is_better: bool


class Comparison(_View):
    """A metric-by-metric comparison of backtests."""

    results: list[Backtest] = Field(description="The compared backtests, in request order.")
    metrics: list[str] = Field(description="The compared metric columns, in order.")
    comparisons: list[MetricComparison] = Field(description="One entry per (metric, backtest), metric-major.")


class PerformanceGroup(_View):
    """Aggregates of a group of backtests."""

    key: str | None = Field(description="The symbol or strategy type; null for the overall group.")
    count: int
    avg_total_return: float | None
    avg_sharpe_ratio: float | None
    best_sharpe_ratio: float | None
    avg_max_drawdown: float | None
    avg_win_rate: float | None
    total_trades: int


class PerformanceSummary(_View):
    """The backtests of the last `days` days, overall, by symbol and by strategy type."""

    days: int
    overall: PerformanceGroup
    by_symbol: list[PerformanceGroup]
    by_strategy: list[PerformanceGroup]


class Optimization(_View):
    """One parameter set of an optimization (a row of mcp_optimization_results)."""

    optimization_id: str
    backtest_id: str
    optimization_date: str | None
    parameter_set: int
    parameters: dict[str, Any]
    objective_function: str | None
    objective_value: float | None
    total_return: float | None
    sharpe_ratio: float | None
    max_drawdown: float | None
    win_rate: float | None
    profit_factor: float | None
    total_trades: int | None
    rank: int | None
    is_statistically_significant: bool
    p_value: float | None
    created_at: str | None


class OptimizationPage(_View):
    """A page of optimization rows."""

    items: list[Optimization]
    next_page_token: str | None


class WalkForwardTest(_View):
    """One window of a walk-forward test (a row of mcp_walk_forward_tests)."""

    walk_forward_id: str
    parent_backtest_id: str
    test_date: str | None
    window_size_months: int
    step_size_months: int
    training_start: str
    training_end: str
    test_period_start: str
    test_period_end: str
    optimal_parameters: dict[str, Any] | None
    training_performance: float | None
    out_of_sample_return: float | None
    out_of_sample_sharpe: float | None
    out_of_sample_drawdown: float | None
    out_of_sample_trades: int | None
    performance_ratio: float | None
    degradation_factor: float | None
    is_profitable: bool | None
    is_statistically_significant: bool
    created_at: str | None


class WalkForwardPage(_View):
    """A page of walk-forward windows."""

    items: list[WalkForwardTest]
    next_page_token: str | None


class WeightsHistory(_View):
    """The weights held per date: `values[t][i]` is the weight of `symbols[i]` on `dates[t]`."""

    symbols: list[str]
    values: list[list[float | None]]


class PortfolioSeries(_View):
    """The series of a portfolio backtest, aligned on `dates`."""

    dates: list[str]
    equity: list[float | None] | None
    weights: WeightsHistory | None


class Portfolio(_View):
    """A portfolio backtest (a row of mcp_backtest_portfolios)."""

    portfolio_backtest_id: str
    portfolio_name: str
    description: str | None
    backtest_date: str | None
    start_date: str
    end_date: str
    symbols: list[str]
    weights: dict[str, Any] | None = Field(description="Target weights by symbol.")
    rebalance_frequency: str | None
    initial_capital: float
    max_positions: int | None
    position_sizing_method: str | None
    portfolio_stop_loss: float | None
    max_sector_allocation: float | None
    correlation_threshold: float | None
    metrics: dict[str, float | None]
    metric_reasons: dict[str, str]
    conventions: dict[str, Any]
    component_backtest_ids: list[str]
    status: str
    notes: str | None
    created_at: str | None


class PortfolioDetail(Portfolio):
    """A portfolio backtest with its series."""

    series: PortfolioSeries | None


class PortfolioPage(_View):
    """A page of portfolio backtests (without series)."""

    items: list[Portfolio]
    next_page_token: str | None


# --------------------------------------------------------------------------- proto -> JSON


def _ts(msg: Message, name: str) -> str | None:
    if not msg.HasField(name):
        return None
    value = timestamp_to_datetime(getattr(msg, name))
    return value.isoformat() if value else None


def _opt(msg: Message, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def _text(value: str) -> str | None:
    return value or None


def _values(arr: np.ndarray) -> list[Any]:
    """An array as nested lists with NaN / inf as null (JSON has neither)."""
    data = np.asarray(arr, dtype=np.float64)
    out = data.astype(object)
    out[~np.isfinite(data)] = None
    return list(out.tolist())


def _array(msg: Message, name: str, field: str) -> np.ndarray | None:
    if not msg.HasField(name):
        return None
    arr: arrays_pb2.Array = getattr(msg, name)
    return array_from_proto(arr, field=field)


def _metrics(msg: ppb.BacktestRecord | ppb.PortfolioRecord) -> dict[str, Any]:
    if not msg.HasField("metrics"):
        return {"metrics": {}, "metric_reasons": {}, "conventions": {}}
    values, reasons, conventions = metricset_from_proto(msg.metrics)
    clean = {k: (v if v is None or math.isfinite(v) else None) for k, v in sorted(values.items())}
    return {"metrics": clean, "metric_reasons": dict(sorted(reasons.items())), "conventions": conventions}


def backtest_view(msg: ppb.BacktestRecord, *, series: bool = False) -> dict[str, Any]:
    """The JSON of a BacktestRecord; with `series` the equity and drawdown series too."""
    doc: dict[str, Any] = {
        "backtest_id": msg.backtest_id,
        "symbol": msg.symbol,
        "strategy_type": msg.strategy_type,
        "backtest_date": _ts(msg, "backtest_date"),
        "start_date": msg.start_date,
        "end_date": msg.end_date,
        "initial_capital": msg.initial_capital,
        "fees": msg.fees,
        "slippage": msg.slippage,
        "parameters": struct_to_dict(msg.parameters) if msg.HasField("parameters") else None,
        **_metrics(msg),
        "execution_time_seconds": msg.execution_time_seconds or None,
        "data_points": msg.data_points or None,
        "status": msg.status,
        "error_message": _text(msg.error_message),
        "notes": _text(msg.notes),
        "created_at": _ts(msg, "created_at"),
        "updated_at": _ts(msg, "updated_at"),
    }
    if series:
        equity = _array(msg, "equity_curve", "result.equity_curve")
        drawdown = _array(msg, "drawdown_series", "result.drawdown_series")
        doc["series"] = (
            None
            if equity is None and drawdown is None
            else {
                "dates": list(msg.dates),
                "equity": None if equity is None else _values(equity),
                "drawdown": None if drawdown is None else _values(drawdown),
            }
        )
    return doc


def trade_view(msg: resources_pb2.Trade) -> dict[str, Any]:
    is_open = not msg.exit_date
    return {
        "trade_number": msg.trade_number,
        "symbol": _text(msg.symbol),
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
        "exit_reason": _text(msg.exit_reason),
        "fees_paid": msg.fees_paid,
        "slippage_cost": msg.slippage_cost,
    }


def _group_view(msg: ppb.PerformanceGroup, *, overall: bool = False) -> dict[str, Any]:
    return {
        "key": None if overall else msg.key,
        "count": msg.count,
        **{
            name: _opt(msg, name)
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


_OPTIMIZATION_OPTIONALS = (
    "objective_value",
    "total_return",
    "sharpe_ratio",
    "max_drawdown",
    "win_rate",
    "profit_factor",
    "total_trades",
    "rank",
    "p_value",
)


def optimization_view(msg: ppb.OptimizationRecord) -> dict[str, Any]:
    return {
        "optimization_id": msg.optimization_id,
        "backtest_id": msg.backtest_id,
        "optimization_date": _ts(msg, "optimization_date"),
        "parameter_set": msg.parameter_set,
        "parameters": struct_to_dict(msg.parameters) if msg.HasField("parameters") else {},
        "objective_function": _text(msg.objective_function),
        **{name: _opt(msg, name) for name in _OPTIMIZATION_OPTIONALS},
        "is_statistically_significant": msg.is_statistically_significant,
        "created_at": _ts(msg, "created_at"),
    }


_WALK_FORWARD_OPTIONALS = (
    "training_performance",
    "out_of_sample_return",
    "out_of_sample_sharpe",
    "out_of_sample_drawdown",
    "out_of_sample_trades",
    "performance_ratio",
    "degradation_factor",
    "is_profitable",
)


def walk_forward_view(msg: ppb.WalkForwardRecord) -> dict[str, Any]:
    return {
        "walk_forward_id": msg.walk_forward_id,
        "parent_backtest_id": msg.parent_backtest_id,
        "test_date": _ts(msg, "test_date"),
        "window_size_months": msg.window_size_months,
        "step_size_months": msg.step_size_months,
        "training_start": msg.training_start,
        "training_end": msg.training_end,
        "test_period_start": msg.test_period_start,
        "test_period_end": msg.test_period_end,
        "optimal_parameters": (
            struct_to_dict(msg.optimal_parameters) if msg.HasField("optimal_parameters") else None
        ),
        **{name: _opt(msg, name) for name in _WALK_FORWARD_OPTIONALS},
        "is_statistically_significant": msg.is_statistically_significant,
        "created_at": _ts(msg, "created_at"),
    }


def portfolio_view(msg: ppb.PortfolioRecord, *, series: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "portfolio_backtest_id": msg.portfolio_backtest_id,
        "portfolio_name": msg.portfolio_name,
        "description": _text(msg.description),
        "backtest_date": _ts(msg, "backtest_date"),
        "start_date": msg.start_date,
        "end_date": msg.end_date,
        "symbols": list(msg.symbols),
        "weights": struct_to_dict(msg.weights) if msg.HasField("weights") else None,
        "rebalance_frequency": _text(msg.rebalance_frequency),
        "initial_capital": msg.initial_capital,
        "max_positions": _opt(msg, "max_positions"),
        "position_sizing_method": _text(msg.position_sizing_method),
        "portfolio_stop_loss": _opt(msg, "portfolio_stop_loss"),
        "max_sector_allocation": _opt(msg, "max_sector_allocation"),
        "correlation_threshold": _opt(msg, "correlation_threshold"),
        **_metrics(msg),
        "component_backtest_ids": list(msg.component_backtest_ids),
        "status": msg.status,
        "notes": _text(msg.notes),
        "created_at": _ts(msg, "created_at"),
    }
    if series:
        equity = _array(msg, "equity_curve", "portfolio.equity_curve")
        weights = _array(msg, "weights_history", "portfolio.weights_history")
        doc["series"] = (
            None
            if equity is None and weights is None
            else {
                "dates": list(msg.dates),
                "equity": None if equity is None else _values(equity),
                "weights": None
                if weights is None
                else {"symbols": list(msg.symbols), "values": _values(np.atleast_2d(weights))},
            }
        )
    return doc


def _page(items: list[dict[str, Any]], token: str) -> dict[str, Any]:
    return {"items": items, "next_page_token": token or None}


# --------------------------------------------------------------------------- trade page tokens


def _trade_token(backtest_id: str, after: int) -> str:
    raw = json.dumps({"b": backtest_id, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _trade_cursor(token: str, backtest_id: str) -> int:
    if not token:
        return 0
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = doc["after"]
        owner = doc["b"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidArgument("is not a page token of this list", field="page_token") from None
    if owner != backtest_id or not isinstance(after, int) or isinstance(after, bool):
        raise InvalidArgument("was issued for another backtest's trades", field="page_token")
    return after


# --------------------------------------------------------------------------- /backtests

backtests = APIRouter(prefix="/backtests", tags=["backtests"], responses=_ERRORS)

_BacktestId = Annotated[uuid.UUID, Path(description="The backtest id (UUID).")]


@backtests.get(
    "",
    operation_id="list_backtests",
    summary="List backtest results with filters, ordering and pagination",
    response_model=BacktestPage,
)
async def list_backtests(
    gw: GatewayDep,
    symbol: Annotated[str, Query(max_length=10, description="Only results of this symbol.")] = "",
    strategy_type: Annotated[
        str, Query(max_length=50, description="Only results of this strategy type.")
    ] = "",
    from_date: Annotated[
        dt.date | None, Query(description="Only results that ran on or after this UTC date (YYYY-MM-DD).")
    ] = None,
    to_date: Annotated[
        dt.date | None, Query(description="Only results that ran on or before this UTC date (YYYY-MM-DD).")
    ] = None,
    status: Annotated[str, Query(max_length=20, description="Only results with this status.")] = "",
    order_by: Annotated[
        str,
        Query(
            max_length=64,
            description='A metric or date column, "-" prefix for descending (default "-backtest_date"); '
            "NULLs sort last.",
        ),
    ] = "",
    page_size: PageSize = 50,
    page_token: _PageToken = "",
) -> dict[str, Any]:
    """Results without series, newest first unless `order_by` says otherwise."""
    reply = await _persistence(
        gw,
        "ListBacktestResults",
        ppb.ListBacktestResultsRequest(
            symbol=symbol,
            strategy_type=strategy_type,
            from_date=from_date.isoformat() if from_date else "",
            to_date=to_date.isoformat() if to_date else "",
            status=status,
            order_by=order_by,
            page_size=page_size,
            page_token=page_token,
        ),
    )
    return _page([backtest_view(r) for r in reply.results], reply.next_page_token)


@backtests.get(
    "/best",
    operation_id="get_best_backtest",
    summary="The best completed backtest by a metric",
    response_model=Backtest,
)
async def get_best_backtest(
    gw: GatewayDep,
    metric: Annotated[
        str,
        Query(
            min_length=1,
            max_length=64,
            description="A metric column (sharpe_ratio, total_return, max_drawdown, volatility, ...), ranked "
            "in its own direction: max_drawdown's largest value (the smallest loss) and the lowest "
            "volatility win.",
        ),
    ],
    min_trades: Annotated[
        int, Query(ge=0, le=INT32_MAX, description="Only backtests with at least this many trades.")
    ] = 0,
    symbol: Annotated[str, Query(max_length=10, description="Only backtests of this symbol.")] = "",
    strategy_type: Annotated[
        str, Query(max_length=50, description="Only backtests of this strategy type.")
    ] = "",
) -> dict[str, Any]:
    """404 when no completed backtest has the metric and enough trades."""
    reply = await _persistence(
        gw,
        "GetBestBacktest",
        ppb.GetBestBacktestRequest(
            metric=metric, min_trades=min_trades, symbol=symbol, strategy_type=strategy_type
        ),
    )
    return backtest_view(reply.result)


@backtests.post(
    "/compare",
    operation_id="compare_backtests",
    summary="Compare backtests metric by metric",
    response_model=Comparison,
)
async def compare_backtests(gw: GatewayDep, body: Annotated[CompareBody, Body()]) -> dict[str, Any]:
    """Each metric ranked in its own direction; ties share the better rank; nulls are unranked."""
    reply = await _persistence(
        gw,
        "CompareBacktests",
        ppb.CompareBacktestsRequest(backtest_ids=[str(b) for b in body.backtest_ids], metrics=body.metrics),
    )
    comparisons = [
        {
            "metric": c.metric,
            "backtest_id": c.backtest_id,
            "value": _opt(c, "value"),
            "rank": _opt(c, "rank"),
            "higher_is_better": c.higher_is_better,
        }
        for c in reply.comparisons
    ]
    return {
        "results": [backtest_view(r) for r in reply.results],
        "metrics": list(dict.fromkeys(c["metric"] for c in comparisons)),
        "comparisons": comparisons,
    }


@backtests.get(
    "/summary",
    operation_id="get_backtest_performance_summary",
    summary="Aggregates of the backtests of the last N days, overall, by symbol and by strategy",
    response_model=PerformanceSummary,
)
async def get_performance_summary(
    gw: GatewayDep,
    days: Annotated[
        int, Query(ge=1, le=1_000_000, description="The window: backtests that ran in the last N days.")
    ] = 30,
) -> dict[str, Any]:
    reply = await _persistence(gw, "GetPerformanceSummary", ppb.GetPerformanceSummaryRequest(days=days))
    return {
        "days": reply.days,
        "overall": _group_view(reply.overall, overall=True),
        "by_symbol": [_group_view(g) for g in reply.by_symbol],
        "by_strategy": [_group_view(g) for g in reply.by_strategy],
    }


@backtests.get(
    "/{backtest_id}",
    operation_id="get_backtest",
    summary="One backtest result with its equity and drawdown series",
    response_model=BacktestDetail,
)
async def get_backtest(backtest_id: _BacktestId, gw: GatewayDep) -> dict[str, Any]:
    reply = await _persistence(
        gw, "GetBacktestResult", ppb.GetBacktestResultRequest(backtest_id=str(backtest_id))
    )
    return backtest_view(reply.result, series=True)


@backtests.get(
    "/{backtest_id}/trades",
    operation_id="list_backtest_trades",
    summary="The trades of a backtest, by trade number",
    response_model=TradePage,
)
async def list_backtest_trades(
    backtest_id: _BacktestId,
    gw: GatewayDep,
    page_size: Annotated[
        int, Query(ge=1, le=10_000, description="Maximum number of trades to return.")
    ] = 500,
    page_token: _PageToken = "",
) -> dict[str, Any]:
    bid = str(backtest_id)
    after = _trade_cursor(page_token, bid)
    reply = await _persistence(
        gw, "GetBacktestResult", ppb.GetBacktestResultRequest(backtest_id=bid, include_trades=True)
    )
    trades = sorted(reply.trades, key=lambda t: t.trade_number)
    numbers = np.fromiter((t.trade_number for t in trades), dtype=np.int64, count=len(trades))
    start = int(np.searchsorted(numbers, after, side="right"))
    page = trades[start : start + page_size]
    more = start + page_size < len(trades)
    return {
        "items": [trade_view(t) for t in page],
        "next_page_token": _trade_token(bid, page[-1].trade_number) if more and page else None,
        "total_size": len(trades),
    }


@backtests.delete(
    "/{backtest_id}",
    operation_id="delete_backtest",
    summary="Delete a backtest result with its trades, optimizations and walk-forward windows",
    status_code=204,
    response_class=Response,
)
async def delete_backtest(backtest_id: _BacktestId, gw: GatewayDep) -> Response:
    reply = await _persistence(
        gw, "DeleteBacktestResult", ppb.DeleteBacktestResultRequest(backtest_id=str(backtest_id))
    )
    if not reply.deleted:
        raise NotFound(f"backtest result {backtest_id} does not exist", field="backtest_id")
    await auth.record(gw, "delete", "backtest", str(backtest_id))
    return Response(status_code=204)


# --------------------------------------------------------------------------- /optimizations

optimizations = APIRouter(prefix="/optimizations", tags=["optimizations"], responses=_ERRORS)


@optimizations.get(
    "",
    operation_id="list_optimization_results",
    summary="Optimization rows of a backtest by rank, or all of them newest first",
    response_model=OptimizationPage,
)
async def list_optimization_results(
    gw: GatewayDep,
    backtest_id: Annotated[
        uuid.UUID | None,
        Query(description="Only rows of this backtest, by rank (nulls last); 404 when it does not exist."),
    ] = None,
    page_size: PageSize = 50,
    page_token: _PageToken = "",
) -> dict[str, Any]:
    reply = await _persistence(
        gw,
        "ListOptimizationResults",
        ppb.ListOptimizationResultsRequest(
            backtest_id=str(backtest_id or ""), page_size=page_size, page_token=page_token
        ),
    )
    return _page([optimization_view(r) for r in reply.results], reply.next_page_token)


@optimizations.get(
    "/{optimization_id}",
    operation_id="get_optimization_result",
    summary="One optimization row",
    response_model=Optimization,
)
async def get_optimization_result(
    optimization_id: Annotated[uuid.UUID, Path(description="The optimization row id (UUID).")],
    gw: GatewayDep,
) -> dict[str, Any]:
    reply = await _persistence(
        gw, "GetOptimizationResult", ppb.GetOptimizationResultRequest(optimization_id=str(optimization_id))
    )
    return optimization_view(reply.result)


# --------------------------------------------------------------------------- /walk-forward-tests

walk_forward_tests = APIRouter(prefix="/walk-forward-tests", tags=["walk-forward-tests"], responses=_ERRORS)


@walk_forward_tests.get(
    "",
    operation_id="list_walk_forward_tests",
    summary="Walk-forward windows of a backtest by test period, or all of them newest first",
    response_model=WalkForwardPage,
)
async def list_walk_forward_tests(
    gw: GatewayDep,
    parent_backtest_id: Annotated[
        uuid.UUID | None,
        Query(description="Only windows of this backtest, by test period; 404 when it does not exist."),
    ] = None,
    page_size: PageSize = 50,
    page_token: _PageToken = "",
) -> dict[str, Any]:
    reply = await _persistence(
        gw,
        "ListWalkForwardTests",
        ppb.ListWalkForwardTestsRequest(
            parent_backtest_id=str(parent_backtest_id or ""), page_size=page_size, page_token=page_token
        ),
    )
    return _page([walk_forward_view(w) for w in reply.windows], reply.next_page_token)


@walk_forward_tests.get(
    "/{walk_forward_id}",
    operation_id="get_walk_forward_test",
    summary="One walk-forward window",
    response_model=WalkForwardTest,
)
async def get_walk_forward_test(
    walk_forward_id: Annotated[uuid.UUID, Path(description="The walk-forward window id (UUID).")],
    gw: GatewayDep,
) -> dict[str, Any]:
    reply = await _persistence(
        gw, "GetWalkForwardTest", ppb.GetWalkForwardTestRequest(walk_forward_id=str(walk_forward_id))
    )
    return walk_forward_view(reply.window)


# --------------------------------------------------------------------------- /portfolio-backtests

portfolio_backtests = APIRouter(
    prefix="/portfolio-backtests", tags=["portfolio-backtests"], responses=_ERRORS
)


@portfolio_backtests.get(
    "",
    operation_id="list_portfolio_backtests",
    summary="Portfolio backtests, newest first",
    response_model=PortfolioPage,
)
async def list_portfolio_backtests(
    gw: GatewayDep,
    portfolio_name: Annotated[
        str, Query(max_length=100, description="Only portfolio backtests with this name.")
    ] = "",
    page_size: PageSize = 50,
    page_token: _PageToken = "",
) -> dict[str, Any]:
    reply = await _persistence(
        gw,
        "ListPortfolioBacktests",
        ppb.ListPortfolioBacktestsRequest(
            portfolio_name=portfolio_name, page_size=page_size, page_token=page_token
        ),
    )
    return _page([portfolio_view(p) for p in reply.portfolios], reply.next_page_token)


@portfolio_backtests.get(
    "/{portfolio_backtest_id}",
    operation_id="get_portfolio_backtest",
    summary="One portfolio backtest with its equity curve and weights history",
    response_model=PortfolioDetail,
)
async def get_portfolio_backtest(
    portfolio_backtest_id: Annotated[uuid.UUID, Path(description="The portfolio backtest id (UUID).")],
    gw: GatewayDep,
) -> dict[str, Any]:
    reply = await _persistence(
        gw,
        "GetPortfolioBacktest",
        ppb.GetPortfolioBacktestRequest(portfolio_backtest_id=str(portfolio_backtest_id)),
    )
    return portfolio_view(reply.portfolio, series=True)


ROUTERS: tuple[APIRouter, ...] = (backtests, optimizations, walk_forward_tests, portfolio_backtests)
"""Every router of this module, in the order `create_app` includes them."""
