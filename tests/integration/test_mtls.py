"""Service-to-service trust over mutual TLS, with real gRPC servers on sockets: certificates from
`alphaswarm auth make-certs`, a persistence service requiring client certificates, a registry
calling it over mTLS. A caller without a client certificate, with one from another CA, over
plaintext, or trusting another CA is refused; a certificate naming a known service is role
`service`; one naming anything else gets no more than its bearer token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm.registry.v1 import registry_service_pb2 as rpb
from alphaswarm.registry.v1 import registry_service_pb2_grpc as rpb_grpc
from alphaswarm_common.auth import ClientCredentials, hash_token, new_token
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.grpc_server import serve
from alphaswarm_common.healthcheck import check
from alphaswarm_common.service import server_security
from alphaswarm_common.settings import Settings
from alphaswarm_common.tls import client_credentials, make_certs

pytestmark = pytest.mark.integration


def _tls(certs: Path, name: str, **extra: Any) -> Settings:
    return Settings(
        tls_ca=certs / "ca.pem", tls_cert=certs / f"{name}.pem", tls_key=certs / f"{name}.key", **extra
    )


class Servers:
    def __init__(self, root: Path) -> None:
        self.certs = root / "certs"
        self.other = root / "other-ca"
        make_certs(self.certs)
        make_certs(self.certs, services=["intruder"])  # same CA, not a service
        make_certs(self.other)
        from alphaswarm_persistence import server as persistence_server

        home = root / "home"
        self.persistence_settings = _tls(self.certs, "persistence", home=home, auth="tokens")
        regs = persistence_server.build(self.persistence_settings)
        auth, creds = server_security(self.persistence_settings, regs)
        assert creds is not None
        self.persistence, port = serve(regs, auth=auth, credentials=creds)
        self.persistence_addr = f"127.0.0.1:{port}"

        from alphaswarm_common.tracking import Tracker
        from alphaswarm_registry import server as registry_server

        registry_settings = _tls(
            self.certs,
            "registry",
            home=home,
            auth="tokens",
            persistence_addr=self.persistence_addr,
        )
        tracker = Tracker(f"sqlite:///{home / 'mlflow.db'}", artifact_root=(home / "art").as_uri())
        regs = registry_server.build(registry_settings, tracker=tracker)
        auth, creds = server_security(registry_settings, regs)
        self.registry, port = serve(regs, auth=auth, credentials=creds)
        self.registry_addr = f"127.0.0.1:{port}"

    def persistence_stub(self, credentials: ClientCredentials | None) -> ppb_grpc.PersistenceServiceStub:
        return ppb_grpc.PersistenceServiceStub(channel(self.persistence_addr, credentials=credentials))

    def stop(self) -> None:
        self.registry.stop(0).wait()
        self.persistence.stop(0).wait()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = Servers(tmp_path_factory.mktemp("mtls"))
    try:
        yield s
    finally:
        s.stop()


def _code(fn: Any) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_a_known_service_certificate_is_role_service(servers: Servers) -> None:
    stub = servers.persistence_stub(client_credentials(_tls(servers.certs, "gateway")))
    task = stub.CreateTask(ppb.CreateTaskRequest(task=resources_pb2.Task(kind="backtest")), timeout=10).task
    assert stub.GetTask(ppb.GetTaskRequest(task_id=task.task_id), timeout=10).task.kind == "backtest"


def test_the_registry_reaches_persistence_over_mtls(servers: Servers) -> None:
    stub = rpb_grpc.RegistryServiceStub(
        channel(servers.registry_addr, credentials=client_credentials(_tls(servers.certs, "gateway")))
    )
    reply = stub.ListDeployments(rpb.ListDeploymentsRequest(), timeout=30)
    assert list(reply.deployments) == []


def test_a_caller_without_a_client_certificate_is_refused(servers: Servers) -> None:
    ca_only = ClientCredentials(
        tls=grpc.ssl_channel_credentials(root_certificates=(servers.certs / "ca.pem").read_bytes())
    )
    stub = servers.persistence_stub(ca_only)
    assert (
        _code(lambda: stub.GetTask(ppb.GetTaskRequest(task_id=""), timeout=10)) == grpc.StatusCode.UNAVAILABLE
    )


def test_a_certificate_from_another_ca_is_refused(servers: Servers) -> None:
    foreign = ClientCredentials(
        tls=grpc.ssl_channel_credentials(
            root_certificates=(servers.certs / "ca.pem").read_bytes(),  # trusts the server...
            private_key=(servers.other / "gateway.key").read_bytes(),  # ...but its cert is another CA's
            certificate_chain=(servers.other / "gateway.pem").read_bytes(),
        )
    )
    stub = servers.persistence_stub(foreign)
    assert (
        _code(lambda: stub.GetTask(ppb.GetTaskRequest(task_id=""), timeout=10)) == grpc.StatusCode.UNAVAILABLE
    )


def test_plaintext_and_a_server_from_another_ca_are_refused(servers: Servers) -> None:
    plain = servers.persistence_stub(None)
    assert (
        _code(lambda: plain.GetTask(ppb.GetTaskRequest(task_id=""), timeout=10))
        == grpc.StatusCode.UNAVAILABLE
    )
    wrong_root = servers.persistence_stub(
        client_credentials(
            Settings(
                tls_ca=servers.other / "ca.pem",
                tls_cert=servers.certs / "gateway.pem",
                tls_key=servers.certs / "gateway.key",
            )
        )
    )
    assert (
        _code(lambda: wrong_root.GetTask(ppb.GetTaskRequest(task_id=""), timeout=10))
        == grpc.StatusCode.UNAVAILABLE
    )


def test_a_certificate_naming_no_service_gets_only_its_token(servers: Servers) -> None:
    intruder = _tls(servers.certs, "intruder")
    anonymous = servers.persistence_stub(client_credentials(intruder))
    assert (
        _code(lambda: anonymous.ListBacktestResults(ppb.ListBacktestResultsRequest(), timeout=10))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    service = servers.persistence_stub(client_credentials(_tls(servers.certs, "gateway")))
    token = new_token()
    service.CreateApiToken(
        ppb.CreateApiTokenRequest(name="intruder-viewer", role="viewer", token_hash=hash_token(token)),
        timeout=10,
    )
    viewer = servers.persistence_stub(client_credentials(intruder, bearer=token))
    assert list(viewer.ListBacktestResults(ppb.ListBacktestResultsRequest(), timeout=10).results) == []
    assert (
        _code(lambda: viewer.CreateTask(ppb.CreateTaskRequest(task=resources_pb2.Task(kind="x")), timeout=10))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    (created,) = [
        e
        for e in service.ListAuditLog(
            ppb.ListAuditLogRequest(target_id="intruder-viewer"), timeout=10
        ).entries
        if e.action == "token.create"
    ]
    assert (created.subject, created.role) == ("gateway", "service")


def test_health_checks_need_the_certificate_too(servers: Servers) -> None:
    assert check(servers.persistence_addr, credentials=client_credentials(_tls(servers.certs, "trainer")))
    assert not check(servers.persistence_addr)
