"""Every RPC a service answers leaves one log line (method, code, duration); probes do not."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.grpc_server import ServiceRegistration, serve

pytestmark = pytest.mark.unit


def _fail(request: bytes, context: Any) -> bytes:
    raise InvalidArgument("no", field="x")


def _methods(_servicer: Any, server: Any) -> None:
    handlers = {
        "Ok": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
        "Bad": grpc.unary_unary_rpc_method_handler(_fail),
        "Many": grpc.unary_stream_rpc_method_handler(lambda request, context: iter([request, request])),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Log", handlers),))


def test_one_line_per_rpc_with_its_code(caplog: pytest.LogCaptureFixture) -> None:
    server, port = serve([ServiceRegistration(_methods, None, "test.Log")])
    try:
        with (
            caplog.at_level(logging.INFO, logger="alphaswarm.rpc"),
            grpc.insecure_channel(f"127.0.0.1:{port}") as ch,
        ):
            assert ch.unary_unary("/test.Log/Ok")(b"secret-payload", timeout=5) == b"secret-payload"
            with pytest.raises(grpc.RpcError):
                ch.unary_unary("/test.Log/Bad")(b"", timeout=5)
            assert list(ch.unary_stream("/test.Log/Many")(b"x", timeout=5)) == [b"x", b"x"]
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        server.stop(1).wait()
    finally:
        server.stop(0)
    lines = [r.getMessage() for r in caplog.records if r.name == "alphaswarm.rpc"]
    assert [line.rsplit(" ", 3)[0] for line in lines] == [
        "/test.Log/Ok OK",
        "/test.Log/Bad INVALID_ARGUMENT",
        "/test.Log/Many OK",
    ]
    assert all(line.endswith(" ms") for line in lines)
    assert not any("secret-payload" in line for line in lines)
