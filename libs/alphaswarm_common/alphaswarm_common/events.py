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

Every message carries the W3C trace context and the log fields of its sender (NATS
headers; `telemetry.inject`): a worker consuming a job continues the submitting request's
trace, with a CONSUMER span `alphaswarm.jobs.<kind> process` around the handler.

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

from alphaswarm_common import telemetry
from alphaswarm_common.service_metrics import observe_job

__all__ = [
    "DLQ_PREFIX",
    "DLQ_STREAM",
    "JOBS_STREAM",
    "PROGRESS_STREAM",
    "TERMINAL_STAGES",
    "DeadLetter",
    "EventBus",
    "InProcessEventBus",
    "InProcessJobQueue",
    "JobQueue",
    "NatsEventBus",
    "NatsJobQueue",
    "PoisonJob",
    "ProgressEvent",
    "progress_subject",
    "retry_delay",
]

log = logging.getLogger(__name__)

PROGRESS_STREAM = "ALPHASWARM_PROGRESS"
JOBS_STREAM = "ALPHASWARM_JOBS"
PROGRESS_PREFIX = "alphaswarm.progress"
JOBS_PREFIX = "alphaswarm.jobs"
DLQ_STREAM = "ALPHASWARM_DLQ"
DLQ_PREFIX = "alphaswarm.dlq"
TERMINAL_STAGES = frozenset({"completed", "failed", "cancelled"})

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
        await self._js.publish(
            progress_subject(event.task_id), event.to_json(), headers=telemetry.inject() or None
        )

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


class PoisonJob(Exception):
    """A job that can never succeed (unparseable, names nothing that exists): dead-letter it at once."""


class DeadLetter(BaseModel):
    """A job that left the work queue unfinished: `alphaswarm.dlq.<kind>` carries it with the reason."""

    kind: str
    payload: dict[str, Any] | None = None
    raw: str = ""
    reason: str
    deliveries: int = 0
    ts: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))


DeadLetterHandler = Callable[[DeadLetter], Awaitable[None]]


def retry_delay(deliveries: int, *, base: float = 1.0, cap: float = 30.0) -> float:
    """Backoff before the next delivery of a job delivered `deliveries` times: 1, 2, 4, ... <= cap seconds."""
    return float(min(cap, base * 2 ** max(0, deliveries - 1)))


def _parse_job(raw: bytes | str) -> dict[str, Any]:
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PoisonJob(f"the job is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise PoisonJob(f"the job is not a JSON object but {type(payload).__name__}")
    return payload


class JobQueue(ABC):
    """Accepted jobs waiting for a worker.

    A handler that returns finishes the job. One that raises `PoisonJob` sends it
    to the dead-letter subject at once; any other exception hands it back for a
    later delivery (with backoff), until `max_deliver` deliveries have failed, when
    it too goes to the dead-letter subject with the last error as its reason.
    """

    max_deliver: int = 5

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect and declare streams."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Disconnect."""

    @abstractmethod
    async def enqueue(self, kind: str, payload: dict[str, Any]) -> None: ...

    @abstractmethod
    async def consume(self, handler: JobHandler, *, concurrency: int = 1) -> None:
        """Run `handler(kind, payload)` for every job until cancelled."""

    @abstractmethod
    async def consume_dead_letters(self, handler: DeadLetterHandler) -> None:
        """Run `handler(letter)` for every dead letter until cancelled; a failing handler is retried."""


class InProcessJobQueue(JobQueue):
    def __init__(self, *, max_deliver: int = 5, retry_base: float = 1.0) -> None:
        self.max_deliver = max_deliver
        self.retry_base = retry_base
        self._queue: asyncio.Queue[tuple[str, dict[str, Any], int, dict[str, str]]] | None = None
        self._dlq: asyncio.Queue[DeadLetter] | None = None
        self.dead_letters: list[DeadLetter] = []
        self._timers: set[asyncio.Task[None]] = set()

    def _q(self) -> asyncio.Queue[tuple[str, dict[str, Any], int, dict[str, str]]]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    def _d(self) -> asyncio.Queue[DeadLetter]:
        if self._dlq is None:
            self._dlq = asyncio.Queue()
        return self._dlq

    async def enqueue(self, kind: str, payload: dict[str, Any]) -> None:
        with telemetry.span(f"{JOBS_PREFIX}.{kind} publish", kind=telemetry.SpanKind.PRODUCER):
            await self._q().put((kind, dict(payload), 0, telemetry.inject()))

    def depth(self) -> dict[str, Any]:
        return {"queue": "in-process", "pending": self._q().qsize(), "ack_pending": 0, "redelivered": 0}

    async def dead_letter(self, letter: DeadLetter) -> None:
        log.warning("job %s dead-lettered: %s", letter.kind, letter.reason)
        self.dead_letters.append(letter)
        await self._d().put(letter)

    def _later(self, delay: float, item: tuple[str, dict[str, Any], int, dict[str, str]]) -> None:
        async def put() -> None:
            await asyncio.sleep(delay)
            await self._q().put(item)

        task = asyncio.create_task(put())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def consume(self, handler: JobHandler, *, concurrency: int = 1) -> None:
        async def worker() -> None:
            q = self._q()
            while True:
                kind, payload, delivered, headers = await q.get()
                delivered += 1
                outcome = "retry"
                try:
                    with _consuming(headers, JOBS_PREFIX, kind, delivered):
                        await handler(kind, payload)
                    outcome = "ok"
                except PoisonJob as exc:
                    outcome = "dead_letter"
                    await self.dead_letter(
                        DeadLetter(kind=kind, payload=payload, reason=str(exc), deliveries=delivered)
                    )
                except Exception as exc:
                    log.exception("job %s failed (delivery %d)", kind, delivered)
                    if delivered >= self.max_deliver:
                        outcome = "dead_letter"
                        await self.dead_letter(
                            DeadLetter(
                                kind=kind,
                                payload=payload,
                                reason=f"{delivered} deliveries failed; last: {type(exc).__name__}: {exc}",
                                deliveries=delivered,
                            )
                        )
                    else:
                        self._later(
                            retry_delay(delivered, base=self.retry_base), (kind, payload, delivered, headers)
                        )
                finally:
                    observe_job(kind, outcome, delivered)
                    q.task_done()

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            for task in list(self._timers):
                task.cancel()

    async def consume_dead_letters(self, handler: DeadLetterHandler) -> None:
        q = self._d()
        while True:
            letter = await q.get()
            attempt = 0
            while True:
                attempt += 1
                try:
                    await handler(letter)
                    break
                except Exception:
                    log.exception("dead letter of %s not handled yet", letter.kind)
                    await asyncio.sleep(retry_delay(attempt, base=self.retry_base))


class NatsJobQueue(JobQueue):
    """A JetStream work queue (`ALPHASWARM_JOBS`) with one durable pull consumer shared by every worker.

    A work-queue stream admits one consumer per subject, so every gateway replica
    binds the same durable; `stream` and `prefix` exist for isolated deployments
    (and tests) sharing one NATS server. Dead letters go to `ALPHASWARM_DLQ`
    (subjects `alphaswarm.dlq.<kind>`, kept `dlq_max_age`), read by one durable
    consumer shared by every gateway.
    """

    def __init__(
        self,
        url: str,
        *,
        durable: str = "alphaswarm-gateway-workers",
        ack_wait: float = 60.0,
        max_deliver: int = 5,
        stream: str = JOBS_STREAM,
        prefix: str = JOBS_PREFIX,
        dlq_stream: str = DLQ_STREAM,
        dlq_prefix: str = DLQ_PREFIX,
        dlq_max_age: dt.timedelta = dt.timedelta(days=30),
        retry_base: float = 1.0,
    ) -> None:
        self.url = url
        self.durable = durable
        self.stream = stream
        self.prefix = prefix
        self.dlq_stream = dlq_stream
        self.dlq_prefix = dlq_prefix
        self.dlq_max_age = dlq_max_age
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.retry_base = retry_base
        self._nc: Any = None
        self._js: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        import nats
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig

        self._loop = asyncio.get_running_loop()
        self._nc = await nats.connect(self.url, name="alphaswarm-jobs", max_reconnect_attempts=-1)
        self._js = self._nc.jetstream()
        await _ensure_stream(
            self._js,
            StreamConfig(
                name=self.stream,
                subjects=[f"{self.prefix}.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
            ),
        )
        await _ensure_stream(
            self._js,
            StreamConfig(
                name=self.dlq_stream,
                subjects=[f"{self.dlq_prefix}.>"],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=self.dlq_max_age.total_seconds(),
            ),
        )

    async def close(self) -> None:
        await _close(self._nc)
        self._nc = None

    async def enqueue(self, kind: str, payload: dict[str, Any]) -> None:
        subject = f"{self.prefix}.{kind}"
        with telemetry.span(f"{subject} publish", kind=telemetry.SpanKind.PRODUCER):
            await self._js.publish(subject, json.dumps(payload).encode(), headers=telemetry.inject() or None)

    def depth(self) -> dict[str, Any] | None:
        """Pending, running and redelivered jobs of the shared consumer (JetStream consumer info),
        asked from any thread (the metrics scrape) on the loop that started the queue."""
        loop = self._loop
        if self._js is None or loop is None or loop.is_closed():
            return None
        future = asyncio.run_coroutine_threadsafe(self._js.consumer_info(self.stream, self.durable), loop)
        info = future.result(timeout=5)
        return {
            "queue": self.stream,
            "pending": int(info.num_pending or 0),
            "ack_pending": int(info.num_ack_pending or 0),
            "redelivered": int(info.num_redelivered or 0),
        }

    async def dead_letter(self, letter: DeadLetter) -> None:
        log.warning("job %s dead-lettered: %s", letter.kind, letter.reason)
        await self._js.publish(
            f"{self.dlq_prefix}.{letter.kind or 'unknown'}", letter.model_dump_json().encode()
        )

    async def consume(self, handler: JobHandler, *, concurrency: int = 1) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig

        sub = await self._js.pull_subscribe(
            f"{self.prefix}.>",
            durable=self.durable,
            stream=self.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait, max_deliver=self.max_deliver
            ),
        )
        slots = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()

        async def run(msg: Any) -> None:
            kind = msg.subject.removeprefix(f"{self.prefix}.")
            heartbeat = asyncio.create_task(self._heartbeat(msg))
            delivered = int(getattr(msg.metadata, "num_delivered", 1) or 1)
            payload: dict[str, Any] | None = None
            letter: DeadLetter | None = None
            ok = False
            try:
                payload = _parse_job(msg.data)
                with _consuming(msg.headers, self.prefix, kind, delivered):
                    await handler(kind, payload)
                ok = True
            except PoisonJob as exc:
                letter = DeadLetter(
                    kind=kind, payload=payload, raw=_text(msg.data), reason=str(exc), deliveries=delivered
                )
            except Exception as exc:
                log.exception("job %s failed (delivery %d of %d)", kind, delivered, self.max_deliver)
                if delivered >= self.max_deliver:
                    letter = DeadLetter(
                        kind=kind,
                        payload=payload,
                        raw=_text(msg.data),
                        reason=f"{delivered} deliveries failed; last: {type(exc).__name__}: {exc}",
                        deliveries=delivered,
                    )
            finally:
                heartbeat.cancel()
                observe_job(kind, "ok" if ok else "dead_letter" if letter is not None else "retry", delivered)
                try:
                    await self._settle(msg, ok, letter, delivered)
                finally:
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

    async def _settle(self, msg: Any, ok: bool, letter: DeadLetter | None, delivered: int) -> None:
        """Ack a finished job; dead-letter (then terminate) a poisoned or exhausted one; nak the rest."""
        with contextlib.suppress(Exception):
            if ok:
                await msg.ack()
                return
            if letter is not None:
                try:
                    await self.dead_letter(letter)
                except Exception:
                    log.exception("could not dead-letter job %s; it stays queued", letter.kind)
                    await msg.nak(delay=retry_delay(delivered, base=self.retry_base))
                    return
                await msg.term()
                return
            await msg.nak(delay=retry_delay(delivered, base=self.retry_base))

    async def consume_dead_letters(self, handler: DeadLetterHandler) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig

        sub = await self._js.pull_subscribe(
            f"{self.dlq_prefix}.>",
            durable=f"{self.durable}-dlq",
            stream=self.dlq_stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait, max_deliver=-1),
        )
        while True:
            try:
                msgs = await sub.fetch(1, timeout=5)
            except NatsTimeout:
                continue
            except Exception:
                if self._nc is None or self._nc.is_closed:
                    return
                await asyncio.sleep(1)
                continue
            for msg in msgs:
                delivered = int(getattr(msg.metadata, "num_delivered", 1) or 1)
                heartbeat = asyncio.create_task(self._heartbeat(msg))
                try:
                    letter = DeadLetter.model_validate_json(msg.data)
                except ValueError:
                    log.error("unreadable dead letter on %s dropped", msg.subject)
                    heartbeat.cancel()
                    with contextlib.suppress(Exception):
                        await msg.term()
                    continue
                try:
                    await handler(letter)
                except Exception:
                    log.exception("dead letter of %s not handled yet", letter.kind)
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=retry_delay(delivered, base=self.retry_base))
                else:
                    with contextlib.suppress(Exception):
                        await msg.ack()
                finally:
                    heartbeat.cancel()

    async def _heartbeat(self, msg: Any) -> None:
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()


def _consuming(headers: Any, prefix: str, kind: str, delivered: int) -> Any:
    """The consumer's span, continuing the trace (and log fields) of the job's sender."""
    return telemetry.continued(
        headers,
        f"{prefix}.{kind} process",
        attributes={
            "messaging.system": "nats",
            "messaging.destination.name": f"{prefix}.{kind}",
            "messaging.operation.type": "process",
            "alphaswarm.deliveries": delivered,
        },
    )


def _text(raw: bytes | str) -> str:
    return (raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw)[:10_000]
