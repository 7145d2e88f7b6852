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
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from alphaswarm_common.config import AlphaBacktestConfig
from alphaswarm_common.configio import parse_config, parse_config_document
from alphaswarm_common.grpc_server import ServiceRegistration, serve_aio
from alphaswarm_common.settings import Settings
from alphaswarm_common.tls import server_credentials
from alphaswarm_gateway import auth, catalog_api, jobs_api, mlflow_api
from alphaswarm_gateway.browser import api as browser_api
from alphaswarm_gateway.browser import catalog as browser_catalog
from alphaswarm_gateway.browser import install_browser
from alphaswarm_gateway.browser import models as browser_models
from alphaswarm_gateway.core import Gateway, bootstrap
from alphaswarm_gateway.deps import GatewayDep, PageSize
from alphaswarm_gateway.docs import install_docs
from alphaswarm_gateway.errors import (
    RequestIdMiddleware,
    document_error_responses,
    install_error_handlers,
)
from alphaswarm_gateway.limits import BodyLimitMiddleware, parse_off_loop
from alphaswarm_gateway.routes import tearsheet
from alphaswarm_gateway.views import audit_row_view, run_view, task_accepted

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def parse_config_body(raw: bytes) -> AlphaBacktestConfig:
    """A run config from a JSON or YAML body, whatever the content type says."""
    return parse_config(parse_config_document(raw, field="body"))


_CONFIG_SCHEMA = AlphaBacktestConfig.model_json_schema(ref_template="#/components/schemas/{model}")
_CONFIG_DEFS = _CONFIG_SCHEMA.pop("$defs", {})

runs = APIRouter(prefix="/ml/alpha-backtest-runs", tags=["alpha-backtest-runs"])


@runs.post(
    "",
    status_code=202,
    operation_id="start_alpha_backtest_run",
    summary="Start an alpha-backtest run",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/AlphaBacktestConfig"}},
                "application/x-yaml": {"schema": {"$ref": "#/components/schemas/AlphaBacktestConfig"}},
            },
        }
    },
)
async def start_run(request: Request, gw: GatewayDep) -> dict[str, Any]:
    """Accept a run config (JSON or YAML) and answer with the TaskAccepted envelope."""
    cfg = await parse_off_loop(parse_config_body, await request.body())
    who = await auth.admit(gw)
    run = await gw.start_run(cfg, request_id=request.headers.get("idempotency-key") or None)
    await auth.record_submission(gw, who, "alpha_backtest_run", run.task_id, run_id=run.run_id)
    return task_accepted(run)


@runs.get("", operation_id="list_alpha_backtest_runs", summary="List runs, newest first")
async def list_runs(gw: GatewayDep, page_size: PageSize = 50, page_token: str = "") -> dict[str, Any]:
    page = await gw.list_runs(page_size=page_size, page_token=page_token)
    return {"items": [run_view(r) for r in page.runs], "next_page_token": page.next_page_token or None}


@runs.get(
    "/{run_id}", operation_id="get_alpha_backtest_run", summary="One run with its links and combined metrics"
)
async def get_run(run_id: str, gw: GatewayDep) -> dict[str, Any]:
    return run_view(await gw.get_run(run_id=run_id))


@runs.post(
    "/{run_id}:cancel",
    operation_id="cancel_alpha_backtest_run",
    summary="Cancel an unfinished run (409 when it already ended)",
)
async def cancel_run(run_id: str, gw: GatewayDep) -> dict[str, Any]:
    run = await gw.cancel_run(run_id=run_id)
    await auth.record(gw, "cancel", "alpha_backtest_run", run.run_id, task_id=run.task_id)
    return run_view(run)


@runs.get(
    "/{run_id}/predictions",
    operation_id="list_alpha_backtest_run_predictions",
    summary="Prediction audit rows of a run",
)
async def list_predictions(
    run_id: str,
    gw: GatewayDep,
    symbol: str = "",
    page_size: Annotated[int, Query(ge=1, le=10_000)] = 500,
    page_token: str = "",
) -> dict[str, Any]:
    run = await gw.get_run(run_id=run_id)
    if not run.predictions_captured:
        captured = run.config.capture_predictions if run.config.HasField("capture_predictions") else False
        if not captured:
            reason = "the run was started with capture_predictions=false"
        elif not gw.settings.ml_prediction_audit_enabled:
            reason = "prediction audit is disabled (set ALPHASWARM_ML_PREDICTION_AUDIT_ENABLED=true)"
        else:
            reason = f"the run has not written its audit rows (status: {run_view(run)['status']})"
        return {"items": [], "next_page_token": None, "total_size": 0, "captured": False, "reason": reason}
    page = await gw.list_predictions(run_id, symbol=symbol, page_size=page_size, page_token=page_token)
    return {
        "items": [audit_row_view(r) for r in page.rows],
        "next_page_token": page.next_page_token or None,
        "total_size": page.total_size,
        "captured": True,
        "reason": None,
    }


stream = APIRouter(tags=["progress"])


@stream.get(
    "/chat/stream/{task_id}",
    operation_id="stream_task_progress",
    summary="Progress events of a task as server-sent events",
    response_class=EventSourceResponse,
)
async def stream_progress(task_id: str, request: Request, gw: GatewayDep) -> EventSourceResponse:
    """Every event from the first (or after `Last-Event-ID`), ending after the terminal one."""
    await gw.get_task(task_id)  # 404 before the stream starts
    try:
        after = int(request.headers.get("last-event-id", "0") or 0)
    except ValueError:
        after = 0

    async def events() -> AsyncIterator[dict[str, Any]]:
        watcher = gw.watch(task_id, after_seq=after)
        try:
            async for event in watcher:
                if await request.is_disconnected():
                    break
                yield {"id": str(event.seq), "event": "progress", "data": event.model_dump_json()}
        finally:
            with contextlib.suppress(Exception):
                await watcher.aclose()  # type: ignore[attr-defined]

    return EventSourceResponse(events(), ping=15)


health = APIRouter(tags=["health"])


@health.get("/healthz", operation_id="healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get("/readyz", operation_id="readyz", summary="Every upstream service and the event bus answer")
async def readyz(gw: GatewayDep) -> JSONResponse:
    checks = await gw.readiness()
    return JSONResponse(status_code=200 if checks["ready"] else 503, content=checks)


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
        try:
            yield
        finally:
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
    install_docs(app, title=app.title)
    install_browser(app)

    app.include_router(runs)
    app.include_router(mlflow_api.runs)
    app.include_router(mlflow_api.models)
    app.include_router(stream)
    app.include_router(health)
    app.include_router(catalog_api.backtests)
    app.include_router(catalog_api.optimizations)
    app.include_router(catalog_api.walk_forward_tests)
    app.include_router(catalog_api.portfolio_backtests)
    app.include_router(jobs_api.router)
    app.include_router(browser_api.router)
    app.include_router(browser_catalog.router)
    app.include_router(browser_models.deployments)
    app.include_router(browser_models.models)
    app.include_router(tearsheet.router)

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
