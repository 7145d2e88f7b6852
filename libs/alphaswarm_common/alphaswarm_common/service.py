"""The process entry every service shares: settings, logging, serve, wait for a signal.

Each service's `server.py` provides `build(settings) -> [ServiceRegistration]`
and calls `run_service("trainer", build)` from its `main()`. The embedded
launcher calls the same `build` functions and `serve()` in one process.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Sequence

from alphaswarm_common.grpc_server import ServiceRegistration, run_until_signal, serve
from alphaswarm_common.settings import Settings

__all__ = ["configure_logging", "run_service"]


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # SQLAlchemy 2.1 + MLflow emit a deprecation warning in every process; it is not ours to fix.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(mlflow|sqlalchemy|google)\..*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"mlflow\..*")
    for noisy in ("mlflow", "alembic", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from alphaswarm_common.tracking import quiet_mlflow

    quiet_mlflow()


def run_service(
    name: str, build: Callable[[Settings], Sequence[ServiceRegistration]], settings: Settings | None = None
) -> None:
    configure_logging()
    settings = settings or Settings()
    registrations = build(settings)
    server, port = serve(
        registrations,
        host=settings.grpc_host,
        port=settings.grpc_port,
        max_workers=settings.grpc_max_workers,
        tuning=settings.grpc_tuning(),
    )
    logging.getLogger(f"alphaswarm.{name}").info("%s listening on %s:%d", name, settings.grpc_host, port)
    print(f"{name} listening on {settings.grpc_host}:{port}", flush=True)
    run_until_signal(server, grace=settings.grpc_shutdown_grace_seconds)
