"""A plaintext side port that serves `grpc.health.v1` and nothing else.

Kubernetes' native gRPC probes (`livenessProbe.grpc`, `readinessProbe.grpc`)
speak plaintext HTTP/2 and cannot present a client certificate, while every
internal service requires mutual TLS on its main port. With
`ALPHASWARM_HEALTH_PORT` set, a service also answers health checks on that
port, from the same health servicer as its main port (so readiness probes such
as the persistence service's database check, and NOT_SERVING during shutdown,
are the same on both). Nothing but `grpc.health.v1.Health` is registered on the
side port: no method of the service can be reached without TLS through it.

Two names are answered:

* `""` (and each service's full name): readiness, as on the main port;
* `"liveness"`: SERVING whenever the process can answer at all. A liveness
  probe must not fail while a dependency (the database) is down, or Kubernetes
  would restart healthy pods in a loop during an outage.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["LIVENESS", "serve_health_port"]

log = logging.getLogger(__name__)

LIVENESS = "liveness"


class _SideHealth(health_pb2_grpc.HealthServicer):
    """Delegates to the main port's health servicer; answers `liveness` itself."""

    def __init__(self, main: Any) -> None:
        self._main = main

    def Check(self, request, context):  # type: ignore[no-untyped-def]
        if request.service == LIVENESS:
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        return self._main.Check(request, context)

    def Watch(self, request, context):  # type: ignore[no-untyped-def]
        if request.service == LIVENESS:
            yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
            return
        yield from self._main.Watch(request, context)


def serve_health_port(main_server: grpc.Server, *, host: str, port: int) -> tuple[grpc.Server, int]:
    """Start the health-only plaintext server beside `main_server` (a `serve()` server);
    return it and its bound port (0 picks a free one)."""
    main_health = getattr(main_server, "health_servicer", None)
    if main_health is None:
        raise ValueError(
            "the main server has no health servicer (start it with alphaswarm_common.grpc_server.serve)"
        )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="grpc-health"))
    health_pb2_grpc.add_HealthServicer_to_server(_SideHealth(main_health), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind the health port to {host}:{port}")
    server.start()
    log.info("grpc.health.v1 (plaintext, health only) on %s:%d", host, bound)
    return server, bound
