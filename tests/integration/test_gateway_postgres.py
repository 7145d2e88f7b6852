"""The REST gateway over real services with the catalog on PostgreSQL.

* `Idempotency-Key` on job endpoints: the same body twice is one task, another body with the
  same key is 409 (the key's fingerprint is a SHA-256, not the request itself);
* a database outage (the test database refuses connections and its sessions are terminated)
  makes catalog reads 503 with `Retry-After`, `/readyz` 503 naming the database, and the
  persistence service answer UNAVAILABLE without any database text; reads recover after.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy.engine import make_url

from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as pb_grpc
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOURCE = {
    "dataset_cfg": {"source": "sp500", "start_date": "2014-01-01", "end_date": "2016-12-31"},
    "symbols": ["AAPL"],
}


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Stack:
    def __init__(self, client: TestClient, settings: Settings, database_url: str, admin_url: str) -> None:
        self.client = client
        self.settings = settings
        self.database_url = database_url
        self.admin_url = admin_url

    @property
    def database(self) -> str:
        return str(make_url(self.database_url).database)

    def set_connections(self, *, allowed: bool) -> None:
        """Open or close the test database to new connections; closing also ends its sessions."""
        with psycopg.connect(_libpq(self.admin_url), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(self.database), sql.SQL("true" if allowed else "false")
                )
            )
            if not allowed:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (self.database,),
                )


@pytest.fixture(scope="module")
def stack(
    pg_database_factory: Callable[[], str], pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    from alphaswarm.embedded import start_services
    from alphaswarm_gateway.core import bootstrap
    from alphaswarm_gateway.rest import create_app

    url = pg_database_factory()
    home: Path = tmp_path_factory.mktemp("gateway-pg")
    settings = Settings(
        home=home, database_url=url, mlflow_tracking_uri=None, nats_url=None, gateway_addr=None, grpc_port=0
    )
    settings, servers, tracker = start_services(settings)
    app = create_app(settings, gateway=bootstrap(settings, tracker=tracker), serve_grpc=False)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Stack(client, settings, url, pg_admin_url)
    finally:
        for server in servers:
            server.stop(0)


def _post(stack: Stack, path: str, doc: dict[str, Any], key: str) -> Any:
    return stack.client.post(path, json=doc, headers={"Idempotency-Key": key})


def test_idempotency_key_replays_the_task_and_refuses_another_body(stack: Stack) -> None:
    key = f"it-{uuid.uuid4()}"
    doc = {
        "source": SOURCE,
        "strategy_cfg": {"type": "sma_cross", "params": {"fast_period": 10, "slow_period": 30}},
    }
    first = _post(stack, "/backtests", doc, key)
    assert first.status_code == 202, first.text
    again = _post(stack, "/backtests", doc, key)
    assert again.status_code == 202, again.text
    assert again.json()["task_id"] == first.json()["task_id"]

    other = {**doc, "strategy_cfg": {"type": "sma_cross", "params": {"fast_period": 5, "slow_period": 30}}}
    conflict = _post(stack, "/backtests", other, key)
    assert conflict.status_code == 409, conflict.text
    error = conflict.json()["error"]
    assert error["reason"] == "REQUEST_ID_REUSED"
    assert error["details"]["field"] == "request_id"

    # Every job endpoint stores its key the same way.
    mc_key = f"it-{uuid.uuid4()}"
    mc = {"returns": [0.01, -0.02, 0.015, 0.003] * 30, "n_simulations": 50, "seed": 3}
    a = _post(stack, "/monte-carlo", mc, mc_key)
    b = _post(stack, "/monte-carlo", mc, mc_key)
    assert a.status_code == b.status_code == 202, (a.text, b.text)
    assert a.json()["task_id"] == b.json()["task_id"]
    assert _post(stack, "/monte-carlo", {**mc, "seed": 4}, mc_key).status_code == 409


def test_a_database_outage_is_503_and_readyz_names_the_database(stack: Stack) -> None:
    assert stack.client.get("/backtests").status_code == 200
    ready = stack.client.get("/readyz")
    assert ready.status_code == 200, ready.json()
    assert ready.json()["database"] == "SERVING"

    stack.set_connections(allowed=False)
    try:
        resp = stack.client.get("/backtests", headers={"X-Request-ID": "outage-1"})
        assert resp.status_code == 503, resp.text
        assert int(resp.headers["retry-after"]) > 0
        error = resp.json()["error"]
        assert error["code"] == "UNAVAILABLE"
        assert error["reason"] == "DATABASE_UNAVAILABLE"
        assert error["details"]["request_id"] == "outage-1"
        assert error["details"]["dependency"] == "database"
        for leaked in ("SELECT", "127.0.0.1", "5432", stack.database, "psycopg"):
            assert leaked not in resp.text

        assert stack.client.get("/backtests/summary").status_code == 503
        ready = stack.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"] == "NOT_SERVING"
        assert ready.json()["persistence"] == "NOT_SERVING"
        assert ready.json()["backtester"] == "SERVING"

        assert stack.settings.persistence_addr
        ch = channel(stack.settings.persistence_addr)
        try:
            with pytest.raises(grpc.RpcError) as raised:
                pb_grpc.PersistenceServiceStub(ch).ListBacktestResults(
                    pb.ListBacktestResultsRequest(), timeout=30
                )
        finally:
            ch.close()
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "SELECT" not in raised.value.details() and stack.database not in raised.value.details()
    finally:
        stack.set_connections(allowed=True)

    assert stack.client.get("/backtests").status_code == 200
    assert stack.client.get("/readyz").json()["database"] == "SERVING"
