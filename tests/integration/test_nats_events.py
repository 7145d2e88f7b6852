"""Progress over real NATS JetStream: late subscribers replay from the first event,
a plain nats-py subscriber sees the same JSON, and the job stream is a work queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid

import pytest

from alphaswarm_common.events import NatsEventBus, NatsJobQueue, ProgressEvent

pytestmark = pytest.mark.integration
NATS_URL = os.environ.get("ALPHASWARM_TEST_NATS_URL", "nats://127.0.0.1:4222")


def _require_nats() -> None:
    import socket

    host, port = NATS_URL.removeprefix("nats://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"NATS is required in CI and is not reachable at {NATS_URL}")
        pytest.skip(f"NATS not reachable at {NATS_URL}")


@pytest.fixture(autouse=True)
def _nats() -> None:
    _require_nats()


def test_late_subscriber_replays_every_event_and_raw_subscriber_sees_json() -> None:
    async def main() -> tuple[list[int], list[dict]]:
        import nats

        task_id = f"t-{uuid.uuid4()}"
        bus = NatsEventBus(NATS_URL)
        await bus.start()
        raw_nc = await nats.connect(NATS_URL)
        raw: list[dict] = []

        async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
            raw.append(json.loads(msg.data))

        await raw_nc.subscribe(f"alphaswarm.progress.{task_id}", cb=on_msg)
        await raw_nc.flush()  # the server knows the subscription before anything is published
        stages = [
            "accepted",
            "training",
            "registering",
            "deploying",
            "predicting",
            "backtesting",
            "persisting",
            "completed",
        ]
        for seq, stage in enumerate(stages, start=1):
            await bus.publish(
                ProgressEvent(task_id=task_id, seq=seq, stage=stage, status="done", pct=seq * 10)
            )
        # Subscribe only after everything was published: JetStream replays it.
        seen = [e.seq async for e in bus.subscribe(task_id)]
        await asyncio.sleep(0.2)
        await raw_nc.drain()
        await bus.close()
        return seen, raw

    seen, raw = asyncio.run(main())
    assert seen == list(range(1, 9))
    assert [m["stage"] for m in raw] == [
        "accepted",
        "training",
        "registering",
        "deploying",
        "predicting",
        "backtesting",
        "persisting",
        "completed",
    ]
    assert set(raw[0]) >= {"task_id", "seq", "ts", "stage", "status", "pct", "message", "data"}


def test_work_queue_delivers_each_job_to_one_worker_and_survives_restart() -> None:
    async def main() -> list[int]:
        tag = uuid.uuid4().hex[:8]
        durable = f"test-workers-{tag}"
        kind = f"test_{tag}"
        # An isolated work-queue stream: a work queue admits one consumer per subject.
        isolated = {"stream": f"ALPHASWARM_JOBS_TEST_{tag}", "prefix": f"alphaswarm.testjobs.{tag}"}
        producer = NatsJobQueue(NATS_URL, durable=durable, **isolated)
        await producer.start()
        for n in range(6):  # enqueued before any worker exists
            await producer.enqueue(kind, {"n": n})
        await producer.close()

        seen: list[int] = []

        async def handler(k: str, payload: dict) -> None:
            if k == kind:
                seen.append(payload["n"])

        workers = []
        for _ in range(2):
            q = NatsJobQueue(NATS_URL, durable=durable, **isolated)
            await q.start()
            workers.append((q, asyncio.create_task(q.consume(handler, concurrency=2))))
        for _ in range(100):
            if len(seen) >= 6:
                break
            await asyncio.sleep(0.1)
        for q, t in workers:
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)
            # Clean up the durable consumer of this test.
            with contextlib.suppress(Exception):
                await q._js.delete_stream(isolated["stream"])
            await q.close()
        return seen

    seen = asyncio.run(main())
    assert sorted(seen) == list(range(6))
