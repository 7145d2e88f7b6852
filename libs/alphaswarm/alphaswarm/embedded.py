"""The embedded stack: the five services in one process, on loopback.

Each service is a real gRPC server on an ephemeral port (the saga talks to
them over sockets exactly as in the distributed deployment); the catalog is
SQLite and the MLflow store a SQLite file under `settings.home`
(`./.alphaswarm/`); progress and jobs use the in-process bus. The gateway runs
in its own asyncio loop on a background thread.

    with EmbeddedStack(Settings()) as stack:
        stack.gateway_addr  # "127.0.0.1:PORT"
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

from pydantic import SecretStr

from alphaswarm_common.auth import check_exposure, load_service_secret
from alphaswarm_common.data import configure_data_roots
from alphaswarm_common.grpc_server import ServiceRegistration, serve, serve_aio
from alphaswarm_common.service import server_security
from alphaswarm_common.settings import Settings
from alphaswarm_common.tracking import Tracker

__all__ = ["EmbeddedStack", "start_services", "startup_gc"]

log = logging.getLogger(__name__)


def _serve(settings: Settings, registrations: list[ServiceRegistration]) -> tuple[Any, str]:
    auth, credentials = server_security(settings, registrations)
    server, port = serve(
        registrations,
        host="127.0.0.1",
        port=0,
        max_workers=settings.grpc_max_workers,
        tuning=settings.grpc_tuning(),
        auth=auth,
        credentials=credentials,
    )
    return server, f"127.0.0.1:{port}"


def with_service_secret(settings: Settings) -> Settings:
    """With authentication on, the in-process services share a fresh secret (role service)."""
    if settings.auth == "none" or load_service_secret(settings) is not None or settings.tls_enabled():
        return settings
    return settings.model_copy(update={"service_token": SecretStr(secrets.token_urlsafe(32))})


@contextlib.contextmanager
def startup_gc() -> Iterator[None]:
    """The garbage collector held off during a start-up, then the start-up's objects frozen.

    Starting the stack imports a few hundred modules and builds their tables: millions of
    objects that live as long as the process. Collecting while they are created finds nothing
    to free and costs seconds of CPU (every full collection walks them all); once frozen
    (`gc.freeze`) later collections skip them. Objects are still freed by reference counting;
    only cycles created during the start-up wait for an explicit `gc.collect()`. Nested uses
    re-enable the collector once, at the outermost exit, and only when it was enabled.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def start_services(settings: Settings, tracker: Tracker | None = None) -> tuple[Settings, list[Any], Tracker]:
    """Start persistence, trainer, registry and backtester; return settings with their addresses."""
    with startup_gc():
        return _start_services(settings, tracker)


def _start_services(settings: Settings, tracker: Tracker | None) -> tuple[Settings, list[Any], Tracker]:
    settings = with_service_secret(settings)
    log.info("embedded stack on loopback; %s", check_exposure(settings, ["127.0.0.1"]))
    # SciPy's special functions first (the backtester's metrics import them in any case): skops,
    # which the trainer imports to log a model, names each SciPy ufunc by searching the loaded
    # modules in import order, so the fewer modules precede SciPy's, the cheaper (~1 s of CPU
    # when gRPC, SQLAlchemy, MLflow and pandas come first).
    import scipy.special  # noqa: F401

    # With `chart_worker` (what `alphaswarm run` sets), the charts (evaluation plots, equity.png,
    # tearsheets) are drawn by a worker process, which imports matplotlib on the other core while
    # this one imports the services; otherwise they are drawn in place, on first use.
    if settings.chart_worker:
        from alphaswarm_common import chart_worker

        chart_worker.start(modules=("alphaswarm_backtester.series",))

    from alphaswarm_backtester import server as backtester_server
    from alphaswarm_persistence import server as persistence_server
    from alphaswarm_registry import server as registry_server
    from alphaswarm_trainer import server as trainer_server

    settings.resolved_home().mkdir(parents=True, exist_ok=True)
    configure_data_roots(settings.resolved_data_roots())
    tracker = tracker or Tracker(settings.tracking_uri(), artifact_root=settings.artifact_root())
    servers = []
    server, addr = _serve(settings, persistence_server.build(settings))  # migrates the catalog
    servers.append(server)
    settings = settings.model_copy(update={"persistence_addr": addr})
    # Opening the MLflow store (its own Alembic migrations on first use) overlaps with starting the
    # other services, never with the catalog migration: Alembic's `op`/`context` are process-global.
    warm = threading.Thread(target=tracker.warm_up, name="mlflow-warm-up", daemon=True)
    warm.start()
    for name, module in (
        ("trainer", trainer_server),
        ("registry", registry_server),
        ("backtester", backtester_server),
    ):
        server, addr = _serve(settings, module.build(settings, tracker=tracker))
        servers.append(server)
        settings = settings.model_copy(update={f"{name}_addr": addr})
    warm.join()
    return settings, servers, tracker


class EmbeddedStack:
    """All five services in this process; `gateway_addr` serves AlphaBacktestService."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gateway_addr: str | None = None
        self.metrics_port: int | None = None
        self.tracker: Tracker | None = None
        self._servers: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._gateway: Any = None
        self._grpc: Any = None

    def start(self) -> EmbeddedStack:
        with startup_gc():
            return self._start()

    def _start(self) -> EmbeddedStack:
        from alphaswarm_common import service_metrics, telemetry

        if self.settings.otlp_endpoint and not telemetry.enabled():
            telemetry.configure_from_settings("embedded", self.settings)
        # One registry and one /metrics port for the five services (closed unless the setting is given).
        self.metrics_port = service_metrics.start_metrics_server(
            self.settings.metrics_port, self.settings.metrics_host or "127.0.0.1"
        )
        settings, self._servers, tracker = start_services(self.settings)
        self.settings = settings
        self.tracker = tracker
        started: Future[str] = Future()
        self._loop = asyncio.new_event_loop()

        async def boot() -> None:
            from alphaswarm.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
            from alphaswarm_gateway.core import bootstrap
            from alphaswarm_gateway.grpc_api import SERVICE_NAME, AlphaBacktestServicer

            self._gateway = bootstrap(settings, tracker=tracker)
            await self._gateway.start()
            auth, credentials = server_security(settings, require_client_auth=False)
            self._grpc, port = await serve_aio(
                [
                    ServiceRegistration(
                        pb_grpc.add_AlphaBacktestServiceServicer_to_server,
                        AlphaBacktestServicer(self._gateway),
                        SERVICE_NAME,
                    )
                ],
                host="127.0.0.1",
                port=0,
                tuning=settings.grpc_tuning(),
                auth=auth,
                credentials=credentials,
            )
            started.set_result(f"127.0.0.1:{port}")

        def report(task: asyncio.Task[None]) -> None:
            exc = task.exception()
            if exc is not None and not started.done():
                started.set_exception(exc)

        def run_loop() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.create_task(boot()).add_done_callback(report)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run_loop, name="gateway-loop", daemon=True)
        self._thread.start()
        self.gateway_addr = started.result(timeout=120)
        return self

    def stop(self) -> None:
        if self._loop is not None:

            async def shutdown() -> None:
                if self._grpc is not None:
                    await self._grpc.stop(1)
                if self._gateway is not None:
                    await self._gateway.close()

            try:
                asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=30)
            except Exception:  # pragma: no cover - best effort on exit
                log.exception("gateway shutdown")
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop = None
        for server in self._servers:
            server.stop(1).wait()
        self._servers = []
        from alphaswarm_common import chart_worker

        chart_worker.stop()
        # What the start-up froze is the collector's again: a process that starts stacks one
        # after another (tests, notebooks) gets the cycles of a stopped one back.
        gc.unfreeze()

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
