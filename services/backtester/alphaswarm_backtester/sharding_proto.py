"""Wire form of a chunk of a parameter search (`EvaluateParameterSetsResponse`) and back.

The metrics of a chunk's sets travel as one packed float64 matrix (sets x
`TRIAL_METRICS`, NaN where a metric is undefined) with the reasons of the
undefined ones per set, and the distinct conventions once per chunk. Doubles
round-trip bit for bit, so a merged search equals the one-process search.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Mapping
from typing import Any

import numpy as np

from alphaswarm.backtester.v1 import backtester_service_pb2 as pb
from alphaswarm_backtester.sharding import ChunkEvaluation, SetEvaluation
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.metrics import MetricSet
from alphaswarm_common.protoconv import array_from_proto, array_to_proto, struct_from_dict, struct_to_dict

__all__ = ["SERVED_BY", "chunk_from_proto", "chunk_to_proto"]

#: who evaluated a chunk (reported in the response; the gateway logs it).
SERVED_BY = f"{socket.gethostname()}:{os.getpid()}"


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def chunk_to_proto(chunk: ChunkEvaluation, seconds: float = 0.0) -> pb.EvaluateParameterSetsResponse:
    names: list[str] = []
    for s in chunk.sets:
        if s.metrics is not None:
            names = list(s.metrics.values)
            break
    values = np.full((len(chunk.sets), len(names)), np.nan, dtype=np.float64)
    conventions: list[str] = []
    sets = []
    for i, s in enumerate(chunk.sets):
        msg = pb.EvaluatedSet(parameter_set=s.parameter_set, params=struct_from_dict(s.params))
        if s.metrics is None:
            msg.failed.CopyFrom(pb.SkippedSet(field=s.error_field or "", reason=s.error))
        else:
            for j, name in enumerate(names):
                v = s.metrics.values.get(name)
                if v is not None and math.isfinite(float(v)):
                    values[i, j] = float(v)
            msg.reasons.update(s.metrics.reasons)
            conv = json.dumps(_plain(s.metrics.conventions), sort_keys=True)
            if conv not in conventions:
                conventions.append(conv)
            msg.conventions = conventions.index(conv)
        sets.append(msg)
    return pb.EvaluateParameterSetsResponse(
        first=chunk.first,
        last=chunk.last,
        sets=sets,
        metric_names=names,
        values=array_to_proto(values),
        conventions_json=conventions,
        n_bars=chunk.n_bars,
        periods_per_year=chunk.periods_per_year,
        evaluation=chunk.evaluation,
        execution_time_seconds=seconds,
        served_by=SERVED_BY,
        window_index=chunk.window_index,
        n_windows=chunk.n_windows,
    )


def chunk_from_proto(msg: pb.EvaluateParameterSetsResponse, *, field: str = "chunks") -> ChunkEvaluation:
    names = list(msg.metric_names)
    values = array_from_proto(msg.values, field=f"{field}.values") if msg.sets else np.zeros((0, 0))
    if values.shape != (len(msg.sets), len(names)):
        raise InvalidArgument(
            f"values has shape {values.shape}, expected ({len(msg.sets)}, {len(names)})",
            field=f"{field}.values",
        )
    conventions = [json.loads(c) for c in msg.conventions_json]
    sets = []
    for i, s in enumerate(msg.sets):
        params = struct_to_dict(s.params)
        if s.HasField("failed"):
            sets.append(SetEvaluation(s.parameter_set, params, None, s.failed.field or None, s.failed.reason))
            continue
        if not 0 <= s.conventions < len(conventions):
            raise InvalidArgument(f"conventions index {s.conventions} out of range", field=f"{field}.sets")
        row: dict[str, float | None] = {}
        for j, name in enumerate(names):
            v = float(values[i, j])
            row[name] = None if math.isnan(v) else v
        metrics = MetricSet(values=row, reasons=dict(s.reasons), conventions=conventions[s.conventions])
        sets.append(SetEvaluation(s.parameter_set, params, metrics))
    return ChunkEvaluation(
        first=msg.first,
        last=msg.last,
        sets=tuple(sets),
        n_bars=msg.n_bars,
        periods_per_year=msg.periods_per_year,
        evaluation=msg.evaluation,
        window_index=msg.window_index,
        n_windows=msg.n_windows,
    )
