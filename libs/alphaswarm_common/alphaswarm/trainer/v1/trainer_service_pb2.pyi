from alphaswarm.common.v1 import arrays_pb2 as _arrays_pb2
from alphaswarm.common.v1 import config_pb2 as _config_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ValidateTrainingRequest(_message.Message):
    __slots__ = ("dataset_cfg", "model_cfg")
    DATASET_CFG_FIELD_NUMBER: _ClassVar[int]
    MODEL_CFG_FIELD_NUMBER: _ClassVar[int]
    dataset_cfg: _config_pb2.DatasetConfig
    model_cfg: _config_pb2.ModelConfig
    def __init__(self, dataset_cfg: _Optional[_Union[_config_pb2.DatasetConfig, _Mapping]] = ..., model_cfg: _Optional[_Union[_config_pb2.ModelConfig, _Mapping]] = ...) -> None: ...

class ValidateTrainingResponse(_message.Message):
    __slots__ = ("dataset_fingerprint", "n_dates", "n_symbols")
    DATASET_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    N_DATES_FIELD_NUMBER: _ClassVar[int]
    N_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    dataset_fingerprint: str
    n_dates: int
    n_symbols: int
    def __init__(self, dataset_fingerprint: _Optional[str] = ..., n_dates: _Optional[int] = ..., n_symbols: _Optional[int] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("dataset_cfg", "model_cfg", "experiment_id", "parent_run_id", "task_id")
    DATASET_CFG_FIELD_NUMBER: _ClassVar[int]
    MODEL_CFG_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_cfg: _config_pb2.DatasetConfig
    model_cfg: _config_pb2.ModelConfig
    experiment_id: str
    parent_run_id: str
    task_id: str
    def __init__(self, dataset_cfg: _Optional[_Union[_config_pb2.DatasetConfig, _Mapping]] = ..., model_cfg: _Optional[_Union[_config_pb2.ModelConfig, _Mapping]] = ..., experiment_id: _Optional[str] = ..., parent_run_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class TrainResponse(_message.Message):
    __slots__ = ("model_uri", "run_id", "dataset_fingerprint", "feature_names", "metrics", "n_train_rows", "model_sha256")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _arrays_pb2.MetricSet
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_arrays_pb2.MetricSet, _Mapping]] = ...) -> None: ...
    MODEL_URI_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    N_TRAIN_ROWS_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    model_uri: str
    run_id: str
    dataset_fingerprint: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    metrics: _containers.MessageMap[str, _arrays_pb2.MetricSet]
    n_train_rows: int
    model_sha256: str
    def __init__(self, model_uri: _Optional[str] = ..., run_id: _Optional[str] = ..., dataset_fingerprint: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ..., metrics: _Optional[_Mapping[str, _arrays_pb2.MetricSet]] = ..., n_train_rows: _Optional[int] = ..., model_sha256: _Optional[str] = ...) -> None: ...

class TrainWithProgressResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: TrainProgress
    result: TrainResponse
    def __init__(self, progress: _Optional[_Union[TrainProgress, _Mapping]] = ..., result: _Optional[_Union[TrainResponse, _Mapping]] = ...) -> None: ...

class TrainProgress(_message.Message):
    __slots__ = ("step", "pct", "message")
    STEP_FIELD_NUMBER: _ClassVar[int]
    PCT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    step: str
    pct: float
    message: str
    def __init__(self, step: _Optional[str] = ..., pct: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...
