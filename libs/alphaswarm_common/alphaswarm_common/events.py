"""Progress events and the job queue, over NATS JetStream or in process.

Subjects: `alphaswarm.progress.<task_id>` carries a task's progress events;
`alphaswarm.jobs.<kind>` is the work queue of accepted jobs.

* Progress lives in the JetStream stream `ALPHASWARM_PROGRESS` (limits
  retention, kept `progress_max_age`), so a subscriber that arrives late
  replays every event from the first. A plain `nats-py` subscription to
  `alphaswarm.progress.>` sees the same JSON documents.
* Jobs live in `ALPHASWARM_JOBS` with work-queue retention and one durable
  pull consumer shared by every gateway worker: an accepted job survives a
  gateway restart and any replica can take it. A worker acknowledges a job
  when its handler returns and reports `in_progress` while it runs, so a long
  saga is not redelivered; a worker that dies leaves the job to another.

With no NATS configured (embedded mode) `InProcessEventBus` and
`InProcessJobQueue` give the same interface inside one asyncio loop.
All methods must be called from the loop that started the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "JOBS_STREAM",
    "PROGRESS_STREAM",
    "TERMINAL_STAGES",
    "EventBus",
    "InProcessEventBus",
    "InProcessJobQueue",
    "JobQueue",
    "NatsEventBus",
    "NatsJobQueue",
    "ProgressEvent",
    "progress_subject",
]

log = logging.getLogger(__name__)

PROGRESS_STREAM = "ALPHASWARM_PROGRESS"
JOBS_STREAM = "ALPHASWARM_JOBS"
PROGRESS_PREFIX = "alphaswarm.progress"
JOBS_PREFIX = "alphaswarm.jobs"
TERMINAL_STAGES = frozenset({"completed", "failed"})

JobHandler = Callable[[str, dict[str, Any]], Awaitable[None]]


def progress_subject(task_id: str) -> str:
    return f"{PROGRESS_PREFIX}.{task_id}"


class ProgressEvent(BaseModel):
    """`{task_id, seq, ts, stage, status, pct, message, data}`, the payload of every progress message."""

    task_id: str
    seq: int = Field(ge=1)
    ts: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    stage: str
    status: str
    pct: float = Field(default=0.0, ge=0, le=100)
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.stage in TERMINAL_STAGES

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> ProgressEvent:
        return cls.model_validate_json(raw)


class EventBus(ABC):
    """Publishes progress events and replays them to subscribers."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect and declare streams."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Disconnect."""

    @abstractmethod
    async def publish(self, event: ProgressEvent) -> None: ...

    @abstractmethod
    def subscribe(self, task_id: str, *, after_seq: int = 0) -> AsyncIterator[ProgressEvent]:
        """Every event of the task with seq > after_seq, from the first, ending after the terminal one."""

    async def ready(self) -> bool:
        return True

    async def last_seq(self, task_id: str) -> int:
        """The seq of the task's latest event (0 when it has none): a resumed task continues after it."""
        return 0


class InProcessEventBus(EventBus):
    """Keeps each task's events in memory and wakes subscribers on publish."""

    def __init__(self, *, max_tasks: int = 10_000) -> None:
        self._history: dict[str, list[ProgressEvent]] = defaultdict(list)
        self._cond: asyncio.Condition | None = None
        self._max_tasks = max_tasks

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def publish(self, event: ProgressEvent) -> None:
        cond = self._condition()
        async with cond:
            self._history[event.task_id].append(event)
            if len(self._history) > self._max_tasks:
                oldest = next(iter(self._history))
                if oldest != event.task_id:
                    del self._history[oldest]
            cond.notify_all()

    async def last_seq(self, task_id: str) -> int:
        events = self._history.get(task_id)
        return events[-1].seq if events else 0

    async def subscribe(self, task_id: str, *, after_seq: int = 0) -> AsyncIterator[ProgressEvent]:  # type: ignore[override]
        cond = self._condition()
        index = 0
        while True:
            async with cond:
                events = self._history.get(task_id, [])
                while index >= len(events):
                    await cond.wait()
                    events = self._history.get(task_id, [])
                batch = events[index:]
                index = len(events)
            for event in batch:
                if event.seq > after_seq:
                    yield event
                if event.terminal:
                    return


class NatsEventBus(EventBus):
    """Progress over NATS JetStream (stream `ALPHASWARM_PROGRESS`)."""

    def __init__(self, url: str, *, progress_max_age: dt.timedelta = dt.timedelta(days=7)) -> None:
        self.url = url
        self.max_age = progress_max_age
        self._nc: Any = None
        self._js: Any = None

    async def start(self) -> None:
        import nats
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig

        self._nc = await nats.connect(self.url, name="alphaswarm-progress", max_reconnect_attempts=-1)
        self._js = self._nc.jetstream()
        config = StreamConfig(
            name=PROGRESS_STREAM,
            subjects=[f"{PROGRESS_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=self.max_age.total_seconds(),
        )
        await _ensure_stream(self._js, config)

    async def close(self) -> None:
        await _close(self._nc)
        self._nc = None

    async def ready(self) -> bool:
        return bool(self._nc is not None and self._nc.is_connected)

    async def publish(self, event: ProgressEvent) -> None:
        await self._js.publish(progress_subject(event.task_id), event.to_json())

    async def last_seq(self, task_id: str) -> int:
        from nats.js.errors import NotFoundError

        try:
            msg = await self._js.get_last_msg(PROGRESS_STREAM, progress_subject(task_id))
        except NotFoundError:
            return 0
        return ProgressEvent.from_json(msg.data).seq

    async def subscribe(self, task_id: str, *, after_seq: int = 0) -> AsyncIterator[ProgressEvent]:  # type: ignore[override]
        from nats.js.api import DeliverPolicy

        sub = await self._js.subscribe(
            progress_subject(task_id), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        try:
            async for msg in sub.messages:
                event = ProgressEvent.from_json(msg.data)
                if event.seq > after_seq:
                    yield event
                if event.terminal:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def _close(nc: Any) -> None:
    """Flush and close. Publishes already waited for their JetStream acks and jobs are acked
    explicitly, so nothing is lost; `drain()` would wait out a pending pull fetch."""
    if nc is None or nc.is_closed:
        return
    with contextlib.suppress(Exception):
        await nc.flush(timeout=2)
    with contextlib.suppress(Exception):
        await nc.close()


async def _ensure_stream(js: Any, config: Any) -> None:
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        return
    with contextlib.suppress(Exception):
        await js.update_stream(config)


class JobQueue(ABC):
    """Accepted jobs waiting for a worker."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect and declare streams."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Disconnect."""

    @abstractmethod
    async def enqueue(self, kind: str, payload: dict[str, Any]) -> None: ...

    @abstractmethod
    async def consume(self, handler: JobHandler, *, concurrency: int = 1) -> None:
        """Run `handler(kind, payload)` for every job until cancelled."""


class InProcessJobQueue(JobQueue):
    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] | None = None

    def _q(self) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    async def enqueue(self, kind: str, payload: dict[str, Any]) -> None:
        await self._q().put((kind, payload))

    async def consume(self, handler: JobHandler, *, concurrency: int = 1) -> None:
        async def worker() -> None:
            q = self._q()
            while True:
                kind, payload = await q.get()
                try:
                    await handler(kind, payload)
                except Exception:
                    log.exception("job %s failed", kind)
                finally:
                    q.task_done()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


class NatsJobQueue(JobQueue):
    """A JetStream work queue (`ALPHASWARM_JOBS`) with one durable pull consumer shared by every worker.

    A work-queue stream admits one consumer per subject, so every gateway replica
    binds the same durable; `stream` and `prefix` exist for isolated deployments
    (and tests) sharing one NATS server.
    """

    def __init__(
        self,
        url: str,
        *,
        durable: str = "alphaswarm-gateway-workers",
        ack_wait: float = 60.0,
        stream: str = JOBS_STREAM,
        prefix: str = JOBS_PREFIX,
    ) -> None:
        self.url = url
        self.durable = durable
        self.stream = stream
        self.prefix = prefix
        self.ack_wait = ack_wait
        self._nc: Any = None
        self._js: Any = None

    async def start(self) -> None:
        import nats
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig

        self._nc = await nats.connect(self.url, name="alphaswarm-jobs", max_reconnect_attempts=-1)
        self._js = self._nc.jetstream()
        config = StreamConfig(
            name=self.stream,
            subjects=[f"{self.prefix}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
        await _ensure_stream(self._js, config)

    async def close(self) -> None:
        await _close(self._nc)
        self._nc = None

    async def enqueue(self, kind: str, payload: dict[str, Any]) -> None:
        await self._js.publish(f"{self.prefix}.{kind}", json.dumps(payload).encode())

    async def consume(self, handler: JobHandler, *, concurrency: int = 1) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig

        sub = await self._js.pull_subscribe(
            f"{self.prefix}.>",
            durable=self.durable,
            stream=self.stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait, max_deliver=5),
        )
        slots = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()

        async def run(msg: Any) -> None:
            kind = msg.subject.removeprefix(f"{self.prefix}.")
            heartbeat = asyncio.create_task(self._heartbeat(msg))
            ok = False
            try:
                await handler(kind, json.loads(msg.data))
                ok = True
            except Exception:
                # The handler could not even record a failure (say, the catalog is down):
                # hand the job back for a later delivery instead of dropping it.
                log.exception("job %s failed; it will be delivered again", kind)
            finally:
                heartbeat.cancel()
                with contextlib.suppress(Exception):
                    await (msg.ack() if ok else msg.nak(delay=5))
                slots.release()

        try:
            while True:
                await slots.acquire()
                try:
                    msgs = await sub.fetch(1, timeout=5)
                except NatsTimeout:
                    slots.release()
                    continue
                except Exception:
                    slots.release()
                    if self._nc is None or self._nc.is_closed:
                        return
                    await asyncio.sleep(1)
                    continue
                for msg in msgs:
                    task = asyncio.create_task(run(msg))
                    running.add(task)
                    task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()

    async def _heartbeat(self, msg: Any) -> None:
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()
