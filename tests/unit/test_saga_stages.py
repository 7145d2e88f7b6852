"""The stage machine of the saga, with fake stages: resume after the last recorded stage,
transient retries, the failing stage named; the saga's own table; the in-process job
queue's retries and dead letters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from alphaswarm_common.errors import DependencyUnavailable, InvalidArgument
from alphaswarm_common.events import DeadLetter, InProcessJobQueue, PoisonJob, retry_delay
from alphaswarm_gateway.stages import Stage, StageMachine


class Crash(BaseException):
    """A worker killed mid-stage: nothing after it runs, nothing is recorded."""


class Fake:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.restored: dict[str, Any] = {}
        self.crash_at: str | None = None
        self.flaky: dict[str, int] = {}

    def stage(self, name: str, *, record: bool = True) -> Stage[Fake]:
        async def run(ctx: Fake) -> dict[str, Any]:
            ctx.calls.append(name)
            if ctx.crash_at == name:
                raise Crash(name)
            if ctx.flaky.get(name, 0) > 0:
                ctx.flaky[name] -= 1
                raise DependencyUnavailable(f"{name} restarting")
            return {"made_by": name}

        def restore(ctx: Fake, out: dict[str, Any]) -> None:
            ctx.restored[name] = out

        return Stage(name, name + "ing", run, restore, record)


NAMES = ["train", "register", "deploy", "predict", "backtest", "metrics", "persist"]


def _machine(fake: Fake, recorded: dict[str, Any], **kw: Any) -> StageMachine[Fake]:
    async def record(name: str, out: dict[str, Any]) -> None:
        recorded[name] = out

    async def no_sleep(_: float) -> None:
        return None

    stages = [fake.stage(n) for n in NAMES] + [fake.stage("finish", record=False)]
    return StageMachine(stages, record=record, sleep=no_sleep, **kw)


def test_a_redelivered_job_resumes_after_the_last_recorded_stage() -> None:
    store: dict[str, Any] = {}  # what the catalog keeps between attempts
    first = Fake()
    first.crash_at = "metrics"
    with pytest.raises(Crash):
        asyncio.run(_machine(first, store).run(first, dict(store)))
    assert first.calls == NAMES[:6]
    assert list(store) == ["train", "register", "deploy", "predict", "backtest"]

    second = Fake()
    machine = _machine(second, store)
    assert machine.completed(dict(store)) == ["train", "register", "deploy", "predict", "backtest"]
    asyncio.run(machine.run(second, dict(store)))
    assert second.calls == ["metrics", "persist", "finish"]  # no second registration, no second backtest
    assert second.restored["register"] == {"made_by": "register"}
    assert "finish" not in store  # the final stage is its own record (the terminal state)


def test_transient_failures_run_the_stage_again_until_the_budget_is_spent() -> None:
    fake = Fake()
    fake.flaky = {"backtest": 2}
    store: dict[str, Any] = {}
    asyncio.run(
        _machine(fake, store, transient=lambda e: isinstance(e, DependencyUnavailable), retry_seconds=5).run(
            fake, {}
        )
    )
    assert fake.calls.count("backtest") == 3 and "finish" in fake.calls

    stuck = Fake()
    stuck.flaky = {"predict": 100}
    machine = _machine(stuck, {}, transient=lambda e: isinstance(e, DependencyUnavailable), retry_seconds=2)
    with pytest.raises(DependencyUnavailable):
        asyncio.run(machine.run(stuck, {}))
    assert machine.current is not None and machine.current.name == "predict"
    assert "backtest" not in stuck.calls


def test_a_permanent_failure_names_its_stage_and_is_not_retried() -> None:
    fake = Fake()

    async def bad(_: Fake) -> dict[str, Any]:
        fake.calls.append("deploy")
        raise InvalidArgument("no such deployment", field="deployment_id")

    async def record(name: str, out: dict[str, Any]) -> None:
        return None

    machine: StageMachine[Fake] = StageMachine(
        [fake.stage("train"), Stage("deploy", "deploying", bad)],
        record=record,
        transient=lambda e: isinstance(e, DependencyUnavailable),
        retry_seconds=60,
    )
    with pytest.raises(InvalidArgument):
        asyncio.run(machine.run(fake, {}))
    assert fake.calls == ["train", "deploy"] and machine.current is not None
    assert machine.current.label == "deploying"


def test_stage_names_are_unique_and_the_saga_table_is_the_documented_one() -> None:
    fake = Fake()
    with pytest.raises(ValueError, match="repeat"):
        StageMachine([fake.stage("a"), fake.stage("a")], record=lambda n, o: asyncio.sleep(0))
    from alphaswarm_gateway.saga import STAGES

    assert [s.name for s in STAGES] == ["start", *NAMES, "finish"]
    assert [s.name for s in STAGES if not s.record] == ["finish"]


def test_in_process_queue_retries_then_dead_letters_and_poison_goes_at_once() -> None:
    async def main() -> tuple[list[DeadLetter], dict[int, int]]:
        q = InProcessJobQueue(max_deliver=3, retry_base=0.001)
        tries: dict[int, int] = {}

        async def handler(kind: str, payload: dict[str, Any]) -> None:
            n = payload["n"]
            tries[n] = tries.get(n, 0) + 1
            if n == 1:
                raise PoisonJob("names nothing")
            if n == 2:
                raise RuntimeError("catalog down")
            if n == 3 and tries[n] < 2:
                raise RuntimeError("blip")

        handled: list[DeadLetter] = []

        async def on_letter(letter: DeadLetter) -> None:
            handled.append(letter)

        worker = asyncio.create_task(q.consume(handler))
        letters = asyncio.create_task(q.consume_dead_letters(on_letter))
        for n in range(4):
            await q.enqueue("k", {"n": n})
        for _ in range(500):
            if len(handled) == 2 and tries.get(3) == 2:
                break
            await asyncio.sleep(0.01)
        worker.cancel()
        letters.cancel()
        return handled, tries

    handled, tries = asyncio.run(main())
    assert tries == {0: 1, 1: 1, 2: 3, 3: 2}
    by_n = {letter.payload["n"]: letter for letter in handled if letter.payload}
    assert by_n[1].reason == "names nothing" and by_n[1].deliveries == 1
    assert by_n[2].deliveries == 3 and "catalog down" in by_n[2].reason
    assert [retry_delay(n) for n in (1, 2, 3, 10)] == [1.0, 2.0, 4.0, 30.0]
