"""gRPC server bootstrap, written once for every service.

`serve()` starts a threaded server and `serve_aio()` an asyncio one; both
register `grpc.health.v1` (SERVING for every service) and reflection, size
the message limits to the methods served and accept the clients' keepalive
pings (`grpc_tuning`), install the observing interceptor (trace context, log fields, RPC metrics:
`telemetry`) and the error interceptor, bind the requested port
(0 picks a free one) and return `(server, port)` without blocking.
`run_until_signal()` is the process entry's loop: on SIGTERM/SIGINT health
turns NOT_SERVING and the server stops with a grace period.

The error interceptor turns `AlphaSwarmError` into its status code with
`google.rpc` details (`ErrorInfo{reason, domain}` and `BadRequest` naming the
field); anything else becomes INTERNAL with the exception's message.

`auth` (alphaswarm_common.auth.ServerAuth) adds the authorization
interceptor (every method checked against its role); `credentials`
(alphaswarm_common.tls.server_credentials) makes the port TLS, with client
certificates required for the internal services.
"""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from alphaswarm_common.auth import AioAuthInterceptor, AuthInterceptor, ServerAuth
from alphaswarm_common.errors import AlphaSwarmError, RequestTooLarge
from alphaswarm_common.grpc_handlers import rewrap
from alphaswarm_common.grpc_tuning import GrpcTuning, method_limits, server_options
from alphaswarm_common.telemetry import AioServerObserver, ServerObserver

__all__ = ["ServiceRegistration", "run_until_signal", "serve", "serve_aio", "status_for"]

log = logging.getLogger(__name__)
ERROR_DOMAIN = "alphaswarm.dev"


@dataclass(frozen=True)
class ServiceRegistration:
    """A servicer and how to add it: `add(servicer, server)` and its full service name.

    `probes` are readiness checks by name (`{"database": db.ping}`): the threaded server's health
    answers NOT_SERVING for "" and for the service while one fails, and each probe is a health
    service of its own name (`Check(service="database")`).
    """

    add: Callable[[Any, Any], None]
    servicer: Any
    name: str
    probes: Mapping[str, Callable[[], bool]] = field(default_factory=dict)


class _ProbingHealthServicer(health.HealthServicer):
    """grpc.health.v1 whose answers for "" and the probed services run their probes."""

    def __init__(self, services: Sequence[ServiceRegistration]) -> None:
        super().__init__(experimental_non_blocking=True)
        self._by_service = {s.name: dict(s.probes) for s in services if s.probes}
        self._by_probe = {name: probe for s in services for name, probe in s.probes.items()}

    def Check(self, request, context):  # type: ignore[no-untyped-def]
        serving = health_pb2.HealthCheckResponse.SERVING
        probe = self._by_probe.get(request.service)
        if probe is not None:
            ok = _run_probe(request.service, probe)
            return health_pb2.HealthCheckResponse(
                status=serving if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            )
        response = super().Check(request, context)
        if response.status == serving:
            probes = self._by_service.get(request.service, {}) if request.service else self._by_probe
            if not all(_run_probe(name, p) for name, p in probes.items()):
                return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        return response


def _run_probe(name: str, probe: Callable[[], bool]) -> bool:
    try:
        return bool(probe())
    except Exception:
        log.exception("health probe %s failed", name)
        return False


def _request_limits(services: Sequence[ServiceRegistration], tuning: GrpcTuning) -> dict[str, int]:
    """Methods whose channel limit is larger than their own: `/pkg.Svc/Method` -> request limit."""
    limits = method_limits(tuning, [s.name for s in services])
    ceiling = max((lim.request for lim in limits.values()), default=0)
    return {path: lim.request for path, lim in limits.items() if lim.request < ceiling}


def _check_size(method: str, request: Any, limits: dict[str, int]) -> None:
    limit = limits.get(method)
    if limit is not None and hasattr(request, "ByteSize") and request.ByteSize() > limit:
        raise RequestTooLarge(
            f"the request ({request.ByteSize()} bytes) is larger than {method}'s limit of {limit} bytes",
            field="request",
        )


def ensure_caller_waiting(context: Any, what: str) -> None:
    """Refuse to save `what` when the caller is gone (it cancelled, or its deadline passed):
    nobody would read the result, and a retry of the caller must not find it half-saved."""
    if context is None or not hasattr(context, "is_active"):
        return
    remaining = context.time_remaining() if hasattr(context, "time_remaining") else None
    if not context.is_active() or (remaining is not None and remaining <= 0):
        from alphaswarm_common.errors import Timeout

        raise Timeout(f"the caller is gone (cancelled or past its deadline); {what} not saved")


def status_for(exc: BaseException) -> status_pb2.Status:
    """The google.rpc.Status of an exception (domain errors keep their code and field)."""
    if isinstance(exc, AlphaSwarmError):
        code = getattr(code_pb2, exc.grpc_code, code_pb2.INTERNAL)
        message = str(exc)
        info = error_details_pb2.ErrorInfo(
            reason=exc.reason,
            domain=ERROR_DOMAIN,
            metadata={k: str(v) for k, v in exc.details.items() if isinstance(v, str | int | float | bool)},
        )
        details = [info]
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=v.get("field", ""), description=v.get("description", "")
            )
            for v in exc.details.get("violations", [])
            if isinstance(v, dict)
        ]
        if exc.field and not violations:
            violations = [
                error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=exc.message)
            ]
        if violations:
            details.append(error_details_pb2.BadRequest(field_violations=violations))
    else:
        code = code_pb2.INTERNAL
        message = f"{type(exc).__name__}: {exc}"
        details = [error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN)]
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=code, message=message, details=packed)


def _answerable(method: str, exc: BaseException) -> AlphaSwarmError:
    """The error a caller may read: a domain error as it is (logged at info); anything else is
    logged in full under a new error id and answered INTERNAL naming only that id (an unexpected
    exception's text can carry SQL, parameters, paths or hosts)."""
    if isinstance(exc, AlphaSwarmError):
        log.info("%s -> %s: %s", method, exc.grpc_code, exc)
        return exc
    error_id = uuid.uuid4().hex[:12]
    log.error("%s failed (error id %s)", method, error_id, exc_info=exc)
    return AlphaSwarmError(f"internal error (error id {error_id})", details={"error_id": error_id})


class _ErrorInterceptor(grpc.ServerInterceptor):
    def __init__(self, request_limits: dict[str, int] | None = None) -> None:
        self._limits = request_limits or {}

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        limits = self._limits

        def unary(behavior):  # type: ignore[no-untyped-def]
            def wrapper(request, context):  # type: ignore[no-untyped-def]
                try:
                    _check_size(method, request, limits)
                    return behavior(request, context)
                except Exception as exc:
                    if isinstance(exc, grpc.RpcError) and context.code() is not None:
                        raise
                    context.abort_with_status(rpc_status.to_status(status_for(_answerable(method, exc))))

            return wrapper

        def streaming(behavior):  # type: ignore[no-untyped-def]
            def wrapper(request, context):  # type: ignore[no-untyped-def]
                try:
                    _check_size(method, request, limits)
                    yield from behavior(request, context)
                except Exception as exc:
                    context.abort_with_status(rpc_status.to_status(status_for(_answerable(method, exc))))

            return wrapper

        return rewrap(handler, unary, streaming)


class _AioErrorInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, request_limits: dict[str, int] | None = None) -> None:
        self._limits = request_limits or {}

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        limits = self._limits

        def unary(behavior):  # type: ignore[no-untyped-def]
            async def wrapper(request, context):  # type: ignore[no-untyped-def]
                try:
                    _check_size(method, request, limits)
                    return await behavior(request, context)
                except Exception as exc:
                    if isinstance(exc, grpc.aio.AbortError):
                        raise
                    await context.abort_with_status(
                        rpc_status.to_status(status_for(_answerable(method, exc)))
                    )

            return wrapper

        def streaming(behavior):  # type: ignore[no-untyped-def]
            async def wrapper(request, context):  # type: ignore[no-untyped-def]
                try:
                    _check_size(method, request, limits)
                    async for item in behavior(request, context):
                        yield item
                except Exception as exc:
                    if isinstance(exc, grpc.aio.AbortError):
                        raise
                    await context.abort_with_status(
                        rpc_status.to_status(status_for(_answerable(method, exc)))
                    )

            return wrapper

        return rewrap(handler, unary, streaming)


def _register(server: Any, services: Sequence[ServiceRegistration], health_servicer: Any) -> None:
    for svc in services:
        svc.add(svc.servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [svc.name for svc in services]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)


def _bind(server: Any, host: str, port: int, credentials: grpc.ServerCredentials | None = None) -> int:
    address = f"{host}:{port}"
    bound = (
        server.add_secure_port(address, credentials)
        if credentials is not None
        else server.add_insecure_port(address)
    )
    if bound == 0:
        raise OSError(f"could not bind gRPC server to {host}:{port}")
    return bound


def serve(
    services: Sequence[ServiceRegistration],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_workers: int = 8,
    tuning: GrpcTuning | None = None,
    auth: ServerAuth | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, int]:
    """Start a threaded gRPC server with health and reflection; return (server, bound port)."""
    tuning = tuning or GrpcTuning()
    names = [s.name for s in services]
    interceptors: list[grpc.ServerInterceptor] = [
        ServerObserver(),  # outermost: sees the status the error interceptor answers
        _ErrorInterceptor(_request_limits(services, tuning)),
    ]
    if auth is not None:
        interceptors.append(AuthInterceptor(auth))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=interceptors,
        options=server_options(tuning, names),
    )
    health_servicer = _ProbingHealthServicer(services)
    _register(server, services, health_servicer)
    bound = _bind(server, host, port, credentials)
    server.start()
    _set_health(health_servicer, services, health_pb2.HealthCheckResponse.SERVING)
    server.health_servicer = health_servicer  # type: ignore[attr-defined]
    server.service_names = [s.name for s in services]  # type: ignore[attr-defined]
    return server, bound


async def serve_aio(
    services: Sequence[ServiceRegistration],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tuning: GrpcTuning | None = None,
    auth: ServerAuth | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start an asyncio gRPC server with health and reflection; return (server, bound port)."""
    from grpc_health.v1 import _async as health_async

    tuning = tuning or GrpcTuning()
    interceptors: list[grpc.aio.ServerInterceptor] = [
        AioServerObserver(),
        _AioErrorInterceptor(_request_limits(services, tuning)),
    ]
    if auth is not None:
        interceptors.append(AioAuthInterceptor(auth))
    server = grpc.aio.server(
        interceptors=interceptors, options=server_options(tuning, [s.name for s in services])
    )
    health_servicer = health_async.HealthServicer()
    _register(server, services, health_servicer)
    bound = _bind(server, host, port, credentials)
    await server.start()
    for name in ["", *(s.name for s in services)]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    server.health_servicer = health_servicer  # type: ignore[attr-defined]
    server.service_names = [s.name for s in services]  # type: ignore[attr-defined]
    return server, bound


def _set_health(health_servicer: Any, services: Iterable[ServiceRegistration], status: int) -> None:
    for name in ["", *(s.name for s in services)]:
        health_servicer.set(name, status)


def mark_not_serving(server: grpc.Server) -> None:
    hs = getattr(server, "health_servicer", None)
    if hs is not None:
        for name in ["", *getattr(server, "service_names", [])]:
            hs.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)


def run_until_signal(server: grpc.Server, *, grace: float = 5.0) -> None:
    """Block until SIGTERM/SIGINT, then report NOT_SERVING and stop with `grace` seconds."""
    stop = threading.Event()

    def _handler(signum: int, _frame: Any) -> None:
        log.info("signal %s: draining", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    stop.wait()
    mark_not_serving(server)
    server.stop(grace).wait()
