"""The gateway's side of a split job: chunk tasks on the work queue, over the real catalog (the
persistence servicer on SQLite) with a fake backtester and an in-memory queue.

Two gateways share the catalog and the queue: the parent's worker creates the chunk tasks and
evaluates some itself, the other gateway's worker takes the rest from the queue; every chunk is
evaluated once. A parent that crashes and resumes finds the same chunk tasks (created once, by
chunk key) and does not evaluate the recorded ones again; a failed chunk fails the job naming the
chunk; a chunk whose job ended is cancelled, not evaluated."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from alphaswarm.backtester.v1 import backtester_service_pb2 as bpb
from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_gateway.jobs import OptimizationJob, WalkForwardJob
from alphaswarm_gateway.sharded import (
    CHUNK_KIND,
    chunk_plan,
    evaluate_on_queue,
    optimization_chunks,
    run_chunk,
    search_size,
    walk_forward_chunks,
)
from alphaswarm_persistence import migrations
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.models import TaskRow
from alphaswarm_persistence.repository import CatalogRepository
from alphaswarm_persistence.server import Servicer

pytestmark = pytest.mark.unit

SOURCE = {"dataset_cfg": {"source": "sp500"}}


def _job(**kw: Any) -> OptimizationJob:
    return OptimizationJob.model_validate({"source": SOURCE, "strategy_type": "sma_cross", **kw})


def test_plan_splits_only_searches_larger_than_a_chunk() -> None:
    grid = {"fast_period": [1, 2, 3, 4, 5], "slow_period": [10, 20, 30]}  # 15 sets
    assert search_size(_job(grid=grid)) == 15
    assert chunk_plan(_job(grid=grid), 15) == []
    assert chunk_plan(_job(grid=grid), 0) == []
    assert chunk_plan(_job(grid=grid), 4) == [(0, 4), (4, 8), (8, 12), (12, 15)]
    assert chunk_plan(_job(grid=grid), 1) == [(i, i + 1) for i in range(15)]
    random = _job(method="random", n_samples=7, space={"fast_period": {"low": 2, "high": 9}})
    assert search_size(random) == 7 and chunk_plan(random, 3) == [(0, 3), (3, 6), (6, 7)]


def test_a_walk_forward_splits_into_one_whole_search_per_window() -> None:
    job = WalkForwardJob.model_validate(
        {
            "source": SOURCE,
            "strategy_type": "sma_cross",
            "grid": {"fast_period": [5, 10], "slow_period": [20]},
        }
    )
    request = bpb.WalkForwardRequest(strategy_type="sma_cross", in_sample_bars=100, out_of_sample_bars=20)
    request.grid.update(job.grid)
    chunks = walk_forward_chunks(request, 3, search_size(job))
    assert [key for key, _ in chunks] == ["window:0", "window:1", "window:2"]
    for i, (_, chunk) in enumerate(chunks):
        assert (chunk.first, chunk.last, chunk.window.index) == (0, 2, i)
        assert chunk.window.in_sample_bars == 100 and chunk.window.out_of_sample_bars == 20


_DOCUMENT = """
import json
from alphaswarm.backtester.v1 import backtester_service_pb2 as bpb
from alphaswarm_gateway.sharded import chunk_document
request = bpb.EvaluateParameterSetsRequest(strategy_type="sma_cross", method="grid", first=0, last=4)
request.grid.update({"fast_period": [1, 2], "slow_period": [10, 20], "rsi_period": [3]})
print(json.dumps(chunk_document("p", "chunk:0-4", request)))
"""


def test_a_chunk_document_is_the_same_in_every_process() -> None:
    """A resumed parent runs in another process; its chunk documents must match the stored ones
    (the grid's map is serialized in an order of the process's own otherwise)."""
    docs = {
        subprocess.run([sys.executable, "-c", _DOCUMENT], capture_output=True, text=True, check=True).stdout
        for _ in range(4)
    }
    assert len(docs) == 1, docs


# ----------------------------------------------------------------------------- fakes around the catalog


class Catalog:
    """The persistence servicer as an async client (its methods raise the domain errors)."""

    def __init__(self, svc: Servicer) -> None:
        self.svc = svc

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.svc, name)

        async def call(request: Any, timeout: float) -> Any:
            await asyncio.sleep(0)
            return method(request, None)

        return call


class FakeBacktester:
    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[int] = []
        self.fail_on = fail_on

    async def EvaluateParameterSets(self, request: bpb.EvaluateParameterSetsRequest, timeout: float) -> Any:
        self.calls.append(request.first)
        await asyncio.sleep(0.05)
        if request.first == self.fail_on:
            raise InvalidArgument("fast_period must be < slow_period", field="grid.fast_period")
        return bpb.EvaluateParameterSetsResponse(
            first=request.first, last=request.last, served_by=f"backtester:{len(self.calls) % 2}"
        )


class FakeQueue:
    def __init__(self) -> None:
        self.jobs: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def enqueue(self, kind: str, payload: dict[str, Any]) -> None:
        await self.jobs.put((kind, payload))


class FakeBus:
    async def last_seq(self, task_id: str) -> int:
        return 0

    async def publish(self, event: Any) -> None:
        return None


def _gw(owner: str, svc: Servicer, backtester: FakeBacktester, queue: FakeQueue) -> Any:
    settings = SimpleNamespace(
        deadline_default_seconds=10.0,
        deadline_backtest_seconds=10.0,
        gateway_outbox_seconds=1.0,
        gateway_lease_seconds=30.0,
        gateway_heartbeat_seconds=5.0,
        gateway_max_attempts=3,
        optimize_chunk_concurrency=1,
        run_deadline_seconds=600.0,
    )
    clients = SimpleNamespace(persistence=Catalog(svc), backtester=backtester)
    return SimpleNamespace(
        settings=settings, clients=clients, queue=queue, bus=FakeBus(), owner=owner, inflight={}
    )


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chunks") / "template.db"
    migrations.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db(template_db: Path, tmp_path: Path) -> Any:
    path = tmp_path / "catalog.db"
    shutil.copy(template_db, path)
    database = Database(f"sqlite:///{path}")
    yield database
    database.dispose()


@pytest.fixture
def svc(db: Database) -> Servicer:
    return Servicer(CatalogRepository(db))


def _parent(svc: Servicer) -> str:
    task = resources_pb2.Task(
        kind="optimization", state=resources_pb2.RUN_STATE_RUNNING, stage="optimization"
    )
    return str(svc.CreateTask(ppb.CreateTaskRequest(task=task), None).task.task_id)


def _chunks(n: int, *, reverse: bool = False) -> list[tuple[str, bpb.EvaluateParameterSetsRequest]]:
    """The chunks of a grid of `n` sets; `reverse` builds the same grid with its keys in the other
    order (another process's job document)."""
    request = bpb.OptimizeRequest(strategy_type="sma_cross", method="grid")
    grid = {"fast_period": list(range(1, n + 1)), "slow_period": [100]}
    request.grid.update(dict(reversed(grid.items())) if reverse else grid)
    return optimization_chunks(request, [(i, i + 1) for i in range(n)])


def _chunk_rows(db: Database) -> list[TaskRow]:
    with db.session() as s:
        return list(s.scalars(sa.select(TaskRow).where(TaskRow.kind == CHUNK_KIND)).all())


async def _worker(gw: Any, queue: FakeQueue) -> None:
    """Another gateway's worker: takes every chunk job from the queue."""
    while True:
        kind, payload = await queue.jobs.get()
        assert kind == CHUNK_KIND
        await run_chunk(gw, payload)


def test_chunks_are_tasks_on_the_queue_taken_by_both_gateways_and_evaluated_once(
    svc: Servicer, db: Database
) -> None:
    backtester, queue = FakeBacktester(), FakeQueue()
    parent_gw, other_gw = _gw("gw-a", svc, backtester, queue), _gw("gw-b", svc, backtester, queue)
    parent = _parent(svc)

    async def main() -> list[bpb.EvaluateParameterSetsResponse]:
        other = asyncio.create_task(_worker(other_gw, queue))
        try:
            return await evaluate_on_queue(parent_gw, parent, _chunks(8), deadline=time.time() + 60)
        finally:
            other.cancel()

    responses = asyncio.run(main())
    assert [r.first for r in responses] == list(range(8))
    assert sorted(backtester.calls) == list(range(8)), "every chunk evaluated exactly once"
    rows = _chunk_rows(db)
    assert len(rows) == 8 and {r.state for r in rows} == {"succeeded"}
    assert {(r.result or {})["evaluated_by"] for r in rows} == {"gw-a", "gw-b"}
    assert all((r.request or {})["parent_task_id"] == parent for r in rows)


def test_a_resumed_parent_finds_its_chunk_tasks_and_evaluates_only_the_missing_ones(
    svc: Servicer, db: Database
) -> None:
    backtester, queue = FakeBacktester(), FakeQueue()
    gw = _gw("gw-a", svc, backtester, queue)
    parent = _parent(svc)

    async def crash_then_resume() -> list[bpb.EvaluateParameterSetsResponse]:
        first = asyncio.create_task(evaluate_on_queue(gw, parent, _chunks(6), deadline=time.time() + 60))
        while len(backtester.calls) < 3:
            await asyncio.sleep(0.005)
        first.cancel()  # the parent's gateway dies mid-job
        with pytest.raises(asyncio.CancelledError):
            await first
        n_calls = len(backtester.calls)
        for row in _chunk_rows(db):  # its leases lapse (the crashed process renews nothing)
            svc.ReleaseTaskLease(
                ppb.ReleaseTaskLeaseRequest(task_id=str(row.task_id), fencing_token=row.fencing_token), None
            )
        done_before = {(r.request or {})["chunk"] for r in _chunk_rows(db) if r.state == "succeeded"}
        assert 1 <= len(done_before) < 6
        resumed_gw = _gw("gw-b", svc, backtester, queue)
        result = await evaluate_on_queue(
            resumed_gw, parent, _chunks(6, reverse=True), deadline=time.time() + 60
        )
        again = [c for c in backtester.calls[n_calls:] if f"chunk:{c}-{c + 1}" in done_before]
        assert again == [], "recorded chunks are not evaluated again"
        return result

    responses = asyncio.run(crash_then_resume())
    assert [r.first for r in responses] == list(range(6))
    rows = _chunk_rows(db)
    assert len(rows) == 6, "the resumed parent created no second set of chunk tasks"
    assert sorted({(r.request or {})["chunk"] for r in rows}) == sorted(
        f"chunk:{i}-{i + 1}" for i in range(6)
    )
    assert queue.jobs.qsize() == 6, "each chunk was queued once, when its task was created"


def test_a_failed_chunk_fails_the_job_naming_the_chunk_and_the_field(svc: Servicer) -> None:
    backtester, queue = FakeBacktester(fail_on=2), FakeQueue()
    gw = _gw("gw-a", svc, backtester, queue)
    with pytest.raises(InvalidArgument) as err:
        asyncio.run(evaluate_on_queue(gw, _parent(svc), _chunks(4), deadline=time.time() + 60))
    assert err.value.field == "grid.fast_period" and "chunk:2-3" in str(err.value)


def test_a_chunk_of_an_ended_job_is_cancelled_not_evaluated(svc: Servicer, db: Database) -> None:
    backtester, queue = FakeBacktester(), FakeQueue()
    gw = _gw("gw-a", svc, backtester, queue)
    parent = _parent(svc)

    async def main() -> None:
        first = asyncio.create_task(evaluate_on_queue(gw, parent, _chunks(3), deadline=time.time() + 60))
        while not _chunk_rows(db):
            await asyncio.sleep(0.001)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        svc.CancelTask(ppb.CancelTaskRequest(task_id=parent), None)
        for row in _chunk_rows(db):
            svc.ReleaseTaskLease(
                ppb.ReleaseTaskLeaseRequest(task_id=str(row.task_id), fencing_token=row.fencing_token), None
            )
        calls = len(backtester.calls)
        while not queue.jobs.empty():
            _, payload = await queue.jobs.get()
            await run_chunk(_gw("gw-b", svc, backtester, queue), payload)
        assert len(backtester.calls) == calls

    asyncio.run(main())
    assert {r.state for r in _chunk_rows(db)} <= {"succeeded", "cancelled"}
    assert "cancelled" in {r.state for r in _chunk_rows(db)}
