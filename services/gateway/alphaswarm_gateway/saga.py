"""The alpha-backtest saga: a table of named stages over the four services, under one MLflow
parent run (docs/architecture.md, "Run lifecycle").

    start     open the MLflow parent run; the run goes RUNNING     (recorded: parent run, deadline)
    train     trainer.Train                                          (model uri, train run)
    register  registry.RegisterModel as a `candidate`                (model name, version)
    deploy    registry.Deploy (request id from the run) or reuse     (the deployment)
    predict   registry.Predict over the backtest window              (shape; re-read when needed)
    backtest  backtester.RunBacktest (request id from the run)       (backtest id, trading metrics)
    metrics   ML metrics on the same window, combined score          (the combined metrics)
    persist   prediction audit rows                                  (rows written)
    finish    metrics on the parent run, `champion` moved to the version, parent ended,
              the run SUCCEEDED, `completed` published

Each stage is idempotent and its output is recorded on the run's task before the next one
starts, so a job delivered again (its worker died, the gateway restarted) resumes after the
last completed stage: no second model version, no second deployment, no second backtest.
Every write carries the attempt's fencing token (`leases.Attempt`), so a stale attempt can
change nothing. Every call's deadline is the smaller of its own and what is left of the
run's overall deadline (`run_deadline_seconds`).

The first failing stage ends the run FAILED with `{stage, code, message, field}` on the row,
the MLflow parent run (FAILED, with tags) and a terminal `failed` event, after compensation:
child runs still RUNNING end FAILED, the model version registered is tagged
`alphaswarm.run_state=FAILED`, `champion` stays where it was (it only moves in `finish`, and
moves back if `finish` fails after moving it), a deployment the run created is retired and
one it rolled is rolled back. A cancelled run gets the same compensation.

Timing (docs/metrics.md): the prediction at t uses data through the close of t; the backtest
fills it at t+lag; the ML metrics compare it with `close[t+lag+h] / close[t+lag] - 1` inside
the same window, so IC and PnL are measured on the same returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf import json_format

from alphaswarm.backtester.v1 import backtester_service_pb2 as bpb
from alphaswarm.common.v1 import arrays_pb2, resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.registry.v1 import registry_service_pb2 as rpb
from alphaswarm.trainer.v1 import trainer_service_pb2 as tpb
from alphaswarm_common.config import AlphaBacktestConfig, StrategyConfig
from alphaswarm_common.data import load_panel
from alphaswarm_common.errors import AlphaSwarmError, DataError, DependencyUnavailable, Timeout
from alphaswarm_common.events import PoisonJob
from alphaswarm_common.grpc_client import aio_call, aio_stream
from alphaswarm_common.labels import make_labels
from alphaswarm_common.metrics import (
    HEADLINE_ML_METRICS,
    HEADLINE_TRADING_METRICS,
    combined_score,
    ml_metrics,
)
from alphaswarm_common.protoconv import (
    TERMINAL_RUN_STATES,
    array_to_proto,
    config_from_proto,
    config_to_proto,
    dates_to_strings,
    matrix_from_proto,
    metricset_from_proto,
    struct_from_dict,
    timestamp_from_datetime,
)
from alphaswarm_gateway.leases import (
    Attempt,
    LeaseLost,
    durable,
    execute_leased,
    exhausted_detail,
    fail_task,
    publish_terminal,
    terminal_event,
)
from alphaswarm_gateway.progress import STAGE_PCT, Progress, error_detail
from alphaswarm_gateway.stages import Stage, StageMachine

__all__ = ["ML_KEYS", "STAGES", "TRADING_KEYS", "AlphaBacktestSaga", "RunContext", "compensate"]

log = logging.getLogger(__name__)

ML_KEYS = HEADLINE_ML_METRICS
TRADING_KEYS = HEADLINE_TRADING_METRICS
CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"
RUN_STATE_TAG = "alphaswarm.run_state"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class RunContext:
    """What the stages of one attempt share: inputs, recorded outputs and in-memory results."""

    gw: Any
    run: resources_pb2.AlphaBacktestRun
    cfg: AlphaBacktestConfig
    attempt: Attempt
    progress: Progress
    deadline: float = 0.0  # time.time() when the run's overall deadline passes
    experiment_id: str = ""
    parent_run_id: str = ""
    started_at: str = ""
    train: dict[str, Any] = field(default_factory=dict)
    model_name: str = ""
    model_version: str = ""
    deployment: resources_pb2.Deployment = field(default_factory=resources_pb2.Deployment)
    backtest: dict[str, Any] = field(default_factory=dict)
    combined: dict[str, Any] = field(default_factory=dict)
    captured: bool = False
    # what a stage made before it failed, when it failed before its output was recorded
    # (compensation undoes it as it undoes recorded outputs)
    unrecorded: dict[str, Any] = field(default_factory=dict)
    previous_champion: str | None = None
    champion_moved: bool = False
    # re-read on demand after a resume (read-only calls, deterministic inputs)
    _prediction: Any = None
    _prices: arrays_pb2.Panel | None = None
    _bt: Any = None

    @property
    def settings(self) -> Any:
        return self.gw.settings

    def made(self) -> dict[str, Any]:
        """Every stage output to compensate: the recorded ones, and what a failed stage made."""
        return {**self.unrecorded, **self.attempt.outputs}

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def timeout(self, own: float) -> float:
        """The deadline of one call: its own, cut to what is left of the run's."""
        left = self.deadline - time.time()
        if left <= 0:
            raise Timeout(
                f"the run passed its overall deadline of {self.settings.run_deadline_seconds:g}s",
                field="run_deadline_seconds",
            )
        return min(own, left)

    async def call(self, method: Any, request: Any, own: float, target: str) -> Any:
        return await aio_call(method, request, timeout=self.timeout(own), target=target)

    def stream(self, method: Any, request: Any, own: float, target: str) -> AsyncGenerator[Any, None]:
        """A server-streaming call under the same deadline as `call` (an UNAVAILABLE answer is a
        transient failure of the stage, retried like a unary call's)."""
        return aio_stream(method, request, timeout=self.timeout(own), target=target)

    async def prediction(self) -> tuple[Any, np.ndarray, np.ndarray, list[str]]:
        """(proto matrix, signal, dates, symbols) of the deployment over the backtest window."""
        if self._prediction is None:
            start, end = _window(self.cfg)
            pred = await self.call(
                self.gw.clients.registry.Predict,
                rpb.PredictRequest(
                    deployment_id=self.deployment.deployment_id, start_date=str(start), end_date=str(end)
                ),
                self.settings.deadline_predict_seconds,
                "registry",
            )
            signal, dates, symbols = matrix_from_proto(pred.predictions, field="predictions")
            self._prediction = (pred.predictions, signal, dates, symbols)
        return self._prediction  # type: ignore[no-any-return]

    async def prices(self) -> arrays_pb2.Panel:
        if self._prices is None:
            _, _, dates, symbols = await self.prediction()
            self._prices = await asyncio.to_thread(_prices_for, self.cfg, dates, symbols)
        return self._prices

    async def link(self, *paths: str, **values: Any) -> None:
        """Write fields of the run row (fenced by the attempt)."""
        await self.attempt.update_run(resources_pb2.AlphaBacktestRun(run_id=self.run_id, **values), *paths)

    async def enter(self, label: str) -> None:
        await self.link("stage", stage=label)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, DependencyUnavailable)


# ---------------------------------------------------------------------------------------------- stages


async def _start(ctx: RunContext) -> dict[str, Any]:
    tracker = ctx.gw.tracker
    ctx.experiment_id = await asyncio.to_thread(tracker.ensure_experiment, ctx.cfg.experiment_name)
    tags = {
        "alphaswarm.run_id": ctx.run_id,
        "alphaswarm.task_id": ctx.run.task_id,
        "alphaswarm.kind": "alpha_backtest",
    }
    # An earlier attempt may have opened the parent run and died before recording it.
    found = await asyncio.to_thread(tracker.find_run, ctx.experiment_id, tags)
    ctx.parent_run_id = found or await asyncio.to_thread(
        tracker.create_run, ctx.experiment_id, ctx.cfg.run_name, tags=tags
    )
    started = _now()
    ctx.started_at = started.isoformat()
    ctx.deadline = started.timestamp() + ctx.settings.run_deadline_seconds
    links = resources_pb2.AlphaBacktestRun(
        run_id=ctx.run_id,
        state=resources_pb2.RUN_STATE_RUNNING,
        stage=ctx.progress.stage,
        mlflow_parent_run_id=ctx.parent_run_id,
    )
    links.started_at.CopyFrom(timestamp_from_datetime(started))
    await ctx.attempt.update_run(links, "state", "stage", "mlflow_parent_run_id", "started_at")
    await asyncio.to_thread(tracker.log_params, ctx.parent_run_id, _flat_params(ctx.cfg))
    return {
        "experiment_id": ctx.experiment_id,
        "parent_run_id": ctx.parent_run_id,
        "started_at": ctx.started_at,
        "deadline": ctx.deadline,
    }


def _restore_start(ctx: RunContext, out: dict[str, Any]) -> None:
    ctx.experiment_id = out["experiment_id"]
    ctx.parent_run_id = out["parent_run_id"]
    ctx.started_at = out.get("started_at", "")
    ctx.deadline = float(out["deadline"])


async def _train(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg
    if not cfg.train_first:
        return {"skipped": True}
    await ctx.enter("training")
    await ctx.progress.emit("training", "started", f"fitting {cfg.model_cfg.type}")
    trained = await _train_with_progress(
        ctx,
        tpb.TrainRequest(
            dataset_cfg=config_to_proto(cfg.dataset_cfg),
            model_cfg=config_to_proto(cfg.model_cfg),
            experiment_id=ctx.experiment_id,
            parent_run_id=ctx.parent_run_id,
            task_id=ctx.run.task_id,
        ),
    )
    valid = metricset_from_proto(trained.metrics["valid"])[0] if "valid" in trained.metrics else {}
    ctx.train = {
        "model_uri": trained.model_uri,
        "model_sha256": trained.model_sha256,
        "train_run_id": trained.run_id,
        "valid_ic_spearman": valid.get("ic_spearman"),
    }
    await ctx.progress.emit(
        "training",
        "done",
        f"{trained.n_train_rows} rows, {len(trained.feature_names)} features",
        data={"train_run_id": trained.run_id, "valid_ic_spearman": valid.get("ic_spearman")},
        pct=float(STAGE_PCT["registering"]),  # the end of the stage its running events moved through
    )
    return ctx.train


async def _train_with_progress(ctx: RunContext, request: tpb.TrainRequest) -> tpb.TrainResponse:
    """Call TrainWithProgress and relay each milestone as a `training` `running` event; its `pct`
    maps the trainer's 0-100 onto the training stage's share of the run and never decreases."""
    low = float(STAGE_PCT["training"])
    high = float(STAGE_PCT["registering"])
    pct = low
    stream = ctx.stream(
        ctx.gw.clients.trainer.TrainWithProgress, request, ctx.settings.deadline_train_seconds, "trainer"
    )
    result: tpb.TrainResponse | None = None
    async with contextlib.aclosing(stream):
        async for item in stream:
            if item.WhichOneof("item") == "result":
                result = item.result  # the last item: reading on lets the call end OK, not cancelled
                continue
            step = item.progress
            pct = max(pct, low + (high - low) * min(100.0, max(0.0, step.pct)) / 100.0)
            await ctx.progress.emit(
                "training", "running", step.message, data={"step": step.step}, pct=round(pct, 2)
            )
    if result is None:
        raise DependencyUnavailable("trainer ended the training stream without a result")
    return result


def _restore_train(ctx: RunContext, out: dict[str, Any]) -> None:
    ctx.train = {} if out.get("skipped") else dict(out)


async def _register(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg
    if not cfg.train_first:
        return {"skipped": True}
    registry = ctx.gw.clients.registry
    name = cfg.model_cfg.registered_name
    await ctx.enter("registering")
    await ctx.progress.emit("registering", "started", f"registering {name}")
    # An earlier attempt may have registered the version and died before recording it.
    version = await _version_of_run(ctx, name)
    if not version:
        reg = await ctx.call(
            registry.RegisterModel,
            rpb.RegisterModelRequest(
                model_uri=ctx.train["model_uri"],
                name=name,
                alias=CANDIDATE_ALIAS,
                run_id=ctx.train["train_run_id"],
                model_sha256=ctx.train.get("model_sha256", ""),
                tags={
                    "alphaswarm.run_id": ctx.run_id,
                    "alphaswarm.valid_ic_spearman": str(ctx.train.get("valid_ic_spearman")),
                    RUN_STATE_TAG: "RUNNING",
                },
            ),
            ctx.settings.deadline_default_seconds,
            "registry",
        )
        name, version = reg.name, reg.version
    ctx.unrecorded["register"] = {"model_name": name, "model_version": version}
    ctx.model_name, ctx.model_version = name, version
    await ctx.link(
        "model_name",
        "model_version",
        "mlflow_train_run_id",
        model_name=name,
        model_version=version,
        mlflow_train_run_id=ctx.train["train_run_id"],
    )
    await ctx.progress.emit(
        "registering",
        "done",
        f"{name} version {version} ({CANDIDATE_ALIAS}; {CHAMPION_ALIAS} moves when the run succeeds)",
        data={"model_name": name, "model_version": version},
    )
    return {"model_name": name, "model_version": version}


async def _version_of_run(ctx: RunContext, name: str) -> str:
    from alphaswarm_common.errors import NotFound

    try:
        listed = await ctx.call(
            ctx.gw.clients.registry.ListModelVersions,
            rpb.ListModelVersionsRequest(name=name, page_size=50),
            ctx.settings.deadline_default_seconds,
            "registry",
        )
    except NotFound:
        return ""
    for mv in listed.versions:
        if mv.tags.get("alphaswarm.run_id") == ctx.run_id:
            return str(mv.version)
    return ""


def _restore_register(ctx: RunContext, out: dict[str, Any]) -> None:
    if not out.get("skipped"):
        ctx.model_name, ctx.model_version = out["model_name"], out["model_version"]


async def _deploy(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg
    registry = ctx.gw.clients.registry
    timeout = ctx.settings.deadline_default_seconds
    await ctx.enter("deploying")
    if not cfg.train_first:
        await ctx.progress.emit(
            "deploying", "started", f"reusing deployment {cfg.deployment_id}; nothing is trained"
        )
        dep = (
            await ctx.call(
                registry.GetDeployment,
                rpb.GetDeploymentRequest(deployment_id=cfg.deployment_id),
                timeout,
                "registry",
            )
        ).deployment
        out = {"deployment": json_format.MessageToDict(dep), "reused": True}
        msg = f"deployment {dep.deployment_id} serves {dep.model_name} v{dep.model_version}"
        data = {"deployment_id": dep.deployment_id, "model_version": dep.model_version, "reused": True}
    else:
        await ctx.progress.emit("deploying", "started", "deploying as DeployedModelAlpha")
        resp = await ctx.call(
            registry.Deploy,
            rpb.DeployRequest(
                deployment_id=cfg.deployment_id or "",
                model_name=ctx.model_name,
                model_version=ctx.model_version,
                model_alias=CANDIDATE_ALIAS,
                dataset_cfg=config_to_proto(cfg.dataset_cfg),
                strategy_cfg=config_to_proto(cfg.strategy),
                request_id=f"{ctx.run_id}:deploy:{ctx.model_version}",
            ),
            timeout,
            "registry",
        )
        dep = resp.deployment
        out = {
            "deployment": json_format.MessageToDict(dep),
            "rolled": resp.rolled,
            "created": not cfg.deployment_id,
            "previous_model_version": resp.previous_model_version,
        }
        ctx.unrecorded["deploy"] = out
        if resp.rolled:
            msg = (
                f"rolled deployment {dep.deployment_id} from version {resp.previous_model_version} "
                f"to {dep.model_version}"
            )
        else:
            msg = f"deployment {dep.deployment_id} serves {ctx.model_name} v{ctx.model_version}"
        data = {
            "deployment_id": dep.deployment_id,
            "rolled": resp.rolled,
            "previous_model_version": resp.previous_model_version,
            "model_version": dep.model_version,
        }
    ctx.deployment = dep
    await ctx.link(
        "model_name",
        "model_version",
        "deployment_id",
        model_name=dep.model_name,
        model_version=dep.model_version,
        deployment_id=dep.deployment_id,
    )
    await ctx.progress.emit("deploying", "done", msg, data=data)
    return out


def _restore_deploy(ctx: RunContext, out: dict[str, Any]) -> None:
    ctx.deployment = json_format.ParseDict(
        out["deployment"], resources_pb2.Deployment(), ignore_unknown_fields=True
    )
    ctx.model_name = ctx.model_name or ctx.deployment.model_name
    ctx.model_version = ctx.model_version or ctx.deployment.model_version


async def _predict(ctx: RunContext) -> dict[str, Any]:
    start, end = _window(ctx.cfg)
    dep = ctx.deployment
    await ctx.enter("predicting")
    await ctx.progress.emit(
        "predicting", "started", f"predicting {start}..{end} with {dep.model_name} v{dep.model_version}"
    )
    _, signal, _, _ = await ctx.prediction()
    shape = {"n_dates": int(signal.shape[0]), "n_symbols": int(signal.shape[1])}
    await ctx.progress.emit(
        "predicting", "done", f"{shape['n_dates']} dates x {shape['n_symbols']} symbols", data=shape
    )
    return shape


def _backtest_request(
    ctx: RunContext, matrix: Any, prices: arrays_pb2.Panel, benchmark: Any
) -> bpb.RunBacktestRequest:
    strategy_cfg = _strategy_for(ctx.cfg, ctx.deployment)
    dep = ctx.deployment
    return bpb.RunBacktestRequest(
        signal=matrix,
        prices=prices,
        strategy_cfg=config_to_proto(strategy_cfg),
        backtest_cfg=config_to_proto(ctx.cfg.resolved_backtest_cfg),
        experiment_id=ctx.experiment_id,
        parent_run_id=ctx.parent_run_id,
        task_id=ctx.run.task_id,
        strategy_label=f"alpha:{strategy_cfg.type}",
        persist=True,
        request_id=f"{ctx.run_id}:backtest",
        notes=f"alpha-backtest run {ctx.run_id}: {dep.model_name} v{dep.model_version}",
        benchmark_close=benchmark,
    )


async def _backtest(ctx: RunContext) -> dict[str, Any]:
    matrix, _, dates, _ = await ctx.prediction()
    await ctx.enter("backtesting")
    prices = await ctx.prices()
    benchmark = await asyncio.to_thread(_benchmark_close, ctx.cfg, dates)
    request = _backtest_request(ctx, matrix, prices, benchmark)
    await ctx.progress.emit("backtesting", "started", f"{request.strategy_cfg.type} over {len(dates)} bars")
    bt = await ctx.call(
        ctx.gw.clients.backtester.RunBacktest, request, ctx.settings.deadline_backtest_seconds, "backtester"
    )
    ctx._bt = bt
    values, reasons, conv = metricset_from_proto(bt.metrics)
    ctx.backtest = {
        "backtest_id": bt.backtest_id,
        "backtest_run_id": bt.run_id,
        "trading": values,
        "reasons": reasons,
        "conventions": conv,
        "n_trades": len(bt.trades),
    }
    await ctx.link(
        "backtest_id", "mlflow_backtest_run_id", backtest_id=bt.backtest_id, mlflow_backtest_run_id=bt.run_id
    )
    await ctx.progress.emit(
        "backtesting",
        "done",
        f"sharpe {_fmt(values.get('sharpe'))}, {len(bt.trades)} trades",
        data={"backtest_id": bt.backtest_id, "sharpe": values.get("sharpe")},
    )
    return ctx.backtest


def _restore_backtest(ctx: RunContext, out: dict[str, Any]) -> None:
    ctx.backtest = dict(out)


async def _labels(ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
    prices = await ctx.prices()
    close = np.asarray(_field(prices, "close"))
    return close, make_labels(close, ctx.cfg.dataset_cfg.label.horizon, ctx.cfg.execution_lag, "raw")


async def _metrics(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg
    _, signal, dates, symbols = await ctx.prediction()
    _, labels = await _labels(ctx)
    ml = await asyncio.to_thread(ml_metrics, signal, labels)
    trading = ctx.backtest["trading"]
    score = combined_score(ml, trading, cfg.weights)
    ctx.combined = {
        "ml": {k: ml.values.get(k) for k in ML_KEYS},
        "trading": {k: trading.get(k) for k in TRADING_KEYS},
        "score": score.score,
        "ml_all": dict(ml.values),
        "trading_all": trading,
        "score_detail": score.to_dict(),
        "reasons": {
            **{f"ml.{k}": v for k, v in ml.reasons.items()},
            **{f"trading.{k}": v for k, v in ctx.backtest["reasons"].items()},
        },
        "conventions": {
            "ml": dict(ml.conventions),
            "trading": ctx.backtest["conventions"],
            "execution_lag": cfg.execution_lag,
            "horizon": cfg.dataset_cfg.label.horizon,
            "labels": "raw forward returns realised inside the backtest window",
        },
        "window": {"start": str(dates[0]), "end": str(dates[-1]), "n_dates": len(dates), "symbols": symbols},
    }
    return {"combined": ctx.combined}


def _restore_metrics(ctx: RunContext, out: dict[str, Any]) -> None:
    ctx.combined = dict(out["combined"])


async def _persist(ctx: RunContext) -> dict[str, Any]:
    await ctx.enter("persisting")
    await ctx.progress.emit("persisting", "started", "saving the combined run")
    if not (ctx.cfg.capture_predictions and ctx.settings.ml_prediction_audit_enabled):
        return {"captured": False}
    written = await _save_audit(ctx)
    ctx.captured = True
    await ctx.progress.emit(
        "persisting", "progress", f"{written} prediction audit rows", data={"audit_rows": written}
    )
    return {"captured": True, "audit_rows": written}


def _restore_persist(ctx: RunContext, out: dict[str, Any]) -> None:
    ctx.captured = bool(out.get("captured"))


async def _finish(ctx: RunContext) -> dict[str, Any]:
    tracker = ctx.gw.tracker
    combined = ctx.combined
    tags = {
        "alphaswarm.train_run_id": ctx.train.get("train_run_id", ""),
        "alphaswarm.backtest_run_id": ctx.backtest["backtest_run_id"],
        "alphaswarm.backtest_id": ctx.backtest["backtest_id"],
        "alphaswarm.deployment_id": ctx.deployment.deployment_id,
        "alphaswarm.model_name": ctx.deployment.model_name,
        "alphaswarm.model_version": ctx.deployment.model_version,
    }
    metrics = {
        **{f"ml_{k}": v for k, v in combined["ml_all"].items()},
        **{f"trading_{k}": v for k, v in combined["trading_all"].items()},
        "score": combined["score"],
    }

    def log_parent() -> None:
        # A child run an earlier attempt left RUNNING (its service died mid-call) ends FAILED.
        tracker.end_unfinished_children(ctx.parent_run_id)
        tracker.log_metrics(ctx.parent_run_id, metrics)
        tracker.set_tags(ctx.parent_run_id, {k: v for k, v in tags.items() if v})

    await asyncio.to_thread(log_parent)
    if ctx.cfg.train_first:  # the version becomes champion only now that the run succeeded
        await _move_champion(ctx)
    # The parent run finishes before the row says SUCCEEDED, so the two never disagree.
    await asyncio.to_thread(tracker.end_run, ctx.parent_run_id)
    done = resources_pb2.AlphaBacktestRun(
        run_id=ctx.run_id,
        state=resources_pb2.RUN_STATE_SUCCEEDED,
        stage="completed",
        combined_metrics=struct_from_dict(combined),
        predictions_captured=ctx.captured,
    )
    done.finished_at.CopyFrom(timestamp_from_datetime(_now()))
    paths = ["state", "stage", "combined_metrics", "predictions_captured", "finished_at"]
    if ctx.started_at:
        done.duration_seconds = max((_now() - dt.datetime.fromisoformat(ctx.started_at)).total_seconds(), 0.0)
        paths.append("duration_seconds")
    await ctx.attempt.update_run(done, *paths)
    await publish_terminal(
        ctx.gw,
        terminal_event(
            ctx.run.task_id,
            "completed",
            f"score {_fmt(combined['score'])}",
            {
                "run_id": ctx.run_id,
                "task_id": ctx.run.task_id,
                "mlflow_parent_run_id": ctx.parent_run_id,
                "model_name": ctx.deployment.model_name,
                "model_version": ctx.deployment.model_version,
                "deployment_id": ctx.deployment.deployment_id,
                "backtest_id": ctx.backtest["backtest_id"],
                "combined_metrics": {
                    "ml": combined["ml"],
                    "trading": combined["trading"],
                    "score": combined["score"],
                },
            },
        ),
    )
    return {}


async def _move_champion(ctx: RunContext) -> None:
    registry = ctx.gw.clients.registry
    timeout = ctx.settings.deadline_default_seconds
    name, version = ctx.model_name, ctx.model_version
    described = await asyncio.to_thread(ctx.gw.tracker.get_registered_model, name)
    ctx.previous_champion = described.aliases.get(CHAMPION_ALIAS)
    await ctx.call(
        registry.SetModelAlias,
        rpb.SetModelAliasRequest(name=name, alias=CHAMPION_ALIAS, version=version),
        timeout,
        "registry",
    )
    ctx.champion_moved = True

    def settle() -> None:
        ctx.gw.tracker.set_model_version_tags(name, version, {RUN_STATE_TAG: "SUCCEEDED"})
        ctx.gw.tracker.drop_alias_of(name, CANDIDATE_ALIAS, version)

    await asyncio.to_thread(settle)


STAGES: tuple[Stage[RunContext], ...] = (
    Stage("start", "accepted", _start, _restore_start),
    Stage("train", "training", _train, _restore_train),
    Stage("register", "registering", _register, _restore_register),
    Stage("deploy", "deploying", _deploy, _restore_deploy),
    Stage("predict", "predicting", _predict),
    Stage("backtest", "backtesting", _backtest, _restore_backtest),
    Stage("metrics", "backtesting", _metrics, _restore_metrics),
    Stage("persist", "persisting", _persist, _restore_persist),
    Stage("finish", "persisting", _finish, record=False),
)


# ---------------------------------------------------------------------------------------------- compensation


async def compensate(
    gw: Any,
    run_id: str,
    outputs: dict[str, Any],
    detail: resources_pb2.ErrorDetail,
    *,
    previous_champion: str | None = None,
    champion_moved: bool = False,
) -> None:
    """Undo what a failed or cancelled run left behind, from its recorded stage outputs.

    Every step is best effort (logged when it fails): the row and the terminal event
    come after it either way."""
    tracker = gw.tracker
    timeout = gw.settings.deadline_default_seconds
    registry = gw.clients.registry
    parent = (outputs.get("start") or {}).get("parent_run_id", "")
    reg = outputs.get("register") or {}
    dep = outputs.get("deploy") or {}

    async def step(what: str, fn: Any) -> None:
        try:
            await fn()
        except Exception as exc:
            log.warning("run %s: could not %s: %s", run_id, what, exc)

    if parent:

        def end_parent() -> None:
            tracker.end_unfinished_children(parent)
            tracker.set_tags(
                parent,
                {
                    "alphaswarm.error_stage": detail.stage,
                    "alphaswarm.error_code": detail.code,
                    "alphaswarm.error_message": detail.message[:4000],
                },
            )
            tracker.end_run(parent, failed=True)

        await step("end the MLflow runs", lambda: asyncio.to_thread(end_parent))
    if reg.get("model_version"):
        name, version = reg["model_name"], reg["model_version"]
        state = "CANCELLED" if detail.code == "CANCELLED" else "FAILED"

        def settle() -> None:
            tracker.set_model_version_tags(name, version, {RUN_STATE_TAG: state})
            tracker.drop_alias_of(name, CANDIDATE_ALIAS, version)

        await step("tag the model version", lambda: asyncio.to_thread(settle))
        if champion_moved and previous_champion:
            await step(
                "move champion back",
                lambda: aio_call(
                    registry.SetModelAlias,
                    rpb.SetModelAliasRequest(name=name, alias=CHAMPION_ALIAS, version=previous_champion),
                    timeout=timeout,
                    target="registry",
                ),
            )
    deployment_id = ((dep.get("deployment") or {}).get("deploymentId")) or ""
    if deployment_id and dep.get("rolled"):
        await step(
            "roll the deployment back",
            lambda: aio_call(
                registry.RollbackDeployment,
                rpb.RollbackDeploymentRequest(deployment_id=deployment_id),
                timeout=timeout,
                target="registry",
            ),
        )
    elif deployment_id and dep.get("created"):
        await step(
            "retire the deployment",
            lambda: aio_call(
                registry.RetireDeployment,
                rpb.RetireDeploymentRequest(deployment_id=deployment_id),
                timeout=timeout,
                target="registry",
            ),
        )


# ---------------------------------------------------------------------------------------------- saga


class AlphaBacktestSaga:
    def __init__(self, gateway: Any) -> None:
        self.gw = gateway
        self.settings = gateway.settings

    async def handle_job(self, kind: str, payload: dict[str, Any]) -> None:
        task_id = str(payload.get("task_id") or "")
        run_id = str(payload.get("run_id") or "")
        if not task_id and not run_id:
            raise PoisonJob("the job names neither a task_id nor a run_id")
        try:
            run = await durable(
                self.gw,
                "read of the job's run",
                lambda: self.gw.get_run(run_id=run_id, task_id=task_id if not run_id else ""),
            )
        except AlphaSwarmError as exc:
            if exc.grpc_code in ("NOT_FOUND", "INVALID_ARGUMENT"):
                raise PoisonJob(f"no run for the job: {exc}") from exc
            raise
        if run.state in TERMINAL_RUN_STATES:
            return

        async def body(attempt: Attempt) -> None:
            await self.execute(run, attempt)

        async def exhausted(attempt: Attempt) -> None:
            detail = exhausted_detail(attempt.task, attempt.attempts)
            await compensate(self.gw, run.run_id, attempt.outputs, detail)
            await fail_task(self.gw, attempt, detail, run_id=run.run_id)

        await execute_leased(self.gw, run.task_id, body, exhausted)

    async def execute(self, run: resources_pb2.AlphaBacktestRun, attempt: Attempt) -> None:
        cfg = config_from_proto(run.config, AlphaBacktestConfig)
        # A job delivered again continues the task's event sequence instead of repeating seqs.
        progress = Progress(self.gw, run.task_id, seq=max(1, await self.gw.bus.last_seq(run.task_id)))
        progress.stage = "training" if cfg.train_first else "deploying"
        ctx = RunContext(self.gw, run, cfg, attempt, progress)
        ctx.deadline = time.time() + self.settings.run_deadline_seconds
        machine = StageMachine(
            STAGES,
            record=attempt.record,
            transient=_transient,
            retry_seconds=self.settings.gateway_outbox_seconds / 10,
        )
        done = machine.completed(attempt.outputs)
        if done:
            await progress.emit(
                progress.stage,
                "progress",
                f"attempt {attempt.attempts} resumes after {done[-1]}",
                data={"resumed_after": done[-1], "attempt": attempt.attempts},
            )
        try:
            await machine.run(ctx, attempt.outputs)
        except (LeaseLost, asyncio.CancelledError):
            await self._cancelled(ctx)  # compensates when the run was cancelled, not taken over
            raise
        except Exception as exc:
            current = machine.current
            stage = current.label if current is not None and current.name != "start" else progress.stage
            await self._fail(ctx, stage, exc)

    async def _cancelled(self, ctx: RunContext) -> None:
        """The work was stopped (cancelled, or a write found the lease lost): compensate if the run
        was cancelled; a newer attempt that took the run over carries on with what it made."""
        try:
            row = await self.gw.get_run(run_id=ctx.run_id)
        except Exception as exc:
            log.warning("run %s: state unknown after cancellation: %s", ctx.run_id, exc)
            return
        if row.state == resources_pb2.RUN_STATE_CANCELLED:
            await compensate(
                self.gw,
                ctx.run_id,
                ctx.made(),
                row.error,
                previous_champion=ctx.previous_champion,
                champion_moved=ctx.champion_moved,
            )

    async def _fail(self, ctx: RunContext, stage: str, exc: BaseException) -> None:
        detail = error_detail(stage, exc)
        if isinstance(exc, AlphaSwarmError):
            log.info("run %s failed at %s: %s", ctx.run_id, stage, exc)
        else:
            log.exception("run %s failed at %s", ctx.run_id, stage)
        await compensate(
            self.gw,
            ctx.run_id,
            ctx.made(),
            detail,
            previous_champion=ctx.previous_champion,
            champion_moved=ctx.champion_moved,
        )
        await fail_task(
            self.gw, ctx.attempt, detail, run_id=ctx.run_id, extra={"mlflow_parent_run_id": ctx.parent_run_id}
        )


async def _save_audit(ctx: RunContext) -> int:
    """One row per (date, symbol): prediction, realised label, the target weight formed at t,
    the weight held at the close of t, and the position's contribution to the portfolio
    return of bar t (`h[t-1] * r[t]`, the close-to-close asset return)."""
    matrix, signal, dates, symbols = await ctx.prediction()
    close, labels = await _labels(ctx)
    bt = ctx._bt
    if bt is None:  # resumed after the backtest: compute its weights again, saving nothing
        request = _backtest_request(ctx, matrix, await ctx.prices(), None)
        request.persist = False
        request.parent_run_id = ""
        request.experiment_id = ""
        request.request_id = ""
        bt = await ctx.call(
            ctx.gw.clients.backtester.RunBacktest,
            request,
            ctx.settings.deadline_backtest_seconds,
            "backtester",
        )
    target, _, _ = matrix_from_proto(bt.weights_target, field="weights_target")
    held, _, _ = matrix_from_proto(bt.weights_held, field="weights_held")
    lag = ctx.cfg.execution_lag
    formed = np.full_like(target, np.nan)  # the target formed at t is in force from the fill at t+lag
    formed[: len(formed) - lag] = target[lag:] if lag else target
    returns = np.full_like(close, np.nan)
    returns[1:] = close[1:] / close[:-1] - 1.0
    held_prev = np.vstack([np.zeros((1, held.shape[1])), held[:-1]])
    contribution = np.where(held_prev != 0, held_prev * np.nan_to_num(returns), 0.0)
    batch = resources_pb2.PredictionAuditBatch(dates=dates_to_strings(dates), symbols=list(symbols))
    for name, values in (
        ("prediction", signal),
        ("realized_return", labels),
        ("target_weight", formed),
        ("held_weight", held),
        ("pnl_contribution", contribution),
    ):
        batch.fields[name].CopyFrom(array_to_proto(np.asarray(values, dtype=np.float64)))
    resp = await ctx.call(
        ctx.gw.clients.persistence.SavePredictionAudit,
        ppb.SavePredictionAuditRequest(run_id=ctx.run_id, batch=batch),
        ctx.settings.deadline_backtest_seconds,
        "persistence",
    )
    fields = {"prediction": signal, "realized": labels, "target": formed, "held": held, "pnl": contribution}
    await _store_run_page(ctx, list(batch.dates), list(symbols), fields)
    return int(resp.rows_written)


async def _store_run_page(
    ctx: RunContext, dates: list[str], symbols: list[str], fields: dict[str, np.ndarray]
) -> None:
    """Compute the run page's audit statistics from the audit just saved, as the browser would
    from the stored audit, and log them on the parent run (`browser/stored.py`), so no gateway
    has to stream the audit to draw the page. Writing them again (a resumed stage) replaces
    them with the same statistics. A failure here does not fail the run: the page computes them."""
    from alphaswarm_gateway.browser import stored

    config = ctx.cfg.model_dump(mode="json")
    try:
        blob = await asyncio.to_thread(stored.build, dates, symbols, fields, config)
        await asyncio.to_thread(ctx.gw.tracker.log_files, ctx.parent_run_id, {stored.ARTIFACT: blob})
    except Exception as exc:
        log.warning("run %s: run page statistics not stored (%s); the page computes them", ctx.run_id, exc)


# ---------------------------------------------------------------------------------------------- helpers


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _window(cfg: AlphaBacktestConfig) -> tuple[dt.date, dt.date]:
    segments = cfg.dataset_cfg.segments
    start = cfg.backtest_cfg.start_date or (segments.test.start if segments else None)
    end = cfg.backtest_cfg.end_date or (segments.test.end if segments else None)
    assert start is not None and end is not None  # guaranteed by AlphaBacktestConfig's validation
    return start, end


def _strategy_for(cfg: AlphaBacktestConfig, deployment: resources_pb2.Deployment) -> StrategyConfig:
    """The run's strategy when it names one; otherwise the one the deployment trades with."""
    if cfg.strategy_cfg is not None:
        return cfg.strategy_cfg
    if deployment.HasField("strategy_cfg") and deployment.strategy_cfg.type:
        return config_from_proto(deployment.strategy_cfg, StrategyConfig, prefix="deployment.strategy_cfg")
    return cfg.strategy


def _prices_for(cfg: AlphaBacktestConfig, dates: np.ndarray, symbols: list[str]) -> arrays_pb2.Panel:
    """The run's price panel cut to the prediction matrix's dates and symbols."""
    panel = load_panel(cfg.dataset_cfg)
    index = {s: i for i, s in enumerate(panel.symbols)}
    missing = [s for s in symbols if s not in index]
    if missing:
        raise DataError(f"the run's dataset has no prices for {missing}", field="dataset_cfg.symbols")
    rows = np.searchsorted(panel.dates, dates)
    if (rows >= len(panel.dates)).any() or not np.array_equal(
        panel.dates[np.minimum(rows, len(panel.dates) - 1)], dates
    ):
        raise DataError(
            "the prediction dates are not all dates of the run's dataset", field="dataset_cfg.source"
        )
    cols = np.array([index[s] for s in symbols])
    out = arrays_pb2.Panel(
        dates=dates_to_strings(dates), symbols=list(symbols), fingerprint=panel.fingerprint
    )
    for name in ("close", "open", "high", "low", "volume"):
        values = getattr(panel, name, None)
        if values is not None:
            out.fields[name].CopyFrom(
                array_to_proto(np.ascontiguousarray(values[np.ix_(rows, cols)], dtype=np.float64))
            )
    return out


def benchmark_column(cfg: AlphaBacktestConfig) -> tuple[Any, int] | None:
    """(panel, column) of `backtest_cfg.benchmark` in the run's dataset (all its symbols), or None
    when no benchmark is set; DataError naming the field when the dataset has no such symbol."""
    symbol = cfg.backtest_cfg.benchmark
    if not symbol:
        return None
    panel = load_panel(cfg.dataset_cfg.model_copy(update={"symbols": None}))
    if symbol not in panel.symbols:
        raise DataError(
            f"benchmark {symbol!r} is not a symbol of the dataset", field="backtest_cfg.benchmark"
        )
    return panel, panel.symbols.index(symbol)


def _benchmark_close(cfg: AlphaBacktestConfig, dates: np.ndarray) -> arrays_pb2.Array | None:
    """Closes of `backtest_cfg.benchmark` (a symbol of the run's dataset) on the backtest dates."""
    found = benchmark_column(cfg)
    if found is None:
        return None
    panel, col = found
    symbol = cfg.backtest_cfg.benchmark
    rows = np.searchsorted(panel.dates, dates)
    close = panel.close[rows, col]
    if not np.isfinite(close).all():
        raise DataError(
            f"benchmark {symbol!r} has no close on some backtest dates", field="backtest_cfg.benchmark"
        )
    return array_to_proto(np.ascontiguousarray(close, dtype=np.float64))


def _field(panel: arrays_pb2.Panel, name: str) -> np.ndarray:
    from alphaswarm_common.protoconv import array_from_proto

    return array_from_proto(panel.fields[name])


def _flat_params(cfg: AlphaBacktestConfig) -> dict[str, Any]:
    doc = cfg.model_dump(mode="json", exclude_none=True)
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", doc)
    return flat
