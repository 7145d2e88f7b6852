"""Both ends of a call agree on keepalive, per-method message limits and retries.

The long-call tests shorten the keepalive so a call lasting several keepalive
periods runs in seconds: with gRPC's server defaults such a call dies with
GOAWAY `too_many_pings` (the first test shows the failure is real); with the
tuning every server and client takes, it completes.
"""

from __future__ import annotations

import time
from concurrent import futures

import grpc
import pytest

from alphaswarm.backtester.v1 import backtester_service_pb2 as bpb
from alphaswarm.backtester.v1 import backtester_service_pb2_grpc as bpb_grpc
from alphaswarm.common.v1 import config_pb2
from alphaswarm.registry.v1 import registry_service_pb2 as pb
from alphaswarm.registry.v1 import registry_service_pb2_grpc as pb_grpc
from alphaswarm_common.errors import RequestTooLarge
from alphaswarm_common.grpc_client import channel, error_from_rpc, remote_field
from alphaswarm_common.grpc_server import ServiceRegistration, serve
from alphaswarm_common.grpc_tuning import GrpcTuning, client_options, method_limits, server_options
from alphaswarm_common.settings import Settings

pytestmark = pytest.mark.unit
NAME = "alphaswarm.registry.v1.RegistryService"
CALL_SECONDS = 5.0
SHORT = GrpcTuning(keepalive_seconds=0.5, keepalive_timeout_seconds=2.0, min_ping_seconds=0.25)


class _Validating(bpb_grpc.BacktesterServiceServicer):
    def ValidateStrategy(self, request, context):  # type: ignore[no-untyped-def]
        return bpb.ValidateStrategyResponse()


class _Slow(pb_grpc.RegistryServiceServicer):
    def GetDeployment(self, request, context):  # type: ignore[no-untyped-def]
        time.sleep(CALL_SECONDS)
        return pb.GetDeploymentResponse()

    def ListDeployments(self, request, context):  # type: ignore[no-untyped-def]
        return pb.ListDeploymentsResponse()


def _registration() -> ServiceRegistration:
    return ServiceRegistration(pb_grpc.add_RegistryServiceServicer_to_server, _Slow(), NAME)


def _without_retries(tuning: GrpcTuning) -> list[tuple[str, object]]:
    """Our client options minus the retry policy, which would otherwise hide a call cut by GOAWAY."""
    options = [
        (k, v) for k, v in client_options(tuning) if k not in {"grpc.service_config", "grpc.enable_retries"}
    ]
    return [*options, ("grpc.enable_retries", 0)]


def test_long_call_outlives_many_keepalive_periods() -> None:
    srv, port = serve([_registration()], tuning=SHORT)
    ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=_without_retries(SHORT))
    try:
        stub = pb_grpc.RegistryServiceStub(ch)
        stub.GetDeployment(pb.GetDeploymentRequest(deployment_id="d"), timeout=60)
    finally:
        ch.close()
        srv.stop(0)


def test_server_with_grpc_defaults_kills_the_same_call() -> None:
    """The failure the tuning prevents: default server ping policy + pinging client = GOAWAY."""
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_RegistryServiceServicer_to_server(_Slow(), srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    # The same pinging client, without the retry policy that would hide the first failure.
    options = [
        (k, v) for k, v in client_options(SHORT) if k not in {"grpc.service_config", "grpc.enable_retries"}
    ]
    ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[*options, ("grpc.enable_retries", 0)])
    try:
        stub = pb_grpc.RegistryServiceStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetDeployment(pb.GetDeploymentRequest(deployment_id="d"), timeout=60)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "ping" in (info.value.details() or "").lower()
    finally:
        ch.close()
        srv.stop(0)


def test_ends_that_would_disagree_are_refused_by_settings() -> None:
    with pytest.raises(ValueError, match="grpc_min_ping_seconds"):
        Settings(grpc_keepalive_seconds=5, grpc_min_ping_seconds=30)
    with pytest.raises(ValueError, match="grpc_control_message_mb"):
        Settings(grpc_control_message_mb=64, grpc_max_message_mb=32)
    tuning = Settings(grpc_keepalive_seconds=12, grpc_min_ping_seconds=6).grpc_tuning()
    assert dict(server_options(tuning, [NAME]))["grpc.http2.min_ping_interval_without_data_ms"] == 6000
    assert dict(client_options(tuning))["grpc.keepalive_time_ms"] == 12000


def test_limits_follow_what_each_method_carries() -> None:
    t = GrpcTuning(control_message_bytes=1 << 20, bulk_message_bytes=64 << 20)
    limits = method_limits(t)
    # Predict answers a packed matrix; its request is a few dates and a deployment id.
    predict = limits["/alphaswarm.registry.v1.RegistryService/Predict"]
    assert (predict.request, predict.response) == (1 << 20, 64 << 20)
    run = limits["/alphaswarm.backtester.v1.BacktesterService/RunBacktest"]
    assert run.request == 64 << 20
    train = limits["/alphaswarm.trainer.v1.TrainerService/Train"]
    assert (train.request, train.response) == (1 << 20, 1 << 20)
    # A trainer server never accepts bulk messages; a backtester server does.
    trainer = dict(server_options(t, ["alphaswarm.trainer.v1.TrainerService"]))
    assert trainer["grpc.max_receive_message_length"] == 1 << 20
    backtester = dict(server_options(t, ["alphaswarm.backtester.v1.BacktesterService"]))
    assert backtester["grpc.max_receive_message_length"] == 64 << 20


def test_oversized_control_request_is_refused_on_both_ends() -> None:
    small = GrpcTuning(control_message_bytes=1 << 16, bulk_message_bytes=1 << 22)
    big = pb.ListDeploymentsRequest(page_token="x" * (1 << 17))
    srv, port = serve([_registration()], tuning=small)
    try:
        # The client's service config refuses before sending.
        ch = channel(f"127.0.0.1:{port}", tuning=small)
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.RegistryServiceStub(ch).ListDeployments(big, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        pb_grpc.RegistryServiceStub(ch).ListDeployments(pb.ListDeploymentsRequest(), timeout=10)
        ch.close()
        # A registry serves no bulk request: its channel limit is the control limit.
        raw = grpc.insecure_channel(f"127.0.0.1:{port}")
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.RegistryServiceStub(raw).ListDeployments(big, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        raw.close()
    finally:
        srv.stop(0)


def test_server_refuses_control_request_over_its_method_limit() -> None:
    """A backtester accepts bulk RunBacktest requests; its control methods keep the control limit."""
    small = GrpcTuning(control_message_bytes=1 << 16, bulk_message_bytes=1 << 22)
    name = "alphaswarm.backtester.v1.BacktesterService"
    reg = ServiceRegistration(bpb_grpc.add_BacktesterServiceServicer_to_server, _Validating(), name)
    srv, port = serve([reg], tuning=small)
    big = bpb.ValidateStrategyRequest(strategy_cfg=config_pb2.StrategyConfig(type="x" * (1 << 17)))
    raw = grpc.insecure_channel(f"127.0.0.1:{port}")  # no client-side limits
    try:
        stub = bpb_grpc.BacktesterServiceStub(raw)
        with pytest.raises(grpc.RpcError) as info:
            stub.ValidateStrategy(big, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        err = error_from_rpc(info.value)
        assert isinstance(err, RequestTooLarge) and err.http_status == 413
        assert "ValidateStrategy" in str(err) and remote_field(err) == "request"
        stub.ValidateStrategy(bpb.ValidateStrategyRequest(), timeout=10)
    finally:
        raw.close()
        srv.stop(0)
