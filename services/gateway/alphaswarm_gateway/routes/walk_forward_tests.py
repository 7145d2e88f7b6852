"""REST reads of walk-forward windows: `GET /walk-forward-tests`, `GET /walk-forward-tests/{walk_forward_id}`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.protoconv import struct_to_dict
from alphaswarm_gateway.deps import GatewayDep, PageSize
from alphaswarm_gateway.routes.common import ERRORS, PageToken, View, backtest_rows, one_row, opt, ts

__all__ = ["ROUTERS", "WalkForwardPage", "WalkForwardTest", "walk_forward_tests", "walk_forward_view"]

ORDER = 30


class WalkForwardTest(View):
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


class WalkForwardPage(View):
    """A page of walk-forward windows."""

    items: list[WalkForwardTest]
    next_page_token: str | None


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
        "test_date": ts(msg, "test_date"),
        "window_size_months": msg.window_size_months,
        "step_size_months": msg.step_size_months,
        "training_start": msg.training_start,
        "training_end": msg.training_end,
        "test_period_start": msg.test_period_start,
        "test_period_end": msg.test_period_end,
        "optimal_parameters": (
            struct_to_dict(msg.optimal_parameters) if msg.HasField("optimal_parameters") else None
        ),
        **{name: opt(msg, name) for name in _WALK_FORWARD_OPTIONALS},
        "is_statistically_significant": msg.is_statistically_significant,
        "created_at": ts(msg, "created_at"),
    }


# --------------------------------------------------------------------------- routes

walk_forward_tests = APIRouter(prefix="/walk-forward-tests", tags=["walk-forward-tests"], responses=ERRORS)


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
    page_token: PageToken = "",
) -> dict[str, Any]:
    return await backtest_rows(
        gw,
        "ListWalkForwardTests",
        ppb.ListWalkForwardTestsRequest,
        parent_field="parent_backtest_id",
        parent_id=parent_backtest_id,
        page_size=page_size,
        page_token=page_token,
        rows="windows",
        view=walk_forward_view,
    )


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
    return await one_row(
        gw,
        "GetWalkForwardTest",
        ppb.GetWalkForwardTestRequest(walk_forward_id=str(walk_forward_id)),
        "window",
        walk_forward_view,
    )


ROUTERS: tuple[APIRouter, ...] = (walk_forward_tests,)
