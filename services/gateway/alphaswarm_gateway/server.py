"""Process entry of the gateway: REST + SSE (uvicorn) and the gateway's gRPC API.

`python -m alphaswarm_gateway.server`; settings from `ALPHASWARM_*`
(`ALPHASWARM_HTTP_PORT`, `ALPHASWARM_GRPC_PORT`, the four service addresses,
`ALPHASWARM_NATS_URL`, `MLFLOW_TRACKING_URI`).
"""

from __future__ import annotations

import sys

import uvicorn

from alphaswarm_common.data import configure_data_roots
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.observability import log_format, setup
from alphaswarm_common.service import configure_logging
from alphaswarm_common.settings import Settings
from alphaswarm_gateway.rest import create_app


def main() -> None:
    settings = Settings()
    configure_logging(fmt=log_format(settings), service="gateway")
    setup("gateway", settings, host=settings.http_host)
    configure_data_roots(settings.resolved_data_roots())
    try:
        app = create_app(settings)
    except InvalidArgument as exc:  # e.g. a public address without authentication
        print(f"gateway: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="info",
        log_config=None,  # uvicorn's loggers go through the root handler (JSON lines)
        timeout_graceful_shutdown=int(settings.grpc_shutdown_grace_seconds) or None,
    )


if __name__ == "__main__":
    main()
