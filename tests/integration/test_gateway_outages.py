"""Dependencies going down under a running REST gateway: 503 with Retry-After, `/readyz` says which.

Real servers: the four gRPC services on loopback (SQLite catalog) and a NATS JetStream
server of this test's own (started here so that it can be stopped), the gateway on the
NATS bus and job queue.

* NATS stopped: `/readyz` is 503 with `event_bus: NOT_CONNECTED`; a job submission is 503
  naming the event bus, and the task it had created is withdrawn, not left pending;
* a gRPC service stopped: requests that need it are 503 naming it, `/readyz` shows its status.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alphaswarm_common.settings import Settings
from tests.uvicorn_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Outages:
    def __init__(self, client: TestClient, nats: subprocess.Popen[bytes], servers: dict[str, Any]) -> None:
        self.client = client
        self.nats = nats
        self.servers = servers

    def ready_until(self, key: str, status: str, *, attempts: int = 100) -> dict[str, Any]:
        """`/readyz` once `key` reports `status` (a client notices a lost connection asynchronously)."""
        body: dict[str, Any] = {}
        for _ in range(attempts):
            body = self.client.get("/readyz").json()
            if body.get(key) == status:
                return body
            time.sleep(0.1)
        raise AssertionError(f"/readyz never reported {key}={status}: {body}")


def _start_nats(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("nats-server")
    if exe is None:
        pytest.skip("nats-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import socket

    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("nats-server did not start")
    return proc, f"nats://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def outages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outages]:
    from alphaswarm.embedded import start_services
    from alphaswarm_gateway.core import bootstrap
    from alphaswarm_gateway.rest import create_app

    home = tmp_path_factory.mktemp("outages")
    nats, nats_url = _start_nats(home / "jetstream")
    settings = Settings(
        home=home,
        database_url=None,
        mlflow_tracking_uri=None,
        nats_url=nats_url,
        gateway_addr=None,
        grpc_port=0,
    )
    settings, servers, tracker = start_services(settings)
    named = dict(zip(["persistence", "trainer", "registry", "backtester"], servers, strict=True))
    app = create_app(settings, gateway=bootstrap(settings, tracker=tracker), serve_grpc=False)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Outages(client, nats, named)
    finally:
        for server in servers:
            server.stop(0)
        if nats.poll() is None:
            nats.kill()
            nats.wait(10)


MONTE_CARLO = {"returns": [0.01, -0.02, 0.015, 0.003] * 30, "n_simulations": 50, "seed": 3}


def test_nats_down_is_503_and_the_task_is_withdrawn(outages: Outages) -> None:
    ready = outages.client.get("/readyz")
    assert ready.status_code == 200, ready.json()
    assert outages.client.post("/monte-carlo", json=MONTE_CARLO).status_code == 202

    outages.nats.terminate()
    outages.nats.wait(20)
    body = outages.ready_until("event_bus", "NOT_CONNECTED")
    assert body["ready"] is False
    assert outages.client.get("/readyz").status_code == 503

    key = "outage-mc"
    resp = outages.client.post(
        "/monte-carlo", json={**MONTE_CARLO, "seed": 4}, headers={"Idempotency-Key": key}
    )
    assert resp.status_code == 503, resp.text
    assert int(resp.headers["retry-after"]) > 0
    error = resp.json()["error"]
    assert error["code"] == "UNAVAILABLE"
    assert error["details"]["dependency"] == "event bus"
    assert "nats://" not in resp.text and "127.0.0.1" not in resp.text

    # The refused submission left nothing behind (no task pending forever): the same request
    # again is a new submission, refused again while NATS is down.
    again = outages.client.post(
        "/monte-carlo", json={**MONTE_CARLO, "seed": 4}, headers={"Idempotency-Key": key}
    )
    assert again.status_code == 503, again.text
    assert again.json()["error"]["details"]["dependency"] == "event bus"


def test_a_stopped_grpc_service_is_503_naming_it(outages: Outages) -> None:
    outages.servers["backtester"].stop(0)
    doc = {
        "source": {"dataset_cfg": {"source": "sp500"}, "symbols": ["AAPL"]},
        "strategy_cfg": {"type": "sma_cross"},
    }
    resp = outages.client.post("/backtests", json=doc)
    assert resp.status_code == 503, resp.text
    assert int(resp.headers["retry-after"]) > 0
    assert resp.json()["error"]["details"]["dependency"] == "backtester"
    assert "127.0.0.1" not in resp.text
    body = outages.ready_until("backtester", "UNAVAILABLE")
    assert body["persistence"] == "SERVING" and body["database"] == "SERVING"
