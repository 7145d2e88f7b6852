"""REST of alpha-backtest runs: start (JSON or YAML body), list, get, cancel, prediction audit rows.

The start answers 202 with the TaskAccepted envelope; its body is parsed off the
event loop (`limits.parse_off_loop`), so a large YAML body does not stall other
requests. The MLflow views of a run are `mlflow_api`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from alphaswarm_common.config import AlphaBacktestConfig
from alphaswarm_common.configio import parse_config, parse_config_document
from alphaswarm_gateway import auth
from alphaswarm_gateway.deps import GatewayDep, PageSize
from alphaswarm_gateway.limits import parse_off_loop
from alphaswarm_gateway.views import audit_row_view, run_view, task_accepted

__all__ = ["ROUTERS", "parse_config_body", "runs"]

ORDER = 0


def parse_config_body(raw: bytes) -> AlphaBacktestConfig:
    """A run config from a JSON or YAML body, whatever the content type says."""
    return parse_config(parse_config_document(raw, field="body"))


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


ROUTERS: tuple[APIRouter, ...] = (runs,)
