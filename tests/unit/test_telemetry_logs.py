"""Logs, trace propagation and RPC metrics of `alphaswarm_common` (JSON formatter, W3C trace
context and baggage in gRPC metadata, the observing server interceptors over loopback sockets)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from alphaswarm_common import logging_json, service_metrics, telemetry
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.grpc_client import aio_channel, channel
from alphaswarm_common.grpc_server import ServiceRegistration, serve, serve_aio

pytestmark = pytest.mark.unit

METHOD = "/alphaswarm.echo.v1.EchoService/Echo"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.configure_tracing("test", exporter=exporter)
    try:
        yield exporter
    finally:
        telemetry.shutdown_tracing()


def _seen() -> bytes:
    """What the server's handler sees: its trace id and its bound log fields."""
    return json.dumps({"trace_id": telemetry.current_trace_id(), **logging_json.bound()}).encode()


def _echo(request: bytes, context: Any) -> bytes:
    if request == b"bad":
        raise InvalidArgument("bad request", field="payload")
    return _seen()


async def _aio_echo(request: bytes, context: Any) -> bytes:
    return _echo(request, context)


def _registration(handler: Any) -> ServiceRegistration:
    rpc = grpc.unary_unary_rpc_method_handler(handler)
    generic = grpc.method_handlers_generic_handler("alphaswarm.echo.v1.EchoService", {"Echo": rpc})
    return ServiceRegistration(
        add=lambda _servicer, server: server.add_generic_rpc_handlers((generic,)),
        servicer=None,
        name="alphaswarm.echo.v1.EchoService",
    )


@pytest.fixture
def echo() -> Iterator[Any]:
    server, port = serve([_registration(_echo)], port=0)
    ch = channel(f"127.0.0.1:{port}")
    try:
        yield ch.unary_unary(METHOD)
    finally:
        ch.close()
        server.stop(0).wait()


def _sample(name: str, labels: dict[str, str]) -> float:
    value = service_metrics.REGISTRY.get_sample_value(name, labels)
    return float(value or 0.0)


def test_json_lines_carry_bound_fields_trace_and_extras(spans: InMemorySpanExporter) -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging_json.JsonFormatter())
    logger = logging.getLogger("test.observability.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with logging_json.bind(run_id="r-1", task_id="t-1", stage="train"), telemetry.span("work"):
            trace_id, span_id = telemetry.current_ids()
            logger.info("hello %s", "world", extra={"rows": 3})
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed")
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    first, second, third = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert first["message"] == "hello world" and first["level"] == "info" and first["rows"] == 3
    assert (first["run_id"], first["task_id"], first["stage"]) == ("r-1", "t-1", "train")
    assert (first["trace_id"], first["span_id"]) == (trace_id, span_id) and len(trace_id) == 32
    assert "service" in first and first["logger"] == "test.observability.json"
    assert "ValueError: boom" in second["exc_info"]
    assert "run_id" not in third and "trace_id" not in third


def test_text_lines_append_the_ids() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "message", (), None)
    with logging_json.bind(run_id="r-9"):
        line = logging_json.TextFormatter().format(record)
    assert line.endswith("message [run_id=r-9]")


def test_tracing_off_is_a_shared_null_context() -> None:
    telemetry.shutdown_tracing()
    assert not telemetry.enabled()
    assert telemetry.span("a") is telemetry.span("b")
    with telemetry.span("a"):
        assert telemetry.current_ids() == ("", "")


def test_inject_extract_round_trip_carries_trace_and_log_fields(spans: InMemorySpanExporter) -> None:
    with logging_json.bind(run_id="r-2", task_id="t-2"), telemetry.span("root"):
        trace_id = telemetry.current_trace_id()
        headers = telemetry.inject()
    assert headers["traceparent"].split("-")[1] == trace_id
    with telemetry.continued(headers, "consume"):
        assert telemetry.current_trace_id() == trace_id
        assert logging_json.bound()["run_id"] == "r-2"
    consume = next(s for s in spans.get_finished_spans() if s.name == "consume")
    root = next(s for s in spans.get_finished_spans() if s.name == "root")
    assert consume.kind == SpanKind.CONSUMER and consume.parent.span_id == root.context.span_id


def test_grpc_call_continues_the_callers_trace_and_log_fields(echo: Any, spans: InMemorySpanExporter) -> None:
    before = _sample(
        "alphaswarm_rpc_server_duration_seconds_count", {"service": "echo", "method": METHOD, "code": "OK"}
    )
    with logging_json.bind(run_id="r-3", task_id="t-3", stage="predict"), telemetry.span("caller"):
        trace_id = telemetry.current_trace_id()
        seen = json.loads(echo(b"hi", timeout=10))
    assert seen == {
        "trace_id": trace_id,
        "service": "echo",
        "run_id": "r-3",
        "task_id": "t-3",
        "stage": "predict",
    }
    server = next(s for s in spans.get_finished_spans() if s.name == METHOD.lstrip("/"))
    caller = next(s for s in spans.get_finished_spans() if s.name == "caller")
    assert server.kind == SpanKind.SERVER and server.parent.span_id == caller.context.span_id
    assert server.attributes["rpc.grpc.status_code"] == "OK"
    after = _sample(
        "alphaswarm_rpc_server_duration_seconds_count", {"service": "echo", "method": METHOD, "code": "OK"}
    )
    assert after == before + 1


def test_grpc_errors_are_counted_by_code(echo: Any, spans: InMemorySpanExporter) -> None:
    labels = {"service": "echo", "method": METHOD, "code": "INVALID_ARGUMENT"}
    before = _sample("alphaswarm_rpc_server_errors_total", labels)
    with pytest.raises(grpc.RpcError) as info:
        echo(b"bad", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _sample("alphaswarm_rpc_server_errors_total", labels) == before + 1
    server = next(s for s in spans.get_finished_spans() if s.name == METHOD.lstrip("/"))
    assert server.attributes["rpc.grpc.status_code"] == "INVALID_ARGUMENT"


def test_log_fields_travel_without_tracing(echo: Any) -> None:
    telemetry.shutdown_tracing()
    with logging_json.bind(run_id="r-4"):
        seen = json.loads(echo(b"hi", timeout=10))
    assert seen["run_id"] == "r-4" and seen["trace_id"] == ""


def test_aio_server_and_channel_propagate_too(spans: InMemorySpanExporter) -> None:
    async def main() -> tuple[dict[str, Any], str]:
        server, port = await serve_aio([_registration(_aio_echo)], port=0)
        ch = aio_channel(f"127.0.0.1:{port}")
        try:
            with logging_json.bind(task_id="t-5"), telemetry.span("aio-caller"):
                trace_id = telemetry.current_trace_id()
                reply = await ch.unary_unary(METHOD)(b"hi", timeout=10)
            return json.loads(reply), trace_id
        finally:
            await ch.close()
            await server.stop(0)

    seen, trace_id = asyncio.run(main())
    assert seen["trace_id"] == trace_id and seen["task_id"] == "t-5"


def test_settings_choose_the_log_format_and_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from alphaswarm_common.observability import log_format
    from alphaswarm_common.settings import Settings

    assert log_format(Settings(), "json") == "json"
    assert log_format(Settings(), "text") == "text"  # the CLI's default
    monkeypatch.setenv("ALPHASWARM_LOG_FORMAT", "json")
    assert log_format(Settings(), "text") == "json"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert telemetry.tracing_endpoint(Settings().otlp_endpoint) == "http://collector:4318/v1/traces"
    assert telemetry.tracing_endpoint("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
    assert telemetry.tracing_endpoint("") is None


def test_configure_text_keeps_the_readable_line() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logging_json.configure("text", service="cli", level=logging.WARNING)
        handler = next(h for h in root.handlers if getattr(h, "_alphaswarm", False))
        assert isinstance(handler.formatter, logging_json.TextFormatter)
        logging_json.configure("json")
        assert [h for h in root.handlers if getattr(h, "_alphaswarm", False)] == [handler]
        assert isinstance(handler.formatter, logging_json.JsonFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging_json.set_service("alphaswarm")


def test_service_label_names_the_bounded_context() -> None:
    assert telemetry.service_label("/alphaswarm.trainer.v1.TrainerService/Train") == "trainer"
    assert telemetry.service_label("/grpc.health.v1.Health/Check") == "grpc.health.v1.Health"
