"""Traces (OpenTelemetry) across every hop, and the context that travels with a call.

Tracing is on when an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`ALPHASWARM_OTLP_ENDPOINT`; spans go to `<endpoint>/v1/traces` over OTLP/HTTP) or a test
hands `configure_tracing` an exporter. Otherwise it is off and costs nothing: `span()`
returns a shared null context, no SDK is loaded, no span is made, and the instrumentations
(FastAPI; the catalog's SQL hooks) are not installed (`benchmarks/bench_telemetry.py` measures it).

What travels: the W3C trace context (`traceparent`, `tracestate`) and W3C baggage carrying
the log fields (`alphaswarm.run_id`, `alphaswarm.task_id`, `alphaswarm.stage`), in gRPC
metadata (`client_interceptors()`, `aio_client_interceptors()` and the server interceptors
`ServerObserver` / `AioServerObserver`) and in NATS message headers (`inject()` /
`extract()` around publish and consume). A job consumed from the work queue therefore
continues the trace of the request that submitted it, and its log lines name its run
even when tracing is off (baggage needs no SDK).

The server interceptors also time every RPC into the Prometheus histogram of
`service_metrics` (method, code) and bind the log fields of the call.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any
from urllib.parse import quote, unquote

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from alphaswarm_common import logging_json
from alphaswarm_common.service_metrics import observe_rpc

__all__ = [
    "AioServerObserver",
    "ServerObserver",
    "SpanKind",
    "aio_client_interceptors",
    "client_interceptor",
    "configure_tracing",
    "current_ids",
    "current_trace_id",
    "enabled",
    "extract",
    "inject",
    "instrument_fastapi",
    "shutdown_tracing",
    "span",
    "traced_methods",
    "tracing_endpoint",
]

log = logging.getLogger(__name__)
rpc_log = logging.getLogger("alphaswarm.rpc")  # one line a served call (INFO); silence it by level

TRACE_CONTEXT = TraceContextTextMapPropagator()
_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})
_BAGGAGE_PREFIX = "alphaswarm."
_PROPAGATED_FIELDS = ("run_id", "task_id", "stage")
_NOT_TRACED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

_tracer: trace.Tracer | None = None  # None: tracing off
_provider: Any = None
_NULL = contextlib.nullcontext()


# -- configuration --------------------------------------------------------------------------------
def tracing_endpoint(endpoint: str | None) -> str | None:
    """The OTLP/HTTP traces URL of a collector's base endpoint (`http://collector:4318`)."""
    if not endpoint:
        return None
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def configure_tracing(
    service: str,
    *,
    endpoint: str | None = None,
    exporter: Any = None,
    sample_ratio: float = 1.0,
    batch: bool | None = None,
) -> bool:
    """Turn tracing on for this process when `endpoint` or `exporter` is given; off otherwise.

    `exporter` (a SpanExporter, e.g. the SDK's InMemorySpanExporter) is exported to synchronously
    unless `batch`; the OTLP exporter of `endpoint` through a batch processor. Returns whether
    tracing is on. Calling it again replaces the previous provider (tests)."""
    global _tracer, _provider
    shutdown_tracing()
    url = tracing_endpoint(endpoint)
    if exporter is None and url is None:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=url)
        batch = True if batch is None else batch
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"alphaswarm-{service}", "service.namespace": "alphaswarm"}
        ),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    _provider = provider
    _tracer = provider.get_tracer("alphaswarm")
    log.info("tracing on: spans of %s exported to %s", service, url or type(exporter).__name__)
    return True


def configure_from_settings(service: str, settings: Any) -> bool:
    return configure_tracing(
        service, endpoint=settings.otlp_endpoint, sample_ratio=settings.trace_sample_ratio
    )


def shutdown_tracing() -> None:
    """Flush and stop the exporter; tracing is off afterwards."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        with contextlib.suppress(Exception):
            provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


def tracer() -> trace.Tracer | None:
    """The tracer of this process, None when tracing is off."""
    return _tracer


def tracer_provider() -> Any:
    return _provider


# -- spans ----------------------------------------------------------------------------------------
def span(
    name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[Any]:
    """A span around the block (the current one's child), or a shared null context when off."""
    if _tracer is None:
        return _NULL
    return _tracer.start_as_current_span(name, kind=kind, attributes=dict(attributes or {}))


def current_ids() -> tuple[str, str]:
    """(trace id, span id) of the current span in hex, or ("", "") when there is none."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return "", ""
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def current_trace_id() -> str:
    return current_ids()[0]


# -- propagation ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def _baggage_header(items: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{_BAGGAGE_PREFIX}{name}={quote(value, safe='')}" for name, value in items)


@functools.lru_cache(maxsize=4096)
def _baggage_fields(header: str) -> tuple[tuple[str, str], ...]:
    out = []
    for member in header.split(","):
        key, sep, value = member.partition("=")
        name = key.strip().removeprefix(_BAGGAGE_PREFIX)
        if sep and key.strip().startswith(_BAGGAGE_PREFIX) and name in _PROPAGATED_FIELDS:
            out.append((name, unquote(value.split(";", 1)[0].strip())))
    return tuple(out)


def inject(carrier: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """`carrier` (a new dict by default) with the W3C trace context (when tracing is on) and the
    bound log fields as W3C baggage (`alphaswarm.run_id=...`; the header is built once per set
    of values)."""
    out: dict[str, str] = carrier if carrier is not None else {}  # type: ignore[assignment]
    fields = logging_json.current()
    items = tuple((name, fields[name]) for name in _PROPAGATED_FIELDS if fields.get(name))
    if _tracer is not None:
        TRACE_CONTEXT.inject(out)
    if items:
        out["baggage"] = _baggage_header(items)
    return out


def extract(carrier: Mapping[str, str] | None) -> tuple[Any, dict[str, str]]:
    """(the OpenTelemetry context of the caller's span, or None when tracing is off here; the
    log fields) carried by headers or metadata."""
    if not carrier:
        return None, {}
    ctx = TRACE_CONTEXT.extract(carrier) if _tracer is not None and "traceparent" in carrier else None
    header = carrier.get("baggage")
    return ctx, (dict(_baggage_fields(header)) if header else {})


@contextlib.contextmanager
def continued(
    carrier: Mapping[str, str] | None,
    name: str,
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Mapping[str, Any] | None = None,
    **fields: str,
) -> Iterator[None]:
    """Continue the trace and log fields of `carrier` (a message's headers) inside the block."""
    ctx, carried = extract(carrier)
    token = otel_context.attach(ctx) if ctx is not None else None
    try:
        with logging_json.bind(**{**carried, **fields}), span(name, kind=kind, attributes=attributes):
            yield
    finally:
        if token is not None:
            otel_context.detach(token)


# -- gRPC: client ---------------------------------------------------------------------------------
def _with_context(details: Any) -> Any:
    headers = inject()
    if not headers:
        return details
    return details._replace(metadata=[*(details.metadata or ()), *headers.items()])


class _ClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(_with_context(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(_with_context(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(_with_context(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(_with_context(client_call_details), request_iterator)


def client_interceptor() -> Any:
    """Sends the trace context and the log fields with every call of a threaded channel."""
    return _ClientInterceptor()


class _AioUnary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(_with_context(client_call_details), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(_with_context(client_call_details), request)


def aio_client_interceptors() -> list[Any]:
    """The asyncio channel's interceptors that send the trace context and the log fields."""
    return [_AioUnary(), _AioUnaryStream()]


# -- gRPC: server ---------------------------------------------------------------------------------
def service_label(method: str) -> str:
    """`/alphaswarm.trainer.v1.TrainerService/Train` -> `trainer` (the bounded context)."""
    full = method.lstrip("/").split("/", 1)[0]
    parts = full.split(".")
    if len(parts) >= 3 and parts[0] == "alphaswarm":
        return parts[1]
    return full


def _carrier(metadata: Any) -> dict[str, str]:
    return {m.key: m.value for m in metadata or () if m.key in _HEADERS} if metadata else {}


def _code_of(context: Any, failed: bool) -> str:
    code = None
    with contextlib.suppress(Exception):
        code = context.code()
    if code is None:
        return "UNKNOWN" if failed else "OK"
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return str(getattr(code, "name", code))


class _Call:
    """One RPC seen by the server: its log fields, its span and its timing."""

    __slots__ = ("_fields_token", "_otel_token", "_span", "_span_cm", "_start", "method", "service")

    def __init__(self, method: str) -> None:
        self.method = method
        self.service = service_label(method)
        self._span_cm: Any = None
        self._span: Any = None

    def enter(self, metadata: Any) -> None:
        self._start = time.perf_counter()
        carrier = _carrier(metadata)
        fields: dict[str, str] = {}
        self._otel_token = None
        if carrier:
            ctx, fields = extract(carrier)
            if _tracer is not None and ctx is not None:
                self._otel_token = otel_context.attach(ctx)
        self._fields_token = logging_json.push(service=self.service, **fields)
        if _tracer is not None and not self.method.startswith(_NOT_TRACED_PREFIXES):
            name = self.method.lstrip("/")
            rpc_service, _, rpc_method = name.partition("/")
            self._span_cm = _tracer.start_as_current_span(
                name,
                kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": rpc_service, "rpc.method": rpc_method},
                record_exception=False,
                set_status_on_exception=False,
            )
            self._span = self._span_cm.__enter__()
        else:
            self._span_cm = self._span = None

    def exit(self, context: Any, failed: bool) -> None:
        code = _code_of(context, failed)
        seconds = time.perf_counter() - self._start
        observe_rpc(self.service, self.method, code, seconds)
        if rpc_log.isEnabledFor(logging.INFO) and not self.method.startswith(_NOT_TRACED_PREFIXES):
            # One line a call, with the caller's run, task and stage and this call's span.
            rpc_log.info("%s %s in %.1f ms", self.method, code, seconds * 1000.0)
        if self._span_cm is not None:
            self._span.set_attribute("rpc.grpc.status_code", code)
            if code != "OK":
                self._span.set_status(Status(StatusCode.ERROR, code))
            self._span_cm.__exit__(None, None, None)
        logging_json.pop(self._fields_token)
        if self._otel_token is not None:
            otel_context.detach(self._otel_token)


def _rewrap(handler: Any, unary: Callable[[Any], Any], streaming: Callable[[Any], Any]) -> Any:
    from alphaswarm_common.grpc_handlers import rewrap

    return rewrap(handler, unary, streaming)


class ServerObserver(grpc.ServerInterceptor):
    """Threaded server: continues the caller's trace, binds the log fields, times the RPC."""

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata

        def unary(behavior):  # type: ignore[no-untyped-def]
            def wrapper(request, context):  # type: ignore[no-untyped-def]
                call = _Call(method)
                call.enter(metadata)
                failed = True
                try:
                    response = behavior(request, context)
                    failed = False
                    return response
                finally:
                    call.exit(context, failed)

            return wrapper

        def streaming(behavior):  # type: ignore[no-untyped-def]
            def wrapper(request, context):  # type: ignore[no-untyped-def]
                call = _Call(method)
                call.enter(metadata)
                failed = True
                try:
                    yield from behavior(request, context)
                    failed = False
                finally:
                    call.exit(context, failed)

            return wrapper

        return _rewrap(handler, unary, streaming)


class AioServerObserver(grpc.aio.ServerInterceptor):
    """Asyncio server: continues the caller's trace, binds the log fields, times the RPC."""

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata

        def unary(behavior):  # type: ignore[no-untyped-def]
            async def wrapper(request, context):  # type: ignore[no-untyped-def]
                call = _Call(method)
                call.enter(metadata)
                failed = True
                try:
                    response = await behavior(request, context)
                    failed = False
                    return response
                finally:
                    call.exit(context, failed)

            return wrapper

        def streaming(behavior):  # type: ignore[no-untyped-def]
            async def wrapper(request, context):  # type: ignore[no-untyped-def]
                call = _Call(method)
                call.enter(metadata)
                failed = True
                try:
                    async for item in behavior(request, context):
                        yield item
                    failed = False
                finally:
                    call.exit(context, failed)

            return wrapper

        return _rewrap(handler, unary, streaming)


# -- instrumentations -----------------------------------------------------------------------------
def instrument_fastapi(app: Any) -> None:
    """HTTP server spans on the gateway's REST app (the trace of a request starts here), when on."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # No span per ASGI send/receive: an SSE stream would make one per event and heartbeat.
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_provider,
        excluded_urls="/healthz,/readyz,/livez",
        exclude_spans=["receive", "send"],
    )


def traced_methods(system: str) -> Callable[[type[Any]], type[Any]]:
    """Class decorator: a CLIENT span `<system> <method>` around every public method (the MLflow
    tracker's calls to its tracking server); a plain call when tracing is off."""
    import functools
    import inspect

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        span_name = f"{system} {name}"
        attributes = {"alphaswarm.client": system, "code.function.name": name}

        @functools.wraps(fn)
        def traced(*args: Any, **kwargs: Any) -> Any:
            if _tracer is None:
                return fn(*args, **kwargs)
            with _tracer.start_as_current_span(span_name, kind=SpanKind.CLIENT, attributes=attributes):
                return fn(*args, **kwargs)

        return traced

    def decorate(cls: type[Any]) -> type[Any]:
        for name, member in list(vars(cls).items()):
            if name.startswith("_") or not inspect.isfunction(member):
                continue
            setattr(cls, name, wrap(name, member))
        return cls

    return decorate
