"""The plaintext health side port (Kubernetes' native gRPC probes): it answers grpc.health.v1
from the main server's health servicer (readiness checks and NOT_SERVING on shutdown included),
answers `liveness` whenever the process answers, and exposes no other method."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from alphaswarm_common.grpc_server import ServiceRegistration, mark_not_serving, serve
from alphaswarm_common.health_port import LIVENESS, serve_health_port

pytestmark = pytest.mark.unit
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _echo(_servicer: Any, server: Any) -> None:
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Echo": handler}),))


def _check(port: int, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return int(reply.status)


def test_side_port_answers_readiness_and_liveness_and_nothing_else() -> None:
    database_up = {"ok": False}
    registration = ServiceRegistration(
        _echo, None, "test.Echo", probes={"database": lambda: database_up["ok"]}
    )
    server, port = serve([registration])
    side, side_port = serve_health_port(server, host="127.0.0.1", port=0)
    try:
        assert side_port not in (0, port)
        # Readiness follows the main server's probes; liveness does not.
        assert _check(side_port) == NOT_SERVING
        assert _check(side_port, "test.Echo") == NOT_SERVING
        assert _check(side_port, LIVENESS) == SERVING
        database_up["ok"] = True
        assert _check(side_port) == SERVING == _check(port)
        assert _check(side_port, "database") == SERVING

        # The service itself answers on its port only.
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            assert ch.unary_unary("/test.Echo/Echo")(b"x", timeout=5) == b"x"
        with grpc.insecure_channel(f"127.0.0.1:{side_port}") as ch:
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary("/test.Echo/Echo")(b"x", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
            with pytest.raises(grpc.RpcError) as err:
                list(ch.stream_stream(reflection)(iter([b""]), timeout=5))
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED

        # SIGTERM: the main server reports NOT_SERVING, so readiness on the side port fails too.
        mark_not_serving(server)
        assert _check(side_port) == NOT_SERVING
        assert _check(side_port, LIVENESS) == SERVING
    finally:
        side.stop(0)
        server.stop(0)


def test_side_port_needs_a_server_with_health() -> None:
    bare = grpc.server(thread_pool=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="health servicer"):
        serve_health_port(bare, host="127.0.0.1", port=0)
