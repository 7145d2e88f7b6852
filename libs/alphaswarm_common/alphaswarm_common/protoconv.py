"""Conversions between the wire types (protos) and the domain types.

Arrays travel as one packed buffer (`Array{dtype, shape, data}`), never as
`repeated double`. Config messages mirror the pydantic models field by field,
so they convert through their JSON form; scalar fields with a non-zero default
are `optional` in the protos, so an explicit 0 or false survives the trip.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar, overload

import numpy as np
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from pydantic import BaseModel, ValidationError

from alphaswarm.common.v1 import arrays_pb2, config_pb2, resources_pb2
from alphaswarm_common import config as cfg
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.protoranges import check_message_doc

__all__ = [
    "RUN_STATE_NAMES",
    "TERMINAL_RUN_STATES",
    "array_from_proto",
    "array_to_proto",
    "check_config_ranges",
    "config_from_proto",
    "config_to_proto",
    "dates_from_strings",
    "dates_to_strings",
    "matrix_from_proto",
    "matrix_to_proto",
    "metricset_from_proto",
    "metricset_to_proto",
    "struct_from_dict",
    "struct_to_dict",
    "timestamp_from_datetime",
    "timestamp_to_datetime",
    "validation_error",
]

M = TypeVar("M", bound=BaseModel)

# ----------------------------------------------------------------------------- arrays


def array_to_proto(values: np.ndarray) -> arrays_pb2.Array:
    """Pack an array as little-endian bytes in C order."""
    arr = np.asarray(values)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    arr = np.ascontiguousarray(arr)
    return arrays_pb2.Array(dtype=arr.dtype.str, shape=list(arr.shape), data=arr.tobytes())


def array_from_proto(msg: arrays_pb2.Array, *, field: str = "array") -> np.ndarray:
    """Unpack an `Array`; a buffer that does not match dtype x shape is InvalidArgument."""
    try:
        dtype = np.dtype(msg.dtype or "<f8")
    except TypeError as exc:
        raise InvalidArgument(f"unknown dtype {msg.dtype!r}", field=f"{field}.dtype") from exc
    shape = tuple(int(s) for s in msg.shape)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else 0
    if len(msg.data) != expected:
        raise InvalidArgument(
            f"buffer has {len(msg.data)} bytes, dtype {dtype.str} x shape {shape} needs {expected}",
            field=f"{field}.data",
        )
    if not shape:
        return np.empty(0, dtype=dtype)
    return np.frombuffer(msg.data, dtype=dtype).reshape(shape)


def dates_to_strings(dates: np.ndarray | Sequence[Any]) -> list[str]:
    return [str(d) for d in np.asarray(dates).astype("datetime64[D]")]


def dates_from_strings(values: Iterable[str], *, field: str = "dates") -> np.ndarray:
    try:
        out = np.asarray(list(values), dtype="datetime64[D]")
    except ValueError as exc:
        raise InvalidArgument(f"not an ISO date: {exc}", field=field) from exc
    return out


def matrix_to_proto(
    values: np.ndarray, dates: np.ndarray | Sequence[Any], symbols: Sequence[str]
) -> arrays_pb2.Matrix:
    arr = np.asarray(values)
    if arr.shape != (len(dates), len(symbols)):
        raise ValueError(
            f"matrix shape {arr.shape} does not match ({len(dates)} dates, {len(symbols)} symbols)"
        )
    return arrays_pb2.Matrix(dates=dates_to_strings(dates), symbols=list(symbols), values=array_to_proto(arr))


def matrix_from_proto(
    msg: arrays_pb2.Matrix, *, field: str = "matrix"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return (values (T, N), dates datetime64[D], symbols)."""
    dates = dates_from_strings(msg.dates, field=f"{field}.dates")
    symbols = list(msg.symbols)
    values = array_from_proto(msg.values, field=f"{field}.values")
    if values.shape != (len(dates), len(symbols)):
        raise InvalidArgument(
            f"values have shape {values.shape}, expected ({len(dates)} dates, {len(symbols)} symbols)",
            field=f"{field}.values",
        )
    return values, dates, symbols


# ----------------------------------------------------------------------------- structs & time


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def struct_from_dict(values: Mapping[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if values:
        out.update(_json_safe(dict(values)))
    return out


def struct_to_dict(msg: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(msg)


@overload
def timestamp_from_datetime(value: dt.datetime) -> timestamp_pb2.Timestamp: ...
@overload
def timestamp_from_datetime(value: None) -> None: ...
def timestamp_from_datetime(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def timestamp_to_datetime(ts: timestamp_pb2.Timestamp) -> dt.datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=dt.UTC)


# ----------------------------------------------------------------------------- run states

#: RunState values by their lower-case name as REST, the catalog and the CLI spell them.
RUN_STATE_NAMES: dict[int, str] = {
    resources_pb2.RUN_STATE_UNSPECIFIED: "unspecified",
    resources_pb2.RUN_STATE_PENDING: "pending",
    resources_pb2.RUN_STATE_RUNNING: "running",
    resources_pb2.RUN_STATE_SUCCEEDED: "succeeded",
    resources_pb2.RUN_STATE_FAILED: "failed",
    resources_pb2.RUN_STATE_CANCELLED: "cancelled",
}

#: The states a task or run never leaves.
TERMINAL_RUN_STATES = frozenset(
    {resources_pb2.RUN_STATE_SUCCEEDED, resources_pb2.RUN_STATE_FAILED, resources_pb2.RUN_STATE_CANCELLED}
)

# ----------------------------------------------------------------------------- configs

_CONFIG_MESSAGES: dict[type[BaseModel], type[Message]] = {
    cfg.AlphaBacktestConfig: config_pb2.AlphaBacktestConfig,
    cfg.DatasetConfig: config_pb2.DatasetConfig,
    cfg.ModelConfig: config_pb2.ModelConfig,
    cfg.StrategyConfig: config_pb2.StrategyConfig,
    cfg.BacktestConfig: config_pb2.BacktestConfig,
}


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def config_to_proto(model: BaseModel, *, prefix: str = "") -> Any:
    """Convert a config model to its message (fields left at None stay unset).

    An integer or a string the message cannot hold is InvalidArgument naming the field.
    """
    message_type = _CONFIG_MESSAGES[type(model)]
    doc = _drop_none(model.model_dump(mode="json"))
    check_message_doc(doc, message_type.DESCRIPTOR, prefix=prefix)
    return json_format.ParseDict(doc, message_type(), ignore_unknown_fields=False)


def check_config_ranges(value: Any, prefix: str = "") -> None:
    """Every config model inside `value` (a model, list or dict of them) fits its message.

    Raises InvalidArgument naming the field (dotted from `prefix`) of the first integer out of the
    range of its proto type or string that is not valid Unicode.
    """
    if isinstance(value, BaseModel):
        message_type = _CONFIG_MESSAGES.get(type(value))
        if message_type is not None:
            doc = _drop_none(value.model_dump(mode="json"))
            check_message_doc(doc, message_type.DESCRIPTOR, prefix=prefix)
            return
        for name in type(value).model_fields:
            check_config_ranges(getattr(value, name), f"{prefix}.{name}" if prefix else name)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_config_ranges(item, f"{prefix}[{i}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_config_ranges(item, f"{prefix}.{key}" if prefix else str(key))


def validation_error(exc: ValidationError, *, prefix: str = "") -> InvalidArgument:
    """Turn a pydantic error into InvalidArgument naming the first offending field."""
    errors = exc.errors(include_url=False)
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in first["loc"]).replace(".[", "[")
    field = ".".join(p for p in (prefix, loc) if p) or prefix or None
    msg = str(first["msg"]).removeprefix("Value error, ")
    if not loc:  # a model-level rule: its message starts with the field it is about
        named = re.match(r"([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*) ", msg)
        if named:
            loc = named.group(1)
            field = ".".join(p for p in (prefix, loc) if p)
    details = {
        "violations": [
            {
                "field": ".".join(p for p in (prefix, ".".join(str(x) for x in e["loc"])) if p),
                "description": str(e["msg"]).removeprefix("Value error, "),
            }
            for e in errors
        ]
    }
    return InvalidArgument(msg, field=field, reason="INVALID_CONFIG", details=details)


def config_from_proto(msg: Message, model_type: type[M], *, prefix: str = "") -> M:
    """Convert a config message to its model; validation errors are InvalidArgument naming the field."""
    doc = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    try:
        return model_type.model_validate(doc)
    except ValidationError as exc:
        raise validation_error(exc, prefix=prefix) from exc


# ----------------------------------------------------------------------------- metric sets


def metricset_to_proto(
    values: Mapping[str, float | None],
    reasons: Mapping[str, str] | None = None,
    conventions: Mapping[str, Any] | None = None,
) -> arrays_pb2.MetricSet:
    out = arrays_pb2.MetricSet(
        conventions_json=json.dumps(_json_safe(dict(conventions or {})), sort_keys=True)
    )
    reasons = reasons or {}
    for name, value in values.items():
        mv = out.values[name]
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            mv.reason = reasons.get(name, "undefined")
        else:
            mv.value = float(value)
    return out


def metricset_from_proto(
    msg: arrays_pb2.MetricSet,
) -> tuple[dict[str, float | None], dict[str, str], dict[str, Any]]:
    """Return (values, reasons, conventions)."""
    values: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for name, mv in msg.values.items():
        if mv.HasField("value"):
            values[name] = mv.value
        else:
            values[name] = None
            reasons[name] = mv.reason or "undefined"
    conventions = json.loads(msg.conventions_json) if msg.conventions_json else {}
    return values, reasons, conventions
