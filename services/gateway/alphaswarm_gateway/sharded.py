"""Big jobs split into chunks on the work queue, evaluated by every gateway and backtester replica.

An optimization over more sets than `optimize_chunk_sets` is cut into index
ranges `[first, last)` of its search; a walk-forward test of at least
`walk_forward_split_windows` windows is cut into its windows (each window's
in-sample search). Each chunk is a task of kind `evaluation_chunk`:

* The job's worker (the parent) creates the chunk's task with the request id
  `<parent task id>:<chunk key>` (the catalog makes it idempotent: a parent
  resumed after a crash finds the same tasks, never a second set of them)
  and puts it on the same JetStream work queue as every job. A chunk task
  created but not queued (a crash in between, a queue outage) is queued by
  the reaper after the pending grace, like any task.
* Any gateway's worker takes the chunk's job, claims the task's lease
  (`leases.execute_leased`: heartbeat, fencing token, redelivery and the
  reaper after a crash), calls `BacktesterService.EvaluateParameterSets`
  (balanced over the backtester replicas) and records the packed response
  as the chunk task's result, ending it SUCCEEDED. A chunk whose parent
  ended is cancelled instead of evaluated.
* The parent polls its chunk tasks until all succeeded; meanwhile it
  evaluates pending chunks itself (at most `optimize_chunk_concurrency` at
  once, claimed like any worker: whoever claims first evaluates, the other
  delivery is a duplicate and does nothing), so a job never waits on a queue
  whose workers are all parents. Then the job's `Optimize` / `WalkForward`
  call carries the chunks and the backtester merges them (ranks and
  Deflated-Sharpe p-values over the whole search, per window for a
  walk-forward) into exactly the one-process result and saves it under the
  job's idempotency key.

A chunk failing with a non-transient error fails the job with that error.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from alphaswarm.backtester.v1 import backtester_service_pb2 as bpb
from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.errors import DependencyUnavailable, Timeout, error_from_code
from alphaswarm_common.grpc_client import aio_call
from alphaswarm_common.protoconv import struct_from_dict, struct_to_dict

__all__ = [
    "CHUNK_KIND",
    "chunk_document",
    "chunk_plan",
    "evaluate_on_queue",
    "optimization_chunks",
    "run_chunk",
    "search_size",
    "walk_forward_chunks",
]

log = logging.getLogger(__name__)

#: the task kind (and job subject) of one chunk of a split job.
CHUNK_KIND = "evaluation_chunk"

_TERMINAL = (
    resources_pb2.RUN_STATE_SUCCEEDED,
    resources_pb2.RUN_STATE_FAILED,
    resources_pb2.RUN_STATE_CANCELLED,
)


def search_size(job: Any) -> int:
    """How many sets the optimization job numbers (valid or not)."""
    if getattr(job, "method", "grid") == "random":
        return int(job.n_samples)
    return math.prod(len(v) for v in (job.grid or {}).values())


def chunk_plan(job: Any, chunk_sets: int) -> list[tuple[int, int]]:
    """The chunks of a job; empty when it is not split (`chunk_sets` 0, or a search that fits one chunk)."""
    n = search_size(job)
    if chunk_sets <= 0 or n <= chunk_sets:
        return []
    return [(lo, min(lo + chunk_sets, n)) for lo in range(0, n, chunk_sets)]


def optimization_chunks(
    request: bpb.OptimizeRequest, bounds: list[tuple[int, int]]
) -> list[tuple[str, bpb.EvaluateParameterSetsRequest]]:
    """(chunk key, request) of every chunk of a split optimization."""
    return [
        (
            f"chunk:{lo}-{hi}",
            bpb.EvaluateParameterSetsRequest(
                source=request.source,
                strategy_type=request.strategy_type,
                grid=request.grid if request.HasField("grid") else None,
                space=request.space if request.HasField("space") else None,
                method=request.method,
                n_samples=request.n_samples,
                seed=request.seed,
                backtest_cfg=request.backtest_cfg,
                first=lo,
                last=hi,
            ),
        )
        for lo, hi in bounds
    ]


def window_request(
    request: bpb.WalkForwardRequest, index: int, n_sets: int
) -> bpb.EvaluateParameterSetsRequest:
    """The whole in-sample search of window `index` of a walk-forward test (`n_sets` 0: a probe that
    evaluates nothing and answers how many windows the test has)."""
    return bpb.EvaluateParameterSetsRequest(
        source=request.source,
        strategy_type=request.strategy_type,
        grid=request.grid,
        method="grid",
        backtest_cfg=request.backtest_cfg,
        first=0,
        last=n_sets,
        window=bpb.WalkForwardWindowSelector(
            in_sample_bars=request.in_sample_bars,
            out_of_sample_bars=request.out_of_sample_bars,
            step_bars=request.step_bars,
            anchored=request.anchored,
            index=index,
        ),
    )


def walk_forward_chunks(
    request: bpb.WalkForwardRequest, n_windows: int, n_sets: int
) -> list[tuple[str, bpb.EvaluateParameterSetsRequest]]:
    """(chunk key, request) of every window of a split walk-forward test: one chunk per window."""
    return [(f"window:{i}", window_request(request, i, n_sets)) for i in range(n_windows)]


def chunk_document(
    parent_task_id: str, key: str, request: bpb.EvaluateParameterSetsRequest
) -> dict[str, Any]:
    """The `request` document of a chunk's task. The same in every process (the request is
    serialized deterministically: map fields such as the grid's in key order), so a parent resumed
    by another gateway creates nothing new: the catalog finds the task by its request id and the
    same document."""
    return {
        "parent_task_id": parent_task_id,
        "chunk": key,
        "request": base64.b64encode(request.SerializeToString(deterministic=True)).decode("ascii"),
    }


def _encode(response: bpb.EvaluateParameterSetsResponse) -> str:
    return base64.b64encode(response.SerializeToString()).decode("ascii")


def _decode(text: str) -> bpb.EvaluateParameterSetsResponse:
    return bpb.EvaluateParameterSetsResponse.FromString(base64.b64decode(text))


async def _persistence(gw: Any, method: str, request: Any) -> Any:
    return await aio_call(
        getattr(gw.clients.persistence, method),
        request,
        timeout=gw.settings.deadline_default_seconds,
        target="persistence",
    )


# ----------------------------------------------------------------------------- the chunk's worker


async def run_chunk(gw: Any, payload: dict[str, Any]) -> None:
    """The worker side of a chunk: claim its task, evaluate it, record the result (once per chunk)."""
    from alphaswarm_common.events import PoisonJob
    from alphaswarm_gateway.leases import Attempt, execute_leased, exhausted_detail, fail_task

    task_id = str(payload.get("task_id") or "")
    if not task_id:
        raise PoisonJob(f"a {CHUNK_KIND} job without a task_id")

    async def body(attempt: Attempt) -> None:
        await _chunk_attempt(gw, attempt)

    async def exhausted(attempt: Attempt) -> None:
        await fail_task(gw, attempt, exhausted_detail(attempt.task, attempt.attempts))

    await execute_leased(gw, task_id, body, exhausted)


async def _chunk_attempt(gw: Any, attempt: Any) -> None:
    from alphaswarm_common.errors import AlphaSwarmError
    from alphaswarm_gateway.leases import LeaseLost, fail_task
    from alphaswarm_gateway.progress import error_detail
    from alphaswarm_gateway.stages import Stage, StageMachine

    task = attempt.task
    assert task is not None
    doc = struct_to_dict(task.request)
    parent = (await _persistence(gw, "GetTask", ppb.GetTaskRequest(task_id=str(doc["parent_task_id"])))).task
    if parent.state in _TERMINAL:
        await attempt.update_task(
            resources_pb2.Task(
                state=resources_pb2.RUN_STATE_CANCELLED,
                stage="cancelled",
                error=resources_pb2.ErrorDetail(
                    stage="accepted", code="CANCELLED", message="the job this chunk belongs to has ended"
                ),
            ),
            "state",
            "stage",
            "error",
        )
        return
    request = bpb.EvaluateParameterSetsRequest.FromString(base64.b64decode(str(doc["request"])))
    # the job's overall deadline (the same as its worker's: counted from the job's acceptance)
    deadline = parent.created_at.ToDatetime(tzinfo=dt.UTC).timestamp() + gw.settings.run_deadline_seconds
    await attempt.update_task(
        resources_pb2.Task(state=resources_pb2.RUN_STATE_RUNNING, stage="evaluate"), "state", "stage"
    )

    async def run(_: Any) -> dict[str, Any]:
        left = deadline - time.time()
        if left <= 0:
            raise Timeout("the job passed its overall deadline", field="run_deadline_seconds")
        response = await aio_call(
            gw.clients.backtester.EvaluateParameterSets,
            request,
            timeout=max(1.0, min(gw.settings.deadline_backtest_seconds, left)),
            target="backtester",
        )
        log.info("%s %s evaluated by %s", CHUNK_KIND, doc.get("chunk"), response.served_by)
        result = {
            "response": _encode(response),
            "served_by": response.served_by,
            "evaluated_by": gw.owner,
            "sets": len(response.sets),
        }
        await attempt.update_task(
            resources_pb2.Task(
                state=resources_pb2.RUN_STATE_SUCCEEDED,
                stage="completed",
                pct=100.0,
                result=struct_from_dict(result),
            ),
            "state",
            "stage",
            "pct",
            "result",
        )
        return {}

    machine: StageMachine[Any] = StageMachine(
        [Stage("evaluate", "evaluate", run, record=False)],
        record=attempt.record,
        # a backtester restarting or unreachable: try again (another replica) until the job's deadline
        transient=lambda exc: isinstance(exc, DependencyUnavailable),
        retry_seconds=max(0.0, deadline - time.time()),
    )
    try:
        await machine.run(None, {})
    except (LeaseLost, asyncio.CancelledError):
        raise
    except Exception as exc:
        if not isinstance(exc, AlphaSwarmError):
            log.exception("%s %s failed", CHUNK_KIND, doc.get("chunk"))
        await fail_task(gw, attempt, error_detail("evaluate", exc))


# ----------------------------------------------------------------------------- the parent


async def evaluate_on_queue(
    gw: Any,
    parent_task_id: str,
    chunks: list[tuple[str, bpb.EvaluateParameterSetsRequest]],
    *,
    deadline: float,
    on_chunk: Callable[[int, int], Awaitable[None]] | None = None,
    poll_seconds: float = 1.0,
) -> list[bpb.EvaluateParameterSetsResponse]:
    """Every chunk's response, in order: each chunk a task on the work queue (module docstring)."""
    ids: dict[str, str] = {}
    for key, request in chunks:
        doc = chunk_document(parent_task_id, key, request)
        created = await _persistence(
            gw,
            "CreateTask",
            ppb.CreateTaskRequest(
                task=resources_pb2.Task(
                    kind=CHUNK_KIND,
                    state=resources_pb2.RUN_STATE_PENDING,
                    stage="accepted",
                    request=struct_from_dict(doc),
                ),
                request_id=f"{parent_task_id}:{key}",
            ),
        )
        ids[key] = created.task.task_id
        if created.created:
            try:
                await gw.queue.enqueue(CHUNK_KIND, {"task_id": created.task.task_id})
            except Exception as exc:  # the reaper queues it after the pending grace; we help meanwhile
                log.warning("%s %s of task %s not queued: %s", CHUNK_KIND, key, parent_task_id, exc)
    done: dict[str, bpb.EvaluateParameterSetsResponse] = {}
    helping: dict[str, asyncio.Task[None]] = {}
    next_help: dict[str, float] = {}
    delay = 0.05
    try:
        while True:
            for key, helper in list(helping.items()):
                if helper.done():
                    del helping[key]
                    next_help[key] = time.monotonic() + gw.settings.gateway_heartbeat_seconds
                    if not helper.cancelled() and helper.exception() is not None:
                        log.warning("%s %s: %s", CHUNK_KIND, key, helper.exception())
            # from the back of the list: the queue hands the chunks out from the front
            for key, _ in reversed(chunks):
                if key in done:
                    continue
                task = (await _persistence(gw, "GetTask", ppb.GetTaskRequest(task_id=ids[key]))).task
                if task.state == resources_pb2.RUN_STATE_SUCCEEDED:
                    done[key] = _decode(str(struct_to_dict(task.result)["response"]))
                    if on_chunk is not None:
                        await on_chunk(len(done), len(chunks))
                elif task.state in _TERMINAL:
                    error = task.error
                    raise error_from_code(
                        error.code or "ABORTED",
                        f"{CHUNK_KIND} {key}: {error.message}",
                        field=error.field or None,
                    )
                elif (
                    key not in helping
                    and len(helping) < gw.settings.optimize_chunk_concurrency
                    and time.monotonic() >= next_help.get(key, 0.0)
                ):
                    # evaluate it here unless a live worker holds it (the claim decides)
                    helping[key] = asyncio.create_task(run_chunk(gw, {"task_id": ids[key]}))
            if len(done) == len(chunks):
                break
            if time.time() > deadline:
                raise Timeout(
                    f"{len(chunks) - len(done)} of {len(chunks)} chunks unfinished at the job's deadline",
                    field="run_deadline_seconds",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, poll_seconds)
    finally:
        for helper in helping.values():
            helper.cancel()
        await asyncio.gather(*helping.values(), return_exceptions=True)
    return [done[key] for key, _ in chunks]
