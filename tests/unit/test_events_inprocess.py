"""The in-process bus replays from the first event and ends after the terminal one."""

from __future__ import annotations

import asyncio

import pytest

from alphaswarm_common.events import InProcessEventBus, InProcessJobQueue, ProgressEvent

pytestmark = pytest.mark.unit


def _ev(task: str, seq: int, stage: str) -> ProgressEvent:
    return ProgressEvent(task_id=task, seq=seq, stage=stage, status="x")


def test_late_subscriber_replays_and_stops_at_terminal() -> None:
    async def main() -> list[int]:
        bus = InProcessEventBus()
        await bus.publish(_ev("t", 1, "accepted"))
        await bus.publish(_ev("other", 1, "accepted"))
        await bus.publish(_ev("t", 2, "training"))

        async def collect() -> list[int]:
            return [e.seq async for e in bus.subscribe("t")]

        task = asyncio.create_task(collect())
        await asyncio.sleep(0.01)
        await bus.publish(_ev("t", 3, "completed"))
        await bus.publish(_ev("t", 4, "after-terminal"))
        return await asyncio.wait_for(task, 2)

    assert asyncio.run(main()) == [1, 2, 3]


def test_after_seq_skips_seen_events() -> None:
    async def main() -> list[int]:
        bus = InProcessEventBus()
        for i, stage in enumerate(["accepted", "training", "failed"], start=1):
            await bus.publish(_ev("t", i, stage))
        return [e.seq async for e in bus.subscribe("t", after_seq=1)]

    assert asyncio.run(main()) == [2, 3]


def test_job_queue_runs_every_job_and_survives_a_failing_one() -> None:
    async def main() -> list[int]:
        q = InProcessJobQueue()
        seen: list[int] = []

        async def handler(kind: str, payload: dict) -> None:
            if payload["n"] == 2:
                raise RuntimeError("bad job")
            seen.append(payload["n"])

        worker = asyncio.create_task(q.consume(handler, concurrency=2))
        for n in range(5):
            await q.enqueue("k", {"n": n})
        await asyncio.sleep(0.05)
        worker.cancel()
        return sorted(seen)

    assert asyncio.run(main()) == [0, 1, 3, 4]
