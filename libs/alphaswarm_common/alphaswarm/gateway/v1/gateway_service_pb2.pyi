from alphaswarm.common.v1 import config_pb2 as _config_pb2
from alphaswarm.common.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CancelRequest(_message.Message):
    __slots__ = ("run_id", "task_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    task_id: str
    def __init__(self, run_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: _resources_pb2.AlphaBacktestRun
    def __init__(self, run: _Optional[_Union[_resources_pb2.AlphaBacktestRun, _Mapping]] = ...) -> None: ...

class StartAlphaBacktestRunRequest(_message.Message):
    __slots__ = ("config", "request_id")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    config: _config_pb2.AlphaBacktestConfig
    request_id: str
    def __init__(self, config: _Optional[_Union[_config_pb2.AlphaBacktestConfig, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class StartAlphaBacktestRunResponse(_message.Message):
    __slots__ = ("task_id", "run_id", "state", "stream_url")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STREAM_URL_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    run_id: str
    state: _resources_pb2.RunState
    stream_url: str
    def __init__(self, task_id: _Optional[str] = ..., run_id: _Optional[str] = ..., state: _Optional[_Union[_resources_pb2.RunState, str]] = ..., stream_url: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAlphaBacktestRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[_resources_pb2.AlphaBacktestRun]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[_resources_pb2.AlphaBacktestRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchAlphaBacktestRunRequest(_message.Message):
    __slots__ = ("task_id", "after_seq")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    after_seq: int
    def __init__(self, task_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class WatchAlphaBacktestRunResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _resources_pb2.ProgressEvent
    def __init__(self, event: _Optional[_Union[_resources_pb2.ProgressEvent, _Mapping]] = ...) -> None: ...
