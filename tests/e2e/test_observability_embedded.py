"""Traces, metrics and logs of the embedded stack (five real gRPC servers on loopback, the REST
gateway under uvicorn, the in-process job queue): one REST submission is one trace from the
HTTP request through the work queue to every service and the catalog's SQL; the trace id is on
the run row and on the JSON log lines; `/metrics` (the one embedded port) exposes the named
metrics and every query of the Grafana dashboard names one of them."""

from __future__ import annotations

import io
import json
import logging
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from alphaswarm.embedded import EmbeddedStack
from alphaswarm_common import telemetry
from alphaswarm_common.logging_json import JsonFormatter
from alphaswarm_common.settings import Settings
from tests.e2e.conftest import serving, small_run, sse_events
from tests.observability_checks import dashboard_metric_names, exported_names

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def spans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.configure_tracing("embedded", exporter=exporter)
    try:
        yield exporter
    finally:
        telemetry.shutdown_tracing()


@pytest.fixture(scope="module")
def logs() -> Iterator[io.StringIO]:
    """Every log line of the process at INFO, through the JSON formatter."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="module")
def traced(
    spans: InMemorySpanExporter, logs: io.StringIO, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A stack started with tracing on and the metrics port open; one run submitted over REST."""
    home = tmp_path_factory.mktemp("observed-home")
    settings = Settings(
        home=home,
        database_url=None,
        mlflow_tracking_uri=None,
        nats_url=None,
        metrics_port=0,
        data_roots=[tmp_path_factory.getbasetemp()],
    )
    with (
        EmbeddedStack(settings) as stack,
        serving(stack.settings.model_copy(update={"grpc_port": 0}), stack) as (_, url),
    ):
        assert stack.metrics_port
        # Counters are per process: the suite's earlier runs count too, so the run's own is the increase.
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10) as r:
            before = r.read().decode()
        resp = httpx.post(f"{url}/ml/alpha-backtest-runs", json=small_run(run_name="traced"), timeout=60)
        assert resp.status_code == 202, resp.text
        accepted = resp.json()
        events = sse_events(url + accepted["stream_url"])
        assert events[-1]["stage"] == "completed", events[-1]
        run = httpx.get(f"{url}/ml/alpha-backtest-runs/{accepted['run_id']}", timeout=30).json()
        # An error path too: an unknown run is NOT_FOUND at the persistence service, 404 at REST.
        missing = httpx.get(f"{url}/ml/alpha-backtest-runs/{uuid.uuid4()}", timeout=30)
        assert missing.status_code == 404
        assert stack.metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10) as r:
            exposition = r.read().decode()
        yield {
            "accepted": accepted,
            "run": run,
            "trace_id": resp.headers.get("x-trace-id", ""),
            "metrics": exposition,
            "metrics_before": before,
        }


def _sample(exposition: str, series: str) -> float:
    """The value of one series in a Prometheus exposition (0 when it is not there yet)."""
    for line in exposition.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _hex(span_id: int) -> str:
    return format(span_id, "016x")


def test_one_trace_spans_rest_queue_services_sql_and_mlflow(
    traced: dict[str, Any], spans: InMemorySpanExporter
) -> None:
    trace_id = traced["trace_id"]
    assert len(trace_id) == 32
    mine = [s for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
    names = {s.name for s in mine}
    by_id = {s.context.span_id: s for s in mine}

    def ancestors(span: Any) -> list[str]:
        chain = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            chain.append(span.name)
        return chain

    # The REST request is the root; the job's consumer span continues it.
    roots = [s for s in mine if s.parent is None]
    assert len(roots) == 1 and roots[0].kind == SpanKind.SERVER and "POST" in roots[0].name
    consumer = next(s for s in mine if s.name == "alphaswarm.jobs.alpha_backtest process")
    assert consumer.kind == SpanKind.CONSUMER and roots[0].name in ancestors(consumer)
    assert "alphaswarm.jobs.alpha_backtest publish" in names
    # Every service answered inside the trace, as a child of the saga's stages.
    for method in (
        "alphaswarm.trainer.v1.TrainerService/TrainWithProgress",
        "alphaswarm.registry.v1.RegistryService/RegisterModel",
        "alphaswarm.backtester.v1.BacktesterService/RunBacktest",
        "alphaswarm.persistence.v1.PersistenceService/CreateAlphaBacktestRun",
    ):
        server = [s for s in mine if s.name == method]
        assert server, f"{method} not in the trace: {sorted(names)}"
        assert server[0].kind == SpanKind.SERVER and server[0].attributes["rpc.grpc.status_code"] == "OK", (
            method,
            dict(server[0].attributes),
            server[0].events,
        )
    train = next(s for s in mine if s.name.endswith("TrainWithProgress"))
    assert "stage train" in ancestors(train) and consumer.name in ancestors(train)
    # SQL statements under the persistence service's spans, MLflow calls under the stages.
    sql = [s for s in mine if s.attributes.get("db.system") == "sqlite" or "db.statement" in s.attributes]
    assert sql and any(a.startswith("alphaswarm.persistence.v1") for a in ancestors(sql[0]))
    assert any(s.name == "mlflow create_run" and s.kind == SpanKind.CLIENT for s in mine)
    assert {f"stage {n}" for n in ("start", "train", "register", "deploy", "backtest", "finish")} <= names


def test_the_trace_id_is_on_the_run_row(traced: dict[str, Any]) -> None:
    assert traced["run"]["trace_id"] == traced["trace_id"]


def test_log_lines_are_json_with_run_task_stage_and_trace(traced: dict[str, Any], logs: io.StringIO) -> None:
    run_id = traced["accepted"]["run_id"]
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    assert lines
    ours = [d for d in lines if d.get("run_id") == run_id]
    assert ours, "no log line names the run"
    stage_lines = [d for d in ours if d["message"].startswith("stage ")]
    assert {d["stage"] for d in stage_lines} >= {"train", "backtest", "finish"}
    for d in stage_lines:
        assert d["trace_id"] == traced["trace_id"]
        assert d["task_id"] == traced["accepted"]["task_id"]
        assert {"ts", "level", "logger", "service"} <= set(d)


def test_metrics_after_a_run(traced: dict[str, Any]) -> None:
    text = traced["metrics"]
    names = exported_names(text)
    for name in (
        "alphaswarm_rpc_server_duration_seconds_bucket",
        "alphaswarm_http_requests_total",
        "alphaswarm_stage_duration_seconds_count",
        "alphaswarm_catalog_writes_total",
        "alphaswarm_runs",
        "alphaswarm_tasks",
        "alphaswarm_queue_pending_jobs",
        "alphaswarm_jobs_total",
    ):
        assert name in names, name
    assert (
        'alphaswarm_rpc_server_duration_seconds_count{code="OK",'
        'method="/alphaswarm.backtester.v1.BacktesterService/RunBacktest",service="backtester"}'
    ) in text
    assert 'alphaswarm_runs{state="succeeded"} 1.0' in text
    train_stages = 'alphaswarm_stage_duration_seconds_count{outcome="ok",stage="train"}'
    assert _sample(text, train_stages) - _sample(traced["metrics_before"], train_stages) == 1.0
    assert 'route="/ml/alpha-backtest-runs"' in text
    assert 'alphaswarm_catalog_writes_total{op="insert",table="ml_alpha_backtest_runs"}' in text


def test_every_dashboard_query_names_an_exported_metric(traced: dict[str, Any]) -> None:
    exported = exported_names(traced["metrics"])
    wanted = dashboard_metric_names()
    assert wanted, "the dashboard has no queries"
    assert wanted <= exported, sorted(wanted - exported)
