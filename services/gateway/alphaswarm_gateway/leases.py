"""How a gateway worker holds a task: claim, heartbeat, fenced writes, an outbox, the reaper and
the dead-letter handler (docs/architecture.md, "Run lifecycle").

* `execute_leased` claims the task of a job (ClaimTask: a new attempt with a new fencing
  token), renews the lease every `gateway_heartbeat_seconds` while the work runs, and
  gives it up at the end. A claim that finds the task terminal, or held by another live
  worker (a duplicate delivery), does nothing. A renewal refused with LEASE_LOST (another
  attempt took the task over, or it was cancelled) cancels the work at once.
* Every write of an attempt (`Attempt.update_run`, `update_task`, `record`) carries its
  fencing token; the catalog refuses a stale one.
* `durable` is the outbox of state changes: a write that meets an unavailable catalog is
  retried with backoff for up to `gateway_outbox_seconds` while the job stays in progress
  (its JetStream message keeps being extended), so a failure that happens while the
  catalog is down still reaches the row once it is back. `publish_terminal` does the
  same for the terminal event.
* `reap_once` (every gateway, every `gateway_reaper_seconds`) re-queues unfinished tasks
  whose lease expired (the next attempt resumes them) and fails those that used up
  `gateway_max_attempts`.
* `handle_dead_letter` ends the task of a dead-lettered job FAILED with a terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf import field_mask_pb2, json_format

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.errors import (
    AlphaSwarmError,
    DependencyUnavailable,
    FailedPrecondition,
    NotFound,
    Timeout,
)
from alphaswarm_common.events import DeadLetter, PoisonJob, ProgressEvent
from alphaswarm_common.grpc_client import aio_call
from alphaswarm_common.protoconv import struct_from_dict
from alphaswarm_gateway.progress import error_detail

__all__ = [
    "Attempt",
    "LeaseLost",
    "durable",
    "execute_leased",
    "fail_task",
    "handle_dead_letter",
    "publish_terminal",
    "reap_once",
    "terminal_event",
    "worker_id",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
TRANSIENT = (DependencyUnavailable, Timeout)


class LeaseLost(Exception):
    """Another attempt holds the task now (or it was cancelled): this attempt stops writing."""


def worker_id() -> str:
    """This process as a lease owner: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _is_lease_lost(exc: BaseException) -> bool:
    return isinstance(exc, FailedPrecondition) and exc.reason == "LEASE_LOST"


async def durable(gw: Any, what: str, fn: Callable[[], Awaitable[T]]) -> T:
    """`fn()`, retried with backoff while the catalog (or the bus) is unavailable, for up to
    `gateway_outbox_seconds`; LEASE_LOST becomes `LeaseLost`, other errors propagate."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + gw.settings.gateway_outbox_seconds
    delay = 0.2
    while True:
        try:
            return await fn()
        except FailedPrecondition as exc:
            if _is_lease_lost(exc):
                raise LeaseLost(str(exc)) from exc
            raise
        except (*TRANSIENT, ConnectionError, OSError) as exc:
            if loop.time() + delay > give_up:
                raise
            log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
        except Exception as exc:  # a bus that is reconnecting raises its own errors
            if not _bus_error(exc) or loop.time() + delay > give_up:
                raise
            log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


def _bus_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("nats")


async def publish_terminal(gw: Any, event: ProgressEvent) -> None:
    """Publish a terminal event after the task's latest, retried while the bus is down.

    It follows the terminal row write, which is the record: when the bus stays down past
    the outbox time the event is given up (logged), and watchers end from the row."""

    async def publish() -> None:
        event.seq = max(event.seq, await gw.bus.last_seq(event.task_id) + 1)
        await gw.bus.publish(event)

    try:
        await durable(gw, f"terminal event of {event.task_id}", publish)
    except Exception as exc:
        log.error("terminal event of %s not published: %s", event.task_id, exc)


def detail_data(detail: resources_pb2.ErrorDetail, **extra: Any) -> dict[str, Any]:
    return {
        "stage": detail.stage,
        "code": detail.code,
        "message": detail.message,
        "field": detail.field,
        **extra,
    }


@dataclass
class Attempt:
    """One claimed attempt of a task: its fencing token and the outputs of completed stages."""

    gw: Any
    task_id: str
    token: int
    attempts: int
    outputs: dict[str, Any] = field(default_factory=dict)
    task: resources_pb2.Task | None = None

    async def _call(self, method: Any, request: Any, what: str) -> Any:
        timeout = self.gw.settings.deadline_default_seconds
        return await durable(
            self.gw, what, lambda: aio_call(method, request, timeout=timeout, target="persistence")
        )

    async def update_run(self, run: resources_pb2.AlphaBacktestRun, *paths: str) -> None:
        await self._call(
            self.gw.clients.persistence.UpdateAlphaBacktestRun,
            ppb.UpdateAlphaBacktestRunRequest(
                run=run, update_mask=field_mask_pb2.FieldMask(paths=list(paths)), fencing_token=self.token
            ),
            f"update of run {run.run_id}",
        )

    async def update_task(self, task: resources_pb2.Task, *paths: str) -> None:
        task.task_id = self.task_id
        await self._call(
            self.gw.clients.persistence.UpdateTask,
            ppb.UpdateTaskRequest(
                task=task, update_mask=field_mask_pb2.FieldMask(paths=list(paths)), fencing_token=self.token
            ),
            f"update of task {self.task_id}",
        )

    async def record(self, stage: str, output: dict[str, Any]) -> None:
        self.outputs[stage] = output
        await self._call(
            self.gw.clients.persistence.RecordStageOutput,
            ppb.RecordStageOutputRequest(
                task_id=self.task_id, fencing_token=self.token, stage=stage, output=struct_from_dict(output)
            ),
            f"output of stage {stage} of task {self.task_id}",
        )


async def _persistence(gw: Any, method: str, request: Any) -> Any:
    return await aio_call(
        getattr(gw.clients.persistence, method),
        request,
        timeout=gw.settings.deadline_default_seconds,
        target="persistence",
    )


async def _release(gw: Any, attempt: Attempt) -> None:
    """Give the lease up (best effort: it lapses anyway); a stale token releases nothing."""
    with contextlib.suppress(Exception):
        await _persistence(
            gw,
            "ReleaseTaskLease",
            ppb.ReleaseTaskLeaseRequest(task_id=attempt.task_id, fencing_token=attempt.token),
        )


def terminal_event(task_id: str, stage: str, message: str, data: dict[str, Any]) -> ProgressEvent:
    """A terminal event (`completed`, `failed`, `cancelled`); `publish_terminal` numbers it."""
    return ProgressEvent(
        task_id=task_id, seq=1, stage=stage, status=stage, pct=100.0, message=message, data=data
    )


async def claim(gw: Any, task_id: str, owner: str) -> tuple[int, Attempt]:
    s = gw.settings
    try:
        resp = await _persistence(
            gw,
            "ClaimTask",
            ppb.ClaimTaskRequest(
                task_id=task_id,
                owner=owner,
                lease_seconds=s.gateway_lease_seconds,
                max_attempts=s.gateway_max_attempts,
            ),
        )
    except NotFound as exc:
        raise PoisonJob(f"task {task_id} does not exist") from exc
    lease = resp.lease
    outputs = json_format.MessageToDict(lease.stage_outputs) if lease.HasField("stage_outputs") else {}
    attempt = Attempt(gw, task_id, int(lease.fencing_token), int(lease.attempts), outputs, resp.task)
    return int(resp.outcome), attempt


async def _heartbeat(gw: Any, attempt: Attempt, work: asyncio.Task[Any], lost: list[str]) -> None:
    s = gw.settings
    while True:
        await asyncio.sleep(s.gateway_heartbeat_seconds)
        try:
            await _persistence(
                gw,
                "RenewTaskLease",
                ppb.RenewTaskLeaseRequest(
                    task_id=attempt.task_id,
                    fencing_token=attempt.token,
                    lease_seconds=s.gateway_lease_seconds,
                ),
            )
        except FailedPrecondition as exc:
            if _is_lease_lost(exc):
                log.warning("task %s: lease lost (%s); stopping this attempt", attempt.task_id, exc)
                lost.append(str(exc))
                work.cancel()
                return
            log.warning("task %s: lease not renewed: %s", attempt.task_id, exc)
        except Exception as exc:  # the catalog is down: nobody can take the task over meanwhile
            log.warning("task %s: lease not renewed: %s", attempt.task_id, exc)


Body = Callable[[Attempt], Coroutine[Any, Any, None]]
Exhausted = Callable[[Attempt], Awaitable[None]]


async def execute_leased(gw: Any, task_id: str, body: Body, exhausted: Exhausted) -> None:
    """Claim `task_id`, run `body(attempt)` under a renewed lease, then release it.

    A terminal or live-held task is left alone; a task out of attempts goes to
    `exhausted(attempt)` (which holds the lease and must fail it). The work is
    registered in `gw.inflight` so a cancel in this process stops it at once.
    """
    # A catalog outage at the claim keeps the job in progress (retried) instead of spending deliveries.
    outcome, attempt = await durable(gw, f"claim of task {task_id}", lambda: claim(gw, task_id, gw.owner))
    if outcome == ppb.CLAIM_OUTCOME_TERMINAL:
        return
    if outcome == ppb.CLAIM_OUTCOME_HELD:
        log.info("task %s is held by a live worker; this delivery is a duplicate", task_id)
        return
    try:
        if outcome == ppb.CLAIM_OUTCOME_EXHAUSTED:
            await exhausted(attempt)
            return
        log.info("task %s claimed by %s (attempt %d)", task_id, gw.owner, attempt.attempts)
        lost: list[str] = []
        work = asyncio.current_task()
        assert work is not None
        job: asyncio.Task[None] = asyncio.create_task(body(attempt), name=f"task-{task_id}")
        gw.inflight[task_id] = job
        beat = asyncio.create_task(_heartbeat(gw, attempt, job, lost))
        try:
            await job
        except asyncio.CancelledError:
            if work.cancelling():
                raise  # this worker is shutting down: the job is handed back and the next attempt resumes
            # else the work was cancelled for this task only (lease lost, or a cancel request)
        except LeaseLost as exc:
            log.warning("task %s: %s", task_id, exc)
        finally:
            beat.cancel()
            gw.inflight.pop(task_id, None)
            if not job.done():
                job.cancel()
                with contextlib.suppress(BaseException):
                    await job
    finally:
        await _release(gw, attempt)


async def fail_task(
    gw: Any,
    attempt: Attempt,
    detail: resources_pb2.ErrorDetail,
    *,
    run_id: str = "",
    extra: dict[str, Any] | None = None,
) -> None:
    """End the task (and its run) FAILED with `detail`, fenced and retried, then publish `failed`."""
    if run_id:
        from alphaswarm_common.protoconv import timestamp_from_datetime

        failed = resources_pb2.AlphaBacktestRun(
            run_id=run_id, state=resources_pb2.RUN_STATE_FAILED, stage="failed", error=detail
        )
        failed.finished_at.CopyFrom(timestamp_from_datetime(_now()))
        await attempt.update_run(failed, "state", "stage", "error", "finished_at")
    else:
        await attempt.update_task(
            resources_pb2.Task(state=resources_pb2.RUN_STATE_FAILED, stage="failed", error=detail),
            "state",
            "stage",
            "error",
        )
    await publish_terminal(
        gw,
        terminal_event(
            attempt.task_id,
            "failed",
            f"{detail.stage}: {detail.message}",
            detail_data(detail, **({"run_id": run_id} if run_id else {}), **(extra or {})),
        ),
    )


def _now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def exhausted_detail(task: resources_pb2.Task | None, attempts: int) -> resources_pb2.ErrorDetail:
    stage = (task.stage if task is not None else "") or "accepted"
    return resources_pb2.ErrorDetail(
        stage=stage,
        code="ABORTED",
        message=f"no worker finished the task in {attempts - 1} attempts (workers died or lost their lease)",
    )


async def reap_once(
    gw: Any, compensate: Callable[[str, Attempt, resources_pb2.ErrorDetail], Awaitable[None]]
) -> int:
    """One pass of the reaper; returns how many tasks it handled."""
    s = gw.settings
    resp = await _persistence(
        gw,
        "ReapTasks",
        ppb.ReapTasksRequest(
            owner=gw.owner,
            hold_seconds=s.gateway_lease_seconds,
            pending_grace_seconds=s.gateway_pending_grace_seconds,
            max_attempts=s.gateway_max_attempts,
        ),
    )
    for reaped in resp.tasks:
        task = reaped.task
        try:
            if reaped.action == ppb.REAP_ACTION_REQUEUE:
                payload = {"task_id": task.task_id, **({"run_id": reaped.run_id} if reaped.run_id else {})}
                log.info("re-queueing task %s (%s): its lease expired", task.task_id, task.kind)
                await gw.queue.enqueue(task.kind, payload)
            else:
                attempt = Attempt(
                    gw, task.task_id, int(reaped.lease.fencing_token), int(reaped.lease.attempts)
                )
                attempt.outputs = (
                    json_format.MessageToDict(reaped.lease.stage_outputs)
                    if reaped.lease.HasField("stage_outputs")
                    else {}
                )
                detail = exhausted_detail(task, int(reaped.lease.attempts) + 1)
                log.warning("failing task %s: %s", task.task_id, detail.message)
                await compensate(reaped.run_id, attempt, detail)
                await fail_task(gw, attempt, detail, run_id=reaped.run_id)
        except LeaseLost:
            continue
        except Exception:
            log.exception("reaper could not handle task %s", task.task_id)
    return len(resp.tasks)


async def reaper_loop(
    gw: Any, compensate: Callable[[str, Attempt, resources_pb2.ErrorDetail], Awaitable[None]]
) -> None:
    while True:
        await asyncio.sleep(gw.settings.gateway_reaper_seconds)
        try:
            await reap_once(gw, compensate)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("reaper pass failed: %s", exc)


async def handle_dead_letter(
    gw: Any,
    letter: DeadLetter,
    compensate: Callable[[str, Attempt, resources_pb2.ErrorDetail], Awaitable[None]],
) -> None:
    """End the dead-lettered job's task FAILED (unless it ended, or a live worker holds it)."""
    task_id = str((letter.payload or {}).get("task_id") or "")
    if not task_id:
        log.error(
            "dead letter of %s names no task (%s); nothing to fail: %r",
            letter.kind,
            letter.reason,
            letter.raw,
        )
        return
    try:
        outcome, attempt = await claim(gw, task_id, gw.owner)
    except PoisonJob:
        log.error("dead letter names task %s, which does not exist", task_id)
        return
    except AlphaSwarmError as exc:
        if exc.grpc_code == "INVALID_ARGUMENT":
            log.error("dead letter names an invalid task id %r", task_id)
            return
        raise
    if outcome in (ppb.CLAIM_OUTCOME_TERMINAL, ppb.CLAIM_OUTCOME_HELD):
        return
    detail = error_detail(
        (attempt.task.stage if attempt.task is not None else "") or "accepted",
        DependencyUnavailable(f"the job was dead-lettered: {letter.reason}"),
    )
    detail.code = "ABORTED"
    try:
        run_id = ""
        if attempt.task is not None and attempt.task.kind == "alpha_backtest":  # the task's own run,
            run_id = (await gw.get_run(task_id=task_id)).run_id  # not whatever the letter names
        await compensate(run_id, attempt, detail)
        await fail_task(gw, attempt, detail, run_id=run_id, extra={"dead_letter": True})
    except LeaseLost:
        return
    finally:
        await _release(gw, attempt)
