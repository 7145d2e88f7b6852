import datetime

from alphaswarm.common.v1 import arrays_pb2 as _arrays_pb2
from alphaswarm.common.v1 import resources_pb2 as _resources_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("run", "update_mask")
    RUN_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    run: _resources_pb2.AlphaBacktestRun
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, run: _Optional[_Union[_resources_pb2.AlphaBacktestRun, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("page_size", "page_token", "state")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: _resources_pb2.RunState
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[_resources_pb2.RunState, str]] = ...) -> None: ...

class ListAlphaBacktestRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[_resources_pb2.AlphaBacktestRun]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[_resources_pb2.AlphaBacktestRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SaveDeploymentRequest(_message.Message):
    __slots__ = ("deployment", "request_id")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    deployment: _resources_pb2.Deployment
    request_id: str
    def __init__(self, deployment: _Optional[_Union[_resources_pb2.Deployment, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

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

class ListBacktestResultsRequest(_message.Message):
    __slots__ = ("symbol", "strategy_type", "from_date", "to_date", "status", "order_by", "page_size", "page_token")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_TYPE_FIELD_NUMBER: _ClassVar[int]
    FROM_DATE_FIELD_NUMBER: _ClassVar[int]
    TO_DATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    strategy_type: str
    from_date: str
    to_date: str
    status: str
    order_by: str
    page_size: int
    page_token: str
    def __init__(self, symbol: _Optional[str] = ..., strategy_type: _Optional[str] = ..., from_date: _Optional[str] = ..., to_date: _Optional[str] = ..., status: _Optional[str] = ..., order_by: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

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
