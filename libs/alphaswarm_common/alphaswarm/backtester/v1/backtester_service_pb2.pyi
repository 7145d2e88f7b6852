from alphaswarm.common.v1 import arrays_pb2 as _arrays_pb2
from alphaswarm.common.v1 import config_pb2 as _config_pb2
from alphaswarm.common.v1 import resources_pb2 as _resources_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PriceSource(_message.Message):
    __slots__ = ("dataset_cfg", "symbols")
    DATASET_CFG_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    dataset_cfg: _config_pb2.DatasetConfig
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dataset_cfg: _Optional[_Union[_config_pb2.DatasetConfig, _Mapping]] = ..., symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class RunStrategyBacktestRequest(_message.Message):
    __slots__ = ("source", "strategy_cfg", "backtest_cfg", "persist", "request_id", "experiment_id", "task_id")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_CFG_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_CFG_FIELD_NUMBER: _ClassVar[int]
    PERSIST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    source: PriceSource
    strategy_cfg: _config_pb2.StrategyConfig
    backtest_cfg: _config_pb2.BacktestConfig
    persist: bool
    request_id: str
    experiment_id: str
    task_id: str
    def __init__(self, source: _Optional[_Union[PriceSource, _Mapping]] = ..., strategy_cfg: _Optional[_Union[_config_pb2.StrategyConfig, _Mapping]] = ..., backtest_cfg: _Optional[_Union[_config_pb2.BacktestConfig, _Mapping]] = ..., persist: _Optional[bool] = ..., request_id: _Optional[str] = ..., experiment_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class OptimizationTrial(_message.Message):
    __slots__ = ("parameter_set", "params", "metrics", "objective_value", "rank", "skipped")
    PARAMETER_SET_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VALUE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    parameter_set: int
    params: _struct_pb2.Struct
    metrics: _arrays_pb2.MetricSet
    objective_value: float
    rank: int
    skipped: SkippedSet
    def __init__(self, parameter_set: _Optional[int] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metrics: _Optional[_Union[_arrays_pb2.MetricSet, _Mapping]] = ..., objective_value: _Optional[float] = ..., rank: _Optional[int] = ..., skipped: _Optional[_Union[SkippedSet, _Mapping]] = ...) -> None: ...

class SkippedSet(_message.Message):
    __slots__ = ("field", "reason")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    field: str
    reason: str
    def __init__(self, field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class OptimizeRequest(_message.Message):
    __slots__ = ("source", "strategy_type", "grid", "space", "method", "n_samples", "seed", "objective", "backtest_cfg", "persist", "request_id", "task_id", "chunks")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_CFG_FIELD_NUMBER: _ClassVar[int]
    PERSIST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    source: PriceSource
    strategy_type: str
    grid: _struct_pb2.Struct
    space: _struct_pb2.Struct
    method: str
    n_samples: int
    seed: int
    objective: str
    backtest_cfg: _config_pb2.BacktestConfig
    persist: bool
    request_id: str
    task_id: str
    chunks: _containers.RepeatedCompositeFieldContainer[EvaluateParameterSetsResponse]
    def __init__(self, source: _Optional[_Union[PriceSource, _Mapping]] = ..., strategy_type: _Optional[str] = ..., grid: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., space: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., method: _Optional[str] = ..., n_samples: _Optional[int] = ..., seed: _Optional[int] = ..., objective: _Optional[str] = ..., backtest_cfg: _Optional[_Union[_config_pb2.BacktestConfig, _Mapping]] = ..., persist: _Optional[bool] = ..., request_id: _Optional[str] = ..., task_id: _Optional[str] = ..., chunks: _Optional[_Iterable[_Union[EvaluateParameterSetsResponse, _Mapping]]] = ...) -> None: ...

class EvaluateParameterSetsRequest(_message.Message):
    __slots__ = ("source", "strategy_type", "grid", "space", "method", "n_samples", "seed", "backtest_cfg", "first", "last", "window")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_CFG_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    source: PriceSource
    strategy_type: str
    grid: _struct_pb2.Struct
    space: _struct_pb2.Struct
    method: str
    n_samples: int
    seed: int
    backtest_cfg: _config_pb2.BacktestConfig
    first: int
    last: int
    window: WalkForwardWindowSelector
    def __init__(self, source: _Optional[_Union[PriceSource, _Mapping]] = ..., strategy_type: _Optional[str] = ..., grid: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., space: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., method: _Optional[str] = ..., n_samples: _Optional[int] = ..., seed: _Optional[int] = ..., backtest_cfg: _Optional[_Union[_config_pb2.BacktestConfig, _Mapping]] = ..., first: _Optional[int] = ..., last: _Optional[int] = ..., window: _Optional[_Union[WalkForwardWindowSelector, _Mapping]] = ...) -> None: ...

class WalkForwardWindowSelector(_message.Message):
    __slots__ = ("in_sample_bars", "out_of_sample_bars", "step_bars", "anchored", "index")
    IN_SAMPLE_BARS_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_SAMPLE_BARS_FIELD_NUMBER: _ClassVar[int]
    STEP_BARS_FIELD_NUMBER: _ClassVar[int]
    ANCHORED_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    in_sample_bars: int
    out_of_sample_bars: int
    step_bars: int
    anchored: bool
    index: int
    def __init__(self, in_sample_bars: _Optional[int] = ..., out_of_sample_bars: _Optional[int] = ..., step_bars: _Optional[int] = ..., anchored: _Optional[bool] = ..., index: _Optional[int] = ...) -> None: ...

class EvaluatedSet(_message.Message):
    __slots__ = ("parameter_set", "params", "reasons", "conventions", "failed")
    class ReasonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PARAMETER_SET_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    CONVENTIONS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    parameter_set: int
    params: _struct_pb2.Struct
    reasons: _containers.ScalarMap[str, str]
    conventions: int
    failed: SkippedSet
    def __init__(self, parameter_set: _Optional[int] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., reasons: _Optional[_Mapping[str, str]] = ..., conventions: _Optional[int] = ..., failed: _Optional[_Union[SkippedSet, _Mapping]] = ...) -> None: ...

class EvaluateParameterSetsResponse(_message.Message):
    __slots__ = ("first", "last", "sets", "metric_names", "values", "conventions_json", "n_bars", "periods_per_year", "evaluation", "execution_time_seconds", "served_by", "window_index", "n_windows")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    SETS_FIELD_NUMBER: _ClassVar[int]
    METRIC_NAMES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    CONVENTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    N_BARS_FIELD_NUMBER: _ClassVar[int]
    PERIODS_PER_YEAR_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_INDEX_FIELD_NUMBER: _ClassVar[int]
    N_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    first: int
    last: int
    sets: _containers.RepeatedCompositeFieldContainer[EvaluatedSet]
    metric_names: _containers.RepeatedScalarFieldContainer[str]
    values: _arrays_pb2.Array
    conventions_json: _containers.RepeatedScalarFieldContainer[str]
    n_bars: int
    periods_per_year: float
    evaluation: str
    execution_time_seconds: float
    served_by: str
    window_index: int
    n_windows: int
    def __init__(self, first: _Optional[int] = ..., last: _Optional[int] = ..., sets: _Optional[_Iterable[_Union[EvaluatedSet, _Mapping]]] = ..., metric_names: _Optional[_Iterable[str]] = ..., values: _Optional[_Union[_arrays_pb2.Array, _Mapping]] = ..., conventions_json: _Optional[_Iterable[str]] = ..., n_bars: _Optional[int] = ..., periods_per_year: _Optional[float] = ..., evaluation: _Optional[str] = ..., execution_time_seconds: _Optional[float] = ..., served_by: _Optional[str] = ..., window_index: _Optional[int] = ..., n_windows: _Optional[int] = ...) -> None: ...

class OptimizeResponse(_message.Message):
    __slots__ = ("trials", "best", "p_value", "is_statistically_significant", "backtest_id", "optimization_ids", "execution_time_seconds")
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    IS_STATISTICALLY_SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZATION_IDS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    trials: _containers.RepeatedCompositeFieldContainer[OptimizationTrial]
    best: OptimizationTrial
    p_value: float
    is_statistically_significant: bool
    backtest_id: str
    optimization_ids: _containers.RepeatedScalarFieldContainer[str]
    execution_time_seconds: float
    def __init__(self, trials: _Optional[_Iterable[_Union[OptimizationTrial, _Mapping]]] = ..., best: _Optional[_Union[OptimizationTrial, _Mapping]] = ..., p_value: _Optional[float] = ..., is_statistically_significant: _Optional[bool] = ..., backtest_id: _Optional[str] = ..., optimization_ids: _Optional[_Iterable[str]] = ..., execution_time_seconds: _Optional[float] = ...) -> None: ...

class WalkForwardWindow(_message.Message):
    __slots__ = ("train_start", "train_end", "test_start", "test_end", "best_params", "in_sample_metrics", "out_of_sample_metrics", "performance_ratio", "degradation_factor")
    TRAIN_START_FIELD_NUMBER: _ClassVar[int]
    TRAIN_END_FIELD_NUMBER: _ClassVar[int]
    TEST_START_FIELD_NUMBER: _ClassVar[int]
    TEST_END_FIELD_NUMBER: _ClassVar[int]
    BEST_PARAMS_FIELD_NUMBER: _ClassVar[int]
    IN_SAMPLE_METRICS_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_SAMPLE_METRICS_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_RATIO_FIELD_NUMBER: _ClassVar[int]
    DEGRADATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    train_start: str
    train_end: str
    test_start: str
    test_end: str
    best_params: _struct_pb2.Struct
    in_sample_metrics: _arrays_pb2.MetricSet
    out_of_sample_metrics: _arrays_pb2.MetricSet
    performance_ratio: float
    degradation_factor: float
    def __init__(self, train_start: _Optional[str] = ..., train_end: _Optional[str] = ..., test_start: _Optional[str] = ..., test_end: _Optional[str] = ..., best_params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., in_sample_metrics: _Optional[_Union[_arrays_pb2.MetricSet, _Mapping]] = ..., out_of_sample_metrics: _Optional[_Union[_arrays_pb2.MetricSet, _Mapping]] = ..., performance_ratio: _Optional[float] = ..., degradation_factor: _Optional[float] = ...) -> None: ...

class WalkForwardRequest(_message.Message):
    __slots__ = ("source", "strategy_type", "grid", "objective", "in_sample_bars", "out_of_sample_bars", "step_bars", "anchored", "backtest_cfg", "persist", "request_id", "task_id", "window_searches")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    IN_SAMPLE_BARS_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_SAMPLE_BARS_FIELD_NUMBER: _ClassVar[int]
    STEP_BARS_FIELD_NUMBER: _ClassVar[int]
    ANCHORED_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_CFG_FIELD_NUMBER: _ClassVar[int]
    PERSIST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SEARCHES_FIELD_NUMBER: _ClassVar[int]
    source: PriceSource
    strategy_type: str
    grid: _struct_pb2.Struct
    objective: str
    in_sample_bars: int
    out_of_sample_bars: int
    step_bars: int
    anchored: bool
    backtest_cfg: _config_pb2.BacktestConfig
    persist: bool
    request_id: str
    task_id: str
    window_searches: _containers.RepeatedCompositeFieldContainer[EvaluateParameterSetsResponse]
    def __init__(self, source: _Optional[_Union[PriceSource, _Mapping]] = ..., strategy_type: _Optional[str] = ..., grid: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., objective: _Optional[str] = ..., in_sample_bars: _Optional[int] = ..., out_of_sample_bars: _Optional[int] = ..., step_bars: _Optional[int] = ..., anchored: _Optional[bool] = ..., backtest_cfg: _Optional[_Union[_config_pb2.BacktestConfig, _Mapping]] = ..., persist: _Optional[bool] = ..., request_id: _Optional[str] = ..., task_id: _Optional[str] = ..., window_searches: _Optional[_Iterable[_Union[EvaluateParameterSetsResponse, _Mapping]]] = ...) -> None: ...

class WalkForwardResponse(_message.Message):
    __slots__ = ("windows", "out_of_sample_metrics", "parent_backtest_id", "walk_forward_ids")
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_SAMPLE_METRICS_FIELD_NUMBER: _ClassVar[int]
    PARENT_BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    WALK_FORWARD_IDS_FIELD_NUMBER: _ClassVar[int]
    windows: _containers.RepeatedCompositeFieldContainer[WalkForwardWindow]
    out_of_sample_metrics: _arrays_pb2.MetricSet
    parent_backtest_id: str
    walk_forward_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, windows: _Optional[_Iterable[_Union[WalkForwardWindow, _Mapping]]] = ..., out_of_sample_metrics: _Optional[_Union[_arrays_pb2.MetricSet, _Mapping]] = ..., parent_backtest_id: _Optional[str] = ..., walk_forward_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Distribution(_message.Message):
    __slots__ = ("percentiles", "values", "mean", "std")
    PERCENTILES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    percentiles: _containers.RepeatedScalarFieldContainer[float]
    values: _containers.RepeatedScalarFieldContainer[float]
    mean: float
    std: float
    def __init__(self, percentiles: _Optional[_Iterable[float]] = ..., values: _Optional[_Iterable[float]] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ...) -> None: ...

class MonteCarloRequest(_message.Message):
    __slots__ = ("returns", "backtest_id", "n_simulations", "block_length", "seed", "percentiles", "periods_per_year")
    RETURNS_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    N_SIMULATIONS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PERCENTILES_FIELD_NUMBER: _ClassVar[int]
    PERIODS_PER_YEAR_FIELD_NUMBER: _ClassVar[int]
    returns: _arrays_pb2.Array
    backtest_id: str
    n_simulations: int
    block_length: int
    seed: int
    percentiles: _containers.RepeatedScalarFieldContainer[float]
    periods_per_year: float
    def __init__(self, returns: _Optional[_Union[_arrays_pb2.Array, _Mapping]] = ..., backtest_id: _Optional[str] = ..., n_simulations: _Optional[int] = ..., block_length: _Optional[int] = ..., seed: _Optional[int] = ..., percentiles: _Optional[_Iterable[float]] = ..., periods_per_year: _Optional[float] = ...) -> None: ...

class MonteCarloResponse(_message.Message):
    __slots__ = ("distributions", "probability_of_loss", "n_simulations")
    class DistributionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Distribution
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Distribution, _Mapping]] = ...) -> None: ...
    DISTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_OF_LOSS_FIELD_NUMBER: _ClassVar[int]
    N_SIMULATIONS_FIELD_NUMBER: _ClassVar[int]
    distributions: _containers.MessageMap[str, Distribution]
    probability_of_loss: float
    n_simulations: int
    def __init__(self, distributions: _Optional[_Mapping[str, Distribution]] = ..., probability_of_loss: _Optional[float] = ..., n_simulations: _Optional[int] = ...) -> None: ...

class PortfolioLeg(_message.Message):
    __slots__ = ("symbol", "strategy_cfg", "weight")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_CFG_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    strategy_cfg: _config_pb2.StrategyConfig
    weight: float
    def __init__(self, symbol: _Optional[str] = ..., strategy_cfg: _Optional[_Union[_config_pb2.StrategyConfig, _Mapping]] = ..., weight: _Optional[float] = ...) -> None: ...

class RunPortfolioBacktestRequest(_message.Message):
    __slots__ = ("dataset_cfg", "legs", "rebalance_frequency", "max_positions", "position_sizing_method", "backtest_cfg", "portfolio_name", "description", "persist", "request_id", "task_id")
    DATASET_CFG_FIELD_NUMBER: _ClassVar[int]
    LEGS_FIELD_NUMBER: _ClassVar[int]
    REBALANCE_FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    POSITION_SIZING_METHOD_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_CFG_FIELD_NUMBER: _ClassVar[int]
    PORTFOLIO_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PERSIST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_cfg: _config_pb2.DatasetConfig
    legs: _containers.RepeatedCompositeFieldContainer[PortfolioLeg]
    rebalance_frequency: str
    max_positions: int
    position_sizing_method: str
    backtest_cfg: _config_pb2.BacktestConfig
    portfolio_name: str
    description: str
    persist: bool
    request_id: str
    task_id: str
    def __init__(self, dataset_cfg: _Optional[_Union[_config_pb2.DatasetConfig, _Mapping]] = ..., legs: _Optional[_Iterable[_Union[PortfolioLeg, _Mapping]]] = ..., rebalance_frequency: _Optional[str] = ..., max_positions: _Optional[int] = ..., position_sizing_method: _Optional[str] = ..., backtest_cfg: _Optional[_Union[_config_pb2.BacktestConfig, _Mapping]] = ..., portfolio_name: _Optional[str] = ..., description: _Optional[str] = ..., persist: _Optional[bool] = ..., request_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class RunPortfolioBacktestResponse(_message.Message):
    __slots__ = ("portfolio_backtest_id", "metrics", "dates", "equity", "weights_held")
    PORTFOLIO_BACKTEST_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    DATES_FIELD_NUMBER: _ClassVar[int]
    EQUITY_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_HELD_FIELD_NUMBER: _ClassVar[int]
    portfolio_backtest_id: str
    metrics: _arrays_pb2.MetricSet
    dates: _containers.RepeatedScalarFieldContainer[str]
    equity: _arrays_pb2.Array
    weights_held: _arrays_pb2.Matrix
    def __init__(self, portfolio_backtest_id: _Optional[str] = ..., metrics: _Optional[_Union[_arrays_pb2.MetricSet, _Mapping]] = ..., dates: _Optional[_Iterable[str]] = ..., equity: _Optional[_Union[_arrays_pb2.Array, _Mapping]] = ..., weights_held: _Optional[_Union[_arrays_pb2.Matrix, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("params_json", "kind")
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    params_json: str
    kind: str
    def __init__(self, params_json: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

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
