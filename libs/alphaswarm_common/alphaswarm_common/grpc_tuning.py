"""Channel and server options that both ends of every call must agree on.

Keepalive. A client pings an idle connection every `keepalive_seconds` so a
dead peer is noticed during a long call (a 20-minute fit sends no data). A
server counts a ping that comes sooner than its minimum interval after the
last one (with no data sent in between) as a strike, and after two strikes
answers GOAWAY `too_many_pings`, which kills the call. gRPC's server default
minimum is 5 minutes, so clients pinging every 30 s lost any call longer than
about two minutes. Both ends are now configured from the same
`GrpcTuning`: the server accepts pings every `min_ping_seconds`, which must
not exceed the clients' `keepalive_seconds` (checked on construction).

Message sizes per RPC. A method whose request (or response) carries packed
arrays (`bytes` fields, at any depth) is *bulk* and may use up to
`bulk_message_bytes`; every other method is *control* and is held to
`control_message_bytes`. Clients carry the per-method limits in their service
config (`maxRequestMessageBytes` / `maxResponseMessageBytes`), so an
oversized request is refused before it is sent; a server's channel limit is
the largest limit among the methods it serves, and its interceptor refuses a
control request over the control limit (RESOURCE_EXHAUSTED) before the
handler runs.

Retries. Every method of our services is retried on UNAVAILABLE (a
connection reset, a server restarting) with exponential backoff, per gRPC's
retry policy; the stage-level retries of long work live in the saga.

Replicas. A service's address is a DNS name (`dns:///backtester:50051`; a bare
`host:port` is dialled as that) that may resolve to several replicas (a
Kubernetes headless Service, several A records). The service config's
`loadBalancingConfig` is `round_robin`: the client connects to every address
and spreads calls over the ready ones, instead of gRPC's default `pick_first`,
which sends everything to the first address. A retry after UNAVAILABLE goes
to the next ready replica. Servers close a connection after
`max_connection_age_seconds` (calls in flight finish: no grace limit), so
clients re-resolve the name and start using replicas added since.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from google.protobuf import descriptor as _descriptor

__all__ = [
    "GrpcTuning",
    "MethodLimits",
    "client_options",
    "method_limits",
    "server_options",
    "service_names",
]

MIB = 1024 * 1024


@dataclass(frozen=True)
class GrpcTuning:
    """Keepalive, message-size and retry settings shared by servers and clients."""

    keepalive_seconds: float = 30.0
    keepalive_timeout_seconds: float = 20.0
    min_ping_seconds: float = 10.0
    control_message_bytes: int = 32 * MIB
    bulk_message_bytes: int = 512 * MIB
    retry_attempts: int = 4
    retry_initial_backoff_seconds: float = 0.2
    retry_max_backoff_seconds: float = 5.0
    max_connection_age_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.keepalive_seconds <= 0 or self.min_ping_seconds <= 0:
            raise ValueError("grpc_keepalive_seconds and grpc_min_ping_seconds must be positive")
        if self.min_ping_seconds > self.keepalive_seconds:
            raise ValueError(
                "grpc_min_ping_seconds must not exceed grpc_keepalive_seconds: a server that accepts pings "
                "less often than clients send them closes long calls with GOAWAY too_many_pings"
            )
        if self.control_message_bytes > self.bulk_message_bytes:
            raise ValueError("grpc_control_message_mb must not exceed grpc_max_message_mb")
        if self.max_connection_age_seconds <= 0:
            raise ValueError("grpc_max_connection_age_seconds must be positive")
        if not 2 <= self.retry_attempts <= 5:
            raise ValueError("grpc_retry_attempts must be between 2 and 5 (gRPC's retry policy bounds)")

    @classmethod
    def from_settings(cls, settings: Any) -> GrpcTuning:
        return cls(
            keepalive_seconds=settings.grpc_keepalive_seconds,
            keepalive_timeout_seconds=settings.grpc_keepalive_timeout_seconds,
            min_ping_seconds=settings.grpc_min_ping_seconds,
            control_message_bytes=settings.grpc_control_message_mb * MIB,
            bulk_message_bytes=settings.grpc_max_message_mb * MIB,
            retry_attempts=settings.grpc_retry_attempts,
            max_connection_age_seconds=settings.grpc_max_connection_age_seconds,
        )


@dataclass(frozen=True)
class MethodLimits:
    """The largest request and response one method may carry, in bytes."""

    request: int
    response: int


def _carries_bytes(message: _descriptor.Descriptor, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a message holds a `bytes` field at any depth (packed arrays, Arrow IPC)."""
    if message.full_name in seen:
        return False
    seen = seen | {message.full_name}
    for field in message.fields:
        if field.type == _descriptor.FieldDescriptor.TYPE_BYTES:
            return True
        if field.message_type is not None and _carries_bytes(field.message_type, seen):
            return True
    return False


@cache
def _service_descriptors() -> tuple[_descriptor.ServiceDescriptor, ...]:
    """Every AlphaSwarm gRPC service (imports the generated modules once)."""
    from alphaswarm.backtester.v1 import backtester_service_pb2
    from alphaswarm.gateway.v1 import gateway_service_pb2
    from alphaswarm.persistence.v1 import persistence_service_pb2
    from alphaswarm.registry.v1 import registry_service_pb2
    from alphaswarm.trainer.v1 import trainer_service_pb2

    modules = (
        trainer_service_pb2,
        registry_service_pb2,
        backtester_service_pb2,
        persistence_service_pb2,
        gateway_service_pb2,
    )
    return tuple(svc for m in modules for svc in m.DESCRIPTOR.services_by_name.values())


def service_names() -> list[str]:
    return [svc.full_name for svc in _service_descriptors()]


def _methods(services: Iterable[str] | None = None) -> Iterator[_descriptor.MethodDescriptor]:
    wanted = None if services is None else set(services)
    for svc in _service_descriptors():
        if wanted is None or svc.full_name in wanted:
            yield from svc.methods


def method_limits(tuning: GrpcTuning, services: Iterable[str] | None = None) -> dict[str, MethodLimits]:
    """`/pkg.Service/Method` -> its limits, for the named services (all of ours when None)."""

    def limit(message: _descriptor.Descriptor) -> int:
        return tuning.bulk_message_bytes if _carries_bytes(message) else tuning.control_message_bytes

    return {
        f"/{m.containing_service.full_name}/{m.name}": MethodLimits(limit(m.input_type), limit(m.output_type))
        for m in _methods(services)
    }


def _service_config(tuning: GrpcTuning) -> str:
    retry = {
        "maxAttempts": tuning.retry_attempts,
        "initialBackoff": f"{tuning.retry_initial_backoff_seconds}s",
        "maxBackoff": f"{tuning.retry_max_backoff_seconds}s",
        "backoffMultiplier": 3,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    configs = [
        {
            "name": [{"service": path.split("/")[1], "method": path.split("/")[2]}],
            "maxRequestMessageBytes": limits.request,
            "maxResponseMessageBytes": limits.response,
            "retryPolicy": retry,
        }
        for path, limits in method_limits(tuning).items()
    ]
    # round_robin: a target that resolves to several addresses (a multi-address `ipv4:` target,
    # a DNS name of several replicas) spreads the calls over all of them.
    return json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": configs})


def client_options(tuning: GrpcTuning) -> list[tuple[str, Any]]:
    """Options of a client channel: keepalive pings, per-method limits, retries and round-robin
    balancing over every address of the target (service config)."""
    return [
        ("grpc.max_send_message_length", tuning.bulk_message_bytes),
        ("grpc.max_receive_message_length", tuning.bulk_message_bytes),
        ("grpc.keepalive_time_ms", int(tuning.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(tuning.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 1),
        ("grpc.per_rpc_retry_buffer_size", tuning.control_message_bytes),
        ("grpc.service_config", _service_config(tuning)),
    ]


def server_options(tuning: GrpcTuning, services: Iterable[str]) -> list[tuple[str, Any]]:
    """Options of a server of `services`: accepts the clients' pings; limits sized to its methods."""
    limits = list(method_limits(tuning, services).values())
    receive = max((lim.request for lim in limits), default=tuning.control_message_bytes)
    send = max((lim.response for lim in limits), default=tuning.control_message_bytes)
    return [
        ("grpc.max_send_message_length", send),
        ("grpc.max_receive_message_length", receive),
        ("grpc.keepalive_time_ms", int(tuning.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(tuning.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(tuning.min_ping_seconds * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.so_reuseport", 0),
        ("grpc.max_connection_age_ms", int(tuning.max_connection_age_seconds * 1000)),
    ]
