"""The lease RPCs of `PersistenceService` (claim, renew, release, stage outputs, reap, cancel,
withdraw) over `repo_leases.LeaseStore`, where the rules are."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm_common.protoconv import struct_from_dict, timestamp_from_datetime
from alphaswarm_persistence.models import TaskRow
from alphaswarm_persistence.repo_leases import (
    CLAIM_CLAIMED,
    CLAIM_EXHAUSTED,
    CLAIM_HELD,
    CLAIM_TERMINAL,
    LeaseStore,
)
from alphaswarm_persistence.repository import CatalogRepository
from alphaswarm_persistence.tasks import task_to_proto

__all__ = ["LeaseServicerMixin", "lease_to_proto"]

_CLAIM_OUTCOMES = {
    CLAIM_CLAIMED: pb.CLAIM_OUTCOME_CLAIMED,
    CLAIM_HELD: pb.CLAIM_OUTCOME_HELD,
    CLAIM_TERMINAL: pb.CLAIM_OUTCOME_TERMINAL,
    CLAIM_EXHAUSTED: pb.CLAIM_OUTCOME_EXHAUSTED,
}


def lease_to_proto(row: TaskRow) -> pb.TaskLease:
    msg = pb.TaskLease(
        task_id=str(row.task_id),
        owner=row.lease_owner or "",
        fencing_token=int(row.fencing_token or 0),
        attempts=int(row.attempts or 0),
    )
    if row.lease_expires_at is not None:
        msg.expires_at.CopyFrom(timestamp_from_datetime(row.lease_expires_at))
    if row.stage_outputs:
        msg.stage_outputs.CopyFrom(struct_from_dict(row.stage_outputs))
    return msg


class LeaseServicerMixin:
    """The lease RPCs of `PersistenceService` for a servicer holding `self.repository`."""

    repository: CatalogRepository

    def ClaimTask(self, request: pb.ClaimTaskRequest, context: Any) -> pb.ClaimTaskResponse:
        outcome, row = LeaseStore(self.repository).claim(
            request.task_id, request.owner, request.lease_seconds, request.max_attempts
        )
        return pb.ClaimTaskResponse(
            outcome=_CLAIM_OUTCOMES[outcome], lease=lease_to_proto(row), task=task_to_proto(row)
        )

    def RenewTaskLease(self, request: pb.RenewTaskLeaseRequest, context: Any) -> pb.RenewTaskLeaseResponse:
        row = LeaseStore(self.repository).renew(request.task_id, request.fencing_token, request.lease_seconds)
        return pb.RenewTaskLeaseResponse(lease=lease_to_proto(row))

    def ReleaseTaskLease(
        self, request: pb.ReleaseTaskLeaseRequest, context: Any
    ) -> pb.ReleaseTaskLeaseResponse:
        return pb.ReleaseTaskLeaseResponse(
            released=LeaseStore(self.repository).release(request.task_id, request.fencing_token)
        )

    def RecordStageOutput(
        self, request: pb.RecordStageOutputRequest, context: Any
    ) -> pb.RecordStageOutputResponse:
        output = json_format.MessageToDict(request.output) if request.HasField("output") else {}
        row = LeaseStore(self.repository).record_stage_output(
            request.task_id, request.fencing_token, request.stage, output
        )
        return pb.RecordStageOutputResponse(lease=lease_to_proto(row))

    def ReapTasks(self, request: pb.ReapTasksRequest, context: Any) -> pb.ReapTasksResponse:
        found = LeaseStore(self.repository).reap(
            request.owner,
            request.hold_seconds,
            request.pending_grace_seconds,
            request.max_attempts,
            request.limit,
        )
        return pb.ReapTasksResponse(
            tasks=[
                pb.ReapedTask(
                    task=task_to_proto(r.task),
                    run_id=r.run_id,
                    action=pb.REAP_ACTION_EXHAUSTED if r.exhausted else pb.REAP_ACTION_REQUEUE,
                    lease=lease_to_proto(r.task) if r.exhausted else None,
                )
                for r in found
            ]
        )

    def CancelTask(self, request: pb.CancelTaskRequest, context: Any) -> pb.CancelTaskResponse:
        row, previous, run_id = LeaseStore(self.repository).cancel(
            request.task_id, request.message or "cancelled by request"
        )
        return pb.CancelTaskResponse(task=task_to_proto(row), previous_owner=previous, run_id=run_id)

    def DeleteUnclaimedTask(
        self, request: pb.DeleteUnclaimedTaskRequest, context: Any
    ) -> pb.DeleteUnclaimedTaskResponse:
        return pb.DeleteUnclaimedTaskResponse(
            deleted=LeaseStore(self.repository).delete_unclaimed(request.task_id)
        )
