"""`alphaswarm.gateway.v1.AlphaBacktestService` (asyncio): thin adapter over `Gateway`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from alphaswarm.gateway.v1 import gateway_service_pb2 as pb
from alphaswarm.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from alphaswarm_common.config import AlphaBacktestConfig
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.protoconv import config_from_proto
from alphaswarm_gateway import auth
from alphaswarm_gateway.core import Gateway
from alphaswarm_gateway.views import event_to_proto, stream_url

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AlphaBacktestService"].full_name


class AlphaBacktestServicer(pb_grpc.AlphaBacktestServiceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def StartAlphaBacktestRun(
        self, request: pb.StartAlphaBacktestRunRequest, context: Any
    ) -> pb.StartAlphaBacktestRunResponse:
        if not request.HasField("config"):
            raise InvalidArgument("config is required", field="config")
        cfg = config_from_proto(request.config, AlphaBacktestConfig, prefix="config")
        who = await auth.admit(self.gw)
        run = await self.gw.start_run(cfg, request_id=request.request_id or None)
        await auth.record_submission(self.gw, who, "alpha_backtest_run", run.task_id, run_id=run.run_id)
        return pb.StartAlphaBacktestRunResponse(
            task_id=run.task_id, run_id=run.run_id, state=run.state, stream_url=stream_url(run.task_id)
        )

    async def GetAlphaBacktestRun(
        self, request: pb.GetAlphaBacktestRunRequest, context: Any
    ) -> pb.GetAlphaBacktestRunResponse:
        if not request.run_id and not request.task_id:
            raise InvalidArgument("run_id or task_id is required", field="run_id")
        return pb.GetAlphaBacktestRunResponse(
            run=await self.gw.get_run(run_id=request.run_id, task_id=request.task_id)
        )

    async def ListAlphaBacktestRuns(
        self, request: pb.ListAlphaBacktestRunsRequest, context: Any
    ) -> pb.ListAlphaBacktestRunsResponse:
        page = await self.gw.list_runs(page_size=request.page_size, page_token=request.page_token)
        return pb.ListAlphaBacktestRunsResponse(runs=page.runs, next_page_token=page.next_page_token)

    async def WatchAlphaBacktestRun(
        self, request: pb.WatchAlphaBacktestRunRequest, context: Any
    ) -> AsyncIterator[pb.WatchAlphaBacktestRunResponse]:
        if not request.task_id:
            raise InvalidArgument("task_id is required", field="task_id")
        async for event in self.gw.watch(request.task_id, after_seq=request.after_seq):
            yield pb.WatchAlphaBacktestRunResponse(event=event_to_proto(event))

    async def Cancel(self, request: pb.CancelRequest, context: Any) -> pb.CancelResponse:
        if not request.run_id and not request.task_id:
            raise InvalidArgument("run_id or task_id is required", field="run_id")
        run = await self.gw.cancel_run(run_id=request.run_id, task_id=request.task_id)
        await auth.record(self.gw, "cancel", "alpha_backtest_run", run.run_id, task_id=run.task_id)
        return pb.CancelResponse(run=run)
