"""Backtester jobs as tasks: a single backtest, an optimization, a walk-forward test, a
portfolio backtest, a Monte Carlo simulation.

Accepting a job validates its document (422 naming the field), asks the backtester
to check the strategy (400 naming the field), stores a task row (idempotent by
request id), publishes `accepted` and enqueues the job; a worker calls the
backtester with a deadline, saves the result's catalog ids and headline figures
on the task, and publishes `completed` or `failed` — the same progress stream and
the same queue as alpha-backtest runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alphaswarm.backtester.v1 import backtester_service_pb2 as bpb
from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.config import BacktestConfig, DatasetConfig, StrategyConfig
from alphaswarm_common.data import check_dataset_source
from alphaswarm_common.errors import AlphaSwarmError, DependencyUnavailable, InvalidArgument, Timeout
from alphaswarm_common.events import PoisonJob, ProgressEvent
from alphaswarm_common.grpc_client import aio_call, remote_field
from alphaswarm_common.protoconv import (
    array_to_proto,
    check_config_ranges,
    config_to_proto,
    metricset_from_proto,
    struct_from_dict,
    struct_to_dict,
    validation_error,
)
from alphaswarm_common.protoranges import INT32_MAX, INT32_MIN
from alphaswarm_gateway.leases import (
    Attempt,
    LeaseLost,
    execute_leased,
    exhausted_detail,
    fail_task,
    publish_terminal,
    terminal_event,
)
from alphaswarm_gateway.progress import Progress, error_detail
from alphaswarm_gateway.sharded import (
    chunk_plan,
    evaluate_on_queue,
    optimization_chunks,
    search_size,
    walk_forward_chunks,
    window_request,
)

__all__ = ["JOB_MODELS", "accept_job", "run_job"]

log = logging.getLogger(__name__)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceSourceDoc(_Doc):
    """The prices a job trades: a dataset (segments unused) and optionally a subset of its symbols."""

    dataset_cfg: DatasetConfig
    symbols: list[str] | None = None


class BacktestJob(_Doc):
    """One backtest of a rule strategy (sma_cross, rsi, ..., buy_and_hold)."""

    source: PriceSourceDoc
    strategy_cfg: StrategyConfig
    backtest_cfg: BacktestConfig = Field(default_factory=BacktestConfig)


Objective = Literal[
    "sharpe", "sortino", "calmar", "total_return", "max_drawdown", "win_rate", "profit_factor"
]


class OptimizationJob(_Doc):
    """Grid or seeded random search over a strategy's parameters."""

    source: PriceSourceDoc
    strategy_type: str
    grid: dict[str, list[Any]] | None = None
    space: dict[str, Any] | None = None
    method: Literal["grid", "random"] = "grid"
    n_samples: int = Field(default=50, ge=1, le=100_000)
    seed: int = Field(default=0, ge=INT32_MIN, le=INT32_MAX)
    objective: Objective = "sharpe"
    backtest_cfg: BacktestConfig = Field(default_factory=BacktestConfig)

    @model_validator(mode="after")
    def _search(self) -> OptimizationJob:
        if self.method == "grid" and not self.grid:
            raise ValueError("grid is required for method 'grid'")
        if self.method == "random" and not (self.space or self.grid):
            raise ValueError("space (or grid) is required for method 'random'")
        return self


class WalkForwardJob(_Doc):
    """In-sample optimization then out-of-sample test over rolling or anchored windows."""

    source: PriceSourceDoc
    strategy_type: str
    grid: dict[str, list[Any]]
    objective: Objective = "sharpe"
    in_sample_bars: int = Field(default=504, ge=20, le=INT32_MAX)
    out_of_sample_bars: int = Field(default=126, ge=5, le=INT32_MAX)
    step_bars: int | None = Field(default=None, ge=1, le=INT32_MAX)
    anchored: bool = False
    backtest_cfg: BacktestConfig = Field(default_factory=BacktestConfig)


class PortfolioLegDoc(_Doc):
    symbol: str
    strategy_cfg: StrategyConfig = Field(default_factory=lambda: StrategyConfig(type="buy_and_hold"))
    weight: float | None = Field(default=None, ge=0)


class PortfolioJob(_Doc):
    """Several symbols and strategies in one account with shared cash."""

    dataset_cfg: DatasetConfig
    legs: list[PortfolioLegDoc] = Field(min_length=1)
    rebalance_frequency: Literal["daily", "weekly", "monthly", "quarterly", "none"] = "monthly"
    max_positions: int | None = Field(default=None, ge=1, le=INT32_MAX)
    position_sizing_method: Literal["equal", "fixed", "inverse_volatility"] = "equal"
    backtest_cfg: BacktestConfig = Field(default_factory=lambda: BacktestConfig(initial_capital=100_000.0))
    portfolio_name: str = Field(min_length=1, max_length=100)
    description: str = ""


class MonteCarloJob(_Doc):
    """Block bootstrap of a stored backtest's daily returns (or of returns given)."""

    backtest_id: str | None = None
    returns: list[float] | None = None
    n_simulations: int = Field(default=1000, ge=1, le=200_000)
    block_length: int = Field(default=21, ge=1, le=INT32_MAX)
    seed: int = Field(default=0, ge=INT32_MIN, le=INT32_MAX)
    percentiles: list[float] = Field(default_factory=lambda: [5.0, 25.0, 50.0, 75.0, 95.0])
    periods_per_year: float | None = Field(
        default=None, gt=0, description="Bars per year; a stored backtest's own value (else 252) when absent."
    )

    @model_validator(mode="after")
    def _input(self) -> MonteCarloJob:
        if (self.backtest_id is None) == (self.returns is None):
            raise ValueError("backtest_id or returns is required (exactly one)")
        return self


def _source(doc: PriceSourceDoc) -> bpb.PriceSource:
    return bpb.PriceSource(dataset_cfg=config_to_proto(doc.dataset_cfg), symbols=doc.symbols or [])


def _struct(value: dict[str, Any] | None) -> Any:
    return struct_from_dict(value) if value else None


@dataclass(frozen=True)
class JobKind:
    model: type[_Doc]
    rpc: str
    build: Callable[[Any, str], Any]
    summarize: Callable[[Any], dict[str, Any]]
    strategies: Callable[[Any], list[StrategyConfig]]


def _headline(metrics: Any) -> dict[str, Any]:
    values, _, _ = metricset_from_proto(metrics)
    keys = ("sharpe", "sortino", "calmar", "max_drawdown", "total_return", "total_trades", "win_rate")
    return {k: values.get(k) for k in keys if k in values}


JOB_MODELS: dict[str, JobKind] = {
    "backtest": JobKind(
        BacktestJob,
        "RunStrategyBacktest",
        lambda j, key: bpb.RunStrategyBacktestRequest(
            source=_source(j.source),
            strategy_cfg=config_to_proto(j.strategy_cfg),
            backtest_cfg=config_to_proto(j.backtest_cfg),
            persist=True,
            request_id=key,
        ),
        lambda r: {"backtest_id": r.backtest_id, "metrics": _headline(r.metrics), "trades": len(r.trades)},
        lambda j: [j.strategy_cfg],
    ),
    "optimization": JobKind(
        OptimizationJob,
        "Optimize",
        lambda j, key: bpb.OptimizeRequest(
            source=_source(j.source),
            strategy_type=j.strategy_type,
            grid=_struct(j.grid),
            space=_struct(j.space),
            method=j.method,
            n_samples=j.n_samples,
            seed=j.seed,
            objective=j.objective,
            backtest_cfg=config_to_proto(j.backtest_cfg),
            persist=True,
            request_id=key,
        ),
        lambda r: {
            "backtest_id": r.backtest_id,
            "optimization_ids": list(r.optimization_ids),
            "n_trials": len(r.trials),
            "best_params": struct_to_dict(r.best.params),
            "best_objective": r.best.objective_value if r.best.HasField("objective_value") else None,
            "p_value": r.p_value if r.HasField("p_value") else None,
            "is_statistically_significant": r.is_statistically_significant,
        },
        lambda j: [StrategyConfig(type=j.strategy_type)],
    ),
    "walk_forward": JobKind(
        WalkForwardJob,
        "WalkForward",
        lambda j, key: bpb.WalkForwardRequest(
            source=_source(j.source),
            strategy_type=j.strategy_type,
            grid=_struct(j.grid),
            objective=j.objective,
            in_sample_bars=j.in_sample_bars,
            out_of_sample_bars=j.out_of_sample_bars,
            step_bars=j.step_bars or 0,
            anchored=j.anchored,
            backtest_cfg=config_to_proto(j.backtest_cfg),
            persist=True,
            request_id=key,
        ),
        lambda r: {
            "parent_backtest_id": r.parent_backtest_id,
            "walk_forward_ids": list(r.walk_forward_ids),
            "n_windows": len(r.windows),
            "out_of_sample": _headline(r.out_of_sample_metrics),
        },
        lambda j: [StrategyConfig(type=j.strategy_type)],
    ),
    "portfolio_backtest": JobKind(
        PortfolioJob,
        "RunPortfolioBacktest",
        lambda j, key: bpb.RunPortfolioBacktestRequest(
            dataset_cfg=config_to_proto(j.dataset_cfg),
            legs=[
                bpb.PortfolioLeg(
                    symbol=leg.symbol, strategy_cfg=config_to_proto(leg.strategy_cfg), weight=leg.weight
                )
                for leg in j.legs
            ],
            rebalance_frequency=j.rebalance_frequency,
            max_positions=j.max_positions,
            position_sizing_method=j.position_sizing_method,
            backtest_cfg=config_to_proto(j.backtest_cfg),
            portfolio_name=j.portfolio_name,
            description=j.description,
            persist=True,
            request_id=key,
        ),
        lambda r: {"portfolio_backtest_id": r.portfolio_backtest_id, "metrics": _headline(r.metrics)},
        lambda j: [leg.strategy_cfg for leg in j.legs],
    ),
    "monte_carlo": JobKind(
        MonteCarloJob,
        "MonteCarlo",
        lambda j, key: bpb.MonteCarloRequest(
            backtest_id=j.backtest_id or "",
            returns=array_to_proto(np.asarray(j.returns, dtype=np.float64)) if j.returns else None,
            n_simulations=j.n_simulations,
            block_length=j.block_length,
            seed=j.seed,
            percentiles=j.percentiles,
            periods_per_year=j.periods_per_year or 0.0,
        ),
        lambda r: {
            "probability_of_loss": r.probability_of_loss,
            "n_simulations": r.n_simulations,
            "distributions": {
                name: dict(zip([f"p{p:g}" for p in d.percentiles], list(d.values), strict=True))
                | {"mean": d.mean, "std": d.std}
                for name, d in r.distributions.items()
            },
        },
        lambda j: [],
    ),
}


def parse_job(kind: str, doc: dict[str, Any]) -> _Doc:
    try:
        job = JOB_MODELS[kind].model.model_validate(doc)
    except ValidationError as exc:
        err = validation_error(exc)
        err.details["status"] = 422
        raise err from exc
    check_config_ranges(job)  # the configs inside fit their messages (int32 fields, valid text)
    return job


def _strategy_field(kind: str, index: int, field: str | None) -> str:
    """The job document's own name for a field a strategy check reported."""
    field = field or "strategy_cfg.type"
    if kind in ("optimization", "walk_forward"):
        return (
            "strategy_type"
            if field == "strategy_cfg.type"
            else field.replace("strategy_cfg.params.", "grid.")
        )
    if kind == "portfolio_backtest":
        return f"legs[{index}].{field}"
    return field


def _check_sources(job: _Doc) -> None:
    """A job's data must be a shipped dataset or a file under the data roots (400 naming the field)."""
    source = getattr(job, "source", None)
    if isinstance(source, PriceSourceDoc):
        check_dataset_source(source.dataset_cfg, field="source.dataset_cfg.source")
    dataset_cfg = getattr(job, "dataset_cfg", None)
    if isinstance(dataset_cfg, DatasetConfig):
        check_dataset_source(dataset_cfg, field="dataset_cfg.source")


async def accept_job(gw: Any, kind: str, job: _Doc, *, request_id: str | None = None) -> resources_pb2.Task:
    """Validate, store the task, publish `accepted`, enqueue. Returns the stored task.

    Acceptance is atomic: when the bus or the queue refuses the job, the task is withdrawn
    (deleted with its idempotency key) and the call fails UNAVAILABLE, so nothing is left
    PENDING and the same request id can be accepted anew."""
    spec = JOB_MODELS[kind]
    _check_sources(job)
    backtest_cfg = getattr(job, "backtest_cfg", None)
    for i, strategy in enumerate(spec.strategies(job)):
        try:
            checked = await aio_call(
                gw.clients.backtester.ValidateStrategy,
                bpb.ValidateStrategyRequest(
                    strategy_cfg=config_to_proto(strategy),
                    backtest_cfg=config_to_proto(backtest_cfg) if backtest_cfg is not None else None,
                ),
                timeout=gw.settings.deadline_default_seconds,
                target="backtester",
            )
        except InvalidArgument as exc:
            field = _strategy_field(kind, i, remote_field(exc))
            raise InvalidArgument(str(exc).split(": ", 1)[-1], field=field, reason=exc.reason) from exc
        if checked.kind != "rule":
            raise InvalidArgument(
                f"{strategy.type} is an alpha strategy, driven by a model's predictions: run it as an alpha"
                " backtest (POST /ml/alpha-backtest-runs); price-driven jobs take rule strategies",
                field=_strategy_field(kind, i, "strategy_cfg.type"),
            )
    task = resources_pb2.Task(
        kind=kind,
        state=resources_pb2.RUN_STATE_PENDING,
        stage="accepted",
        request=struct_from_dict(job.model_dump(mode="json")),
    )
    created = await aio_call(
        gw.clients.persistence.CreateTask,
        ppb.CreateTaskRequest(task=task, request_id=request_id or ""),
        timeout=gw.settings.deadline_default_seconds,
        target="persistence",
    )
    stored = created.task
    if created.created:
        await enqueue_accepted(
            gw,
            stored.task_id,
            kind,
            {"task_id": stored.task_id},
            ProgressEvent(
                task_id=stored.task_id, seq=1, stage="accepted", status="accepted", message=f"{kind} accepted"
            ),
        )
    return stored


async def enqueue_accepted(
    gw: Any, task_id: str, kind: str, payload: dict[str, Any], accepted: ProgressEvent
) -> None:
    """Publish `accepted` and enqueue the job; when either fails, withdraw the task (delete it
    and its idempotency key) and raise UNAVAILABLE (503 with Retry-After)."""
    dependency = "event bus"
    try:
        await gw.bus.publish(accepted)
        dependency = "job queue"
        await gw.queue.enqueue(kind, payload)
    except Exception as exc:
        log.warning("task %s refused: the %s is unavailable: %s", task_id, dependency, exc)
        error = DependencyUnavailable(
            f"{dependency} unavailable; nothing was queued, retry later",
            details={"dependency": dependency},
        )
        try:
            await aio_call(
                gw.clients.persistence.DeleteUnclaimedTask,
                ppb.DeleteUnclaimedTaskRequest(task_id=task_id),
                timeout=gw.settings.deadline_default_seconds,
                target="persistence",
            )
        except Exception:
            # The row stays PENDING without a job: the reaper queues it after the pending grace.
            log.exception("could not withdraw task %s; the reaper will queue it", task_id)
        raise error from exc


async def run_job(gw: Any, kind: str, payload: dict[str, Any]) -> None:
    """The worker side of a job: claim its task, call the backtester (once per task: the call's
    request id is derived from the task), record the outcome, publish the terminal event."""
    task_id = str(payload.get("task_id") or "")
    if not task_id:
        raise PoisonJob(f"a {kind} job without a task_id")
    if kind not in JOB_MODELS:
        raise PoisonJob(f"unknown job kind {kind!r}")

    async def body(attempt: Attempt) -> None:
        await _run_attempt(gw, kind, attempt)

    async def exhausted(attempt: Attempt) -> None:
        await fail_task(gw, attempt, exhausted_detail(attempt.task, attempt.attempts))

    await execute_leased(gw, task_id, body, exhausted)


async def _run_attempt(gw: Any, kind: str, attempt: Attempt) -> None:
    from alphaswarm_gateway.stages import Stage, StageMachine

    task = attempt.task
    assert task is not None
    spec = JOB_MODELS[kind]
    progress = Progress(gw, task.task_id, seq=max(1, await gw.bus.last_seq(task.task_id)))
    result: dict[str, Any] = {}
    deadline = task.created_at.ToDatetime(tzinfo=dt.UTC).timestamp() + gw.settings.run_deadline_seconds

    async def call(_: Any) -> dict[str, Any]:
        job = spec.model.model_validate(json_format.MessageToDict(task.request))
        await attempt.update_task(
            resources_pb2.Task(state=resources_pb2.RUN_STATE_RUNNING, stage=kind), "state", "stage"
        )
        await progress.emit(kind, "started", f"{kind} started", pct=5.0)
        left = deadline - time.time()
        if left <= 0:
            raise Timeout(
                f"the task passed its overall deadline of {gw.settings.run_deadline_seconds:g}s",
                field="run_deadline_seconds",
            )
        # The request id is the task's: a call repeated by a later attempt saves nothing twice.
        request = spec.build(job, f"{task.task_id}:{kind}")
        chunks = await _plan_chunks(gw, kind, job, request, attempt, left)
        if chunks:

            async def chunk_done(n_done: int, n_all: int) -> None:
                await progress.emit(
                    kind, "progress", f"{n_done}/{n_all} chunks evaluated", pct=5.0 + 85.0 * n_done / n_all
                )

            responses = await evaluate_on_queue(
                gw, task.task_id, chunks, deadline=deadline, on_chunk=chunk_done
            )
            (request.window_searches if kind == "walk_forward" else request.chunks).extend(responses)
            left = deadline - time.time()
        response = await aio_call(
            getattr(gw.clients.backtester, spec.rpc),
            request,
            timeout=min(gw.settings.deadline_backtest_seconds, left),
            target="backtester",
        )
        result.update(spec.summarize(response))
        return dict(result)

    def restore(_: Any, out: dict[str, Any]) -> None:
        result.update(out)

    async def finish(_: Any) -> dict[str, Any]:
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
        await publish_terminal(gw, terminal_event(task.task_id, "completed", f"{kind} completed", result))
        return {}

    machine: StageMachine[Any] = StageMachine(
        [Stage("run", kind, call, restore), Stage("finish", "completed", finish, record=False)],
        record=attempt.record,
        transient=lambda exc: isinstance(exc, DependencyUnavailable),
        retry_seconds=gw.settings.gateway_outbox_seconds / 10,
    )
    try:
        await machine.run(None, attempt.outputs)
    except (LeaseLost, asyncio.CancelledError):
        raise
    except Exception as exc:
        if isinstance(exc, ValidationError):
            exc = validation_error(exc)
        elif not isinstance(exc, AlphaSwarmError):
            log.exception("%s task %s failed", kind, task.task_id)
        await fail_task(gw, attempt, error_detail(kind, exc))


async def _plan_chunks(
    gw: Any, kind: str, job: Any, request: Any, attempt: Attempt, left: float
) -> list[tuple[str, bpb.EvaluateParameterSetsRequest]]:
    """The chunks a job is split into on the work queue (`sharded`); empty: one backtester call.

    An optimization splits by sets (`optimize_chunk_sets`); a walk-forward test by windows when
    it has at least `walk_forward_split_windows` of them: a probe (recorded as the stage
    output `plan`) asks the backtester how many windows the test's prices give."""
    if kind == "optimization":
        return optimization_chunks(request, chunk_plan(job, gw.settings.optimize_chunk_sets))
    if kind != "walk_forward" or gw.settings.walk_forward_split_windows <= 0:
        return []
    plan = attempt.outputs.get("plan")
    if plan is None:
        probe = await aio_call(
            gw.clients.backtester.EvaluateParameterSets,
            window_request(request, 0, 0),
            timeout=max(1.0, min(gw.settings.deadline_backtest_seconds, left)),
            target="backtester",
        )
        plan = {"n_windows": int(probe.n_windows)}
        await attempt.record("plan", plan)
    n_windows = int(plan["n_windows"])
    if n_windows < gw.settings.walk_forward_split_windows:
        return []
    return walk_forward_chunks(request, n_windows, search_size(job))


def task_view(task: resources_pb2.Task) -> dict[str, Any]:
    from alphaswarm_common.protoconv import timestamp_to_datetime
    from alphaswarm_gateway.views import STATE_NAMES, stream_url

    def ts(value: Any) -> str | None:
        parsed: dt.datetime | None = timestamp_to_datetime(value)
        return parsed.isoformat() if parsed else None

    error = None
    if task.HasField("error") and task.error.code:
        error = {
            "stage": task.error.stage,
            "code": task.error.code,
            "message": task.error.message,
            "field": task.error.field or None,
        }
    return {
        "task_id": task.task_id,
        "kind": task.kind,
        "status": STATE_NAMES[task.state],
        "stage": task.stage,
        "pct": task.pct,
        "request": struct_to_dict(task.request) if task.HasField("request") else None,
        "result": struct_to_dict(task.result) if task.HasField("result") else None,
        "error": error,
        "stream_url": stream_url(task.task_id),
        "created_at": ts(task.created_at),
        "updated_at": ts(task.updated_at),
    }
