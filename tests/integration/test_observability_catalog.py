"""Observability of the catalog and the work queue on real servers: the trace id on the run row
(SQLite and PostgreSQL, through the persistence service's gRPC server with its SQL spans), runs and
tasks by state and catalog writes on the metrics registry, and a job on real NATS JetStream that
continues its sender's trace and log fields, with the queue's depth read from consumer info."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_common import logging_json, service_metrics, telemetry
from alphaswarm_common.events import NatsJobQueue
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.grpc_server import serve
from alphaswarm_common.settings import Settings
from alphaswarm_persistence import server as persistence_server
from tests.integration.topology import require_nats

pytestmark = pytest.mark.integration
NATS_URL = os.environ.get("ALPHASWARM_TEST_NATS_URL", "nats://127.0.0.1:4222")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.configure_tracing("test", exporter=exporter)
    try:
        yield exporter
    finally:
        telemetry.shutdown_tracing()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    factory: Callable[[], str] = request.getfixturevalue("pg_database_factory")
    return factory()


@pytest.fixture
def persistence(
    catalog_url: str, tmp_path: Path, spans: InMemorySpanExporter
) -> Iterator[ppb_grpc.PersistenceServiceStub]:
    """The persistence service as its process builds it (migrations, metrics, SQL spans), over loopback."""
    settings = Settings(home=tmp_path, database_url=catalog_url, migrate_on_start=True)
    server, port = serve(persistence_server.build(settings), port=0)
    ch = channel(f"127.0.0.1:{port}")
    try:
        yield ppb_grpc.PersistenceServiceStub(ch)
    finally:
        ch.close()
        server.stop(0).wait()


def _create(stub: ppb_grpc.PersistenceServiceStub, trace_id: str) -> resources_pb2.AlphaBacktestRun:
    run = resources_pb2.AlphaBacktestRun(
        run_name="traced", state=resources_pb2.RUN_STATE_PENDING, stage="accepted", trace_id=trace_id
    )
    return stub.CreateAlphaBacktestRun(ppb.CreateAlphaBacktestRunRequest(run=run), timeout=30).run


def test_trace_id_is_stored_on_the_run_row(
    persistence: ppb_grpc.PersistenceServiceStub, catalog_url: str, spans: InMemorySpanExporter
) -> None:
    writes = {"table": "ml_alpha_backtest_runs", "op": "insert"}
    before = service_metrics.REGISTRY.get_sample_value("alphaswarm_catalog_writes_total", writes) or 0.0
    with telemetry.span("submit"):
        trace_id = telemetry.current_trace_id()
        created = _create(persistence, trace_id)
    assert created.trace_id == trace_id
    read = persistence.GetAlphaBacktestRun(ppb.GetAlphaBacktestRunRequest(run_id=created.run_id), timeout=30)
    assert read.run.trace_id == trace_id
    # The column itself, read without the service.
    if catalog_url.startswith("sqlite"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(catalog_url.removeprefix("sqlite:///"))) as conn:
            row = (
                conn.execute(
                    "SELECT trace_id FROM ml_alpha_backtest_runs WHERE run_id = ?",
                    (created.run_id.replace("-", ""),),
                ).fetchone()
                or conn.execute(
                    "SELECT trace_id FROM ml_alpha_backtest_runs WHERE run_id = ?", (created.run_id,)
                ).fetchone()
            )
    else:
        libpq = catalog_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(libpq) as conn:
            row = conn.execute(
                "SELECT trace_id FROM ml_alpha_backtest_runs WHERE run_id = %s", (created.run_id,)
            ).fetchone()
    assert row is not None and row[0] == trace_id
    # SQL statements are spans under the persistence service's server span, in the caller's trace.
    mine = [s for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
    server = next(s for s in mine if s.name.endswith("PersistenceService/CreateAlphaBacktestRun"))
    sql = [s for s in mine if s.kind == SpanKind.CLIENT and "db.query.text" in s.attributes]
    dialect = "sqlite" if catalog_url.startswith("sqlite") else "postgresql"
    inserts = [s for s in sql if s.name == "INSERT ml_alpha_backtest_runs"]
    assert inserts and inserts[0].attributes["db.system.name"] == dialect
    assert inserts[0].parent.span_id == server.context.span_id
    after = service_metrics.REGISTRY.get_sample_value("alphaswarm_catalog_writes_total", writes)
    assert after == before + 1
    assert service_metrics.REGISTRY.get_sample_value("alphaswarm_runs", {"state": "pending"}) == 1.0
    assert (
        service_metrics.REGISTRY.get_sample_value(
            "alphaswarm_tasks", {"kind": "alpha_backtest", "state": "pending"}
        )
        == 1.0
    )


def test_a_run_without_tracing_has_no_trace_id(persistence: ppb_grpc.PersistenceServiceStub) -> None:
    telemetry.shutdown_tracing()
    assert _create(persistence, "").trace_id == ""


@pytest.mark.parametrize("bad", ["xyz", "0" * 32, "A" * 32, "a" * 31])
def test_a_malformed_trace_id_is_invalid_argument(
    persistence: ppb_grpc.PersistenceServiceStub, bad: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _create(persistence, bad)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "run.trace_id" in (info.value.details() or "")


def test_a_job_on_jetstream_continues_the_senders_trace(spans: InMemorySpanExporter) -> None:
    require_nats(NATS_URL)

    async def main() -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        tag = uuid.uuid4().hex[:8]
        queue = NatsJobQueue(
            NATS_URL,
            durable=f"test-observed-{tag}",
            stream=f"ALPHASWARM_JOBS_OBS_{tag}",
            prefix=f"alphaswarm.obsjobs.{tag}",
            dlq_stream=f"ALPHASWARM_DLQ_OBS_{tag}",
            dlq_prefix=f"alphaswarm.obsdlq.{tag}",
        )
        await queue.start()
        seen: dict[str, Any] = {}
        started = asyncio.Event()
        release = asyncio.Event()

        async def handler(kind: str, payload: dict[str, Any]) -> None:
            if payload["n"] == 1:
                seen.update(trace_id=telemetry.current_trace_id(), **logging_json.bound())
                started.set()
                await release.wait()

        try:
            with logging_json.bind(run_id="run-obs", task_id="task-obs"), telemetry.span("submit"):
                trace_id = telemetry.current_trace_id()
                await queue.enqueue("observed", {"n": 1})
                await queue.enqueue("observed", {"n": 2})
            worker = asyncio.create_task(queue.consume(handler, concurrency=1))
            await asyncio.wait_for(started.wait(), timeout=30)
            # The depth is read from another thread (the metrics scrape), on the queue's loop:
            # job 1 runs (delivered, not acknowledged), job 2 waits.
            depth: dict[str, Any] | None = None

            def scrape() -> None:
                nonlocal depth
                depth = queue.depth()

            reader = threading.Thread(target=scrape)
            reader.start()
            while reader.is_alive():
                await asyncio.sleep(0.05)
            release.set()
            await asyncio.sleep(0.5)
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            return trace_id, seen, depth
        finally:
            with contextlib.suppress(Exception):
                await queue._js.delete_stream(queue.stream)
                await queue._js.delete_stream(queue.dlq_stream)
            await queue.close()

    trace_id, seen, depth = asyncio.run(main())
    assert seen["trace_id"] == trace_id
    assert (seen["run_id"], seen["task_id"]) == ("run-obs", "task-obs")
    assert depth is not None and depth["pending"] == 1 and depth["ack_pending"] == 1
    finished = spans.get_finished_spans()
    consumer = next(s for s in finished if s.name.endswith(".observed process"))
    producer = next(s for s in finished if s.name.endswith(".observed publish"))
    assert consumer.kind == SpanKind.CONSUMER and consumer.parent.span_id == producer.context.span_id
