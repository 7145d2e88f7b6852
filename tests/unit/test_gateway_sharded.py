"""The gateway's side of a chunked optimization, with a fake backtester and a fake recorder:
the plan, recording each chunk as it arrives, and restoring recorded chunks on a later attempt."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from alphaswarm.backtester.v1 import backtester_service_pb2 as bpb
from alphaswarm_gateway.jobs import OptimizationJob
from alphaswarm_gateway.sharded import chunk_plan, evaluate_chunks, search_size

pytestmark = pytest.mark.unit

SOURCE = {"dataset_cfg": {"source": "sp500"}}


def _job(**kw: Any) -> OptimizationJob:
    return OptimizationJob.model_validate({"source": SOURCE, "strategy_type": "sma_cross", **kw})


def test_plan_splits_only_searches_larger_than_a_chunk():
    grid = {"fast_period": [1, 2, 3, 4, 5], "slow_period": [10, 20, 30]}  # 15 sets
    assert search_size(_job(grid=grid)) == 15
    assert chunk_plan(_job(grid=grid), 15) == []
    assert chunk_plan(_job(grid=grid), 0) == []
    assert chunk_plan(_job(grid=grid), 4) == [(0, 4), (4, 8), (8, 12), (12, 15)]
    assert chunk_plan(_job(grid=grid), 1) == [(i, i + 1) for i in range(15)]
    random = _job(method="random", n_samples=7, space={"fast_period": {"low": 2, "high": 9}})
    assert search_size(random) == 7 and chunk_plan(random, 3) == [(0, 3), (3, 6), (6, 7)]


class FakeBacktester:
    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.fail_on = fail_on

    async def EvaluateParameterSets(self, request: bpb.EvaluateParameterSetsRequest, timeout: float) -> Any:
        self.calls.append((request.first, request.last))
        assert request.strategy_type == "sma_cross" and request.grid["fast_period"]
        if request.first == self.fail_on:
            raise RuntimeError("backtester crashed")
        await asyncio.sleep(0)
        return bpb.EvaluateParameterSetsResponse(first=request.first, last=request.last, served_by="fake:1")


def _gw(backtester: FakeBacktester) -> Any:
    settings = SimpleNamespace(optimize_chunk_concurrency=2, deadline_backtest_seconds=30.0)
    return SimpleNamespace(settings=settings, clients=SimpleNamespace(backtester=backtester))


def _request() -> bpb.OptimizeRequest:
    req = bpb.OptimizeRequest(strategy_type="sma_cross", method="grid")
    req.grid.update({"fast_period": [1, 2, 3], "slow_period": [10, 20]})
    return req


def test_chunks_are_recorded_as_they_arrive_and_restored_by_a_later_attempt():
    bounds = [(0, 2), (2, 4), (4, 6)]
    outputs: dict[str, Any] = {}
    recorded: list[str] = []

    async def record(stage: str, output: dict[str, Any]) -> None:
        recorded.append(stage)
        outputs[stage] = output

    crashing = FakeBacktester(fail_on=4)
    with pytest.raises(RuntimeError):
        asyncio.run(
            evaluate_chunks(
                _gw(crashing), _request(), bounds, outputs=outputs, record=record, deadline=time.time() + 60
            )
        )
    assert "chunk:4-6" not in outputs and {"chunk:0-2", "chunk:2-4"} <= set(outputs)
    second = FakeBacktester()
    responses = asyncio.run(
        evaluate_chunks(
            _gw(second), _request(), bounds, outputs=outputs, record=record, deadline=time.time() + 60
        )
    )
    assert second.calls == [(4, 6)], "recorded chunks are not evaluated again"
    assert [(r.first, r.last) for r in responses] == bounds
    assert all(r.served_by == "fake:1" for r in responses)
    assert recorded.count("chunk:4-6") == 1
