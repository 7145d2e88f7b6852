"""gRPC client helpers: channels with raised limits, deadlines on every call,
and status codes turned back into domain errors.

`call(stub.Method, request, timeout=...)` is the one way services call each
other: a call without a deadline is a bug, so `timeout` is required. A failed
call raises the `AlphaSwarmError` subclass of its status code, keeping the
field named in the `BadRequest` detail and the `ErrorInfo` reason, so an
INVALID_ARGUMENT two hops away still names the field that caused it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2

from alphaswarm_common.auth import ClientCredentials, aio_bearer_interceptors, bearer_interceptor
from alphaswarm_common.errors import AlphaSwarmError, DependencyUnavailable, Timeout, error_from_code
from alphaswarm_common.grpc_tuning import GrpcTuning, client_options
from alphaswarm_common.telemetry import aio_client_interceptors, client_interceptor

__all__ = ["aio_call", "aio_channel", "aio_stream", "call", "channel", "error_from_rpc", "target"]

R = TypeVar("R")


def target(address: str) -> str:
    """The gRPC target of a service address: `host:port` becomes `dns:///host:port`, so the name is
    resolved to every address it has and calls are balanced round-robin over them
    (`grpc_tuning`); a target with a scheme (`dns:`, `ipv4:`, `ipv6:`, `unix:`) is kept as given.

    With TLS the certificate is checked against the host of the address (`trainer` for
    `dns:///trainer:50051`), or against `ALPHASWARM_TLS_SERVER_NAME` when that is set.
    """
    address = address.strip()
    if re.match(r"^[a-z][a-z0-9+.-]*:", address) and not re.match(r"^[^:/]+:\d+$", address):
        return address  # has a scheme (a bare `host:port` also matches `name:`, hence the second test)
    if address.startswith("[") or address.count(":") <= 1:
        return f"dns:///{address}"
    return address  # an unbracketed IPv6 literal: let gRPC parse it


def _address_list(address: str) -> bool:
    """A static list of replica addresses (`ipv4:10.0.0.5:50051,10.0.0.6:50051`)."""
    return address.startswith(("ipv4:", "ipv6:")) and "," in address


def _options(
    tuning: GrpcTuning | None, credentials: ClientCredentials | None, address: str, service: str | None
) -> list[tuple[str, Any]]:
    options = client_options(tuning or GrpcTuning())
    if credentials is not None and credentials.tls is not None:
        # A list of addresses has no host name to check the certificates against: check the
        # name of the service they all serve (every service certificate holds it).
        name = credentials.server_name or (service if _address_list(address) else None)
        if name:
            options.append(("grpc.ssl_target_name_override", name))
    return options


def channel(
    address: str,
    *,
    tuning: GrpcTuning | None = None,
    credentials: ClientCredentials | None = None,
    service: str | None = None,
) -> grpc.Channel:
    """A client channel whose keepalive, per-method limits and retries agree with our servers;
    TLS with this process's certificate and a bearer token when `credentials` say so.

    `address` is a DNS name (`host:port`, `dns:///host:port`) whose addresses are all used,
    round-robin, or a static list of replicas (`ipv4:a:p,b:p`), whose certificates are then
    checked for `service` (e.g. `backtester`)."""
    options = _options(tuning, credentials, address, service)
    if credentials is not None and credentials.tls is not None:
        ch = grpc.secure_channel(target(address), credentials.tls, options=options)
    else:
        ch = grpc.insecure_channel(target(address), options=options)
    interceptors: list[Any] = [client_interceptor()]  # the trace context and log fields travel
    if credentials is not None and credentials.bearer:
        interceptors.append(bearer_interceptor(credentials))
    return grpc.intercept_channel(ch, *interceptors)


def aio_channel(
    address: str,
    *,
    tuning: GrpcTuning | None = None,
    credentials: ClientCredentials | None = None,
    service: str | None = None,
) -> grpc.aio.Channel:
    """The asyncio twin of `channel`."""
    options = _options(tuning, credentials, address, service)
    interceptors = [
        *aio_client_interceptors(),
        *(aio_bearer_interceptors(credentials) if credentials is not None and credentials.bearer else ()),
    ]
    if credentials is not None and credentials.tls is not None:
        return grpc.aio.secure_channel(
            target(address), credentials.tls, options=options, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(target(address), options=options, interceptors=interceptors)


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
