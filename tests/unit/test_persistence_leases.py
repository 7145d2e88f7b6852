"""Task leases in the catalog: claims, fenced writes, reaping, cancel and withdrawal (SQLite)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2, json_format

from alphaswarm.common.v1 import config_pb2, resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm_common.errors import FailedPrecondition
from alphaswarm_persistence import migrations
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.models import AlphaBacktestRunRow, RequestKeyRow, TaskRow
from alphaswarm_persistence.repository import CatalogRepository
from alphaswarm_persistence.server import Servicer


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("leases") / "template.db"
    migrations.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db(template_db: Path, tmp_path: Path) -> Any:
    path = tmp_path / "catalog.db"
    shutil.copy(template_db, path)
    database = Database(f"sqlite:///{path}")
    yield database
    database.dispose()


@pytest.fixture
def svc(db: Database) -> Servicer:
    return Servicer(CatalogRepository(db))


def _run(svc: Servicer, request_id: str = "") -> resources_pb2.AlphaBacktestRun:
    cfg = json_format.ParseDict(
        {
            "run_name": "lease-run",
            "dataset_cfg": {"source": "sp500", "symbols": ["AAPL"]},
            "model_cfg": {"type": "ridge"},
        },
        config_pb2.AlphaBacktestConfig(),
    )
    run = resources_pb2.AlphaBacktestRun(config=cfg, state=resources_pb2.RUN_STATE_PENDING, stage="accepted")
    return svc.CreateAlphaBacktestRun(
        pb.CreateAlphaBacktestRunRequest(run=run, request_id=request_id), None
    ).run


def _claim(svc: Servicer, task_id: str, owner: str, *, lease: float = 30.0, max_attempts: int = 3) -> Any:
    return svc.ClaimTask(
        pb.ClaimTaskRequest(task_id=task_id, owner=owner, lease_seconds=lease, max_attempts=max_attempts),
        None,
    )


def _stage(svc: Servicer, run_id: str, stage: str, token: int) -> resources_pb2.AlphaBacktestRun:
    return svc.UpdateAlphaBacktestRun(
        pb.UpdateAlphaBacktestRunRequest(
            run=resources_pb2.AlphaBacktestRun(run_id=run_id, stage=stage),
            update_mask=field_mask_pb2.FieldMask(paths=["stage"]),
            fencing_token=token,
        ),
        None,
    ).run


def test_a_second_claim_waits_for_the_lease_and_then_fences_the_first(svc: Servicer) -> None:
    run = _run(svc)
    first = _claim(svc, run.task_id, "worker-a", lease=0.2)
    assert first.outcome == pb.CLAIM_OUTCOME_CLAIMED and first.lease.fencing_token == 1
    held = _claim(svc, run.task_id, "worker-b")
    assert held.outcome == pb.CLAIM_OUTCOME_HELD  # a duplicate delivery while the lease is live
    assert _stage(svc, run.run_id, "training", first.lease.fencing_token).stage == "training"
    time.sleep(0.3)  # the first worker stopped renewing
    second = _claim(svc, run.task_id, "worker-b")
    assert second.outcome == pb.CLAIM_OUTCOME_CLAIMED and second.lease.fencing_token == 2
    assert second.lease.attempts == 2
    with pytest.raises(FailedPrecondition) as info:
        _stage(svc, run.run_id, "backtesting", first.lease.fencing_token)
    assert info.value.reason == "LEASE_LOST"
    with pytest.raises(FailedPrecondition):
        svc.RenewTaskLease(
            pb.RenewTaskLeaseRequest(task_id=run.task_id, fencing_token=1, lease_seconds=30), None
        )
    got = svc.GetAlphaBacktestRun(pb.GetAlphaBacktestRunRequest(run_id=run.run_id), None).run
    assert got.stage == "training"  # the stale write changed nothing
    assert _stage(svc, run.run_id, "predicting", 2).stage == "predicting"


def test_stage_outputs_are_kept_for_the_next_attempt(svc: Servicer) -> None:
    run = _run(svc)
    lease = _claim(svc, run.task_id, "a").lease
    out = json_format.ParseDict({"model_version": "3"}, pb.RecordStageOutputRequest().output)
    svc.RecordStageOutput(
        pb.RecordStageOutputRequest(
            task_id=run.task_id, fencing_token=lease.fencing_token, stage="register", output=out
        ),
        None,
    )
    svc.ReleaseTaskLease(
        pb.ReleaseTaskLeaseRequest(task_id=run.task_id, fencing_token=lease.fencing_token), None
    )
    again = _claim(svc, run.task_id, "b")
    assert again.outcome == pb.CLAIM_OUTCOME_CLAIMED
    assert json_format.MessageToDict(again.lease.stage_outputs) == {"register": {"model_version": "3"}}
    with pytest.raises(FailedPrecondition):
        svc.RecordStageOutput(
            pb.RecordStageOutputRequest(
                task_id=run.task_id, fencing_token=lease.fencing_token, stage="deploy"
            ),
            None,
        )


def test_claims_beyond_max_attempts_are_exhausted_and_terminal_tasks_are_not_claimed(svc: Servicer) -> None:
    run = _run(svc)
    for _ in range(2):
        lease = _claim(svc, run.task_id, "a", max_attempts=2).lease
        svc.ReleaseTaskLease(
            pb.ReleaseTaskLeaseRequest(task_id=run.task_id, fencing_token=lease.fencing_token), None
        )
    third = _claim(svc, run.task_id, "a", max_attempts=2)
    assert third.outcome == pb.CLAIM_OUTCOME_EXHAUSTED
    svc.UpdateAlphaBacktestRun(
        pb.UpdateAlphaBacktestRunRequest(
            run=resources_pb2.AlphaBacktestRun(
                run_id=run.run_id,
                state=resources_pb2.RUN_STATE_FAILED,
                stage="failed",
                error=resources_pb2.ErrorDetail(stage="training", code="ABORTED", message="gave up"),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["state", "stage", "error"]),
            fencing_token=third.lease.fencing_token,
        ),
        None,
    )
    assert _claim(svc, run.task_id, "b").outcome == pb.CLAIM_OUTCOME_TERMINAL
    task = svc.GetTask(pb.GetTaskRequest(task_id=run.task_id), None).task
    assert task.state == resources_pb2.RUN_STATE_FAILED and task.error.code == "ABORTED"


def test_reaper_requeues_expired_and_unclaimed_tasks_then_fails_exhausted_ones(
    svc: Servicer, db: Database
) -> None:
    run = _run(svc)
    leased = _run(svc)
    _claim(svc, leased.task_id, "a", lease=60)  # live: not reaped
    reap = pb.ReapTasksRequest(owner="reaper", hold_seconds=0.2, pending_grace_seconds=0.05, max_attempts=1)
    time.sleep(0.1)
    found = svc.ReapTasks(reap, None).tasks
    assert [(t.task.task_id, t.run_id, t.action) for t in found] == [
        (run.task_id, run.run_id, pb.REAP_ACTION_REQUEUE)
    ]
    assert svc.ReapTasks(reap, None).tasks == []  # held back for hold_seconds
    lease = _claim(svc, run.task_id, "a", lease=0.05).lease  # the requeued job's attempt; its worker dies
    time.sleep(0.25)
    found = svc.ReapTasks(reap, None).tasks
    assert len(found) == 1 and found[0].action == pb.REAP_ACTION_EXHAUSTED
    assert found[0].lease.fencing_token == lease.fencing_token + 1
    with pytest.raises(FailedPrecondition):
        _stage(svc, run.run_id, "training", lease.fencing_token)


def test_cancel_ends_run_and_task_and_fences_the_worker(svc: Servicer) -> None:
    run = _run(svc)
    lease = _claim(svc, run.task_id, "a").lease
    resp = svc.CancelTask(pb.CancelTaskRequest(task_id=run.task_id, message="stop"), None)
    assert resp.previous_owner == "a" and resp.run_id == run.run_id
    assert resp.task.state == resources_pb2.RUN_STATE_CANCELLED and resp.task.error.code == "CANCELLED"
    got = svc.GetAlphaBacktestRun(pb.GetAlphaBacktestRunRequest(run_id=run.run_id), None).run
    assert got.state == resources_pb2.RUN_STATE_CANCELLED and got.error.message == "stop"
    with pytest.raises(FailedPrecondition):
        _stage(svc, run.run_id, "training", lease.fencing_token)
    with pytest.raises(FailedPrecondition) as info:
        svc.CancelTask(pb.CancelTaskRequest(task_id=run.task_id), None)
    assert info.value.field == "task_id"


def test_withdrawn_acceptance_frees_the_idempotency_key(svc: Servicer, db: Database) -> None:
    run = _run(svc, request_id="key-1")
    assert svc.DeleteUnclaimedTask(pb.DeleteUnclaimedTaskRequest(task_id=run.task_id), None).deleted
    with db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(TaskRow)) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(AlphaBacktestRunRow)) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(RequestKeyRow)) == 0
    again = _run(svc, request_id="key-1")
    assert again.run_id != run.run_id
    _claim(svc, again.task_id, "a")
    with pytest.raises(FailedPrecondition):
        svc.DeleteUnclaimedTask(pb.DeleteUnclaimedTaskRequest(task_id=again.task_id), None)
