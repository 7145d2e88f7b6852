from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Segment(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ...) -> None: ...

class Segments(_message.Message):
    __slots__ = ("train", "valid", "test")
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    train: Segment
    valid: Segment
    test: Segment
    def __init__(self, train: _Optional[_Union[Segment, _Mapping]] = ..., valid: _Optional[_Union[Segment, _Mapping]] = ..., test: _Optional[_Union[Segment, _Mapping]] = ...) -> None: ...

class FeatureSpec(_message.Message):
    __slots__ = ("name", "windows", "cs_rank")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    CS_RANK_FIELD_NUMBER: _ClassVar[int]
    name: str
    windows: _containers.RepeatedScalarFieldContainer[int]
    cs_rank: bool
    def __init__(self, name: _Optional[str] = ..., windows: _Optional[_Iterable[int]] = ..., cs_rank: _Optional[bool] = ...) -> None: ...

class LabelConfig(_message.Message):
    __slots__ = ("horizon", "execution_lag", "transform")
    HORIZON_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_LAG_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    horizon: int
    execution_lag: int
    transform: str
    def __init__(self, horizon: _Optional[int] = ..., execution_lag: _Optional[int] = ..., transform: _Optional[str] = ...) -> None: ...

class SyntheticConfig(_message.Message):
    __slots__ = ("n_dates", "n_symbols", "ic", "seed", "start_date", "annual_volatility", "ohlcv")
    N_DATES_FIELD_NUMBER: _ClassVar[int]
    N_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    IC_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    ANNUAL_VOLATILITY_FIELD_NUMBER: _ClassVar[int]
    OHLCV_FIELD_NUMBER: _ClassVar[int]
    n_dates: int
    n_symbols: int
    ic: float
    seed: int
    start_date: str
    annual_volatility: float
    ohlcv: bool
    def __init__(self, n_dates: _Optional[int] = ..., n_symbols: _Optional[int] = ..., ic: _Optional[float] = ..., seed: _Optional[int] = ..., start_date: _Optional[str] = ..., annual_volatility: _Optional[float] = ..., ohlcv: _Optional[bool] = ...) -> None: ...

class MissingDataConfig(_message.Message):
    __slots__ = ("min_history", "ffill_limit", "drop_incomplete_symbols")
    MIN_HISTORY_FIELD_NUMBER: _ClassVar[int]
    FFILL_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DROP_INCOMPLETE_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    min_history: int
    ffill_limit: int
    drop_incomplete_symbols: bool
    def __init__(self, min_history: _Optional[int] = ..., ffill_limit: _Optional[int] = ..., drop_incomplete_symbols: _Optional[bool] = ...) -> None: ...

class DatasetConfig(_message.Message):
    __slots__ = ("source", "format", "symbols", "start_date", "end_date", "segments", "features", "label", "embargo", "synthetic", "missing")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    EMBARGO_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    source: str
    format: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    start_date: str
    end_date: str
    segments: Segments
    features: _containers.RepeatedCompositeFieldContainer[FeatureSpec]
    label: LabelConfig
    embargo: int
    synthetic: SyntheticConfig
    missing: MissingDataConfig
    def __init__(self, source: _Optional[str] = ..., format: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., segments: _Optional[_Union[Segments, _Mapping]] = ..., features: _Optional[_Iterable[_Union[FeatureSpec, _Mapping]]] = ..., label: _Optional[_Union[LabelConfig, _Mapping]] = ..., embargo: _Optional[int] = ..., synthetic: _Optional[_Union[SyntheticConfig, _Mapping]] = ..., missing: _Optional[_Union[MissingDataConfig, _Mapping]] = ...) -> None: ...

class RollingConfig(_message.Message):
    __slots__ = ("step", "window")
    STEP_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    step: int
    window: int
    def __init__(self, step: _Optional[int] = ..., window: _Optional[int] = ...) -> None: ...

class ModelConfig(_message.Message):
    __slots__ = ("type", "params", "name", "seed", "rolling", "time_budget_seconds")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ROLLING_FIELD_NUMBER: _ClassVar[int]
    TIME_BUDGET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    type: str
    params: _struct_pb2.Struct
    name: str
    seed: int
    rolling: RollingConfig
    time_budget_seconds: float
    def __init__(self, type: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., name: _Optional[str] = ..., seed: _Optional[int] = ..., rolling: _Optional[_Union[RollingConfig, _Mapping]] = ..., time_budget_seconds: _Optional[float] = ...) -> None: ...

class StrategyConfig(_message.Message):
    __slots__ = ("type", "params")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    type: str
    params: _struct_pb2.Struct
    def __init__(self, type: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class BacktestConfig(_message.Message):
    __slots__ = ("initial_capital", "fees", "slippage", "execution_lag", "fill_price", "rebalance_every", "rf", "periods_per_year", "turnover_penalty", "start_date", "end_date", "min_fee", "max_gross_leverage", "stop_loss", "take_profit", "benchmark")
    INITIAL_CAPITAL_FIELD_NUMBER: _ClassVar[int]
    FEES_FIELD_NUMBER: _ClassVar[int]
    SLIPPAGE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_LAG_FIELD_NUMBER: _ClassVar[int]
    FILL_PRICE_FIELD_NUMBER: _ClassVar[int]
    REBALANCE_EVERY_FIELD_NUMBER: _ClassVar[int]
    RF_FIELD_NUMBER: _ClassVar[int]
    PERIODS_PER_YEAR_FIELD_NUMBER: _ClassVar[int]
    TURNOVER_PENALTY_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    MIN_FEE_FIELD_NUMBER: _ClassVar[int]
    MAX_GROSS_LEVERAGE_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    TAKE_PROFIT_FIELD_NUMBER: _ClassVar[int]
    BENCHMARK_FIELD_NUMBER: _ClassVar[int]
    initial_capital: float
    fees: float
    slippage: float
    execution_lag: int
    fill_price: str
    rebalance_every: int
    rf: float
    periods_per_year: float
    turnover_penalty: float
    start_date: str
    end_date: str
    min_fee: float
    max_gross_leverage: float
    stop_loss: float
    take_profit: float
    benchmark: str
    def __init__(self, initial_capital: _Optional[float] = ..., fees: _Optional[float] = ..., slippage: _Optional[float] = ..., execution_lag: _Optional[int] = ..., fill_price: _Optional[str] = ..., rebalance_every: _Optional[int] = ..., rf: _Optional[float] = ..., periods_per_year: _Optional[float] = ..., turnover_penalty: _Optional[float] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., min_fee: _Optional[float] = ..., max_gross_leverage: _Optional[float] = ..., stop_loss: _Optional[float] = ..., take_profit: _Optional[float] = ..., benchmark: _Optional[str] = ...) -> None: ...

class AlphaBacktestConfig(_message.Message):
    __slots__ = ("dataset_cfg", "model_cfg", "strategy_cfg", "backtest_cfg", "run_name", "experiment_name", "train_first", "capture_predictions", "deployment_id", "weights", "request_id")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DATASET_CFG_FIELD_NUMBER: _ClassVar[int]
    MODEL_CFG_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_CFG_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_CFG_FIELD_NUMBER: _ClassVar[int]
    RUN_NAME_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_NAME_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIRST_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_cfg: DatasetConfig
    model_cfg: ModelConfig
    strategy_cfg: StrategyConfig
    backtest_cfg: BacktestConfig
    run_name: str
    experiment_name: str
    train_first: bool
    capture_predictions: bool
    deployment_id: str
    weights: _containers.ScalarMap[str, float]
    request_id: str
    def __init__(self, dataset_cfg: _Optional[_Union[DatasetConfig, _Mapping]] = ..., model_cfg: _Optional[_Union[ModelConfig, _Mapping]] = ..., strategy_cfg: _Optional[_Union[StrategyConfig, _Mapping]] = ..., backtest_cfg: _Optional[_Union[BacktestConfig, _Mapping]] = ..., run_name: _Optional[str] = ..., experiment_name: _Optional[str] = ..., train_first: _Optional[bool] = ..., capture_predictions: _Optional[bool] = ..., deployment_id: _Optional[str] = ..., weights: _Optional[_Mapping[str, float]] = ..., request_id: _Optional[str] = ...) -> None: ...
