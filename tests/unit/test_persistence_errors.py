"""The persistence service's errors and health over a real gRPC server on a SQLite catalog.

* a catalog that cannot be opened answers UNAVAILABLE (not INTERNAL), and its health
  (`""` and the `database` probe) says NOT_SERVING;
* an unexpected exception carrying SQL, parameters and a host answers INTERNAL with only an
  error id; the original is in the log under that id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.exc import ProgrammingError

from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as pb_grpc
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.grpc_server import serve
from alphaswarm_common.settings import Settings
from alphaswarm_persistence import server as persistence_server

pytestmark = pytest.mark.unit

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _start(settings: Settings) -> Iterator[tuple[Any, grpc.Channel]]:
    registrations = persistence_server.build(settings)
    server, port = serve(registrations)
    ch = channel(f"127.0.0.1:{port}")
    try:
        yield registrations[0].servicer, ch
    finally:
        ch.close()
        server.stop(0)


@pytest.fixture
def healthy(tmp_path: Path) -> Iterator[tuple[Any, grpc.Channel]]:
    yield from _start(Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'catalog.db'}"))


@pytest.fixture
def broken(tmp_path: Path) -> Iterator[tuple[Any, grpc.Channel]]:
    not_a_file = tmp_path / "catalog.db"
    not_a_file.mkdir()  # SQLite cannot open a folder: every connection fails
    yield from _start(Settings(home=tmp_path, database_url=f"sqlite:///{not_a_file}", migrate_on_start=False))


def _health(ch: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(ch)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status)


def test_a_reachable_catalog_is_serving(healthy: tuple[Any, grpc.Channel]) -> None:
    _, ch = healthy
    assert _health(ch, "") == SERVING
    assert _health(ch, "database") == SERVING
    assert _health(ch, persistence_server.SERVICE_NAME) == SERVING


def test_an_unreachable_catalog_is_unavailable_and_not_serving(broken: tuple[Any, grpc.Channel]) -> None:
    _, ch = broken
    assert _health(ch, "database") == NOT_SERVING
    assert _health(ch, "") == NOT_SERVING
    assert _health(ch, persistence_server.SERVICE_NAME) == NOT_SERVING
    with pytest.raises(grpc.RpcError) as raised:
        pb_grpc.PersistenceServiceStub(ch).ListBacktestResults(pb.ListBacktestResultsRequest(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    details = raised.value.details()
    assert re.fullmatch(r"catalog database unavailable \(error id [0-9a-f]{12}\)", details), details


def test_unexpected_errors_carry_no_database_text(
    healthy: tuple[Any, grpc.Channel], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    servicer, ch = healthy

    def failing(*_: Any, **__: Any) -> Any:
        raise ProgrammingError(
            "SELECT secret FROM mcp_backtest_results WHERE symbol = %(symbol)s",
            {"symbol": "hunter2"},
            Exception('relation "x" does not exist at db.internal:5432'),
        )

    monkeypatch.setattr(servicer.repository, "list_backtest_results", failing)
    with caplog.at_level(logging.ERROR, logger="alphaswarm_common.grpc_server"):
        with pytest.raises(grpc.RpcError) as raised:
            pb_grpc.PersistenceServiceStub(ch).ListBacktestResults(
                pb.ListBacktestResultsRequest(), timeout=10
            )
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    details = raised.value.details()
    match = re.fullmatch(r"internal error \(error id ([0-9a-f]{12})\)", details)
    assert match, details
    trailers = b"".join(v for _, v in raised.value.trailing_metadata() if isinstance(v, bytes))
    for leaked in (b"SELECT", b"hunter2", b"db.internal", b"ProgrammingError"):
        assert leaked not in trailers
    assert match.group(1) in caplog.text and "SELECT secret" in caplog.text
