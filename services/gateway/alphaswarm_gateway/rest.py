"""REST and server-sent events of the gateway (FastAPI).

`create_app(settings)` builds the app; its lifespan wires the `Gateway`
(gRPC channels, MLflow, event bus, job queue, saga workers) and serves the
gateway's own gRPC API (`AlphaBacktestService`) on `settings.grpc_port` in the
same event loop.

Errors have one shape, `{"error": {"code", "reason", "message", "details"}}`,
with the status of docs/architecture.md's table: an invalid config is 422 and
names the field; a body that is not YAML/JSON is 400; an unknown id is 404; a
body above `ALPHASWARM_MAX_BODY_BYTES` is 413; a dependency that is down is 503
with `Retry-After`; every body carries the request's `X-Request-ID`
(`errors.py`, `limits.py`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from alphaswarm_common.config import AlphaBacktestConfig
from alphaswarm_common.grpc_server import ServiceRegistration, serve_aio
from alphaswarm_common.settings import Settings
from alphaswarm_common.tls import server_credentials
from alphaswarm_gateway import auth, jobs_api, mlflow_api, observe, routes
from alphaswarm_gateway.browser import api as browser_api
from alphaswarm_gateway.browser import catalog as browser_catalog
from alphaswarm_gateway.browser import install_browser
from alphaswarm_gateway.browser import models as browser_models
from alphaswarm_gateway.core import Gateway, bootstrap
from alphaswarm_gateway.docs import install_docs
from alphaswarm_gateway.errors import (
    RequestIdMiddleware,
    document_error_responses,
    install_error_handlers,
)
from alphaswarm_gateway.limits import BodyLimitMiddleware

__all__ = ["create_app"]

log = logging.getLogger(__name__)


_CONFIG_SCHEMA = AlphaBacktestConfig.model_json_schema(ref_template="#/components/schemas/{model}")
_CONFIG_DEFS = _CONFIG_SCHEMA.pop("$defs", {})


def create_app(settings: Settings, *, gateway: Gateway | None = None, serve_grpc: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw = gateway or bootstrap(settings)
        await gw.start()
        app.state.gateway = gw
        grpc_server = None
        if serve_grpc:
            from alphaswarm.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
            from alphaswarm_gateway.grpc_api import SERVICE_NAME, AlphaBacktestServicer

            grpc_server, port = await serve_aio(
                [
                    ServiceRegistration(
                        pb_grpc.add_AlphaBacktestServiceServicer_to_server,
                        AlphaBacktestServicer(gw),
                        SERVICE_NAME,
                    )
                ],
                host=settings.grpc_host,
                port=settings.grpc_port,
                tuning=settings.grpc_tuning(),
                auth=app.state.auth,
                credentials=grpc_credentials,
            )
            app.state.grpc_port = port
            log.info("gateway gRPC listening on %s:%d", settings.grpc_host, port)
        warming = browser_api.warm(app)  # in the background: the gateway is ready meanwhile
        try:
            yield
        finally:
            warming.cancel()
            if grpc_server is not None:
                await grpc_server.stop(settings.grpc_shutdown_grace_seconds)
            await gw.close()

    app = FastAPI(
        title="AlphaSwarm",
        version="0.1.0",
        summary="Train a model, deploy it as an alpha, backtest the trades it drives.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        dependencies=[auth.GUARD],
    )
    app.state.settings = settings
    install_error_handlers(app)
    # The last added runs first: the request id exists before the body limit may answer 413.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    observe.install(app)  # metrics and trace spans around everything else
    install_docs(app, title=app.title)
    install_browser(app)

    for router in routes.routers():  # runs, progress, health, the catalog (one module per resource)
        app.include_router(router)
    app.include_router(mlflow_api.runs)
    app.include_router(mlflow_api.models)
    app.include_router(jobs_api.router)
    app.include_router(browser_api.router)
    app.include_router(browser_catalog.router)
    app.include_router(browser_models.deployments)
    app.include_router(browser_models.models)

    auth.secure_app(app, settings)
    grpc_credentials = server_credentials(settings, require_client_auth=False)
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original_openapi()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["AlphaBacktestConfig"] = json.loads(json.dumps(_CONFIG_SCHEMA))
        components.update(_CONFIG_DEFS)
        components.update(jobs_api.JOB_SCHEMA_DEFS)
        document_error_responses(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
