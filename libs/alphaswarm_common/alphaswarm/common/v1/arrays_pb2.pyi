from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Array(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Matrix(_message.Message):
    __slots__ = ("dates", "symbols", "values")
    DATES_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    dates: _containers.RepeatedScalarFieldContainer[str]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    values: Array
    def __init__(self, dates: _Optional[_Iterable[str]] = ..., symbols: _Optional[_Iterable[str]] = ..., values: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...

class Panel(_message.Message):
    __slots__ = ("dates", "symbols", "fields", "fingerprint")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    DATES_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    dates: _containers.RepeatedScalarFieldContainer[str]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    fields: _containers.MessageMap[str, Array]
    fingerprint: str
    def __init__(self, dates: _Optional[_Iterable[str]] = ..., symbols: _Optional[_Iterable[str]] = ..., fields: _Optional[_Mapping[str, Array]] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class MetricValue(_message.Message):
    __slots__ = ("value", "reason")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    value: float
    reason: str
    def __init__(self, value: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class MetricSet(_message.Message):
    __slots__ = ("values", "conventions_json")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetricValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetricValue, _Mapping]] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    CONVENTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    values: _containers.MessageMap[str, MetricValue]
    conventions_json: str
    def __init__(self, values: _Optional[_Mapping[str, MetricValue]] = ..., conventions_json: _Optional[str] = ...) -> None: ...
