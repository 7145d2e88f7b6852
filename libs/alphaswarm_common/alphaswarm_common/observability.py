"""A process's logs, traces and metrics, set up once from its settings.

`setup(service, settings)` installs the log formatter (JSON for services, text for the CLI
unless `ALPHASWARM_LOG_FORMAT` says otherwise), turns tracing on when an OTLP endpoint is
configured (`telemetry`), and opens the `/metrics` side port when `ALPHASWARM_METRICS_PORT`
is set (`service_metrics`). See docs/observability.md.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from alphaswarm_common import logging_json, service_metrics, telemetry

__all__ = ["log_format", "setup", "stage_scope"]

log = logging.getLogger("alphaswarm.stages")


def log_format(settings: Any, default: str = "json") -> str:
    fmt = getattr(settings, "log_format", "auto")
    return default if fmt == "auto" else str(fmt)


def setup(
    service: str,
    settings: Any,
    *,
    default_format: str = "json",
    host: str | None = None,
    level: int = logging.INFO,
) -> int | None:
    """Logs, tracing and the metrics port of this process; returns the metrics port (None: closed)."""
    logging_json.configure(log_format(settings, default_format), service=service, level=level)
    telemetry.configure_from_settings(service, settings)
    return service_metrics.start_metrics_server(
        settings.metrics_port, settings.metrics_host or host or settings.grpc_host
    )


@contextlib.contextmanager
def stage_scope(name: str) -> Iterator[None]:
    """A saga stage: `stage` on its log lines, a span `stage <name>`, its duration in
    `alphaswarm_stage_duration_seconds{stage, outcome}`."""
    start = time.perf_counter()
    with (
        logging_json.bind(stage=name),
        telemetry.span(f"stage {name}", attributes={"alphaswarm.stage": name}),
        service_metrics.observe_stage(name),
    ):
        yield
        log.info("stage %s finished in %.3fs", name, time.perf_counter() - start)
