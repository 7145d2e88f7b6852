"""Traces, metrics and logs of the distributed topology (deploy/docker-compose.yml as local
processes, each service its own OS process, over PostgreSQL, MLflow and a NATS JetStream server
of this test's own).

The services export their spans by OTLP/HTTP to a small collector in the test (the
`opentelemetry-proto` messages decoded as a collector does): one REST submission must come back
as one trace whose spans come from the gateway (HTTP, job publish and consume, stages, MLflow
calls), the trainer, the registry, the backtester and the persistence service (with SQL), joined
by parent ids across the processes. Each service's `/metrics` side port exposes the named
metrics, every Grafana panel's query names one of them, the gateway's log lines are JSON with
the run's id and trace id, and the trace id is on the run's PostgreSQL row.
"""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from alphaswarm_common.healthcheck import check
from tests.e2e.conftest import small_run, sse_events
from tests.faults.cluster import NatsServer
from tests.integration.topology import Topology
from tests.observability_checks import dashboard_metric_names, exported_names

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SERVICES = ("persistence", "trainer", "registry", "backtester", "gateway")


class OtlpCollector:
    """An OTLP/HTTP traces receiver (`POST /v1/traces`, protobuf) keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.add(request)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        rows = []
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    rows.append(
                        {
                            "service": attrs.get("service.name", ""),
                            "name": span.name,
                            "kind": trace_pb2.Span.SpanKind.Name(span.kind),
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "attributes": {a.key: _value(a.value) for a in span.attributes},
                        }
                    )
        with self._lock:
            self.spans.extend(rows)

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]

    def __enter__(self) -> OtlpCollector:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    with OtlpCollector() as c:
        yield c


@pytest.fixture(scope="module")
def topology(
    pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory, collector: OtlpCollector
) -> Iterator[Topology]:
    nats = NatsServer()  # a JetStream of its own: no other gateway takes this topology's jobs
    nats.start()
    topo = Topology(
        pg_admin_url=pg_admin_url,
        nats_url=nats.url,
        workdir=tmp_path_factory.mktemp("observed-topology"),
        extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"},
    )
    try:
        topo.start()
        yield topo
    finally:
        topo.stop()
        nats.destroy()


@pytest.fixture(scope="module")
def submitted(topology: Topology) -> dict[str, Any]:
    resp = httpx.post(
        f"{topology.rest_url}/ml/alpha-backtest-runs",
        content=yaml.safe_dump(small_run(run_name="observed-distributed")).encode(),
        headers={"content-type": "application/json", **topology.auth_headers},
        timeout=60,
    )
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    events = sse_events(topology.rest_url + accepted["stream_url"], headers=topology.auth_headers)
    assert events[-1]["stage"] == "completed", events[-1]
    run = httpx.get(
        f"{topology.rest_url}/ml/alpha-backtest-runs/{accepted['run_id']}",
        headers=topology.auth_headers,
        timeout=30,
    ).json()
    # An error path: an unknown run is NOT_FOUND at the persistence service.
    missing = httpx.get(
        f"{topology.rest_url}/ml/alpha-backtest-runs/{uuid.uuid4()}",
        headers=topology.auth_headers,
        timeout=30,
    )
    assert missing.status_code == 404
    # The gateway's own gRPC server answers too (its health, as a probe would ask).
    assert check(topology.grpc_addr("gateway"), credentials=topology.user_credentials())
    return {"accepted": accepted, "run": run, "trace_id": resp.headers.get("x-trace-id", "")}


def _spans_of(
    collector: OtlpCollector,
    trace_id: str,
    services: set[str],
    names: set[str] = frozenset(),
    timeout: float = 30,
) -> list[dict]:
    """The trace's spans once every service and every named span has arrived (a span is exported
    when it ends: the job's `process` span ends after the run's last event is streamed)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = collector.trace(trace_id)
        arrived = {s["service"] for s in spans} >= services and {s["name"] for s in spans} >= names
        if arrived or time.monotonic() > deadline:
            return spans
        time.sleep(0.3)


def test_one_trace_across_every_process(submitted: dict[str, Any], collector: OtlpCollector) -> None:
    trace_id = submitted["trace_id"]
    assert len(trace_id) == 32
    services = {f"alphaswarm-{s}" for s in SERVICES}
    spans = _spans_of(collector, trace_id, services, {"alphaswarm.jobs.alpha_backtest process"})
    assert {s["service"] for s in spans} >= services, sorted({s["service"] for s in spans})
    by_id = {s["span_id"]: s for s in spans}

    def ancestors(span: dict[str, Any]) -> list[dict[str, Any]]:
        chain = []
        while span["parent_span_id"] in by_id:
            span = by_id[span["parent_span_id"]]
            chain.append(span)
        return chain

    roots = [s for s in spans if s["parent_span_id"] == ""]
    assert (
        len(roots) == 1
        and roots[0]["service"] == "alphaswarm-gateway"
        and roots[0]["kind"] == "SPAN_KIND_SERVER"
    )
    consumer = next(s for s in spans if s["name"] == "alphaswarm.jobs.alpha_backtest process")
    assert consumer["kind"] == "SPAN_KIND_CONSUMER" and roots[0] in ancestors(consumer)
    for service, method in (
        ("trainer", "alphaswarm.trainer.v1.TrainerService/TrainWithProgress"),
        ("registry", "alphaswarm.registry.v1.RegistryService/RegisterModel"),
        ("backtester", "alphaswarm.backtester.v1.BacktesterService/RunBacktest"),
        ("persistence", "alphaswarm.persistence.v1.PersistenceService/RecordStageOutput"),
    ):
        server = [s for s in spans if s["name"] == method and s["service"] == f"alphaswarm-{service}"]
        assert server, f"{method} not traced by {service}"
        assert server[0]["kind"] == "SPAN_KIND_SERVER"
        assert consumer in ancestors(server[0]), f"{method} is not under the job's consumer span"
    sql = [
        s for s in spans if s["service"] == "alphaswarm-persistence" and "db.query.text" in s["attributes"]
    ]
    assert sql and sql[0]["attributes"]["db.system.name"] == "postgresql"
    assert any(s["name"] == "mlflow create_run" for s in spans)


def test_trace_id_on_the_postgresql_row(submitted: dict[str, Any], topology: Topology) -> None:
    assert submitted["run"]["trace_id"] == submitted["trace_id"]
    with psycopg.connect(topology.catalog_url().replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute(
            "SELECT trace_id FROM ml_alpha_backtest_runs WHERE run_id = %s",
            (submitted["accepted"]["run_id"],),
        ).fetchone()
    assert row == (submitted["trace_id"],)


def _scrape(topology: Topology, service: str) -> str:
    with urllib.request.urlopen(topology.metrics_url(service), timeout=10) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


def test_every_service_serves_its_metrics(submitted: dict[str, Any], topology: Topology) -> None:
    union: set[str] = set()
    for service in SERVICES:
        text = _scrape(topology, service)
        names = exported_names(text)
        union |= names
        assert "alphaswarm_rpc_server_duration_seconds_bucket" in names, service
        assert f'service="{service}"' in text or service == "gateway"
    gateway = _scrape(topology, "gateway")
    assert 'method="/grpc.health.v1.Health/Check"' in gateway
    assert 'alphaswarm_stage_duration_seconds_count{outcome="ok",stage="backtest"} 1.0' in gateway
    assert 'alphaswarm_queue_pending_jobs{queue="ALPHASWARM_JOBS"} 0.0' in gateway
    assert (
        'alphaswarm_http_requests_total{method="POST",route="/ml/alpha-backtest-runs",status="202"}'
        in gateway
    )
    persistence = _scrape(topology, "persistence")
    assert 'alphaswarm_runs{state="succeeded"} 1.0' in persistence
    assert 'alphaswarm_catalog_writes_total{op="insert",table="ml_alpha_backtest_runs"} 1.0' in persistence
    assert 'code="NOT_FOUND"' in persistence  # the unknown run
    # Every query of the Grafana dashboard names a metric some service exports.
    wanted = dashboard_metric_names()
    assert wanted <= union, sorted(wanted - union)


def test_gateway_log_lines_are_json_with_run_and_trace(submitted: dict[str, Any], topology: Topology) -> None:
    run_id = submitted["accepted"]["run_id"]
    lines = (topology.workdir / "gateway.log").read_text(errors="replace").splitlines()
    docs = [json.loads(line) for line in lines if line.startswith("{")]
    assert docs and all({"ts", "level", "logger", "message", "service"} <= set(d) for d in docs)
    ours = [d for d in docs if d.get("run_id") == run_id]
    assert {d.get("stage") for d in ours} >= {"train", "backtest", "finish"}
    assert all(d.get("trace_id") == submitted["trace_id"] for d in ours if d.get("stage"))
    assert all(d["service"] == "gateway" for d in ours)


def test_service_log_lines_name_the_callers_run(submitted: dict[str, Any], topology: Topology) -> None:
    """The run and task ids travel as baggage: the trainer's and backtester's lines of the run's
    calls name the run and carry the run's trace."""
    run_id = submitted["accepted"]["run_id"]
    for service, method in (("trainer", "TrainWithProgress"), ("backtester", "RunBacktest")):
        lines = (topology.workdir / f"{service}.log").read_text(errors="replace").splitlines()
        docs = [json.loads(line) for line in lines if line.startswith("{")]
        calls = [d for d in docs if d["logger"] == "alphaswarm.rpc" and method in d["message"]]
        assert calls, f"no {method} line in the {service} log"
        assert calls[0]["run_id"] == run_id and calls[0]["service"] == service
        assert calls[0]["task_id"] == submitted["accepted"]["task_id"]
        assert calls[0]["trace_id"] == submitted["trace_id"]
