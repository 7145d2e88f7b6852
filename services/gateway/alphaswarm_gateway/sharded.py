"""An optimization job split into chunks of parameter sets, evaluated by every backtester replica.

When a search numbers more sets than `optimize_chunk_sets` (the grid's
combinations, or `n_samples`), the job's worker cuts it into index ranges
`[first, last)` and calls `EvaluateParameterSets` for each, up to
`optimize_chunk_concurrency` at once. The backtester channel balances calls
across every replica (round robin over the addresses the target resolves
to), so the chunks run on all of them. Each chunk's response is recorded as
a stage output of the task (`chunk:<first>-<last>`, the packed response) as
soon as it arrives: an attempt that follows a crash, a lost lease or a
redelivery restores the recorded chunks and evaluates only the missing
ones. When every chunk is in, the job's `Optimize` call carries them; the
backtester merges them (ranks and Deflated-Sharpe p-values over the whole
search, the same numbers as one process) and saves the result exactly as an
unsplit optimization (same catalog rows, same response).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from alphaswarm.backtester.v1 import backtester_service_pb2 as bpb
from alphaswarm_common.grpc_client import aio_call

__all__ = ["chunk_plan", "evaluate_chunks", "search_size"]

log = logging.getLogger(__name__)


def search_size(job: Any) -> int:
    """How many sets the optimization job numbers (valid or not)."""
    if job.method == "random":
        return int(job.n_samples)
    return math.prod(len(v) for v in (job.grid or {}).values())


def chunk_plan(job: Any, chunk_sets: int) -> list[tuple[int, int]]:
    """The chunks of a job; empty when it is not split (`chunk_sets` 0, or a search that fits one chunk)."""
    n = search_size(job)
    if chunk_sets <= 0 or n <= chunk_sets:
        return []
    return [(lo, min(lo + chunk_sets, n)) for lo in range(0, n, chunk_sets)]


def stage_name(first: int, last: int) -> str:
    return f"chunk:{first}-{last}"


def _encode(response: bpb.EvaluateParameterSetsResponse) -> dict[str, Any]:
    return {
        "response": base64.b64encode(response.SerializeToString()).decode("ascii"),
        "served_by": response.served_by,
        "sets": len(response.sets),
    }


def _decode(output: dict[str, Any]) -> bpb.EvaluateParameterSetsResponse:
    return bpb.EvaluateParameterSetsResponse.FromString(base64.b64decode(output["response"]))


async def evaluate_chunks(
    gw: Any,
    request: bpb.OptimizeRequest,
    bounds: list[tuple[int, int]],
    *,
    outputs: dict[str, Any],
    record: Callable[[str, dict[str, Any]], Awaitable[None]],
    deadline: float,
    on_chunk: Callable[[int, int], Awaitable[None]] | None = None,
) -> list[bpb.EvaluateParameterSetsResponse]:
    """Every chunk's response, in order: restored from `outputs` or evaluated and recorded."""
    done: dict[tuple[int, int], bpb.EvaluateParameterSetsResponse] = {}
    for lo, hi in bounds:
        recorded = outputs.get(stage_name(lo, hi))
        if recorded is not None:
            done[(lo, hi)] = _decode(recorded)
    missing = [b for b in bounds if b not in done]
    if done:
        log.info("optimization: %d chunk(s) restored, %d to evaluate", len(done), len(missing))
    limit = asyncio.Semaphore(gw.settings.optimize_chunk_concurrency)

    async def one(lo: int, hi: int) -> None:
        async with limit:
            left = deadline - time.time()
            chunk = bpb.EvaluateParameterSetsRequest(
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
            )
            response = await aio_call(
                gw.clients.backtester.EvaluateParameterSets,
                chunk,
                timeout=max(1.0, min(gw.settings.deadline_backtest_seconds, left)),
                target="backtester",
            )
            await record(stage_name(lo, hi), _encode(response))
            done[(lo, hi)] = response
            log.info("optimization chunk [%d, %d) evaluated by %s", lo, hi, response.served_by)
            if on_chunk is not None:
                await on_chunk(len(done), len(bounds))

    tasks = [asyncio.create_task(one(lo, hi)) for lo, hi in missing]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
    return [done[b] for b in bounds]
