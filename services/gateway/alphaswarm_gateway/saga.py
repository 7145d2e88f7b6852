"""The alpha-backtest saga: train -> register -> deploy -> predict -> backtest ->
metrics -> persist, over the four services, under one MLflow parent run.

Every call carries a deadline. Every stage publishes progress on the event
bus. The first failing stage ends the run FAILED with `{stage, code, message,
field}` on the run row, the MLflow parent run (status FAILED and tags) and a
terminal `failed` event; other runs are unaffected. A job delivered again
(a worker died) finds its run and either skips it (already terminal) or runs
it again from the start; the catalog saves it makes are idempotent by keys
derived from the run id.

Timing (docs/metrics.md): the prediction at t uses data through the close of
t; the backtest fills it at t+lag; the ML metrics compare it with
`close[t+lag+h] / close[t+lag] - 1` inside the same window, so IC and PnL are
measured on the same returns.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

import numpy as np
from google.protobuf import field_mask_pb2

from alphaswarm.backtester.v1 import backtester_service_pb2 as bpb
from alphaswarm.common.v1 import arrays_pb2, resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.registry.v1 import registry_service_pb2 as rpb
from alphaswarm.trainer.v1 import trainer_service_pb2 as tpb
from alphaswarm_common.config import AlphaBacktestConfig, StrategyConfig
from alphaswarm_common.data import load_panel
from alphaswarm_common.errors import AlphaSwarmError, DataError
from alphaswarm_common.grpc_client import aio_call
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
from alphaswarm_gateway.progress import Progress, error_detail

__all__ = ["ML_KEYS", "TRADING_KEYS", "AlphaBacktestSaga", "fail_unstarted"]

log = logging.getLogger(__name__)

ML_KEYS = HEADLINE_ML_METRICS
TRADING_KEYS = HEADLINE_TRADING_METRICS


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _update(gateway: Any, run: resources_pb2.AlphaBacktestRun, *paths: str) -> None:
    await aio_call(
        gateway.clients.persistence.UpdateAlphaBacktestRun,
        ppb.UpdateAlphaBacktestRunRequest(run=run, update_mask=field_mask_pb2.FieldMask(paths=list(paths))),
        timeout=gateway.settings.deadline_default_seconds,
        target="persistence",
    )


async def fail_unstarted(
    gateway: Any, run: resources_pb2.AlphaBacktestRun, stage: str, exc: BaseException
) -> None:
    """Mark a run that never reached a worker as FAILED and publish the terminal event."""
    detail = error_detail(stage, exc)
    failed = resources_pb2.AlphaBacktestRun(
        run_id=run.run_id, state=resources_pb2.RUN_STATE_FAILED, stage="failed", error=detail
    )
    failed.finished_at.CopyFrom(timestamp_from_datetime(_now()))
    try:
        await _update(gateway, failed, "state", "stage", "error", "finished_at")
    finally:
        await Progress(gateway, run.task_id, seq=1).emit(
            "failed",
            "failed",
            detail.message,
            pct=100,
            data={
                "stage": detail.stage,
                "code": detail.code,
                "message": detail.message,
                "field": detail.field,
            },
        )


class AlphaBacktestSaga:
    def __init__(self, gateway: Any) -> None:
        self.gw = gateway
        self.settings = gateway.settings

    async def handle_job(self, kind: str, payload: dict[str, Any]) -> None:
        run = await self.gw.get_run(run_id=payload["run_id"])
        if run.state in TERMINAL_RUN_STATES:
            return
        await self.execute(run)

    async def execute(self, run: resources_pb2.AlphaBacktestRun) -> None:
        cfg = config_from_proto(run.config, AlphaBacktestConfig)
        # A job delivered again continues the task's event sequence instead of repeating seqs.
        progress = Progress(self.gw, run.task_id, seq=max(1, await self.gw.bus.last_seq(run.task_id)))
        progress.stage = "training" if cfg.train_first else "deploying"
        tracker = self.gw.tracker
        parent_run_id = ""
        started = time.perf_counter()
        links = resources_pb2.AlphaBacktestRun(run_id=run.run_id)
        try:
            experiment_id = await asyncio.to_thread(tracker.ensure_experiment, cfg.experiment_name)
            parent_run_id = await asyncio.to_thread(
                tracker.create_run,
                experiment_id,
                cfg.run_name,
                tags={
                    "alphaswarm.run_id": run.run_id,
                    "alphaswarm.task_id": run.task_id,
                    "alphaswarm.kind": "alpha_backtest",
                },
            )
            links.state = resources_pb2.RUN_STATE_RUNNING
            links.stage = progress.stage
            links.mlflow_parent_run_id = parent_run_id
            links.started_at.CopyFrom(timestamp_from_datetime(_now()))
            await _update(self.gw, links, "state", "stage", "mlflow_parent_run_id", "started_at")
            await asyncio.to_thread(tracker.log_params, parent_run_id, _flat_params(cfg))
            # Idempotency keys are scoped to this attempt (its MLflow parent run): a redelivered
            # job is a new attempt and must not collide with what an earlier one saved.
            attempt = parent_run_id

            # 1-2. train, register, deploy (or reuse a deployment)
            deployment, train_run_id = await self._model_stages(
                cfg, run, experiment_id, parent_run_id, attempt, progress, links
            )
            links.model_name = deployment.model_name
            links.model_version = deployment.model_version
            links.deployment_id = deployment.deployment_id
            links.mlflow_train_run_id = train_run_id
            links.stage = "predicting"
            await _update(
                self.gw, links, "model_name", "model_version", "deployment_id", "mlflow_train_run_id", "stage"
            )

            # 3. predict over the backtest window
            start, end = _window(cfg)
            await progress.emit(
                "predicting",
                "started",
                f"predicting {start}..{end} with {deployment.model_name} v{deployment.model_version}",
            )
            pred = await aio_call(
                self.gw.clients.registry.Predict,
                rpb.PredictRequest(
                    deployment_id=deployment.deployment_id, start_date=str(start), end_date=str(end)
                ),
                timeout=self.settings.deadline_predict_seconds,
                target="registry",
            )
            signal, dates, symbols = matrix_from_proto(pred.predictions, field="predictions")
            await progress.emit(
                "predicting",
                "done",
                f"{signal.shape[0]} dates x {signal.shape[1]} symbols",
                data={"n_dates": int(signal.shape[0]), "n_symbols": int(signal.shape[1])},
            )

            # 4. backtest the trades the predictions drive
            await _update(self.gw, _set_stage(links, "backtesting"), "stage")
            prices = await asyncio.to_thread(_prices_for, cfg, dates, symbols)
            strategy_cfg = _strategy_for(cfg, deployment)
            await progress.emit("backtesting", "started", f"{strategy_cfg.type} over {len(dates)} bars")
            bt = await aio_call(
                self.gw.clients.backtester.RunBacktest,
                bpb.RunBacktestRequest(
                    signal=pred.predictions,
                    prices=prices,
                    strategy_cfg=config_to_proto(strategy_cfg),
                    backtest_cfg=config_to_proto(cfg.resolved_backtest_cfg),
                    experiment_id=experiment_id,
                    parent_run_id=parent_run_id,
                    task_id=run.task_id,
                    strategy_label=f"alpha:{strategy_cfg.type}",
                    persist=True,
                    request_id=f"{attempt}:backtest",
                    notes=f"alpha-backtest run {run.run_id}: {deployment.model_name} v{deployment.model_version}",
                    benchmark_close=await asyncio.to_thread(_benchmark_close, cfg, dates),
                ),
                timeout=self.settings.deadline_backtest_seconds,
                target="backtester",
            )
            trading_values, trading_reasons, trading_conv = metricset_from_proto(bt.metrics)
            await progress.emit(
                "backtesting",
                "done",
                f"sharpe {_fmt(trading_values.get('sharpe'))}, {len(bt.trades)} trades",
                data={"backtest_id": bt.backtest_id, "sharpe": trading_values.get("sharpe")},
            )

            # 5. ML metrics on the same window, combined score
            close = np.asarray(_field(prices, "close"))
            labels = make_labels(close, cfg.dataset_cfg.label.horizon, cfg.execution_lag, "raw")
            ml = await asyncio.to_thread(ml_metrics, signal, labels)
            score = combined_score(ml, trading_values, cfg.weights)
            combined = {
                "ml": {k: ml.values.get(k) for k in ML_KEYS},
                "trading": {k: trading_values.get(k) for k in TRADING_KEYS},
                "score": score.score,
                "ml_all": dict(ml.values),
                "trading_all": trading_values,
                "score_detail": score.to_dict(),
                "reasons": {
                    **{f"ml.{k}": v for k, v in ml.reasons.items()},
                    **{f"trading.{k}": v for k, v in trading_reasons.items()},
                },
                "conventions": {
                    "ml": dict(ml.conventions),
                    "trading": trading_conv,
                    "execution_lag": cfg.execution_lag,
                    "horizon": cfg.dataset_cfg.label.horizon,
                    "labels": "raw forward returns realised inside the backtest window",
                },
                "window": {
                    "start": str(dates[0]),
                    "end": str(dates[-1]),
                    "n_dates": len(dates),
                    "symbols": symbols,
                },
            }

            # 6. persist
            await _update(self.gw, _set_stage(links, "persisting"), "stage")
            await progress.emit("persisting", "started", "saving the combined run")
            captured = False
            if cfg.capture_predictions and self.settings.ml_prediction_audit_enabled:
                written = await self._save_audit(run, cfg, signal, labels, close, bt, dates, symbols)
                captured = True
                await progress.emit(
                    "persisting", "progress", f"{written} prediction audit rows", data={"audit_rows": written}
                )

            # 7. the parent run carries the combined metrics and links; it finishes before the
            # run row says SUCCEEDED, so the two never disagree.
            await asyncio.to_thread(
                self._finish_parent,
                parent_run_id,
                dict(ml.values),
                trading_values,
                score.score,
                {
                    "alphaswarm.train_run_id": train_run_id,
                    "alphaswarm.backtest_run_id": bt.run_id,
                    "alphaswarm.backtest_id": bt.backtest_id,
                    "alphaswarm.deployment_id": deployment.deployment_id,
                    "alphaswarm.model_name": deployment.model_name,
                    "alphaswarm.model_version": deployment.model_version,
                },
            )
            done = resources_pb2.AlphaBacktestRun(
                run_id=run.run_id,
                state=resources_pb2.RUN_STATE_SUCCEEDED,
                stage="completed",
                backtest_id=bt.backtest_id,
                mlflow_backtest_run_id=bt.run_id,
                combined_metrics=struct_from_dict(combined),
                duration_seconds=time.perf_counter() - started,
                predictions_captured=captured,
            )
            done.finished_at.CopyFrom(timestamp_from_datetime(_now()))
            await _update(
                self.gw,
                done,
                "state",
                "stage",
                "backtest_id",
                "mlflow_backtest_run_id",
                "combined_metrics",
                "duration_seconds",
                "predictions_captured",
                "finished_at",
            )
            await progress.emit(
                "completed",
                "completed",
                f"score {_fmt(score.score)}",
                pct=100,
                data={
                    "run_id": run.run_id,
                    "task_id": run.task_id,
                    "mlflow_parent_run_id": parent_run_id,
                    "model_name": deployment.model_name,
                    "model_version": deployment.model_version,
                    "deployment_id": deployment.deployment_id,
                    "backtest_id": bt.backtest_id,
                    "combined_metrics": {
                        "ml": combined["ml"],
                        "trading": combined["trading"],
                        "score": score.score,
                    },
                },
            )
        except Exception as exc:
            await self._fail(run, progress.stage, exc, parent_run_id, progress, started)

    # ------------------------------------------------------------------------------------------
    async def _model_stages(
        self,
        cfg: AlphaBacktestConfig,
        run: resources_pb2.AlphaBacktestRun,
        experiment_id: str,
        parent_run_id: str,
        attempt: str,
        progress: Progress,
        links: resources_pb2.AlphaBacktestRun,
    ) -> tuple[resources_pb2.Deployment, str]:
        clients = self.gw.clients
        timeout = self.settings.deadline_default_seconds
        if not cfg.train_first:
            await progress.emit(
                "deploying", "started", f"reusing deployment {cfg.deployment_id}; nothing is trained"
            )
            dep = (
                await aio_call(
                    clients.registry.GetDeployment,
                    rpb.GetDeploymentRequest(deployment_id=cfg.deployment_id),
                    timeout=timeout,
                    target="registry",
                )
            ).deployment
            await progress.emit(
                "deploying",
                "done",
                f"deployment {dep.deployment_id} serves {dep.model_name} v{dep.model_version}",
                data={"deployment_id": dep.deployment_id, "model_version": dep.model_version, "reused": True},
            )
            return dep, ""

        await progress.emit("training", "started", f"fitting {cfg.model_cfg.type}")
        trained = await aio_call(
            clients.trainer.Train,
            tpb.TrainRequest(
                dataset_cfg=config_to_proto(cfg.dataset_cfg),
                model_cfg=config_to_proto(cfg.model_cfg),
                experiment_id=experiment_id,
                parent_run_id=parent_run_id,
                task_id=run.task_id,
            ),
            timeout=self.settings.deadline_train_seconds,
            target="trainer",
        )
        valid = metricset_from_proto(trained.metrics["valid"])[0] if "valid" in trained.metrics else {}
        await progress.emit(
            "training",
            "done",
            f"{trained.n_train_rows} rows, {len(trained.feature_names)} features",
            data={"train_run_id": trained.run_id, "valid_ic_spearman": valid.get("ic_spearman")},
        )

        await _update(self.gw, _set_stage(links, "registering"), "stage")
        await progress.emit("registering", "started", f"registering {cfg.model_cfg.registered_name}")
        reg = await aio_call(
            clients.registry.RegisterModel,
            rpb.RegisterModelRequest(
                model_uri=trained.model_uri,
                name=cfg.model_cfg.registered_name,
                alias="champion",
                run_id=trained.run_id,
                model_sha256=trained.model_sha256,
                tags={
                    "alphaswarm.run_id": run.run_id,
                    "alphaswarm.valid_ic_spearman": str(valid.get("ic_spearman")),
                },
            ),
            timeout=timeout,
            target="registry",
        )
        await progress.emit(
            "registering",
            "done",
            f"{reg.name} version {reg.version} ({reg.alias})",
            data={"model_name": reg.name, "model_version": reg.version},
        )

        await _update(self.gw, _set_stage(links, "deploying"), "stage")
        await progress.emit("deploying", "started", "deploying as DeployedModelAlpha")
        dep = await aio_call(
            clients.registry.Deploy,
            rpb.DeployRequest(
                deployment_id=cfg.deployment_id or "",
                model_name=reg.name,
                model_version=reg.version,
                model_alias=reg.alias,
                dataset_cfg=config_to_proto(cfg.dataset_cfg),
                strategy_cfg=config_to_proto(cfg.strategy),
                request_id=f"{attempt}:deploy",
            ),
            timeout=timeout,
            target="registry",
        )
        if dep.rolled:
            msg = (
                f"rolled deployment {dep.deployment.deployment_id} from version {dep.previous_model_version} "
                f"to {dep.deployment.model_version}"
            )
        else:
            msg = f"deployment {dep.deployment.deployment_id} serves {reg.name} v{reg.version}"
        await progress.emit(
            "deploying",
            "done",
            msg,
            data={
                "deployment_id": dep.deployment.deployment_id,
                "rolled": dep.rolled,
                "previous_model_version": dep.previous_model_version,
                "model_version": dep.deployment.model_version,
            },
        )
        return dep.deployment, trained.run_id

    async def _save_audit(
        self,
        run: resources_pb2.AlphaBacktestRun,
        cfg: AlphaBacktestConfig,
        signal: np.ndarray,
        labels: np.ndarray,
        close: np.ndarray,
        bt: bpb.RunBacktestResponse,
        dates: np.ndarray,
        symbols: list[str],
    ) -> int:
        """One row per (date, symbol): prediction, realised label, the target weight formed at t,
        the weight held at the close of t, and the position's contribution to the portfolio
        return of bar t (`h[t-1] * r[t]`, the close-to-close asset return)."""
        target, _, _ = matrix_from_proto(bt.weights_target, field="weights_target")
        held, _, _ = matrix_from_proto(bt.weights_held, field="weights_held")
        lag = cfg.execution_lag
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
        resp = await aio_call(
            self.gw.clients.persistence.SavePredictionAudit,
            ppb.SavePredictionAuditRequest(run_id=run.run_id, batch=batch),
            timeout=self.settings.deadline_backtest_seconds,
            target="persistence",
        )
        return int(resp.rows_written)

    def _finish_parent(
        self,
        parent_run_id: str,
        ml: dict[str, Any],
        trading: dict[str, Any],
        score: float | None,
        tags: dict[str, str],
    ) -> None:
        tracker = self.gw.tracker
        metrics = {
            **{f"ml_{k}": v for k, v in ml.items()},
            **{f"trading_{k}": v for k, v in trading.items()},
            "score": score,
        }
        tracker.log_metrics(parent_run_id, metrics)
        tracker.set_tags(parent_run_id, {k: v for k, v in tags.items() if v})
        tracker.end_run(parent_run_id)

    async def _fail(
        self,
        run: resources_pb2.AlphaBacktestRun,
        stage: str,
        exc: BaseException,
        parent_run_id: str,
        progress: Progress,
        started: float,
    ) -> None:
        detail = error_detail(stage, exc)
        if isinstance(exc, AlphaSwarmError):
            log.info("run %s failed at %s: %s", run.run_id, stage, exc)
        else:
            log.exception("run %s failed at %s", run.run_id, stage)
        failed = resources_pb2.AlphaBacktestRun(
            run_id=run.run_id,
            state=resources_pb2.RUN_STATE_FAILED,
            stage="failed",
            error=detail,
            duration_seconds=time.perf_counter() - started,
        )
        failed.finished_at.CopyFrom(timestamp_from_datetime(_now()))
        try:
            await _update(self.gw, failed, "state", "stage", "error", "finished_at", "duration_seconds")
        except Exception:
            log.exception("could not record the failure of run %s", run.run_id)
        if parent_run_id:

            def end_parent() -> None:
                self.gw.tracker.set_tags(
                    parent_run_id,
                    {
                        "alphaswarm.error_stage": detail.stage,
                        "alphaswarm.error_code": detail.code,
                        "alphaswarm.error_message": detail.message[:4000],
                    },
                )
                self.gw.tracker.end_run(parent_run_id, failed=True)

            try:
                await asyncio.to_thread(end_parent)
            except Exception:
                log.exception("could not mark MLflow run %s failed", parent_run_id)
        await progress.emit(
            "failed",
            "failed",
            f"{detail.stage}: {detail.message}",
            pct=100,
            data={
                "stage": detail.stage,
                "code": detail.code,
                "message": detail.message,
                "field": detail.field,
                "run_id": run.run_id,
                "mlflow_parent_run_id": parent_run_id,
            },
        )


# ---------------------------------------------------------------------------------------------- helpers


def _set_stage(run: resources_pb2.AlphaBacktestRun, stage: str) -> resources_pb2.AlphaBacktestRun:
    run.stage = stage
    return run


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
