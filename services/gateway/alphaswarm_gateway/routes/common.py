"""What the catalog routes share: the persistence call, the error schema, the JSON of protos.

`persistence(gw, method, request)` is one unary call to `PersistenceService`
over the gateway's asyncio channel with the default deadline; its failures are
the domain errors of `alphaswarm_common.grpc_client.aio_call`, which the app's
exception handler renders as `{"error": {"code", "reason", "message",
"details"}}`. JSON conventions: metric values are numbers or null, series
arrays with null for a missing value, timestamps ISO-8601 UTC, an absent
optional value null; a list answers `{"items": [...], "next_page_token"}` with
a null token on the last page.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from fastapi import Query
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field

from alphaswarm.common.v1 import arrays_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.grpc_client import aio_call
from alphaswarm_common.protoconv import array_from_proto, metricset_from_proto, timestamp_to_datetime
from alphaswarm_gateway.core import Gateway

__all__ = [
    "ERRORS",
    "ErrorBody",
    "ErrorDetail",
    "PageToken",
    "View",
    "array",
    "metrics_view",
    "opt",
    "page",
    "persistence",
    "text",
    "ts",
    "values",
]

PageToken = Annotated[
    str, Query(description="The `next_page_token` of the previous page; empty for the first page.")
]


async def persistence(gw: Gateway, method: str, request: Message) -> Any:
    """One unary call to PersistenceService with the default deadline; failures raise domain errors."""
    return await aio_call(
        getattr(gw.clients.persistence, method),
        request,
        timeout=gw.settings.deadline_default_seconds,
        target="persistence",
    )


class ErrorDetail(BaseModel):
    """The error of a failed request."""

    code: str = Field(description="The gRPC status name (NOT_FOUND, INVALID_ARGUMENT, ...).")
    reason: str = Field(description="A stable UPPER_SNAKE reason.")
    message: str = Field(description="What went wrong, prefixed with the offending field when there is one.")
    details: dict[str, Any] = Field(description="`field` names the offending input; `violations` lists all.")


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The catalog refused a value; `details.field` names it."},
    404: {"model": ErrorBody, "description": "No such resource."},
    422: {"model": ErrorBody, "description": "A malformed parameter or body; `details.field` names it."},
}


class View(BaseModel):
    model_config = ConfigDict(extra="forbid")


def ts(msg: Message, name: str) -> str | None:
    if not msg.HasField(name):
        return None
    value = timestamp_to_datetime(getattr(msg, name))
    return value.isoformat() if value else None


def opt(msg: Message, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def text(value: str) -> str | None:
    return value or None


def values(arr: np.ndarray) -> list[Any]:
    """An array as nested lists with NaN / inf as null (JSON has neither)."""
    data = np.asarray(arr, dtype=np.float64)
    out = data.astype(object)
    out[~np.isfinite(data)] = None
    return list(out.tolist())


def array(msg: Message, name: str, field: str) -> np.ndarray | None:
    if not msg.HasField(name):
        return None
    arr: arrays_pb2.Array = getattr(msg, name)
    return array_from_proto(arr, field=field)


def metrics_view(msg: ppb.BacktestRecord | ppb.PortfolioRecord) -> dict[str, Any]:
    if not msg.HasField("metrics"):
        return {"metrics": {}, "metric_reasons": {}, "conventions": {}}
    values, reasons, conventions = metricset_from_proto(msg.metrics)
    clean = {k: (v if v is None or math.isfinite(v) else None) for k, v in sorted(values.items())}
    return {"metrics": clean, "metric_reasons": dict(sorted(reasons.items())), "conventions": conventions}


def page(items: list[dict[str, Any]], token: str) -> dict[str, Any]:
    return {"items": items, "next_page_token": token or None}


async def backtest_rows(
    gw: Gateway,
    method: str,
    request_type: Callable[..., Message],
    *,
    parent_field: str,
    parent_id: uuid.UUID | None,
    page_size: int,
    page_token: str,
    rows: str,
    view: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """A page of the catalog rows that belong to one backtest (`parent_field` names it; every row,
    newest first, without it): the `List...` call of `method`, its `rows` in `view`."""
    request = request_type(**{parent_field: str(parent_id or "")}, page_size=page_size, page_token=page_token)
    reply = await persistence(gw, method, request)
    return page([view(r) for r in getattr(reply, rows)], reply.next_page_token)


async def one_row(
    gw: Gateway, method: str, request: Message, field: str, view: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    """One catalog row by id: the `Get...` call of `method`, its `field` in `view`."""
    reply = await persistence(gw, method, request)
    return view(getattr(reply, field))
