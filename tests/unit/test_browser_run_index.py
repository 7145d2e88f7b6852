"""The run index's first read: newest-first pages answer while it reads, other views wait for it,
and later refreshes read only what is new."""

from __future__ import annotations

import asyncio
from typing import Any

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_gateway.browser.data import RunIndex


def _run(i: int) -> resources_pb2.AlphaBacktestRun:
    return resources_pb2.AlphaBacktestRun(
        run_id=f"run-{i:05d}", run_name=f"r{i}", state=resources_pb2.RUN_STATE_SUCCEEDED
    )


class _Gateway:
    """Lists `runs` (newest first) page by page; after the first page, waits for `gate`."""

    def __init__(self, runs: list[resources_pb2.AlphaBacktestRun]) -> None:
        self.runs = runs
        self.gate = asyncio.Event()
        self.calls: list[tuple[int, str, bool]] = []

    async def list_runs(
        self, *, page_size: int = 50, page_token: str = "", summary: bool = False
    ) -> ppb.ListAlphaBacktestRunsResponse:
        self.calls.append((page_size, page_token, summary))
        start = int(page_token or 0)
        if start:
            await self.gate.wait()
        end = min(start + page_size, len(self.runs))
        token = str(end) if end < len(self.runs) else ""
        return ppb.ListAlphaBacktestRunsResponse(runs=self.runs[start:end], next_page_token=token)

    async def get_run(self, run_id: str) -> Any:
        raise AssertionError("no run is live")


def test_newest_pages_answer_while_the_first_read_runs() -> None:
    async def scenario() -> None:
        gw = _Gateway([_run(i) for i in reversed(range(1200))])
        index = RunIndex()
        build = index.start(gw)
        # the first page (100 rows) covers the first two pages of 50, not the third
        assert await index.wait_covering(100)
        assert not index.complete
        rows = index.query()
        assert [r["run_id"] for r in rows[:2]] == ["run-01199", "run-01198"]
        assert len(rows) == 100 and not index.covers(101)
        # a view the rows read so far cannot answer waits for the whole read
        waiting = asyncio.ensure_future(index.refresh(gw))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        gw.gate.set()
        await waiting
        await build
        assert index.complete and len(index.query()) == 1200
        assert all(summary for _, _, summary in gw.calls)
        # later: only the new runs are read (a small first page)
        gw.runs.insert(0, _run(1200))
        before = len(gw.calls)
        await index.refresh(gw)
        assert len(gw.calls) == before + 1 and gw.calls[-1][0] == 10
        assert index.query()[0]["run_id"] == "run-01200" and len(index.query()) == 1201

    asyncio.run(scenario())


def test_a_failed_first_read_is_started_again() -> None:
    async def scenario() -> None:
        class Broken(_Gateway):
            fail = True

            async def list_runs(self, **kw: Any) -> ppb.ListAlphaBacktestRunsResponse:
                if self.fail:
                    self.fail = False
                    raise RuntimeError("persistence unavailable")
                return await super().list_runs(**kw)

        gw = Broken([_run(i) for i in reversed(range(30))])
        index = RunIndex()
        first = index.start(gw)
        assert not await index.wait_covering(50)  # ended without the rows
        assert first.done() and first.exception() is not None
        await index.refresh(gw)  # starts the read again
        assert index.complete and len(index.query()) == 30

    asyncio.run(scenario())
