"""REST reads of optimization rows: `GET /optimizations`, `GET /optimizations/{optimization_id}`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.protoconv import struct_to_dict
from alphaswarm_gateway.deps import GatewayDep, PageSize
from alphaswarm_gateway.routes.common import ERRORS, PageToken, View, backtest_rows, one_row, opt, text, ts

__all__ = ["ROUTERS", "Optimization", "OptimizationPage", "optimization_view", "optimizations"]

ORDER = 20


class Optimization(View):
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


class OptimizationPage(View):
    """A page of optimization rows."""

    items: list[Optimization]
    next_page_token: str | None


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
        "optimization_date": ts(msg, "optimization_date"),
        "parameter_set": msg.parameter_set,
        "parameters": struct_to_dict(msg.parameters) if msg.HasField("parameters") else {},
        "objective_function": text(msg.objective_function),
        **{name: opt(msg, name) for name in _OPTIMIZATION_OPTIONALS},
        "is_statistically_significant": msg.is_statistically_significant,
        "created_at": ts(msg, "created_at"),
    }


# --------------------------------------------------------------------------- routes

optimizations = APIRouter(prefix="/optimizations", tags=["optimizations"], responses=ERRORS)


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
    page_token: PageToken = "",
) -> dict[str, Any]:
    return await backtest_rows(
        gw,
        "ListOptimizationResults",
        ppb.ListOptimizationResultsRequest,
        parent_field="backtest_id",
        parent_id=backtest_id,
        page_size=page_size,
        page_token=page_token,
        rows="results",
        view=optimization_view,
    )


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
    return await one_row(
        gw,
        "GetOptimizationResult",
        ppb.GetOptimizationResultRequest(optimization_id=str(optimization_id)),
        "result",
        optimization_view,
    )


ROUTERS: tuple[APIRouter, ...] = (optimizations,)
