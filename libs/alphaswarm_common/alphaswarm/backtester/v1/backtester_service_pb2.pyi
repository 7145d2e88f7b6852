from alphaswarm.common.v1 import arrays_pb2 as _arrays_pb2
from alphaswarm.common.v1 import config_pb2 as _config_pb2
from alphaswarm.common.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ValidateStrategyRequest(_message.Message):
    __slots__ = ("strategy_cfg", "backtest_cfg", "n_symbols")
    STRATEGY_CFG_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_CFG_FIELD_NUMBER: _ClassVar[int]
    N_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    strategy_cfg: _config_pb2.StrategyConfig
    backtest_cfg: _config_pb2.BacktestConfig
    n_symbols: int
    def __init__(self, strategy_cfg: _Optional[_Union[_config_pb2.StrategyConfig, _Mapping]] = ..., backtest_cfg: _Optional[_Union[_config_pb2.BacktestConfig, _Mapping]] = ..., n_symbols: _Optional[int] = ...) -> None: ...

class ValidateStrategyResponse(_message.Message):
    __slots__ = ("params_json",)
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    params_json: str
    def __init__(self, params_json: _Optional[str] = ...) -> None: ...

class RunBacktestRequest(_message.Message):
    __slots__ = ("signal", "prices", "strategy_cfg", "backtest_cfg", "experiment_id", "parent_run_id", "task_id", "strategy_label", "symbol_label", "persist", "request_id", "notes", "benchmark_close")
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_CFG_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_CFG_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_LABEL_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_LABEL_FIELD_NUMBER: _ClassVar[int]
    PERSIST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    BENCHMARK_CLOSE_FIELD_NUMBER: _ClassVar[int]
    signal: _arrays_pb2.Matrix
    prices: _arrays_pb2.Panel
    strategy_cfg: _config_pb2.StrategyConfig
    backtest_cfg: _config_pb2.BacktestConfig
    experiment_id: str
    parent_run_id: str
    task_id: str
    strategy_label: str
    symbol_label: str
    persist: bool
    request_id: str
    notes: str
    benchmark_close: _arrays_pb2.Array
    def __init__(self, signal: _Optional[_Union[_arrays_pb2.Matrix, _Mapping]] = ..., prices: _Optional[_Union[_arrays_pb2.Panel, _Mapping]] = ..., strategy_cfg: _Optional[_Union[_config_pb2.StrategyConfig, _Mapping]] = ..., backtest_cfg: _Optional[_Union[_config_pb2.BacktestConfig, _Mapping]] = ..., experiment_id: _Optional[str] = ..., parent_run_id: _Optional[str] = ..., task_id: _Optional[str] = ..., strategy_label: _Optional[str] = ..., symbol_label: _Optional[str] = ..., persist: _Optional[bool] = ..., request_id: _Optional[str] = ..., notes: _Optional[str] = ..., benchmark_close: _Optional[_Union[_arrays_pb2.Array, _Mapping]] = ...) -> None: ...

class RunBacktestResponse(_message.Message):
    __slots__ = ("backtest_id", "run_id", "metrics", "dates", "returns", "equity", "drawdown", "weights_target", "weights_held", "trades", "execution_time_seconds")
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    DATES_FIELD_NUMBER: _ClassVar[int]
    RETURNS_FIELD_NUMBER: _ClassVar[int]
    EQUITY_FIELD_NUMBER: _ClassVar[int]
    DRAWDOWN_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_TARGET_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_HELD_FIELD_NUMBER: _ClassVar[int]
    TRADES_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    backtest_id: str
    run_id: str
    metrics: _arrays_pb2.MetricSet
    dates: _containers.RepeatedScalarFieldContainer[str]
    returns: _arrays_pb2.Array
    equity: _arrays_pb2.Array
    drawdown: _arrays_pb2.Array
    weights_target: _arrays_pb2.Matrix
    weights_held: _arrays_pb2.Matrix
    trades: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Trade]
    execution_time_seconds: float
    def __init__(self, backtest_id: _Optional[str] = ..., run_id: _Optional[str] = ..., metrics: _Optional[_Union[_arrays_pb2.MetricSet, _Mapping]] = ..., dates: _Optional[_Iterable[str]] = ..., returns: _Optional[_Union[_arrays_pb2.Array, _Mapping]] = ..., equity: _Optional[_Union[_arrays_pb2.Array, _Mapping]] = ..., drawdown: _Optional[_Union[_arrays_pb2.Array, _Mapping]] = ..., weights_target: _Optional[_Union[_arrays_pb2.Matrix, _Mapping]] = ..., weights_held: _Optional[_Union[_arrays_pb2.Matrix, _Mapping]] = ..., trades: _Optional[_Iterable[_Union[_resources_pb2.Trade, _Mapping]]] = ..., execution_time_seconds: _Optional[float] = ...) -> None: ...
