"""Clients spread calls over every replica of a service (round_robin in the service config) and
keep working with mutual TLS when the target names several addresses.

A real DNS name with two A records is not available on a test machine. The target
`ipv4:127.0.0.1:P,127.0.0.2:P` hands the client the same thing a DNS resolver hands it for a
Kubernetes headless Service (one name, two addresses): the load-balancing policy under test
(round_robin over the resolved address list) is the same code path; only the resolver differs.
`dns:///localhost:P` checks that DNS targets still verify the server's certificate by host name.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from alphaswarm_common.grpc_client import channel, target
from alphaswarm_common.grpc_tuning import GrpcTuning, client_options, server_options
from alphaswarm_common.settings import Settings
from alphaswarm_common.tls import client_credentials, make_certs, server_credentials

pytestmark = pytest.mark.unit
ECHO = "/test.Replica/Who"


class _Replica:
    """A gRPC server answering `Who` with its own name, bound to one loopback address."""

    def __init__(self, name: str, host: str, port: int, credentials: Any = None) -> None:
        from concurrent import futures

        self.name = name
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4), options=server_options(GrpcTuning(), [])
        )
        handler = grpc.unary_unary_rpc_method_handler(lambda request, context: name.encode())
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Replica", {"Who": handler}),)
        )
        address = f"{host}:{port}"
        bound = (
            self.server.add_secure_port(address, credentials)
            if credentials is not None
            else self.server.add_insecure_port(address)
        )
        if bound == 0:
            raise OSError(f"cannot bind {address}")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0)


def _pair(credentials: Any = None) -> tuple[list[_Replica], int]:
    """Two replicas on 127.0.0.1:P and 127.0.0.2:P (one port, as pods of one Service)."""
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            first = _Replica("a", "127.0.0.1", port, credentials)
        except (OSError, RuntimeError):
            continue
        try:
            return [first, _Replica("b", "127.0.0.2", port, credentials)], port
        except (OSError, RuntimeError):
            first.stop()
    raise OSError("no port free on both 127.0.0.1 and 127.0.0.2")


def _who(ch: grpc.Channel, n: int) -> Counter[str]:
    call = ch.unary_unary(ECHO)
    return Counter(call(b"", timeout=10, wait_for_ready=True).decode() for _ in range(n))


def test_service_config_balances_round_robin_and_servers_age_connections() -> None:
    config = json.loads(dict(client_options(GrpcTuning()))["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert all(m["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"] for m in config["methodConfig"])
    assert (
        dict(server_options(GrpcTuning(max_connection_age_seconds=42), []))["grpc.max_connection_age_ms"]
        == 42000
    )
    with pytest.raises(ValueError, match="max_connection_age"):
        GrpcTuning(max_connection_age_seconds=0)


def test_addresses_are_dns_targets_by_default() -> None:
    assert target("backtester:50051") == "dns:///backtester:50051"
    assert target("127.0.0.1:5") == "dns:///127.0.0.1:5"
    assert target("[::1]:5") == "dns:///[::1]:5"
    for given in ("dns:///backtester:50051", "ipv4:127.0.0.1:1,127.0.0.2:1", "unix:/run/x.sock"):
        assert target(given) == given


def test_calls_spread_over_every_address_of_one_target() -> None:
    replicas, port = _pair()
    try:
        with channel(f"ipv4:127.0.0.1:{port},127.0.0.2:{port}") as ch:
            counts = _who(ch, 40)
            # round_robin: both replicas serve, in turn (pick_first would send all 40 to one).
            assert set(counts) == {"a", "b"}
            assert abs(counts["a"] - counts["b"]) <= 2, counts
            # One replica goes away: every call still succeeds, on the other.
            replicas[0].stop()
            assert _who(ch, 10) == Counter({"b": 10})
    finally:
        for r in replicas:
            r.stop()


def test_pick_first_would_not_spread(tmp_path: Path) -> None:
    """The default policy, for contrast: the same two replicas, one of them gets everything."""
    replicas, port = _pair()
    try:
        options = [o for o in client_options(GrpcTuning()) if o[0] != "grpc.service_config"]
        with grpc.insecure_channel(f"ipv4:127.0.0.1:{port},127.0.0.2:{port}", options=options) as ch:
            assert len(_who(ch, 20)) == 1
    finally:
        for r in replicas:
            r.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    make_certs(d, services=["backtester", "gateway"])
    return d


def _settings(certs: Path, me: str, **extra: Any) -> Settings:
    return Settings(
        tls_ca=certs / "ca.pem", tls_cert=certs / f"{me}.pem", tls_key=certs / f"{me}.key", **extra
    )


def test_mutual_tls_over_several_addresses_checks_the_service_name(certs: Path) -> None:
    replicas, port = _pair(server_credentials(_settings(certs, "backtester")))
    try:
        # Several addresses, one service: the certificate is checked against the service's name.
        credentials = client_credentials(_settings(certs, "gateway", tls_server_name="backtester"))
        with channel(f"ipv4:127.0.0.1:{port},127.0.0.2:{port}", credentials=credentials) as ch:
            assert set(_who(ch, 20)) == {"a", "b"}
        # Without an override, a static list of replicas is checked for the service it serves.
        mine = client_credentials(_settings(certs, "gateway"))
        with channel(f"ipv4:127.0.0.1:{port},127.0.0.2:{port}", credentials=mine, service="backtester") as ch:
            assert set(_who(ch, 20)) == {"a", "b"}
        with channel(f"ipv4:127.0.0.1:{port},127.0.0.2:{port}", credentials=mine, service="trainer") as ch:
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary(ECHO)(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # A DNS target is verified against its host name (the certificate names localhost).
        with channel(f"localhost:{port}", credentials=client_credentials(_settings(certs, "gateway"))) as ch:
            assert set(_who(ch, 4)) <= {"a"}
        # ... and a name the certificate does not hold is refused.
        wrong = client_credentials(_settings(certs, "gateway", tls_server_name="registry"))
        with channel(f"ipv4:127.0.0.1:{port}", credentials=wrong) as ch:
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary(ECHO)(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        for r in replicas:
            r.stop()
