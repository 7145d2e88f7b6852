import datetime

from alphaswarm.common.v1 import arrays_pb2 as _arrays_pb2
from alphaswarm.common.v1 import resources_pb2 as _resources_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClaimOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLAIM_OUTCOME_UNSPECIFIED: _ClassVar[ClaimOutcome]
    CLAIM_OUTCOME_CLAIMED: _ClassVar[ClaimOutcome]
    CLAIM_OUTCOME_TERMINAL: _ClassVar[ClaimOutcome]
    CLAIM_OUTCOME_HELD: _ClassVar[ClaimOutcome]
    CLAIM_OUTCOME_EXHAUSTED: _ClassVar[ClaimOutcome]

class ReapAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REAP_ACTION_UNSPECIFIED: _ClassVar[ReapAction]
    REAP_ACTION_REQUEUE: _ClassVar[ReapAction]
    REAP_ACTION_EXHAUSTED: _ClassVar[ReapAction]
CLAIM_OUTCOME_UNSPECIFIED: ClaimOutcome
CLAIM_OUTCOME_CLAIMED: ClaimOutcome
CLAIM_OUTCOME_TERMINAL: ClaimOutcome
CLAIM_OUTCOME_HELD: ClaimOutcome
CLAIM_OUTCOME_EXHAUSTED: ClaimOutcome
REAP_ACTION_UNSPECIFIED: ReapAction
REAP_ACTION_REQUEUE: ReapAction
REAP_ACTION_EXHAUSTED: ReapAction

class TaskLease(_message.Message):
    __slots__ = ("task_id", "owner", "fencing_token", "attempts", "expires_at", "stage_outputs")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    STAGE_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    owner: str
    fencing_token: int
    attempts: int
    expires_at: _timestamp_pb2.Timestamp
    stage_outputs: _struct_pb2.Struct
    def __init__(self, task_id: _Optional[str] = ..., owner: _Optional[str] = ..., fencing_token: _Optional[int] = ..., attempts: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stage_outputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ClaimTaskRequest(_message.Message):
    __slots__ = ("task_id", "owner", "lease_seconds", "max_attempts")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    owner: str
    lease_seconds: float
    max_attempts: int
    def __init__(self, task_id: _Optional[str] = ..., owner: _Optional[str] = ..., lease_seconds: _Optional[float] = ..., max_attempts: _Optional[int] = ...) -> None: ...

class ClaimTaskResponse(_message.Message):
    __slots__ = ("outcome", "lease", "task")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    outcome: ClaimOutcome
    lease: TaskLease
    task: _resources_pb2.Task
    def __init__(self, outcome: _Optional[_Union[ClaimOutcome, str]] = ..., lease: _Optional[_Union[TaskLease, _Mapping]] = ..., task: _Optional[_Union[_resources_pb2.Task, _Mapping]] = ...) -> None: ...

class RenewTaskLeaseRequest(_message.Message):
    __slots__ = ("task_id", "fencing_token", "lease_seconds")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    fencing_token: int
    lease_seconds: float
    def __init__(self, task_id: _Optional[str] = ..., fencing_token: _Optional[int] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class RenewTaskLeaseResponse(_message.Message):
    __slots__ = ("lease",)
    LEASE_FIELD_NUMBER: _ClassVar[int]
    lease: TaskLease
    def __init__(self, lease: _Optional[_Union[TaskLease, _Mapping]] = ...) -> None: ...

class ReleaseTaskLeaseRequest(_message.Message):
    __slots__ = ("task_id", "fencing_token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    fencing_token: int
    def __init__(self, task_id: _Optional[str] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class ReleaseTaskLeaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: _Optional[bool] = ...) -> None: ...

class RecordStageOutputRequest(_message.Message):
    __slots__ = ("task_id", "fencing_token", "stage", "output")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    fencing_token: int
    stage: str
    output: _struct_pb2.Struct
    def __init__(self, task_id: _Optional[str] = ..., fencing_token: _Optional[int] = ..., stage: _Optional[str] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class RecordStageOutputResponse(_message.Message):
    __slots__ = ("lease",)
    LEASE_FIELD_NUMBER: _ClassVar[int]
    lease: TaskLease
    def __init__(self, lease: _Optional[_Union[TaskLease, _Mapping]] = ...) -> None: ...

class ReapTasksRequest(_message.Message):
    __slots__ = ("owner", "hold_seconds", "pending_grace_seconds", "max_attempts", "limit")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    HOLD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PENDING_GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    owner: str
    hold_seconds: float
    pending_grace_seconds: float
    max_attempts: int
    limit: int
    def __init__(self, owner: _Optional[str] = ..., hold_seconds: _Optional[float] = ..., pending_grace_seconds: _Optional[float] = ..., max_attempts: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ReapedTask(_message.Message):
    __slots__ = ("task", "run_id", "action", "lease")
    TASK_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    task: _resources_pb2.Task
    run_id: str
    action: ReapAction
    lease: TaskLease
    def __init__(self, task: _Optional[_Union[_resources_pb2.Task, _Mapping]] = ..., run_id: _Optional[str] = ..., action: _Optional[_Union[ReapAction, str]] = ..., lease: _Optional[_Union[TaskLease, _Mapping]] = ...) -> None: ...

class ReapTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[ReapedTask]
    def __init__(self, tasks: _Optional[_Iterable[_Union[ReapedTask, _Mapping]]] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id", "message")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    message: str
    def __init__(self, task_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("task", "previous_owner", "run_id")
    TASK_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_OWNER_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    task: _resources_pb2.Task
    previous_owner: str
    run_id: str
    def __init__(self, task: _Optional[_Union[_resources_pb2.Task, _Mapping]] = ..., previous_owner: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class DeleteUnclaimedTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class DeleteUnclaimedTaskResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class CreateTaskRequest(_message.Message):
    __slots__ = ("task", "request_id")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    task: _resources_pb2.Task
    request_id: str
    def __init__(self, task: _Optional[_Union[_resources_pb2.Task, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateTaskResponse(_message.Message):
    __slots__ = ("task", "created")
    TASK_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    task: _resources_pb2.Task
    created: bool
    def __init__(self, task: _Optional[_Union[_resources_pb2.Task, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class UpdateTaskRequest(_message.Message):
    __slots__ = ("task", "update_mask", "fencing_token")
    TASK_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    task: _resources_pb2.Task
    update_mask: _field_mask_pb2.FieldMask
    fencing_token: int
    def __init__(self, task: _Optional[_Union[_resources_pb2.Task, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class UpdateTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _resources_pb2.Task
    def __init__(self, task: _Optional[_Union[_resources_pb2.Task, _Mapping]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _resources_pb2.Task
    def __init__(self, task: _Optional[_Union[_resources_pb2.Task, _Mapping]] = ...) -> None: ...

class CreateAlphaBacktestRunRequest(_message.Message):
    __slots__ = ("run", "request_id")
    RUN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    run: _resources_pb2.AlphaBacktestRun
    request_id: str
    def __init__(self, run: _Optional[_Union[_resources_pb2.AlphaBacktestRun, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateAlphaBacktestRunResponse(_message.Message):
    __slots__ = ("run", "created")
    RUN_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    run: _resources_pb2.AlphaBacktestRun
    created: bool
    def __init__(self, run: _Optional[_Union[_resources_pb2.AlphaBacktestRun, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class UpdateAlphaBacktestRunRequest(_message.Message):
    __slots__ = ("run", "update_mask", "fencing_token")
    RUN_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    run: _resources_pb2.AlphaBacktestRun
    update_mask: _field_mask_pb2.FieldMask
    fencing_token: int
    def __init__(self, run: _Optional[_Union[_resources_pb2.AlphaBacktestRun, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class UpdateAlphaBacktestRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: _resources_pb2.AlphaBacktestRun
    def __init__(self, run: _Optional[_Union[_resources_pb2.AlphaBacktestRun, _Mapping]] = ...) -> None: ...

class GetAlphaBacktestRunRequest(_message.Message):
    __slots__ = ("run_id", "task_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    task_id: str
    def __init__(self, run_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class GetAlphaBacktestRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: _resources_pb2.AlphaBacktestRun
    def __init__(self, run: _Optional[_Union[_resources_pb2.AlphaBacktestRun, _Mapping]] = ...) -> None: ...

class ListAlphaBacktestRunsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state", "summary")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: _resources_pb2.RunState
    summary: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[_resources_pb2.RunState, str]] = ..., summary: _Optional[bool] = ...) -> None: ...

class ListAlphaBacktestRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[_resources_pb2.AlphaBacktestRun]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[_resources_pb2.AlphaBacktestRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SaveDeploymentRequest(_message.Message):
    __slots__ = ("deployment", "request_id", "expected_updated_at")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    deployment: _resources_pb2.Deployment
    request_id: str
    expected_updated_at: _timestamp_pb2.Timestamp
    def __init__(self, deployment: _Optional[_Union[_resources_pb2.Deployment, _Mapping]] = ..., request_id: _Optional[str] = ..., expected_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SaveDeploymentResponse(_message.Message):
    __slots__ = ("deployment", "created")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    deployment: _resources_pb2.Deployment
    created: bool
    def __init__(self, deployment: _Optional[_Union[_resources_pb2.Deployment, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetDeploymentRequest(_message.Message):
    __slots__ = ("deployment_id",)
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    def __init__(self, deployment_id: _Optional[str] = ...) -> None: ...

class GetDeploymentResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: _resources_pb2.Deployment
    def __init__(self, deployment: _Optional[_Union[_resources_pb2.Deployment, _Mapping]] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments", "next_page_token")
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Deployment]
    next_page_token: str
    def __init__(self, deployments: _Optional[_Iterable[_Union[_resources_pb2.Deployment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ModelArtifactTrust(_message.Message):
    __slots__ = ("model_name", "version", "artifact_uri", "sha256", "hmac", "serialization_format", "registered_at", "registered_by")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_URI_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    HMAC_FIELD_NUMBER: _ClassVar[int]
    SERIALIZATION_FORMAT_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_BY_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    artifact_uri: str
    sha256: str
    hmac: str
    serialization_format: str
    registered_at: _timestamp_pb2.Timestamp
    registered_by: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., artifact_uri: _Optional[str] = ..., sha256: _Optional[str] = ..., hmac: _Optional[str] = ..., serialization_format: _Optional[str] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., registered_by: _Optional[str] = ...) -> None: ...

class RecordModelArtifactTrustRequest(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: ModelArtifactTrust
    def __init__(self, record: _Optional[_Union[ModelArtifactTrust, _Mapping]] = ...) -> None: ...

class RecordModelArtifactTrustResponse(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: ModelArtifactTrust
    def __init__(self, record: _Optional[_Union[ModelArtifactTrust, _Mapping]] = ...) -> None: ...

class GetModelArtifactTrustRequest(_message.Message):
    __slots__ = ("model_name", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class GetModelArtifactTrustResponse(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: ModelArtifactTrust
    def __init__(self, record: _Optional[_Union[ModelArtifactTrust, _Mapping]] = ...) -> None: ...

class SavePredictionAuditRequest(_message.Message):
    __slots__ = ("run_id", "batch")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    batch: _resources_pb2.PredictionAuditBatch
    def __init__(self, run_id: _Optional[str] = ..., batch: _Optional[_Union[_resources_pb2.PredictionAuditBatch, _Mapping]] = ...) -> None: ...

class SavePredictionAuditResponse(_message.Message):
    __slots__ = ("rows_written",)
    ROWS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    rows_written: int
    def __init__(self, rows_written: _Optional[int] = ...) -> None: ...

class ListPredictionAuditRequest(_message.Message):
    __slots__ = ("run_id", "symbol", "page_size", "page_token")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    symbol: str
    page_size: int
    page_token: str
    def __init__(self, run_id: _Optional[str] = ..., symbol: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPredictionAuditResponse(_message.Message):
    __slots__ = ("rows", "next_page_token", "total_size")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[_resources_pb2.PredictionAuditRow]
    next_page_token: str
    total_size: int
    def __init__(self, rows: _Optional[_Iterable[_Union[_resources_pb2.PredictionAuditRow, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class StreamPredictionAuditRequest(_message.Message):
    __slots__ = ("run_id", "rows_per_message", "date", "symbol")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_PER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    rows_per_message: int
    date: str
    symbol: str
    def __init__(self, run_id: _Optional[str] = ..., rows_per_message: _Optional[int] = ..., date: _Optional[str] = ..., symbol: _Optional[str] = ...) -> None: ...

class StreamPredictionAuditResponse(_message.Message):
    __slots__ = ("batch", "total_rows")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROWS_FIELD_NUMBER: _ClassVar[int]
    batch: _resources_pb2.PredictionAuditBatch
    total_rows: int
    def __init__(self, batch: _Optional[_Union[_resources_pb2.PredictionAuditBatch, _Mapping]] = ..., total_rows: _Optional[int] = ...) -> None: ...

class BacktestRecord(_message.Message):
    __slots__ = ("backtest_id", "symbol", "strategy_type", "backtest_date", "start_date", "end_date", "initial_capital", "fees", "slippage", "parameters", "metrics", "dates", "equity_curve", "drawdown_series", "execution_time_seconds", "data_points", "status", "error_message", "notes", "created_at", "updated_at")
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_TYPE_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_DATE_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_CAPITAL_FIELD_NUMBER: _ClassVar[int]
    FEES_FIELD_NUMBER: _ClassVar[int]
    SLIPPAGE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    DATES_FIELD_NUMBER: _ClassVar[int]
    EQUITY_CURVE_FIELD_NUMBER: _ClassVar[int]
    DRAWDOWN_SERIES_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DATA_POINTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    backtest_id: str
    symbol: str
    strategy_type: str
    backtest_date: _timestamp_pb2.Timestamp
    start_date: str
    end_date: str
    initial_capital: float
    fees: float
    slippage: float
    parameters: _struct_pb2.Struct
    metrics: _arrays_pb2.MetricSet
    dates: _containers.RepeatedScalarFieldContainer[str]
    equity_curve: _arrays_pb2.Array
    drawdown_series: _arrays_pb2.Array
    execution_time_seconds: float
    data_points: int
    status: str
    error_message: str
    notes: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, backtest_id: _Optional[str] = ..., symbol: _Optional[str] = ..., strategy_type: _Optional[str] = ..., backtest_date: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., initial_capital: _Optional[float] = ..., fees: _Optional[float] = ..., slippage: _Optional[float] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metrics: _Optional[_Union[_arrays_pb2.MetricSet, _Mapping]] = ..., dates: _Optional[_Iterable[str]] = ..., equity_curve: _Optional[_Union[_arrays_pb2.Array, _Mapping]] = ..., drawdown_series: _Optional[_Union[_arrays_pb2.Array, _Mapping]] = ..., execution_time_seconds: _Optional[float] = ..., data_points: _Optional[int] = ..., status: _Optional[str] = ..., error_message: _Optional[str] = ..., notes: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SaveBacktestResultRequest(_message.Message):
    __slots__ = ("result", "trades", "request_id")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TRADES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    result: BacktestRecord
    trades: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Trade]
    request_id: str
    def __init__(self, result: _Optional[_Union[BacktestRecord, _Mapping]] = ..., trades: _Optional[_Iterable[_Union[_resources_pb2.Trade, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SaveBacktestResultResponse(_message.Message):
    __slots__ = ("backtest_id", "created")
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    backtest_id: str
    created: bool
    def __init__(self, backtest_id: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class GetBacktestResultRequest(_message.Message):
    __slots__ = ("backtest_id", "include_trades")
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TRADES_FIELD_NUMBER: _ClassVar[int]
    backtest_id: str
    include_trades: bool
    def __init__(self, backtest_id: _Optional[str] = ..., include_trades: _Optional[bool] = ...) -> None: ...

class GetBacktestResultResponse(_message.Message):
    __slots__ = ("result", "trades")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TRADES_FIELD_NUMBER: _ClassVar[int]
    result: BacktestRecord
    trades: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Trade]
    def __init__(self, result: _Optional[_Union[BacktestRecord, _Mapping]] = ..., trades: _Optional[_Iterable[_Union[_resources_pb2.Trade, _Mapping]]] = ...) -> None: ...

class ListBacktestTradesRequest(_message.Message):
    __slots__ = ("backtest_id", "page_size", "page_token")
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    backtest_id: str
    page_size: int
    page_token: str
    def __init__(self, backtest_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBacktestTradesResponse(_message.Message):
    __slots__ = ("trades", "next_page_token", "total_size")
    TRADES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    trades: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Trade]
    next_page_token: str
    total_size: int
    def __init__(self, trades: _Optional[_Iterable[_Union[_resources_pb2.Trade, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class ListBacktestResultsRequest(_message.Message):
    __slots__ = ("symbol", "strategy_type", "from_date", "to_date", "status", "order_by", "page_size", "page_token", "dataset_fingerprint")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_TYPE_FIELD_NUMBER: _ClassVar[int]
    FROM_DATE_FIELD_NUMBER: _ClassVar[int]
    TO_DATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DATASET_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    strategy_type: str
    from_date: str
    to_date: str
    status: str
    order_by: str
    page_size: int
    page_token: str
    dataset_fingerprint: str
    def __init__(self, symbol: _Optional[str] = ..., strategy_type: _Optional[str] = ..., from_date: _Optional[str] = ..., to_date: _Optional[str] = ..., status: _Optional[str] = ..., order_by: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., dataset_fingerprint: _Optional[str] = ...) -> None: ...

class ListDatasetTrialsRequest(_message.Message):
    __slots__ = ("dataset_fingerprint",)
    DATASET_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    dataset_fingerprint: str
    def __init__(self, dataset_fingerprint: _Optional[str] = ...) -> None: ...

class ListDatasetTrialsResponse(_message.Message):
    __slots__ = ("backtest_ids", "symbols", "strategy_types", "start_dates", "end_dates", "parameters_json", "metrics_json", "conventions_json")
    BACKTEST_IDS_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_TYPES_FIELD_NUMBER: _ClassVar[int]
    START_DATES_FIELD_NUMBER: _ClassVar[int]
    END_DATES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    CONVENTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    backtest_ids: _containers.RepeatedScalarFieldContainer[str]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    strategy_types: _containers.RepeatedScalarFieldContainer[str]
    start_dates: _containers.RepeatedScalarFieldContainer[str]
    end_dates: _containers.RepeatedScalarFieldContainer[str]
    parameters_json: _containers.RepeatedScalarFieldContainer[str]
    metrics_json: _containers.RepeatedScalarFieldContainer[str]
    conventions_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, backtest_ids: _Optional[_Iterable[str]] = ..., symbols: _Optional[_Iterable[str]] = ..., strategy_types: _Optional[_Iterable[str]] = ..., start_dates: _Optional[_Iterable[str]] = ..., end_dates: _Optional[_Iterable[str]] = ..., parameters_json: _Optional[_Iterable[str]] = ..., metrics_json: _Optional[_Iterable[str]] = ..., conventions_json: _Optional[_Iterable[str]] = ...) -> None: ...

class ListBacktestResultsResponse(_message.Message):
    __slots__ = ("results", "next_page_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BacktestRecord]
    next_page_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[BacktestRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteBacktestResultRequest(_message.Message):
    __slots__ = ("backtest_id",)
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    backtest_id: str
    def __init__(self, backtest_id: _Optional[str] = ...) -> None: ...

class DeleteBacktestResultResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class GetBestBacktestRequest(_message.Message):
    __slots__ = ("metric", "min_trades", "symbol", "strategy_type")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MIN_TRADES_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_TYPE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    min_trades: int
    symbol: str
    strategy_type: str
    def __init__(self, metric: _Optional[str] = ..., min_trades: _Optional[int] = ..., symbol: _Optional[str] = ..., strategy_type: _Optional[str] = ...) -> None: ...

class GetBestBacktestResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: BacktestRecord
    def __init__(self, result: _Optional[_Union[BacktestRecord, _Mapping]] = ...) -> None: ...

class CompareBacktestsRequest(_message.Message):
    __slots__ = ("backtest_ids", "metrics")
    BACKTEST_IDS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    backtest_ids: _containers.RepeatedScalarFieldContainer[str]
    metrics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, backtest_ids: _Optional[_Iterable[str]] = ..., metrics: _Optional[_Iterable[str]] = ...) -> None: ...

class MetricComparison(_message.Message):
    __slots__ = ("metric", "backtest_id", "value", "rank", "higher_is_better")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    HIGHER_IS_BETTER_FIELD_NUMBER: _ClassVar[int]
    metric: str
    backtest_id: str
    value: float
    rank: int
    higher_is_better: bool
    def __init__(self, metric: _Optional[str] = ..., backtest_id: _Optional[str] = ..., value: _Optional[float] = ..., rank: _Optional[int] = ..., higher_is_better: _Optional[bool] = ...) -> None: ...

class CompareBacktestsResponse(_message.Message):
    __slots__ = ("results", "comparisons")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BacktestRecord]
    comparisons: _containers.RepeatedCompositeFieldContainer[MetricComparison]
    def __init__(self, results: _Optional[_Iterable[_Union[BacktestRecord, _Mapping]]] = ..., comparisons: _Optional[_Iterable[_Union[MetricComparison, _Mapping]]] = ...) -> None: ...

class GetPerformanceSummaryRequest(_message.Message):
    __slots__ = ("days",)
    DAYS_FIELD_NUMBER: _ClassVar[int]
    days: int
    def __init__(self, days: _Optional[int] = ...) -> None: ...

class PerformanceGroup(_message.Message):
    __slots__ = ("key", "count", "avg_total_return", "avg_sharpe_ratio", "best_sharpe_ratio", "avg_max_drawdown", "avg_win_rate", "total_trades")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    AVG_TOTAL_RETURN_FIELD_NUMBER: _ClassVar[int]
    AVG_SHARPE_RATIO_FIELD_NUMBER: _ClassVar[int]
    BEST_SHARPE_RATIO_FIELD_NUMBER: _ClassVar[int]
    AVG_MAX_DRAWDOWN_FIELD_NUMBER: _ClassVar[int]
    AVG_WIN_RATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TRADES_FIELD_NUMBER: _ClassVar[int]
    key: str
    count: int
    avg_total_return: float
    avg_sharpe_ratio: float
    best_sharpe_ratio: float
    avg_max_drawdown: float
    avg_win_rate: float
    total_trades: int
    def __init__(self, key: _Optional[str] = ..., count: _Optional[int] = ..., avg_total_return: _Optional[float] = ..., avg_sharpe_ratio: _Optional[float] = ..., best_sharpe_ratio: _Optional[float] = ..., avg_max_drawdown: _Optional[float] = ..., avg_win_rate: _Optional[float] = ..., total_trades: _Optional[int] = ...) -> None: ...

class GetPerformanceSummaryResponse(_message.Message):
    __slots__ = ("days", "overall", "by_symbol", "by_strategy")
    DAYS_FIELD_NUMBER: _ClassVar[int]
    OVERALL_FIELD_NUMBER: _ClassVar[int]
    BY_SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BY_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    days: int
    overall: PerformanceGroup
    by_symbol: _containers.RepeatedCompositeFieldContainer[PerformanceGroup]
    by_strategy: _containers.RepeatedCompositeFieldContainer[PerformanceGroup]
    def __init__(self, days: _Optional[int] = ..., overall: _Optional[_Union[PerformanceGroup, _Mapping]] = ..., by_symbol: _Optional[_Iterable[_Union[PerformanceGroup, _Mapping]]] = ..., by_strategy: _Optional[_Iterable[_Union[PerformanceGroup, _Mapping]]] = ...) -> None: ...

class OptimizationRecord(_message.Message):
    __slots__ = ("optimization_id", "backtest_id", "optimization_date", "parameter_set", "parameters", "objective_function", "objective_value", "total_return", "sharpe_ratio", "max_drawdown", "win_rate", "profit_factor", "total_trades", "rank", "is_statistically_significant", "p_value", "created_at")
    OPTIMIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZATION_DATE_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_SET_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VALUE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_RETURN_FIELD_NUMBER: _ClassVar[int]
    SHARPE_RATIO_FIELD_NUMBER: _ClassVar[int]
    MAX_DRAWDOWN_FIELD_NUMBER: _ClassVar[int]
    WIN_RATE_FIELD_NUMBER: _ClassVar[int]
    PROFIT_FACTOR_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TRADES_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    IS_STATISTICALLY_SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    optimization_id: str
    backtest_id: str
    optimization_date: _timestamp_pb2.Timestamp
    parameter_set: int
    parameters: _struct_pb2.Struct
    objective_function: str
    objective_value: float
    total_return: float
    sharpe_ratio: float
    max_drawdown: float
    win_rate: float
    profit_factor: float
    total_trades: int
    rank: int
    is_statistically_significant: bool
    p_value: float
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, optimization_id: _Optional[str] = ..., backtest_id: _Optional[str] = ..., optimization_date: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parameter_set: _Optional[int] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., objective_function: _Optional[str] = ..., objective_value: _Optional[float] = ..., total_return: _Optional[float] = ..., sharpe_ratio: _Optional[float] = ..., max_drawdown: _Optional[float] = ..., win_rate: _Optional[float] = ..., profit_factor: _Optional[float] = ..., total_trades: _Optional[int] = ..., rank: _Optional[int] = ..., is_statistically_significant: _Optional[bool] = ..., p_value: _Optional[float] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SaveOptimizationResultsRequest(_message.Message):
    __slots__ = ("results", "request_id")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[OptimizationRecord]
    request_id: str
    def __init__(self, results: _Optional[_Iterable[_Union[OptimizationRecord, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SaveOptimizationResultsResponse(_message.Message):
    __slots__ = ("optimization_ids", "created")
    OPTIMIZATION_IDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    optimization_ids: _containers.RepeatedScalarFieldContainer[str]
    created: bool
    def __init__(self, optimization_ids: _Optional[_Iterable[str]] = ..., created: _Optional[bool] = ...) -> None: ...

class ListOptimizationResultsRequest(_message.Message):
    __slots__ = ("backtest_id", "page_size", "page_token")
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    backtest_id: str
    page_size: int
    page_token: str
    def __init__(self, backtest_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListOptimizationResultsResponse(_message.Message):
    __slots__ = ("results", "next_page_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[OptimizationRecord]
    next_page_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[OptimizationRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetOptimizationResultRequest(_message.Message):
    __slots__ = ("optimization_id",)
    OPTIMIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    optimization_id: str
    def __init__(self, optimization_id: _Optional[str] = ...) -> None: ...

class GetOptimizationResultResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: OptimizationRecord
    def __init__(self, result: _Optional[_Union[OptimizationRecord, _Mapping]] = ...) -> None: ...

class WalkForwardRecord(_message.Message):
    __slots__ = ("walk_forward_id", "parent_backtest_id", "test_date", "window_size_months", "step_size_months", "training_start", "training_end", "test_period_start", "test_period_end", "optimal_parameters", "training_performance", "out_of_sample_return", "out_of_sample_sharpe", "out_of_sample_drawdown", "out_of_sample_trades", "performance_ratio", "degradation_factor", "is_profitable", "is_statistically_significant", "created_at")
    WALK_FORWARD_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_DATE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SIZE_MONTHS_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZE_MONTHS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_START_FIELD_NUMBER: _ClassVar[int]
    TRAINING_END_FIELD_NUMBER: _ClassVar[int]
    TEST_PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    TEST_PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    OPTIMAL_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_PERFORMANCE_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_SAMPLE_RETURN_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_SAMPLE_SHARPE_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_SAMPLE_DRAWDOWN_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_SAMPLE_TRADES_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_RATIO_FIELD_NUMBER: _ClassVar[int]
    DEGRADATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    IS_PROFITABLE_FIELD_NUMBER: _ClassVar[int]
    IS_STATISTICALLY_SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    walk_forward_id: str
    parent_backtest_id: str
    test_date: _timestamp_pb2.Timestamp
    window_size_months: int
    step_size_months: int
    training_start: str
    training_end: str
    test_period_start: str
    test_period_end: str
    optimal_parameters: _struct_pb2.Struct
    training_performance: float
    out_of_sample_return: float
    out_of_sample_sharpe: float
    out_of_sample_drawdown: float
    out_of_sample_trades: int
    performance_ratio: float
    degradation_factor: float
    is_profitable: bool
    is_statistically_significant: bool
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, walk_forward_id: _Optional[str] = ..., parent_backtest_id: _Optional[str] = ..., test_date: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_size_months: _Optional[int] = ..., step_size_months: _Optional[int] = ..., training_start: _Optional[str] = ..., training_end: _Optional[str] = ..., test_period_start: _Optional[str] = ..., test_period_end: _Optional[str] = ..., optimal_parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., training_performance: _Optional[float] = ..., out_of_sample_return: _Optional[float] = ..., out_of_sample_sharpe: _Optional[float] = ..., out_of_sample_drawdown: _Optional[float] = ..., out_of_sample_trades: _Optional[int] = ..., performance_ratio: _Optional[float] = ..., degradation_factor: _Optional[float] = ..., is_profitable: _Optional[bool] = ..., is_statistically_significant: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SaveWalkForwardTestsRequest(_message.Message):
    __slots__ = ("windows", "request_id")
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    windows: _containers.RepeatedCompositeFieldContainer[WalkForwardRecord]
    request_id: str
    def __init__(self, windows: _Optional[_Iterable[_Union[WalkForwardRecord, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SaveWalkForwardTestsResponse(_message.Message):
    __slots__ = ("walk_forward_ids", "created")
    WALK_FORWARD_IDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    walk_forward_ids: _containers.RepeatedScalarFieldContainer[str]
    created: bool
    def __init__(self, walk_forward_ids: _Optional[_Iterable[str]] = ..., created: _Optional[bool] = ...) -> None: ...

class ListWalkForwardTestsRequest(_message.Message):
    __slots__ = ("parent_backtest_id", "page_size", "page_token")
    PARENT_BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent_backtest_id: str
    page_size: int
    page_token: str
    def __init__(self, parent_backtest_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWalkForwardTestsResponse(_message.Message):
    __slots__ = ("windows", "next_page_token")
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    windows: _containers.RepeatedCompositeFieldContainer[WalkForwardRecord]
    next_page_token: str
    def __init__(self, windows: _Optional[_Iterable[_Union[WalkForwardRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetWalkForwardTestRequest(_message.Message):
    __slots__ = ("walk_forward_id",)
    WALK_FORWARD_ID_FIELD_NUMBER: _ClassVar[int]
    walk_forward_id: str
    def __init__(self, walk_forward_id: _Optional[str] = ...) -> None: ...

class GetWalkForwardTestResponse(_message.Message):
    __slots__ = ("window",)
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    window: WalkForwardRecord
    def __init__(self, window: _Optional[_Union[WalkForwardRecord, _Mapping]] = ...) -> None: ...

class PortfolioRecord(_message.Message):
    __slots__ = ("portfolio_backtest_id", "portfolio_name", "description", "backtest_date", "start_date", "end_date", "symbols", "weights", "rebalance_frequency", "initial_capital", "max_positions", "position_sizing_method", "portfolio_stop_loss", "max_sector_allocation", "correlation_threshold", "metrics", "component_backtest_ids", "dates", "equity_curve", "weights_history", "status", "notes", "created_at")
    PORTFOLIO_BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    PORTFOLIO_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_DATE_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    REBALANCE_FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    INITIAL_CAPITAL_FIELD_NUMBER: _ClassVar[int]
    MAX_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    POSITION_SIZING_METHOD_FIELD_NUMBER: _ClassVar[int]
    PORTFOLIO_STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    MAX_SECTOR_ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_BACKTEST_IDS_FIELD_NUMBER: _ClassVar[int]
    DATES_FIELD_NUMBER: _ClassVar[int]
    EQUITY_CURVE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_HISTORY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    portfolio_backtest_id: str
    portfolio_name: str
    description: str
    backtest_date: _timestamp_pb2.Timestamp
    start_date: str
    end_date: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    weights: _struct_pb2.Struct
    rebalance_frequency: str
    initial_capital: float
    max_positions: int
    position_sizing_method: str
    portfolio_stop_loss: float
    max_sector_allocation: float
    correlation_threshold: float
    metrics: _arrays_pb2.MetricSet
    component_backtest_ids: _containers.RepeatedScalarFieldContainer[str]
    dates: _containers.RepeatedScalarFieldContainer[str]
    equity_curve: _arrays_pb2.Array
    weights_history: _arrays_pb2.Array
    status: str
    notes: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, portfolio_backtest_id: _Optional[str] = ..., portfolio_name: _Optional[str] = ..., description: _Optional[str] = ..., backtest_date: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ..., weights: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., rebalance_frequency: _Optional[str] = ..., initial_capital: _Optional[float] = ..., max_positions: _Optional[int] = ..., position_sizing_method: _Optional[str] = ..., portfolio_stop_loss: _Optional[float] = ..., max_sector_allocation: _Optional[float] = ..., correlation_threshold: _Optional[float] = ..., metrics: _Optional[_Union[_arrays_pb2.MetricSet, _Mapping]] = ..., component_backtest_ids: _Optional[_Iterable[str]] = ..., dates: _Optional[_Iterable[str]] = ..., equity_curve: _Optional[_Union[_arrays_pb2.Array, _Mapping]] = ..., weights_history: _Optional[_Union[_arrays_pb2.Array, _Mapping]] = ..., status: _Optional[str] = ..., notes: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SavePortfolioBacktestRequest(_message.Message):
    __slots__ = ("portfolio", "request_id")
    PORTFOLIO_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    portfolio: PortfolioRecord
    request_id: str
    def __init__(self, portfolio: _Optional[_Union[PortfolioRecord, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SavePortfolioBacktestResponse(_message.Message):
    __slots__ = ("portfolio_backtest_id", "created")
    PORTFOLIO_BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    portfolio_backtest_id: str
    created: bool
    def __init__(self, portfolio_backtest_id: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class GetPortfolioBacktestRequest(_message.Message):
    __slots__ = ("portfolio_backtest_id",)
    PORTFOLIO_BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    portfolio_backtest_id: str
    def __init__(self, portfolio_backtest_id: _Optional[str] = ...) -> None: ...

class GetPortfolioBacktestResponse(_message.Message):
    __slots__ = ("portfolio",)
    PORTFOLIO_FIELD_NUMBER: _ClassVar[int]
    portfolio: PortfolioRecord
    def __init__(self, portfolio: _Optional[_Union[PortfolioRecord, _Mapping]] = ...) -> None: ...

class ListPortfolioBacktestsRequest(_message.Message):
    __slots__ = ("portfolio_name", "page_size", "page_token")
    PORTFOLIO_NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    portfolio_name: str
    page_size: int
    page_token: str
    def __init__(self, portfolio_name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPortfolioBacktestsResponse(_message.Message):
    __slots__ = ("portfolios", "next_page_token")
    PORTFOLIOS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    portfolios: _containers.RepeatedCompositeFieldContainer[PortfolioRecord]
    next_page_token: str
    def __init__(self, portfolios: _Optional[_Iterable[_Union[PortfolioRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ApiToken(_message.Message):
    __slots__ = ("name", "role", "created_at", "created_by", "revoked_at", "expires_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    revoked_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateApiTokenRequest(_message.Message):
    __slots__ = ("name", "role", "token_hash", "created_by", "expires_in_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    token_hash: str
    created_by: str
    expires_in_seconds: int
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., token_hash: _Optional[str] = ..., created_by: _Optional[str] = ..., expires_in_seconds: _Optional[int] = ...) -> None: ...

class CreateApiTokenResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: ApiToken
    def __init__(self, token: _Optional[_Union[ApiToken, _Mapping]] = ...) -> None: ...

class RevokeApiTokenRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RevokeApiTokenResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: ApiToken
    def __init__(self, token: _Optional[_Union[ApiToken, _Mapping]] = ...) -> None: ...

class ListApiTokensRequest(_message.Message):
    __slots__ = ("include_revoked",)
    INCLUDE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    include_revoked: bool
    def __init__(self, include_revoked: _Optional[bool] = ...) -> None: ...

class ListApiTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[ApiToken]
    def __init__(self, tokens: _Optional[_Iterable[_Union[ApiToken, _Mapping]]] = ...) -> None: ...

class AuthenticateApiTokenRequest(_message.Message):
    __slots__ = ("token_hash",)
    TOKEN_HASH_FIELD_NUMBER: _ClassVar[int]
    token_hash: str
    def __init__(self, token_hash: _Optional[str] = ...) -> None: ...

class AuthenticateApiTokenResponse(_message.Message):
    __slots__ = ("found", "token")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    found: bool
    token: ApiToken
    def __init__(self, found: _Optional[bool] = ..., token: _Optional[_Union[ApiToken, _Mapping]] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("audit_id", "at", "subject", "role", "action", "target_kind", "target_id", "task_id", "detail")
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    audit_id: str
    at: _timestamp_pb2.Timestamp
    subject: str
    role: str
    action: str
    target_kind: str
    target_id: str
    task_id: str
    detail: _struct_pb2.Struct
    def __init__(self, audit_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subject: _Optional[str] = ..., role: _Optional[str] = ..., action: _Optional[str] = ..., target_kind: _Optional[str] = ..., target_id: _Optional[str] = ..., task_id: _Optional[str] = ..., detail: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class AppendAuditLogRequest(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: AuditEntry
    def __init__(self, entry: _Optional[_Union[AuditEntry, _Mapping]] = ...) -> None: ...

class AppendAuditLogResponse(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: AuditEntry
    def __init__(self, entry: _Optional[_Union[AuditEntry, _Mapping]] = ...) -> None: ...

class ListAuditLogRequest(_message.Message):
    __slots__ = ("subject", "target_id", "page_size", "page_token")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subject: str
    target_id: str
    page_size: int
    page_token: str
    def __init__(self, subject: _Optional[str] = ..., target_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditLogResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CountActiveTasksRequest(_message.Message):
    __slots__ = ("subject",)
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    def __init__(self, subject: _Optional[str] = ...) -> None: ...

class CountActiveTasksResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...
