"""Tasks of any kind: create (idempotent by request id), update by field mask, get.

Alpha-backtest runs create their task together with the run (repository
`create_alpha_backtest_run`); backtester jobs create a bare task here, with the
job document in `request` and the produced catalog ids in `result`.
`TaskServicerMixin` adds the three RPCs to `PersistenceServicer`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from sqlalchemy.orm import Session

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm_common.errors import FailedPrecondition, InvalidArgument, NotFound
from alphaswarm_common.protoconv import (
    RUN_STATE_NAMES,
    TERMINAL_RUN_STATES,
    struct_from_dict,
    timestamp_from_datetime,
)
from alphaswarm_persistence.models import TaskRow
from alphaswarm_persistence.repository import CatalogRepository, _fingerprint, parse_uuid

__all__ = ["TaskServicerMixin", "TaskStore"]

STATES = {k: v for k, v in RUN_STATE_NAMES.items() if k != resources_pb2.RUN_STATE_UNSPECIFIED}
STATE_CODES: dict[str, Any] = {v: k for k, v in STATES.items()}
TERMINAL = {RUN_STATE_NAMES[state] for state in TERMINAL_RUN_STATES}
UPDATABLE = {"state", "stage", "pct", "result", "error"}


def _error_dict(msg: resources_pb2.ErrorDetail) -> dict[str, Any] | None:
    if not msg.code and not msg.message:
        return None
    return {
        "stage": msg.stage or None,
        "code": msg.code or None,
        "message": msg.message or None,
        "field": msg.field or None,
    }


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def task_to_proto(row: TaskRow) -> resources_pb2.Task:
    msg = resources_pb2.Task(
        task_id=str(row.task_id),
        kind=row.kind,
        state=STATE_CODES.get(row.state, resources_pb2.RUN_STATE_UNSPECIFIED),
        stage=row.stage or "",
        pct=float(row.pct or 0.0),
    )
    if row.request is not None:
        msg.request.CopyFrom(struct_from_dict(row.request))
    if row.result is not None:
        msg.result.CopyFrom(struct_from_dict(row.result))
    if row.error:
        msg.error.CopyFrom(resources_pb2.ErrorDetail(**{k: v for k, v in row.error.items() if v}))
    msg.created_at.CopyFrom(timestamp_from_datetime(_utc(row.created_at)))
    msg.updated_at.CopyFrom(timestamp_from_datetime(_utc(row.updated_at)))
    return msg


class TaskStore:
    def __init__(self, repository: CatalogRepository) -> None:
        self.repository = repository

    def create(self, task: resources_pb2.Task, request_id: str | None) -> tuple[resources_pb2.Task, bool]:
        if not task.kind:
            raise InvalidArgument("kind is required", field="task.kind")
        if len(task.kind) > 50:
            raise InvalidArgument("kind is longer than 50 characters", field="task.kind")
        task_id = parse_uuid(task.task_id, "task.task_id") if task.task_id else None
        state = STATES.get(task.state, "pending")
        request = json_format.MessageToDict(task.request) if task.HasField("request") else None

        def create(s: Session, eid: uuid.UUID) -> tuple[resources_pb2.Task, bool]:
            row = TaskRow(
                task_id=eid,
                kind=task.kind,
                state=state,
                stage=task.stage or None,
                pct=task.pct,
                request=request,
            )
            s.add(row)
            s.flush()
            s.refresh(row)
            return task_to_proto(row), True

        def load(s: Session, eid: uuid.UUID) -> resources_pb2.Task | None:
            row = s.get(TaskRow, eid)
            return task_to_proto(row) if row is not None else None

        # The SHA-256 of the canonical request (the key table holds 64 hex characters).
        fingerprint = _fingerprint("task", json_format.MessageToDict(task, preserving_proto_field_name=True))
        return self.repository._idempotent("task", request_id, fingerprint, task_id, create, load)

    def update(
        self,
        task: resources_pb2.Task,
        paths: list[str],
        *,
        guard: Callable[[Session, uuid.UUID], None] | None = None,
    ) -> resources_pb2.Task:
        tid = parse_uuid(task.task_id, "task.task_id")
        if tid is None:
            raise InvalidArgument("task_id is required", field="task.task_id")
        unknown = sorted(set(paths) - UPDATABLE)
        if unknown or not paths:
            raise InvalidArgument(
                f"update_mask must name some of {sorted(UPDATABLE)}; got {unknown or 'nothing'}",
                field="update_mask",
            )
        with self.repository.db.session(write=True) as s:
            row = s.get(TaskRow, tid)
            if row is None:
                raise NotFound(f"task {tid} does not exist", field="task.task_id")
            if guard is not None:
                guard(s, tid)
            if "state" in paths and row.state in TERMINAL and STATES.get(task.state) != row.state:
                raise FailedPrecondition(f"task {tid} already ended {row.state}", field="task.state")
            if "state" in paths:
                if task.state not in STATES:
                    raise InvalidArgument("state must be set", field="task.state")
                row.state = STATES[task.state]
            if "stage" in paths:
                row.stage = task.stage or None
            if "pct" in paths:
                if not 0 <= task.pct <= 100:
                    raise InvalidArgument("pct must lie in [0, 100]", field="task.pct")
                row.pct = task.pct
            if "result" in paths:
                row.result = json_format.MessageToDict(task.result) if task.HasField("result") else None
            if "error" in paths:
                row.error = _error_dict(task.error)
            row.updated_at = dt.datetime.now(dt.UTC)
            s.flush()
            s.refresh(row)
            return task_to_proto(row)

    def get(self, task_id: str) -> resources_pb2.Task:
        tid = parse_uuid(task_id, "task_id")
        if tid is None:
            raise InvalidArgument("task_id is required", field="task_id")
        with self.repository.db.session() as s:
            row = s.get(TaskRow, tid)
            if row is None:
                raise NotFound(f"task {tid} does not exist", field="task_id")
            return task_to_proto(row)


class TaskServicerMixin:
    """CreateTask, UpdateTask and GetTask for a servicer holding `self.repository`."""

    repository: CatalogRepository

    def CreateTask(self, request: pb.CreateTaskRequest, context: Any) -> pb.CreateTaskResponse:
        task, created = TaskStore(self.repository).create(request.task, request.request_id or None)
        return pb.CreateTaskResponse(task=task, created=created)

    def UpdateTask(self, request: pb.UpdateTaskRequest, context: Any) -> pb.UpdateTaskResponse:
        from alphaswarm_persistence.repo_fencing import fence

        guard = fence(request.fencing_token) if request.HasField("fencing_token") else None
        return pb.UpdateTaskResponse(
            task=TaskStore(self.repository).update(request.task, list(request.update_mask.paths), guard=guard)
        )

    def GetTask(self, request: pb.GetTaskRequest, context: Any) -> pb.GetTaskResponse:
        return pb.GetTaskResponse(task=TaskStore(self.repository).get(request.task_id))
