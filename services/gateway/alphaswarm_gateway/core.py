"""The gateway's service layer: accept, run, read and watch alpha-backtest runs.

`Gateway` is the composition root of the gateway process (`bootstrap`): gRPC
channels to the four services, the MLflow tracker, the event bus and the job
queue. Both entrypoints (REST in `rest.py`, gRPC in `grpc_api.py`) call its
methods and nothing else.

Accepting a run creates the task and run rows in one transaction (idempotent
by `request_id`), publishes the `accepted` event and enqueues the job, or
withdraws the rows and answers UNAVAILABLE when the bus or the queue refuses;
a worker (this process or a replica on the JetStream work queue) claims the
run's task and runs the saga (`saga.py`). Every gateway also runs the reaper
and the dead-letter handler (`leases.py`); `cancel_task` ends a task
CANCELLED and stops its work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from alphaswarm.backtester.v1 import backtester_service_pb2 as bpb
from alphaswarm.backtester.v1 import backtester_service_pb2_grpc as bpb_grpc
from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm.registry.v1 import registry_service_pb2 as rpb
from alphaswarm.registry.v1 import registry_service_pb2_grpc as rpb_grpc
from alphaswarm.trainer.v1 import trainer_service_pb2 as tpb
from alphaswarm.trainer.v1 import trainer_service_pb2_grpc as tpb_grpc
from alphaswarm_common.config import AlphaBacktestConfig, StrategyConfig
from alphaswarm_common.data import check_dataset_source
from alphaswarm_common.errors import FailedPrecondition, InvalidArgument
from alphaswarm_common.events import (
    EventBus,
    InProcessEventBus,
    InProcessJobQueue,
    JobQueue,
    NatsEventBus,
    NatsJobQueue,
    ProgressEvent,
)
from alphaswarm_common.grpc_client import aio_call, aio_channel
from alphaswarm_common.logging_json import bind
from alphaswarm_common.metrics import combined_score
from alphaswarm_common.protoconv import TERMINAL_RUN_STATES, config_from_proto, config_to_proto
from alphaswarm_common.service_metrics import add_queue_source
from alphaswarm_common.settings import Settings
from alphaswarm_common.telemetry import current_trace_id
from alphaswarm_common.tls import client_credentials
from alphaswarm_common.tracking import Tracker
from alphaswarm_gateway.leases import (
    handle_dead_letter,
    publish_terminal,
    reaper_loop,
    terminal_event,
    worker_id,
)
from alphaswarm_gateway.shared_limits import SharedBuckets

__all__ = ["Clients", "Gateway", "bootstrap"]

log = logging.getLogger(__name__)
JOB_KIND = "alpha_backtest"


@dataclass
class Clients:
    trainer: tpb_grpc.TrainerServiceStub
    registry: rpb_grpc.RegistryServiceStub
    backtester: bpb_grpc.BacktesterServiceStub
    persistence: ppb_grpc.PersistenceServiceStub
    channels: dict[str, grpc.aio.Channel]

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close()


def _addresses(settings: Settings) -> dict[str, str | None]:
    return {
        "trainer": settings.trainer_addr,
        "registry": settings.registry_addr,
        "backtester": settings.backtester_addr,
        "persistence": settings.persistence_addr,
    }


def _check_addresses(settings: Settings) -> None:
    missing = [k for k, v in _addresses(settings).items() if not v]
    if missing:
        raise InvalidArgument(
            f"the gateway needs the addresses of {', '.join(missing)} (ALPHASWARM_<NAME>_ADDR)",
            field=f"{missing[0]}_addr",
        )


def _connect(settings: Settings) -> Clients:
    _check_addresses(settings)
    addrs = _addresses(settings)
    credentials = client_credentials(settings)
    channels = {
        k: aio_channel(v, tuning=settings.grpc_tuning(), credentials=credentials, service=k)
        for k, v in addrs.items()
        if v
    }
    return Clients(
        trainer=tpb_grpc.TrainerServiceStub(channels["trainer"]),
        registry=rpb_grpc.RegistryServiceStub(channels["registry"]),
        backtester=bpb_grpc.BacktesterServiceStub(channels["backtester"]),
        persistence=ppb_grpc.PersistenceServiceStub(channels["persistence"]),
        channels=channels,
    )


class Gateway:
    """What REST and gRPC can ask of the alpha-backtest workflow."""

    def __init__(
        self, settings: Settings, clients: Clients | None, tracker: Tracker, bus: EventBus, queue: JobQueue
    ) -> None:
        self.settings = settings
        self._clients = clients
        self.tracker = tracker
        self.bus = bus
        self.queue = queue
        self._workers: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        # This process as a lease owner, and the work it runs by task id (a cancel stops it here).
        self.owner = worker_id()
        self.inflight: dict[str, asyncio.Task[None]] = {}
        # Submission rate limits every replica shares (NATS key-value); in process without NATS.
        self.shared_buckets: SharedBuckets | None = None
        if settings.nats_url and isinstance(bus, NatsEventBus):
            self.shared_buckets = SharedBuckets(
                settings.nats_url, settings.submit_rate_per_minute, settings.submit_burst
            )

    @property
    def clients(self) -> Clients:
        if self._clients is None:
            raise RuntimeError("the gateway is not started")
        return self._clients

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, *, workers: bool = True) -> None:
        """Connect (in the serving event loop: aio channels belong to the loop that creates them)."""
        if self._clients is None:
            self._clients = _connect(self.settings)
        await self.bus.start()
        await self.queue.start()
        if hasattr(self.queue, "depth"):
            add_queue_source(self.queue)  # queue depth and redeliveries on every metrics scrape
        if workers:
            from alphaswarm_gateway.saga import AlphaBacktestSaga

            saga = AlphaBacktestSaga(self)
            self._workers = asyncio.create_task(
                self.queue.consume(self._dispatch(saga), concurrency=self.settings.gateway_workers),
                name="saga-workers",
            )
            self._background = [
                asyncio.create_task(reaper_loop(self, self._compensate), name="reaper"),
                asyncio.create_task(
                    self.queue.consume_dead_letters(
                        lambda letter: handle_dead_letter(self, letter, self._compensate)
                    ),
                    name="dead-letters",
                ),
            ]

    async def _compensate(self, run_id: str, attempt: Any, detail: resources_pb2.ErrorDetail) -> None:
        """What the reaper and the dead-letter handler undo before failing a run."""
        if run_id:
            from alphaswarm_gateway.saga import compensate

            await compensate(self, run_id, attempt.outputs, detail)

    def _dispatch(self, saga: Any) -> Any:
        """Route a job to its worker: the alpha-backtest saga or a backtester job."""
        from alphaswarm_gateway.jobs import run_job
        from alphaswarm_gateway.sharded import CHUNK_KIND, run_chunk

        async def handle(kind: str, payload: dict[str, Any]) -> None:
            with bind(run_id=payload.get("run_id"), task_id=payload.get("task_id")):
                if kind == JOB_KIND:
                    await saga.handle_job(kind, payload)
                elif kind == CHUNK_KIND:
                    await run_chunk(self, payload)
                else:
                    await run_job(self, kind, payload)

        return handle

    async def close(self) -> None:
        for task in [*self._background, *([self._workers] if self._workers is not None else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._background = []
        await self.queue.close()
        await self.bus.close()
        if self.shared_buckets is not None:
            await self.shared_buckets.close()
        if self._clients is not None:
            await self._clients.close()
            self._clients = None

    async def readiness(self) -> dict[str, Any]:
        """Health of every upstream service, of the catalog database (persistence's `database`
        probe) and of the event bus."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        async def check(ch: grpc.aio.Channel, service: str) -> str:
            try:
                resp = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=2
                )
            except grpc.aio.AioRpcError as exc:
                return str(exc.code().name)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

        checks: dict[str, Any] = {}
        for name, ch in self.clients.channels.items():
            checks[name] = await check(ch, "")
        if "persistence" in self.clients.channels:
            checks["database"] = await check(self.clients.channels["persistence"], "database")
        checks["event_bus"] = "SERVING" if await self.bus.ready() else "NOT_CONNECTED"
        checks["ready"] = all(v == "SERVING" for v in checks.values())
        return checks

    # -- runs -----------------------------------------------------------------------------------
    async def start_run(
        self, cfg: AlphaBacktestConfig, *, request_id: str | None = None
    ) -> resources_pb2.AlphaBacktestRun:
        """Accept a run: create its rows, publish `accepted`, enqueue the job. Returns the stored run."""
        request_id = request_id or cfg.request_id or ""
        await self.preflight(cfg)
        run = resources_pb2.AlphaBacktestRun(
            run_name=cfg.run_name,
            state=resources_pb2.RUN_STATE_PENDING,
            config=config_to_proto(cfg),
            stage="accepted",
            deployment_id=cfg.deployment_id or "",
            trace_id=current_trace_id(),
        )
        created = await aio_call(
            self.clients.persistence.CreateAlphaBacktestRun,
            ppb.CreateAlphaBacktestRunRequest(run=run, request_id=request_id),
            timeout=self.settings.deadline_default_seconds,
            target="persistence",
        )
        stored = created.run
        if not created.created:
            return stored  # the same request again: one run, already queued
        from alphaswarm_gateway.jobs import enqueue_accepted

        await enqueue_accepted(
            self,
            stored.task_id,
            JOB_KIND,
            {"run_id": stored.run_id, "task_id": stored.task_id},
            ProgressEvent(
                task_id=stored.task_id,
                seq=1,
                stage="accepted",
                status="accepted",
                pct=0.0,
                message=f"run {stored.run_id} accepted",
                data={"run_id": stored.run_id, "run_name": cfg.run_name, "train_first": cfg.train_first},
            ),
        )
        return stored

    async def cancel_task(self, task_id: str) -> resources_pb2.Task:
        """End an unfinished task (and its run) CANCELLED, stop its work and publish `cancelled`.

        The work stops at once when it runs in this process; a worker elsewhere loses its lease
        (the fencing token changed) and stops at its next heartbeat. FAILED_PRECONDITION (409)
        when the task already ended."""
        resp = await aio_call(
            self.clients.persistence.CancelTask,
            ppb.CancelTaskRequest(task_id=task_id, message="cancelled by request"),
            timeout=self.settings.deadline_default_seconds,
            target="persistence",
        )
        work = self.inflight.get(task_id)
        if work is not None:
            work.cancel()
        error = resp.task.error
        event = terminal_event(
            task_id,
            "cancelled",
            f"cancelled at {error.stage}",
            {
                "stage": error.stage,
                "code": error.code,
                "message": error.message,
                **({"run_id": resp.run_id} if resp.run_id else {}),
            },
        )
        try:
            await asyncio.wait_for(
                publish_terminal(self, event), timeout=self.settings.deadline_default_seconds
            )
        except Exception as exc:  # watchers end from the task row (see `watch`)
            log.warning("cancelled event of %s not published: %s", task_id, exc)
        return resp.task

    async def cancel_run(self, *, run_id: str = "", task_id: str = "") -> resources_pb2.AlphaBacktestRun:
        run = await self.get_run(run_id=run_id, task_id=task_id)
        await self.cancel_task(run.task_id)
        return await self.get_run(run_id=run.run_id)

    async def preflight(self, cfg: AlphaBacktestConfig) -> None:
        """Reject what the saga would reject, before anything is written: the model and data
        (trainer), an unknown deployment (registry, 404) and the strategy (backtester)."""
        timeout = self.settings.deadline_default_seconds
        n_symbols = 0
        check_dataset_source(cfg.dataset_cfg)  # before any service is asked (data roots, docs/security.md)
        if cfg.train_first:
            checked = await aio_call(
                self.clients.trainer.ValidateTraining,
                tpb.ValidateTrainingRequest(
                    dataset_cfg=config_to_proto(cfg.dataset_cfg), model_cfg=config_to_proto(cfg.model_cfg)
                ),
                timeout=timeout,
                target="trainer",
            )
            n_symbols = int(checked.n_symbols)
        strategy = cfg.strategy
        if cfg.deployment_id:
            dep = (
                await aio_call(
                    self.clients.registry.GetDeployment,
                    rpb.GetDeploymentRequest(deployment_id=cfg.deployment_id),
                    timeout=timeout,
                    target="registry",
                )
            ).deployment
            if dep.state == resources_pb2.DEPLOYMENT_STATE_RETIRED:
                raise FailedPrecondition(
                    f"deployment {dep.deployment_id} is retired; promote or redeploy it first",
                    field="deployment_id",
                )
            if cfg.strategy_cfg is None and not cfg.train_first and dep.strategy_cfg.type:
                strategy = config_from_proto(
                    dep.strategy_cfg, StrategyConfig, prefix="deployment.strategy_cfg"
                )
        checked_strategy = await aio_call(
            self.clients.backtester.ValidateStrategy,
            bpb.ValidateStrategyRequest(
                strategy_cfg=config_to_proto(strategy),
                backtest_cfg=config_to_proto(cfg.resolved_backtest_cfg),
                n_symbols=n_symbols,
            ),
            timeout=timeout,
            target="backtester",
        )
        if checked_strategy.kind == "rule":
            raise InvalidArgument(
                f"{strategy.type} is a rule strategy: an alpha backtest trades the model's predictions with an"
                " alpha strategy (long_short_topk, long_only_topk, quantile, signal_weighted, threshold)",
                field="strategy_cfg.type",
            )
        if cfg.weights:
            combined_score({}, {}, cfg.weights)  # unknown or negative weight keys fail here, naming the key
        if cfg.backtest_cfg.benchmark:
            from alphaswarm_gateway.saga import benchmark_column

            await asyncio.to_thread(benchmark_column, cfg)  # the dataset must have the benchmark symbol

    async def get_task(self, task_id: str) -> resources_pb2.Task:
        resp = await aio_call(
            self.clients.persistence.GetTask,
            ppb.GetTaskRequest(task_id=task_id),
            timeout=self.settings.deadline_default_seconds,
            target="persistence",
        )
        return resp.task

    async def get_run(self, *, run_id: str = "", task_id: str = "") -> resources_pb2.AlphaBacktestRun:
        resp = await aio_call(
            self.clients.persistence.GetAlphaBacktestRun,
            ppb.GetAlphaBacktestRunRequest(run_id=run_id, task_id=task_id),
            timeout=self.settings.deadline_default_seconds,
            target="persistence",
        )
        return resp.run

    async def list_runs(
        self, *, page_size: int = 50, page_token: str = "", summary: bool = False
    ) -> ppb.ListAlphaBacktestRunsResponse:
        """Runs newest first; with `summary` each config reduced to its model type and test segment."""
        return await aio_call(
            self.clients.persistence.ListAlphaBacktestRuns,
            ppb.ListAlphaBacktestRunsRequest(page_size=page_size, page_token=page_token, summary=summary),
            timeout=self.settings.deadline_default_seconds,
            target="persistence",
        )

    async def list_predictions(
        self, run_id: str, *, symbol: str = "", page_size: int = 500, page_token: str = ""
    ) -> ppb.ListPredictionAuditResponse:
        return await aio_call(
            self.clients.persistence.ListPredictionAudit,
            ppb.ListPredictionAuditRequest(
                run_id=run_id, symbol=symbol, page_size=page_size, page_token=page_token
            ),
            timeout=self.settings.deadline_default_seconds,
            target="persistence",
        )

    async def watch(self, task_id: str, *, after_seq: int = 0) -> AsyncIterator[ProgressEvent]:
        """Progress events of a task from the first (replayed), ending after the terminal event.

        A finished run whose events are no longer kept (an embedded process restarted, or the
        stream's retention dropped them), or whose terminal event never reached the bus (it
        was down when the run ended), ends with one terminal event built from the task row,
        instead of a stream that never ends.
        """
        task = await self.get_task(task_id)  # NotFound for an unknown task
        finished = task.state in TERMINAL_RUN_STATES
        if finished and await self.bus.last_seq(task_id) == 0:
            if (
                after_seq < 1
            ):  # a client resuming after it has already seen the rebuilt event gets nothing more
                yield _terminal_event_from_row(task)
            return
        events: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for event in self.bus.subscribe(task_id, after_seq=after_seq):
                    await events.put(event)
            finally:
                await events.put(None)

        pumping = asyncio.create_task(pump())
        last = after_seq
        ended_at_check = 0
        try:
            while True:
                try:
                    event = await asyncio.wait_for(
                        events.get(), timeout=self.settings.gateway_heartbeat_seconds
                    )
                except TimeoutError:
                    with contextlib.suppress(Exception):
                        task = await self.get_task(task_id)
                    if task.state not in TERMINAL_RUN_STATES:
                        continue
                    ended_at_check += 1
                    if ended_at_check < 2:  # the terminal event may still be on its way
                        continue
                    yield _terminal_event_from_row(task, seq=last + 1)
                    return
                if event is None:
                    await pumping  # the subscription's own error, if it ended with one
                    return
                last = max(last, event.seq)
                yield event
                if event.terminal:
                    return
        finally:
            pumping.cancel()
            with contextlib.suppress(BaseException):
                await pumping


def _terminal_event_from_row(task: resources_pb2.Task, *, seq: int = 1) -> ProgressEvent:
    from alphaswarm_common.protoconv import timestamp_to_datetime

    stage = {
        resources_pb2.RUN_STATE_SUCCEEDED: "completed",
        resources_pb2.RUN_STATE_CANCELLED: "cancelled",
    }.get(task.state, "failed")
    data: dict[str, Any] = {"replayed_from": "task row"}
    if stage != "completed" and task.HasField("error"):
        data.update(
            {
                "stage": task.error.stage,
                "code": task.error.code,
                "message": task.error.message,
                "field": task.error.field,
            }
        )
    return ProgressEvent(
        task_id=task.task_id,
        seq=max(1, seq),
        ts=timestamp_to_datetime(task.updated_at) or timestamp_to_datetime(task.created_at) or _utcnow(),
        stage=stage,
        status=stage,
        pct=100.0,
        message="the task finished; its progress events are no longer kept",
        data=data,
    )


def _utcnow() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def bootstrap(
    settings: Settings,
    *,
    tracker: Tracker | None = None,
    bus: EventBus | None = None,
    queue: JobQueue | None = None,
    clients: Clients | None = None,
) -> Gateway:
    """Wire the gateway from settings; tests pass fakes or in-process adapters here."""
    if bus is None:
        bus = NatsEventBus(settings.nats_url) if settings.nats_url else InProcessEventBus()
    if queue is None:
        queue = (
            NatsJobQueue(
                settings.nats_url,
                ack_wait=settings.gateway_ack_wait_seconds,
                max_deliver=settings.gateway_max_deliver,
            )
            if settings.nats_url
            else InProcessJobQueue(max_deliver=settings.gateway_max_deliver)
        )
    tracker = tracker or Tracker(settings.tracking_uri(), artifact_root=settings.artifact_root())
    if clients is None:
        _check_addresses(settings)
    return Gateway(settings, clients, tracker, bus, queue)
