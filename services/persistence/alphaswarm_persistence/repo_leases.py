"""Leases of tasks: one worker at a time per task, fenced writes, recorded stage outputs (the
RPCs are `servicer_leases`).

A worker that takes a job claims its task (`claim`): a new attempt, the
attempt counter and the fencing token incremented, the lease held by the
worker until `lease_expires_at`. The worker renews the lease while it works
(`renew`) and every write it makes carries the token (`fence`, used as the
`guard` of `update_alpha_backtest_run` / `TaskStore.update`): the update runs
as `UPDATE tasks ... WHERE task_id = :id AND fencing_token = :token` in the
same transaction and a stale token refuses the whole write
(FAILED_PRECONDITION, reason `LEASE_LOST`). So a second attempt of the same
task, or a cancel, makes every later write of the first attempt fail.

`reap` is the other half: an unfinished task whose lease expired (or that
was accepted and never claimed) is handed back to be queued again, or,
after `max_attempts`, handed to the reaper (which now holds its lease) to
fail. `stage_outputs` keeps what each completed stage produced, so the next
attempt resumes after the last completed stage instead of repeating it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from alphaswarm_common.errors import FailedPrecondition, InvalidArgument, NotFound
from alphaswarm_persistence.models import AlphaBacktestRunRow, RequestKeyRow, TaskRow, utcnow
from alphaswarm_persistence.repo_fencing import LEASE_LOST, _lease_lost, fence
from alphaswarm_persistence.repository import TERMINAL_RUN_STATES, CatalogRepository, parse_uuid

__all__ = [
    "CLAIM_CLAIMED",
    "CLAIM_EXHAUSTED",
    "CLAIM_HELD",
    "CLAIM_TERMINAL",
    "LEASE_LOST",
    "LeaseStore",
    "Reaped",
    "fence",
]

CLAIM_CLAIMED, CLAIM_HELD, CLAIM_TERMINAL, CLAIM_EXHAUSTED = "claimed", "held", "terminal", "exhausted"

UNFINISHED = ("pending", "running")


@dataclass(frozen=True)
class Reaped:
    """A task handed back (`exhausted` False: free to queue again) or to the reaper to fail
    (`exhausted` True: the reaper now holds its lease); `task` is its row after the change."""

    task: TaskRow
    run_id: str
    exhausted: bool


def _seconds(value: float, field: str) -> dt.timedelta:
    if not value > 0:
        raise InvalidArgument(f"must be > 0 seconds, got {value!r}", field=field)
    return dt.timedelta(seconds=value)


class LeaseStore:
    def __init__(self, repository: CatalogRepository) -> None:
        self.db = repository.db

    @staticmethod
    def _task(s: Session, task_id: str) -> TaskRow:
        tid = parse_uuid(task_id, "task_id", required=True)
        row = s.get(TaskRow, tid, with_for_update=True)
        if row is None:
            raise NotFound(f"task {tid} does not exist", field="task_id")
        return row

    def claim(self, task_id: str, owner: str, lease_seconds: float, max_attempts: int) -> tuple[str, TaskRow]:
        """(outcome, the task row): `terminal`, `held` (another worker's lease runs), `claimed`, or
        `exhausted` (claimed, but past `max_attempts`: the claimer fails it)."""
        if not owner:
            raise InvalidArgument("owner is required", field="owner")
        lease = _seconds(lease_seconds, "lease_seconds")
        with self.db.session(write=True) as s:
            row = self._task(s, task_id)
            now = utcnow()
            if row.state in TERMINAL_RUN_STATES:
                outcome = CLAIM_TERMINAL
            elif row.lease_owner and row.lease_expires_at is not None and row.lease_expires_at > now:
                outcome = CLAIM_HELD
            else:
                row.attempts = int(row.attempts or 0) + 1
                row.fencing_token = int(row.fencing_token or 0) + 1
                row.lease_owner = owner[:200]
                row.lease_expires_at = now + lease
                exhausted = max_attempts > 0 and row.attempts > max_attempts
                outcome = CLAIM_EXHAUSTED if exhausted else CLAIM_CLAIMED
            s.flush()
            return outcome, row

    def renew(self, task_id: str, token: int, lease_seconds: float) -> TaskRow:
        lease = _seconds(lease_seconds, "lease_seconds")
        with self.db.session(write=True) as s:
            row = self._task(s, task_id)
            if row.fencing_token != token:
                raise _lease_lost(row.task_id, token)
            if row.state not in TERMINAL_RUN_STATES:  # the attempt that ended it may still be finishing up
                row.lease_expires_at = utcnow() + lease
            s.flush()
            return row

    def release(self, task_id: str, token: int) -> bool:
        with self.db.session(write=True) as s:
            row = self._task(s, task_id)
            if row.fencing_token != token:
                return False
            row.lease_owner = None
            row.lease_expires_at = utcnow()
            return True

    def record_stage_output(self, task_id: str, token: int, stage: str, output: dict[str, Any]) -> TaskRow:
        if not stage or len(stage) > 50:
            raise InvalidArgument("stage is required (at most 50 characters)", field="stage")
        with self.db.session(write=True) as s:
            row = self._task(s, task_id)
            if row.fencing_token != token or row.state in TERMINAL_RUN_STATES:
                raise _lease_lost(row.task_id, token)
            row.stage_outputs = {**(row.stage_outputs or {}), stage: output}
            s.flush()
            return row

    def reap(
        self, owner: str, hold_seconds: float, pending_grace_seconds: float, max_attempts: int, limit: int
    ) -> list[Reaped]:
        if not owner:
            raise InvalidArgument("owner is required", field="owner")
        hold = _seconds(hold_seconds, "hold_seconds")
        grace = _seconds(pending_grace_seconds, "pending_grace_seconds")
        now = utcnow()
        expired = sa.or_(
            TaskRow.lease_expires_at < now,
            sa.and_(TaskRow.lease_expires_at.is_(None), TaskRow.created_at < now - grace),
        )
        query = (
            sa.select(TaskRow)
            .where(TaskRow.state.in_(UNFINISHED), expired)
            .order_by(TaskRow.created_at)
            .limit(max(1, min(limit or 100, 1000)))
            .with_for_update(skip_locked=True)
        )
        out: list[Reaped] = []
        with self.db.session(write=True) as s:
            for row in s.scalars(query).all():
                run_id = s.scalar(
                    sa.select(AlphaBacktestRunRow.run_id).where(AlphaBacktestRunRow.task_id == row.task_id)
                )
                exhausted = max_attempts > 0 and int(row.attempts or 0) >= max_attempts
                if exhausted:  # the reaper takes the lease to fail the task
                    row.fencing_token = int(row.fencing_token or 0) + 1
                    row.lease_owner = owner[:200]
                else:  # handed back: free, and not reaped again before `hold` has passed
                    row.lease_owner = None
                row.lease_expires_at = now + hold
                s.flush()
                out.append(Reaped(task=row, run_id=str(run_id or ""), exhausted=exhausted))
        return out

    def cancel(self, task_id: str, message: str) -> tuple[TaskRow, str, str]:
        tid = parse_uuid(task_id, "task_id", required=True)
        with self.db.session(write=True) as s:
            run = s.scalars(
                sa.select(AlphaBacktestRunRow).where(AlphaBacktestRunRow.task_id == tid).with_for_update()
            ).one_or_none()
            row = self._task(s, task_id)
            if row.state in TERMINAL_RUN_STATES:
                raise FailedPrecondition(
                    f"task {tid} already ended {row.state}; only an unfinished task can be cancelled",
                    field="task_id",
                    reason="ALREADY_TERMINAL",
                )
            now = utcnow()
            error = {"stage": row.stage or "accepted", "code": "CANCELLED", "message": message, "field": None}
            previous = row.lease_owner or ""
            row.state, row.stage, row.error, row.updated_at = "cancelled", "cancelled", error, now
            row.fencing_token = int(row.fencing_token or 0) + 1
            row.lease_owner, row.lease_expires_at = None, None
            if run is not None:
                run.state, run.stage, run.error, run.updated_at = "cancelled", "cancelled", error, now
                run.finished_at = run.finished_at or now
                if run.started_at is not None and run.duration_seconds is None:
                    run.duration_seconds = max((now - run.started_at).total_seconds(), 0.0)
            s.flush()
            return row, previous, str(run.run_id) if run is not None else ""

    def delete_unclaimed(self, task_id: str) -> bool:
        tid = parse_uuid(task_id, "task_id", required=True)
        with self.db.session(write=True) as s:
            row = s.get(TaskRow, tid, with_for_update=True)
            if row is None:
                return False
            if row.attempts or row.state != "pending":
                raise FailedPrecondition(
                    f"task {tid} was already taken by a worker; it cannot be withdrawn", field="task_id"
                )
            run_id = s.scalar(sa.select(AlphaBacktestRunRow.run_id).where(AlphaBacktestRunRow.task_id == tid))
            ids = [tid] + ([run_id] if run_id is not None else [])
            s.execute(sa.delete(RequestKeyRow).where(RequestKeyRow.entity_id.in_(ids)))
            if run_id is not None:
                s.execute(sa.delete(AlphaBacktestRunRow).where(AlphaBacktestRunRow.run_id == run_id))
            s.delete(row)
            return True
