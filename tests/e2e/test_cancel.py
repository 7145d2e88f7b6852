"""Cancelling a run through the gateway's gRPC API (embedded stack): the run ends CANCELLED
with a terminal event, its MLflow runs are ended, and a second cancel is FAILED_PRECONDITION."""

from __future__ import annotations

import time

import grpc
import pytest

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.embedded import EmbeddedStack
from alphaswarm.gateway.v1 import gateway_service_pb2 as pb
from alphaswarm.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from alphaswarm_common.configio import parse_config
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.protoconv import config_to_proto
from tests.e2e.conftest import small_run

pytestmark = pytest.mark.e2e


def test_cancel_mid_training_over_grpc(stack: EmbeddedStack) -> None:
    stub = pb_grpc.AlphaBacktestServiceStub(channel(stack.gateway_addr or ""))
    cfg = parse_config(small_run(run_name="cancel-grpc", model_cfg={"name": "e2e-cancel-grpc"}))
    started = stub.StartAlphaBacktestRun(
        pb.StartAlphaBacktestRunRequest(config=config_to_proto(cfg)), timeout=60
    )
    stages = []
    for msg in stub.WatchAlphaBacktestRun(
        pb.WatchAlphaBacktestRunRequest(task_id=started.task_id), timeout=120
    ):
        stages.append(msg.event.stage)
        if msg.event.stage == "training" and msg.event.status == "started":
            cancelled = stub.Cancel(pb.CancelRequest(run_id=started.run_id), timeout=30).run
            assert cancelled.state == resources_pb2.RUN_STATE_CANCELLED
    assert stages[-1] == "cancelled"
    run = stub.GetAlphaBacktestRun(pb.GetAlphaBacktestRunRequest(run_id=started.run_id), timeout=30).run
    assert run.state == resources_pb2.RUN_STATE_CANCELLED
    assert (run.error.stage, run.error.code) == ("training", "CANCELLED")
    with pytest.raises(grpc.RpcError) as info:
        stub.Cancel(pb.CancelRequest(task_id=started.task_id), timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert stack.tracker is not None
    client = stack.tracker.client
    deadline = time.time() + 30
    while time.time() < deadline:  # the worker compensates once its cancelled work unwinds
        parent = client.get_run(run.mlflow_parent_run_id)
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run.mlflow_parent_run_id}'",
        )
        statuses = {parent.info.status, *(c.info.status for c in children)}
        if "RUNNING" not in statuses:
            break
        time.sleep(0.2)
    assert statuses <= {"FAILED", "FINISHED"} and parent.info.status == "FAILED"
