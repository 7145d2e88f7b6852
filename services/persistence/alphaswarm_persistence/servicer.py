"""gRPC adapter of `alphaswarm.persistence.v1.PersistenceService`.

Each method converts the request to the repository's records, makes one
repository call and converts the result back; domain errors
(`alphaswarm_common.errors`) propagate and the shared interceptor of
`alphaswarm_common.grpc_server` turns them into status codes with the
offending field in a `BadRequest` detail.

Wire conventions:

* Empty strings are "not set": an empty id is assigned on create, an empty
  optional string is stored as NULL.
* Proto3 scalars cannot say "unset": on create, `duration_seconds` 0 means
  unknown (it is derived from started_at / finished_at), and a
  BacktestRecord's `initial_capital` 0 (no backtest starts with nothing)
  takes the seed's default 10000; everywhere else a number is stored as
  sent, 0.0 included (fees 0, a Sharpe of 0, a flat trade's pnl 0). A Trade's `exit_price` is NULL
  when its `exit_date` is empty (the trade is still open). A PortfolioRecord's
  `initial_capital` 0 likewise takes the seed's default 100000. The numbers of
  OptimizationRecord, WalkForwardRecord and PortfolioRecord that are
  `optional` in the proto are NULL exactly when unset.
* `UpdateAlphaBacktestRun` follows AIP-134: `update_mask` names fields of
  AlphaBacktestRun; an empty mask means every field set to a non-default
  value in `run`; `*` means every updatable field (full replacement).
  A field in the mask whose value is unset in `run` is cleared (NULL).
* Config messages (`AlphaBacktestRun.config`, `Deployment.dataset_cfg`,
  `Deployment.strategy_cfg`) are stored as their proto JSON with proto field
  names and read back ignoring fields this version does not know, so older
  readers survive newer writers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.message import Message

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as pb_grpc
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.grpc_server import ServiceRegistration
from alphaswarm_common.protoconv import (
    array_from_proto,
    array_to_proto,
    metricset_from_proto,
    metricset_to_proto,
    struct_from_dict,
    struct_to_dict,
    timestamp_from_datetime,
    timestamp_to_datetime,
)
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.migrations import upgrade
from alphaswarm_persistence.repository import (
    RUN_UPDATABLE_FIELDS,
    AlphaBacktestRunRecord,
    BacktestResultRecord,
    CatalogRepository,
    DeploymentRecord,
    MetricComparisonRecord,
    OptimizationResultRecord,
    PerformanceGroupRecord,
    PortfolioBacktestRecord,
    PredictionAuditBatch,
    PredictionAuditRecord,
    TradeRecord,
    WalkForwardTestRecord,
    parse_date,
    parse_uuid,
)

__all__ = [
    "SERVICE_NAME",
    "PersistenceServicer",
    "backtest_from_proto",
    "backtest_to_proto",
    "comparison_to_proto",
    "create_servicer",
    "deployment_from_proto",
    "deployment_to_proto",
    "optimization_from_proto",
    "optimization_to_proto",
    "performance_group_to_proto",
    "portfolio_from_proto",
    "portfolio_to_proto",
    "run_from_proto",
    "run_to_proto",
    "service_registration",
    "walk_forward_from_proto",
    "walk_forward_to_proto",
]

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["PersistenceService"].full_name

_RUN_STATE_NAMES: dict[int, str] = {
    resources_pb2.RUN_STATE_PENDING: "pending",
    resources_pb2.RUN_STATE_RUNNING: "running",
    resources_pb2.RUN_STATE_SUCCEEDED: "succeeded",
    resources_pb2.RUN_STATE_FAILED: "failed",
    resources_pb2.RUN_STATE_CANCELLED: "cancelled",
}
_RUN_STATE_ENUMS: dict[str, Any] = {v: k for k, v in _RUN_STATE_NAMES.items()}
_DEPLOYMENT_STATE_NAMES: dict[int, str] = {
    resources_pb2.DEPLOYMENT_STATE_ACTIVE: "active",
    resources_pb2.DEPLOYMENT_STATE_RETIRED: "retired",
}
_DEPLOYMENT_STATE_ENUMS: dict[str, Any] = {v: k for k, v in _DEPLOYMENT_STATE_NAMES.items()}


# --------------------------------------------------------------------------- small conversions


def _finite_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in values.items()}


def _opt(value: str) -> str | None:
    return value or None


def _message_dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _set_timestamp(target: Message, name: str, value: dt.datetime | None) -> None:
    ts = timestamp_from_datetime(value)
    if ts is not None:
        getattr(target, name).CopyFrom(ts)


def _timestamp(msg: Message, name: str) -> dt.datetime | None:
    return timestamp_to_datetime(getattr(msg, name)) if msg.HasField(name) else None


def _run_state(value: int, field_name: str) -> str:
    if value not in _RUN_STATE_NAMES:
        raise InvalidArgument("must be set to a RunState other than RUN_STATE_UNSPECIFIED", field=field_name)
    return _RUN_STATE_NAMES[value]


def _error_to_dict(msg: resources_pb2.ErrorDetail) -> dict[str, Any]:
    return {"stage": msg.stage, "code": msg.code, "message": msg.message, "field": msg.field}


# --------------------------------------------------------------------------- runs


_RUN_FIELD_READERS: dict[str, Callable[[resources_pb2.AlphaBacktestRun], Any]] = {
    "run_name": lambda m: m.run_name,
    "state": lambda m: _run_state(m.state, "run.state"),
    "stage": lambda m: _opt(m.stage),
    "config": lambda m: _message_dict(m.config) if m.HasField("config") else None,
    "model_name": lambda m: _opt(m.model_name),
    "model_version": lambda m: _opt(m.model_version),
    "deployment_id": lambda m: parse_uuid(m.deployment_id, "run.deployment_id"),
    "mlflow_parent_run_id": lambda m: _opt(m.mlflow_parent_run_id),
    "mlflow_train_run_id": lambda m: _opt(m.mlflow_train_run_id),
    "mlflow_backtest_run_id": lambda m: _opt(m.mlflow_backtest_run_id),
    "backtest_id": lambda m: parse_uuid(m.backtest_id, "run.backtest_id"),
    "combined_metrics": lambda m: (
        struct_to_dict(m.combined_metrics) if m.HasField("combined_metrics") else None
    ),
    "error": lambda m: _error_to_dict(m.error) if m.HasField("error") else None,
    "started_at": lambda m: _timestamp(m, "started_at"),
    "finished_at": lambda m: _timestamp(m, "finished_at"),
    "duration_seconds": lambda m: m.duration_seconds,
    "predictions_captured": lambda m: m.predictions_captured,
}
assert set(_RUN_FIELD_READERS) == RUN_UPDATABLE_FIELDS


def run_from_proto(msg: resources_pb2.AlphaBacktestRun) -> AlphaBacktestRunRecord:
    """The record of a run to create (created_at / updated_at are the server's)."""
    return AlphaBacktestRunRecord(
        run_id=parse_uuid(msg.run_id, "run.run_id"),
        task_id=parse_uuid(msg.task_id, "run.task_id"),
        run_name=msg.run_name,
        state=_RUN_STATE_NAMES.get(msg.state, "pending"),
        stage=_opt(msg.stage),
        config=_RUN_FIELD_READERS["config"](msg),
        model_name=_opt(msg.model_name),
        model_version=_opt(msg.model_version),
        deployment_id=parse_uuid(msg.deployment_id, "run.deployment_id"),
        mlflow_parent_run_id=_opt(msg.mlflow_parent_run_id),
        mlflow_train_run_id=_opt(msg.mlflow_train_run_id),
        mlflow_backtest_run_id=_opt(msg.mlflow_backtest_run_id),
        backtest_id=parse_uuid(msg.backtest_id, "run.backtest_id"),
        combined_metrics=_RUN_FIELD_READERS["combined_metrics"](msg),
        error=_RUN_FIELD_READERS["error"](msg),
        started_at=_timestamp(msg, "started_at"),
        finished_at=_timestamp(msg, "finished_at"),
        duration_seconds=msg.duration_seconds or None,
        predictions_captured=msg.predictions_captured,
        trace_id=msg.trace_id or None,
    )


def run_changes_from_proto(msg: resources_pb2.AlphaBacktestRun, paths: list[str]) -> dict[str, Any]:
    """{field: value} for the mask paths (AIP-134: empty = populated fields, `*` = all updatable fields)."""
    if paths == ["*"]:
        paths = sorted(RUN_UPDATABLE_FIELDS)
    elif not paths:
        paths = [f.name for f, _ in msg.ListFields() if f.name in RUN_UPDATABLE_FIELDS]
        if not paths:
            raise InvalidArgument("is empty and run sets no updatable field", field="update_mask")
    changes: dict[str, Any] = {}
    for path in paths:
        reader = _RUN_FIELD_READERS.get(path)
        # Unknown and immutable paths go through with no value; the repository names them in its error.
        changes[path] = reader(msg) if reader is not None else None
    return changes


def _summary_config(config: Mapping[str, Any], msg: Any) -> None:
    model = config.get("model_cfg")
    if isinstance(model, Mapping) and isinstance(model.get("type"), str):
        msg.model_cfg.type = model["type"]
    dataset = config.get("dataset_cfg")
    segments = dataset.get("segments") if isinstance(dataset, Mapping) else None
    test = segments.get("test") if isinstance(segments, Mapping) else None
    if isinstance(test, Mapping):
        for key in ("start", "end"):
            if isinstance(test.get(key), str):
                setattr(msg.dataset_cfg.segments.test, key, test[key])


def run_to_proto(record: AlphaBacktestRunRecord, *, summary: bool = False) -> resources_pb2.AlphaBacktestRun:
    """A run as its message; with `summary` its config is reduced to the model type and the test
    segment (converting a whole config is most of the cost of a long listing)."""
    msg = resources_pb2.AlphaBacktestRun(
        run_id=str(record.run_id or ""),
        task_id=str(record.task_id or ""),
        run_name=record.run_name,
        state=_RUN_STATE_ENUMS.get(record.state, resources_pb2.RUN_STATE_UNSPECIFIED),
        model_name=record.model_name or "",
        model_version=record.model_version or "",
        deployment_id=str(record.deployment_id or ""),
        mlflow_parent_run_id=record.mlflow_parent_run_id or "",
        mlflow_train_run_id=record.mlflow_train_run_id or "",
        mlflow_backtest_run_id=record.mlflow_backtest_run_id or "",
        backtest_id=str(record.backtest_id or ""),
        duration_seconds=record.duration_seconds or 0.0,
        stage=record.stage or "",
        predictions_captured=record.predictions_captured,
        trace_id=record.trace_id or "",
    )
    if record.config is not None and summary:
        _summary_config(record.config, msg.config)
    elif record.config is not None:
        json_format.ParseDict(record.config, msg.config, ignore_unknown_fields=True)
    if record.combined_metrics is not None:
        msg.combined_metrics.CopyFrom(struct_from_dict(record.combined_metrics))
    if record.error is not None:
        msg.error.CopyFrom(resources_pb2.ErrorDetail(**{k: v or "" for k, v in record.error.items()}))
    _set_timestamp(msg, "created_at", record.created_at)
    _set_timestamp(msg, "started_at", record.started_at)
    _set_timestamp(msg, "finished_at", record.finished_at)
    return msg


# --------------------------------------------------------------------------- deployments


def deployment_from_proto(msg: resources_pb2.Deployment) -> DeploymentRecord:
    history = (
        cast("list[dict[str, Any]]", json_format.MessageToDict(msg.history))
        if msg.HasField("history")
        else None
    )
    return DeploymentRecord(
        deployment_id=parse_uuid(msg.deployment_id, "deployment.deployment_id"),
        model_name=msg.model_name,
        model_version=msg.model_version,
        model_alias=_opt(msg.model_alias),
        model_uri=_opt(msg.model_uri),
        dataset_cfg=_message_dict(msg.dataset_cfg) if msg.HasField("dataset_cfg") else None,
        strategy_cfg=_message_dict(msg.strategy_cfg) if msg.HasField("strategy_cfg") else None,
        state=_DEPLOYMENT_STATE_NAMES.get(msg.state),
        history=history,
    )


def deployment_to_proto(record: DeploymentRecord) -> resources_pb2.Deployment:
    msg = resources_pb2.Deployment(
        deployment_id=str(record.deployment_id or ""),
        model_name=record.model_name,
        model_version=record.model_version,
        model_alias=record.model_alias or "",
        model_uri=record.model_uri or "",
        state=_DEPLOYMENT_STATE_ENUMS.get(record.state or "", resources_pb2.DEPLOYMENT_STATE_UNSPECIFIED),
    )
    if record.dataset_cfg is not None:
        json_format.ParseDict(record.dataset_cfg, msg.dataset_cfg, ignore_unknown_fields=True)
    if record.strategy_cfg is not None:
        json_format.ParseDict(record.strategy_cfg, msg.strategy_cfg, ignore_unknown_fields=True)
    json_format.ParseDict(cast(Any, record.history or []), msg.history)
    _set_timestamp(msg, "created_at", record.created_at)
    _set_timestamp(msg, "updated_at", record.updated_at)
    return msg


# --------------------------------------------------------------------------- prediction audit


def audit_batch_from_proto(msg: resources_pb2.PredictionAuditBatch) -> PredictionAuditBatch:
    fields = {name: array_from_proto(arr, field=f"batch.fields[{name}]") for name, arr in msg.fields.items()}
    return PredictionAuditBatch(dates=list(msg.dates), symbols=list(msg.symbols), fields=fields)


def audit_row_to_proto(record: PredictionAuditRecord) -> resources_pb2.PredictionAuditRow:
    msg = resources_pb2.PredictionAuditRow(date=record.date.isoformat(), symbol=record.symbol)
    for name in ("prediction", "realized_return", "target_weight", "held_weight", "pnl_contribution"):
        value = getattr(record, name)
        if value is not None:
            setattr(msg, name, value)
    return msg


# --------------------------------------------------------------------------- backtest results


def backtest_from_proto(msg: pb.BacktestRecord) -> BacktestResultRecord:
    values: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    conventions: dict[str, Any] = {}
    if msg.HasField("metrics"):
        values, reasons, conventions = metricset_from_proto(msg.metrics)
    return BacktestResultRecord(
        backtest_id=parse_uuid(msg.backtest_id, "result.backtest_id"),
        symbol=msg.symbol,
        strategy_type=msg.strategy_type,
        backtest_date=_timestamp(msg, "backtest_date"),
        start_date=parse_date(msg.start_date, "result.start_date"),
        end_date=parse_date(msg.end_date, "result.end_date"),
        initial_capital=msg.initial_capital or None,
        fees=msg.fees,
        slippage=msg.slippage,
        parameters=struct_to_dict(msg.parameters) if msg.HasField("parameters") else None,
        metrics=values,
        metric_reasons=reasons,
        conventions=conventions,
        dates=[parse_date(d, f"result.dates[{i}]") for i, d in enumerate(msg.dates)],
        equity_curve=array_from_proto(msg.equity_curve, field="result.equity_curve")
        if msg.HasField("equity_curve")
        else None,
        drawdown_series=array_from_proto(msg.drawdown_series, field="result.drawdown_series")
        if msg.HasField("drawdown_series")
        else None,
        execution_time_seconds=msg.execution_time_seconds,
        data_points=msg.data_points,
        status=msg.status or "completed",
        error_message=_opt(msg.error_message),
        notes=_opt(msg.notes),
    )


def backtest_to_proto(record: BacktestResultRecord) -> pb.BacktestRecord:
    msg = pb.BacktestRecord(
        backtest_id=str(record.backtest_id or ""),
        symbol=record.symbol,
        strategy_type=record.strategy_type,
        start_date=record.start_date.isoformat(),
        end_date=record.end_date.isoformat(),
        initial_capital=record.initial_capital or 0.0,
        fees=record.fees or 0.0,
        slippage=record.slippage or 0.0,
        execution_time_seconds=record.execution_time_seconds or 0.0,
        data_points=record.data_points or 0,
        status=record.status or "",
        error_message=record.error_message or "",
        notes=record.notes or "",
        dates=[d.isoformat() for d in record.dates or []],
    )
    if record.parameters is not None:
        msg.parameters.CopyFrom(struct_from_dict(record.parameters))
    msg.metrics.CopyFrom(metricset_to_proto(record.metrics, record.metric_reasons, record.conventions))
    if record.equity_curve is not None:
        msg.equity_curve.CopyFrom(array_to_proto(record.equity_curve))
    if record.drawdown_series is not None:
        msg.drawdown_series.CopyFrom(array_to_proto(record.drawdown_series))
    _set_timestamp(msg, "backtest_date", record.backtest_date)
    _set_timestamp(msg, "created_at", record.created_at)
    _set_timestamp(msg, "updated_at", record.updated_at)
    return msg


def trade_from_proto(msg: resources_pb2.Trade, index: int) -> TradeRecord:
    path = f"trades[{index}]"
    exit_date = parse_date(msg.exit_date, f"{path}.exit_date") if msg.exit_date else None
    return TradeRecord(
        trade_number=msg.trade_number,
        direction=msg.direction,
        entry_date=parse_date(msg.entry_date, f"{path}.entry_date"),
        entry_price=msg.entry_price,
        symbol=_opt(msg.symbol),
        exit_date=exit_date,
        exit_price=msg.exit_price if exit_date is not None else None,
        position_size=msg.position_size,
        pnl=msg.pnl,
        pnl_percent=msg.pnl_percent,
        mae=msg.mae,
        mfe=msg.mfe,
        duration_bars=msg.duration_bars,
        duration_days=msg.duration_days,
        exit_reason=_opt(msg.exit_reason),
        fees_paid=msg.fees_paid,
        slippage_cost=msg.slippage_cost,
    )


def trade_to_proto(record: TradeRecord) -> resources_pb2.Trade:
    return resources_pb2.Trade(
        trade_number=record.trade_number,
        symbol=record.symbol or "",
        direction=record.direction,
        entry_date=record.entry_date.isoformat(),
        entry_price=record.entry_price,
        exit_date=record.exit_date.isoformat() if record.exit_date else "",
        exit_price=record.exit_price or 0.0,
        position_size=record.position_size or 0.0,
        pnl=record.pnl or 0.0,
        pnl_percent=record.pnl_percent or 0.0,
        mae=record.mae or 0.0,
        mfe=record.mfe or 0.0,
        duration_bars=record.duration_bars or 0,
        duration_days=record.duration_days or 0,
        exit_reason=record.exit_reason or "",
        fees_paid=record.fees_paid or 0.0,
        slippage_cost=record.slippage_cost or 0.0,
    )


# --------------------------------------------------------------------------- catalog records


def _optional(msg: Message, name: str) -> Any:
    """The value of an `optional` proto field, None when unset."""
    return getattr(msg, name) if msg.HasField(name) else None


def _set_optional(msg: Message, record: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(record, name)
        if value is not None:
            setattr(msg, name, value)


_OPTIMIZATION_OPTIONALS = (
    "objective_value",
    "total_return",
    "sharpe_ratio",
    "max_drawdown",
    "win_rate",
    "profit_factor",
    "total_trades",
    "rank",
    "p_value",
)
_WALK_FORWARD_OPTIONALS = (
    "training_performance",
    "out_of_sample_return",
    "out_of_sample_sharpe",
    "out_of_sample_drawdown",
    "out_of_sample_trades",
    "performance_ratio",
    "degradation_factor",
    "is_profitable",
)
_PORTFOLIO_OPTIONALS = (
    "max_positions",
    "portfolio_stop_loss",
    "max_sector_allocation",
    "correlation_threshold",
)


def optimization_from_proto(msg: pb.OptimizationRecord, index: int) -> OptimizationResultRecord:
    path = f"results[{index}]"
    return OptimizationResultRecord(
        optimization_id=parse_uuid(msg.optimization_id, f"{path}.optimization_id"),
        backtest_id=parse_uuid(msg.backtest_id, f"{path}.backtest_id", required=True),
        optimization_date=_timestamp(msg, "optimization_date"),
        parameter_set=msg.parameter_set,
        parameters=struct_to_dict(msg.parameters) if msg.HasField("parameters") else None,
        objective_function=_opt(msg.objective_function),
        is_statistically_significant=msg.is_statistically_significant,
        **{name: _optional(msg, name) for name in _OPTIMIZATION_OPTIONALS},
    )


def optimization_to_proto(record: OptimizationResultRecord) -> pb.OptimizationRecord:
    msg = pb.OptimizationRecord(
        optimization_id=str(record.optimization_id or ""),
        backtest_id=str(record.backtest_id or ""),
        parameter_set=record.parameter_set,
        objective_function=record.objective_function or "",
        is_statistically_significant=record.is_statistically_significant,
    )
    _set_optional(msg, record, _OPTIMIZATION_OPTIONALS)
    msg.parameters.CopyFrom(struct_from_dict(record.parameters or {}))
    _set_timestamp(msg, "optimization_date", record.optimization_date)
    _set_timestamp(msg, "created_at", record.created_at)
    return msg


def walk_forward_from_proto(msg: pb.WalkForwardRecord, index: int) -> WalkForwardTestRecord:
    path = f"windows[{index}]"
    return WalkForwardTestRecord(
        walk_forward_id=parse_uuid(msg.walk_forward_id, f"{path}.walk_forward_id"),
        parent_backtest_id=parse_uuid(msg.parent_backtest_id, f"{path}.parent_backtest_id", required=True),
        test_date=_timestamp(msg, "test_date"),
        window_size_months=msg.window_size_months,
        step_size_months=msg.step_size_months,
        training_start=parse_date(msg.training_start, f"{path}.training_start"),
        training_end=parse_date(msg.training_end, f"{path}.training_end"),
        test_period_start=parse_date(msg.test_period_start, f"{path}.test_period_start"),
        test_period_end=parse_date(msg.test_period_end, f"{path}.test_period_end"),
        optimal_parameters=(
            struct_to_dict(msg.optimal_parameters) if msg.HasField("optimal_parameters") else None
        ),
        is_statistically_significant=msg.is_statistically_significant,
        **{name: _optional(msg, name) for name in _WALK_FORWARD_OPTIONALS},
    )


def walk_forward_to_proto(record: WalkForwardTestRecord) -> pb.WalkForwardRecord:
    msg = pb.WalkForwardRecord(
        walk_forward_id=str(record.walk_forward_id or ""),
        parent_backtest_id=str(record.parent_backtest_id or ""),
        window_size_months=record.window_size_months,
        step_size_months=record.step_size_months,
        training_start=record.training_start.isoformat(),
        training_end=record.training_end.isoformat(),
        test_period_start=record.test_period_start.isoformat(),
        test_period_end=record.test_period_end.isoformat(),
        is_statistically_significant=record.is_statistically_significant,
    )
    _set_optional(msg, record, _WALK_FORWARD_OPTIONALS)
    if record.optimal_parameters is not None:
        msg.optimal_parameters.CopyFrom(struct_from_dict(record.optimal_parameters))
    _set_timestamp(msg, "test_date", record.test_date)
    _set_timestamp(msg, "created_at", record.created_at)
    return msg


def portfolio_from_proto(msg: pb.PortfolioRecord) -> PortfolioBacktestRecord:
    values: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    conventions: dict[str, Any] = {}
    if msg.HasField("metrics"):
        values, reasons, conventions = metricset_from_proto(msg.metrics)
    return PortfolioBacktestRecord(
        portfolio_backtest_id=parse_uuid(msg.portfolio_backtest_id, "portfolio.portfolio_backtest_id"),
        portfolio_name=msg.portfolio_name,
        description=_opt(msg.description),
        backtest_date=_timestamp(msg, "backtest_date"),
        start_date=parse_date(msg.start_date, "portfolio.start_date"),
        end_date=parse_date(msg.end_date, "portfolio.end_date"),
        symbols=list(msg.symbols),
        weights=struct_to_dict(msg.weights) if msg.HasField("weights") else None,
        rebalance_frequency=_opt(msg.rebalance_frequency),
        initial_capital=msg.initial_capital or None,
        position_sizing_method=_opt(msg.position_sizing_method),
        metrics=values,
        metric_reasons=reasons,
        conventions=conventions,
        component_backtest_ids=list(msg.component_backtest_ids),
        dates=[parse_date(d, f"portfolio.dates[{i}]") for i, d in enumerate(msg.dates)],
        equity_curve=array_from_proto(msg.equity_curve, field="portfolio.equity_curve")
        if msg.HasField("equity_curve")
        else None,
        weights_history=array_from_proto(msg.weights_history, field="portfolio.weights_history")
        if msg.HasField("weights_history")
        else None,
        status=msg.status or "completed",
        notes=_opt(msg.notes),
        **{name: _optional(msg, name) for name in _PORTFOLIO_OPTIONALS},
    )


def portfolio_to_proto(record: PortfolioBacktestRecord) -> pb.PortfolioRecord:
    msg = pb.PortfolioRecord(
        portfolio_backtest_id=str(record.portfolio_backtest_id or ""),
        portfolio_name=record.portfolio_name,
        description=record.description or "",
        start_date=record.start_date.isoformat(),
        end_date=record.end_date.isoformat(),
        symbols=list(record.symbols),
        rebalance_frequency=record.rebalance_frequency or "",
        initial_capital=record.initial_capital or 0.0,
        position_sizing_method=record.position_sizing_method or "",
        component_backtest_ids=[str(c) for c in record.component_backtest_ids],
        dates=[d.isoformat() for d in record.dates or []],
        status=record.status or "",
        notes=record.notes or "",
    )
    _set_optional(msg, record, _PORTFOLIO_OPTIONALS)
    if record.weights is not None:
        msg.weights.CopyFrom(struct_from_dict(record.weights))
    msg.metrics.CopyFrom(metricset_to_proto(record.metrics, record.metric_reasons, record.conventions))
    if record.equity_curve is not None:
        msg.equity_curve.CopyFrom(array_to_proto(record.equity_curve))
    if record.weights_history is not None:
        msg.weights_history.CopyFrom(array_to_proto(record.weights_history))
    _set_timestamp(msg, "backtest_date", record.backtest_date)
    _set_timestamp(msg, "created_at", record.created_at)
    return msg


def comparison_to_proto(record: MetricComparisonRecord) -> pb.MetricComparison:
    msg = pb.MetricComparison(
        metric=record.metric, backtest_id=str(record.backtest_id), higher_is_better=record.higher_is_better
    )
    if record.value is not None:
        msg.value = record.value
    if record.rank is not None:
        msg.rank = record.rank
    return msg


def performance_group_to_proto(record: PerformanceGroupRecord) -> pb.PerformanceGroup:
    msg = pb.PerformanceGroup(key=record.key, count=record.count, total_trades=record.total_trades)
    _set_optional(
        msg,
        record,
        ("avg_total_return", "avg_sharpe_ratio", "best_sharpe_ratio", "avg_max_drawdown", "avg_win_rate"),
    )
    return msg


# --------------------------------------------------------------------------- servicer


class PersistenceServicer(pb_grpc.PersistenceServiceServicer):
    """`PersistenceService` over a `CatalogRepository`."""

    def __init__(self, repository: CatalogRepository) -> None:
        self.repository = repository

    # runs
    def CreateAlphaBacktestRun(
        self, request: pb.CreateAlphaBacktestRunRequest, context: Any
    ) -> pb.CreateAlphaBacktestRunResponse:
        run, created = self.repository.create_alpha_backtest_run(
            run_from_proto(request.run), request_id=request.request_id or None
        )
        return pb.CreateAlphaBacktestRunResponse(run=run_to_proto(run), created=created)

    def UpdateAlphaBacktestRun(
        self, request: pb.UpdateAlphaBacktestRunRequest, context: Any
    ) -> pb.UpdateAlphaBacktestRunResponse:
        from alphaswarm_persistence.repo_fencing import fence

        changes = run_changes_from_proto(request.run, list(request.update_mask.paths))
        guard = fence(request.fencing_token) if request.HasField("fencing_token") else None
        run = self.repository.update_alpha_backtest_run(request.run.run_id, changes, guard=guard)
        return pb.UpdateAlphaBacktestRunResponse(run=run_to_proto(run))

    def GetAlphaBacktestRun(
        self, request: pb.GetAlphaBacktestRunRequest, context: Any
    ) -> pb.GetAlphaBacktestRunResponse:
        run = self.repository.get_alpha_backtest_run(run_id=request.run_id, task_id=request.task_id)
        return pb.GetAlphaBacktestRunResponse(run=run_to_proto(run))

    def ListAlphaBacktestRuns(
        self, request: pb.ListAlphaBacktestRunsRequest, context: Any
    ) -> pb.ListAlphaBacktestRunsResponse:
        page = self.repository.list_alpha_backtest_runs(
            page_size=request.page_size,
            page_token=request.page_token,
            state=_RUN_STATE_NAMES.get(request.state),
        )
        return pb.ListAlphaBacktestRunsResponse(
            runs=[run_to_proto(r, summary=request.summary) for r in page.items],
            next_page_token=page.next_page_token,
        )

    # deployments
    def SaveDeployment(self, request: pb.SaveDeploymentRequest, context: Any) -> pb.SaveDeploymentResponse:
        expected = (
            request.expected_updated_at.ToDatetime(tzinfo=dt.UTC)
            if request.HasField("expected_updated_at")
            else None
        )
        deployment, created = self.repository.save_deployment(
            deployment_from_proto(request.deployment),
            request_id=request.request_id or None,
            expected_updated_at=expected,
        )
        return pb.SaveDeploymentResponse(deployment=deployment_to_proto(deployment), created=created)

    def GetDeployment(self, request: pb.GetDeploymentRequest, context: Any) -> pb.GetDeploymentResponse:
        return pb.GetDeploymentResponse(
            deployment=deployment_to_proto(self.repository.get_deployment(request.deployment_id))
        )

    def ListDeployments(self, request: pb.ListDeploymentsRequest, context: Any) -> pb.ListDeploymentsResponse:
        page = self.repository.list_deployments(page_size=request.page_size, page_token=request.page_token)
        return pb.ListDeploymentsResponse(
            deployments=[deployment_to_proto(d) for d in page.items], next_page_token=page.next_page_token
        )

    # prediction audit
    def SavePredictionAudit(
        self, request: pb.SavePredictionAuditRequest, context: Any
    ) -> pb.SavePredictionAuditResponse:
        parse_uuid(request.run_id, "run_id", required=True)  # name a bad id before decoding a large batch
        written = self.repository.save_prediction_audit(request.run_id, audit_batch_from_proto(request.batch))
        return pb.SavePredictionAuditResponse(rows_written=written)

    def ListPredictionAudit(
        self, request: pb.ListPredictionAuditRequest, context: Any
    ) -> pb.ListPredictionAuditResponse:
        page = self.repository.list_prediction_audit(
            request.run_id,
            symbol=_opt(request.symbol),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListPredictionAuditResponse(
            rows=[audit_row_to_proto(r) for r in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size or 0,
        )

    def StreamPredictionAudit(
        self, request: pb.StreamPredictionAuditRequest, context: Any
    ) -> Iterator[pb.StreamPredictionAuditResponse]:
        blocks = self.repository.iter_prediction_audit(
            request.run_id,
            rows_per_message=request.rows_per_message,
            date=_opt(request.date),
            symbol=_opt(request.symbol),
        )
        for dates, symbols, fields, total in blocks:
            batch = resources_pb2.PredictionAuditBatch(dates=dates, symbols=symbols)
            for name, values in fields.items():
                batch.fields[name].CopyFrom(array_to_proto(values))
            yield pb.StreamPredictionAuditResponse(batch=batch, total_rows=total)

    # backtest results
    def SaveBacktestResult(
        self, request: pb.SaveBacktestResultRequest, context: Any
    ) -> pb.SaveBacktestResultResponse:
        trades = [trade_from_proto(t, i) for i, t in enumerate(request.trades)]
        backtest_id, created = self.repository.save_backtest_result(
            backtest_from_proto(request.result), trades, request_id=request.request_id or None
        )
        return pb.SaveBacktestResultResponse(backtest_id=str(backtest_id), created=created)

    def GetBacktestResult(
        self, request: pb.GetBacktestResultRequest, context: Any
    ) -> pb.GetBacktestResultResponse:
        record, trades = self.repository.get_backtest_result(
            request.backtest_id, include_trades=request.include_trades
        )
        return pb.GetBacktestResultResponse(
            result=backtest_to_proto(record), trades=[trade_to_proto(t) for t in trades]
        )

    def ListBacktestTrades(
        self, request: pb.ListBacktestTradesRequest, context: Any
    ) -> pb.ListBacktestTradesResponse:
        page, total = self.repository.list_backtest_trades(
            request.backtest_id, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListBacktestTradesResponse(
            trades=[trade_to_proto(t) for t in page.items],
            next_page_token=page.next_page_token,
            total_size=total,
        )

    def ListDatasetTrials(
        self, request: pb.ListDatasetTrialsRequest, context: Any
    ) -> pb.ListDatasetTrialsResponse:
        rows = self.repository.dataset_trials(request.dataset_fingerprint)
        dumps = json.dumps
        return pb.ListDatasetTrialsResponse(
            backtest_ids=[str(r["backtest_id"]) for r in rows],
            symbols=[r["symbol"] for r in rows],
            strategy_types=[r["strategy_type"] for r in rows],
            start_dates=[r["start_date"].isoformat() for r in rows],
            end_dates=[r["end_date"].isoformat() for r in rows],
            parameters_json=[dumps(r["parameters"], allow_nan=False) for r in rows],
            metrics_json=[dumps(_finite_values(r["metrics"])) for r in rows],
            conventions_json=[dumps(r["conventions"], allow_nan=False) for r in rows],
        )

    def ListBacktestResults(
        self, request: pb.ListBacktestResultsRequest, context: Any
    ) -> pb.ListBacktestResultsResponse:
        page = self.repository.list_backtest_results(
            symbol=_opt(request.symbol),
            strategy_type=_opt(request.strategy_type),
            from_date=_opt(request.from_date),
            to_date=_opt(request.to_date),
            status=_opt(request.status),
            dataset_fingerprint=_opt(request.dataset_fingerprint),
            order_by=_opt(request.order_by),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListBacktestResultsResponse(
            results=[backtest_to_proto(r) for r in page.items], next_page_token=page.next_page_token
        )

    def DeleteBacktestResult(
        self, request: pb.DeleteBacktestResultRequest, context: Any
    ) -> pb.DeleteBacktestResultResponse:
        return pb.DeleteBacktestResultResponse(
            deleted=self.repository.delete_backtest_result(request.backtest_id)
        )

    def GetBestBacktest(self, request: pb.GetBestBacktestRequest, context: Any) -> pb.GetBestBacktestResponse:
        record = self.repository.get_best_backtest(
            request.metric,
            min_trades=request.min_trades,
            symbol=_opt(request.symbol),
            strategy_type=_opt(request.strategy_type),
        )
        return pb.GetBestBacktestResponse(result=backtest_to_proto(record))

    def CompareBacktests(
        self, request: pb.CompareBacktestsRequest, context: Any
    ) -> pb.CompareBacktestsResponse:
        comparison = self.repository.compare_backtests(list(request.backtest_ids), list(request.metrics))
        return pb.CompareBacktestsResponse(
            results=[backtest_to_proto(r) for r in comparison.results],
            comparisons=[comparison_to_proto(c) for c in comparison.comparisons],
        )

    def GetPerformanceSummary(
        self, request: pb.GetPerformanceSummaryRequest, context: Any
    ) -> pb.GetPerformanceSummaryResponse:
        summary = self.repository.get_performance_summary(request.days)
        return pb.GetPerformanceSummaryResponse(
            days=summary.days,
            overall=performance_group_to_proto(summary.overall),
            by_symbol=[performance_group_to_proto(g) for g in summary.by_symbol],
            by_strategy=[performance_group_to_proto(g) for g in summary.by_strategy],
        )

    # optimizations
    def SaveOptimizationResults(
        self, request: pb.SaveOptimizationResultsRequest, context: Any
    ) -> pb.SaveOptimizationResultsResponse:
        records = [optimization_from_proto(r, i) for i, r in enumerate(request.results)]
        ids, created = self.repository.save_optimization_results(
            records, request_id=request.request_id or None
        )
        return pb.SaveOptimizationResultsResponse(optimization_ids=[str(i) for i in ids], created=created)

    def ListOptimizationResults(
        self, request: pb.ListOptimizationResultsRequest, context: Any
    ) -> pb.ListOptimizationResultsResponse:
        page = self.repository.list_optimization_results(
            backtest_id=_opt(request.backtest_id), page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListOptimizationResultsResponse(
            results=[optimization_to_proto(r) for r in page.items], next_page_token=page.next_page_token
        )

    def GetOptimizationResult(
        self, request: pb.GetOptimizationResultRequest, context: Any
    ) -> pb.GetOptimizationResultResponse:
        record = self.repository.get_optimization_result(request.optimization_id)
        return pb.GetOptimizationResultResponse(result=optimization_to_proto(record))

    # walk-forward tests
    def SaveWalkForwardTests(
        self, request: pb.SaveWalkForwardTestsRequest, context: Any
    ) -> pb.SaveWalkForwardTestsResponse:
        records = [walk_forward_from_proto(w, i) for i, w in enumerate(request.windows)]
        ids, created = self.repository.save_walk_forward_tests(records, request_id=request.request_id or None)
        return pb.SaveWalkForwardTestsResponse(walk_forward_ids=[str(i) for i in ids], created=created)

    def ListWalkForwardTests(
        self, request: pb.ListWalkForwardTestsRequest, context: Any
    ) -> pb.ListWalkForwardTestsResponse:
        page = self.repository.list_walk_forward_tests(
            parent_backtest_id=_opt(request.parent_backtest_id),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListWalkForwardTestsResponse(
            windows=[walk_forward_to_proto(w) for w in page.items], next_page_token=page.next_page_token
        )

    def GetWalkForwardTest(
        self, request: pb.GetWalkForwardTestRequest, context: Any
    ) -> pb.GetWalkForwardTestResponse:
        record = self.repository.get_walk_forward_test(request.walk_forward_id)
        return pb.GetWalkForwardTestResponse(window=walk_forward_to_proto(record))

    # portfolio backtests
    def SavePortfolioBacktest(
        self, request: pb.SavePortfolioBacktestRequest, context: Any
    ) -> pb.SavePortfolioBacktestResponse:
        pid, created = self.repository.save_portfolio_backtest(
            portfolio_from_proto(request.portfolio), request_id=request.request_id or None
        )
        return pb.SavePortfolioBacktestResponse(portfolio_backtest_id=str(pid), created=created)

    def GetPortfolioBacktest(
        self, request: pb.GetPortfolioBacktestRequest, context: Any
    ) -> pb.GetPortfolioBacktestResponse:
        record = self.repository.get_portfolio_backtest(request.portfolio_backtest_id)
        return pb.GetPortfolioBacktestResponse(portfolio=portfolio_to_proto(record))

    def ListPortfolioBacktests(
        self, request: pb.ListPortfolioBacktestsRequest, context: Any
    ) -> pb.ListPortfolioBacktestsResponse:
        page = self.repository.list_portfolio_backtests(
            portfolio_name=_opt(request.portfolio_name),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListPortfolioBacktestsResponse(
            portfolios=[portfolio_to_proto(p) for p in page.items], next_page_token=page.next_page_token
        )


# --------------------------------------------------------------------------- composition


def service_registration(servicer: PersistenceServicer) -> ServiceRegistration:
    """The registration to pass to `alphaswarm_common.grpc_server.serve`."""
    return ServiceRegistration(
        add=pb_grpc.add_PersistenceServiceServicer_to_server, servicer=servicer, name=SERVICE_NAME
    )


def create_servicer(database_url: str, *, migrate: bool = True) -> PersistenceServicer:
    """Open the catalog at `database_url`, migrate it to the head when asked (embedded mode), and adapt it."""
    if migrate:
        upgrade(database_url)
    return PersistenceServicer(CatalogRepository(Database(database_url)))
