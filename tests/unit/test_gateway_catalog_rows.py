"""The catalog-row reads of optimizations and walk-forward windows share one list and one get
helper: the parent filter, the page and the view of each route, against a fake catalog."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_gateway.routes.optimizations import get_optimization_result, list_optimization_results
from alphaswarm_gateway.routes.walk_forward_tests import get_walk_forward_test, list_walk_forward_tests

pytestmark = pytest.mark.unit

PARENT = uuid.UUID("00000000-0000-0000-0000-0000000000aa")


class FakeCatalog:
    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []

    def __getattr__(self, method: str) -> Any:
        async def call(request: Any, timeout: float) -> Any:
            self.requests.append((method, request))
            if method == "ListOptimizationResults":
                rows = [
                    ppb.OptimizationRecord(optimization_id="o1", backtest_id=str(PARENT), parameter_set=3)
                ]
                return ppb.ListOptimizationResultsResponse(results=rows, next_page_token="t2")
            if method == "GetOptimizationResult":
                return ppb.GetOptimizationResultResponse(result=ppb.OptimizationRecord(optimization_id="o1"))
            if method == "ListWalkForwardTests":
                rows = [ppb.WalkForwardRecord(walk_forward_id="w1", parent_backtest_id=str(PARENT))]
                return ppb.ListWalkForwardTestsResponse(windows=rows)
            if method == "GetWalkForwardTest":
                return ppb.GetWalkForwardTestResponse(window=ppb.WalkForwardRecord(walk_forward_id="w1"))
            raise AssertionError(method)

        return call


def _gw() -> Any:
    return SimpleNamespace(
        clients=SimpleNamespace(persistence=FakeCatalog()),
        settings=SimpleNamespace(deadline_default_seconds=5.0),
    )


def test_list_routes_filter_by_their_parent_and_page() -> None:
    gw = _gw()
    opt = asyncio.run(list_optimization_results(gw, backtest_id=PARENT, page_size=7, page_token="t1"))
    wf = asyncio.run(list_walk_forward_tests(gw, parent_backtest_id=None, page_size=9, page_token=""))
    (m1, r1), (m2, r2) = gw.clients.persistence.requests
    assert (m1, r1.backtest_id, r1.page_size, r1.page_token) == (
        "ListOptimizationResults",
        str(PARENT),
        7,
        "t1",
    )
    assert (m2, r2.parent_backtest_id, r2.page_size) == ("ListWalkForwardTests", "", 9)
    assert opt["next_page_token"] == "t2" and [i["optimization_id"] for i in opt["items"]] == ["o1"]
    assert opt["items"][0]["parameter_set"] == 3 and opt["items"][0]["backtest_id"] == str(PARENT)
    assert wf["next_page_token"] is None and [i["walk_forward_id"] for i in wf["items"]] == ["w1"]


def test_get_routes_read_one_row_by_id() -> None:
    gw = _gw()
    one = uuid.UUID(int=1)
    assert asyncio.run(get_optimization_result(one, gw))["optimization_id"] == "o1"
    assert asyncio.run(get_walk_forward_test(one, gw))["walk_forward_id"] == "w1"
    (m1, r1), (m2, r2) = gw.clients.persistence.requests
    assert (m1, r1.optimization_id) == ("GetOptimizationResult", str(one))
    assert (m2, r2.walk_forward_id) == ("GetWalkForwardTest", str(one))
