"""A saga as a table of named, idempotent stages whose outputs are recorded.

`StageMachine.run(ctx, outputs)` walks the table in order. A stage whose output is
already in `outputs` (recorded by an earlier attempt of the same task) is not run
again: its `restore` loads the recorded output into the context and the machine
moves on, so an attempt that follows a crash resumes after the last completed
stage. A stage that completes has its output recorded (`record(name, output)`)
before the next one starts. A stage that fails with a transient error (the
`transient` predicate: a dependency unavailable, a restarting peer) is run
again with backoff for up to `retry_seconds`; any other error ends the walk and
propagates, with `machine.current` naming the stage that raised.

No I/O of its own: the stages and the recorder bring it (tests pass fakes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from alphaswarm_common.observability import stage_scope

__all__ = ["Stage", "StageMachine"]

log = logging.getLogger(__name__)
C = TypeVar("C")


@dataclass(frozen=True)
class Stage(Generic[C]):
    """One step: `run(ctx)` returns its output (a JSON document); `restore(ctx, output)` puts a
    recorded output back into the context of a resumed attempt. `record=False` marks a final
    stage whose effect (a terminal state) is its own record."""

    name: str
    label: str
    run: Callable[[C], Awaitable[dict[str, Any]]]
    restore: Callable[[C, dict[str, Any]], None] | None = None
    record: bool = True


class StageMachine(Generic[C]):
    def __init__(
        self,
        stages: Sequence[Stage[C]],
        *,
        record: Callable[[str, dict[str, Any]], Awaitable[None]],
        transient: Callable[[BaseException], bool] = lambda exc: False,
        retry_seconds: float = 0.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names repeat: {names}")
        self.stages = list(stages)
        self.record = record
        self.transient = transient
        self.retry_seconds = retry_seconds
        self.sleep = sleep
        self.current: Stage[C] | None = None
        self.resumed: list[str] = []

    def completed(self, outputs: dict[str, Any]) -> list[str]:
        """The stages an earlier attempt completed (recorded), in table order."""
        return [s.name for s in self.stages if s.name in outputs]

    async def run(self, ctx: C, outputs: dict[str, Any]) -> None:
        for stage in self.stages:
            self.current = stage
            if stage.name in outputs:
                if stage.restore is not None:
                    stage.restore(ctx, outputs[stage.name])
                self.resumed.append(stage.name)
                continue
            with stage_scope(stage.name):  # log field, span and duration metric of the stage
                output = await self._run(stage, ctx)
            outputs[stage.name] = output
            if stage.record:
                await self.record(stage.name, output)

    async def _run(self, stage: Stage[C], ctx: C) -> dict[str, Any]:
        waited = 0.0
        delay = 0.5
        while True:
            try:
                return await stage.run(ctx)
            except Exception as exc:
                if not self.transient(exc) or waited + delay > self.retry_seconds:
                    raise
                log.warning("stage %s: %s; running it again in %.1fs", stage.name, exc, delay)
            await self.sleep(delay)
            waited += delay
            delay = min(delay * 2, 10.0)
