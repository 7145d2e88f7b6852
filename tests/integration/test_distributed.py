"""The alpha-backtest workflow on the distributed topology: every service in its own OS
process (started from deploy/docker-compose.yml), the catalog in PostgreSQL, progress
and jobs on NATS JetStream, MLflow as a tracking server with a PostgreSQL backend.

Checks the REST answers, the SSE stream, a raw nats-py subscription, the gateway's
gRPC API, health and reflection of every service, the MLflow parent/child runs and
the catalog rows, read straight from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from mlflow import MlflowClient

from alphaswarm.gateway.v1 import gateway_service_pb2 as gpb
from alphaswarm.gateway.v1 import gateway_service_pb2_grpc as gpb_grpc
from alphaswarm_common.grpc_client import channel
from tests.e2e.conftest import STAGES, small_run, sse_events
from tests.integration.topology import Topology, require_nats

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NATS_URL = os.environ.get("ALPHASWARM_TEST_NATS_URL", "nats://127.0.0.1:4222")


@pytest.fixture(scope="module")
def topology(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    require_nats(NATS_URL)
    topo = Topology(pg_admin_url=pg_admin_url, nats_url=NATS_URL, workdir=tmp_path_factory.mktemp("topology"))
    try:
        topo.start()
        yield topo
    finally:
        topo.stop()


class RawNats:
    """A plain nats-py subscriber to `alphaswarm.progress.>` on its own thread and loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[dict] = []
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        import nats

        nc = await nats.connect(self.url)
        self._stop = asyncio.Event()

        async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
            self.messages.append({"subject": msg.subject, **json.loads(msg.data)})

        await nc.subscribe("alphaswarm.progress.>", cb=on_msg)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.close()

    def __enter__(self) -> RawNats:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def completed(topology: Topology) -> dict:
    body = yaml.safe_dump(small_run(run_name="distributed-e2e", capture_predictions=True)).encode()
    with RawNats(NATS_URL) as raw:
        resp = httpx.post(
            f"{topology.rest_url}/ml/alpha-backtest-runs",
            content=body,
            headers={"content-type": "application/json", **topology.auth_headers},
            timeout=60,
        )
        assert resp.status_code == 202, resp.text
        accepted = resp.json()
        events = sse_events(topology.rest_url + accepted["stream_url"], headers=topology.auth_headers)
        # The SSE stream and the raw subscription are separate deliveries: wait for the raw
        # subscriber's copy of the terminal event before closing it.
        subject = f"alphaswarm.progress.{accepted['task_id']}"
        deadline = time.time() + 15
        while time.time() < deadline and not any(
            m["subject"] == subject and m["stage"] in ("completed", "failed") for m in raw.messages
        ):
            time.sleep(0.05)
    run = httpx.get(
        f"{topology.rest_url}/ml/alpha-backtest-runs/{accepted['run_id']}",
        headers=topology.auth_headers,
        timeout=30,
    ).json()
    return {"accepted": accepted, "events": events, "run": run, "raw": raw.messages}


def test_run_succeeds_and_stream_shows_every_stage(topology: Topology, completed: dict) -> None:
    run = completed["run"]
    assert run["status"] == "succeeded", json.dumps(run["error"]) + topology.log("gateway")
    stages: list[str] = []
    for e in completed["events"]:
        if not stages or stages[-1] != e["stage"]:
            stages.append(e["stage"])
    assert stages == STAGES
    cm = run["combined_metrics"]
    assert set(cm["ml"]) == {"ic_spearman", "ic_pearson", "icir", "mae", "rmse", "hit_rate"}
    assert set(cm["trading"]) == {
        "sharpe",
        "sortino",
        "calmar",
        "max_drawdown",
        "total_return",
        "turnover_adj_sharpe",
    }


def test_raw_nats_subscriber_sees_every_event(completed: dict) -> None:
    task_id = completed["accepted"]["task_id"]
    mine = [m for m in completed["raw"] if m["subject"] == f"alphaswarm.progress.{task_id}"]
    assert [m["seq"] for m in mine] == [e["seq"] for e in completed["events"]]
    stages = []
    for m in mine:
        if not stages or stages[-1] != m["stage"]:
            stages.append(m["stage"])
    assert stages == STAGES
    assert set(mine[0]) >= {"task_id", "seq", "ts", "stage", "status", "pct", "message", "data"}


def test_late_stream_replays_from_jetstream(topology: Topology, completed: dict) -> None:
    again = sse_events(topology.rest_url + completed["accepted"]["stream_url"], headers=topology.auth_headers)
    assert [e["seq"] for e in again] == [e["seq"] for e in completed["events"]]


def test_mlflow_server_has_parent_and_child_runs(topology: Topology, completed: dict) -> None:
    links = completed["run"]["links"]
    client = MlflowClient(tracking_uri=topology.mlflow_url, registry_uri=topology.mlflow_url)
    parent = client.get_run(links["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert "score" in parent.data.metrics
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert {c.info.run_name for c in children} == {"train", "backtest"}
    mv = client.get_model_version(links["model_name"], links["model_version"])
    assert mv.run_id == links["mlflow_train_run_id"]


def test_catalog_rows_are_in_postgresql(topology: Topology, completed: dict) -> None:
    run = completed["run"]
    url = topology.catalog_url().replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        state, backtest_id, deployment_id, metrics = conn.execute(
            "SELECT state, backtest_id, deployment_id, combined_metrics FROM ml_alpha_backtest_runs WHERE run_id = %s",
            (run["run_id"],),
        ).fetchone()
        assert state == "succeeded"
        assert str(backtest_id) == run["links"]["backtest_id"]
        assert str(deployment_id) == run["links"]["deployment_id"]
        assert metrics["score"] == pytest.approx(run["combined_metrics"]["score"])
        (sharpe, n_trades) = conn.execute(
            "SELECT sharpe_ratio, (SELECT count(*) FROM mcp_backtest_trades t WHERE t.backtest_id = r.backtest_id) "
            "FROM mcp_backtest_results r WHERE backtest_id = %s",
            (backtest_id,),
        ).fetchone()
        assert float(sharpe) == pytest.approx(run["combined_metrics"]["trading"]["sharpe"], abs=1e-4)
        assert n_trades > 0
        (n_audit,) = conn.execute(
            "SELECT count(*) FROM ml_prediction_audit WHERE run_id = %s", (run["run_id"],)
        ).fetchone()
        window = run["combined_metrics"]["window"]
        assert n_audit == window["n_dates"] * len(window["symbols"])


def test_gateway_grpc_api_and_every_service_health_and_reflection(
    topology: Topology, completed: dict
) -> None:
    gw = channel(topology.grpc_addr("gateway"), credentials=topology.user_credentials())
    stub = gpb_grpc.AlphaBacktestServiceStub(gw)
    got = stub.GetAlphaBacktestRun(
        gpb.GetAlphaBacktestRunRequest(run_id=completed["run"]["run_id"]), timeout=10
    )
    assert got.run.task_id == completed["accepted"]["task_id"]
    watched = [
        m.event.stage
        for m in stub.WatchAlphaBacktestRun(
            gpb.WatchAlphaBacktestRunRequest(task_id=completed["accepted"]["task_id"]), timeout=30
        )
    ]
    assert watched[0] == "accepted" and watched[-1] == "completed"
    listed = stub.ListAlphaBacktestRuns(gpb.ListAlphaBacktestRunsRequest(page_size=10), timeout=10)
    assert completed["run"]["run_id"] in {r.run_id for r in listed.runs}
    for name in ("persistence", "trainer", "registry", "backtester", "gateway"):
        # The gateway's public port takes tokens (TLS without client certificates); the others mTLS.
        creds = topology.user_credentials() if name == "gateway" else topology.service_credentials()
        ch = channel(topology.grpc_addr(name), credentials=creds)
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, name
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        reply = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in reply for s in r.list_services_response.service}
        assert any(n.startswith("alphaswarm.") for n in names), (name, names)
        ch.close()
    gw.close()


def test_bad_input_and_unknown_deployment(topology: Topology) -> None:
    bad = httpx.post(
        f"{topology.rest_url}/ml/alpha-backtest-runs",
        content=yaml.safe_dump(small_run(model_cfg={"type": "nope"})).encode(),
        headers=topology.auth_headers,
        timeout=60,
    )
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "model_cfg.type"
    missing = httpx.post(
        f"{topology.rest_url}/ml/alpha-backtest-runs",
        json=small_run(train_first=False, deployment_id="00000000-0000-0000-0000-000000000000"),
        headers=topology.auth_headers,
        timeout=60,
    )
    assert missing.status_code == 404


def test_compose_file_is_the_topology_under_test() -> None:
    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/docker-compose.yml").read_text())
    assert {
        "postgres",
        "nats",
        "mlflow",
        "migrate",
        "persistence",
        "trainer",
        "registry",
        "backtester",
        "gateway",
    } <= set(compose["services"])


def test_the_deployment_requires_tokens_and_certificates(topology: Topology, completed: dict) -> None:
    from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
    from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
    from alphaswarm_common.healthcheck import check

    anonymous = httpx.get(f"{topology.rest_url}/ml/alpha-backtest-runs", timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    for name in ("persistence", "trainer", "registry", "backtester"):
        assert not check(topology.grpc_addr(name)), f"{name} answers without a client certificate"
    stub = ppb_grpc.PersistenceServiceStub(
        channel(topology.grpc_addr("persistence"), credentials=topology.service_credentials())
    )
    task_id = completed["accepted"]["task_id"]
    entries = stub.ListAuditLog(ppb.ListAuditLogRequest(target_id=task_id), timeout=10).entries
    assert [(e.subject, e.role, e.action) for e in entries] == [("bootstrap-admin", "admin", "submit")]
    password = topology.secret_files["postgres_password"].read_text().strip()
    for name in ("migrate", "persistence", "trainer", "registry", "backtester", "gateway", "mlflow"):
        log = topology.log(name)
        assert log, name
        assert password not in log and topology.admin_token not in log, f"a secret in the {name} log"


def test_tokens_made_with_the_cli_inside_the_gateway_container(topology: Topology) -> None:
    made = topology.cli("auth", "create-token", "--role", "viewer", "--name", "dashboards")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    headers = {"authorization": f"Bearer {token}"}
    assert httpx.get(f"{topology.rest_url}/backtests", headers=headers, timeout=30).status_code == 200
    denied = httpx.post(
        f"{topology.rest_url}/ml/alpha-backtest-runs", content=b"{}", headers=headers, timeout=30
    )
    assert denied.status_code == 403
    listed = topology.cli("auth", "list")
    assert '"name": "dashboards"' in listed.stdout and '"created_by": "gateway"' in listed.stdout
    assert token not in listed.stdout
