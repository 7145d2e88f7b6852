"""Fenced writes of a task's holder: `fence(token)` is the `guard` of `update_alpha_backtest_run` /
`TaskStore.update` (see `repo_leases` for the leases that hand the tokens out).

The update runs as `UPDATE tasks ... WHERE task_id = :id AND fencing_token = :token` in the
writer's transaction, and a stale token refuses the whole write (FAILED_PRECONDITION, reason
`LEASE_LOST`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from alphaswarm_common.errors import FailedPrecondition
from alphaswarm_persistence.models import TaskRow

__all__ = ["LEASE_LOST", "fence"]

LEASE_LOST = "LEASE_LOST"


def _lease_lost(tid: uuid.UUID, token: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"task {tid} is no longer held by fencing token {token} (another attempt claimed it, or it was cancelled)",
        field="fencing_token",
        reason=LEASE_LOST,
    )


def fence(token: int) -> Callable[[Session, uuid.UUID], None]:
    """A guard refusing the write unless `token` is the task's current fencing token."""

    def guard(s: Session, task_id: uuid.UUID) -> None:
        hit = s.execute(
            sa.update(TaskRow)
            .where(TaskRow.task_id == task_id, TaskRow.fencing_token == token)
            .values(fencing_token=TaskRow.fencing_token)
            .execution_options(synchronize_session=False)
        )
        if hit.rowcount != 1:  # type: ignore[attr-defined]
            raise _lease_lost(task_id, token)

    return guard
