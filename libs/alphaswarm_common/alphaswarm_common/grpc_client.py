"""gRPC client helpers: channels with raised limits, deadlines on every call,
and status codes turned back into domain errors.

`call(stub.Method, request, timeout=...)` is the one way services call each
other: a call without a deadline is a bug, so `timeout` is required. A failed
call raises the `AlphaSwarmError` subclass of its status code, keeping the
field named in the `BadRequest` detail and the `ErrorInfo` reason, so an
INVALID_ARGUMENT two hops away still names the field that caused it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2

from alphaswarm_common.auth import ClientCredentials, aio_bearer_interceptors, bearer_interceptor
from alphaswarm_common.errors import AlphaSwarmError, DependencyUnavailable, Timeout, error_from_code
from alphaswarm_common.grpc_tuning import GrpcTuning, client_options
from alphaswarm_common.telemetry import aio_client_interceptors, client_interceptor

__all__ = ["aio_call", "aio_channel", "aio_stream", "call", "channel", "error_from_rpc"]

R = TypeVar("R")


def _options(tuning: GrpcTuning | None, credentials: ClientCredentials | None) -> list[tuple[str, Any]]:
    options = client_options(tuning or GrpcTuning())
    if credentials is not None and credentials.tls is not None and credentials.server_name:
        options.append(("grpc.ssl_target_name_override", credentials.server_name))
    return options


def channel(
    address: str, *, tuning: GrpcTuning | None = None, credentials: ClientCredentials | None = None
) -> grpc.Channel:
    """A client channel whose keepalive, per-method limits and retries agree with our servers;
    TLS with this process's certificate and a bearer token when `credentials` say so."""
    options = _options(tuning, credentials)
    if credentials is not None and credentials.tls is not None:
        ch = grpc.secure_channel(address, credentials.tls, options=options)
    else:
        ch = grpc.insecure_channel(address, options=options)
    interceptors: list[Any] = [client_interceptor()]  # the trace context and log fields travel
    if credentials is not None and credentials.bearer:
        interceptors.append(bearer_interceptor(credentials))
    return grpc.intercept_channel(ch, *interceptors)


def aio_channel(
    address: str, *, tuning: GrpcTuning | None = None, credentials: ClientCredentials | None = None
) -> grpc.aio.Channel:
    options = _options(tuning, credentials)
    interceptors = [
        *aio_client_interceptors(),
        *(aio_bearer_interceptors(credentials) if credentials is not None and credentials.bearer else ()),
    ]
    if credentials is not None and credentials.tls is not None:
        return grpc.aio.secure_channel(address, credentials.tls, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


def error_from_rpc(exc: grpc.RpcError | grpc.aio.AioRpcError, *, target: str = "") -> AlphaSwarmError:
    """The domain error of a failed call."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = exc.details() if hasattr(exc, "details") else str(exc)
    field = None
    reason = None
    details: dict[str, Any] = {}
    status = _rich_status(exc)
    if status is not None:
        violations = []
        for any_detail in status.details:
            if any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                any_detail.Unpack(info)
                reason = info.reason or None
                details.update(dict(info.metadata))
            elif any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                any_detail.Unpack(bad)
                violations = [{"field": v.field, "description": v.description} for v in bad.field_violations]
        if violations:
            field = violations[0]["field"] or None
            details["violations"] = violations
    name = code.name if code is not None else "UNKNOWN"
    if name == "UNAVAILABLE":
        return DependencyUnavailable(
            f"{target or 'service'} unavailable: {message}", reason=reason, details=details
        )
    if name == "DEADLINE_EXCEEDED":
        return Timeout(f"{target or 'call'} exceeded its deadline: {message}", details=details)
    err = error_from_code(name, message or name, field=None, reason=reason, details=details)
    # The message of a domain error already names the field ("field: message"); keep it as sent.
    err.field = None
    if field:
        err.details.setdefault("field", field)
        err.field_from_remote = field  # type: ignore[attr-defined]
    return err


def _rich_status(exc: Any) -> status_pb2.Status | None:
    """The google.rpc.Status in the trailers (`grpc-status-details-bin`) of a sync or aio error."""
    try:
        trailers = exc.trailing_metadata() or ()
    except Exception:  # pragma: no cover - errors without trailers
        return None
    for key, value in trailers:
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:  # pragma: no cover - malformed trailers
                return None
            return status
    return None


def remote_field(exc: AlphaSwarmError) -> str | None:
    return getattr(exc, "field_from_remote", None) or exc.field


def call(method: Callable[..., R], request: Any, *, timeout: float, target: str = "") -> R:
    """Invoke a unary method with a deadline; raise the domain error of a failed call."""
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as exc:
        raise error_from_rpc(exc, target=target) from None


async def aio_call(method: Callable[..., Any], request: Any, *, timeout: float, target: str = "") -> Any:
    """Invoke a unary aio method with a deadline; raise the domain error of a failed call."""
    try:
        return await method(request, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, target=target) from None


async def aio_stream(
    method: Callable[..., Any], request: Any, *, timeout: float, target: str = ""
) -> AsyncGenerator[Any, None]:
    """Iterate a server-streaming aio method under one deadline for the whole stream;
    raise the domain error of a failed call. Leaving the iteration early (or being
    cancelled) cancels the call, so the server sees the caller go."""
    stream = method(request, timeout=timeout)
    try:
        async for item in stream:
            yield item
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, target=target) from None
    finally:
        stream.cancel()
