"""What every gateway worker shares: publishing a task's progress with consecutive seqs,
and turning an exception into the `{stage, code, message, field}` detail stored and streamed."""

from __future__ import annotations

import logging
from typing import Any

from alphaswarm.common.v1 import resources_pb2
from alphaswarm_common.errors import AlphaSwarmError
from alphaswarm_common.events import ProgressEvent
from alphaswarm_common.grpc_client import remote_field

__all__ = ["STAGE_PCT", "Progress", "error_detail"]

log = logging.getLogger(__name__)

# Overall completion of an alpha-backtest run when each stage starts.
STAGE_PCT = {
    "training": 5,
    "registering": 40,
    "deploying": 45,
    "predicting": 50,
    "backtesting": 65,
    "persisting": 85,
    "completed": 100,
}


class Progress:
    """Publishes a task's events with consecutive seqs and remembers the stage in progress,
    so a failure is reported at the stage that was running.

    `best_effort=True` logs a failed publish (the task row is the record);
    `False` lets it raise to the caller.
    """

    def __init__(self, gateway: Any, task_id: str, seq: int = 1, *, best_effort: bool = True) -> None:
        self.gateway = gateway
        self.task_id = task_id
        self.seq = seq
        self.stage = "accepted"
        self.best_effort = best_effort

    async def emit(
        self,
        stage: str,
        status: str,
        message: str = "",
        *,
        pct: float | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        if stage not in ("completed", "failed"):
            self.stage = stage
        self.seq += 1
        event = ProgressEvent(
            task_id=self.task_id,
            seq=self.seq,
            stage=stage,
            status=status,
            pct=float(STAGE_PCT.get(stage, 0) if pct is None else pct),
            message=message,
            data=data or {},
        )
        try:
            await self.gateway.bus.publish(event)
        except Exception:
            if not self.best_effort:
                raise
            log.exception("could not publish progress for %s", self.task_id)


def error_detail(stage: str, exc: BaseException) -> resources_pb2.ErrorDetail:
    """The stored and streamed form of a failure at `stage` (domain errors keep code and field)."""
    if isinstance(exc, AlphaSwarmError):
        return resources_pb2.ErrorDetail(
            stage=stage, code=exc.grpc_code, message=str(exc), field=remote_field(exc) or ""
        )
    return resources_pb2.ErrorDetail(stage=stage, code="INTERNAL", message=f"{type(exc).__name__}: {exc}")
