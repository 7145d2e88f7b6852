"""REST for backtester jobs: POST a job document, get a TaskAccepted envelope, watch
`/chat/stream/{task_id}`, read `/tasks/{task_id}` for the outcome."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.configio import parse_config_document
from alphaswarm_common.grpc_client import aio_call
from alphaswarm_gateway import auth
from alphaswarm_gateway.deps import GatewayDep
from alphaswarm_gateway.jobs import JOB_MODELS, accept_job, parse_job, task_view
from alphaswarm_gateway.limits import parse_off_loop
from alphaswarm_gateway.views import STATE_NAMES, stream_url

router = APIRouter(tags=["jobs"])

JOB_SCHEMA_DEFS: dict[str, Any] = {}
"""The schemas the job bodies refer to, for the OpenAPI document's `components.schemas`."""
_REF_TEMPLATE = "#/components/schemas/{model}"


def _accepted(task: Any) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "kind": task.kind,
        "status": STATE_NAMES[task.state],
        "stream_url": stream_url(task.task_id),
    }


def _route(path: str, kind: str, summary: str) -> None:
    model = JOB_MODELS[kind].model
    schema = model.model_json_schema(ref_template=_REF_TEMPLATE)
    JOB_SCHEMA_DEFS.update(schema.pop("$defs", {}))

    def parse(raw: bytes) -> Any:
        return parse_job(kind, parse_config_document(raw, field="body"))

    async def submit(request: Request, gw: GatewayDep) -> dict[str, Any]:
        job = await parse_off_loop(parse, await request.body())
        who = await auth.admit(gw)
        task = await accept_job(gw, kind, job, request_id=request.headers.get("idempotency-key"))
        await auth.record_submission(gw, who, kind, task.task_id)
        return _accepted(task)

    submit.__doc__ = f"{summary} (JSON or YAML body); answers 202 with a TaskAccepted envelope."
    router.add_api_route(
        path,
        submit,
        methods=["POST"],
        status_code=202,
        operation_id=f"submit_{kind}",
        summary=summary,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": schema},
                    "application/x-yaml": {"schema": schema},
                },
            }
        },
    )


_route("/backtests", "backtest", "Backtest a rule strategy")
_route("/optimizations", "optimization", "Optimize a strategy's parameters")
_route("/walk-forward-tests", "walk_forward", "Walk-forward test a strategy")
_route("/portfolio-backtests", "portfolio_backtest", "Backtest a portfolio of legs")
_route("/monte-carlo", "monte_carlo", "Monte Carlo simulation of a backtest's returns")


@router.get("/tasks/{task_id}", operation_id="get_task", summary="A task's status and result")
async def get_task(task_id: str, gw: GatewayDep) -> dict[str, Any]:
    task = (
        await aio_call(
            gw.clients.persistence.GetTask,
            ppb.GetTaskRequest(task_id=task_id),
            timeout=gw.settings.deadline_default_seconds,
            target="persistence",
        )
    ).task
    return task_view(task)


@router.post(
    "/tasks/{task_id}:cancel",
    operation_id="cancel_task",
    summary="Cancel an unfinished task (409 when it already ended)",
)
async def cancel_task(task_id: str, gw: GatewayDep) -> dict[str, Any]:
    task = await gw.cancel_task(task_id)
    await auth.record(gw, "cancel", task.kind, task.task_id, task_id=task.task_id)
    return task_view(task)
