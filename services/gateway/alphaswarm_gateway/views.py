"""JSON views of the gateway's resources (REST bodies and CLI output)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from alphaswarm.common.v1 import resources_pb2
from alphaswarm_common.config import AlphaBacktestConfig
from alphaswarm_common.events import ProgressEvent
from alphaswarm_common.protoconv import (
    RUN_STATE_NAMES,
    config_from_proto,
    struct_to_dict,
    timestamp_from_datetime,
    timestamp_to_datetime,
)

STATE_NAMES = RUN_STATE_NAMES


def _ts(ts: Any) -> str | None:
    value = timestamp_to_datetime(ts)
    return value.isoformat() if value else None


def stream_url(task_id: str) -> str:
    return f"/chat/stream/{task_id}"


def task_accepted(run: resources_pb2.AlphaBacktestRun) -> dict[str, Any]:
    return {
        "task_id": run.task_id,
        "run_id": run.run_id,
        "status": STATE_NAMES[run.state],
        "stream_url": stream_url(run.task_id),
    }


def run_view(run: resources_pb2.AlphaBacktestRun) -> dict[str, Any]:
    config = (
        config_from_proto(run.config, AlphaBacktestConfig).model_dump(mode="json")
        if run.HasField("config")
        else None
    )
    combined = struct_to_dict(run.combined_metrics) if run.HasField("combined_metrics") else None
    error = None
    if run.HasField("error") and run.error.code:
        error = {
            "stage": run.error.stage,
            "code": run.error.code,
            "message": run.error.message,
            "field": run.error.field or None,
        }
    return {
        "run_id": run.run_id,
        "task_id": run.task_id,
        "run_name": run.run_name,
        "status": STATE_NAMES[run.state],
        "stage": run.stage,
        "config": config,
        "links": {
            "model_name": run.model_name or None,
            "model_version": run.model_version or None,
            "deployment_id": run.deployment_id or None,
            "mlflow_parent_run_id": run.mlflow_parent_run_id or None,
            "mlflow_train_run_id": run.mlflow_train_run_id or None,
            "mlflow_backtest_run_id": run.mlflow_backtest_run_id or None,
            "backtest_id": run.backtest_id or None,
            "stream_url": stream_url(run.task_id),
        },
        "combined_metrics": combined,
        "error": error,
        "predictions_captured": run.predictions_captured,
        "trace_id": run.trace_id or None,
        "created_at": _ts(run.created_at),
        "started_at": _ts(run.started_at),
        "finished_at": _ts(run.finished_at),
        "duration_seconds": run.duration_seconds or None,
    }


def event_to_proto(event: ProgressEvent) -> resources_pb2.ProgressEvent:
    from alphaswarm_common.protoconv import struct_from_dict

    msg = resources_pb2.ProgressEvent(
        task_id=event.task_id,
        seq=event.seq,
        stage=event.stage,
        status=event.status,
        pct=event.pct,
        message=event.message,
        data=struct_from_dict(event.data),
    )
    msg.ts.CopyFrom(timestamp_from_datetime(event.ts))
    return msg


def audit_row_view(row: resources_pb2.PredictionAuditRow) -> dict[str, Any]:
    doc = json_format.MessageToDict(row, preserving_proto_field_name=True)
    for key in ("prediction", "realized_return", "target_weight", "held_weight", "pnl_contribution"):
        doc.setdefault(key, None)
    return doc
