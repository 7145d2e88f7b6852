"""Domain errors cross a real gRPC hop with their code, reason and field."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from alphaswarm.registry.v1 import registry_service_pb2 as pb
from alphaswarm.registry.v1 import registry_service_pb2_grpc as pb_grpc
from alphaswarm_common.errors import FailedPrecondition, InvalidArgument, NotFound
from alphaswarm_common.grpc_client import call, channel, remote_field
from alphaswarm_common.grpc_server import ServiceRegistration, mark_not_serving, serve

pytestmark = pytest.mark.unit
NAME = "alphaswarm.registry.v1.RegistryService"


class _Servicer(pb_grpc.RegistryServiceServicer):
    def GetDeployment(self, request, context):  # type: ignore[no-untyped-def]
        raise NotFound(f"deployment {request.deployment_id} does not exist", field="deployment_id")

    def Predict(self, request, context):  # type: ignore[no-untyped-def]
        raise InvalidArgument("not an ISO date", field="start_date")

    def Deploy(self, request, context):  # type: ignore[no-untyped-def]
        raise FailedPrecondition("register first", field="model_version")

    def ListDeployments(self, request, context):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    srv, port = serve([ServiceRegistration(pb_grpc.add_RegistryServiceServicer_to_server, _Servicer(), NAME)])
    ch = channel(f"127.0.0.1:{port}")
    yield srv, ch
    ch.close()
    srv.stop(0)


@pytest.mark.parametrize(
    ("method", "request_", "exc_type", "code", "field"),
    [
        (
            "GetDeployment",
            pb.GetDeploymentRequest(deployment_id="x"),
            NotFound,
            grpc.StatusCode.NOT_FOUND,
            "deployment_id",
        ),
        ("Predict", pb.PredictRequest(), InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, "start_date"),
        (
            "Deploy",
            pb.DeployRequest(),
            FailedPrecondition,
            grpc.StatusCode.FAILED_PRECONDITION,
            "model_version",
        ),
    ],
)
def test_domain_errors_keep_code_and_field(server, method, request_, exc_type, code, field) -> None:  # type: ignore[no-untyped-def]
    _, ch = server
    stub = pb_grpc.RegistryServiceStub(ch)
    with pytest.raises(grpc.RpcError) as raw:
        getattr(stub, method)(request_, timeout=5)
    assert raw.value.code() == code
    assert field in raw.value.details()
    with pytest.raises(exc_type) as err:
        call(getattr(stub, method), request_, timeout=5)
    assert remote_field(err.value) == field


def test_unexpected_error_is_internal_and_names_only_an_error_id(server, caplog) -> None:  # type: ignore[no-untyped-def]
    _, ch = server
    with caplog.at_level("ERROR", logger="alphaswarm_common.grpc_server"):
        with pytest.raises(grpc.RpcError) as raw:
            pb_grpc.RegistryServiceStub(ch).ListDeployments(pb.ListDeploymentsRequest(), timeout=5)
    assert raw.value.code() == grpc.StatusCode.INTERNAL
    details = raw.value.details() or ""
    assert "boom" not in details and "RuntimeError" not in details
    error_id = details.split("error id ")[1].rstrip(")")
    # The text stays in the service's log, under the id the caller was given.
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert logged and "boom" in str(logged[0].exc_info[1])


def test_health_and_reflection(server) -> None:  # type: ignore[no-untyped-def]
    srv, ch = server
    health = health_pb2_grpc.HealthStub(ch)
    assert (
        health.Check(health_pb2.HealthCheckRequest(service=NAME), timeout=5).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    refl = reflection_pb2_grpc.ServerReflectionStub(ch)
    responses = refl.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert NAME in names and "grpc.health.v1.Health" in names
    mark_not_serving(srv)
    assert (
        health.Check(health_pb2.HealthCheckRequest(service=NAME), timeout=5).status
        == health_pb2.HealthCheckResponse.NOT_SERVING
    )
