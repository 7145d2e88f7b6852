"""REST reads of the backtest catalog: `/backtests` (list, best, compare, summary, one, its trades, delete).

Every route is a thin adapter: parse the query, make one call to
`PersistenceService` (`routes.common.persistence`), turn the reply into JSON
(`routes.backtests_schemas`). An unknown id is 404 (`NOT_FOUND`); a malformed
query parameter, path id or body is 422 naming the field; a value the catalog
refuses (an unknown metric or order column, a page token used with other
filters) is 400 with `details.field` naming it.

A backtest's trades are paginated in the catalog (`ListBacktestTrades`, keyset
pagination by `trade_number`): a page reads only its rows, and a page token of
another backtest's trades is refused (400 naming `page_token`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response

from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.errors import NotFound
from alphaswarm_common.protoranges import INT32_MAX
from alphaswarm_gateway import auth
from alphaswarm_gateway.deps import GatewayDep, PageSize
from alphaswarm_gateway.routes.backtests_schemas import (
    Backtest,
    BacktestDetail,
    BacktestPage,
    CompareBody,
    Comparison,
    PerformanceSummary,
    TradePage,
    backtest_view,
    group_view,
    trade_view,
)
from alphaswarm_gateway.routes.common import ERRORS, PageToken, opt, page, persistence

__all__ = ["ROUTERS", "backtests"]

ORDER = 10


backtests = APIRouter(prefix="/backtests", tags=["backtests"], responses=ERRORS)

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
    page_token: PageToken = "",
) -> dict[str, Any]:
    """Results without series, newest first unless `order_by` says otherwise."""
    reply = await persistence(
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
    return page([backtest_view(r) for r in reply.results], reply.next_page_token)


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
    reply = await persistence(
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
    reply = await persistence(
        gw,
        "CompareBacktests",
        ppb.CompareBacktestsRequest(backtest_ids=[str(b) for b in body.backtest_ids], metrics=body.metrics),
    )
    comparisons = [
        {
            "metric": c.metric,
            "backtest_id": c.backtest_id,
            "value": opt(c, "value"),
            "rank": opt(c, "rank"),
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
    reply = await persistence(gw, "GetPerformanceSummary", ppb.GetPerformanceSummaryRequest(days=days))
    return {
        "days": reply.days,
        "overall": group_view(reply.overall, overall=True),
        "by_symbol": [group_view(g) for g in reply.by_symbol],
        "by_strategy": [group_view(g) for g in reply.by_strategy],
    }


@backtests.get(
    "/{backtest_id}",
    operation_id="get_backtest",
    summary="One backtest result with its equity and drawdown series",
    response_model=BacktestDetail,
)
async def get_backtest(backtest_id: _BacktestId, gw: GatewayDep) -> dict[str, Any]:
    reply = await persistence(
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
    page_token: PageToken = "",
) -> dict[str, Any]:
    reply = await persistence(
        gw,
        "ListBacktestTrades",
        ppb.ListBacktestTradesRequest(
            backtest_id=str(backtest_id), page_size=page_size, page_token=page_token
        ),
    )
    return {
        "items": [trade_view(t) for t in reply.trades],
        "next_page_token": reply.next_page_token or None,
        "total_size": reply.total_size,
    }


@backtests.delete(
    "/{backtest_id}",
    operation_id="delete_backtest",
    summary="Delete a backtest result with its trades, optimizations and walk-forward windows",
    status_code=204,
    response_class=Response,
)
async def delete_backtest(backtest_id: _BacktestId, gw: GatewayDep) -> Response:
    reply = await persistence(
        gw, "DeleteBacktestResult", ppb.DeleteBacktestResultRequest(backtest_id=str(backtest_id))
    )
    if not reply.deleted:
        raise NotFound(f"backtest result {backtest_id} does not exist", field="backtest_id")
    await auth.record(gw, "delete", "backtest", str(backtest_id))
    return Response(status_code=204)


ROUTERS: tuple[APIRouter, ...] = (backtests,)
