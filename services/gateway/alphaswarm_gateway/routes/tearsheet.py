"""`GET /backtests/{backtest_id}/tearsheet.html`: the tearsheet of a catalog backtest, one HTML page.

The page is built from the catalog (metrics, equity and drawdown series,
trades, the parameters that produced it) by `alphaswarm_common.reporting`;
for a backtest of an alpha-backtest run it adds the run's ML metrics and
links, and the comparisons the backtester logged on the run's MLflow
`backtest` run (benchmark, buy-and-hold of the universe, IC per date, IC
decay, decile returns gross and net of costs). It loads nothing from
anywhere (inline PNGs and CSS), so it opens offline once downloaded.

`?download=true` answers with `Content-Disposition: attachment` (a file
named `tearsheet-<id>.html`); by default the page is served inline. Either
way it is sandboxed by its Content-Security-Policy (no script, no request).
Role: viewer. An unknown id is 404.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse

from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.errors import NotFound
from alphaswarm_common.grpc_client import aio_call
from alphaswarm_common.reporting import alpha_run_id_from_notes, build_tearsheet, read_comparisons
from alphaswarm_gateway.deps import GatewayDep

__all__ = ["PAGE_POLICY", "router"]

router = APIRouter(prefix="/backtests", tags=["backtests"])

PAGE_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"
"""The Content-Security-Policy of a tearsheet: inline images and styles, nothing else."""


@router.get(
    "/{backtest_id}/tearsheet.html",
    operation_id="get_backtest_tearsheet",
    summary="The tearsheet of a backtest: one self-contained HTML page (charts, metrics, config, trades)",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "The page."}},
)
async def get_backtest_tearsheet(
    backtest_id: Annotated[uuid.UUID, Path(description="The backtest id (UUID).")],
    gw: GatewayDep,
    download: Annotated[bool, Query(description="Answer as a file to save (attachment).")] = False,
) -> HTMLResponse:
    bid = str(backtest_id)
    timeout = gw.settings.deadline_default_seconds
    reply = await aio_call(
        gw.clients.persistence.GetBacktestResult,
        ppb.GetBacktestResultRequest(backtest_id=bid, include_trades=True),
        timeout=timeout,
        target="persistence",
    )
    run: Any = None
    comparisons = None
    run_id = alpha_run_id_from_notes(reply.result.notes)
    if run_id:
        try:
            run = await gw.get_run(run_id=run_id)
        except NotFound:
            run = None  # the run was deleted; the backtest stands on its own
    if run is not None and run.mlflow_backtest_run_id and run.backtest_id == bid:
        comparisons = await asyncio.to_thread(read_comparisons, gw.tracker, run.mlflow_backtest_run_id)
    elif run is not None and run.backtest_id != bid:
        run = None
    page = await asyncio.to_thread(build_tearsheet, reply, run=run, comparisons=comparisons)
    headers = {"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="tearsheet-{bid}.html"'
    return HTMLResponse(page, headers=headers)
