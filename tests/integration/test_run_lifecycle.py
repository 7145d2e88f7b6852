"""Every run reaches a terminal state and resumes rather than repeats, against real servers:
the four services over gRPC sockets, the catalog in PostgreSQL, jobs and progress on NATS
JetStream (isolated streams per test), the gateway in the test's event loop.

* a job delivered again after its worker died mid-saga resumes after the last completed
  stage: one model version, one deployment, one backtest row, one training run;
* a write carrying a stale fencing token is refused by the catalog;
* a poison job goes to the dead-letter subject and its run ends FAILED with a terminal event;
* a run cancelled mid-stage ends CANCELLED, its MLflow runs ended, nothing registered;
* a stage failure while the catalog is down reaches the run row once the catalog is back;
* a submission while NATS is down answers 503 with Retry-After and leaves nothing behind;
  the same Idempotency-Key is accepted and queued once NATS is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_common.config import AlphaBacktestConfig
from alphaswarm_common.configio import parse_config
from alphaswarm_common.errors import DataError, FailedPrecondition
from alphaswarm_common.events import NatsEventBus, NatsJobQueue, ProgressEvent
from alphaswarm_common.grpc_client import call, channel
from alphaswarm_common.grpc_server import serve
from alphaswarm_common.protoconv import config_to_proto
from alphaswarm_common.settings import Settings
from alphaswarm_common.tracking import Tracker
from alphaswarm_gateway import saga as saga_module
from alphaswarm_gateway.core import JOB_KIND, Gateway, bootstrap
from alphaswarm_gateway.saga import AlphaBacktestSaga
from alphaswarm_gateway.stages import Stage
from tests.e2e.conftest import small_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NATS_URL = os.environ.get("ALPHASWARM_TEST_NATS_URL", "nats://127.0.0.1:4222")


def _reachable(url: str) -> bool:
    host, port = url.removeprefix("nats://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Services:
    settings: Settings
    servers: list[Any]
    tracker: Tracker

    @property
    def persistence_port(self) -> int:
        assert self.settings.persistence_addr
        return int(self.settings.persistence_addr.rsplit(":", 1)[1])

    def stop_persistence(self) -> None:
        self.servers[0].stop(0).wait()

    def start_persistence(self) -> None:
        from alphaswarm_persistence import server as persistence_server

        settings = self.settings.model_copy(update={"migrate_on_start": False})
        self.servers[0], _ = serve(persistence_server.build(settings), port=self.persistence_port)

    def persistence(self) -> ppb_grpc.PersistenceServiceStub:
        assert self.settings.persistence_addr
        return ppb_grpc.PersistenceServiceStub(channel(self.settings.persistence_addr))

    def count(self, query: str, **params: Any) -> int:
        assert self.settings.database_url
        engine = sa.create_engine(self.settings.database_url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(sa.text(query), params).scalar_one())
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def services(pg_database_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    if not _reachable(NATS_URL):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"NATS is required in CI and is not reachable at {NATS_URL}")
        pytest.skip(f"NATS not reachable at {NATS_URL}")
    from alphaswarm.embedded import start_services

    settings = Settings(
        home=tmp_path_factory.mktemp("lifecycle"),
        database_url=pg_database_factory(),
        ml_prediction_audit_enabled=True,
        nats_url=NATS_URL,
        gateway_addr=None,
        gateway_lease_seconds=3.0,
        gateway_heartbeat_seconds=0.5,
        gateway_reaper_seconds=0.5,
        gateway_pending_grace_seconds=120.0,
        gateway_outbox_seconds=120.0,
        gateway_max_attempts=3,
    )
    settings, servers, tracker = start_services(settings)
    holder = Services(settings, servers, tracker)
    yield holder
    for server in holder.servers:
        server.stop(0)


@contextlib.asynccontextmanager
async def gateway(
    services: Services,
    *,
    workers: bool = True,
    tag: str | None = None,
    keep_streams: bool = False,
    nats_url: str = NATS_URL,
    **overrides: Any,
) -> AsyncIterator[Gateway]:
    """A gateway on its own job and dead-letter streams (`tag` shares them between gateways;
    they are deleted when it closes unless `keep_streams`)."""
    tag = tag or uuid.uuid4().hex[:10]
    settings = services.settings.model_copy(update={"nats_url": nats_url, **overrides})
    queue = NatsJobQueue(
        nats_url,
        durable=f"lifecycle-{tag}",
        stream=f"AS_LIFECYCLE_JOBS_{tag}",
        prefix=f"alphaswarm.lifecycle{tag}.jobs",
        dlq_stream=f"AS_LIFECYCLE_DLQ_{tag}",
        dlq_prefix=f"alphaswarm.lifecycle{tag}.dlq",
        ack_wait=settings.gateway_ack_wait_seconds,
        max_deliver=settings.gateway_max_deliver,
        retry_base=0.2,
    )
    gw = bootstrap(settings, tracker=services.tracker, bus=NatsEventBus(nats_url), queue=queue)
    await gw.start(workers=workers)
    try:
        yield gw
    finally:
        await gw.close()
        if not keep_streams:
            await _drop_streams(tag, nats_url)


async def _drop_streams(tag: str, url: str) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    for name in (f"AS_LIFECYCLE_JOBS_{tag}", f"AS_LIFECYCLE_DLQ_{tag}"):
        with contextlib.suppress(Exception):
            await js.delete_stream(name)
    await nc.close()


async def _events(
    gw: Gateway, task_id: str, *, until: str | None = None, timeout: float = 240
) -> list[ProgressEvent]:
    out: list[ProgressEvent] = []

    async def read() -> None:
        async for event in gw.watch(task_id):
            out.append(event)
            if until is not None and event.stage == until:
                return

    await asyncio.wait_for(read(), timeout)
    return out


def _config(name: str, **overrides: Any) -> AlphaBacktestConfig:
    doc = small_run(
        run_name=name,
        experiment_name=f"lifecycle-{name}",
        model_cfg={"type": "ridge", "params": {"alpha": 10.0}, "name": f"lifecycle-{name}"},
        **overrides,
    )
    return parse_config(doc)


def _mlflow_runs(tracker: Tracker, parent_run_id: str) -> list[Any]:
    parent = tracker.client.get_run(parent_run_id)
    children = tracker.client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    return [parent, *children]


class Killed(BaseException):
    """The worker process dying mid-stage: no compensation, no failure written."""


def test_a_redelivered_job_resumes_after_the_last_completed_stage(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:10]
    name = f"resume-{tag}"

    async def die(ctx: Any) -> dict[str, Any]:
        raise Killed("kill -9 during metrics")

    killed = tuple(Stage("metrics", s.label, die) if s.name == "metrics" else s for s in saga_module.STAGES)

    async def main() -> tuple[resources_pb2.AlphaBacktestRun, list[ProgressEvent]]:
        async with gateway(services, workers=False, tag=tag, keep_streams=True) as gw:
            run = await gw.start_run(_config(name))  # queued; no worker consumes it yet
            monkeypatch.setattr(saga_module, "STAGES", killed)
            with pytest.raises(Killed):
                await AlphaBacktestSaga(gw).handle_job(
                    JOB_KIND, {"run_id": run.run_id, "task_id": run.task_id}
                )
            monkeypatch.undo()
            half = await gw.get_run(run_id=run.run_id)
            assert half.state == resources_pb2.RUN_STATE_RUNNING and half.backtest_id
        async with gateway(services, tag=tag) as gw:  # the queued job is delivered to a new worker
            events = await _events(gw, run.task_id, until="completed")
            return await gw.get_run(run_id=run.run_id), events

    run, events = asyncio.run(main())
    assert run.state == resources_pb2.RUN_STATE_SUCCEEDED, run.error
    resumed = [e for e in events if e.data.get("resumed_after")]
    assert [e.data["resumed_after"] for e in resumed] == ["backtest"]
    assert [e.stage for e in events if e.status == "started"].count("training") == 1
    model = f"lifecycle-{name}"
    versions = services.tracker.client.search_model_versions(f"name = '{model}'")
    assert len(versions) == 1  # no second model version
    assert services.tracker.get_registered_model(model).aliases == {"champion": "1"}
    assert services.count("SELECT count(*) FROM deployments WHERE model_name = :m", m=model) == 1
    assert (
        services.count("SELECT count(*) FROM mcp_backtest_results WHERE notes LIKE :n", n=f"%{run.run_id}%")
        == 1
    )
    mlflow = _mlflow_runs(services.tracker, run.mlflow_parent_run_id)
    assert sorted(r.info.run_name for r in mlflow[1:]) == ["backtest", "train"]
    assert {r.info.status for r in mlflow} == {"FINISHED"}


def test_a_stale_fencing_token_cannot_write_on_postgresql(services: Services) -> None:
    stub = services.persistence()
    run = call(
        stub.CreateAlphaBacktestRun,
        ppb.CreateAlphaBacktestRunRequest(
            run=resources_pb2.AlphaBacktestRun(config=config_to_proto(_config("fence")), stage="accepted")
        ),
        timeout=30,
    ).run
    claim = ppb.ClaimTaskRequest(task_id=run.task_id, owner="worker-a", lease_seconds=0.2, max_attempts=5)
    first = call(stub.ClaimTask, claim, timeout=30).lease
    time.sleep(0.4)  # worker-a stalls past its lease; worker-b takes the task over
    claim.owner = "worker-b"
    second = call(stub.ClaimTask, claim, timeout=30).lease
    assert second.fencing_token == first.fencing_token + 1

    def write(token: int, state: int) -> resources_pb2.AlphaBacktestRun:
        return call(
            stub.UpdateAlphaBacktestRun,
            ppb.UpdateAlphaBacktestRunRequest(
                run=resources_pb2.AlphaBacktestRun(run_id=run.run_id, state=state, stage="completed"),
                update_mask={"paths": ["state", "stage"]},
                fencing_token=token,
            ),
            timeout=30,
        ).run

    with pytest.raises(FailedPrecondition) as info:
        write(first.fencing_token, resources_pb2.RUN_STATE_SUCCEEDED)
    assert info.value.reason == "LEASE_LOST"
    assert (
        write(second.fencing_token, resources_pb2.RUN_STATE_RUNNING).state == resources_pb2.RUN_STATE_RUNNING
    )
    stored = call(stub.GetAlphaBacktestRun, ppb.GetAlphaBacktestRunRequest(run_id=run.run_id), timeout=30).run
    assert stored.state == resources_pb2.RUN_STATE_RUNNING


def test_a_poison_job_is_dead_lettered_and_its_run_ends_failed(services: Services) -> None:
    tag = uuid.uuid4().hex[:10]

    async def main() -> tuple[resources_pb2.AlphaBacktestRun, list[ProgressEvent], int]:
        stub = services.persistence()
        run = call(
            stub.CreateAlphaBacktestRun,
            ppb.CreateAlphaBacktestRunRequest(
                run=resources_pb2.AlphaBacktestRun(
                    config=config_to_proto(_config("poison")), stage="accepted"
                )
            ),
            timeout=30,
        ).run
        async with gateway(services, tag=tag) as gw:
            assert isinstance(gw.queue, NatsJobQueue)
            await gw.queue.enqueue(JOB_KIND, {"task_id": run.task_id, "run_id": "not-a-run-id"})
            await gw.queue._js.publish(f"{gw.queue.prefix}.{JOB_KIND}", b"{not json")
            events = await _events(gw, run.task_id, timeout=60)
            info = await gw.queue._js.stream_info(gw.queue.dlq_stream)
            return await gw.get_run(run_id=run.run_id), events, int(info.state.messages)

    run, events, letters = asyncio.run(main())
    assert letters == 2  # the job naming no run, and the message that is not JSON
    assert run.state == resources_pb2.RUN_STATE_FAILED
    assert run.error.code == "ABORTED" and "dead-lettered" in run.error.message
    assert events[-1].stage == "failed" and events[-1].data["dead_letter"] is True


def test_cancel_mid_stage_ends_the_run_cancelled(services: Services) -> None:
    tag = uuid.uuid4().hex[:10]
    name = f"cancel-{tag}"

    async def main() -> tuple[resources_pb2.AlphaBacktestRun, list[ProgressEvent], httpx.Response]:
        async with gateway(services, tag=tag) as gw:
            run = await gw.start_run(_config(name))
            before = await _events(gw, run.task_id, until="training")
            cancelled = await gw.cancel_run(run_id=run.run_id)
            assert cancelled.state == resources_pb2.RUN_STATE_CANCELLED
            events = await _events(gw, run.task_id)
            from alphaswarm_gateway.rest import create_app

            app = create_app(gw.settings, gateway=gw, serve_grpc=False)
            app.state.gateway = gw
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gw"
            ) as http:
                again = await http.post(f"/ml/alpha-backtest-runs/{run.run_id}:cancel")
            for _ in range(100):  # the worker compensates after its work is cancelled
                if not gw.inflight:
                    break
                await asyncio.sleep(0.1)
            assert before[-1].stage == "training"
            return await gw.get_run(run_id=run.run_id), events, again

    run, events, again = asyncio.run(main())
    assert run.state == resources_pb2.RUN_STATE_CANCELLED
    assert (run.error.stage, run.error.code) == ("training", "CANCELLED")
    assert events[-1].stage == "cancelled"
    assert again.status_code == 409 and again.json()["error"]["code"] == "FAILED_PRECONDITION"
    deadline = time.time() + 30
    while time.time() < deadline:  # the trainer abandons the work of a caller that is gone
        statuses = {r.info.status for r in _mlflow_runs(services.tracker, run.mlflow_parent_run_id)}
        if "RUNNING" not in statuses:
            break
        time.sleep(0.5)
    assert "RUNNING" not in statuses
    assert services.tracker.client.search_model_versions(f"name = 'lifecycle-{name}'") == []


def test_a_failure_while_the_catalog_is_down_reaches_the_row_once_it_is_back(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:10]
    outage: list[float] = []

    async def fail_during_outage(ctx: Any) -> dict[str, Any]:
        if not outage:
            outage.append(time.time())
            services.stop_persistence()
            threading.Timer(3.0, services.start_persistence).start()
        raise DataError("the price file vanished", field="dataset_cfg.source")

    patched = tuple(
        Stage("predict", s.label, fail_during_outage) if s.name == "predict" else s
        for s in saga_module.STAGES
    )
    monkeypatch.setattr(saga_module, "STAGES", patched)

    async def main() -> tuple[resources_pb2.AlphaBacktestRun, list[ProgressEvent]]:
        async with gateway(services, tag=tag, gateway_lease_seconds=30.0) as gw:
            run = await gw.start_run(_config(f"outage-{tag}", train_first=True))
            events = await _events(gw, run.task_id)
            return await gw.get_run(run_id=run.run_id), events

    run, events = asyncio.run(main())
    assert outage, "the stage ran"
    assert run.state == resources_pb2.RUN_STATE_FAILED
    assert (run.error.stage, run.error.code, run.error.field) == (
        "predicting",
        "INVALID_ARGUMENT",
        "dataset_cfg.source",
    )
    assert events[-1].stage == "failed"
    parent = services.tracker.client.get_run(run.mlflow_parent_run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["alphaswarm.error_stage"] == "predicting"
    version = services.tracker.client.search_model_versions(f"name = 'lifecycle-outage-{tag}'")[0]
    assert version.tags["alphaswarm.run_state"] == "FAILED"
    assert "champion" not in services.tracker.get_registered_model(f"lifecycle-outage-{tag}").aliases
    deployments = services.count(
        "SELECT count(*) FROM deployments WHERE model_name = :m AND state = 'retired'",
        m=f"lifecycle-outage-{tag}",
    )
    assert deployments == 1  # the deployment the run created is retired


def test_what_a_stage_made_before_failing_unrecorded_is_compensated(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry created the deployment, then the stage failed before its output was
    recorded: the failed run still retires that deployment and tags its model version."""
    tag = uuid.uuid4().hex[:10]
    real_deploy = next(s.run for s in saga_module.STAGES if s.name == "deploy")

    async def deploy_then_fail(ctx: Any) -> dict[str, Any]:
        await real_deploy(ctx)
        raise FailedPrecondition("the deployment's strategy was refused after it was created")

    patched = tuple(
        Stage("deploy", s.label, deploy_then_fail, s.restore) if s.name == "deploy" else s
        for s in saga_module.STAGES
    )
    monkeypatch.setattr(saga_module, "STAGES", patched)

    async def main() -> resources_pb2.AlphaBacktestRun:
        async with gateway(services, tag=tag) as gw:
            run = await gw.start_run(_config(f"unrecorded-{tag}", train_first=True))
            await _events(gw, run.task_id)
            return await gw.get_run(run_id=run.run_id)

    run = asyncio.run(main())
    assert run.state == resources_pb2.RUN_STATE_FAILED
    assert (run.error.stage, run.error.code) == ("deploying", "FAILED_PRECONDITION")
    name = f"lifecycle-unrecorded-{tag}"
    states = services.count(
        "SELECT count(*) FROM deployments WHERE model_name = :m AND state <> 'retired'", m=name
    )
    retired = services.count(
        "SELECT count(*) FROM deployments WHERE model_name = :m AND state = 'retired'", m=name
    )
    assert (retired, states) == (1, 0), "the deployment the failed stage created is retired"
    version = services.tracker.client.search_model_versions(f"name = '{name}'")[0]
    assert version.tags["alphaswarm.run_state"] == "FAILED"


@contextlib.contextmanager
def _nats_server(tmp: Path, port: int) -> Iterator[dict[str, Any]]:
    binary = shutil.which("nats-server")
    if binary is None:
        pytest.skip("nats-server is not installed")
    state: dict[str, Any] = {}

    def start() -> None:
        state["proc"] = subprocess.Popen(
            [binary, "-js", "-p", str(port), "-sd", str(tmp)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 20
        while time.time() < deadline and not _reachable(f"nats://127.0.0.1:{port}"):
            time.sleep(0.1)

    def stop() -> None:
        state["proc"].terminate()
        state["proc"].wait(10)

    state["start"], state["stop"] = start, stop
    start()
    try:
        yield state
    finally:
        with contextlib.suppress(Exception):
            stop()


def test_nats_down_at_submission_answers_503_and_leaves_nothing_pending(
    services: Services, tmp_path: Path
) -> None:
    port = _free_port()
    url = f"nats://127.0.0.1:{port}"
    name = f"nats-down-{uuid.uuid4().hex[:8]}"
    body = yaml.safe_dump(small_run(run_name=name)).encode()

    async def main(nats: dict[str, Any]) -> tuple[httpx.Response, httpx.Response, int, int]:
        from alphaswarm_gateway.rest import create_app

        async with gateway(services, workers=False, nats_url=url) as gw:
            app = create_app(gw.settings, gateway=gw, serve_grpc=False)
            app.state.gateway = gw
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=60
            ) as http:
                headers = {"Idempotency-Key": f"key-{name}", "content-type": "application/x-yaml"}
                nats["stop"]()
                refused = await http.post("/ml/alpha-backtest-runs", content=body, headers=headers)
                left = services.count(
                    "SELECT count(*) FROM ml_alpha_backtest_runs WHERE run_name = :n", n=name
                )
                nats["start"]()
                for _ in range(200):
                    if await gw.bus.ready():
                        break
                    await asyncio.sleep(0.1)
                accepted = await http.post("/ml/alpha-backtest-runs", content=body, headers=headers)
                assert isinstance(gw.queue, NatsJobQueue)
                queued = (await gw.queue._js.stream_info(gw.queue.stream)).state.messages
                return refused, accepted, left, int(queued)

    with _nats_server(tmp_path / "nats", port) as nats:
        refused, accepted, left, queued = asyncio.run(main(nats))
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "UNAVAILABLE"
    assert left == 0  # nothing left PENDING
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "pending" and queued == 1
    stub = services.persistence()
    run = call(
        stub.GetAlphaBacktestRun, ppb.GetAlphaBacktestRunRequest(run_id=accepted.json()["run_id"]), timeout=30
    )
    assert run.run.state == resources_pb2.RUN_STATE_PENDING


def _orphan(services: Services, name: str, *, claims: int) -> resources_pb2.AlphaBacktestRun:
    """A run whose job is gone and whose task `claims` workers took and then died (kill -9)."""
    stub = services.persistence()
    run = call(
        stub.CreateAlphaBacktestRun,
        ppb.CreateAlphaBacktestRunRequest(
            run=resources_pb2.AlphaBacktestRun(config=config_to_proto(_config(name)), stage="accepted")
        ),
        timeout=30,
    ).run
    for n in range(claims):
        call(
            stub.ClaimTask,
            ppb.ClaimTaskRequest(task_id=run.task_id, owner=f"dead-{n}", lease_seconds=0.2, max_attempts=3),
            timeout=30,
        )
        time.sleep(0.3)  # the worker never renews: its lease expires
    return run


def _until_terminal(
    services: Services, run: resources_pb2.AlphaBacktestRun
) -> tuple[resources_pb2.AlphaBacktestRun, list[ProgressEvent]]:
    """Start a gateway (its reaper finds the orphan) and follow the run to its terminal event."""

    async def main() -> tuple[resources_pb2.AlphaBacktestRun, list[ProgressEvent]]:
        async with gateway(services) as gw:
            events = await _events(gw, run.task_id)
            return await gw.get_run(run_id=run.run_id), events

    return asyncio.run(main())


def test_the_reaper_resumes_a_run_whose_worker_died(services: Services) -> None:
    run = _orphan(services, f"orphan-{uuid.uuid4().hex[:10]}", claims=1)
    done, events = _until_terminal(services, run)
    assert done.state == resources_pb2.RUN_STATE_SUCCEEDED, done.error
    assert events[-1].stage == "completed"
    lease = call(
        services.persistence().ClaimTask,
        ppb.ClaimTaskRequest(task_id=run.task_id, owner="probe", lease_seconds=1, max_attempts=3),
        timeout=30,
    )
    assert lease.outcome == ppb.CLAIM_OUTCOME_TERMINAL and lease.lease.attempts == 2


def test_the_reaper_fails_a_run_whose_attempts_are_used_up(services: Services) -> None:
    run = _orphan(services, f"exhausted-{uuid.uuid4().hex[:10]}", claims=3)
    done, events = _until_terminal(services, run)
    assert done.state == resources_pb2.RUN_STATE_FAILED
    assert done.error.code == "ABORTED" and "3 attempts" in done.error.message
    assert events[-1].stage == "failed" and events[-1].data["code"] == "ABORTED"
