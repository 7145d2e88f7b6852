"""REST reads of portfolio backtests: `GET /portfolio-backtests`, `GET /portfolio-backtests/{portfolio_backtest_id}`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Query
from pydantic import Field

from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.protoconv import struct_to_dict
from alphaswarm_gateway.deps import GatewayDep, PageSize
from alphaswarm_gateway.routes.common import (
    ERRORS,
    PageToken,
    View,
    array,
    metrics_view,
    opt,
    page,
    persistence,
    text,
    ts,
    values,
)

__all__ = [
    "ROUTERS",
    "Portfolio",
    "PortfolioDetail",
    "PortfolioPage",
    "PortfolioSeries",
    "WeightsHistory",
    "portfolio_backtests",
    "portfolio_view",
]

ORDER = 40


class WeightsHistory(View):
    """The weights held per date: `values[t][i]` is the weight of `symbols[i]` on `dates[t]`."""

    symbols: list[str]
    values: list[list[float | None]]


class PortfolioSeries(View):
    """The series of a portfolio backtest, aligned on `dates`."""

    dates: list[str]
    equity: list[float | None] | None
    weights: WeightsHistory | None


class Portfolio(View):
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


class PortfolioPage(View):
    """A page of portfolio backtests (without series)."""

    items: list[Portfolio]
    next_page_token: str | None


def portfolio_view(msg: ppb.PortfolioRecord, *, series: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "portfolio_backtest_id": msg.portfolio_backtest_id,
        "portfolio_name": msg.portfolio_name,
        "description": text(msg.description),
        "backtest_date": ts(msg, "backtest_date"),
        "start_date": msg.start_date,
        "end_date": msg.end_date,
        "symbols": list(msg.symbols),
        "weights": struct_to_dict(msg.weights) if msg.HasField("weights") else None,
        "rebalance_frequency": text(msg.rebalance_frequency),
        "initial_capital": msg.initial_capital,
        "max_positions": opt(msg, "max_positions"),
        "position_sizing_method": text(msg.position_sizing_method),
        "portfolio_stop_loss": opt(msg, "portfolio_stop_loss"),
        "max_sector_allocation": opt(msg, "max_sector_allocation"),
        "correlation_threshold": opt(msg, "correlation_threshold"),
        **metrics_view(msg),
        "component_backtest_ids": list(msg.component_backtest_ids),
        "status": msg.status,
        "notes": text(msg.notes),
        "created_at": ts(msg, "created_at"),
    }
    if series:
        equity = array(msg, "equity_curve", "portfolio.equity_curve")
        weights = array(msg, "weights_history", "portfolio.weights_history")
        doc["series"] = (
            None
            if equity is None and weights is None
            else {
                "dates": list(msg.dates),
                "equity": None if equity is None else values(equity),
                "weights": None
                if weights is None
                else {"symbols": list(msg.symbols), "values": values(np.atleast_2d(weights))},
            }
        )
    return doc


# --------------------------------------------------------------------------- routes

portfolio_backtests = APIRouter(prefix="/portfolio-backtests", tags=["portfolio-backtests"], responses=ERRORS)


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
    page_token: PageToken = "",
) -> dict[str, Any]:
    reply = await persistence(
        gw,
        "ListPortfolioBacktests",
        ppb.ListPortfolioBacktestsRequest(
            portfolio_name=portfolio_name, page_size=page_size, page_token=page_token
        ),
    )
    return page([portfolio_view(p) for p in reply.portfolios], reply.next_page_token)


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
    reply = await persistence(
        gw,
        "GetPortfolioBacktest",
        ppb.GetPortfolioBacktestRequest(portfolio_backtest_id=str(portfolio_backtest_id)),
    )
    return portfolio_view(reply.portfolio, series=True)


ROUTERS: tuple[APIRouter, ...] = (portfolio_backtests,)
