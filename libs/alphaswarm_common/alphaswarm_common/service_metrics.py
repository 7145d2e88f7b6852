"""Prometheus metrics of every service, served on a side port (`ALPHASWARM_METRICS_PORT`, `/metrics`).

One registry a process (`REGISTRY`); in the embedded single-process mode every service shares it
and its one port, which stays closed unless the setting is given. What is exported:

| metric | type | labels | where |
|---|---|---|---|
| `alphaswarm_rpc_server_duration_seconds` | histogram | service, method, code | every gRPC server (interceptor) |
| `alphaswarm_rpc_server_errors_total` | counter | service, method, code | every gRPC server, code != OK |
| `alphaswarm_http_requests_total` | counter | method, route, status | the gateway's REST app |
| `alphaswarm_http_request_duration_seconds` | histogram | method, route | the gateway's REST app |
| `alphaswarm_stage_duration_seconds` | histogram | stage, outcome | the gateway's saga stages |
| `alphaswarm_jobs_total` | counter | kind, outcome | the gateway's job workers |
| `alphaswarm_jobs_redelivered_total` | counter | kind | a job delivered more than once |
| `alphaswarm_queue_pending_jobs` | gauge | queue | JetStream consumer info on scrape |
| `alphaswarm_queue_ack_pending_jobs` | gauge | queue | JetStream consumer info on scrape |
| `alphaswarm_queue_redelivered_jobs` | gauge | queue | JetStream consumer info on scrape |
| `alphaswarm_catalog_writes_total` | counter | table, op | the persistence service's flushes |
| `alphaswarm_runs` | gauge | state | the catalog, counted on scrape |
| `alphaswarm_tasks` | gauge | kind, state | the catalog, counted on scrape |

`deploy/grafana/alphaswarm-dashboard.json` queries these names (a test checks every panel).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "REGISTRY",
    "add_catalog_source",
    "add_queue_source",
    "count_catalog_write",
    "observe_http",
    "observe_job",
    "observe_rpc",
    "observe_stage",
    "start_metrics_server",
]

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
_STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

RPC_DURATION = Histogram(
    "alphaswarm_rpc_server_duration_seconds",
    "Time a gRPC server spent on a call, by service, full method and status code.",
    ["service", "method", "code"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
RPC_ERRORS = Counter(
    "alphaswarm_rpc_server_errors_total",
    "gRPC calls that ended with a status other than OK, by service, full method and code.",
    ["service", "method", "code"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "alphaswarm_http_requests_total",
    "REST requests the gateway answered, by HTTP method, route template and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "alphaswarm_http_request_duration_seconds",
    "Time the gateway spent answering a REST request (to the end of the body), by method and route.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
STAGE_DURATION = Histogram(
    "alphaswarm_stage_duration_seconds",
    "Duration of a saga stage, by stage name and outcome (ok, error).",
    ["stage", "outcome"],
    buckets=_STAGE_BUCKETS,
    registry=REGISTRY,
)
JOBS = Counter(
    "alphaswarm_jobs_total",
    "Jobs a gateway worker took from the work queue, by kind and outcome (ok, retry, dead_letter).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
JOBS_REDELIVERED = Counter(
    "alphaswarm_jobs_redelivered_total",
    "Deliveries of a job after its first (a worker died, failed or let its ack wait expire), by kind.",
    ["kind"],
    registry=REGISTRY,
)
CATALOG_WRITES = Counter(
    "alphaswarm_catalog_writes_total",
    "Rows the catalog inserted, updated or deleted, by table and operation.",
    ["table", "op"],
    registry=REGISTRY,
)


# -- observations ---------------------------------------------------------------------------------
def observe_rpc(service: str, method: str, code: str, seconds: float) -> None:
    RPC_DURATION.labels(service, method, code).observe(seconds)
    if code != "OK":
        RPC_ERRORS.labels(service, method, code).inc()


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


@contextlib.contextmanager
def observe_stage(stage: str) -> Iterator[None]:
    start = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        STAGE_DURATION.labels(stage, outcome).observe(time.perf_counter() - start)


def observe_job(kind: str, outcome: str, deliveries: int) -> None:
    JOBS.labels(kind, outcome).inc()
    redelivered = JOBS_REDELIVERED.labels(kind)  # exported at 0 from the first job of a kind
    if deliveries > 1:
        redelivered.inc()


def count_catalog_write(table: str, op: str, n: int = 1) -> None:
    CATALOG_WRITES.labels(table, op).inc(n)


# -- collected on scrape --------------------------------------------------------------------------
class _LatestSource(Collector):
    """Asks the most recently added live source (weakly held) for its figures on every scrape."""

    def __init__(self, build: Callable[[Any], Iterable[Any]], describe: Callable[[], Iterable[Any]]) -> None:
        self._sources: list[weakref.ref[Any]] = []
        self._build = build
        self._describe = describe
        self._lock = threading.Lock()

    def add(self, source: Any) -> None:
        with self._lock:
            self._sources = [r for r in self._sources if r() is not None] + [weakref.ref(source)]

    def describe(self) -> Iterable[Any]:
        return list(self._describe())

    def collect(self) -> Iterable[Any]:
        with self._lock:
            live = [s for s in (r() for r in self._sources) if s is not None]
        if not live:
            return list(self._describe())
        try:
            return list(self._build(live[-1]))
        except Exception as exc:
            log.warning("metrics source %s failed: %s", type(live[-1]).__name__, exc)
            return list(self._describe())


def _catalog_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    runs = GaugeMetricFamily(
        "alphaswarm_runs", "Alpha-backtest runs in the catalog by state.", labels=["state"]
    )
    tasks = GaugeMetricFamily(
        "alphaswarm_tasks",
        "Tasks (runs and backtester jobs) in the catalog by kind and state.",
        labels=["kind", "state"],
    )
    return runs, tasks


def _catalog_describe() -> Iterable[Any]:
    return _catalog_families()


def _catalog_build(source: Any) -> Iterable[Any]:
    """`source.state_counts()` -> {"runs": {state: n}, "tasks": {(kind, state): n}}."""
    counts = source.state_counts()
    runs, tasks = _catalog_families()
    for state, n in sorted(counts.get("runs", {}).items()):
        runs.add_metric([state], float(n))
    for (kind, state), n in sorted(counts.get("tasks", {}).items()):
        tasks.add_metric([kind, state], float(n))
    return runs, tasks


def _queue_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "alphaswarm_queue_pending_jobs", "Jobs waiting on the work queue for a worker.", labels=["queue"]
        ),
        GaugeMetricFamily(
            "alphaswarm_queue_ack_pending_jobs",
            "Jobs delivered to a worker and not yet acknowledged (running).",
            labels=["queue"],
        ),
        GaugeMetricFamily(
            "alphaswarm_queue_redelivered_jobs",
            "Jobs delivered more than once and not yet acknowledged.",
            labels=["queue"],
        ),
    )


def _queue_build(source: Any) -> Iterable[Any]:
    """`source.depth()` -> {"queue", "pending", "ack_pending", "redelivered"}."""
    depth = source.depth()
    families = _queue_families()
    if depth:
        for family, key in zip(families, ("pending", "ack_pending", "redelivered"), strict=True):
            family.add_metric([str(depth["queue"])], float(depth[key]))
    return families


_CATALOG = _LatestSource(_catalog_build, _catalog_describe)
_QUEUE = _LatestSource(_queue_build, _queue_families)
REGISTRY.register(_CATALOG)
REGISTRY.register(_QUEUE)


def add_catalog_source(source: Any) -> None:
    """Count runs and tasks by state from `source.state_counts()` on every scrape."""
    _CATALOG.add(source)


def add_queue_source(source: Any) -> None:
    """Report the work queue's depth from `source.depth()` on every scrape."""
    _QUEUE.add(source)


# -- the side port --------------------------------------------------------------------------------
_servers: dict[tuple[str, int], Any] = {}


def start_metrics_server(port: int | None, host: str = "127.0.0.1") -> int | None:
    """Serve `/metrics` of `REGISTRY` on host:port (once a process); None when `port` is None."""
    if port is None:
        return None
    key = (host, port)
    if key in _servers:
        return int(_servers[key].server_port)
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    _servers[key] = server
    bound = int(server.server_port)
    if port == 0:
        _servers[(host, bound)] = server
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound


def stop_metrics_servers() -> None:
    for server in {id(s): s for s in _servers.values()}.values():
        with contextlib.suppress(Exception):
            server.shutdown()
            server.server_close()
    _servers.clear()
