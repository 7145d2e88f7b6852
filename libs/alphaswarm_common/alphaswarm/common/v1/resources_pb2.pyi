import datetime

from alphaswarm.common.v1 import arrays_pb2 as _arrays_pb2
from alphaswarm.common.v1 import config_pb2 as _config_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_PENDING: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
    RUN_STATE_CANCELLED: _ClassVar[RunState]

class DeploymentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPLOYMENT_STATE_UNSPECIFIED: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_ACTIVE: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_RETIRED: _ClassVar[DeploymentState]
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_PENDING: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_FAILED: RunState
RUN_STATE_CANCELLED: RunState
DEPLOYMENT_STATE_UNSPECIFIED: DeploymentState
DEPLOYMENT_STATE_ACTIVE: DeploymentState
DEPLOYMENT_STATE_RETIRED: DeploymentState

class ErrorDetail(_message.Message):
    __slots__ = ("stage", "code", "message", "field")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    stage: str
    code: str
    message: str
    field: str
    def __init__(self, stage: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("deployment_id", "model_name", "model_version", "model_alias", "model_uri", "dataset_cfg", "strategy_cfg", "state", "created_at", "updated_at", "history")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ALIAS_FIELD_NUMBER: _ClassVar[int]
    MODEL_URI_FIELD_NUMBER: _ClassVar[int]
    DATASET_CFG_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_CFG_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    model_name: str
    model_version: str
    model_alias: str
    model_uri: str
    dataset_cfg: _config_pb2.DatasetConfig
    strategy_cfg: _config_pb2.StrategyConfig
    state: DeploymentState
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    history: _struct_pb2.ListValue
    def __init__(self, deployment_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., model_alias: _Optional[str] = ..., model_uri: _Optional[str] = ..., dataset_cfg: _Optional[_Union[_config_pb2.DatasetConfig, _Mapping]] = ..., strategy_cfg: _Optional[_Union[_config_pb2.StrategyConfig, _Mapping]] = ..., state: _Optional[_Union[DeploymentState, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., history: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ...) -> None: ...

class Trade(_message.Message):
    __slots__ = ("trade_number", "symbol", "direction", "entry_date", "entry_price", "exit_date", "exit_price", "position_size", "pnl", "pnl_percent", "mae", "mfe", "duration_bars", "duration_days", "exit_reason", "fees_paid", "slippage_cost")
    TRADE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    ENTRY_DATE_FIELD_NUMBER: _ClassVar[int]
    ENTRY_PRICE_FIELD_NUMBER: _ClassVar[int]
    EXIT_DATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    POSITION_SIZE_FIELD_NUMBER: _ClassVar[int]
    PNL_FIELD_NUMBER: _ClassVar[int]
    PNL_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MAE_FIELD_NUMBER: _ClassVar[int]
    MFE_FIELD_NUMBER: _ClassVar[int]
    DURATION_BARS_FIELD_NUMBER: _ClassVar[int]
    DURATION_DAYS_FIELD_NUMBER: _ClassVar[int]
    EXIT_REASON_FIELD_NUMBER: _ClassVar[int]
    FEES_PAID_FIELD_NUMBER: _ClassVar[int]
    SLIPPAGE_COST_FIELD_NUMBER: _ClassVar[int]
    trade_number: int
    symbol: str
    direction: str
    entry_date: str
    entry_price: float
    exit_date: str
    exit_price: float
    position_size: float
    pnl: float
    pnl_percent: float
    mae: float
    mfe: float
    duration_bars: int
    duration_days: int
    exit_reason: str
    fees_paid: float
    slippage_cost: float
    def __init__(self, trade_number: _Optional[int] = ..., symbol: _Optional[str] = ..., direction: _Optional[str] = ..., entry_date: _Optional[str] = ..., entry_price: _Optional[float] = ..., exit_date: _Optional[str] = ..., exit_price: _Optional[float] = ..., position_size: _Optional[float] = ..., pnl: _Optional[float] = ..., pnl_percent: _Optional[float] = ..., mae: _Optional[float] = ..., mfe: _Optional[float] = ..., duration_bars: _Optional[int] = ..., duration_days: _Optional[int] = ..., exit_reason: _Optional[str] = ..., fees_paid: _Optional[float] = ..., slippage_cost: _Optional[float] = ...) -> None: ...

class AlphaBacktestRun(_message.Message):
    __slots__ = ("run_id", "task_id", "run_name", "state", "config", "model_name", "model_version", "deployment_id", "mlflow_parent_run_id", "mlflow_train_run_id", "mlflow_backtest_run_id", "backtest_id", "combined_metrics", "error", "created_at", "started_at", "finished_at", "duration_seconds", "stage", "predictions_captured", "trace_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_PARENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_TRAIN_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_BACKTEST_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    COMBINED_METRICS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_CAPTURED_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    task_id: str
    run_name: str
    state: RunState
    config: _config_pb2.AlphaBacktestConfig
    model_name: str
    model_version: str
    deployment_id: str
    mlflow_parent_run_id: str
    mlflow_train_run_id: str
    mlflow_backtest_run_id: str
    backtest_id: str
    combined_metrics: _struct_pb2.Struct
    error: ErrorDetail
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    duration_seconds: float
    stage: str
    predictions_captured: bool
    trace_id: str
    def __init__(self, run_id: _Optional[str] = ..., task_id: _Optional[str] = ..., run_name: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., config: _Optional[_Union[_config_pb2.AlphaBacktestConfig, _Mapping]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., deployment_id: _Optional[str] = ..., mlflow_parent_run_id: _Optional[str] = ..., mlflow_train_run_id: _Optional[str] = ..., mlflow_backtest_run_id: _Optional[str] = ..., backtest_id: _Optional[str] = ..., combined_metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[_Union[ErrorDetail, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_seconds: _Optional[float] = ..., stage: _Optional[str] = ..., predictions_captured: _Optional[bool] = ..., trace_id: _Optional[str] = ...) -> None: ...

class ProgressEvent(_message.Message):
    __slots__ = ("task_id", "seq", "ts", "stage", "status", "pct", "message", "data")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PCT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    seq: int
    ts: _timestamp_pb2.Timestamp
    stage: str
    status: str
    pct: float
    message: str
    data: _struct_pb2.Struct
    def __init__(self, task_id: _Optional[str] = ..., seq: _Optional[int] = ..., ts: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stage: _Optional[str] = ..., status: _Optional[str] = ..., pct: _Optional[float] = ..., message: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class PredictionAuditRow(_message.Message):
    __slots__ = ("date", "symbol", "prediction", "realized_return", "target_weight", "held_weight", "pnl_contribution")
    DATE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    REALIZED_RETURN_FIELD_NUMBER: _ClassVar[int]
    TARGET_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    HELD_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PNL_CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    date: str
    symbol: str
    prediction: float
    realized_return: float
    target_weight: float
    held_weight: float
    pnl_contribution: float
    def __init__(self, date: _Optional[str] = ..., symbol: _Optional[str] = ..., prediction: _Optional[float] = ..., realized_return: _Optional[float] = ..., target_weight: _Optional[float] = ..., held_weight: _Optional[float] = ..., pnl_contribution: _Optional[float] = ...) -> None: ...

class PredictionAuditBatch(_message.Message):
    __slots__ = ("dates", "symbols", "fields")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _arrays_pb2.Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_arrays_pb2.Array, _Mapping]] = ...) -> None: ...
    DATES_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    dates: _containers.RepeatedScalarFieldContainer[str]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    fields: _containers.MessageMap[str, _arrays_pb2.Array]
    def __init__(self, dates: _Optional[_Iterable[str]] = ..., symbols: _Optional[_Iterable[str]] = ..., fields: _Optional[_Mapping[str, _arrays_pb2.Array]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "kind", "state", "stage", "pct", "request", "result", "error", "created_at", "updated_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PCT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: str
    state: RunState
    stage: str
    pct: float
    request: _struct_pb2.Struct
    result: _struct_pb2.Struct
    error: ErrorDetail
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., stage: _Optional[str] = ..., pct: _Optional[float] = ..., request: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[_Union[ErrorDetail, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
