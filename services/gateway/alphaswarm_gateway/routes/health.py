"""Liveness (`/healthz`) and readiness (`/readyz`: every upstream service and the event bus)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from alphaswarm_gateway.deps import GatewayDep

__all__ = ["ROUTERS", "health"]

ORDER = 4


health = APIRouter(tags=["health"])


@health.get("/healthz", operation_id="healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get("/readyz", operation_id="readyz", summary="Every upstream service and the event bus answer")
async def readyz(gw: GatewayDep) -> JSONResponse:
    checks = await gw.readiness()
    return JSONResponse(status_code=200 if checks["ready"] else 503, content=checks)


ROUTERS: tuple[APIRouter, ...] = (health,)
